/*
 * Softmax over the last axis, int8 in, int8 out, as TFLite's reference int8
 * Softmax (what TFLite Micro runs): exp() and the reciprocal are computed in
 * gemmlowp-style 32-bit fixed point, so no float is involved.
 *
 * For each row: d = input - max(row); entries with d < diff_min give
 * -128 (their exp is negligible). Otherwise d is rescaled into Q5.26 by
 * mf_requantize(d, input_multiplier, input_left_shift), exponentiated in
 * Q0.31, summed in Q12.19, and each exp is divided by the sum; the result is
 * quantized with scale 1/256 and zero point -128 (TFLite's required output
 * quantization for int8 softmax).
 *
 * The params come from beta and the input scale as TFLite's Prepare derives
 * them; microfit.reference.ops.softmax_params computes them, and its keys are
 * this struct's field names. Numpy twin: microfit.reference.ops.softmax_s8.
 *
 * One extension: when a row's sum of exps reaches 512 (only possible with
 * depth >= 512), every probability is below 1/512 and the kernel writes -128
 * (zero); TFLite's fixed-point division asserts there instead.
 *
 * Layouts: input, output int8 [rows][depth] (RAM), any leading shape
 * flattened into rows; depth <= 4095 so that the Q12.19 sum cannot
 * overflow. input and output must not overlap.
 */
#ifndef MF_SOFTMAX_S8_H
#define MF_SOFTMAX_S8_H

#include <stdint.h>

typedef struct {
    int32_t rows;                 /* product of all but the last dimension */
    int32_t depth;                /* length of the last dimension, 1 .. 4095 */
    int32_t input_multiplier;     /* beta * input_scale as multiplier ... */
    int32_t input_left_shift;     /* ... and left shift >= 0, into Q5.26 */
    int32_t diff_min;             /* most negative (input - row max) still counted, <= 0 */
} mf_softmax_params;

void mf_softmax_s8(const mf_softmax_params *params,
                   const int8_t *input,
                   int8_t *output);

#endif /* MF_SOFTMAX_S8_H */
