/*
 * UART driver for the RP2040's PL011 UARTs (Raspberry Pi Pico: UART0 on
 * GP0 = TX, GP1 = RX).
 *
 * The RP2040 leaves reset running from its ring oscillator, whose frequency
 * varies from chip to chip, with the peripheral clock off. So first: start
 * the crystal oscillator, run clk_ref and clk_sys from it (no PLL, so the
 * core runs at the crystal's frequency, the board file's clock_hz), enable
 * clk_peri, and take IO, pads and the UART out of reset.
 */
#include <stdint.h>

#include "mf_board.h"
#include "mf_cortex_m.h"
#include "mf_hal.h"
#include "mf_target.h"
#include "mf_uart.h"

/* Each RP2040 peripheral has an atomic "clear bits" alias at +0x3000. */
#define REG_CLR(addr) MF_REG32((addr) + 0x3000UL)

#define RESETS_BASE       0x4000C000UL
#define RESETS_RESET      MF_REG32(RESETS_BASE + 0x0UL)
#define RESETS_RESET_DONE MF_REG32(RESETS_BASE + 0x8UL)
#define RESET_IO_BANK0    (1UL << 5)
#define RESET_PADS_BANK0  (1UL << 8)
#define RESET_UART0       (1UL << 22)
#define RESET_UART1       (1UL << 23)

#define XOSC_CTRL    MF_REG32(0x40024000UL)
#define XOSC_STATUS  MF_REG32(0x40024004UL)
#define XOSC_STARTUP MF_REG32(0x4002400CUL)
#define XOSC_CTRL_1_15MHZ 0xAA0UL
#define XOSC_CTRL_ENABLE  (0xFABUL << 12)
#define XOSC_STATUS_STABLE (1UL << 31)

#define CLK_REF_CTRL     MF_REG32(0x40008030UL)
#define CLK_REF_DIV      MF_REG32(0x40008034UL)
#define CLK_REF_SELECTED MF_REG32(0x40008038UL)
#define CLK_SYS_CTRL     MF_REG32(0x4000803CUL)
#define CLK_SYS_DIV      MF_REG32(0x40008040UL)
#define CLK_SYS_SELECTED MF_REG32(0x40008044UL)
#define CLK_PERI_CTRL    MF_REG32(0x40008048UL)
#define CLK_REF_SRC_XOSC 2UL
#define CLK_PERI_ENABLE  (1UL << 11) /* AUXSRC 0: clk_sys */
#define CLK_DIV_ONE      (1UL << 8)

#define IO_BANK0_GPIO_CTRL(n) MF_REG32(0x40014004UL + 8UL * (n))
#define GPIO_FUNC_UART 2UL

#define UART_DR   MF_REG32(MF_UART_BASE + 0x000UL)
#define UART_FR   MF_REG32(MF_UART_BASE + 0x018UL)
#define UART_IBRD MF_REG32(MF_UART_BASE + 0x024UL)
#define UART_FBRD MF_REG32(MF_UART_BASE + 0x028UL)
#define UART_LCRH MF_REG32(MF_UART_BASE + 0x02CUL)
#define UART_CR   MF_REG32(MF_UART_BASE + 0x030UL)
#define UART_FR_RXFE (1UL << 4)
#define UART_FR_TXFF (1UL << 5)
#define UART_LCRH_8BIT_FIFO ((3UL << 5) | (1UL << 4))
#define UART_CR_ENABLE ((1UL << 0) | (1UL << 8) | (1UL << 9)) /* UARTEN, TXE, RXE */

#define UART_RESET_BIT (MF_UART_BASE == 0x40034000UL ? RESET_UART0 : RESET_UART1)

/* Baud divisor in 1/64ths: clock / (16 * baud) * 64, rounded. */
#define UART_DIV64 ((4UL * MF_CLOCK_HZ + MF_UART_BAUD / 2UL) / MF_UART_BAUD)

static void clocks_from_crystal(void)
{
    /* Start-up delay in units of 256 crystal cycles: ~1 ms. */
    XOSC_STARTUP = (MF_CLOCK_HZ / 1000UL + 255UL) / 256UL;
    XOSC_CTRL = XOSC_CTRL_1_15MHZ | XOSC_CTRL_ENABLE;
    while (!(XOSC_STATUS & XOSC_STATUS_STABLE)) {
    }
    /* clk_sys from clk_ref (glitch-free mux), clk_ref from the crystal. */
    CLK_SYS_CTRL = 0;
    while (!(CLK_SYS_SELECTED & 1UL)) {
    }
    CLK_REF_CTRL = CLK_REF_SRC_XOSC;
    while (!(CLK_REF_SELECTED & (1UL << CLK_REF_SRC_XOSC))) {
    }
    CLK_REF_DIV = CLK_DIV_ONE;
    CLK_SYS_DIV = CLK_DIV_ONE;
    CLK_PERI_CTRL = CLK_PERI_ENABLE;
}

void mf_uart_init(void)
{
    const uint32_t blocks = RESET_IO_BANK0 | RESET_PADS_BANK0 | UART_RESET_BIT;
    clocks_from_crystal();
    REG_CLR(RESETS_BASE) = blocks;
    while ((RESETS_RESET_DONE & blocks) != blocks) {
    }
    IO_BANK0_GPIO_CTRL(MF_UART_TX_PIN) = GPIO_FUNC_UART;
    IO_BANK0_GPIO_CTRL(MF_UART_RX_PIN) = GPIO_FUNC_UART;
    UART_IBRD = UART_DIV64 >> 6;
    UART_FBRD = UART_DIV64 & 63UL;
    UART_LCRH = UART_LCRH_8BIT_FIFO; /* also latches the divisor */
    UART_CR = UART_CR_ENABLE;
}

void mf_hal_putc(uint8_t byte)
{
    while (UART_FR & UART_FR_TXFF) {
    }
    UART_DR = byte;
}

uint8_t mf_hal_getc(void)
{
    while (UART_FR & UART_FR_RXFE) {
    }
    return (uint8_t)UART_DR;
}
