/*
 * A minimal bare-metal environment for QEMU's mps2 boards (AN385 Cortex-M3,
 * AN386 Cortex-M4, AN500 Cortex-M7), for measuring and testing code without
 * a serial protocol: write text to UART0, mark points for the mf_icount
 * plugin, and end QEMU with an exit code through semihosting.
 */
#ifndef MF_BAREMETAL_H
#define MF_BAREMETAL_H

#include <stdint.h>

/* The mf_icount plugin snapshots its instruction count on every call. */
void mf_icount_mark(void);

void mf_putc(char c);
void mf_puts(const char *s);
void mf_put_hex(const void *data, uint32_t n);
void mf_put_u32(uint32_t v);

/* End the emulation: QEMU exits with status 0 for 0, 1 otherwise. */
void mf_exit(int code) __attribute__((noreturn));

#endif /* MF_BAREMETAL_H */
