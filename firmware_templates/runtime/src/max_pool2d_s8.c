/*
 * Max pooling, int8, as TFLite's reference int8 MaxPool. See mf_pool2d_s8.h.
 */
#include "mf_pool2d_s8.h"

#include "mf_fixedpoint.h"
#include "mf_platform.h"

void mf_max_pool2d_s8(const mf_pool2d_params *params,
                      const int8_t *input,
                      int8_t *output)
{
    mf_pool2d_params p;
    int32_t in_h, in_w, channels, out_h, out_w, k_h, k_w;
    int32_t oy, ox, c, ky, kx;

    MF_LD_PARAMS(&p, params);
    in_h = p.in_h;
    in_w = p.in_w;
    channels = p.channels;
    out_h = p.out_h;
    out_w = p.out_w;
    k_h = p.k_h;
    k_w = p.k_w;

    for (oy = 0; oy < out_h; ++oy) {
        const int32_t iy_origin = oy * (int32_t)p.stride_h - (int32_t)p.pad_top;
        /* Clip the window to the image instead of testing every tap. */
        const int32_t ky_start = iy_origin < 0 ? -iy_origin : 0;
        const int32_t ky_end = in_h - iy_origin < k_h ? in_h - iy_origin : k_h;
        for (ox = 0; ox < out_w; ++ox) {
            const int32_t ix_origin = ox * (int32_t)p.stride_w - (int32_t)p.pad_left;
            const int32_t kx_start = ix_origin < 0 ? -ix_origin : 0;
            const int32_t kx_end = in_w - ix_origin < k_w ? in_w - ix_origin : k_w;
            for (c = 0; c < channels; ++c) {
                int32_t max = -128;
                for (ky = ky_start; ky < ky_end; ++ky) {
                    /* An index, not a pointer: the window origin may lie in the
                     * padding, and a pointer outside the array is undefined. */
                    const int32_t row = ((iy_origin + ky) * in_w + ix_origin) * channels + c;
                    for (kx = kx_start; kx < kx_end; ++kx) {
                        const int32_t v = input[row + kx * channels];
                        if (v > max) {
                            max = v;
                        }
                    }
                }
                *output++ = mf_clamp_s8(max, p.act_min, p.act_max);
            }
        }
    }
}
