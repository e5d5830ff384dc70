/*
 * libFuzzer target for the device's serial code (firmware_templates/common).
 *
 * Two properties, chosen by the first input byte:
 *
 *  - even: the rest is a byte stream arriving on the UART. The protocol must
 *    not crash, read or write out of bounds, or hit undefined behaviour
 *    (ASan + UBSan watch), and every byte it sends must form well-made
 *    replies: COBS that decodes, no longer than MF_FRAME_MAX, a valid CRC,
 *    and at most one reply per delimiter received (the device only answers).
 *  - odd: the rest is a frame body. COBS-encoding it with mf_cobs_send and
 *    decoding the result with mf_rx_feed must give the same bytes back.
 *
 * Any violation aborts, which libFuzzer reports as a crash with the input.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "mf_frame.h"
#include "mf_hal.h"
#include "mf_protocol.h"

#define OUT_CAP 65536u

static uint8_t out[OUT_CAP];
static size_t out_len;

void mf_hal_init(void)
{
}

void mf_hal_putc(uint8_t byte)
{
    if (out_len < OUT_CAP) {
        out[out_len++] = byte;
    }
}

uint8_t mf_hal_getc(void)
{
    abort(); /* never called: the fuzzer feeds bytes with mf_proto_feed */
}

static uint32_t fake_ticks;

void mf_hal_ticks_restart(void)
{
    fake_ticks = 0;
}

uint32_t mf_hal_ticks(void)
{
    return fake_ticks += 13u;
}

uint32_t mf_hal_ticks_to_counter(uint32_t ticks)
{
    return ticks;
}

/* Decode one reply with the device's own decoder and check its CRC. */
static void check_reply(const uint8_t *wire, size_t len)
{
    uint8_t buf[MF_FRAME_MAX];
    mf_rx rx;
    mf_rx_status status = MF_RX_PENDING;
    size_t i;
    mf_rx_init(&rx, buf, (uint8_t)sizeof buf);
    for (i = 0; i < len; ++i) {
        status = mf_rx_feed(&rx, wire[i]);
        if (status != MF_RX_PENDING && i + 1 != len) {
            abort(); /* a reply ended early */
        }
    }
    if (status != MF_RX_FRAME || rx.len < MF_FRAME_OVERHEAD) {
        abort();
    }
    if (mf_crc16(buf, (size_t)rx.len - 2u) !=
        (uint16_t)(buf[rx.len - 2u] | ((uint16_t)buf[rx.len - 1u] << 8))) {
        abort();
    }
    if ((buf[0] & 0x80u) == 0u) {
        abort(); /* replies are request | 0x80 or ERROR (0xFF) */
    }
}

static void fuzz_stream(const uint8_t *data, size_t size)
{
    size_t delimiters = 0;
    size_t replies = 0;
    size_t i;
    size_t start = 0;
    out_len = 0;
    mf_proto_init();
    for (i = 0; i < size; ++i) {
        if (data[i] == 0u) {
            delimiters++;
        }
        mf_proto_feed(data[i]);
    }
    for (i = 0; i < out_len; ++i) {
        if (out[i] == 0u) {
            check_reply(&out[start], i + 1 - start);
            replies++;
            start = i + 1;
        }
    }
    if (start != out_len || replies > delimiters) {
        abort();
    }
}

static void fuzz_cobs(const uint8_t *data, size_t size)
{
    uint8_t buf[MF_FRAME_MAX];
    mf_rx rx;
    mf_rx_status status = MF_RX_PENDING;
    size_t i;
    if (size > MF_FRAME_MAX || size == 0) {
        return;
    }
    out_len = 0;
    mf_cobs_send(data, size);
    mf_rx_init(&rx, buf, (uint8_t)sizeof buf);
    for (i = 0; i < out_len; ++i) {
        if (out[i] == 0u && i + 1 != out_len) {
            abort(); /* COBS output must hold no zero but the delimiter */
        }
        status = mf_rx_feed(&rx, out[i]);
    }
    if (status != MF_RX_FRAME || rx.len != size || memcmp(buf, data, size) != 0) {
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0) {
        return 0;
    }
    if (data[0] & 1u) {
        fuzz_cobs(data + 1, size - 1);
    } else {
        fuzz_stream(data + 1, size - 1);
    }
    return 0;
}
