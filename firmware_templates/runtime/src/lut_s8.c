/*
 * int8 table lookup (LOGISTIC, TANH). See mf_lut_s8.h.
 */
#include "mf_lut_s8.h"

#include "mf_platform.h"

void mf_lut_s8(const mf_lut_params *params,
               const int8_t *table,
               const int8_t *input,
               int8_t *output)
{
    mf_lut_params p;
    int32_t i;
    MF_LD_PARAMS(&p, params);
    /* Shift the table pointer once so the loop indexes it with the raw input. */
    table += 128;
    for (i = 0; i < p.size; ++i) {
        output[i] = MF_LD_S8(table + input[i]);
    }
}
