/*
 * Cortex-M test harness for QEMU's mps2 boards (microfit.icount's bare-metal
 * environment): calls the generated mf_test_run_cases(), which runs kernels
 * on constant arrays, and prints every output on UART0 as one text line,
 * "O<case> <hex bytes>", then "END" -- the format of avr_harness.c.
 */
#include <stdint.h>

#include "mf_baremetal.h"
#include "mf_runtime.h"

void mf_test_run_cases(void);
void mf_test_load(int8_t *dst, const int8_t *src, uint16_t n);
void mf_test_emit(uint16_t case_index, const int8_t *out, uint16_t n);

/* Activations and scratch live here, as in generated firmware. */
int8_t mf_test_arena[65536] __attribute__((aligned(4)));

/* A byte loop, not memcpy: newlib's memcpy may use unaligned word accesses,
 * which MF_TEST_TRAP_UNALIGNED makes fault. */
void mf_test_load(int8_t *dst, const int8_t *src, uint16_t n)
{
    uint16_t i;
    for (i = 0; i < n; ++i) {
        dst[i] = src[i];
    }
}

void mf_test_emit(uint16_t case_index, const int8_t *out, uint16_t n)
{
    uint8_t index[2];
    index[0] = (uint8_t)(case_index >> 8);
    index[1] = (uint8_t)case_index;
    mf_putc('O');
    mf_put_hex(index, 2);
    mf_putc(' ');
    mf_put_hex(out, n);
    mf_putc('\n');
}

int main(void)
{
#if defined(MF_TEST_TRAP_UNALIGNED)
    /* Fault on any unaligned word or halfword access (CCR.UNALIGN_TRP), as a
     * Cortex-M0 would: the build uses -mno-unaligned-access, so only a kernel
     * that wrongly assumes alignment trips it. */
    *(volatile uint32_t *)0xE000ED14u |= 1u << 3;
#endif
    mf_test_run_cases();
    mf_puts("END\n");
    return 0;
}
