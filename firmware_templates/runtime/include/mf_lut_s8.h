/*
 * Table lookup, int8 in, int8 out: the kernel of int8 LOGISTIC (sigmoid) and
 * TANH. An int8 elementwise op has only 256 possible inputs, so code
 * generation evaluates the op for every one of them with the numpy reference
 * (microfit.reference.ops.lut_table: TFLite Micro's fixed-point logistic /
 * tanh, or its single-rounding variant) and the kernel only looks bytes up:
 *   output[i] = table[input[i] + 128]
 * The result equals the reference by construction, for any input scale and
 * zero point; the output quantization is TFLite's fixed one (LOGISTIC: scale
 * 1/256, zero point -128; TANH: scale 1/128, zero point 0).
 *
 * Layouts: input, output int8 [size] (RAM, any shape flattened); table int8
 * [256] with MF_CONST (flash; PROGMEM on AVR, read with MF_LD_S8). Each
 * element is read before it is written, so output may equal input (in place).
 * Numpy twin: microfit.reference.ops.lut_s8.
 */
#ifndef MF_LUT_S8_H
#define MF_LUT_S8_H

#include <stdint.h>

typedef struct {
    int32_t size; /* number of elements */
} mf_lut_params;

void mf_lut_s8(const mf_lut_params *params,
               const int8_t *table,
               const int8_t *input,
               int8_t *output);

#endif /* MF_LUT_S8_H */
