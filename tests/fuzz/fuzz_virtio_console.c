/* fuzz_virtio_console.c: virtio-console from a hostile driver: output chains, input buffers
 * filled from the host, the config space; pipes stand in for the terminal. */
#include <fcntl.h>
#include <unistd.h>

#include "fuzz_virtio.h"
#include "virtio/console.h"

static struct fuzz_virtio fv;
static int in_w, out_r;

static void host_input(struct fuzz_virtio *f, const uint8_t *buf, size_t len)
{
    (void)f;
    if (len)
        (void)!write(in_w, buf, len);
}

static void host_drain(struct fuzz_virtio *f)
{
    uint8_t sink[4096];
    (void)f;
    while (read(out_r, sink, sizeof(sink)) > 0)
        ;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    struct virtio_console *con;
    int in[2], out[2];

    (void)argc;
    (void)argv;
    fuzz_quiet();
    if (pipe2(in, O_CLOEXEC | O_NONBLOCK) != 0 || pipe2(out, O_CLOEXEC | O_NONBLOCK) != 0)
        abort();
    in_w = in[1];
    out_r = out[0];
    struct virtio_console_config cfg = { .in_fd = in[0], .out_fd = out[1] };
    fuzz_virtio_init(&fv);
    fv.host_input = host_input;
    fv.host_drain = host_drain;
    if (virtio_console_create(&con, &cfg, &fv.loop, fuzz_gm(), &fv.vdev) != 0)
        abort();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct fuzz_in in = fuzz_in(data, size);
    fuzz_virtio_run(&fv, &in);
    host_drain(&fv);
    return 0;
}
