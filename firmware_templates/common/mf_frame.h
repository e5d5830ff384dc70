/*
 * Serial framing shared by every board: CRC-16/CCITT-FALSE and COBS.
 *
 * A frame on the wire is COBS(type, seq, payload..., crc_lo, crc_hi) followed
 * by a 0x00 delimiter. COBS removes every 0x00 from the body, so a receiver
 * that lost sync (garbage, a reset mid-frame) is back in step at the next
 * 0x00. See docs/protocol.md.
 *
 * The decoder works byte by byte into one caller-owned buffer and the encoder
 * writes straight to the UART, so the whole link layer needs no more RAM than
 * the largest decoded frame (MF_FRAME_MAX bytes): important on a 2 KB AVR.
 */
#ifndef MF_FRAME_H
#define MF_FRAME_H

#include <stddef.h>
#include <stdint.h>

/* Largest decoded frame (type + seq + payload + crc). */
#ifndef MF_FRAME_MAX
#define MF_FRAME_MAX 96u
#endif

/* type + seq before the payload, crc after it. */
#define MF_FRAME_OVERHEAD 4u

uint16_t mf_crc16_update(uint16_t crc, uint8_t byte);
uint16_t mf_crc16(const uint8_t *data, size_t len);

/* Outcome of feeding one byte to the decoder. */
typedef enum {
    MF_RX_PENDING = 0,   /* frame not complete yet */
    MF_RX_FRAME,         /* a complete frame is in the buffer (len bytes) */
    MF_RX_EMPTY,         /* a delimiter with nothing before it: ignore */
    MF_RX_MALFORMED,     /* COBS structure broken (truncated block) */
    MF_RX_OVERFLOW       /* frame longer than the buffer; the rest was dropped */
} mf_rx_status;

typedef struct {
    uint8_t *buf;        /* decoded bytes land here */
    uint8_t cap;         /* buffer size */
    uint8_t len;         /* decoded bytes so far */
    uint8_t block_left;  /* data bytes left in the current COBS block */
    uint8_t block_code;  /* code byte of the current block, 0 = none yet */
    uint8_t overflow;    /* set once the frame outgrew the buffer */
    uint8_t restart;     /* the previous call ended a frame: start afresh */
} mf_rx;

void mf_rx_init(mf_rx *rx, uint8_t *buf, uint8_t cap);

/*
 * Feed one received byte. Any outcome but MF_RX_PENDING ends the frame; until
 * the next call rx->buf[0..rx->len) holds what was decoded (the whole frame
 * for MF_RX_FRAME, its first bytes otherwise: enough to echo the sequence
 * number in an error reply).
 */
mf_rx_status mf_rx_feed(mf_rx *rx, uint8_t byte);

/* COBS-encode `len` bytes to the UART, then the 0x00 delimiter. */
void mf_cobs_send(const uint8_t *data, size_t len);

#endif /* MF_FRAME_H */
