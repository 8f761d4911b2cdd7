/*
 * fuzz_virtio_net.c: virtio-net from a hostile driver: transmitted chains (virtio-net header,
 * offloads), receive buffers (mergeable or not) filled with frames from the host, and the
 * control queue's commands; two queue pairs on socketpairs standing in for a tap.
 */
#include <sys/socket.h>

#include "fuzz_virtio.h"
#include "virtio/net.h"

static struct fuzz_virtio fv;
static int peer[2];
static unsigned next_peer;

static void host_input(struct fuzz_virtio *f, const uint8_t *buf, size_t len)
{
    (void)f;
    if (len)
        (void)send(peer[next_peer++ % 2], buf, len, MSG_DONTWAIT);
}

static void host_drain(struct fuzz_virtio *f)
{
    static uint8_t frame[65536 + 64];
    (void)f;
    for (unsigned i = 0; i < 2; i++)
        while (recv(peer[i], frame, sizeof(frame), MSG_DONTWAIT) > 0)
            ;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    struct virtio_net_config cfg = { .mac = { 0x52, 0x54, 0, 0x12, 0x34, 0x56 }, .mac_set = true,
                                     .queues = 2 };
    struct virtio_net *net;
    int fds[2];

    (void)argc;
    (void)argv;
    fuzz_quiet();
    for (unsigned i = 0; i < 2; i++) {
        int sv[2];
        if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0)
            abort();
        fds[i] = sv[0];
        peer[i] = sv[1];
    }
    fuzz_virtio_init(&fv);
    fv.host_input = host_input;
    fv.host_drain = host_drain;
    if (virtio_net_create_fds(&net, &cfg, fds, &fv.loop, fuzz_gm(), &fv.vdev) != 0)
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
