/*
 * The handful of Cortex-M core registers the platform code touches (SysTick,
 * NVIC, SCB), so the template needs no CMSIS download. Addresses are fixed by
 * the ARMv7-M architecture, identical on M3, M4 and M7.
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

static inline void mf_irq_disable(void) { __asm__ volatile("cpsid i" ::: "memory"); }
static inline void mf_irq_enable(void) { __asm__ volatile("cpsie i" ::: "memory"); }
static inline void mf_wait_for_interrupt(void) { __asm__ volatile("wfi" ::: "memory"); }

#endif /* MF_CORTEX_M_H */
