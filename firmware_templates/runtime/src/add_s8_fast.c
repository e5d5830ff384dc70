/*
 * Element-wise int8 addition, the fast path. See mf_add_s8.h, mf_add_s8_fast.
 *
 * Each input's rescaling, mf_requantize((x + offset) * 2^left_shift, ...),
 * depends on one int8 value only: code generation tabulates both (256 int32
 * each, microfit.codegen.layouts.add_tables), so an element costs two table
 * loads, an add and one requantization.
 */
#include "mf_add_s8.h"

#include "mf_fixedpoint.h"
#include "mf_platform.h"
#include "mf_simd.h"

#if !defined(__AVR__)

void mf_add_s8_fast(const mf_add_params *params,
                    const int8_t *in1,
                    const int8_t *in2,
                    const int32_t *tables,
                    int8_t *output)
{
    mf_add_params p;
    const int32_t *t1 = tables + 128; /* indexed by the int8 value */
    const int32_t *t2 = tables + 256 + 128;
    int32_t i, n;

    MF_LD_PARAMS(&p, params);
    n = p.size;
    if (p.output_shift <= -2 && p.output_shift >= -30) {
        /* mf_rq_fast with round = 2^(e-1) alone; the offset is added after
         * the shift, so any e up to 30 stays within int32. */
        const int32_t e = -p.output_shift;
        const int32_t round = (int32_t)1 << (e - 1);
        for (i = 0; i < n; ++i) {
            const int32_t sum = t1[in1[i]] + t2[in2[i]];
            const int32_t v = mf_rq_fast(sum, p.output_multiplier, e, round);
            output[i] = mf_clamp_s8(v + p.output_offset, p.act_min, p.act_max);
        }
    } else {
        for (i = 0; i < n; ++i) {
            const int32_t sum = t1[in1[i]] + t2[in2[i]];
            const int32_t v = mf_requantize(sum, p.output_multiplier, p.output_shift);
            output[i] = mf_clamp_s8(v + p.output_offset, p.act_min, p.act_max);
        }
    }
}

#else
/* AVR keeps model constants in flash: its kernels are the portable ones. */
typedef int mf_add_s8_fast_unused;
#endif
