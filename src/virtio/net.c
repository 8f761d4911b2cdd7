/* net.c: virtio-net: guest frames written to a tap and tap packets copied into guest buffers,
 * all tap I/O on the main loop's io_uring. */
#define _GNU_SOURCE
#include "virtio/net.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <poll.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/random.h>
#include <sys/uio.h>
#include <unistd.h>

#include "log.h"
#include "migration/state.h"

/* Device feature bits (virtio 1.2, 5.1.3). */
#define VIRTIO_NET_F_CSUM 0
#define VIRTIO_NET_F_GUEST_CSUM 1
#define VIRTIO_NET_F_MAC 5
#define VIRTIO_NET_F_GUEST_TSO4 7
#define VIRTIO_NET_F_GUEST_TSO6 8
#define VIRTIO_NET_F_GUEST_ECN 9
#define VIRTIO_NET_F_HOST_TSO4 11
#define VIRTIO_NET_F_HOST_TSO6 12
#define VIRTIO_NET_F_HOST_ECN 13
#define VIRTIO_NET_F_MRG_RXBUF 15
#define VIRTIO_NET_F_STATUS 16
#define VIRTIO_NET_F_CTRL_VQ 17
#define VIRTIO_NET_F_GUEST_ANNOUNCE 21
#define VIRTIO_NET_F_MQ 22

#define VIRTIO_NET_S_LINK_UP 1
#define VIRTIO_NET_S_ANNOUNCE 2

/* The packet header (virtio 1.2, 5.1.6). */
#define VIRTIO_NET_HDR_GSO_NONE 0
#define VIRTIO_NET_HDR_GSO_TCPV4 1
#define VIRTIO_NET_HDR_GSO_TCPV6 4
#define VIRTIO_NET_HDR_GSO_ECN 0x80

/* Control queue (virtio 1.2, 5.1.6.5). */
#define VIRTIO_NET_OK 0
#define VIRTIO_NET_ERR 1
#define VIRTIO_NET_CTRL_ANNOUNCE 3
#define VIRTIO_NET_CTRL_ANNOUNCE_ACK 0
#define VIRTIO_NET_CTRL_MQ 4
#define VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET 0

#define NET_HDR_BYTES 12u
#define NET_QUEUE_SIZE 256
/* The most a tap hands over at once: a 64 KiB GSO packet, its Ethernet and VLAN headers and
 * ours. One byte more is read, so that a longer (truncated) packet is noticed and dropped. */
#define NET_RX_MAX_BYTES (NET_HDR_BYTES + 65536u + 18u)
/* How long a reset from a vCPU waits for tap writes (reading guest buffers) to finish. */
#define NET_RESET_WAIT_MS 1000u
/* Control commands one call of the handler answers before it lets the loop serve others. */
#define NET_CTRL_BUDGET 64u
#define NET_STATE_VERSION 1u

/* The guest-visible config space (virtio 1.2, 5.1.4), little-endian like the host. */
struct net_config_space {
    uint8_t mac[6];
    uint16_t status;
    uint16_t max_virtqueue_pairs;
} __attribute__((packed));
_Static_assert(sizeof(struct net_config_space) == 10, "virtio-net config layout");

struct net_hdr { /* struct virtio_net_hdr, VERSION_1 */
    uint8_t flags;
    uint8_t gso_type;
    uint16_t hdr_len;
    uint16_t gso_size;
    uint16_t csum_start;
    uint16_t csum_offset;
    uint16_t num_buffers;
};
_Static_assert(sizeof(struct net_hdr) == NET_HDR_BYTES, "virtio_net_hdr layout");

/* One guest frame on its way to the tap. */
struct net_tx_req {
    struct virtio_net *net;
    struct loop_watch watch;
    uint64_t generation;          /* net->generation at pop: a reset since drops the push */
    unsigned queue;
    uint16_t head;
    uint32_t len;                 /* header and frame */
    struct iovec iov[];
};

/* The most receive chains, and their segments, one zero-copy read fills. */
#define NET_RX_ZC_CHAINS 64u
#define NET_RX_ZC_IOVS 128u
/* The guest buffers a zero-copy read starts with: twice the recent packets' average size
 * (bulk GSO traffic gets room for a whole 64 KiB packet, small packets do not pop dozens of
 * chains each), at least this much. A longer packet spills into the bounce buffer. */
#define NET_RX_ZC_MIN_TARGET 2048u

/* Packets read in one turn of the loop once a read found the tap with one waiting
 * (net_rx_drain): the guest's receive queue holds 256 chains; NAPI takes 64 a poll. */
#define NET_RX_BATCH 32u

/*
 * A pair's tap reads. A plain read lands in the bounce buffer, then is copied. A zero-copy
 * read goes straight into receive chains popped before it (their writable segments, then the
 * bounce buffer for what does not fit, so that an oversized packet is still noticed): the
 * chains it filled are pushed, the others handed back (they were popped last). It is issued
 * only where a tap read never waits (the kernel answered -EAGAIN once), and counted in tx_io,
 * which reset and quiesce wait for: no completion writes into a buffer the guest took back.
 * Once one finds a packet, net_rx_drain reads the burst behind it the same way, synchronously.
 */
struct net_rx_op {
    struct virtio_net *net;
    struct loop_watch watch;
    struct net_pair *pair;
    bool in_flight;
    bool polling;                 /* the I/O to issue is a wait for readability, not a read */
    bool zc;                      /* the read in flight is a zero-copy one */
    uint64_t generation;          /* net->generation when it was issued */
    uint32_t avg_len;             /* recent packets' size, a moving average */
    unsigned zc_chains, zc_iovs;
    uint32_t zc_cap;              /* bytes of guest buffers in zc_iov, before the spill */
    uint16_t zc_head[NET_RX_ZC_CHAINS];
    uint32_t zc_len[NET_RX_ZC_CHAINS]; /* bytes of each chain in zc_iov */
    struct iovec zc_iov[NET_RX_ZC_IOVS + 1];
    /* Its own scratch for virtq_pop: an rx arm can come from inside a handler that holds
     * net->chain (the control queue's VQ_PAIRS_SET). */
    struct virtq_chain chain;
    uint8_t buf[NET_RX_MAX_BYTES + 1];
};

struct net_pair {
    unsigned index;
    int fd;
    int fixed_fd;                 /* fd's slot among the loop's registered files, or -1 */
    bool tap_attached;            /* a multi-queue tap steers packets to this queue */
    struct net_rx_op *rx;
    uint32_t rx_len;              /* bytes of the packet held in rx->buf, 0 for none */
    uint32_t rx_done;             /* of them copied into guest buffers so far */
    uint16_t rx_nr_bufs;          /* chains filled so far: on the used ring, not published */
    uint8_t *rx_num_buffers[2];   /* the first chain's num_buffers bytes */
    bool rx_failed;               /* the tap read failed: no more reads until reset */
    unsigned tx_outstanding;
    bool tx_throttled;            /* stopped popping at the queue's size */
};

struct virtio_net {
    struct virtio_device_ops ops; /* a copy: nr_queues depends on the configuration */
    struct virtio_device *vdev;
    struct event_loop *loop;
    char *name;
    bool is_tap;
    bool active, broken, logged_io_error;
    bool quiesced; /* paused, or going: nothing is popped, no tap read is started */
    /* How a zero-copy read is kept from waiting (it must never wait: it holds guest buffers
     * that reset and quiesce wait for). RWF_NOWAIT, unless the tap refuses it (no
     * FMODE_NOWAIT: io_uring then honours O_NONBLOCK itself, which a plain read answering
     * -EAGAIN proves): then a plain read, once rx_nowait says so. */
    bool rx_no_rwf_nowait;
    bool rx_nowait;
    bool mac_configured; /* the user chose the MAC: a restore keeps it (a clone's own) */
    bool announce_pending; /* state loaded: ask the driver to announce when activated */
    unsigned nr_pairs, active_pairs;
    uint64_t generation;
    struct net_config_space config;
    struct net_pair pairs[VIRTIO_NET_MAX_PAIRS];
    struct loop_owner rx_io; /* tap reads and polls: may wait for ever, so cancelled */
    struct loop_owner tx_io; /* tap writes: non-blocking, so waited for */
    struct loop_watch ctrl_cont; /* in tx_io: the control queue's handler, on a later turn */
    bool ctrl_cont_armed;
    struct virtio_net_counters counters;
    struct virtq_chain chain; /* scratch for virtq_pop: too big for the stack */
};

static unsigned rx_queue(const struct net_pair *p)
{
    return 2 * p->index;
}

static unsigned tx_queue(const struct net_pair *p)
{
    return 2 * p->index + 1;
}

static unsigned ctrl_queue(const struct virtio_net *net)
{
    return 2 * net->nr_pairs;
}

static void net_break(struct virtio_net *net, const char *why)
{
    if (net->broken)
        return;
    net->broken = true;
    log_warn("virtio-net %s: %s", net->name, why);
    if (net->vdev->needs_reset)
        net->vdev->needs_reset(net->vdev, why);
}

static void net_queue_broken(struct virtio_net *net, const struct virtqueue *vq)
{
    net_break(net, vq->broken_reason ? vq->broken_reason : "broken virtqueue");
}

static void net_log_io_error(struct virtio_net *net, const char *what, int res)
{
    /* Once per device: a failing tap must not flood the log at the guest's packet rate. */
    if (net->logged_io_error)
        return;
    net->logged_io_error = true;
    log_warn("virtio-net %s: %s failed: %s (further errors not logged)", net->name, what,
             res < 0 ? strerror(-res) : "short transfer");
}

/* ---- transmit ---- */

static bool net_tx_complete(struct event_loop *loop, void *opaque, int res);

static void net_tx_push(struct virtio_net *net, unsigned q, uint16_t head)
{
    if (virtq_push(&net->vdev->queues[q], head, 0) < 0)
        net_break(net, "cannot push to the used ring");
}

static void net_tx_account(struct virtio_net *net, uint32_t len, int res)
{
    if (res >= 0 && (uint32_t)res == len) {
        net->counters.tx_packets++;
        net->counters.tx_bytes += len - NET_HDR_BYTES;
        return;
    }
    net->counters.tx_dropped++;
    net_log_io_error(net, "tap write", res);
}

static struct net_tx_req *net_tx_req_new(struct virtio_net *net, unsigned q,
                                         const struct virtq_chain *c)
{
    struct net_tx_req *req = calloc(1, sizeof(*req) + c->nr_segs * sizeof(struct iovec));
    if (!req)
        return NULL;
    req->net = net;
    req->generation = net->generation;
    req->queue = q;
    req->head = c->head;
    req->len = c->readable_len;
    for (unsigned i = 0; i < c->nr_segs; i++) /* all readable: checked by the caller */
        req->iov[i] = (struct iovec){ .iov_base = c->segs[i].host, .iov_len = c->segs[i].len };
    return req;
}

/* Starts the write of one chain: [header][frame], straight from guest memory. Returns true
 * when the chain was answered (pushed) at once. */
static bool net_tx_start(struct virtio_net *net, struct net_pair *p, const struct virtq_chain *c)
{
    unsigned q = tx_queue(p);
    struct net_tx_req *req = NULL;
    /* A malformed chain is the driver's bug, not a broken ring: drop the frame, carry on. */
    if (c->writable_len == 0 && c->readable_len >= NET_HDR_BYTES)
        req = net_tx_req_new(net, q, c);
    if (!req) {
        net->counters.tx_dropped++;
        net_tx_push(net, q, c->head);
        return true;
    }
    struct io_uring_sqe *sqe =
        loop_owner_prepare(net->loop, &net->tx_io, &req->watch, net_tx_complete, req);
    if (!sqe) {
        /* The ring is full. The fd is non-blocking, so a direct write cannot stall the loop. */
        ssize_t n = writev(p->fd, req->iov, (int)c->nr_segs);
        net_tx_account(net, req->len, n < 0 ? -errno : (int)n);
        free(req);
        net_tx_push(net, q, c->head);
        return true;
    }
    io_uring_prep_writev(sqe, p->fd, req->iov, c->nr_segs, 0);
    loop_sqe_file(sqe, p->fixed_fd);
    p->tx_outstanding++;
    return false;
}

/* Pops until the ring is empty or a ring's worth of frames is in flight. */
static void net_tx_process(struct virtio_net *net, struct net_pair *p)
{
    struct virtqueue *vq = &net->vdev->queues[tx_queue(p)];
    bool pushed = false;

    p->tx_throttled = false;
    if (net->quiesced)
        return; /* resume looks at every queue */
    while (!net->broken) {
        if (p->tx_outstanding >= vq->size) {
            p->tx_throttled = true; /* bounds memory against a guest re-offering heads */
            break;
        }
        int ret = virtq_pop(vq, &net->chain);
        if (ret == 0)
            break;
        if (ret < 0) {
            net_queue_broken(net, vq);
            break;
        }
        pushed |= net_tx_start(net, p, &net->chain);
    }
    if (pushed)
        virtio_queue_done(net->vdev, tx_queue(p));
}

static bool net_tx_complete(struct event_loop *loop, void *opaque, int res)
{
    (void)loop;
    struct net_tx_req *req = opaque;
    struct virtio_net *net = req->net;
    virtio_lock(net->vdev);
    if (req->generation == net->generation) { /* else a reset took the queue since */
        struct net_pair *p = &net->pairs[req->queue / 2];
        net_tx_account(net, req->len, res);
        net_tx_push(net, req->queue, req->head);
        p->tx_outstanding--;
        virtio_queue_done(net->vdev, req->queue);
        if (p->tx_throttled)
            net_tx_process(net, p);
    }
    free(req);
    virtio_unlock(net->vdev);
    return false;
}

/* ---- receive ---- */

static bool net_rx_complete(struct event_loop *loop, void *opaque, int res);

static bool net_has(const struct virtio_net *net, unsigned bit)
{
    return virtio_has_feature(net->vdev, bit);
}

static struct virtqueue *net_rx_vq(struct virtio_net *net, const struct net_pair *p)
{
    return &net->vdev->queues[rx_queue(p)];
}

/* Whether the pair takes packets from the tap now. */
static bool net_rx_wanted(struct virtio_net *net, const struct net_pair *p)
{
    return net->active && !net->broken && p->index < net->active_pairs && !p->rx_failed &&
           net_rx_vq(net, p)->enabled;
}

static bool net_rx_zc_start(struct virtio_net *net, struct net_pair *p);
static void net_rx_zc_done(struct virtio_net *net, struct net_pair *p, int res);
static void net_rx_drain(struct virtio_net *net, struct net_pair *p, unsigned max);

/* Reads the tap's next packet (or waits for one) unless a packet is held or I/O in flight. */
static void net_rx_arm(struct virtio_net *net, struct net_pair *p)
{
    struct net_rx_op *op = p->rx;
    if (op->in_flight || p->rx_len || net->quiesced || !net_rx_wanted(net, p))
        return;
    if (!op->polling && (!net->rx_no_rwf_nowait || net->rx_nowait) && net_rx_zc_start(net, p))
        return;
    if (net->broken)
        return; /* the queue broke as chains were popped */
    struct io_uring_sqe *sqe =
        loop_owner_prepare(net->loop, &net->rx_io, &op->watch, net_rx_complete, op);
    if (!sqe)
        return; /* the ring is full: the next kick tries again */
    if (op->polling)
        io_uring_prep_poll_add(sqe, p->fd, POLLIN);
    else
        io_uring_prep_read(sqe, p->fd, op->buf, sizeof(op->buf), 0);
    loop_sqe_file(sqe, p->fixed_fd);
    op->in_flight = true;
}

static void net_rx_forget(struct net_pair *p)
{
    p->rx_len = p->rx_done = 0;
    p->rx_nr_bufs = 0;
    p->rx_num_buffers[0] = p->rx_num_buffers[1] = NULL;
}

/* Hands the chains filled to the driver with one index update: the first one's header says
 * how many follow, so the driver must not see it before them. */
static void net_rx_finish(struct virtio_net *net, struct net_pair *p, bool delivered)
{
    if (p->rx_nr_bufs > 1 && p->rx_num_buffers[0]) {
        *p->rx_num_buffers[0] = (uint8_t)p->rx_nr_bufs; /* little-endian */
        *p->rx_num_buffers[1] = (uint8_t)(p->rx_nr_bufs >> 8);
    }
    virtq_publish(net_rx_vq(net, p));
    if (delivered) {
        net->counters.rx_packets++;
        net->counters.rx_bytes += p->rx_len - NET_HDR_BYTES;
    } else {
        net->counters.rx_dropped++;
    }
    net_rx_forget(p);
    virtio_queue_done(net->vdev, rx_queue(p));
}

static uint8_t *chain_writable_byte(const struct virtq_chain *c, size_t off)
{
    for (unsigned i = 0; i < c->nr_segs; i++) {
        const struct virtq_seg *s = &c->segs[i];
        if (!s->device_writes)
            continue;
        if (off < s->len)
            return (uint8_t *)s->host + off;
        off -= s->len;
    }
    return NULL;
}

/* Whether chain `c` can take the packet's next part: the first needs room for the header,
 * and for the whole packet without MRG_RXBUF. */
static bool net_rx_chain_fits(const struct virtio_net *net, const struct net_pair *p,
                              const struct virtq_chain *c)
{
    if (p->rx_nr_bufs > 0)
        return c->writable_len > 0;
    if (c->writable_len < NET_HDR_BYTES)
        return false;
    return net_has(net, VIRTIO_NET_F_MRG_RXBUF) || c->writable_len >= p->rx_len;
}

/* Copies the packet's next part into `c` and stages the chain on the used ring. Returns false
 * when the chain cannot take it: the packet is then dropped. */
static bool net_rx_fill(struct virtio_net *net, struct net_pair *p, const struct virtq_chain *c)
{
    bool fits = net_rx_chain_fits(net, p, c);
    uint32_t n = 0;
    if (fits) {
        uint32_t left = p->rx_len - p->rx_done;
        n = c->writable_len < left ? c->writable_len : left;
        virtq_chain_write(c, 0, p->rx->buf + p->rx_done, n);
        if (p->rx_nr_bufs == 0) {
            size_t at = offsetof(struct net_hdr, num_buffers);
            p->rx_num_buffers[0] = chain_writable_byte(c, at);
            p->rx_num_buffers[1] = chain_writable_byte(c, at + 1);
        }
    }
    if (virtq_push_pending(net_rx_vq(net, p), c->head, n) < 0) {
        net_break(net, "cannot push to the used ring");
        return false;
    }
    p->rx_nr_bufs++;
    p->rx_done += n;
    return fits;
}

/* Copies the held packet into guest buffers. Without enough of them it keeps the packet, and
 * the chains filled so far, until the driver adds more and kicks. */
static void net_rx_deliver(struct virtio_net *net, struct net_pair *p)
{
    struct virtqueue *vq = net_rx_vq(net, p);
    while (p->rx_done < p->rx_len && !net->broken) {
        if (p->rx_nr_bufs >= vq->size) { /* a guest re-offering heads: never fits */
            net_rx_finish(net, p, false);
            return;
        }
        int ret = virtq_pop(vq, &net->chain);
        if (ret == 0)
            return;
        if (ret < 0) {
            net_queue_broken(net, vq);
            break;
        }
        if (!net_rx_fill(net, p, &net->chain)) {
            net_rx_finish(net, p, false);
            return;
        }
    }
    if (net->broken)
        net_rx_forget(p);
    else
        net_rx_finish(net, p, true);
}

/* Makes the tap's header one the driver accepts: num_buffers 1 until more are used, no flag
 * it did not negotiate. Returns false for a GSO type it cannot take: drop the packet. */
static bool net_rx_fix_header(const struct virtio_net *net, uint8_t *buf)
{
    struct net_hdr h;
    memcpy(&h, buf, sizeof(h));
    if (!net_has(net, VIRTIO_NET_F_GUEST_CSUM))
        h.flags = 0;
    h.num_buffers = 1;
    memcpy(buf, &h, sizeof(h));

    uint8_t gso = h.gso_type & (uint8_t)~VIRTIO_NET_HDR_GSO_ECN;
    if ((h.gso_type & VIRTIO_NET_HDR_GSO_ECN) && !net_has(net, VIRTIO_NET_F_GUEST_ECN))
        return false;
    return gso == VIRTIO_NET_HDR_GSO_NONE ||
           (gso == VIRTIO_NET_HDR_GSO_TCPV4 && net_has(net, VIRTIO_NET_F_GUEST_TSO4)) ||
           (gso == VIRTIO_NET_HDR_GSO_TCPV6 && net_has(net, VIRTIO_NET_F_GUEST_TSO6));
}

static void net_rx_read_done(struct virtio_net *net, struct net_pair *p, int res)
{
    if (res == -EAGAIN || res == -EINTR || res == -ECANCELED) {
        p->rx->polling = res == -EAGAIN; /* a kernel that honours O_NONBLOCK: poll first */
        net->rx_nowait |= res == -EAGAIN;
        return;
    }
    if (res <= 0) {
        net_log_io_error(net, "tap read", res);
        p->rx_failed = true; /* retrying a dead tap would spin the loop */
        return;
    }
    if (!net_rx_wanted(net, p))
        return; /* reset, or the pair turned off, since the read started: drop the packet */
    if ((uint32_t)res < NET_HDR_BYTES || (uint32_t)res > NET_RX_MAX_BYTES ||
        !net_rx_fix_header(net, p->rx->buf)) {
        net->counters.rx_dropped++;
        return;
    }
    p->rx_len = (uint32_t)res;
    if (!net->quiesced)
        net_rx_deliver(net, p); /* else held for resume */
}

static bool net_rx_complete(struct event_loop *loop, void *opaque, int res)
{
    (void)loop;
    struct net_rx_op *op = opaque;
    struct virtio_net *net = op->net;
    virtio_lock(net->vdev);
    op->in_flight = false;
    if (op->zc) {
        op->zc = false;
        if (op->generation != net->generation) {
            op->zc_chains = 0; /* reset since: the queue and its chains are not ours */
            virtio_unlock(net->vdev);
            return false;
        }
        net_rx_zc_done(net, op->pair, res);
        if (res > 0)
            net_rx_drain(net, op->pair, NET_RX_BATCH - 1);
    } else if (!op->polling) {
        net_rx_read_done(net, op->pair, res);
    } else if (res != -ECANCELED) {
        op->polling = false; /* readable (or failing: the read will say) */
        /* Read now, not in the next turn: the packet that woke an idle tap is the one a
         * round trip waits for. (Polling follows an -EAGAIN, so the tap honours
         * O_NONBLOCK and a readv cannot wait.) */
        if (res > 0)
            net_rx_drain(net, op->pair, NET_RX_BATCH);
    }
    net_rx_arm(net, op->pair);
    virtio_unlock(net->vdev);
    return false;
}

/* ---- receive, zero copy ---- */

/* Copies between the first `len` bytes an iovec array describes and `flat`. */
static void iov_copy(const struct iovec *iov, unsigned cnt, uint8_t *flat, size_t len,
                     bool from_iov)
{
    for (unsigned i = 0; i < cnt && len; i++) {
        size_t n = iov[i].iov_len < len ? iov[i].iov_len : len;
        memcpy(from_iov ? flat : iov[i].iov_base, from_iov ? iov[i].iov_base : flat, n);
        flat += n;
        len -= n;
    }
}

/* Gives every chain of the zero-copy read back to the driver, untouched on the used ring:
 * they were the last popped from the queue, nothing was popped after them. */
static void net_rx_zc_hand_back(struct virtio_net *net, struct net_pair *p)
{
    struct virtqueue *vq = net_rx_vq(net, p);
    vq->last_avail_idx = (uint16_t)(vq->last_avail_idx - p->rx->zc_chains);
    p->rx->zc_chains = 0;
}

/* Adds chain `c`'s writable segments to the read. False when it cannot take part: it must
 * then be handed back with the others. */
static bool net_rx_zc_add(struct virtio_net *net, struct net_rx_op *op, const struct virtq_chain *c)
{
    unsigned segs = 0;
    for (unsigned i = 0; i < c->nr_segs; i++)
        segs += c->segs[i].device_writes;
    uint32_t min = op->zc_chains ? 1 : NET_HDR_BYTES; /* the first holds the whole header */
    if (c->writable_len < min || op->zc_iovs + segs > NET_RX_ZC_IOVS)
        return false;
    (void)net;
    uint32_t room = (uint32_t)sizeof(op->buf) - op->zc_cap, took = 0;
    for (unsigned i = 0; i < c->nr_segs && took < room; i++) {
        const struct virtq_seg *sg = &c->segs[i];
        if (!sg->device_writes)
            continue;
        uint32_t n = sg->len < room - took ? sg->len : room - took;
        op->zc_iov[op->zc_iovs++] = (struct iovec){ .iov_base = sg->host, .iov_len = n };
        took += n;
    }
    op->zc_head[op->zc_chains] = c->head;
    op->zc_len[op->zc_chains++] = took;
    op->zc_cap += took;
    return true;
}

/* Pops chains for the next packet and lays out the read into them: the iovec count (the
 * chains' writable segments, then the spill), or 0 with nothing popped (no chain, an odd one). */
static unsigned net_rx_zc_gather(struct virtio_net *net, struct net_pair *p)
{
    struct net_rx_op *op = p->rx;
    struct virtqueue *vq = net_rx_vq(net, p);
    bool mrg = net_has(net, VIRTIO_NET_F_MRG_RXBUF);
    uint32_t target = 2 * op->avg_len;
    target = target < NET_RX_ZC_MIN_TARGET ? NET_RX_ZC_MIN_TARGET
             : target > sizeof(op->buf) ? (uint32_t)sizeof(op->buf) : target;
    op->zc_chains = op->zc_iovs = 0;
    op->zc_cap = 0;
    /* Without MRG_RXBUF a packet takes one chain, however short it is. */
    while (op->zc_cap < target && op->zc_chains < (mrg ? NET_RX_ZC_CHAINS : 1u)) {
        int ret = virtq_pop(vq, &op->chain);
        if (ret < 0)
            net_queue_broken(net, vq);
        if (ret <= 0)
            break;
        if (!net_rx_zc_add(net, op, &op->chain)) {
            op->zc_chains++; /* this one goes back too */
            net_rx_zc_hand_back(net, p);
            return 0;
        }
    }
    if (!op->zc_chains || net->broken) {
        net_rx_zc_hand_back(net, p);
        return 0;
    }
    unsigned cnt = op->zc_iovs;
    if (op->zc_cap < sizeof(op->buf)) /* the spill: the rest of a longer packet */
        op->zc_iov[cnt++] = (struct iovec){ .iov_base = op->buf + op->zc_cap,
                                            .iov_len = sizeof(op->buf) - op->zc_cap };
    return cnt;
}

/* Pops chains for the next packet and starts a read into them. False (nothing popped) when it
 * cannot: no chain, an odd one, or no SQE; the caller reads into the bounce buffer. */
static bool net_rx_zc_start(struct virtio_net *net, struct net_pair *p)
{
    struct net_rx_op *op = p->rx;
    unsigned cnt = net_rx_zc_gather(net, p);
    struct io_uring_sqe *sqe =
        cnt ? loop_owner_prepare(net->loop, &net->tx_io, &op->watch, net_rx_complete, op) : NULL;
    if (!sqe) {
        net_rx_zc_hand_back(net, p);
        return false;
    }
    io_uring_prep_readv2(sqe, p->fd, op->zc_iov, cnt, 0,
                         net->rx_no_rwf_nowait ? 0 : RWF_NOWAIT);
    loop_sqe_file(sqe, p->fixed_fd);
    op->in_flight = true;
    op->zc = true;
    op->generation = net->generation;
    return true;
}

/* A packet that did not fit the chains: what they got is copied into the bounce buffer,
 * in front of the spill, they go back, and it is delivered the plain way. */
static void net_rx_zc_spilled(struct virtio_net *net, struct net_pair *p, uint32_t len)
{
    struct net_rx_op *op = p->rx;
    iov_copy(op->zc_iov, op->zc_iovs, op->buf, op->zc_cap, true);
    net_rx_zc_hand_back(net, p);
    if (!net_rx_fix_header(net, op->buf)) {
        net->counters.rx_dropped++;
        return;
    }
    p->rx_len = len;
    if (!net->quiesced)
        net_rx_deliver(net, p); /* else held for resume */
}

/* The packet is in the chains: the header fixed in place, the chains it used pushed with
 * what was written into each (never more), the rest handed back, all published at once. */
static void net_rx_zc_deliver(struct virtio_net *net, struct net_pair *p, uint32_t len)
{
    struct net_rx_op *op = p->rx;
    struct virtqueue *vq = net_rx_vq(net, p);
    uint8_t hdr[NET_HDR_BYTES];
    iov_copy(op->zc_iov, op->zc_iovs, hdr, sizeof(hdr), true);
    if (!net_rx_fix_header(net, hdr)) {
        net->counters.rx_dropped++;
        net_rx_zc_hand_back(net, p);
        return;
    }
    unsigned used = 0;
    for (uint32_t covered = 0; covered < len; used++)
        covered += op->zc_len[used];
    struct net_hdr h;
    memcpy(&h, hdr, sizeof(h));
    h.num_buffers = (uint16_t)used; /* 1 without MRG_RXBUF: one chain */
    memcpy(hdr, &h, sizeof(h));
    iov_copy(op->zc_iov, op->zc_iovs, hdr, sizeof(hdr), false);
    uint32_t left = len;
    for (unsigned i = 0; i < used; i++) {
        uint32_t n = op->zc_len[i] < left ? op->zc_len[i] : left;
        if (virtq_push_pending(vq, op->zc_head[i], n) < 0) {
            net_break(net, "cannot push to the used ring");
            return;
        }
        left -= n;
    }
    op->zc_chains -= used;
    net_rx_zc_hand_back(net, p);
    virtq_publish(vq);
    net->counters.rx_packets++;
    net->counters.rx_zero_copy++;
    net->counters.rx_bytes += len - NET_HDR_BYTES;
    virtio_queue_done(net->vdev, rx_queue(p));
}

/* A zero-copy read finished with `res`: under vdev->lock, its chains still popped. */
static void net_rx_zc_done(struct virtio_net *net, struct net_pair *p, int res)
{
    struct net_rx_op *op = p->rx;
    if (res == -EOPNOTSUPP && !net->rx_no_rwf_nowait) {
        net->rx_no_rwf_nowait = true; /* a tap without FMODE_NOWAIT: see rx_no_rwf_nowait */
        net_rx_zc_hand_back(net, p);
        return;
    }
    if (res <= 0) {
        net_rx_zc_hand_back(net, p);
        net_rx_read_done(net, p, res); /* poll first, or a failed tap: as a plain read */
        return;
    }
    if (!net_rx_wanted(net, p)) { /* the pair was turned off meanwhile: the packet goes */
        net_rx_zc_hand_back(net, p);
        return;
    }
    op->avg_len = (op->avg_len * 7 + (uint32_t)res) / 8;
    if ((uint32_t)res < NET_HDR_BYTES || (uint32_t)res > NET_RX_MAX_BYTES) {
        net->counters.rx_dropped++;
        net_rx_zc_hand_back(net, p);
    } else if ((uint32_t)res > op->zc_cap) {
        net_rx_zc_spilled(net, p, (uint32_t)res);
    } else {
        net_rx_zc_deliver(net, p, (uint32_t)res);
    }
}

/*
 * Reads up to `max` of the tap's waiting packets straight into the guest's buffers with readv
 * (the tap is non-blocking: -EAGAIN when it is empty, and then the pair polls as after any
 * such read), in this turn of the loop: after a packet read through the ring (the ones behind
 * it), or once a poll found an idle tap readable. A burst costs one turn and at most one
 * interrupt, not a turn each.
 */
static void net_rx_drain(struct virtio_net *net, struct net_pair *p, unsigned max)
{
    struct net_rx_op *op = p->rx;
    for (unsigned n = 0; n < max && !op->polling && !p->rx_len && !net->quiesced &&
                         net_rx_wanted(net, p);
         n++) {
        unsigned cnt = net_rx_zc_gather(net, p);
        if (!cnt)
            return;
        ssize_t r = readv(p->fd, op->zc_iov, (int)cnt);
        int res = r < 0 ? -errno : (int)r;
        net_rx_zc_done(net, p, res);
        if (res <= 0)
            return;
    }
}

static void net_rx_kick(struct virtio_net *net, struct net_pair *p)
{
    if (p->rx_len && net_rx_wanted(net, p))
        net_rx_deliver(net, p);
    net_rx_arm(net, p);
}

/* ---- tap queues and offloads ---- */

/* With a multi-queue tap, only queues of active pairs get packets steered to them. */
static void net_tap_steer(struct virtio_net *net)
{
    if (!net->is_tap || net->nr_pairs < 2)
        return;
    for (unsigned i = 0; i < net->nr_pairs; i++) {
        struct net_pair *p = &net->pairs[i];
        bool want = i < net->active_pairs;
        if (p->tap_attached == want)
            continue;
        struct ifreq ifr = { .ifr_flags = want ? IFF_ATTACH_QUEUE : IFF_DETACH_QUEUE };
        if (ioctl(p->fd, TUNSETQUEUE, &ifr) < 0)
            log_warn("virtio-net %s: cannot %s queue %u: %s", net->name,
                     want ? "attach" : "detach", i, strerror(errno));
        else
            p->tap_attached = want;
    }
}

/* Which tap queues are attached now (TUNGETIFF answers a detached one with EBADFD): a
 * handed-over tap's queues are as its source steered them, until the moment it paused. */
static void net_tap_read_attached(struct virtio_net *net)
{
    for (unsigned i = 0; net->is_tap && i < net->nr_pairs; i++) {
        struct ifreq ifr = { 0 };
        if (ioctl(net->pairs[i].fd, TUNGETIFF, &ifr) == 0 || errno == EBADFD)
            net->pairs[i].tap_attached = ifr.ifr_flags != 0; /* EBADFD left it zero */
    }
}

/* The TUN_F_* offloads matching what the guest accepts in received packets. */
static unsigned long net_tap_offloads(const struct virtio_net *net)
{
    if (!net_has(net, VIRTIO_NET_F_GUEST_CSUM))
        return 0; /* every other offload needs the checksum one */
    unsigned long f = TUN_F_CSUM;
    if (net_has(net, VIRTIO_NET_F_GUEST_TSO4))
        f |= TUN_F_TSO4;
    if (net_has(net, VIRTIO_NET_F_GUEST_TSO6))
        f |= TUN_F_TSO6;
    if ((f & (TUN_F_TSO4 | TUN_F_TSO6)) && net_has(net, VIRTIO_NET_F_GUEST_ECN))
        f |= TUN_F_TSO_ECN;
    return f;
}

static int net_tap_set_offloads(const struct virtio_net *net, unsigned long offloads)
{
    if (!net->is_tap || ioctl(net->pairs[0].fd, TUNSETOFFLOAD, offloads) == 0)
        return 0;
    int err = errno;
    log_warn("virtio-net %s: cannot set tap offloads %#lx: %s", net->name, offloads,
             strerror(err));
    return -err;
}

/* Sets the number of pairs in use (the control queue's VQ_PAIRS_SET), on the loop thread. */
static void net_set_active_pairs(struct virtio_net *net, unsigned n)
{
    net->active_pairs = n;
    net_tap_steer(net);
    for (unsigned i = n; i < net->nr_pairs; i++)
        if (net->pairs[i].rx_len)
            net_rx_finish(net, &net->pairs[i], false);
    for (unsigned i = 0; i < n; i++)
        net_rx_arm(net, &net->pairs[i]);
}

/* ---- control queue ---- */

static uint8_t net_ctrl_command(struct virtio_net *net, const struct virtq_chain *c)
{
    uint8_t cmd[2];
    uint16_t pairs;
    if (virtq_chain_read(c, 0, cmd, sizeof(cmd)) < sizeof(cmd))
        return VIRTIO_NET_ERR;
    if (cmd[0] == VIRTIO_NET_CTRL_ANNOUNCE) { /* the driver sent its gratuitous packets */
        if (cmd[1] != VIRTIO_NET_CTRL_ANNOUNCE_ACK || !net_has(net, VIRTIO_NET_F_GUEST_ANNOUNCE))
            return VIRTIO_NET_ERR;
        net->config.status &= (uint16_t)~VIRTIO_NET_S_ANNOUNCE;
        return VIRTIO_NET_OK;
    }
    if (cmd[0] != VIRTIO_NET_CTRL_MQ || cmd[1] != VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET ||
        !net_has(net, VIRTIO_NET_F_MQ))
        return VIRTIO_NET_ERR; /* no other class is offered */
    if (virtq_chain_read(c, sizeof(cmd), &pairs, sizeof(pairs)) < sizeof(pairs) || pairs < 1 ||
        pairs > net->nr_pairs)
        return VIRTIO_NET_ERR;
    net_set_active_pairs(net, pairs);
    return VIRTIO_NET_OK;
}

static void net_ctrl_process(struct virtio_net *net);

static bool net_ctrl_cont_run(struct event_loop *loop, void *opaque, int res)
{
    struct virtio_net *net = opaque;
    (void)loop, (void)res;
    virtio_lock(net->vdev);
    net->ctrl_cont_armed = false;
    if (net->active && !net->quiesced) /* else reset or paused meanwhile */
        net_ctrl_process(net);
    virtio_unlock(net->vdev);
    return false;
}

/* The handler spent its budget: a no-op through the ring brings it back on a later turn,
 * after the completions ready now. False when no SQE is free: the caller goes on. */
static bool net_ctrl_defer(struct virtio_net *net)
{
    return loop_owner_defer(net->loop, &net->tx_io, &net->ctrl_cont, &net->ctrl_cont_armed,
                            net_ctrl_cont_run, net);
}

/* Answers up to NET_CTRL_BUDGET commands; the rest on a later turn of the loop. */
static void net_ctrl_process(struct virtio_net *net)
{
    struct virtqueue *vq = &net->vdev->queues[ctrl_queue(net)];
    bool pushed = false;
    unsigned taken = 0;
    while (!net->broken) {
        if (taken++ == NET_CTRL_BUDGET && net_ctrl_defer(net))
            break;
        int ret = virtq_pop(vq, &net->chain);
        if (ret == 0)
            break;
        if (ret < 0) {
            net_queue_broken(net, vq);
            break;
        }
        uint32_t written = 0;
        if (net->chain.writable_len > 0) { /* else no room for the ack: no answer possible */
            uint8_t ack = net_ctrl_command(net, &net->chain);
            written = (uint32_t)virtq_chain_write(&net->chain, 0, &ack, 1);
        }
        if (virtq_push(vq, net->chain.head, written) < 0)
            net_break(net, "cannot push to the used ring");
        pushed = true;
    }
    if (pushed)
        virtio_queue_done(net->vdev, ctrl_queue(net));
}

/* ---- virtio_device_ops ---- */

static uint64_t net_features(struct virtio_device *vdev)
{
    const struct virtio_net *net = vdev->model;
    static const unsigned bits[] = {
        VIRTIO_NET_F_CSUM,       VIRTIO_NET_F_GUEST_CSUM, VIRTIO_NET_F_MAC,
        VIRTIO_NET_F_GUEST_TSO4, VIRTIO_NET_F_GUEST_TSO6, VIRTIO_NET_F_GUEST_ECN,
        VIRTIO_NET_F_HOST_TSO4,  VIRTIO_NET_F_HOST_TSO6,  VIRTIO_NET_F_HOST_ECN,
        VIRTIO_NET_F_MRG_RXBUF,  VIRTIO_NET_F_STATUS,     VIRTIO_NET_F_CTRL_VQ,
        VIRTIO_NET_F_GUEST_ANNOUNCE,
    };
    uint64_t f = 0;
    for (size_t i = 0; i < sizeof(bits) / sizeof(bits[0]); i++)
        f |= 1ULL << bits[i];
    if (net->nr_pairs > 1)
        f |= 1ULL << VIRTIO_NET_F_MQ;
    return f;
}

/* Only the status changes after creation (ANNOUNCE), always under vdev->lock, which the
 * transport holds here. */
static void net_read_config(struct virtio_device *vdev, uint32_t offset, void *data, uint32_t len)
{
    const struct virtio_net *net = vdev->model;
    memset(data, 0, len);
    if (offset < sizeof(net->config)) {
        uint32_t n = sizeof(net->config) - offset < len ? sizeof(net->config) - offset : len;
        memcpy(data, (const uint8_t *)&net->config + offset, n);
    }
}

static void net_write_config(struct virtio_device *vdev, uint32_t offset, const void *data,
                             uint32_t len)
{
    (void)vdev, (void)offset, (void)data, (void)len; /* the MAC is read-only for VERSION_1 */
}

/* After a state load, the guest may be elsewhere on the network (a restore, a migration):
 * ask the driver for gratuitous packets (virtio 1.2, 5.1.6.5.4), once. */
static void net_announce(struct virtio_net *net)
{
    if (!net->announce_pending)
        return;
    net->announce_pending = false;
    if (!net_has(net, VIRTIO_NET_F_GUEST_ANNOUNCE) || !net_has(net, VIRTIO_NET_F_CTRL_VQ))
        return;
    net->config.status |= VIRTIO_NET_S_ANNOUNCE;
    if (net->vdev->interrupt_config)
        net->vdev->interrupt_config(net->vdev);
}

/* From a vCPU thread: no I/O is submitted here, the first kick starts receiving. */
static int net_activate(struct virtio_device *vdev)
{
    struct virtio_net *net = vdev->model;
    int ret = net_tap_set_offloads(net, net_tap_offloads(net));
    if (ret < 0)
        return ret;
    net->broken = false;
    net->active = true;
    /* active_pairs is 1 from creation and reset until VQ_PAIRS_SET (virtio 1.2, 5.1.6.5.5),
     * or what a state load set: not touched here. */
    net_tap_steer(net);
    net_announce(net);
    return 0;
}

static void net_queue_notify(struct virtio_device *vdev, unsigned queue)
{
    struct virtio_net *net = vdev->model;
    if (queue >= net->ops.nr_queues || !net->active || net->quiesced)
        return; /* reset meanwhile, or paused: resume looks at every queue */
    if (queue == ctrl_queue(net))
        net_ctrl_process(net);
    else if (queue % 2)
        net_tx_process(net, &net->pairs[queue / 2]);
    else
        net_rx_kick(net, &net->pairs[queue / 2]);
    /* The transport drops kicks before DRIVER_OK: any later one starts every pair's reads. */
    for (unsigned i = 0; i < net->active_pairs; i++)
        net_rx_arm(net, &net->pairs[i]);
}

/* The transmit queues: what the guest sends. Receive buffers wait for frames, not for us. */
static bool net_pollable(struct virtio_device *vdev, unsigned queue)
{
    const struct virtio_net *net = vdev->model;
    return queue < ctrl_queue(net) && queue % 2 == 1;
}

/*
 * Tap writes in flight still read guest buffers: they are waited for (they never block, the
 * tap is non-blocking) and then freed unpushed, their generation being older than the
 * device's. A read in flight goes to the pair's own buffer, not guest memory: it stays, and
 * drops its packet.
 */
static void net_reset(struct virtio_device *vdev)
{
    struct virtio_net *net = vdev->model;
    net->generation++;
    net->active = false;
    net->broken = false;
    net->active_pairs = 1;
    net->announce_pending = false; /* a new driver starts from scratch */
    net->config.status &= (uint16_t)~VIRTIO_NET_S_ANNOUNCE;
    for (unsigned i = 0; i < net->nr_pairs; i++) {
        struct net_pair *p = &net->pairs[i];
        net_rx_forget(p);
        p->rx_failed = false;
        p->tx_outstanding = 0;
        p->tx_throttled = false;
    }
    int ret = loop_owner_wait(net->loop, &net->tx_io, vdev->lock, NET_RESET_WAIT_MS);
    if (ret < 0)
        log_warn("virtio-net %s: reset: tap writes still in flight: %s", net->name,
                 strerror(-ret));
    net->active = false; /* an activation by another vCPU meanwhile is undone with the rest */
    for (unsigned q = 0; q < net->ops.nr_queues; q++)
        virtq_reset(&vdev->queues[q]);
}

/*
 * A packet being copied into several chains (MRG_RXBUF) waits for more: those chains were
 * popped last from the pair's receive queue, and their used elements are pending, not
 * published. They go back, last first, and the packet is delivered from its start later.
 */
static void net_rx_hand_back(struct virtio_net *net, struct net_pair *p)
{
    struct virtqueue *vq = net_rx_vq(net, p);
    if (!p->rx_nr_bufs)
        return;
    vq->last_avail_idx = (uint16_t)(vq->last_avail_idx - p->rx_nr_bufs);
    vq->used_pending = (uint16_t)(vq->used_pending - p->rx_nr_bufs);
    p->rx_done = 0;
    p->rx_nr_bufs = 0;
    p->rx_num_buffers[0] = p->rx_num_buffers[1] = NULL;
}

/* Tap reads are cancelled (a packet read meanwhile is held, not delivered), tap writes are
 * waited for and answered. */
static int net_stop_io(struct virtio_net *net)
{
    int ret = loop_owner_cancel(net->loop, &net->rx_io);
    if (ret == 0)
        ret = loop_owner_drain(net->loop, &net->rx_io);
    if (ret == 0)
        ret = loop_owner_drain(net->loop, &net->tx_io);
    return ret;
}

static void net_resume(struct virtio_device *vdev)
{
    struct virtio_net *net = vdev->model;
    net->quiesced = false;
    for (unsigned q = 0; q < net->ops.nr_queues; q++)
        net_queue_notify(vdev, q); /* also restarts the tap reads */
}

static int net_quiesce(struct virtio_device *vdev)
{
    struct virtio_net *net = vdev->model;
    net->quiesced = true;
    int ret = net_stop_io(net);
    if (ret < 0) {
        log_error("virtio-net %s: cannot stop the tap I/O: %s", net->name, strerror(-ret));
        net_resume(vdev); /* not quiesced: the caller resumes only those that were */
        return ret;
    }
    for (unsigned i = 0; i < net->nr_pairs; i++)
        net_rx_hand_back(net, &net->pairs[i]);
    return 0;
}

/* ---- state ---- */

/* The config space: the MAC (random unless configured: the guest knows this one), the status
 * and the pairs; and how many pairs the driver turned on. */
static void net_save(struct virtio_device *vdev, struct state_writer *w)
{
    const struct virtio_net *net = vdev->model;
    sw_bytes(w, net->config.mac, sizeof(net->config.mac));
    sw_u16(w, net->config.status);
    sw_u16(w, net->config.max_virtqueue_pairs);
    sw_u16(w, (uint16_t)net->active_pairs);
}

static int net_load(struct virtio_device *vdev, struct state_cursor *c, uint32_t version)
{
    struct virtio_net *net = vdev->model;
    uint8_t mac[6];
    (void)version; /* only version 1 so far */
    sc_bytes(c, mac, sizeof(mac));
    uint16_t status = sc_u16(c), pairs = sc_u16(c), active = sc_u16(c);
    if (c->overrun)
        return sc_finish(c);
    if (mac[0] & 1)
        return sc_reject(c, "multicast MAC %02x:%02x:%02x:%02x:%02x:%02x", mac[0], mac[1],
                         mac[2], mac[3], mac[4], mac[5]);
    if (status & ~(VIRTIO_NET_S_LINK_UP | VIRTIO_NET_S_ANNOUNCE))
        return sc_reject(c, "unknown status bits 0x%x", status);
    if (pairs != net->nr_pairs)
        return sc_reject(c, "%u queue pairs, this device has %u", pairs, net->nr_pairs);
    if (active < 1 || active > net->nr_pairs)
        return sc_reject(c, "%u active queue pairs of %u", active, net->nr_pairs);
    if (!net->mac_configured)
        memcpy(net->config.mac, mac, sizeof(mac));
    net->config.status = status;
    net->active_pairs = active;
    net_tap_read_attached(net); /* the activation right after steers them from there */
    /* The transport activates a device that was running right after this: announce then.
     * One that was not gets reset by its driver first, which forgets this. */
    net->announce_pending = true;
    return 0;
}

static const struct virtio_device_ops net_ops_template = {
    .name = "virtio-net",
    .device_id = VIRTIO_ID_NET,
    .nr_queues = 2,
    .queue_max_size = NET_QUEUE_SIZE,
    .config_size = sizeof(struct net_config_space),
    .features = net_features,
    .read_config = net_read_config,
    .write_config = net_write_config,
    .activate = net_activate,
    .queue_notify = net_queue_notify,
    .pollable = net_pollable,
    .reset = net_reset,
    .quiesce = net_quiesce,
    .resume = net_resume,
    .state_version = NET_STATE_VERSION,
    .save = net_save,
    .load = net_load,
};

/* ---- creation ---- */

static void net_free(struct virtio_net *net)
{
    loop_owner_destroy(&net->rx_io);
    loop_owner_destroy(&net->tx_io);
    for (unsigned i = 0; i < net->nr_pairs; i++) {
        if (net->loop) /* no I/O in flight any more */
            loop_unregister_file(net->loop, net->pairs[i].fixed_fd);
        if (net->pairs[i].fd >= 0)
            close(net->pairs[i].fd);
        free(net->pairs[i].rx);
    }
    free(net->name);
    free(net);
}

static struct virtio_net *net_alloc(const struct virtio_net_config *cfg, unsigned pairs)
{
    struct virtio_net *net = calloc(1, sizeof(*net));
    if (!net)
        return NULL;
    net->nr_pairs = pairs;
    loop_owner_init(&net->rx_io);
    loop_owner_init(&net->tx_io);
    for (unsigned i = 0; i < VIRTIO_NET_MAX_PAIRS; i++)
        net->pairs[i] = (struct net_pair){ .index = i, .fd = -1, .fixed_fd = -1,
                                           .tap_attached = true };
    net->name = strdup(cfg->tap ? cfg->tap : "(fd)");
    if (!net->name) {
        net_free(net);
        return NULL;
    }
    return net;
}

static void net_make_mac(const struct virtio_net_config *cfg, uint8_t mac[6])
{
    if (cfg->mac_set) {
        memcpy(mac, cfg->mac, 6);
        return;
    }
    if (getrandom(mac, 6, GRND_NONBLOCK) != 6) {
        uint64_t t = (uint64_t)(uintptr_t)mac ^ (uint64_t)getpid() << 16;
        memcpy(mac, &t, 6); /* no entropy yet: unique enough on one host */
    }
    mac[0] = (uint8_t)((mac[0] & 0xfe) | 0x02); /* unicast, locally administered */
}

/* Everything but the fds: rx buffers, config space, and `vdev` made this device. */
static int net_finish_create(struct virtio_net *net, const struct virtio_net_config *cfg,
                             struct event_loop *loop, const struct guest_memory *gm,
                             struct virtio_device *vdev)
{
    for (unsigned i = 0; i < net->nr_pairs; i++) {
        net->pairs[i].rx = calloc(1, sizeof(struct net_rx_op));
        if (!net->pairs[i].rx)
            return -ENOMEM;
        net->pairs[i].rx->pair = &net->pairs[i];
        net->pairs[i].rx->net = net;
    }
    net_make_mac(cfg, net->config.mac);
    net->mac_configured = cfg->mac_set;
    net->config.status = VIRTIO_NET_S_LINK_UP;
    net->config.max_virtqueue_pairs = (uint16_t)net->nr_pairs;
    net->ops = net_ops_template;
    net->ops.nr_queues = 2 * net->nr_pairs + 1; /* the control queue last */
    net->vdev = vdev;
    net->loop = loop;
    for (unsigned i = 0; i < net->nr_pairs; i++)
        net->pairs[i].fixed_fd = loop_register_file(loop, net->pairs[i].fd);
    net->active_pairs = 1;
    vdev->ops = &net->ops;
    vdev->model = net;
    vdev->gm = gm;
    return 0;
}

static unsigned net_pairs(const struct virtio_net_config *cfg)
{
    return cfg->queues ? cfg->queues : 1;
}

static int net_set_nonblocking(int fd)
{
    int flags = fcntl(fd, F_GETFL);
    if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0)
        return -errno;
    return 0;
}

int virtio_net_create_fds(struct virtio_net **out, const struct virtio_net_config *cfg,
                          const int *fds, struct event_loop *loop,
                          const struct guest_memory *gm, struct virtio_device *vdev)
{
    unsigned pairs = net_pairs(cfg);
    struct virtio_net *net = pairs <= VIRTIO_NET_MAX_PAIRS ? net_alloc(cfg, pairs) : NULL;
    if (!net) {
        for (unsigned i = 0; i < pairs; i++)
            close(fds[i]);
        return pairs <= VIRTIO_NET_MAX_PAIRS ? -ENOMEM : -EINVAL;
    }
    int ret = 0;
    for (unsigned i = 0; i < pairs; i++) {
        net->pairs[i].fd = fds[i];
        if (ret == 0)
            ret = net_set_nonblocking(fds[i]);
    }
    if (ret == 0)
        ret = net_finish_create(net, cfg, loop, gm, vdev);
    if (ret < 0) {
        net_free(net);
        return ret;
    }
    *out = net;
    return 0;
}

/* Opens one queue of the tap named `name`, attaching to it or creating it. */
static int net_tap_open_queue(const char *name, bool multi_queue, int *out)
{
    int fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    struct ifreq ifr = { .ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR };
    if (multi_queue)
        ifr.ifr_flags |= IFF_MULTI_QUEUE;
    memcpy(ifr.ifr_name, name, strlen(name)); /* shorter than IFNAMSIZ: checked */
    int hdr_bytes = NET_HDR_BYTES;
    if (ioctl(fd, TUNSETIFF, &ifr) < 0 || ioctl(fd, TUNSETVNETHDRSZ, &hdr_bytes) < 0) {
        int err = errno;
        close(fd);
        return -err;
    }
    *out = fd;
    return 0;
}

static int net_tap_open(struct virtio_net *net, const char *name)
{
    if (!name || !*name || strlen(name) >= IFNAMSIZ) {
        log_error("virtio-net: cannot open tap %s: the name must have 1 to %d characters",
                  name ? name : "(none)", IFNAMSIZ - 1);
        return -EINVAL;
    }
    for (unsigned i = 0; i < net->nr_pairs; i++) {
        int ret = net_tap_open_queue(name, net->nr_pairs > 1, &net->pairs[i].fd);
        if (ret < 0) {
            log_error("virtio-net: cannot open tap %s: %s", name, strerror(-ret));
            return ret;
        }
    }
    net->is_tap = true;
    /* No offload until the guest accepts some: the tap then hands over plain frames. */
    return net_tap_set_offloads(net, 0);
}

/*
 * A handed-over tap: each queue as the source left it, its offloads those its guest's driver
 * accepted. Nothing is set now: the source may still run on these queues; the state load
 * reads which are attached, and its activation sets what the guest negotiated and steers the
 * queues from there.
 */
static int net_tap_use(struct virtio_net *net, const int *taps)
{
    for (unsigned i = 0; i < net->nr_pairs; i++) {
        struct net_pair *p = &net->pairs[i];
        p->fd = fcntl(taps[i], F_DUPFD_CLOEXEC, 0);
        int ret = p->fd < 0 ? -errno : net_set_nonblocking(p->fd);
        if (ret < 0) {
            log_error("virtio-net %s: the handed-over tap queue %u: %s", net->name, i,
                      strerror(-ret));
            return ret;
        }
    }
    net->is_tap = true;
    net_tap_read_attached(net);
    return 0;
}

unsigned virtio_net_tap_fds(const struct virtio_net *net, int *fds)
{
    if (!net->is_tap)
        return 0;
    for (unsigned i = 0; i < net->nr_pairs; i++)
        fds[i] = net->pairs[i].fd;
    return net->nr_pairs;
}

int virtio_net_create(struct virtio_net **out, const struct virtio_net_config *cfg,
                      struct event_loop *loop, const struct guest_memory *gm,
                      struct virtio_device *vdev)
{
    unsigned pairs = net_pairs(cfg);
    if (pairs > VIRTIO_NET_MAX_PAIRS)
        return -EINVAL;
    struct virtio_net *net = net_alloc(cfg, pairs);
    if (!net)
        return -ENOMEM;
    int ret = cfg->taps ? net_tap_use(net, cfg->taps) : net_tap_open(net, cfg->tap);
    if (ret == 0)
        ret = net_finish_create(net, cfg, loop, gm, vdev);
    if (ret < 0) {
        net_free(net);
        return ret;
    }
    *out = net;
    return 0;
}

void virtio_net_destroy(struct virtio_net *net)
{
    if (!net)
        return;
    net->quiesced = true;
    net->active = false;
    net->generation++; /* writes completing now are not answered */
    int ret = net_stop_io(net);
    if (ret < 0) {
        /* Their completions would meet a freed device: better leak it. */
        log_error("virtio-net %s: tap I/O still in flight, the device is leaked", net->name);
        return;
    }
    net_free(net);
}

void virtio_net_counters(const struct virtio_net *net, struct virtio_net_counters *out)
{
    *out = net->counters;
}
