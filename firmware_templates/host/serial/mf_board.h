/*
 * Board constants of the host build of the device protocol: a PC process
 * standing in for a board on a pseudo-terminal (or stdin/stdout). Its counter
 * is the monotonic clock in nanoseconds (counter kind 2), which is time, but
 * a PC's, not a microcontroller's.
 */
#ifndef MF_BOARD_H
#define MF_BOARD_H

#define MF_BOARD_NAME          "host-pty"
#define MF_CLOCK_HZ            1000000000UL
/* 0 = cycles, 1 = instructions, 2 = nanoseconds (host clock) */
#define MF_COUNTER_KIND        2
#define MF_COUNTER_PER_TICK    1UL
#define MF_UART_BAUD           115200UL

#endif /* MF_BOARD_H */
