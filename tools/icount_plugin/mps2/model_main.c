/*
 * Runs a generated model on the bench inputs (mf_bench_inputs.h, written by
 * microfit.icount.measure_model): for each input, a marker call before and
 * after model_invoke() (the mf_icount plugin counts the instructions in
 * between; model.c may add one pair per layer), then the output bytes in hex
 * on UART0 ("O<hex>"), and "END" when done.
 */
#include <string.h>

#include "mf_baremetal.h"
#include "mf_bench_inputs.h"
#include "model.h"

int main(void)
{
    uint32_t n;
    for (n = 0; n < MF_BENCH_N_INPUTS; ++n) {
        memcpy(model_input(), mf_bench_inputs[n], MODEL_INPUT_SIZE);
        mf_icount_mark();
        model_invoke();
        mf_icount_mark();
        mf_putc('O');
        mf_put_hex(model_output(), MODEL_OUTPUT_SIZE);
        mf_putc('\n');
    }
    mf_puts("END\n");
    return 0;
}
