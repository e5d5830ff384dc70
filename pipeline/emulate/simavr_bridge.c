/*
 * microfit's simavr bridge: runs an AVR firmware in libsimavr and connects
 * one of its USARTs to a TCP client on 127.0.0.1, so the same pyserial
 * `socket://` client that talks to QEMU talks to the simulated Uno.
 *
 *   microfit-simavr-bridge --mcu atmega328p --freq 16000000 --port 0 \
 *       [--uart 0] [--stack-limit 0x2ea] firmware.elf
 *
 * Why a program of our own rather than simavr's uart_pty part: that part
 * lost the firmware's first bytes, and a pty gives no way to hold the
 * simulation until the host is there. Here the simulation starts only once
 * a client has connected (and pauses while none is), and host bytes enter
 * the simulated USART only while its 64-byte input FIFO has room (simavr's
 * XON/XOFF signals), so no byte is dropped in either direction.
 *
 * Idle time costs nothing: the firmware sleeps while waiting for input, the
 * bridge then skips simulated time and blocks on the socket instead of
 * spinning. Cycle counts are unaffected (simavr stays cycle-exact).
 *
 * With --stack-limit (the first RAM address past .data/.bss), the bridge
 * watches the stack pointer after every instruction: a stack that grows
 * into the variables stops the run with a message instead of corrupting
 * them silently. On exit it prints the deepest stack seen:
 *   microfit-simavr-bridge: stack peak N bytes
 *
 * Built by microfit on first use: gcc -O2 bridge.c -I/usr/include/simavr -lsimavr
 */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <avr_uart.h>
#include <sim_avr.h>
#include <sim_elf.h>
#include <sim_io.h>
#include <sim_irq.h>

#define BUF_SIZE 4096
/* Instructions simulated between two looks at the socket. */
#define SLICE 2048
/* Sleeping this many simulated cycles with no byte in or out means the
 * firmware waits for the host: block on the socket instead of spinning. */
#define IDLE_CYCLES 200000u
#define IDLE_POLL_MS 20

static volatile sig_atomic_t stop_requested;

static avr_t *avr;
static avr_irq_t *uart_in;
static int client = -1;
static int xoff;
static uint8_t rx_buf[BUF_SIZE];
static size_t rx_head, rx_len;
static uint8_t tx_buf[BUF_SIZE];
static size_t tx_len;
static avr_cycle_count_t last_io_cycle;

static void on_signal(int sig)
{
    (void)sig;
    stop_requested = 1;
}

static void drop_client(void)
{
    if (client >= 0) {
        close(client);
    }
    client = -1;
    rx_head = rx_len = 0;
    tx_len = 0;
}

static void flush_tx(void)
{
    size_t sent = 0;
    while (client >= 0 && sent < tx_len) {
        ssize_t n = send(client, tx_buf + sent, tx_len - sent, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            drop_client();
            break;
        }
        sent += (size_t)n;
    }
    tx_len = 0;
}

/* Hand host bytes to the USART until its FIFO is full (XOFF). */
static void feed(void)
{
    while (!xoff && rx_head < rx_len) {
        avr_raise_irq(uart_in, rx_buf[rx_head++]);
        last_io_cycle = avr->cycle;
    }
}

static void on_uart_output(struct avr_irq_t *irq, uint32_t value, void *param)
{
    (void)irq;
    (void)param;
    if (client < 0) {
        return; /* nobody listening: the byte is gone, as on a real line */
    }
    tx_buf[tx_len++] = (uint8_t)value;
    last_io_cycle = avr->cycle;
    if (tx_len == BUF_SIZE) {
        flush_tx();
    }
}

static void on_xon(struct avr_irq_t *irq, uint32_t value, void *param)
{
    (void)irq;
    (void)value;
    (void)param;
    xoff = 0;
    feed();
}

static void on_xoff(struct avr_irq_t *irq, uint32_t value, void *param)
{
    (void)irq;
    (void)value;
    (void)param;
    xoff = 1;
}

/* simavr's default sleep callback usleeps to keep real time; we want the
 * simulation as fast as possible and wait on the socket instead. */
static void no_sleep(avr_t *a, avr_cycle_count_t how_long)
{
    (void)a;
    (void)how_long;
}

/* Read what the host sent, pass it on, send what the firmware wrote. */
static void service_io(int timeout_ms)
{
    struct pollfd pfd;
    if (client < 0) {
        return;
    }
    if (rx_head == rx_len) {
        rx_head = rx_len = 0;
    }
    pfd.fd = client;
    pfd.events = POLLIN;
    pfd.revents = 0;
    if (rx_len < BUF_SIZE && poll(&pfd, 1, timeout_ms) > 0) {
        ssize_t n = recv(client, rx_buf + rx_len, BUF_SIZE - rx_len, 0);
        if (n > 0) {
            rx_len += (size_t)n;
        } else if (n == 0 || (errno != EINTR && errno != EAGAIN)) {
            drop_client();
            return;
        }
    }
    feed();
    flush_tx();
}

static int listen_on(int port)
{
    struct sockaddr_in addr;
    socklen_t len = sizeof addr;
    int one = 1;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) {
        perror("microfit-simavr-bridge: socket");
        return -1;
    }
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = htons((uint16_t)port);
    if (bind(fd, (struct sockaddr *)&addr, sizeof addr) < 0 || listen(fd, 1) < 0 ||
        getsockname(fd, (struct sockaddr *)&addr, &len) < 0) {
        fprintf(stderr, "microfit-simavr-bridge: cannot listen on 127.0.0.1:%d: %s\n", port,
                strerror(errno));
        close(fd);
        return -1;
    }
    fprintf(stderr, "microfit-simavr-bridge: listening on 127.0.0.1:%d\n", ntohs(addr.sin_port));
    fflush(stderr);
    return fd;
}

/* Wait for a client; 0 on success, -1 when asked to stop. */
static int accept_client(int server)
{
    int one = 1;
    while (!stop_requested) {
        struct pollfd pfd = {server, POLLIN, 0};
        if (poll(&pfd, 1, 200) <= 0) {
            continue;
        }
        client = accept(server, NULL, NULL);
        if (client >= 0) {
            setsockopt(client, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
            return 0;
        }
    }
    return -1;
}

static unsigned stack_pointer(void)
{
    return (unsigned)avr->data[R_SPL] | ((unsigned)avr->data[R_SPH] << 8);
}

static void usage(void)
{
    fprintf(stderr, "usage: microfit-simavr-bridge --mcu MCU --freq HZ --port PORT "
                    "[--uart N] [--stack-limit ADDR] FIRMWARE.elf\n");
}

int main(int argc, char **argv)
{
    const char *mcu = NULL;
    const char *elf_path = NULL;
    unsigned long freq = 0;
    int port = 0;
    int uart = 0;
    unsigned long stack_limit = 0;
    unsigned min_sp;
    int armed = 0;
    int server;
    int status = 0;
    int i;
    uint32_t flags = 0;
    elf_firmware_t fw;
    struct sigaction sa;

    for (i = 1; i < argc; ++i) {
        if (i + 1 < argc && strcmp(argv[i], "--mcu") == 0) {
            mcu = argv[++i];
        } else if (i + 1 < argc && strcmp(argv[i], "--freq") == 0) {
            freq = strtoul(argv[++i], NULL, 0);
        } else if (i + 1 < argc && strcmp(argv[i], "--port") == 0) {
            port = atoi(argv[++i]);
        } else if (i + 1 < argc && strcmp(argv[i], "--uart") == 0) {
            uart = atoi(argv[++i]);
        } else if (i + 1 < argc && strcmp(argv[i], "--stack-limit") == 0) {
            stack_limit = strtoul(argv[++i], NULL, 0);
        } else if (argv[i][0] != '-' && elf_path == NULL) {
            elf_path = argv[i];
        } else {
            usage();
            return 2;
        }
    }
    if (mcu == NULL || freq == 0 || elf_path == NULL || uart < 0 || uart > 9) {
        usage();
        return 2;
    }

    memset(&fw, 0, sizeof fw);
    if (elf_read_firmware(elf_path, &fw) != 0) {
        fprintf(stderr, "microfit-simavr-bridge: cannot read %s\n", elf_path);
        return 2;
    }
    snprintf(fw.mmcu, sizeof fw.mmcu, "%s", mcu);
    fw.frequency = (uint32_t)freq;
    avr = avr_make_mcu_by_name(fw.mmcu);
    if (avr == NULL) {
        fprintf(stderr, "microfit-simavr-bridge: simavr does not know MCU '%s'\n", mcu);
        return 2;
    }
    avr_init(avr);
    avr_load_firmware(avr, &fw);
    avr->sleep = no_sleep;

    avr_ioctl(avr, AVR_IOCTL_UART_GET_FLAGS('0' + uart), &flags);
    flags &= ~(uint32_t)(AVR_UART_FLAG_STDIO | AVR_UART_FLAG_POLL_SLEEP);
    avr_ioctl(avr, AVR_IOCTL_UART_SET_FLAGS('0' + uart), &flags);
    uart_in = avr_io_getirq(avr, AVR_IOCTL_UART_GETIRQ('0' + uart), UART_IRQ_INPUT);
    if (uart_in == NULL) {
        fprintf(stderr, "microfit-simavr-bridge: %s has no USART%d\n", mcu, uart);
        return 2;
    }
    avr_irq_register_notify(avr_io_getirq(avr, AVR_IOCTL_UART_GETIRQ('0' + uart), UART_IRQ_OUTPUT),
                            on_uart_output, NULL);
    avr_irq_register_notify(avr_io_getirq(avr, AVR_IOCTL_UART_GETIRQ('0' + uart), UART_IRQ_OUT_XON),
                            on_xon, NULL);
    avr_irq_register_notify(avr_io_getirq(avr, AVR_IOCTL_UART_GETIRQ('0' + uart), UART_IRQ_OUT_XOFF),
                            on_xoff, NULL);

    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);

    server = listen_on(port);
    if (server < 0) {
        return 2;
    }
    min_sp = avr->ramend;
    while (!stop_requested) {
        int n;
        if (client < 0 && accept_client(server) != 0) {
            break;
        }
        for (n = 0; n < SLICE; ++n) {
            int state = avr_run(avr);
            unsigned sp = stack_pointer();
            if (state == cpu_Done || state == cpu_Crashed) {
                flush_tx();
                fprintf(stderr, "microfit-simavr-bridge: firmware %s at cycle %llu, PC 0x%04x\n",
                        state == cpu_Done ? "stopped (interrupts off and sleeping, or exit)"
                                          : "crashed",
                        (unsigned long long)avr->cycle, (unsigned)avr->pc);
                status = 3;
                stop_requested = 1;
                break;
            }
            if (sp < min_sp) {
                min_sp = sp;
            }
            if (stack_limit != 0) {
                if (!armed) {
                    armed = sp >= stack_limit;
                } else if (sp < stack_limit) {
                    flush_tx();
                    fprintf(stderr, "microfit-simavr-bridge: stack overflow: SP 0x%04x is below "
                                    "0x%04lx, the end of .data/.bss (PC 0x%04x, cycle %llu)\n",
                            sp, stack_limit, (unsigned)avr->pc, (unsigned long long)avr->cycle);
                    status = 4;
                    stop_requested = 1;
                    break;
                }
            }
            if (avr->state == cpu_Sleeping) {
                break;
            }
        }
        if (stop_requested) {
            break;
        }
        if (avr->state == cpu_Sleeping && rx_head == rx_len &&
            avr->cycle - last_io_cycle > IDLE_CYCLES) {
            flush_tx();
            service_io(IDLE_POLL_MS);
        } else {
            service_io(0);
        }
    }
    flush_tx();
    fprintf(stderr, "microfit-simavr-bridge: stack peak %u bytes, %llu cycles\n",
            (unsigned)(avr->ramend - min_sp), (unsigned long long)avr->cycle);
    drop_client();
    close(server);
    return status;
}
