/* test_virtio_console.c: virtio-console between hand-driven guest queues and pipes, ttys, sockets. */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <termios.h>
#include <unistd.h>
#include <cmocka.h>

#include "fake_driver.h"

#include "io/loop.h"
#include "io/unix_socket.h"
#include "log.h"
#include "model_state.h"
#include "virtio/console.h"

#define RXQ VIRTIO_CONSOLE_RECEIVEQ
#define TXQ VIRTIO_CONSOLE_TRANSMITQ
#define QSIZE 16
#define DESC_GPA FAKE_DESC_GPA
#define AVAIL_GPA FAKE_AVAIL_GPA
#define USED_GPA FAKE_USED_GPA
#define RX_GPA 0x400000ull
#define TX_GPA 0x500000ull
#define BIG_GPA 0x600000ull
#define BAD_GPA (1ull << 40) /* not RAM */
#define F_SIZE 0
#define DRAIN_MAX (256u << 10)


struct fx {
    struct guest_memory gm;
    struct event_loop loop;
    struct virtio_device vdev;
    struct virtio_console *con;
    unsigned interrupts, config_interrupts, resets;
    uint16_t avail_idx[2], next_desc[2];
    struct loop_watch timer;
    unsigned ticks, max_ticks;
    bool (*until)(struct fx *f);
    uint16_t want_used[2];
    int drain_fd; /* read into `drained` on every tick, or -1 */
    uint8_t *drained;
    size_t drained_len;
};

static void fake_interrupt(struct virtio_device *vdev, unsigned queue)
{
    (void)queue;
    ((struct fx *)vdev->transport)->interrupts++;
}

static void fake_config_interrupt(struct virtio_device *vdev)
{
    ((struct fx *)vdev->transport)->config_interrupts++;
}

static void fake_needs_reset(struct virtio_device *vdev, const char *why)
{
    assert_non_null(why);
    ((struct fx *)vdev->transport)->resets++;
}

static void setup_queue(struct fx *f, unsigned q)
{
    uint64_t off = q * 0x10000ull;
    f->avail_idx[q] = f->next_desc[q] = 0;
    memset(gm_ptr(&f->gm, USED_GPA + off, 4 + 8 * QSIZE), 0, 4 + 8 * QSIZE);
    memset(gm_ptr(&f->gm, AVAIL_GPA + off, 4 + 2 * QSIZE), 0, 4 + 2 * QSIZE);
    assert_int_equal(virtq_setup(&f->vdev.queues[q], &f->gm, QSIZE, DESC_GPA + off,
                                 AVAIL_GPA + off, USED_GPA + off, false, false),
                     0);
}

static struct fx *fx_new_capped(int in_fd, int out_fd, uint64_t out_max)
{
    struct fx *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    f->drain_fd = -1;
    f->drained = calloc(1, DRAIN_MAX);
    assert_non_null(f->drained);
    assert_int_equal(gm_init(&f->gm, 64ull << 20, false), 0);
    assert_int_equal(loop_init(&f->loop, 64), 0);
    f->vdev.transport = f;
    f->vdev.interrupt_queue = fake_interrupt;
    f->vdev.interrupt_config = fake_config_interrupt;
    f->vdev.needs_reset = fake_needs_reset;
    struct virtio_console_config cfg = { .in_fd = in_fd, .out_fd = out_fd, .out_max = out_max };
    assert_int_equal(virtio_console_create(&f->con, &cfg, &f->loop, &f->gm, &f->vdev), 0);
    assert_int_equal(f->vdev.ops->device_id, VIRTIO_ID_CONSOLE);
    assert_int_equal(f->vdev.ops->nr_queues, 2);
    f->vdev.driver_features = f->vdev.ops->features(&f->vdev) | 1ull << 32;
    setup_queue(f, RXQ);
    setup_queue(f, TXQ);
    assert_int_equal(f->vdev.ops->activate(&f->vdev), 0);
    f->vdev.status = VIRTIO_STATUS_DRIVER_OK;
    return f;
}

static struct fx *fx_new(int in_fd, int out_fd)
{
    return fx_new_capped(in_fd, out_fd, 0);
}

static void fx_free(struct fx *f)
{
    virtio_console_destroy(f->con);
    loop_destroy(&f->loop);
    gm_destroy(&f->gm);
    free(f->drained);
    free(f);
}

static void *host(struct fx *f, uint64_t gpa, uint64_t len)
{
    return fake_host(&f->gm, gpa, len);
}

static uint16_t used_idx(struct fx *f, unsigned q)
{
    return fake_used_idx(&f->gm, fake_ring(q, QSIZE));
}

static struct virtq_used_elem used_elem(struct fx *f, unsigned q, uint16_t i)
{
    return fake_used_elem(&f->gm, fake_ring(q, QSIZE), i);
}

/* Writes a chain into queue q's descriptor table and makes it available; returns its head. */
static uint16_t offer(struct fx *f, unsigned q, const struct fake_seg *segs, unsigned n)
{
    return fake_offer(&f->gm, fake_ring(q, QSIZE), &f->next_desc[q], &f->avail_idx[q], segs, n);
}

/* Offers `text` as one readable buffer at `gpa` on the transmit queue. */
static void offer_text(struct fx *f, uint64_t gpa, const char *text)
{
    size_t len = strlen(text);
    memcpy(host(f, gpa, len), text, len);
    struct fake_seg s = { gpa, (uint32_t)len, false };
    offer(f, TXQ, &s, 1);
}

/* Offers one writable receive buffer of `len` bytes at `gpa`, poisoned. */
static void offer_rx(struct fx *f, uint64_t gpa, uint32_t len)
{
    memset(host(f, gpa, len), '#', len);
    struct fake_seg s = { gpa, len, true };
    offer(f, RXQ, &s, 1);
}

static void notify(struct fx *f, unsigned q)
{
    f->vdev.ops->queue_notify(&f->vdev, q);
}

static void drain(struct fx *f)
{
    while (f->drain_fd >= 0 && f->drained_len < DRAIN_MAX) {
        ssize_t n = read(f->drain_fd, f->drained + f->drained_len, DRAIN_MAX - f->drained_len);
        if (n <= 0)
            break;
        f->drained_len += (size_t)n;
    }
}

static bool reached_used(struct fx *f)
{
    return used_idx(f, RXQ) == f->want_used[RXQ] && used_idx(f, TXQ) == f->want_used[TXQ];
}

static bool never(struct fx *f)
{
    (void)f;
    return false;
}

static bool tick(struct event_loop *loop, void *opaque, int res)
{
    (void)res;
    struct fx *f = opaque;
    drain(f);
    if (f->until(f) || ++f->ticks >= f->max_ticks)
        loop->stop = true;
    else
        assert_int_equal(loop_after(loop, &f->timer, 1, tick, f), 0);
    return false;
}

/* Runs the loop until `until` holds, for max_ms milliseconds at most. */
static void run_until(struct fx *f, bool (*until)(struct fx *f), unsigned max_ms)
{
    f->until = until;
    f->ticks = 0;
    f->max_ticks = max_ms;
    f->loop.stop = false;
    assert_int_equal(loop_after(&f->loop, &f->timer, 1, tick, f), 0);
    assert_int_equal(loop_run(&f->loop), 0);
}

/* Runs until both queues' used indexes reach the given values, and checks that they did. */
static void run_until_used(struct fx *f, uint16_t rx, uint16_t tx)
{
    f->want_used[RXQ] = rx;
    f->want_used[TXQ] = tx;
    run_until(f, reached_used, 3000);
    assert_int_equal(used_idx(f, RXQ), rx);
    assert_int_equal(used_idx(f, TXQ), tx);
}

static void make_pipe(int fds[2], bool nonblocking_write)
{
    assert_int_equal(pipe2(fds, O_CLOEXEC), 0);
    assert_int_equal(fcntl(fds[0], F_SETFL, O_NONBLOCK), 0); /* the test's reads never wait */
    if (nonblocking_write)
        assert_int_equal(fcntl(fds[1], F_SETFL, O_NONBLOCK), 0);
}

static void assert_drained(struct fx *f, const char *want)
{
    assert_int_equal(f->drained_len, strlen(want));
    assert_memory_equal(f->drained, want, strlen(want));
}

/* ---- guest output ---- */

static void test_output_chains(void **state)
{
    (void)state;
    int out[2];
    make_pipe(out, false);
    struct fx *f = fx_new(-1, out[1]);
    f->drain_fd = out[0];
    offer_text(f, TX_GPA, "hello, ");
    /* One chain in three segments, the middle one elsewhere in memory. */
    memcpy(host(f, TX_GPA + 0x100, 4), "vir", 3);
    memcpy(host(f, TX_GPA + 0x3000, 8), "tio-", 4);
    memcpy(host(f, TX_GPA + 0x200, 8), "console", 7);
    struct fake_seg segs[3] = { { TX_GPA + 0x100, 3, false }, { TX_GPA + 0x3000, 4, false },
                           { TX_GPA + 0x200, 7, false } };
    offer(f, TXQ, segs, 3);
    offer_text(f, TX_GPA + 0x400, "\r\n");
    notify(f, TXQ);
    run_until_used(f, 0, 3);
    drain(f);
    assert_drained(f, "hello, virtio-console\r\n");
    for (uint16_t i = 0; i < 3; i++)
        assert_int_equal(used_elem(f, TXQ, i).len, 0);
    assert_true(f->interrupts >= 1);
    assert_int_equal(f->resets, 0);
    fx_free(f);
    close(out[0]);
    close(out[1]);
}

/* A non-blocking pipe smaller than the chain: EAGAIN, polls and short writes, in order. */
static void test_output_short_writes(void **state)
{
    (void)state;
    int out[2];
    make_pipe(out, true);
    assert_true(fcntl(out[1], F_SETPIPE_SZ, 4096) >= 4096);
    struct fx *f = fx_new(-1, out[1]);
    f->drain_fd = out[0];
    const size_t big = 100000;
    uint8_t *p = host(f, BIG_GPA, 2 * big);
    for (size_t i = 0; i < 2 * big; i++)
        p[i] = (uint8_t)(i * 13 + i / 251);
    struct fake_seg a[2] = { { BIG_GPA, (uint32_t)(big / 2), false },
                        { BIG_GPA + big / 2, (uint32_t)(big / 2), false } };
    offer(f, TXQ, a, 2);
    struct fake_seg b = { BIG_GPA + big, (uint32_t)big, false };
    offer(f, TXQ, &b, 1);
    notify(f, TXQ);
    run_until_used(f, 0, 2);
    drain(f);
    assert_int_equal(f->drained_len, 2 * big);
    assert_memory_equal(f->drained, p, 2 * big);
    fx_free(f);
    close(out[0]);
    close(out[1]);
}

static void test_output_discarded(void **state)
{
    (void)state;
    struct fx *f = fx_new(-1, -1);
    offer_text(f, TX_GPA, "nobody listens");
    offer_text(f, TX_GPA + 0x100, "still nobody");
    notify(f, TXQ);
    assert_int_equal(used_idx(f, TXQ), 2); /* pushed at once, without I/O */
    assert_int_equal(f->interrupts, 1);
    fx_free(f);
}

static void test_output_reader_gone(void **state)
{
    (void)state;
    int out[2];
    make_pipe(out, false);
    close(out[0]);
    struct fx *f = fx_new(-1, out[1]);
    offer_text(f, TX_GPA, "lost");
    notify(f, TXQ);
    run_until_used(f, 0, 1); /* EPIPE: dropped, the chain still comes back */
    offer_text(f, TX_GPA, "lost too");
    notify(f, TXQ);
    assert_int_equal(used_idx(f, TXQ), 2); /* output is off now: pushed at once */
    assert_int_equal(f->resets, 0);
    fx_free(f);
    close(out[1]);
}

/* ---- host input ---- */

static void test_input_from_fd(void **state)
{
    (void)state;
    int in[2];
    make_pipe(in, false);
    struct fx *f = fx_new(in[0], -1);
    offer_rx(f, RX_GPA, 16);
    notify(f, RXQ);
    assert_int_equal(write(in[1], "ls -l\n", 6), 6);
    run_until_used(f, 1, 0);
    assert_int_equal(used_elem(f, RXQ, 0).len, 6);
    assert_memory_equal(host(f, RX_GPA, 7), "ls -l\n#", 7);
    assert_true(f->interrupts >= 1);
    fx_free(f);
    close(in[0]);
    close(in[1]);
}

static int pipe_unread(int fd)
{
    int n = -1;
    assert_int_equal(ioctl(fd, FIONREAD, &n), 0);
    return n;
}

static void test_input_waits_for_buffers(void **state)
{
    (void)state;
    int in[2];
    make_pipe(in, false);
    struct fx *f = fx_new(in[0], -1);
    assert_int_equal(write(in[1], "abc", 3), 3);
    run_until(f, never, 30);
    /* Read, but held: the guest has no buffers, and nothing more is read meanwhile. */
    assert_int_equal(pipe_unread(in[0]), 0);
    assert_int_equal(write(in[1], "xyz", 3), 3);
    run_until(f, never, 30);
    assert_int_equal(pipe_unread(in[0]), 3);
    assert_int_equal(used_idx(f, RXQ), 0);

    /* Buffers and a kick: the held bytes go at once, split across buffers. */
    offer_rx(f, RX_GPA, 2);
    notify(f, RXQ);
    assert_int_equal(used_idx(f, RXQ), 1);
    assert_memory_equal(host(f, RX_GPA, 2), "ab", 2);
    offer_rx(f, RX_GPA + 0x100, 16);
    notify(f, RXQ);
    assert_int_equal(used_idx(f, RXQ), 2);
    assert_int_equal(used_elem(f, RXQ, 1).len, 1);
    assert_memory_equal(host(f, RX_GPA + 0x100, 2), "c#", 2);
    /* Reading resumed: the rest arrives in the next buffer. */
    offer_rx(f, RX_GPA + 0x200, 16);
    notify(f, RXQ);
    run_until_used(f, 3, 0);
    assert_int_equal(used_elem(f, RXQ, 2).len, 3);
    assert_memory_equal(host(f, RX_GPA + 0x200, 3), "xyz", 3);
    fx_free(f);
    close(in[0]);
    close(in[1]);
}

/* A non-blocking input fd: io_uring answers EAGAIN, the device polls instead. */
static void test_input_nonblocking_fd(void **state)
{
    (void)state;
    int in[2];
    make_pipe(in, false); /* the read end is non-blocking */
    struct fx *f = fx_new(in[0], -1);
    offer_rx(f, RX_GPA, 16);
    notify(f, RXQ);
    run_until(f, never, 20);
    assert_int_equal(write(in[1], "late", 4), 4);
    run_until_used(f, 1, 0);
    assert_memory_equal(host(f, RX_GPA, 4), "late", 4);
    fx_free(f);
    close(in[0]);
    close(in[1]);
}

static int open_pty(int *master)
{
    *master = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
    if (*master < 0)
        return -1;
    assert_int_equal(grantpt(*master), 0);
    assert_int_equal(unlockpt(*master), 0);
    int tty = open(ptsname(*master), O_RDWR | O_NOCTTY | O_CLOEXEC);
    assert_true(tty >= 0);
    return tty;
}

/* A non-blocking terminal: reads answer EAGAIN, the device polls and reads again. */
static void test_input_nonblocking_tty(void **state)
{
    (void)state;
    int master, tty = open_pty(&master);
    if (tty < 0)
        skip();
    struct termios t;
    assert_int_equal(tcgetattr(tty, &t), 0);
    cfmakeraw(&t);
    assert_int_equal(tcsetattr(tty, TCSANOW, &t), 0);
    assert_int_equal(fcntl(tty, F_SETFL, O_NONBLOCK), 0);
    struct fx *f = fx_new(tty, -1);
    offer_rx(f, RX_GPA, 16);
    notify(f, RXQ);
    run_until(f, never, 20);
    assert_int_equal(write(master, "typed", 5), 5);
    run_until_used(f, 1, 0);
    assert_int_equal(used_elem(f, RXQ, 0).len, 5);
    assert_memory_equal(host(f, RX_GPA, 5), "typed", 5);
    fx_free(f);
    close(tty);
    close(master);
}

static void test_input_end(void **state)
{
    (void)state;
    int in[2];
    make_pipe(in, false);
    struct fx *f = fx_new(in[0], -1);
    close(in[1]);
    run_until(f, never, 20); /* end of file: the device stops reading, the guest runs on */
    offer_rx(f, RX_GPA, 16);
    notify(f, RXQ);
    assert_int_equal(virtio_console_input(f->con, (const uint8_t *)"k", 1), 1);
    assert_memory_equal(host(f, RX_GPA, 2), "k#", 2);
    assert_int_equal(f->resets, 0);
    fx_free(f);
    close(in[0]);
}

static void test_console_input(void **state)
{
    (void)state;
    struct fx *f = fx_new(-1, -1);
    const uint8_t *msg = (const uint8_t *)"hello world";
    assert_int_equal(virtio_console_input(f->con, msg, 11), 0); /* no buffers */
    offer_rx(f, RX_GPA, 4);
    struct fake_seg two[2] = { { RX_GPA + 0x100, 2, true }, { RX_GPA + 0x200, 2, true } };
    memset(host(f, RX_GPA + 0x100, 0x200), '#', 0x200);
    offer(f, RXQ, two, 2);
    assert_int_equal(virtio_console_input(f->con, msg, 11), 8);
    assert_int_equal(used_idx(f, RXQ), 2);
    assert_int_equal(used_elem(f, RXQ, 0).len, 4);
    assert_int_equal(used_elem(f, RXQ, 1).len, 4);
    assert_memory_equal(host(f, RX_GPA, 4), "hell", 4);
    assert_memory_equal(host(f, RX_GPA + 0x100, 3), "o #", 3);
    assert_memory_equal(host(f, RX_GPA + 0x200, 3), "wo#", 3);
    assert_int_equal(virtio_console_sink(f->con, msg + 8, 3), 0);
    offer_rx(f, RX_GPA + 0x300, 8);
    assert_int_equal(virtio_console_sink(f->con, msg + 8, 3), 3);
    assert_memory_equal(host(f, RX_GPA + 0x300, 4), "rld#", 4);
    assert_int_equal(f->interrupts, 2);
    fx_free(f);
}

/* ---- the guest breaking the rules ---- */

static void test_ring_violation(void **state)
{
    (void)state;
    struct fx *f = fx_new(-1, -1);
    struct fake_seg bad = { BAD_GPA, 16, false };
    offer(f, TXQ, &bad, 1);
    notify(f, TXQ);
    assert_int_equal(f->resets, 1);
    assert_int_equal(used_idx(f, TXQ), 0);
    f->vdev.ops->reset(&f->vdev);
    assert_false(f->vdev.queues[TXQ].enabled);

    setup_queue(f, RXQ);
    setup_queue(f, TXQ);
    assert_int_equal(f->vdev.ops->activate(&f->vdev), 0);
    struct fake_seg badrx = { BAD_GPA, 16, true };
    offer(f, RXQ, &badrx, 1);
    assert_int_equal(virtio_console_input(f->con, (const uint8_t *)"x", 1), 0);
    assert_int_equal(f->resets, 2);
    fx_free(f);
}

/* A chain on the receive queue without writable bytes is answered empty, not fatal. */
static void test_rx_readonly_buffer(void **state)
{
    (void)state;
    struct fx *f = fx_new(-1, -1);
    struct fake_seg ro = { RX_GPA, 16, false };
    offer(f, RXQ, &ro, 1);
    offer_rx(f, RX_GPA + 0x100, 16);
    assert_int_equal(virtio_console_input(f->con, (const uint8_t *)"ok", 2), 2);
    assert_int_equal(used_elem(f, RXQ, 0).len, 0);
    assert_int_equal(used_elem(f, RXQ, 1).len, 2);
    assert_int_equal(f->resets, 0);
    fx_free(f);
}

/* ---- reset and destroy with I/O in flight ---- */

static void fill_pipe(int fd)
{
    static const uint8_t junk[4096];
    while (write(fd, junk, sizeof(junk)) > 0)
        ;
    assert_int_equal(errno, EAGAIN);
}

static void test_reset_in_flight(void **state)
{
    (void)state;
    int out[2];
    make_pipe(out, true);
    fill_pipe(out[1]);
    struct fx *f = fx_new(-1, out[1]);
    offer_text(f, TX_GPA, "stale");
    notify(f, TXQ);
    run_until(f, never, 20); /* the write waits for room */
    assert_int_equal(used_idx(f, TXQ), 0);
    f->vdev.ops->reset(&f->vdev);
    assert_false(f->vdev.queues[TXQ].enabled);
    f->drain_fd = out[0];
    run_until(f, never, 30); /* room again: the stale write ends, its chain is not pushed */
    assert_int_equal(used_idx(f, TXQ), 0);
    f->drained_len = 0;

    setup_queue(f, RXQ);
    setup_queue(f, TXQ);
    assert_int_equal(f->vdev.ops->activate(&f->vdev), 0);
    offer_text(f, TX_GPA, "fresh");
    notify(f, TXQ);
    run_until_used(f, 0, 1);
    drain(f);
    assert_drained(f, "fresh");
    fx_free(f);
    close(out[0]);
    close(out[1]);
}

static void test_destroy_in_flight(void **state)
{
    (void)state;
    int in[2], out[2];
    make_pipe(in, false);
    make_pipe(out, true);
    fcntl(in[0], F_SETFL, 0); /* a blocking read, parked in io_uring */
    fill_pipe(out[1]);
    struct fx *f = fx_new(in[0], out[1]);
    offer_text(f, TX_GPA, "never written");
    notify(f, TXQ);
    run_until(f, never, 10);
    virtio_console_destroy(f->con); /* a read and a write parked in the kernel */
    f->con = NULL;
    run_until(f, never, 20);

    /* Again, with a listener attached and input held for a guest without buffers. */
    char path[64];
    snprintf(path, sizeof(path), "/tmp/godwit-con-%d.sock", getpid());
    unlink(path);
    struct virtio_console_config cfg = { .in_fd = in[0], .out_fd = out[1] };
    assert_int_equal(virtio_console_create(&f->con, &cfg, &f->loop, &f->gm, &f->vdev), 0);
    int lfd = virtio_console_open_socket(path);
    assert_true(lfd >= 0);
    assert_int_equal(virtio_console_listen(f->con, lfd), 0);
    offer_text(f, TX_GPA, "never written either");
    notify(f, TXQ);
    assert_int_equal(write(in[1], "held", 4), 4);
    run_until(f, never, 20);
    virtio_console_destroy(f->con);
    f->con = NULL;
    run_until(f, never, 20); /* the orphans' cancellations come in and free them (ASan) */
    unlink(path);
    fx_free(f);
    close(in[0]);
    close(in[1]);
    close(out[0]);
    close(out[1]);
}

/* ---- backends ---- */

static int connect_client(const char *path)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    strncpy(sa.sun_path, path, sizeof(sa.sun_path) - 1);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    return fd;
}

static bool client_has_data(struct fx *f)
{
    return f->drained_len > 0;
}

/* One client's session: its keystrokes reach the guest, the guest's output reaches it. */
static void exchange(struct fx *f, int client, const char *in, const char *out)
{
    uint16_t rx = used_idx(f, RXQ), tx = used_idx(f, TXQ);
    offer_rx(f, RX_GPA, 64);
    notify(f, RXQ);
    assert_int_equal(write(client, in, strlen(in)), (ssize_t)strlen(in));
    run_until_used(f, (uint16_t)(rx + 1), tx);
    assert_int_equal(used_elem(f, RXQ, rx).len, strlen(in));
    assert_memory_equal(host(f, RX_GPA, strlen(in)), in, strlen(in));

    fcntl(client, F_SETFL, O_NONBLOCK);
    f->drain_fd = client;
    f->drained_len = 0;
    offer_text(f, TX_GPA, out);
    notify(f, TXQ);
    run_until_used(f, (uint16_t)(rx + 1), (uint16_t)(tx + 1));
    run_until(f, client_has_data, 1000);
    assert_drained(f, out);
    f->drain_fd = -1;
}

/* A last client's session on `f`, then the device's end: no ring rule was broken. */
static void last_session(struct fx *f, const char *path, const char *in, const char *out)
{
    int client = connect_client(path);
    run_until(f, never, 50);
    exchange(f, client, in, out);
    close(client);
    run_until(f, never, 20);
    assert_int_equal(f->resets, 0);
    fx_free(f);
}

/* A console in socket mode, listening at a new path /tmp/godwit-NAME-PID.sock. */
static struct fx *fx_listening(char *path, size_t size, const char *name)
{
    snprintf(path, size, "/tmp/godwit-%s-%d.sock", name, getpid());
    unlink(path);
    int lfd = virtio_console_open_socket(path);
    assert_true(lfd >= 0);
    struct fx *f = fx_new(-1, -1);
    assert_int_equal(virtio_console_listen(f->con, lfd), 0);
    return f;
}

static void test_socket_backend(void **state)
{
    (void)state;
    char path[64];
    struct fx *f = fx_listening(path, sizeof(path), "con");
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_true(S_ISSOCK(st.st_mode));
    assert_int_equal(st.st_mode & 0777, 0600);

    offer_text(f, TX_GPA, "before anyone");
    notify(f, TXQ);
    assert_int_equal(used_idx(f, TXQ), 1); /* no client: dropped at once */

    int c1 = connect_client(path);
    run_until(f, never, 50);
    exchange(f, c1, "first\n", "hello first\r\n");

    /* A second client while the first is connected is turned away; so is the probe of a
     * second VM told to listen there. */
    assert_int_equal(virtio_console_open_socket(path), -EADDRINUSE);
    int c2 = connect_client(path);
    run_until(f, never, 50);
    char byte;
    assert_int_equal(read(c2, &byte, 1), 0);
    close(c2);

    close(c1);
    run_until(f, never, 50); /* the device sees the hang-up */
    uint16_t tx = used_idx(f, TXQ);
    offer_text(f, TX_GPA, "between clients");
    notify(f, TXQ);
    assert_int_equal(used_idx(f, TXQ), tx + 1); /* no client: dropped at once */

    last_session(f, path, "third\n", "hello third\r\n");

    /* The listener is closed now: its socket file is stale and may be replaced. */
    int lfd = virtio_console_open_socket(path);
    assert_true(lfd >= 0);
    close(lfd);
    unlink(path);
    assert_int_equal(virtio_console_open_socket("/nonexistent-dir/x.sock"), -ENOENT);
}

/* The guest's side of a console that another device served until now: fresh queues. */
static struct fx *fx_adopting(int listen_fd, const char *path)
{
    struct fx *f = fx_new(-1, -1);
    int fd = unix_socket_adopt(listen_fd, path, NULL);
    assert_true(fd >= 0);
    assert_int_equal(virtio_console_listen(f->con, fd), 0);
    return f;
}

static bool read_gives_eof(int fd)
{
    char byte;
    return read(fd, &byte, 1) == 0;
}

/* The source's end of a live upgrade as godwit's final step has it: quiesced (a client's read
 * cancelled, a write in flight handed back), its client handed over (a duplicate, as
 * SCM_RIGHTS passes it) and the device gone without resuming; `to` then serves that client,
 * as a destination does after GO. */
static void hand_over(struct fx *from, struct fx *to)
{
    static struct virtio_console_client c;
    assert_int_equal(virtio_console_client(from->con, &c), -EBUSY); /* not while it runs */
    assert_int_equal(from->vdev.ops->quiesce(&from->vdev), 0);
    assert_int_equal(virtio_console_client(from->con, &c), 0);
    assert_true(c.fd >= 0);
    c.fd = fcntl(c.fd, F_DUPFD_CLOEXEC, 0);
    assert_true(c.fd >= 0);
    fx_free(from);
    assert_int_equal(virtio_console_adopt_client(to->con, &c), 0);
}

/* A console listening at a new path whose *client had one exchange with the guest, then
 * typed `held`: the device has read it and holds it, the guest offering no buffers. */
static struct fx *fx_holding_input(char *path, size_t size, const char *name, int *client,
                                   const char *held)
{
    struct fx *f = fx_listening(path, size, name);
    *client = connect_client(path);
    run_until(f, never, 50);
    exchange(f, *client, "before\n", "first\r\n");
    assert_int_equal(write(*client, held, strlen(held)), (ssize_t)strlen(held));
    run_until(f, never, 20);
    return f;
}

/* Reads what `client` has until it has `len` bytes in all, running `f` in between. */
static void read_output(struct fx *f, int client, uint8_t *buf, size_t len, uint16_t tx)
{
    size_t got = 0;
    for (unsigned i = 0; i < 3000 && (got < len || used_idx(f, TXQ) != tx); i++) {
        run_until(f, never, 1);
        ssize_t n;
        while (got < len && (n = read(client, buf + got, len - got)) > 0)
            got += (size_t)n;
    }
    assert_int_equal(got, len);
    assert_int_equal(used_idx(f, TXQ), tx);
}

/*
 * A live upgrade's console socket over two handovers (A to B to C), as godwit does it: the
 * destination's device is built on a duplicate while the source still serves, the source
 * pauses (quiesce) and hands its client over, and ends without resuming. The client stays
 * connected throughout: input it typed that A had read and its guest had not taken reaches
 * B's guest, and an output chain B had half written when it paused is finished by C without
 * repeating a byte. One that connects meanwhile is turned away, as while any client is on.
 */
static void test_socket_handover(void **state)
{
    (void)state;
    char path[64];
    int client;
    struct fx *a = fx_holding_input(path, sizeof(path), "con-ho", &client, "typed at a\n");

    struct fx *b = fx_adopting(virtio_console_listen_fd(a->con), path);
    int other = connect_client(path); /* during the pause */
    hand_over(a, b);
    offer_rx(b, RX_GPA, 64);
    notify(b, RXQ);
    assert_int_equal(used_idx(b, RXQ), 1);
    assert_int_equal(used_elem(b, RXQ, 0).len, 11);
    assert_memory_equal(host(b, RX_GPA, 11), "typed at a\n", 11);
    run_until(b, never, 50);
    assert_true(read_gives_eof(other)); /* B serves the client it was handed */
    close(other);
    exchange(b, client, "at b\n", "from b\r\n");

    /* 1 MiB of output, more than the connection holds: B pauses with part of it written. */
    enum { BIG = 1 << 20 };
    static uint8_t sent[BIG], got[BIG];
    for (size_t i = 0; i < BIG; i++)
        sent[i] = (uint8_t)('a' + i * 7 % 26);
    memcpy(host(b, BIG_GPA, BIG), sent, BIG);
    struct fake_seg big = { BIG_GPA, BIG, false };
    offer(b, TXQ, &big, 1);
    notify(b, TXQ);
    run_until(b, never, 30);
    assert_int_equal(used_idx(b, TXQ), 1); /* the chain is not done */

    struct fx *c = fx_adopting(virtio_console_listen_fd(b->con), path);
    offer_text(c, TX_GPA, "x"); /* C's ring as B's was: the chain comes at the same place */
    notify(c, TXQ);
    hand_over(b, c);
    memcpy(host(c, BIG_GPA, BIG), sent, BIG);
    offer(c, TXQ, &big, 1);
    notify(c, TXQ);
    read_output(c, client, got, BIG, 2);
    assert_memory_equal(got, sent, BIG);
    char byte;
    assert_int_equal(read(client, &byte, 1), -1); /* nothing more: no byte repeated */
    exchange(c, client, "at c\n", "from c\r\n");
    close(client);
    run_until(c, never, 50); /* the device sees the hang-up */
    last_session(c, path, "after\n", "again\r\n"); /* the next client is served */
    unlink(path);
}

/* A handover that fails before GO (no ACK came): the destination closes its copy of the
 * client, the source resumes and serves the same connection, input it held included. */
static void test_socket_handover_given_up(void **state)
{
    (void)state;
    char path[64];
    int client;
    struct fx *a = fx_holding_input(path, sizeof(path), "con-back", &client, "held\n");
    static struct virtio_console_client c;
    assert_int_equal(a->vdev.ops->quiesce(&a->vdev), 0);
    assert_int_equal(virtio_console_client(a->con, &c), 0);
    assert_int_equal(c.pending_len, 5);
    int copy = fcntl(c.fd, F_DUPFD_CLOEXEC, 0);
    assert_true(copy >= 0);
    close(copy); /* the destination gave up */
    a->vdev.ops->resume(&a->vdev);
    offer_rx(a, RX_GPA + 0x100, 64);
    notify(a, RXQ);
    run_until(a, never, 20);
    assert_memory_equal(host(a, RX_GPA + 0x100, 5), "held\n", 5);
    exchange(a, client, "after\n", "again\r\n");
    close(client);
    run_until(a, never, 20);
    fx_free(a);
    unlink(path);
}

static void test_socket_refuses_other_files(void **state)
{
    (void)state;
    char path[] = "/tmp/godwit-con-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    assert_int_equal(virtio_console_open_socket(path), -EEXIST);
    unlink(path);
}

static void test_file_output(void **state)
{
    (void)state;
    char path[] = "/tmp/godwit-con-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "old\n", 4), 4);
    close(fd);
    assert_int_equal(chmod(path, 0644), 0);
    int out = virtio_console_open_file(path);
    assert_true(out >= 0);
    struct fx *f = fx_new(-1, out);
    offer_text(f, TX_GPA, "new ");
    offer_text(f, TX_GPA + 0x100, "line\n");
    notify(f, TXQ);
    run_until_used(f, 0, 2);
    fx_free(f);
    close(out);
    char buf[64] = { 0 };
    fd = open(path, O_RDONLY);
    assert_int_equal(read(fd, buf, sizeof(buf)), 13);
    assert_string_equal(buf, "old\nnew line\n");
    close(fd);
    unlink(path);

    out = virtio_console_open_file(path); /* created afresh: private */
    assert_true(out >= 0);
    struct stat st;
    assert_int_equal(fstat(out, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    close(out);
    unlink(path);
}

/* ---- config space ---- */

static void test_terminal_size(void **state)
{
    (void)state;
    int master, tty = open_pty(&master);
    if (tty < 0)
        skip();
    struct winsize ws = { .ws_row = 40, .ws_col = 100 };
    assert_int_equal(ioctl(tty, TIOCSWINSZ, &ws), 0);

    struct fx *f = fx_new(-1, tty);
    assert_true(f->vdev.ops->features(&f->vdev) & 1ull << F_SIZE);
    uint16_t size[2] = { 0, 0 };
    f->vdev.ops->read_config(&f->vdev, 0, size, 4);
    assert_int_equal(size[0], 100);
    assert_int_equal(size[1], 40);
    /* Linux reads the size only on a config change: the first transmission announces it,
     * once per activation. */
    assert_int_equal(f->config_interrupts, 0);
    f->vdev.ops->queue_notify(&f->vdev, TXQ);
    f->vdev.ops->queue_notify(&f->vdev, TXQ);
    assert_int_equal(f->config_interrupts, 1);
    virtio_console_set_size(f->con, 132, 50);
    f->vdev.ops->read_config(&f->vdev, 0, size, 4);
    assert_int_equal(size[0], 132);
    assert_int_equal(size[1], 50);
    assert_int_equal(f->config_interrupts, 2);
    virtio_console_set_size(f->con, 132, 50); /* no change, no interrupt */
    assert_int_equal(f->config_interrupts, 2);
    f->vdev.ops->reset(&f->vdev);
    setup_queue(f, RXQ);
    setup_queue(f, TXQ);
    assert_int_equal(f->vdev.ops->activate(&f->vdev), 0);
    f->vdev.ops->queue_notify(&f->vdev, TXQ);
    assert_int_equal(f->config_interrupts, 3);
    fx_free(f);

    /* A driver that did not take VIRTIO_CONSOLE_F_SIZE is never told. */
    f = fx_new(-1, tty);
    f->vdev.driver_features &= ~(1ull << F_SIZE);
    f->vdev.ops->queue_notify(&f->vdev, TXQ);
    assert_int_equal(f->config_interrupts, 0);
    fx_free(f);

    f = fx_new(-1, -1);
    assert_int_equal(f->vdev.ops->features(&f->vdev), 0);
    virtio_console_set_size(f->con, 80, 25);
    uint32_t beyond = 7;
    f->vdev.ops->read_config(&f->vdev, 0, size, 4);
    f->vdev.ops->read_config(&f->vdev, 100, &beyond, 4);
    assert_int_equal(size[0], 0);
    assert_int_equal(beyond, 0);
    assert_int_equal(f->config_interrupts, 0);
    fx_free(f);
    close(tty);
    close(master);
}

/* ---- pause ---- */

/* A read waiting on in_fd is cancelled: input typed while quiesced stays in the pipe, out of
 * guest memory, and arrives after resume. */
static void test_quiesce_input(void **state)
{
    (void)state;
    int in[2];
    make_pipe(in, false);
    struct fx *f = fx_new(in[0], -1);
    offer_rx(f, RX_GPA, 16);
    notify(f, RXQ);
    run_until(f, never, 20); /* a poll for input waits in the kernel */
    assert_int_equal(f->vdev.ops->quiesce(&f->vdev), 0);
    assert_int_equal(write(in[1], "abc", 3), 3);
    run_until(f, never, 30);
    assert_int_equal(pipe_unread(in[0]), 3);
    assert_int_equal(used_idx(f, RXQ), 0);
    assert_memory_equal(host(f, RX_GPA, 4), "####", 4);
    assert_int_equal(virtio_console_input(f->con, (const uint8_t *)"k", 1), 0);
    notify(f, RXQ);
    assert_int_equal(used_idx(f, RXQ), 0);
    assert_int_equal(f->interrupts, 0);

    f->vdev.ops->resume(&f->vdev);
    run_until_used(f, 1, 0);
    assert_int_equal(used_elem(f, RXQ, 0).len, 3);
    assert_memory_equal(host(f, RX_GPA, 4), "abc#", 4);
    fx_free(f);
    close(in[0]);
    close(in[1]);
}

/* Input read before quiesce and not yet taken stays on the host side until resume. */
static void test_quiesce_pending_input(void **state)
{
    (void)state;
    int in[2];
    make_pipe(in, false);
    struct fx *f = fx_new(in[0], -1);
    assert_int_equal(write(in[1], "held", 4), 4);
    run_until(f, never, 20); /* read, held: no buffers */
    assert_int_equal(f->vdev.ops->quiesce(&f->vdev), 0);
    offer_rx(f, RX_GPA, 16);
    notify(f, RXQ);
    assert_int_equal(used_idx(f, RXQ), 0);
    f->vdev.ops->resume(&f->vdev);
    assert_int_equal(used_idx(f, RXQ), 1);
    assert_memory_equal(host(f, RX_GPA, 5), "held#", 5);
    fx_free(f);
    close(in[0]);
    close(in[1]);
}

/* A write waiting for room is cancelled and its chain handed back (last_avail_idx rewound);
 * nothing reaches the output while quiesced, and the chain is written once after resume. */
static void test_quiesce_output_handed_back(void **state)
{
    (void)state;
    int out[2];
    make_pipe(out, true);
    fill_pipe(out[1]);
    struct fx *f = fx_new(-1, out[1]);
    offer_text(f, TX_GPA, "waiting");
    notify(f, TXQ);
    run_until(f, never, 20); /* the write waits for room */
    assert_int_equal(f->vdev.queues[TXQ].last_avail_idx, 1);
    assert_int_equal(f->vdev.ops->quiesce(&f->vdev), 0);
    assert_int_equal(f->vdev.queues[TXQ].last_avail_idx, 0);
    assert_int_equal(used_idx(f, TXQ), 0);
    f->drain_fd = out[0];
    run_until(f, never, 30); /* room again, but nothing is written while quiesced */
    assert_true(f->drained_len > 0);
    f->drained_len = 0;
    drain(f);
    assert_int_equal(f->drained_len, 0);
    assert_int_equal(used_idx(f, TXQ), 0);

    f->vdev.ops->resume(&f->vdev);
    run_until_used(f, 0, 1);
    drain(f);
    assert_drained(f, "waiting");
    assert_int_equal(f->resets, 0);
    fx_free(f);
    close(out[0]);
    close(out[1]);
}

/* A chain half written when quiesce came: the half already out is not written again. */
static void test_quiesce_partial_write(void **state)
{
    (void)state;
    int out[2];
    make_pipe(out, true);
    fill_pipe(out[1]);
    static uint8_t page[4096];
    assert_int_equal(read(out[0], page, sizeof(page)), (ssize_t)sizeof(page)); /* one page free */
    struct fx *f = fx_new(-1, out[1]);
    uint8_t *text = host(f, BIG_GPA, 8192);
    for (size_t i = 0; i < 8192; i++)
        text[i] = (uint8_t)('a' + i % 26);
    struct fake_seg s = { BIG_GPA, 8192, false };
    offer(f, TXQ, &s, 1);
    notify(f, TXQ);
    run_until(f, never, 20); /* 4096 bytes out, the rest waits for room */
    assert_int_equal(f->vdev.ops->quiesce(&f->vdev), 0);
    assert_int_equal(f->vdev.queues[TXQ].last_avail_idx, 0);
    f->drain_fd = out[0];
    run_until(f, never, 20);
    f->vdev.ops->resume(&f->vdev);
    run_until_used(f, 0, 1);
    run_until(f, never, 10);
    drain(f);
    /* The pipe held junk (zeroes), then the chain's first half, then after resume the rest. */
    assert_true(f->drained_len >= 8192);
    size_t junk = f->drained_len - 8192;
    for (size_t i = 0; i < junk; i++)
        assert_int_equal(f->drained[i], 0);
    assert_memory_equal(f->drained + junk, text, 8192);
    fx_free(f);
    close(out[0]);
    close(out[1]);
}

/* ---- state ---- */

static void test_state_round_trip(void **state)
{
    (void)state;
    int master, tty = open_pty(&master);
    if (tty < 0)
        skip();
    struct winsize ws = { .ws_row = 40, .ws_col = 100 };
    assert_int_equal(ioctl(tty, TIOCSWINSZ, &ws), 0);
    struct fx *f = fx_new(-1, tty);
    notify(f, TXQ); /* the size is announced */
    virtio_console_set_size(f->con, 132, 50);
    assert_int_equal(f->config_interrupts, 2);
    uint8_t saved[MODEL_STATE_MAX], again[MODEL_STATE_MAX];
    size_t len = model_save(&f->vdev, saved);

    struct fx *g = fx_new(-1, tty);
    assert_int_equal(model_load(&g->vdev, saved, len, g->vdev.ops->state_version), 0);
    assert_int_equal(g->vdev.ops->activate(&g->vdev), 0);
    assert_int_equal(model_save(&g->vdev, again), len);
    assert_memory_equal(again, saved, len);
    uint16_t size[2];
    g->vdev.ops->read_config(&g->vdev, 0, size, 4);
    assert_int_equal(size[0], 132);
    assert_int_equal(size[1], 50);
    notify(g, TXQ);
    assert_int_equal(g->config_interrupts, 0); /* the driver was told before */

    /* A size change while quiesced is told at resume. */
    assert_int_equal(g->vdev.ops->quiesce(&g->vdev), 0);
    virtio_console_set_size(g->con, 80, 24);
    assert_int_equal(g->config_interrupts, 0);
    g->vdev.ops->resume(&g->vdev);
    assert_int_equal(g->config_interrupts, 1);
    fx_free(g);

    /* Layout: cols, rows (u16), announced (u8). */
    uint8_t b[MODEL_STATE_MAX];
    memcpy(b, saved, len);
    b[4] = 2;
    assert_int_equal(model_load(&f->vdev, b, len, 1), -EINVAL);
    memcpy(b, saved, len);
    b[0] = b[1] = 0;
    assert_int_equal(model_load(&f->vdev, b, len, 1), -EINVAL);
    assert_int_equal(model_load(&f->vdev, saved, len - 1, 1), -EPROTO);
    fx_free(f);

    /* A console without a terminal has no size to take. */
    f = fx_new(-1, -1);
    assert_int_equal(model_load(&f->vdev, saved, len, 1), -EINVAL);
    len = model_save(&f->vdev, saved);
    assert_int_equal(model_load(&f->vdev, saved, len, 1), 0);
    fx_free(f);
    close(tty);
    close(master);
}

/* A file output takes out_max bytes, the rest is dropped and counted, and the guest's chains
 * still come back at once. */
static void test_file_cap(void **state)
{
    (void)state;
    char path[] = "/tmp/godwit-con-XXXXXX";
    int out = mkstemp(path);
    assert_true(out >= 0);
    struct fx *f = fx_new_capped(-1, out, 1000);
    memset(host(f, TX_GPA, 600), 'a', 600);
    struct fake_seg chunk = { TX_GPA, 600, false };
    for (unsigned i = 0; i < 3; i++)
        offer(f, TXQ, &chunk, 1);
    notify(f, TXQ);
    run_until_used(f, 0, 3);
    uint64_t written, dropped;
    virtio_console_counters(f->con, &written, &dropped);
    assert_int_equal(written, 1000);
    assert_int_equal(dropped, 800);
    offer(f, TXQ, &chunk, 1);
    notify(f, TXQ);
    assert_int_equal(used_idx(f, TXQ), 4); /* past the cap: pushed without I/O */
    virtio_console_counters(f->con, &written, &dropped);
    assert_int_equal(dropped, 1400);
    struct stat st;
    assert_int_equal(fstat(out, &st), 0);
    assert_int_equal(st.st_size, 1000);
    fx_free(f);
    close(out);
    unlink(path);
}

/* The file backend does not follow a symlink planted at its path. */
static void test_file_symlink(void **state)
{
    (void)state;
    char target[] = "/tmp/godwit-con-XXXXXX", link[64];
    int fd = mkstemp(target);
    assert_true(fd >= 0);
    close(fd);
    snprintf(link, sizeof(link), "%s.link", target);
    assert_int_equal(symlink(target, link), 0);
    assert_int_equal(virtio_console_open_file(link), -ELOOP);
    struct stat st;
    assert_int_equal(stat(target, &st), 0);
    assert_int_equal(st.st_size, 0);
    unlink(link);
    unlink(target);
}

#define BIG_QSIZE 256

/* Sets queue q up anew with BIG_QSIZE entries and offers `n` one-segment chains on it. */
static void offer_many(struct fx *f, unsigned q, unsigned n, bool writable)
{
    uint64_t off = q * 0x10000ull;
    for (unsigned i = 0; i < n; i++) {
        uint16_t head = f->avail_idx[q] % BIG_QSIZE;
        struct virtq_desc d = { .addr = TX_GPA, .len = 8,
                                .flags = writable ? VIRTQ_DESC_F_WRITE : 0 };
        assert_int_equal(gm_write(&f->gm, DESC_GPA + off + 16ull * head, &d, sizeof(d)), 0);
        assert_int_equal(gm_write(&f->gm, AVAIL_GPA + off + 4 + 2ull * head, &head, 2), 0);
        f->avail_idx[q]++;
    }
    assert_int_equal(gm_write(&f->gm, AVAIL_GPA + off + 2, &f->avail_idx[q], 2), 0);
}

static void setup_big_queue(struct fx *f, unsigned q)
{
    uint64_t off = q * 0x10000ull;
    f->avail_idx[q] = 0;
    memset(host(f, AVAIL_GPA + off, 4 + 2 * BIG_QSIZE), 0, 4 + 2 * BIG_QSIZE);
    memset(host(f, USED_GPA + off, 4 + 8 * BIG_QSIZE), 0, 4 + 8 * BIG_QSIZE);
    assert_int_equal(virtq_setup(&f->vdev.queues[q], &f->gm, BIG_QSIZE, DESC_GPA + off,
                                 AVAIL_GPA + off, USED_GPA + off, false, false),
                     0);
}

/* Rings kept full (the driver puts back what each call took) do not keep the handlers: output
 * dropped at once and receive chains without room each go CON_BUDGET per call, the rest on
 * later turns of the loop. */
static void test_budget(void **state)
{
    (void)state;
    struct fx *f = fx_new(-1, -1);
    setup_big_queue(f, TXQ);
    setup_big_queue(f, RXQ);
    offer_many(f, TXQ, BIG_QSIZE, false);
    notify(f, TXQ);
    assert_int_equal(used_idx(f, TXQ), 64);
    /* Receive chains with no writable byte take no input: they go back empty. */
    offer_many(f, RXQ, BIG_QSIZE, false);
    assert_int_equal(virtio_console_input(f->con, (const uint8_t *)"x", 1), 0);
    assert_int_equal(used_idx(f, RXQ), 64);
    for (unsigned turn = 1; turn <= 20; turn++) {
        offer_many(f, TXQ, 64, false); /* full again */
        uint16_t before = used_idx(f, TXQ);
        assert_int_equal(loop_run_once(&f->loop), 0); /* the handlers' continuation */
        assert_int_equal((uint16_t)(used_idx(f, TXQ) - before), 64);
    }
    while (used_idx(f, TXQ) != f->avail_idx[TXQ])
        assert_int_equal(loop_run_once(&f->loop), 0);
    assert_int_equal(f->resets, 0);
    fx_free(f);
}

int main(void)
{
    log_set_level(LOG_LVL_ERROR);
    signal(SIGPIPE, SIG_IGN); /* as the VMM does: a reader gone is an error, not a death */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_output_chains),
        cmocka_unit_test(test_output_short_writes),
        cmocka_unit_test(test_output_discarded),
        cmocka_unit_test(test_output_reader_gone),
        cmocka_unit_test(test_input_from_fd),
        cmocka_unit_test(test_input_waits_for_buffers),
        cmocka_unit_test(test_input_nonblocking_fd),
        cmocka_unit_test(test_input_nonblocking_tty),
        cmocka_unit_test(test_input_end),
        cmocka_unit_test(test_console_input),
        cmocka_unit_test(test_ring_violation),
        cmocka_unit_test(test_rx_readonly_buffer),
        cmocka_unit_test(test_reset_in_flight),
        cmocka_unit_test(test_destroy_in_flight),
        cmocka_unit_test(test_socket_backend),
        cmocka_unit_test(test_socket_handover),
        cmocka_unit_test(test_socket_handover_given_up),
        cmocka_unit_test(test_socket_refuses_other_files),
        cmocka_unit_test(test_file_output),
        cmocka_unit_test(test_file_cap),
        cmocka_unit_test(test_file_symlink),
        cmocka_unit_test(test_budget),
        cmocka_unit_test(test_terminal_size),
        cmocka_unit_test(test_quiesce_input),
        cmocka_unit_test(test_quiesce_pending_input),
        cmocka_unit_test(test_quiesce_output_handed_back),
        cmocka_unit_test(test_quiesce_partial_write),
        cmocka_unit_test(test_state_round_trip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
