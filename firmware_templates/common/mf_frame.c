/*
 * CRC-16/CCITT-FALSE and COBS for the serial protocol. Bitwise CRC instead of
 * a 512-byte table: a few hundred cycles per frame cost nothing next to the
 * UART, and flash matters on the small boards. The Python twin is
 * pipeline/harness/protocol.py.
 */
#include "mf_frame.h"

#include "mf_hal.h"

uint16_t mf_crc16_update(uint16_t crc, uint8_t byte)
{
    uint8_t bit;
    crc ^= (uint16_t)((uint16_t)byte << 8);
    for (bit = 0; bit < 8u; ++bit) {
        if (crc & 0x8000u) {
            crc = (uint16_t)((crc << 1) ^ 0x1021u);
        } else {
            crc = (uint16_t)(crc << 1);
        }
    }
    return crc;
}

uint16_t mf_crc16(const uint8_t *data, size_t len)
{
    uint16_t crc = 0xFFFFu;
    size_t i;
    for (i = 0; i < len; ++i) {
        crc = mf_crc16_update(crc, data[i]);
    }
    return crc;
}

void mf_rx_init(mf_rx *rx, uint8_t *buf, uint8_t cap)
{
    rx->buf = buf;
    rx->cap = cap;
    rx->len = 0;
    rx->block_left = 0;
    rx->block_code = 0;
    rx->overflow = 0;
    rx->restart = 0;
}

static void rx_store(mf_rx *rx, uint8_t byte)
{
    if (rx->len < rx->cap) {
        rx->buf[rx->len++] = byte;
    } else {
        rx->overflow = 1;
    }
}

mf_rx_status mf_rx_feed(mf_rx *rx, uint8_t byte)
{
    if (rx->restart) {
        rx->len = 0;
        rx->restart = 0;
    }
    if (byte == 0u) {
        /* Delimiter: judge the frame, then get ready for the next one. */
        mf_rx_status status;
        if (rx->block_code == 0u) {
            status = MF_RX_EMPTY;
        } else if (rx->overflow) {
            status = MF_RX_OVERFLOW;
        } else if (rx->block_left != 0u) {
            status = MF_RX_MALFORMED;
        } else {
            status = MF_RX_FRAME;
        }
        rx->block_left = 0;
        rx->block_code = 0;
        rx->overflow = 0;
        rx->restart = 1;
        return status;
    }
    if (rx->block_left == 0u) {
        /* A code byte. The block before it ended in an implicit zero unless
         * it was a full 254-byte block (code 0xFF). */
        if (rx->block_code != 0u && rx->block_code != 0xFFu) {
            rx_store(rx, 0u);
        }
        rx->block_code = byte;
        rx->block_left = (uint8_t)(byte - 1u);
    } else {
        rx_store(rx, byte);
        rx->block_left--;
    }
    return MF_RX_PENDING;
}

void mf_cobs_send(const uint8_t *data, size_t len)
{
    size_t start = 0;
    for (;;) {
        size_t run = 0;
        size_t i;
        while (start + run < len && data[start + run] != 0u && run < 254u) {
            run++;
        }
        mf_hal_putc((uint8_t)(run + 1u));
        for (i = 0; i < run; ++i) {
            mf_hal_putc(data[start + i]);
        }
        start += run;
        if (start >= len) {
            break;
        }
        if (run < 254u) {
            start++; /* the zero this block stands for */
            if (start == len) {
                /* Data ended in a zero: one empty block carries it. */
                mf_hal_putc(1u);
                break;
            }
        }
    }
    mf_hal_putc(0u);
}
