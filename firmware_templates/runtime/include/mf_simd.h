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

/* acc + low lane * low lane, and high lane * high lane (SMLABB, SMLATT). */
static inline int32_t mf_smlabb(uint32_t a, uint32_t b, int32_t acc)
{
    return __smlabb((int32_t)a, (int32_t)b, acc);
}

static inline int32_t mf_smlatt(uint32_t a, uint32_t b, int32_t acc)
{
    return __smlatt((int32_t)a, (int32_t)b, acc);
}

/* Lane-wise 16-bit add (SADD16). */
static inline uint32_t mf_sadd16(uint32_t a, uint32_t b)
{
    return (uint32_t)__sadd16((int32_t)a, (int32_t)b);
}

/* Saturate to int8 (SSAT #8). */
static inline int32_t mf_ssat8(int32_t x)
{
    return __ssat(x, 8);
}

/* Byte-wise signed maximum and minimum of four int8 lanes (SSUB8 sets the GE
 * flags that SEL reads; one asm block keeps the pair together). */
static inline uint32_t mf_max8(uint32_t a, uint32_t b)
{
    uint32_t t, r;
    __asm("ssub8 %0, %2, %3\n\tsel %1, %2, %3" : "=&r"(t), "=r"(r) : "r"(a), "r"(b) : "cc");
    (void)t;
    return r;
}

static inline uint32_t mf_min8(uint32_t a, uint32_t b)
{
    uint32_t t, r;
    __asm("ssub8 %0, %2, %3\n\tsel %1, %3, %2" : "=&r"(t), "=r"(r) : "r"(a), "r"(b) : "cc");
    (void)t;
    return r;
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

static inline int32_t mf_smlabb(uint32_t a, uint32_t b, int32_t acc)
{
    const int32_t lo = (int32_t)(int16_t)(a & 0xFFFFu) * (int16_t)(b & 0xFFFFu);
    return (int32_t)((uint32_t)acc + (uint32_t)lo);
}

static inline int32_t mf_smlatt(uint32_t a, uint32_t b, int32_t acc)
{
    const int32_t hi = (int32_t)(int16_t)(a >> 16) * (int16_t)(b >> 16);
    return (int32_t)((uint32_t)acc + (uint32_t)hi);
}

/* SADD16 wraps each lane. */
static inline uint32_t mf_sadd16(uint32_t a, uint32_t b)
{
    return ((a + b) & 0xFFFFu) | (((a >> 16) + (b >> 16)) << 16);
}

static inline int32_t mf_ssat8(int32_t x)
{
    return x < -128 ? -128 : (x > 127 ? 127 : x);
}

/* SSUB8 + SEL, lane by lane. */
static inline uint32_t mf_max8(uint32_t a, uint32_t b)
{
    uint32_t r = 0;
    int i;
    for (i = 0; i < 32; i += 8) {
        const int8_t x = (int8_t)((a >> i) & 0xFFu), y = (int8_t)((b >> i) & 0xFFu);
        r |= (uint32_t)(uint8_t)(x >= y ? x : y) << i;
    }
    return r;
}

static inline uint32_t mf_min8(uint32_t a, uint32_t b)
{
    uint32_t r = 0;
    int i;
    for (i = 0; i < 32; i += 8) {
        const int8_t x = (int8_t)((a >> i) & 0xFFu), y = (int8_t)((b >> i) & 0xFFu);
        r |= (uint32_t)(uint8_t)(x >= y ? y : x) << i;
    }
    return r;
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

/* A 32-bit store to any address (byte stores on Cortex-M0). */
static inline void mf_store32(void *p, uint32_t v)
{
    memcpy(p, &v, 4);
}

/* Four values already within [-128, 127] as the bytes of one word, first in
 * the lowest byte (UXTB and three BFI). */
static inline uint32_t mf_pack4(int32_t a, int32_t b, int32_t c, int32_t d)
{
    return ((uint32_t)a & 0xFFu) | (((uint32_t)b & 0xFFu) << 8) | (((uint32_t)c & 0xFFu) << 16)
         | ((uint32_t)d << 24);
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
 * Requantization in fewer instructions: mf_requantize(acc, multiplier, shift)
 * + output_offset, for the right shifts e = -shift in [2, 22] that layers
 * have (multipliers below 1/4).
 *
 * Code generation (microfit.codegen.layouts.pack_requant) writes a layer's
 * requantization as int32 {flags, then per output channel: multiplier, e,
 * round} with round = 2^(e-1) + output_offset * 2^e: the rounding constant
 * and the output offset in one add. The flags say which form is exact for
 * every channel of the layer:
 *
 * MF_RQ_FAST (2 <= e <= 22 everywhere). With T = acc * multiplier + 2^30,
 * double rounding computes q = floor(T / 2^31), then
 * floor((q + 2^(e-1) - [q < 0]) / 2^e), which equals
 * floor((T - [T < 0] * 2^31 + 2^(30+e)) / 2^(31+e)): only the high word of
 * T survives, less the borrow of the 2^31 term (T < 0 with bit 31 clear),
 * plus round / 2, shifted by e - 1. Single rounding is
 * (acc * multiplier + 2^(30+e)) >> (31+e): the high word plus round / 2,
 * shifted by e - 1. |T| < 2^62, so no step overflows.
 *
 * MF_RQ_SMALL as well (every accumulator provably within +-2^30: code
 * generation bounds |bias| + 128 * sum |weights| per channel). Then 2 * acc
 * fits in int32 and the high multiply is one instruction: q =
 * (2 * acc * multiplier + 2^31) >> 32 (SMMULR) for double rounding, then
 * (q - [q < 0] + round) >> e; for single rounding, h = (2 * acc * multiplier)
 * >> 32 (SMMUL), then (h + round) >> e (the dropped low bits cannot carry
 * into the rounded result). |q| < 2^30, so the adds cannot overflow.
 *
 * Layers with neither flag take mf_requantize.
 */
#define MF_RQ_FAST 1
#define MF_RQ_SMALL 2

static inline int32_t mf_rq_fast(int32_t acc, int32_t multiplier, int32_t e, int32_t round)
{
#if defined(MF_SINGLE_ROUNDING)
    const int32_t hi = (int32_t)(((int64_t)acc * multiplier) >> 32);
    return (hi + (round >> 1)) >> (e - 1);
#else
    const int64_t t = (int64_t)acc * multiplier + ((int64_t)1 << 30);
    const uint32_t lo = (uint32_t)t;
    const int32_t hi = (int32_t)(t >> 32);
    const int32_t borrow = (int32_t)(((uint32_t)hi & ~lo) >> 31);
    return (hi - borrow + (round >> 1)) >> (e - 1);
#endif
}

static inline int32_t mf_rq_small(int32_t acc, int32_t multiplier, int32_t e, int32_t round)
{
    const int32_t acc2 = (int32_t)((uint32_t)acc << 1);
    int32_t q;
#if MF_SIMD && defined(__ARM_FEATURE_DSP) && defined(__GNUC__)
#if defined(MF_SINGLE_ROUNDING)
    __asm("smmul %0, %1, %2" : "=r"(q) : "r"(acc2), "r"(multiplier));
#else
    __asm("smmulr %0, %1, %2" : "=r"(q) : "r"(acc2), "r"(multiplier));
#endif
#else
    const int64_t p = (int64_t)acc2 * multiplier;
#if defined(MF_SINGLE_ROUNDING)
    q = (int32_t)(p >> 32);
#else
    q = (int32_t)(p >> 32) + (int32_t)((uint32_t)p >> 31);
#endif
#endif
#if !defined(MF_SINGLE_ROUNDING)
    q -= (int32_t)((uint32_t)q >> 31);
#endif
    return (q + round) >> e;
}

/* Requantize with a layer's flags and one channel's {multiplier, e, round};
 * output_offset is included. */
static inline int32_t mf_rq(int32_t flags, int32_t acc, const int32_t *rq, int32_t output_offset)
{
    if (flags & MF_RQ_SMALL) {
        return mf_rq_small(acc, rq[0], rq[1], rq[2]);
    }
    if (flags & MF_RQ_FAST) {
        return mf_rq_fast(acc, rq[0], rq[1], rq[2]);
    }
    return mf_requantize(acc, rq[0], -rq[1]) + output_offset;
}

#endif /* MF_SIMD_H */
