/*
 * Fully connected (dense) layer, int8, per-output-channel requantization.
 * The arithmetic is TFLite's reference int8 FullyConnected with symmetric
 * weights (weight zero point 0); a per-tensor layer repeats its multiplier
 * and shift out_features times.
 *
 *   acc = bias[o] + sum over i of (input[i] + input_offset) * weights[o][i]
 *   out = clamp(mf_requantize(acc, multiplier[o], shift[o]) + output_offset,
 *               act_min, act_max)
 *
 * Numpy twin: microfit.reference.ops.fully_connected_s8.
 *
 * Layouts (one row, no batch):
 *   input      int8  [in_features]                      (RAM)
 *   weights    int8  [out_features][in_features]        (MF_CONST)
 *   bias       int32 [out_features], or NULL            (MF_CONST)
 *   multiplier int32 [out_features], in [0, 2^31 - 1]   (MF_CONST)
 *   shift      int32 [out_features], in [-31, 30]       (MF_CONST)
 *   output     int8  [out_features]                     (RAM)
 * input and output must not overlap. No scratch memory is needed.
 */
#ifndef MF_FULLY_CONNECTED_S8_H
#define MF_FULLY_CONNECTED_S8_H

#include <stdint.h>

typedef struct {
    int32_t in_features;          /* flattened input length, >= 1 */
    int32_t out_features;         /* number of outputs, >= 1 */
    int32_t input_offset;         /* -input_zero_point, in [-127, 128] */
    int32_t output_offset;        /* output_zero_point, in [-128, 127] */
    int32_t act_min, act_max;     /* fused activation range, within [-128, 127] */
} mf_fully_connected_params;

void mf_fully_connected_s8(const mf_fully_connected_params *params,
                           const int8_t *input,
                           const int8_t *weights,
                           const int32_t *bias,
                           const int32_t *multiplier,
                           const int32_t *shift,
                           int8_t *output);

#endif /* MF_FULLY_CONNECTED_S8_H */
