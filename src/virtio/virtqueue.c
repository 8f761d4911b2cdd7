/* virtqueue.c: split-virtqueue chain walking, used ring and notification rules. */
#include "virtio/virtqueue.h"

#include <errno.h>
#include <string.h>
#include <sys/uio.h>

#include "log.h"

/* What one walk of a chain has seen so far, across the ring's table and an indirect one. */
struct chain_walk {
    struct virtq_chain *chain;
    uint64_t total_len;
    unsigned nr_descs; /* buffer descriptors, zero-length ones included */
    bool seen_writable;
};

static bool is_power_of_two(uint32_t n)
{
    return n != 0 && (n & (n - 1)) == 0;
}

/* Host view of a whole ring, or NULL when it is misaligned or not wholly inside RAM. */
static void *ring_ptr(const struct guest_memory *gm, uint64_t gpa, uint64_t len, uint64_t align)
{
    if (gpa % align != 0)
        return NULL;
    return gm_ptr(gm, gpa, len);
}

int virtq_setup(struct virtqueue *vq, const struct guest_memory *gm, uint16_t size,
                uint64_t desc, uint64_t avail, uint64_t used, bool event_idx, bool indirect)
{
    virtq_reset(vq);
    if (!is_power_of_two(size) || size > VIRTQ_MAX_SIZE)
        return -EINVAL;
    void *desc_host = ring_ptr(gm, desc, VIRTQ_DESC_TABLE_BYTES(size), 16);
    void *avail_host = ring_ptr(gm, avail, VIRTQ_AVAIL_BYTES(size, event_idx), 2);
    void *used_host = ring_ptr(gm, used, VIRTQ_USED_BYTES(size, event_idx), 4);
    if (!desc_host || !avail_host || !used_host)
        return -EINVAL;

    vq->gm = gm;
    vq->size = size;
    vq->desc_gpa = desc;
    vq->avail_gpa = avail;
    vq->used_gpa = used;
    vq->event_idx = event_idx;
    vq->indirect = indirect;
    vq->desc = desc_host;
    vq->avail = avail_host;
    vq->used = used_host;
    vq->enabled = true;
    return 0;
}

void virtq_init_used_flags(struct virtqueue *vq)
{
    /* We never ask the driver to hold back its kicks (VIRTQ_USED_F_NO_NOTIFY). */
    __atomic_store_n(&vq->used->flags, 0, __ATOMIC_RELAXED);
    gm_mark_dirty(vq->gm, vq->used_gpa, sizeof(vq->used->flags));
}

void virtq_reset(struct virtqueue *vq)
{
    memset(vq, 0, sizeof(*vq));
}

static int virtq_break(struct virtqueue *vq, const char *why)
{
    vq->broken = true;
    vq->broken_reason = why;
    log_debug("virtqueue: guest broke the ring: %s", why);
    return -EIO;
}

static uint16_t *used_event_field(const struct virtqueue *vq)
{
    return &vq->avail->ring[vq->size];
}

static uint16_t *avail_event_field(const struct virtqueue *vq)
{
    return (uint16_t *)&vq->used->ring[vq->size];
}

/*
 * ---- Dirty tracking for live migration ----
 *
 * While migration tracks device writes (gm->dirty set, see vm/memory.h and
 * migration/dirty.c), every byte this device model writes into guest RAM must have its page
 * marked, AFTER the write: the migration thread harvests and clears the bits concurrently,
 * then reads the pages to send them. A mark made after the write is either harvested by a
 * pass that reads the page after the write (the mark's release RMW pairs with the harvest's
 * acquire exchange), or lands after that harvest's clear and makes the next pass send the
 * page again. A mark made before the write could be harvested, and the page sent, before the
 * write lands: the write would be lost.
 *
 * Buffers: the devices write a chain's writable buffers (virtq_chain_write, or io_uring reads
 * into them, which complete before the completion that pushes the chain) and only then push
 * the chain. So virtq_push_pending() marks every device-writable descriptor of chain `head`,
 * all of it whatever `written` says (over-reporting is harmless, under-reporting corrupts the
 * guest): that is after every write into the chain. virtq_publish() marks every chain it
 * publishes once more, because a device may write into a pending chain until it is published
 * (virtio-net's num_buffers); virtq_push() leaves the marking to its publish. A device must
 * never write into a chain after publishing it. The marks re-walk the chain in the descriptor
 * table because the push gets only the head; the walk uses virtq_pop's bounds, and a chain
 * the guest made malformed (or rewrote) since the pop just stops the walk (or marks the wrong
 * pages): it is the guest breaking the rules on its own buffers, never a read out of bounds
 * or an endless loop in the VMM.
 *
 * The rings: the used elements (virtq_push_pending), used->idx (virtq_publish), avail_event
 * (EVENT_IDX) and used->flags (setup) are marked right after each store.
 *
 * With tracking off all this costs a load of gm->dirty after each store to the used ring (three
 * per push, of one cached word). Each load must come after the store it covers, never be
 * hoisted before it: see membarrier_all_threads() in migration/dirty.c for why.
 */

static void load_desc(const uint8_t *table, uint32_t index, struct virtq_desc *d);

/* Marks [offset, offset + len) of the used ring dirty, after the device has written it. */
static void mark_used(const struct virtqueue *vq, uint64_t offset, uint64_t len)
{
    gm_mark_dirty(vq->gm, vq->used_gpa + offset, len);
}

/* Marks the device-writable buffers of one descriptor table's part of a chain. */
static void mark_table(const struct virtqueue *vq, unsigned long *dirty, const uint8_t *table,
                       uint32_t nr_entries, uint32_t index, bool in_indirect, unsigned *nr_descs)
{
    for (uint32_t visited = 0; visited < nr_entries && index < nr_entries; visited++) {
        struct virtq_desc d;
        load_desc(table, index, &d);
        if (d.flags & VIRTQ_DESC_F_INDIRECT) {
            if (in_indirect || !vq->indirect || (d.flags & VIRTQ_DESC_F_NEXT) || d.len == 0 ||
                d.len % sizeof(struct virtq_desc) != 0 ||
                d.len / sizeof(struct virtq_desc) > VIRTQ_MAX_SEGS)
                return;
            const uint8_t *sub = gm_ptr(vq->gm, d.addr, d.len);
            if (sub)
                mark_table(vq, dirty, sub, d.len / sizeof(struct virtq_desc), 0, true, nr_descs);
            return;
        }
        if (++*nr_descs > VIRTQ_MAX_SEGS)
            return;
        if ((d.flags & VIRTQ_DESC_F_WRITE) && d.len != 0)
            gm_mark_dirty_in(vq->gm, dirty, d.addr, d.len);
        if (!(d.flags & VIRTQ_DESC_F_NEXT))
            return;
        index = d.next;
    }
}

/* Marks every device-writable buffer of chain `head` in `dirty`. */
static void mark_chain_in(const struct virtqueue *vq, unsigned long *dirty, uint16_t head)
{
    unsigned nr_descs = 0;
    mark_table(vq, dirty, (const uint8_t *)vq->desc, vq->size, head, false, &nr_descs);
}

/* The same when tracking is on; for a head in range of an enabled queue. */
static void mark_chain(const struct virtqueue *vq, uint16_t head)
{
    unsigned long *dirty = gm_dirty_bitmap(vq->gm);
    if (dirty)
        mark_chain_in(vq, dirty, head);
}

/* Marks the chains of every pending used element, when tracking is on (see virtq_publish). */
static void mark_pending_chains(const struct virtqueue *vq)
{
    unsigned long *dirty = gm_dirty_bitmap(vq->gm);
    if (!dirty)
        return;
    for (uint16_t i = 0; i < vq->used_pending; i++) {
        uint16_t slot = (uint16_t)(vq->used_idx + i) & (vq->size - 1);
        /* Our own store, unless the guest scribbled on its used ring: then it marks the wrong
         * pages of its own, as with a chain rewritten after the pop. */
        uint32_t head = __atomic_load_n(&vq->used->ring[slot].id, __ATOMIC_RELAXED);
        if (head < vq->size)
            mark_chain_in(vq, dirty, (uint16_t)head);
    }
}

/* With EVENT_IDX: ask the driver to kick once it makes entry last_avail_idx available. */
static void virtq_set_avail_event(struct virtqueue *vq)
{
    __atomic_store_n(avail_event_field(vq), vq->last_avail_idx, __ATOMIC_RELAXED);
    mark_used(vq, VIRTQ_USED_BYTES(vq->size, false), sizeof(uint16_t));
}

/*
 * Copies one descriptor out of guest memory, so that every check and every use sees the same
 * values however the guest rewrites it meanwhile. Indirect tables need not be aligned.
 */
static void load_desc(const uint8_t *table, uint32_t index, struct virtq_desc *d)
{
    memcpy(d, table + (size_t)index * sizeof(*d), sizeof(*d));
    /* Keeps the compiler from re-reading guest memory in place of the copy. */
    __asm__ __volatile__("" ::: "memory");
}

/* Adds one buffer descriptor to the chain; returns NULL, or why the guest broke the rules. */
static const char *chain_add_buffer(const struct virtqueue *vq, struct chain_walk *w,
                                    const struct virtq_desc *d)
{
    bool device_writes = d->flags & VIRTQ_DESC_F_WRITE;

    if (++w->nr_descs > VIRTQ_MAX_SEGS)
        return "chain has more than VIRTQ_MAX_SEGS descriptors";
    if (!device_writes && w->seen_writable)
        return "device-readable descriptor after a device-writable one";
    w->seen_writable |= device_writes;
    if (d->len == 0)
        return NULL;
    w->total_len += d->len; /* at most VIRTQ_MAX_SEGS * 4 GiB: no overflow */
    if (w->total_len > VIRTQ_MAX_CHAIN_BYTES)
        return "chain longer than VIRTQ_MAX_CHAIN_BYTES";
    void *host = gm_ptr(vq->gm, d->addr, d->len);
    if (!host)
        return "buffer not wholly inside one RAM region";

    struct virtq_chain *c = w->chain;
    c->segs[c->nr_segs++] = (struct virtq_seg){ host, d->len, device_writes };
    if (device_writes)
        c->writable_len += d->len;
    else
        c->readable_len += d->len;
    return NULL;
}

static const char *walk_table(const struct virtqueue *vq, struct chain_walk *w,
                              const uint8_t *table, uint32_t nr_entries, uint32_t index,
                              bool in_indirect);

/* Follows a descriptor that points at an indirect table; it must end the ring's chain. */
static const char *walk_indirect(const struct virtqueue *vq, struct chain_walk *w,
                                 const struct virtq_desc *d)
{
    if (!vq->indirect)
        return "indirect descriptor without VIRTIO_F_INDIRECT_DESC";
    if (d->flags & VIRTQ_DESC_F_NEXT)
        return "indirect descriptor with NEXT";
    if (d->len == 0 || d->len % sizeof(struct virtq_desc) != 0)
        return "indirect table length not a non-zero multiple of 16";
    uint32_t nr_entries = d->len / sizeof(struct virtq_desc);
    if (nr_entries > VIRTQ_MAX_SEGS)
        return "indirect table has more than VIRTQ_MAX_SEGS entries";
    const uint8_t *table = gm_ptr(vq->gm, d->addr, d->len);
    if (!table)
        return "indirect table not wholly inside one RAM region";
    return walk_table(vq, w, table, nr_entries, 0, true);
}

/*
 * Walks a chain through one descriptor table (the ring's, or an indirect one) from `index`.
 * A chain never visits more descriptors than its table holds, which bounds any loop.
 */
static const char *walk_table(const struct virtqueue *vq, struct chain_walk *w,
                              const uint8_t *table, uint32_t nr_entries, uint32_t index,
                              bool in_indirect)
{
    for (uint32_t visited = 0;; visited++) {
        struct virtq_desc d;
        const char *err;

        if (visited >= nr_entries)
            return "descriptor chain loops";
        if (index >= nr_entries)
            return "next index out of range";
        load_desc(table, index, &d);
        if (d.flags & VIRTQ_DESC_F_INDIRECT) {
            if (in_indirect)
                return "nested indirect table";
            return walk_indirect(vq, w, &d);
        }
        err = chain_add_buffer(vq, w, &d);
        if (err)
            return err;
        if (!(d.flags & VIRTQ_DESC_F_NEXT))
            return NULL;
        index = d.next;
    }
}

/* Reads avail->idx; with EVENT_IDX and nothing new, re-arms the kick and looks once more. */
static uint16_t virtq_read_avail_idx(struct virtqueue *vq)
{
    uint16_t avail_idx = __atomic_load_n(&vq->avail->idx, __ATOMIC_ACQUIRE);
    if (avail_idx != vq->last_avail_idx || !vq->event_idx || vq->kicks_held || vq->polled)
        return avail_idx;
    /*
     * The driver may have added an entry after our read and checked avail_event before our
     * store to it became visible: then it did not kick. The full fence orders our store before
     * the second read, so either we see its entry or it sees our avail_event and kicks.
     */
    virtq_set_avail_event(vq);
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    return __atomic_load_n(&vq->avail->idx, __ATOMIC_ACQUIRE);
}

int virtq_pop(struct virtqueue *vq, struct virtq_chain *chain)
{
    if (vq->broken)
        return -EIO;
    if (!vq->enabled)
        return 0;

    uint16_t pending = (uint16_t)(virtq_read_avail_idx(vq) - vq->last_avail_idx);
    if (pending > vq->size)
        return virtq_break(vq, "avail index moved more than the queue size");
    if (pending == 0)
        return 0;
    uint16_t slot = vq->last_avail_idx & (vq->size - 1);
    uint16_t head = __atomic_load_n(&vq->avail->ring[slot], __ATOMIC_RELAXED);
    if (head >= vq->size)
        return virtq_break(vq, "head index out of range");

    struct chain_walk walk = { .chain = chain };
    chain->head = head;
    chain->nr_segs = 0;
    chain->readable_len = chain->writable_len = 0;
    const char *err = walk_table(vq, &walk, (const uint8_t *)vq->desc, vq->size, head, false);
    if (err)
        return virtq_break(vq, err);

    vq->last_avail_idx++;
    if (vq->event_idx && !vq->kicks_held && !vq->polled)
        virtq_set_avail_event(vq);
    return 1;
}

bool virtq_has_avail(const struct virtqueue *vq)
{
    return vq->enabled && !vq->broken &&
           __atomic_load_n(&vq->avail->idx, __ATOMIC_ACQUIRE) != vq->last_avail_idx;
}

bool virtq_poll_end(struct virtqueue *vq)
{
    if (!vq->polled)
        return virtq_has_avail(vq);
    vq->polled = false;
    if (!vq->enabled || vq->broken)
        return false;
    if (!vq->kicks_held) {
        /* As in virtq_read_avail_idx: either the second look sees the driver's entry, or the
         * driver sees the new avail_event and kicks. */
        virtq_set_avail_event(vq);
        __atomic_thread_fence(__ATOMIC_SEQ_CST);
    }
    return virtq_has_avail(vq);
}

/* Writes the used element for `head` after the pending ones; marks no buffer. */
static int push_pending(struct virtqueue *vq, uint16_t head, uint32_t written)
{
    if (vq->broken)
        return -EIO;
    if (!vq->enabled || head >= vq->size)
        return -EINVAL;
    if (vq->used_pending >= vq->size)
        return -ENOSPC; /* one more would overwrite an element the driver has not seen */

    uint16_t idx = (uint16_t)(vq->used_idx + vq->used_pending);
    uint16_t slot = idx & (vq->size - 1);
    struct virtq_used_elem *elem = &vq->used->ring[slot];
    __atomic_store_n(&elem->id, head, __ATOMIC_RELAXED);
    __atomic_store_n(&elem->len, written, __ATOMIC_RELAXED);
    mark_used(vq, offsetof(struct virtq_used, ring) + sizeof(*elem) * slot, sizeof(*elem));
    vq->used_pending++;
    return 0;
}

int virtq_push_pending(struct virtqueue *vq, uint16_t head, uint32_t written)
{
    /* The device has written the chain whether or not the push succeeds: mark it anyway. */
    if (vq->enabled && head < vq->size)
        mark_chain(vq, head);
    return push_pending(vq, head, written);
}

void virtq_publish(struct virtqueue *vq)
{
    if (vq->broken || !vq->enabled || vq->used_pending == 0)
        return;
    /* Pending chains are marked again: a device may still write into a chain between its
     * push_pending and the publish (virtio-net fills in the first chain's num_buffers then). */
    mark_pending_chains(vq);
    vq->used_idx = (uint16_t)(vq->used_idx + vq->used_pending);
    vq->used_pending = 0;
    /* Release: the driver that sees the new index also sees the elements and the data. */
    __atomic_store_n(&vq->used->idx, vq->used_idx, __ATOMIC_RELEASE);
    mark_used(vq, offsetof(struct virtq_used, idx), sizeof(vq->used->idx));
}

int virtq_push(struct virtqueue *vq, uint16_t head, uint32_t written)
{
    /* The publish marks this chain with the pending ones: one walk, not two. */
    int ret = push_pending(vq, head, written);
    if (ret == 0)
        virtq_publish(vq);
    else if (vq->enabled && head < vq->size)
        mark_chain(vq, head);
    return ret;
}

/* True when event_idx lies in the window (old, new] of used entries just published. */
static bool vring_need_event(uint16_t event_idx, uint16_t new_idx, uint16_t old_idx)
{
    return (uint16_t)(new_idx - event_idx - 1) < (uint16_t)(new_idx - old_idx);
}

bool virtq_should_notify(struct virtqueue *vq)
{
    if (!vq->enabled || vq->broken)
        return false;
    uint16_t old_idx = vq->signalled_used;
    uint16_t new_idx = vq->used_idx;
    vq->signalled_used = new_idx;
    if (old_idx == new_idx)
        return false;
    /*
     * Our used->idx store must be visible before we read what the driver asked for; else the
     * driver could update used_event (or the flag) after reading a stale used->idx, and both
     * sides would wait for each other.
     */
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    if (vq->event_idx) {
        uint16_t used_event = __atomic_load_n(used_event_field(vq), __ATOMIC_RELAXED);
        return vring_need_event(used_event, new_idx, old_idx);
    }
    uint16_t flags = __atomic_load_n(&vq->avail->flags, __ATOMIC_RELAXED);
    return !(flags & VIRTQ_AVAIL_F_NO_INTERRUPT);
}

void virtq_get_status(const struct virtqueue *vq, struct virtq_status *st)
{
    *st = (struct virtq_status){ .enabled = vq->enabled, .broken = vq->broken };
    if (!vq->enabled)
        return;
    st->size = vq->size;
    st->last_avail_idx = vq->last_avail_idx;
    st->used_idx = vq->used_idx;
    st->used_pending = vq->used_pending;
    st->event_idx = vq->event_idx;
    st->avail_idx = __atomic_load_n(&vq->avail->idx, __ATOMIC_ACQUIRE);
    if (vq->event_idx) {
        st->used_event = __atomic_load_n(used_event_field(vq), __ATOMIC_RELAXED);
        st->avail_event = __atomic_load_n(avail_event_field(vq), __ATOMIC_RELAXED);
    } else {
        st->no_interrupt =
            __atomic_load_n(&vq->avail->flags, __ATOMIC_RELAXED) & VIRTQ_AVAIL_F_NO_INTERRUPT;
    }
}

/*
 * Copies between a flat buffer and the chain's readable or writable bytes: into `dst` when
 * it is set, else out of `src`.
 */
static size_t chain_copy(const struct virtq_chain *c, bool writable, size_t offset, size_t len,
                         uint8_t *dst, const uint8_t *src)
{
    size_t done = 0;
    for (unsigned i = 0; i < c->nr_segs && done < len; i++) {
        const struct virtq_seg *s = &c->segs[i];
        if (s->device_writes != writable)
            continue;
        if (offset >= s->len) {
            offset -= s->len;
            continue;
        }
        size_t n = s->len - offset;
        if (n > len - done)
            n = len - done;
        uint8_t *guest = (uint8_t *)s->host + offset;
        if (dst)
            memcpy(dst + done, guest, n);
        else
            memcpy(guest, src + done, n);
        done += n;
        offset = 0;
    }
    return done;
}

unsigned virtq_chain_iov(const struct virtq_chain *c, bool writable, size_t offset, size_t len,
                         struct iovec *iov)
{
    unsigned n = 0;
    for (unsigned i = 0; i < c->nr_segs && len; i++) {
        const struct virtq_seg *s = &c->segs[i];
        if (s->device_writes != writable)
            continue;
        if (offset >= s->len) {
            offset -= s->len;
            continue;
        }
        size_t take = s->len - offset < len ? s->len - offset : len;
        iov[n++] = (struct iovec){ .iov_base = (uint8_t *)s->host + offset, .iov_len = take };
        offset = 0;
        len -= take;
    }
    return n;
}

size_t virtq_chain_read(const struct virtq_chain *c, size_t offset, void *dst, size_t len)
{
    return chain_copy(c, false, offset, len, dst, NULL);
}

size_t virtq_chain_write(const struct virtq_chain *c, size_t offset, const void *src, size_t len)
{
    return chain_copy(c, true, offset, len, NULL, src);
}
