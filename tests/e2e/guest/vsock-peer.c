/*
 * vsock-peer.c: the guest's side of the e2e vsock case (tests/e2e/run-devices.sh), a static
 * program for the busybox initramfs.
 *
 *   vsock-peer echo PORT COUNT   listens on vsock PORT and echoes each connection's bytes
 *                                back until it ends, COUNT connections (each in a child),
 *                                then exits 0 once all of them are done
 *   vsock-peer send PORT BYTES SEED
 *                                connects to host (CID 2) PORT, sends BYTES bytes of the
 *                                pattern SEED, shuts its sending side, and checks that the
 *                                host answers with the bytes' CRC-32 ("%08x\n", zlib's);
 *                                prints "send ok BYTES CRC" and exits 0 if so
 *
 *   vsock-peer flood PORT CONNS BYTES
 *                                opens CONNS connections to host PORT at once and writes up to
 *                                BYTES on each without waiting; prints "flood PORT connected C
 *                                refused R wrote W" and holds them open until killed
 *   vsock-peer cid               prints "cid N", the guest's CID as the driver read it
 *
 * The host side (tests/e2e/vsock_host.py) checks with Python's zlib.crc32, which is fast even
 * in the emulated test host.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#include <linux/vm_sockets.h>

#define CHUNK 65536

/* CRC-32 as zlib has it: reflected, polynomial 0xedb88320, inverted in and out. */
static uint32_t crc32_update(uint32_t crc, const uint8_t *p, size_t n)
{
    static uint32_t table[256];
    if (!table[1])
        for (uint32_t i = 0; i < 256; i++) {
            uint32_t c = i;
            for (int k = 0; k < 8; k++)
                c = c & 1 ? 0xedb88320u ^ (c >> 1) : c >> 1;
            table[i] = c;
        }
    crc = ~crc;
    for (size_t i = 0; i < n; i++)
        crc = table[(crc ^ p[i]) & 0xff] ^ (crc >> 8);
    return ~crc;
}

/* The pattern's bytes: the high byte of a 32-bit LCG, seeded by SEED. */
static void pattern(uint32_t *x, uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        *x = *x * 1103515245u + 12345u;
        p[i] = (uint8_t)(*x >> 24);
    }
}

static int write_all(int fd, const uint8_t *p, size_t n)
{
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static int echo_one(int fd)
{
    static uint8_t buf[CHUNK];
    for (;;) {
        ssize_t n = read(fd, buf, sizeof(buf));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return 1;
        if (n == 0)
            return 0;
        if (write_all(fd, buf, (size_t)n) < 0)
            return 1;
    }
}

static int cmd_echo(unsigned port, unsigned count)
{
    struct sockaddr_vm sa = { .svm_family = AF_VSOCK, .svm_cid = VMADDR_CID_ANY,
                              .svm_port = port };
    int l = socket(AF_VSOCK, SOCK_STREAM, 0);
    if (l < 0 || bind(l, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(l, 64) < 0) {
        perror("vsock-peer: listen");
        return 1;
    }
    printf("vsock-peer: listening on %u\n", port);
    fflush(stdout);
    unsigned failed = 0;
    for (unsigned i = 0; i < count; i++) {
        int fd = accept(l, NULL, NULL);
        if (fd < 0) {
            perror("vsock-peer: accept");
            return 1;
        }
        pid_t pid = fork();
        if (pid == 0)
            _exit(echo_one(fd));
        close(fd);
        if (pid < 0)
            failed++;
    }
    int status;
    while (wait(&status) > 0)
        failed += !WIFEXITED(status) || WEXITSTATUS(status) != 0;
    printf("echo done %u failed %u\n", count, failed);
    return failed != 0;
}

static int cmd_send(unsigned port, unsigned long long bytes, unsigned seed)
{
    struct sockaddr_vm sa = { .svm_family = AF_VSOCK, .svm_cid = VMADDR_CID_HOST,
                              .svm_port = port };
    static uint8_t buf[CHUNK];
    char reply[64] = { 0 }, want[64];
    uint32_t x = seed, crc = 0;
    int fd = socket(AF_VSOCK, SOCK_STREAM, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        perror("vsock-peer: connect");
        return 1;
    }
    for (unsigned long long left = bytes; left;) {
        size_t n = left < CHUNK ? (size_t)left : CHUNK;
        pattern(&x, buf, n);
        crc = crc32_update(crc, buf, n);
        if (write_all(fd, buf, n) < 0) {
            perror("vsock-peer: write");
            return 1;
        }
        left -= n;
    }
    shutdown(fd, SHUT_WR);
    size_t got = 0;
    for (ssize_t n; got < sizeof(reply) - 1 && (n = read(fd, reply + got, sizeof(reply) - 1 - got)) != 0;) {
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            perror("vsock-peer: read");
            return 1;
        }
        got += (size_t)n;
    }
    snprintf(want, sizeof(want), "%08x\n", crc);
    if (strcmp(reply, want) != 0) {
        printf("send bad %llu: the host answered '%s', want %s", bytes, reply, want);
        return 1;
    }
    printf("send ok %llu %08x\n", bytes, crc);
    return 0;
}

static int cmd_flood(unsigned port, unsigned conns, unsigned long long bytes)
{
    struct sockaddr_vm sa = { .svm_family = AF_VSOCK, .svm_cid = VMADDR_CID_HOST,
                              .svm_port = port };
    static uint8_t buf[CHUNK];
    unsigned connected = 0, refused = 0;
    unsigned long long wrote = 0;
    memset(buf, 0x5a, sizeof(buf));
    for (unsigned i = 0; i < conns; i++) {
        int fd = socket(AF_VSOCK, SOCK_STREAM, 0);
        if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
            refused++;
            if (fd >= 0)
                close(fd);
            continue;
        }
        connected++;
        for (unsigned long long left = bytes; left;) {
            ssize_t w = send(fd, buf, left < CHUNK ? (size_t)left : CHUNK, MSG_DONTWAIT);
            if (w <= 0)
                break; /* out of credit: the host does not read */
            wrote += (unsigned long long)w;
            left -= (unsigned long long)w;
        }
    }
    printf("flood %u connected %u refused %u wrote %llu\n", port, connected, refused, wrote);
    fflush(stdout);
    while (pause() < 0 && errno == EINTR)
        ;
    return 1;
}

static int cmd_cid(void)
{
    unsigned cid = 0;
    int fd = open("/dev/vsock", O_RDONLY | O_CLOEXEC);
    if (fd < 0 || ioctl(fd, IOCTL_VM_SOCKETS_GET_LOCAL_CID, &cid) < 0) {
        perror("vsock-peer: /dev/vsock");
        return 1;
    }
    printf("cid %u\n", cid);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc == 2 && strcmp(argv[1], "cid") == 0)
        return cmd_cid();
    if (argc == 5 && strcmp(argv[1], "flood") == 0)
        return cmd_flood((unsigned)strtoul(argv[2], NULL, 10),
                         (unsigned)strtoul(argv[3], NULL, 10), strtoull(argv[4], NULL, 10));
    if (argc == 4 && strcmp(argv[1], "echo") == 0)
        return cmd_echo((unsigned)strtoul(argv[2], NULL, 10), (unsigned)strtoul(argv[3], NULL, 10));
    if (argc == 5 && strcmp(argv[1], "send") == 0)
        return cmd_send((unsigned)strtoul(argv[2], NULL, 10), strtoull(argv[3], NULL, 10),
                        (unsigned)strtoul(argv[4], NULL, 10));
    fprintf(stderr, "usage: vsock-peer echo PORT COUNT | send PORT BYTES SEED | "
                    "flood PORT CONNS BYTES | cid\n");
    return 2;
}
