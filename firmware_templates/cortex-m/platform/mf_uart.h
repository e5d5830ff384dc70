/*
 * The UART driver a board's file selects (select/uart.kind/<kind>/ in the
 * family template): it implements mf_hal_putc and mf_hal_getc from mf_hal.h
 * and this one start-up function.
 */
#ifndef MF_UART_H
#define MF_UART_H

/* Clocks, pins and the UART itself, at the board's baud rate. Runs before
 * interrupts are enabled. */
void mf_uart_init(void);

#endif /* MF_UART_H */
