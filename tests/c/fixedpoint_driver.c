/*
 * Test driver for mf_fixedpoint.h: reads (x, multiplier, shift) int32
 * triples, little-endian, from stdin until EOF and writes
 * mf_requantize(x, multiplier, shift) as one little-endian int32 each.
 * MF_SINGLE_ROUNDING at compile time selects the rounding mode.
 */
#include <stdint.h>
#include <stdio.h>

#include "mf_fixedpoint.h"

static int32_t load(const unsigned char *b)
{
    return (int32_t)((uint32_t)b[0] | ((uint32_t)b[1] << 8) | ((uint32_t)b[2] << 16) | ((uint32_t)b[3] << 24));
}

int main(void)
{
    unsigned char in[12];
    size_t n;
    while ((n = fread(in, 1, sizeof in, stdin)) == sizeof in) {
        const uint32_t r = (uint32_t)mf_requantize(load(in), load(in + 4), load(in + 8));
        unsigned char out[4];
        out[0] = (unsigned char)(r & 0xFFu);
        out[1] = (unsigned char)((r >> 8) & 0xFFu);
        out[2] = (unsigned char)((r >> 16) & 0xFFu);
        out[3] = (unsigned char)((r >> 24) & 0xFFu);
        if (fwrite(out, 1, sizeof out, stdout) != sizeof out) {
            return 3;
        }
    }
    if (n != 0) {
        fprintf(stderr, "fixedpoint_driver: truncated input\n");
        return 2;
    }
    return 0;
}
