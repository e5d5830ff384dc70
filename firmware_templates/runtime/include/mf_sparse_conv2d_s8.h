/*
 * KxK convolution, int8, on compressed sparse weights (the "rows" format of
 * mf_sparse_fc_s8.h over each output channel's OHWI row, flattened as
 * (ky, kx, ic)): the portable path.
 *
 * The same bytes as mf_conv2d_s8 on the decoded weights, for any kernel
 * size, stride, dilation and padding: zeros add nothing to the accumulator,
 * and a tap in the padding is skipped as in the dense kernel. The column
 * walk keeps (ky, kx, ic) and carries ic into kx and kx into ky, so no
 * division runs per nonzero. Weights for a 1x1 kernel are better served by
 * mf_sparse_conv1x1_s8 (no carries). Numpy twin: decode_rows +
 * ops.conv2d_s8 (microfit.reference.sparse.sparse_conv2d_s8).
 *
 *   row_nnz  uint8 [2 * out_c], per output channel nonzero count, LE uint16
 *   deltas   uint8, gaps with escapes (MF_SPARSE_ESCAPE), as for FC rows
 *   values   int8 [nnz], row-major
 * Every constant is read through MF_LD_* (PROGMEM on AVR).
 */
#ifndef MF_SPARSE_CONV2D_S8_H
#define MF_SPARSE_CONV2D_S8_H

#include <stdint.h>

#include "mf_conv2d_s8.h"

void mf_sparse_conv2d_s8(const mf_conv2d_params *params,
                         const int8_t *input,
                         const uint8_t *row_nnz,
                         const uint8_t *deltas,
                         const int8_t *values,
                         const int32_t *bias,
                         const int32_t *multiplier,
                         const int32_t *shift,
                         int8_t *output);

#endif /* MF_SPARSE_CONV2D_S8_H */
