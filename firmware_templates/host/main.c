/*
 * Host build of a generated model, for tests and for debugging on a PC.
 *
 *   model_host INPUTS.bin OUTPUTS.bin
 *
 * INPUTS.bin holds N inputs of MODEL_INPUT_SIZE int8 bytes back to back;
 * OUTPUTS.bin receives the N outputs of MODEL_OUTPUT_SIZE bytes each. The
 * tests build this with AddressSanitizer and UndefinedBehaviorSanitizer and
 * compare every byte with the numpy reference.
 */
#include <stdio.h>
#include <string.h>

#include "model.h"

int main(int argc, char **argv)
{
    FILE *in;
    FILE *out;
    long n = 0;
    if (argc != 3) {
        fprintf(stderr, "usage: %s INPUTS.bin OUTPUTS.bin\n", argv[0]);
        return 2;
    }
    in = fopen(argv[1], "rb");
    out = fopen(argv[2], "wb");
    if (in == NULL || out == NULL) {
        fprintf(stderr, "cannot open %s or %s\n", argv[1], argv[2]);
        return 2;
    }
    for (;;) {
        size_t got = fread(model_input(), 1, MODEL_INPUT_SIZE, in);
        if (got == 0) {
            break;
        }
        if (got != MODEL_INPUT_SIZE) {
            fprintf(stderr, "input %ld is truncated: %u of %u bytes\n", n, (unsigned)got,
                    (unsigned)MODEL_INPUT_SIZE);
            return 1;
        }
        model_invoke();
        if (fwrite(model_output(), 1, MODEL_OUTPUT_SIZE, out) != MODEL_OUTPUT_SIZE) {
            fprintf(stderr, "write failed\n");
            return 1;
        }
        n++;
    }
    fclose(in);
    fclose(out);
    fprintf(stderr, "%ld inferences\n", n);
    return 0;
}
