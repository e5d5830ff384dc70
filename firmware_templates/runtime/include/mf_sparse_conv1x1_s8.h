/*
 * 1x1 convolution, int8, on pruned weights in the compressed-rows format of
 * mf_sparse_fc_s8.h (one row per output channel, in_c columns): each output
 * pixel is a sparse fully connected layer over its input pixel's channels.
 * Same arithmetic, params struct and output bytes as mf_conv2d_s8 with
 * k_h = k_w = 1 on the same (decoded) weights; strides and padding are
 * honoured (a pixel in the padding has no taps: its accumulator is the bias),
 * dilation has no effect on a 1x1 kernel.
 *
 * Numpy twin: microfit.reference.sparse.sparse_conv1x1_s8.
 *
 *   input   int8  [in_h][in_w][in_c]     (HWC, RAM)
 *   row_nnz, deltas, values              as in mf_sparse_fc_s8.h (MF_CONST)
 *   bias, multiplier, shift              as in mf_conv2d_s8.h (MF_CONST)
 *   output  int8  [out_h][out_w][out_c]  (HWC, RAM)
 * The index streams are re-read for every output pixel. No scratch memory.
 */
#ifndef MF_SPARSE_CONV1X1_S8_H
#define MF_SPARSE_CONV1X1_S8_H

#include <stdint.h>

#include "mf_conv2d_s8.h"

void mf_sparse_conv1x1_s8(const mf_conv2d_params *params,
                          const int8_t *input,
                          const uint8_t *row_nnz,
                          const uint8_t *deltas,
                          const int8_t *values,
                          const int32_t *bias,
                          const int32_t *multiplier,
                          const int32_t *shift,
                          int8_t *output);

#endif /* MF_SPARSE_CONV1X1_S8_H */
