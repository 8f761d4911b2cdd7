/* test_virtio_blk.c: virtio-blk requests from a hand-driven guest queue down to a temp image. */
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
#include <pthread.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "fake_driver.h"

#include "io/loop.h"
#include "log.h"
#include "virtio/blk.h"

#define IMG_BYTES (1u << 20)
#define IMG_SECTORS (IMG_BYTES / 512)
#define QSIZE 16
#define DESC_GPA FAKE_DESC_GPA
#define AVAIL_GPA FAKE_AVAIL_GPA
#define USED_GPA FAKE_USED_GPA
#define HDR_GPA 0x400000ull   /* 16 bytes per slot */
#define STATUS_GPA 0x410000ull /* 1 byte per slot */
#define DATA_GPA 0x500000ull
#define TABLE_GPA 0x600000ull  /* indirect descriptor tables: 16 KiB per slot */
#define ALIAS_GPA 0x800000ull  /* one buffer every segment of a hostile request points at */
#define BAD_GPA (1ull << 40)  /* not RAM */

#define T_IN 0
#define T_OUT 1
#define T_FLUSH 4
#define T_GET_ID 8
#define T_DISCARD 11
#define T_WRITE_ZEROES 13
#define S_OK 0
#define S_IOERR 1
#define S_UNSUPP 2
#define F_RO 5
#define F_FLUSH 9
#define F_MQ 12
#define F_DISCARD 13
#define F_WRITE_ZEROES 14


struct fx {
    char path[64];
    struct guest_memory gm;
    struct event_loop loop;
    struct virtio_device vdev;
    struct virtio_blk *blk;
    unsigned interrupts, resets;
    uint16_t avail_idx, next_desc;
    struct loop_watch timer;
    unsigned ticks, max_ticks;
    uint16_t want_used;
    uint16_t qsize;
    void (*on_interrupt)(struct fx *f); /* the guest's side of an interrupt, if any */
    /* test_budget: chains answered per handler call, and turns of another fd between */
    uint16_t last_used;
    unsigned refills, max_batch, batches, other_turns;
    bool starved;
};

static uint8_t pattern(size_t i)
{
    return (uint8_t)(i * 7 + i / 512);
}

static void fake_interrupt(struct virtio_device *vdev, unsigned queue)
{
    struct fx *f = vdev->transport;
    (void)queue;
    f->interrupts++;
    if (f->on_interrupt)
        f->on_interrupt(f);
}

static void fake_needs_reset(struct virtio_device *vdev, const char *why)
{
    assert_non_null(why);
    ((struct fx *)vdev->transport)->resets++;
}

/* An image of `bytes`, the first `filled` of them (a multiple of IMG_BYTES) the pattern. */
static void make_image(struct fx *f, size_t bytes, size_t filled)
{
    strcpy(f->path, "/tmp/godwit-blk-XXXXXX");
    int fd = mkstemp(f->path);
    assert_true(fd >= 0);
    uint8_t *buf = malloc(IMG_BYTES);
    assert_non_null(buf);
    for (size_t off = 0; off < filled; off += IMG_BYTES) {
        for (size_t i = 0; i < IMG_BYTES; i++)
            buf[i] = pattern(off + i);
        assert_int_equal(write(fd, buf, IMG_BYTES), IMG_BYTES);
    }
    assert_int_equal(ftruncate(fd, (off_t)bytes), 0);
    free(buf);
    close(fd);
}

static void setup_queue_with(struct fx *f, unsigned q, bool indirect)
{
    uint64_t off = q * 0x10000ull;
    assert_int_equal(virtq_setup(&f->vdev.queues[q], &f->gm, f->qsize, DESC_GPA + off,
                                 AVAIL_GPA + off, USED_GPA + off, false, indirect),
                     0);
}

static void setup_queue(struct fx *f, unsigned q)
{
    setup_queue_with(f, q, false);
}

static struct virtio_blk_config blk_cfg(const struct fx *f, bool ro)
{
    return (struct virtio_blk_config){ .path = f->path, .readonly = ro,
                                       .serial = "godwit-serial-1", .queues = 1 };
}

static struct fx *fx_make(struct virtio_blk_config cfg, size_t img_bytes, uint16_t qsize)
{
    struct fx *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    f->qsize = qsize;
    make_image(f, img_bytes, img_bytes < (16u << 20) ? img_bytes : (16u << 20));
    cfg.path = f->path;
    assert_int_equal(gm_init(&f->gm, 64ull << 20, false), 0);
    assert_int_equal(loop_init(&f->loop, 64), 0);
    /* As a VM does: single-piece reads and writes then go through READ/WRITE_FIXED. */
    struct iovec ram = { .iov_base = f->gm.regions[0].host, .iov_len = f->gm.regions[0].size };
    if (loop_buffers_enable(&f->loop, &ram, 1) < 0)
        print_message("no registered buffers here: the plain path is tested\n");
    f->vdev.transport = f;
    f->vdev.interrupt_queue = fake_interrupt;
    f->vdev.needs_reset = fake_needs_reset;
    assert_int_equal(virtio_blk_create(&f->blk, &cfg, &f->loop, &f->gm, &f->vdev), 0);
    f->vdev.driver_features = f->vdev.ops->features(&f->vdev) | 1ull << 32;
    for (unsigned q = 0; q < f->vdev.ops->nr_queues; q++)
        setup_queue(f, q);
    assert_int_equal(f->vdev.ops->activate(&f->vdev), 0);
    return f;
}

static struct fx *fx_open(struct virtio_blk_config cfg)
{
    return fx_make(cfg, IMG_BYTES, QSIZE);
}

static struct fx *fx_new(bool ro)
{
    struct fx tmp = { 0 };
    return fx_open(blk_cfg(&tmp, ro));
}

static void fx_free(struct fx *f)
{
    virtio_blk_destroy(f->blk);
    loop_destroy(&f->loop);
    gm_destroy(&f->gm);
    unlink(f->path);
    free(f);
}

static void *host(struct fx *f, uint64_t gpa, uint64_t len)
{
    return fake_host(&f->gm, gpa, len);
}

static uint16_t used_idx(struct fx *f, unsigned q)
{
    return fake_used_idx(&f->gm, fake_ring(q, f->qsize));
}

static uint32_t used_len(struct fx *f, unsigned q, uint16_t i)
{
    return fake_used_elem(&f->gm, fake_ring(q, f->qsize), i).len;
}

/* Writes a chain into the descriptor table and offers it on queue q; returns its head. */
static uint16_t offer(struct fx *f, unsigned q, const struct fake_seg *segs, unsigned n)
{
    return fake_offer(&f->gm, fake_ring(q, f->qsize), &f->next_desc, &f->avail_idx, segs, n);
}

static bool tick(struct event_loop *loop, void *opaque, int res)
{
    (void)res;
    struct fx *f = opaque;
    if (used_idx(f, 0) == f->want_used || ++f->ticks >= f->max_ticks)
        loop->stop = true;
    else
        assert_int_equal(loop_after(loop, &f->timer, 1, tick, f), 0);
    return false;
}

/* Runs the loop until queue 0's used index reaches `want`, for 3 s at most. */
static void run_until(struct fx *f, uint16_t want, unsigned max_ms)
{
    f->want_used = want;
    f->ticks = 0;
    f->max_ticks = max_ms;
    f->loop.stop = false;
    assert_int_equal(loop_after(&f->loop, &f->timer, 1, tick, f), 0);
    assert_int_equal(loop_run(&f->loop), 0);
}

/* One request: header at slot, data segments, status byte; returns the status. */
static uint8_t request_q(struct fx *f, unsigned q, uint32_t type, uint64_t sector,
                         const struct fake_seg *data, unsigned nr_data)
{
    unsigned slot = f->avail_idx % f->qsize;
    uint32_t hdr[4] = { type, 0, (uint32_t)sector, (uint32_t)(sector >> 32) };
    assert_int_equal(gm_write(&f->gm, HDR_GPA + 16ull * slot, hdr, 16), 0);
    uint8_t poison = 0xee;
    assert_int_equal(gm_write(&f->gm, STATUS_GPA + slot, &poison, 1), 0);
    struct fake_seg segs[8];
    segs[0] = (struct fake_seg){ HDR_GPA + 16ull * slot, 16, false };
    if (nr_data)
        memcpy(&segs[1], data, nr_data * sizeof(*data));
    segs[nr_data + 1] = (struct fake_seg){ STATUS_GPA + slot, 1, true };
    offer(f, q, segs, nr_data + 2);
    uint16_t want = (uint16_t)(used_idx(f, q) + 1);
    f->vdev.ops->queue_notify(&f->vdev, q);
    if (q == 0)
        run_until(f, want, 3000);
    assert_int_equal(used_idx(f, q), want);
    return *(uint8_t *)host(f, STATUS_GPA + slot, 1);
}

static uint8_t request(struct fx *f, uint32_t type, uint64_t sector, const struct fake_seg *data,
                       unsigned nr_data)
{
    return request_q(f, 0, type, sector, data, nr_data);
}

static void pread_all(struct fx *f, void *buf, size_t len, off_t off)
{
    int fd = open(f->path, O_RDONLY);
    assert_true(fd >= 0);
    assert_int_equal(pread(fd, buf, len, off), (ssize_t)len);
    close(fd);
}

static void test_read(void **state)
{
    (void)state;
    struct fx *f = fx_new(false);
    struct fake_seg data[2] = { { DATA_GPA, 512, true }, { DATA_GPA + 0x3000, 512, true } };
    assert_int_equal(request(f, T_IN, 3, data, 2), S_OK);
    assert_int_equal(used_len(f, 0, 0), 1025);
    const uint8_t *a = host(f, DATA_GPA, 512), *b = host(f, DATA_GPA + 0x3000, 512);
    for (size_t i = 0; i < 512; i++) {
        assert_int_equal(a[i], pattern(3 * 512 + i));
        assert_int_equal(b[i], pattern(4 * 512 + i));
    }
    uint64_t r, w, br, bw;
    virtio_blk_counters(f->blk, &r, &w, &br, &bw);
    assert_int_equal(r, 1);
    assert_int_equal(w, 0);
    assert_int_equal(br, 1024);
    assert_int_equal(bw, 0);
    assert_int_equal(f->interrupts, 1);
    assert_int_equal(f->resets, 0);
    fx_free(f);
}

static void test_write_and_flush(void **state)
{
    (void)state;
    struct fx *f = fx_new(false);
    memset(host(f, DATA_GPA, 1024), 0xab, 1024);
    struct fake_seg data = { DATA_GPA, 1024, false };
    assert_int_equal(request(f, T_OUT, 10, &data, 1), S_OK);
    assert_int_equal(used_len(f, 0, 0), 1);
    uint8_t buf[1536];
    pread_all(f, buf, sizeof(buf), 10 * 512);
    for (size_t i = 0; i < 1024; i++)
        assert_int_equal(buf[i], 0xab);
    assert_int_equal(buf[1024], pattern(12 * 512));
    assert_int_equal(request(f, T_FLUSH, 0, NULL, 0), S_OK);
    uint64_t r, w, br, bw;
    virtio_blk_counters(f->blk, &r, &w, &br, &bw);
    assert_int_equal(w, 1);
    assert_int_equal(bw, 1024);
    fx_free(f);
}

static void test_readonly(void **state)
{
    (void)state;
    struct fx *f = fx_new(true);
    uint64_t feat = f->vdev.ops->features(&f->vdev);
    assert_true(feat & 1ull << F_RO);
    assert_false(feat & 1ull << F_DISCARD);
    memset(host(f, DATA_GPA, 512), 0xcd, 512);
    struct fake_seg data = { DATA_GPA, 512, false };
    assert_int_equal(request(f, T_OUT, 0, &data, 1), S_IOERR);
    uint8_t buf[512];
    pread_all(f, buf, sizeof(buf), 0);
    for (size_t i = 0; i < 512; i++)
        assert_int_equal(buf[i], pattern(i));
    struct fake_seg rd = { DATA_GPA, 512, true };
    assert_int_equal(request(f, T_IN, 0, &rd, 1), S_OK);
    assert_int_equal(request(f, T_FLUSH, 0, NULL, 0), S_OK);
    fx_free(f);
}

/* Data segments in the wrong direction fail the request and leave the image alone. */
static void test_wrong_direction(void **state)
{
    (void)state;
    struct fx *f = fx_new(false);
    memset(host(f, DATA_GPA, 512), 0xcd, 512);
    struct fake_seg writable = { DATA_GPA, 512, true };
    assert_int_equal(request(f, T_OUT, 0, &writable, 1), S_IOERR);
    uint8_t buf[512];
    pread_all(f, buf, sizeof(buf), 0);
    for (size_t i = 0; i < 512; i++)
        assert_int_equal(buf[i], pattern(i));
    struct fake_seg readable = { DATA_GPA, 512, false };
    assert_int_equal(request(f, T_IN, 0, &readable, 1), S_IOERR);
    for (size_t i = 0; i < 512; i++)
        assert_int_equal(((uint8_t *)host(f, DATA_GPA, 512))[i], 0xcd);
    fx_free(f);
}

static void test_get_id(void **state)
{
    (void)state;
    struct fx *f = fx_new(false);
    memset(host(f, DATA_GPA, 20), 0xff, 20);
    struct fake_seg data = { DATA_GPA, 20, true };
    assert_int_equal(request(f, T_GET_ID, 0, &data, 1), S_OK);
    assert_int_equal(used_len(f, 0, 0), 21);
    char want[20] = "godwit-serial-1";
    assert_memory_equal(host(f, DATA_GPA, 20), want, 20);
    fx_free(f);
}

static void test_bad_ranges(void **state)
{
    (void)state;
    struct fx *f = fx_new(false);
    struct fake_seg two = { DATA_GPA, 1024, true };
    struct fake_seg one = { DATA_GPA, 512, true };
    struct fake_seg odd = { DATA_GPA, 100, true };
    assert_int_equal(request(f, T_IN, IMG_SECTORS - 1, &two, 1), S_IOERR);
    assert_int_equal(request(f, T_IN, IMG_SECTORS - 2, &two, 1), S_OK);
    assert_int_equal(request(f, T_IN, 1ull << 63, &one, 1), S_IOERR);
    assert_int_equal(request(f, T_IN, UINT64_MAX, &one, 1), S_IOERR);
    assert_int_equal(request(f, T_IN, 0, &odd, 1), S_IOERR);
    struct fake_seg wodd = { DATA_GPA, 100, false };
    assert_int_equal(request(f, T_OUT, 0, &wodd, 1), S_IOERR);
    assert_int_equal(request(f, 99, 0, NULL, 0), S_UNSUPP);
    assert_int_equal(f->resets, 0);
    fx_free(f);
}

static void test_short_header_and_no_status(void **state)
{
    (void)state;
    struct fx *f = fx_new(false);
    /* An 8-byte header with a status byte: answered IOERR. */
    struct fake_seg segs[2] = { { HDR_GPA, 8, false }, { STATUS_GPA, 1, true } };
    offer(f, 0, segs, 2);
    f->vdev.ops->queue_notify(&f->vdev, 0);
    run_until(f, 1, 3000);
    assert_int_equal(used_idx(f, 0), 1);
    assert_int_equal(*(uint8_t *)host(f, STATUS_GPA, 1), S_IOERR);
    /* No writable byte at all: no answer is possible, so the device asks for a reset. */
    struct fake_seg nostatus = { HDR_GPA, 16, false };
    offer(f, 0, &nostatus, 1);
    f->vdev.ops->queue_notify(&f->vdev, 0);
    assert_int_equal(f->resets, 1);
    assert_int_equal(used_idx(f, 0), 1);
    fx_free(f);
}

static void test_hostile_chain(void **state)
{
    (void)state;
    struct fx *f = fx_new(false);
    struct fake_seg segs[2] = { { BAD_GPA, 16, false }, { STATUS_GPA, 1, true } };
    offer(f, 0, segs, 2);
    f->vdev.ops->queue_notify(&f->vdev, 0);
    assert_int_equal(f->resets, 1);
    assert_int_equal(used_idx(f, 0), 0);
    fx_free(f);
}

static struct fake_seg range_seg(struct fx *f, unsigned i, uint64_t sector, uint32_t n, uint32_t flags)
{
    uint64_t gpa = DATA_GPA + 0x10000 + 16ull * i;
    uint32_t r[4] = { (uint32_t)sector, (uint32_t)(sector >> 32), n, flags };
    assert_int_equal(gm_write(&f->gm, gpa, r, 16), 0);
    return (struct fake_seg){ gpa, 16, false };
}

static void assert_zero_range(struct fx *f, uint64_t sector, unsigned n)
{
    uint8_t buf[4096 + 512];
    assert_true(n * 512 <= 4096);
    pread_all(f, buf, n * 512 + 512, (off_t)sector * 512);
    for (size_t i = 0; i < n * 512; i++)
        assert_int_equal(buf[i], 0);
    assert_int_equal(buf[n * 512], pattern((sector + n) * 512));
}

static void test_discard_write_zeroes(void **state)
{
    (void)state;
    struct fx *f = fx_new(false);
    uint64_t feat = f->vdev.ops->features(&f->vdev);
    assert_true(feat & 1ull << F_DISCARD);
    assert_true(feat & 1ull << F_WRITE_ZEROES);
    struct fake_seg wz = range_seg(f, 0, 16, 8, 0);
    assert_int_equal(request(f, T_WRITE_ZEROES, 0, &wz, 1), S_OK);
    assert_zero_range(f, 16, 8);
    /* Two ranges in one request, the second with unmap. */
    struct fake_seg two = range_seg(f, 0, 32, 8, 0);
    range_seg(f, 1, 48, 8, 1);
    two.len = 32;
    assert_int_equal(request(f, T_WRITE_ZEROES, 0, &two, 1), S_OK);
    assert_zero_range(f, 32, 8);
    assert_zero_range(f, 48, 8);
    struct fake_seg dis = range_seg(f, 0, 64, 8, 0);
    assert_int_equal(request(f, T_DISCARD, 0, &dis, 1), S_OK);
    assert_zero_range(f, 64, 8);
    struct fake_seg unmap = range_seg(f, 0, 64, 8, 1);
    assert_int_equal(request(f, T_DISCARD, 0, &unmap, 1), S_UNSUPP);
    struct fake_seg reserved = range_seg(f, 0, 64, 8, 4);
    assert_int_equal(request(f, T_WRITE_ZEROES, 0, &reserved, 1), S_UNSUPP);
    struct fake_seg past = range_seg(f, 0, IMG_SECTORS - 4, 8, 0);
    assert_int_equal(request(f, T_WRITE_ZEROES, 0, &past, 1), S_IOERR);
    struct fake_seg wrap = range_seg(f, 0, UINT64_MAX - 2, 8, 0);
    assert_int_equal(request(f, T_DISCARD, 0, &wrap, 1), S_IOERR);
    struct fake_seg ragged = { DATA_GPA + 0x10000, 10, false };
    assert_int_equal(request(f, T_DISCARD, 0, &ragged, 1), S_IOERR);
    fx_free(f);
}

static void test_not_negotiated_discard(void **state)
{
    (void)state;
    struct fx *f = fx_new(false);
    f->vdev.driver_features &= ~(1ull << F_DISCARD);
    struct fake_seg dis = range_seg(f, 0, 64, 8, 0);
    assert_int_equal(request(f, T_DISCARD, 0, &dis, 1), S_UNSUPP);
    fx_free(f);
}

static void test_locking(void **state)
{
    (void)state;
    struct fx *f = fx_new(false);
    struct virtio_device vdev2 = { 0 };
    struct virtio_blk *blk2 = NULL;
    struct virtio_blk_config cfg = blk_cfg(f, false);
    assert_int_equal(virtio_blk_create(&blk2, &cfg, &f->loop, &f->gm, &vdev2), -EBUSY);
    cfg.readonly = true;
    assert_int_equal(virtio_blk_create(&blk2, &cfg, &f->loop, &f->gm, &vdev2), -EBUSY);
    fx_free(f);

    struct fx *r = fx_new(true);
    assert_int_equal(virtio_blk_create(&blk2, &(struct virtio_blk_config){ .path = r->path,
                                                                          .readonly = true },
                                       &r->loop, &r->gm, &vdev2),
                     0);
    cfg = blk_cfg(r, false);
    struct virtio_device vdev3 = { 0 };
    struct virtio_blk *blk3 = NULL;
    assert_int_equal(virtio_blk_create(&blk3, &cfg, &r->loop, &r->gm, &vdev3), -EBUSY);
    virtio_blk_destroy(blk2);
    fx_free(r);
}

static void test_bad_size(void **state)
{
    (void)state;
    char path[] = "/tmp/godwit-blk-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "abc", 3), 3);
    close(fd);
    struct virtio_device vdev = { 0 };
    struct virtio_blk *blk;
    struct virtio_blk_config cfg = { .path = path };
    assert_int_equal(virtio_blk_create(&blk, &cfg, NULL, NULL, &vdev), -EINVAL);
    unlink(path);
    cfg.path = "/nonexistent/godwit.img";
    assert_int_equal(virtio_blk_create(&blk, &cfg, NULL, NULL, &vdev), -ENOENT);
}

static void test_interrupt_suppressed(void **state)
{
    (void)state;
    struct fx *f = fx_new(false);
    uint16_t flags = VIRTQ_AVAIL_F_NO_INTERRUPT;
    assert_int_equal(gm_write(&f->gm, AVAIL_GPA, &flags, 2), 0);
    struct fake_seg one = { DATA_GPA, 512, true };
    assert_int_equal(request(f, T_IN, 0, &one, 1), S_OK);
    assert_int_equal(request(f, 99, 0, NULL, 0), S_UNSUPP); /* answered without I/O */
    assert_int_equal(f->interrupts, 0);
    flags = 0;
    assert_int_equal(gm_write(&f->gm, AVAIL_GPA, &flags, 2), 0);
    assert_int_equal(request(f, 99, 0, NULL, 0), S_UNSUPP);
    assert_int_equal(f->interrupts, 1);
    fx_free(f);
}

static void test_config_space(void **state)
{
    (void)state;
    struct fx *f = fx_new(false);
    uint64_t cap = 0;
    uint32_t seg_max = 0, blk_size = 0, beyond = 7;
    f->vdev.ops->read_config(&f->vdev, 0, &cap, 8);
    f->vdev.ops->read_config(&f->vdev, 12, &seg_max, 4);
    f->vdev.ops->read_config(&f->vdev, 20, &blk_size, 4);
    f->vdev.ops->read_config(&f->vdev, 200, &beyond, 4);
    assert_int_equal(cap, IMG_SECTORS);
    assert_true(seg_max >= 2);
    assert_int_equal(blk_size, 512);
    assert_int_equal(beyond, 0);
    assert_true(f->vdev.ops->features(&f->vdev) & 1ull << F_FLUSH);
    fx_free(f);
}

static void test_multiqueue(void **state)
{
    (void)state;
    struct fx tmp = { 0 };
    struct virtio_blk_config cfg = blk_cfg(&tmp, false);
    cfg.queues = 2;
    struct fx *f = fx_open(cfg);
    assert_int_equal(f->vdev.ops->nr_queues, 2);
    assert_true(f->vdev.ops->features(&f->vdev) & 1ull << F_MQ);
    uint16_t nq = 0;
    f->vdev.ops->read_config(&f->vdev, 34, &nq, 2);
    assert_int_equal(nq, 2);
    /* A request on queue 1; the loop is driven through queue 0's empty run. */
    unsigned slot = f->avail_idx % f->qsize;
    struct fake_seg one = { DATA_GPA, 512, true };
    uint32_t hdr[4] = { T_IN, 0, 5, 0 };
    assert_int_equal(gm_write(&f->gm, HDR_GPA + 16ull * slot, hdr, 16), 0);
    struct fake_seg segs[3] = { { HDR_GPA + 16ull * slot, 16, false }, one,
                           { STATUS_GPA + slot, 1, true } };
    offer(f, 1, segs, 3);
    f->vdev.ops->queue_notify(&f->vdev, 1);
    run_until(f, 1, 200); /* queue 0 never reaches 1: runs the loop for 200 ms */
    assert_int_equal(used_idx(f, 1), 1);
    assert_int_equal(*(uint8_t *)host(f, STATUS_GPA + slot, 1), S_OK);
    assert_int_equal(*(uint8_t *)host(f, DATA_GPA, 1), pattern(5 * 512));
    fx_free(f);
}

static void test_reset_in_flight(void **state)
{
    (void)state;
    struct fx *f = fx_new(false);
    struct fake_seg one = { DATA_GPA, 512, true };
    uint32_t hdr[4] = { T_IN, 0, 0, 0 };
    assert_int_equal(gm_write(&f->gm, HDR_GPA, hdr, 16), 0);
    struct fake_seg segs[3] = { { HDR_GPA, 16, false }, one, { STATUS_GPA, 1, true } };
    offer(f, 0, segs, 3);
    f->vdev.ops->queue_notify(&f->vdev, 0);
    f->vdev.ops->reset(&f->vdev);
    assert_false(f->vdev.queues[0].enabled);
    run_until(f, 1, 100); /* the read completes in the kernel and is dropped */
    assert_int_equal(used_idx(f, 0), 0);
    assert_int_equal(f->interrupts, 0);
    /* The device works again after the driver sets the queue up anew. */
    memset(host(f, USED_GPA, 4 + 8 * QSIZE), 0, 4 + 8 * QSIZE);
    f->avail_idx = 0;
    f->next_desc = 0;
    setup_queue(f, 0);
    assert_int_equal(f->vdev.ops->activate(&f->vdev), 0);
    assert_int_equal(request(f, T_IN, 1, &one, 1), S_OK);
    fx_free(f);
}

static void test_destroy_in_flight(void **state)
{
    (void)state;
    struct fx *f = fx_new(false);
    uint32_t hdr[4] = { T_FLUSH, 0, 0, 0 };
    assert_int_equal(gm_write(&f->gm, HDR_GPA, hdr, 16), 0);
    struct fake_seg segs[2] = { { HDR_GPA, 16, false }, { STATUS_GPA, 1, true } };
    offer(f, 0, segs, 2);
    f->vdev.ops->queue_notify(&f->vdev, 0);
    virtio_blk_destroy(f->blk);
    f->blk = NULL;
    run_until(f, 1, 100); /* the orphan's completion frees it (ASan checks the leak) */
    assert_int_equal(used_idx(f, 0), 0);
    fx_free(f);
}

static void test_cache_none_unaligned(void **state)
{
    (void)state;
    struct fx tmp = { 0 };
    struct virtio_blk_config cfg = blk_cfg(&tmp, false);
    cfg.cache_none = true;
    struct fx *f = fx_open(cfg);
    /* Buffers off the page boundary: O_DIRECT needs the bounce copy. */
    struct fake_seg rd = { DATA_GPA + 100, 1024, true };
    assert_int_equal(request(f, T_IN, 7, &rd, 1), S_OK);
    const uint8_t *p = host(f, DATA_GPA + 100, 1024);
    for (size_t i = 0; i < 1024; i++)
        assert_int_equal(p[i], pattern(7 * 512 + i));
    memset(host(f, DATA_GPA + 0x2000 + 8, 512), 0x5a, 512);
    struct fake_seg wr = { DATA_GPA + 0x2000 + 8, 512, false };
    assert_int_equal(request(f, T_OUT, 9, &wr, 1), S_OK);
    struct fake_seg al = { DATA_GPA + 0x4000, 4096, true };
    assert_int_equal(request(f, T_IN, 8, &al, 1), S_OK);
    p = host(f, DATA_GPA + 0x4000, 4096);
    assert_int_equal(p[512], 0x5a);
    assert_int_equal(p[0], pattern(8 * 512));
    fx_free(f);
}

/* ---- pause and reset with requests in flight ---- */

/* Offers a read of `len` bytes at `sector` into `gpa` (poisoned), header and status in the
 * next slot; returns the slot. */
static unsigned offer_read(struct fx *f, uint64_t sector, uint64_t gpa, uint32_t len)
{
    unsigned slot = f->avail_idx % f->qsize;
    uint32_t hdr[4] = { T_IN, 0, (uint32_t)sector, 0 };
    assert_int_equal(gm_write(&f->gm, HDR_GPA + 16ull * slot, hdr, 16), 0);
    *(uint8_t *)host(f, STATUS_GPA + slot, 1) = 0xee;
    memset(host(f, gpa, len), 0xee, len);
    struct fake_seg segs[3] = { { HDR_GPA + 16ull * slot, 16, false }, { gpa, len, true },
                           { STATUS_GPA + slot, 1, true } };
    offer(f, 0, segs, 3);
    return slot;
}

static void assert_read(struct fx *f, unsigned slot, uint64_t sector, uint64_t gpa, uint32_t len)
{
    assert_int_equal(*(uint8_t *)host(f, STATUS_GPA + slot, 1), S_OK);
    const uint8_t *data = host(f, gpa, len);
    for (size_t i = 0; i < len; i++)
        assert_int_equal(data[i], pattern(sector * 512 + i));
}

/* Quiesce answers what is in flight before it returns; then nothing moves until resume. */
static void test_quiesce_in_flight(void **state)
{
    (void)state;
    struct fx *f = fx_new(false);
    unsigned first = offer_read(f, 8, DATA_GPA, 4096);
    f->vdev.ops->queue_notify(&f->vdev, 0); /* prepared, not yet submitted */
    assert_int_equal(used_idx(f, 0), 0);
    assert_int_equal(f->vdev.ops->quiesce(&f->vdev), 0);
    assert_int_equal(used_idx(f, 0), 1);
    assert_int_equal(used_len(f, 0, 0), 4097);
    assert_read(f, first, 8, DATA_GPA, 4096);
    assert_int_equal(f->interrupts, 1);

    unsigned second = offer_read(f, 16, DATA_GPA + 0x2000, 1024);
    f->vdev.ops->queue_notify(&f->vdev, 0); /* a kick while paused starts nothing */
    run_until(f, 2, 30);
    assert_int_equal(used_idx(f, 0), 1);
    assert_int_equal(*(uint8_t *)host(f, DATA_GPA + 0x2000, 1), 0xee);
    assert_int_equal(*(uint8_t *)host(f, STATUS_GPA + second, 1), 0xee);
    assert_int_equal(f->interrupts, 1);

    f->vdev.ops->resume(&f->vdev); /* the kick missed is made up for */
    run_until(f, 2, 3000);
    assert_int_equal(used_idx(f, 0), 2);
    assert_read(f, second, 16, DATA_GPA + 0x2000, 1024);
    assert_int_equal(f->interrupts, 2);
    assert_int_equal(f->resets, 0);
    fx_free(f);
}

/* Quiesced and reset: nothing is in flight, and resume does not start a device the driver
 * has not set up again. */
static void test_quiesce_idle_and_reset(void **state)
{
    (void)state;
    struct fx *f = fx_new(false);
    assert_int_equal(f->vdev.ops->quiesce(&f->vdev), 0);
    offer_read(f, 1, DATA_GPA, 512);
    f->vdev.ops->reset(&f->vdev);
    f->vdev.ops->resume(&f->vdev);
    run_until(f, 1, 20);
    assert_int_equal(used_idx(f, 0), 0);
    assert_int_equal(*(uint8_t *)host(f, DATA_GPA, 1), 0xee);
    fx_free(f);
}

struct resetter {
    struct fx *f;
    pthread_mutex_t lock;
    bool done;
};

/* A vCPU writing status 0: the transport holds the device's lock once around reset. */
static void *reset_from_vcpu(void *arg)
{
    struct resetter *r = arg;
    pthread_mutex_lock(&r->lock);
    r->f->vdev.ops->reset(&r->f->vdev);
    pthread_mutex_unlock(&r->lock);
    __atomic_store_n(&r->done, true, __ATOMIC_SEQ_CST);
    return NULL;
}

/* A reset from a vCPU thread returns only once the read the kernel holds has landed, letting
 * go of the lock meanwhile so that the loop's thread can take the completion. */
static void test_reset_waits_for_reads(void **state)
{
    (void)state;
    struct fx *f = fx_new(false);
    struct resetter r = { .f = f };
    pthread_mutexattr_t attr;
    pthread_mutexattr_init(&attr);
    pthread_mutexattr_settype(&attr, PTHREAD_MUTEX_RECURSIVE);
    pthread_mutex_init(&r.lock, &attr);
    f->vdev.lock = &r.lock;
    unsigned slot = offer_read(f, 4, DATA_GPA, 8192);
    f->vdev.ops->queue_notify(&f->vdev, 0); /* prepared: the loop's next turn submits it */
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, reset_from_vcpu, &r), 0);
    struct timespec ts = { .tv_nsec = 30 * 1000000 };
    nanosleep(&ts, NULL);
    assert_false(__atomic_load_n(&r.done, __ATOMIC_SEQ_CST)); /* the loop has not turned */
    assert_int_equal(pthread_mutex_trylock(&r.lock), 0);       /* let go while it waits */
    pthread_mutex_unlock(&r.lock);
    run_until(f, 1, 100); /* the read completes; its answer is dropped */
    pthread_join(t, NULL);
    assert_true(r.done);
    assert_int_equal(used_idx(f, 0), 0);
    assert_int_equal(*(uint8_t *)host(f, STATUS_GPA + slot, 1), 0xee);
    assert_int_equal(*(uint8_t *)host(f, DATA_GPA, 1), pattern(4 * 512)); /* it landed */
    assert_int_equal(f->interrupts, 0);
    assert_false(f->vdev.queues[0].enabled);
    f->vdev.lock = NULL;
    pthread_mutex_destroy(&r.lock);
    fx_free(f);
}

/* Nothing of its own to save: the config space comes from the image. */
static void test_no_model_state(void **state)
{
    (void)state;
    struct fx *f = fx_new(false);
    assert_null(f->vdev.ops->save);
    assert_null(f->vdev.ops->load);
    fx_free(f);
}

/* ---- hostile guests: memory and the loop's time ---- */

/* Offers one chain through an indirect table of `n` descriptors in the slot's table. */
static void offer_indirect(struct fx *f, const struct fake_seg *segs, unsigned n)
{
    uint64_t table = TABLE_GPA + 0x4000ull * (f->avail_idx % f->qsize);
    assert_true(n * 16u <= 0x4000u);
    for (unsigned i = 0; i < n; i++) {
        struct virtq_desc d = { .addr = segs[i].gpa, .len = segs[i].len,
                                .flags = (uint16_t)((segs[i].writable ? VIRTQ_DESC_F_WRITE : 0) |
                                                    (i + 1 < n ? VIRTQ_DESC_F_NEXT : 0)),
                                .next = (uint16_t)(i + 1) };
        assert_int_equal(gm_write(&f->gm, table + 16ull * i, &d, sizeof(d)), 0);
    }
    uint16_t head = f->next_desc;
    struct virtq_desc d = { .addr = table, .len = 16u * n, .flags = VIRTQ_DESC_F_INDIRECT };
    assert_int_equal(gm_write(&f->gm, DESC_GPA + 16ull * head, &d, sizeof(d)), 0);
    f->next_desc = (uint16_t)((head + 1) % f->qsize);
    fake_make_available(&f->gm, fake_ring(0, f->qsize), &f->avail_idx, head);
}

/* A request whose `nr_data` data segments all point at the same `seg_len` bytes at ALIAS_GPA
 * + 8 (unaligned); returns its slot. */
static unsigned offer_aliased(struct fx *f, uint32_t type, uint64_t sector, unsigned nr_data,
                              uint32_t seg_len)
{
    static struct fake_seg segs[VIRTQ_MAX_SEGS];
    unsigned slot = f->avail_idx % f->qsize;
    uint32_t hdr[4] = { type, 0, (uint32_t)sector, 0 };
    assert_int_equal(gm_write(&f->gm, HDR_GPA + 16ull * slot, hdr, 16), 0);
    *(uint8_t *)host(f, STATUS_GPA + slot, 1) = 0xee;
    segs[0] = (struct fake_seg){ HDR_GPA + 16ull * slot, 16, false };
    for (unsigned i = 1; i <= nr_data; i++)
        segs[i] = (struct fake_seg){ ALIAS_GPA + 8, seg_len, type == T_IN };
    segs[nr_data + 1] = (struct fake_seg){ STATUS_GPA + slot, 1, true };
    offer_indirect(f, segs, nr_data + 2);
    return slot;
}

static struct fx *fx_direct(size_t bounce_max, size_t img_bytes)
{
    struct fx tmp = { 0 };
    struct virtio_blk_config cfg = blk_cfg(&tmp, false);
    cfg.cache_none = true;
    cfg.bounce_max = bounce_max;
    struct fx *f = fx_make(cfg, img_bytes, QSIZE);
    setup_queue_with(f, 0, true);
    return f;
}

/* The pattern: 1,020 unaligned segments over the same 256 KiB, four requests. Over
 * the seg_max of the config space: answered IOERR, nothing allocated for them. */
static void test_cache_none_seg_max(void **state)
{
    (void)state;
    struct fx *f = fx_direct(0, 256u << 20);
    uint32_t seg_max = 0;
    f->vdev.ops->read_config(&f->vdev, 12, &seg_max, 4);
    assert_true(seg_max < 1020);
    unsigned slots[4];
    for (unsigned i = 0; i < 4; i++)
        slots[i] = offer_aliased(f, i % 2 ? T_OUT : T_IN, 0, 1020, 256u << 10);
    f->vdev.ops->queue_notify(&f->vdev, 0);
    run_until(f, 4, 3000);
    assert_int_equal(used_idx(f, 0), 4);
    for (unsigned i = 0; i < 4; i++)
        assert_int_equal(*(uint8_t *)host(f, STATUS_GPA + slots[i], 1), S_IOERR);
    size_t now, peak;
    virtio_blk_bounce_usage(f->blk, &now, &peak);
    assert_int_equal(peak, 0);
    /* seg_max segments are served. */
    unsigned ok = offer_aliased(f, T_IN, 0, seg_max, 4096);
    f->vdev.ops->queue_notify(&f->vdev, 0);
    run_until(f, 5, 3000);
    assert_int_equal(*(uint8_t *)host(f, STATUS_GPA + ok, 1), S_OK);
    assert_int_equal(f->resets, 0);
    fx_free(f);
}

/* Big unaligned requests within seg_max move piece by piece: the device's bounce memory
 * stays under its bound, requests beyond it wait their turn, and the data is right. */
static void test_cache_none_bounce_bound(void **state)
{
    (void)state;
    const size_t bound = 512u << 10;
    const uint32_t seg = 64u << 10, nr = 254, bytes = nr * seg;
    struct fx *f = fx_direct(bound, 16u << 20);
    unsigned slots[4];
    for (unsigned i = 0; i < 4; i++)
        slots[i] = offer_aliased(f, T_IN, 0, nr, seg);
    f->vdev.ops->queue_notify(&f->vdev, 0);
    size_t now, peak;
    virtio_blk_bounce_usage(f->blk, &now, &peak);
    assert_true(now <= bound); /* two of the four wait for bounce memory */
    run_until(f, 4, 10000);
    assert_int_equal(used_idx(f, 0), 4);
    for (unsigned i = 0; i < 4; i++) {
        assert_int_equal(*(uint8_t *)host(f, STATUS_GPA + slots[i], 1), S_OK);
        assert_int_equal(used_len(f, 0, (uint16_t)i), bytes + 1);
    }
    /* Every segment aliases one buffer: it holds the last segment's sectors. */
    const uint8_t *p = host(f, ALIAS_GPA + 8, seg);
    for (size_t i = 0; i < seg; i++)
        assert_int_equal(p[i], pattern((size_t)(nr - 1) * seg + i));

    /* A write of the same shape: the image holds the buffer nr times over. */
    memset(host(f, ALIAS_GPA + 8, seg), 0x5a, seg);
    unsigned w = offer_aliased(f, T_OUT, 0, nr, seg);
    f->vdev.ops->queue_notify(&f->vdev, 0);
    run_until(f, 5, 10000);
    assert_int_equal(*(uint8_t *)host(f, STATUS_GPA + w, 1), S_OK);
    uint8_t buf[512];
    pread_all(f, buf, sizeof(buf), (off_t)(bytes - sizeof(buf)));
    for (size_t i = 0; i < sizeof(buf); i++)
        assert_int_equal(buf[i], 0x5a);
    pread_all(f, buf, sizeof(buf), (off_t)bytes);
    assert_int_equal(buf[0], pattern(bytes));

    virtio_blk_bounce_usage(f->blk, &now, &peak);
    assert_int_equal(now, 0);
    assert_true(peak > 0 && peak <= bound);
    assert_int_equal(f->resets, 0);
    fx_free(f);
}

/* Requests answered at once (an unknown type), two descriptors each. */
static void offer_unsupported(struct fx *f, unsigned n)
{
    for (unsigned i = 0; i < n; i++) {
        unsigned slot = f->avail_idx % f->qsize;
        uint32_t hdr[4] = { 99, 0, 0, 0 };
        assert_int_equal(gm_write(&f->gm, HDR_GPA + 16ull * slot, hdr, 16), 0);
        struct fake_seg segs[2] = { { HDR_GPA + 16ull * slot, 16, false },
                               { STATUS_GPA + slot, 1, true } };
        offer(f, 0, segs, 2);
    }
}

/* The guest's side: puts back as many requests as the handler took, keeping the ring full. */
static void refill_ring(struct fx *f)
{
    uint16_t used = used_idx(f, 0);
    unsigned batch = (uint16_t)(used - f->last_used);
    f->last_used = used;
    f->max_batch = batch > f->max_batch ? batch : f->max_batch;
    if (f->batches++ && !f->other_turns)
        f->starved = true; /* two handler calls with no turn of the other fd between */
    f->other_turns = 0;
    if (f->refills) {
        f->refills--;
        offer_unsupported(f, batch);
    }
}

static bool other_fd(struct event_loop *loop, void *opaque, int res)
{
    (void)loop, (void)res;
    ((struct fx *)opaque)->other_turns++;
    return true; /* never read: readable on every turn */
}

/* A ring kept full does not keep the handler: each call takes its budget and comes back on a
 * later turn of the loop, after the other fds' completions. */
static void test_budget(void **state)
{
    (void)state;
    struct fx tmp = { 0 };
    struct fx *f = fx_make(blk_cfg(&tmp, false), IMG_BYTES, 256);
    int efd = eventfd(1, EFD_CLOEXEC | EFD_NONBLOCK);
    assert_true(efd >= 0);
    struct loop_watch w;
    assert_int_equal(loop_watch_readable(&f->loop, &w, efd, other_fd, f), 0);
    offer_unsupported(f, 128); /* the ring is full: 256 descriptors */
    f->on_interrupt = refill_ring;
    f->refills = 20;
    f->vdev.ops->queue_notify(&f->vdev, 0);
    assert_int_equal(used_idx(f, 0), 64); /* the budget, not the ring */
    run_until(f, 128 + 20 * 64, 5000);
    assert_int_equal(used_idx(f, 0), 128 + 20 * 64);
    assert_int_equal(f->max_batch, 64);
    assert_false(f->starved);
    assert_int_equal(*(uint8_t *)host(f, STATUS_GPA, 1), S_UNSUPP);
    loop_unwatch_sync(&f->loop, &w);
    close(efd);
    fx_free(f);
}

/* ---- kicks held while requests are in flight (EVENT_IDX) ---- */

/* The avail_event the device last asked for: the driver kicks when its entries pass it. */
static uint16_t avail_event(struct fx *f)
{
    uint16_t v;
    assert_int_equal(gm_read(&f->gm, USED_GPA + 4 + 8ull * f->qsize, &v, 2), 0);
    return v;
}

static void offer_flush(struct fx *f)
{
    unsigned slot = f->avail_idx % f->qsize;
    uint32_t hdr[4] = { T_FLUSH, 0, 0, 0 };
    assert_int_equal(gm_write(&f->gm, HDR_GPA + 16ull * slot, hdr, 16), 0);
    struct fake_seg segs[2] = { { HDR_GPA + 16ull * slot, 16, false },
                                { STATUS_GPA + slot, 1, true } };
    offer(f, 0, segs, 2);
}

/*
 * From the fourth read in flight the device stops asking for kicks (avail_event stays), and
 * takes what the guest offers without one when a read completes; once nothing is in flight
 * it asks again. A flush in flight keeps the kicks asked for.
 */
static void test_kicks_held_in_flight(void **state)
{
    (void)state;
    struct fx *f = fx_new(false);
    f->vdev.driver_features |= 1ull << VIRTIO_F_EVENT_IDX;
    assert_int_equal(virtq_setup(&f->vdev.queues[0], &f->gm, f->qsize, DESC_GPA, AVAIL_GPA,
                                 USED_GPA, true, false), 0);
    unsigned slots[6];
    for (unsigned i = 0; i < 5; i++)
        slots[i] = offer_read(f, 8u * i, DATA_GPA + 0x1000ull * i, 4096);
    f->vdev.ops->queue_notify(&f->vdev, 0); /* taken, not yet submitted */
    assert_int_equal(avail_event(f), 4); /* set at the first four pops, not at the fifth */

    slots[5] = offer_read(f, 40, DATA_GPA + 0x5000, 4096); /* no kick: 5 is before it */
    run_until(f, 6, 3000);
    assert_int_equal(used_idx(f, 0), 6);
    for (unsigned i = 0; i < 6; i++)
        assert_read(f, slots[i], 8u * i, DATA_GPA + 0x1000ull * i, 4096);
    assert_int_equal(avail_event(f), 6); /* idle: the next entry is kicked for */

    offer_flush(f);
    for (unsigned i = 0; i < 4; i++)
        offer_read(f, 8u * i, DATA_GPA + 0x1000ull * i, 4096);
    f->vdev.ops->queue_notify(&f->vdev, 0);
    assert_int_equal(avail_event(f), 11); /* a flush in flight: every pop asks */
    run_until(f, 11, 3000);
    assert_int_equal(used_idx(f, 0), 11);
    assert_int_equal(avail_event(f), 11);
    assert_int_equal(f->resets, 0);
    fx_free(f);
}

int main(void)
{
    log_set_level(LOG_LVL_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_read),
        cmocka_unit_test(test_write_and_flush),
        cmocka_unit_test(test_readonly),
        cmocka_unit_test(test_wrong_direction),
        cmocka_unit_test(test_get_id),
        cmocka_unit_test(test_bad_ranges),
        cmocka_unit_test(test_short_header_and_no_status),
        cmocka_unit_test(test_hostile_chain),
        cmocka_unit_test(test_discard_write_zeroes),
        cmocka_unit_test(test_not_negotiated_discard),
        cmocka_unit_test(test_locking),
        cmocka_unit_test(test_bad_size),
        cmocka_unit_test(test_interrupt_suppressed),
        cmocka_unit_test(test_config_space),
        cmocka_unit_test(test_multiqueue),
        cmocka_unit_test(test_reset_in_flight),
        cmocka_unit_test(test_destroy_in_flight),
        cmocka_unit_test(test_cache_none_unaligned),
        cmocka_unit_test(test_quiesce_in_flight),
        cmocka_unit_test(test_quiesce_idle_and_reset),
        cmocka_unit_test(test_reset_waits_for_reads),
        cmocka_unit_test(test_no_model_state),
        cmocka_unit_test(test_cache_none_seg_max),
        cmocka_unit_test(test_cache_none_bounce_bound),
        cmocka_unit_test(test_budget),
        cmocka_unit_test(test_kicks_held_in_flight),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
