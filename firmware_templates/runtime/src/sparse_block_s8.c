/*
 * Fully connected layers and convolutions, int8, on block-compressed rows.
 * See mf_sparse_block_s8.h for the format and the constants.
 *
 * One stored block is four weights against four consecutive input bytes.
 * With the DSP extension (MF_SIMD, mf_simd.h) that is one word of each, two
 * SXTB16 each and two SMLAD; without it (Cortex-M0/M3, AVR, the host) four
 * multiply-accumulates, the products formed in 16 bits on AVR (|x * w| <=
 * 128 * 128). Sums are added as unsigned: with the folded bias the partial
 * sums may leave int32 and wrap, as the hardware's do, while the final
 * accumulator is the true one (see the header).
 */
#include "mf_sparse_block_s8.h"

#include <stddef.h>

#include "mf_fixedpoint.h"
#include "mf_platform.h"
#include "mf_simd.h"
#include "mf_sparse_fc_s8.h"

#if defined(__AVR__)
#define MF_BLOCK_PRODUCT(x, w) ((uint32_t)(int32_t)(int16_t)((int16_t)(x) * (int8_t)(w)))
#else
#define MF_BLOCK_PRODUCT(x, w) ((uint32_t)((int32_t)(x) * (int8_t)(w)))
#endif

/* acc + the block's four weights at v times the four input bytes at x. */
static inline int32_t block_mac(int32_t acc, const int8_t *x, const int8_t *v)
{
#if MF_SIMD
    const uint32_t xv = mf_load32(x), wv = mf_load32(v);
    acc = mf_smlad(mf_sxtb16(xv), mf_sxtb16(wv), acc);
    return mf_smlad(mf_sxtb16_ror8(xv), mf_sxtb16_ror8(wv), acc);
#else
    uint32_t a = (uint32_t)acc;
    a += MF_BLOCK_PRODUCT(x[0], MF_LD_S8(v));
    a += MF_BLOCK_PRODUCT(x[1], MF_LD_S8(v + 1));
    a += MF_BLOCK_PRODUCT(x[2], MF_LD_S8(v + 2));
    a += MF_BLOCK_PRODUCT(x[3], MF_LD_S8(v + 3));
    return (int32_t)a;
#endif
}

/* The next stored block's gap, escapes included; advances *d. */
static inline uint16_t block_gap(const uint8_t **d)
{
    const uint8_t *p = *d;
    uint16_t gap = 0;
    uint8_t g = MF_SPARSE_LD_U8(p++);
    while (g == MF_SPARSE_ESCAPE) {
        gap = (uint16_t)(gap + MF_SPARSE_ESCAPE);
        g = MF_SPARSE_LD_U8(p++);
    }
    *d = p;
    return (uint16_t)(gap + g);
}

/* Requantize one channel with the fast path's packed constants, offset, clamp. */
static int8_t block_finish(int32_t flags, int32_t acc, const int32_t *requant, int32_t oc,
                           int32_t output_offset, int32_t act_min, int32_t act_max)
{
    int32_t rq[3];
    rq[0] = MF_LD_S32(&requant[1 + 3 * oc]);
    rq[1] = MF_LD_S32(&requant[2 + 3 * oc]);
    rq[2] = MF_LD_S32(&requant[3 + 3 * oc]);
    return mf_clamp_s8(mf_rq(flags, acc, rq, output_offset), act_min, act_max);
}

void mf_block_fully_connected_s8(const mf_fully_connected_params *params,
                                 const int8_t *input,
                                 const uint8_t *row_nblk,
                                 const uint8_t *deltas,
                                 const int8_t *values,
                                 const int32_t *bias,
                                 const int32_t *requant,
                                 int8_t *output)
{
    mf_fully_connected_params p;
    const int32_t flags = MF_LD_S32(&requant[0]);
    int32_t o;

    MF_LD_PARAMS(&p, params);
    for (o = 0; o < p.out_features; ++o) {
        uint16_t n = mf_sparse_row_nnz(row_nblk, o);
        const int8_t *x = input;
        int32_t acc = MF_LD_S32(&bias[o]);
        for (; n > 0; --n) {
            x += 4 * (size_t)block_gap(&deltas);
            acc = block_mac(acc, x, values);
            values += 4;
            x += 4;
        }
        output[o] = block_finish(flags, acc, requant, o, p.output_offset, p.act_min, p.act_max);
    }
}

void mf_block_conv2d_s8(const mf_conv2d_params *params,
                        const int8_t *input,
                        const uint8_t *row_nblk,
                        const uint8_t *deltas,
                        const int8_t *values,
                        const int32_t *bias,
                        const int32_t *requant,
                        int8_t *output)
{
    mf_conv2d_params p;
    const int32_t flags = MF_LD_S32(&requant[0]);
    int oy, ox, oc, nb, k_w;
    ptrdiff_t tap_step, row_step;
    int8_t zero_word[4];

    MF_LD_PARAMS(&p, params);
    nb = (int)p.in_c / 4; /* blocks per tap */
    k_w = (int)p.k_w;
    /* Offset steps when a block index wraps into the next kx, and kx into the next ky. */
    tap_step = (ptrdiff_t)p.dilation_w * p.in_c;
    row_step = ((ptrdiff_t)p.dilation_h * p.in_w - (ptrdiff_t)k_w * p.dilation_w) * p.in_c;
    /* A tap in the padding reads the zero point: (zero_point + input_offset) * w = 0. */
    zero_word[0] = zero_word[1] = zero_word[2] = zero_word[3] = (int8_t)-p.input_offset;

    for (oy = 0; oy < (int)p.out_h; ++oy) {
        const int iy0 = oy * (int)p.stride_h - (int)p.pad_top;
        for (ox = 0; ox < (int)p.out_w; ++ox) {
            const int ix0 = ox * (int)p.stride_w - (int)p.pad_left;
            const uint8_t *d = deltas;
            const int8_t *v = values;
            int8_t *out = output + ((size_t)oy * p.out_w + (size_t)ox) * p.out_c;
            const int inside = iy0 >= 0 && ix0 >= 0
                               && iy0 + ((int)p.k_h - 1) * (int)p.dilation_h < (int)p.in_h
                               && ix0 + (k_w - 1) * (int)p.dilation_w < (int)p.in_w;
            for (oc = 0; oc < (int)p.out_c; ++oc) {
                uint16_t n = mf_sparse_row_nnz(row_nblk, oc);
                int32_t acc = MF_LD_S32(&bias[oc]);
                int b = 0, kx = 0, ky = 0; /* the next candidate block, as (ky, kx, b) */
                if (inside) {
                    /* Receptive field inside the input: a flat offset, no bounds checks. */
                    const int8_t *xb = input + ((size_t)iy0 * p.in_w + (size_t)ix0) * p.in_c;
                    for (; n > 0; --n) {
                        b += block_gap(&d);
                        while (b >= nb) {
                            b -= nb;
                            xb += tap_step;
                            if (++kx == k_w) {
                                kx = 0;
                                xb += row_step;
                            }
                        }
                        acc = block_mac(acc, xb + 4 * b, v);
                        v += 4;
                        ++b;
                    }
                }
                for (; n > 0; --n) {
                    int iy, ix;
                    const int8_t *x = zero_word;
                    b += block_gap(&d);
                    while (b >= nb) {
                        b -= nb;
                        if (++kx == k_w) {
                            kx = 0;
                            ++ky;
                        }
                    }
                    iy = iy0 + ky * (int)p.dilation_h;
                    ix = ix0 + kx * (int)p.dilation_w;
                    if (iy >= 0 && iy < (int)p.in_h && ix >= 0 && ix < (int)p.in_w) {
                        x = input + ((size_t)iy * p.in_w + (size_t)ix) * p.in_c + 4 * (size_t)b;
                    }
                    acc = block_mac(acc, x, v);
                    v += 4;
                    ++b;
                }
                out[oc] = block_finish(flags, acc, requant, oc, p.output_offset, p.act_min,
                                       p.act_max);
            }
        }
    }
}

#if !defined(__AVR__)
/* ---- Cortex-M: four pixels per pass over the blocks ----------------------- */

/* Pixels per pass: each stored block's index and weights are decoded once
 * for this many receptive fields. */
#define MF_BLOCK_PIXELS 4

int32_t mf_block_conv2d_s8_fast_get_buffer_size(const mf_conv2d_params *params)
{
    /* Four int16 columns of K = k_h * k_w * in_c values. */
    return 2 * MF_BLOCK_PIXELS * (int32_t)params->k_h * params->k_w * params->in_c;
}

/* Output pixel (oy, ox)'s receptive field, expanded to int16 in the dense
 * fast kernel's column order (per group of four values x0, x2, x1, x3, what
 * SXTB16 and SXTB16 ROR 8 give), a group every 4 * MF_BLOCK_PIXELS int16
 * (the columns interleaved); taps in the padding hold the zero point. */
static void block_im2col(const mf_conv2d_params *p, const int8_t *input, int32_t oy, int32_t ox,
                         int16_t *col)
{
    const int32_t groups = p->in_c / 4;
    const int32_t iy0 = oy * (int32_t)p->stride_h - (int32_t)p->pad_top;
    const int32_t ix0 = ox * (int32_t)p->stride_w - (int32_t)p->pad_left;
    const int16_t zp = (int16_t)(int8_t)-p->input_offset;
    int32_t ky, kx, g;
    for (ky = 0; ky < (int32_t)p->k_h; ++ky) {
        const int32_t iy = iy0 + ky * (int32_t)p->dilation_h;
        for (kx = 0; kx < (int32_t)p->k_w; ++kx) {
            const int32_t ix = ix0 + kx * (int32_t)p->dilation_w;
            if (iy < 0 || iy >= (int32_t)p->in_h || ix < 0 || ix >= (int32_t)p->in_w) {
                for (g = 0; g < groups; ++g) {
                    col[0] = zp;
                    col[1] = zp;
                    col[2] = zp;
                    col[3] = zp;
                    col += 4 * MF_BLOCK_PIXELS;
                }
                continue;
            }
            {
                const int8_t *src = input + ((size_t)iy * p->in_w + (size_t)ix) * p->in_c;
                for (g = 0; g < groups; ++g) {
                    const uint32_t bytes = mf_load32(src);
#if MF_SIMD
                    mf_store32a(col, mf_sxtb16(bytes));
                    mf_store32a(col + 2, mf_sxtb16_ror8(bytes));
#else
                    col[0] = (int8_t)(bytes & 0xFFu);
                    col[1] = (int8_t)((bytes >> 16) & 0xFFu);
                    col[2] = (int8_t)((bytes >> 8) & 0xFFu);
                    col[3] = (int8_t)(bytes >> 24);
#endif
                    src += 4;
                    col += 4 * MF_BLOCK_PIXELS;
                }
            }
        }
    }
}

/* acc + one column's group (four int16 at c) times the block's weights,
 * unpacked as (w0, w2) and (w1, w3). */
static inline int32_t block_col_mac(int32_t acc, uint32_t w02, uint32_t w13, const int16_t *c)
{
#if MF_SIMD
    acc = mf_smlad(w02, mf_load32a(c), acc);
    return mf_smlad(w13, mf_load32a(c + 2), acc);
#else
    return (int32_t)((uint32_t)acc + (uint32_t)(c[0] * (int16_t)(w02 & 0xFFFFu))
                     + (uint32_t)(c[1] * (int16_t)(w02 >> 16))
                     + (uint32_t)(c[2] * (int16_t)(w13 & 0xFFFFu))
                     + (uint32_t)(c[3] * (int16_t)(w13 >> 16)));
#endif
}

static inline int8_t block_out(int32_t flags, int32_t acc, const int32_t *rq,
                               const mf_conv2d_params *p)
{
    if (flags & MF_RQ_SMALL) {
        return mf_clamp_s8(mf_rq_small(acc, rq[0], rq[1], rq[2]), p->act_min, p->act_max);
    }
    return mf_clamp_s8(mf_rq(flags, acc, rq, p->output_offset), p->act_min, p->act_max);
}

/* Every output channel of the MF_BLOCK_PIXELS pixels whose columns are
 * interleaved at cols; out[i] is pixel i's output (a lone pixel may appear
 * more than once: it is written with the same bytes each time). */
static void block_pixels(const mf_conv2d_params *p, const int16_t *cols,
                         const uint8_t *row_nblk, const uint8_t *d, const int8_t *v,
                         const int32_t *bias, const int32_t *requant, int8_t *const *out)
{
    const int32_t flags = requant[0];
    const int32_t *rq = requant + 1;
    const int32_t out_c = p->out_c;
    int32_t oc;
    for (oc = 0; oc < out_c; ++oc, rq += 3) {
        uint32_t n = mf_sparse_row_nnz(row_nblk, oc);
        const int16_t *c = cols;
        int32_t a0 = bias[oc], a1 = a0, a2 = a0, a3 = a0;
        for (; n > 0; --n) {
            uint32_t g = *d++;
            uint32_t wv, w02, w13;
            while (g == MF_SPARSE_ESCAPE) {
                c += 4 * MF_BLOCK_PIXELS * MF_SPARSE_ESCAPE;
                g = *d++;
            }
            c += 4 * MF_BLOCK_PIXELS * g;
            wv = mf_load32(v);
            v += 4;
#if MF_SIMD
            w02 = mf_sxtb16(wv);
            w13 = mf_sxtb16_ror8(wv);
#else
            /* The same lanes as SXTB16: (w0, w2) and (w1, w3). */
            w02 = (uint32_t)(uint16_t)(int16_t)(int8_t)(wv & 0xFFu)
                | ((uint32_t)(uint16_t)(int16_t)(int8_t)((wv >> 16) & 0xFFu) << 16);
            w13 = (uint32_t)(uint16_t)(int16_t)(int8_t)((wv >> 8) & 0xFFu)
                | ((uint32_t)(uint16_t)(int16_t)(int8_t)(wv >> 24) << 16);
#endif
            a0 = block_col_mac(a0, w02, w13, c);
            a1 = block_col_mac(a1, w02, w13, c + 4);
            a2 = block_col_mac(a2, w02, w13, c + 8);
            a3 = block_col_mac(a3, w02, w13, c + 12);
            c += 4 * MF_BLOCK_PIXELS;
        }
        out[0][oc] = block_out(flags, a0, rq, p);
        out[1][oc] = block_out(flags, a1, rq, p);
        out[2][oc] = block_out(flags, a2, rq, p);
        out[3][oc] = block_out(flags, a3, rq, p);
    }
}

void mf_block_conv2d_s8_fast(const mf_conv2d_params *params,
                             const int8_t *input,
                             const uint8_t *row_nblk,
                             const uint8_t *deltas,
                             const int8_t *values,
                             const int32_t *bias,
                             const int32_t *requant,
                             int8_t *scratch,
                             int8_t *output)
{
    mf_conv2d_params p;
    int16_t *cols = (int16_t *)MF_ALIGNED4(scratch);
    int32_t n_pixels, pixel, oy = 0, ox = 0, out_c;

    MF_LD_PARAMS(&p, params);
    n_pixels = (int32_t)p.out_h * p.out_w;
    out_c = p.out_c;
    for (pixel = 0; pixel < n_pixels; pixel += MF_BLOCK_PIXELS) {
        int8_t *out[MF_BLOCK_PIXELS];
        int32_t i;
        for (i = 0; i < MF_BLOCK_PIXELS; ++i) {
            /* Past the last pixel, the slots repeat it. */
            out[i] = output + (size_t)(pixel + i < n_pixels ? pixel + i : n_pixels - 1) * out_c;
            block_im2col(&p, input, oy, ox, cols + 4 * i);
            if (pixel + i + 1 < n_pixels && ++ox == (int32_t)p.out_w) {
                ox = 0;
                ++oy;
            }
        }
        block_pixels(&p, cols, row_nblk, deltas, values, bias, requant, out);
    }
}
#endif
