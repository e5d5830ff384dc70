/*
 * Depthwise 2-D convolution, int8, per-output-channel requantization.
 * The arithmetic is TFLite's reference DepthwiseConvPerChannel (int8):
 * output channel oc = ic * depth_multiplier + m reads only input channel ic,
 *
 *   acc = bias[oc] + sum over valid (ky, kx) of
 *             (input[iy][ix][ic] + input_offset) * weights[ky][kx][oc]
 *   out = clamp(mf_requantize(acc, multiplier[oc], shift[oc]) + output_offset,
 *               act_min, act_max)
 *
 * with iy = oy * stride_h - pad_top + ky * dilation_h (same for x); taps in
 * the padding are skipped. Numpy twin: microfit.reference.ops.depthwise_conv2d_s8.
 *
 * Layouts (one image, no batch); out_c = in_c * depth_multiplier:
 *   input      int8  [in_h][in_w][in_c]                 (HWC, RAM)
 *   weights    int8  [1][k_h][k_w][out_c]               (TFLite layout, MF_CONST)
 *   bias       int32 [out_c], or NULL for no bias       (MF_CONST)
 *   multiplier int32 [out_c], in [0, 2^31 - 1]          (MF_CONST)
 *   shift      int32 [out_c], in [-31, 30]              (MF_CONST)
 *   output     int8  [out_h][out_w][out_c]              (HWC, RAM)
 * input and output must not overlap. No scratch memory is needed.
 */
#ifndef MF_DEPTHWISE_CONV2D_S8_H
#define MF_DEPTHWISE_CONV2D_S8_H

#include <stdint.h>

typedef struct {
    uint16_t in_h, in_w, in_c;    /* input height, width, channels */
    uint16_t out_h, out_w;        /* output height, width */
    uint16_t depth_multiplier;    /* output channels per input channel, >= 1 */
    uint16_t k_h, k_w;            /* kernel height, width */
    uint16_t stride_h, stride_w;  /* >= 1 */
    uint16_t dilation_h, dilation_w; /* >= 1 */
    uint16_t pad_top, pad_left;   /* bottom/right padding follows from out_h/out_w */
    int32_t input_offset;         /* -input_zero_point, in [-127, 128] */
    int32_t output_offset;        /* output_zero_point, in [-128, 127] */
    int32_t act_min, act_max;     /* fused activation range, within [-128, 127] */
} mf_depthwise_conv2d_params;

void mf_depthwise_conv2d_s8(const mf_depthwise_conv2d_params *params,
                            const int8_t *input,
                            const int8_t *weights,
                            const int32_t *bias,
                            const int32_t *multiplier,
                            const int32_t *shift,
                            int8_t *output);

/*
 * The fast path (depthwise_conv2d_s8_fast.c), depth_multiplier 1 only: the
 * same bytes as mf_depthwise_conv2d_s8, from constants laid out at code
 * generation time (microfit.codegen.layouts):
 *   weights  int16 [in_c][k_h * k_w], except that each group of four
 *            channels (c % 4 == 0) is stored tap by tap, its four weights in
 *            the order c, c+2, c+1, c+3 (word-aligned);
 *   bias     int32 [in_c]: bias + input_offset * (sum of the channel's
 *            weights) modulo 2^32, followed by in_c bytes of the input zero
 *            point padded to whole words (what taps in the padding read);
 *   requant  int32 {flags, then per channel multiplier, -shift, round}
 *            (see mf_simd.h).
 * No scratch memory. Not built for AVR.
 */
void mf_depthwise_conv2d_s8_fast(const mf_depthwise_conv2d_params *params,
                                 const int8_t *input,
                                 const int16_t *weights,
                                 const int32_t *bias,
                                 const int32_t *requant,
                                 int8_t *output);

#endif /* MF_DEPTHWISE_CONV2D_S8_H */
