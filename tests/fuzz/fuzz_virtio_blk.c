/* fuzz_virtio_blk.c: virtio-blk request parsing (header, data, status; reads, writes, flush,
 * get ID, discard, write zeroes) from a hostile driver, down to a 1 MiB image. */
#include <unistd.h>

#include "fuzz_virtio.h"
#include "virtio/blk.h"

static struct fuzz_virtio fv;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    static char path[] = "/tmp/godwit-fuzz-blk-XXXXXX";
    struct virtio_blk_config cfg = { .serial = "fuzz-serial", .queues = 2 };
    struct virtio_blk *blk;
    int fd;

    (void)argc;
    (void)argv;
    fuzz_quiet();
    fd = mkstemp(path);
    if (fd < 0 || ftruncate(fd, 1 << 20) != 0)
        abort();
    close(fd);
    cfg.path = path;
    fuzz_virtio_init(&fv);
    if (virtio_blk_create(&blk, &cfg, &fv.loop, fuzz_gm(), &fv.vdev) != 0)
        abort();
    unlink(path); /* the device keeps it open */
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct fuzz_in in = fuzz_in(data, size);
    fuzz_virtio_run(&fv, &in);
    return 0;
}
