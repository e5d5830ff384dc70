/*
 * microfit serial protocol, version 1: the device side. The host side is
 * pipeline/harness/client.py; the specification is docs/protocol.md.
 *
 * The device only ever answers: every request frame gets exactly one reply
 * frame carrying the request's sequence number, so the host can tell a fresh
 * reply from a stale or duplicated one. The host may resend any command after
 * a timeout or a CRC error: all but INVOKE are idempotent, and a resent INVOKE
 * that ran on an input overwritten by the previous run shows it in DONE's
 * input CRC (docs/protocol.md).
 */
#ifndef MF_PROTOCOL_H
#define MF_PROTOCOL_H

#include <stdint.h>

#define MF_PROTOCOL_VERSION 1u

/* Payload bytes per LOAD_INPUT / READ_OUTPUT chunk. */
#ifndef MF_PROTO_MAX_CHUNK
#define MF_PROTO_MAX_CHUNK 64u
#endif

/* Requests (host -> device). */
#define MF_MSG_HELLO        0x01u
#define MF_MSG_LOAD_INPUT   0x02u
#define MF_MSG_INVOKE       0x03u
#define MF_MSG_READ_OUTPUT  0x04u
#define MF_MSG_READ_LAYERS  0x05u
#define MF_MSG_RESET        0x06u
/* Replies (device -> host): request | 0x80, or ERROR. */
#define MF_MSG_INFO         0x81u
#define MF_MSG_ACK          0x82u
#define MF_MSG_DONE         0x83u
#define MF_MSG_OUTPUT       0x84u
#define MF_MSG_LAYERS       0x85u
#define MF_MSG_RESET_DONE   0x86u
#define MF_MSG_ERROR        0xFFu

/* ERROR codes. The first three mean "the request did not arrive intact":
 * the host resends. The others mean the request itself is wrong. */
#define MF_ERR_BAD_CRC         0x01u
#define MF_ERR_BAD_FRAMING     0x02u
#define MF_ERR_FRAME_TOO_LONG  0x03u
#define MF_ERR_UNKNOWN_COMMAND 0x04u
#define MF_ERR_BAD_LENGTH      0x05u
#define MF_ERR_OUT_OF_RANGE    0x06u
/* Sent from a fault handler: the firmware crashed and has stopped. */
#define MF_ERR_DEVICE_FAULT    0x07u

/* Counter values per LAYERS reply (4 bytes each). */
#define MF_PROTO_LAYERS_PER_REPLY (MF_PROTO_MAX_CHUNK / 4u)

/* Reset the decoder and counters; mf_proto_run() calls it. */
void mf_proto_init(void);

/* Handle one received byte; sends a reply when it completes a frame. */
void mf_proto_feed(uint8_t byte);

/* Initialise the protocol state and serve requests forever (or, in a build
 * with -DMF_HARNESS_EEMBC=1, the EEMBC runner's commands: mf_eembc.h). */
void mf_proto_run(void);

/*
 * For fault handlers: answer the request being handled with ERROR
 * DEVICE_FAULT (detail: e.g. the exception number), so the host fails at
 * once with a clear message instead of waiting out its timeouts. Needs only
 * a working mf_hal_putc; sends at most once.
 */
void mf_proto_report_fault(uint16_t detail);

/*
 * Per-layer timing (mf_layer_hooks.h defines MODEL_LAYER_BEGIN/END as calls
 * to these). Each records mf_hal_ticks(); READ_LAYERS reports the
 * differences of the last inference.
 */
void mf_layer_begin(uint16_t layer);
void mf_layer_end(uint16_t layer);

#endif /* MF_PROTOCOL_H */
