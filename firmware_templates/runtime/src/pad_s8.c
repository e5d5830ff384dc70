/*
 * int8 constant padding. See mf_pad_s8.h.
 *
 * The output is written once, front to back: fill runs are memset, input rows
 * (in_c channels each) are memcpy'd, so the cost is one pass over the output.
 */
#include "mf_pad_s8.h"

#include <string.h>

#include "mf_platform.h"

void mf_pad_s8(const mf_pad_params *params,
               const int8_t *input,
               int8_t *output)
{
    mf_pad_params p;
    size_t out_w, out_c, row_bytes, x_left, x_right;
    uint16_t y, x;
    unsigned char fill;
    MF_LD_PARAMS(&p, params);
    fill = (unsigned char)(int8_t)p.fill;
    out_w = (size_t)p.pad_left + p.in_w + p.pad_right;
    out_c = (size_t)p.pad_front + p.in_c + p.pad_back;
    row_bytes = out_w * out_c;
    x_left = (size_t)p.pad_left * out_c;
    x_right = (size_t)p.pad_right * out_c;

    memset(output, fill, (size_t)p.pad_top * row_bytes);
    output += (size_t)p.pad_top * row_bytes;
    for (y = 0; y < p.in_h; ++y) {
        memset(output, fill, x_left);
        output += x_left;
        for (x = 0; x < p.in_w; ++x) {
            memset(output, fill, p.pad_front);
            output += p.pad_front;
            memcpy(output, input, p.in_c);
            output += p.in_c;
            input += p.in_c;
            memset(output, fill, p.pad_back);
            output += p.pad_back;
        }
        memset(output, fill, x_right);
        output += x_right;
    }
    memset(output, fill, (size_t)p.pad_bottom * row_bytes);
}
