/*
 * Fully connected layer, int8, on pruned weights stored compressed: only the
 * nonzero weights are stored (in flash) and multiplied. The arithmetic and
 * the params struct are those of mf_fully_connected_s8, and the output bytes
 * are identical to it on the same (decoded) weights: a zero weight adds
 * nothing to an integer accumulator, so any difference is a bug.
 *
 * Numpy twins and the formats' definition: microfit.reference.sparse.
 * The format per layer is chosen by bytes in microfit.codegen.sparse.
 *
 * Compressed rows (mf_sparse_fully_connected_s8), all MF_CONST:
 *   row_nnz uint8 [2 * out_features]  nonzeros per row, little-endian uint16
 *   deltas  uint8 [...]               per nonzero: zero or more 255 bytes
 *                                     (skip 255 columns each), then the gap
 *                                     in [0, 254] from the column after the
 *                                     previous nonzero of the row (or 0)
 *   values  int8  [nnz]               the nonzero weights, row-major
 *
 * Bitmap (mf_bitmap_fully_connected_s8), all MF_CONST:
 *   bitmap  uint8 [out_features * ((in_features + 7) / 8)]  bit j (LSB first)
 *                                     of byte b of a row: column 8b + j is
 *                                     nonzero
 *   values  int8  [nnz]               the nonzero weights, row-major
 *
 * input, bias, multiplier, shift and output are as in mf_fully_connected_s8.h.
 * in_features must not exceed 65535. No scratch memory is needed.
 */
#ifndef MF_SPARSE_FC_S8_H
#define MF_SPARSE_FC_S8_H

#include <stdint.h>

#include "mf_fully_connected_s8.h"
#include "mf_platform.h"

#define MF_SPARSE_ESCAPE 255u

/* mf_platform.h reads signed bytes; an index byte is the same byte unsigned. */
#define MF_SPARSE_LD_U8(ptr) ((uint8_t)MF_LD_S8((const int8_t *)(ptr)))

/*
 * acc += xv * w, with xv = x + input_offset in [-255, 255] and w int8: the
 * product's magnitude is at most 255 * 128 = 32640, so on AVR it is formed
 * in 16 bits (an 8x16 multiply, not the 32x32 library call); elsewhere a
 * 32-bit multiply-accumulate is one instruction. Same value either way.
 */
#if defined(__AVR__)
#define MF_SPARSE_MAC(acc, xv, w) ((acc) += (int16_t)((int16_t)(xv) * (int8_t)(w)))
#else
#define MF_SPARSE_MAC(acc, xv, w) ((acc) += (int32_t)(xv) * (int8_t)(w))
#endif

/*
 * One compressed row against one input vector x: the sum over the row's n
 * nonzeros of (x[col] + input_offset) * value. Advances *deltas and *values
 * past the row, so consecutive rows are walked without a pointer table.
 * Shared by the sparse fully connected and 1x1 convolution kernels.
 */
static inline int32_t mf_sparse_row_dot(const int8_t *x, int16_t input_offset,
                                        const uint8_t **deltas, const int8_t **values,
                                        uint16_t n)
{
    const uint8_t *d_ptr = *deltas;
    const int8_t *v_ptr = *values;
    uint16_t col = 0;
    int32_t acc = 0;
    for (; n > 0; --n) {
        uint8_t d = MF_SPARSE_LD_U8(d_ptr++);
        int16_t xv;
        while (d == MF_SPARSE_ESCAPE) {
            col = (uint16_t)(col + MF_SPARSE_ESCAPE);
            d = MF_SPARSE_LD_U8(d_ptr++);
        }
        col = (uint16_t)(col + d);
        xv = (int16_t)(x[col] + input_offset);
        MF_SPARSE_MAC(acc, xv, MF_LD_S8(v_ptr++));
        col = (uint16_t)(col + 1u);
    }
    *deltas = d_ptr;
    *values = v_ptr;
    return acc;
}

/* Row o's nonzero count from the little-endian uint16 table. */
static inline uint16_t mf_sparse_row_nnz(const uint8_t *row_nnz, int32_t o)
{
    return (uint16_t)(MF_SPARSE_LD_U8(&row_nnz[2 * o])
                      | ((uint16_t)MF_SPARSE_LD_U8(&row_nnz[2 * o + 1]) << 8));
}

void mf_sparse_fully_connected_s8(const mf_fully_connected_params *params,
                                  const int8_t *input,
                                  const uint8_t *row_nnz,
                                  const uint8_t *deltas,
                                  const int8_t *values,
                                  const int32_t *bias,
                                  const int32_t *multiplier,
                                  const int32_t *shift,
                                  int8_t *output);

void mf_bitmap_fully_connected_s8(const mf_fully_connected_params *params,
                                  const int8_t *input,
                                  const uint8_t *bitmap,
                                  const int8_t *values,
                                  const int32_t *bias,
                                  const int32_t *multiplier,
                                  const int32_t *shift,
                                  int8_t *output);

#endif /* MF_SPARSE_FC_S8_H */
