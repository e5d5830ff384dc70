/*
 * Fully connected layer, int8, per-output-channel requantization: the
 * portable path. See mf_fully_connected_s8.h.
 */
#include "mf_fully_connected_s8.h"

#include <stddef.h>

#include "mf_fixedpoint.h"
#include "mf_platform.h"

void mf_fully_connected_s8(const mf_fully_connected_params *params,
                           const int8_t *input,
                           const int8_t *weights,
                           const int32_t *bias,
                           const int32_t *multiplier,
                           const int32_t *shift,
                           int8_t *output)
{
    mf_fully_connected_params p;
    int16_t input_offset;
    int32_t o, i;

    MF_LD_PARAMS(&p, params);
    /* input + input_offset lies in [-255, 255]: 16x16->32 multiplies suffice. */
    input_offset = (int16_t)p.input_offset;

    for (o = 0; o < p.out_features; ++o) {
        const int8_t *w = weights + o * p.in_features;
        int32_t acc = 0;
        for (i = 0; i < p.in_features; ++i) {
            const int16_t xv = (int16_t)(input[i] + input_offset);
            acc += (int32_t)xv * MF_LD_S8(&w[i]);
        }
        if (bias != NULL) {
            acc += MF_LD_S32(&bias[o]);
        }
        acc = mf_requantize(acc, MF_LD_S32(&multiplier[o]), MF_LD_S32(&shift[o]));
        acc += p.output_offset;
        output[o] = mf_clamp_s8(acc, p.act_min, p.act_max);
    }
}
