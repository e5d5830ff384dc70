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

#if MF_SIMD && defined(__ARM_FEATURE_DSP) && defined(__thumb2__) && defined(__GNUC__)
/* Cortex-M4/M7: the hot loops below are written in assembly. */
#define MF_CONV_ASM 1
#endif

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

/* The columns of two neighbouring pixels of a 1x1 convolution, interleaved. */
static void expand_pair(int16_t *col, const int8_t *a, int32_t n)
{
    const int8_t *b = a + 4 * n;
    int32_t g;
    for (g = 0; g < n; ++g) {
        const uint32_t wa = mf_load32(a), wb = mf_load32(b);
#if MF_SIMD
        mf_store32a(col, mf_sxtb16(wa));
        mf_store32a(col + 2, mf_sxtb16_ror8(wa));
        mf_store32a(col + 4, mf_sxtb16(wb));
        mf_store32a(col + 6, mf_sxtb16_ror8(wb));
#else
        col[0] = (int8_t)(wa & 0xFFu);
        col[1] = (int8_t)((wa >> 16) & 0xFFu);
        col[2] = (int8_t)((wa >> 8) & 0xFFu);
        col[3] = (int8_t)(wa >> 24);
        col[4] = (int8_t)(wb & 0xFFu);
        col[5] = (int8_t)((wb >> 16) & 0xFFu);
        col[6] = (int8_t)((wb >> 8) & 0xFFu);
        col[7] = (int8_t)(wb >> 24);
#endif
        a += 4;
        b += 4;
        col += 8;
    }
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
        /* Gather bytes (taps are not whole words), then expand whole words. */
        int8_t *raw = ctx->raw;
        const int8_t zp = ctx->zero_point;
        for (ky = 0; ky < p->k_h; ++ky) {
            const int32_t iy = iy0 + ky * dil_h;
            int32_t kx, n;
            if (iy < 0 || iy >= in_h) {
                for (n = k_w * in_c; n > 0; --n) {
                    *raw++ = zp;
                }
                continue;
            }
            for (n = kx_lo * in_c; n > 0; --n) {
                *raw++ = zp;
            }
            for (kx = kx_lo; kx < kx_hi; ++kx) {
                /* With dilation 1 this walks one contiguous run of the input row. */
                const int8_t *src = ctx->input + (iy * in_w + ix0 + kx * dil_w) * in_c;
                for (n = 0; n < in_c; ++n) {
                    *raw++ = src[n];
                }
            }
            for (n = (k_w - kx_hi) * in_c; n > 0; --n) {
                *raw++ = zp;
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
    const int32_t *requant; /* {multiplier, e, round} per channel (mf_simd.h) */
    int32_t out_c, groups;
    int32_t output_offset, act_min, act_max;
    int32_t flags;          /* MF_RQ_FAST, MF_RQ_SMALL */
} rows_ctx;

/* Layers without MF_RQ_SMALL: out of line, to keep the hot code small. */
static void finish2_slow(const rows_ctx *c, const int32_t *rq, int32_t a, int32_t b,
                         int8_t *out_a, int8_t *out_b)
{
    int32_t acc[2];
    int8_t *out[2];
    int i;
    acc[0] = a;
    acc[1] = b;
    out[0] = out_a;
    out[1] = out_b;
    for (i = 0; i < 2; ++i) {
        *out[i] = mf_clamp_s8(mf_rq(c->flags, acc[i], rq, c->output_offset), c->act_min,
                              c->act_max);
    }
}

/* Requantize, offset and clamp two accumulators of one channel (the same
 * channel of two pixels, or a pixel and an unused duplicate). */
static inline void finish2(const rows_ctx *c, const int32_t *rq, int32_t a, int32_t b,
                           int8_t *out_a, int8_t *out_b)
{
    if (c->flags & MF_RQ_SMALL) {
        *out_a = mf_clamp_s8(mf_rq_small(a, rq[0], rq[1], rq[2]), c->act_min, c->act_max);
        *out_b = mf_clamp_s8(mf_rq_small(b, rq[0], rq[1], rq[2]), c->act_min, c->act_max);
    } else {
        finish2_slow(c, rq, a, b, out_a, out_b);
    }
}

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

/* Output channels first.. of one pixel (column groups `stride` int16 apart;
 * first is even). */
static void rows_one_pixel(const rows_ctx *c, int32_t first, const int16_t *col0, int32_t stride,
                           int8_t *out)
{
    const int32_t out_c = c->out_c, groups = c->groups;
    int32_t oc;
    for (oc = first; oc < out_c; oc += 2) {
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
            col += stride;
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

/* Every output channel of two pixels whose columns are interleaved at cols;
 * out points at channel 0 of the first pixel, the second follows out_c bytes
 * later. */
#if defined(MF_CONV_ASM) && defined(__OPTIMIZE__)
/*
 * Every channel pair of two pixels in one assembly loop, for layers whose
 * requantization is MF_RQ_FAST | MF_RQ_SMALL (nearly all). Per pair: the
 * 2x2 inner loop, two groups of four values per iteration, 15 instructions
 * per group of 16 multiply-accumulates (LDRD of both rows' weights, four
 * SXTB16, an LDRD of each column's two words, eight SMLAD); then
 * mf_rq_small and SSAT for the four accumulators, the four bytes packed
 * (BFI) and clamped at once (SSUB8/SEL), two halfword stores (the M4/M7
 * allow them unaligned). The compiler's version of the same code spilled its
 * loop state around every block and used no post-indexed LDRD.
 * Layout of the state it walks (offsets are used in the assembly):
 */
typedef struct {
    const int8_t *w;      /*  0: the current channel pair's weights */
    const int32_t *bias;  /*  4 */
    const int32_t *rq;    /*  8: {multiplier, e, round} of the pair's first channel */
    int8_t *out;          /* 12: the first pixel's output, at the pair's first channel */
    int32_t out_c;        /* 16 */
    uint32_t lo4, hi4;    /* 20, 24: the activation range, in each byte */
    int32_t groups;       /* 28: >= 1 */
    const int16_t *cols;  /* 32 */
    int32_t pairs;        /* 36: >= 1 */
} pair_state;

#if defined(MF_SINGLE_ROUNDING)
#define MF_HIGH_MUL "smmul"
#define MF_ROUND_NEG(r) ""
#else
#define MF_HIGH_MUL "smmulr"
#define MF_ROUND_NEG(r) "sub " r ", " r ", " r ", lsr #31\n\t"
#endif
/* acc (register r) -> mf_rq_small with m, e, round in rm, re, rr, saturated
 * to int8 (the activation range is applied to the four packed bytes). */
#define MF_REQUANT(r, rm, re, rr)                                             \
    "lsl " r ", " r ", #1\n\t" MF_HIGH_MUL " " r ", " r ", " rm "\n\t"        \
    MF_ROUND_NEG(r) "add " r ", " r ", " rr "\n\t"                             \
    "asr " r ", " r ", " re "\n\t"                                            \
    "ssat " r ", #8, " r "\n\t"
/* One group of four values for both rows and both columns. */
#define MF_GROUP_FIXED                                                        \
    "ldrd r0, r1, [r6], #8\n\t"                                              \
    "sxtb16 r10, r0, ror #8\n\t"                                             \
    "sxtb16 r0, r0\n\t"                                                      \
    "sxtb16 r11, r1, ror #8\n\t"                                             \
    "sxtb16 r1, r1\n\t"                                                      \
    "ldrd r12, lr, [r8], #8\n\t"                                             \
    "smlad r2, r0, r12, r2\n\t"                                              \
    "smlad r2, r10, lr, r2\n\t"                                              \
    "smlad r4, r1, r12, r4\n\t"                                              \
    "smlad r4, r11, lr, r4\n\t"                                              \
    "ldrd r12, lr, [r8], #8\n\t"                                             \
    "smlad r3, r0, r12, r3\n\t"                                              \
    "smlad r3, r10, lr, r3\n\t"                                              \
    "smlad r5, r1, r12, r5\n\t"                                              \
    "smlad r5, r11, lr, r5\n\t"

static void pairs_asm(pair_state *st)
{
    register pair_state *s0 __asm("r0") = st;
    __asm volatile(
        "1:\n\t"
        /* accumulators from the biases: a00 r2, a01 r3 (channel 0), a10 r4, a11 r5 */
        "ldr r1, [r0, #4]\n\t"
        "ldrd r2, r4, [r1], #8\n\t"
        "str r1, [r0, #4]\n\t"
        "mov r3, r2\n\t"
        "mov r5, r4\n\t"
        "ldr r6, [r0, #0]\n\t"
        "ldr r8, [r0, #32]\n\t"
        "ldr r9, [r0, #28]\n\t"
        "push {r0}\n\t"
        "tst r9, #1\n\t"
        "beq 2f\n\t"
        MF_GROUP_FIXED
        "2:\n\t"
        "lsrs r9, r9, #1\n\t"
        "beq 4f\n\t"
        "3:\n\t"
        MF_GROUP_FIXED MF_GROUP_FIXED
        "subs r9, r9, #1\n\t"
        "bne 3b\n\t"
        "4:\n\t"
        "pop {r0}\n\t"
        "str r6, [r0, #0]\n\t"
        /* requantize: channel 0 {r6, r8, r9}, channel 1 {r10, r11, r12} */
        "ldr r1, [r0, #8]\n\t"
        "ldm r1!, {r6, r8, r9}\n\t"
        "ldm r1!, {r10, r11, r12}\n\t"
        "str r1, [r0, #8]\n\t"
        "ldr r1, [r0, #20]\n\t"
        "ldr lr, [r0, #24]\n\t"
        MF_REQUANT("r2", "r6", "r8", "r9")
        MF_REQUANT("r3", "r6", "r8", "r9")
        MF_REQUANT("r4", "r10", "r11", "r12")
        MF_REQUANT("r5", "r10", "r11", "r12")
        /* bytes: pixel 0 channels 0, 1, pixel 1 channels 0, 1; clamp to
         * [lo4, hi4] byte-wise (SSUB8 sets GE, SEL picks), two STRH */
        "bfi r2, r4, #8, #8\n\t"
        "bfi r2, r3, #16, #8\n\t"
        "bfi r2, r5, #24, #8\n\t"
        "ssub8 r3, r2, r1\n\t"
        "sel r2, r2, r1\n\t"
        "ssub8 r3, r2, lr\n\t"
        "sel r2, lr, r2\n\t"
        "ldrd r6, r8, [r0, #12]\n\t"
        "strh r2, [r6]\n\t"
        "lsr r2, r2, #16\n\t"
        "strh r2, [r6, r8]\n\t"
        "add r6, r6, #2\n\t"
        "str r6, [r0, #12]\n\t"
        "ldr r1, [r0, #36]\n\t"
        "subs r1, r1, #1\n\t"
        "str r1, [r0, #36]\n\t"
        "bne 1b\n\t"
        : "+r"(s0)
        :
        : "r1", "r2", "r3", "r4", "r5", "r6", "r8", "r9", "r10", "r11", "r12", "lr", "cc",
          "memory");
}
#endif

static void rows_two_pixels(const rows_ctx *c, const int16_t *cols, int8_t *out)
{
    const int32_t out_c = c->out_c, groups = c->groups;
    int32_t oc = 0;
#if defined(MF_CONV_ASM) && defined(__OPTIMIZE__)
    if ((c->flags & (MF_RQ_FAST | MF_RQ_SMALL)) == (MF_RQ_FAST | MF_RQ_SMALL) && out_c >= 2) {
        pair_state st;
        st.w = c->weights;
        st.bias = c->bias;
        st.rq = c->requant;
        st.out = out;
        st.out_c = out_c;
        st.lo4 = (uint32_t)(uint8_t)c->act_min * 0x01010101u;
        st.hi4 = (uint32_t)(uint8_t)c->act_max * 0x01010101u;
        st.groups = groups;
        st.cols = cols;
        st.pairs = out_c / 2;
        pairs_asm(&st);
        oc = out_c & ~(int32_t)1;
    }
#endif
#if defined(MF_CONV_ASM) && defined(__OPTIMIZE__)
    /* The odd last channel, or every channel of layers without MF_RQ_SMALL:
     * a pixel at a time, in less code than a second copy of the pair loop. */
    if (oc < out_c) {
        rows_one_pixel(c, oc, cols, 8, out);
        rows_one_pixel(c, oc, cols + 4, 8, out + out_c);
    }
    (void)groups;
#else
    for (; oc + 1 < out_c; oc += 2) {
        const int8_t *w = c->weights + oc * groups * 4;
        const int16_t *col = cols;
        int32_t a00 = c->bias[oc], a01 = a00, a10 = c->bias[oc + 1], a11 = a10;
        int32_t g;
        for (g = 0; g < groups; ++g) {
            a00 = mac_group(a00, w, col);
            a01 = mac_group(a01, w, col + 4);
            a10 = mac_group(a10, w + 4, col);
            a11 = mac_group(a11, w + 4, col + 4);
            w += 8;
            col += 8;
        }
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
#endif
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
    int32_t out_w, out_c, n_pixels, k4, pixel, oy, ox;
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
    rows.flags = requant[0];
    rows.requant = requant + 1;
    rows.out_c = out_c;
    rows.groups = k4 / 4;
    rows.output_offset = p.output_offset;
    rows.act_min = p.act_min;
    rows.act_max = p.act_max;

    if (p.k_h == 1 && p.k_w == 1 && p.stride_h == 1 && p.stride_w == 1 && p.pad_top == 0
        && p.pad_left == 0 && p.in_c % 4 == 0) {
        /* 1x1 convolution (and fully connected): each pixel's column is its
         * own channels, already contiguous. */
        const int32_t in_c = p.in_c;
        for (pixel = 0; pixel + 1 < n_pixels; pixel += 2) {
            expand_pair(cols, input + pixel * in_c, in_c / 4);
            rows_two_pixels(&rows, cols, output + pixel * out_c);
        }
        if (pixel < n_pixels) {
            expand(cols, input + pixel * in_c, in_c / 4, 4);
            rows_one_pixel(&rows, 0, cols, 4, output + pixel * out_c);
        }
        return;
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
        rows_one_pixel(&rows, 0, cols, 4, output + pixel * out_c);
    }
}

#else
/* AVR keeps model constants in flash: its kernels are the portable ones. */
typedef int mf_conv2d_s8_fast_unused;
#endif
