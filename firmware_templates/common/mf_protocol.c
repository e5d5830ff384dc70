/*
 * microfit serial protocol v1, device side (see docs/protocol.md).
 *
 * One buffer of MF_FRAME_MAX bytes holds the request being decoded and then
 * the reply being built: the request is fully consumed before the reply is
 * written, so two buffers would only waste RAM that a 2 KB board lacks.
 * Input chunks go straight into the model's arena (model_input()), so no
 * input-sized staging buffer exists either.
 */
#include "mf_protocol.h"

#include <stddef.h>
#include <string.h>

#include "mf_board.h"
#include "mf_eembc.h"
#include "mf_frame.h"
#include "mf_hal.h"
#include "model.h"

#ifndef MODEL_ARENA_SIZE
#define MODEL_ARENA_SIZE 0
#endif
#ifndef MODEL_MACS
#define MODEL_MACS 0
#endif

#define NAME_MAX_LEN 32u

/* Copy from the model's constant data (its hash). A generated model keeps
 * model_hash in flash like its weights (MF_CONST: PROGMEM on AVR) and says so
 * with MODEL_HASH_MF_CONST; mf_platform.h then reads it (memcpy_P on AVR). A
 * hand-written model without that define keeps a plain const array. */
#ifndef MF_CONST_MEMCPY
#ifdef MODEL_HASH_MF_CONST
#define MF_CONST_MEMCPY MF_LD_BYTES
#else
#define MF_CONST_MEMCPY memcpy
#endif
#endif

/* How many layers the timing table holds: one per node of a generated
 * model (MODEL_NUM_LAYERS), one for a hand-written model without it. */
#ifndef MF_LAYER_SLOTS
#ifdef MODEL_NUM_LAYERS
#define MF_LAYER_SLOTS MODEL_NUM_LAYERS
#else
#define MF_LAYER_SLOTS 1
#endif
#endif

#if MF_FRAME_MAX < MF_FRAME_OVERHEAD + 4u + MF_PROTO_MAX_CHUNK
#error "MF_FRAME_MAX too small for a full LOAD_INPUT / OUTPUT chunk"
#endif
#if MF_FRAME_MAX < MF_FRAME_OVERHEAD + 53u + NAME_MAX_LEN
#error "MF_FRAME_MAX too small for the INFO reply"
#endif
#if MF_FRAME_MAX < MF_FRAME_OVERHEAD + 6u + 4u * MF_PROTO_LAYERS_PER_REPLY
#error "MF_FRAME_MAX too small for a LAYERS reply"
#endif
#if MF_FRAME_MAX > 255u
#error "MF_FRAME_MAX must fit the decoder's 8-bit length"
#endif

static uint8_t frame[MF_FRAME_MAX];
static mf_rx rx;
/* Invocations since boot: lets the host notice a device reset between the
 * INVOKE and the READ_OUTPUT that belongs to it. */
static uint16_t run_count;
/* The request being handled, for a fault report. */
static uint8_t current_type;
static uint8_t current_seq;
static uint8_t fault_reported;
/* Per-layer ticks of the last inference; layer_count is the highest layer
 * index recorded + 1 (0 when the model has no hooks compiled in). */
static uint32_t layer_ticks[MF_LAYER_SLOTS];
static uint32_t layer_start;
static uint16_t layer_count;

static void put_u16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v & 0xFFu);
    p[1] = (uint8_t)(v >> 8);
}

static void put_u32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v & 0xFFu);
    p[1] = (uint8_t)((v >> 8) & 0xFFu);
    p[2] = (uint8_t)((v >> 16) & 0xFFu);
    p[3] = (uint8_t)(v >> 24);
}

static uint16_t get_u16(const uint8_t *p)
{
    return (uint16_t)((uint16_t)p[0] | ((uint16_t)p[1] << 8));
}

/* The payload is already in frame[2..2+len); add header and CRC, send. */
static void send_reply(uint8_t type, uint8_t seq, uint8_t len)
{
    uint16_t crc;
    frame[0] = type;
    frame[1] = seq;
    crc = mf_crc16(frame, (size_t)len + 2u);
    put_u16(&frame[2u + len], crc);
    mf_cobs_send(frame, (size_t)len + MF_FRAME_OVERHEAD);
}

static void send_error(uint8_t seq, uint8_t code, uint8_t request, uint16_t detail)
{
    frame[2] = code;
    frame[3] = request;
    put_u16(&frame[4], detail);
    send_reply(MF_MSG_ERROR, seq, 4u);
}

static void reply_info(uint8_t seq)
{
    uint8_t *p = &frame[2];
    const char *name = MF_BOARD_NAME;
    size_t name_len = strlen(name);
    if (name_len > NAME_MAX_LEN) {
        name_len = NAME_MAX_LEN;
    }
    p[0] = MF_PROTOCOL_VERSION;
    p[1] = MF_COUNTER_KIND;
    p[2] = MF_PROTO_MAX_CHUNK;
    p[3] = 0u; /* flags, none defined in v1 */
    MF_CONST_MEMCPY(&p[4], model_hash, 8u);
    put_u32(&p[12], (uint32_t)MODEL_INPUT_SIZE);
    put_u32(&p[16], (uint32_t)MODEL_OUTPUT_SIZE);
    put_u32(&p[20], (uint32_t)MODEL_INPUT_SCALE_BITS);
    put_u32(&p[24], (uint32_t)(int32_t)MODEL_INPUT_ZERO_POINT);
    put_u32(&p[28], (uint32_t)MODEL_OUTPUT_SCALE_BITS);
    put_u32(&p[32], (uint32_t)(int32_t)MODEL_OUTPUT_ZERO_POINT);
    put_u32(&p[36], (uint32_t)MF_CLOCK_HZ);
    put_u32(&p[40], (uint32_t)MF_COUNTER_PER_TICK);
    put_u32(&p[44], (uint32_t)MODEL_ARENA_SIZE);
    put_u32(&p[48], (uint32_t)MODEL_MACS);
    p[52] = (uint8_t)name_len;
    memcpy(&p[53], name, name_len);
    send_reply(MF_MSG_INFO, seq, (uint8_t)(53u + name_len));
}

static void handle_load_input(uint8_t seq, const uint8_t *payload, uint8_t len)
{
    uint16_t offset;
    uint8_t count;
    if (len < 3u || len - 2u > MF_PROTO_MAX_CHUNK) {
        send_error(seq, MF_ERR_BAD_LENGTH, MF_MSG_LOAD_INPUT, MF_PROTO_MAX_CHUNK);
        return;
    }
    offset = get_u16(payload);
    count = (uint8_t)(len - 2u);
    if ((uint32_t)offset + count > (uint32_t)MODEL_INPUT_SIZE) {
        send_error(seq, MF_ERR_OUT_OF_RANGE, MF_MSG_LOAD_INPUT, (uint16_t)MODEL_INPUT_SIZE);
        return;
    }
    memcpy((uint8_t *)model_input() + offset, &payload[2], count);
    put_u16(&frame[2], offset);
    frame[4] = count;
    send_reply(MF_MSG_ACK, seq, 3u);
}

void mf_layer_begin(uint16_t layer)
{
    (void)layer;
    layer_start = mf_hal_ticks();
}

void mf_layer_end(uint16_t layer)
{
    const uint32_t now = mf_hal_ticks();
    if (layer < (uint16_t)MF_LAYER_SLOTS) {
        layer_ticks[layer] = now - layer_start;
        if (layer >= layer_count) {
            layer_count = (uint16_t)(layer + 1u);
        }
    }
}

static void handle_invoke(uint8_t seq, uint8_t len)
{
    uint32_t t0;
    uint32_t ticks;
    uint16_t input_crc;
    if (len != 0u) {
        send_error(seq, MF_ERR_BAD_LENGTH, MF_MSG_INVOKE, 0u);
        return;
    }
    /* The CRC of the input actually in the arena lets the host prove that
     * every chunk it sent arrived (and that no reset wiped them). */
    input_crc = mf_crc16((const uint8_t *)model_input(), (size_t)MODEL_INPUT_SIZE);
    mf_hal_ticks_restart();
    t0 = mf_hal_ticks();
    model_invoke();
    ticks = mf_hal_ticks() - t0;
    run_count++;
    put_u32(&frame[2], ticks);
    put_u32(&frame[6], mf_hal_ticks_to_counter(ticks));
    put_u16(&frame[10], input_crc);
    put_u16(&frame[12], run_count);
    /* The output's CRC lets the host check the bytes it reassembles from
     * READ_OUTPUT chunks end to end, beyond each frame's own CRC. */
    put_u16(&frame[14], mf_crc16((const uint8_t *)model_output(), (size_t)MODEL_OUTPUT_SIZE));
    send_reply(MF_MSG_DONE, seq, 14u);
}

static void handle_read_layers(uint8_t seq, const uint8_t *payload, uint8_t len)
{
    uint16_t first;
    uint16_t n;
    uint16_t i;
    if (len != 2u) {
        send_error(seq, MF_ERR_BAD_LENGTH, MF_MSG_READ_LAYERS, 2u);
        return;
    }
    first = get_u16(payload);
    if (first > layer_count || (first == layer_count && layer_count != 0u)) {
        send_error(seq, MF_ERR_OUT_OF_RANGE, MF_MSG_READ_LAYERS, layer_count);
        return;
    }
    n = (uint16_t)(layer_count - first);
    if (n > MF_PROTO_LAYERS_PER_REPLY) {
        n = MF_PROTO_LAYERS_PER_REPLY;
    }
    put_u16(&frame[2], run_count);
    put_u16(&frame[4], layer_count);
    put_u16(&frame[6], first);
    for (i = 0; i < n; ++i) {
        put_u32(&frame[8u + 4u * i], mf_hal_ticks_to_counter(layer_ticks[first + i]));
    }
    send_reply(MF_MSG_LAYERS, seq, (uint8_t)(6u + 4u * n));
}

static void clear_state(void)
{
    uint16_t i;
    run_count = 0;
    layer_count = 0;
    for (i = 0; i < (uint16_t)MF_LAYER_SLOTS; ++i) {
        layer_ticks[i] = 0;
    }
}

static void handle_reset(uint8_t seq, uint8_t len)
{
    if (len != 0u) {
        send_error(seq, MF_ERR_BAD_LENGTH, MF_MSG_RESET, 0u);
        return;
    }
    clear_state();
    memset(model_input(), 0, (size_t)MODEL_INPUT_SIZE);
    send_reply(MF_MSG_RESET_DONE, seq, 0u);
}

static void handle_read_output(uint8_t seq, const uint8_t *payload, uint8_t len)
{
    uint16_t offset;
    uint8_t count;
    if (len != 3u || payload[2] == 0u || payload[2] > MF_PROTO_MAX_CHUNK) {
        send_error(seq, MF_ERR_BAD_LENGTH, MF_MSG_READ_OUTPUT, MF_PROTO_MAX_CHUNK);
        return;
    }
    offset = get_u16(payload);
    count = payload[2];
    if ((uint32_t)offset + count > (uint32_t)MODEL_OUTPUT_SIZE) {
        send_error(seq, MF_ERR_OUT_OF_RANGE, MF_MSG_READ_OUTPUT, (uint16_t)MODEL_OUTPUT_SIZE);
        return;
    }
    put_u16(&frame[2], offset);
    put_u16(&frame[4], run_count);
    memcpy(&frame[6], (const uint8_t *)model_output() + offset, count);
    send_reply(MF_MSG_OUTPUT, seq, (uint8_t)(4u + count));
}

static void handle_frame(uint8_t len)
{
    uint8_t seq;
    uint8_t type;
    uint8_t payload_len;
    if (len < MF_FRAME_OVERHEAD) {
        send_error(len >= 2u ? frame[1] : 0u, MF_ERR_BAD_FRAMING, len >= 1u ? frame[0] : 0u, len);
        return;
    }
    type = frame[0];
    seq = frame[1];
    if (mf_crc16(frame, (size_t)len - 2u) != get_u16(&frame[len - 2u])) {
        send_error(seq, MF_ERR_BAD_CRC, type, 0u);
        return;
    }
    payload_len = (uint8_t)(len - MF_FRAME_OVERHEAD);
    current_type = type;
    current_seq = seq;
    switch (type) {
    case MF_MSG_HELLO:
        reply_info(seq);
        break;
    case MF_MSG_LOAD_INPUT:
        handle_load_input(seq, &frame[2], payload_len);
        break;
    case MF_MSG_INVOKE:
        handle_invoke(seq, payload_len);
        break;
    case MF_MSG_READ_OUTPUT:
        handle_read_output(seq, &frame[2], payload_len);
        break;
    case MF_MSG_READ_LAYERS:
        handle_read_layers(seq, &frame[2], payload_len);
        break;
    case MF_MSG_RESET:
        handle_reset(seq, payload_len);
        break;
    default:
        send_error(seq, MF_ERR_UNKNOWN_COMMAND, type, 0u);
        break;
    }
}

void mf_proto_feed(uint8_t byte)
{
    mf_rx_status status = mf_rx_feed(&rx, byte);
    switch (status) {
    case MF_RX_FRAME:
        handle_frame(rx.len);
        break;
    case MF_RX_MALFORMED:
        send_error(rx.len >= 2u ? frame[1] : 0u, MF_ERR_BAD_FRAMING,
                   rx.len >= 1u ? frame[0] : 0u, rx.len);
        break;
    case MF_RX_OVERFLOW:
        send_error(frame[1], MF_ERR_FRAME_TOO_LONG, frame[0], MF_FRAME_MAX);
        break;
    case MF_RX_PENDING:
    case MF_RX_EMPTY:
    default:
        break;
    }
}

void mf_proto_init(void)
{
    mf_rx_init(&rx, frame, (uint8_t)MF_FRAME_MAX);
    clear_state();
    current_type = 0;
    current_seq = 0;
    fault_reported = 0;
}

void mf_proto_report_fault(uint16_t detail)
{
    if (fault_reported) {
        return;
    }
    fault_reported = 1;
    send_error(current_seq, MF_ERR_DEVICE_FAULT, current_type, detail);
}

void mf_proto_run(void)
{
#if MF_HARNESS_EEMBC
    /* Built for the EEMBC / MLPerf Tiny runner instead (mf_eembc.h). */
    mf_eembc_run();
#else
    mf_proto_init();
    for (;;) {
        mf_proto_feed(mf_hal_getc());
    }
#endif
}
