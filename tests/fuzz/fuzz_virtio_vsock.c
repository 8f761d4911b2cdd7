/*
 * fuzz_virtio_vsock.c: virtio-vsock from a hostile driver: packets of any header on the
 * transmit queue (connections to listeners at <socket>_1 and <socket>_2, data, credit,
 * shutdowns, resets), receive and event buffers, pauses with a state round trip; and host
 * programs on the VM's socket that connect, write CONNECT lines or anything, and close.
 *
 * Input: fuzz_virtio.h's. The host input's first byte picks what a host program does: 0 a new
 * one connects and writes the rest, 1 the one the second byte picks writes the rest, 2 it
 * closes, 3 it shuts its sending side. Everything the device sends the host is read and
 * dropped; guest connections are accepted and kept until the run ends.
 */
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "fuzz_virtio.h"
#include "io/unix_socket.h"
#include "virtio/vsock.h"

#define HOST_FDS 8

static struct fuzz_virtio fv;
static struct virtio_vsock *vs;
static char path[80];
static int listeners[2] = { -1, -1 };
static int clients[HOST_FDS] = { -1, -1, -1, -1, -1, -1, -1, -1 };
static int accepted[HOST_FDS] = { -1, -1, -1, -1, -1, -1, -1, -1 };

static int host_connect(void)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        close(fd);
        fd = -1;
    }
    return fd;
}

static void host_input(struct fuzz_virtio *f, const uint8_t *buf, size_t len)
{
    (void)f;
    if (!len)
        return;
    unsigned what = buf[0] & 3, which = len > 1 ? buf[1] % HOST_FDS : 0;
    int *fd = &clients[which];
    switch (what) {
    case 0:
        for (which = 0; which < HOST_FDS && clients[which] >= 0; which++)
            ;
        if (which == HOST_FDS || (clients[which] = host_connect()) < 0)
            return;
        (void)!send(clients[which], buf + 1, len - 1, MSG_DONTWAIT | MSG_NOSIGNAL);
        break;
    case 1:
        if (*fd >= 0 && len > 2)
            (void)!send(*fd, buf + 2, len - 2, MSG_DONTWAIT | MSG_NOSIGNAL);
        break;
    case 2:
        if (*fd >= 0)
            close(*fd);
        *fd = -1;
        break;
    default:
        if (*fd >= 0)
            shutdown(*fd, SHUT_WR);
        break;
    }
}

static void drain_fd(int fd)
{
    static uint8_t sink[65536];
    while (fd >= 0 && recv(fd, sink, sizeof(sink), MSG_DONTWAIT) > 0)
        ;
}

static void host_drain(struct fuzz_virtio *f)
{
    (void)f;
    for (unsigned l = 0; l < 2; l++)
        for (unsigned i = 0; i < HOST_FDS; i++)
            if (accepted[i] < 0)
                accepted[i] = accept4(listeners[l], NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    for (unsigned i = 0; i < HOST_FDS; i++) {
        drain_fd(clients[i]);
        drain_fd(accepted[i]);
    }
}

static void close_all(int *fds)
{
    for (unsigned i = 0; i < HOST_FDS; i++) {
        if (fds[i] >= 0)
            close(fds[i]);
        fds[i] = -1;
    }
}

/* The sockets are files in /tmp: a run that ends (libFuzzer exits through exit()) leaves
 * none behind. */
static void remove_sockets(void)
{
    char lpath[96];
    unlink(path);
    for (unsigned l = 0; l < 2; l++) {
        snprintf(lpath, sizeof(lpath), "%s_%u", path, l + 1);
        unlink(lpath);
    }
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    char lpath[96];
    (void)argc;
    (void)argv;
    fuzz_quiet();
    snprintf(path, sizeof(path), "/tmp/godwit-fuzz-vsock-%d.sock", getpid());
    atexit(remove_sockets);
    for (unsigned l = 0; l < 2; l++) {
        snprintf(lpath, sizeof(lpath), "%s_%u", path, l + 1);
        if ((listeners[l] = unix_socket_listen(lpath, 64, NULL)) < 0)
            abort();
    }
    fuzz_virtio_init(&fv);
    fv.host_input = host_input;
    fv.host_drain = host_drain;
    struct virtio_vsock_config cfg = { .guest_cid = 3, .path = path };
    if (virtio_vsock_create(&vs, &cfg, &fv.loop, fuzz_gm(), &fv.vdev) != 0)
        abort();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct fuzz_in in = fuzz_in(data, size);
    struct virtio_vsock_counters c;
    fuzz_virtio_run(&fv, &in);
    host_drain(&fv);
    virtio_vsock_counters(vs, &c);
    /* The bounds a guest cannot push the device past, whatever it sent. */
    FUZZ_CHECK(c.conns <= VIRTIO_VSOCK_MAX_CONNS);
    FUZZ_CHECK(c.buffered <= VIRTIO_VSOCK_MAX_BUFFERED);
    if (getenv("GODWIT_FUZZ_LOG")) /* what a seed reached */
        fprintf(stderr, "vsock: rx %llu tx %llu bad %llu opened %llu refused %llu credit %llu\n",
                (unsigned long long)c.rx_packets, (unsigned long long)c.tx_packets,
                (unsigned long long)c.bad_packets, (unsigned long long)c.conns_opened,
                (unsigned long long)c.conns_refused, (unsigned long long)c.credit_violations);
    close_all(clients);
    close_all(accepted);
    fuzz_virtio_settle(&fv); /* the device sees them go (and the reset's closing runs) */
    return 0;
}
