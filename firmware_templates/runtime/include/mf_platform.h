/*
 * Where model constants live and how kernels read them.
 *
 * On AVR, flash and RAM are separate address spaces. A plain `static const`
 * array is copied into RAM at start-up (an ATmega328P has 2 KB of it), so
 * model constants must be placed in flash with PROGMEM, and flash can only be
 * read with the pgm_read_* instructions. On every other target flash is
 * memory-mapped and a constant is read like anything else.
 *
 * The rule for generated code: everything a kernel receives through a
 * pointer to model constants -- the params struct, weights, bias,
 * multipliers, shifts -- is declared `static const ... MF_CONST`. Activations
 * (the arena, the input and output buffers) are ordinary RAM. Kernels read
 * model constants only through the MF_LD_* macros below.
 *
 * Define MF_CONST_IN_RAM to keep constants in RAM on AVR as well (then the
 * macros are plain loads everywhere).
 */
#ifndef MF_PLATFORM_H
#define MF_PLATFORM_H

#include <stdint.h>

#if defined(__AVR__) && !defined(MF_CONST_IN_RAM)
#include <avr/pgmspace.h>
#define MF_CONST PROGMEM
#define MF_LD_S8(ptr) ((int8_t)pgm_read_byte(ptr))
#define MF_LD_S32(ptr) ((int32_t)pgm_read_dword(ptr))
/* Copy a params struct out of flash into a local of the same type. */
#define MF_LD_PARAMS(dst, src) memcpy_P((dst), (src), sizeof *(dst))
/* Copy n bytes of constants (e.g. model_hash) out of flash into RAM. */
#define MF_LD_BYTES(dst, src, n) memcpy_P((dst), (src), (n))
#else
#define MF_CONST
#define MF_LD_S8(ptr) (*(ptr))
#define MF_LD_S32(ptr) (*(ptr))
#define MF_LD_PARAMS(dst, src) (*(dst) = *(src))
#define MF_LD_BYTES(dst, src, n) memcpy((dst), (src), (n))
#endif

#endif /* MF_PLATFORM_H */
