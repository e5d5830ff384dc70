/*
 * Internal helpers of the fast kernels (*_fast.c): word loads, the Cortex-M
 * DSP extension's packed 16-bit multiply-accumulate, and a cheaper exact
 * form of mf_requantize for one output channel. Not part of the kernel API.
 *
 * MF_SIMD is 1 when the DSP instructions are available: on a core with the
 * DSP extension (__ARM_FEATURE_DSP: Cortex-M4, M7, M33 with DSP), or on any
 * compiler when MF_SIMD_EMULATE is defined, in which case portable C computes
 * what each instruction computes. The tests build the kernels both ways on
 * the host, so the DSP code runs under the sanitizers too.
 *
 * The packed format: a 32-bit word holds two int16 lanes; SXTB16 sign-extends
 * bytes 0 and 2 of a word into the two lanes, SXTB16 of the word rotated by
 * 8 bits takes bytes 1 and 3, and SMLAD adds both lane products to an
 * accumulator. Both operands of every SMLAD are unpacked the same way, so
 * lane i of one multiplies lane i of the other, whatever order the bytes of
 * a group of four were in.
 */
#ifndef MF_SIMD_H
#define MF_SIMD_H

#include <stdint.h>
#include <string.h>

#include "mf_fixedpoint.h"

#if defined(__ARM_FEATURE_DSP) && __ARM_FEATURE_DSP
#include <arm_acle.h>
#define MF_SIMD 1

static inline uint32_t mf_sxtb16(uint32_t x)
{
    return (uint32_t)__sxtb16((int32_t)x);
}

static inline uint32_t mf_sxtb16_ror8(uint32_t x)
{
    uint32_t r;
    /* GCC does not fold a rotate into the intrinsic's operand. */
    __asm("sxtb16 %0, %1, ror #8" : "=r"(r) : "r"(x));
    return r;
}

static inline int32_t mf_smlad(uint32_t a, uint32_t b, int32_t acc)
{
    return __smlad((int32_t)a, (int32_t)b, acc);
}

#elif defined(MF_SIMD_EMULATE)
#define MF_SIMD 1

static inline uint32_t mf_sxtb16(uint32_t x)
{
    return ((uint32_t)(uint16_t)(int16_t)(int8_t)(x & 0xFFu))
         | ((uint32_t)(uint16_t)(int16_t)(int8_t)((x >> 16) & 0xFFu) << 16);
}

static inline uint32_t mf_sxtb16_ror8(uint32_t x)
{
    return mf_sxtb16((x >> 8) | (x << 24));
}

/* SMLAD wraps on overflow (it only sets the Q flag): add as unsigned. */
static inline int32_t mf_smlad(uint32_t a, uint32_t b, int32_t acc)
{
    const int32_t lo = (int32_t)(int16_t)(a & 0xFFFFu) * (int16_t)(b & 0xFFFFu);
    const int32_t hi = (int32_t)(int16_t)(a >> 16) * (int16_t)(b >> 16);
    return (int32_t)((uint32_t)acc + (uint32_t)lo + (uint32_t)hi);
}

#else
#define MF_SIMD 0
#endif

#if defined(__GNUC__)
#define MF_ALIGNED4(p) __builtin_assume_aligned((p), 4)
#define MF_ALWAYS_INLINE __attribute__((always_inline))
#else
#define MF_ALIGNED4(p) (p)
#define MF_ALWAYS_INLINE
#endif

/* A 32-bit load from a 4-byte aligned address, without breaking C's aliasing
 * rules (compilers turn it into one LDR, or LDRD/LDM for neighbours). */
static inline uint32_t mf_load32a(const void *p)
{
    uint32_t v;
    memcpy(&v, MF_ALIGNED4(p), 4);
    return v;
}

static inline void mf_store32a(void *p, uint32_t v)
{
    memcpy(MF_ALIGNED4(p), &v, 4);
}

/* A 32-bit load from any address (one LDR where the core allows unaligned
 * loads, byte loads on Cortex-M0). */
static inline uint32_t mf_load32(const void *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

/*
 * mf_requantize(acc, multiplier, shift) + output_offset in fewer
 * instructions, for the right shifts convolutions have: -23 <= shift <= -2
 * (multipliers below 1/4). Code generation stores, per output channel,
 * {multiplier, shift, round} with round = 2^(-shift-2) + output_offset *
 * 2^(-shift-1) (microfit.codegen.layouts.pack_requant); a kernel checks
 * mf_requant_fast_ok on every channel of a layer once and takes
 * mf_requantize for layers where it fails.
 *
 * Double rounding: with T = acc * multiplier + 2^30, the high multiply gives
 * q = floor(T / 2^31) and the rounding shift by e = -shift gives
 * floor((q + 2^(e-1) - [q < 0]) / 2^e), which equals
 * floor((T - [T < 0] * 2^31 + 2^(30+e)) / 2^(31+e)). Only the high word of T
 * survives that shift, less the borrow of the 2^31 term (T < 0 with bit 31
 * clear), plus 2^(e-2). Adding output_offset * 2^(e-1) before the shift adds
 * output_offset after it. |T| < 2^62, so the high word lies in [-2^30, 2^30)
 * and, with e <= 23, no step overflows.
 *
 * Single rounding: (acc * multiplier + 2^(30+e)) >> (31+e), the rounding
 * constant again falling in the high word.
 */
static inline int mf_requant_fast_ok(int32_t shift)
{
    return shift <= -2 && shift >= -23;
}

static inline int32_t mf_requant_fast(int32_t acc, int32_t multiplier, int32_t shift,
                                      int32_t round)
{
#if defined(MF_SINGLE_ROUNDING)
    const int32_t hi = (int32_t)(((int64_t)acc * multiplier) >> 32);
    return (hi + round) >> (-shift - 1);
#else
    const int64_t t = (int64_t)acc * multiplier + ((int64_t)1 << 30);
    const uint32_t lo = (uint32_t)t;
    const int32_t hi = (int32_t)(t >> 32);
    const int32_t borrow = (int32_t)(((uint32_t)hi & ~lo) >> 31);
    return (hi - borrow + round) >> (-shift - 1);
#endif
}

#endif /* MF_SIMD_H */
