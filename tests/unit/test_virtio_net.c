/* test_virtio_net.c: virtio-net between a hand-driven guest and a socketpair standing in for
 * the tap (one packet per message, virtio_net_hdr in front). */
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
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>
#include <cmocka.h>

#include "fake_driver.h"

#include "io/loop.h"
#include "log.h"
#include "model_state.h"
#include "virtio/net.h"

#define QSIZE 16
#define DESC_GPA FAKE_DESC_GPA
#define AVAIL_GPA FAKE_AVAIL_GPA
#define USED_GPA FAKE_USED_GPA
#define QUEUE_STRIDE 0x10000ull
#define RX_GPA 0x400000ull  /* 4 KiB per rx buffer */
#define TX_GPA 0x600000ull
#define CTRL_GPA 0x700000ull
#define BAD_GPA (1ull << 40) /* not RAM */
#define HDR 12u

#define F_GUEST_CSUM 1
#define F_MAC 5
#define F_GUEST_TSO4 7
#define F_MRG_RXBUF 15
#define F_STATUS 16
#define F_CTRL_VQ 17
#define F_GUEST_ANNOUNCE 21
#define F_MQ 22
#define ALL_FEATURES (~0ull)
#define NO_MRG (~(1ull << F_MRG_RXBUF))

struct hdr {
    uint8_t flags, gso_type;
    uint16_t hdr_len, gso_size, csum_start, csum_offset, num_buffers;
};


struct fx {
    struct guest_memory gm;
    struct event_loop loop;
    struct virtio_device vdev;
    struct virtio_net *net;
    unsigned pairs;
    int peer[4];
    unsigned interrupts, config_interrupts, resets;
    uint16_t avail_idx[8], next_desc[8];
    struct loop_watch timer;
    unsigned ticks, max_ticks, want_q;
    int want_used; /* -1: run for max_ticks */
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

static void setup_queues(struct fx *f)
{
    for (unsigned q = 0; q < f->vdev.ops->nr_queues; q++) {
        uint64_t off = q * QUEUE_STRIDE;
        memset(gm_ptr(&f->gm, USED_GPA + off, 4 + 8 * QSIZE), 0, 4 + 8 * QSIZE);
        memset(gm_ptr(&f->gm, AVAIL_GPA + off, 4 + 2 * QSIZE), 0, 4 + 2 * QSIZE);
        f->avail_idx[q] = f->next_desc[q] = 0;
        assert_int_equal(virtq_setup(&f->vdev.queues[q], &f->gm, QSIZE, DESC_GPA + off,
                                     AVAIL_GPA + off, USED_GPA + off, false, false),
                         0);
    }
}

static void negotiate(struct fx *f, uint64_t mask)
{
    f->vdev.driver_features = (f->vdev.ops->features(&f->vdev) & mask) | 1ull << 32;
    setup_queues(f);
    assert_int_equal(f->vdev.ops->activate(&f->vdev), 0);
}

static struct fx *fx_open(unsigned pairs, uint64_t mask, const struct virtio_net_config *cfg)
{
    struct fx *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    f->pairs = pairs;
    int fds[4];
    for (unsigned i = 0; i < pairs; i++) {
        int sv[2];
        assert_int_equal(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
        fds[i] = sv[0];
        f->peer[i] = sv[1];
    }
    assert_int_equal(gm_init(&f->gm, 64ull << 20, false), 0);
    assert_int_equal(loop_init(&f->loop, 64), 0);
    f->vdev.transport = f;
    f->vdev.interrupt_queue = fake_interrupt;
    f->vdev.interrupt_config = fake_config_interrupt;
    f->vdev.needs_reset = fake_needs_reset;
    struct virtio_net_config c = { .queues = pairs };
    if (cfg)
        c = *cfg;
    assert_int_equal(virtio_net_create_fds(&f->net, &c, fds, &f->loop, &f->gm, &f->vdev), 0);
    negotiate(f, mask);
    return f;
}

static struct fx *fx_new(uint64_t mask)
{
    return fx_open(1, mask, NULL);
}

static void fx_free(struct fx *f)
{
    virtio_net_destroy(f->net);
    loop_destroy(&f->loop);
    gm_destroy(&f->gm);
    for (unsigned i = 0; i < f->pairs; i++)
        close(f->peer[i]);
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

/* Writes a chain into queue q's descriptor table and offers it; returns its head. */
static uint16_t offer(struct fx *f, unsigned q, const struct fake_seg *segs, unsigned n)
{
    return fake_offer(&f->gm, fake_ring(q, QSIZE), &f->next_desc[q], &f->avail_idx[q], segs, n);
}

/* Offers one writable rx buffer of `len` bytes, in slot `i` of the rx area of pair 0. */
static void offer_rx(struct fx *f, unsigned q, unsigned i, uint32_t len)
{
    struct fake_seg s = { RX_GPA + 0x1000ull * i + q * 0x40000ull, len, true };
    offer(f, q, &s, 1);
}

static uint8_t *rx_buf(struct fx *f, unsigned q, unsigned i)
{
    return host(f, RX_GPA + 0x1000ull * i + q * 0x40000ull, 0x1000);
}

static bool tick(struct event_loop *loop, void *opaque, int res)
{
    (void)res;
    struct fx *f = opaque;
    if ((f->want_used >= 0 && used_idx(f, f->want_q) == f->want_used) ||
        ++f->ticks >= f->max_ticks)
        loop->stop = true;
    else
        assert_int_equal(loop_after(loop, &f->timer, 1, tick, f), 0);
    return false;
}

/* Runs the loop until queue q's used index reaches `want` (-1: never), for max_ms at most. */
static void run_until(struct fx *f, unsigned q, int want, unsigned max_ms)
{
    f->want_q = q;
    f->want_used = want;
    f->ticks = 0;
    f->max_ticks = max_ms;
    f->loop.stop = false;
    assert_int_equal(loop_after(&f->loop, &f->timer, 1, tick, f), 0);
    assert_int_equal(loop_run(&f->loop), 0);
}

static void run_for(struct fx *f, unsigned ms)
{
    run_until(f, 0, -1, ms);
}

static uint8_t pattern(size_t i, unsigned seed)
{
    return (uint8_t)(i * 13 + seed);
}

/* The peer (the tap's far side) sends one packet: a header and `len` patterned bytes. */
static void peer_send(struct fx *f, unsigned pair, struct hdr h, size_t len, unsigned seed)
{
    uint8_t *pkt = malloc(HDR + len);
    assert_non_null(pkt);
    memcpy(pkt, &h, HDR);
    for (size_t i = 0; i < len; i++)
        pkt[HDR + i] = pattern(i, seed);
    assert_int_equal(send(f->peer[pair], pkt, HDR + len, MSG_NOSIGNAL), (ssize_t)(HDR + len));
    free(pkt);
}

static ssize_t peer_recv(struct fx *f, unsigned pair, void *buf, size_t size)
{
    struct pollfd pfd = { .fd = f->peer[pair], .events = POLLIN };
    if (poll(&pfd, 1, 1000) != 1)
        return -1;
    return recv(f->peer[pair], buf, size, MSG_DONTWAIT);
}

static struct virtio_net_counters counters(struct fx *f)
{
    struct virtio_net_counters c;
    virtio_net_counters(f->net, &c);
    return c;
}

static void notify(struct fx *f, unsigned q)
{
    f->vdev.ops->queue_notify(&f->vdev, q);
}

/* Offers a well-formed frame of `len` bytes on pair 0's tx queue and kicks it. */
static void guest_send(struct fx *f, size_t len, unsigned seed)
{
    struct hdr h = { .flags = 1, .csum_start = 34, .csum_offset = 16 };
    assert_int_equal(gm_write(&f->gm, TX_GPA, &h, HDR), 0);
    uint8_t *frame = host(f, TX_GPA + 0x100, len);
    for (size_t i = 0; i < len; i++)
        frame[i] = pattern(i, seed);
    struct fake_seg segs[2] = { { TX_GPA, HDR, false }, { TX_GPA + 0x100, (uint32_t)len, false } };
    offer(f, 1, segs, 2);
    notify(f, 1);
}

/* ---- tests ---- */

static void test_tx_frame(void **state)
{
    (void)state;
    struct fx *f = fx_new(ALL_FEATURES);
    guest_send(f, 60, 1);
    run_until(f, 1, 1, 3000);
    assert_int_equal(used_idx(f, 1), 1);
    assert_int_equal(used_elem(f, 1, 0).len, 0);
    uint8_t buf[256];
    assert_int_equal(peer_recv(f, 0, buf, sizeof(buf)), HDR + 60);
    struct hdr h;
    memcpy(&h, buf, HDR);
    assert_int_equal(h.flags, 1);
    assert_int_equal(h.csum_start, 34);
    assert_int_equal(h.csum_offset, 16);
    for (size_t i = 0; i < 60; i++)
        assert_int_equal(buf[HDR + i], pattern(i, 1));
    struct virtio_net_counters c = counters(f);
    assert_int_equal(c.tx_packets, 1);
    assert_int_equal(c.tx_bytes, 60);
    assert_int_equal(c.tx_dropped, 0);
    assert_int_equal(f->interrupts, 1);
    assert_int_equal(f->resets, 0);
    fx_free(f);
}

static void test_rx_packet(void **state)
{
    (void)state;
    struct fx *f = fx_new(ALL_FEATURES);
    offer_rx(f, 0, 0, 1526);
    notify(f, 0);
    peer_send(f, 0, (struct hdr){ .flags = 2, .num_buffers = 0x7777 }, 100, 2);
    run_until(f, 0, 1, 3000);
    assert_int_equal(used_idx(f, 0), 1);
    assert_int_equal(used_elem(f, 0, 0).len, HDR + 100);
    struct hdr h;
    memcpy(&h, rx_buf(f, 0, 0), HDR);
    assert_int_equal(h.num_buffers, 1);
    assert_int_equal(h.flags, 2); /* DATA_VALID: the guest negotiated GUEST_CSUM */
    for (size_t i = 0; i < 100; i++)
        assert_int_equal(rx_buf(f, 0, 0)[HDR + i], pattern(i, 2));
    struct virtio_net_counters c = counters(f);
    assert_int_equal(c.rx_packets, 1);
    assert_int_equal(c.rx_bytes, 100);
    assert_int_equal(f->interrupts, 1);
    fx_free(f);
}

/* A packet over three chains: none of them is visible before the last is filled. */
static void test_rx_mergeable(void **state)
{
    (void)state;
    struct fx *f = fx_new(ALL_FEATURES);
    offer_rx(f, 0, 0, 1024);
    offer_rx(f, 0, 1, 1024);
    notify(f, 0);
    peer_send(f, 0, (struct hdr){ 0 }, 2500, 3);
    run_for(f, 50);
    assert_int_equal(used_idx(f, 0), 0); /* two chains filled, held back */
    assert_int_equal(f->interrupts, 0);
    offer_rx(f, 0, 2, 1024);
    notify(f, 0);
    assert_int_equal(used_idx(f, 0), 3);
    assert_int_equal(used_elem(f, 0, 0).len, 1024);
    assert_int_equal(used_elem(f, 0, 1).len, 1024);
    assert_int_equal(used_elem(f, 0, 2).len, HDR + 2500 - 2048);
    struct hdr h;
    memcpy(&h, rx_buf(f, 0, 0), HDR);
    assert_int_equal(h.num_buffers, 3);
    for (size_t i = 0; i < 2500; i++) {
        size_t at = HDR + i;
        assert_int_equal(rx_buf(f, 0, (unsigned)(at / 1024))[at % 1024], pattern(i, 3));
    }
    assert_int_equal(counters(f).rx_packets, 1);
    assert_int_equal(f->interrupts, 1);
    fx_free(f);
}

/* Packets read straight into the chains: each takes as many as it needs (the first one
 * header and all), the chains popped beyond them go back and take the next packet, and a
 * used length is never more than what was written. */
static void test_rx_zero_copy(void **state)
{
    (void)state;
    struct fx *f = fx_new(ALL_FEATURES);
    for (unsigned i = 0; i < 4; i++)
        offer_rx(f, 0, i, 1024);
    notify(f, 0);
    run_for(f, 20); /* the first read finds nothing: the tap never makes a read wait */
    memset(rx_buf(f, 0, 2), 0xee, 1024);
    peer_send(f, 0, (struct hdr){ 0 }, 100, 8);
    run_until(f, 0, 1, 3000);
    peer_send(f, 0, (struct hdr){ 0 }, 1500, 9);
    run_until(f, 0, 3, 3000);
    assert_int_equal(used_idx(f, 0), 3);
    assert_int_equal(used_elem(f, 0, 0).id, 0);
    assert_int_equal(used_elem(f, 0, 0).len, HDR + 100);
    assert_int_equal(used_elem(f, 0, 1).len, 1024);
    assert_int_equal(used_elem(f, 0, 2).len, HDR + 1500 - 1024);
    struct hdr h;
    memcpy(&h, rx_buf(f, 0, 0), HDR);
    assert_int_equal(h.num_buffers, 1);
    memcpy(&h, rx_buf(f, 0, 1), HDR);
    assert_int_equal(h.num_buffers, 2);
    for (size_t i = 0; i < 100; i++)
        assert_int_equal(rx_buf(f, 0, 0)[HDR + i], pattern(i, 8));
    for (size_t i = 0; i < 1500; i++) {
        size_t at = HDR + i;
        assert_int_equal(rx_buf(f, 0, 1 + (unsigned)(at / 1024))[at % 1024], pattern(i, 9));
    }
    assert_int_equal(rx_buf(f, 0, 2)[HDR + 1500 - 1024], 0xee); /* past the used length */
    struct virtio_net_counters c = counters(f);
    assert_int_equal(c.rx_packets, 2);
    assert_int_equal(c.rx_zero_copy, 2);
    assert_int_equal(c.rx_dropped, 0);
    fx_free(f);
}

/* A burst waiting in the tap: read straight into the chains one after the other, in order,
 * until the chains run out mid-burst; the rest wait for the driver's next buffers. */
static void test_rx_burst(void **state)
{
    (void)state;
    struct fx *f = fx_new(ALL_FEATURES);
    for (unsigned i = 0; i < 6; i++)
        offer_rx(f, 0, i, 1024);
    notify(f, 0);
    run_for(f, 20);
    for (unsigned k = 0; k < 10; k++)
        peer_send(f, 0, (struct hdr){ 0 }, 100 + k, 20 + k);
    run_until(f, 0, 6, 3000);
    run_for(f, 50);
    assert_int_equal(used_idx(f, 0), 6); /* no chain left for the seventh */
    for (unsigned i = 6; i < 12; i++)
        offer_rx(f, 0, i, 1024);
    notify(f, 0);
    run_until(f, 0, 10, 3000);
    for (unsigned k = 0; k < 10; k++) {
        assert_int_equal(used_elem(f, 0, (uint16_t)k).id, k);
        assert_int_equal(used_elem(f, 0, (uint16_t)k).len, HDR + 100 + k);
        for (size_t i = 0; i < 100 + k; i++)
            assert_int_equal(rx_buf(f, 0, k)[HDR + i], pattern(i, 20 + k));
    }
    struct virtio_net_counters c = counters(f);
    assert_int_equal(c.rx_packets, 10);
    assert_int_equal(c.rx_dropped, 0);
    fx_free(f);
}

/* A packet that comes to an idle tap (the device waits for readability) reaches the guest in
 * the loop turn that sees the tap readable: not one turn later, after a read of its own. */
static void test_rx_idle_tap_one_turn(void **state)
{
    (void)state;
    struct fx *f = fx_new(ALL_FEATURES);
    offer_rx(f, 0, 0, 1024);
    notify(f, 0);
    run_for(f, 20); /* the tap is empty: the device now polls it */
    peer_send(f, 0, (struct hdr){ 0 }, 60, 9);
    assert_true(loop_run_once(&f->loop) >= 0);
    assert_int_equal(used_idx(f, 0), 1);
    assert_int_equal(used_elem(f, 0, 0).len, HDR + 60);
    assert_int_equal(rx_buf(f, 0, 0)[HDR + 59], pattern(59, 9));
    assert_int_equal(counters(f).rx_zero_copy, 1);
    fx_free(f);
}

static void test_rx_waits_for_buffers(void **state)
{
    (void)state;
    struct fx *f = fx_new(ALL_FEATURES);
    notify(f, 0); /* an rx kick with no buffer yet: starts reading */
    peer_send(f, 0, (struct hdr){ 0 }, 80, 4);
    peer_send(f, 0, (struct hdr){ 0 }, 90, 5);
    run_for(f, 50);
    assert_int_equal(used_idx(f, 0), 0);
    assert_int_equal(counters(f).rx_dropped, 0);
    offer_rx(f, 0, 0, 2048);
    offer_rx(f, 0, 1, 2048);
    notify(f, 0);
    run_until(f, 0, 2, 3000);
    assert_int_equal(used_idx(f, 0), 2);
    assert_int_equal(used_elem(f, 0, 0).len, HDR + 80);
    assert_int_equal(used_elem(f, 0, 1).len, HDR + 90);
    assert_int_equal(rx_buf(f, 0, 0)[HDR + 79], pattern(79, 4));
    assert_int_equal(rx_buf(f, 0, 1)[HDR + 89], pattern(89, 5));
    assert_int_equal(counters(f).rx_packets, 2);
    fx_free(f);
}

/* Without MRG_RXBUF a packet must fit one chain; one that does not is dropped. */
static void test_rx_too_big_without_mrg(void **state)
{
    (void)state;
    struct fx *f = fx_new(NO_MRG);
    offer_rx(f, 0, 0, 64);
    offer_rx(f, 0, 1, 1526);
    notify(f, 0);
    peer_send(f, 0, (struct hdr){ 0 }, 200, 6);
    peer_send(f, 0, (struct hdr){ .flags = 2 }, 40, 7);
    run_until(f, 0, 2, 3000);
    assert_int_equal(used_elem(f, 0, 0).len, 0);
    assert_int_equal(used_elem(f, 0, 1).len, HDR + 40);
    struct hdr h;
    memcpy(&h, rx_buf(f, 0, 1), HDR);
    assert_int_equal(h.num_buffers, 1);
    assert_int_equal(counters(f).rx_dropped, 1);
    assert_int_equal(counters(f).rx_packets, 1);
    assert_int_equal(f->resets, 0);
    fx_free(f);
}

/* Flags and GSO types the guest did not negotiate never reach it. */
static void test_rx_offloads_not_negotiated(void **state)
{
    (void)state;
    struct fx *f = fx_new(~(1ull << F_GUEST_CSUM | 1ull << F_GUEST_TSO4));
    offer_rx(f, 0, 0, 1526);
    notify(f, 0);
    peer_send(f, 0, (struct hdr){ .gso_type = 1, .gso_size = 1448 }, 100, 8);
    peer_send(f, 0, (struct hdr){ .flags = 2 }, 50, 9);
    run_until(f, 0, 1, 3000);
    assert_int_equal(used_elem(f, 0, 0).len, HDR + 50);
    assert_int_equal(rx_buf(f, 0, 0)[0], 0); /* DATA_VALID cleared */
    assert_int_equal(counters(f).rx_dropped, 1);
    fx_free(f);
}

static void test_tx_malformed_dropped(void **state)
{
    (void)state;
    struct fx *f = fx_new(ALL_FEATURES);
    struct fake_seg shorter = { TX_GPA, 8, false };
    offer(f, 1, &shorter, 1);
    struct fake_seg with_writable[2] = { { TX_GPA, HDR + 60, false }, { TX_GPA + 0x800, 16, true } };
    offer(f, 1, with_writable, 2);
    notify(f, 1);
    assert_int_equal(used_idx(f, 1), 2); /* answered at once */
    assert_int_equal(counters(f).tx_dropped, 2);
    assert_int_equal(f->resets, 0);
    guest_send(f, 70, 10);
    run_until(f, 1, 3, 3000);
    uint8_t buf[256];
    assert_int_equal(peer_recv(f, 0, buf, sizeof(buf)), HDR + 70);
    assert_int_equal(counters(f).tx_packets, 1);
    fx_free(f);
}

static void test_ring_violation_needs_reset(void **state)
{
    (void)state;
    struct fx *f = fx_new(ALL_FEATURES);
    struct fake_seg bad = { BAD_GPA, 100, false };
    offer(f, 1, &bad, 1);
    notify(f, 1);
    assert_int_equal(f->resets, 1);
    assert_int_equal(used_idx(f, 1), 0);
    fx_free(f);

    f = fx_new(ALL_FEATURES);
    uint16_t runaway = QSIZE + 1; /* avail index ahead by more than the ring */
    assert_int_equal(gm_write(&f->gm, AVAIL_GPA + 2, &runaway, 2), 0);
    notify(f, 0);
    peer_send(f, 0, (struct hdr){ 0 }, 60, 11);
    run_for(f, 50);
    assert_int_equal(f->resets, 1);
    fx_free(f);
}

static void test_config_space(void **state)
{
    (void)state;
    struct virtio_net_config cfg = { .mac = { 0x52, 0x54, 0, 1, 2, 3 }, .mac_set = true };
    struct fx *f = fx_open(1, ALL_FEATURES, &cfg);
    uint8_t mac[6];
    uint16_t status = 0, pairs = 0;
    uint32_t beyond = 7;
    f->vdev.ops->read_config(&f->vdev, 0, mac, 6);
    f->vdev.ops->read_config(&f->vdev, 6, &status, 2);
    f->vdev.ops->read_config(&f->vdev, 8, &pairs, 2);
    f->vdev.ops->read_config(&f->vdev, 10, &beyond, 4);
    assert_memory_equal(mac, cfg.mac, 6);
    assert_int_equal(status, 1); /* LINK_UP */
    assert_int_equal(pairs, 1);
    assert_int_equal(beyond, 0);
    uint64_t feat = f->vdev.ops->features(&f->vdev);
    assert_true(feat & 1ull << F_MAC);
    assert_true(feat & 1ull << F_STATUS);
    assert_true(feat & 1ull << F_MRG_RXBUF);
    assert_true(feat & 1ull << F_CTRL_VQ); /* for GUEST_ANNOUNCE, even with one pair */
    assert_true(feat & 1ull << F_GUEST_ANNOUNCE);
    assert_false(feat & 1ull << F_MQ);
    assert_int_equal(f->vdev.ops->nr_queues, 3); /* rx, tx, control */
    fx_free(f);

    f = fx_new(ALL_FEATURES); /* a random MAC: unicast, locally administered */
    f->vdev.ops->read_config(&f->vdev, 0, mac, 6);
    assert_int_equal(mac[0] & 3, 2);
    fx_free(f);
}

static uint8_t ctrl(struct fx *f, uint8_t class, uint8_t cmd, uint16_t arg)
{
    unsigned q = 2 * f->pairs;
    uint8_t msg[4] = { class, cmd, (uint8_t)arg, (uint8_t)(arg >> 8) };
    assert_int_equal(gm_write(&f->gm, CTRL_GPA, msg, 4), 0);
    *(uint8_t *)host(f, CTRL_GPA + 0x100, 1) = 0xee;
    struct fake_seg segs[3] = { { CTRL_GPA, 2, false }, { CTRL_GPA + 2, 2, false },
                           { CTRL_GPA + 0x100, 1, true } };
    uint16_t want = (uint16_t)(used_idx(f, q) + 1);
    offer(f, q, segs, 3);
    notify(f, q);
    assert_int_equal(used_idx(f, q), want);
    return *(uint8_t *)host(f, CTRL_GPA + 0x100, 1);
}

static void test_multiqueue(void **state)
{
    (void)state;
    struct fx *f = fx_open(2, ALL_FEATURES, NULL);
    assert_int_equal(f->vdev.ops->nr_queues, 5);
    uint64_t feat = f->vdev.ops->features(&f->vdev);
    assert_true(feat & 1ull << F_CTRL_VQ);
    assert_true(feat & 1ull << F_MQ);
    uint16_t pairs = 0;
    f->vdev.ops->read_config(&f->vdev, 8, &pairs, 2);
    assert_int_equal(pairs, 2);

    /* Only the first pair receives until the driver asks for more. */
    offer_rx(f, 2, 0, 1526);
    notify(f, 2);
    peer_send(f, 1, (struct hdr){ 0 }, 64, 12);
    run_for(f, 30);
    assert_int_equal(used_idx(f, 2), 0);

    assert_int_equal(ctrl(f, 4, 0, 2), 0);  /* VQ_PAIRS_SET 2: OK */
    run_until(f, 2, 1, 3000);
    assert_int_equal(used_idx(f, 2), 1);
    assert_int_equal(used_elem(f, 2, 0).len, HDR + 64);
    assert_int_equal(ctrl(f, 4, 0, 3), 1);  /* more pairs than offered */
    assert_int_equal(ctrl(f, 4, 0, 0), 1);
    assert_int_equal(ctrl(f, 0, 0, 0), 1);  /* CTRL_RX: not offered */
    assert_int_equal(ctrl(f, 99, 1, 0), 1);
    assert_int_equal(f->resets, 0);
    fx_free(f);
}

static void test_reset_in_flight(void **state)
{
    (void)state;
    struct fx *f = fx_new(ALL_FEATURES);
    offer_rx(f, 0, 0, 1526);
    notify(f, 0);
    run_for(f, 5); /* the read waits in the kernel */
    guest_send(f, 60, 13); /* the write is prepared, not yet submitted */
    f->vdev.ops->reset(&f->vdev);
    assert_false(f->vdev.queues[0].enabled);
    peer_send(f, 0, (struct hdr){ 0 }, 60, 14);
    /* The write completes and is dropped; the tap's poll ends (a read into the guest's
     * buffers never waits), and nothing reads the packet: it waits for the next driver. */
    run_for(f, 50);
    assert_int_equal(used_idx(f, 0), 0);
    assert_int_equal(used_idx(f, 1), 0);
    assert_int_equal(f->interrupts, 0);
    uint8_t buf[256];
    assert_int_equal(peer_recv(f, 0, buf, sizeof(buf)), HDR + 60);

    /* The device works again after the driver sets it up anew. */
    negotiate(f, ALL_FEATURES);
    offer_rx(f, 0, 0, 1526);
    offer_rx(f, 0, 1, 1526);
    notify(f, 0);
    peer_send(f, 0, (struct hdr){ 0 }, 70, 15);
    run_until(f, 0, 2, 3000);
    assert_int_equal(used_elem(f, 0, 0).len, HDR + 60);
    assert_int_equal(used_elem(f, 0, 1).len, HDR + 70);
    guest_send(f, 80, 16);
    run_until(f, 1, 1, 3000);
    assert_int_equal(peer_recv(f, 0, buf, sizeof(buf)), HDR + 80);
    fx_free(f);
}

static void test_destroy_in_flight(void **state)
{
    (void)state;
    struct fx *f = fx_new(ALL_FEATURES);
    offer_rx(f, 0, 0, 1526);
    notify(f, 0);
    run_for(f, 5); /* the read waits in the kernel */
    guest_send(f, 60, 17); /* a write prepared, not yet submitted */
    virtio_net_destroy(f->net);
    f->net = NULL;
    run_for(f, 50); /* the orphans' completions free them (ASan checks the leak) */
    assert_int_equal(used_idx(f, 0), 0);
    assert_int_equal(used_idx(f, 1), 0);
    fx_free(f);

    /* The same with the read still waiting at the end. */
    f = fx_new(ALL_FEATURES);
    notify(f, 0);
    run_for(f, 5);
    virtio_net_destroy(f->net);
    f->net = NULL;
    run_for(f, 20);
    fx_free(f);
}

static void test_bad_config(void **state)
{
    (void)state;
    struct virtio_device vdev = { 0 };
    struct virtio_net *net;
    struct virtio_net_config cfg = { .tap = "a-name-far-too-long-for-linux" };
    assert_int_equal(virtio_net_create(&net, &cfg, NULL, NULL, &vdev), -EINVAL);
    cfg = (struct virtio_net_config){ .tap = "gw0", .queues = VIRTIO_NET_MAX_PAIRS + 1 };
    assert_int_equal(virtio_net_create(&net, &cfg, NULL, NULL, &vdev), -EINVAL);
}

/* ---- pause ---- */

/* Whether the peer has a packet waiting, without waiting for one. */
static bool peer_has_packet(struct fx *f, unsigned pair)
{
    struct pollfd pfd = { .fd = f->peer[pair], .events = POLLIN };
    return poll(&pfd, 1, 0) == 1;
}

/*
 * A packet spread over chains (MRG_RXBUF) that waits for a third one: quiesce hands the two
 * popped back (last_avail_idx rewound, nothing pending on the used ring). While quiesced a
 * packet from the tap does not reach guest memory; after resume both are delivered.
 */
static void test_quiesce_hands_back_rx(void **state)
{
    (void)state;
    struct fx *f = fx_new(ALL_FEATURES);
    struct virtqueue *vq = &f->vdev.queues[0];
    offer_rx(f, 0, 0, 1024);
    offer_rx(f, 0, 1, 1024);
    notify(f, 0);
    peer_send(f, 0, (struct hdr){ 0 }, 2500, 20);
    run_for(f, 50);
    assert_int_equal(vq->last_avail_idx, 2);
    assert_int_equal(vq->used_pending, 2);

    assert_int_equal(f->vdev.ops->quiesce(&f->vdev), 0);
    assert_int_equal(vq->last_avail_idx, 0);
    assert_int_equal(vq->used_pending, 0);
    assert_int_equal(used_idx(f, 0), 0);
    memset(rx_buf(f, 0, 0), '#', 0x1000);
    memset(rx_buf(f, 0, 1), '#', 0x1000);
    offer_rx(f, 0, 2, 1024);
    offer_rx(f, 0, 3, 1024);
    memset(rx_buf(f, 0, 2), '#', 0x1000);
    memset(rx_buf(f, 0, 3), '#', 0x1000);
    notify(f, 0);
    peer_send(f, 0, (struct hdr){ 0 }, 100, 21);
    run_for(f, 50);
    for (unsigned i = 0; i < 4; i++)
        assert_int_equal(rx_buf(f, 0, i)[0], '#');
    assert_int_equal(vq->last_avail_idx, 0);
    assert_int_equal(used_idx(f, 0), 0);
    assert_int_equal(f->interrupts, 0);

    f->vdev.ops->resume(&f->vdev);
    run_until(f, 0, 4, 3000);
    assert_int_equal(used_idx(f, 0), 4);
    struct hdr h;
    memcpy(&h, rx_buf(f, 0, 0), HDR);
    assert_int_equal(h.num_buffers, 3);
    for (size_t i = 0; i < 2500; i++) {
        size_t at = HDR + i;
        assert_int_equal(rx_buf(f, 0, (unsigned)(at / 1024))[at % 1024], pattern(i, 20));
    }
    assert_int_equal(used_elem(f, 0, 3).len, HDR + 100);
    assert_int_equal(rx_buf(f, 0, 3)[HDR + 99], pattern(99, 21));
    assert_int_equal(counters(f).rx_packets, 2);
    assert_int_equal(counters(f).rx_dropped, 0);
    fx_free(f);
}

/* Frames being written are finished and answered by quiesce; a frame offered while quiesced
 * waits for resume. */
static void test_quiesce_drains_tx(void **state)
{
    (void)state;
    struct fx *f = fx_new(ALL_FEATURES);
    guest_send(f, 60, 22); /* prepared, not yet submitted */
    assert_int_equal(f->vdev.ops->quiesce(&f->vdev), 0);
    assert_int_equal(used_idx(f, 1), 1);
    assert_int_equal(f->interrupts, 1);
    uint8_t buf[256];
    assert_int_equal(peer_recv(f, 0, buf, sizeof(buf)), HDR + 60);

    guest_send(f, 70, 23);
    run_for(f, 30);
    assert_int_equal(used_idx(f, 1), 1);
    assert_false(peer_has_packet(f, 0));
    f->vdev.ops->resume(&f->vdev);
    run_until(f, 1, 2, 3000);
    assert_int_equal(peer_recv(f, 0, buf, sizeof(buf)), HDR + 70);
    assert_int_equal(buf[HDR + 69], pattern(69, 23));
    assert_int_equal(counters(f).tx_packets, 2);
    fx_free(f);
}

/* A read into the bounce buffer (no chain was offered when it started) that completes with
 * a packet while quiesce cancels it: the packet is held, not copied into the buffer offered
 * meanwhile, and goes in at resume. */
static void test_quiesce_holds_packet(void **state)
{
    (void)state;
    struct fx *f = fx_new(ALL_FEATURES);
    notify(f, 0); /* the read is prepared, not submitted */
    peer_send(f, 0, (struct hdr){ 0 }, 80, 24);
    assert_int_equal(f->vdev.ops->quiesce(&f->vdev), 0); /* the read runs before its cancel */
    offer_rx(f, 0, 0, 2048);
    memset(rx_buf(f, 0, 0), '#', 0x1000);
    run_for(f, 20);
    assert_int_equal(used_idx(f, 0), 0);
    assert_int_equal(rx_buf(f, 0, 0)[0], '#');
    assert_int_equal(f->vdev.queues[0].last_avail_idx, 0);
    f->vdev.ops->resume(&f->vdev);
    assert_int_equal(used_idx(f, 0), 1); /* at once: it was held, not read again */
    assert_int_equal(used_elem(f, 0, 0).len, HDR + 80);
    assert_int_equal(rx_buf(f, 0, 0)[HDR + 79], pattern(79, 24));
    fx_free(f);
}

/* A zero-copy read in flight when quiesce comes is completed, not cancelled: the packet is
 * in the used ring, with its interrupt, before quiesce returns, and nothing is read while
 * paused. */
static void test_quiesce_completes_zero_copy(void **state)
{
    (void)state;
    struct fx *f = fx_new(ALL_FEATURES);
    offer_rx(f, 0, 0, 2048);
    offer_rx(f, 0, 1, 2048);
    notify(f, 0); /* a zero-copy read, prepared into chain 0 */
    peer_send(f, 0, (struct hdr){ 0 }, 80, 25);
    assert_int_equal(f->vdev.ops->quiesce(&f->vdev), 0);
    assert_int_equal(used_idx(f, 0), 1);
    assert_int_equal(used_elem(f, 0, 0).len, HDR + 80);
    assert_int_equal(rx_buf(f, 0, 0)[HDR + 79], pattern(79, 25));
    assert_int_equal(f->interrupts, 1);
    assert_int_equal(f->vdev.queues[0].last_avail_idx, 1); /* chain 1 went back */
    peer_send(f, 0, (struct hdr){ 0 }, 90, 26);
    run_for(f, 20);
    assert_int_equal(used_idx(f, 0), 1);
    f->vdev.ops->resume(&f->vdev);
    run_until(f, 0, 2, 3000);
    assert_int_equal(used_elem(f, 0, 1).len, HDR + 90);
    assert_int_equal(counters(f).rx_zero_copy, 2);
    fx_free(f);
}

/* ---- state ---- */

static void test_state_round_trip(void **state)
{
    (void)state;
    struct fx *f = fx_open(2, ALL_FEATURES, NULL); /* a random MAC */
    assert_int_equal(ctrl(f, 4, 0, 2), 0);         /* both pairs on */
    uint8_t saved[MODEL_STATE_MAX], again[MODEL_STATE_MAX], mac[6], mac2[6];
    size_t len = model_save(&f->vdev, saved);
    f->vdev.ops->read_config(&f->vdev, 0, mac, 6);

    struct fx *g = fx_open(2, ALL_FEATURES, NULL); /* another random MAC */
    assert_int_equal(model_load(&g->vdev, saved, len, f->vdev.ops->state_version), 0);
    assert_int_equal(g->vdev.ops->activate(&g->vdev), 0); /* as the transport does after */
    assert_int_equal(ctrl(g, 3, 0, 0), 0); /* the driver answers the announce request */
    assert_int_equal(model_save(&g->vdev, again), len);
    assert_memory_equal(again, saved, len);
    g->vdev.ops->read_config(&g->vdev, 0, mac2, 6);
    assert_memory_equal(mac2, mac, 6);
    /* The second pair receives without another VQ_PAIRS_SET. */
    offer_rx(g, 2, 0, 1526);
    notify(g, 2);
    peer_send(g, 1, (struct hdr){ 0 }, 64, 25);
    run_until(g, 2, 1, 3000);
    assert_int_equal(used_elem(g, 2, 0).len, HDR + 64);
    fx_free(g);

    /* Values a corrupt or hostile file could hold; the layout: mac[6], status, pairs,
     * active pairs (u16 each). */
    static const struct { size_t at; uint8_t value; } bad[] = {
        { 0, 0x53 },  /* a multicast MAC */
        { 6, 0x80 },  /* an unknown status bit */
        { 8, 3 },     /* 3 pairs: this device has 2 */
        { 10, 0 },    /* no active pair */
        { 10, 3 },    /* more active pairs than there are */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        uint8_t b[MODEL_STATE_MAX];
        memcpy(b, saved, len);
        b[bad[i].at] = bad[i].value;
        assert_int_equal(model_load(&f->vdev, b, len, 1), -EINVAL);
    }
    assert_int_equal(model_load(&f->vdev, saved, len - 1, 1), -EPROTO);
    assert_int_equal(model_save(&f->vdev, again), len); /* refused loads changed nothing */
    assert_memory_equal(again, saved, len);
    fx_free(f);
}

static uint16_t config_status(struct fx *f)
{
    uint16_t status = 0;
    f->vdev.ops->read_config(&f->vdev, 6, &status, 2);
    return status;
}

/* A restored device asks its driver, once, to announce the guest; the driver's
 * ANNOUNCE_ACK on the control queue ends the request. */
static void test_announce_after_load(void **state)
{
    (void)state;
    struct fx *f = fx_new(ALL_FEATURES);
    assert_int_equal(f->vdev.ops->nr_queues, 3);
    assert_int_equal(ctrl(f, 3, 0, 0), 0); /* ANNOUNCE_ACK with nothing to ack: OK */
    assert_int_equal(config_status(f), 1);
    assert_int_equal(f->config_interrupts, 0);
    uint8_t saved[MODEL_STATE_MAX];
    size_t len = model_save(&f->vdev, saved);

    struct fx *g = fx_new(ALL_FEATURES);
    assert_int_equal(model_load(&g->vdev, saved, len, 1), 0);
    assert_int_equal(g->config_interrupts, 0); /* not before the activation */
    assert_int_equal(g->vdev.ops->activate(&g->vdev), 0); /* as the transport does after */
    assert_int_equal(config_status(g), 1 | 2); /* LINK_UP | ANNOUNCE */
    assert_int_equal(g->config_interrupts, 1);
    assert_int_equal(g->vdev.ops->activate(&g->vdev), 0);
    assert_int_equal(g->config_interrupts, 1); /* once */
    assert_int_equal(ctrl(g, 3, 1, 0), 1);     /* an unknown ANNOUNCE command: ERR */
    assert_int_equal(config_status(g), 1 | 2);
    assert_int_equal(ctrl(g, 99, 0, 0), 1);    /* an unknown class: ERR */
    assert_int_equal(ctrl(g, 4, 0, 1), 1);     /* VQ_PAIRS_SET: no MQ with one pair */
    assert_int_equal(ctrl(g, 3, 0, 0), 0);     /* ANNOUNCE_ACK: OK, the bit cleared */
    assert_int_equal(config_status(g), 1);
    assert_int_equal(g->config_interrupts, 1);
    assert_int_equal(g->resets, 0);

    /* A saved status with ANNOUNCE set loads; the request is made again. */
    uint8_t again[MODEL_STATE_MAX];
    memcpy(again, saved, len);
    again[6] |= 2;
    assert_int_equal(model_load(&g->vdev, again, len, 1), 0);
    assert_int_equal(g->vdev.ops->activate(&g->vdev), 0);
    assert_int_equal(config_status(g), 1 | 2);
    assert_int_equal(g->config_interrupts, 2);
    fx_free(g);

    /* Not running at the snapshot: no activation follows the load, the driver resets the
     * device before it starts it again; nothing is announced. */
    g = fx_new(ALL_FEATURES);
    assert_int_equal(model_load(&g->vdev, saved, len, 1), 0);
    g->vdev.ops->reset(&g->vdev);
    negotiate(g, ALL_FEATURES);
    assert_int_equal(config_status(g), 1);
    assert_int_equal(g->config_interrupts, 0);
    fx_free(g);

    /* A driver without GUEST_ANNOUNCE is not asked, and may not ack. */
    g = fx_new(~(1ull << F_GUEST_ANNOUNCE));
    assert_int_equal(model_load(&g->vdev, saved, len, 1), 0);
    assert_int_equal(g->vdev.ops->activate(&g->vdev), 0);
    assert_int_equal(config_status(g), 1);
    assert_int_equal(g->config_interrupts, 0);
    assert_int_equal(ctrl(g, 3, 0, 0), 1);
    fx_free(g);
    fx_free(f);
}

#define CTRL_QSIZE 256

/* Offers `n` control commands of an unknown class (answered ERR, no effect), two descriptors
 * each, on the control queue q set up with CTRL_QSIZE entries. */
static void offer_ctrl_many(struct fx *f, unsigned q, unsigned n)
{
    uint64_t off = q * QUEUE_STRIDE;
    uint8_t msg[4] = { 99, 1, 0, 0 };
    assert_int_equal(gm_write(&f->gm, CTRL_GPA, msg, 4), 0);
    for (unsigned i = 0; i < n; i++) {
        uint16_t head = (uint16_t)(2 * f->avail_idx[q] % CTRL_QSIZE);
        struct virtq_desc d[2] = {
            { .addr = CTRL_GPA, .len = 4, .flags = VIRTQ_DESC_F_NEXT, .next = head + 1 },
            { .addr = CTRL_GPA + 0x100 + f->avail_idx[q] % CTRL_QSIZE, .len = 1,
              .flags = VIRTQ_DESC_F_WRITE },
        };
        assert_int_equal(gm_write(&f->gm, DESC_GPA + off + 16ull * head, d, sizeof(d)), 0);
        uint64_t slot = AVAIL_GPA + off + 4 + 2ull * (f->avail_idx[q] % CTRL_QSIZE);
        assert_int_equal(gm_write(&f->gm, slot, &head, 2), 0);
        f->avail_idx[q]++;
    }
    assert_int_equal(gm_write(&f->gm, AVAIL_GPA + off + 2, &f->avail_idx[q], 2), 0);
}

/* A control queue kept full (the driver puts back what each call took) does not keep the
 * handler: a call answers its budget, the rest comes on later turns of the loop. */
static void test_ctrl_budget(void **state)
{
    (void)state;
    struct fx *f = fx_open(2, ALL_FEATURES, NULL);
    unsigned q = 2 * f->pairs;
    uint64_t off = q * QUEUE_STRIDE;
    assert_int_equal(virtq_setup(&f->vdev.queues[q], &f->gm, CTRL_QSIZE, DESC_GPA + off,
                                 AVAIL_GPA + off, USED_GPA + off, false, false),
                     0);
    offer_ctrl_many(f, q, CTRL_QSIZE / 2);
    notify(f, q);
    assert_int_equal(used_idx(f, q), 64);
    for (unsigned turn = 1; turn <= 20; turn++) {
        offer_ctrl_many(f, q, 64); /* full again */
        uint16_t before = used_idx(f, q);
        assert_int_equal(loop_run_once(&f->loop), 0); /* the handler's continuation */
        assert_int_equal((uint16_t)(used_idx(f, q) - before), 64);
    }
    while (used_idx(f, q) != f->avail_idx[q])
        assert_int_equal(loop_run_once(&f->loop), 0);
    assert_int_equal(*(uint8_t *)host(f, CTRL_GPA + 0x100, 1), 1); /* VIRTIO_NET_ERR */
    assert_int_equal(f->resets, 0);
    fx_free(f);
}

int main(void)
{
    log_set_level(LOG_LVL_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tx_frame),
        cmocka_unit_test(test_rx_packet),
        cmocka_unit_test(test_rx_mergeable),
        cmocka_unit_test(test_rx_zero_copy),
        cmocka_unit_test(test_rx_burst),
        cmocka_unit_test(test_rx_idle_tap_one_turn),
        cmocka_unit_test(test_rx_waits_for_buffers),
        cmocka_unit_test(test_rx_too_big_without_mrg),
        cmocka_unit_test(test_rx_offloads_not_negotiated),
        cmocka_unit_test(test_tx_malformed_dropped),
        cmocka_unit_test(test_ring_violation_needs_reset),
        cmocka_unit_test(test_config_space),
        cmocka_unit_test(test_multiqueue),
        cmocka_unit_test(test_ctrl_budget),
        cmocka_unit_test(test_reset_in_flight),
        cmocka_unit_test(test_destroy_in_flight),
        cmocka_unit_test(test_bad_config),
        cmocka_unit_test(test_quiesce_hands_back_rx),
        cmocka_unit_test(test_quiesce_drains_tx),
        cmocka_unit_test(test_quiesce_holds_packet),
        cmocka_unit_test(test_quiesce_completes_zero_copy),
        cmocka_unit_test(test_state_round_trip),
        cmocka_unit_test(test_announce_after_load),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
