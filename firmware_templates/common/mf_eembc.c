/*
 * EEMBC / MLPerf Tiny runner commands (see mf_eembc.h and docs/protocol.md).
 *
 * Commands are ASCII words ending in '%', at most 80 characters; every reply
 * line ends in "\r\n" and every command, known or not, ends with "m-ready".
 * The input goes straight into model_input() as `db` commands deliver it, so
 * this mode needs no buffer beyond the 81-byte command line. Results are the
 * dequantized outputs, printed with integer arithmetic only (the firmware
 * has no floating point): scale bits are split into mantissa and exponent.
 */
#include "mf_eembc.h"

#if MF_HARNESS_EEMBC

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "mf_board.h"
#include "mf_hal.h"
#include "model.h"

#define LINE_MAX_LEN 80u

/* Tick rate of mf_hal_ticks(): under QEMU -icount SysTick runs at the board
 * clock (one tick per per_tick instructions of 1 ns); elsewhere a tick is
 * per_tick cycles (or ns) of the counter. */
#ifndef MF_TICK_HZ
#if MF_COUNTER_KIND == 1
#define MF_TICK_HZ ((uint64_t)MF_CLOCK_HZ)
#else
#define MF_TICK_HZ ((uint64_t)MF_CLOCK_HZ / (uint64_t)MF_COUNTER_PER_TICK)
#endif
#endif

static char line[LINE_MAX_LEN + 1u];
static uint32_t expected_bytes;
static uint32_t loaded_bytes;
static uint8_t have_results;
static uint32_t last_ticks;
static uint64_t total_ticks;

static void put_str(const char *s)
{
    while (*s != '\0') {
        mf_hal_putc((uint8_t)*s++);
    }
}

static void put_u64(uint64_t v)
{
    char digits[21];
    int n = 0;
    do {
        digits[n++] = (char)('0' + (int)(v % 10u));
        v /= 10u;
    } while (v != 0u);
    while (n > 0) {
        mf_hal_putc((uint8_t)digits[--n]);
    }
}

static void end_line(void)
{
    put_str("\r\n");
}

/* Microseconds since boot, from the free-running tick counter (which must be
 * read at least once per 2^32 ticks; every command does). */
static uint64_t now_us(void)
{
    const uint32_t now = mf_hal_ticks();
    total_ticks += (uint32_t)(now - last_ticks);
    last_ticks = now;
    return total_ticks * 1000000u / MF_TICK_HZ;
}

static void put_lap(void)
{
    put_str("m-lap-us-");
    put_u64(now_us());
    end_line();
}

/* value = (q - zero_point) * scale, printed with six decimals. */
static void put_dequantized(int32_t q)
{
    const uint32_t bits = (uint32_t)MODEL_OUTPUT_SCALE_BITS;
    const int32_t exponent = (int32_t)((bits >> 23) & 0xFFu);
    const uint64_t mantissa = (uint64_t)((bits & 0x7FFFFFu) | (exponent ? 0x800000u : 0u));
    const int32_t shift = 150 - (exponent ? exponent : 1); /* value = m * 2^-shift */
    int32_t x = q - (int32_t)MODEL_OUTPUT_ZERO_POINT;
    uint64_t micro;
    if (x < 0) {
        mf_hal_putc((uint8_t)'-');
        x = -x;
    }
    micro = (uint64_t)x * mantissa * 1000000u;
    if (shift >= 64) {
        micro = 0;
    } else if (shift > 0) {
        micro = (micro + ((uint64_t)1 << ((shift - 1) & 63))) >> (shift & 63);
    } else {
        micro <<= (-shift) & 63; /* scales >= 2^23 never occur in practice */
    }
    put_u64(micro / 1000000u);
    mf_hal_putc((uint8_t)'.');
    {
        uint32_t frac = (uint32_t)(micro % 1000000u);
        uint32_t div = 100000u;
        while (div != 0u) {
            mf_hal_putc((uint8_t)('0' + (frac / div) % 10u));
            div /= 10u;
        }
    }
}

static void put_results(void)
{
    const int8_t *out = model_output();
    uint32_t i;
    put_str("m-results-[");
    for (i = 0; i < (uint32_t)MODEL_OUTPUT_SIZE; ++i) {
        if (i != 0u) {
            mf_hal_putc((uint8_t)',');
        }
        put_dequantized(out[i]);
    }
    put_str("]");
    end_line();
}

static void put_error(const char *what, const char *arg)
{
    put_str("e-[");
    put_str(what);
    put_str(arg);
    put_str("]");
    end_line();
}

/* Parse a decimal word; returns 0 when it is not one. */
static int parse_u32(const char *s, uint32_t *out)
{
    uint32_t v = 0;
    if (*s == '\0') {
        return 0;
    }
    for (; *s != '\0'; ++s) {
        if (*s < '0' || *s > '9' || v > 429496728u) {
            return 0;
        }
        v = v * 10u + (uint32_t)(*s - '0');
    }
    *out = v;
    return 1;
}

static int hex_value(char c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }
    if (c >= 'A' && c <= 'F') {
        return c - 'A' + 10;
    }
    return -1;
}

static void cmd_db(char **words, int n)
{
    uint8_t *input = (uint8_t *)model_input();
    if (n >= 3 && strcmp(words[1], "load") == 0) {
        uint32_t count;
        if (!parse_u32(words[2], &count) || count > (uint32_t)MODEL_INPUT_SIZE) {
            put_error("db load: byte count must be 1..input size, got ", words[2]);
            return;
        }
        expected_bytes = count;
        loaded_bytes = 0;
        put_str("m-[Expecting ");
        put_u64(count);
        put_str(" bytes]");
        end_line();
    } else if (n >= 2 && strcmp(words[1], "print") == 0) {
        uint32_t i;
        put_str("m-buffer-");
        for (i = 0; i < loaded_bytes; ++i) {
            static const char hex[] = "0123456789abcdef";
            mf_hal_putc((uint8_t)hex[input[i] >> 4]);
            mf_hal_putc((uint8_t)hex[input[i] & 0xFu]);
        }
        end_line();
    } else if (n >= 2) {
        const char *h = words[1];
        size_t len = strlen(h);
        size_t i;
        if (len % 2u != 0u || loaded_bytes + len / 2u > expected_bytes) {
            put_error("db: odd hex digits or more bytes than announced: ", h);
            return;
        }
        for (i = 0; i < len; i += 2u) {
            const int hi = hex_value(h[i]);
            const int lo = hex_value(h[i + 1u]);
            if (hi < 0 || lo < 0) {
                put_error("db: not hex: ", h);
                return;
            }
        }
        for (i = 0; i < len; i += 2u) {
            input[loaded_bytes++] = (uint8_t)(hex_value(h[i]) * 16 + hex_value(h[i + 1u]));
        }
        if (loaded_bytes == expected_bytes) {
            put_str("m-load-done");
            end_line();
        }
    } else {
        put_error("Unknown command: ", words[0]);
    }
}

static void cmd_infer(char **words, int n)
{
    uint32_t runs = 1;
    uint32_t warmup = 10;
    uint32_t i;
    if ((n >= 2 && !parse_u32(words[1], &runs)) || (n >= 3 && !parse_u32(words[2], &warmup))) {
        put_error("infer: expected infer N W, got ", words[1]);
        return;
    }
    put_str("m-warmup-start-");
    put_u64(warmup);
    end_line();
    for (i = 0; i < warmup; ++i) {
        model_invoke();
    }
    put_str("m-warmup-done");
    end_line();
    put_str("m-infer-start-");
    put_u64(runs);
    end_line();
    put_lap();
    for (i = 0; i < runs; ++i) {
        model_invoke();
    }
    put_lap();
    put_str("m-infer-done");
    end_line();
    have_results = 1;
    put_results();
}

static void handle_line(void)
{
    char *words[8];
    int n = 0;
    char *p = line;
    while (*p != '\0' && n < 8) {
        while (*p == ' ') {
            *p++ = '\0';
        }
        if (*p == '\0') {
            break;
        }
        words[n++] = p;
        while (*p != '\0' && *p != ' ') {
            ++p;
        }
    }
    if (n == 0) {
        /* an empty command still gets its m-ready */
    } else if (strcmp(words[0], "name") == 0) {
        put_str("m-name-dut-[" MF_BOARD_NAME "]");
        end_line();
    } else if (strcmp(words[0], "profile") == 0) {
        put_str("m-profile-[ulp-mlperf]");
        end_line();
        put_str("m-model-[" MF_EEMBC_MODEL_ID "]");
        end_line();
    } else if (strcmp(words[0], "timestamp") == 0) {
        put_lap();
    } else if (strcmp(words[0], "db") == 0) {
        cmd_db(words, n);
    } else if (strcmp(words[0], "infer") == 0) {
        cmd_infer(words, n);
    } else if (strcmp(words[0], "results") == 0) {
        if (have_results) {
            put_results();
        } else {
            put_error("results: no inference yet", "");
        }
    } else {
        put_error("Unknown command: ", words[0]);
    }
    put_str("m-ready");
    end_line();
}

void mf_eembc_run(void)
{
    size_t len = 0;
    uint8_t overlong = 0;
    last_ticks = mf_hal_ticks();
    put_str("m-timestamp-mode-performance");
    end_line();
    put_lap();
    put_str("m-init-done");
    end_line();
    put_str("m-ready");
    end_line();
    for (;;) {
        const char c = (char)mf_hal_getc();
        if (c == '%') {
            line[len] = '\0';
            if (overlong) {
                put_error("Command longer than 80 characters", "");
                put_str("m-ready");
                end_line();
            } else {
                handle_line();
            }
            len = 0;
            overlong = 0;
        } else if (c == '\r' || c == '\n' || c == '\0') {
            /* the runner sends none; a terminal user might */
        } else if (len < LINE_MAX_LEN) {
            line[len++] = c;
        } else {
            overlong = 1;
        }
    }
}

#else

/* Not built in EEMBC mode: keep the translation unit non-empty. */
typedef int mf_eembc_unused;

#endif /* MF_HARNESS_EEMBC */
