/* test_virtqueue.c: split-ring chain walking against well-behaved and hostile guest drivers. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <cmocka.h>

#include "log.h"
#include "virtio/virtio.h"
#include "virtio/virtqueue.h"

#define RAM_SIZE (64ull << 20)
#define DESC_GPA 0x100000ull
#define AVAIL_GPA 0x200000ull
#define USED_GPA 0x300000ull
#define BUF_GPA 0x400000ull
#define TABLE_GPA 0x800000ull /* indirect tables */

/* The test plays the guest driver: it builds rings in guest RAM and reads the used ring. */
struct guest {
    struct guest_memory gm;
    struct virtqueue vq;
    struct virtq_chain chain;
    uint16_t size;
    uint16_t avail_idx; /* the driver's free-running avail index */
};

static struct guest *guest_new_ram(uint64_t ram, uint16_t size, bool event_idx, bool indirect)
{
    struct guest *g = calloc(1, sizeof(*g));
    assert_non_null(g);
    assert_int_equal(gm_init(&g->gm, ram, false), 0);
    g->size = size;
    assert_int_equal(virtq_setup(&g->vq, &g->gm, size, DESC_GPA, AVAIL_GPA, USED_GPA,
                                 event_idx, indirect),
                     0);
    return g;
}

static struct guest *guest_new(uint16_t size, bool event_idx, bool indirect)
{
    return guest_new_ram(RAM_SIZE, size, event_idx, indirect);
}

static void guest_free(struct guest *g)
{
    gm_destroy(&g->gm);
    free(g);
}

static void *guest_host(struct guest *g, uint64_t gpa, uint64_t len)
{
    void *p = gm_ptr(&g->gm, gpa, len);
    assert_non_null(p);
    return p;
}

static void put_desc_in(struct guest *g, uint64_t table, uint32_t i, uint64_t addr, uint32_t len,
                        uint16_t flags, uint16_t next)
{
    struct virtq_desc d = { .addr = addr, .len = len, .flags = flags, .next = next };
    assert_int_equal(gm_write(&g->gm, table + 16ull * i, &d, sizeof(d)), 0);
}

static void put_desc(struct guest *g, uint16_t i, uint64_t addr, uint32_t len, uint16_t flags,
                     uint16_t next)
{
    put_desc_in(g, DESC_GPA, i, addr, len, flags, next);
}

static void set_avail_idx(struct guest *g, uint16_t idx)
{
    g->avail_idx = idx;
    assert_int_equal(gm_write(&g->gm, AVAIL_GPA + 2, &idx, 2), 0);
}

/* Offers the chain at `head` to the device. */
static void make_avail(struct guest *g, uint16_t head)
{
    uint64_t slot = g->avail_idx & (g->size - 1);
    assert_int_equal(gm_write(&g->gm, AVAIL_GPA + 4 + 2 * slot, &head, 2), 0);
    set_avail_idx(g, g->avail_idx + 1);
}

static uint16_t read_u16(struct guest *g, uint64_t gpa)
{
    uint16_t v;
    assert_int_equal(gm_read(&g->gm, gpa, &v, 2), 0);
    return v;
}

static void write_u16(struct guest *g, uint64_t gpa, uint16_t v)
{
    assert_int_equal(gm_write(&g->gm, gpa, &v, 2), 0);
}

static uint16_t driver_used_idx(struct guest *g)
{
    return read_u16(g, USED_GPA + 2);
}

static struct virtq_used_elem driver_used_elem(struct guest *g, uint16_t idx)
{
    struct virtq_used_elem e;
    uint64_t slot = idx & (g->size - 1);
    assert_int_equal(gm_read(&g->gm, USED_GPA + 4 + 8 * slot, &e, sizeof(e)), 0);
    return e;
}

static void set_used_event(struct guest *g, uint16_t v)
{
    write_u16(g, AVAIL_GPA + 4 + 2ull * g->size, v);
}

static uint16_t avail_event(struct guest *g)
{
    return read_u16(g, USED_GPA + 4 + 8ull * g->size);
}

static void set_avail_flags(struct guest *g, uint16_t flags)
{
    write_u16(g, AVAIL_GPA, flags);
}

/*
 * The current pop must break the queue for a reason that mentions `why`; afterwards even a
 * well-formed chain is refused and neither the used ring nor avail_event changes.
 */
static void expect_broken(struct guest *g, const char *why)
{
    uint16_t last = g->vq.last_avail_idx;
    size_t used_bytes = VIRTQ_USED_BYTES(g->size, true);
    uint8_t *used = guest_host(g, USED_GPA, used_bytes);
    uint8_t *before = malloc(used_bytes);
    assert_non_null(before);

    assert_int_equal(virtq_pop(&g->vq, &g->chain), -EIO);
    assert_true(g->vq.broken);
    assert_non_null(g->vq.broken_reason);
    assert_non_null(strstr(g->vq.broken_reason, why));

    memcpy(before, used, used_bytes);
    put_desc(g, 0, BUF_GPA, 16, 0, 0);
    write_u16(g, AVAIL_GPA + 4 + 2ull * (last & (g->size - 1)), 0);
    set_avail_idx(g, last + 1);
    assert_int_equal(virtq_pop(&g->vq, &g->chain), -EIO);
    assert_int_equal(virtq_pop(&g->vq, &g->chain), -EIO);
    assert_int_equal(virtq_push(&g->vq, 0, 0), -EIO);
    assert_false(virtq_should_notify(&g->vq));
    assert_int_equal(g->vq.last_avail_idx, last);
    assert_memory_equal(before, used, used_bytes);
    free(before);
}

/* ---- well-formed chains ---- */

static void test_setup_validates_rings(void **state)
{
    (void)state;
    struct guest *g = guest_new(8, false, false);
    struct virtqueue vq;
    const struct guest_memory *gm = &g->gm;
    uint64_t used_tail = RAM_SIZE - VIRTQ_USED_BYTES(8, false);
    uint64_t avail_tail = RAM_SIZE - VIRTQ_AVAIL_BYTES(8, false);

    assert_int_equal(virtq_setup(&vq, gm, 0, DESC_GPA, AVAIL_GPA, USED_GPA, false, false), -EINVAL);
    assert_int_equal(virtq_setup(&vq, gm, 3, DESC_GPA, AVAIL_GPA, USED_GPA, false, false), -EINVAL);
    assert_int_equal(virtq_setup(&vq, gm, 32768, DESC_GPA, AVAIL_GPA, USED_GPA, true, true), 0);
    assert_int_equal(virtq_setup(&vq, gm, 8, DESC_GPA + 8, AVAIL_GPA, USED_GPA, false, false), -EINVAL);
    assert_int_equal(virtq_setup(&vq, gm, 8, DESC_GPA, AVAIL_GPA + 1, USED_GPA, false, false), -EINVAL);
    assert_int_equal(virtq_setup(&vq, gm, 8, DESC_GPA, AVAIL_GPA, USED_GPA + 2, false, false), -EINVAL);
    assert_int_equal(virtq_setup(&vq, gm, 8, RAM_SIZE - 64, AVAIL_GPA, USED_GPA, false, false), -EINVAL);
    assert_int_equal(virtq_setup(&vq, gm, 8, GM_MMIO_HOLE_START, AVAIL_GPA, USED_GPA, false, false),
                     -EINVAL);
    /* Rings that end exactly at the end of RAM fit, until the event fields are added. */
    assert_int_equal(virtq_setup(&vq, gm, 8, DESC_GPA, avail_tail, used_tail, false, false), 0);
    assert_int_equal(virtq_setup(&vq, gm, 8, DESC_GPA, AVAIL_GPA, used_tail, true, false), -EINVAL);
    assert_int_equal(virtq_setup(&vq, gm, 8, DESC_GPA, avail_tail, USED_GPA, true, false), -EINVAL);
    /* A refused setup leaves the queue disabled: nothing to pop, nothing to push. */
    assert_false(vq.enabled);
    assert_int_equal(virtq_pop(&vq, &g->chain), 0);
    assert_int_equal(virtq_push(&vq, 0, 0), -EINVAL);
    guest_free(g);
}

static void test_three_segment_chain(void **state)
{
    (void)state;
    struct guest *g = guest_new(8, false, false);
    uint8_t header[16] = "virtio-blk head";
    uint8_t status = 0xff, got[16];

    assert_int_equal(gm_write(&g->gm, BUF_GPA, header, sizeof(header)), 0);
    put_desc(g, 0, BUF_GPA, 16, VIRTQ_DESC_F_NEXT, 5);
    put_desc(g, 5, BUF_GPA + 0x1000, 512, VIRTQ_DESC_F_NEXT, 2);
    put_desc(g, 2, BUF_GPA + 0x2000, 1, VIRTQ_DESC_F_WRITE, 0);
    make_avail(g, 0);

    assert_int_equal(virtq_pop(&g->vq, &g->chain), 1);
    struct virtq_chain *c = &g->chain;
    assert_int_equal(c->head, 0);
    assert_int_equal(c->nr_segs, 3);
    assert_ptr_equal(c->segs[0].host, guest_host(g, BUF_GPA, 16));
    assert_ptr_equal(c->segs[1].host, guest_host(g, BUF_GPA + 0x1000, 512));
    assert_ptr_equal(c->segs[2].host, guest_host(g, BUF_GPA + 0x2000, 1));
    assert_int_equal(c->segs[0].len, 16);
    assert_int_equal(c->segs[1].len, 512);
    assert_int_equal(c->segs[2].len, 1);
    assert_false(c->segs[0].device_writes);
    assert_false(c->segs[1].device_writes);
    assert_true(c->segs[2].device_writes);
    assert_int_equal(c->readable_len, 528);
    assert_int_equal(c->writable_len, 1);

    assert_int_equal(virtq_chain_read(c, 0, got, sizeof(got)), 16);
    assert_memory_equal(got, header, 16);
    status = 0;
    assert_int_equal(virtq_chain_write(c, 0, &status, 1), 1);
    assert_int_equal(virtq_push(&g->vq, c->head, 1), 0);

    assert_int_equal(driver_used_idx(g), 1);
    struct virtq_used_elem e = driver_used_elem(g, 0);
    assert_int_equal(e.id, 0);
    assert_int_equal(e.len, 1);
    assert_int_equal(*(uint8_t *)guest_host(g, BUF_GPA + 0x2000, 1), 0);
    assert_int_equal(virtq_pop(&g->vq, &g->chain), 0);
    guest_free(g);
}

/* Several used elements published with one used->idx update, in the order pushed. */
static void test_push_pending_publish(void **state)
{
    (void)state;
    struct guest *g = guest_new(4, false, false);
    for (uint16_t i = 0; i < 4; i++) {
        put_desc(g, i, BUF_GPA + 0x1000ull * i, 64, VIRTQ_DESC_F_WRITE, 0);
        make_avail(g, i);
    }
    for (uint16_t i = 0; i < 3; i++) {
        assert_int_equal(virtq_pop(&g->vq, &g->chain), 1);
        assert_int_equal(virtq_push_pending(&g->vq, g->chain.head, 10u + i), 0);
        assert_int_equal(driver_used_idx(g), 0); /* nothing visible before the publish */
    }
    assert_false(virtq_should_notify(&g->vq));
    virtq_publish(&g->vq);
    assert_int_equal(driver_used_idx(g), 3);
    for (uint16_t i = 0; i < 3; i++) {
        struct virtq_used_elem e = driver_used_elem(g, i);
        assert_int_equal(e.id, i);
        assert_int_equal(e.len, 10u + i);
    }
    assert_true(virtq_should_notify(&g->vq));
    virtq_publish(&g->vq); /* nothing pending: no change */
    assert_int_equal(driver_used_idx(g), 3);

    /* A plain push publishes what is pending before it too. */
    assert_int_equal(virtq_pop(&g->vq, &g->chain), 1);
    assert_int_equal(virtq_push_pending(&g->vq, 1, 5), 0);
    assert_int_equal(virtq_push(&g->vq, g->chain.head, 7), 0);
    assert_int_equal(driver_used_idx(g), 5);
    assert_int_equal(driver_used_elem(g, 3).len, 5);
    assert_int_equal(driver_used_elem(g, 4).id, 3);

    /* At most a ring's worth pending; a head out of range is refused. */
    for (uint16_t i = 0; i < 4; i++)
        assert_int_equal(virtq_push_pending(&g->vq, i, 1), 0);
    assert_int_equal(virtq_push_pending(&g->vq, 0, 1), -ENOSPC);
    assert_int_equal(virtq_push_pending(&g->vq, 4, 1), -EINVAL);
    virtq_publish(&g->vq);
    assert_int_equal(driver_used_idx(g), 9);
    guest_free(g);
}

static void test_empty_queue(void **state)
{
    (void)state;
    struct guest *g = guest_new(8, false, false);
    assert_int_equal(virtq_pop(&g->vq, &g->chain), 0);
    assert_int_equal(virtq_pop(&g->vq, &g->chain), 0);
    assert_false(g->vq.broken);
    /* A reset queue is disabled: a kick on it finds nothing. */
    put_desc(g, 0, BUF_GPA, 16, 0, 0);
    make_avail(g, 0);
    virtq_reset(&g->vq);
    assert_int_equal(virtq_pop(&g->vq, &g->chain), 0);
    guest_free(g);
}

static void test_index_wraparound(void **state)
{
    (void)state;
    struct guest *g = guest_new(8, false, false);
    const uint16_t start = 65534;

    g->vq.last_avail_idx = g->vq.used_idx = g->vq.signalled_used = start;
    write_u16(g, USED_GPA + 2, start);
    set_avail_idx(g, start);
    for (uint16_t i = 0; i < 4; i++) {
        put_desc(g, i, BUF_GPA + 0x100 * i, 0x100, 0, 0);
        make_avail(g, i);
    }
    for (uint16_t i = 0; i < 4; i++) {
        assert_int_equal(virtq_pop(&g->vq, &g->chain), 1);
        assert_int_equal(g->chain.head, i);
        assert_int_equal(virtq_push(&g->vq, g->chain.head, 10 + i), 0);
    }
    assert_int_equal(virtq_pop(&g->vq, &g->chain), 0);
    assert_int_equal(g->vq.last_avail_idx, 2);
    assert_int_equal(driver_used_idx(g), 2);
    for (uint16_t i = 0; i < 4; i++) {
        struct virtq_used_elem e = driver_used_elem(g, (uint16_t)(start + i));
        assert_int_equal(e.id, i);
        assert_int_equal(e.len, 10 + i);
    }
    assert_true(virtq_should_notify(&g->vq));
    guest_free(g);
}

/* Pushes one single-descriptor chain through the queue. */
static void round_trip(struct guest *g)
{
    put_desc(g, 0, BUF_GPA, 16, 0, 0);
    make_avail(g, 0);
    assert_int_equal(virtq_pop(&g->vq, &g->chain), 1);
    assert_int_equal(virtq_push(&g->vq, g->chain.head, 0), 0);
}

/* With defer_notify, the completions of one loop turn raise the queue's interrupt once, at
 * the flush; without it each raises its own (the driver asks for every one here). */
static unsigned deferred_interrupts;
static bool defer_yes(struct virtio_device *vdev)
{
    (void)vdev;
    return true;
}
static void count_interrupt(struct virtio_device *vdev, unsigned queue)
{
    (void)vdev;
    assert_int_equal(queue, 0);
    deferred_interrupts++;
}

static void test_notify_once_per_turn(void **state)
{
    (void)state;
    struct guest *g = guest_new(8, false, false);
    struct virtio_device *vdev = calloc(1, sizeof(*vdev));
    assert_non_null(vdev);
    vdev->queues[0] = g->vq;
    struct virtqueue *vq = &vdev->queues[0];
    vdev->interrupt_queue = count_interrupt;
    deferred_interrupts = 0;
    for (unsigned i = 0; i < 2; i++) { /* at once: one interrupt per completion */
        put_desc(g, 0, BUF_GPA, 16, 0, 0);
        make_avail(g, 0);
        assert_int_equal(virtq_pop(vq, &g->chain), 1);
        assert_int_equal(virtq_push(vq, g->chain.head, 0), 0);
        virtio_queue_done(vdev, 0);
    }
    assert_int_equal(deferred_interrupts, 2);
    vdev->defer_notify = defer_yes;
    for (unsigned i = 0; i < 3; i++) { /* one turn's three completions */
        put_desc(g, 0, BUF_GPA, 16, 0, 0);
        make_avail(g, 0);
        assert_int_equal(virtq_pop(vq, &g->chain), 1);
        assert_int_equal(virtq_push(vq, g->chain.head, 0), 0);
        virtio_queue_done(vdev, 0);
    }
    assert_int_equal(deferred_interrupts, 2);
    assert_int_equal(vdev->notify_pending, 1);
    virtio_flush_notify(vdev);
    assert_int_equal(deferred_interrupts, 3);
    assert_int_equal(vdev->notify_pending, 0);
    virtio_flush_notify(vdev); /* nothing new: nothing raised */
    assert_int_equal(deferred_interrupts, 3);
    free(vdev);
    guest_free(g);
}

static void test_event_idx_notify(void **state)
{
    (void)state;
    struct guest *g = guest_new(8, true, false);

    assert_false(virtq_should_notify(&g->vq)); /* nothing pushed yet */
    set_used_event(g, 0);
    round_trip(g); /* used 0 -> 1: the driver asked for entry 0 */
    assert_int_equal(avail_event(g), 1); /* kick me for the next one */
    assert_true(virtq_should_notify(&g->vq));
    round_trip(g); /* used 1 -> 2: entry 0 is long past */
    assert_false(virtq_should_notify(&g->vq));
    set_used_event(g, 4);
    round_trip(g);
    round_trip(g); /* used 2 -> 4: entry 4 not reached yet */
    assert_false(virtq_should_notify(&g->vq));
    round_trip(g); /* used 4 -> 5 */
    assert_true(virtq_should_notify(&g->vq));
    /* A batch notifies when the event index falls anywhere inside it. */
    set_used_event(g, 6);
    round_trip(g);
    round_trip(g);
    round_trip(g); /* used 5 -> 8 covers 6 */
    assert_true(virtq_should_notify(&g->vq));
    assert_false(virtq_should_notify(&g->vq)); /* nothing new since */
    /* An empty pop re-arms avail_event at the current index. */
    write_u16(g, USED_GPA + 4 + 8ull * g->size, 0);
    assert_int_equal(virtq_pop(&g->vq, &g->chain), 0);
    assert_int_equal(avail_event(g), 8);
    guest_free(g);
}

/* Polled (--io-poll): pops leave avail_event behind, so the driver stops kicking; the end
 * of polling asks for the next entry again and says whether entries wait. */
static void test_poll_holds_kicks(void **state)
{
    (void)state;
    struct guest *g = guest_new(8, true, false);
    put_desc(g, 0, BUF_GPA, 16, 0, 0);
    assert_false(virtq_has_avail(&g->vq));
    assert_int_equal(virtq_pop(&g->vq, &g->chain), 0); /* empty: arms avail_event at 0 */
    assert_int_equal(avail_event(g), 0);

    virtq_poll_begin(&g->vq);
    make_avail(g, 0);
    make_avail(g, 0);
    assert_true(virtq_has_avail(&g->vq));
    assert_int_equal(virtq_pop(&g->vq, &g->chain), 1);
    assert_int_equal(virtq_pop(&g->vq, &g->chain), 1);
    assert_int_equal(virtq_pop(&g->vq, &g->chain), 0);
    assert_int_equal(avail_event(g), 0); /* no kick asked for entries 1 and 2 */

    make_avail(g, 0); /* offered while polled: no kick comes for it */
    assert_true(virtq_poll_end(&g->vq));
    assert_int_equal(avail_event(g), 2); /* kick me from entry 2 on */
    assert_int_equal(virtq_pop(&g->vq, &g->chain), 1);
    assert_int_equal(avail_event(g), 3);
    assert_false(virtq_poll_end(&g->vq)); /* not polled, nothing waiting */

    /* Without EVENT_IDX polling changes nothing the driver sees. */
    struct guest *plain = guest_new(8, false, false);
    virtq_poll_begin(&plain->vq);
    assert_false(plain->vq.polled);
    guest_free(plain);
    guest_free(g);
}

/* The status a stall report reads: the driver's indexes beside the device's own. */
static void test_status_shows_both_sides(void **state)
{
    (void)state;
    struct guest *g = guest_new(8, true, false);
    struct virtq_status st;

    put_desc(g, 0, BUF_GPA, 16, 0, 0);
    put_desc(g, 1, BUF_GPA, 16, 0, 0);
    make_avail(g, 0);
    make_avail(g, 1);
    set_used_event(g, 0);
    virtq_get_status(&g->vq, &st);
    assert_true(st.enabled && st.event_idx && !st.broken);
    assert_int_equal(st.size, 8);
    assert_int_equal(st.avail_idx, 2); /* offered */
    assert_int_equal(st.last_avail_idx, 0); /* none taken yet */
    assert_int_equal(st.used_idx, 0);
    assert_int_equal(virtq_pop(&g->vq, &g->chain), 1);
    assert_int_equal(virtq_push_pending(&g->vq, g->chain.head, 0), 0);
    virtq_get_status(&g->vq, &st);
    assert_int_equal(st.last_avail_idx, 1);
    assert_int_equal(st.avail_event, 1);
    assert_int_equal(st.used_idx, 0);
    assert_int_equal(st.used_pending, 1);
    virtq_publish(&g->vq);
    virtq_get_status(&g->vq, &st);
    assert_int_equal(st.used_idx, 1);
    assert_int_equal(st.used_event, 0);
    guest_free(g);

    struct virtqueue off;
    virtq_reset(&off);
    virtq_get_status(&off, &st);
    assert_false(st.enabled);
    assert_int_equal(st.avail_idx, 0);
}

static void test_event_idx_wraps(void **state)
{
    (void)state;
    struct guest *g = guest_new(8, true, false);
    g->vq.last_avail_idx = g->vq.used_idx = g->vq.signalled_used = 65535;
    set_avail_idx(g, 65535);
    set_used_event(g, 0);
    round_trip(g); /* used 65535 -> 0 */
    assert_false(virtq_should_notify(&g->vq));
    round_trip(g); /* used 0 -> 1 covers 0 */
    assert_true(virtq_should_notify(&g->vq));
    guest_free(g);
}

static void test_no_interrupt_flag(void **state)
{
    (void)state;
    struct guest *g = guest_new(8, false, false);
    round_trip(g);
    assert_true(virtq_should_notify(&g->vq));
    set_avail_flags(g, VIRTQ_AVAIL_F_NO_INTERRUPT);
    round_trip(g);
    assert_false(virtq_should_notify(&g->vq));
    set_avail_flags(g, 0);
    round_trip(g);
    assert_true(virtq_should_notify(&g->vq));
    guest_free(g);
}

static void test_event_idx_ignores_no_interrupt_flag(void **state)
{
    (void)state;
    struct guest *g = guest_new(8, true, false);
    set_avail_flags(g, VIRTQ_AVAIL_F_NO_INTERRUPT);
    set_used_event(g, 0);
    round_trip(g);
    assert_true(virtq_should_notify(&g->vq));
    guest_free(g);
}

static void test_indirect_table(void **state)
{
    (void)state;
    struct guest *g = guest_new(8, false, true);

    put_desc(g, 3, BUF_GPA, 8, VIRTQ_DESC_F_NEXT, 4);
    /* The WRITE flag on the descriptor naming the table means nothing and is ignored. */
    put_desc(g, 4, TABLE_GPA, 48, VIRTQ_DESC_F_INDIRECT | VIRTQ_DESC_F_WRITE, 0);
    put_desc_in(g, TABLE_GPA, 0, BUF_GPA + 0x100, 16, VIRTQ_DESC_F_NEXT, 2);
    put_desc_in(g, TABLE_GPA, 2, BUF_GPA + 0x200, 4096, VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, 1);
    put_desc_in(g, TABLE_GPA, 1, BUF_GPA + 0x2000, 1, VIRTQ_DESC_F_WRITE, 0);
    make_avail(g, 3);

    assert_int_equal(virtq_pop(&g->vq, &g->chain), 1);
    struct virtq_chain *c = &g->chain;
    assert_int_equal(c->head, 3);
    assert_int_equal(c->nr_segs, 4);
    assert_ptr_equal(c->segs[1].host, guest_host(g, BUF_GPA + 0x100, 16));
    assert_ptr_equal(c->segs[2].host, guest_host(g, BUF_GPA + 0x200, 4096));
    assert_ptr_equal(c->segs[3].host, guest_host(g, BUF_GPA + 0x2000, 1));
    assert_int_equal(c->readable_len, 24);
    assert_int_equal(c->writable_len, 4097);
    assert_true(c->segs[2].device_writes && c->segs[3].device_writes);
    assert_int_equal(virtq_push(&g->vq, c->head, 4097), 0);
    assert_int_equal(driver_used_elem(g, 0).id, 3);
    guest_free(g);
}

static void test_unaligned_indirect_table(void **state)
{
    (void)state;
    struct guest *g = guest_new(8, false, true);
    put_desc(g, 0, TABLE_GPA + 3, 32, VIRTQ_DESC_F_INDIRECT, 0);
    put_desc_in(g, TABLE_GPA + 3, 0, BUF_GPA, 16, VIRTQ_DESC_F_NEXT, 1);
    put_desc_in(g, TABLE_GPA + 3, 1, BUF_GPA + 16, 16, VIRTQ_DESC_F_WRITE, 0);
    make_avail(g, 0);
    assert_int_equal(virtq_pop(&g->vq, &g->chain), 1);
    assert_int_equal(g->chain.nr_segs, 2);
    guest_free(g);
}

static void test_zero_length_skipped(void **state)
{
    (void)state;
    struct guest *g = guest_new(8, false, false);
    /* A zero-length buffer names no memory, so even a wild address is harmless. */
    put_desc(g, 0, 0xdead000000000000ull, 0, VIRTQ_DESC_F_NEXT, 1);
    put_desc(g, 1, BUF_GPA, 16, VIRTQ_DESC_F_NEXT, 2);
    put_desc(g, 2, BUF_GPA + 16, 0, VIRTQ_DESC_F_WRITE, 0);
    make_avail(g, 0);
    assert_int_equal(virtq_pop(&g->vq, &g->chain), 1);
    assert_int_equal(g->chain.nr_segs, 1);
    assert_int_equal(g->chain.readable_len, 16);
    assert_int_equal(g->chain.writable_len, 0);
    guest_free(g);
}

static void test_chain_read_write_span_segments(void **state)
{
    (void)state;
    struct guest *g = guest_new(8, false, false);
    const uint8_t src[12] = { 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11 };
    uint8_t got[12] = { 0 };

    assert_int_equal(gm_write(&g->gm, BUF_GPA, src, 4), 0);
    assert_int_equal(gm_write(&g->gm, BUF_GPA + 0x100, src + 4, 8), 0);
    put_desc(g, 0, BUF_GPA, 4, VIRTQ_DESC_F_NEXT, 1);
    put_desc(g, 1, BUF_GPA + 0x100, 8, VIRTQ_DESC_F_NEXT, 2);
    put_desc(g, 2, BUF_GPA + 0x200, 3, VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, 3);
    put_desc(g, 3, BUF_GPA + 0x300, 5, VIRTQ_DESC_F_WRITE, 0);
    make_avail(g, 0);
    assert_int_equal(virtq_pop(&g->vq, &g->chain), 1);
    struct virtq_chain *c = &g->chain;

    assert_int_equal(virtq_chain_read(c, 2, got, 8), 8);
    assert_memory_equal(got, src + 2, 8);
    assert_int_equal(virtq_chain_read(c, 10, got, 8), 2); /* short at the end */
    assert_memory_equal(got, src + 10, 2);
    assert_int_equal(virtq_chain_read(c, 12, got, 8), 0);

    assert_int_equal(virtq_chain_write(c, 1, src, 6), 6);
    assert_memory_equal(guest_host(g, BUF_GPA + 0x201, 2), src, 2);
    assert_memory_equal(guest_host(g, BUF_GPA + 0x300, 4), src + 2, 4);
    assert_int_equal(virtq_chain_write(c, 6, src, 6), 2);
    assert_int_equal(virtq_chain_write(c, 8, src, 6), 0);
    guest_free(g);
}

static void test_chain_as_long_as_queue(void **state)
{
    (void)state;
    struct guest *g = guest_new(8, false, false);
    for (uint16_t i = 0; i < 8; i++)
        put_desc(g, i, BUF_GPA + i, 1, i < 7 ? VIRTQ_DESC_F_NEXT : 0, i + 1);
    make_avail(g, 0);
    assert_int_equal(virtq_pop(&g->vq, &g->chain), 1);
    assert_int_equal(g->chain.nr_segs, 8);
    guest_free(g);
}

/* Chains 0 -> 1 -> ... -> n-1 of one-byte buffers in the ring's table. */
static void put_long_chain(struct guest *g, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++)
        put_desc(g, i, BUF_GPA + i, 1, i + 1 < n ? VIRTQ_DESC_F_NEXT : 0, i + 1);
}

static void test_max_segs_boundary(void **state)
{
    (void)state;
    struct guest *g = guest_new(2048, false, false);
    put_long_chain(g, VIRTQ_MAX_SEGS);
    make_avail(g, 0);
    assert_int_equal(virtq_pop(&g->vq, &g->chain), 1);
    assert_int_equal(g->chain.nr_segs, VIRTQ_MAX_SEGS);
    put_long_chain(g, VIRTQ_MAX_SEGS + 1);
    make_avail(g, 0);
    expect_broken(g, "more than VIRTQ_MAX_SEGS descriptors");
    guest_free(g);
}

/* An indirect table of n one-byte buffers at TABLE_GPA, named by descriptor 0. */
static void put_indirect_chain(struct guest *g, uint32_t n)
{
    put_desc(g, 0, TABLE_GPA, 16 * n, VIRTQ_DESC_F_INDIRECT, 0);
    for (uint32_t i = 0; i < n; i++)
        put_desc_in(g, TABLE_GPA, i, BUF_GPA + i, 1, i + 1 < n ? VIRTQ_DESC_F_NEXT : 0, i + 1);
}

static void test_indirect_max_segs_boundary(void **state)
{
    (void)state;
    struct guest *g = guest_new(256, false, true);
    put_indirect_chain(g, VIRTQ_MAX_SEGS);
    make_avail(g, 0);
    assert_int_equal(virtq_pop(&g->vq, &g->chain), 1);
    assert_int_equal(g->chain.nr_segs, VIRTQ_MAX_SEGS);
    put_indirect_chain(g, VIRTQ_MAX_SEGS + 1);
    make_avail(g, 0);
    expect_broken(g, "more than VIRTQ_MAX_SEGS entries");
    guest_free(g);
}

static void test_reset_clears_broken(void **state)
{
    (void)state;
    struct guest *g = guest_new(8, false, false);
    put_desc(g, 0, BUF_GPA, 16, VIRTQ_DESC_F_NEXT, 0);
    make_avail(g, 0);
    expect_broken(g, "loops");
    virtq_reset(&g->vq);
    assert_false(g->vq.broken);
    assert_int_equal(virtq_setup(&g->vq, &g->gm, 8, DESC_GPA, AVAIL_GPA, USED_GPA, false, false), 0);
    set_avail_idx(g, 0);
    round_trip(g);
    guest_free(g);
}

static void test_push_bad_head_is_refused(void **state)
{
    (void)state;
    struct guest *g = guest_new(8, false, false);
    assert_int_equal(virtq_push(&g->vq, 8, 0), -EINVAL);
    assert_false(g->vq.broken);
    assert_int_equal(driver_used_idx(g), 0);
    guest_free(g);
}

/* ---- hostile chains: each breaks the queue ---- */

static void test_descriptor_loop(void **state)
{
    (void)state;
    struct guest *g = guest_new(8, false, false);
    put_desc(g, 1, BUF_GPA, 16, VIRTQ_DESC_F_NEXT, 6);
    put_desc(g, 6, BUF_GPA, 16, VIRTQ_DESC_F_NEXT, 1);
    make_avail(g, 1);
    expect_broken(g, "loops");
    guest_free(g);
}

static void test_self_loop(void **state)
{
    (void)state;
    struct guest *g = guest_new(8, false, false);
    put_desc(g, 2, BUF_GPA, 16, VIRTQ_DESC_F_NEXT, 2);
    make_avail(g, 2);
    expect_broken(g, "loops");
    guest_free(g);
}

static void test_zero_length_loop(void **state)
{
    (void)state;
    struct guest *g = guest_new(8, false, false);
    put_desc(g, 0, BUF_GPA, 0, VIRTQ_DESC_F_NEXT, 1);
    put_desc(g, 1, BUF_GPA, 0, VIRTQ_DESC_F_NEXT, 0);
    make_avail(g, 0);
    expect_broken(g, "loops");
    guest_free(g);
}

static void test_next_out_of_range(void **state)
{
    (void)state;
    struct guest *g = guest_new(8, false, false);
    put_desc(g, 0, BUF_GPA, 16, VIRTQ_DESC_F_NEXT, 8);
    make_avail(g, 0);
    expect_broken(g, "next index out of range");
    guest_free(g);
}

static void test_chain_longer_than_queue(void **state)
{
    (void)state;
    struct guest *g = guest_new(4, false, false);
    put_long_chain(g, 4);
    put_desc(g, 3, BUF_GPA, 1, VIRTQ_DESC_F_NEXT, 1); /* the fifth descriptor revisits 1 */
    make_avail(g, 0);
    expect_broken(g, "loops");
    guest_free(g);
}

/* A chain of one readable buffer at [addr, addr + len). */
static void expect_single_buffer_breaks(uint64_t addr, uint32_t len, const char *why)
{
    struct guest *g = guest_new(8, false, false);
    put_desc(g, 0, addr, len, 0, 0);
    make_avail(g, 0);
    expect_broken(g, why);
    guest_free(g);
}

static void test_buffer_outside_ram(void **state)
{
    (void)state;
    expect_single_buffer_breaks(RAM_SIZE, 16, "RAM region");
    expect_single_buffer_breaks(0x10000000, 16, "RAM region");
    expect_single_buffer_breaks(GM_MMIO_HOLE_START, 16, "RAM region");
    expect_single_buffer_breaks(UINT64_MAX, 1, "RAM region");
}

static void test_buffer_wraps_address_space(void **state)
{
    (void)state;
    expect_single_buffer_breaks(0xfffffffffffff000ull, 0x2000, "RAM region");
}

static void test_buffer_straddles_end_of_ram(void **state)
{
    (void)state;
    expect_single_buffer_breaks(RAM_SIZE - 8, 16, "RAM region");
    expect_single_buffer_breaks(0x1000, 0xffffffffu, "VIRTQ_MAX_CHAIN_BYTES");
    expect_single_buffer_breaks(0, (uint32_t)RAM_SIZE + 1, "RAM region");
}

static void test_buffer_straddles_into_mmio_hole(void **state)
{
    (void)state;
    /* MAP_NORESERVE: the 3 GiB below the hole cost nothing until touched. */
    struct guest *g = guest_new_ram(GM_MMIO_HOLE_START + RAM_SIZE, 8, false, false);
    put_desc(g, 0, GM_MMIO_HOLE_START - 8, 16, 0, 0);
    make_avail(g, 0);
    expect_broken(g, "RAM");
    guest_free(g);
}

static void test_chain_over_max_bytes(void **state)
{
    (void)state;
    struct guest *g = guest_new(8, false, false);
    /* Seven overlapping 40 MiB views of RAM: 280 MiB in total. */
    for (uint16_t i = 0; i < 7; i++)
        put_desc(g, i, 0, 40u << 20, i < 6 ? VIRTQ_DESC_F_NEXT : 0, i + 1);
    make_avail(g, 0);
    expect_broken(g, "VIRTQ_MAX_CHAIN_BYTES");
    guest_free(g);
}

static void test_writable_before_readable(void **state)
{
    (void)state;
    struct guest *g = guest_new(8, false, false);
    put_desc(g, 0, BUF_GPA, 16, VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, 1);
    put_desc(g, 1, BUF_GPA + 16, 16, 0, 0);
    make_avail(g, 0);
    expect_broken(g, "readable descriptor after");
    guest_free(g);
}

static void test_writable_before_readable_across_indirect(void **state)
{
    (void)state;
    struct guest *g = guest_new(8, false, true);
    put_desc(g, 0, BUF_GPA, 16, VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, 1);
    put_desc(g, 1, TABLE_GPA, 16, VIRTQ_DESC_F_INDIRECT, 0);
    put_desc_in(g, TABLE_GPA, 0, BUF_GPA + 16, 16, 0, 0);
    make_avail(g, 0);
    expect_broken(g, "readable descriptor after");
    guest_free(g);
}

/* A chain whose head names the indirect table at TABLE_GPA with `flags` and `len`. */
static struct guest *indirect_guest(bool negotiated, uint16_t flags, uint32_t len, uint64_t addr)
{
    struct guest *g = guest_new(8, false, negotiated);
    put_desc(g, 0, addr, len, VIRTQ_DESC_F_INDIRECT | flags, 1);
    put_desc(g, 1, BUF_GPA + 0x100, 16, VIRTQ_DESC_F_WRITE, 0);
    put_desc_in(g, TABLE_GPA, 0, BUF_GPA, 16, 0, 0);
    make_avail(g, 0);
    return g;
}

static void expect_indirect_breaks(bool negotiated, uint16_t flags, uint32_t len, uint64_t addr,
                                   const char *why)
{
    struct guest *g = indirect_guest(negotiated, flags, len, addr);
    expect_broken(g, why);
    guest_free(g);
}

static void test_indirect_not_negotiated(void **state)
{
    (void)state;
    expect_indirect_breaks(false, 0, 16, TABLE_GPA, "VIRTIO_F_INDIRECT_DESC");
}

static void test_indirect_with_next(void **state)
{
    (void)state;
    expect_indirect_breaks(true, VIRTQ_DESC_F_NEXT, 16, TABLE_GPA, "with NEXT");
}

static void test_indirect_bad_length(void **state)
{
    (void)state;
    expect_indirect_breaks(true, 0, 0, TABLE_GPA, "multiple of 16");
    expect_indirect_breaks(true, 0, 24, TABLE_GPA, "multiple of 16");
    expect_indirect_breaks(true, 0, 15, TABLE_GPA, "multiple of 16");
    expect_indirect_breaks(true, 0, 0xfffffff0u, TABLE_GPA, "VIRTQ_MAX_SEGS");
}

static void test_indirect_table_outside_ram(void **state)
{
    (void)state;
    expect_indirect_breaks(true, 0, 16, RAM_SIZE, "indirect table not wholly");
    expect_indirect_breaks(true, 0, 32, RAM_SIZE - 16, "indirect table not wholly");
    expect_indirect_breaks(true, 0, 32, 0xfffffffffffffff0ull, "indirect table not wholly");
}

static void test_nested_indirect(void **state)
{
    (void)state;
    struct guest *g = guest_new(8, false, true);
    put_desc(g, 0, TABLE_GPA, 32, VIRTQ_DESC_F_INDIRECT, 0);
    put_desc_in(g, TABLE_GPA, 0, BUF_GPA, 16, VIRTQ_DESC_F_NEXT, 1);
    put_desc_in(g, TABLE_GPA, 1, TABLE_GPA + 0x1000, 16, VIRTQ_DESC_F_INDIRECT, 0);
    put_desc_in(g, TABLE_GPA + 0x1000, 0, BUF_GPA, 16, 0, 0);
    make_avail(g, 0);
    expect_broken(g, "nested");
    guest_free(g);
}

static void test_indirect_next_out_of_table(void **state)
{
    (void)state;
    struct guest *g = guest_new(8, false, true);
    /* `next` counts within the table: 2 is past a two-entry table, though < queue size. */
    put_desc(g, 0, TABLE_GPA, 32, VIRTQ_DESC_F_INDIRECT, 0);
    put_desc_in(g, TABLE_GPA, 0, BUF_GPA, 16, VIRTQ_DESC_F_NEXT, 2);
    put_desc_in(g, TABLE_GPA, 1, BUF_GPA, 16, 0, 0);
    put_desc_in(g, TABLE_GPA, 2, BUF_GPA, 16, 0, 0);
    make_avail(g, 0);
    expect_broken(g, "next index out of range");
    guest_free(g);
}

static void test_indirect_loop(void **state)
{
    (void)state;
    struct guest *g = guest_new(8, false, true);
    put_desc(g, 0, TABLE_GPA, 32, VIRTQ_DESC_F_INDIRECT, 0);
    put_desc_in(g, TABLE_GPA, 0, BUF_GPA, 16, VIRTQ_DESC_F_NEXT, 1);
    put_desc_in(g, TABLE_GPA, 1, BUF_GPA, 16, VIRTQ_DESC_F_NEXT, 0);
    make_avail(g, 0);
    expect_broken(g, "loops");
    guest_free(g);
}

static void test_avail_idx_runs_ahead(void **state)
{
    (void)state;
    struct guest *g = guest_new(8, false, false);
    put_desc(g, 0, BUF_GPA, 16, 0, 0);
    set_avail_idx(g, 8); /* a full ring is fine */
    assert_int_equal(virtq_pop(&g->vq, &g->chain), 1);
    set_avail_idx(g, 1 + 8 + 1); /* nine ahead of last_avail_idx 1 */
    expect_broken(g, "avail index");
    guest_free(g);
}

static void test_avail_idx_runs_behind(void **state)
{
    (void)state;
    struct guest *g = guest_new(8, false, false);
    g->vq.last_avail_idx = 5;
    set_avail_idx(g, 4); /* moving back reads as 65535 ahead */
    expect_broken(g, "avail index");
    guest_free(g);
}

static void test_head_out_of_range(void **state)
{
    (void)state;
    struct guest *g = guest_new(8, false, false);
    make_avail(g, 8);
    expect_broken(g, "head index");
    guest_free(g);
}

/* ---- random descriptor tables ---- */

static uint64_t xorshift64(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

/* Mostly plausible values, with enough wild ones to reach every refusal. */
static struct virtq_desc random_desc(uint64_t *rng)
{
    static const uint64_t addrs[] = { BUF_GPA, TABLE_GPA, RAM_SIZE - 64, 0, 0xfffffffffffff000ull };
    static const uint32_t lens[] = { 0, 1, 16, 48, 0x1000, 0x10000000, 0xffffffffu };
    uint64_t r = xorshift64(rng);
    struct virtq_desc d = {
        .addr = addrs[r % 5] + ((r >> 8) & 0xff) * 16,
        .len = (r >> 16) & 1 ? lens[(r >> 17) % 7] : (uint32_t)((r >> 20) & 0x3ff) * 16,
        .flags = (uint16_t)((r >> 32) & 0x7),
        .next = (uint16_t)((r >> 40) % 20),
    };
    if ((r >> 60) == 0)
        d.addr = xorshift64(rng);
    return d;
}

static void check_chain_invariants(struct guest *g, const struct virtq_chain *c)
{
    const uint8_t *ram = guest_host(g, 0, RAM_SIZE);
    uint64_t readable = 0, writable = 0;
    bool seen_writable = false;

    assert_true(c->head < g->size);
    assert_true(c->nr_segs <= VIRTQ_MAX_SEGS);
    for (unsigned i = 0; i < c->nr_segs; i++) {
        const struct virtq_seg *s = &c->segs[i];
        const uint8_t *p = s->host;
        assert_true(s->len > 0);
        assert_true(p >= ram && s->len <= RAM_SIZE && p - ram <= (ptrdiff_t)(RAM_SIZE - s->len));
        assert_false(seen_writable && !s->device_writes);
        seen_writable |= s->device_writes;
        *(s->device_writes ? &writable : &readable) += s->len;
    }
    assert_int_equal(readable, c->readable_len);
    assert_int_equal(writable, c->writable_len);
    assert_true(readable + writable <= VIRTQ_MAX_CHAIN_BYTES);
}

/* Pops until the queue is empty or broken; returns how many chains were taken. */
static unsigned drain(struct guest *g)
{
    unsigned taken = 0;
    for (;;) {
        int ret = virtq_pop(&g->vq, &g->chain);
        if (ret <= 0) {
            assert_true(ret == 0 || (ret == -EIO && g->vq.broken));
            return taken;
        }
        check_chain_invariants(g, &g->chain);
        assert_int_equal(virtq_push(&g->vq, g->chain.head, g->chain.writable_len), 0);
        taken++;
        assert_true(taken <= g->size);
    }
}

static void test_random_descriptor_tables(void **state)
{
    (void)state;
    enum { SIZE = 16, TABLE_ENTRIES = 64, ITERATIONS = 20000 };
    struct guest *g = guest_new(SIZE, false, false);
    uint64_t rng = 0x9e3779b97f4a7c15ull;
    unsigned taken = 0, broken = 0;

    log_set_level(LOG_LVL_WARN);
    for (unsigned iter = 0; iter < ITERATIONS; iter++) {
        uint64_t r = xorshift64(&rng);
        uint16_t start = (uint16_t)(r >> 16);
        assert_int_equal(virtq_setup(&g->vq, &g->gm, SIZE, DESC_GPA, AVAIL_GPA, USED_GPA, r & 1,
                                     r & 2),
                         0);
        g->vq.last_avail_idx = g->vq.used_idx = g->vq.signalled_used = start;
        for (uint32_t i = 0; i < SIZE; i++) {
            struct virtq_desc d = random_desc(&rng);
            put_desc(g, i, d.addr, d.len, d.flags, d.next);
        }
        for (uint32_t i = 0; i < TABLE_ENTRIES; i++) {
            struct virtq_desc d = random_desc(&rng);
            put_desc_in(g, TABLE_GPA, i, d.addr, d.len, d.flags, d.next);
        }
        for (uint32_t i = 0; i < SIZE; i++)
            write_u16(g, AVAIL_GPA + 4 + 2 * i, (uint16_t)(xorshift64(&rng) % (SIZE + 2)));
        set_avail_idx(g, start + (uint16_t)((r >> 32) % (SIZE + 3)));
        taken += drain(g);
        broken += g->vq.broken;
        virtq_should_notify(&g->vq);
    }
    /* The generator must reach both outcomes, or the loop proves little. */
    assert_true(taken > ITERATIONS / 10);
    assert_true(broken > ITERATIONS / 10);
    guest_free(g);
}

/* ---- dirty tracking for live migration ---- */

#define PAGES (RAM_SIZE / 4096)
#define BITMAP_LONGS ((PAGES + GM_BITS_PER_LONG - 1) / GM_BITS_PER_LONG)

/* Turns device dirty tracking on with a fresh bitmap (single-threaded: no membarrier needed). */
static unsigned long *track(struct guest *g)
{
    unsigned long *bm = calloc(BITMAP_LONGS, sizeof(unsigned long));
    assert_non_null(bm);
    g->gm.dirty = bm;
    return bm;
}

static void untrack(struct guest *g, unsigned long *bm)
{
    g->gm.dirty = NULL;
    free(bm);
}

static bool marked(const unsigned long *bm, uint64_t gpa)
{
    uint64_t page = gpa / 4096;
    return (bm[page / GM_BITS_PER_LONG] >> (page % GM_BITS_PER_LONG)) & 1;
}

static unsigned nr_marked(const unsigned long *bm)
{
    unsigned n = 0;
    for (uint64_t i = 0; i < BITMAP_LONGS; i++)
        n += (unsigned)__builtin_popcountl(bm[i]);
    return n;
}

static void unmark_all(unsigned long *bm)
{
    memset(bm, 0, BITMAP_LONGS * sizeof(unsigned long));
}

/* A push marks the chain's writable buffers (a buffer across a page boundary: both pages) and
 * the used ring, not the readable buffers, the descriptor table or the avail ring. */
static void test_push_marks_writable_buffers(void **state)
{
    (void)state;
    struct guest *g = guest_new(8, false, false);
    put_desc(g, 0, BUF_GPA, 16, VIRTQ_DESC_F_NEXT, 1);
    put_desc(g, 1, BUF_GPA + 0x1000, 512, VIRTQ_DESC_F_NEXT, 2);
    put_desc(g, 2, BUF_GPA + 0x2ff0, 0x20, VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, 3);
    put_desc(g, 3, BUF_GPA + 0x5000, 1, VIRTQ_DESC_F_WRITE, 0);
    make_avail(g, 0);
    assert_int_equal(virtq_pop(&g->vq, &g->chain), 1);

    unsigned long *bm = track(g);
    uint8_t status = 0;
    assert_int_equal(virtq_chain_write(&g->chain, 0x20, &status, 1), 1);
    /* The marks come at the push (after the writes), whatever `written` says. */
    assert_int_equal(nr_marked(bm), 0);
    assert_int_equal(virtq_push(&g->vq, g->chain.head, 1), 0);
    assert_true(marked(bm, BUF_GPA + 0x2000));
    assert_true(marked(bm, BUF_GPA + 0x3000));
    assert_true(marked(bm, BUF_GPA + 0x5000));
    assert_true(marked(bm, USED_GPA));
    assert_int_equal(nr_marked(bm), 4);
    assert_false(marked(bm, BUF_GPA) || marked(bm, BUF_GPA + 0x1000));
    assert_false(marked(bm, DESC_GPA) || marked(bm, AVAIL_GPA));
    untrack(g, bm);
    guest_free(g);
}

static void test_push_marks_indirect_chain(void **state)
{
    (void)state;
    struct guest *g = guest_new(8, false, true);
    put_desc(g, 3, BUF_GPA + 0x8000, 8, VIRTQ_DESC_F_NEXT, 4);
    put_desc(g, 4, TABLE_GPA, 48, VIRTQ_DESC_F_INDIRECT, 0);
    put_desc_in(g, TABLE_GPA, 0, BUF_GPA + 0x9100, 16, VIRTQ_DESC_F_NEXT, 2);
    put_desc_in(g, TABLE_GPA, 2, BUF_GPA + 0x200, 4096, VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, 1);
    put_desc_in(g, TABLE_GPA, 1, BUF_GPA + 0x2000, 1, VIRTQ_DESC_F_WRITE, 0);
    make_avail(g, 3);
    assert_int_equal(virtq_pop(&g->vq, &g->chain), 1);

    unsigned long *bm = track(g);
    assert_int_equal(virtq_push(&g->vq, g->chain.head, 0), 0);
    assert_true(marked(bm, BUF_GPA) && marked(bm, BUF_GPA + 0x1000) && marked(bm, BUF_GPA + 0x2000));
    assert_true(marked(bm, USED_GPA));
    assert_int_equal(nr_marked(bm), 4);
    assert_false(marked(bm, TABLE_GPA) || marked(bm, BUF_GPA + 0x8000) ||
                 marked(bm, BUF_GPA + 0x9000));
    untrack(g, bm);
    guest_free(g);
}

/* Tracking off: nothing marked, nothing breaks. */
static void test_push_without_tracking_marks_nothing(void **state)
{
    (void)state;
    struct guest *g = guest_new(8, true, true);
    unsigned long *bm = calloc(BITMAP_LONGS, sizeof(unsigned long));
    assert_non_null(bm);
    put_desc(g, 0, BUF_GPA, 4096, VIRTQ_DESC_F_WRITE, 0);
    make_avail(g, 0);
    assert_null(g->gm.dirty);
    assert_int_equal(virtq_pop(&g->vq, &g->chain), 1);
    assert_int_equal(virtq_push(&g->vq, g->chain.head, 4096), 0);
    assert_int_equal(gm_write(&g->gm, BUF_GPA, "x", 1), 0);
    gm_mark_dirty(&g->gm, 0, RAM_SIZE);
    assert_int_equal(nr_marked(bm), 0);
    assert_int_equal(driver_used_idx(g), 1);
    free(bm);
    guest_free(g);
}

/* Each device write to the used ring marks its own page: a ring placed so that avail_event
 * falls on the page after the elements shows which store marked what. */
static void test_used_ring_writes_mark_their_pages(void **state)
{
    (void)state;
    struct guest *g = guest_new(8, true, false);
    const uint64_t used = USED_GPA + 4096 - VIRTQ_USED_BYTES(8, false); /* elements end the page */
    const uint64_t event_page = USED_GPA + 4096;
    unsigned long *bm = track(g);

    assert_int_equal(virtq_setup(&g->vq, &g->gm, 8, DESC_GPA, AVAIL_GPA, used, true, false), 0);
    assert_int_equal(nr_marked(bm), 0); /* setting up writes nothing (a load does no more) */
    virtq_init_used_flags(&g->vq);
    assert_true(marked(bm, USED_GPA)); /* used->flags */
    assert_int_equal(nr_marked(bm), 1);

    put_desc(g, 0, BUF_GPA, 16, 0, 0);
    make_avail(g, 0);
    unmark_all(bm);
    assert_int_equal(virtq_pop(&g->vq, &g->chain), 1); /* writes avail_event */
    assert_true(marked(bm, event_page));
    assert_int_equal(nr_marked(bm), 1);

    unmark_all(bm);
    assert_int_equal(virtq_push_pending(&g->vq, g->chain.head, 0), 0); /* the element */
    assert_true(marked(bm, USED_GPA));
    assert_int_equal(nr_marked(bm), 1); /* a readable-only chain: no buffer marked */

    unmark_all(bm);
    virtq_publish(&g->vq); /* used->idx */
    assert_true(marked(bm, USED_GPA));
    assert_int_equal(nr_marked(bm), 1);
    uint16_t idx = read_u16(g, used + 2);
    assert_int_equal(idx, 1);

    /* An empty pop with EVENT_IDX re-arms avail_event: marked too. */
    unmark_all(bm);
    assert_int_equal(virtq_pop(&g->vq, &g->chain), 0);
    assert_true(marked(bm, event_page));
    untrack(g, bm);
    guest_free(g);
}

/* The guest rewrites a popped chain into something malformed before the push: the walk at
 * push time stops (marking what it saw), never loops or reads outside RAM. */
static void test_push_walk_survives_malformed_chains(void **state)
{
    (void)state;
    struct {
        uint16_t flags0, next0;
        uint64_t addr0;
        uint32_t len0;
        unsigned expect_marked; /* buffer pages, the used ring's page aside */
    } cases[] = {
        { VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, 1, BUF_GPA, 16, 2 }, /* 0 -> 1 -> 0 ... */
        { VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, 0, BUF_GPA, 16, 1 }, /* 0 -> 0 ... */
        { VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, 100, BUF_GPA, 16, 1 }, /* next out of range */
        { VIRTQ_DESC_F_WRITE, 0, 0xfffffffffffff000ull, 0x2000, 0 }, /* wraps: not RAM */
        { VIRTQ_DESC_F_WRITE, 0, RAM_SIZE - 16, 4096, 1 }, /* straddles the end: the RAM part */
        { VIRTQ_DESC_F_INDIRECT, 0, TABLE_GPA, 17, 0 }, /* bad table length */
        { VIRTQ_DESC_F_INDIRECT | VIRTQ_DESC_F_NEXT, 1, TABLE_GPA, 32, 0 }, /* indirect + NEXT */
        { VIRTQ_DESC_F_INDIRECT, 0, RAM_SIZE - 16, 32, 0 }, /* table outside RAM */
        { VIRTQ_DESC_F_INDIRECT, 0, TABLE_GPA, 16u * (VIRTQ_MAX_SEGS + 1), 0 }, /* too long */
        { VIRTQ_DESC_F_INDIRECT, 0, TABLE_GPA, 64, 2 }, /* a table that loops */
        { VIRTQ_DESC_F_INDIRECT, 0, TABLE_GPA + 0x100, 32, 1 }, /* a table that nests */
        { VIRTQ_DESC_F_INDIRECT, 0, TABLE_GPA + 0x200, 16, 1 }, /* next out of the table */
    };
    for (unsigned i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct guest *g = guest_new(8, false, true);
        put_desc(g, 0, BUF_GPA, 16, VIRTQ_DESC_F_WRITE, 0);
        make_avail(g, 0);
        assert_int_equal(virtq_pop(&g->vq, &g->chain), 1);

        /* Now the guest breaks the rules. */
        put_desc(g, 0, cases[i].addr0, cases[i].len0, cases[i].flags0, cases[i].next0);
        put_desc(g, 1, BUF_GPA + 0x1000, 16, VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, 0);
        /* Tables: 0 -> 1 -> 0, a loop of writable buffers; a buffer then a nested table; a
         * one-entry table whose entry goes on to entry 1. */
        put_desc_in(g, TABLE_GPA, 0, BUF_GPA + 0x4000, 8, VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, 1);
        put_desc_in(g, TABLE_GPA, 1, BUF_GPA + 0x6000, 8, VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, 0);
        put_desc_in(g, TABLE_GPA + 0x100, 0, BUF_GPA + 0x7000, 8,
                    VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, 1);
        put_desc_in(g, TABLE_GPA + 0x100, 1, TABLE_GPA, 32, VIRTQ_DESC_F_INDIRECT, 0);
        put_desc_in(g, TABLE_GPA + 0x200, 0, BUF_GPA + 0x8000, 8,
                    VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, 1);
        unsigned long *bm = track(g);
        assert_int_equal(virtq_push(&g->vq, 0, 16), 0);
        assert_true(marked(bm, USED_GPA));
        assert_int_equal(nr_marked(bm) - 1, cases[i].expect_marked);
        untrack(g, bm);
        guest_free(g);
    }

    /* Without INDIRECT negotiated, a table is not followed at push time either. */
    struct guest *g = guest_new(8, false, false);
    put_desc(g, 0, BUF_GPA, 16, VIRTQ_DESC_F_WRITE, 0);
    make_avail(g, 0);
    assert_int_equal(virtq_pop(&g->vq, &g->chain), 1);
    put_desc(g, 0, TABLE_GPA, 16, VIRTQ_DESC_F_INDIRECT, 0);
    put_desc_in(g, TABLE_GPA, 0, BUF_GPA + 0x4000, 8, VIRTQ_DESC_F_WRITE, 0);
    unsigned long *bm = track(g);
    assert_int_equal(virtq_push(&g->vq, 0, 16), 0);
    assert_int_equal(nr_marked(bm), 1);
    /* A push refused (head out of range) marks nothing and reads nothing. */
    unmark_all(bm);
    assert_int_equal(virtq_push(&g->vq, 8, 0), -EINVAL);
    assert_int_equal(nr_marked(bm), 0);
    untrack(g, bm);
    guest_free(g);
}

/* Random tables: for every chain pop accepts, the push marks exactly the pages of its writable
 * segments plus the used ring's; pushes of arbitrary heads over garbage never misbehave. */
static void test_random_tables_mark_exactly(void **state)
{
    (void)state;
    enum { SIZE = 16, TABLE_ENTRIES = 64, ITERATIONS = 5000 };
    struct guest *g = guest_new(SIZE, false, false);
    uint64_t rng = 0x2545f4914f6cdd1dull;
    unsigned checked = 0;
    unsigned long *bm = track(g);
    unsigned long *expect = calloc(BITMAP_LONGS, sizeof(unsigned long));
    assert_non_null(expect);
    const uint8_t *ram = guest_host(g, 0, RAM_SIZE);

    log_set_level(LOG_LVL_WARN);
    for (unsigned iter = 0; iter < ITERATIONS; iter++) {
        uint64_t r = xorshift64(&rng);
        assert_int_equal(virtq_setup(&g->vq, &g->gm, SIZE, DESC_GPA, AVAIL_GPA, USED_GPA, r & 1,
                                     r & 2),
                         0);
        for (uint32_t i = 0; i < SIZE; i++) {
            struct virtq_desc d = random_desc(&rng);
            put_desc(g, i, d.addr, d.len, d.flags, d.next);
        }
        for (uint32_t i = 0; i < TABLE_ENTRIES; i++) {
            struct virtq_desc d = random_desc(&rng);
            put_desc_in(g, TABLE_GPA, i, d.addr, d.len, d.flags, d.next);
        }
        for (uint32_t i = 0; i < SIZE; i++)
            write_u16(g, AVAIL_GPA + 4 + 2 * i, (uint16_t)(i % SIZE));
        set_avail_idx(g, SIZE);
        for (;;) {
            int ret = virtq_pop(&g->vq, &g->chain);
            if (ret <= 0)
                break;
            unmark_all(expect);
            for (unsigned s = 0; s < g->chain.nr_segs; s++) {
                const struct virtq_seg *seg = &g->chain.segs[s];
                if (!seg->device_writes)
                    continue;
                uint64_t first = (uint64_t)((const uint8_t *)seg->host - ram) / 4096;
                uint64_t last = ((uint64_t)((const uint8_t *)seg->host - ram) + seg->len - 1) / 4096;
                for (uint64_t p = first; p <= last; p++)
                    expect[p / GM_BITS_PER_LONG] |= 1UL << (p % GM_BITS_PER_LONG);
            }
            expect[(USED_GPA / 4096) / GM_BITS_PER_LONG] |= 1UL << ((USED_GPA / 4096) %
                                                                    GM_BITS_PER_LONG);
            unmark_all(bm);
            assert_int_equal(virtq_push(&g->vq, g->chain.head, 0), 0);
            assert_memory_equal(bm, expect, BITMAP_LONGS * sizeof(unsigned long));
            checked++;
        }
        /* Arbitrary heads over the same garbage, the queue broken or not. */
        for (uint16_t h = 0; h < SIZE; h++) {
            int ret = virtq_push(&g->vq, h, 0);
            assert_true(ret == 0 || ret == -EIO);
        }
    }
    assert_true(checked > ITERATIONS / 10);
    free(expect);
    untrack(g, bm);
    guest_free(g);
}

/* A device may write into a pending chain until the publish (virtio-net's num_buffers): the
 * publish marks every chain it hands over again. A refused push still marks its chain. */
static void test_publish_marks_pending_chains(void **state)
{
    (void)state;
    struct guest *g = guest_new(2, false, false);
    put_desc(g, 0, BUF_GPA, 64, VIRTQ_DESC_F_WRITE, 0);
    put_desc(g, 1, BUF_GPA + 0x3000, 64, VIRTQ_DESC_F_WRITE, 0);
    make_avail(g, 0);
    make_avail(g, 1);
    unsigned long *bm = track(g);

    assert_int_equal(virtq_pop(&g->vq, &g->chain), 1);
    assert_int_equal(virtq_push_pending(&g->vq, g->chain.head, 64), 0);
    assert_int_equal(virtq_pop(&g->vq, &g->chain), 1);
    assert_int_equal(virtq_push_pending(&g->vq, g->chain.head, 64), 0);
    assert_true(marked(bm, BUF_GPA) && marked(bm, BUF_GPA + 0x3000));

    unmark_all(bm);
    *(uint8_t *)guest_host(g, BUF_GPA + 10, 1) = 2; /* "num_buffers" of the first chain */
    virtq_publish(&g->vq);
    assert_true(marked(bm, BUF_GPA) && marked(bm, BUF_GPA + 0x3000) && marked(bm, USED_GPA));
    assert_int_equal(nr_marked(bm), 3);
    assert_int_equal(driver_used_idx(g), 2);

    /* A whole ring pending: the third push is refused, its chain marked all the same. */
    assert_int_equal(virtq_push_pending(&g->vq, 0, 0), 0);
    assert_int_equal(virtq_push_pending(&g->vq, 1, 0), 0);
    unmark_all(bm);
    assert_int_equal(virtq_push(&g->vq, 1, 0), -ENOSPC);
    assert_true(marked(bm, BUF_GPA + 0x3000));
    assert_int_equal(nr_marked(bm), 1);
    untrack(g, bm);
    guest_free(g);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_setup_validates_rings),
        cmocka_unit_test(test_three_segment_chain),
        cmocka_unit_test(test_push_pending_publish),
        cmocka_unit_test(test_empty_queue),
        cmocka_unit_test(test_index_wraparound),
        cmocka_unit_test(test_event_idx_notify),
        cmocka_unit_test(test_poll_holds_kicks),
        cmocka_unit_test(test_status_shows_both_sides),
        cmocka_unit_test(test_event_idx_wraps),
        cmocka_unit_test(test_no_interrupt_flag),
        cmocka_unit_test(test_event_idx_ignores_no_interrupt_flag),
        cmocka_unit_test(test_indirect_table),
        cmocka_unit_test(test_unaligned_indirect_table),
        cmocka_unit_test(test_zero_length_skipped),
        cmocka_unit_test(test_chain_read_write_span_segments),
        cmocka_unit_test(test_chain_as_long_as_queue),
        cmocka_unit_test(test_max_segs_boundary),
        cmocka_unit_test(test_indirect_max_segs_boundary),
        cmocka_unit_test(test_reset_clears_broken),
        cmocka_unit_test(test_push_bad_head_is_refused),
        cmocka_unit_test(test_descriptor_loop),
        cmocka_unit_test(test_self_loop),
        cmocka_unit_test(test_zero_length_loop),
        cmocka_unit_test(test_next_out_of_range),
        cmocka_unit_test(test_chain_longer_than_queue),
        cmocka_unit_test(test_buffer_outside_ram),
        cmocka_unit_test(test_buffer_wraps_address_space),
        cmocka_unit_test(test_buffer_straddles_end_of_ram),
        cmocka_unit_test(test_buffer_straddles_into_mmio_hole),
        cmocka_unit_test(test_chain_over_max_bytes),
        cmocka_unit_test(test_writable_before_readable),
        cmocka_unit_test(test_writable_before_readable_across_indirect),
        cmocka_unit_test(test_indirect_not_negotiated),
        cmocka_unit_test(test_indirect_with_next),
        cmocka_unit_test(test_indirect_bad_length),
        cmocka_unit_test(test_indirect_table_outside_ram),
        cmocka_unit_test(test_nested_indirect),
        cmocka_unit_test(test_indirect_next_out_of_table),
        cmocka_unit_test(test_indirect_loop),
        cmocka_unit_test(test_avail_idx_runs_ahead),
        cmocka_unit_test(test_avail_idx_runs_behind),
        cmocka_unit_test(test_head_out_of_range),
        cmocka_unit_test(test_random_descriptor_tables),
        cmocka_unit_test(test_push_marks_writable_buffers),
        cmocka_unit_test(test_push_marks_indirect_chain),
        cmocka_unit_test(test_push_without_tracking_marks_nothing),
        cmocka_unit_test(test_used_ring_writes_mark_their_pages),
        cmocka_unit_test(test_push_walk_survives_malformed_chains),
        cmocka_unit_test(test_random_tables_mark_exactly),
        cmocka_unit_test(test_publish_marks_pending_chains),
        cmocka_unit_test(test_notify_once_per_turn),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
