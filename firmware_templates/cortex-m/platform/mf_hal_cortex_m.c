/*
 * HAL for bare-metal Cortex-M boards: start-up and the tick counter. The
 * UART half lives in the driver the board file selects (mf_uart.h).
 *
 * Counter, by board file: DWT->CYCCNT where the core has it and it counts
 * (real M3/M4/M7: one tick per cycle); SysTick otherwise. SysTick runs from
 * the processor clock, so on a real M0+ one tick is one cycle; under QEMU
 * -icount shift=0 it advances once per (1e9 / MF_CLOCK_HZ) instructions,
 * which the board file states as counter.per_tick. (QEMU reads CYCCNT as 0,
 * hence SysTick there.)
 */
#include <stdint.h>

#include "mf_board.h"
#include "mf_cortex_m.h"
#include "mf_hal.h"
#include "mf_target.h"
#include "mf_uart.h"

static volatile uint32_t systick_wraps;

void SysTick_Handler(void);

void SysTick_Handler(void)
{
    systick_wraps++;
}

void mf_hal_init(void)
{
    mf_uart_init();
#if MF_COUNTER_DWT
    DEMCR |= DEMCR_TRCENA;
    DWT_LAR = DWT_LAR_UNLOCK;
    DWT_CYCCNT = 0;
    DWT_CTRL |= DWT_CTRL_CYCCNTENA;
#else
    SYST_RVR = SYST_MAX_RELOAD;
    SYST_CVR = 0;
    SYST_CSR = SYST_CSR_CLKSOURCE | SYST_CSR_TICKINT | SYST_CSR_ENABLE;
#endif
    mf_irq_enable();
}

#if MF_COUNTER_DWT

void mf_hal_ticks_restart(void)
{
    /* CYCCNT counts single cycles: no phase to align, a zero start is enough. */
    DWT_CYCCNT = 0;
}

uint32_t mf_hal_ticks(void)
{
    return DWT_CYCCNT;
}

#else

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

#endif

uint32_t mf_hal_ticks_to_counter(uint32_t ticks)
{
    const uint64_t count = (uint64_t)ticks * (uint64_t)MF_COUNTER_PER_TICK;
    return count > 0xFFFFFFFFull ? 0xFFFFFFFFul : (uint32_t)count;
}
