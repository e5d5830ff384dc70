/*
 * Test driver for mf_lut_s8 and mf_pad_s8, on cases streamed from pytest
 * (tests/test_kernels_lut_pad.py).
 *
 * stdin, little-endian int32 words, one record per case until EOF:
 *   OP_LUT (1) or OP_LUT_IN_PLACE (2): size, then 256 table bytes, size input bytes
 *   OP_PAD (3): the 10 mf_pad_params fields in order, then in_h*in_w*in_c input bytes
 * stdout: each case's output bytes, in order.
 *
 * Every array is its own exactly sized heap block, so AddressSanitizer
 * reports any access one byte outside what the kernel was given; outputs
 * start as a pattern, so a skipped byte shows.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mf_lut_s8.h"
#include "mf_pad_s8.h"

enum { OP_LUT = 1, OP_LUT_IN_PLACE = 2, OP_PAD = 3 };

static void die(const char *msg)
{
    fprintf(stderr, "lut_pad_driver: %s\n", msg);
    exit(2);
}

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

static int8_t *read_block(size_t n)
{
    int8_t *p = malloc(n > 0 ? n : 1u);
    if (p == NULL) {
        die("out of memory");
    }
    if (n > 0 && fread(p, 1, n, stdin) != n) {
        die("truncated array");
    }
    return p;
}

static int8_t *out_block(size_t n)
{
    int8_t *p = malloc(n > 0 ? n : 1u);
    if (p == NULL) {
        die("out of memory");
    }
    memset(p, 0x5A, n > 0 ? n : 1u);
    return p;
}

static uint16_t u16(int32_t v)
{
    if (v < 0 || v > 65535) {
        die("uint16 field out of range");
    }
    return (uint16_t)v;
}

static void emit(const int8_t *p, size_t n)
{
    if (n > 0 && fwrite(p, 1, n, stdout) != n) {
        die("write failed");
    }
}

int main(void)
{
    int32_t op;
    while (read_i32(&op, 1)) {
        if (op == OP_LUT || op == OP_LUT_IN_PLACE) {
            mf_lut_params p;
            int8_t *table, *in, *out;
            int32_t size;
            read_i32(&size, 0);
            if (size < 0) {
                die("bad size");
            }
            p.size = size;
            table = read_block(256);
            in = read_block((size_t)size);
            if (op == OP_LUT_IN_PLACE) {
                mf_lut_s8(&p, table, in, in);
                emit(in, (size_t)size);
            } else {
                out = out_block((size_t)size);
                mf_lut_s8(&p, table, in, out);
                emit(out, (size_t)size);
                free(out);
            }
            free(table);
            free(in);
        } else if (op == OP_PAD) {
            mf_pad_params p;
            int32_t f[10];
            int8_t *in, *out;
            size_t in_bytes, out_bytes;
            int i;
            for (i = 0; i < 10; ++i) {
                read_i32(&f[i], 0);
            }
            p.in_h = u16(f[0]); p.in_w = u16(f[1]); p.in_c = u16(f[2]);
            p.pad_top = u16(f[3]); p.pad_bottom = u16(f[4]);
            p.pad_left = u16(f[5]); p.pad_right = u16(f[6]);
            p.pad_front = u16(f[7]); p.pad_back = u16(f[8]);
            p.fill = f[9];
            in_bytes = (size_t)p.in_h * p.in_w * p.in_c;
            out_bytes = ((size_t)p.pad_top + p.in_h + p.pad_bottom) *
                        ((size_t)p.pad_left + p.in_w + p.pad_right) *
                        ((size_t)p.pad_front + p.in_c + p.pad_back);
            in = read_block(in_bytes);
            out = out_block(out_bytes);
            mf_pad_s8(&p, in, out);
            emit(out, out_bytes);
            free(in);
            free(out);
        } else {
            die("unknown op");
        }
    }
    return 0;
}
