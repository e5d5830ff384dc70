/*
 * Constant padding, int8, as TFLite's int8 PAD (and PADV2 with the zero point
 * as value): the output is the input surrounded by `fill`, which is the input
 * zero point (a real 0; input and output share scale and zero point).
 *
 * The image is padded on height, width and channels:
 *   out_h = pad_top + in_h + pad_bottom, out_w = pad_left + in_w + pad_right,
 *   out_c = pad_front + in_c + pad_back,
 *   output[y][x][c] = input[y - pad_top][x - pad_left][c - pad_front] inside,
 *   fill outside.
 * A 2-D [N, C] tensor is a 1 x 1 x C image.
 *
 * Layouts (one image, no batch):
 *   input  int8 [in_h][in_w][in_c]     (HWC, RAM)
 *   output int8 [out_h][out_w][out_c]  (HWC, RAM)
 * input and output must not overlap. No scratch memory is needed.
 * Numpy twin: microfit.reference.ops.pad_s8.
 */
#ifndef MF_PAD_S8_H
#define MF_PAD_S8_H

#include <stdint.h>

typedef struct {
    uint16_t in_h, in_w, in_c;       /* input height, width, channels */
    uint16_t pad_top, pad_bottom;    /* rows before and after */
    uint16_t pad_left, pad_right;    /* columns before and after */
    uint16_t pad_front, pad_back;    /* channels before and after */
    int32_t fill;                    /* the input zero point, within [-128, 127] */
} mf_pad_params;

void mf_pad_s8(const mf_pad_params *params,
               const int8_t *input,
               int8_t *output);

#endif /* MF_PAD_S8_H */
