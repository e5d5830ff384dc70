/*
 * Concatenation of int8 tensors along one axis, and its inverse, the slice
 * along one axis (TFLite's CONCATENATION, and SLICE / SPLIT / SPLIT_V).
 *
 * Both are byte copies. TFLite's int8 CONCATENATION kernels (TFLite Micro's
 * and LiteRT's) refuse inputs whose scale or zero point differ from the
 * output's, and its converter gives a slice its input's quantization, so no
 * rescaling happens here: microfit's quantizer gives all of a concatenation's
 * tensors one scale and zero point (microfit.quantize.quantize.
 * concat_shared_qparams). Numpy twins: microfit.reference.ops.concatenation_s8
 * and slice_s8.
 *
 * A tensor of shape [d0, ..., dn] is seen as [outer, axis, inner], outer the
 * product of the dims before the axis, inner of those after it.
 */
#ifndef MF_CONCATENATION_S8_H
#define MF_CONCATENATION_S8_H

#include <stdint.h>

typedef struct {
    int32_t outer;        /* product of the dims before the axis */
    int32_t inner;        /* product of the dims after the axis */
    int32_t num_inputs;   /* >= 1 */
} mf_concatenation_params;

/*
 * output [outer, sum(axis_sizes), inner] = inputs[0..num_inputs-1], each
 * [outer, axis_sizes[i], inner], joined along the axis. axis_sizes is a model
 * constant (MF_CONST); inputs (RAM) is an array of num_inputs pointers.
 * output must not overlap any input.
 */
void mf_concatenation_s8(const mf_concatenation_params *params,
                         const int8_t *const *inputs,
                         const int32_t *axis_sizes,
                         int8_t *output);

typedef struct {
    int32_t outer;        /* product of the dims before the axis */
    int32_t in_axis;      /* the input's size along the axis */
    int32_t begin;        /* first index taken along the axis */
    int32_t size;         /* how many are taken, begin + size <= in_axis */
    int32_t inner;        /* product of the dims after the axis */
} mf_slice_params;

/*
 * output [outer, size, inner] = input [outer, begin : begin + size, inner].
 * output must not overlap input.
 */
void mf_slice_s8(const mf_slice_params *params,
                 const int8_t *input,
                 int8_t *output);

#endif /* MF_CONCATENATION_S8_H */
