/*
 * fuzz_virtio.h: a guest driver played from the input against a virtio device model, without
 * a transport: features negotiated, queues set up, descriptors written (pointing into a
 * buffer area, or anywhere), chains offered, doorbells rung, and the event loop run until
 * the device has answered what it will. The blk, net and console harnesses share it.
 */
#ifndef GODWIT_FUZZ_VIRTIO_H
#define GODWIT_FUZZ_VIRTIO_H

#include "fuzz_regs.h"
#include "io/loop.h"
#include "virtio/virtio.h"

#define FV_QSIZE 16u
#define FV_MAX_QUEUES 8u
#define FV_DESC_GPA 0x100000ull /* queue q's rings at + q * FV_QUEUE_STRIDE */
#define FV_AVAIL_GPA 0x101000ull
#define FV_USED_GPA 0x102000ull
#define FV_QUEUE_STRIDE 0x10000ull
#define FV_BUF_GPA 0x400000ull /* headers, data and indirect tables */
#define FV_BUF_LEN 0x10000ull

struct fuzz_virtio {
    struct event_loop loop;
    struct virtio_device vdev;
    struct loop_watch timer;
    unsigned nr_queues;
    uint16_t avail_idx[FV_MAX_QUEUES];
    uint16_t seen_used; /* sum of the used indexes at the last tick */
    unsigned quiet_ticks, ticks;
    /* The backend's side, for what the input sends to the device from the host: a frame on
     * the tap, bytes on the console's input. NULL when the device has none. */
    void (*host_input)(struct fuzz_virtio *fv, const uint8_t *buf, size_t len);
    void (*host_drain)(struct fuzz_virtio *fv); /* reads what the device sent out */
};

static void fv_interrupt(struct virtio_device *vdev, unsigned queue)
{
    struct fuzz_virtio *fv = vdev->transport;
    FUZZ_CHECK(queue < fv->nr_queues);
}

static void fv_interrupt_config(struct virtio_device *vdev)
{
    (void)vdev;
}

static void fv_needs_reset(struct virtio_device *vdev, const char *why)
{
    (void)vdev;
    FUZZ_CHECK(why != NULL);
}

/* The loop before the model is created on it (the model's create takes &fv->loop). */
static inline void fuzz_virtio_init(struct fuzz_virtio *fv)
{
    memset(fv, 0, sizeof(*fv));
    if (loop_init(&fv->loop, 256) != 0)
        abort();
    fv->vdev.transport = fv;
    fv->vdev.interrupt_queue = fv_interrupt;
    fv->vdev.interrupt_config = fv_interrupt_config;
    fv->vdev.needs_reset = fv_needs_reset;
    fv->vdev.gm = fuzz_gm();
}

static inline uint16_t fv_used_idx(unsigned q)
{
    uint16_t idx = 0;
    FUZZ_CHECK(gm_read(fuzz_gm(), FV_USED_GPA + q * FV_QUEUE_STRIDE + 2, &idx, 2) == 0);
    return idx;
}

static bool fv_tick(struct event_loop *loop, void *opaque, int res)
{
    struct fuzz_virtio *fv = opaque;
    uint16_t sum = 0;

    (void)res;
    for (unsigned q = 0; q < fv->nr_queues; q++)
        sum = (uint16_t)(sum + fv_used_idx(q));
    if (fv->host_drain)
        fv->host_drain(fv);
    fv->quiet_ticks = sum == fv->seen_used ? fv->quiet_ticks + 1 : 0;
    fv->seen_used = sum;
    if (fv->quiet_ticks >= 3 || ++fv->ticks >= 200)
        loop->stop = true;
    else if (loop_after(loop, &fv->timer, 0, fv_tick, fv) != 0)
        abort();
    return false;
}

/* Runs the loop until the used rings stop moving (three quiet turns) or 200 turns. */
static inline void fuzz_virtio_settle(struct fuzz_virtio *fv)
{
    fv->quiet_ticks = fv->ticks = 0;
    fv->loop.stop = false;
    if (loop_after(&fv->loop, &fv->timer, 0, fv_tick, fv) != 0 || loop_run(&fv->loop) != 0)
        abort();
}

static void fv_save(void *dev, struct state_writer *w)
{
    struct virtio_device *vdev = dev;
    vdev->ops->save(vdev, w);
}

static int fv_load(void *dev, struct state_cursor *c, uint32_t version)
{
    struct virtio_device *vdev = dev;
    return vdev->ops->load(vdev, c, version);
}

/*
 * A pause as a snapshot makes it: the model quiesced, and quiet from then on (doorbells rung
 * meanwhile move no used ring); its own state saved, loaded and saved again the same; resumed.
 */
static inline void fv_pause(struct fuzz_virtio *fv)
{
    struct virtio_device *vdev = &fv->vdev;
    uint16_t used[FV_MAX_QUEUES];

    if (!vdev->ops->quiesce || vdev->ops->quiesce(vdev) != 0)
        return;
    for (unsigned q = 0; q < fv->nr_queues; q++)
        used[q] = fv_used_idx(q);
    for (unsigned q = 0; q < fv->nr_queues; q++)
        vdev->ops->queue_notify(vdev, q);
    fuzz_virtio_settle(fv);
    for (unsigned q = 0; q < fv->nr_queues; q++)
        FUZZ_CHECK(fv_used_idx(q) == used[q]);
    if (vdev->ops->save)
        fuzz_state_round_trip(fv_save, fv_load, vdev, vdev->ops->state_version);
    vdev->ops->resume(vdev);
}

/* Offers the chain at `head` on queue q. */
static inline void fv_offer(struct fuzz_virtio *fv, unsigned q, uint16_t head)
{
    uint64_t avail = FV_AVAIL_GPA + q * FV_QUEUE_STRIDE;
    uint16_t slot = fv->avail_idx[q] % FV_QSIZE;

    FUZZ_CHECK(gm_write(fuzz_gm(), avail + 4 + 2ull * slot, &head, 2) == 0);
    fv->avail_idx[q]++;
    FUZZ_CHECK(gm_write(fuzz_gm(), avail + 2, &fv->avail_idx[q], 2) == 0);
}

/*
 * One run: guest RAM cleared, features (a mask of the offered ones from the input), queues
 * set up and the device activated; then steps until the input ends; then the device reset.
 */
static inline void fuzz_virtio_run(struct fuzz_virtio *fv, struct fuzz_in *in)
{
    struct guest_memory *gm = fuzz_gm();
    struct virtio_device *vdev = &fv->vdev;
    uint8_t buf[256];
    uint8_t cfg = fuzz_u8(in);

    fuzz_gm_reset(gm);
    memset(fv->avail_idx, 0, sizeof(fv->avail_idx));
    fv->seen_used = 0;
    fv->nr_queues = vdev->ops->nr_queues < FV_MAX_QUEUES ? vdev->ops->nr_queues : FV_MAX_QUEUES;
    vdev->driver_features = (vdev->ops->features(vdev) & fuzz_u64(in)) | 1ull << VIRTIO_F_VERSION_1;
    if (cfg & 1)
        vdev->driver_features |= 1ull << VIRTIO_F_EVENT_IDX;
    if (cfg & 2)
        vdev->driver_features |= 1ull << VIRTIO_F_INDIRECT_DESC;
    for (unsigned q = 0; q < fv->nr_queues; q++)
        FUZZ_CHECK(virtq_setup(&vdev->queues[q], gm, FV_QSIZE, FV_DESC_GPA + q * FV_QUEUE_STRIDE,
                               FV_AVAIL_GPA + q * FV_QUEUE_STRIDE,
                               FV_USED_GPA + q * FV_QUEUE_STRIDE, cfg & 1, cfg & 2) == 0);
    if (vdev->ops->activate(vdev) != 0)
        goto out;

    for (unsigned steps = 0; steps < 128 && !fuzz_done(in); steps++) {
        uint8_t op = fuzz_u8(in);
        unsigned q = (op >> 4) % fv->nr_queues;

        switch (op & 7) {
        case 0: { /* a descriptor into the buffer area: index, offset, length, flags, next */
            uint16_t i = fuzz_u8(in) % FV_QSIZE;
            struct virtq_desc d = { .addr = FV_BUF_GPA + fuzz_u16(in) % FV_BUF_LEN,
                                    .len = fuzz_u16(in), .flags = fuzz_u8(in) & 7,
                                    .next = fuzz_u8(in) % FV_QSIZE };
            FUZZ_CHECK(gm_write(gm, FV_DESC_GPA + q * FV_QUEUE_STRIDE + 16ull * i, &d,
                                sizeof(d)) == 0);
            break;
        }
        case 1: { /* a descriptor as the input has it, hostile addresses and all */
            uint16_t i = fuzz_u8(in) % FV_QSIZE;
            fuzz_bytes(in, buf, 16);
            FUZZ_CHECK(gm_write(gm, FV_DESC_GPA + q * FV_QUEUE_STRIDE + 16ull * i, buf, 16) == 0);
            break;
        }
        case 2: /* bytes into the buffer area: request headers, data, indirect tables */
        case 3: {
            uint16_t off = fuzz_u16(in) % FV_BUF_LEN;
            size_t n = fuzz_bytes(in, buf, fuzz_u8(in));
            if (n > FV_BUF_LEN - off)
                n = FV_BUF_LEN - off;
            FUZZ_CHECK(gm_write(gm, FV_BUF_GPA + off, buf, n) == 0);
            break;
        }
        case 4: /* offer a chain */
            fv_offer(fv, q, fuzz_u8(in) % FV_QSIZE);
            break;
        case 5: { /* ring the doorbell, or poll the queue (--io-poll), and let the device work */
            virtio_lock(vdev);
            bool poll = (op & 8) && vdev->ops->pollable && vdev->ops->pollable(vdev, q);
            if (poll)
                virtq_poll_begin(&vdev->queues[q]);
            vdev->ops->queue_notify(vdev, q);
            if (poll && virtq_poll_end(&vdev->queues[q]))
                vdev->ops->queue_notify(vdev, q); /* what came while kicks were held */
            virtio_unlock(vdev);
            fuzz_virtio_settle(fv);
            break;
        }
        case 6: /* the host side sends something */
            if (fv->host_input) {
                size_t n = fuzz_bytes(in, buf, fuzz_u8(in));
                fv->host_input(fv, buf, n);
                fuzz_virtio_settle(fv);
            }
            break;
        default: { /* the device's config space read, or a pause */
            if (op & 8) {
                fv_pause(fv);
                break;
            }
            size_t size = vdev->ops->config_size;
            uint32_t off = fuzz_u8(in), len = 1u << (fuzz_u8(in) & 3);
            if (size && vdev->ops->read_config && off < size && len <= size - off)
                vdev->ops->read_config(vdev, off, buf, len);
            break;
        }
        }
    }
    for (unsigned q = 0; q < fv->nr_queues; q++)
        vdev->ops->queue_notify(vdev, q);
    fuzz_virtio_settle(fv);
out:
    vdev->ops->reset(vdev);
    for (unsigned q = 0; q < fv->nr_queues; q++)
        virtq_reset(&vdev->queues[q]);
}

#endif
