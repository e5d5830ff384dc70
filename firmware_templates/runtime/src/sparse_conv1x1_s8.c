/*
 * 1x1 convolution, int8, on compressed sparse weights: the portable path.
 * See mf_sparse_conv1x1_s8.h.
 */
#include "mf_sparse_conv1x1_s8.h"

#include <stddef.h>

#include "mf_fixedpoint.h"
#include "mf_platform.h"
#include "mf_sparse_fc_s8.h"

void mf_sparse_conv1x1_s8(const mf_conv2d_params *params,
                          const int8_t *input,
                          const uint8_t *row_nnz,
                          const uint8_t *deltas,
                          const int8_t *values,
                          const int32_t *bias,
                          const int32_t *multiplier,
                          const int32_t *shift,
                          int8_t *output)
{
    mf_conv2d_params p;
    int16_t input_offset;
    int32_t oy, ox, oc;

    MF_LD_PARAMS(&p, params);
    input_offset = (int16_t)p.input_offset;

    for (oy = 0; oy < p.out_h; ++oy) {
        const int32_t iy = oy * p.stride_h - p.pad_top;
        for (ox = 0; ox < p.out_w; ++ox) {
            const int32_t ix = ox * p.stride_w - p.pad_left;
            const int inside = iy >= 0 && iy < p.in_h && ix >= 0 && ix < p.in_w;
            const int8_t *x = inside ? input + ((size_t)iy * p.in_w + (size_t)ix) * p.in_c : NULL;
            const uint8_t *d = deltas;
            const int8_t *v = values;
            int8_t *out = output + ((size_t)oy * p.out_w + (size_t)ox) * p.out_c;
            for (oc = 0; oc < p.out_c; ++oc) {
                const uint16_t n = mf_sparse_row_nnz(row_nnz, oc);
                int32_t acc = 0;
                if (inside) {
                    acc = mf_sparse_row_dot(x, input_offset, &d, &v, n);
                }
                if (bias != NULL) {
                    acc += MF_LD_S32(&bias[oc]);
                }
                acc = mf_requantize(acc, MF_LD_S32(&multiplier[oc]), MF_LD_S32(&shift[oc]));
                acc += p.output_offset;
                out[oc] = mf_clamp_s8(acc, p.act_min, p.act_max);
            }
        }
    }
}
