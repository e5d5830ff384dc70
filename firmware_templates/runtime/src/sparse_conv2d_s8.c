/*
 * KxK convolution, int8, on compressed sparse weights: the portable path.
 * See mf_sparse_conv2d_s8.h.
 *
 * Positions and offsets are int / ptrdiff_t, the target's own address width
 * (16 bits on AVR, where the tensors sit in a few KB of RAM), and products
 * go through MF_SPARSE_MAC (16-bit on AVR). The bytes are those of
 * mf_conv2d_s8.
 */
#include "mf_sparse_conv2d_s8.h"

#include <stddef.h>

#include "mf_fixedpoint.h"
#include "mf_platform.h"
#include "mf_sparse_fc_s8.h"

void mf_sparse_conv2d_s8(const mf_conv2d_params *params,
                         const int8_t *input,
                         const uint8_t *row_nnz,
                         const uint8_t *deltas,
                         const int8_t *values,
                         const int32_t *bias,
                         const int32_t *multiplier,
                         const int32_t *shift,
                         int8_t *output)
{
    mf_conv2d_params p;
    int16_t input_offset;
    int oy, ox, oc, in_c, k_w;
    ptrdiff_t col_jump, row_jump;

    MF_LD_PARAMS(&p, params);
    input_offset = (int16_t)p.input_offset;
    in_c = (int)p.in_c;
    k_w = (int)p.k_w;
    /* Offset steps when ic wraps into the next kx, and kx into the next ky. */
    col_jump = ((ptrdiff_t)p.dilation_w - 1) * in_c;
    row_jump = ((ptrdiff_t)p.dilation_h * p.in_w - (ptrdiff_t)k_w * p.dilation_w) * in_c;

    for (oy = 0; oy < (int)p.out_h; ++oy) {
        const int iy0 = oy * (int)p.stride_h - (int)p.pad_top;
        for (ox = 0; ox < (int)p.out_w; ++ox) {
            const int ix0 = ox * (int)p.stride_w - (int)p.pad_left;
            const uint8_t *d_ptr = deltas;
            const int8_t *v_ptr = values;
            int8_t *out = output + ((size_t)oy * p.out_w + (size_t)ox) * p.out_c;
            /* A pixel whose receptive field lies inside the input walks a flat
             * offset and needs no bounds checks; border pixels check each tap. */
            const int inside = iy0 >= 0 && ix0 >= 0
                               && iy0 + ((int)p.k_h - 1) * (int)p.dilation_h < (int)p.in_h
                               && ix0 + (k_w - 1) * (int)p.dilation_w < (int)p.in_w;
            for (oc = 0; oc < (int)p.out_c; ++oc) {
                uint16_t n = mf_sparse_row_nnz(row_nnz, oc);
                /* Column of the next candidate weight, as (ky, kx, ic). */
                int ky = 0, kx = 0, ic = 0;
                int32_t acc = 0;
                if (inside) {
                    const int8_t *xb = input + ((size_t)iy0 * p.in_w + (size_t)ix0) * p.in_c;
                    ptrdiff_t pos = 0;
                    for (; n > 0; --n) {
                        uint8_t d = MF_SPARSE_LD_U8(d_ptr++);
                        while (d == MF_SPARSE_ESCAPE) {
                            ic += MF_SPARSE_ESCAPE;
                            pos += MF_SPARSE_ESCAPE;
                            d = MF_SPARSE_LD_U8(d_ptr++);
                        }
                        ic += d;
                        pos += d;
                        while (ic >= in_c) {
                            ic -= in_c;
                            pos += col_jump;
                            if (++kx == k_w) {
                                kx = 0;
                                pos += row_jump;
                            }
                        }
                        MF_SPARSE_MAC(acc, xb[pos] + input_offset, MF_LD_S8(v_ptr++));
                        ++ic;
                        ++pos;
                    }
                    n = 0;
                }
                for (; n > 0; --n) {
                    uint8_t d = MF_SPARSE_LD_U8(d_ptr++);
                    int iy, ix;
                    int8_t w;
                    while (d == MF_SPARSE_ESCAPE) {
                        ic += MF_SPARSE_ESCAPE;
                        d = MF_SPARSE_LD_U8(d_ptr++);
                    }
                    ic += d;
                    while (ic >= in_c) {
                        ic -= in_c;
                        if (++kx == k_w) {
                            kx = 0;
                            ++ky;
                        }
                    }
                    w = MF_LD_S8(v_ptr++);
                    iy = iy0 + ky * (int)p.dilation_h;
                    ix = ix0 + kx * (int)p.dilation_w;
                    if (iy >= 0 && iy < (int)p.in_h && ix >= 0 && ix < (int)p.in_w) {
                        const int8_t x = input[((size_t)iy * p.in_w + (size_t)ix) * p.in_c
                                               + (size_t)ic];
                        MF_SPARSE_MAC(acc, x + input_offset, w);
                    }
                    ++ic;
                }
                if (bias != NULL) {
                    acc += MF_LD_S32(&bias[oc]);
                }
                acc = mf_requantize(acc, MF_LD_S32(&multiplier[oc]), MF_LD_S32(&shift[oc]));
                acc += p.output_offset;
                out[oc] = mf_clamp_s8(acc, p.act_min, p.act_max);
            }
        }
    }
}
