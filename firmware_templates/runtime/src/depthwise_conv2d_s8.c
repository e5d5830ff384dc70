/*
 * Depthwise 2-D convolution, int8, per-output-channel requantization: the
 * portable path, in TFLite's reference DepthwiseConvPerChannel loop order.
 * See mf_depthwise_conv2d_s8.h.
 */
#include "mf_depthwise_conv2d_s8.h"

#include <stddef.h>

#include "mf_fixedpoint.h"
#include "mf_platform.h"

void mf_depthwise_conv2d_s8(const mf_depthwise_conv2d_params *params,
                            const int8_t *input,
                            const int8_t *weights,
                            const int32_t *bias,
                            const int32_t *multiplier,
                            const int32_t *shift,
                            int8_t *output)
{
    mf_depthwise_conv2d_params p;
    int32_t in_h, in_w, in_c, out_h, out_w, out_c, depth_mult, k_h, k_w;
    int16_t input_offset;
    int32_t oy, ox, ic, m, ky, kx;

    MF_LD_PARAMS(&p, params);
    /* Sizes as int32_t so that products never overflow a 16-bit int (AVR). */
    in_h = p.in_h;
    in_w = p.in_w;
    in_c = p.in_c;
    out_h = p.out_h;
    out_w = p.out_w;
    depth_mult = p.depth_multiplier;
    out_c = in_c * depth_mult;
    k_h = p.k_h;
    k_w = p.k_w;
    /* input + input_offset lies in [-255, 255]: 16x16->32 multiplies suffice. */
    input_offset = (int16_t)p.input_offset;

    for (oy = 0; oy < out_h; ++oy) {
        const int32_t iy_origin = oy * (int32_t)p.stride_h - (int32_t)p.pad_top;
        for (ox = 0; ox < out_w; ++ox) {
            const int32_t ix_origin = ox * (int32_t)p.stride_w - (int32_t)p.pad_left;
            for (ic = 0; ic < in_c; ++ic) {
                for (m = 0; m < depth_mult; ++m) {
                    const int32_t oc = ic * depth_mult + m;
                    int32_t acc = 0;
                    for (ky = 0; ky < k_h; ++ky) {
                        const int32_t iy = iy_origin + ky * (int32_t)p.dilation_h;
                        if (iy < 0 || iy >= in_h) {
                            continue;
                        }
                        for (kx = 0; kx < k_w; ++kx) {
                            const int32_t ix = ix_origin + kx * (int32_t)p.dilation_w;
                            int16_t xv;
                            if (ix < 0 || ix >= in_w) {
                                continue;
                            }
                            xv = (int16_t)(input[(iy * in_w + ix) * in_c + ic] + input_offset);
                            acc += (int32_t)xv * MF_LD_S8(&weights[(ky * k_w + kx) * out_c + oc]);
                        }
                    }
                    if (bias != NULL) {
                        acc += MF_LD_S32(&bias[oc]);
                    }
                    acc = mf_requantize(acc, MF_LD_S32(&multiplier[oc]), MF_LD_S32(&shift[oc]));
                    acc += p.output_offset;
                    /* oc runs 0, 1, 2, ... in this loop order. */
                    *output++ = mf_clamp_s8(acc, p.act_min, p.act_max);
                }
            }
        }
    }
}
