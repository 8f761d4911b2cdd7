/* net.h: the virtio-net device model over a host tap interface. */
#ifndef GODWIT_VIRTIO_NET_H
#define GODWIT_VIRTIO_NET_H

#include <stdbool.h>
#include <stdint.h>

#include "io/loop.h"
#include "vm/memory.h"
#include "virtio/virtio.h"

/* The most queue pairs a device may have (one tap queue each). */
#define VIRTIO_NET_MAX_PAIRS 16u

/* What the user asked for (not the guest-visible config space, which net.c keeps). */
struct virtio_net_config {
    const char *tap;   /* interface name: an existing tap is attached, else one is created */
    uint8_t mac[6];
    bool mac_set;      /* else a random locally administered MAC */
    unsigned queues;   /* queue pairs; 0 or 1: one; more: VIRTIO_NET_F_MQ (a control queue
                        * follows the pairs either way) */
    const int *taps;   /* NULL, or the tap's queues already open, one per pair (a local live
                        * upgrade's source handed them over): duplicated, not opened */
};

struct virtio_net;

/* Totals since creation. Dropped: packets lost to malformed guest buffers, a lack of memory,
 * or a tap error. */
struct virtio_net_counters {
    uint64_t rx_packets, rx_bytes, rx_dropped; /* host to guest, frame bytes */
    uint64_t rx_zero_copy; /* of rx_packets: read straight into the guest's buffers */
    uint64_t tx_packets, tx_bytes, tx_dropped; /* guest to host */
};

/*
 * Opens the tap (IFF_TAP, IFF_NO_PI, IFF_VNET_HDR with the 12-byte header, and
 * IFF_MULTI_QUEUE with one queue per pair when cfg->queues > 1), then makes `vdev` this
 * device: sets vdev->ops, vdev->model and vdev->gm (the transport fills the rest). Returns 0
 * or -errno, after logging which tap could not be opened and why.
 */
int virtio_net_create(struct virtio_net **out, const struct virtio_net_config *cfg,
                      struct event_loop *loop, const struct guest_memory *gm,
                      struct virtio_device *vdev);

/*
 * The same over already-open descriptors, one per queue pair (cfg->queues of them; cfg->tap
 * only names the device in messages and may be NULL). Each must carry one packet per read
 * and write with the 12-byte virtio_net_hdr in front, like a tap with IFF_VNET_HDR (a
 * SOCK_SEQPACKET socket does, for tests); no tap ioctl is issued. The device owns the
 * descriptors from this call on, failure included, and makes them non-blocking.
 */
int virtio_net_create_fds(struct virtio_net **out, const struct virtio_net_config *cfg,
                          const int *fds, struct event_loop *loop,
                          const struct guest_memory *gm, struct virtio_device *vdev);

/* The tap's descriptors, one per queue pair, into fds (VIRTIO_NET_MAX_PAIRS room); returns
 * how many, or 0 when the device is not on a tap (virtio_net_create_fds). */
unsigned virtio_net_tap_fds(const struct virtio_net *net, int *fds);

/*
 * Closes the tap after the I/O in flight is over: reads are cancelled, writes finish (the tap
 * is non-blocking), running the loop until then; their answers are not pushed. Call it on the
 * loop's thread, like every function that submits I/O.
 */
void virtio_net_destroy(struct virtio_net *net);

void virtio_net_counters(const struct virtio_net *net, struct virtio_net_counters *out);

#endif
