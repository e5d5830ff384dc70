/*
 * HAL for Cortex-M boards with a CMSDK APB UART (Arm MPS2 / MPS2+, QEMU's
 * mps2-an385/an386/an500) and SysTick as the tick counter.
 *
 * SysTick is used rather than DWT->CYCCNT because QEMU reads CYCCNT as 0;
 * under QEMU -icount shift=0 SysTick advances once per
 * (1e9 / MF_CLOCK_HZ) instructions, which the board file states as
 * counter.per_tick.
 */
#include <stdint.h>

#include "mf_board.h"
#include "mf_cortex_m.h"
#include "mf_hal.h"

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

static volatile uint32_t systick_wraps;

void SysTick_Handler(void);
void mf_uart_rx_irq_handler(void);

void SysTick_Handler(void)
{
    systick_wraps++;
}

/* The RX interrupt exists only to wake the core from WFI in mf_hal_getc:
 * an idle QEMU then sleeps instead of spinning a host core. */
void mf_uart_rx_irq_handler(void)
{
    UART_INTCLEAR = UART_INT_RX;
}

void mf_hal_init(void)
{
    UART_BAUDDIV = UART_DIVISOR;
    UART_CTRL = UART_CTRL_TX_EN | UART_CTRL_RX_EN | UART_CTRL_RX_INT_EN;
#if defined(MF_UART_RX_IRQ)
    NVIC_ISER((MF_UART_RX_IRQ) / 32) = 1UL << ((MF_UART_RX_IRQ) % 32);
#endif
    SYST_RVR = SYST_MAX_RELOAD;
    SYST_CVR = 0;
    SYST_CSR = SYST_CSR_CLKSOURCE | SYST_CSR_TICKINT | SYST_CSR_ENABLE;
    mf_irq_enable();
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

void mf_hal_ticks_restart(void)
{
    /* Writing CVR clears it; the counter reloads at the next clock edge.
     * Waiting for that reload starts every timed region at the same point
     * of the tick, which makes counts repeatable under QEMU -icount. */
    SYST_CVR = 0;
    systick_wraps = 0;
    while (SYST_CVR == 0u) {
    }
}

uint32_t mf_hal_ticks(void)
{
    uint32_t wraps;
    uint32_t value;
    /* Re-read if SysTick wrapped between the two reads. */
    do {
        wraps = systick_wraps;
        value = SYST_CVR;
    } while (wraps != systick_wraps);
    return (wraps << 24) + (SYST_MAX_RELOAD - value);
}

uint32_t mf_hal_ticks_to_counter(uint32_t ticks)
{
    const uint64_t count = (uint64_t)ticks * (uint64_t)MF_COUNTER_PER_TICK;
    return count > 0xFFFFFFFFull ? 0xFFFFFFFFul : (uint32_t)count;
}
