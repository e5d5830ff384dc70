/*
 * UART driver for the nRF52 UARTE (the UART with EasyDMA; nRF52832/833/840).
 *
 * EasyDMA only reads and writes RAM, so every byte goes through a one-byte
 * RAM buffer. Between two receptions the UARTE keeps incoming bytes in its
 * small RX FIFO, which is ample for a request/reply protocol where the host
 * waits for each reply. The high-frequency crystal is started first: the
 * internal RC oscillator is too loose for reliable serial timing.
 */
#include <stdint.h>

#include "mf_board.h"
#include "mf_cortex_m.h"
#include "mf_hal.h"
#include "mf_target.h"
#include "mf_uart.h"

#define CLOCK_TASKS_HFCLKSTART    MF_REG32(0x40000000UL)
#define CLOCK_EVENTS_HFCLKSTARTED MF_REG32(0x40000100UL)

#define GPIO_OUTSET     MF_REG32(0x50000508UL)
#define GPIO_DIRSET     MF_REG32(0x50000518UL)
#define GPIO_PIN_CNF(n) MF_REG32(0x50000700UL + 4UL * (n))

#define UARTE_TASKS_STARTRX  MF_REG32(MF_UART_BASE + 0x000UL)
#define UARTE_TASKS_STARTTX  MF_REG32(MF_UART_BASE + 0x008UL)
#define UARTE_EVENTS_ENDRX   MF_REG32(MF_UART_BASE + 0x110UL)
#define UARTE_EVENTS_ENDTX   MF_REG32(MF_UART_BASE + 0x120UL)
#define UARTE_ENABLE         MF_REG32(MF_UART_BASE + 0x500UL)
#define UARTE_PSEL_TXD       MF_REG32(MF_UART_BASE + 0x50CUL)
#define UARTE_PSEL_RXD       MF_REG32(MF_UART_BASE + 0x514UL)
#define UARTE_BAUDRATE       MF_REG32(MF_UART_BASE + 0x524UL)
#define UARTE_RXD_PTR        MF_REG32(MF_UART_BASE + 0x534UL)
#define UARTE_RXD_MAXCNT     MF_REG32(MF_UART_BASE + 0x538UL)
#define UARTE_TXD_PTR        MF_REG32(MF_UART_BASE + 0x544UL)
#define UARTE_TXD_MAXCNT     MF_REG32(MF_UART_BASE + 0x548UL)
#define UARTE_CONFIG         MF_REG32(MF_UART_BASE + 0x56CUL)
#define UARTE_ENABLE_ON      8UL

/* BAUDRATE holds baud * 2^32 / 16 MHz, in steps of 0x1000 (115200 gives
 * 0x01D7E000, the documented value). */
#define UARTE_BAUD_VALUE \
    ((uint32_t)((((uint64_t)MF_UART_BAUD << 32) / 16000000ULL + 0x800ULL) & 0xFFFFF000ULL))

static volatile uint8_t rx_byte;
static volatile uint8_t tx_byte;

void mf_uart_init(void)
{
    CLOCK_EVENTS_HFCLKSTARTED = 0;
    CLOCK_TASKS_HFCLKSTART = 1;
    while (CLOCK_EVENTS_HFCLKSTARTED == 0u) {
    }
    /* TXD idles high as an output, RXD is an input, before the UARTE
     * takes the pins over. */
    GPIO_OUTSET = 1UL << MF_UART_TX_PIN;
    GPIO_DIRSET = 1UL << MF_UART_TX_PIN;
    GPIO_PIN_CNF(MF_UART_RX_PIN) = 0;
    UARTE_PSEL_TXD = MF_UART_TX_PIN;
    UARTE_PSEL_RXD = MF_UART_RX_PIN;
    UARTE_BAUDRATE = UARTE_BAUD_VALUE;
    UARTE_CONFIG = 0; /* 8N1, no flow control */
    UARTE_RXD_PTR = (uint32_t)(uintptr_t)&rx_byte;
    UARTE_RXD_MAXCNT = 1;
    UARTE_TXD_PTR = (uint32_t)(uintptr_t)&tx_byte;
    UARTE_TXD_MAXCNT = 1;
    UARTE_ENABLE = UARTE_ENABLE_ON;
}

void mf_hal_putc(uint8_t byte)
{
    tx_byte = byte;
    UARTE_EVENTS_ENDTX = 0;
    UARTE_TASKS_STARTTX = 1;
    while (UARTE_EVENTS_ENDTX == 0u) {
    }
}

uint8_t mf_hal_getc(void)
{
    UARTE_EVENTS_ENDRX = 0;
    UARTE_TASKS_STARTRX = 1;
    while (UARTE_EVENTS_ENDRX == 0u) {
    }
    return rx_byte;
}
