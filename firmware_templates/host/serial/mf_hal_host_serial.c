/*
 * The device protocol as a host process: the "UART" is a pseudo-terminal
 * (default) or stdin/stdout, the tick counter the monotonic clock in ns.
 *
 *   mf_host_device [--stdio] [--port-file FILE]
 *
 * With a pty it prints the terminal's path (/dev/pts/N) on stdout and, with
 * --port-file, writes it to FILE, then serves requests until killed, so
 * `microfit validate RUN --port /dev/pts/N` can talk to the generated model
 * exactly as to a board, without hardware or an emulator. It keeps the pty's
 * slave side open itself so that a client closing it does not end the
 * device, and sets it raw so that no byte is translated.
 */
/* POSIX ptys and clocks. The build also passes it on the command line,
 * since a force-included header may pull in libc headers first. */
#ifndef _XOPEN_SOURCE
#define _XOPEN_SOURCE 700
#endif

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "mf_board.h"
#include "mf_hal.h"
#include "mf_protocol.h"

static int in_fd = 0;
static int out_fd = 1;
static uint8_t out_buf[256];
static size_t out_len;

static void flush_out(void)
{
    size_t done = 0;
    while (done < out_len) {
        ssize_t n = write(out_fd, out_buf + done, out_len - done);
        if (n < 0) {
            if (errno == EINTR || errno == EAGAIN) {
                continue;
            }
            exit(2);
        }
        done += (size_t)n;
    }
    out_len = 0;
}

void mf_hal_init(void)
{
}

void mf_hal_putc(uint8_t byte)
{
    if (out_len == sizeof out_buf) {
        flush_out();
    }
    out_buf[out_len++] = byte;
}

uint8_t mf_hal_getc(void)
{
    uint8_t byte;
    flush_out(); /* a reply is complete once the device waits for input */
    for (;;) {
        ssize_t n = read(in_fd, &byte, 1);
        if (n == 1) {
            return byte;
        }
        if (n == 0 && in_fd == 0) {
            exit(0); /* end of stdin: the test stream is over */
        }
        if (n < 0 && errno != EINTR && errno != EAGAIN && errno != EIO) {
            exit(2);
        }
        if (n <= 0 && in_fd != 0) {
            /* No client on the pty (EIO / hang-up): wait for the next one. */
            struct timespec pause = {0, 10000000L};
            nanosleep(&pause, NULL);
        }
    }
}

static uint32_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint32_t)((uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec);
}

void mf_hal_ticks_restart(void)
{
}

uint32_t mf_hal_ticks(void)
{
    return now_ns();
}

uint32_t mf_hal_ticks_to_counter(uint32_t ticks)
{
    return ticks;
}

static int open_pty(const char *port_file)
{
    struct termios raw;
    const char *name;
    int slave;
    int master = posix_openpt(O_RDWR | O_NOCTTY);
    if (master < 0 || grantpt(master) != 0 || unlockpt(master) != 0) {
        perror("posix_openpt");
        return -1;
    }
    name = ptsname(master);
    if (name == NULL) {
        perror("ptsname");
        return -1;
    }
    slave = open(name, O_RDWR | O_NOCTTY);
    if (slave < 0 || tcgetattr(slave, &raw) != 0) {
        perror(name);
        return -1;
    }
    /* Raw 8-bit bytes: no echo, no line editing, no CR/LF translation. */
    raw.c_iflag &= ~(tcflag_t)(IGNBRK | BRKINT | PARMRK | ISTRIP | INLCR | IGNCR | ICRNL | IXON);
    raw.c_oflag &= ~(tcflag_t)OPOST;
    raw.c_lflag &= ~(tcflag_t)(ECHO | ECHONL | ICANON | ISIG | IEXTEN);
    raw.c_cflag &= ~(tcflag_t)(CSIZE | PARENB);
    raw.c_cflag |= CS8;
    tcsetattr(slave, TCSANOW, &raw);
    /* The slave fd stays open for the life of the process (see above). */
    printf("%s\n", name);
    fflush(stdout);
    if (port_file != NULL) {
        FILE *f = fopen(port_file, "w");
        if (f == NULL) {
            perror(port_file);
            return -1;
        }
        fprintf(f, "%s\n", name);
        fclose(f);
    }
    return master;
}

int main(int argc, char **argv)
{
    const char *port_file = NULL;
    int use_stdio = 0;
    int i;
    for (i = 1; i < argc; ++i) {
        if (strcmp(argv[i], "--stdio") == 0) {
            use_stdio = 1;
        } else if (strcmp(argv[i], "--port-file") == 0 && i + 1 < argc) {
            port_file = argv[++i];
        } else {
            fprintf(stderr, "usage: %s [--stdio] [--port-file FILE]\n", argv[0]);
            return 2;
        }
    }
    if (!use_stdio) {
        int master = open_pty(port_file);
        if (master < 0) {
            return 1;
        }
        in_fd = master;
        out_fd = master;
    }
    mf_hal_init();
    mf_proto_run();
    return 0;
}
