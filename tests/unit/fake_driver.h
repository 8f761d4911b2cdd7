/*
 * fake_driver.h: a guest driver's side of split virtqueues in fake guest memory, shared by the
 * virtio device unit tests (as the KVM selftests share their lib/). Queue q's rings sit at a
 * fixed layout; a chain is written into the descriptor table and made available; the device's
 * used entries are read back. Every access goes through gm_read/gm_write and fails the test if
 * it leaves guest RAM.
 */
#ifndef GODWIT_TESTS_FAKE_DRIVER_H
#define GODWIT_TESTS_FAKE_DRIVER_H

#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "virtio/virtqueue.h"
#include "vm/memory.h"

/* Queue q's descriptor table, available and used rings: 64 KiB apart per queue. */
#define FAKE_DESC_GPA 0x100000ull
#define FAKE_AVAIL_GPA 0x200000ull
#define FAKE_USED_GPA 0x300000ull
#define FAKE_QUEUE_STRIDE 0x10000ull

/* One buffer of a chain, as the driver describes it. */
struct fake_seg {
    uint64_t gpa;
    uint32_t len;
    bool writable;
};

struct fake_ring {
    uint64_t desc, avail, used;
    uint16_t size;
};

static inline struct fake_ring fake_ring(unsigned q, uint16_t size)
{
    uint64_t off = q * FAKE_QUEUE_STRIDE;
    return (struct fake_ring){ FAKE_DESC_GPA + off, FAKE_AVAIL_GPA + off, FAKE_USED_GPA + off,
                               size };
}

static inline void *fake_host(struct guest_memory *gm, uint64_t gpa, uint64_t len)
{
    void *p = gm_ptr(gm, gpa, len);
    assert_non_null(p);
    return p;
}

/* Puts `head` in the next slot of the available ring and publishes the new index. */
static inline void fake_make_available(struct guest_memory *gm, struct fake_ring r,
                                       uint16_t *avail_idx, uint16_t head)
{
    assert_int_equal(gm_write(gm, r.avail + 4 + 2ull * (*avail_idx % r.size), &head, 2), 0);
    (*avail_idx)++;
    assert_int_equal(gm_write(gm, r.avail + 2, avail_idx, 2), 0);
}

/* Writes a chain of n buffers into consecutive descriptors from *next_desc and makes it
 * available; returns its head. */
static inline uint16_t fake_offer(struct guest_memory *gm, struct fake_ring r, uint16_t *next_desc,
                                  uint16_t *avail_idx, const struct fake_seg *segs, unsigned n)
{
    uint16_t head = *next_desc;
    for (unsigned i = 0; i < n; i++) {
        uint16_t idx = (uint16_t)((head + i) % r.size);
        struct virtq_desc d = { .addr = segs[i].gpa, .len = segs[i].len,
                                .flags = (uint16_t)((segs[i].writable ? VIRTQ_DESC_F_WRITE : 0) |
                                                    (i + 1 < n ? VIRTQ_DESC_F_NEXT : 0)),
                                .next = (uint16_t)((idx + 1) % r.size) };
        assert_int_equal(gm_write(gm, r.desc + 16ull * idx, &d, sizeof(d)), 0);
    }
    *next_desc = (uint16_t)((head + n) % r.size);
    fake_make_available(gm, r, avail_idx, head);
    return head;
}

static inline uint16_t fake_used_idx(struct guest_memory *gm, struct fake_ring r)
{
    uint16_t idx;
    assert_int_equal(gm_read(gm, r.used + 2, &idx, 2), 0);
    return idx;
}

/* The used ring's entry number i (counting from the start, wrapping). */
static inline struct virtq_used_elem fake_used_elem(struct guest_memory *gm, struct fake_ring r,
                                                    uint16_t i)
{
    struct virtq_used_elem e;
    assert_int_equal(gm_read(gm, r.used + 4 + 8ull * (i % r.size), &e, sizeof(e)), 0);
    return e;
}

#endif
