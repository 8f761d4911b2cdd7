/* blk.c: virtio-blk: guest block requests turned into io_uring reads, writes, fsyncs, fallocates. */
#define _GNU_SOURCE
#include "virtio/blk.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include "clock.h"
#include "log.h"

/* Device feature bits (virtio 1.2, 5.2.3). */
#define VIRTIO_BLK_F_SEG_MAX 2
#define VIRTIO_BLK_F_RO 5
#define VIRTIO_BLK_F_BLK_SIZE 6
#define VIRTIO_BLK_F_FLUSH 9
#define VIRTIO_BLK_F_MQ 12
#define VIRTIO_BLK_F_DISCARD 13
#define VIRTIO_BLK_F_WRITE_ZEROES 14

/* Request types and status values (virtio 1.2, 5.2.6). */
#define VIRTIO_BLK_T_IN 0
#define VIRTIO_BLK_T_OUT 1
#define VIRTIO_BLK_T_FLUSH 4
#define VIRTIO_BLK_T_GET_ID 8
#define VIRTIO_BLK_T_DISCARD 11
#define VIRTIO_BLK_T_WRITE_ZEROES 13
#define VIRTIO_BLK_S_OK 0
#define VIRTIO_BLK_S_IOERR 1
#define VIRTIO_BLK_S_UNSUPP 2
#define VIRTIO_BLK_WZ_F_UNMAP 1u

#define VIRTIO_BLK_ID_BYTES 20
#define SECTOR_SHIFT 9
#define SECTOR_SIZE 512u
#define BLK_HDR_BYTES 16u
#define BLK_QUEUE_SIZE 256
/* The header and the status byte take two descriptors of a chain (virtio 1.2, 5.2.4). */
#define BLK_SEG_MAX (BLK_QUEUE_SIZE - 2)
#define BLK_MAX_RANGES 32u
#define BLK_MAX_RANGE_SECTORS (1u << 22) /* 2 GiB per discard / write-zeroes range */
/* Conservative O_DIRECT memory alignment: buffers off it are copied through a bounce buffer. */
#define BLK_DIO_ALIGN 4096u
/* The most of a request's data one bounce buffer holds: bigger requests move piece by piece. */
#define BLK_BOUNCE_CHUNK (256u << 10)
/* Chains one call of the queue handler takes before it lets the loop serve others. */
#define BLK_BUDGET 64u
#define BLK_MAX_QUEUES 16u
/* Requests in flight on a queue from which the device stops asking for kicks: their
 * completions, each of which looks at the ring, come often enough then (see blk_hold_kicks). */
#define BLK_HOLD_KICKS_MIN 4u
/* How long a reset from a vCPU waits for reads in flight before it gives up (and logs). */
#define BLK_RESET_WAIT_MS 5000u

/* The guest-visible config space (virtio 1.2, 5.2.4), little-endian like the host. */
struct blk_config_space {
    uint64_t capacity;
    uint32_t size_max;
    uint32_t seg_max;
    uint16_t cylinders;
    uint8_t heads;
    uint8_t sectors;
    uint32_t blk_size;
    uint8_t physical_block_exp;
    uint8_t alignment_offset;
    uint16_t min_io_size;
    uint32_t opt_io_size;
    uint8_t writeback;
    uint8_t unused0;
    uint16_t num_queues;
    uint32_t max_discard_sectors;
    uint32_t max_discard_seg;
    uint32_t discard_sector_alignment;
    uint32_t max_write_zeroes_sectors;
    uint32_t max_write_zeroes_seg;
    uint8_t write_zeroes_may_unmap;
    uint8_t unused1[3];
} __attribute__((packed));
_Static_assert(offsetof(struct blk_config_space, num_queues) == 34, "virtio-blk config layout");
_Static_assert(offsetof(struct blk_config_space, max_write_zeroes_seg) == 52, "config layout");
_Static_assert(sizeof(struct blk_config_space) == 60, "virtio-blk config layout");

struct blk_req_header {
    uint32_t type;
    uint32_t ioprio;
    uint64_t sector;
};

struct blk_range { /* struct virtio_blk_discard_write_zeroes */
    uint64_t sector;
    uint32_t num_sectors;
    uint32_t flags;
};

enum blk_op { BLK_OP_READ, BLK_OP_WRITE, BLK_OP_FLUSH, BLK_OP_FALLOC };

/* One request between its pop and its push. */
struct blk_req {
    struct virtio_blk *blk;
    struct list_link link;        /* in blk->outstanding */
    struct blk_req *wait_next;    /* blk->waiting, while it needs an SQE */
    struct loop_watch watch;
    uint64_t generation;          /* blk->generation at pop: a reset since drops the push */
    uint64_t popped_ns;           /* CLOCK_MONOTONIC when it was taken from the ring */
    unsigned queue;
    uint16_t head;
    uint8_t *status;              /* host address of the chain's last writable byte */
    enum blk_op op;
    uint32_t type;
    uint64_t offset;              /* image byte offset of the data */
    uint32_t len, done;           /* data bytes, and bytes moved so far */
    bool slow;                    /* a flush or fallocate: its answer may take long */
    bool needs_bounce;            /* O_DIRECT and unaligned guest buffers */
    void *bounce;                 /* aligned copy of a piece of the data for O_DIRECT, or NULL */
    size_t bounce_size;           /* its size, counted in blk->bounce_bytes */
    uint32_t chunk_off, chunk_len; /* the data bytes it holds: [chunk_off, chunk_off + len) */
    struct iovec bounce_iov;      /* what remains to move of them */
    unsigned range_idx, nr_ranges;
    struct blk_range ranges[BLK_MAX_RANGES];
    unsigned iov_first, iov_cnt;  /* iov[iov_first..iov_cnt) is what remains to move */
    struct iovec iov[];
};

struct virtio_blk {
    struct virtio_device_ops ops; /* a copy: nr_queues depends on the configuration */
    struct virtio_device *vdev;
    struct event_loop *loop;
    const struct guest_memory *gm;
    char *path;
    int fd;
    int fixed_fd; /* fd's slot among the loop's registered files, or -1 */
    bool readonly, direct, broken, no_zero_range, logged_io_error;
    bool active;   /* DRIVER_OK, until reset */
    bool quiesced; /* paused: no chain is taken from the rings */
    uint64_t capacity; /* sectors */
    char serial[VIRTIO_BLK_ID_BYTES];
    struct blk_config_space config;

    uint64_t generation;
    struct loop_owner io;                        /* every request's I/O in flight */
    struct list outstanding; /* of blk_req: every request popped and not yet pushed */
    struct blk_req *waiting, *waiting_tail;      /* FIFO of requests that found no SQE */
    unsigned nr_outstanding[BLK_MAX_QUEUES];
    unsigned nr_slow[BLK_MAX_QUEUES];            /* of those, flushes and fallocates */
    bool throttled[BLK_MAX_QUEUES];              /* stopped popping at the queue's size */

    /* Bounce buffers: at most bounce_max bytes for all requests together; those that find no
     * room wait in a FIFO (through wait_next) until others give theirs back. */
    size_t bounce_max, bounce_bytes, bounce_peak;
    struct blk_req *bounce_wait, *bounce_wait_tail;
    /* A queue whose handler stopped at its budget: the rest is taken on a later loop turn. */
    struct blk_cont {
        struct virtio_blk *blk;
        unsigned queue;
        bool armed;
        struct loop_watch watch;
    } cont[BLK_MAX_QUEUES];

    uint64_t reads, writes, bytes_read, bytes_written;
    /* From each request's pop to its answer: where a guest's I/O time goes, ours or not. */
    uint64_t answered, answer_ns_total, answer_ns_max;
    struct virtq_chain chain; /* scratch for virtq_pop: 16 KiB, too big for the stack */
};

/* ---- request bookkeeping ---- */

static void blk_req_free(struct virtio_blk *blk, struct blk_req *req)
{
    list_unlink(&blk->outstanding, &req->link);
    blk->bounce_bytes -= req->bounce_size;
    free(req->bounce);
    free(req);
}

/* Appends `req` to a FIFO linked through wait_next (SQE waiters, bounce waiters). */
static void blk_fifo_push(struct blk_req **head, struct blk_req **tail, struct blk_req *req)
{
    req->wait_next = NULL;
    if (*tail)
        (*tail)->wait_next = req;
    else
        *head = req;
    *tail = req;
}

static struct blk_req *blk_fifo_pop(struct blk_req **head, struct blk_req **tail)
{
    struct blk_req *req = *head;
    if (req && !(*head = req->wait_next))
        *tail = NULL;
    return req;
}

/* Frees the requests that wait for an SQE or for bounce memory: none touched guest memory. */
static void blk_free_waiting(struct virtio_blk *blk)
{
    struct blk_req *req;
    while ((req = blk_fifo_pop(&blk->waiting, &blk->waiting_tail)))
        blk_req_free(blk, req);
    while ((req = blk_fifo_pop(&blk->bounce_wait, &blk->bounce_wait_tail)))
        blk_req_free(blk, req);
}

static void blk_break(struct virtio_blk *blk, const char *why)
{
    if (blk->broken)
        return;
    blk->broken = true;
    log_warn("virtio-blk %s: %s", blk->path, why);
    if (blk->vdev->needs_reset)
        blk->vdev->needs_reset(blk->vdev, why);
}

/* Writes the status and gives the chain back; the caller raises the interrupt. */
static void blk_req_finish(struct virtio_blk *blk, struct blk_req *req, uint8_t status)
{
    uint32_t written = 1;
    if (status == VIRTIO_BLK_S_OK && req->op == BLK_OP_READ)
        written += req->len;
    *req->status = status;
    uint64_t took = monotonic_ns() - req->popped_ns;
    blk->answered++;
    blk->answer_ns_total += took;
    if (took > blk->answer_ns_max)
        blk->answer_ns_max = took;
    if (virtq_push(&blk->vdev->queues[req->queue], req->head, written) < 0)
        blk_break(blk, "cannot push to the used ring");
    blk->nr_outstanding[req->queue]--;
    if (req->slow)
        blk->nr_slow[req->queue]--;
    blk_req_free(blk, req);
}

/* ---- submission ---- */

static bool blk_req_complete(struct event_loop *loop, void *opaque, int res);

static int blk_falloc_mode(const struct virtio_blk *blk, const struct blk_req *req)
{
    const struct blk_range *r = &req->ranges[req->range_idx];
    if (req->type == VIRTIO_BLK_T_DISCARD || (r->flags & VIRTIO_BLK_WZ_F_UNMAP) ||
        blk->no_zero_range)
        return FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE; /* reads back as zeroes too */
    return FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE;
}

/* Preps the request's next step. -EAGAIN: no SQE now; the caller queues it. */
static int blk_req_submit(struct virtio_blk *blk, struct blk_req *req)
{
    struct io_uring_sqe *sqe =
        loop_owner_prepare(blk->loop, &blk->io, &req->watch, blk_req_complete, req);
    if (!sqe)
        return -EAGAIN;
    const struct iovec *iov = req->bounce ? &req->bounce_iov : &req->iov[req->iov_first];
    unsigned cnt = req->bounce ? 1 : req->iov_cnt - req->iov_first;
    const struct blk_range *r = &req->ranges[req->range_idx];

    /* One piece of guest RAM in one registered buffer: the kernel need not map its pages. */
    int buf = cnt == 1 && !req->bounce && (req->op == BLK_OP_READ || req->op == BLK_OP_WRITE)
                  ? loop_fixed_buffer(blk->loop, iov->iov_base, iov->iov_len) : -1;

    switch (req->op) {
    case BLK_OP_READ:
        if (buf >= 0)
            io_uring_prep_read_fixed(sqe, blk->fd, iov->iov_base, (unsigned)iov->iov_len,
                                     req->offset + req->done, buf);
        else
            io_uring_prep_readv(sqe, blk->fd, iov, cnt, req->offset + req->done);
        break;
    case BLK_OP_WRITE:
        if (buf >= 0)
            io_uring_prep_write_fixed(sqe, blk->fd, iov->iov_base, (unsigned)iov->iov_len,
                                      req->offset + req->done, buf);
        else
            io_uring_prep_writev(sqe, blk->fd, iov, cnt, req->offset + req->done);
        break;
    case BLK_OP_FLUSH:
        /* fdatasync: the data and what reading it back needs (block allocations, the file's
         * size), as the guest's flush asks; not the timestamps, which on a file system such
         * as ext4 made each flush after an overwrite a journal commit of its own (the
         * fsync-per-write job at about half of QEMU's rate, which flushes the same way). */
        io_uring_prep_fsync(sqe, blk->fd, IORING_FSYNC_DATASYNC);
        break;
    case BLK_OP_FALLOC:
        io_uring_prep_fallocate(sqe, blk->fd, blk_falloc_mode(blk, req),
                                (off_t)(r->sector << SECTOR_SHIFT),
                                (off_t)((uint64_t)r->num_sectors << SECTOR_SHIFT));
        break;
    }
    loop_sqe_file(sqe, blk->fixed_fd);
    return 0;
}

/* Submits at once unless others wait for an SQE already: they keep their order. */
static void blk_req_dispatch(struct virtio_blk *blk, struct blk_req *req)
{
    if (!blk->waiting && blk_req_submit(blk, req) == 0)
        return;
    blk_fifo_push(&blk->waiting, &blk->waiting_tail, req);
}

static void blk_kick_waiting(struct virtio_blk *blk)
{
    while (blk->waiting && blk_req_submit(blk, blk->waiting) == 0)
        blk_fifo_pop(&blk->waiting, &blk->waiting_tail);
}

/* ---- bounce buffers ---- */

/* Copies `len` bytes between the request's guest buffers, from data offset `off`, and `buf`. */
static void blk_bounce_copy(struct blk_req *req, size_t off, uint8_t *buf, size_t len,
                            bool to_guest)
{
    for (unsigned i = 0; i < req->iov_cnt && len; i++) {
        size_t seg = req->iov[i].iov_len;
        if (off >= seg) {
            off -= seg;
            continue;
        }
        size_t take = seg - off < len ? seg - off : len;
        uint8_t *guest = (uint8_t *)req->iov[i].iov_base + off;
        memcpy(to_guest ? guest : buf, to_guest ? buf : guest, take);
        buf += take;
        len -= take;
        off = 0;
    }
}

/* Points the bounce buffer at the next piece of the data (from req->done); a write copies it
 * in from the guest first. */
static void blk_bounce_load(struct blk_req *req)
{
    size_t left = req->len - req->done;
    req->chunk_off = req->done;
    req->chunk_len = (uint32_t)(left < req->bounce_size ? left : req->bounce_size);
    req->bounce_iov = (struct iovec){ .iov_base = req->bounce, .iov_len = req->chunk_len };
    if (req->op == BLK_OP_WRITE)
        blk_bounce_copy(req, req->chunk_off, req->bounce, req->chunk_len, false);
}

/* `res` more bytes moved through the bounce buffer: a piece read in full goes to the guest,
 * and the next piece is loaded. */
static void blk_bounce_advance(struct blk_req *req, size_t res)
{
    req->bounce_iov.iov_base = (uint8_t *)req->bounce_iov.iov_base + res;
    req->bounce_iov.iov_len -= res;
    if (req->bounce_iov.iov_len)
        return;
    if (req->op == BLK_OP_READ)
        blk_bounce_copy(req, req->chunk_off, req->bounce, req->chunk_len, true);
    if (req->done < req->len)
        blk_bounce_load(req);
}

/* A bounce buffer for `req` out of the device's bounce memory: -EAGAIN when it has no room. */
static int blk_bounce_alloc(struct virtio_blk *blk, struct blk_req *req)
{
    size_t chunk = blk->bounce_max < BLK_BOUNCE_CHUNK ? blk->bounce_max : BLK_BOUNCE_CHUNK;
    size_t size = ((size_t)req->len + BLK_DIO_ALIGN - 1) / BLK_DIO_ALIGN * BLK_DIO_ALIGN;
    if (size > chunk)
        size = chunk;
    if (blk->bounce_bytes + size > blk->bounce_max)
        return -EAGAIN;
    req->bounce = aligned_alloc(BLK_DIO_ALIGN, size);
    if (!req->bounce)
        return -ENOMEM;
    req->bounce_size = size;
    blk->bounce_bytes += size;
    if (blk->bounce_bytes > blk->bounce_peak)
        blk->bounce_peak = blk->bounce_bytes;
    blk_bounce_load(req);
    return 0;
}

/* Starts a parsed request: through a bounce buffer when it needs one, after the requests that
 * wait for bounce memory. Returns true when it was answered (IOERR: no memory) at once. */
static bool blk_req_go(struct virtio_blk *blk, struct blk_req *req)
{
    int ret = 0;
    if (req->needs_bounce)
        ret = blk->bounce_wait ? -EAGAIN : blk_bounce_alloc(blk, req);
    if (ret == -EAGAIN) {
        blk_fifo_push(&blk->bounce_wait, &blk->bounce_wait_tail, req);
        return false;
    }
    if (ret < 0) {
        blk_req_finish(blk, req, VIRTIO_BLK_S_IOERR);
        return true;
    }
    blk_req_dispatch(blk, req);
    return false;
}

/* Bounce memory came back: starts the requests that waited for it, in order. */
static void blk_bounce_kick(struct virtio_blk *blk)
{
    while (blk->bounce_wait) {
        struct blk_req *req = blk->bounce_wait;
        int ret = blk_bounce_alloc(blk, req);
        if (ret == -EAGAIN)
            return;
        blk_fifo_pop(&blk->bounce_wait, &blk->bounce_wait_tail);
        unsigned q = req->queue;
        if (ret == 0) {
            blk_req_dispatch(blk, req);
            continue;
        }
        blk_req_finish(blk, req, VIRTIO_BLK_S_IOERR);
        virtio_queue_done(blk->vdev, q);
    }
}

/* ---- completion ---- */

static void iov_advance(struct iovec *iov, unsigned *first, unsigned cnt, size_t n)
{
    while (n && *first < cnt) {
        size_t step = n < iov[*first].iov_len ? n : iov[*first].iov_len;
        iov[*first].iov_base = (uint8_t *)iov[*first].iov_base + step;
        iov[*first].iov_len -= step;
        n -= step;
        if (!iov[*first].iov_len)
            (*first)++;
    }
}

static void blk_log_io_error(struct virtio_blk *blk, int res)
{
    /* Once per device: a failing disk must not flood the log at the guest's request rate. */
    if (blk->logged_io_error)
        return;
    blk->logged_io_error = true;
    log_warn("virtio-blk %s: I/O error: %s (further errors not logged)", blk->path,
             res < 0 ? strerror(-res) : "unexpected end of file");
}

/*
 * Short reads and writes are resubmitted for the rest; a zero-byte transfer (the image
 * shrank under us) fails the request with IOERR rather than spinning.
 */
static int blk_rw_progress(struct virtio_blk *blk, struct blk_req *req, int res)
{
    if (res <= 0) {
        blk_log_io_error(blk, res);
        return VIRTIO_BLK_S_IOERR;
    }
    req->done += (uint32_t)res;
    if (req->bounce)
        blk_bounce_advance(req, (size_t)res);
    else
        iov_advance(req->iov, &req->iov_first, req->iov_cnt, (size_t)res);
    if (req->done < req->len)
        return -EINPROGRESS;
    if (req->op == BLK_OP_READ) {
        blk->reads++;
        blk->bytes_read += req->len;
    } else {
        blk->writes++;
        blk->bytes_written += req->len;
    }
    return VIRTIO_BLK_S_OK;
}

static int blk_falloc_progress(struct virtio_blk *blk, struct blk_req *req, int res)
{
    if (res == -EOPNOTSUPP && req->type == VIRTIO_BLK_T_WRITE_ZEROES && !blk->no_zero_range &&
        blk_falloc_mode(blk, req) & FALLOC_FL_ZERO_RANGE) {
        blk->no_zero_range = true; /* tmpfs and others: punch holes instead */
        return -EINPROGRESS;
    }
    if (res == -EOPNOTSUPP && req->type == VIRTIO_BLK_T_DISCARD)
        res = 0; /* discard is a hint: ignoring it is correct */
    if (res < 0) {
        blk_log_io_error(blk, res);
        return VIRTIO_BLK_S_IOERR;
    }
    return ++req->range_idx < req->nr_ranges ? -EINPROGRESS : VIRTIO_BLK_S_OK;
}

/* A status byte, or -EINPROGRESS when the request needs another step. */
static int blk_req_progress(struct virtio_blk *blk, struct blk_req *req, int res)
{
    switch (req->op) {
    case BLK_OP_READ:
    case BLK_OP_WRITE:
        return blk_rw_progress(blk, req, res);
    case BLK_OP_FALLOC:
        return blk_falloc_progress(blk, req, res);
    case BLK_OP_FLUSH:
        break;
    }
    if (res < 0)
        blk_log_io_error(blk, res);
    return res < 0 ? VIRTIO_BLK_S_IOERR : VIRTIO_BLK_S_OK;
}

static void blk_process_queue(struct virtio_blk *blk, unsigned q);

/* One step of `req` finished with `res`: the next step, or the answer to the guest. */
static void blk_req_advance(struct virtio_blk *blk, struct blk_req *req, int res)
{
    unsigned q = req->queue;
    int status = blk_req_progress(blk, req, res);
    if (status == -EINPROGRESS) {
        blk_req_dispatch(blk, req);
    } else {
        blk_req_finish(blk, req, (uint8_t)status);
        virtio_queue_done(blk->vdev, q);
    }
    blk_bounce_kick(blk);
    blk_kick_waiting(blk);
    if (blk->throttled[q] || blk->vdev->queues[q].kicks_held)
        blk_process_queue(blk, q); /* the guest may have offered more without a kick */
}

static bool blk_req_complete(struct event_loop *loop, void *opaque, int res)
{
    (void)loop;
    struct blk_req *req = opaque;
    struct virtio_blk *blk = req->blk;
    struct virtio_device *vdev = blk->vdev;
    virtio_lock(vdev);
    if (req->generation != blk->generation) {
        blk_req_free(blk, req); /* reset since: the queue is not ours to touch */
        blk_bounce_kick(blk);   /* its bounce memory is free for the requests after it */
    } else {
        blk_req_advance(blk, req, res);
    }
    virtio_unlock(vdev);
    return false;
}

/* ---- parsing a chain ---- */

static bool iov_dio_aligned(const struct iovec *iov, unsigned cnt)
{
    for (unsigned i = 0; i < cnt; i++)
        if ((uintptr_t)iov[i].iov_base % BLK_DIO_ALIGN || iov[i].iov_len % BLK_DIO_ALIGN)
            return false;
    return true;
}

static bool blk_range_ok(const struct virtio_blk *blk, uint64_t sector, uint64_t sectors)
{
    return sector <= blk->capacity && sectors <= blk->capacity - sector;
}

/* Sets up a read or write; returns a status byte on refusal, or -EINPROGRESS. */
static int blk_parse_rw(struct virtio_blk *blk, struct blk_req *req, const struct virtq_chain *c,
                        uint64_t sector)
{
    bool in = req->op == BLK_OP_READ;
    size_t len = in ? c->writable_len - 1u : c->readable_len - BLK_HDR_BYTES;
    if (!in && blk->readonly)
        return VIRTIO_BLK_S_IOERR;
    /* Data in the wrong direction (a write's data the device may write, or a read's data
     * it may only read) is a malformed request, not an empty one. */
    if (in ? c->readable_len != BLK_HDR_BYTES : c->writable_len != 1)
        return VIRTIO_BLK_S_IOERR;
    if (len % SECTOR_SIZE || !blk_range_ok(blk, sector, len / SECTOR_SIZE))
        return VIRTIO_BLK_S_IOERR;
    req->offset = sector << SECTOR_SHIFT;
    req->len = (uint32_t)len;
    req->iov_cnt = virtq_chain_iov(c, in, in ? 0 : BLK_HDR_BYTES, len, req->iov);
    if (req->iov_cnt > blk->config.seg_max)
        return VIRTIO_BLK_S_IOERR; /* more segments than the config space allows */
    /* O_DIRECT refuses unaligned guest buffers: such requests move through an aligned copy. */
    req->needs_bounce = blk->direct && !iov_dio_aligned(req->iov, req->iov_cnt);
    return len ? -EINPROGRESS : VIRTIO_BLK_S_OK;
}

static int blk_check_range(const struct virtio_blk *blk, uint32_t type, const struct blk_range *r)
{
    if (r->flags & ~VIRTIO_BLK_WZ_F_UNMAP)
        return VIRTIO_BLK_S_UNSUPP; /* reserved flags */
    if (type == VIRTIO_BLK_T_DISCARD && r->flags)
        return VIRTIO_BLK_S_UNSUPP; /* unmap is only defined for write zeroes */
    if (r->num_sectors > BLK_MAX_RANGE_SECTORS || !blk_range_ok(blk, r->sector, r->num_sectors))
        return VIRTIO_BLK_S_IOERR;
    return -EINPROGRESS;
}

/* Copies the ranges out of the chain once and checks the copies. */
static int blk_parse_falloc(struct virtio_blk *blk, struct blk_req *req,
                            const struct virtq_chain *c)
{
    unsigned feature = req->type == VIRTIO_BLK_T_DISCARD ? VIRTIO_BLK_F_DISCARD
                                                         : VIRTIO_BLK_F_WRITE_ZEROES;
    size_t len = c->readable_len - BLK_HDR_BYTES;
    if (!virtio_has_feature(blk->vdev, feature))
        return VIRTIO_BLK_S_UNSUPP;
    if (blk->readonly || !len || len % sizeof(struct blk_range) ||
        len / sizeof(struct blk_range) > BLK_MAX_RANGES)
        return VIRTIO_BLK_S_IOERR;
    req->nr_ranges = (unsigned)(len / sizeof(struct blk_range));
    virtq_chain_read(c, BLK_HDR_BYTES, req->ranges, len);
    for (unsigned i = 0; i < req->nr_ranges; i++) {
        int st = blk_check_range(blk, req->type, &req->ranges[i]);
        if (st != -EINPROGRESS)
            return st;
    }
    return -EINPROGRESS;
}

static int blk_get_id(const struct virtio_blk *blk, struct blk_req *req,
                      const struct virtq_chain *c)
{
    size_t room = c->writable_len - 1u;
    size_t n = room < VIRTIO_BLK_ID_BYTES ? room : VIRTIO_BLK_ID_BYTES;
    virtq_chain_write(c, 0, blk->serial, n);
    req->op = BLK_OP_READ; /* so that finish() reports the bytes written */
    req->len = (uint32_t)n;
    return VIRTIO_BLK_S_OK;
}

/* Fills `req` from its header; returns a status for an immediate answer, or -EINPROGRESS. */
static int blk_parse(struct virtio_blk *blk, struct blk_req *req, const struct virtq_chain *c)
{
    struct blk_req_header hdr;
    if (c->readable_len < BLK_HDR_BYTES)
        return VIRTIO_BLK_S_IOERR;
    virtq_chain_read(c, 0, &hdr, sizeof(hdr));
    req->type = hdr.type;
    switch (hdr.type) {
    case VIRTIO_BLK_T_IN:
    case VIRTIO_BLK_T_OUT:
        req->op = hdr.type == VIRTIO_BLK_T_IN ? BLK_OP_READ : BLK_OP_WRITE;
        return blk_parse_rw(blk, req, c, hdr.sector);
    case VIRTIO_BLK_T_FLUSH:
        req->op = BLK_OP_FLUSH;
        return -EINPROGRESS;
    case VIRTIO_BLK_T_GET_ID:
        return blk_get_id(blk, req, c);
    case VIRTIO_BLK_T_DISCARD:
    case VIRTIO_BLK_T_WRITE_ZEROES:
        req->op = BLK_OP_FALLOC;
        return blk_parse_falloc(blk, req, c);
    default:
        return VIRTIO_BLK_S_UNSUPP;
    }
}

/* Starts one popped chain. Returns true when it was answered (pushed) at once. */
static bool blk_start(struct virtio_blk *blk, unsigned q, const struct virtq_chain *c)
{
    if (c->writable_len == 0) {
        /* Without a status byte no answer is possible: the driver broke the protocol. */
        blk_break(blk, "request without a status byte");
        return false;
    }
    const struct virtq_seg *last = &c->segs[c->nr_segs - 1];
    struct blk_req *req = calloc(1, sizeof(*req) + c->nr_segs * sizeof(struct iovec));
    if (!req) {
        blk_break(blk, "out of memory");
        return false;
    }
    *req = (struct blk_req){ .blk = blk, .generation = blk->generation,
                             .popped_ns = monotonic_ns(), .queue = q, .head = c->head,
                             .status = (uint8_t *)last->host + last->len - 1 };
    list_push(&blk->outstanding, &req->link);
    blk->nr_outstanding[q]++;
    int status = blk_parse(blk, req, c);
    if (status != -EINPROGRESS) {
        blk_req_finish(blk, req, (uint8_t)status);
        return true;
    }
    if (req->op == BLK_OP_FLUSH || req->op == BLK_OP_FALLOC) {
        req->slow = true;
        blk->nr_slow[q]++;
    }
    return blk_req_go(blk, req);
}

static bool blk_cont_run(struct event_loop *loop, void *opaque, int res)
{
    struct blk_cont *cont = opaque;
    struct virtio_blk *blk = cont->blk;
    (void)loop, (void)res;
    virtio_lock(blk->vdev);
    cont->armed = false;
    blk_kick_waiting(blk);
    blk_process_queue(blk, cont->queue); /* nothing when reset or paused meanwhile */
    virtio_unlock(blk->vdev);
    return false;
}

/* The handler spent its budget: a no-op through the ring brings it back on a later turn,
 * after the completions ready now. False when none can be queued: the caller goes on. */
static bool blk_defer(struct virtio_blk *blk, unsigned q)
{
    struct blk_cont *cont = &blk->cont[q];
    return loop_owner_defer(blk->loop, &blk->io, &cont->watch, &cont->armed, blk_cont_run, cont);
}

/*
 * Whether the guest need not kick `q` now. With several reads and writes in flight their
 * completions come often, and each looks at the ring (blk_req_advance): a kick per request
 * would only add a guest exit each, the most expensive part of a request in a nested guest,
 * and at queue depth 32 the guest made one per request. A flush or fallocate in flight may
 * take long, and with few requests the next completion may be far: then the guest kicks.
 */
static bool blk_hold_kicks(const struct virtio_blk *blk, unsigned q)
{
    return blk->nr_outstanding[q] >= BLK_HOLD_KICKS_MIN && !blk->nr_slow[q];
}

/* Pops until the ring is empty, this queue has a ring's worth of requests outstanding, or
 * BLK_BUDGET chains were taken (the rest on a later loop turn). */
static void blk_process_queue(struct virtio_blk *blk, unsigned q)
{
    struct virtqueue *vq = &blk->vdev->queues[q];
    bool pushed = false;
    unsigned taken = 0;

    blk->throttled[q] = false;
    if (!blk->active || blk->quiesced)
        return; /* reset or paused: resume looks at every queue */
    while (!blk->broken) {
        if (blk->nr_outstanding[q] >= vq->size) {
            blk->throttled[q] = true; /* bounds memory against a guest re-offering heads */
            break;
        }
        if (taken++ == BLK_BUDGET && blk_defer(blk, q))
            break;
        virtq_hold_kicks(vq, blk_hold_kicks(blk, q));
        int ret = virtq_pop(vq, &blk->chain);
        if (ret == 0)
            break;
        if (ret < 0) {
            blk_break(blk, vq->broken_reason ? vq->broken_reason : "broken virtqueue");
            break;
        }
        pushed |= blk_start(blk, q, &blk->chain);
    }
    if (pushed)
        virtio_queue_done(blk->vdev, q);
}

/* ---- virtio_device_ops ---- */

static uint64_t blk_features(struct virtio_device *vdev)
{
    struct virtio_blk *blk = vdev->model;
    uint64_t f = 1ULL << VIRTIO_BLK_F_SEG_MAX | 1ULL << VIRTIO_BLK_F_BLK_SIZE |
                 1ULL << VIRTIO_BLK_F_FLUSH;
    if (blk->readonly)
        f |= 1ULL << VIRTIO_BLK_F_RO;
    else
        f |= 1ULL << VIRTIO_BLK_F_DISCARD | 1ULL << VIRTIO_BLK_F_WRITE_ZEROES;
    if (blk->ops.nr_queues > 1)
        f |= 1ULL << VIRTIO_BLK_F_MQ;
    return f;
}

/* The config space never changes after creation, so vCPU threads read it without a lock. */
static void blk_read_config(struct virtio_device *vdev, uint32_t offset, void *data, uint32_t len)
{
    const struct virtio_blk *blk = vdev->model;
    memset(data, 0, len);
    if (offset < sizeof(blk->config)) {
        uint32_t n = sizeof(blk->config) - offset < len ? sizeof(blk->config) - offset : len;
        memcpy(data, (const uint8_t *)&blk->config + offset, n);
    }
}

static void blk_write_config(struct virtio_device *vdev, uint32_t offset, const void *data,
                             uint32_t len)
{
    (void)vdev, (void)offset, (void)data, (void)len; /* writeback is not offered: read-only */
}

static int blk_activate(struct virtio_device *vdev)
{
    struct virtio_blk *blk = vdev->model;
    blk->broken = false;
    blk->active = true;
    return 0;
}

static void blk_queue_notify(struct virtio_device *vdev, unsigned queue)
{
    struct virtio_blk *blk = vdev->model;
    if (queue >= blk->ops.nr_queues)
        return;
    blk_kick_waiting(blk); /* requests that found no SQE before go first */
    blk_process_queue(blk, queue);
}

/* Requests waiting for an SQE are dropped; those the kernel holds are waited for, since a
 * read lands in guest memory the driver takes back with the reset. Their completions free
 * them unpushed, their generation being older than the device's. */
static void blk_reset(struct virtio_device *vdev)
{
    struct virtio_blk *blk = vdev->model;
    blk->generation++;
    blk->active = false; /* kicks while the lock is let go below start nothing */
    blk_free_waiting(blk);
    memset(blk->nr_outstanding, 0, sizeof(blk->nr_outstanding));
    memset(blk->nr_slow, 0, sizeof(blk->nr_slow));
    memset(blk->throttled, 0, sizeof(blk->throttled));
    blk->broken = false;
    int ret = loop_owner_wait(blk->loop, &blk->io, vdev->lock, BLK_RESET_WAIT_MS);
    if (ret < 0)
        log_warn("virtio-blk %s: reset: %u requests still in flight (%s): their data may land "
                 "in guest memory later", blk->path, loop_owner_in_flight(&blk->io),
                 strerror(-ret));
    blk->active = false; /* an activation by another vCPU meanwhile is undone with the rest */
    for (unsigned q = 0; q < blk->ops.nr_queues; q++)
        virtq_reset(&vdev->queues[q]);
}

/*
 * Runs the loop until every request popped is answered, those waiting for an SQE submitted
 * first. Nothing new is popped meanwhile (the caller has stopped that).
 */
static int blk_drain(struct virtio_blk *blk)
{
    while (!list_empty(&blk->outstanding)) {
        blk_kick_waiting(blk);
        if (!loop_owner_in_flight(&blk->io))
            return -EBUSY; /* requests wait, and the ring takes none */
        int ret = loop_run_once(blk->loop);
        if (ret < 0)
            return ret;
    }
    return 0;
}

/* Every request in flight is completed: its status and used element are the guest's before
 * this returns. */
static void blk_resume(struct virtio_device *vdev)
{
    struct virtio_blk *blk = vdev->model;
    blk->quiesced = false;
    blk_kick_waiting(blk);
    for (unsigned q = 0; q < blk->ops.nr_queues; q++)
        blk_process_queue(blk, q);
}

static int blk_quiesce(struct virtio_device *vdev)
{
    struct virtio_blk *blk = vdev->model;
    blk->quiesced = true;
    int ret = blk_drain(blk);
    if (ret < 0) {
        log_error("virtio-blk %s: cannot complete the requests in flight: %s", blk->path,
                  strerror(-ret));
        blk_resume(vdev); /* not quiesced: the caller resumes only those that were */
    }
    return ret;
}

static bool blk_pollable(struct virtio_device *vdev, unsigned queue)
{
    const struct virtio_blk *blk = vdev->model;
    return queue < blk->ops.nr_queues;
}

static const struct virtio_device_ops blk_ops_template = {
    .name = "virtio-blk",
    .device_id = VIRTIO_ID_BLOCK,
    .nr_queues = 1,
    .queue_max_size = BLK_QUEUE_SIZE,
    .config_size = sizeof(struct blk_config_space),
    .features = blk_features,
    .read_config = blk_read_config,
    .write_config = blk_write_config,
    .activate = blk_activate,
    .queue_notify = blk_queue_notify,
    .pollable = blk_pollable,
    .reset = blk_reset,
    .quiesce = blk_quiesce,
    .resume = blk_resume,
    /* No state of its own: the config space comes from the image. */
};

/* ---- opening the image ---- */

/*
 * A handed-over image: a descriptor of the source's own open file, so its lock (an OFD lock,
 * see virtio_blk_lock) is the one the source took, held while either process keeps it open.
 * Its O_DIRECT is the source's: the same configuration asked for it.
 */
static int blk_use_fd(struct virtio_blk *blk, const struct virtio_blk_config *cfg)
{
    int flags = fcntl(cfg->fd, F_GETFL);
    blk->fd = -1;
    if (flags >= 0 && !cfg->readonly && (flags & O_ACCMODE) != O_RDWR) {
        log_error("virtio-blk: the handed-over %s is not open for writing", cfg->path);
        return -EBADF;
    }
    blk->fd = flags < 0 ? -1 : fcntl(cfg->fd, F_DUPFD_CLOEXEC, 0);
    if (blk->fd < 0) {
        int err = errno;
        log_error("virtio-blk: the handed-over %s: %s", cfg->path, strerror(err));
        return -err;
    }
    blk->direct = (flags & O_DIRECT) != 0;
    return 0;
}

static int blk_open(struct virtio_blk *blk, const struct virtio_blk_config *cfg)
{
    int flags = (cfg->readonly ? O_RDONLY : O_RDWR) | O_CLOEXEC;
    if (cfg->use_fd)
        return blk_use_fd(blk, cfg);
    if (cfg->cache_none) {
        blk->fd = open(cfg->path, flags | O_DIRECT);
        if (blk->fd >= 0) {
            blk->direct = true;
            return 0;
        }
        if (errno != EINVAL) {
            int err = errno;
            log_error("virtio-blk: cannot open %s: %s", cfg->path, strerror(err));
            return -err;
        }
        log_warn("virtio-blk: %s: the filesystem refuses O_DIRECT (cache=none); using the "
                 "page cache, flushes still reach the disk", cfg->path);
    }
    blk->fd = open(cfg->path, flags);
    if (blk->fd < 0) {
        int err = errno;
        log_error("virtio-blk: cannot open %s: %s", cfg->path, strerror(err));
        return -err;
    }
    return 0;
}

/* An open file description lock: held by this open, so even a second open by the same
 * process conflicts, and released by the kernel whenever the fd goes. */
int virtio_blk_lock(struct virtio_blk *blk)
{
    struct flock fl = { .l_type = blk->readonly ? F_RDLCK : F_WRLCK, .l_whence = SEEK_SET };
    if (fcntl(blk->fd, F_OFD_SETLK, &fl) == 0)
        return 0;
    int err = errno;
    if (err == EAGAIN || err == EACCES)
        return -EBUSY;
    log_error("virtio-blk: cannot lock %s: %s", blk->path, strerror(err));
    return -err;
}

static int blk_lock(struct virtio_blk *blk)
{
    int ret = virtio_blk_lock(blk);
    if (ret == -EBUSY)
        log_error("virtio-blk: %s is in use by another VM (locked)", blk->path);
    return ret;
}

int virtio_blk_image_size(int fd, uint64_t *bytes, uint32_t *block)
{
    struct stat st;
    *block = SECTOR_SIZE;
    if (fstat(fd, &st) < 0)
        return -errno;
    if (S_ISREG(st.st_mode)) {
        *bytes = (uint64_t)st.st_size;
        return 0;
    }
    if (!S_ISBLK(st.st_mode))
        return -ENOTBLK;
    int lbs = 0;
    if (ioctl(fd, BLKGETSIZE64, bytes) < 0 || ioctl(fd, BLKSSZGET, &lbs) < 0)
        return -errno;
    if (lbs >= (int)SECTOR_SIZE)
        *block = (uint32_t)lbs;
    return 0;
}

static int blk_probe(struct virtio_blk *blk)
{
    uint64_t bytes;
    uint32_t block;
    int ret = virtio_blk_image_size(blk->fd, &bytes, &block);
    if (ret == -ENOTBLK)
        log_error("virtio-blk: %s is neither a regular file nor a block device", blk->path);
    if (ret < 0)
        return ret == -ENOTBLK ? -EINVAL : ret;
    if (bytes % SECTOR_SIZE) {
        log_error("virtio-blk: %s: size %llu is not a multiple of 512 bytes", blk->path,
                  (unsigned long long)bytes);
        return -EINVAL;
    }
    blk->capacity = bytes / SECTOR_SIZE;
    blk->config = (struct blk_config_space){
        .capacity = blk->capacity,
        .seg_max = BLK_SEG_MAX,
        .blk_size = block,
        .num_queues = (uint16_t)blk->ops.nr_queues,
        .max_discard_sectors = BLK_MAX_RANGE_SECTORS,
        .max_discard_seg = BLK_MAX_RANGES,
        .discard_sector_alignment = block / SECTOR_SIZE,
        .max_write_zeroes_sectors = BLK_MAX_RANGE_SECTORS,
        .max_write_zeroes_seg = BLK_MAX_RANGES,
        .write_zeroes_may_unmap = 1,
    };
    return 0;
}

int virtio_blk_create(struct virtio_blk **out, const struct virtio_blk_config *cfg,
                      struct event_loop *loop, const struct guest_memory *gm,
                      struct virtio_device *vdev)
{
    unsigned queues = cfg->queues ? cfg->queues : 1;
    if (!cfg->path || queues > BLK_MAX_QUEUES || queues > VIRTIO_MAX_QUEUES)
        return -EINVAL;
    struct virtio_blk *blk = calloc(1, sizeof(*blk));
    if (!blk || !(blk->path = strdup(cfg->path))) {
        free(blk);
        return -ENOMEM;
    }
    blk->ops = blk_ops_template;
    blk->ops.nr_queues = queues;
    blk->vdev = vdev;
    blk->loop = loop;
    blk->gm = gm;
    blk->readonly = cfg->readonly;
    blk->bounce_max = cfg->bounce_max ? cfg->bounce_max : VIRTIO_BLK_BOUNCE_MAX;
    blk->bounce_max -= blk->bounce_max % BLK_DIO_ALIGN; /* pieces stay aligned */
    if (blk->bounce_max < BLK_DIO_ALIGN)
        blk->bounce_max = BLK_DIO_ALIGN; /* room for one request's piece, always */
    for (unsigned q = 0; q < BLK_MAX_QUEUES; q++)
        blk->cont[q] = (struct blk_cont){ .blk = blk, .queue = q };
    loop_owner_init(&blk->io);
    if (cfg->serial) /* zero-padded (calloc), not terminated when 20 bytes long */
        memcpy(blk->serial, cfg->serial, strnlen(cfg->serial, sizeof(blk->serial)));

    int ret = blk_open(blk, cfg);
    if (ret == 0 && !cfg->lock_later)
        ret = blk_lock(blk);
    if (ret == 0)
        ret = blk_probe(blk);
    if (ret < 0) {
        if (blk->fd >= 0)
            close(blk->fd);
        loop_owner_destroy(&blk->io);
        free(blk->path);
        free(blk);
        return ret;
    }
    blk->fixed_fd = loop_register_file(loop, blk->fd);
    vdev->ops = &blk->ops;
    vdev->model = blk;
    vdev->gm = gm;
    *out = blk;
    return 0;
}

void virtio_blk_destroy(struct virtio_blk *blk)
{
    if (!blk)
        return;
    blk->generation++; /* what completes from now on is freed, not answered */
    blk->active = false;
    blk_free_waiting(blk);
    /* A read in flight writes into guest RAM, which goes away after this: wait for every
     * request the kernel holds. */
    int ret = loop_owner_drain(blk->loop, &blk->io);
    if (ret < 0) {
        /* Their completions would meet a freed device: better leak it. */
        log_error("virtio-blk %s: requests still in flight, the device is leaked", blk->path);
        return;
    }
    loop_unregister_file(blk->loop, blk->fixed_fd); /* nothing in flight uses it now */
    close(blk->fd);
    loop_owner_destroy(&blk->io);
    free(blk->path);
    free(blk);
}

int virtio_blk_fd(const struct virtio_blk *blk)
{
    return blk->fd;
}

void virtio_blk_counters(const struct virtio_blk *blk, uint64_t *reads, uint64_t *writes,
                         uint64_t *bytes_read, uint64_t *bytes_written)
{
    *reads = blk->reads;
    *writes = blk->writes;
    *bytes_read = blk->bytes_read;
    *bytes_written = blk->bytes_written;
}

void virtio_blk_latency(const struct virtio_blk *blk, uint64_t *answered, uint64_t *total_ns,
                        uint64_t *max_ns, unsigned *in_flight)
{
    unsigned n = 0;
    for (unsigned q = 0; q < blk->ops.nr_queues; q++)
        n += blk->nr_outstanding[q];
    *answered = blk->answered;
    *total_ns = blk->answer_ns_total;
    *max_ns = blk->answer_ns_max;
    *in_flight = n;
}

void virtio_blk_bounce_usage(const struct virtio_blk *blk, size_t *now, size_t *peak)
{
    *now = blk->bounce_bytes;
    *peak = blk->bounce_peak;
}
