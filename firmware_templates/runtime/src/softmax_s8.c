/*
 * int8 softmax in 32-bit fixed point, as TFLite's reference int8 Softmax.
 * See mf_softmax_s8.h.
 *
 * Fixed-point formats are named Qi.f (i integer bits, f = 31 - i fractional
 * bits); a product of Qa and Qb values is a Qa+b value computed with
 * mf_sat_round_doubling_high_mul. The constants below are round(v * 2^f) of
 * the real value v named beside each.
 */
#include "mf_softmax_s8.h"

#include "mf_fixedpoint.h"
#include "mf_platform.h"

/* Q-format of the rescaled input differences and of the running sum. */
#define SCALED_DIFF_INT_BITS 5
#define ACCUM_INT_BITS 12

static int32_t mul(int32_t a, int32_t b)
{
    return mf_sat_round_doubling_high_mul(a, b);
}

/* x * 2^exponent for exponent >= 0, saturating at the int32 limits. */
static int32_t sat_shift_left(int32_t x, int exponent)
{
    const int32_t limit = (int32_t)(((uint32_t)1 << (31 - exponent)) - 1u);
    if (x > limit) {
        return INT32_MAX;
    }
    if (x < -limit) {
        return INT32_MIN;
    }
    return (int32_t)((uint32_t)x << exponent);
}

/* exp(a) for a in [-1/4, 0), a and result in Q0.31: a 4th-order Taylor
 * polynomial around -1/8. */
static int32_t exp_on_quarter_interval(int32_t a)
{
    const int32_t exp_minus_one_eighth = 1895147668; /* exp(-1/8) */
    const int32_t one_third = 715827883;             /* 1/3 */
    const int32_t x = a + ((int32_t)1 << 28);        /* a + 1/8 */
    const int32_t x2 = mul(x, x);
    const int32_t x3 = mul(x2, x);
    const int32_t x4 = mul(x2, x2);
    const int32_t x4_over_4 = mf_rounding_divide_by_pot(x4, 2);
    /* x^4/24 + x^3/6 + x^2/2 */
    const int32_t poly = mf_rounding_divide_by_pot(mul(x4_over_4 + x3, one_third) + x2, 1);
    return exp_minus_one_eighth + mul(exp_minus_one_eighth, x + poly);
}

/* exp(a) for a <= 0; a in Q5.26, result in Q0.31. */
static int32_t exp_on_negative_values(int32_t a)
{
    /* exp(-2^k) for k = -2 .. 4, in Q0.31; in flash on AVR. */
    static const int32_t exp_minus_pow2[7] MF_CONST = {
        1672461947, /* exp(-1/4) */
        1302514674, /* exp(-1/2) */
        790015084,  /* exp(-1) */
        290630308,  /* exp(-2) */
        39332535,   /* exp(-4) */
        720401,     /* exp(-8) */
        242,        /* exp(-16) */
    };
    const int frac_bits = 31 - SCALED_DIFF_INT_BITS;
    const int32_t quarter = (int32_t)1 << (frac_bits - 2);
    /* Split a = r - q with r in [-1/4, 0) and q >= 0 a multiple of 1/4. */
    const int32_t r = (a & (quarter - 1)) - quarter;
    const int32_t q = r - a;
    int32_t result = exp_on_quarter_interval(sat_shift_left(r, SCALED_DIFF_INT_BITS));
    int k;
    /* exp(-q) is the product of exp(-2^k) over the bits set in q. */
    for (k = 0; k < 7; ++k) {
        if (q & ((int32_t)1 << (frac_bits - 2 + k))) {
            result = mul(result, MF_LD_S32(&exp_minus_pow2[k]));
        }
    }
    return a == 0 ? INT32_MAX : result;
}

static int count_leading_zeros(uint32_t x)
{
    int n = 0;
    if (x == 0u) {
        return 32;
    }
    while (!(x & 0x80000000u)) {
        x <<= 1;
        ++n;
    }
    return n;
}

/* 1 / (1 + a) for a in [0, 1), a and result in Q0.31: three Newton-Raphson
 * steps on the half denominator, in Q2.29. */
static int32_t one_over_one_plus_x(int32_t a)
{
    const int32_t q2_one = (int32_t)1 << 29;
    const int32_t forty_eight_17ths = 1515870810;   /* 48/17 in Q2.29 */
    const int32_t minus_thirty_two_17ths = -1010580540; /* -32/17 in Q2.29 */
    /* (a + 1) / 2, rounded half away from zero, in Q0.31. */
    const int64_t sum = (int64_t)a + INT32_MAX;
    const int32_t half_denominator = (int32_t)((sum + (sum >= 0 ? 1 : -1)) / 2);
    int32_t x = forty_eight_17ths + mul(half_denominator, minus_thirty_two_17ths);
    int i;
    for (i = 0; i < 3; ++i) {
        const int32_t error = q2_one - mul(half_denominator, x);
        x = x + sat_shift_left(mul(x, error), 2);
    }
    /* x / 2, from Q2.29 to Q0.31. */
    return sat_shift_left(x, 1);
}

void mf_softmax_s8(const mf_softmax_params *params,
                   const int8_t *input,
                   int8_t *output)
{
    mf_softmax_params p;
    int32_t row, c;

    MF_LD_PARAMS(&p, params);
    for (row = 0; row < p.rows; ++row) {
        const int8_t *x = input + row * p.depth;
        int8_t *y = output + row * p.depth;
        int32_t max = -128;
        int32_t sum = 0; /* Q12.19 */
        int32_t headroom, bits_over_unit, reciprocal;

        for (c = 0; c < p.depth; ++c) {
            if (x[c] > max) {
                max = x[c];
            }
        }
        for (c = 0; c < p.depth; ++c) {
            const int32_t diff = x[c] - max;
            if (diff >= p.diff_min) {
                const int32_t scaled = mf_requantize(diff, p.input_multiplier, p.input_left_shift);
                sum += mf_rounding_divide_by_pot(exp_on_negative_values(scaled), ACCUM_INT_BITS);
            }
        }
        /* sum = 2^bits_over_unit * (1 + f) with f in [0, 1). */
        headroom = count_leading_zeros((uint32_t)sum);
        bits_over_unit = ACCUM_INT_BITS - headroom;
        reciprocal = one_over_one_plus_x(
            (int32_t)(((uint32_t)sum << headroom) - ((uint32_t)1 << 31)));
        for (c = 0; c < p.depth; ++c) {
            const int32_t diff = x[c] - max;
            if (diff >= p.diff_min) {
                const int32_t scaled = mf_requantize(diff, p.input_multiplier, p.input_left_shift);
                const int32_t prob = mul(reciprocal, exp_on_negative_values(scaled));
                /* Q0.31 probability / 2^bits_over_unit -> units of 1/256. Beyond
                 * a shift of 31 (sums of 512 and more) every probability is
                 * below 1/512 and rounds to 0; the shift itself would be
                 * undefined. */
                const int32_t exponent = bits_over_unit + 31 - 8;
                const int32_t q = exponent > 31 ? 0 : mf_rounding_divide_by_pot(prob, exponent);
                y[c] = mf_clamp_s8(q - 128, -128, 127);
            } else {
                y[c] = -128;
            }
        }
    }
}
