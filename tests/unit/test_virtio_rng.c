/* test_virtio_rng.c: virtio-rng fills each request's writable bytes, bounded, and pushes it. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "fake_driver.h"

#include "io/loop.h"
#include "log.h"
#include "virtio/rng.h"

#define QSIZE 8
#define DESC_GPA FAKE_DESC_GPA
#define AVAIL_GPA FAKE_AVAIL_GPA
#define USED_GPA FAKE_USED_GPA
#define BUF_GPA 0x400000ull

struct fx {
    struct guest_memory gm;
    struct virtio_device vdev;
    struct virtio_rng *rng;
    unsigned interrupts, resets;
    uint16_t avail_idx;
};

static void fake_interrupt(struct virtio_device *vdev, unsigned queue)
{
    (void)queue;
    ((struct fx *)vdev->transport)->interrupts++;
}

static void fake_needs_reset(struct virtio_device *vdev, const char *why)
{
    (void)why;
    ((struct fx *)vdev->transport)->resets++;
}

static struct fx *fx_new(void)
{
    struct fx *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    assert_int_equal(gm_init(&f->gm, 64ull << 20, false), 0);
    f->vdev.transport = f;
    f->vdev.interrupt_queue = fake_interrupt;
    f->vdev.needs_reset = fake_needs_reset;
    assert_int_equal(virtio_rng_create(&f->rng, &f->gm, &f->vdev), 0);
    assert_int_equal(virtq_setup(&f->vdev.queues[0], &f->gm, QSIZE, DESC_GPA, AVAIL_GPA,
                                 USED_GPA, false, false),
                     0);
    assert_int_equal(f->vdev.ops->activate(&f->vdev), 0);
    return f;
}

static void fx_free(struct fx *f)
{
    virtio_rng_destroy(f->rng);
    gm_destroy(&f->gm);
    free(f);
}

/* Offers one writable buffer as descriptor 0 and kicks; returns the used length. */
static uint32_t ask(struct fx *f, uint64_t gpa, uint32_t len)
{
    struct fake_ring r = fake_ring(0, QSIZE);
    uint16_t next_desc = 0;
    struct fake_seg seg = { gpa, len, true };
    fake_offer(&f->gm, r, &next_desc, &f->avail_idx, &seg, 1);
    f->vdev.ops->queue_notify(&f->vdev, 0);
    uint16_t used = fake_used_idx(&f->gm, r);
    assert_int_equal(used, f->avail_idx);
    struct virtq_used_elem e = fake_used_elem(&f->gm, r, (uint16_t)(used - 1));
    assert_int_equal(e.id, 0);
    return e.len;
}

static void test_random_bytes(void **state)
{
    (void)state;
    struct fx *f = fx_new();
    assert_int_equal(f->vdev.ops->device_id, VIRTIO_ID_RNG);
    uint8_t *buf = gm_ptr(&f->gm, BUF_GPA, 4096);
    assert_non_null(buf);
    memset(buf, 0, 4096);
    assert_int_equal(ask(f, BUF_GPA, 256), 256);
    unsigned nonzero = 0;
    for (unsigned i = 0; i < 256; i++)
        nonzero += buf[i] != 0;
    assert_true(nonzero > 200); /* 256 random bytes: ~255 expected to be non-zero */
    for (unsigned i = 256; i < 4096; i++)
        assert_int_equal(buf[i], 0);
    assert_int_equal(f->interrupts, 1);
    fx_free(f);
}

static void test_bounded(void **state)
{
    (void)state;
    struct fx *f = fx_new();
    assert_int_equal(ask(f, BUF_GPA, 1u << 20), VIRTIO_RNG_MAX_REQUEST);
    fx_free(f);
}

static void test_hostile(void **state)
{
    (void)state;
    struct fx *f = fx_new();
    struct virtq_desc d = { .addr = 1ull << 40, .len = 16, .flags = VIRTQ_DESC_F_WRITE };
    assert_int_equal(gm_write(&f->gm, DESC_GPA, &d, sizeof(d)), 0);
    uint16_t idx = 1;
    assert_int_equal(gm_write(&f->gm, AVAIL_GPA + 2, &idx, 2), 0);
    f->vdev.ops->queue_notify(&f->vdev, 0);
    assert_int_equal(f->resets, 1);
    f->vdev.ops->reset(&f->vdev);
    assert_false(f->vdev.queues[0].enabled);
    fx_free(f);
}

static uint16_t used_idx(struct fx *f)
{
    uint16_t used;
    assert_int_equal(gm_read(&f->gm, USED_GPA + 2, &used, 2), 0);
    return used;
}

/* While quiesced a request waits in the ring, untouched; resume answers it. */
static void test_quiesce(void **state)
{
    (void)state;
    struct fx *f = fx_new();
    uint8_t *buf = gm_ptr(&f->gm, BUF_GPA, 64);
    assert_non_null(buf);
    memset(buf, 0, 64);
    assert_int_equal(f->vdev.ops->quiesce(&f->vdev), 0);
    struct virtq_desc d = { .addr = BUF_GPA, .len = 64, .flags = VIRTQ_DESC_F_WRITE };
    assert_int_equal(gm_write(&f->gm, DESC_GPA, &d, sizeof(d)), 0);
    uint16_t head = 0, idx = 1;
    assert_int_equal(gm_write(&f->gm, AVAIL_GPA + 4, &head, 2), 0);
    assert_int_equal(gm_write(&f->gm, AVAIL_GPA + 2, &idx, 2), 0);
    f->vdev.ops->queue_notify(&f->vdev, 0);
    assert_int_equal(used_idx(f), 0);
    unsigned nonzero = 0;
    for (unsigned i = 0; i < 64; i++)
        nonzero += buf[i] != 0;
    assert_int_equal(nonzero, 0);
    f->vdev.ops->resume(&f->vdev);
    assert_int_equal(used_idx(f), 1);
    assert_int_equal(f->interrupts, 1);

    /* Nothing of its own to save. */
    assert_null(f->vdev.ops->save);
    assert_null(f->vdev.ops->load);
    fx_free(f);
}

#define BIG_QSIZE 256

/* Offers `n` one-descriptor requests of 16 bytes on a queue of BIG_QSIZE. */
static void offer_many(struct fx *f, unsigned n)
{
    for (unsigned i = 0; i < n; i++) {
        uint16_t head = f->avail_idx % BIG_QSIZE;
        struct virtq_desc d = { .addr = BUF_GPA + 16ull * head, .len = 16,
                                .flags = VIRTQ_DESC_F_WRITE };
        assert_int_equal(gm_write(&f->gm, DESC_GPA + 16ull * head, &d, sizeof(d)), 0);
        assert_int_equal(gm_write(&f->gm, AVAIL_GPA + 4 + 2ull * head, &head, 2), 0);
        f->avail_idx++;
    }
    assert_int_equal(gm_write(&f->gm, AVAIL_GPA + 2, &f->avail_idx, 2), 0);
}

/* A ring kept full (the driver puts back what each call took) does not keep the handler: a
 * call answers its budget, the rest comes on later turns of the loop. */
static void test_budget(void **state)
{
    (void)state;
    struct fx *f = fx_new();
    struct event_loop loop;
    assert_int_equal(loop_init(&loop, 64), 0);
    virtio_rng_set_loop(f->rng, &loop);
    assert_int_equal(virtq_setup(&f->vdev.queues[0], &f->gm, BIG_QSIZE, DESC_GPA, AVAIL_GPA,
                                 USED_GPA, false, false),
                     0);
    offer_many(f, BIG_QSIZE);
    f->vdev.ops->queue_notify(&f->vdev, 0);
    assert_int_equal(used_idx(f), 64);
    for (unsigned turn = 1; turn <= 20; turn++) {
        offer_many(f, 64); /* full again */
        uint16_t before = used_idx(f);
        assert_int_equal(loop_run_once(&loop), 0); /* the handler's continuation */
        assert_int_equal((uint16_t)(used_idx(f) - before), 64);
    }
    while (used_idx(f) != f->avail_idx)
        assert_int_equal(loop_run_once(&loop), 0);
    assert_int_equal(f->resets, 0);
    fx_free(f);
    loop_destroy(&loop);
}

int main(void)
{
    log_set_level(LOG_LVL_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_random_bytes),
        cmocka_unit_test(test_bounded),
        cmocka_unit_test(test_hostile),
        cmocka_unit_test(test_quiesce),
        cmocka_unit_test(test_budget),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
