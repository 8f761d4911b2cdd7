/*
 * vsock.h: the virtio-vsock device model (virtio 1.2, 5.10), stream sockets only, with its host
 * side as Firecracker has it: one listening UNIX socket per VM. A host program connects to it
 * and writes "CONNECT <port>\n" to reach guest port <port>; godwit answers "OK <host-port>\n"
 * once the guest accepted, or closes the socket if it refused. A guest connection to host CID
 * 2 port P goes to the UNIX listener at "<path>_<P>" (none there: refused). docs/vsock.md.
 */
#ifndef GODWIT_VIRTIO_VSOCK_H
#define GODWIT_VIRTIO_VSOCK_H

#include <stdint.h>

#include "io/loop.h"
#include "vm/memory.h"
#include "virtio/virtio.h"

/* Queues (virtio 1.2, 5.10.2). */
#define VIRTIO_VSOCK_RXQ 0
#define VIRTIO_VSOCK_TXQ 1
#define VIRTIO_VSOCK_EVENTQ 2

#define VIRTIO_VSOCK_HOST_CID 2u
/* The lowest CID a guest may have: 0, 1 and 2 are the hypervisor, local and host. */
#define VIRTIO_VSOCK_MIN_GUEST_CID 3u

/*
 * The bounds a guest cannot push the device past. Connections beyond VIRTIO_VSOCK_MAX_CONNS
 * are refused (RST); each may hold at most VIRTIO_VSOCK_BUF_ALLOC bytes from the guest that
 * the host program has not read yet (the credit the device advertises; a guest sending past it
 * gets its connection reset), so the device never buffers more than MAX_CONNS * BUF_ALLOC
 * (32 MiB). Host programs that connected but have not finished their CONNECT line are capped
 * at VIRTIO_VSOCK_MAX_PENDING; more are closed at once, and so is one that has not sent its
 * whole line within the CONNECT timeout (VIRTIO_VSOCK_CONNECT_TIMEOUT_MS by default), so that
 * programs which connect and say nothing cannot keep every other one out.
 */
#define VIRTIO_VSOCK_MAX_CONNS 128u
#define VIRTIO_VSOCK_BUF_ALLOC (256u << 10)
#define VIRTIO_VSOCK_MAX_BUFFERED ((uint64_t)VIRTIO_VSOCK_MAX_CONNS * VIRTIO_VSOCK_BUF_ALLOC)
#define VIRTIO_VSOCK_MAX_PENDING 16u
#define VIRTIO_VSOCK_CONNECT_TIMEOUT_MS 5000u
/* The most payload one guest packet may carry (Linux sends at most 64 KiB). */
#define VIRTIO_VSOCK_MAX_PKT (64u << 10)

struct virtio_vsock_config {
    uint64_t guest_cid; /* VIRTIO_VSOCK_MIN_GUEST_CID .. UINT32_MAX - 1 */
    const char *path;   /* the listening socket; guest connections go to <path>_<port> */
    unsigned connect_timeout_ms; /* for a host program's CONNECT line; 0: the default */
    /* Serve a duplicate of listen_fd, a listening socket already bound to `path` (a live
     * upgrade's), instead of binding it; the path is then not the device's to unlink until
     * virtio_vsock_own_path(). */
    bool use_listen_fd;
    int listen_fd;
};

/* Totals since creation, and what is held now. */
struct virtio_vsock_counters {
    uint64_t rx_packets, rx_bytes;  /* to the guest; bytes: stream payload */
    uint64_t tx_packets, tx_bytes;  /* from the guest */
    uint64_t bad_packets;           /* dropped: bad header, CID, type, op or length */
    uint64_t credit_violations;     /* the guest sent past our credit: connection reset */
    uint64_t conns_opened;          /* both directions */
    uint64_t conns_refused;         /* over the cap, no listener, a bad or late CONNECT line */
    uint64_t rst_dropped;           /* resets owed to the guest, lost to a full queue */
    uint64_t conns;                 /* now */
    uint64_t buffered;              /* now: guest bytes the host programs have not read */
};

struct virtio_vsock;

/*
 * Listens on cfg->path (a stale socket there is replaced, a live one refused: -EADDRINUSE),
 * then makes `vdev` this device: sets vdev->ops, vdev->model and vdev->gm. Host programs may
 * connect from now on; their CONNECT waits for the guest's driver. Returns 0, -EINVAL (a CID
 * out of range, a path too long for <path>_<port>), -ENOMEM or the socket's -errno. On the
 * loop's thread.
 */
int virtio_vsock_create(struct virtio_vsock **out, const struct virtio_vsock_config *cfg,
                        struct event_loop *loop, const struct guest_memory *gm,
                        struct virtio_device *vdev);

/* Closes every connection and the listening socket (unlinked, if the device owns its path),
 * after the I/O in flight is over (running the loop until then). On the loop's thread. */
void virtio_vsock_destroy(struct virtio_vsock *vs);

/* Whether destroying the device unlinks its socket's path: a local live upgrade's source
 * gives it up once the destination may run the guest (the socket is the destination's now),
 * the destination takes it once the guest runs there. A device bound its own path owns it
 * from the start. On the loop's thread. */
void virtio_vsock_own_path(struct virtio_vsock *vs, bool own);
/* The listening socket host programs connect to (the device's own): for a handover. */
int virtio_vsock_listen_fd(const struct virtio_vsock *vs);

/* Takes virtio_lock(). */
void virtio_vsock_counters(struct virtio_vsock *vs, struct virtio_vsock_counters *out);

#endif
