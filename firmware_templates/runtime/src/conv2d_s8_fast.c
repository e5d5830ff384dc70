/*
 * 2-D convolution (and fully connected layers, as 1x1 convolutions of one
 * pixel), int8: the fast path. See mf_conv2d_s8.h, mf_conv2d_s8_fast.
 *
 * The convolution is a matrix product: each output pixel's receptive field,
 * gathered into a column (im2col), times each output channel's weight row.
 * The column is expanded to int16 once and reused by every output channel;
 * two columns and two weight rows are multiplied together (a 2x2 block: four
 * accumulators, each operand loaded once for two uses).
 *
 * The input offset never appears in the inner loop. Code generation folds
 * input_offset * sum(weights of the row) into the bias, and im2col fills
 * padded taps with the input zero point instead of skipping them: a padded
 * tap then contributes (zero_point + input_offset) * w = 0, as the portable
 * kernel's skipped tap does, and every other tap x * w + input_offset * w.
 * The sums are equal modulo 2^32, hence equal: the reference checks that the
 * true accumulator fits in int32.
 *
 * Two inner loops compute the same sums: with the DSP extension (MF_SIMD,
 * see mf_simd.h), SMLAD multiplies two int16 lanes per instruction, the
 * weights unpacked from bytes with SXTB16; without it (Cortex-M0/M0+/M3),
 * plain 32-bit multiply-accumulates on the same layouts.
 *
 * Layouts (see also mf_conv2d_s8.h):
 *   weights: rows of K = k_h * k_w * in_c bytes (OHWI order), zero-padded
 *     to K4 = K rounded up to 4; rows 2j and 2j+1 interleaved in groups of
 *     four bytes (four of row 2j, four of row 2j+1, ...); an odd last row
 *     stands alone. microfit.codegen.layouts.pack_conv_weights writes it.
 *   column (scratch): per group of four values x0..x3, the int16 values in
 *     the order x0, x2, x1, x3 (what SXTB16 and SXTB16 ROR 8 give as two
 *     words); two columns interleaved group by group.
 */
#include "mf_conv2d_s8.h"

#include <stddef.h>
#include <string.h>

#include "mf_fixedpoint.h"
#include "mf_platform.h"
#include "mf_simd.h"

#if !defined(__AVR__)

static int32_t round_up4(int32_t k)
{
    return (k + 3) & ~(int32_t)3;
}

int32_t mf_conv2d_s8_fast_get_buffer_size(const mf_conv2d_params *params)
{
    const int32_t k4 = round_up4((int32_t)params->k_h * params->k_w * params->in_c);
    const int32_t n_cols = (int32_t)params->out_h * params->out_w >= 2 ? 2 : 1;
    /* int16 columns, plus a byte staging area when taps are not whole words. */
    return n_cols * k4 * 2 + (params->in_c % 4 != 0 ? k4 : 0);
}

/* ---- im2col ---------------------------------------------------------------- */

/* Expand n groups of four bytes from src into the column (x0, x2, x1, x3
 * order), one group every `stride` int16; returns the column's new end. */
static int16_t *expand(int16_t *col, const int8_t *src, int32_t n, int32_t stride)
{
    int32_t g;
    for (g = 0; g < n; ++g) {
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
        col += stride;
    }
    return col;
}

/* n groups of the zero point. */
static int16_t *fill(int16_t *col, int16_t zero_point, int32_t n, int32_t stride)
{
    int32_t g;
    for (g = 0; g < n; ++g) {
        col[0] = zero_point;
        col[1] = zero_point;
        col[2] = zero_point;
        col[3] = zero_point;
        col += stride;
    }
    return col;
}

typedef struct {
    const mf_conv2d_params *p;
    const int8_t *input;
    int32_t k4;
    int8_t zero_point;
    int8_t *raw; /* staging area (in_c % 4 != 0), k4 bytes */
} im2col_ctx;

/* Gather the receptive field of output pixel (oy, ox) into a column whose
 * groups lie `stride` int16 apart. */
static void im2col(const im2col_ctx *ctx, int32_t oy, int32_t ox, int16_t *col, int32_t stride)
{
    const mf_conv2d_params *p = ctx->p;
    const int32_t in_h = p->in_h, in_w = p->in_w, in_c = p->in_c, k_w = p->k_w;
    const int32_t dil_h = p->dilation_h, dil_w = p->dilation_w;
    const int32_t iy0 = oy * (int32_t)p->stride_h - (int32_t)p->pad_top;
    const int32_t ix0 = ox * (int32_t)p->stride_w - (int32_t)p->pad_left;
    /* Taps of a kernel row that lie inside the image: kx in [kx_lo, kx_hi). */
    int32_t kx_lo = ix0 < 0 ? (-ix0 + dil_w - 1) / dil_w : 0;
    int32_t kx_hi = ix0 >= in_w ? 0 : (in_w - 1 - ix0) / dil_w + 1;
    int32_t ky;

    if (kx_lo > k_w) {
        kx_lo = k_w;
    }
    if (kx_hi > k_w) {
        kx_hi = k_w;
    }
    if (kx_hi < kx_lo) {
        kx_hi = kx_lo;
    }
    if (in_c % 4 == 0) {
        /* Whole words per tap: expand straight from the input. */
        const int32_t groups = in_c / 4;
        for (ky = 0; ky < p->k_h; ++ky) {
            const int32_t iy = iy0 + ky * dil_h;
            if (iy < 0 || iy >= in_h) {
                col = fill(col, ctx->zero_point, k_w * groups, stride);
                continue;
            }
            col = fill(col, ctx->zero_point, kx_lo * groups, stride);
            if (kx_hi > kx_lo) {
                const int8_t *row = ctx->input + (iy * in_w + ix0 + kx_lo * dil_w) * in_c;
                if (dil_w == 1) {
                    col = expand(col, row, (kx_hi - kx_lo) * groups, stride);
                } else {
                    int32_t kx;
                    for (kx = kx_lo; kx < kx_hi; ++kx) {
                        col = expand(col, row, groups, stride);
                        row += dil_w * in_c;
                    }
                }
            }
            col = fill(col, ctx->zero_point, (k_w - kx_hi) * groups, stride);
        }
        return;
    }
    {
        int8_t *raw = ctx->raw;
        for (ky = 0; ky < p->k_h; ++ky) {
            const int32_t iy = iy0 + ky * dil_h;
            int32_t kx;
            if (iy < 0 || iy >= in_h) {
                memset(raw, ctx->zero_point, (size_t)(k_w * in_c));
                raw += k_w * in_c;
                continue;
            }
            for (kx = 0; kx < k_w; ++kx) {
                if (kx < kx_lo || kx >= kx_hi) {
                    memset(raw, ctx->zero_point, (size_t)in_c);
                } else {
                    const int8_t *src = ctx->input + (iy * in_w + ix0 + kx * dil_w) * in_c;
                    int32_t c;
                    for (c = 0; c < in_c; ++c) {
                        raw[c] = src[c];
                    }
                }
                raw += in_c;
            }
        }
        /* The padding to K4 meets zero weights; any defined value will do. */
        while (raw < ctx->raw + ctx->k4) {
            *raw++ = 0;
        }
        expand(col, ctx->raw, ctx->k4 / 4, stride);
    }
}

/* ---- the matrix product ---------------------------------------------------- */

typedef struct {
    const int8_t *weights;
    const int32_t *bias;
    const int32_t *requant; /* {multiplier, shift, round} per channel */
    int32_t out_c, groups;
    int32_t output_offset, act_min, act_max;
    int fast_requant;       /* every channel passes mf_requant_fast_ok */
} rows_ctx;

/* Requantize, offset and clamp two accumulators of one channel (the same
 * channel of two pixels, or a pixel and an unused duplicate). */
MF_ALWAYS_INLINE static inline void finish2(const rows_ctx *c, const int32_t *rq, int32_t a, int32_t b,
                           int8_t *out_a, int8_t *out_b)
{
    int32_t va, vb;
    if (c->fast_requant) {
        va = mf_requant_fast(a, rq[0], rq[1], rq[2]);
        vb = mf_requant_fast(b, rq[0], rq[1], rq[2]);
    } else {
        va = mf_requantize(a, rq[0], rq[1]) + c->output_offset;
        vb = mf_requantize(b, rq[0], rq[1]) + c->output_offset;
    }
    *out_a = mf_clamp_s8(va, c->act_min, c->act_max);
    *out_b = mf_clamp_s8(vb, c->act_min, c->act_max);
}

#if MF_SIMD && defined(__ARM_FEATURE_DSP) && defined(__thumb2__) && defined(__GNUC__)
/* The 2x2 inner loop on Cortex-M4/M7, two groups per iteration: 15
 * instructions per group of 16 multiply-accumulates (LDRD of both rows'
 * weights, four SXTB16, LDRD of each column's two words, eight SMLAD), plus
 * two per iteration for the loop. Written in assembly because the compiler
 * spills with 13 values live and does not use post-indexed LDRD. */
#define MF_CONV_ASM 1
#define MF_GROUP_2X2                                                          \
    "ldrd %[wa], %[wb], [%[w]], #8\n\t"                                        \
    "sxtb16 %[wa1], %[wa], ror #8\n\t"                                         \
    "sxtb16 %[wa], %[wa]\n\t"                                                  \
    "sxtb16 %[wb1], %[wb], ror #8\n\t"                                         \
    "sxtb16 %[wb], %[wb]\n\t"                                                  \
    "ldrd %[c0], %[c1], [%[c]], #8\n\t"                                        \
    "smlad %[a00], %[wa], %[c0], %[a00]\n\t"                                   \
    "smlad %[a00], %[wa1], %[c1], %[a00]\n\t"                                  \
    "smlad %[a10], %[wb], %[c0], %[a10]\n\t"                                   \
    "smlad %[a10], %[wb1], %[c1], %[a10]\n\t"                                  \
    "ldrd %[c0], %[c1], [%[c]], #8\n\t"                                        \
    "smlad %[a01], %[wa], %[c0], %[a01]\n\t"                                   \
    "smlad %[a01], %[wa1], %[c1], %[a01]\n\t"                                  \
    "smlad %[a11], %[wb], %[c0], %[a11]\n\t"                                   \
    "smlad %[a11], %[wb1], %[c1], %[a11]\n\t"
#define MF_GROUP_OPERANDS                                                     \
    [w] "+r"(w), [c] "+r"(col), [a00] "+r"(a00), [a01] "+r"(a01),             \
    [a10] "+r"(a10), [a11] "+r"(a11), [wa] "=&r"(wa), [wb] "=&r"(wb),         \
    [wa1] "=&r"(wa1), [wb1] "=&r"(wb1), [c0] "=&r"(c0), [c1] "=&r"(c1)
#endif

/* Accumulate one group: the row's four weight bytes at wp against the
 * column's four int16 at cp (x0, x2, x1, x3 order). */
static inline int32_t mac_group(int32_t acc, const int8_t *wp, const int16_t *cp)
{
#if MF_SIMD
    const uint32_t wv = mf_load32a(wp);
    acc = mf_smlad(mf_sxtb16(wv), mf_load32a(cp), acc);
    return mf_smlad(mf_sxtb16_ror8(wv), mf_load32a(cp + 2), acc);
#else
    /* Unsigned: the folded sums wrap like the hardware's. */
    return (int32_t)((uint32_t)acc + (uint32_t)(cp[0] * wp[0]) + (uint32_t)(cp[1] * wp[2])
                     + (uint32_t)(cp[2] * wp[1]) + (uint32_t)(cp[3] * wp[3]));
#endif
}

/* Every output channel of two pixels whose columns are interleaved at cols;
 * out points at channel 0 of the first pixel, the second follows out_c bytes
 * later. */
static void rows_two_pixels(const rows_ctx *c, const int16_t *cols, int8_t *out)
{
    const int32_t out_c = c->out_c, groups = c->groups;
    int32_t oc;
    for (oc = 0; oc + 1 < out_c; oc += 2) {
        const int8_t *w = c->weights + oc * groups * 4;
        const int16_t *col = cols;
        int32_t a00 = c->bias[oc], a01 = a00, a10 = c->bias[oc + 1], a11 = a10;
#if defined(MF_CONV_ASM)
        uint32_t wa, wb, wa1, wb1, c0, c1;
        int32_t pairs = groups >> 1;
        if (groups & 1) {
            __asm volatile(MF_GROUP_2X2 : MF_GROUP_OPERANDS : : "memory");
        }
        if (pairs > 0) {
            __asm volatile("1:\n\t" MF_GROUP_2X2 MF_GROUP_2X2
                           "subs %[n], %[n], #1\n\t"
                           "bne 1b\n\t"
                           : MF_GROUP_OPERANDS, [n] "+r"(pairs)
                           :
                           : "cc", "memory");
        }
#else
        int32_t g;
        for (g = 0; g < groups; ++g) {
            a00 = mac_group(a00, w, col);
            a01 = mac_group(a01, w, col + 4);
            a10 = mac_group(a10, w + 4, col);
            a11 = mac_group(a11, w + 4, col + 4);
            w += 8;
            col += 8;
        }
#endif
        finish2(c, c->requant + 3 * oc, a00, a01, &out[oc], &out[out_c + oc]);
        finish2(c, c->requant + 3 * oc + 3, a10, a11, &out[oc + 1], &out[out_c + oc + 1]);
    }
    if (oc < out_c) {
        /* The odd last row stands alone. */
        const int8_t *w = c->weights + oc * groups * 4;
        const int16_t *col = cols;
        int32_t a0 = c->bias[oc], a1 = a0, g;
        for (g = 0; g < groups; ++g) {
            a0 = mac_group(a0, w, col);
            a1 = mac_group(a1, w, col + 4);
            w += 4;
            col += 8;
        }
        finish2(c, c->requant + 3 * oc, a0, a1, &out[oc], &out[out_c + oc]);
    }
}

/* Every output channel of one pixel (column groups 4 int16 apart). */
static void rows_one_pixel(const rows_ctx *c, const int16_t *col0, int8_t *out)
{
    const int32_t out_c = c->out_c, groups = c->groups;
    int32_t oc;
    for (oc = 0; oc < out_c; oc += 2) {
        const int paired = oc + 1 < out_c;
        const int32_t w_step = paired ? 8 : 4;
        const int8_t *w = c->weights + oc * groups * 4;
        const int16_t *col = col0;
        int32_t a0 = c->bias[oc], a1 = paired ? c->bias[oc + 1] : 0, g;
        for (g = 0; g < groups; ++g) {
            a0 = mac_group(a0, w, col);
            if (paired) {
                a1 = mac_group(a1, w + 4, col);
            }
            w += w_step;
            col += 4;
        }
        {
            int8_t unused;
            finish2(c, c->requant + 3 * oc, a0, a0, &out[oc], &unused);
        }
        if (paired) {
            int8_t unused;
            finish2(c, c->requant + 3 * oc + 3, a1, a1, &out[oc + 1], &unused);
        }
    }
}

void mf_conv2d_s8_fast(const mf_conv2d_params *params,
                       const int8_t *input,
                       const int8_t *weights,
                       const int32_t *bias,
                       const int32_t *requant,
                       int8_t *scratch,
                       int8_t *output)
{
    mf_conv2d_params p;
    im2col_ctx ctx;
    rows_ctx rows;
    int32_t out_w, out_c, n_pixels, k4, pixel, oy, ox, oc;
    int16_t *cols = (int16_t *)MF_ALIGNED4(scratch);

    MF_LD_PARAMS(&p, params);
    out_w = p.out_w;
    out_c = p.out_c;
    n_pixels = (int32_t)p.out_h * out_w;
    k4 = round_up4((int32_t)p.k_h * p.k_w * p.in_c);
    ctx.p = &p;
    ctx.input = input;
    ctx.k4 = k4;
    ctx.zero_point = (int8_t)-p.input_offset;
    ctx.raw = scratch + (n_pixels >= 2 ? 2 : 1) * k4 * 2;
    rows.weights = weights;
    rows.bias = bias;
    rows.requant = requant;
    rows.out_c = out_c;
    rows.groups = k4 / 4;
    rows.output_offset = p.output_offset;
    rows.act_min = p.act_min;
    rows.act_max = p.act_max;
    rows.fast_requant = 1;
    for (oc = 0; oc < out_c; ++oc) {
        if (!mf_requant_fast_ok(requant[3 * oc + 1])) {
            rows.fast_requant = 0;
        }
    }

    oy = 0;
    ox = 0;
    for (pixel = 0; pixel + 1 < n_pixels; pixel += 2) {
        im2col(&ctx, oy, ox, cols, 8);
        if (++ox == out_w) {
            ox = 0;
            ++oy;
        }
        im2col(&ctx, oy, ox, cols + 4, 8);
        if (++ox == out_w) {
            ox = 0;
            ++oy;
        }
        rows_two_pixels(&rows, cols, output + pixel * out_c);
    }
    if (pixel < n_pixels) {
        im2col(&ctx, oy, ox, cols, 4);
        rows_one_pixel(&rows, cols, output + pixel * out_c);
    }
}

#else
/* AVR keeps model constants in flash: its kernels are the portable ones. */
typedef int mf_conv2d_s8_fast_unused;
#endif
