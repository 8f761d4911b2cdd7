/* rng.h: the virtio-rng (entropy) device model, fed from the host's getrandom(). */
#ifndef GODWIT_VIRTIO_RNG_H
#define GODWIT_VIRTIO_RNG_H

#include "io/loop.h"
#include "vm/memory.h"
#include "virtio/virtio.h"

/* The most bytes one request gets: a guest asking for more just asks again. */
#define VIRTIO_RNG_MAX_REQUEST (64u << 10)

struct virtio_rng;

/* Makes `vdev` an entropy device: sets vdev->ops, vdev->model and vdev->gm. Returns 0 or
 * -ENOMEM. */
int virtio_rng_create(struct virtio_rng **out, const struct guest_memory *gm,
                      struct virtio_device *vdev);

/*
 * The main loop the device's kicks come on. With it, one call of the queue handler answers at
 * most 64 requests and takes the rest on a later turn of the loop, so that a guest keeping
 * the ring full cannot keep the loop from its other work. Without it, a call empties the
 * ring. Set it before the device is activated.
 */
void virtio_rng_set_loop(struct virtio_rng *rng, struct event_loop *loop);

/* With a loop, on its thread: a continuation still queued is taken first. */
void virtio_rng_destroy(struct virtio_rng *rng);

#endif
