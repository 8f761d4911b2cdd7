/* rng.c: virtio-rng: each request's writable bytes filled from getrandom() and pushed at once. */
#include "virtio/rng.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "log.h"

/* Requests one call of the queue handler answers before it lets the loop serve others. */
#define RNG_BUDGET 64u

struct virtio_rng {
    struct virtio_device *vdev;
    bool broken;
    bool active;   /* DRIVER_OK, until reset */
    bool quiesced; /* paused: requests wait in the ring */
    struct event_loop *loop;  /* NULL: no budget, the handler empties the ring */
    struct loop_owner io;     /* the continuation below, while queued */
    struct loop_watch cont;
    bool cont_armed;
    struct virtq_chain chain; /* scratch for virtq_pop: too big for the stack */
};

/* Fills up to VIRTIO_RNG_MAX_REQUEST writable bytes; returns how many were filled. */
static uint32_t rng_fill(const struct virtq_chain *c)
{
    uint32_t filled = 0;
    for (unsigned i = 0; i < c->nr_segs && filled < VIRTIO_RNG_MAX_REQUEST; i++) {
        const struct virtq_seg *s = &c->segs[i];
        if (!s->device_writes)
            continue;
        size_t want = s->len < VIRTIO_RNG_MAX_REQUEST - filled ? s->len
                                                                : VIRTIO_RNG_MAX_REQUEST - filled;
        /* Non-blocking: the loop thread must never wait for the host's pool. */
        ssize_t got = getrandom(s->host, want, GRND_NONBLOCK);
        if (got <= 0)
            break;
        filled += (uint32_t)got;
        if ((size_t)got < want)
            break;
    }
    return filled;
}

static void rng_break(struct virtio_rng *rng, const char *why)
{
    if (rng->broken)
        return;
    rng->broken = true;
    log_warn("virtio-rng: %s", why);
    if (rng->vdev->needs_reset)
        rng->vdev->needs_reset(rng->vdev, why);
}

static void rng_queue_notify(struct virtio_device *vdev, unsigned queue);

static bool rng_cont_run(struct event_loop *loop, void *opaque, int res)
{
    struct virtio_rng *rng = opaque;
    (void)loop, (void)res;
    virtio_lock(rng->vdev);
    rng->cont_armed = false;
    rng_queue_notify(rng->vdev, 0); /* nothing when reset or paused meanwhile */
    virtio_unlock(rng->vdev);
    return false;
}

/* The handler spent its budget: a no-op through the ring brings it back on a later turn,
 * after the completions ready now. False when there is no loop or no SQE: go on. */
static bool rng_defer(struct virtio_rng *rng)
{
    return rng->loop &&
           loop_owner_defer(rng->loop, &rng->io, &rng->cont, &rng->cont_armed, rng_cont_run, rng);
}

/* Answers up to RNG_BUDGET requests; the rest on a later turn of the loop. */
static void rng_queue_notify(struct virtio_device *vdev, unsigned queue)
{
    struct virtio_rng *rng = vdev->model;
    struct virtqueue *vq = &vdev->queues[0];
    bool pushed = false;
    unsigned taken = 0;

    if (queue != 0 || !rng->active || rng->quiesced)
        return; /* resume looks at the queue again */
    while (!rng->broken) {
        if (taken++ == RNG_BUDGET && rng_defer(rng))
            break;
        int ret = virtq_pop(vq, &rng->chain);
        if (ret == 0)
            break;
        if (ret < 0) {
            rng_break(rng, vq->broken_reason ? vq->broken_reason : "broken virtqueue");
            break;
        }
        if (virtq_push(vq, rng->chain.head, rng_fill(&rng->chain)) < 0) {
            rng_break(rng, "cannot push to the used ring");
            break;
        }
        pushed = true;
    }
    if (pushed)
        virtio_queue_done(vdev, 0);
}

static uint64_t rng_features(struct virtio_device *vdev)
{
    (void)vdev;
    return 0;
}

static void rng_read_config(struct virtio_device *vdev, uint32_t offset, void *data, uint32_t len)
{
    (void)vdev, (void)offset;
    memset(data, 0, len); /* no config space */
}

static void rng_write_config(struct virtio_device *vdev, uint32_t offset, const void *data,
                             uint32_t len)
{
    (void)vdev, (void)offset, (void)data, (void)len;
}

static int rng_activate(struct virtio_device *vdev)
{
    struct virtio_rng *rng = vdev->model;
    rng->broken = false;
    rng->active = true;
    return 0;
}

/* Requests are answered as they are popped: nothing is ever in flight. */
static void rng_reset(struct virtio_device *vdev)
{
    struct virtio_rng *rng = vdev->model;
    rng->broken = false;
    rng->active = false;
    virtq_reset(&vdev->queues[0]);
}

static int rng_quiesce(struct virtio_device *vdev)
{
    ((struct virtio_rng *)vdev->model)->quiesced = true;
    return 0;
}

static void rng_resume(struct virtio_device *vdev)
{
    ((struct virtio_rng *)vdev->model)->quiesced = false;
    rng_queue_notify(vdev, 0);
}

static const struct virtio_device_ops rng_ops = {
    .name = "virtio-rng",
    .device_id = VIRTIO_ID_RNG,
    .nr_queues = 1,
    .queue_max_size = 256,
    .config_size = 0,
    .features = rng_features,
    .read_config = rng_read_config,
    .write_config = rng_write_config,
    .activate = rng_activate,
    .queue_notify = rng_queue_notify,
    .reset = rng_reset,
    .quiesce = rng_quiesce,
    .resume = rng_resume,
    /* No state of its own. */
};

int virtio_rng_create(struct virtio_rng **out, const struct guest_memory *gm,
                      struct virtio_device *vdev)
{
    struct virtio_rng *rng = calloc(1, sizeof(*rng));
    if (!rng)
        return -ENOMEM;
    rng->vdev = vdev;
    loop_owner_init(&rng->io);
    vdev->ops = &rng_ops;
    vdev->model = rng;
    vdev->gm = gm;
    *out = rng;
    return 0;
}

void virtio_rng_set_loop(struct virtio_rng *rng, struct event_loop *loop)
{
    rng->loop = loop;
}

void virtio_rng_destroy(struct virtio_rng *rng)
{
    if (!rng)
        return;
    rng->active = false;
    if (rng->loop && loop_owner_drain(rng->loop, &rng->io) < 0) {
        log_error("virtio-rng: its continuation is still queued, the device is leaked");
        return;
    }
    loop_owner_destroy(&rng->io);
    free(rng);
}
