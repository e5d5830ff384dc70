/*
 * UART driver for the CMSDK APB UART of Arm's MPS2 / MPS2+ boards (and
 * QEMU's mps2-an385/an386/an500).
 *
 * Receiving sleeps in WFI until the RX interrupt fires, so an idle QEMU
 * sleeps instead of spinning a host core.
 */
#include <stdint.h>

#include "mf_board.h"
#include "mf_cortex_m.h"
#include "mf_hal.h"
#include "mf_uart.h"

#define UART_DATA     MF_REG32(MF_UART_BASE + 0x00UL)
#define UART_STATE    MF_REG32(MF_UART_BASE + 0x04UL)
#define UART_CTRL     MF_REG32(MF_UART_BASE + 0x08UL)
#define UART_INTCLEAR MF_REG32(MF_UART_BASE + 0x0CUL)
#define UART_BAUDDIV  MF_REG32(MF_UART_BASE + 0x10UL)

#define UART_STATE_TX_FULL  (1UL << 0)
#define UART_STATE_RX_FULL  (1UL << 1)
#define UART_CTRL_TX_EN     (1UL << 0)
#define UART_CTRL_RX_EN     (1UL << 1)
#define UART_CTRL_RX_INT_EN (1UL << 3)
#define UART_INT_RX         (1UL << 1)

/* The CMSDK UART needs BAUDDIV >= 16; QEMU ignores it, real boards do not. */
#define UART_DIVISOR ((MF_CLOCK_HZ / MF_UART_BAUD) < 16UL ? 16UL : (MF_CLOCK_HZ / MF_UART_BAUD))

void mf_uart_rx_irq_handler(void);

/* The RX interrupt exists only to wake the core from WFI in mf_hal_getc. */
void mf_uart_rx_irq_handler(void)
{
    UART_INTCLEAR = UART_INT_RX;
}

void mf_uart_init(void)
{
    UART_BAUDDIV = UART_DIVISOR;
    UART_CTRL = UART_CTRL_TX_EN | UART_CTRL_RX_EN | UART_CTRL_RX_INT_EN;
#if defined(MF_UART_RX_IRQ)
    NVIC_ISER((MF_UART_RX_IRQ) / 32) = 1UL << ((MF_UART_RX_IRQ) % 32);
#endif
}

void mf_hal_putc(uint8_t byte)
{
    while (UART_STATE & UART_STATE_TX_FULL) {
    }
    UART_DATA = byte;
}

uint8_t mf_hal_getc(void)
{
    for (;;) {
        /* Check and sleep with interrupts masked: a byte arriving between
         * the check and the WFI still wakes the core (a pending interrupt
         * ends WFI even when masked), so no wake-up is lost. */
        mf_irq_disable();
        if (UART_STATE & UART_STATE_RX_FULL) {
            mf_irq_enable();
            break;
        }
        mf_wait_for_interrupt();
        mf_irq_enable();
    }
    return (uint8_t)UART_DATA;
}
