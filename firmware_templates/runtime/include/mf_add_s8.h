/*
 * Element-wise addition of two int8 tensors of the same shape, with
 * different scales and zero points, as TFLite's reference int8 ADD computes
 * it (no broadcasting):
 *
 *   a   = (in1[i] + input1_offset) * 2^left_shift
 *   b   = (in2[i] + input2_offset) * 2^left_shift
 *   sum = mf_requantize(a, input1_multiplier, input1_shift)
 *       + mf_requantize(b, input2_multiplier, input2_shift)
 *   out = clamp(mf_requantize(sum, output_multiplier, output_shift)
 *               + output_offset, act_min, act_max)
 *
 * TFLite computes the multipliers at Prepare time from the scales (left_shift
 * 20 for int8); microfit.reference.ops.add_params does the same, and its keys
 * are this struct's field names. Numpy twin: microfit.reference.ops.add_s8.
 *
 * Layouts: in1, in2, output int8 [size] (RAM). output may be the same buffer
 * as in1 or in2 (each element is read before it is written).
 */
#ifndef MF_ADD_S8_H
#define MF_ADD_S8_H

#include <stdint.h>

typedef struct {
    int32_t size;                 /* number of elements */
    int32_t input1_offset;        /* -input1_zero_point, in [-127, 128] */
    int32_t input2_offset;        /* -input2_zero_point, in [-127, 128] */
    int32_t left_shift;           /* 20 for int8, in [0, 22] */
    int32_t input1_multiplier;    /* in [0, 2^31 - 1] */
    int32_t input1_shift;         /* in [-31, 30] */
    int32_t input2_multiplier;
    int32_t input2_shift;
    int32_t output_multiplier;
    int32_t output_shift;
    int32_t output_offset;        /* output_zero_point, in [-128, 127] */
    int32_t act_min, act_max;     /* fused activation range, within [-128, 127] */
} mf_add_params;

void mf_add_s8(const mf_add_params *params,
               const int8_t *in1,
               const int8_t *in2,
               int8_t *output);

/*
 * The fast path (add_s8_fast.c): the same bytes as mf_add_s8, with each
 * input's rescaling looked up in `tables`: int32 [2][256], entry x + 128 of
 * table i = mf_requantize((x + input_i_offset) * 2^left_shift,
 * input_i_multiplier, input_i_shift) for x in [-128, 127]
 * (microfit.codegen.layouts.add_tables). The params struct's input fields are
 * not read. output may be the same buffer as in1 or in2. Not built for AVR.
 */
void mf_add_s8_fast(const mf_add_params *params,
                    const int8_t *in1,
                    const int8_t *in2,
                    const int32_t *tables,
                    int8_t *output);

#endif /* MF_ADD_S8_H */
