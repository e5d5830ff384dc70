/*
 * Start-up code, UART output and semihosting exit for QEMU mps2 boards; see
 * mf_baremetal.h. main() runs with .data copied and .bss zeroed; its return
 * value becomes QEMU's exit status. Any fault ends QEMU with status 1 after
 * printing "FAULT".
 */
#include "mf_baremetal.h"

#include <stdint.h>

/* CMSDK APB UART0, as QEMU's mps2 machines map it. */
#define UART0_DATA (*(volatile uint32_t *)0x40004000u)
#define UART0_STATE (*(volatile uint32_t *)0x40004004u)
#define UART0_CTRL (*(volatile uint32_t *)0x40004008u)
#define UART_TX_FULL 1u
#define UART_TX_ENABLE 1u

/* Semihosting: SYS_EXIT with an "application exit" or "run-time error" reason. */
#define SYS_EXIT 0x18
#define ADP_STOPPED_APPLICATION_EXIT 0x20026
#define ADP_STOPPED_RUNTIME_ERROR 0x20023

extern uint32_t _sidata, _sdata, _edata, _sbss, _ebss, _estack;
int main(void);

__attribute__((noinline)) void mf_icount_mark(void)
{
    __asm volatile("" ::: "memory");
}

void mf_putc(char c)
{
    while (UART0_STATE & UART_TX_FULL) {
    }
    UART0_DATA = (uint8_t)c;
}

void mf_puts(const char *s)
{
    while (*s) {
        mf_putc(*s++);
    }
}

void mf_put_hex(const void *data, uint32_t n)
{
    static const char digits[] = "0123456789abcdef";
    const uint8_t *p = data;
    uint32_t i;
    for (i = 0; i < n; ++i) {
        mf_putc(digits[p[i] >> 4]);
        mf_putc(digits[p[i] & 15u]);
    }
}

void mf_put_u32(uint32_t v)
{
    char buf[11];
    int i = 10;
    buf[i] = '\0';
    do {
        buf[--i] = (char)('0' + v % 10u);
        v /= 10u;
    } while (v);
    mf_puts(&buf[i]);
}

void mf_exit(int code)
{
    register uint32_t op __asm("r0") = SYS_EXIT;
    register uint32_t reason __asm("r1") =
        code == 0 ? ADP_STOPPED_APPLICATION_EXIT : ADP_STOPPED_RUNTIME_ERROR;
    for (;;) {
        __asm volatile("bkpt 0xab" : : "r"(op), "r"(reason) : "memory");
    }
}

void mf_reset_handler(void)
{
    uint32_t *src = &_sidata;
    uint32_t *dst;
    for (dst = &_sdata; dst < &_edata;) {
        *dst++ = *src++;
    }
    for (dst = &_sbss; dst < &_ebss;) {
        *dst++ = 0;
    }
    UART0_CTRL = UART_TX_ENABLE;
    mf_exit(main());
}

static void fault_handler(void)
{
    mf_puts("\nFAULT\n");
    mf_exit(1);
}

__attribute__((section(".isr_vector"), used)) static void (*const vectors[16])(void) = {
    (void (*)(void))&_estack, mf_reset_handler, fault_handler, fault_handler,
    fault_handler, fault_handler, fault_handler, 0, 0, 0, 0,
    fault_handler, fault_handler, 0, fault_handler, fault_handler,
};
