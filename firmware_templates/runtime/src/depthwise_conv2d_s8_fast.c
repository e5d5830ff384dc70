/*
 * Depthwise 2-D convolution with one output channel per input channel, int8:
 * the fast path. See mf_depthwise_conv2d_s8.h, mf_depthwise_conv2d_s8_fast.
 *
 * Channels are contiguous in HWC, so four channels of a tap are one 32-bit
 * load; with the DSP extension, SXTB16 splits them into two words of two
 * int16 lanes and SMLABB / SMLATT multiply-accumulate each lane into its own
 * channel's accumulator. The weights are stored as int16 in the same lane
 * order at code generation time, so they need no unpacking.
 *
 * Every pixel starts from the folded bias (bias + input_offset * sum of the
 * channel's weights) and multiplies raw inputs. A tap in the padding reads
 * the "zero line" instead of the image: a run of the input zero point stored
 * after the biases, for which x + input_offset = 0, so the tap adds
 * input_offset * w - input_offset * w = 0 modulo 2^32, as the portable
 * kernel's skipped tap adds nothing. Border pixels thus run the same code as
 * interior ones; only the nine tap pointers differ.
 *
 * 3x3 kernels (any stride, any dilation: MobileNet, DS-CNN) take an unrolled
 * loop over four channels at a time with the window's nine tap pointers
 * computed once per pixel; other kernel sizes loop over their taps. Four
 * outputs are requantized (mf_rq_small), saturated (SSAT), packed into one
 * word and clamped to the activation range with byte-wise SSUB8/SEL, then
 * stored with one STR.
 *
 * Layouts:
 *   weights  int16, channel by channel, each channel's taps in (ky, kx)
 *            order -- except that four channels c..c+3 with c % 4 == 0 share
 *            one block: per tap, their four weights in the order c, c+2,
 *            c+1, c+3 (SXTB16's lane order). Channel c's weights start at
 *            c * k_h * k_w either way (microfit.codegen.layouts.
 *            pack_depthwise_weights).
 *   bias     int32 [channels] folded bias, then the zero line: channels
 *            bytes of the input zero point, padded to whole words
 *            (layouts.depthwise_biases).
 *   requant  int32 {flags, then per channel multiplier, e, round} (mf_simd.h).
 */
#include "mf_depthwise_conv2d_s8.h"

#include "mf_fixedpoint.h"
#include "mf_platform.h"
#include "mf_simd.h"

#if !defined(__AVR__)

typedef struct {
    const int8_t *input;
    const int16_t *weights;
    const int32_t *bias;  /* folded, [channels] */
    const int8_t *zline;  /* channels bytes of the input zero point */
    const int32_t *rq;    /* {multiplier, e, round} per channel */
    int32_t in_h, in_w, channels, quads, k_h, k_w, dil_h, dil_w;
    int32_t flags, output_offset, act_min, act_max;
    uint32_t lo4, hi4;    /* act_min, act_max in each byte */
} dw_ctx;

typedef struct {
    int32_t a0, a1, a2, a3;
} acc4;

/* The input at tap (ky, kx) of the window whose corner is (iy0, ix0), at
 * channel 0; the zero line when the tap lies in the padding. */
static const int8_t *tap_ptr(const dw_ctx *d, int32_t iy0, int32_t ix0, int32_t ky, int32_t kx)
{
    const int32_t iy = iy0 + ky * d->dil_h, ix = ix0 + kx * d->dil_w;
    if ((uint32_t)iy >= (uint32_t)d->in_h || (uint32_t)ix >= (uint32_t)d->in_w) {
        return d->zline;
    }
    return d->input + (iy * d->in_w + ix) * d->channels;
}

/* One tap of four channels: x at the tap's channel c, w its four weights. */
MF_ALWAYS_INLINE static inline void mac4(acc4 *a, const int8_t *x, const int16_t *w)
{
#if MF_SIMD
    const uint32_t xw = mf_load32(x);
    const uint32_t x02 = mf_sxtb16(xw), x13 = mf_sxtb16_ror8(xw);
    const uint32_t w02 = mf_load32a(w), w13 = mf_load32a(w + 2);
    a->a0 = mf_smlabb(x02, w02, a->a0);
    a->a2 = mf_smlatt(x02, w02, a->a2);
    a->a1 = mf_smlabb(x13, w13, a->a1);
    a->a3 = mf_smlatt(x13, w13, a->a3);
#else
    /* Byte loads (no unaligned word access on Cortex-M0); unsigned sums wrap
     * like the hardware's, as the folded ones must. */
    a->a0 = (int32_t)((uint32_t)a->a0 + (uint32_t)(x[0] * w[0]));
    a->a2 = (int32_t)((uint32_t)a->a2 + (uint32_t)(x[2] * w[1]));
    a->a1 = (int32_t)((uint32_t)a->a1 + (uint32_t)(x[1] * w[2]));
    a->a3 = (int32_t)((uint32_t)a->a3 + (uint32_t)(x[3] * w[3]));
#endif
}

/* One channel, any requantization path (layers without MF_RQ_SMALL, and
 * the channels % 4 of the others): out of line, to keep the hot code small. */
static int8_t finish_slow(const dw_ctx *d, int32_t acc, int32_t c)
{
    return mf_clamp_s8(mf_rq(d->flags, acc, d->rq + 3 * c, d->output_offset), d->act_min,
                       d->act_max);
}

static void store4_slow(const dw_ctx *d, const acc4 *a, int32_t c, int8_t *out)
{
    out[c] = finish_slow(d, a->a0, c);
    out[c + 1] = finish_slow(d, a->a1, c + 1);
    out[c + 2] = finish_slow(d, a->a2, c + 2);
    out[c + 3] = finish_slow(d, a->a3, c + 3);
}

/* Requantize, clamp and store channels c..c+3 (out of line: one copy for
 * every C loop). */
static void store4(const dw_ctx *d, const acc4 *a, int32_t c, int8_t *out)
{
    if (d->flags & MF_RQ_SMALL) {
        const int32_t *rq = d->rq + 3 * c;
        const int32_t r0 = mf_rq_small(a->a0, rq[0], rq[1], rq[2]);
        const int32_t r1 = mf_rq_small(a->a1, rq[3], rq[4], rq[5]);
        const int32_t r2 = mf_rq_small(a->a2, rq[6], rq[7], rq[8]);
        const int32_t r3 = mf_rq_small(a->a3, rq[9], rq[10], rq[11]);
#if MF_SIMD
        const uint32_t v = mf_pack4(mf_ssat8(r0), mf_ssat8(r1), mf_ssat8(r2), mf_ssat8(r3));
        mf_store32(out + c, mf_min8(mf_max8(v, d->lo4), d->hi4));
#else
        out[c] = mf_clamp_s8(r0, d->act_min, d->act_max);
        out[c + 1] = mf_clamp_s8(r1, d->act_min, d->act_max);
        out[c + 2] = mf_clamp_s8(r2, d->act_min, d->act_max);
        out[c + 3] = mf_clamp_s8(r3, d->act_min, d->act_max);
#endif
    } else {
        store4_slow(d, a, c, out);
    }
}

MF_ALWAYS_INLINE static inline void start4(const dw_ctx *d, acc4 *a, int32_t c)
{
    a->a0 = d->bias[c];
    a->a1 = d->bias[c + 1];
    a->a2 = d->bias[c + 2];
    a->a3 = d->bias[c + 3];
}

#if MF_SIMD && defined(__ARM_FEATURE_DSP) && defined(__thumb2__) && defined(__GNUC__) \
    && defined(__OPTIMIZE__)
/* Cortex-M4/M7: the 3x3 loop of layers with MF_RQ_SMALL is assembly. */
#define MF_DW_ASM 1
#endif

#if defined(MF_DW_ASM)
/*
 * A run of pixels of a 3x3 layer, every group of four channels, in one
 * assembly loop. Per group: the biases (LDM), per tap one word of input (the
 * pixel's base address plus the tap's offset plus the channel), one LDRD of
 * weights, two SXTB16, four SMLAxx; then mf_rq_small for each channel, SSAT,
 * three BFI packing the four bytes (they overwrite all but the first byte's
 * sign bits), SSUB8/SEL twice for the activation
 * range, one STR. The compiler's version kept the tap pointers and its loop
 * state on the stack, and a C loop over pixels cost more than a group of
 * channels on narrow layers.
 * Layout of the state it walks (offsets are used in the assembly):
 */
typedef struct {
    const int32_t *offs;   /*  0: the nine taps' byte offsets from base */
    const int16_t *w0;     /*  4: the layer's weights */
    const int32_t *bias0;  /*  8: the layer's folded biases */
    const int32_t *rq0;    /* 12: {multiplier, e, round} of channel 0 */
    uintptr_t base;        /* 16: the first pixel's base address */
    int8_t *out;           /* 20: the first pixel's output, channel 0 */
    uint32_t lo4, hi4;     /* 24, 28 */
    int32_t quads;         /* 32: channels & ~3, >= 4 */
    int32_t step;          /* 36: base step from pixel to pixel */
    int32_t pixels;        /* 40: >= 1 */
    int32_t tail;          /* 44: channels % 4 */
    const int32_t *bias;   /* 48: scratch: the group's biases */
    uintptr_t end;         /* 52: scratch: base + quads */
    const int32_t *rq;     /* 56: scratch */
} dw3_state;

#if defined(MF_SINGLE_ROUNDING)
#define MF_DW_MUL "smmul"
#define MF_DW_NEG(r) ""
#else
#define MF_DW_MUL "smmulr"
#define MF_DW_NEG(r) "sub " r ", " r ", " r ", lsr #31\n\t"
#endif
/* acc r -> mf_rq_small with {m, e, round} in r7, r9, lr, saturated to int8. */
#define MF_DW_RQ(r)                                                           \
    "ldm r8!, {r7, r9, lr}\n\t"                                               \
    "lsl " r ", " r ", #1\n\t" MF_DW_MUL " " r ", " r ", r7\n\t"               \
    MF_DW_NEG(r) "add " r ", " r ", lr\n\t"                                    \
    "asr " r ", " r ", r9\n\t"                                                 \
    "ssat " r ", #8, " r "\n\t"
/* Tap k: the input word at r12 + offs[k], its weights from r6. */
#define MF_DW_TAP(k)                                                          \
    "ldr r7, [r11, #" k "]\n\t"                                               \
    "ldr r1, [r12, r7]\n\t"                                                   \
    "ldrd r8, r9, [r6], #8\n\t"                                               \
    "sxtb16 r10, r1\n\t"                                                      \
    "sxtb16 r1, r1, ror #8\n\t"                                               \
    "smlabb r2, r10, r8, r2\n\t"                                              \
    "smlatt r4, r10, r8, r4\n\t"                                              \
    "smlabb r3, r1, r9, r3\n\t"                                               \
    "smlatt r5, r1, r9, r5\n\t"

static void run3x3_asm(dw3_state *st)
{
    register dw3_state *s0 __asm("r0") = st;
    __asm volatile(
        "ldr r11, [r0, #0]\n\t"
        "1:\n\t" /* a pixel */
        "ldr r6, [r0, #4]\n\t"
        "ldr r1, [r0, #8]\n\t"
        "str r1, [r0, #48]\n\t"
        "ldr r8, [r0, #12]\n\t"
        "ldr r12, [r0, #16]\n\t"
        "ldr r1, [r0, #32]\n\t"
        "add r1, r1, r12\n\t"
        "str r1, [r0, #52]\n\t"
        "2:\n\t" /* a group of four channels */
        "ldr r1, [r0, #48]\n\t"
        "ldm r1!, {r2, r3, r4, r5}\n\t"
        "str r1, [r0, #48]\n\t"
        "str r8, [r0, #56]\n\t"
        MF_DW_TAP("0") MF_DW_TAP("4") MF_DW_TAP("8")
        MF_DW_TAP("12") MF_DW_TAP("16") MF_DW_TAP("20")
        MF_DW_TAP("24") MF_DW_TAP("28") MF_DW_TAP("32")
        "ldr r8, [r0, #56]\n\t"
        MF_DW_RQ("r2") MF_DW_RQ("r3") MF_DW_RQ("r4") MF_DW_RQ("r5")
        "bfi r2, r3, #8, #8\n\t"
        "bfi r2, r4, #16, #8\n\t"
        "bfi r2, r5, #24, #8\n\t"
        "ldrd r9, r10, [r0, #24]\n\t"
        "ssub8 r1, r2, r9\n\t"
        "sel r2, r2, r9\n\t"
        "ssub8 r1, r2, r10\n\t"
        "sel r2, r10, r2\n\t"
        "ldr r1, [r0, #20]\n\t"
        "str r2, [r1], #4\n\t"
        "str r1, [r0, #20]\n\t"
        "add r12, r12, #4\n\t"
        "ldr r1, [r0, #52]\n\t"
        "cmp r12, r1\n\t" /* equality: addresses may have bit 31 set */
        "bne 2b\n\t"
        /* next pixel: out skips the channels % 4 that C computes */
        "ldr r1, [r0, #20]\n\t"
        "ldr r2, [r0, #44]\n\t"
        "add r1, r1, r2\n\t"
        "str r1, [r0, #20]\n\t"
        "ldr r1, [r0, #16]\n\t"
        "ldr r2, [r0, #36]\n\t"
        "add r1, r1, r2\n\t"
        "str r1, [r0, #16]\n\t"
        "ldr r1, [r0, #40]\n\t"
        "subs r1, r1, #1\n\t"
        "str r1, [r0, #40]\n\t"
        "bne 1b\n\t"
        : "+r"(s0)
        :
        : "r1", "r2", "r3", "r4", "r5", "r6", "r7", "r8", "r9", "r10", "r11", "r12", "lr",
          "cc", "memory");
}
#endif

#if !defined(MF_DW_ASM)
/* Every whole group of four channels of one pixel of a 3x3 kernel, from
 * the window's nine tap pointers (on Cortex-M4/M7, the assembly loop, or
 * pixel_any for the rare layers without MF_RQ_SMALL, in less code). */
static void pixel3x3(const dw_ctx *d, const int8_t *const *tp, int8_t *out)
{
    const int16_t *w = d->weights;
    int32_t c;
    for (c = 0; c < d->quads; c += 4) {
        acc4 a;
        start4(d, &a, c);
        mac4(&a, tp[0] + c, w);
        mac4(&a, tp[1] + c, w + 4);
        mac4(&a, tp[2] + c, w + 8);
        mac4(&a, tp[3] + c, w + 12);
        mac4(&a, tp[4] + c, w + 16);
        mac4(&a, tp[5] + c, w + 20);
        mac4(&a, tp[6] + c, w + 24);
        mac4(&a, tp[7] + c, w + 28);
        mac4(&a, tp[8] + c, w + 32);
        w += 36;
        store4(d, &a, c, out);
    }
}
#endif

/* Every whole group of four channels of one pixel, any kernel size. */
static void pixel_any(const dw_ctx *d, int32_t iy0, int32_t ix0, int8_t *out)
{
    const int16_t *w = d->weights;
    int32_t c, ky, kx;
    for (c = 0; c < d->quads; c += 4) {
        acc4 a;
        start4(d, &a, c);
        for (ky = 0; ky < d->k_h; ++ky) {
            for (kx = 0; kx < d->k_w; ++kx) {
                mac4(&a, tap_ptr(d, iy0, ix0, ky, kx) + c, w);
                w += 4;
            }
        }
        store4(d, &a, c, out);
    }
}

/* The last channels % 4 channels of one pixel, one at a time. */
static void pixel_tail(const dw_ctx *d, int32_t iy0, int32_t ix0, int8_t *out)
{
    const int32_t taps = d->k_h * d->k_w;
    int32_t c, ky, kx;
    for (c = d->quads; c < d->channels; ++c) {
        const int16_t *w = d->weights + c * taps; /* this channel's taps, in order */
        int32_t acc = d->bias[c];
        for (ky = 0; ky < d->k_h; ++ky) {
            for (kx = 0; kx < d->k_w; ++kx) {
                acc = (int32_t)((uint32_t)acc
                                + (uint32_t)(tap_ptr(d, iy0, ix0, ky, kx)[c] * *w++));
            }
        }
        out[c] = finish_slow(d, acc, c);
    }
}

void mf_depthwise_conv2d_s8_fast(const mf_depthwise_conv2d_params *params,
                                 const int8_t *input,
                                 const int16_t *weights,
                                 const int32_t *bias,
                                 const int32_t *requant,
                                 int8_t *output)
{
    mf_depthwise_conv2d_params p;
    dw_ctx d;
    int32_t oy, ox, t, off[9];
    int is3x3;
#if defined(MF_DW_ASM)
    dw3_state st;
    int32_t border[9];
    int use_asm;
#endif

    MF_LD_PARAMS(&p, params);
    d.input = input;
    d.weights = weights;
    d.bias = bias;
    d.zline = (const int8_t *)(bias + p.in_c);
    d.rq = requant + 1;
    d.flags = requant[0];
    d.in_h = p.in_h;
    d.in_w = p.in_w;
    d.channels = p.in_c;
    d.quads = p.in_c & ~(int32_t)3;
    d.k_h = p.k_h;
    d.k_w = p.k_w;
    d.dil_h = p.dilation_h;
    d.dil_w = p.dilation_w;
    d.output_offset = p.output_offset;
    d.act_min = p.act_min;
    d.act_max = p.act_max;
    d.lo4 = (uint32_t)(uint8_t)p.act_min * 0x01010101u;
    d.hi4 = (uint32_t)(uint8_t)p.act_max * 0x01010101u;
    is3x3 = p.k_h == 3 && p.k_w == 3;
#if defined(MF_DW_ASM)
    st.w0 = weights;
    st.bias0 = bias;
    st.rq0 = d.rq;
    st.lo4 = d.lo4;
    st.hi4 = d.hi4;
    st.quads = d.quads;
    st.step = (int32_t)p.stride_w * d.channels;
    st.tail = d.channels - d.quads;
    use_asm = (d.flags & MF_RQ_SMALL) && d.quads > 0;
#endif
    for (t = 0; t < 9; ++t) {
        off[t] = ((t / 3) * d.dil_h * d.in_w + (t % 3) * d.dil_w) * d.channels;
    }

    for (oy = 0; oy < p.out_h; ++oy) {
        const int32_t iy0 = oy * (int32_t)p.stride_h - (int32_t)p.pad_top;
        const int rows_inside = iy0 >= 0 && iy0 + 2 * d.dil_h < d.in_h;
        ox = 0;
        while (ox < p.out_w) {
            const int32_t ix0 = ox * (int32_t)p.stride_w - (int32_t)p.pad_left;
            const int inside = rows_inside && ix0 >= 0 && ix0 + 2 * d.dil_w < d.in_w;
            int32_t n = 1, i;
#if defined(MF_DW_ASM)
            if (is3x3 && use_asm) {
                if (inside) {
                    /* Every pixel up to the right border at once. */
                    n = (d.in_w - 1 - 2 * d.dil_w - ix0) / (int32_t)p.stride_w + 1;
                    if (n > p.out_w - ox) {
                        n = p.out_w - ox;
                    }
                    st.offs = off;
                    st.base = (uintptr_t)(input + (iy0 * d.in_w + ix0) * d.channels);
                } else {
                    for (t = 0; t < 9; ++t) {
                        border[t] = (int32_t)((uintptr_t)tap_ptr(&d, iy0, ix0, t / 3, t % 3)
                                              - (uintptr_t)input);
                    }
                    st.offs = border;
                    st.base = (uintptr_t)input;
                }
                st.out = output;
                st.pixels = n;
                run3x3_asm(&st);
            }
#else
            if (is3x3) {
                const int8_t *tp[9];
                for (t = 0; t < 9; ++t) {
                    tp[t] = inside ? input + (iy0 * d.in_w + ix0) * d.channels + off[t]
                                   : tap_ptr(&d, iy0, ix0, t / 3, t % 3);
                }
                pixel3x3(&d, tp, output);
            }
#endif
            else {
                pixel_any(&d, iy0, ix0, output);
            }
            for (i = 0; i < n && d.quads < d.channels; ++i) {
                pixel_tail(&d, iy0, ix0 + i * (int32_t)p.stride_w, output + i * d.channels);
            }
            output += n * d.channels;
            ox += n;
        }
    }
}

#else
/* AVR keeps model constants in flash: its kernels are the portable ones. */
typedef int mf_depthwise_conv2d_s8_fast_unused;
#endif
