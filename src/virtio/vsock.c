/*
 * vsock.c: virtio-vsock, stream sockets between the guest and host programs on UNIX sockets.
 *
 * Everything runs on the main loop under virtio_lock(): guest packets are handled as they are
 * popped (each transmit chain is answered at once, none is held), and host sockets are read
 * straight into the guest's receive buffers, so the only bytes the device keeps are those a
 * host program has not read yet, bounded per connection by the credit we advertise. Readiness
 * of host sockets comes from io_uring polls counted against the device's loop_owner, so that
 * quiesce and destroy can cancel and wait for all of them; the reads and writes themselves are
 * non-blocking calls on the loop's thread.
 */
#define _GNU_SOURCE
#include "virtio/vsock.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <unistd.h>

#include "io/unix_socket.h"
#include "log.h"
#include "migration/state.h"

/* Feature bits (virtio 1.2, 5.10.3): streams only. */
#define VIRTIO_VSOCK_F_STREAM 0

/* The packet header (virtio 1.2, 5.10.6), little-endian like the host. */
struct vsock_hdr {
    uint64_t src_cid;
    uint64_t dst_cid;
    uint32_t src_port;
    uint32_t dst_port;
    uint32_t len;
    uint16_t type;
    uint16_t op;
    uint32_t flags;
    uint32_t buf_alloc;
    uint32_t fwd_cnt;
} __attribute__((packed));
_Static_assert(sizeof(struct vsock_hdr) == 44, "virtio-vsock header layout");
#define HDR_LEN ((uint32_t)sizeof(struct vsock_hdr))

#define TYPE_STREAM 1
enum {
    OP_INVALID, OP_REQUEST, OP_RESPONSE, OP_RST, OP_SHUTDOWN, OP_RW, OP_CREDIT_UPDATE,
    OP_CREDIT_REQUEST,
};
#define SHUT_FLAG_RCV 1u  /* the sender receives no more */
#define SHUT_FLAG_SEND 2u /* the sender sends no more */
#define SHUT_FLAG_BOTH 3u
#define EVENT_TRANSPORT_RESET 0u

#define VSOCK_QUEUE_SIZE 256
/* Packets one call of a handler moves before it lets the loop serve others. */
#define VSOCK_BUDGET 64u
/* Resets owed to the guest for packets that match no connection: more are dropped. */
#define VSOCK_RST_QUEUE 64u
/* "CONNECT 4294967295\n" is 19 bytes; a longer line is refused. */
#define VSOCK_LINE_MAX 32u
#define VSOCK_ACCEPT_BATCH 16u
/* Host-initiated connections take host ports from here up, as Firecracker does. */
#define VSOCK_FIRST_HOST_PORT (1u << 30)
#define VSOCK_STATE_VERSION 1u

/* Control packets a connection owes the guest. */
#define CTRL_REQUEST 1u
#define CTRL_RESPONSE 2u
#define CTRL_SHUTDOWN 4u
#define CTRL_CREDIT 8u

struct virtio_vsock;

struct vs_conn {
    struct virtio_vsock *vs;
    unsigned slot;          /* in vs->conns */
    int fd;                 /* the host program's socket, non-blocking */
    uint64_t generation;    /* vs->generation when made: an older one died with a reset */
    uint32_t local_port;    /* ours (CID 2) */
    uint32_t peer_port;     /* the guest's */
    bool host_initiated;
    bool established;
    bool dead;              /* closing: freed once its polls have come back */
    bool readable;          /* the host socket may have bytes (a poll said so) */
    bool host_eof;          /* the host sends no more: the guest was told */
    bool host_wr_shut;      /* the guest sends no more: the host socket was shut for writing */
    uint8_t ctrl;           /* CTRL_* owed */
    uint8_t shutdown_flags; /* of the SHUTDOWN owed */
    uint8_t peer_shutdown;  /* SHUT_FLAG_* the guest sent */
    /* The guest's credit: we may have at most peer_buf_alloc bytes it has not consumed. */
    uint32_t peer_buf_alloc, peer_fwd_cnt, tx_cnt;
    /* Ours: bytes forwarded to the host program, and the count the guest last heard. */
    uint32_t fwd_cnt, fwd_sent;
    uint8_t *buf;           /* VIRTIO_VSOCK_BUF_ALLOC bytes, a ring, once needed */
    uint32_t buf_head, buf_len;
    struct loop_watch in_w, out_w;
    bool in_armed, out_armed;
};

/* A host program that connected and has not finished its CONNECT line. */
struct vs_pending {
    struct virtio_vsock *vs;
    int fd;                 /* -1: the slot is free */
    bool armed, dead;
    uint64_t deadline_ms;   /* CLOCK_MONOTONIC: closed if the line is not whole by then */
    unsigned len;
    char line[VSOCK_LINE_MAX];
    struct loop_watch w;
};

struct vs_rst {
    uint32_t local_port, peer_port;
};

struct virtio_vsock {
    struct virtio_device *vdev;
    struct event_loop *loop;
    uint64_t guest_cid;
    char *path;
    struct stat bound;
    int listen_fd;
    bool owns_path;         /* destroying the device unlinks path (if still `bound`) */
    bool active, quiesced, broken, destroying;
    bool event_pending;     /* TRANSPORT_RESET owed to the guest (after a state load) */
    uint64_t generation;    /* bumped by reset */
    struct loop_owner io;
    struct loop_watch listen_w, cont, sweep_w;
    bool listen_armed, cont_armed, sweep_armed;
    unsigned connect_timeout_ms;
    struct loop_call reset_call;

    struct vs_conn *conns[VIRTIO_VSOCK_MAX_CONNS];
    unsigned nr_conns, rr;
    uint32_t next_port;
    struct vs_pending pending[VIRTIO_VSOCK_MAX_PENDING];
    struct vs_rst rst[VSOCK_RST_QUEUE];
    unsigned rst_head, nr_rst;

    struct virtio_vsock_counters stats;
    bool rx_held;                /* rx_chain was popped and is not used yet */
    struct virtq_chain rx_chain; /* scratch for virtq_pop: too big for the stack */
    struct virtq_chain tx_chain;
    struct iovec iov[VIRTQ_MAX_SEGS];
};

/* ---- helpers ---- */

static void vs_break(struct virtio_vsock *vs, const char *why)
{
    if (vs->broken)
        return;
    vs->broken = true;
    log_warn("virtio-vsock: %s", why);
    if (vs->vdev->needs_reset)
        vs->vdev->needs_reset(vs->vdev, why);
}

static void vs_break_queue(struct virtio_vsock *vs, unsigned q)
{
    const char *why = vs->vdev->queues[q].broken_reason;
    vs_break(vs, why ? why : "broken virtqueue");
}

/* The credit the guest gives us now; a guest claiming more consumed than sent gets none. */
static uint32_t peer_credit(const struct vs_conn *c)
{
    uint32_t in_flight = c->tx_cnt - c->peer_fwd_cnt;
    return in_flight >= c->peer_buf_alloc ? 0 : c->peer_buf_alloc - in_flight;
}

static struct vs_conn *conn_find(struct virtio_vsock *vs, uint32_t local_port, uint32_t peer_port)
{
    for (unsigned i = 0; i < VIRTIO_VSOCK_MAX_CONNS; i++) {
        struct vs_conn *c = vs->conns[i];
        if (c && !c->dead && c->generation == vs->generation && c->local_port == local_port &&
            c->peer_port == peer_port)
            return c;
    }
    return NULL;
}

static bool local_port_used(struct virtio_vsock *vs, uint32_t port)
{
    for (unsigned i = 0; i < VIRTIO_VSOCK_MAX_CONNS; i++)
        if (vs->conns[i] && !vs->conns[i]->dead && vs->conns[i]->local_port == port)
            return true;
    return false;
}

/* ---- the continuation ---- */

static void tx_process(struct virtio_vsock *vs);
static void rx_pump(struct virtio_vsock *vs);
static void event_flush(struct virtio_vsock *vs);
static void vs_reap(struct virtio_vsock *vs);

static bool vs_cont_run(struct event_loop *loop, void *opaque, int res)
{
    struct virtio_vsock *vs = opaque;
    (void)loop, (void)res;
    virtio_lock(vs->vdev);
    vs->cont_armed = false;
    tx_process(vs); /* each does nothing when reset or paused meanwhile */
    rx_pump(vs);
    vs_reap(vs);
    virtio_unlock(vs->vdev);
    return false;
}

/* A handler spent its budget: both come back on a later turn. False: no SQE, go on. */
static bool vs_defer(struct virtio_vsock *vs)
{
    return loop_owner_defer(vs->loop, &vs->io, &vs->cont, &vs->cont_armed, vs_cont_run, vs);
}

/* ---- connections ---- */

static bool conn_in_done(struct event_loop *loop, void *opaque, int res);
static bool conn_out_done(struct event_loop *loop, void *opaque, int res);

static bool conn_arm(struct vs_conn *c, struct loop_watch *w, bool *armed, short events,
                     loop_callback fn)
{
    struct virtio_vsock *vs = c->vs;
    struct io_uring_sqe *sqe = loop_owner_prepare(vs->loop, &vs->io, w, fn, c);
    if (!sqe)
        return false;
    io_uring_prep_poll_add(sqe, c->fd, (unsigned)events);
    *armed = true;
    return true;
}

/* Whether the device should wait for the host socket to become readable. */
static bool conn_wants_input(const struct vs_conn *c)
{
    return c->established && !c->readable && !c->host_eof &&
           !(c->peer_shutdown & SHUT_FLAG_RCV) && peer_credit(c) > 0;
}

/* Polls for what the connection waits for. A full ring leaves it unwatched until the next
 * event of the device looks again (rare, and only a delay). */
static void conn_watch(struct vs_conn *c)
{
    if (c->dead || c->vs->quiesced || c->vs->destroying)
        return;
    if (!c->in_armed && conn_wants_input(c))
        conn_arm(c, &c->in_w, &c->in_armed, POLLIN, conn_in_done);
    if (!c->out_armed && c->buf_len)
        conn_arm(c, &c->out_w, &c->out_armed, POLLOUT, conn_out_done);
}

static void conn_free(struct vs_conn *c)
{
    struct virtio_vsock *vs = c->vs;
    close(c->fd);
    free(c->buf);
    vs->conns[c->slot] = NULL;
    vs->nr_conns--;
    free(c);
}

/*
 * Frees the dead connections whose polls are back. Only the entry points call it (kicks,
 * completions, resume), at their end: below them a connection killed stays valid memory.
 */
static void vs_reap(struct virtio_vsock *vs)
{
    for (unsigned i = 0; i < VIRTIO_VSOCK_MAX_CONNS; i++) {
        struct vs_conn *c = vs->conns[i];
        if (c && c->dead && !c->in_armed && !c->out_armed)
            conn_free(c);
    }
}

static void rst_queue(struct virtio_vsock *vs, uint32_t local_port, uint32_t peer_port)
{
    if (vs->nr_rst == VSOCK_RST_QUEUE) {
        vs->stats.rst_dropped++;
        return;
    }
    vs->rst[(vs->rst_head + vs->nr_rst++) % VSOCK_RST_QUEUE] =
        (struct vs_rst){ .local_port = local_port, .peer_port = peer_port };
}

/*
 * Closes the connection, telling the guest with a RST when it knows of the connection. The
 * host socket is shut both ways at once, which ends its polls; vs_reap() frees it when they
 * are back.
 */
static void conn_kill(struct vs_conn *c, bool rst)
{
    struct virtio_vsock *vs = c->vs;
    if (c->dead)
        return;
    if (rst && c->generation == vs->generation && !(c->ctrl & CTRL_REQUEST))
        rst_queue(vs, c->local_port, c->peer_port);
    c->dead = true;
    vs->stats.buffered -= c->buf_len;
    c->buf_len = 0;
    if (c->in_armed || c->out_armed)
        shutdown(c->fd, SHUT_RDWR);
}

static struct vs_conn *conn_new(struct virtio_vsock *vs, int fd, uint32_t local_port,
                                uint32_t peer_port)
{
    if (vs->nr_conns == VIRTIO_VSOCK_MAX_CONNS)
        return NULL;
    struct vs_conn *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    unsigned slot = 0;
    while (vs->conns[slot])
        slot++;
    *c = (struct vs_conn){ .vs = vs, .slot = slot, .fd = fd, .generation = vs->generation,
                           .local_port = local_port, .peer_port = peer_port };
    vs->conns[slot] = c;
    vs->nr_conns++;
    vs->stats.conns_opened++;
    return c;
}

static void conn_credit_from(struct vs_conn *c, const struct vsock_hdr *h)
{
    c->peer_buf_alloc = h->buf_alloc;
    c->peer_fwd_cnt = h->fwd_cnt;
}

/* Bytes reached the host program: the guest hears of the room once a quarter of our buffer
 * is free again since it last heard (every packet to it carries the count too). */
static void conn_forwarded(struct vs_conn *c, uint32_t n)
{
    c->fwd_cnt += n;
    if (c->fwd_cnt - c->fwd_sent >= VIRTIO_VSOCK_BUF_ALLOC / 4)
        c->ctrl |= CTRL_CREDIT;
}

/* After guest bytes were handed on: the shutdowns the guest asked for, once all are out. */
static void conn_drained(struct vs_conn *c)
{
    if (c->buf_len)
        return;
    if ((c->peer_shutdown & SHUT_FLAG_SEND) && !c->host_wr_shut) {
        shutdown(c->fd, SHUT_WR);
        c->host_wr_shut = true;
    }
    /* Both ways shut: the guest waits for our RST to finish its close. */
    if (c->peer_shutdown == SHUT_FLAG_BOTH)
        conn_kill(c, true);
}

/* Writes out buffered guest bytes. Returns 0 (all out, or a poll waits for room) or -errno. */
static int conn_flush(struct vs_conn *c)
{
    struct virtio_vsock *vs = c->vs;
    while (c->buf_len) {
        uint32_t first = VIRTIO_VSOCK_BUF_ALLOC - c->buf_head;
        struct iovec iov[2] = {
            { .iov_base = c->buf + c->buf_head,
              .iov_len = c->buf_len < first ? c->buf_len : first },
            { .iov_base = c->buf, .iov_len = c->buf_len < first ? 0 : c->buf_len - first },
        };
        struct msghdr msg = { .msg_iov = iov, .msg_iovlen = iov[1].iov_len ? 2 : 1 };
        ssize_t n = sendmsg(c->fd, &msg, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n < 0)
            return errno == EAGAIN || errno == EINTR ? 0 : -errno;
        c->buf_head = (c->buf_head + (uint32_t)n) % VIRTIO_VSOCK_BUF_ALLOC;
        c->buf_len -= (uint32_t)n;
        vs->stats.buffered -= (uint64_t)n;
        conn_forwarded(c, (uint32_t)n);
    }
    return 0;
}

/* A guest RW payload of `len` bytes at HDR_LEN in the chain: straight to the host socket when
 * nothing waits before it, the rest into the connection's buffer. Returns 0 or -errno. */
static int conn_write(struct vs_conn *c, const struct virtq_chain *ch, uint32_t len)
{
    struct virtio_vsock *vs = c->vs;
    uint32_t sent = 0;
    if (!c->buf_len) {
        struct msghdr msg = { .msg_iov = vs->iov,
                              .msg_iovlen = virtq_chain_iov(ch, false, HDR_LEN, len, vs->iov) };
        ssize_t n = sendmsg(c->fd, &msg, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n < 0 && errno != EAGAIN && errno != EINTR)
            return -errno;
        sent = n > 0 ? (uint32_t)n : 0;
        conn_forwarded(c, sent);
    }
    uint32_t rest = len - sent;
    if (!rest)
        return 0;
    if (!c->buf && !(c->buf = malloc(VIRTIO_VSOCK_BUF_ALLOC)))
        return -ENOMEM;
    uint32_t tail = (c->buf_head + c->buf_len) % VIRTIO_VSOCK_BUF_ALLOC;
    uint32_t first = VIRTIO_VSOCK_BUF_ALLOC - tail < rest ? VIRTIO_VSOCK_BUF_ALLOC - tail : rest;
    virtq_chain_read(ch, HDR_LEN + sent, c->buf + tail, first);
    virtq_chain_read(ch, HDR_LEN + sent + first, c->buf, rest - first);
    c->buf_len += rest;
    vs->stats.buffered += rest;
    return 0;
}

/* ---- guest to host: the transmit queue ---- */

/* Every field checked before anything is looked up: a bad packet is dropped and counted. */
static bool hdr_valid(const struct virtio_vsock *vs, const struct vsock_hdr *h,
                      const struct virtq_chain *ch)
{
    if (h->src_cid != vs->guest_cid || h->dst_cid != VIRTIO_VSOCK_HOST_CID ||
        h->type != TYPE_STREAM || h->op < OP_REQUEST || h->op > OP_CREDIT_REQUEST)
        return false;
    if (h->len > VIRTIO_VSOCK_MAX_PKT || h->len > ch->readable_len - HDR_LEN)
        return false;
    if (h->op != OP_RW && h->len)
        return false;
    return h->op != OP_SHUTDOWN || (h->flags & ~SHUT_FLAG_BOTH) == 0;
}

/* The guest connects to host port P: the UNIX listener at <path>_<P>, if there is one. */
static void tx_request(struct virtio_vsock *vs, const struct vsock_hdr *h)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    struct vs_conn *c = NULL;
    int fd = -1;
    if (vs->nr_conns < VIRTIO_VSOCK_MAX_CONNS &&
        snprintf(sa.sun_path, sizeof(sa.sun_path), "%s_%u", vs->path, h->dst_port) <
            (int)sizeof(sa.sun_path))
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0)
        c = conn_new(vs, fd, h->dst_port, h->src_port);
    if (!c) {
        if (fd >= 0)
            close(fd);
        vs->stats.conns_refused++;
        rst_queue(vs, h->dst_port, h->src_port);
        return;
    }
    conn_credit_from(c, h);
    c->established = true;
    c->readable = true; /* a first read finds out, then polls */
    c->ctrl |= CTRL_RESPONSE;
}

/* The guest accepted a host program's CONNECT: it hears "OK <host port>". */
static void tx_response(struct vs_conn *c)
{
    char line[24];
    int n = snprintf(line, sizeof(line), "OK %u\n", c->local_port);
    if (!c->host_initiated || c->established || (c->ctrl & CTRL_REQUEST)) {
        conn_kill(c, true); /* not a connection waiting for this */
        return;
    }
    /* A fresh socket's buffer takes a short line whole, or the program is gone. */
    if (send(c->fd, line, (size_t)n, MSG_DONTWAIT | MSG_NOSIGNAL) != n) {
        conn_kill(c, true);
        return;
    }
    c->established = true;
    c->readable = true;
}

static void tx_shutdown(struct vs_conn *c, uint32_t flags)
{
    if (!c->established) {
        conn_kill(c, true);
        return;
    }
    c->peer_shutdown |= (uint8_t)flags;
    conn_drained(c); /* acts now if nothing is buffered, else once it is out */
}

static void tx_rw(struct virtio_vsock *vs, struct vs_conn *c, const struct virtq_chain *ch,
                  uint32_t len)
{
    if (!c->established || (c->peer_shutdown & SHUT_FLAG_SEND)) {
        conn_kill(c, true);
        return;
    }
    if (len > VIRTIO_VSOCK_BUF_ALLOC - c->buf_len ||
        vs->stats.buffered + len > VIRTIO_VSOCK_MAX_BUFFERED) {
        vs->stats.credit_violations++;
        conn_kill(c, true);
        return;
    }
    if (!len)
        return;
    int ret = conn_write(c, ch, len);
    if (ret < 0) {
        conn_kill(c, true); /* the host program is gone */
        return;
    }
    vs->stats.tx_bytes += len;
}

static void tx_handle(struct virtio_vsock *vs, const struct virtq_chain *ch)
{
    struct vsock_hdr h;
    if (ch->readable_len < HDR_LEN || virtq_chain_read(ch, 0, &h, HDR_LEN) != HDR_LEN ||
        !hdr_valid(vs, &h, ch)) {
        if (!vs->stats.bad_packets++)
            log_warn("virtio-vsock: a bad packet from the guest dropped (op %u, cid %llu, len "
                     "%u): the rest are only counted", ch->readable_len >= HDR_LEN ? h.op : 0,
                     ch->readable_len >= HDR_LEN ? (unsigned long long)h.src_cid : 0,
                     ch->readable_len >= HDR_LEN ? h.len : 0);
        return;
    }
    vs->stats.tx_packets++;
    struct vs_conn *c = conn_find(vs, h.dst_port, h.src_port);
    if (h.op == OP_REQUEST) {
        if (c)
            conn_kill(c, true); /* a second REQUEST on a live pair: both ends start over */
        else
            tx_request(vs, &h);
        return;
    }
    if (!c) {
        if (h.op != OP_RST)
            rst_queue(vs, h.dst_port, h.src_port);
        return;
    }
    conn_credit_from(c, &h);
    switch (h.op) {
    case OP_RESPONSE: tx_response(c); break;
    case OP_RST: conn_kill(c, false); break;
    case OP_SHUTDOWN: tx_shutdown(c, h.flags); break;
    case OP_RW: tx_rw(vs, c, ch, h.len); break;
    case OP_CREDIT_UPDATE: break; /* the credit above is all of it */
    case OP_CREDIT_REQUEST: c->ctrl |= CTRL_CREDIT; break;
    }
    if (!c->dead)
        conn_watch(c);
}

/* Handles up to VSOCK_BUDGET guest packets; the rest on a later turn. */
static void tx_process(struct virtio_vsock *vs)
{
    struct virtqueue *vq = &vs->vdev->queues[VIRTIO_VSOCK_TXQ];
    bool pushed = false;
    unsigned taken = 0;
    if (!vs->active || vs->quiesced)
        return;
    while (!vs->broken) {
        if (taken++ == VSOCK_BUDGET && vs_defer(vs))
            break;
        int ret = virtq_pop(vq, &vs->tx_chain);
        if (ret == 0)
            break;
        if (ret < 0) {
            vs_break_queue(vs, VIRTIO_VSOCK_TXQ);
            break;
        }
        tx_handle(vs, &vs->tx_chain);
        if (virtq_push(vq, vs->tx_chain.head, 0) < 0) {
            vs_break(vs, "cannot push to the used ring");
            break;
        }
        pushed = true;
    }
    if (pushed)
        virtio_queue_done(vs->vdev, VIRTIO_VSOCK_TXQ);
    rx_pump(vs); /* the answers owed */
}

/* ---- host to guest: the receive queue ---- */

static bool rx_take_chain(struct virtio_vsock *vs)
{
    while (!vs->rx_held && !vs->broken) {
        struct virtqueue *vq = &vs->vdev->queues[VIRTIO_VSOCK_RXQ];
        int ret = virtq_pop(vq, &vs->rx_chain);
        if (ret == 0)
            return false;
        if (ret < 0) {
            vs_break_queue(vs, VIRTIO_VSOCK_RXQ);
            return false;
        }
        if (vs->rx_chain.writable_len > HDR_LEN) {
            vs->rx_held = true;
            break;
        }
        /* No room for a header and a byte: handed back unused (Linux gives 4 KiB). */
        vs->stats.bad_packets++;
        if (virtq_push(vq, vs->rx_chain.head, 0) < 0)
            vs_break(vs, "cannot push to the used ring");
    }
    return vs->rx_held;
}

/* Fills in the held chain's header and hands it to the guest with `len` payload bytes. */
static void rx_send(struct virtio_vsock *vs, struct vs_conn *c, uint32_t local_port,
                    uint32_t peer_port, uint16_t op, uint32_t flags, uint32_t len)
{
    struct vsock_hdr h = {
        .src_cid = VIRTIO_VSOCK_HOST_CID, .dst_cid = vs->guest_cid, .src_port = local_port,
        .dst_port = peer_port, .len = len, .type = TYPE_STREAM, .op = op, .flags = flags,
        .buf_alloc = VIRTIO_VSOCK_BUF_ALLOC, .fwd_cnt = c ? c->fwd_cnt : 0,
    };
    if (c) {
        c->fwd_sent = c->fwd_cnt;
        c->ctrl &= (uint8_t)~CTRL_CREDIT; /* this header carries it */
    }
    virtq_chain_write(&vs->rx_chain, 0, &h, HDR_LEN);
    vs->rx_held = false;
    if (virtq_push_pending(&vs->vdev->queues[VIRTIO_VSOCK_RXQ], vs->rx_chain.head,
                           HDR_LEN + len) < 0)
        vs_break(vs, "cannot push to the used ring");
    vs->stats.rx_packets++;
    vs->stats.rx_bytes += len;
}

static bool conn_can_read(const struct vs_conn *c)
{
    return c->established && c->readable && !c->host_eof && !(c->peer_shutdown & SHUT_FLAG_RCV) &&
           peer_credit(c) > 0;
}

static bool conn_has_rx_work(const struct virtio_vsock *vs, const struct vs_conn *c)
{
    return c && !c->dead && c->generation == vs->generation && (c->ctrl || conn_can_read(c));
}

/* The next connection with something for the guest, in turn, so none starves the others. */
static struct vs_conn *rx_next_conn(struct virtio_vsock *vs)
{
    for (unsigned i = 0; i < VIRTIO_VSOCK_MAX_CONNS; i++) {
        unsigned slot = (vs->rr + i) % VIRTIO_VSOCK_MAX_CONNS;
        if (conn_has_rx_work(vs, vs->conns[slot])) {
            vs->rr = slot + 1;
            return vs->conns[slot];
        }
    }
    return NULL;
}

/* The host program closed its end: the guest hears that it sends no more, and that it reads
 * no more when the socket is gone altogether (POLLHUP), not just shut for writing. */
static void conn_host_eof(struct vs_conn *c)
{
    struct pollfd p = { .fd = c->fd };
    c->host_eof = true;
    c->shutdown_flags = SHUT_FLAG_SEND;
    if (poll(&p, 1, 0) == 1 && (p.revents & POLLHUP))
        c->shutdown_flags |= SHUT_FLAG_RCV;
    c->ctrl |= CTRL_SHUTDOWN;
}

/* One read from the host socket straight into the held chain, within the guest's credit. */
static void rx_data(struct virtio_vsock *vs, struct vs_conn *c)
{
    uint32_t room = vs->rx_chain.writable_len - HDR_LEN, credit = peer_credit(c);
    uint32_t max = room < credit ? room : credit;
    if (max > VIRTIO_VSOCK_MAX_PKT)
        max = VIRTIO_VSOCK_MAX_PKT;
    struct msghdr msg = { .msg_iov = vs->iov,
                          .msg_iovlen = virtq_chain_iov(&vs->rx_chain, true, HDR_LEN, max, vs->iov) };
    ssize_t n = recvmsg(c->fd, &msg, MSG_DONTWAIT); /* max > 0: room and credit */
    if (n > 0) {
        c->tx_cnt += (uint32_t)n;
        rx_send(vs, c, c->local_port, c->peer_port, OP_RW, 0, (uint32_t)n);
    } else if (n == 0) {
        conn_host_eof(c);
    } else if (errno == EAGAIN || errno == EINTR) {
        c->readable = false;
    } else {
        conn_kill(c, true);
        return;
    }
    conn_watch(c);
}

static void rx_serve(struct virtio_vsock *vs, struct vs_conn *c)
{
    uint32_t lp = c->local_port, pp = c->peer_port;
    if (c->ctrl & CTRL_REQUEST) {
        c->ctrl &= (uint8_t)~CTRL_REQUEST;
        rx_send(vs, c, lp, pp, OP_REQUEST, 0, 0);
    } else if (c->ctrl & CTRL_RESPONSE) {
        c->ctrl &= (uint8_t)~CTRL_RESPONSE;
        rx_send(vs, c, lp, pp, OP_RESPONSE, 0, 0);
    } else if (conn_can_read(c)) {
        rx_data(vs, c);
    } else if (c->ctrl & CTRL_SHUTDOWN) {
        c->ctrl &= (uint8_t)~CTRL_SHUTDOWN;
        rx_send(vs, c, lp, pp, OP_SHUTDOWN, c->shutdown_flags, 0);
    } else if (c->ctrl & CTRL_CREDIT) {
        rx_send(vs, c, lp, pp, OP_CREDIT_UPDATE, 0, 0);
    }
}

static bool rx_has_work(struct virtio_vsock *vs)
{
    if (vs->nr_rst)
        return true;
    for (unsigned i = 0; i < VIRTIO_VSOCK_MAX_CONNS; i++)
        if (conn_has_rx_work(vs, vs->conns[i]))
            return true;
    return false;
}

/* Moves up to VSOCK_BUDGET packets to the guest: owed resets first, then the connections in
 * turn. A chain popped for a read that found nothing is kept for the next packet. */
static void rx_pump(struct virtio_vsock *vs)
{
    struct virtqueue *vq = &vs->vdev->queues[VIRTIO_VSOCK_RXQ];
    uint16_t used_before = vq->used_idx + vq->used_pending;
    unsigned turns = 0;
    if (!vs->active || vs->quiesced)
        return;
    while (!vs->broken && rx_has_work(vs)) {
        if (turns++ == VSOCK_BUDGET && vs_defer(vs))
            break;
        if (!rx_take_chain(vs))
            break;
        if (vs->nr_rst) {
            struct vs_rst r = vs->rst[vs->rst_head];
            vs->rst_head = (vs->rst_head + 1) % VSOCK_RST_QUEUE;
            vs->nr_rst--;
            rx_send(vs, NULL, r.local_port, r.peer_port, OP_RST, 0, 0);
            continue;
        }
        struct vs_conn *c = rx_next_conn(vs);
        if (!c)
            break;
        rx_serve(vs, c);
    }
    if ((uint16_t)(vq->used_idx + vq->used_pending) != used_before) {
        virtq_publish(vq);
        virtio_queue_done(vs->vdev, VIRTIO_VSOCK_RXQ);
    }
}

/* ---- host sockets' readiness ---- */

static bool conn_in_done(struct event_loop *loop, void *opaque, int res)
{
    struct vs_conn *c = opaque;
    struct virtio_vsock *vs = c->vs;
    (void)loop;
    virtio_lock(vs->vdev);
    c->in_armed = false;
    if (!c->dead && res >= 0) {
        c->readable = true;
        rx_pump(vs);
        conn_watch(c); /* when the pump did not get to it */
    } /* cancelled by quiesce: resume watches again */
    vs_reap(vs);
    virtio_unlock(vs->vdev);
    return false;
}

static bool conn_out_done(struct event_loop *loop, void *opaque, int res)
{
    struct vs_conn *c = opaque;
    struct virtio_vsock *vs = c->vs;
    (void)loop;
    virtio_lock(vs->vdev);
    c->out_armed = false;
    if (!c->dead && res >= 0) {
        if (conn_flush(c) < 0) {
            conn_kill(c, true);
        } else {
            conn_drained(c);
            if (!c->dead)
                conn_watch(c);
            rx_pump(vs); /* a credit update may be owed */
        }
    }
    vs_reap(vs);
    virtio_unlock(vs->vdev);
    return false;
}

/* ---- host programs: the listening socket and their CONNECT lines ---- */

static bool pending_done(struct event_loop *loop, void *opaque, int res);
static bool listen_done(struct event_loop *loop, void *opaque, int res);

static bool arm_fd(struct virtio_vsock *vs, struct loop_watch *w, bool *armed, int fd,
                   loop_callback fn, void *opaque)
{
    struct io_uring_sqe *sqe = loop_owner_prepare(vs->loop, &vs->io, w, fn, opaque);
    if (!sqe)
        return false;
    io_uring_prep_poll_add(sqe, fd, POLLIN);
    *armed = true;
    return true;
}

static void pending_close(struct vs_pending *p)
{
    if (p->armed) {
        p->dead = true;
        shutdown(p->fd, SHUT_RDWR); /* its poll comes back and closes it */
        return;
    }
    close(p->fd);
    p->fd = -1;
    p->dead = false;
}

static void pending_watch(struct vs_pending *p)
{
    struct virtio_vsock *vs = p->vs;
    if (p->fd >= 0 && !p->armed && !p->dead && !vs->quiesced && !vs->destroying &&
        !arm_fd(vs, &p->w, &p->armed, p->fd, pending_done, p))
        pending_close(p); /* no SQE: the program tries again */
}

/* "CONNECT <port>\n", the port in decimal without sign or leading spaces. */
static bool parse_connect(const char *line, unsigned len, uint32_t *port)
{
    static const char prefix[] = "CONNECT ";
    uint64_t v = 0;
    unsigned i = sizeof(prefix) - 1, digits = 0;
    if (len < sizeof(prefix) + 1 || memcmp(line, prefix, sizeof(prefix) - 1) != 0 ||
        line[len - 1] != '\n')
        return false;
    for (; i < len - 1; i++, digits++) {
        if (line[i] < '0' || line[i] > '9' || digits == 10)
            return false;
        v = v * 10 + (uint64_t)(line[i] - '0');
    }
    if (!digits || v > UINT32_MAX)
        return false;
    *port = (uint32_t)v;
    return true;
}

/* A whole CONNECT line: the connection is made and its REQUEST goes to the guest. */
static void pending_connect(struct vs_pending *p)
{
    struct virtio_vsock *vs = p->vs;
    uint32_t port, local;
    struct vs_conn *c = NULL;
    if (parse_connect(p->line, p->len, &port)) {
        do
            local = vs->next_port++;
        while (local < VSOCK_FIRST_HOST_PORT || local_port_used(vs, local));
        c = conn_new(vs, p->fd, local, port);
    }
    if (!c) {
        vs->stats.conns_refused++;
        pending_close(p);
        return;
    }
    c->host_initiated = true;
    c->ctrl = CTRL_REQUEST;
    p->fd = -1;
    rx_pump(vs);
}

/*
 * Reads the CONNECT line up to its newline and not a byte further: what the program sends
 * after it is the stream's. A program that closes or breaks the rules is closed here.
 */
static void pending_read(struct vs_pending *p)
{
    char peek[VSOCK_LINE_MAX];
    ssize_t n = recv(p->fd, peek, VSOCK_LINE_MAX - p->len, MSG_PEEK | MSG_DONTWAIT);
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
        pending_watch(p);
        return;
    }
    if (n <= 0) {
        pending_close(p);
        return;
    }
    char *nl = memchr(peek, '\n', (size_t)n);
    size_t take = nl ? (size_t)(nl - peek) + 1 : (size_t)n;
    if (recv(p->fd, p->line + p->len, take, MSG_DONTWAIT) != (ssize_t)take) {
        pending_close(p);
        return;
    }
    p->len += (unsigned)take;
    if (nl)
        pending_connect(p);
    else if (p->len == VSOCK_LINE_MAX) {
        p->vs->stats.conns_refused++;
        pending_close(p);
    } else
        pending_watch(p);
}

static bool pending_done(struct event_loop *loop, void *opaque, int res)
{
    struct vs_pending *p = opaque;
    struct virtio_vsock *vs = p->vs;
    (void)loop;
    virtio_lock(vs->vdev);
    p->armed = false;
    if (p->dead)
        pending_close(p);
    else if (res >= 0)
        pending_read(p);
    vs_reap(vs);
    virtio_unlock(vs->vdev);
    return false;
}

static void listen_watch(struct virtio_vsock *vs)
{
    if (!vs->listen_armed && !vs->quiesced && !vs->destroying &&
        !arm_fd(vs, &vs->listen_w, &vs->listen_armed, vs->listen_fd, listen_done, vs))
        log_warn("virtio-vsock: cannot watch %s: no more host connections", vs->path);
}

static uint64_t monotonic_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static bool sweep_done(struct event_loop *loop, void *opaque, int res);

/* While host programs are writing their CONNECT lines, a timer looks at them once a second. */
static void sweep_arm(struct virtio_vsock *vs)
{
    if (vs->sweep_armed || vs->quiesced || vs->destroying)
        return;
    struct io_uring_sqe *sqe = loop_owner_prepare(vs->loop, &vs->io, &vs->sweep_w, sweep_done, vs);
    if (!sqe)
        return; /* the ring is full: the next accepted program arms it */
    vs->sweep_w.ts = (struct __kernel_timespec){ .tv_sec = 1 };
    io_uring_prep_timeout(sqe, &vs->sweep_w.ts, 0, 0);
    vs->sweep_armed = true;
}

/* Closes the programs whose CONNECT line is late; true while some are still writing theirs. */
static bool sweep_pending(struct virtio_vsock *vs)
{
    uint64_t now = monotonic_ms();
    bool waiting = false;
    for (unsigned i = 0; i < VIRTIO_VSOCK_MAX_PENDING; i++) {
        struct vs_pending *p = &vs->pending[i];
        if (p->fd < 0 || p->dead)
            continue;
        if (now >= p->deadline_ms) {
            vs->stats.conns_refused++;
            pending_close(p);
        } else
            waiting = true;
    }
    return waiting;
}

static bool sweep_done(struct event_loop *loop, void *opaque, int res)
{
    struct virtio_vsock *vs = opaque;
    (void)loop;
    virtio_lock(vs->vdev);
    vs->sweep_armed = false;
    if (res != -ECANCELED && sweep_pending(vs))
        sweep_arm(vs);
    vs_reap(vs);
    virtio_unlock(vs->vdev);
    return false;
}

static void accept_one(struct virtio_vsock *vs, int fd)
{
    for (unsigned i = 0; i < VIRTIO_VSOCK_MAX_PENDING; i++) {
        struct vs_pending *p = &vs->pending[i];
        if (p->fd >= 0)
            continue;
        *p = (struct vs_pending){ .vs = vs, .fd = fd,
                                  .deadline_ms = monotonic_ms() + vs->connect_timeout_ms };
        pending_read(p); /* the line may be there already */
        if (p->fd >= 0)
            sweep_arm(vs);
        return;
    }
    vs->stats.conns_refused++;
    close(fd);
}

static bool listen_done(struct event_loop *loop, void *opaque, int res)
{
    struct virtio_vsock *vs = opaque;
    (void)loop;
    virtio_lock(vs->vdev);
    vs->listen_armed = false;
    if (res >= 0) {
        for (unsigned i = 0; i < VSOCK_ACCEPT_BATCH; i++) {
            int fd = accept4(vs->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
            if (fd < 0)
                break;
            accept_one(vs, fd);
        }
        listen_watch(vs);
    }
    virtio_unlock(vs->vdev);
    return false;
}

/* ---- the event queue ---- */

/* The TRANSPORT_RESET owed after a state load: the guest drops its connections, which did
 * not come along, and reads its CID again. */
static void event_flush(struct virtio_vsock *vs)
{
    struct virtqueue *vq = &vs->vdev->queues[VIRTIO_VSOCK_EVENTQ];
    while (vs->event_pending && vs->active && !vs->quiesced && !vs->broken) {
        int ret = virtq_pop(vq, &vs->tx_chain);
        if (ret == 0)
            return;
        if (ret < 0) {
            vs_break_queue(vs, VIRTIO_VSOCK_EVENTQ);
            return;
        }
        uint32_t id = EVENT_TRANSPORT_RESET, written = 0;
        if (vs->tx_chain.writable_len >= sizeof(id)) {
            written = (uint32_t)virtq_chain_write(&vs->tx_chain, 0, &id, sizeof(id));
            vs->event_pending = false;
        } else {
            vs->stats.bad_packets++;
        }
        if (virtq_push(vq, vs->tx_chain.head, written) < 0)
            vs_break(vs, "cannot push to the used ring");
        virtio_queue_done(vs->vdev, VIRTIO_VSOCK_EVENTQ);
    }
}

/* ---- virtio_device_ops ---- */

static uint64_t vs_features(struct virtio_device *vdev)
{
    (void)vdev;
    return 1ull << VIRTIO_VSOCK_F_STREAM;
}

/* The config space is the guest's CID, le64 (virtio 1.2, 5.10.4). */
static void vs_read_config(struct virtio_device *vdev, uint32_t offset, void *data, uint32_t len)
{
    const struct virtio_vsock *vs = vdev->model;
    uint8_t cfg[8];
    memcpy(cfg, &vs->guest_cid, sizeof(cfg));
    memset(data, 0, len);
    if (offset < sizeof(cfg))
        memcpy(data, cfg + offset, len < sizeof(cfg) - offset ? len : sizeof(cfg) - offset);
}

static void vs_write_config(struct virtio_device *vdev, uint32_t offset, const void *data,
                            uint32_t len)
{
    (void)vdev, (void)offset, (void)data, (void)len; /* read-only */
}

static int vs_activate(struct virtio_device *vdev)
{
    struct virtio_vsock *vs = vdev->model;
    vs->broken = false;
    vs->active = true;
    return 0;
}

static void vs_queue_notify(struct virtio_device *vdev, unsigned queue)
{
    struct virtio_vsock *vs = vdev->model;
    if (queue == VIRTIO_VSOCK_RXQ)
        rx_pump(vs);
    else if (queue == VIRTIO_VSOCK_TXQ)
        tx_process(vs);
    else if (queue == VIRTIO_VSOCK_EVENTQ)
        event_flush(vs);
    vs_reap(vs);
}

/*
 * On the loop's thread after a reset: the connections the guest knew are closed without a
 * word to it (it forgot them). A host program whose REQUEST was not sent yet waits for the
 * next driver instead.
 */
static void vs_reset_conns(void *opaque)
{
    struct virtio_vsock *vs = opaque;
    virtio_lock(vs->vdev);
    for (unsigned i = 0; i < VIRTIO_VSOCK_MAX_CONNS; i++) {
        struct vs_conn *c = vs->conns[i];
        if (!c || c->dead || c->generation == vs->generation)
            continue;
        if (c->host_initiated && (c->ctrl & CTRL_REQUEST))
            c->generation = vs->generation;
        else
            conn_kill(c, false);
    }
    rx_pump(vs);
    vs_reap(vs);
    virtio_unlock(vs->vdev);
}

/* From a vCPU thread: nothing of the device is in flight in guest memory (every access is
 * made under the lock), so the queues just go; the sockets go on the loop's thread. */
static void vs_reset(struct virtio_device *vdev)
{
    struct virtio_vsock *vs = vdev->model;
    vs->generation++;
    vs->active = false;
    vs->broken = false;
    vs->rx_held = false;
    vs->event_pending = false;
    vs->nr_rst = 0;
    for (unsigned q = 0; q < 3; q++)
        virtq_reset(&vdev->queues[q]);
    loop_post(vs->loop, &vs->reset_call, vs_reset_conns, vs);
}

/* Polls cancelled and taken; a receive chain popped and not used goes back to the driver. */
static int vs_quiesce(struct virtio_device *vdev)
{
    struct virtio_vsock *vs = vdev->model;
    vs->quiesced = true;
    int ret = loop_owner_cancel(vs->loop, &vs->io);
    if (ret == 0)
        ret = loop_owner_drain(vs->loop, &vs->io);
    if (ret < 0) {
        log_error("virtio-vsock: cannot stop its I/O: %s", strerror(-ret));
        vs->quiesced = false;
        return ret;
    }
    if (vs->rx_held) {
        struct virtqueue *vq = &vdev->queues[VIRTIO_VSOCK_RXQ];
        vq->last_avail_idx--;
        vs->rx_held = false;
    }
    return 0;
}

static void vs_resume(struct virtio_device *vdev)
{
    struct virtio_vsock *vs = vdev->model;
    vs->quiesced = false;
    listen_watch(vs);
    for (unsigned i = 0; i < VIRTIO_VSOCK_MAX_PENDING; i++)
        pending_watch(&vs->pending[i]);
    if (sweep_pending(vs))
        sweep_arm(vs);
    for (unsigned i = 0; i < VIRTIO_VSOCK_MAX_CONNS; i++) {
        struct vs_conn *c = vs->conns[i];
        if (!c)
            continue;
        if (c->dead)
            continue;
        c->readable = c->established; /* a read finds out what came meanwhile */
        conn_watch(c);
    }
    tx_process(vs);
    rx_pump(vs);
    event_flush(vs);
    vs_reap(vs);
}

/* Connections do not survive a snapshot (as with Firecracker): the CID is checked, and the
 * guest is told to drop them. */
static void vs_save(struct virtio_device *vdev, struct state_writer *w)
{
    const struct virtio_vsock *vs = vdev->model;
    sw_u64(w, vs->guest_cid);
}

static int vs_load(struct virtio_device *vdev, struct state_cursor *c, uint32_t version)
{
    struct virtio_vsock *vs = vdev->model;
    (void)version; /* only version 1 so far */
    uint64_t cid = sc_u64(c);
    if (c->overrun)
        return sc_finish(c);
    if (cid != vs->guest_cid)
        return sc_reject(c, "guest CID %llu, and this device has %llu", (unsigned long long)cid,
                         (unsigned long long)vs->guest_cid);
    vs->event_pending = true;
    return 0;
}

static const struct virtio_device_ops vs_ops = {
    .name = "virtio-vsock",
    .device_id = VIRTIO_ID_VSOCK,
    .nr_queues = 3,
    .queue_max_size = VSOCK_QUEUE_SIZE,
    .config_size = 8,
    .features = vs_features,
    .read_config = vs_read_config,
    .write_config = vs_write_config,
    .activate = vs_activate,
    .queue_notify = vs_queue_notify,
    .reset = vs_reset,
    .quiesce = vs_quiesce,
    .resume = vs_resume,
    .state_version = VSOCK_STATE_VERSION,
    .save = vs_save,
    .load = vs_load,
};

/* ---- the public interface ---- */

int virtio_vsock_create(struct virtio_vsock **out, const struct virtio_vsock_config *cfg,
                        struct event_loop *loop, const struct guest_memory *gm,
                        struct virtio_device *vdev)
{
    /* Room for "_4294967295" after the path. */
    if (!cfg || !loop || !cfg->path || cfg->guest_cid < VIRTIO_VSOCK_MIN_GUEST_CID ||
        cfg->guest_cid >= UINT32_MAX ||
        strlen(cfg->path) + 11 >= sizeof(((struct sockaddr_un *)0)->sun_path))
        return -EINVAL;
    struct virtio_vsock *vs = calloc(1, sizeof(*vs));
    if (!vs || !(vs->path = strdup(cfg->path))) {
        free(vs);
        return -ENOMEM;
    }
    vs->listen_fd = cfg->use_listen_fd ? unix_socket_adopt(cfg->listen_fd, cfg->path, &vs->bound)
                                       : unix_socket_listen(cfg->path, 64, &vs->bound);
    if (vs->listen_fd < 0) {
        int ret = vs->listen_fd;
        free(vs->path);
        free(vs);
        return ret;
    }
    vs->owns_path = !cfg->use_listen_fd;
    vs->vdev = vdev;
    vs->loop = loop;
    vs->guest_cid = cfg->guest_cid;
    vs->connect_timeout_ms = cfg->connect_timeout_ms ? cfg->connect_timeout_ms
                                                     : VIRTIO_VSOCK_CONNECT_TIMEOUT_MS;
    vs->next_port = VSOCK_FIRST_HOST_PORT;
    for (unsigned i = 0; i < VIRTIO_VSOCK_MAX_PENDING; i++)
        vs->pending[i] = (struct vs_pending){ .vs = vs, .fd = -1 };
    loop_owner_init(&vs->io);
    vdev->ops = &vs_ops;
    vdev->model = vs;
    vdev->gm = gm;
    listen_watch(vs);
    *out = vs;
    return 0;
}

void virtio_vsock_destroy(struct virtio_vsock *vs)
{
    if (!vs)
        return;
    virtio_lock(vs->vdev);
    vs->active = false;
    vs->destroying = true;
    loop_cancel_post(vs->loop, &vs->reset_call);
    for (unsigned i = 0; i < VIRTIO_VSOCK_MAX_CONNS; i++)
        if (vs->conns[i])
            conn_kill(vs->conns[i], false);
    for (unsigned i = 0; i < VIRTIO_VSOCK_MAX_PENDING; i++)
        if (vs->pending[i].fd >= 0)
            pending_close(&vs->pending[i]);
    virtio_unlock(vs->vdev);
    if (loop_owner_cancel(vs->loop, &vs->io) < 0 || loop_owner_drain(vs->loop, &vs->io) < 0) {
        log_error("virtio-vsock: I/O still in flight, the device is leaked");
        return;
    }
    vs_reap(vs);
    /* Host programs accepted by a poll that completed during the drain. */
    for (unsigned i = 0; i < VIRTIO_VSOCK_MAX_PENDING; i++)
        if (vs->pending[i].fd >= 0)
            close(vs->pending[i].fd);
    close(vs->listen_fd);
    if (vs->owns_path)
        unix_socket_unlink(vs->path, &vs->bound);
    loop_owner_destroy(&vs->io);
    free(vs->path);
    free(vs);
}

void virtio_vsock_own_path(struct virtio_vsock *vs, bool own)
{
    vs->owns_path = own && vs->bound.st_ino;
}

int virtio_vsock_listen_fd(const struct virtio_vsock *vs)
{
    return vs->listen_fd;
}

void virtio_vsock_counters(struct virtio_vsock *vs, struct virtio_vsock_counters *out)
{
    virtio_lock(vs->vdev);
    *out = vs->stats;
    out->conns = vs->nr_conns;
    virtio_unlock(vs->vdev);
}
