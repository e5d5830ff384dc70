/*
 * Fixed-point requantization shared by every kernel.
 *
 * The numpy twin is pipeline/quantize/fixedpoint.py; tests hold the two
 * bit-identical. Default: TFLite Micro / CMSIS-NN double rounding
 * (saturating rounding doubling high multiply, then rounding divide by a power
 * of two). Define MF_SINGLE_ROUNDING for LiteRT's single rounding
 * (round(x * M) in one 64-bit step). See docs/quantization.md.
 */
#ifndef MF_FIXEDPOINT_H
#define MF_FIXEDPOINT_H

#include <stdint.h>

static inline int32_t mf_sat_round_doubling_high_mul(int32_t a, int32_t b)
{
    if (a == INT32_MIN && b == INT32_MIN) {
        return INT32_MAX;
    }
    {
        const int64_t ab = (int64_t)a * (int64_t)b;
        const int64_t nudge = ab >= 0 ? ((int64_t)1 << 30) : (1 - ((int64_t)1 << 30));
        /* C99 division truncates toward zero, as gemmlowp expects. */
        return (int32_t)((ab + nudge) / ((int64_t)1 << 31));
    }
}

static inline int32_t mf_rounding_divide_by_pot(int32_t x, int exponent)
{
    const int32_t mask = (int32_t)(((uint32_t)1 << exponent) - 1u);
    const int32_t remainder = x & mask;
    const int32_t threshold = (mask >> 1) + (x < 0 ? 1 : 0);
    /* Arithmetic right shift of a negative value: implementation-defined in
     * C99, arithmetic on every compiler we target (gcc, clang, avr-gcc). */
    return (x >> exponent) + (remainder > threshold ? 1 : 0);
}

/* x * multiplier * 2^(shift - 31), rounded as the selected mode rounds. */
static inline int32_t mf_requantize(int32_t x, int32_t multiplier, int32_t shift)
{
#if defined(MF_SINGLE_ROUNDING)
    const int32_t total_shift = 31 - shift;
    const int64_t round = (int64_t)1 << (total_shift - 1);
    return (int32_t)(((int64_t)x * multiplier + round) >> total_shift);
#else
    const int32_t left = shift > 0 ? shift : 0;
    const int32_t right = shift > 0 ? 0 : -shift;
    /* Shift as unsigned so an overflow wraps instead of being undefined. */
    const int32_t shifted = (int32_t)((uint32_t)x << left);
    return mf_rounding_divide_by_pot(mf_sat_round_doubling_high_mul(shifted, multiplier), right);
#endif
}

static inline int8_t mf_clamp_s8(int32_t v, int32_t lo, int32_t hi)
{
    return (int8_t)(v < lo ? lo : (v > hi ? hi : v));
}

#endif /* MF_FIXEDPOINT_H */
