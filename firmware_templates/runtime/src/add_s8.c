/*
 * Element-wise int8 addition with rescaling, as TFLite's reference int8 ADD.
 * See mf_add_s8.h.
 */
#include "mf_add_s8.h"

#include "mf_fixedpoint.h"
#include "mf_platform.h"

void mf_add_s8(const mf_add_params *params,
               const int8_t *in1,
               const int8_t *in2,
               int8_t *output)
{
    mf_add_params p;
    int32_t scale, i;

    MF_LD_PARAMS(&p, params);
    /* Multiply rather than shift: a left shift of a negative value is
     * undefined in C99, and (in + offset) * 2^20 fits in int32. */
    scale = (int32_t)1 << p.left_shift;

    for (i = 0; i < p.size; ++i) {
        const int32_t a = (in1[i] + p.input1_offset) * scale;
        const int32_t b = (in2[i] + p.input2_offset) * scale;
        const int32_t sum = mf_requantize(a, p.input1_multiplier, p.input1_shift)
                          + mf_requantize(b, p.input2_multiplier, p.input2_shift);
        const int32_t out = mf_requantize(sum, p.output_multiplier, p.output_shift)
                          + p.output_offset;
        output[i] = mf_clamp_s8(out, p.act_min, p.act_max);
    }
}
