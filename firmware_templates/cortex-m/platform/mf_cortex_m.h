/*
 * The handful of Cortex-M core registers the platform code touches (SysTick,
 * NVIC, SCB, DWT), so the template needs no CMSIS download. Addresses are
 * fixed by the architecture: identical on M0+, M3, M4 and M7 (DWT's cycle
 * counter exists from M3 up).
 */
#ifndef MF_CORTEX_M_H
#define MF_CORTEX_M_H

#include <stdint.h>

#define MF_REG32(addr) (*(volatile uint32_t *)(uintptr_t)(addr))

#define SYST_CSR   MF_REG32(0xE000E010UL)
#define SYST_RVR   MF_REG32(0xE000E014UL)
#define SYST_CVR   MF_REG32(0xE000E018UL)
#define SYST_CSR_ENABLE    (1UL << 0)
#define SYST_CSR_TICKINT   (1UL << 1)
#define SYST_CSR_CLKSOURCE (1UL << 2) /* 1 = processor clock */
#define SYST_MAX_RELOAD    0x00FFFFFFUL

#define NVIC_ISER(n) MF_REG32(0xE000E100UL + 4UL * (uint32_t)(n))

#define SCB_CPACR  MF_REG32(0xE000ED88UL)
#define SCB_VTOR   MF_REG32(0xE000ED08UL)

/* Cycle counter of the Data Watchpoint and Trace unit (ARMv7-M: M3, M4, M7;
 * absent on M0/M0+). DEMCR.TRCENA powers the unit; the lock access
 * register exists on some M7 parts and ignores the write elsewhere. */
#define DEMCR        MF_REG32(0xE000EDFCUL)
#define DEMCR_TRCENA (1UL << 24)
#define DWT_CTRL     MF_REG32(0xE0001000UL)
#define DWT_CYCCNT   MF_REG32(0xE0001004UL)
#define DWT_LAR      MF_REG32(0xE0001FB0UL)
#define DWT_CTRL_CYCCNTENA (1UL << 0)
#define DWT_LAR_UNLOCK     0xC5ACCE55UL

static inline void mf_irq_disable(void) { __asm__ volatile("cpsid i" ::: "memory"); }
static inline void mf_irq_enable(void) { __asm__ volatile("cpsie i" ::: "memory"); }
static inline void mf_wait_for_interrupt(void) { __asm__ volatile("wfi" ::: "memory"); }

#endif /* MF_CORTEX_M_H */
