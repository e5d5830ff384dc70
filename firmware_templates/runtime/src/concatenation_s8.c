/*
 * int8 concatenation and slice along one axis: byte copies, as TFLite's int8
 * CONCATENATION and SLICE kernels. See mf_concatenation_s8.h.
 */
#include "mf_concatenation_s8.h"

#include "mf_platform.h"

static void copy_s8(int8_t *dst, const int8_t *src, int32_t n)
{
    int32_t i;

    for (i = 0; i < n; ++i) {
        dst[i] = src[i];
    }
}

void mf_concatenation_s8(const mf_concatenation_params *params,
                         const int8_t *const *inputs,
                         const int32_t *axis_sizes,
                         int8_t *output)
{
    mf_concatenation_params p;
    int32_t o, i;

    MF_LD_PARAMS(&p, params);
    for (o = 0; o < p.outer; ++o) {
        for (i = 0; i < p.num_inputs; ++i) {
            /* Input i's row o: axis_sizes[i] * inner contiguous bytes. */
            const int32_t run = MF_LD_S32(&axis_sizes[i]) * p.inner;
            copy_s8(output, inputs[i] + o * run, run);
            output += run;
        }
    }
}

void mf_slice_s8(const mf_slice_params *params,
                 const int8_t *input,
                 int8_t *output)
{
    mf_slice_params p;
    int32_t o;
    int32_t run, stride;

    MF_LD_PARAMS(&p, params);
    run = p.size * p.inner;
    stride = p.in_axis * p.inner;
    input += p.begin * p.inner;
    for (o = 0; o < p.outer; ++o) {
        copy_s8(output + o * run, input + o * stride, run);
    }
}
