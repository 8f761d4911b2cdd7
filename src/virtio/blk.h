/* blk.h: the virtio-blk device model over a raw image file or a host block device. */
#ifndef GODWIT_VIRTIO_BLK_H
#define GODWIT_VIRTIO_BLK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "io/loop.h"
#include "vm/memory.h"
#include "virtio/virtio.h"

/* What the user asked for (not the guest-visible config space, which blk.c keeps). */
struct virtio_blk_config {
    const char *path;
    bool readonly;
    const char *serial; /* GET_ID answer, at most 20 bytes used; NULL for none */
    bool cache_none;    /* O_DIRECT; falls back to the page cache where refused */
    unsigned queues;    /* 0 or 1: one queue; more: VIRTIO_BLK_F_MQ */
    size_t bounce_max;  /* bounce memory for all requests together; 0: VIRTIO_BLK_BOUNCE_MAX */
    bool lock_later;    /* a live migration's destination: the source holds the image's lock
                         * until the guest runs here; virtio_blk_lock() takes it then */
    bool use_fd;        /* the image is `fd`, already open (a local live upgrade's source
                         * handed it over): duplicated, not opened; path only names it */
    int fd;
};

/*
 * With cache_none, a request whose guest buffers O_DIRECT refuses (unaligned) moves through
 * an aligned bounce buffer, a piece of at most 256 KiB at a time. The device's bounce buffers
 * together hold at most this much by default: a request that finds no room waits until
 * others give theirs back, whatever the guest offers.
 */
#define VIRTIO_BLK_BOUNCE_MAX (4u << 20)

struct virtio_blk;

/*
 * Opens and locks the image, then makes `vdev` this device: sets vdev->ops, vdev->model and
 * vdev->gm (the transport fills the rest). Returns 0, -EBUSY when another open file
 * description holds a conflicting lock on the image, or another -errno.
 */
int virtio_blk_create(struct virtio_blk **out, const struct virtio_blk_config *cfg,
                      struct event_loop *loop, const struct guest_memory *gm,
                      struct virtio_device *vdev);

/*
 * Closes the image after the requests in flight have completed (running the loop until
 * then; on the loop's thread), so guest RAM may be unmapped right after. Their answers are
 * not pushed.
 */
void virtio_blk_destroy(struct virtio_blk *blk);

/* Takes the image's lock (see lock_later): 0, -EBUSY while another process holds it (quietly:
 * the caller retries), or -errno after one line. */
int virtio_blk_lock(struct virtio_blk *blk);

/*
 * The size in bytes of the image open at `fd` (a regular file or a block device) and its
 * logical block size (512 for a file, the device's own otherwise): 0, -ENOTBLK for anything
 * else, or -errno. The one way both the device and a saved state's disk sizes read it.
 */
int virtio_blk_image_size(int fd, uint64_t *bytes, uint32_t *block);

/* The image's open descriptor (the device's own: for a local live upgrade to hand over). */
int virtio_blk_fd(const struct virtio_blk *blk);

/* Totals since creation of completed read and write requests and of the bytes they moved. */
void virtio_blk_counters(const struct virtio_blk *blk, uint64_t *reads, uint64_t *writes,
                         uint64_t *bytes_read, uint64_t *bytes_written);

/* Requests answered, the sum and the longest of their times from pop to answer (ns), and how
 * many are popped and not answered now. Under the device's lock. */
void virtio_blk_latency(const struct virtio_blk *blk, uint64_t *answered, uint64_t *total_ns,
                        uint64_t *max_ns, unsigned *in_flight);

/* Bytes of bounce buffers the device holds now, and the most it ever held at once. */
void virtio_blk_bounce_usage(const struct virtio_blk *blk, size_t *now, size_t *peak);

#endif
