/*
 * Max and average 2-D pooling, int8, as TFLite's reference int8 MaxPool and
 * AveragePool compute them. Input and output share scale and zero point, so
 * no requantization happens.
 *
 * For each output position and channel, the window is the k_h x k_w block
 * starting at (oy * stride_h - pad_top, ox * stride_w - pad_left); positions
 * in the padding are ignored (not counted as zeros).
 *   max: out = clamp(max over valid positions, act_min, act_max); a window
 *        with no valid position gives clamp(-128) as in TFLite.
 *   avg: acc = sum over valid positions, count = their number,
 *        avg = acc > 0 ? (acc + count / 2) / count : (acc - count / 2) / count
 *        (C division truncates), out = clamp(avg, act_min, act_max).
 *        A window with no valid position is invalid (TFLite rejects it); the
 *        kernel writes clamp(0) there rather than divide by zero.
 * Global average pooling is avg pooling with the window = the whole image.
 * Numpy twins: microfit.reference.ops.max_pool2d_s8, avg_pool2d_s8.
 *
 * Layouts (one image, no batch):
 *   input  int8 [in_h][in_w][channels]    (HWC, RAM)
 *   output int8 [out_h][out_w][channels]  (HWC, RAM)
 * input and output must not overlap. No scratch memory is needed.
 */
#ifndef MF_POOL2D_S8_H
#define MF_POOL2D_S8_H

#include <stdint.h>

typedef struct {
    uint16_t in_h, in_w;          /* input height, width */
    uint16_t channels;            /* channels, same in and out */
    uint16_t out_h, out_w;        /* output height, width */
    uint16_t k_h, k_w;            /* window height, width */
    uint16_t stride_h, stride_w;  /* >= 1 */
    uint16_t pad_top, pad_left;   /* bottom/right padding follows from out_h/out_w */
    int32_t act_min, act_max;     /* fused activation range, within [-128, 127] */
} mf_pool2d_params;

void mf_max_pool2d_s8(const mf_pool2d_params *params,
                      const int8_t *input,
                      int8_t *output);

void mf_avg_pool2d_s8(const mf_pool2d_params *params,
                      const int8_t *input,
                      int8_t *output);

#endif /* MF_POOL2D_S8_H */
