/*
 * Fully connected layer, int8, on compressed sparse weights: the portable
 * path. See mf_sparse_fc_s8.h. Every constant is read through MF_LD_*, so
 * the streams may live in AVR flash (PROGMEM).
 */
#include "mf_sparse_fc_s8.h"

#include <stddef.h>

#include "mf_fixedpoint.h"
#include "mf_platform.h"

static int8_t mf_sparse_fc_finish(const mf_fully_connected_params *p, int32_t acc, int32_t o,
                                  const int32_t *bias, const int32_t *multiplier,
                                  const int32_t *shift)
{
    if (bias != NULL) {
        acc += MF_LD_S32(&bias[o]);
    }
    acc = mf_requantize(acc, MF_LD_S32(&multiplier[o]), MF_LD_S32(&shift[o]));
    acc += p->output_offset;
    return mf_clamp_s8(acc, p->act_min, p->act_max);
}

void mf_sparse_fully_connected_s8(const mf_fully_connected_params *params,
                                  const int8_t *input,
                                  const uint8_t *row_nnz,
                                  const uint8_t *deltas,
                                  const int8_t *values,
                                  const int32_t *bias,
                                  const int32_t *multiplier,
                                  const int32_t *shift,
                                  int8_t *output)
{
    mf_fully_connected_params p;
    int16_t input_offset;
    int32_t o;

    MF_LD_PARAMS(&p, params);
    /* input + input_offset lies in [-255, 255]: 16x16->32 multiplies suffice. */
    input_offset = (int16_t)p.input_offset;

    for (o = 0; o < p.out_features; ++o) {
        int32_t acc = mf_sparse_row_dot(input, input_offset, &deltas, &values,
                                        mf_sparse_row_nnz(row_nnz, o));
        output[o] = mf_sparse_fc_finish(&p, acc, o, bias, multiplier, shift);
    }
}

void mf_bitmap_fully_connected_s8(const mf_fully_connected_params *params,
                                  const int8_t *input,
                                  const uint8_t *bitmap,
                                  const int8_t *values,
                                  const int32_t *bias,
                                  const int32_t *multiplier,
                                  const int32_t *shift,
                                  int8_t *output)
{
    mf_fully_connected_params p;
    int16_t input_offset;
    int32_t o, b, row_bytes;

    MF_LD_PARAMS(&p, params);
    input_offset = (int16_t)p.input_offset;
    row_bytes = (p.in_features + 7) / 8;

    for (o = 0; o < p.out_features; ++o) {
        int32_t acc = 0;
        for (b = 0; b < row_bytes; ++b) {
            uint8_t bits = MF_SPARSE_LD_U8(bitmap++);
            const int8_t *x = input + 8 * b;
            /* A zero byte -- eight pruned weights -- costs one load and a branch;
             * the scan stops at the byte's highest set bit. */
            for (; bits != 0; bits >>= 1, ++x) {
                if (bits & 1u) {
                    const int16_t xv = (int16_t)(*x + input_offset);
                    MF_SPARSE_MAC(acc, xv, MF_LD_S8(values++));
                }
            }
        }
        output[o] = mf_sparse_fc_finish(&p, acc, o, bias, multiplier, shift);
    }
}
