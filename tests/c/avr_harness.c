/*
 * ATmega328P test harness, run under simavr: calls the generated
 * mf_test_run_cases(), which runs kernels on constants kept in flash
 * (MF_CONST = PROGMEM), and prints every output on UART0 as one text line,
 * "O<case> <hex bytes>", then "END". Exists to run the real AVR code paths:
 * pgm_read_* loads, 16-bit int, 64-bit arithmetic done in software.
 */
#include <avr/interrupt.h>
#include <avr/io.h>
#include <avr/pgmspace.h>
#include <avr/sleep.h>
#include <stdint.h>

#include "mf_runtime.h"

void mf_test_run_cases(void);

/* Activations live here, as in generated firmware. */
int8_t mf_test_arena[1280];

static void uart_put(char c)
{
    while (!(UCSR0A & (1 << UDRE0))) {
    }
    UDR0 = (uint8_t)c;
}

static void uart_hex(uint8_t v)
{
    static const char digits[] = "0123456789abcdef";
    uart_put(digits[v >> 4]);
    uart_put(digits[v & 0x0F]);
}

/* Copy a flash input into the arena. */
void mf_test_load(int8_t *dst, const int8_t *src, uint16_t n)
{
    memcpy_P(dst, src, n);
}

void mf_test_emit(uint16_t case_index, const int8_t *out, uint16_t n)
{
    uint16_t i;
    uart_put('O');
    uart_hex((uint8_t)(case_index >> 8));
    uart_hex((uint8_t)case_index);
    uart_put(' ');
    for (i = 0; i < n; ++i) {
        uart_hex((uint8_t)out[i]);
    }
    uart_put('\n');
}

int main(void)
{
    UBRR0 = 0;
    UCSR0B = (uint8_t)(1 << TXEN0);
    UCSR0C = (uint8_t)(3 << UCSZ00);
    mf_test_run_cases();
    uart_put('E');
    uart_put('N');
    uart_put('D');
    uart_put('\n');
    /* Interrupts off, then sleep: simavr ends the simulation here. */
    cli();
    sleep_cpu();
    for (;;) {
    }
}
