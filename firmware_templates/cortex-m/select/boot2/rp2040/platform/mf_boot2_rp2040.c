/*
 * Second-stage boot for the RP2040, written for microfit.
 *
 * The RP2040's boot ROM copies the first 256 bytes of external flash into
 * SRAM and runs them only if their last 4 bytes are the CRC-32 of the first
 * 252 (tools/boot2_checksum.py writes it after linking). This stage must
 * make the flash readable in place (XIP), then start the application whose
 * vector table follows at flash + 0x100.
 *
 * Instead of tuning the flash chip's fast read modes (chip-specific), it
 * asks the ROM for its generic routine, which sets up standard 03h reads
 * that every serial flash supports. Slower fetches than Pico SDK's default
 * stage, but the same code on any RP2040 board. The ROM's lookup helpers
 * sit at fixed addresses given by the datasheet: a 16-bit pointer to the
 * function table at 0x14 and one to the lookup function at 0x18.
 *
 * It runs from SRAM although linked at the start of flash, so it is written
 * to be position independent: no calls by absolute address, no data.
 */
#include <stdint.h>

#include "mf_cortex_m.h"

#define ROM_FUNC_TABLE_PTR 0x00000014UL
#define ROM_LOOKUP_PTR     0x00000018UL
/* The ROM names its functions with two ASCII letters: 'C','X' is
 * flash_enter_cmd_xip. */
#define ROM_CODE(a, b) ((uint32_t)(a) | ((uint32_t)(b) << 8))
#define APP_VECTORS 0x10000100UL

typedef void *(*rom_lookup_fn)(uint32_t table, uint32_t code);
typedef void (*rom_void_fn)(void);

/* A 16-bit read from a fixed low address. The empty asm hides the constant
 * from the compiler, which would otherwise take address 0x14 for a null
 * pointer plus offset and reject the read (-Warray-bounds). Written as a
 * macro, not a function: a call could land outside the 256 copied bytes. */
#define ROM_HWORD(addr, out)                                     \
    do {                                                         \
        uintptr_t where_ = (addr);                               \
        __asm__("" : "+r"(where_));                              \
        (out) = *(volatile const uint16_t *)where_;              \
    } while (0)

void mf_boot2_entry(void);

__attribute__((section(".boot2.entry"), used, noreturn)) void mf_boot2_entry(void)
{
    uint32_t table;
    uint32_t lookup_addr;
    rom_lookup_fn lookup;
    ROM_HWORD(ROM_FUNC_TABLE_PTR, table);
    ROM_HWORD(ROM_LOOKUP_PTR, lookup_addr);
    lookup = (rom_lookup_fn)(uintptr_t)lookup_addr;
    const rom_void_fn enter_xip = (rom_void_fn)lookup(table, ROM_CODE('C', 'X'));
    const uint32_t *vectors = (const uint32_t *)APP_VECTORS;
    enter_xip();
    SCB_VTOR = APP_VECTORS;
    __asm__ volatile("msr msp, %0\n\tbx %1" : : "r"(vectors[0]), "r"(vectors[1]) : "memory");
    for (;;) {
    }
}
