/* rng.h: the virtio-rng (entropy) device model, fed from the host's getrandom(). */
#ifndef GODWIT_VIRTIO_RNG_H
#define GODWIT_VIRTIO_RNG_H

#include "vm/memory.h"
#include "virtio/virtio.h"

/* The most bytes one request gets: a guest asking for more just asks again. */
#define VIRTIO_RNG_MAX_REQUEST (64u << 10)

struct virtio_rng;

/* Makes `vdev` an entropy device: sets vdev->ops, vdev->model and vdev->gm. Returns 0 or
 * -ENOMEM. */
int virtio_rng_create(struct virtio_rng **out, const struct guest_memory *gm,
                      struct virtio_device *vdev);
void virtio_rng_destroy(struct virtio_rng *rng);

#endif
