/*
 * Fully connected layers and convolutions, int8, on block-compressed rows:
 * pruned weights stored as whole blocks of four consecutive input channels
 * (1x4 blocks, what microfit.prune.unstructured.block_masks zeroes), each
 * stored block four weight bytes, so the Cortex-M DSP path keeps its packed
 * loads: one word of weights and one word of input per block, two SXTB16
 * each, two SMLAD.
 *
 * Format ("blocks", microfit.reference.sparse), all MF_CONST, for a weight
 * matrix [out, K] with K a multiple of 4 (block j = columns 4j .. 4j+3; for a
 * convolution the OHWI row flattened as (ky, kx, ic) with in_c a multiple of
 * 4, so a block never straddles two taps):
 *   row_nblk uint8 [2 * out]  stored blocks per row, little-endian uint16
 *   deltas   uint8 [...]      per stored block: zero or more 255 bytes (skip
 *                             255 blocks each), then the gap in [0, 254]
 *                             from the block after the previous stored block
 *                             of the row (or block 0)
 *   values   int8 [4 * nblk]  the stored blocks' weights, four per block
 *                             (zeros inside a stored block included)
 *
 * Both kernels take the fast path's constants: bias is the folded bias,
 * bias + input_offset * sum(row) (microfit.codegen.layouts.fold_bias), so
 * the inner loop multiplies raw int8 inputs, and a tap in the padding reads
 * the input zero point (-input_offset), adding zero_point * w, which cancels
 * its share of the folded bias exactly as the dense kernel's skipped tap.
 * requant is layouts.pack_requant's {flags, (multiplier, e, round) per
 * channel} (mf_simd.h). The sums agree with the dense kernel's modulo 2^32,
 * and the true accumulator fits in int32, so the output bytes are those of
 * mf_fully_connected_s8 / mf_conv2d_s8 on the decoded weights.
 * No scratch memory. Every constant is read through MF_LD_* (PROGMEM on AVR).
 */
#ifndef MF_SPARSE_BLOCK_S8_H
#define MF_SPARSE_BLOCK_S8_H

#include <stdint.h>

#include "mf_conv2d_s8.h"
#include "mf_fully_connected_s8.h"

/* in_features % 4 == 0 */
void mf_block_fully_connected_s8(const mf_fully_connected_params *params,
                                 const int8_t *input,
                                 const uint8_t *row_nblk,
                                 const uint8_t *deltas,
                                 const int8_t *values,
                                 const int32_t *bias,
                                 const int32_t *requant,
                                 int8_t *output);

/* Any kernel size, stride, dilation and padding; in_c % 4 == 0. */
void mf_block_conv2d_s8(const mf_conv2d_params *params,
                        const int8_t *input,
                        const uint8_t *row_nblk,
                        const uint8_t *deltas,
                        const int8_t *values,
                        const int32_t *bias,
                        const int32_t *requant,
                        int8_t *output);

/*
 * The Cortex-M form of mf_block_conv2d_s8 (not on AVR): the same bytes, four
 * output pixels per pass over the blocks. Their receptive fields are
 * expanded to int16 in scratch (mf_conv2d_s8_fast's column order, four
 * columns interleaved), so a stored block costs its index byte, one word of
 * weights unpacked once (two SXTB16) and, per pixel, two words of the column
 * and two SMLAD.
 * Scratch: mf_block_conv2d_s8_fast_get_buffer_size bytes, 4-byte aligned.
 */
#if !defined(__AVR__)
int32_t mf_block_conv2d_s8_fast_get_buffer_size(const mf_conv2d_params *params);

void mf_block_conv2d_s8_fast(const mf_conv2d_params *params,
                             const int8_t *input,
                             const uint8_t *row_nblk,
                             const uint8_t *deltas,
                             const int8_t *values,
                             const int32_t *bias,
                             const int32_t *requant,
                             int8_t *scratch,
                             int8_t *output);
#endif

#endif /* MF_SPARSE_BLOCK_S8_H */
