/*
 * test_virtio_vsock.c: virtio-vsock between a hand-played guest driver (its queues in fake
 * guest memory, its side of the credit protocol) and host programs on real UNIX sockets.
 */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <sys/stat.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
#include <cmocka.h>

#include "io/loop.h"
#include "io/unix_socket.h"
#include "log.h"
#include "model_state.h"
#include "virtio/vsock.h"

#define RXQ VIRTIO_VSOCK_RXQ
#define TXQ VIRTIO_VSOCK_TXQ
#define EVQ VIRTIO_VSOCK_EVENTQ
#define QSIZE 64u
#define CID 3u
#define HDR 44u
#define RX_LEN (4096u + HDR)
#define RING_GPA(q) (0x100000ull + (q) * 0x10000ull)
#define BUF_GPA(q, i) (0x1000000ull + (q) * 0x1000000ull + (uint64_t)(i) * 0x20000ull)
#define MAX_TURNS 3000

enum { OP_REQUEST = 1, OP_RESPONSE, OP_RST, OP_SHUTDOWN, OP_RW, OP_CREDIT_UPDATE,
       OP_CREDIT_REQUEST };

struct hdr {
    uint64_t src_cid, dst_cid;
    uint32_t src_port, dst_port, len;
    uint16_t type, op;
    uint32_t flags, buf_alloc, fwd_cnt;
} __attribute__((packed));

struct fx {
    struct guest_memory gm;
    struct event_loop loop;
    struct virtio_device vdev;
    struct virtio_vsock *vs;
    char path[64];
    struct loop_watch timer;
    uint16_t avail_idx[3], tx_next, rx_seen;
    /* The guest's side of one connection's credit. */
    uint32_t buf_alloc, fwd_cnt;         /* what the guest advertises */
    uint32_t peer_buf_alloc, peer_fwd;   /* the device's, from its last header */
};

static void fake_interrupt(struct virtio_device *vdev, unsigned queue)
{
    (void)vdev, (void)queue;
}

static void fake_needs_reset(struct virtio_device *vdev, const char *why)
{
    (void)vdev;
    fail_msg("needs reset: %s", why);
}

static void *host(struct fx *f, uint64_t gpa, uint64_t len)
{
    void *p = gm_ptr(&f->gm, gpa, len);
    assert_non_null(p);
    return p;
}

static uint16_t used_idx(struct fx *f, unsigned q)
{
    uint16_t idx;
    assert_int_equal(gm_read(&f->gm, RING_GPA(q) + 0x2000 + 2, &idx, 2), 0);
    return idx;
}

static struct virtq_used_elem used_elem(struct fx *f, unsigned q, uint16_t i)
{
    struct virtq_used_elem e;
    assert_int_equal(gm_read(&f->gm, RING_GPA(q) + 0x2000 + 4 + 8ull * (i % QSIZE), &e,
                             sizeof(e)), 0);
    return e;
}

/* Descriptor `d` of queue q, one buffer of `len` bytes, made available. */
static void offer(struct fx *f, unsigned q, uint16_t d, uint32_t len, bool writable)
{
    struct virtq_desc desc = { .addr = BUF_GPA(q, d), .len = len,
                               .flags = writable ? VIRTQ_DESC_F_WRITE : 0 };
    assert_int_equal(gm_write(&f->gm, RING_GPA(q) + 16ull * d, &desc, sizeof(desc)), 0);
    uint64_t avail = RING_GPA(q) + 0x1000;
    assert_int_equal(gm_write(&f->gm, avail + 4 + 2ull * (f->avail_idx[q] % QSIZE), &d, 2), 0);
    f->avail_idx[q]++;
    assert_int_equal(gm_write(&f->gm, avail + 2, &f->avail_idx[q], 2), 0);
}

static void notify(struct fx *f, unsigned q)
{
    f->vdev.ops->queue_notify(&f->vdev, q);
}

static bool tick(struct event_loop *loop, void *opaque, int res)
{
    (void)opaque, (void)res;
    loop->stop = true;
    return false;
}

/* One millisecond of the main loop. */
static void turn(struct fx *f)
{
    f->loop.stop = false;
    assert_int_equal(loop_after(&f->loop, &f->timer, 1, tick, f), 0);
    assert_int_equal(loop_run(&f->loop), 0);
}

static void setup_queue(struct fx *f, unsigned q)
{
    memset(host(f, RING_GPA(q), 0x3000), 0, 0x3000);
    assert_int_equal(virtq_setup(&f->vdev.queues[q], &f->gm, QSIZE, RING_GPA(q),
                                 RING_GPA(q) + 0x1000, RING_GPA(q) + 0x2000, false, false), 0);
}

/* A device with its guest's queues set up: on its own socket, or (listen_fd >= 0) on another
 * device's at `path`, as a live upgrade's destination. */
static struct fx *fx_make(unsigned connect_timeout_ms, const char *path, int listen_fd)
{
    struct fx *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    assert_int_equal(gm_init(&f->gm, 80ull << 20, false), 0);
    assert_int_equal(loop_init(&f->loop, 256), 0);
    static unsigned serial; /* a test that failed leaves its socket: the next one is new */
    if (path)
        snprintf(f->path, sizeof(f->path), "%s", path);
    else
        snprintf(f->path, sizeof(f->path), "/tmp/godwit-vsock-%d-%u.sock", getpid(), serial++);
    f->vdev.transport = f;
    f->vdev.interrupt_queue = fake_interrupt;
    f->vdev.needs_reset = fake_needs_reset;
    struct virtio_vsock_config cfg = { .guest_cid = CID, .path = f->path,
                                       .connect_timeout_ms = connect_timeout_ms,
                                       .use_listen_fd = listen_fd >= 0, .listen_fd = listen_fd };
    assert_int_equal(virtio_vsock_create(&f->vs, &cfg, &f->loop, &f->gm, &f->vdev), 0);
    assert_int_equal(f->vdev.ops->device_id, VIRTIO_ID_VSOCK);
    assert_int_equal(f->vdev.ops->nr_queues, 3);
    f->vdev.driver_features = 1ull << 32;
    for (unsigned q = 0; q < 3; q++)
        setup_queue(f, q);
    assert_int_equal(f->vdev.ops->activate(&f->vdev), 0);
    f->buf_alloc = 256u << 10;
    for (uint16_t d = 0; d < QSIZE; d++)
        offer(f, RXQ, d, RX_LEN, true);
    notify(f, RXQ);
    return f;
}

static struct fx *fx_new_with(unsigned connect_timeout_ms)
{
    return fx_make(connect_timeout_ms, NULL, -1);
}

static struct fx *fx_new(void)
{
    return fx_new_with(0);
}

static void fx_free(struct fx *f)
{
    virtio_vsock_destroy(f->vs);
    loop_destroy(&f->loop);
    gm_destroy(&f->gm);
    free(f);
}

static struct virtio_vsock_counters counters(struct fx *f)
{
    struct virtio_vsock_counters c;
    virtio_vsock_counters(f->vs, &c);
    return c;
}

static struct hdr ghdr(struct fx *f, uint16_t op, uint32_t src_port, uint32_t dst_port)
{
    return (struct hdr){ .src_cid = CID, .dst_cid = 2, .src_port = src_port,
                         .dst_port = dst_port, .type = 1, .op = op,
                         .buf_alloc = f->buf_alloc, .fwd_cnt = f->fwd_cnt };
}

/* One transmit chain of `desc_len` bytes: the header, then the payload. */
static void gsend_raw(struct fx *f, const struct hdr *h, const void *payload, uint32_t len,
                      uint32_t desc_len)
{
    uint16_t d = f->tx_next++ % QSIZE;
    uint8_t *buf = host(f, BUF_GPA(TXQ, d), HDR + len);
    memcpy(buf, h, HDR);
    if (len)
        memcpy(buf + HDR, payload, len);
    uint16_t used = used_idx(f, TXQ);
    offer(f, TXQ, d, desc_len, false);
    notify(f, TXQ);
    assert_int_equal(used_idx(f, TXQ), (uint16_t)(used + 1)); /* handled at once */
}

static void gsend(struct fx *f, uint16_t op, uint32_t src_port, uint32_t dst_port,
                  uint32_t flags, const void *payload, uint32_t len)
{
    struct hdr h = ghdr(f, op, src_port, dst_port);
    h.flags = flags;
    h.len = len;
    gsend_raw(f, &h, payload, len, HDR + len);
}

/* The next packet the device put in the receive queue, if any; its buffer is offered again. */
static bool grecv(struct fx *f, struct hdr *h, void *payload, size_t max)
{
    if (used_idx(f, RXQ) == f->rx_seen)
        return false;
    struct virtq_used_elem e = used_elem(f, RXQ, f->rx_seen++);
    assert_true(e.id < QSIZE);
    memcpy(h, host(f, BUF_GPA(RXQ, e.id), HDR), HDR);
    assert_int_equal(e.len, HDR + h->len);
    assert_true(h->len <= RX_LEN - HDR && h->len <= max);
    if (h->len && payload) /* with no payload buffer, max is 0 and so is h->len */
        memcpy(payload, host(f, BUF_GPA(RXQ, e.id) + HDR, h->len), h->len);
    assert_int_equal(h->src_cid, 2);
    assert_int_equal(h->dst_cid, CID);
    assert_int_equal(h->type, 1);
    f->peer_buf_alloc = h->buf_alloc;
    f->peer_fwd = h->fwd_cnt;
    offer(f, RXQ, (uint16_t)e.id, RX_LEN, true);
    notify(f, RXQ);
    return true;
}

static void grecv_wait(struct fx *f, struct hdr *h, void *payload, size_t max)
{
    for (int i = 0; i < MAX_TURNS; i++) {
        if (grecv(f, h, payload, max))
            return;
        turn(f);
    }
    fail_msg("no packet from the device");
}

static void assert_quiet(struct fx *f)
{
    for (int i = 0; i < 20; i++)
        turn(f);
    assert_int_equal(used_idx(f, RXQ), f->rx_seen);
}

static int hconnect(const char *path)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(fcntl(fd, F_SETFL, O_NONBLOCK), 0);
    return fd;
}

/* Reads exactly n bytes from a non-blocking socket, turning the loop meanwhile; 0 at EOF. */
static size_t hread(struct fx *f, int fd, void *buf, size_t n)
{
    size_t got = 0;
    for (int i = 0; got < n && i < MAX_TURNS; i++) {
        ssize_t r = read(fd, (uint8_t *)buf + got, n - got);
        if (r == 0)
            break;
        if (r > 0)
            got += (size_t)r;
        else
            turn(f);
    }
    return got;
}

static void hwrite(int fd, const void *buf, size_t n)
{
    assert_int_equal(write(fd, buf, n), (ssize_t)n);
}

/* Whether the host socket reached its end within a while. */
static bool heof(struct fx *f, int fd)
{
    char c;
    for (int i = 0; i < MAX_TURNS; i++) {
        ssize_t r = read(fd, &c, 1);
        if (r == 0 || (r < 0 && errno == ECONNRESET))
            return true;
        if (r > 0)
            return false;
        turn(f);
    }
    return false;
}

/* A host program connects to guest port `port`, the guest accepts: returns the host fd and
 * the host port. */
static int host_connect(struct fx *f, uint32_t port, uint32_t *hport)
{
    char line[32];
    struct hdr h;
    int fd = hconnect(f->path);
    snprintf(line, sizeof(line), "CONNECT %u\n", port);
    hwrite(fd, line, strlen(line));
    grecv_wait(f, &h, NULL, 0);
    assert_int_equal(h.op, OP_REQUEST);
    assert_int_equal(h.dst_port, port);
    assert_true(h.src_port >= 1u << 30);
    assert_int_equal(h.buf_alloc, VIRTIO_VSOCK_BUF_ALLOC);
    *hport = h.src_port;
    gsend(f, OP_RESPONSE, port, h.src_port, 0, NULL, 0);
    char want[32], got[32] = { 0 };
    snprintf(want, sizeof(want), "OK %u\n", h.src_port);
    assert_int_equal(hread(f, fd, got, strlen(want)), strlen(want));
    assert_string_equal(got, want);
    return fd;
}

/* A UNIX listener where guest connections to host port `port` go. */
static int host_listen(struct fx *f, uint32_t port)
{
    char path[80];
    snprintf(path, sizeof(path), "%s_%u", f->path, port);
    int fd = unix_socket_listen(path, 256, NULL);
    assert_true(fd >= 0);
    return fd;
}

static void host_unlisten(struct fx *f, int fd, uint32_t port)
{
    char path[80];
    snprintf(path, sizeof(path), "%s_%u", f->path, port);
    close(fd);
    unlink(path);
}

/* The guest connects from `gport` to host port `port`, accepted: returns the host's fd. */
static int guest_connect(struct fx *f, int listen_fd, uint32_t gport, uint32_t port)
{
    struct hdr h;
    gsend(f, OP_REQUEST, gport, port, 0, NULL, 0);
    grecv_wait(f, &h, NULL, 0);
    assert_int_equal(h.op, OP_RESPONSE);
    assert_int_equal(h.src_port, port);
    assert_int_equal(h.dst_port, gport);
    int fd = accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
    assert_true(fd >= 0);
    return fd;
}

static void fill_pattern(uint8_t *buf, size_t n, unsigned seed)
{
    uint32_t x = seed * 2654435761u + 1;
    for (size_t i = 0; i < n; i++) {
        x = x * 1103515245u + 12345u;
        buf[i] = (uint8_t)(x >> 16);
    }
}

/* ---- tests ---- */

static void test_config_space(void **state)
{
    (void)state;
    struct fx *f = fx_new();
    uint64_t cid = 0;
    uint32_t hi = 1;
    f->vdev.ops->read_config(&f->vdev, 0, &cid, 8);
    assert_int_equal(cid, CID);
    f->vdev.ops->read_config(&f->vdev, 4, &hi, 4);
    assert_int_equal(hi, 0);
    fx_free(f);
}

static void test_create_refuses(void **state)
{
    (void)state;
    struct event_loop loop;
    struct virtio_device vdev = { 0 };
    struct virtio_vsock *vs;
    char long_path[120];
    assert_int_equal(loop_init(&loop, 16), 0);
    struct virtio_vsock_config cfg = { .guest_cid = 2, .path = "/tmp/godwit-vsock-x.sock" };
    assert_int_equal(virtio_vsock_create(&vs, &cfg, &loop, NULL, &vdev), -EINVAL);
    cfg.guest_cid = UINT32_MAX;
    assert_int_equal(virtio_vsock_create(&vs, &cfg, &loop, NULL, &vdev), -EINVAL);
    memset(long_path, 'a', sizeof(long_path) - 1);
    long_path[0] = '/';
    long_path[100] = '\0'; /* fits sun_path, but not with "_4294967295" after it */
    cfg = (struct virtio_vsock_config){ .guest_cid = 3, .path = long_path };
    assert_int_equal(virtio_vsock_create(&vs, &cfg, &loop, NULL, &vdev), -EINVAL);
    loop_destroy(&loop);
}

/* CONNECT from the host, data both ways, the host closes, the guest resets. */
static void test_host_connect(void **state)
{
    (void)state;
    struct fx *f = fx_new();
    struct hdr h;
    char buf[64];
    uint32_t hport;
    int fd = host_connect(f, 5000, &hport);

    hwrite(fd, "ping", 4);
    grecv_wait(f, &h, buf, sizeof(buf));
    assert_int_equal(h.op, OP_RW);
    assert_int_equal(h.len, 4);
    assert_memory_equal(buf, "ping", 4);
    assert_int_equal(h.src_port, hport);
    assert_int_equal(h.dst_port, 5000);

    gsend(f, OP_RW, 5000, hport, 0, "pong!", 5);
    assert_int_equal(hread(f, fd, buf, 5), 5);
    assert_memory_equal(buf, "pong!", 5);

    close(fd); /* gone altogether: the guest hears both directions shut */
    grecv_wait(f, &h, NULL, 0);
    assert_int_equal(h.op, OP_SHUTDOWN);
    assert_int_equal(h.flags, 3);
    gsend(f, OP_RST, 5000, hport, 0, NULL, 0);
    turn(f);
    assert_int_equal(counters(f).conns, 0);
    assert_int_equal(counters(f).conns_opened, 1);
    fx_free(f);
}

/* A host program that shuts only its sending side: the guest hears SEND alone and can still
 * answer; its close then ends the connection with a RST, and the program sees its end. */
static void test_host_half_close(void **state)
{
    (void)state;
    struct fx *f = fx_new();
    struct hdr h;
    char buf[16];
    uint32_t hport;
    int fd = host_connect(f, 5000, &hport);
    assert_int_equal(shutdown(fd, SHUT_WR), 0);
    grecv_wait(f, &h, NULL, 0);
    assert_int_equal(h.op, OP_SHUTDOWN);
    assert_int_equal(h.flags, 2); /* it sends no more, and still reads */
    gsend(f, OP_RW, 5000, hport, 0, "reply", 5);
    assert_int_equal(hread(f, fd, buf, 5), 5);
    assert_memory_equal(buf, "reply", 5);
    gsend(f, OP_SHUTDOWN, 5000, hport, 3, NULL, 0);
    grecv_wait(f, &h, NULL, 0);
    assert_int_equal(h.op, OP_RST);
    assert_true(heof(f, fd));
    close(fd);
    turn(f);
    assert_int_equal(counters(f).conns, 0);
    fx_free(f);
}

/* A guest that refuses: the host program's socket is closed without an OK. */
static void test_host_connect_refused(void **state)
{
    (void)state;
    struct fx *f = fx_new();
    struct hdr h;
    int fd = hconnect(f->path);
    hwrite(fd, "CONNECT 7\n", 10);
    grecv_wait(f, &h, NULL, 0);
    assert_int_equal(h.op, OP_REQUEST);
    gsend(f, OP_RST, 7, h.src_port, 0, NULL, 0);
    assert_true(heof(f, fd));
    close(fd);
    assert_int_equal(counters(f).conns, 0);
    fx_free(f);
}

/* Bad CONNECT lines are closed; bytes after a good one are the stream's. */
static void test_connect_lines(void **state)
{
    (void)state;
    static const char *const bad[] = { "CONNECT\n", "CONNECT x\n", "CONNECT 4294967296\n",
                                       "connect 5\n", "CONNECT  5\n", "CONNECT 5 \n",
                                       "CONNECT 123456789012345678901234567890\n" };
    struct fx *f = fx_new();
    struct hdr h;
    char buf[16];
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        int fd = hconnect(f->path);
        hwrite(fd, bad[i], strlen(bad[i]));
        assert_true(heof(f, fd));
        close(fd);
    }
    assert_int_equal(counters(f).conns_refused, sizeof(bad) / sizeof(bad[0]));
    assert_quiet(f);

    /* Sent in pieces, with data right behind the newline. */
    int fd = hconnect(f->path);
    hwrite(fd, "CONN", 4);
    turn(f);
    hwrite(fd, "ECT 42\nearly", 12);
    grecv_wait(f, &h, NULL, 0);
    assert_int_equal(h.op, OP_REQUEST);
    assert_int_equal(h.dst_port, 42);
    uint32_t hport = h.src_port;
    gsend(f, OP_RESPONSE, 42, hport, 0, NULL, 0);
    grecv_wait(f, &h, buf, sizeof(buf));
    assert_int_equal(h.op, OP_RW);
    assert_int_equal(h.len, 5);
    assert_memory_equal(buf, "early", 5);
    close(fd);
    fx_free(f);
}

/* Programs that connect and never finish their CONNECT line are closed after the timeout,
 * and one that sends its line in time is served meanwhile. */
static void test_connect_line_timeout(void **state)
{
    (void)state;
    struct fx *f = fx_new_with(100);
    struct hdr h;
    int silent = hconnect(f->path);
    int partial = hconnect(f->path);
    hwrite(partial, "CONNECT 4", 9);
    turn(f);
    int prompt = hconnect(f->path);
    hwrite(prompt, "CONNECT 9\n", 10);
    grecv_wait(f, &h, NULL, 0);
    assert_int_equal(h.op, OP_REQUEST);
    assert_int_equal(h.dst_port, 9);
    assert_true(heof(f, silent));
    assert_true(heof(f, partial));
    assert_int_equal(counters(f).conns_refused, 2);
    close(silent);
    close(partial);
    close(prompt);
    fx_free(f);
}

/* The guest connects to <path>_<port>; without a listener there, RST. */
static void test_guest_connect(void **state)
{
    (void)state;
    struct fx *f = fx_new();
    struct hdr h;
    char buf[16];
    int l = host_listen(f, 6000);
    int fd = guest_connect(f, l, 1234, 6000);
    gsend(f, OP_RW, 1234, 6000, 0, "hello", 5);
    assert_int_equal(hread(f, fd, buf, 5), 5);
    assert_memory_equal(buf, "hello", 5);
    hwrite(fd, "back", 4);
    grecv_wait(f, &h, buf, sizeof(buf));
    assert_int_equal(h.op, OP_RW);
    assert_memory_equal(buf, "back", 4);

    gsend(f, OP_REQUEST, 1235, 6001, 0, NULL, 0);
    grecv_wait(f, &h, NULL, 0);
    assert_int_equal(h.op, OP_RST);
    assert_int_equal(h.src_port, 6001);
    assert_int_equal(h.dst_port, 1235);
    assert_int_equal(counters(f).conns_refused, 1);

    /* Shutdown of the guest's sending side: the host reads its end, and can still answer. */
    gsend(f, OP_SHUTDOWN, 1234, 6000, 2, NULL, 0);
    assert_true(heof(f, fd));
    hwrite(fd, "bye", 3);
    grecv_wait(f, &h, buf, sizeof(buf));
    assert_int_equal(h.op, OP_RW);
    assert_memory_equal(buf, "bye", 3);
    /* Both ways: the device answers RST and closes. */
    gsend(f, OP_SHUTDOWN, 1234, 6000, 3, NULL, 0);
    grecv_wait(f, &h, NULL, 0);
    assert_int_equal(h.op, OP_RST);
    turn(f);
    assert_int_equal(counters(f).conns, 0);
    close(fd);
    host_unlisten(f, l, 6000);
    fx_free(f);
}

/* Takes the device's packets: data appended to `in` (guest consumption counted and credit
 * given back every 64 KiB), credit updates noted. */
static void guest_take(struct fx *f, uint8_t *in, size_t *in_len, uint32_t gport, uint32_t hport,
                       uint32_t *credit_sent)
{
    struct hdr h;
    static uint8_t buf[RX_LEN];
    while (grecv(f, &h, buf, sizeof(buf))) {
        assert_int_equal(h.src_port, hport);
        assert_int_equal(h.dst_port, gport);
        if (h.op == OP_RW) {
            memcpy(in + *in_len, buf, h.len);
            *in_len += h.len;
            f->fwd_cnt += h.len;
        } else {
            assert_int_equal(h.op, OP_CREDIT_UPDATE);
        }
    }
    if (f->fwd_cnt - *credit_sent >= (64u << 10)) {
        gsend(f, OP_CREDIT_UPDATE, gport, hport, 0, NULL, 0);
        *credit_sent = f->fwd_cnt;
    }
}

/* 4 MiB each way with the credit protocol on both sides; the bytes arrive as sent. */
static void test_bulk_both_ways(void **state)
{
    (void)state;
    const size_t total = 4u << 20;
    struct fx *f = fx_new();
    uint8_t *out = malloc(total), *in = malloc(total);
    assert_non_null(out);
    assert_non_null(in);
    int l = host_listen(f, 6000);
    int fd = guest_connect(f, l, 1234, 6000);

    /* Guest to host, within the device's credit, the host reading as it comes. */
    fill_pattern(out, total, 1);
    size_t sent = 0, got = 0, in_len = 0;
    uint32_t tx_cnt = 0, credit_sent = 0;
    for (int i = 0; got < total && i < 20 * MAX_TURNS; i++) {
        uint32_t room = f->peer_buf_alloc - (tx_cnt - f->peer_fwd);
        uint32_t n = total - sent < 60000 ? (uint32_t)(total - sent) : 60000;
        if (n && n <= room) {
            gsend(f, OP_RW, 1234, 6000, 0, out + sent, n);
            sent += n;
            tx_cnt += n;
            continue;
        }
        ssize_t r = read(fd, in + got, total - got);
        if (r > 0)
            got += (size_t)r;
        else
            turn(f);
        guest_take(f, in, &in_len, 1234, 6000, &credit_sent); /* credit updates */
    }
    assert_int_equal(got, total);
    assert_memory_equal(in, out, total);
    assert_int_equal(counters(f).credit_violations, 0);

    /* Host to guest: the host writes as fast as the socket takes it. */
    fill_pattern(out, total, 2);
    sent = 0;
    in_len = 0;
    for (int i = 0; in_len < total && i < 20 * MAX_TURNS; i++) {
        if (sent < total) {
            ssize_t w = write(fd, out + sent, total - sent);
            if (w > 0)
                sent += (size_t)w;
        }
        turn(f);
        guest_take(f, in, &in_len, 1234, 6000, &credit_sent);
    }
    assert_int_equal(in_len, total);
    assert_memory_equal(in, out, total);
    assert_int_equal(counters(f).buffered, 0);
    close(fd);
    host_unlisten(f, l, 6000);
    free(out);
    free(in);
    fx_free(f);
}

/* The device never sends past the guest's credit, and goes on when it gets more. */
static void test_credit_respected(void **state)
{
    (void)state;
    struct fx *f = fx_new();
    static uint8_t data[5000], buf[RX_LEN];
    struct hdr h;
    uint32_t hport, got = 0;
    f->buf_alloc = 1000;
    int fd = host_connect(f, 80, &hport);
    hwrite(fd, data, sizeof(data));
    for (int i = 0; i < 50; i++) {
        turn(f);
        while (grecv(f, &h, buf, sizeof(buf))) {
            assert_int_equal(h.op, OP_RW);
            got += h.len;
        }
    }
    assert_int_equal(got, 1000);
    f->fwd_cnt = 1000; /* consumed: tell the device */
    gsend(f, OP_CREDIT_UPDATE, 80, hport, 0, NULL, 0);
    for (int i = 0; i < 50; i++) {
        turn(f);
        while (grecv(f, &h, buf, sizeof(buf)))
            got += h.len;
    }
    assert_int_equal(got, 2000);
    /* A guest asking for our credit gets it. */
    gsend(f, OP_CREDIT_REQUEST, 80, hport, 0, NULL, 0);
    grecv_wait(f, &h, NULL, 0);
    assert_int_equal(h.op, OP_CREDIT_UPDATE);
    assert_int_equal(h.buf_alloc, VIRTIO_VSOCK_BUF_ALLOC);
    close(fd);
    fx_free(f);
}

/* A guest sending past our credit to a host program that does not read: reset, and the
 * device never holds more than the credit it gave. */
static void test_credit_lie(void **state)
{
    (void)state;
    struct fx *f = fx_new();
    static uint8_t chunk[60000];
    struct hdr h;
    int l = host_listen(f, 6000);
    int fd = guest_connect(f, l, 1234, 6000);
    int i;
    for (i = 0; i < 200 && counters(f).credit_violations == 0; i++) {
        gsend(f, OP_RW, 1234, 6000, 0, chunk, sizeof(chunk));
        assert_true(counters(f).buffered <= VIRTIO_VSOCK_BUF_ALLOC);
    }
    assert_int_equal(counters(f).credit_violations, 1);
    assert_int_equal(counters(f).buffered, 0);
    bool rst = false;
    while (grecv(f, &h, NULL, 0) || (turn(f), grecv(f, &h, NULL, 0)))
        rst |= h.op == OP_RST;
    assert_true(rst);
    assert_int_equal(counters(f).conns, 0);
    close(fd);
    host_unlisten(f, l, 6000);
    fx_free(f);
}

/* Every malformed header is dropped and counted, with no answer and no connection. */
static void test_bad_packets(void **state)
{
    (void)state;
    struct fx *f = fx_new();
    int l = host_listen(f, 6000);
    static uint8_t big[VIRTIO_VSOCK_MAX_PKT + 1];
    struct hdr h = ghdr(f, OP_REQUEST, 1, 6000);
    unsigned bad = 0;

    h.src_cid = 4; /* not the guest's */
    gsend_raw(f, &h, NULL, 0, HDR), bad++;
    h = ghdr(f, OP_REQUEST, 1, 6000);
    h.dst_cid = 1;
    gsend_raw(f, &h, NULL, 0, HDR), bad++;
    h = ghdr(f, OP_REQUEST, 1, 6000);
    h.type = 2; /* seqpacket */
    gsend_raw(f, &h, NULL, 0, HDR), bad++;
    h = ghdr(f, 0, 1, 6000);
    gsend_raw(f, &h, NULL, 0, HDR), bad++;
    h = ghdr(f, 8, 1, 6000);
    gsend_raw(f, &h, NULL, 0, HDR), bad++;
    h = ghdr(f, OP_REQUEST, 1, 6000);
    gsend_raw(f, &h, NULL, 0, HDR - 1), bad++; /* a short header */
    h = ghdr(f, OP_RW, 1, 6000);
    h.len = 100; /* more than the chain holds */
    gsend_raw(f, &h, NULL, 0, HDR + 99), bad++;
    h.len = sizeof(big); /* more than a packet may carry */
    gsend_raw(f, &h, big, sizeof(big), HDR + sizeof(big)), bad++;
    h = ghdr(f, OP_REQUEST, 1, 6000);
    h.len = 1; /* a payload on a control packet */
    gsend_raw(f, &h, "x", 1, HDR + 1), bad++;
    h = ghdr(f, OP_SHUTDOWN, 1, 6000);
    h.flags = 4;
    gsend_raw(f, &h, NULL, 0, HDR), bad++;
    assert_int_equal(counters(f).bad_packets, bad);
    assert_int_equal(counters(f).conns_opened, 0);
    assert_quiet(f);

    /* Well formed but for no connection: RST, except for a RST. */
    struct hdr r;
    gsend(f, OP_RW, 9, 6000, 0, "zz", 2);
    grecv_wait(f, &r, NULL, 0);
    assert_int_equal(r.op, OP_RST);
    gsend(f, OP_RST, 9, 6000, 0, NULL, 0);
    assert_quiet(f);
    host_unlisten(f, l, 6000);
    fx_free(f);
}

/* Connections up to the cap, then RST; host programs past the pending cap are closed. */
static void test_connection_flood(void **state)
{
    (void)state;
    struct fx *f = fx_new();
    struct hdr h;
    int l = host_listen(f, 7000);
    unsigned responses = 0, resets = 0;
    for (uint32_t p = 0; p < VIRTIO_VSOCK_MAX_CONNS + 8; p++) {
        gsend(f, OP_REQUEST, 10000 + p, 7000, 0, NULL, 0);
        while (grecv(f, &h, NULL, 0)) {
            responses += h.op == OP_RESPONSE;
            resets += h.op == OP_RST;
        }
    }
    for (int i = 0; i < 20; i++, turn(f))
        while (grecv(f, &h, NULL, 0)) {
            responses += h.op == OP_RESPONSE;
            resets += h.op == OP_RST;
        }
    assert_int_equal(responses, VIRTIO_VSOCK_MAX_CONNS);
    assert_int_equal(resets, 8);
    assert_int_equal(counters(f).conns, VIRTIO_VSOCK_MAX_CONNS);
    assert_int_equal(counters(f).conns_refused, 8);

    /* A host program's CONNECT is refused too while the table is full. */
    int fd = hconnect(f->path);
    hwrite(fd, "CONNECT 1\n", 10);
    assert_true(heof(f, fd));
    close(fd);

    /* Host programs that never finish their line: the first ones wait, the rest are closed. */
    int fds[VIRTIO_VSOCK_MAX_PENDING + 4];
    unsigned closed = 0;
    for (unsigned i = 0; i < VIRTIO_VSOCK_MAX_PENDING + 4; i++)
        fds[i] = hconnect(f->path);
    for (int i = 0; i < 20; i++)
        turn(f);
    for (unsigned i = 0; i < VIRTIO_VSOCK_MAX_PENDING + 4; i++) {
        char c;
        closed += read(fds[i], &c, 1) == 0;
        close(fds[i]);
    }
    assert_int_equal(closed, 4);
    host_unlisten(f, l, 7000);
    fx_free(f);
}

/* Snapshot: the CID is the state; a load owes the guest a TRANSPORT_RESET event. */
static void test_snapshot_event(void **state)
{
    (void)state;
    struct fx *f = fx_new();
    uint8_t saved[MODEL_STATE_MAX], other[MODEL_STATE_MAX];
    offer(f, EVQ, 0, 8, true);
    notify(f, EVQ);
    turn(f);
    assert_int_equal(used_idx(f, EVQ), 0); /* nothing to tell yet */
    assert_int_equal(f->vdev.ops->quiesce(&f->vdev), 0);
    size_t len = model_save(&f->vdev, saved);
    assert_int_equal(len, 8);
    memcpy(other, saved, len);
    other[0] ^= 1;
    assert_int_not_equal(model_load(&f->vdev, other, len, 1), 0);
    assert_int_equal(model_load(&f->vdev, saved, len, 1), 0);
    f->vdev.ops->resume(&f->vdev);
    assert_int_equal(used_idx(f, EVQ), 1);
    struct virtq_used_elem e = used_elem(f, EVQ, 0);
    assert_int_equal(e.len, 4);
    uint32_t id = 1;
    memcpy(&id, host(f, BUF_GPA(EVQ, 0), 4), 4);
    assert_int_equal(id, 0); /* VIRTIO_VSOCK_EVENT_TRANSPORT_RESET */
    fx_free(f);
}

/* A pause cancels the polls; data that came meanwhile flows after resume. */
static void test_quiesce_resume(void **state)
{
    (void)state;
    struct fx *f = fx_new();
    struct hdr h;
    char buf[16];
    uint32_t hport;
    int fd = host_connect(f, 5000, &hport);
    assert_int_equal(f->vdev.ops->quiesce(&f->vdev), 0);
    hwrite(fd, "later", 5);
    for (int i = 0; i < 10; i++)
        turn(f);
    assert_int_equal(used_idx(f, RXQ), f->rx_seen);
    f->vdev.ops->resume(&f->vdev);
    grecv_wait(f, &h, buf, sizeof(buf));
    assert_int_equal(h.op, OP_RW);
    assert_memory_equal(buf, "later", 5);
    close(fd);
    fx_free(f);
}

/* A device reset closes what the guest knew: the host programs see their end. */
static void test_reset_closes(void **state)
{
    (void)state;
    struct fx *f = fx_new();
    uint32_t hport;
    int fd = host_connect(f, 5000, &hport);
    f->vdev.ops->reset(&f->vdev);
    assert_true(heof(f, fd));
    close(fd);
    assert_int_equal(counters(f).conns, 0);
    fx_free(f);
}

/* A live upgrade: the destination's device serves the source's listening socket. A host
 * program that connects while the source is paused waits in the backlog and reaches the
 * destination's guest through the same path; the source, having given the path up, leaves it
 * when it goes, and the destination unlinks it only once it owns it. */
static void test_handed_over_socket(void **state)
{
    (void)state;
    struct fx *src = fx_new();
    struct fx *dst = fx_make(0, src->path, virtio_vsock_listen_fd(src->vs));
    struct stat st;
    struct hdr h;
    uint32_t hport;
    assert_int_not_equal(virtio_vsock_listen_fd(dst->vs), virtio_vsock_listen_fd(src->vs));
    assert_int_equal(src->vdev.ops->quiesce(&src->vdev), 0);
    int fd = hconnect(src->path);
    hwrite(fd, "CONNECT 5000\n", 13);
    virtio_vsock_own_path(src->vs, false); /* GO */
    fx_free(src);
    assert_int_equal(lstat(dst->path, &st), 0);
    assert_true(S_ISSOCK(st.st_mode));
    grecv_wait(dst, &h, NULL, 0);
    assert_int_equal(h.op, OP_REQUEST);
    assert_int_equal(h.dst_port, 5000);
    hport = h.src_port;
    gsend(dst, OP_RESPONSE, 5000, hport, 0, NULL, 0);
    char want[32], got[32] = { 0 };
    snprintf(want, sizeof(want), "OK %u\n", hport);
    assert_int_equal(hread(dst, fd, got, strlen(want)), strlen(want));
    assert_string_equal(got, want);
    close(fd);
    virtio_vsock_own_path(dst->vs, true);
    char path[64];
    snprintf(path, sizeof(path), "%s", dst->path);
    fx_free(dst);
    assert_int_equal(lstat(path, &st), -1);
    assert_int_equal(errno, ENOENT);
}

int main(void)
{
    log_set_level(LOG_LVL_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_config_space),
        cmocka_unit_test(test_create_refuses),
        cmocka_unit_test(test_host_connect),
        cmocka_unit_test(test_host_half_close),
        cmocka_unit_test(test_host_connect_refused),
        cmocka_unit_test(test_connect_lines),
        cmocka_unit_test(test_connect_line_timeout),
        cmocka_unit_test(test_guest_connect),
        cmocka_unit_test(test_bulk_both_ways),
        cmocka_unit_test(test_credit_respected),
        cmocka_unit_test(test_credit_lie),
        cmocka_unit_test(test_bad_packets),
        cmocka_unit_test(test_connection_flood),
        cmocka_unit_test(test_snapshot_event),
        cmocka_unit_test(test_quiesce_resume),
        cmocka_unit_test(test_reset_closes),
        cmocka_unit_test(test_handed_over_socket),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
