/* console.c: virtio-console, one port: guest output out and host input in, through io_uring. */
#define _GNU_SOURCE
#include "virtio/console.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <termios.h>
#include <unistd.h>

#include "io/unix_socket.h"
#include "log.h"
#include "migration/state.h"

/* Device feature bits (virtio 1.2, 5.3.3); MULTIPORT and EMERG_WRITE are not offered. */
#define VIRTIO_CONSOLE_F_SIZE 0

#define CON_QUEUE_SIZE 256
/* One read from in_fd: a burst of pasted text, a few guest receive buffers' worth. */
#define CON_RX_BUF VIRTIO_CONSOLE_PENDING_MAX
#define CON_LISTEN_BACKLOG 4
/* Chains one call of a queue's handler takes before it lets the loop serve others. */
#define CON_BUDGET 64u
#define CON_STATE_VERSION 1u

/* The guest-visible config space (virtio 1.2, 5.3.4), little-endian like the host. */
struct con_config_space {
    uint16_t cols;
    uint16_t rows;
    uint32_t max_nr_ports;
    uint32_t emerg_wr;
} __attribute__((packed));
_Static_assert(sizeof(struct con_config_space) == 12, "virtio-console config layout");

enum con_op_kind { OP_TX, OP_RX, OP_ACCEPT };

/*
 * One io_uring operation of the device: a write of one transmit chain, a read from in_fd, or
 * a poll of the listening socket. Its memory (iovecs, buffer, watch) is the kernel's until
 * its completion, which frees it; con->io counts it until then.
 */
struct con_op {
    struct virtio_console *con;
    enum con_op_kind kind;
    struct loop_watch io;       /* the operation itself */
    bool polling;               /* waiting for readiness: the fd is non-blocking */
    uint64_t generation;        /* tx: con->generation at pop; a reset since drops the push */
    uint64_t fd_epoch;          /* con->fd_epoch at start; a change means another client */
    uint16_t head;              /* tx: the chain to push */
    uint32_t written;           /* tx: bytes of the chain written so far */
    unsigned iov_first, iov_cnt;
    struct msghdr msg;          /* tx to a socket: sendmsg, for MSG_NOSIGNAL */
    uint8_t *buf;               /* rx: the trailing storage */
    struct iovec iov[];         /* tx: the chain's readable bytes; rx: CON_RX_BUF bytes */
};

struct virtio_console {
    struct virtio_device *vdev;
    struct event_loop *loop;
    int in_fd, out_fd;
    bool out_is_socket;
    bool out_is_file;  /* a regular file: what is written to it is capped at out_max */
    bool logged_out_cap;
    uint64_t out_max;  /* cap for a file; 0 after create: VIRTIO_CONSOLE_FILE_MAX */
    uint64_t out_written, out_dropped; /* bytes of guest output written, and dropped */
    bool out_failed;   /* a write failed for good: output is dropped until the fds change */
    bool input_ended;  /* in_fd reached its end: no more reads */
    bool broken;       /* the guest broke a ring rule: nothing more until reset */
    bool offer_size;
    bool size_announced; /* the driver was told the size since the last reset */
    bool size_changed;   /* while quiesced: the config interrupt waits for resume */
    bool logged_out_error;
    bool active;         /* DRIVER_OK, until reset */
    bool quiesced;       /* paused, or going: no chain is popped, no fd is touched */
    struct con_config_space config;

    uint64_t generation; /* bumped by reset */
    uint64_t fd_epoch;   /* bumped when a socket client comes or goes */
    struct loop_owner io;            /* every operation in flight, and the continuation */
    struct loop_watch cont;          /* a handler past its budget, on a later loop turn */
    bool cont_armed;
    struct con_op *tx, *rx, *accept; /* in flight, at most one of each */
    /* A chain handed back by quiesce with part of it written: those bytes are skipped when
     * the chain (head, at avail index) is popped again. */
    uint32_t tx_skip;
    uint16_t tx_skip_head, tx_skip_idx;
    int listen_fd, client_fd;        /* owned: the socket backend */

    uint8_t pending[CON_RX_BUF]; /* read from in_fd, not yet taken by the guest */
    size_t pending_off, pending_len;
    struct virtq_chain chain; /* scratch for virtq_pop: too big for the stack */
};

/* ---- operations ---- */

static struct con_op *op_new(struct virtio_console *con, enum con_op_kind kind, size_t extra)
{
    struct con_op *op = calloc(1, sizeof(*op) + extra);
    if (!op)
        return NULL;
    op->con = con;
    op->kind = kind;
    op->fd_epoch = con->fd_epoch;
    op->buf = (uint8_t *)op->iov;
    return op;
}

static bool op_complete(struct event_loop *loop, void *opaque, int res);

/* An SQE whose completion comes back to op_complete(); NULL when the ring is full. */
static struct io_uring_sqe *op_sqe(struct con_op *op)
{
    return loop_owner_prepare(op->con->loop, &op->con->io, &op->io, op_complete, op);
}

static void con_break(struct virtio_console *con, const char *why)
{
    if (con->broken)
        return;
    con->broken = true;
    log_warn("virtio-console: %s", why);
    if (con->vdev->needs_reset)
        con->vdev->needs_reset(con->vdev, why);
}

static void con_break_queue(struct virtio_console *con, unsigned q)
{
    const char *why = con->vdev->queues[q].broken_reason;
    con_break(con, why ? why : "broken virtqueue");
}

/* ---- budgets ---- */

static void tx_kick(struct virtio_console *con);
static bool rx_flush_pending(struct virtio_console *con);
static void rx_maybe_read(struct virtio_console *con);

static bool con_cont_run(struct event_loop *loop, void *opaque, int res)
{
    struct virtio_console *con = opaque;
    (void)loop, (void)res;
    virtio_lock(con->vdev);
    con->cont_armed = false;
    if (con->active && !con->quiesced) { /* else reset or paused meanwhile */
        if (rx_flush_pending(con))
            rx_maybe_read(con);
        tx_kick(con);
    }
    virtio_unlock(con->vdev);
    return false;
}

/* A handler spent its budget: a no-op through the ring brings both queues' handlers back on a
 * later turn, after the completions ready now. False when no SQE is free: the caller goes on. */
static bool con_defer(struct virtio_console *con)
{
    return loop_owner_defer(con->loop, &con->io, &con->cont, &con->cont_armed, con_cont_run, con);
}

/* ---- guest output: the transmit queue ---- */

static unsigned chain_readable_iov(const struct virtq_chain *c, struct iovec *iov)
{
    unsigned n = 0;
    for (unsigned i = 0; i < c->nr_segs; i++)
        if (!c->segs[i].device_writes)
            iov[n++] = (struct iovec){ .iov_base = c->segs[i].host, .iov_len = c->segs[i].len };
    return n;
}

/* Queues the op's next step: the write of what remains, or a wait for room. */
static bool tx_submit(struct virtio_console *con, struct con_op *op, bool poll_first)
{
    struct io_uring_sqe *sqe = op_sqe(op);
    if (!sqe)
        return false;
    op->polling = poll_first;
    struct iovec *iov = &op->iov[op->iov_first];
    unsigned cnt = op->iov_cnt - op->iov_first;
    if (poll_first) {
        io_uring_prep_poll_add(sqe, con->out_fd, POLLOUT);
    } else if (con->out_is_socket) {
        /* A plain write to a socket whose peer left raises SIGPIPE. */
        op->msg = (struct msghdr){ .msg_iov = iov, .msg_iovlen = cnt };
        io_uring_prep_sendmsg(sqe, con->out_fd, &op->msg, MSG_NOSIGNAL);
    } else {
        io_uring_prep_writev(sqe, con->out_fd, iov, cnt, (uint64_t)-1); /* file position */
    }
    return true;
}

static void iov_advance(struct con_op *op, size_t n)
{
    while (n && op->iov_first < op->iov_cnt) {
        struct iovec *v = &op->iov[op->iov_first];
        size_t step = n < v->iov_len ? n : v->iov_len;
        v->iov_base = (uint8_t *)v->iov_base + step;
        v->iov_len -= step;
        n -= step;
        if (!v->iov_len)
            op->iov_first++;
    }
}

/* The chain quiesce handed back with part of it written, popped again: skip that part. */
static void tx_skip_written(struct virtio_console *con, struct con_op *op)
{
    uint16_t idx = (uint16_t)(con->vdev->queues[VIRTIO_CONSOLE_TRANSMITQ].last_avail_idx - 1);
    if (con->tx_skip && idx == con->tx_skip_idx && op->head == con->tx_skip_head) {
        iov_advance(op, con->tx_skip);
        op->written = con->tx_skip;
    }
    con->tx_skip = 0;
}

/* Cuts the op's iovecs to what the output file may still take; counts the rest dropped. */
static void tx_cap(struct virtio_console *con, struct con_op *op)
{
    uint64_t room = con->out_max - con->out_written, kept = 0, dropped = 0;
    if (!con->out_is_file)
        return;
    for (unsigned i = op->iov_first; i < op->iov_cnt; i++) {
        size_t keep = room - kept < op->iov[i].iov_len ? room - kept : op->iov[i].iov_len;
        dropped += op->iov[i].iov_len - keep;
        op->iov[i].iov_len = keep;
        kept += keep;
    }
    while (op->iov_cnt > op->iov_first && !op->iov[op->iov_cnt - 1].iov_len)
        op->iov_cnt--;
    con->out_dropped += dropped;
    if (!dropped || con->logged_out_cap)
        return;
    con->logged_out_cap = true;
    log_warn("virtio-console: the output file reached its cap of %llu bytes: further output is "
             "dropped", (unsigned long long)con->out_max);
}

/* Starts writing a popped chain. False: nothing to write, the caller pushes it at once. */
static bool tx_start(struct virtio_console *con, const struct virtq_chain *c)
{
    if (con->out_fd >= 0 && con->out_failed)
        con->out_dropped += c->readable_len;
    if (con->out_fd < 0 || con->out_failed || c->readable_len == 0)
        return false;
    struct con_op *op = op_new(con, OP_TX, c->nr_segs * sizeof(struct iovec));
    if (!op)
        return false;
    op->generation = con->generation;
    op->head = c->head;
    op->iov_cnt = chain_readable_iov(c, op->iov);
    tx_skip_written(con, op);
    tx_cap(con, op);
    if (op->iov_first == op->iov_cnt) {
        free(op);
        return false; /* all of it was written before */
    }
    if (!tx_submit(con, op, false)) {
        free(op);
        return false; /* the guest must not stall on a full ring: this output is lost */
    }
    con->tx = op;
    return true;
}

static void tx_push(struct virtio_console *con, uint16_t head)
{
    /* The device writes nothing into transmit buffers. */
    if (virtq_push(&con->vdev->queues[VIRTIO_CONSOLE_TRANSMITQ], head, 0) < 0)
        con_break(con, "cannot push to the used ring");
}

/* Writes chains one at a time, so that output keeps its order; dropped ones go back at once,
 * CON_BUDGET of them at most per call. */
static void tx_kick(struct virtio_console *con)
{
    struct virtqueue *vq = &con->vdev->queues[VIRTIO_CONSOLE_TRANSMITQ];
    bool pushed = false;
    unsigned taken = 0;

    while (!con->tx && !con->broken && !con->quiesced) {
        if (taken++ == CON_BUDGET && con_defer(con))
            break;
        int ret = virtq_pop(vq, &con->chain);
        if (ret == 0)
            break;
        if (ret < 0) {
            con_break_queue(con, VIRTIO_CONSOLE_TRANSMITQ);
            break;
        }
        if (!tx_start(con, &con->chain)) {
            tx_push(con, con->chain.head);
            pushed = true;
        }
    }
    if (pushed)
        virtio_queue_done(con->vdev, VIRTIO_CONSOLE_TRANSMITQ);
}

/* The chain is written, or its output dropped: give it back, then go on with the next. */
static void tx_finish(struct virtio_console *con, struct con_op *op)
{
    bool current = op->generation == con->generation;
    con->tx = NULL;
    if (current && !con->broken) {
        tx_push(con, op->head);
        virtio_queue_done(con->vdev, VIRTIO_CONSOLE_TRANSMITQ);
    }
    free(op);
    tx_kick(con);
}

static void tx_failed(struct virtio_console *con, int res)
{
    con->out_failed = true;
    if (!con->logged_out_error)
        log_warn("virtio-console: output dropped: %s", strerror(res ? -res : EPIPE));
    con->logged_out_error = true;
}

/* Whether a completion only says "not now": the same step goes again, after a poll for EAGAIN
 * (the fd is non-blocking), or after a poll that found the fd ready. */
static bool op_wants_retry(const struct con_op *op, int res)
{
    return res == -EAGAIN || res == -EINTR || (op->polling && res >= 0);
}

/*
 * Quiesce came before the write finished: the chain goes back to the driver, to be popped and
 * written again at resume. It is the last one popped (one chain at a time is written, and
 * none popped meanwhile), so rewinding the index is enough.
 */
static void tx_hand_back(struct virtio_console *con, struct con_op *op)
{
    struct virtqueue *vq = &con->vdev->queues[VIRTIO_CONSOLE_TRANSMITQ];
    vq->last_avail_idx--;
    con->tx_skip = op->written;
    con->tx_skip_head = op->head;
    con->tx_skip_idx = vq->last_avail_idx;
    con->tx = NULL;
    free(op);
}

static void tx_complete(struct virtio_console *con, struct con_op *op, int res)
{
    if (op->generation != con->generation || op->fd_epoch != con->fd_epoch) {
        /* Reset since, or the socket client changed: the rest is not for this reader. */
        tx_finish(con, op);
        return;
    }
    bool wrote = !op->polling && res > 0;
    if (wrote) {
        iov_advance(op, (size_t)res);
        op->written += (uint32_t)res;
        con->out_written += (uint64_t)res;
    }
    if (op->iov_first == op->iov_cnt) {
        tx_finish(con, op);
    } else if (con->quiesced) {
        tx_hand_back(con, op); /* cancelled, or a short write */
    } else if (wrote || op_wants_retry(op, res)) {
        /* The rest of a short write, the same write after a poll for room (EAGAIN: the fd is
         * non-blocking), or after a poll that found room. */
        if (!tx_submit(con, op, res == -EAGAIN))
            tx_finish(con, op); /* the ring is full: the rest is dropped */
    } else {
        tx_failed(con, res);
        tx_finish(con, op);
    }
}

/* ---- host input: the receive queue ---- */

/* Copies bytes into as many receive buffers as they need, CON_BUDGET of them at most per
 * call; returns how many the guest took. */
static size_t rx_fill(struct virtio_console *con, const uint8_t *buf, size_t len)
{
    struct virtqueue *vq = &con->vdev->queues[VIRTIO_CONSOLE_RECEIVEQ];
    size_t done = 0;
    bool pushed = false;
    unsigned taken = 0;

    while (done < len && !con->broken && !con->quiesced) {
        if (taken++ == CON_BUDGET && con_defer(con))
            break;
        int ret = virtq_pop(vq, &con->chain);
        if (ret == 0)
            break;
        if (ret < 0) {
            con_break_queue(con, VIRTIO_CONSOLE_RECEIVEQ);
            break;
        }
        /* A chain without writable bytes takes none: it goes back empty. */
        size_t n = virtq_chain_write(&con->chain, 0, buf + done, len - done);
        if (virtq_push(vq, con->chain.head, (uint32_t)n) < 0) {
            con_break(con, "cannot push to the used ring");
            break;
        }
        pushed = true;
        done += n;
    }
    if (pushed)
        virtio_queue_done(con->vdev, VIRTIO_CONSOLE_RECEIVEQ);
    return done;
}

/* Hands pending input to the guest; true when none is left. */
static bool rx_flush_pending(struct virtio_console *con)
{
    if (con->pending_off < con->pending_len)
        con->pending_off += rx_fill(con, con->pending + con->pending_off,
                                    con->pending_len - con->pending_off);
    if (con->pending_off < con->pending_len)
        return false;
    con->pending_off = con->pending_len = 0;
    return true;
}

static bool rx_submit(struct virtio_console *con, struct con_op *op, bool poll_first)
{
    struct io_uring_sqe *sqe = op_sqe(op);
    if (!sqe)
        return false;
    op->polling = poll_first;
    if (poll_first)
        io_uring_prep_poll_add(sqe, con->in_fd, POLLIN);
    else
        io_uring_prep_read(sqe, con->in_fd, op->buf, CON_RX_BUF, (uint64_t)-1);
    return true;
}

/* Reads more input, unless the guest has yet to take the last of it. */
static void rx_maybe_read(struct virtio_console *con)
{
    if (con->rx || con->in_fd < 0 || con->input_ended || con->pending_len || con->quiesced)
        return;
    struct con_op *op = op_new(con, OP_RX, CON_RX_BUF);
    if (!op)
        return;
    if (!rx_submit(con, op, false)) {
        free(op); /* the ring is full: the next receive kick tries again */
        return;
    }
    con->rx = op;
}

static void client_detach(struct virtio_console *con);

static void rx_end(struct virtio_console *con, int res)
{
    if (con->client_fd >= 0) {
        client_detach(con);
        return;
    }
    if (res < 0)
        log_warn("virtio-console: input failed: %s", strerror(-res));
    con->input_ended = true; /* the guest keeps running without input */
}

/* Bytes read are held in `pending` until the guest takes them; while quiesced they wait
 * there, and a read cancelled by quiesce is started again at resume. */
static void rx_complete(struct virtio_console *con, struct con_op *op, int res)
{
    bool current = op->fd_epoch == con->fd_epoch; /* else: a client that is gone, dropped */
    bool again = op_wants_retry(op, res) || res == -ECANCELED;

    if (current && again && !con->quiesced && rx_submit(con, op, res == -EAGAIN))
        return;
    con->rx = NULL;
    if (current && res > 0 && !op->polling) {
        memcpy(con->pending, op->buf, (size_t)res);
        con->pending_off = 0;
        con->pending_len = (size_t)res;
    } else if (current && !again) {
        rx_end(con, res);
    }
    free(op);
    rx_flush_pending(con);
    rx_maybe_read(con);
}

/* ---- the socket backend ---- */

static void con_set_fds(struct virtio_console *con, int in_fd, int out_fd)
{
    struct stat st;
    con->in_fd = in_fd;
    con->out_fd = out_fd;
    bool known = out_fd >= 0 && fstat(out_fd, &st) == 0;
    con->out_is_socket = known && S_ISSOCK(st.st_mode);
    con->out_is_file = known && S_ISREG(st.st_mode);
    con->out_failed = false;
    con->logged_out_error = false;
    con->input_ended = false;
    con->fd_epoch++;
}

static void client_detach(struct virtio_console *con)
{
    log_info("virtio-console: client disconnected");
    /* Prepared SQEs name the fd by number: hand them to the kernel before it is closed. */
    loop_submit(con->loop);
    close(con->client_fd);
    con->client_fd = -1;
    con_set_fds(con, -1, -1);
}

/* Serves `fd` as the client, for input and output both. */
static void client_serve(struct virtio_console *con, int fd)
{
    con->client_fd = fd;
    con_set_fds(con, fd, fd);
    rx_maybe_read(con);
}

static void client_attach(struct virtio_console *con, int fd)
{
    log_info("virtio-console: client connected");
    client_serve(con, fd);
}

static bool accept_arm(struct virtio_console *con, struct con_op *op)
{
    struct io_uring_sqe *sqe = op_sqe(op);
    if (!sqe)
        return false;
    io_uring_prep_poll_add(sqe, con->listen_fd, POLLIN);
    return true;
}

/* While quiesced a client waits in the backlog: resume polls again and takes it. */
static void accept_complete(struct virtio_console *con, struct con_op *op, int res)
{
    if (con->quiesced) {
        con->accept = NULL;
        free(op);
        return;
    }
    if (res >= 0) {
        /* Blocking: io_uring then waits for the client itself instead of answering EAGAIN. */
        int fd = accept4(con->listen_fd, NULL, NULL, SOCK_CLOEXEC);
        if (fd >= 0 && con->client_fd >= 0)
            close(fd); /* one client at a time */
        else if (fd >= 0)
            client_attach(con, fd);
        else if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED)
            log_warn("virtio-console: accept: %s", strerror(errno));
    } else {
        log_warn("virtio-console: listening socket failed: %s", strerror(-res));
    }
    if (res >= 0 && accept_arm(con, op))
        return;
    con->accept = NULL;
    free(op);
}

/* ---- completions ---- */

static bool op_complete(struct event_loop *loop, void *opaque, int res)
{
    (void)loop;
    struct con_op *op = opaque;
    struct virtio_console *con = op->con;
    struct virtio_device *vdev = con->vdev;
    virtio_lock(vdev);
    switch (op->kind) {
    case OP_TX:
        tx_complete(con, op, res);
        break;
    case OP_RX:
        rx_complete(con, op, res);
        break;
    case OP_ACCEPT:
        accept_complete(con, op, res);
        break;
    }
    virtio_unlock(vdev);
    return false;
}

/* ---- virtio_device_ops ---- */

static uint64_t con_features(struct virtio_device *vdev)
{
    const struct virtio_console *con = vdev->model;
    return con->offer_size ? 1ULL << VIRTIO_CONSOLE_F_SIZE : 0;
}

static void con_read_config(struct virtio_device *vdev, uint32_t offset, void *data, uint32_t len)
{
    const struct virtio_console *con = vdev->model;
    memset(data, 0, len);
    if (offset < sizeof(con->config)) {
        uint32_t n = sizeof(con->config) - offset < len ? sizeof(con->config) - offset : len;
        memcpy(data, (const uint8_t *)&con->config + offset, n);
    }
}

static void con_write_config(struct virtio_device *vdev, uint32_t offset, const void *data,
                             uint32_t len)
{
    (void)vdev, (void)offset, (void)data, (void)len; /* emerg_wr needs EMERG_WRITE: ignored */
}

static int con_activate(struct virtio_device *vdev)
{
    struct virtio_console *con = vdev->model;
    con->broken = false;
    con->active = true; /* size_announced is cleared by reset: a state load keeps it */
    return 0;
}

/*
 * Linux reads a single-port console's size only on a configuration change (its probe leaves
 * the window 0x0), and only once the port exists: by the first transmission the console is
 * registered, so that is when the size is announced. Later sizes come through set_size().
 */
static void con_announce_size(struct virtio_console *con)
{
    struct virtio_device *vdev = con->vdev;
    if (con->size_announced || !virtio_has_feature(vdev, VIRTIO_CONSOLE_F_SIZE))
        return;
    con->size_announced = true;
    if (vdev->interrupt_config)
        vdev->interrupt_config(vdev);
}

/* From the loop's thread: the only place besides completions where the ring is touched. */
static void con_queue_notify(struct virtio_device *vdev, unsigned queue)
{
    struct virtio_console *con = vdev->model;
    if (con->quiesced)
        return; /* resume looks at every queue */
    if (queue == VIRTIO_CONSOLE_RECEIVEQ) {
        if (rx_flush_pending(con))
            rx_maybe_read(con);
    } else if (queue == VIRTIO_CONSOLE_TRANSMITQ) {
        con_announce_size(con);
        tx_kick(con);
    }
}

/*
 * From a vCPU thread, so the io_uring ring is not touched here, and nothing is waited for: a
 * write may wait for ever for a reader (a full pipe, a stopped terminal). A write in flight
 * ends in the kernel and is then freed unpushed, its generation being older; a read goes to
 * the device's own buffer. Input read from the host is not the guest's state: it stays
 * pending for the driver's next receive buffers.
 */
static void con_reset(struct virtio_device *vdev)
{
    struct virtio_console *con = vdev->model;
    con->generation++;
    con->broken = false;
    con->active = false;
    con->size_announced = false;
    con->tx_skip = 0;
    virtq_reset(&vdev->queues[VIRTIO_CONSOLE_RECEIVEQ]);
    virtq_reset(&vdev->queues[VIRTIO_CONSOLE_TRANSMITQ]);
}

/* Cancels every operation and takes their completions: a write not finished hands its chain
 * back, bytes read stay pending, a client waits in the listening socket's backlog. */
static int con_stop_io(struct virtio_console *con)
{
    con->quiesced = true;
    int ret = loop_owner_cancel(con->loop, &con->io);
    return ret < 0 ? ret : loop_owner_drain(con->loop, &con->io);
}

static void accept_restart(struct virtio_console *con)
{
    if (con->listen_fd < 0 || con->accept)
        return;
    struct con_op *op = op_new(con, OP_ACCEPT, 0);
    if (op && accept_arm(con, op)) {
        con->accept = op;
        return;
    }
    free(op);
    log_warn("virtio-console: cannot watch the listening socket again: no more clients");
}

static void con_resume(struct virtio_device *vdev)
{
    struct virtio_console *con = vdev->model;
    con->quiesced = false;
    accept_restart(con);
    if (con->size_changed && (vdev->status & VIRTIO_STATUS_DRIVER_OK) && vdev->interrupt_config)
        vdev->interrupt_config(vdev);
    con->size_changed = false;
    if (!con->active) {
        rx_maybe_read(con);
        return;
    }
    con_queue_notify(vdev, VIRTIO_CONSOLE_RECEIVEQ);
    /* Only output offered meanwhile counts as the guest's transmit kick: an early one would
     * announce the size before Linux has the port to take it. */
    struct virtq_status st;
    virtq_get_status(&vdev->queues[VIRTIO_CONSOLE_TRANSMITQ], &st);
    if (st.enabled && st.avail_idx != st.last_avail_idx)
        con_queue_notify(vdev, VIRTIO_CONSOLE_TRANSMITQ);
}

static int con_quiesce(struct virtio_device *vdev)
{
    struct virtio_console *con = vdev->model;
    int ret = con_stop_io(con);
    if (ret < 0) {
        log_error("virtio-console: cannot stop its I/O: %s", strerror(-ret));
        con_resume(vdev); /* not quiesced: the caller resumes only those that were */
    }
    return ret;
}

/* ---- state ---- */

/* The terminal size the driver was given, and whether it was told (Linux asks only once). */
static void con_save(struct virtio_device *vdev, struct state_writer *w)
{
    const struct virtio_console *con = vdev->model;
    sw_u16(w, con->config.cols);
    sw_u16(w, con->config.rows);
    sw_u8(w, con->size_announced);
}

static int con_load(struct virtio_device *vdev, struct state_cursor *c, uint32_t version)
{
    struct virtio_console *con = vdev->model;
    (void)version; /* only version 1 so far */
    uint16_t cols = sc_u16(c), rows = sc_u16(c);
    uint8_t announced = sc_u8(c);
    if (c->overrun)
        return sc_finish(c);
    if (announced > 1)
        return sc_reject(c, "size announced %u, not 0 or 1", announced);
    if (!con->offer_size && (cols || rows || announced))
        return sc_reject(c, "a terminal size %ux%u, and this console has no terminal", cols,
                         rows);
    if (con->offer_size && (!cols || !rows))
        return sc_reject(c, "an empty terminal size %ux%u", cols, rows);
    con->config.cols = cols;
    con->config.rows = rows;
    con->size_announced = announced;
    return 0;
}

static const struct virtio_device_ops con_ops = {
    .name = "virtio-console",
    .device_id = VIRTIO_ID_CONSOLE,
    .nr_queues = 2,
    .queue_max_size = CON_QUEUE_SIZE,
    .config_size = sizeof(struct con_config_space),
    .features = con_features,
    .read_config = con_read_config,
    .write_config = con_write_config,
    .activate = con_activate,
    .queue_notify = con_queue_notify,
    .reset = con_reset,
    .quiesce = con_quiesce,
    .resume = con_resume,
    .state_version = CON_STATE_VERSION,
    .save = con_save,
    .load = con_load,
};

/* ---- the public interface ---- */

static void con_probe_size(struct virtio_console *con)
{
    struct winsize ws;
    if (con->out_fd < 0 || !isatty(con->out_fd) || ioctl(con->out_fd, TIOCGWINSZ, &ws) < 0 ||
        !ws.ws_col || !ws.ws_row)
        return;
    con->offer_size = true;
    con->config.cols = ws.ws_col;
    con->config.rows = ws.ws_row;
}

int virtio_console_create(struct virtio_console **out, const struct virtio_console_config *cfg,
                          struct event_loop *loop, const struct guest_memory *gm,
                          struct virtio_device *vdev)
{
    if (!cfg || !loop || cfg->in_fd < -1 || cfg->out_fd < -1)
        return -EINVAL;
    struct virtio_console *con = calloc(1, sizeof(*con));
    if (!con)
        return -ENOMEM;
    con->vdev = vdev;
    con->loop = loop;
    con->listen_fd = con->client_fd = -1;
    con->out_max = cfg->out_max ? cfg->out_max : VIRTIO_CONSOLE_FILE_MAX;
    loop_owner_init(&con->io);
    con_set_fds(con, cfg->in_fd, cfg->out_fd);
    con_probe_size(con);
    vdev->ops = &con_ops;
    vdev->model = con;
    vdev->gm = gm;
    /* Up to one buffer of input waits here until the driver offers receive buffers. */
    rx_maybe_read(con);
    *out = con;
    return 0;
}

void virtio_console_destroy(struct virtio_console *con)
{
    if (!con)
        return;
    con->active = false;
    con->generation++; /* a write completing now is not answered */
    if (con_stop_io(con) < 0) {
        /* Their completions would meet a freed device: better leak it. */
        log_error("virtio-console: I/O still in flight, the device is leaked");
        return;
    }
    if (con->client_fd >= 0)
        close(con->client_fd);
    if (con->listen_fd >= 0)
        close(con->listen_fd);
    loop_owner_destroy(&con->io);
    free(con);
}

size_t virtio_console_input(struct virtio_console *con, const uint8_t *buf, size_t len)
{
    size_t taken = 0;
    virtio_lock(con->vdev);
    if (rx_flush_pending(con)) {
        taken = rx_fill(con, buf, len);
        rx_maybe_read(con);
    }
    virtio_unlock(con->vdev);
    return taken;
}

size_t virtio_console_sink(void *opaque, const uint8_t *buf, size_t len)
{
    return virtio_console_input(opaque, buf, len);
}

void virtio_console_set_size(struct virtio_console *con, uint16_t cols, uint16_t rows)
{
    struct virtio_device *vdev = con->vdev;
    virtio_lock(vdev);
    if (con->offer_size && (con->config.cols != cols || con->config.rows != rows)) {
        con->config.cols = cols;
        con->config.rows = rows;
        if (con->quiesced)
            con->size_changed = true; /* the guest hears of it at resume */
        else if ((vdev->status & VIRTIO_STATUS_DRIVER_OK) && vdev->interrupt_config)
            vdev->interrupt_config(vdev);
    }
    virtio_unlock(vdev);
}

/* ---- backends ---- */

int virtio_console_open_socket(const char *path)
{
    return unix_socket_listen(path, CON_LISTEN_BACKLOG, NULL);
}

int virtio_console_open_file(const char *path)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOFOLLOW, 0600);
    return fd < 0 ? -errno : fd;
}

int virtio_console_listen(struct virtio_console *con, int listen_fd)
{
    int ret = 0;
    virtio_lock(con->vdev);
    struct con_op *op = NULL;
    if (listen_fd < 0)
        ret = -EINVAL;
    else if (con->listen_fd >= 0)
        ret = -EBUSY;
    else if (!(op = op_new(con, OP_ACCEPT, 0)))
        ret = -ENOMEM;
    if (ret == 0) {
        con->listen_fd = listen_fd;
        if (accept_arm(con, op)) {
            con->accept = op;
        } else {
            con->listen_fd = -1;
            free(op);
            ret = -EBUSY;
        }
    }
    virtio_unlock(con->vdev);
    if (ret < 0 && listen_fd >= 0)
        close(listen_fd);
    return ret;
}

int virtio_console_listen_fd(struct virtio_console *con)
{
    virtio_lock(con->vdev);
    int fd = con->listen_fd;
    virtio_unlock(con->vdev);
    return fd;
}

int virtio_console_client(struct virtio_console *con, struct virtio_console_client *c)
{
    int ret = 0;
    virtio_lock(con->vdev);
    if (!con->quiesced) {
        ret = -EBUSY;
    } else {
        c->fd = con->client_fd;
        c->pending_len = (uint32_t)(con->pending_len - con->pending_off);
        memcpy(c->pending, con->pending + con->pending_off, c->pending_len);
        c->tx_written = con->tx_skip;
        c->tx_head = con->tx_skip_head;
        c->tx_idx = con->tx_skip_idx;
    }
    virtio_unlock(con->vdev);
    return ret;
}

int virtio_console_adopt_client(struct virtio_console *con, const struct virtio_console_client *c)
{
    int ret = 0;
    if (c->fd < 0 || c->pending_len > CON_RX_BUF) {
        if (c->fd >= 0)
            close(c->fd);
        return -EINVAL;
    }
    virtio_lock(con->vdev);
    if (con->listen_fd < 0 || con->client_fd >= 0 || con->rx) {
        ret = -EBUSY;
        close(c->fd);
    } else {
        /* Before it is served, which reads only once no input is pending. */
        memcpy(con->pending, c->pending, c->pending_len);
        con->pending_off = 0;
        con->pending_len = c->pending_len;
        con->tx_skip = c->tx_written;
        con->tx_skip_head = c->tx_head;
        con->tx_skip_idx = c->tx_idx;
        log_info("virtio-console: the client handed over (%u bytes of its input pending)",
                 c->pending_len);
        client_serve(con, c->fd);
        /* The guest's buffers may all be out already: the pending input, and output offered
         * meanwhile, go on the loop's next turn, as after a spent budget. */
        if (con->active && !con->quiesced)
            con_defer(con);
    }
    virtio_unlock(con->vdev);
    return ret;
}

void virtio_console_counters(struct virtio_console *con, uint64_t *tx_bytes, uint64_t *tx_dropped)
{
    virtio_lock(con->vdev);
    *tx_bytes = con->out_written;
    *tx_dropped = con->out_dropped;
    virtio_unlock(con->vdev);
}
