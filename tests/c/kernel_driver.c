/*
 * Test driver: runs runtime kernels on cases streamed from pytest.
 *
 * stdin, little-endian int32 words, one record per case until EOF:
 *   op, n_params, params[n_params] (the params struct fields in order),
 *   n_arrays, then per array: n_bytes (-1 = NULL pointer) and the bytes,
 *   out_bytes.
 * stdout: the out_bytes output bytes of each case, in order.
 *
 * Every array gets its own exactly sized heap block, so AddressSanitizer
 * reports any read or write one byte outside what the kernel was given.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mf_runtime.h"

enum { OP_CONV2D = 1, OP_DWCONV2D = 2, OP_FC = 3, OP_MAXPOOL = 4, OP_AVGPOOL = 5, OP_ADD = 6,
       OP_ADD_IN_PLACE = 7 /* add with output == in1 */, OP_SOFTMAX = 8,
       OP_CONV2D_FAST = 9 /* conv params + expected scratch bytes; fast-path layouts */,
       OP_ADD_FAST = 10, OP_ADD_FAST_IN_PLACE = 11 /* add params; in1, in2, tables */,
       OP_DWCONV2D_FAST = 12 /* depthwise params; fast-path layouts */,
       OP_CONV2D_AVR = 13 /* conv params + group; folded bias */ };
enum { MAX_PARAMS = 32, MAX_ARRAYS = 8 };

static void die(const char *msg)
{
    fprintf(stderr, "kernel_driver: %s\n", msg);
    exit(2);
}

/* 0 at a clean end of input, 1 after reading a word. */
static int read_i32(int32_t *v, int eof_ok)
{
    unsigned char b[4];
    size_t n = fread(b, 1, 4, stdin);
    if (n == 0 && eof_ok && feof(stdin)) {
        return 0;
    }
    if (n != 4) {
        die("truncated input");
    }
    *v = (int32_t)((uint32_t)b[0] | ((uint32_t)b[1] << 8) | ((uint32_t)b[2] << 16) | ((uint32_t)b[3] << 24));
    return 1;
}

static void expect_params(int32_t n, int32_t want)
{
    if (n != want) {
        fprintf(stderr, "kernel_driver: got %ld params, want %ld\n", (long)n, (long)want);
        exit(2);
    }
}

static void expect_arrays(int32_t n, int32_t want)
{
    if (n != want) {
        fprintf(stderr, "kernel_driver: got %ld arrays, want %ld\n", (long)n, (long)want);
        exit(2);
    }
}

/* Scratch memory of exactly `bytes`, filled with a pattern no kernel may rely on. */
static int8_t *scratch_of(int32_t bytes, int32_t expected)
{
    int8_t *s;
    if (bytes != expected) {
        fprintf(stderr, "kernel_driver: C asks for %ld scratch bytes, Python planned %ld\n",
                (long)bytes, (long)expected);
        exit(3);
    }
    s = malloc(bytes > 0 ? (size_t)bytes : 1u);
    if (s == NULL) {
        die("out of memory");
    }
    memset(s, 0xA5, bytes > 0 ? (size_t)bytes : 1u);
    return s;
}

static uint16_t u16(int32_t v)
{
    if (v < 0 || v > 65535) {
        die("uint16 field out of range");
    }
    return (uint16_t)v;
}

int main(void)
{
    int32_t op;
    while (read_i32(&op, 1)) {
        int32_t prm[MAX_PARAMS];
        void *arr[MAX_ARRAYS];
        int32_t n_params, n_arrays, out_bytes, i;
        int8_t *out;

        read_i32(&n_params, 0);
        if (n_params < 0 || n_params > MAX_PARAMS) {
            die("bad n_params");
        }
        for (i = 0; i < n_params; ++i) {
            read_i32(&prm[i], 0);
        }
        read_i32(&n_arrays, 0);
        if (n_arrays < 0 || n_arrays > MAX_ARRAYS) {
            die("bad n_arrays");
        }
        for (i = 0; i < n_arrays; ++i) {
            int32_t nb;
            read_i32(&nb, 0);
            if (nb < 0) {
                arr[i] = NULL;
                continue;
            }
            arr[i] = malloc(nb > 0 ? (size_t)nb : 1u);
            if (arr[i] == NULL) {
                die("out of memory");
            }
            if (nb > 0 && fread(arr[i], 1, (size_t)nb, stdin) != (size_t)nb) {
                die("truncated array");
            }
        }
        read_i32(&out_bytes, 0);
        if (out_bytes < 1) {
            die("bad out_bytes");
        }
        out = malloc((size_t)out_bytes);
        if (out == NULL) {
            die("out of memory");
        }
        /* A kernel that skips an output byte leaves this pattern behind. */
        memset(out, 0x5A, (size_t)out_bytes);

        switch (op) {
        case OP_CONV2D: {
            mf_conv2d_params p;
            expect_params(n_params, 18);
            expect_arrays(n_arrays, 5);
            p.in_h = u16(prm[0]); p.in_w = u16(prm[1]); p.in_c = u16(prm[2]);
            p.out_h = u16(prm[3]); p.out_w = u16(prm[4]); p.out_c = u16(prm[5]);
            p.k_h = u16(prm[6]); p.k_w = u16(prm[7]);
            p.stride_h = u16(prm[8]); p.stride_w = u16(prm[9]);
            p.dilation_h = u16(prm[10]); p.dilation_w = u16(prm[11]);
            p.pad_top = u16(prm[12]); p.pad_left = u16(prm[13]);
            p.input_offset = prm[14]; p.output_offset = prm[15];
            p.act_min = prm[16]; p.act_max = prm[17];
            mf_conv2d_s8(&p, arr[0], arr[1], arr[2], arr[3], arr[4], out);
            break;
        }
        case OP_CONV2D_FAST: {
            mf_conv2d_params p;
            int8_t *scratch;
            expect_params(n_params, 19);
            expect_arrays(n_arrays, 4);
            p.in_h = u16(prm[0]); p.in_w = u16(prm[1]); p.in_c = u16(prm[2]);
            p.out_h = u16(prm[3]); p.out_w = u16(prm[4]); p.out_c = u16(prm[5]);
            p.k_h = u16(prm[6]); p.k_w = u16(prm[7]);
            p.stride_h = u16(prm[8]); p.stride_w = u16(prm[9]);
            p.dilation_h = u16(prm[10]); p.dilation_w = u16(prm[11]);
            p.pad_top = u16(prm[12]); p.pad_left = u16(prm[13]);
            p.input_offset = prm[14]; p.output_offset = prm[15];
            p.act_min = prm[16]; p.act_max = prm[17];
            scratch = scratch_of(mf_conv2d_s8_fast_get_buffer_size(&p), prm[18]);
            mf_conv2d_s8_fast(&p, arr[0], arr[1], arr[2], arr[3], scratch, out);
            free(scratch);
            break;
        }
        case OP_CONV2D_AVR: {
            mf_conv2d_params p;
            expect_params(n_params, 19);
            expect_arrays(n_arrays, 5);
            p.in_h = u16(prm[0]); p.in_w = u16(prm[1]); p.in_c = u16(prm[2]);
            p.out_h = u16(prm[3]); p.out_w = u16(prm[4]); p.out_c = u16(prm[5]);
            p.k_h = u16(prm[6]); p.k_w = u16(prm[7]);
            p.stride_h = u16(prm[8]); p.stride_w = u16(prm[9]);
            p.dilation_h = u16(prm[10]); p.dilation_w = u16(prm[11]);
            p.pad_top = u16(prm[12]); p.pad_left = u16(prm[13]);
            p.input_offset = prm[14]; p.output_offset = prm[15];
            p.act_min = prm[16]; p.act_max = prm[17];
            mf_conv2d_s8_avr(&p, arr[0], arr[1], arr[2], arr[3], arr[4], (int16_t)prm[18], out);
            break;
        }
        case OP_DWCONV2D_FAST: {
            mf_depthwise_conv2d_params p;
            expect_params(n_params, 18);
            expect_arrays(n_arrays, 4);
            p.in_h = u16(prm[0]); p.in_w = u16(prm[1]); p.in_c = u16(prm[2]);
            p.out_h = u16(prm[3]); p.out_w = u16(prm[4]); p.depth_multiplier = u16(prm[5]);
            p.k_h = u16(prm[6]); p.k_w = u16(prm[7]);
            p.stride_h = u16(prm[8]); p.stride_w = u16(prm[9]);
            p.dilation_h = u16(prm[10]); p.dilation_w = u16(prm[11]);
            p.pad_top = u16(prm[12]); p.pad_left = u16(prm[13]);
            p.input_offset = prm[14]; p.output_offset = prm[15];
            p.act_min = prm[16]; p.act_max = prm[17];
            if (p.depth_multiplier != 1) {
                die("the fast depthwise kernel takes depth_multiplier 1 only");
            }
            mf_depthwise_conv2d_s8_fast(&p, arr[0], arr[1], arr[2], arr[3], out);
            break;
        }
        case OP_DWCONV2D: {
            mf_depthwise_conv2d_params p;
            expect_params(n_params, 18);
            expect_arrays(n_arrays, 5);
            p.in_h = u16(prm[0]); p.in_w = u16(prm[1]); p.in_c = u16(prm[2]);
            p.out_h = u16(prm[3]); p.out_w = u16(prm[4]); p.depth_multiplier = u16(prm[5]);
            p.k_h = u16(prm[6]); p.k_w = u16(prm[7]);
            p.stride_h = u16(prm[8]); p.stride_w = u16(prm[9]);
            p.dilation_h = u16(prm[10]); p.dilation_w = u16(prm[11]);
            p.pad_top = u16(prm[12]); p.pad_left = u16(prm[13]);
            p.input_offset = prm[14]; p.output_offset = prm[15];
            p.act_min = prm[16]; p.act_max = prm[17];
            mf_depthwise_conv2d_s8(&p, arr[0], arr[1], arr[2], arr[3], arr[4], out);
            break;
        }
        case OP_FC: {
            mf_fully_connected_params p;
            expect_params(n_params, 6);
            expect_arrays(n_arrays, 5);
            p.in_features = prm[0]; p.out_features = prm[1];
            p.input_offset = prm[2]; p.output_offset = prm[3];
            p.act_min = prm[4]; p.act_max = prm[5];
            mf_fully_connected_s8(&p, arr[0], arr[1], arr[2], arr[3], arr[4], out);
            break;
        }
        case OP_MAXPOOL:
        case OP_AVGPOOL: {
            mf_pool2d_params p;
            expect_params(n_params, 13);
            expect_arrays(n_arrays, 1);
            p.in_h = u16(prm[0]); p.in_w = u16(prm[1]); p.channels = u16(prm[2]);
            p.out_h = u16(prm[3]); p.out_w = u16(prm[4]);
            p.k_h = u16(prm[5]); p.k_w = u16(prm[6]);
            p.stride_h = u16(prm[7]); p.stride_w = u16(prm[8]);
            p.pad_top = u16(prm[9]); p.pad_left = u16(prm[10]);
            p.act_min = prm[11]; p.act_max = prm[12];
            if (op == OP_MAXPOOL) {
                mf_max_pool2d_s8(&p, arr[0], out);
            } else {
                mf_avg_pool2d_s8(&p, arr[0], out);
            }
            break;
        }
        case OP_ADD:
        case OP_ADD_IN_PLACE: {
            mf_add_params p;
            expect_params(n_params, 13);
            expect_arrays(n_arrays, 2);
            p.size = prm[0];
            p.input1_offset = prm[1]; p.input2_offset = prm[2];
            p.left_shift = prm[3];
            p.input1_multiplier = prm[4]; p.input1_shift = prm[5];
            p.input2_multiplier = prm[6]; p.input2_shift = prm[7];
            p.output_multiplier = prm[8]; p.output_shift = prm[9];
            p.output_offset = prm[10];
            p.act_min = prm[11]; p.act_max = prm[12];
            if (op == OP_ADD_IN_PLACE) {
                if (arr[0] == NULL || prm[0] != out_bytes) {
                    die("in-place add needs in1 of out_bytes bytes");
                }
                memcpy(out, arr[0], (size_t)out_bytes);
                mf_add_s8(&p, out, arr[1], out);
            } else {
                mf_add_s8(&p, arr[0], arr[1], out);
            }
            break;
        }
        case OP_ADD_FAST:
        case OP_ADD_FAST_IN_PLACE: {
            mf_add_params p;
            expect_params(n_params, 13);
            expect_arrays(n_arrays, 3);
            memset(&p, 0, sizeof p); /* the fast kernel must not need the input fields */
            p.size = prm[0];
            p.output_multiplier = prm[8]; p.output_shift = prm[9];
            p.output_offset = prm[10];
            p.act_min = prm[11]; p.act_max = prm[12];
            if (op == OP_ADD_FAST_IN_PLACE) {
                if (arr[0] == NULL || prm[0] != out_bytes) {
                    die("in-place add needs in1 of out_bytes bytes");
                }
                memcpy(out, arr[0], (size_t)out_bytes);
                mf_add_s8_fast(&p, out, arr[1], arr[2], out);
            } else {
                mf_add_s8_fast(&p, arr[0], arr[1], arr[2], out);
            }
            break;
        }
        case OP_SOFTMAX: {
            mf_softmax_params p;
            expect_params(n_params, 5);
            expect_arrays(n_arrays, 1);
            p.rows = prm[0]; p.depth = prm[1];
            p.input_multiplier = prm[2]; p.input_left_shift = prm[3]; p.diff_min = prm[4];
            mf_softmax_s8(&p, arr[0], out);
            break;
        }
        default:
            die("unknown op");
        }

        if (fwrite(out, 1, (size_t)out_bytes, stdout) != (size_t)out_bytes) {
            die("write failed");
        }
        free(out);
        for (i = 0; i < n_arrays; ++i) {
            free(arr[i]);
        }
    }
    return 0;
}
