/*
 * UART driver for STM32 USARTs, both register layouts:
 *   IP version 1 (F1, F2, F4): SR, DR, BRR, CR1 at 0x00..0x0C;
 *   IP version 2 (F0, F3, F7, L4, G4...): CR1 at 0x00, BRR 0x0C, ISR 0x1C,
 *   ICR 0x20, RDR 0x24, TDR 0x28.
 * Clock gates and pin multiplexing come from the board file (mf_target.h),
 * so a new STM32 board is data only. The core runs from the reset clock
 * (HSI); no PLL is set up, so the board file's clock is the HSI frequency.
 * Polling only: no interrupt, the protocol never needs one.
 */
#include <stdint.h>

#include "mf_board.h"
#include "mf_cortex_m.h"
#include "mf_hal.h"
#include "mf_target.h"
#include "mf_uart.h"

#ifndef MF_UART_CLOCK_HZ
#define MF_UART_CLOCK_HZ MF_CLOCK_HZ
#endif

#if MF_UART_IP_VERSION == 1
#define USART_STATUS  MF_REG32(MF_UART_BASE + 0x00UL)
#define USART_RXDATA  MF_REG32(MF_UART_BASE + 0x04UL)
#define USART_TXDATA  MF_REG32(MF_UART_BASE + 0x04UL)
#define USART_BRR     MF_REG32(MF_UART_BASE + 0x08UL)
#define USART_CR1     MF_REG32(MF_UART_BASE + 0x0CUL)
#define USART_CR1_UE  (1UL << 13)
#else
#define USART_CR1     MF_REG32(MF_UART_BASE + 0x00UL)
#define USART_BRR     MF_REG32(MF_UART_BASE + 0x0CUL)
#define USART_STATUS  MF_REG32(MF_UART_BASE + 0x1CUL)
#define USART_ICR     MF_REG32(MF_UART_BASE + 0x20UL)
#define USART_RXDATA  MF_REG32(MF_UART_BASE + 0x24UL)
#define USART_TXDATA  MF_REG32(MF_UART_BASE + 0x28UL)
#define USART_CR1_UE  (1UL << 0)
#endif
/* Same bit positions in both layouts. */
#define USART_CR1_RE     (1UL << 2)
#define USART_CR1_TE     (1UL << 3)
#define USART_STATUS_ORE (1UL << 3)
#define USART_STATUS_RXNE (1UL << 5)
#define USART_STATUS_TXE (1UL << 7)

#define GPIO_MODER(port) MF_REG32((port) + 0x00UL)
#define GPIO_AFR(port, pin) MF_REG32((port) + 0x20UL + 4UL * ((pin) / 8u))
#define GPIO_MODE_AF 2UL

typedef struct {
    uint32_t reg;
    uint32_t bit;
} mf_clock_gate;

typedef struct {
    uint32_t port;
    uint32_t pin;
    uint32_t af;
} mf_pin_mux;

static const mf_clock_gate clock_gates[] = MF_CLOCK_ENABLES;
static const mf_pin_mux uart_pins[] = MF_UART_PINS;

void mf_uart_init(void)
{
    unsigned i;
    for (i = 0; i < sizeof clock_gates / sizeof clock_gates[0]; ++i) {
        MF_REG32(clock_gates[i].reg) |= 1UL << clock_gates[i].bit;
        /* Read back: the gate takes effect a couple of bus cycles later. */
        (void)MF_REG32(clock_gates[i].reg);
    }
    for (i = 0; i < sizeof uart_pins / sizeof uart_pins[0]; ++i) {
        const mf_pin_mux *p = &uart_pins[i];
        const uint32_t shift = 4u * (p->pin % 8u);
        GPIO_AFR(p->port, p->pin) = (GPIO_AFR(p->port, p->pin) & ~(0xFUL << shift)) |
                                    (p->af << shift);
        GPIO_MODER(p->port) = (GPIO_MODER(p->port) & ~(3UL << (2u * p->pin))) |
                              (GPIO_MODE_AF << (2u * p->pin));
    }
    /* 16x oversampling: BRR is the clock divided by the baud rate, rounded. */
    USART_BRR = (MF_UART_CLOCK_HZ + MF_UART_BAUD / 2UL) / MF_UART_BAUD;
    USART_CR1 = USART_CR1_UE | USART_CR1_TE | USART_CR1_RE;
}

void mf_hal_putc(uint8_t byte)
{
    while (!(USART_STATUS & USART_STATUS_TXE)) {
    }
    USART_TXDATA = byte;
}

uint8_t mf_hal_getc(void)
{
    for (;;) {
        const uint32_t status = USART_STATUS;
        if (status & USART_STATUS_RXNE) {
            break;
        }
#if MF_UART_IP_VERSION != 1
        /* An overrun must be cleared explicitly here; the host resends
         * whatever frame lost a byte. (Version 1 clears it by the reads.) */
        if (status & USART_STATUS_ORE) {
            USART_ICR = USART_STATUS_ORE;
        }
#endif
    }
    return (uint8_t)USART_RXDATA;
}
