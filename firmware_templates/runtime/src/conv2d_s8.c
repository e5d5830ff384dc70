/*
 * 2-D convolution, int8, per-output-channel requantization: the portable
 * path, in TFLite's reference ConvPerChannel loop order. See mf_conv2d_s8.h.
 */
#include "mf_conv2d_s8.h"

#include <stddef.h>

#include "mf_fixedpoint.h"
#include "mf_platform.h"

void mf_conv2d_s8(const mf_conv2d_params *params,
                  const int8_t *input,
                  const int8_t *weights,
                  const int32_t *bias,
                  const int32_t *multiplier,
                  const int32_t *shift,
                  int8_t *output)
{
    mf_conv2d_params p;
    int32_t in_h, in_w, in_c, out_h, out_w, out_c, k_h, k_w;
    int32_t filter_size;
    int16_t input_offset;
    int32_t oy, ox, oc, ky, kx, ic;

    MF_LD_PARAMS(&p, params);
    /* Sizes as int32_t: products of uint16_t fields would overflow a 16-bit
     * int on AVR and a 32-bit int elsewhere. */
    in_h = p.in_h;
    in_w = p.in_w;
    in_c = p.in_c;
    out_h = p.out_h;
    out_w = p.out_w;
    out_c = p.out_c;
    k_h = p.k_h;
    k_w = p.k_w;
    filter_size = k_h * k_w * in_c;
    /* input + input_offset lies in [-255, 255]: a 16x16->32 multiply
     * suffices, which is what AVR and Cortex-M do cheaply. */
    input_offset = (int16_t)p.input_offset;

    for (oy = 0; oy < out_h; ++oy) {
        const int32_t iy_origin = oy * (int32_t)p.stride_h - (int32_t)p.pad_top;
        for (ox = 0; ox < out_w; ++ox) {
            const int32_t ix_origin = ox * (int32_t)p.stride_w - (int32_t)p.pad_left;
            for (oc = 0; oc < out_c; ++oc) {
                const int8_t *w_oc = weights + oc * filter_size;
                int32_t acc = 0;
                for (ky = 0; ky < k_h; ++ky) {
                    const int32_t iy = iy_origin + ky * (int32_t)p.dilation_h;
                    if (iy < 0 || iy >= in_h) {
                        continue;
                    }
                    for (kx = 0; kx < k_w; ++kx) {
                        const int32_t ix = ix_origin + kx * (int32_t)p.dilation_w;
                        const int8_t *x;
                        const int8_t *w;
                        if (ix < 0 || ix >= in_w) {
                            continue;
                        }
                        x = input + (iy * in_w + ix) * in_c;
                        w = w_oc + (ky * k_w + kx) * in_c;
                        for (ic = 0; ic < in_c; ++ic) {
                            const int16_t xv = (int16_t)(x[ic] + input_offset);
                            acc += (int32_t)xv * MF_LD_S8(&w[ic]);
                        }
                    }
                }
                if (bias != NULL) {
                    acc += MF_LD_S32(&bias[oc]);
                }
                acc = mf_requantize(acc, MF_LD_S32(&multiplier[oc]), MF_LD_S32(&shift[oc]));
                acc += p.output_offset;
                *output++ = mf_clamp_s8(acc, p.act_min, p.act_max);
            }
        }
    }
}
