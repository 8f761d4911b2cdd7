/*
 * vsock-stream.c: the guest's end of bench/agent.sh's vsock stream throughput, a static
 * program that bench/build-agent-guest.sh puts in the guest as /usr/bin/vsock-stream.
 *
 *   vsock-stream send PORT MIB   connects to the host (CID 2) on PORT, writes MIB MiB of
 *                                zeros in 64 KiB writes, shuts its side and waits for the
 *                                host's close
 *   vsock-stream recv PORT       listens on PORT for one connection, reads it to its end,
 *                                answers the byte count as a line, and closes
 *
 * The host times its own end (bench/vsock_bench.py): the guest only moves bytes.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <linux/vm_sockets.h>

#define CHUNK (64 * 1024)

static int fail(const char *what)
{
    fprintf(stderr, "vsock-stream: %s: %s\n", what, strerror(errno));
    return 1;
}

static int send_zeros(unsigned port, unsigned long mib)
{
    static char buf[CHUNK];
    struct sockaddr_vm sa = { .svm_family = AF_VSOCK, .svm_port = port, .svm_cid = 2 };
    int fd = socket(AF_VSOCK, SOCK_STREAM, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
        return fail("connect");
    for (unsigned long left = mib << 20; left;) {
        ssize_t n = write(fd, buf, left < CHUNK ? left : CHUNK);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return fail("write");
        left -= (unsigned long)n;
    }
    /* The host reads to the end of file, then closes: all of it arrived. */
    shutdown(fd, SHUT_WR);
    while (read(fd, buf, sizeof(buf)) > 0)
        ;
    close(fd);
    return 0;
}

static int recv_all(unsigned port)
{
    static char buf[CHUNK];
    struct sockaddr_vm sa = { .svm_family = AF_VSOCK, .svm_port = port, .svm_cid = VMADDR_CID_ANY };
    int lfd = socket(AF_VSOCK, SOCK_STREAM, 0);
    if (lfd < 0 || bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(lfd, 1) < 0)
        return fail("listen");
    int fd = accept(lfd, NULL, NULL);
    if (fd < 0)
        return fail("accept");
    unsigned long long total = 0;
    for (;;) {
        ssize_t n = read(fd, buf, sizeof(buf));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return fail("read");
        if (n == 0)
            break;
        total += (unsigned long long)n;
    }
    int len = snprintf(buf, sizeof(buf), "%llu\n", total);
    if (write(fd, buf, (size_t)len) != len)
        return fail("write");
    close(fd);
    close(lfd);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc == 4 && strcmp(argv[1], "send") == 0)
        return send_zeros((unsigned)strtoul(argv[2], NULL, 10), strtoul(argv[3], NULL, 10));
    if (argc == 3 && strcmp(argv[1], "recv") == 0)
        return recv_all((unsigned)strtoul(argv[2], NULL, 10));
    fprintf(stderr, "usage: vsock-stream send PORT MIB | vsock-stream recv PORT\n");
    return 2;
}
