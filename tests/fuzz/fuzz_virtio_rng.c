/* fuzz_virtio_rng.c: virtio-rng from a hostile driver: any chains, filled with entropy. */
#include "fuzz_virtio.h"
#include "virtio/rng.h"

static struct fuzz_virtio fv;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    struct virtio_rng *rng;

    (void)argc;
    (void)argv;
    fuzz_quiet();
    fuzz_virtio_init(&fv);
    if (virtio_rng_create(&rng, fuzz_gm(), &fv.vdev) != 0)
        abort();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct fuzz_in in = fuzz_in(data, size);
    fuzz_virtio_run(&fv, &in);
    return 0;
}
