/*
 * 2-D convolution (and fully connected layers, as 1x1 convolutions of one
 * pixel), int8: the path for 8-bit cores (AVR). See mf_conv2d_s8.h,
 * mf_conv2d_s8_avr.
 *
 * An 8-bit core multiplies two int8 in one instruction (MULS) but needs four
 * for every 32-bit add. So the input offset is folded into the bias at code
 * generation time (as in the fast path, padded taps then read the zero
 * point), each product is int8 x int8, and products are summed in 16 bits,
 * `group` at a time, before one 32-bit add. Code generation picks `group` so
 * that no 16-bit partial sum can overflow: 128 * (sum of |w| over any `group`
 * consecutive weights of a tap) <= 32767 (microfit.codegen.layouts.
 * avr_group). Weights stay in their OHWI order and are read from flash
 * sequentially.
 *
 * Plain C: it builds and is tested everywhere, and the AVR simulator runs it.
 */
#include "mf_conv2d_s8.h"

#include <stddef.h>

#include "mf_fixedpoint.h"
#include "mf_platform.h"
#include "mf_simd.h"

/* Taps whose input pointers a pixel keeps in a table: a 3x3 window, in 18 bytes
 * of stack on AVR (2 KB of RAM). */
#define MF_AVR_MAX_TAPS 9

/* acc + the products of n int8 inputs (x, or the zero point when x is NULL)
 * with n weights from flash, summed `group` at a time in 16 bits. */
static uint32_t tap(uint32_t acc, const int8_t *x, int8_t zero_point, const int8_t *w,
                    int16_t n, int16_t group)
{
    int16_t s = 0, k = group;
    while (n-- > 0) {
        const int8_t xv = x != NULL ? *x++ : zero_point;
        s = (int16_t)(s + (int16_t)xv * (int16_t)MF_LD_S8(w));
        ++w;
        if (--k == 0) {
            acc += (uint32_t)(int32_t)s;
            s = 0;
            k = group;
        }
    }
    return acc + (uint32_t)(int32_t)s;
}

/* mf_requantize, with the 64-bit work reduced to one 32 x 32 -> 64 multiply
 * and shifts for the usual right shifts (see mf_simd.h's mf_rq_fast): an
 * 8-bit core has no 64-bit divide or multiply in hardware. */
static int32_t requantize(int32_t acc, int32_t multiplier, int32_t shift)
{
    if (shift <= -2 && shift >= -30) {
        return mf_rq_fast(acc, multiplier, -shift, (int32_t)1 << (-shift - 1));
    }
    return mf_requantize(acc, multiplier, shift);
}

/* The input a tap reads for an output pixel, NULL in the padding. */
static const int8_t *tap_input(const mf_conv2d_params *p, const int8_t *input, int32_t iy0,
                               int32_t ix0, int16_t t)
{
    const int32_t ky = t / p->k_w, kx = t % p->k_w;
    const int32_t iy = iy0 + ky * p->dilation_h, ix = ix0 + kx * p->dilation_w;
    if (iy < 0 || iy >= p->in_h || ix < 0 || ix >= p->in_w) {
        return NULL;
    }
    return input + (iy * p->in_w + ix) * p->in_c;
}

void mf_conv2d_s8_avr(const mf_conv2d_params *params,
                      const int8_t *input,
                      const int8_t *weights,
                      const int32_t *bias,
                      const int32_t *multiplier,
                      const int32_t *shift,
                      int16_t group,
                      int8_t *output)
{
    mf_conv2d_params p;
    /* Where each tap reads, worked out once per pixel rather than per channel
     * (windows of more taps recompute it: slower, same bytes). */
    const int8_t *taps[MF_AVR_MAX_TAPS];
    int32_t oy, ox;
    int16_t in_c, out_c, oc, t, n_taps;
    int8_t zero_point;
    int tabled;

    MF_LD_PARAMS(&p, params);
    in_c = (int16_t)p.in_c;
    out_c = (int16_t)p.out_c;
    n_taps = (int16_t)(p.k_h * p.k_w);
    tabled = n_taps <= MF_AVR_MAX_TAPS;
    zero_point = (int8_t)-p.input_offset;
    if (group < 1) {
        group = 1;
    }

    for (oy = 0; oy < p.out_h; ++oy) {
        const int32_t iy0 = oy * (int32_t)p.stride_h - (int32_t)p.pad_top;
        for (ox = 0; ox < p.out_w; ++ox) {
            const int32_t ix0 = ox * (int32_t)p.stride_w - (int32_t)p.pad_left;
            const int8_t *w = weights;
            if (tabled) {
                for (t = 0; t < n_taps; ++t) {
                    taps[t] = tap_input(&p, input, iy0, ix0, t);
                }
            }
            for (oc = 0; oc < out_c; ++oc) {
                /* Unsigned: the folded sums wrap, their total does not. */
                uint32_t acc = (uint32_t)MF_LD_S32(&bias[oc]);
                int32_t v;
                for (t = 0; t < n_taps; ++t) {
                    const int8_t *x = tabled ? taps[t] : tap_input(&p, input, iy0, ix0, t);
                    acc = tap(acc, x, zero_point, w, in_c, group);
                    w += in_c;
                }
                v = requantize((int32_t)acc, MF_LD_S32(&multiplier[oc]), MF_LD_S32(&shift[oc]));
                *output++ = mf_clamp_s8(v + p.output_offset, p.act_min, p.act_max);
            }
        }
    }
}
