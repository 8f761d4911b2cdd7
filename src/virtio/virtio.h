/* virtio.h: what a virtio device model and a virtio transport (PCI now, MMIO later) share. */
#ifndef GODWIT_VIRTIO_H
#define GODWIT_VIRTIO_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "vm/memory.h"
#include "virtio/virtqueue.h"

struct state_writer;
struct state_cursor;

/* Device status bits (virtio 1.2, 2.1). */
#define VIRTIO_STATUS_ACKNOWLEDGE 1
#define VIRTIO_STATUS_DRIVER 2
#define VIRTIO_STATUS_DRIVER_OK 4
#define VIRTIO_STATUS_FEATURES_OK 8
#define VIRTIO_STATUS_NEEDS_RESET 64
#define VIRTIO_STATUS_FAILED 128

/* Transport-level feature bits every device offers. */
#define VIRTIO_F_VERSION_1 32

/* Device IDs (virtio 1.2, 5). */
#define VIRTIO_ID_NET 1
#define VIRTIO_ID_BLOCK 2
#define VIRTIO_ID_CONSOLE 3
#define VIRTIO_ID_RNG 4
#define VIRTIO_ID_VSOCK 19

#define VIRTIO_MAX_QUEUES 64

struct virtio_device;

/*
 * A device model: the transport calls these, always with vdev->lock held. Config accesses,
 * activate and reset come from vCPU threads (the guest's register writes); queue_notify
 * comes from the main loop (the transport hands kicks there through ioeventfd). A model's
 * own callbacks on the main loop (I/O completions, readable fds) take vdev->lock with
 * virtio_lock() before they touch a queue, so a reset never races a completion. Only the
 * loop's thread may touch the io_uring ring: work that activate must start on it (reading
 * a tap, watching an fd) is handed over with loop_post().
 */
struct virtio_device_ops {
    const char *name;
    uint16_t device_id;
    unsigned nr_queues;
    uint16_t queue_max_size;
    size_t config_size;
    /* Device features offered, not counting VIRTIO_F_VERSION_1 and the ring features, which
     * the transport adds. */
    uint64_t (*features)(struct virtio_device *vdev);
    void (*read_config)(struct virtio_device *vdev, uint32_t offset, void *data, uint32_t len);
    void (*write_config)(struct virtio_device *vdev, uint32_t offset, const void *data,
                         uint32_t len);
    /* DRIVER_OK: the negotiated features are in vdev->driver_features, the queues are set
     * up. Returns 0 or -errno (the transport then sets NEEDS_RESET). Also called on the
     * loop's thread after a state load, with the model's own state already loaded: it
     * restarts the backend and must not reset that state. */
    int (*activate)(struct virtio_device *vdev);
    /* The guest made buffers available on `queue`. */
    void (*queue_notify)(struct virtio_device *vdev, unsigned queue);
    /* Whether the main loop may poll `queue` (`--io-poll`): a queue of requests the driver
     * sends, whose kicks polling can spare it. NULL: none. */
    bool (*pollable)(struct virtio_device *vdev, unsigned queue);
    /*
     * Back to the initial state: drop in-flight work, forget the queues. When it returns, no
     * I/O of the model writes guest memory any more (block reads are waited for). From a
     * vCPU thread it waits for the loop's thread to take their completions, letting go of
     * vdev->lock meanwhile (the transport holds it once, and keeps its own state unchanged
     * until reset returns); on the loop's thread it runs the loop itself.
     */
    void (*reset)(struct virtio_device *vdev);
    /*
     * Pause means quiet. On the loop's thread, vCPUs parked: the model stops taking chains
     * from the rings and stops touching its backend. A request in flight is completed (its
     * used element and interrupt delivered before this returns) or handed back to the driver
     * (the chain made available again, last_avail_idx rewound: only ever the chains popped
     * last). Kicks that come meanwhile start nothing. Returns 0 or -errno (not quiesced).
     */
    int (*quiesce)(struct virtio_device *vdev);
    /* Undoes quiesce: restarts the backend and looks at every queue once, since a kick may
     * have come meanwhile. */
    void (*resume)(struct virtio_device *vdev);
    /*
     * The model's own state for snapshots (not the transport's: features, status, queues),
     * written quiesced, loaded before activate into a model created from the same config.
     * NULL save/load: nothing to carry. load() checks every value and returns 0, or -errno
     * after one line naming the bad value (sc_reject); the transport checks the length.
     */
    uint32_t state_version;
    void (*save)(struct virtio_device *vdev, struct state_writer *w);
    int (*load)(struct virtio_device *vdev, struct state_cursor *c, uint32_t version);
};

struct virtio_device {
    const struct virtio_device_ops *ops;
    void *model;                  /* the device model's own state */
    const struct guest_memory *gm;
    uint64_t driver_features;     /* what the driver accepted (valid from FEATURES_OK) */
    uint8_t status;
    struct virtqueue queues[VIRTIO_MAX_QUEUES];

    /* Filled by the transport: raise the used-buffer interrupt of a queue, or the
     * configuration-change interrupt; and mark the device broken (NEEDS_RESET). */
    void (*interrupt_queue)(struct virtio_device *vdev, unsigned queue);
    void (*interrupt_config)(struct virtio_device *vdev);
    void (*needs_reset)(struct virtio_device *vdev, const char *why);
    void *transport;
    pthread_mutex_t *lock; /* the transport's, recursive; NULL in unit tests without one */
    /*
     * Set where interrupts may wait for the end of the main loop's turn, so that all the
     * completions one turn dispatches raise each queue's interrupt once: returns true when
     * the caller is on the loop's thread and virtio_flush_notify() will run at the turn's
     * end; false to interrupt at once. NULL: always at once.
     */
    bool (*defer_notify)(struct virtio_device *vdev);
    uint64_t notify_pending; /* queues (bit n: queue n) waiting for that; under `lock` */
};

static inline void virtio_lock(struct virtio_device *vdev)
{
    if (vdev->lock)
        pthread_mutex_lock(vdev->lock);
}

static inline void virtio_unlock(struct virtio_device *vdev)
{
    if (vdev->lock)
        pthread_mutex_unlock(vdev->lock);
}

/* For device models: after pushing used buffers on `queue`, interrupts the guest if the
 * queue's notification rules ask for it. */
static inline void virtio_queue_done_now(struct virtio_device *vdev, unsigned queue)
{
    if (virtq_should_notify(&vdev->queues[queue]) && vdev->interrupt_queue)
        vdev->interrupt_queue(vdev, queue);
}

/* The rules are asked at the end of the loop's turn when the transport can wait for it:
 * what the turn pushed meanwhile is covered by the one interrupt (EVENT_IDX's used_event, or
 * NO_INTERRUPT, as the driver has them then). */
static inline void virtio_queue_done(struct virtio_device *vdev, unsigned queue)
{
    _Static_assert(VIRTIO_MAX_QUEUES <= 64, "notify_pending has a bit per queue");
    if (vdev->defer_notify && vdev->defer_notify(vdev)) {
        vdev->notify_pending |= 1ULL << queue;
        return;
    }
    virtio_queue_done_now(vdev, queue);
}

/* The transport's side of defer_notify, under `lock`: each waiting queue's rules, once. */
static inline void virtio_flush_notify(struct virtio_device *vdev)
{
    uint64_t pending = vdev->notify_pending;
    vdev->notify_pending = 0;
    while (pending) {
        unsigned q = (unsigned)__builtin_ctzll(pending);
        pending &= pending - 1;
        virtio_queue_done_now(vdev, q);
    }
}

static inline bool virtio_has_feature(const struct virtio_device *vdev, unsigned bit)
{
    return vdev->driver_features & (1ULL << bit);
}

#endif
