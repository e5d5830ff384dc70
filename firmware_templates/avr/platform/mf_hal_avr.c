/*
 * HAL for AVR boards (ATmega328P, ATmega2560): USART0 for the link, Timer1
 * as the cycle counter. Runs the same on the real chip and under simavr.
 *
 * Counter: Timer1 counts CPU cycles (prescaler 1); its overflow interrupt
 * extends it to 32 bits, so one tick is one cycle. The overflow handler's
 * own ~40 cycles every 65536 fall inside the measured region: under 0.1%,
 * and the same on every run, so counts stay repeatable.
 *
 * Receive: the core sleeps (idle mode) until a byte arrives. The RX
 * interrupt only wakes it and masks itself; the byte stays in UDR0 for
 * mf_hal_getc, so no RAM goes to a receive buffer. Sleeping also lets a
 * simulator skip idle time instead of spinning a host core.
 */
#include <stdint.h>

#include <avr/interrupt.h>
#include <avr/io.h>
#include <avr/sleep.h>

#include "mf_board.h"
#include "mf_hal.h"
#include "mf_protocol.h"

/* Double-speed mode divides by 8 instead of 16: at 16 MHz it makes 115200
 * baud 2.1% off instead of 3.5%, the setting the Arduino core uses too. */
#define MF_UBRR ((MF_CLOCK_HZ + 4UL * MF_UART_BAUD) / (8UL * MF_UART_BAUD) - 1UL)

#if MF_UBRR > 4095UL
#error "baud rate too low for this clock: UBRR0 would exceed 12 bits"
#endif

/* ATmega2560 numbers its USART vectors; the ATmega328P has only one. */
#if defined(USART0_RX_vect)
#define MF_UART_RX_VECT USART0_RX_vect
#else
#define MF_UART_RX_VECT USART_RX_vect
#endif

static volatile uint16_t timer1_wraps;

ISR(TIMER1_OVF_vect)
{
    timer1_wraps++;
}

ISR(MF_UART_RX_VECT)
{
    UCSR0B &= (uint8_t)~_BV(RXCIE0);
}

/* An interrupt without a handler would otherwise jump to the reset vector
 * and reboot silently; tell the host instead (detail 0xAB: "bad ISR"). */
ISR(BADISR_vect)
{
    mf_proto_report_fault(0xABu);
    for (;;) {
    }
}

void mf_hal_init(void)
{
    UBRR0H = (uint8_t)(MF_UBRR >> 8);
    UBRR0L = (uint8_t)(MF_UBRR & 0xFFu);
    UCSR0A = _BV(U2X0);
    UCSR0C = _BV(UCSZ01) | _BV(UCSZ00); /* 8N1 */
    UCSR0B = _BV(RXEN0) | _BV(TXEN0);

    TCCR1A = 0;
    TCCR1B = _BV(CS10); /* clk/1: one tick per cycle */
    TCNT1 = 0;
    TIFR1 = _BV(TOV1);
    TIMSK1 = _BV(TOIE1);

    set_sleep_mode(SLEEP_MODE_IDLE);
    sei();
}

void mf_hal_putc(uint8_t byte)
{
    while (!(UCSR0A & _BV(UDRE0))) {
    }
    UDR0 = byte;
}

uint8_t mf_hal_getc(void)
{
    for (;;) {
        cli();
        if (UCSR0A & _BV(RXC0)) {
            sei();
            break;
        }
        UCSR0B |= _BV(RXCIE0);
        sleep_enable();
        /* The instruction after SEI always runs before any interrupt, so a
         * byte arriving between the check and SLEEP still wakes the core. */
        sei();
        sleep_cpu();
        sleep_disable();
    }
    return UDR0;
}

void mf_hal_ticks_restart(void)
{
    const uint8_t sreg = SREG;
    cli();
    TCNT1 = 0;
    TIFR1 = _BV(TOV1);
    timer1_wraps = 0;
    SREG = sreg;
}

uint32_t mf_hal_ticks(void)
{
    const uint8_t sreg = SREG;
    uint16_t low;
    uint16_t high;
    cli();
    low = TCNT1;
    high = timer1_wraps;
    /* An overflow that happened after cli() is still pending: count it if
     * the low half we read is from after the wrap. */
    if ((TIFR1 & _BV(TOV1)) && low < 0x8000u) {
        high++;
    }
    SREG = sreg;
    return ((uint32_t)high << 16) | low;
}

uint32_t mf_hal_ticks_to_counter(uint32_t ticks)
{
    /* 32-bit arithmetic only: 64-bit multiplies cost AVR flash. */
    if (ticks > 0xFFFFFFFFul / MF_COUNTER_PER_TICK) {
        return 0xFFFFFFFFul;
    }
    return ticks * MF_COUNTER_PER_TICK;
}
