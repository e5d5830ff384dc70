/*
 * The few board services the protocol needs, one implementation per board
 * family (cortex-m/platform/mf_hal_*.c, the AVR core, the host test build).
 *
 * Kept this small on purpose: a new board is a UART and a timer, nothing
 * else. All functions are blocking and interrupt-free from the caller's view.
 */
#ifndef MF_HAL_H
#define MF_HAL_H

#include <stdint.h>

/* Bring up the UART and the tick counter. Called once, before anything else. */
void mf_hal_init(void);

/* Send one byte; waits while the transmitter is busy. */
void mf_hal_putc(uint8_t byte);

/* Receive one byte; waits (possibly sleeping) until one arrives. */
uint8_t mf_hal_getc(void);

/*
 * Restart the tick counter at a fixed phase. Called right before a timed
 * region so that the same work always gives the same count: a free-running
 * counter that ticks every N units would otherwise round the same duration
 * up or down depending on where in a tick the region began. May do nothing
 * on boards whose counter already counts single cycles.
 */
void mf_hal_ticks_restart(void);

/* Free-running tick count; differences are taken modulo 2^32. */
uint32_t mf_hal_ticks(void);

/*
 * Convert a tick difference into the board's counter unit (cycles or
 * instructions, see MF_COUNTER_KIND). Saturates at UINT32_MAX instead of
 * wrapping, so an overflow is visible as such.
 */
uint32_t mf_hal_ticks_to_counter(uint32_t ticks);

#endif /* MF_HAL_H */
