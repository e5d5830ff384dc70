/*
 * Host driver for the sparse kernels (tests/test_sparse.py).
 *
 * Reads cases from stdin until EOF; each starts with an int32 op, then
 * (little-endian throughout):
 *
 * op 1, fully connected:
 *   int32 cin, cout, input_offset, output_offset, act_min, act_max,
 *         has_bias, n_deltas, nnz
 *   int8  input[cin], weights[cout * cin]
 *   int32 bias[cout] (only when has_bias), multiplier[cout], shift[cout]
 *   uint8 row_nnz[2 * cout], deltas[n_deltas]
 *   int8  values[nnz]
 *   uint8 bitmap[cout * ((cin + 7) / 8)]
 *   -> cout bytes from each of mf_fully_connected_s8,
 *      mf_sparse_fully_connected_s8 and mf_bitmap_fully_connected_s8.
 *
 * op 2, 1x1 convolution:
 *   int32 in_h, in_w, in_c, out_h, out_w, out_c, stride_h, stride_w,
 *         pad_top, pad_left, input_offset, output_offset, act_min, act_max,
 *         has_bias, n_deltas, nnz
 *   int8  input[in_h * in_w * in_c], weights[out_c * in_c]
 *   int32 bias, multiplier, shift; uint8 row_nnz, deltas; int8 values
 *   -> out_h * out_w * out_c bytes from each of mf_conv2d_s8 and
 *      mf_sparse_conv1x1_s8.
 *
 * Every array is its own exactly sized heap block (NULL when empty) so that
 * AddressSanitizer catches a kernel reading one byte too far.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mf_conv2d_s8.h"
#include "mf_fully_connected_s8.h"
#include "mf_sparse_conv1x1_s8.h"
#include "mf_sparse_fc_s8.h"

static void *read_block(size_t n)
{
    void *p;
    if (n == 0) {
        return NULL;
    }
    p = malloc(n);
    if (p == NULL) {
        fprintf(stderr, "out of memory\n");
        exit(2);
    }
    if (fread(p, 1, n, stdin) != n) {
        fprintf(stderr, "short read\n");
        exit(2);
    }
    return p;
}

static int8_t *output_block(size_t n)
{
    int8_t *p = malloc(n);
    if (p == NULL) {
        fprintf(stderr, "out of memory\n");
        exit(2);
    }
    memset(p, 0x5a, n);
    return p;
}

static void emit(int8_t *out, size_t n)
{
    fwrite(out, 1, n, stdout);
    free(out);
}

static void run_fc(void)
{
    int32_t h[9];
    mf_fully_connected_params p;
    size_t cin, cout;
    int8_t *x, *w, *values, *out;
    int32_t *bias = NULL, *mult, *shift;
    uint8_t *row_nnz, *deltas, *bitmap;

    if (fread(h, sizeof h[0], 9, stdin) != 9) {
        fprintf(stderr, "short read\n");
        exit(2);
    }
    cin = (size_t)h[0];
    cout = (size_t)h[1];
    p.in_features = h[0];
    p.out_features = h[1];
    p.input_offset = h[2];
    p.output_offset = h[3];
    p.act_min = h[4];
    p.act_max = h[5];
    x = read_block(cin);
    w = read_block(cin * cout);
    if (h[6]) {
        bias = read_block(4 * cout);
    }
    mult = read_block(4 * cout);
    shift = read_block(4 * cout);
    row_nnz = read_block(2 * cout);
    deltas = read_block((size_t)h[7]);
    values = read_block((size_t)h[8]);
    bitmap = read_block(cout * ((cin + 7) / 8));

    out = output_block(cout);
    mf_fully_connected_s8(&p, x, w, bias, mult, shift, out);
    emit(out, cout);
    out = output_block(cout);
    mf_sparse_fully_connected_s8(&p, x, row_nnz, deltas, values, bias, mult, shift, out);
    emit(out, cout);
    out = output_block(cout);
    mf_bitmap_fully_connected_s8(&p, x, bitmap, values, bias, mult, shift, out);
    emit(out, cout);

    free(x); free(w); free(bias); free(mult); free(shift);
    free(row_nnz); free(deltas); free(values); free(bitmap);
}

static void run_conv1x1(void)
{
    int32_t h[17];
    mf_conv2d_params p;
    size_t n_in, n_out, cout;
    int8_t *x, *w, *values, *out;
    int32_t *bias = NULL, *mult, *shift;
    uint8_t *row_nnz, *deltas;

    if (fread(h, sizeof h[0], 17, stdin) != 17) {
        fprintf(stderr, "short read\n");
        exit(2);
    }
    memset(&p, 0, sizeof p);
    p.in_h = (uint16_t)h[0];
    p.in_w = (uint16_t)h[1];
    p.in_c = (uint16_t)h[2];
    p.out_h = (uint16_t)h[3];
    p.out_w = (uint16_t)h[4];
    p.out_c = (uint16_t)h[5];
    p.k_h = p.k_w = 1;
    p.stride_h = (uint16_t)h[6];
    p.stride_w = (uint16_t)h[7];
    p.dilation_h = p.dilation_w = 1;
    p.pad_top = (uint16_t)h[8];
    p.pad_left = (uint16_t)h[9];
    p.input_offset = h[10];
    p.output_offset = h[11];
    p.act_min = h[12];
    p.act_max = h[13];
    cout = (size_t)h[5];
    n_in = (size_t)h[0] * (size_t)h[1] * (size_t)h[2];
    n_out = (size_t)h[3] * (size_t)h[4] * cout;
    x = read_block(n_in);
    w = read_block(cout * (size_t)h[2]);
    if (h[14]) {
        bias = read_block(4 * cout);
    }
    mult = read_block(4 * cout);
    shift = read_block(4 * cout);
    row_nnz = read_block(2 * cout);
    deltas = read_block((size_t)h[15]);
    values = read_block((size_t)h[16]);

    out = output_block(n_out);
    mf_conv2d_s8(&p, x, w, bias, mult, shift, out);
    emit(out, n_out);
    out = output_block(n_out);
    mf_sparse_conv1x1_s8(&p, x, row_nnz, deltas, values, bias, mult, shift, out);
    emit(out, n_out);

    free(x); free(w); free(bias); free(mult); free(shift);
    free(row_nnz); free(deltas); free(values);
}

int main(void)
{
    int32_t op;
    while (fread(&op, sizeof op, 1, stdin) == 1) {
        if (op == 1) {
            run_fc();
        } else if (op == 2) {
            run_conv1x1();
        } else {
            fprintf(stderr, "unknown op %ld\n", (long)op);
            return 2;
        }
    }
    return 0;
}
