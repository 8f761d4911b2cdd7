/* virtqueue.h: the device side of a virtio 1.x split virtqueue, hardened against the guest. */
#ifndef GODWIT_VIRTIO_VIRTQUEUE_H
#define GODWIT_VIRTIO_VIRTQUEUE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "vm/memory.h"

#define VIRTQ_MAX_SIZE 32768u
/* The most buffer descriptors one chain may hold, indirect ones included. */
#define VIRTQ_MAX_SEGS 1024u
/* The most bytes one chain may describe: far above any real request, far below overflow. */
#define VIRTQ_MAX_CHAIN_BYTES (256u << 20)

/* Feature bits that change the ring format (virtio 1.2, 6). */
#define VIRTIO_F_INDIRECT_DESC 28
#define VIRTIO_F_EVENT_IDX 29

#define VIRTQ_DESC_F_NEXT 1
#define VIRTQ_DESC_F_WRITE 2
#define VIRTQ_DESC_F_INDIRECT 4
#define VIRTQ_AVAIL_F_NO_INTERRUPT 1
#define VIRTQ_USED_F_NO_NOTIFY 1

/* The ring layouts in guest memory (virtio 1.2, 2.7), all little-endian. */
struct virtq_desc {
    uint64_t addr;
    uint32_t len;
    uint16_t flags;
    uint16_t next;
};

struct virtq_avail {
    uint16_t flags;
    uint16_t idx;
    uint16_t ring[]; /* [size], then used_event when EVENT_IDX is negotiated */
};

struct virtq_used_elem {
    uint32_t id; /* head of the chain */
    uint32_t len; /* bytes the device wrote into it */
};

struct virtq_used {
    uint16_t flags;
    uint16_t idx;
    struct virtq_used_elem ring[]; /* [size], then avail_event when EVENT_IDX is negotiated */
};

#define VIRTQ_DESC_TABLE_BYTES(size) (16ull * (size))
#define VIRTQ_AVAIL_BYTES(size, event_idx) (4ull + 2ull * (size) + ((event_idx) ? 2 : 0))
#define VIRTQ_USED_BYTES(size, event_idx) (4ull + 8ull * (size) + ((event_idx) ? 2 : 0))

/*
 * The device's state of one queue. The guest addresses, the indexes and the flags are the
 * whole state (what save/load must carry); the host views are derived from them by
 * virtq_setup() and stay valid as long as guest RAM is mapped.
 */
struct virtqueue {
    const struct guest_memory *gm;
    uint16_t size; /* a power of two, 1..VIRTQ_MAX_SIZE */
    uint64_t desc_gpa, avail_gpa, used_gpa;
    bool enabled;
    bool event_idx; /* VIRTIO_F_EVENT_IDX negotiated */
    bool indirect; /* VIRTIO_F_INDIRECT_DESC negotiated */
    bool broken; /* the guest broke the rules: nothing more is read until reset */
    const char *broken_reason; /* a static string, for the transport to report once */
    uint16_t last_avail_idx; /* free-running index of the next avail entry to take */
    uint16_t used_idx; /* free-running shadow of used->idx */
    uint16_t used_pending; /* elements written after used_idx, not yet published */
    uint16_t signalled_used; /* used_idx when virtq_should_notify() last ran */
    /* The device looks at the ring on its own for now (virtq_hold_kicks): avail_event is
     * left where it was. Not state: a load or a reset starts without it. */
    bool kicks_held;
    /* The main loop polls this ring (virtq_poll_begin): no kick is wanted. Not state. */
    bool polled;

    /* Host views of the rings, checked once at setup. */
    struct virtq_desc *desc;
    struct virtq_avail *avail;
    struct virtq_used *used;
};

/* One buffer of a chain, already translated and bounds-checked for its whole length. */
struct virtq_seg {
    void *host;
    uint32_t len; /* never 0: zero-length descriptors are skipped */
    bool device_writes;
};

/* A popped descriptor chain: device-readable segments first, then device-writable ones. */
struct virtq_chain {
    uint16_t head; /* give it back to virtq_push() */
    unsigned nr_segs;
    uint32_t readable_len;
    uint32_t writable_len;
    struct virtq_seg segs[VIRTQ_MAX_SEGS];
};

/*
 * Checks and enables a queue of `size` entries whose rings the driver placed at the given
 * guest addresses. Returns 0, or -EINVAL (the queue is left reset) when the size is not a
 * power of two up to VIRTQ_MAX_SIZE or a ring is misaligned or not wholly inside RAM.
 */
int virtq_setup(struct virtqueue *vq, const struct guest_memory *gm, uint16_t size,
                uint64_t desc, uint64_t avail, uint64_t used, bool event_idx, bool indirect);

/*
 * After the driver enabled a set-up queue: the used ring's flags, which say that we never ask
 * it to hold back its kicks. Not for a queue loaded from a snapshot or a migration: its flags
 * are in RAM already, and a store there within a migration's pause would fault the ring's page
 * into this process first (5 such faults in a traced handover in the test host).
 */
void virtq_init_used_flags(struct virtqueue *vq);

/* Back to the state before setup: disabled, indexes zero, not broken. */
void virtq_reset(struct virtqueue *vq);

/*
 * Takes the next available chain. Returns 1 with `chain` filled, 0 when there is none (or
 * the queue is not enabled), -EIO when the guest broke the ring's rules: the queue is then
 * broken and keeps answering -EIO until reset (the device should set DEVICE_NEEDS_RESET).
 * With EVENT_IDX it also asks the driver, through avail_event, to kick for the next one.
 */
int virtq_pop(struct virtqueue *vq, struct virtq_chain *chain);

/*
 * With EVENT_IDX, while `hold`: pops leave avail_event where it was, so that the driver,
 * which kicks only when its new entries pass avail_event, stops kicking. For a device with
 * requests in flight that will look at the ring when they complete: a kick would only cost
 * the guest an exit. Let go, the next virtq_pop() that finds the ring empty sets avail_event
 * again and looks once more, so no entry offered meanwhile is missed. Without EVENT_IDX it
 * does nothing.
 */
static inline void virtq_hold_kicks(struct virtqueue *vq, bool hold)
{
    vq->kicks_held = hold && vq->event_idx;
}

/*
 * Polling (the main loop looks at the ring itself between its waits, `--io-poll`): with
 * EVENT_IDX, pops leave avail_event behind as under virtq_hold_kicks, so the driver stops
 * kicking while the ring is polled. virtq_poll_end() asks for kicks again (avail_event set,
 * then a full fence and a second look) and returns true when entries are waiting, which the
 * caller must then take, since the driver may have offered them without a kick.
 */
static inline void virtq_poll_begin(struct virtqueue *vq)
{
    vq->polled = vq->event_idx;
}
bool virtq_poll_end(struct virtqueue *vq);

/* Whether the driver has made entries available that the device has not taken. */
bool virtq_has_avail(const struct virtqueue *vq);

/*
 * Returns the chain `head` to the driver, saying that `written` bytes were written into its
 * writable segments, and publishes it with any element pending before it. Returns 0, -EIO
 * on a broken queue, -EINVAL for a head out of range or a queue not enabled, -ENOSPC when a
 * whole ring's worth is pending already.
 */
int virtq_push(struct virtqueue *vq, uint16_t head, uint32_t written);

/*
 * Writes the used element for chain `head` without publishing it: the driver sees it only
 * at the next virtq_publish() or virtq_push(), together with every element pending before it
 * (virtio-net hands over a packet spread over several chains this way). Returns 0, -EIO on
 * a broken queue, -EINVAL for a head out of range or a queue not enabled, -ENOSPC when a
 * whole ring's worth is pending already.
 */
int virtq_push_pending(struct virtqueue *vq, uint16_t head, uint32_t written);

/* Makes every pending used element visible to the driver with one used->idx update. */
void virtq_publish(struct virtqueue *vq);

/*
 * Whether the driver wants an interrupt for what was pushed since the previous call
 * (used_event with EVENT_IDX, otherwise the NO_INTERRUPT flag). Call it once after a batch of
 * pushes and interrupt the guest when it returns true.
 */
bool virtq_should_notify(struct virtqueue *vq);

/*
 * A queue as it stands, for counters and stall reports: the device's own indexes beside what
 * the driver last wrote into the rings (read as they are: reported, never trusted).
 */
struct virtq_status {
    bool enabled, broken;
    uint16_t size;
    uint16_t avail_idx;      /* the driver's avail->idx: entries offered so far */
    uint16_t last_avail_idx; /* entries the device has taken */
    uint16_t used_idx;       /* entries the device has given back (published) */
    uint16_t used_pending;   /* written after used_idx, not yet published */
    bool event_idx;
    uint16_t used_event;     /* with EVENT_IDX: the driver wants an interrupt past this */
    uint16_t avail_event;    /* with EVENT_IDX: the device wants a kick past this */
    bool no_interrupt;       /* without EVENT_IDX: VIRTQ_AVAIL_F_NO_INTERRUPT is set */
};

/* Fills `st`; the ring fields stay zero for a queue that is not enabled. */
void virtq_get_status(const struct virtqueue *vq, struct virtq_status *st);

/*
 * Copy out of the chain's readable bytes / into its writable bytes, starting `offset` bytes
 * into them. Return how many bytes were copied: less than `len` at the end of the chain.
 */
size_t virtq_chain_read(const struct virtq_chain *c, size_t offset, void *dst, size_t len);
size_t virtq_chain_write(const struct virtq_chain *c, size_t offset, const void *src, size_t len);
/* Up to `len` bytes of the chain's readable (or writable) segments from `offset`, as iovecs for
 * readv/sendmsg straight on guest memory; `iov` holds VIRTQ_MAX_SEGS. Returns how many. */
struct iovec;
unsigned virtq_chain_iov(const struct virtq_chain *c, bool writable, size_t offset, size_t len,
                         struct iovec *iov);

#endif
