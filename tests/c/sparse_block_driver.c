/*
 * Host driver for the block-compressed sparse kernels (tests/test_sparse_block.py).
 *
 * Reads cases from stdin until EOF, little-endian:
 *   int32 in_h, in_w, in_c, out_h, out_w, out_c, k_h, k_w, stride_h, stride_w,
 *         dilation_h, dilation_w, pad_top, pad_left, input_offset,
 *         output_offset, act_min, act_max, n_deltas, n_values
 *   int8  input[in_h * in_w * in_c]
 *   uint8 row_nblk[2 * out_c], deltas[n_deltas]
 *   int8  values[n_values]
 *   int32 folded_bias[out_c], requant[1 + 3 * out_c]
 * -> out_h * out_w * out_c bytes from each of mf_block_conv2d_s8 and
 *    mf_block_conv2d_s8_fast, then, when the case is one pixel with a 1x1
 *    kernel (a fully connected layer), out_c bytes of
 *    mf_block_fully_connected_s8.
 *
 * Every array is its own exactly sized heap block (NULL when empty), so
 * AddressSanitizer catches a kernel reading one byte too far; the fast
 * kernel's scratch is exactly mf_block_conv2d_s8_fast_get_buffer_size bytes.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mf_sparse_block_s8.h"

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

int main(void)
{
    int32_t h[20];
    while (fread(h, sizeof h[0], 20, stdin) == 20) {
        mf_conv2d_params p;
        size_t n_out, out_c = (size_t)h[5];
        int8_t *x, *values, *scratch, *out;
        uint8_t *row_nblk, *deltas;
        int32_t *bias, *requant;
        p.in_h = (uint16_t)h[0];
        p.in_w = (uint16_t)h[1];
        p.in_c = (uint16_t)h[2];
        p.out_h = (uint16_t)h[3];
        p.out_w = (uint16_t)h[4];
        p.out_c = (uint16_t)h[5];
        p.k_h = (uint16_t)h[6];
        p.k_w = (uint16_t)h[7];
        p.stride_h = (uint16_t)h[8];
        p.stride_w = (uint16_t)h[9];
        p.dilation_h = (uint16_t)h[10];
        p.dilation_w = (uint16_t)h[11];
        p.pad_top = (uint16_t)h[12];
        p.pad_left = (uint16_t)h[13];
        p.input_offset = h[14];
        p.output_offset = h[15];
        p.act_min = h[16];
        p.act_max = h[17];
        n_out = (size_t)p.out_h * p.out_w * out_c;
        x = read_block((size_t)p.in_h * p.in_w * p.in_c);
        row_nblk = read_block(2 * out_c);
        deltas = read_block((size_t)h[18]);
        values = read_block((size_t)h[19]);
        bias = read_block(4 * out_c);
        requant = read_block(4 * (1 + 3 * out_c));

        out = output_block(n_out);
        mf_block_conv2d_s8(&p, x, row_nblk, deltas, values, bias, requant, out);
        emit(out, n_out);

        scratch = malloc((size_t)mf_block_conv2d_s8_fast_get_buffer_size(&p));
        out = output_block(n_out);
        mf_block_conv2d_s8_fast(&p, x, row_nblk, deltas, values, bias, requant, scratch, out);
        emit(out, n_out);
        free(scratch);

        if (p.in_h == 1 && p.in_w == 1 && p.out_h == 1 && p.out_w == 1 && p.k_h == 1
            && p.k_w == 1) {
            mf_fully_connected_params f;
            f.in_features = p.in_c;
            f.out_features = p.out_c;
            f.input_offset = p.input_offset;
            f.output_offset = p.output_offset;
            f.act_min = p.act_min;
            f.act_max = p.act_max;
            out = output_block(out_c);
            mf_block_fully_connected_s8(&f, x, row_nblk, deltas, values, bias, requant, out);
            emit(out, out_c);
        }
        free(x);
        free(row_nblk);
        free(deltas);
        free(values);
        free(bias);
        free(requant);
    }
    return 0;
}
