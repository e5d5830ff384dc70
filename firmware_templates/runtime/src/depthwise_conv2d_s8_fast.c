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
 * Interior pixels start from the folded bias (bias + input_offset * sum of
 * the channel's weights) and multiply raw inputs; pixels whose window
 * overlaps the padding start from the plain bias, visit only the taps inside
 * the image and add input_offset to each input (SADD16), which is exactly
 * the portable kernel's sum.
 *
 * Layouts:
 *   weights  int16, channel by channel, each channel's taps in (ky, kx)
 *            order -- except that four channels c..c+3 with c % 4 == 0 share
 *            one block: per tap, their four weights in the order c, c+2,
 *            c+1, c+3 (SXTB16's lane order). Channel c's weights start at
 *            c * k_h * k_w either way (microfit.codegen.layouts.
 *            pack_depthwise_weights).
 *   bias     int32 [2][channels]: folded, then plain.
 *   requant  int32 {flags, then per channel multiplier, e, round} (mf_simd.h).
 */
#include "mf_depthwise_conv2d_s8.h"

#include "mf_fixedpoint.h"
#include "mf_platform.h"
#include "mf_simd.h"

#if !defined(__AVR__)

typedef struct {
    int32_t in_w, channels, taps, dil_h, dil_w;
    int32_t ky_lo, ky_hi, kx_lo, kx_hi, k_w;
    int32_t input_offset;
    int32_t output_offset, act_min, act_max;
    int32_t flags;
    const int32_t *requant;
} dw_ctx;

/* Layers without MF_RQ_SMALL: out of line, to keep the hot code small. */
static int8_t finish_slow(const dw_ctx *d, int32_t acc, int32_t c)
{
    return mf_clamp_s8(mf_rq(d->flags, acc, d->requant + 3 * c, d->output_offset), d->act_min,
                       d->act_max);
}

static inline int8_t finish(const dw_ctx *d, int32_t acc, int32_t c)
{
    const int32_t *rq = d->requant + 3 * c;
    if (d->flags & MF_RQ_SMALL) {
        return mf_clamp_s8(mf_rq_small(acc, rq[0], rq[1], rq[2]), d->act_min, d->act_max);
    }
    return finish_slow(d, acc, c);
}

/* Four channels c..c+3 of one output pixel over the taps in [ky_lo, ky_hi) x
 * [kx_lo, kx_hi). `corner` is the input at tap (0, 0) as an index (it may lie
 * in the padding); with add_offset, input_offset is added to every input. */
MF_ALWAYS_INLINE static inline void quad(const dw_ctx *d, const int8_t *input, int32_t corner,
                                         const int16_t *weights, const int32_t *bias, int32_t c,
                                         int add_offset, int8_t *out)
{
    const int32_t row_step = d->dil_h * d->in_w * d->channels;
    const int32_t col_step = d->dil_w * d->channels;
    /* This quad's weights: four int16 per tap, taps in order. */
    const int16_t *wq = weights + c * d->taps;
    int32_t a0 = bias[c], a1 = bias[c + 1], a2 = bias[c + 2], a3 = bias[c + 3];
    int32_t ky, kx;
#if MF_SIMD
    const uint32_t off2 = ((uint32_t)d->input_offset & 0xFFFFu) * 0x00010001u;
#endif
    for (ky = d->ky_lo; ky < d->ky_hi; ++ky) {
        /* Index first: corner may lie in the padding, a pointer there may not. */
        const int8_t *x = input + (corner + ky * row_step + d->kx_lo * col_step + c);
        const int16_t *w = wq + (ky * d->k_w + d->kx_lo) * 4;
        for (kx = d->kx_lo; kx < d->kx_hi; ++kx) {
            const uint32_t xw = mf_load32(x);
#if MF_SIMD
            uint32_t x02 = mf_sxtb16(xw), x13 = mf_sxtb16_ror8(xw);
            const uint32_t w02 = mf_load32a(w), w13 = mf_load32a(w + 2);
            if (add_offset) {
                x02 = mf_sadd16(x02, off2);
                x13 = mf_sadd16(x13, off2);
            }
            a0 = mf_smlabb(x02, w02, a0);
            a2 = mf_smlatt(x02, w02, a2);
            a1 = mf_smlabb(x13, w13, a1);
            a3 = mf_smlatt(x13, w13, a3);
#else
            const int32_t off = add_offset ? d->input_offset : 0;
            /* Unsigned sums: the folded ones wrap like the hardware's. */
            a0 = (int32_t)((uint32_t)a0 + (uint32_t)(((int8_t)(xw & 0xFFu) + off) * w[0]));
            a2 = (int32_t)((uint32_t)a2 + (uint32_t)(((int8_t)((xw >> 16) & 0xFFu) + off) * w[1]));
            a1 = (int32_t)((uint32_t)a1 + (uint32_t)(((int8_t)((xw >> 8) & 0xFFu) + off) * w[2]));
            a3 = (int32_t)((uint32_t)a3 + (uint32_t)(((int8_t)(xw >> 24) + off) * w[3]));
#endif
            x += col_step;
            w += 4;
        }
    }
    out[c] = finish(d, a0, c);
    out[c + 1] = finish(d, a1, c + 1);
    out[c + 2] = finish(d, a2, c + 2);
    out[c + 3] = finish(d, a3, c + 3);
}

/* One channel (the last channels % 4), plainly. */
static void single(const dw_ctx *d, const int8_t *input, int32_t corner, const int16_t *weights,
                   const int32_t *bias, int32_t c, int add_offset, int8_t *out)
{
    const int32_t off = add_offset ? d->input_offset : 0;
    const int16_t *wc = weights + c * d->taps; /* this channel's taps, in order */
    int32_t acc = bias[c], ky, kx;
    for (ky = d->ky_lo; ky < d->ky_hi; ++ky) {
        for (kx = d->kx_lo; kx < d->kx_hi; ++kx) {
            const int32_t x = input[corner + (ky * d->dil_h * d->in_w + kx * d->dil_w) * d->channels + c];
            acc = (int32_t)((uint32_t)acc + (uint32_t)((x + off) * wc[ky * d->k_w + kx]));
        }
    }
    out[c] = finish(d, acc, c);
}

/* The window's taps inside [0, size): k in [lo, hi) for origin o. */
static void tap_range(int32_t o, int32_t dil, int32_t k, int32_t size, int32_t *lo, int32_t *hi)
{
    int32_t l = o < 0 ? (-o + dil - 1) / dil : 0;
    int32_t h = o >= size ? 0 : (size - 1 - o) / dil + 1;
    if (l > k) {
        l = k;
    }
    if (h > k) {
        h = k;
    }
    *lo = l;
    *hi = h < l ? l : h;
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
    int32_t oy, ox, c, channels, quads;

    MF_LD_PARAMS(&p, params);
    channels = p.in_c;
    quads = channels & ~(int32_t)3;
    d.in_w = p.in_w;
    d.channels = channels;
    d.taps = (int32_t)p.k_h * p.k_w;
    d.dil_h = p.dilation_h;
    d.dil_w = p.dilation_w;
    d.k_w = p.k_w;
    d.input_offset = p.input_offset;
    d.output_offset = p.output_offset;
    d.act_min = p.act_min;
    d.act_max = p.act_max;
    d.flags = requant[0];
    d.requant = requant + 1;

    for (oy = 0; oy < p.out_h; ++oy) {
        const int32_t iy0 = oy * (int32_t)p.stride_h - (int32_t)p.pad_top;
        tap_range(iy0, d.dil_h, p.k_h, p.in_h, &d.ky_lo, &d.ky_hi);
        for (ox = 0; ox < p.out_w; ++ox) {
            const int32_t ix0 = ox * (int32_t)p.stride_w - (int32_t)p.pad_left;
            const int32_t corner = (iy0 * d.in_w + ix0) * channels;
            int interior;
            tap_range(ix0, d.dil_w, p.k_w, p.in_w, &d.kx_lo, &d.kx_hi);
            interior = d.ky_lo == 0 && d.ky_hi == p.k_h && d.kx_lo == 0 && d.kx_hi == p.k_w;
            if (interior) {
                for (c = 0; c < quads; c += 4) {
                    quad(&d, input, corner, weights, bias, c, 0, output);
                }
                for (; c < channels; ++c) {
                    single(&d, input, corner, weights, bias, c, 0, output);
                }
            } else {
                for (c = 0; c < quads; c += 4) {
                    quad(&d, input, corner, weights, bias + channels, c, 1, output);
                }
                for (; c < channels; ++c) {
                    single(&d, input, corner, weights, bias + channels, c, 1, output);
                }
            }
            output += channels;
        }
    }
}

#else
/* AVR keeps model constants in flash: its kernels are the portable ones. */
typedef int mf_depthwise_conv2d_s8_fast_unused;
#endif
