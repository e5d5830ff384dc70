/*
 * Firmware entry: bring up the board, then answer the host forever.
 * Everything the firmware does is driven by requests (docs/protocol.md).
 */
#include "mf_hal.h"
#include "mf_protocol.h"

int main(void)
{
    mf_hal_init();
    mf_proto_run();
    return 0;
}
