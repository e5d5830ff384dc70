/*
 * Test driver for mf_concatenation_s8 and mf_slice_s8 (tests/test_kernels_concat.py).
 *
 * stdin, little-endian int32 words unless noted:
 *   n_cases, then per case:
 *   1 (concat): outer, inner, num_inputs, axis_sizes[num_inputs],
 *               then each input's outer * axis_sizes[i] * inner int8 bytes
 *   2 (slice):  outer, in_axis, begin, size, inner, then outer * in_axis * inner bytes
 * stdout: each case's output bytes, in order.
 *
 * Every array is its own exactly sized heap block, so ASan catches a kernel
 * that reads or writes one byte too far.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "mf_concatenation_s8.h"

static int32_t read_i32(void)
{
    uint8_t b[4];
    if (fread(b, 1, 4, stdin) != 4) {
        fprintf(stderr, "concat_driver: truncated input\n");
        exit(2);
    }
    return (int32_t)((uint32_t)b[0] | ((uint32_t)b[1] << 8) | ((uint32_t)b[2] << 16)
                     | ((uint32_t)b[3] << 24));
}

static int8_t *read_bytes(int32_t n)
{
    int8_t *p = (int8_t *)malloc((size_t)(n > 0 ? n : 1));
    if (p == NULL || (n > 0 && fread(p, 1, (size_t)n, stdin) != (size_t)n)) {
        fprintf(stderr, "concat_driver: cannot read %ld bytes\n", (long)n);
        exit(2);
    }
    return p;
}

static void write_out(int8_t *out, int32_t n)
{
    if (fwrite(out, 1, (size_t)n, stdout) != (size_t)n) {
        exit(3);
    }
    free(out);
}

int main(void)
{
    int32_t n_cases = read_i32();
    int32_t c, i;

    for (c = 0; c < n_cases; ++c) {
        int32_t op = read_i32();
        if (op == 1) {
            mf_concatenation_params p;
            int32_t *sizes;
            int8_t **inputs;
            int8_t *out;
            int32_t total = 0;
            p.outer = read_i32();
            p.inner = read_i32();
            p.num_inputs = read_i32();
            sizes = (int32_t *)malloc(sizeof *sizes * (size_t)p.num_inputs);
            inputs = (int8_t **)malloc(sizeof *inputs * (size_t)p.num_inputs);
            if (sizes == NULL || inputs == NULL) {
                return 2;
            }
            for (i = 0; i < p.num_inputs; ++i) {
                sizes[i] = read_i32();
                total += sizes[i];
            }
            for (i = 0; i < p.num_inputs; ++i) {
                inputs[i] = read_bytes(p.outer * sizes[i] * p.inner);
            }
            out = (int8_t *)malloc((size_t)(p.outer * total * p.inner));
            if (out == NULL) {
                return 2;
            }
            mf_concatenation_s8(&p, (const int8_t *const *)inputs, sizes, out);
            write_out(out, p.outer * total * p.inner);
            for (i = 0; i < p.num_inputs; ++i) {
                free(inputs[i]);
            }
            free(inputs);
            free(sizes);
        } else if (op == 2) {
            mf_slice_params p;
            int8_t *in, *out;
            p.outer = read_i32();
            p.in_axis = read_i32();
            p.begin = read_i32();
            p.size = read_i32();
            p.inner = read_i32();
            in = read_bytes(p.outer * p.in_axis * p.inner);
            out = (int8_t *)malloc((size_t)(p.outer * p.size * p.inner));
            if (out == NULL) {
                return 2;
            }
            mf_slice_s8(&p, in, out);
            write_out(out, p.outer * p.size * p.inner);
            free(in);
        } else {
            fprintf(stderr, "concat_driver: unknown op %ld\n", (long)op);
            return 2;
        }
    }
    return 0;
}
