/*
 * 2-D convolution, int8 in and out, per-output-channel requantization.
 * The arithmetic is TFLite's reference ConvPerChannel (int8):
 *
 *   acc = bias[oc] + sum over valid (ky, kx, ic) of
 *             (input[iy][ix][ic] + input_offset) * weights[oc][ky][kx][ic]
 *   out = clamp(mf_requantize(acc, multiplier[oc], shift[oc]) + output_offset,
 *               act_min, act_max)
 *
 * with iy = oy * stride_h - pad_top + ky * dilation_h (same for x). Taps that
 * fall in the padding are skipped, which is the same as padding the input
 * with its zero point. Numpy twin: microfit.reference.ops.conv2d_s8.
 *
 * Layouts (one image, no batch):
 *   input      int8  [in_h][in_w][in_c]                 (HWC, RAM)
 *   weights    int8  [out_c][k_h][k_w][in_c]            (OHWI, MF_CONST)
 *   bias       int32 [out_c], or NULL for no bias       (MF_CONST)
 *   multiplier int32 [out_c], in [0, 2^31 - 1]          (MF_CONST)
 *   shift      int32 [out_c], in [-31, 30]; > 0 is a left shift (MF_CONST)
 *   output     int8  [out_h][out_w][out_c]              (HWC, RAM)
 * input and output must not overlap. No scratch memory is needed.
 */
#ifndef MF_CONV2D_S8_H
#define MF_CONV2D_S8_H

#include <stdint.h>

typedef struct {
    uint16_t in_h, in_w, in_c;    /* input height, width, channels */
    uint16_t out_h, out_w, out_c; /* output height, width, channels */
    uint16_t k_h, k_w;            /* kernel height, width */
    uint16_t stride_h, stride_w;  /* >= 1 */
    uint16_t dilation_h, dilation_w; /* >= 1 */
    uint16_t pad_top, pad_left;   /* bottom/right padding follows from out_h/out_w */
    int32_t input_offset;         /* -input_zero_point, in [-127, 128] */
    int32_t output_offset;        /* output_zero_point, in [-128, 127] */
    int32_t act_min, act_max;     /* fused activation range, within [-128, 127] */
} mf_conv2d_params;

void mf_conv2d_s8(const mf_conv2d_params *params,
                  const int8_t *input,
                  const int8_t *weights,
                  const int32_t *bias,
                  const int32_t *multiplier,
                  const int32_t *shift,
                  int8_t *output);

/*
 * The fast path (conv2d_s8_fast.c): the same bytes as mf_conv2d_s8, from
 * constants laid out for it at code generation time
 * (microfit.codegen.layouts):
 *   weights  the OHWI rows zero-padded to a multiple of 4 bytes, rows 2j and
 *            2j+1 interleaved in groups of 4 bytes (word-aligned);
 *   bias     never NULL: bias + input_offset * (sum of the row's weights),
 *            modulo 2^32;
 *   requant  int32 {flags, then per output channel multiplier, -shift,
 *            round} (see mf_simd.h: round folds the rounding and
 *            output_offset together);
 *   scratch  mf_conv2d_s8_fast_get_buffer_size(params) bytes, word-aligned,
 *            not overlapping anything else.
 * With the DSP extension (Cortex-M4/M7) it multiplies with SMLAD, elsewhere
 * with plain multiply-accumulates. A fully connected layer is the 1x1
 * convolution of a 1x1 image with in_features channels. Not built for AVR
 * (constants in flash need the portable kernels' pgm_read accesses).
 */
void mf_conv2d_s8_fast(const mf_conv2d_params *params,
                       const int8_t *input,
                       const int8_t *weights,
                       const int32_t *bias,
                       const int32_t *requant,
                       int8_t *scratch,
                       int8_t *output);

/* Scratch bytes mf_conv2d_s8_fast needs (params in RAM). */
int32_t mf_conv2d_s8_fast_get_buffer_size(const mf_conv2d_params *params);

/*
 * The path for 8-bit cores (conv2d_s8_avr.c): the same bytes as
 * mf_conv2d_s8 with int8 x int8 products summed in 16 bits, `group` at a
 * time. Weights in OHWI order as for mf_conv2d_s8; bias never NULL:
 * bias + input_offset * (sum of the row's weights) modulo 2^32; `group` such
 * that 128 * (sum of |w| over any `group` consecutive weights of one tap)
 * <= 32767 (microfit.codegen.layouts.avr_group). Constants through
 * MF_CONST / MF_LD_* (flash on AVR). No scratch memory.
 */
void mf_conv2d_s8_avr(const mf_conv2d_params *params,
                      const int8_t *input,
                      const int8_t *weights,
                      const int32_t *bias,
                      const int32_t *multiplier,
                      const int32_t *shift,
                      int16_t group,
                      int8_t *output);

#endif /* MF_CONV2D_S8_H */
