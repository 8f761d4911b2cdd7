/* channel.c: the live-migration stream: connecting, listening, and checked messages. */
#define _GNU_SOURCE
#include "migration/channel.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/if_tun.h>
#include <linux/kvm.h>
#include <net/if.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "io/fd_io.h"
#include "log.h"
#include "migration/state.h"
#include "virtio/console.h"

#define MIG_MAGIC 0x474d5747u /* "GWMG" little-endian */
#define HEADER_LEN 16u
#define MIG_ROUTE_SIZE 16u /* u32 GSI, u32 data, u64 address */
#define RUN_ENTRY_SIZE 12u /* u64 first page, u32 count */
#define CLIENT_FIXED 12u   /* CLIENTS before its input: u32 pending, u32 written, u16 x 2 */

const char *mig_type_name(uint32_t type)
{
    switch (type) {
    case MIG_HELLO: return "HELLO";
    case MIG_PAGES: return "PAGES";
    case MIG_STATE: return "STATE";
    case MIG_DONE: return "DONE";
    case MIG_ACK: return "ACK";
    case MIG_ERROR: return "ERROR";
    case MIG_CPU: return "CPU";
    case MIG_READY: return "READY";
    case MIG_GO: return "GO";
    case MIG_RUNNING: return "RUNNING";
    case MIG_MEMFD: return "MEMFD";
    case MIG_DEVICES: return "DEVICES";
    case MIG_CONNECTIONS: return "CONNECTIONS";
    case MIG_JOIN: return "JOIN";
    case MIG_PASS_END: return "PASS_END";
    case MIG_SYNC: return "SYNC";
    case MIG_SYNCED: return "SYNCED";
    case MIG_ROUTES: return "ROUTES";
    case MIG_RUNS: return "RUNS";
    case MIG_CLIENTS: return "CLIENTS";
    }
    return "unknown";
}

/* The most a payload of `type` may hold; 0: the type is not known. */
static uint64_t max_len(uint32_t type)
{
    switch (type) {
    case MIG_HELLO: return 4 + MIG_MAX_CONFIG;
    case MIG_PAGES: return 12 + (uint64_t)MIG_MAX_RUN_PAGES * MIG_PAGE_SIZE;
    case MIG_RUNS:
        return 4 + (uint64_t)MIG_MAX_RUN_PAGES * (RUN_ENTRY_SIZE + MIG_PAGE_SIZE);
    case MIG_STATE: return MIG_MAX_STATE;
    case MIG_ERROR: return 1024;
    case MIG_CPU: return 4 + (uint64_t)MIG_MAX_CPUID_ENTRIES * sizeof(struct kvm_cpuid_entry2);
    case MIG_MEMFD: return 8;
    case MIG_DEVICES: return 16;
    case MIG_CONNECTIONS: return 12;
    case MIG_JOIN: return 12;
    case MIG_PASS_END: return 4;
    case MIG_ROUTES: return 4 + (uint64_t)MIG_MAX_ROUTES * MIG_ROUTE_SIZE;
    case MIG_CLIENTS: return CLIENT_FIXED + VIRTIO_CONSOLE_PENDING_MAX;
    case MIG_READY:
    case MIG_DONE:
    case MIG_ACK:
    case MIG_GO:
    case MIG_RUNNING:
    case MIG_SYNC:
    case MIG_SYNCED: return 0;
    }
    return UINT64_MAX;
}

/* ---- addresses ---- */

/* Splits "tcp:HOST:PORT" (HOST may be [v6]) into host and port. */
static int parse_tcp(const char *rest, char *host, size_t len, const char **port)
{
    const char *colon = strrchr(rest, ':');
    if (!colon || colon == rest || !colon[1])
        return -EINVAL;
    size_t n = (size_t)(colon - rest);
    if (rest[0] == '[' && n >= 2 && rest[n - 1] == ']')
        rest++, n -= 2;
    if (n >= len)
        return -EINVAL;
    memcpy(host, rest, n);
    host[n] = '\0';
    *port = colon + 1;
    return 0;
}

static int unix_address(const char *path, struct sockaddr_un *sa)
{
    memset(sa, 0, sizeof(*sa));
    sa->sun_family = AF_UNIX;
    if (strlen(path) >= sizeof(sa->sun_path))
        return -ENAMETOOLONG;
    strcpy(sa->sun_path, path);
    return 0;
}

/* Connecting, and every send and receive after, give up after `ms` without progress: a
 * destination that does not answer or stops reading must not hold the VM's main loop. */
static void set_timeouts(int fd, unsigned ms)
{
    struct timeval tv = { .tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000 };
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
}

static long ms_between(const struct timespec *a, const struct timespec *b)
{
    return (b->tv_sec - a->tv_sec) * 1000 + (b->tv_nsec - a->tv_nsec) / 1000000;
}

/*
 * connect() that a signal does not cut short (a blocking one returns EINTR and cannot simply
 * be called again) and that gives up after `ms`: non-blocking, then polled for. A UNIX
 * listener whose backlog is full (EAGAIN) is tried again every 10 ms.
 */
static int connect_within(int fd, const struct sockaddr *sa, socklen_t len, unsigned ms)
{
    int flags = fcntl(fd, F_GETFL);
    if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0)
        return -errno;
    struct timespec start, now;
    clock_gettime(CLOCK_MONOTONIC, &start);
    int ret;
    for (;;) {
        ret = connect(fd, sa, len) == 0 ? 0 : -errno;
        clock_gettime(CLOCK_MONOTONIC, &now);
        if (ret != -EAGAIN || ms_between(&start, &now) >= (long)ms)
            break;
        nanosleep(&(struct timespec){ .tv_nsec = 10000000 }, NULL);
    }
    while (ret == -EINPROGRESS) {
        clock_gettime(CLOCK_MONOTONIC, &now);
        long left = (long)ms - ms_between(&start, &now);
        struct pollfd p = { .fd = fd, .events = POLLOUT };
        int n = left > 0 ? poll(&p, 1, (int)left) : 0;
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            ret = n == 0 ? -ETIMEDOUT : -errno;
            break;
        }
        int err = 0;
        socklen_t elen = sizeof(err);
        ret = getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &elen) < 0 ? -errno : -err;
    }
    if (fcntl(fd, F_SETFL, flags) < 0 && ret == 0)
        ret = -errno;
    return ret;
}

/* A socket listening on, or connected to (within timeout_ms), the URI's address (the first
 * that works). */
static int open_uri(const char *uri, bool listening, unsigned timeout_ms)
{
    char host[256];
    const char *port;
    if (strncmp(uri, "unix:", 5) == 0) {
        struct sockaddr_un sa;
        int ret = unix_address(uri + 5, &sa);
        int fd = ret < 0 ? ret : socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
            return fd == -1 ? -errno : fd;
        if (listening)
            unlink(sa.sun_path); /* a stale socket of an earlier run: ours to replace */
        else
            set_timeouts(fd, timeout_ms);
        if (listening)
            ret = bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0 &&
                          listen(fd, MIG_MAX_CONNECTIONS) == 0 ? 0 : -errno;
        else
            ret = connect_within(fd, (struct sockaddr *)&sa, sizeof(sa), timeout_ms);
        if (ret < 0) {
            close(fd);
            return ret;
        }
        return fd;
    }
    if (strncmp(uri, "tcp:", 4) != 0 || parse_tcp(uri + 4, host, sizeof(host), &port) < 0)
        return -EINVAL;
    struct addrinfo hints = { .ai_socktype = SOCK_STREAM, .ai_flags = listening ? AI_PASSIVE : 0 };
    struct addrinfo *list;
    int gai = getaddrinfo(host, port, &hints, &list);
    if (gai != 0)
        return -EHOSTUNREACH;
    int fd = -ENOTCONN;
    for (struct addrinfo *a = list; a; a = a->ai_next) {
        int s = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
        if (s < 0)
            continue;
        int one = 1;
        setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        if (!listening)
            set_timeouts(s, timeout_ms);
        /* A backlog for every connection of a migration: the source opens them one after
         * the other, before this side accepts the extra ones. */
        int ret = listening ? (bind(s, a->ai_addr, a->ai_addrlen) == 0 &&
                               listen(s, MIG_MAX_CONNECTIONS) == 0 ? 0 : -errno)
                            : connect_within(s, a->ai_addr, a->ai_addrlen, timeout_ms);
        if (ret == 0) {
            fd = s;
            break;
        }
        fd = ret;
        close(s);
    }
    freeaddrinfo(list);
    return fd;
}

/* Small messages (ACK, the last pages) must not wait for Nagle. */
static void tune(int fd)
{
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

int mig_connect(const char *uri, unsigned timeout_ms)
{
    int fd = open_uri(uri, false, timeout_ms);
    if (fd < 0) {
        log_error("migration: cannot connect to %s: %s", uri,
                  fd == -EINVAL ? "not tcp:HOST:PORT or unix:PATH" : strerror(-fd));
        return fd;
    }
    tune(fd);
    return fd;
}

int mig_listen(const char *uri)
{
    int listener = open_uri(uri, true, 0);
    if (listener < 0)
        log_error("migration: cannot listen on %s: %s", uri,
                  listener == -EINVAL ? "not tcp:HOST:PORT or unix:PATH" : strerror(-listener));
    return listener;
}

int mig_accept_on(int listener, const char *uri, unsigned timeout_ms)
{
    struct pollfd p = { .fd = listener, .events = POLLIN };
    int ret;
    for (;;) {
        int n = timeout_ms ? poll(&p, 1, (int)timeout_ms) : 1;
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            ret = n == 0 ? -ETIMEDOUT : -errno;
            break;
        }
        int fd = accept4(listener, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0 && errno == EINTR)
            continue;
        ret = fd < 0 ? -errno : fd;
        break;
    }
    if (ret < 0)
        log_error("migration: accepting on %s failed: %s", uri,
                  ret == -ETIMEDOUT ? "no connection came in time" : strerror(-ret));
    else
        tune(ret);
    return ret;
}

void mig_unlisten(int listener, const char *uri)
{
    close(listener);
    if (strncmp(uri, "unix:", 5) == 0)
        unlink(uri + 5);
}

/* ---- messages ---- */

/* Steps *iov and *n past `done` bytes that a partial sendmsg or readv moved. */
static void iov_advance(struct iovec **iov, int *n, size_t done)
{
    while (*n > 0 && done >= (*iov)->iov_len) {
        done -= (*iov)->iov_len;
        (*iov)++, (*n)--;
    }
    if (*n > 0) {
        (*iov)->iov_base = (uint8_t *)(*iov)->iov_base + done;
        (*iov)->iov_len -= done;
    }
}

static int write_iov(int fd, struct iovec *iov, int n)
{
    while (n > 0) {
        /* MSG_NOSIGNAL: a peer that went away is an error to report, not a SIGPIPE. */
        struct msghdr msg = { .msg_iov = iov, .msg_iovlen = (size_t)n };
        ssize_t w = sendmsg(fd, &msg, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            return errno == EAGAIN ? -ETIMEDOUT : -errno; /* SO_SNDTIMEO ran out */
        iov_advance(&iov, &n, (size_t)w);
    }
    return 0;
}

static void put_header(uint8_t *h, uint32_t type, uint64_t len)
{
    le_put(h, 4, MIG_MAGIC);
    le_put(h + 4, 4, type);
    le_put(h + 8, 8, len);
}

int mig_send2(int fd, enum mig_type type, const void *a, size_t alen, const void *b, size_t blen)
{
    uint8_t header[HEADER_LEN];
    struct iovec iov[3] = { { header, sizeof(header) } };
    int n = 1;
    put_header(header, type, (uint64_t)alen + blen);
    if (alen)
        iov[n++] = (struct iovec){ (void *)a, alen };
    if (blen)
        iov[n++] = (struct iovec){ (void *)b, blen };
    return write_iov(fd, iov, n);
}

int mig_send(int fd, enum mig_type type, const void *payload, size_t len)
{
    return mig_send2(fd, type, payload, len, NULL, 0);
}

int mig_recv_all(int fd, void *buf, size_t len)
{
    int ret = fd_read_exact(fd, buf, len);
    return ret == -EAGAIN ? -ETIMEDOUT : ret; /* SO_RCVTIMEO ran out */
}

int mig_send_runs(int fd, const struct mig_run *runs, unsigned n, void *const *hosts)
{
    uint8_t head[HEADER_LEN + 4 + MIG_MAX_RUN_PAGES * RUN_ENTRY_SIZE];
    struct iovec iov[2 + MIG_MAX_RUN_PAGES];
    uint64_t pages = 0;
    if (!n || n > MIG_MAX_RUN_PAGES)
        return -EINVAL;
    le_put(head + HEADER_LEN, 4, n);
    for (unsigned i = 0; i < n; i++) {
        le_put(head + HEADER_LEN + 4 + i * RUN_ENTRY_SIZE, 8, runs[i].first);
        le_put(head + HEADER_LEN + 4 + i * RUN_ENTRY_SIZE + 8, 4, runs[i].count);
        iov[1 + i] = (struct iovec){ hosts[i], (size_t)runs[i].count * MIG_PAGE_SIZE };
        pages += runs[i].count;
    }
    if (pages > MIG_MAX_RUN_PAGES)
        return -EINVAL;
    size_t table = 4 + (size_t)n * RUN_ENTRY_SIZE;
    put_header(head, MIG_RUNS, table + pages * MIG_PAGE_SIZE);
    iov[0] = (struct iovec){ head, HEADER_LEN + table };
    return write_iov(fd, iov, (int)n + 1);
}

int mig_recv_runs_table(int fd, uint64_t len, struct mig_run *runs, unsigned *n)
{
    uint8_t table[4 + MIG_MAX_RUN_PAGES * RUN_ENTRY_SIZE];
    if (len < 4)
        goto bad;
    int ret = mig_recv_all(fd, table, 4);
    if (ret < 0)
        return ret;
    uint32_t count = (uint32_t)le_get(table, 4);
    if (!count || count > MIG_MAX_RUN_PAGES || len < 4 + (uint64_t)count * RUN_ENTRY_SIZE)
        goto bad;
    if ((ret = mig_recv_all(fd, table + 4, (size_t)count * RUN_ENTRY_SIZE)) < 0)
        return ret;
    uint64_t pages = 0;
    for (uint32_t i = 0; i < count; i++) {
        const uint8_t *e = table + 4 + i * RUN_ENTRY_SIZE;
        runs[i] = (struct mig_run){ .first = le_get(e, 8), .count = (uint32_t)le_get(e + 8, 4) };
        if (!runs[i].count || runs[i].count > MIG_MAX_RUN_PAGES - pages)
            goto bad;
        pages += runs[i].count;
    }
    if (len != 4 + (uint64_t)count * RUN_ENTRY_SIZE + pages * MIG_PAGE_SIZE)
        goto bad;
    *n = count;
    return 0;
bad:
    log_error("migration: a RUNS message of %llu bytes whose runs are not 1 to %u, of 1 to %u "
              "pages in all, or not its length", (unsigned long long)len, MIG_MAX_RUN_PAGES,
              MIG_MAX_RUN_PAGES);
    return -EPROTO;
}

int mig_recv_iov(int fd, struct iovec *iov, unsigned count)
{
    int n = (int)count;
    while (n > 0) {
        ssize_t r = readv(fd, iov, n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return errno == EAGAIN ? -ETIMEDOUT : -errno; /* SO_RCVTIMEO ran out */
        if (r == 0)
            return -ECONNRESET;
        iov_advance(&iov, &n, (size_t)r);
    }
    return 0;
}

/* Checks a header's bytes: the magic, and a length within its type's bound. */
static int parse_header(const uint8_t *b, struct mig_header *h)
{
    uint32_t magic = (uint32_t)le_get(b, 4), type = (uint32_t)le_get(b + 4, 4);
    uint64_t len = le_get(b + 8, 8);
    if (magic != MIG_MAGIC) {
        log_error("migration: the stream is not a godwit migration (bad magic)");
        return -EPROTO;
    }
    if (max_len(type) == UINT64_MAX || len > max_len(type)) {
        log_error("migration: a %s message of %llu bytes (type %u) is not allowed",
                  mig_type_name(type), (unsigned long long)len, type);
        return -EPROTO;
    }
    *h = (struct mig_header){ .type = type, .len = len };
    return 0;
}

int mig_recv_header(int fd, struct mig_header *h)
{
    uint8_t b[HEADER_LEN];
    int ret = mig_recv_all(fd, b, sizeof(b));
    return ret < 0 ? ret : parse_header(b, h);
}

/* Keeps the descriptors of an SCM_RIGHTS message in fds[*n] onwards while `max` allow, and
 * closes the rest, counting all of them in *n: a source may attach any number, and none of
 * them may stay open here unaccounted. */
static void take_fds(struct msghdr *msg, int *fds, unsigned max, unsigned *n)
{
    for (struct cmsghdr *c = CMSG_FIRSTHDR(msg); c; c = CMSG_NXTHDR(msg, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
            continue;
        size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (size_t i = 0; i < count; i++) {
            int got;
            memcpy(&got, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
            if (*n < max)
                fds[*n] = got;
            else
                close(got);
            ++*n;
        }
    }
    if (msg->msg_flags & MSG_CTRUNC) /* the kernel dropped what did not fit: too many */
        *n = max + 1;
}

/* Exactly `len` bytes read with recvmsg, keeping up to `max` descriptors that ride on them in
 * fds (the rest -1); *n counts every one that came (more than max: the rest were closed). */
static int recv_all_fds(int fd, uint8_t *b, size_t len, int *fds, unsigned max, unsigned *n)
{
    size_t got = 0;
    *n = 0;
    for (unsigned i = 0; i < max; i++)
        fds[i] = -1;
    while (got < len) {
        union {
            char buf[CMSG_SPACE((MIG_MAX_DEVICE_FDS + 1) * sizeof(int))];
            struct cmsghdr align;
        } control;
        struct iovec iov = { b + got, len - got };
        struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.buf,
                              .msg_controllen = sizeof(control.buf) };
        ssize_t r = recvmsg(fd, &msg, MSG_CMSG_CLOEXEC);
        if (r < 0 && errno == EINTR)
            continue;
        if (r > 0)
            take_fds(&msg, fds, max, n);
        if (r <= 0)
            return r < 0 ? (errno == EAGAIN ? -ETIMEDOUT : -errno) : -ECONNRESET;
        got += (size_t)r;
    }
    return 0;
}

/* A header read with recvmsg, with the descriptors that ride on it (recv_all_fds). */
static int recv_header_fds(int fd, struct mig_header *h, int *fds, unsigned max, unsigned *n)
{
    uint8_t b[HEADER_LEN];
    int ret = recv_all_fds(fd, b, sizeof(b), fds, max, n);
    return ret < 0 ? ret : parse_header(b, h);
}

/* The same keeping only the first descriptor in *passed (-1: none came). */
static int recv_header_fd(int fd, struct mig_header *h, int *passed)
{
    unsigned n;
    return recv_header_fds(fd, h, passed, 1, &n);
}

int mig_send_hello(int fd, const char *config_json)
{
    uint8_t version[4];
    le_put(version, 4, MIG_PROTOCOL_VERSION);
    return mig_send2(fd, MIG_HELLO, version, sizeof(version), config_json, strlen(config_json));
}

/* HELLO's payload, after its header `h` (any type: refused unless HELLO). */
static int recv_hello_body(int fd, const struct mig_header *h, char **config_json)
{
    uint8_t v[4];
    int ret = 0;
    if (h->type != MIG_HELLO || h->len < 4) {
        log_error("migration: the stream starts with %s, not HELLO", mig_type_name(h->type));
        return -EPROTO;
    }
    ret = mig_recv_all(fd, v, sizeof(v));
    uint32_t version = (uint32_t)le_get(v, 4);
    if (ret == 0 && (version < MIG_MIN_PROTOCOL_VERSION || version > MIG_PROTOCOL_VERSION)) {
        log_error("migration: the source speaks protocol %u, this godwit %u to %u", version,
                  MIG_MIN_PROTOCOL_VERSION, MIG_PROTOCOL_VERSION);
        ret = -EPROTO;
    }
    char *text = ret == 0 ? malloc(h->len - 4 + 1) : NULL;
    if (ret == 0 && !text)
        ret = -ENOMEM;
    if (ret == 0 && (ret = mig_recv_all(fd, text, h->len - 4)) == 0) {
        text[h->len - 4] = '\0';
        if (strlen(text) != h->len - 4) {
            log_error("migration: the configuration is not text");
            ret = -EPROTO;
        }
    }
    if (ret < 0) {
        free(text);
        if (ret != -EPROTO)
            log_error("migration: receiving the configuration failed: %s", strerror(-ret));
        return ret;
    }
    *config_json = text;
    return 0;
}

int mig_recv_hello(int fd, char **config_json)
{
    struct mig_header h;
    int ret = mig_recv_header(fd, &h);
    if (ret < 0 && ret != -EPROTO)
        log_error("migration: receiving the configuration failed: %s", strerror(-ret));
    return ret < 0 ? ret : recv_hello_body(fd, &h, config_json);
}

int mig_send_with_fds(int fd, const void *buf, size_t len, const int *passed, unsigned n)
{
    union {
        char buf[CMSG_SPACE(MIG_MAX_DEVICE_FDS * sizeof(int))];
        struct cmsghdr align;
    } control;
    if (n > MIG_MAX_DEVICE_FDS || !len)
        return -EINVAL;
    memset(&control, 0, sizeof(control));
    struct iovec iov = { (void *)buf, len };
    struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1 };
    if (n) {
        msg.msg_control = control.buf;
        msg.msg_controllen = CMSG_SPACE(n * sizeof(int));
        struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(n * sizeof(int));
        memcpy(CMSG_DATA(c), passed, n * sizeof(int));
    }
    ssize_t w;
    do
        w = sendmsg(fd, &msg, MSG_NOSIGNAL);
    while (w < 0 && errno == EINTR);
    if (w < 0)
        return errno == EAGAIN ? -ETIMEDOUT : -errno;
    /* The descriptors went with the first byte; the rest, if the socket took only part. */
    iov.iov_base = (uint8_t *)iov.iov_base + w;
    iov.iov_len = len - (size_t)w;
    return iov.iov_len ? write_iov(fd, &iov, 1) : 0;
}

int mig_send_with_fd(int fd, const void *buf, size_t len, int passed)
{
    return mig_send_with_fds(fd, buf, len, &passed, 1);
}

int mig_send_memfd(int fd, int memfd, uint64_t size)
{
    uint8_t msg_bytes[HEADER_LEN + 8];
    put_header(msg_bytes, MIG_MEMFD, 8);
    le_put(msg_bytes + HEADER_LEN, 8, size);
    return mig_send_with_fd(fd, msg_bytes, sizeof(msg_bytes), memfd);
}

/* MEMFD's payload and descriptor: a regular file (a memfd is one) of at least the size the
 * source announced, opened for writing. Returns 0 or -EPROTO after one line. */
static int check_memfd(int fd, uint64_t len, int passed)
{
    uint8_t b[8];
    struct stat st;
    int ret = len == sizeof(b) ? mig_recv_all(fd, b, sizeof(b)) : -EPROTO;
    if (ret < 0 && ret != -EPROTO)
        return ret;
    const char *why = ret < 0 ? "its payload is not a size"
                      : passed < 0 ? "no file descriptor came with it"
                      : fstat(passed, &st) < 0 || !S_ISREG(st.st_mode) ? "its descriptor is not a memory file"
                      : (uint64_t)st.st_size < le_get(b, 8) ? "the memory file is smaller than announced"
                      : (fcntl(passed, F_GETFL) & O_ACCMODE) != O_RDWR ? "the memory file is not writable"
                                                                       : NULL;
    if (!why)
        return 0;
    log_error("migration: the source's MEMFD is refused: %s", why);
    return -EPROTO;
}

int mig_send_connections(int fd, const struct mig_connections *c)
{
    uint8_t b[12];
    le_put(b, 4, c->count);
    le_put(b + 4, 8, c->token);
    return mig_send(fd, MIG_CONNECTIONS, b, sizeof(b));
}

/* CONNECTIONS' payload: a count this godwit takes, and the token. -EPROTO after one line. */
static int recv_connections(int fd, uint64_t len, struct mig_connections *c)
{
    uint8_t b[12];
    if (len != sizeof(b)) {
        log_error("migration: a CONNECTIONS message of %llu bytes", (unsigned long long)len);
        return -EPROTO;
    }
    int ret = mig_recv_all(fd, b, sizeof(b));
    if (ret < 0)
        return ret;
    uint32_t count = (uint32_t)le_get(b, 4);
    if (count < 2 || count > MIG_MAX_CONNECTIONS) {
        log_error("migration: the source asks for %u connections; this godwit takes 2 to %u",
                  count, MIG_MAX_CONNECTIONS);
        return -EPROTO;
    }
    *c = (struct mig_connections){ .count = count, .token = le_get(b + 4, 8) };
    return 0;
}

int mig_send_join(int fd, uint64_t token, unsigned index)
{
    uint8_t b[12];
    le_put(b, 8, token);
    le_put(b + 8, 4, index);
    return mig_send(fd, MIG_JOIN, b, sizeof(b));
}

int mig_recv_join(int fd, const struct mig_connections *c, unsigned joined, unsigned timeout_ms)
{
    struct pollfd p = { .fd = fd, .events = POLLIN };
    struct mig_header h;
    uint8_t b[12];
    int n = poll(&p, 1, (int)timeout_ms);
    int ret = n > 0 ? mig_recv_header(fd, &h) : n == 0 ? -ETIMEDOUT : -errno;
    if (ret == 0 && (h.type != MIG_JOIN || h.len != sizeof(b))) {
        log_error("migration: an extra connection opens with %s, not JOIN", mig_type_name(h.type));
        return -EPROTO;
    }
    if (ret == 0)
        ret = mig_recv_all(fd, b, sizeof(b));
    if (ret < 0) {
        if (ret != -EPROTO)
            log_error("migration: an extra connection's JOIN did not come: %s",
                      ret == -ETIMEDOUT ? "timed out" : strerror(-ret));
        return ret;
    }
    uint32_t index = (uint32_t)le_get(b + 8, 4);
    const char *why = le_get(b, 8) != c->token ? "its token is not the migration's"
                      : index < 1 || index >= c->count ? "its index is out of range"
                      : joined & (1u << index) ? "its index joined already" : NULL;
    if (why) {
        log_error("migration: an extra connection (index %u of %u) is refused: %s", index,
                  c->count, why);
        return -EPROTO;
    }
    return (int)index;
}

int mig_recv_pass_end(int fd, uint64_t len, uint32_t *pass)
{
    uint8_t b[4];
    if (len != sizeof(b)) {
        log_error("migration: a PASS_END of %llu bytes", (unsigned long long)len);
        return -EPROTO;
    }
    int ret = mig_recv_all(fd, b, sizeof(b));
    if (ret == 0)
        *pass = (uint32_t)le_get(b, 4);
    return ret;
}

int mig_recv_opening(int fd, char **config_json, int *memfd, struct mig_connections *conns)
{
    struct mig_header h;
    int passed;
    *memfd = -1;
    *conns = (struct mig_connections){ .count = 1 };
    int ret = recv_header_fd(fd, &h, &passed);
    if (ret == 0 && h.type == MIG_MEMFD) {
        ret = check_memfd(fd, h.len, passed);
        if (ret == 0) {
            *memfd = passed;
            passed = -1;
            ret = mig_recv_hello(fd, config_json);
        }
    } else if (ret == 0 && h.type == MIG_CONNECTIONS) {
        ret = recv_connections(fd, h.len, conns);
        if (ret == 0)
            ret = mig_recv_hello(fd, config_json);
    } else if (ret == 0) {
        ret = recv_hello_body(fd, &h, config_json);
    } else if (ret != -EPROTO) {
        log_error("migration: receiving the configuration failed: %s", strerror(-ret));
    }
    if (passed >= 0)
        close(passed); /* on a message that carries none */
    if (ret < 0 && *memfd >= 0) {
        close(*memfd);
        *memfd = -1;
    }
    return ret;
}

unsigned mig_devices_count(const struct mig_devices *devs)
{
    return devs->nr_disks + devs->nr_taps + devs->nr_consoles + devs->nr_vsocks;
}

int mig_send_devices(int fd, const struct mig_devices *devs)
{
    uint8_t msg_bytes[HEADER_LEN + 16];
    bool sockets = devs->nr_consoles || devs->nr_vsocks;
    uint32_t len = sockets ? 16 : 8;
    if (devs->nr_disks > MIG_MAX_DEVICE_FDS || devs->nr_taps > MIG_MAX_DEVICE_FDS ||
        devs->nr_consoles > 1 || devs->nr_vsocks > 1 ||
        mig_devices_count(devs) > MIG_MAX_DEVICE_FDS)
        return -EINVAL;
    put_header(msg_bytes, MIG_DEVICES, len);
    le_put(msg_bytes + HEADER_LEN, 4, devs->nr_disks);
    le_put(msg_bytes + HEADER_LEN + 4, 4, devs->nr_taps);
    le_put(msg_bytes + HEADER_LEN + 8, 4, devs->nr_consoles);
    le_put(msg_bytes + HEADER_LEN + 12, 4, devs->nr_vsocks);
    return mig_send_with_fds(fd, msg_bytes, HEADER_LEN + len, devs->fds, mig_devices_count(devs));
}

void mig_devices_close(struct mig_devices *devs)
{
    for (unsigned i = 0; i < mig_devices_count(devs); i++)
        close(devs->fds[i]);
    devs->nr_disks = devs->nr_taps = devs->nr_consoles = devs->nr_vsocks = 0;
}

/* What is wrong with a disk's descriptor, or NULL: an image is a file or a block device. */
static const char *disk_fd_problem(int fd)
{
    struct stat st;
    if (fstat(fd, &st) < 0 || !(S_ISREG(st.st_mode) || S_ISBLK(st.st_mode)))
        return "is neither a regular file nor a block device";
    return NULL;
}

/* What is wrong with a tap's descriptor, or NULL: /dev/net/tun (misc 10:200) attached to a
 * tap (not a tun) with the virtio-net header, as the source set it up; or a queue of a
 * multi-queue tap that the source detached (its guest uses fewer pairs), which TUNGETIFF
 * answers with EBADFD, as it does a descriptor never attached. */
static const char *tap_fd_problem(int fd)
{
    struct stat st;
    struct ifreq ifr = { 0 };
    if (fstat(fd, &st) < 0 || !S_ISCHR(st.st_mode) || major(st.st_rdev) != 10 ||
        minor(st.st_rdev) != 200)
        return "is not /dev/net/tun";
    if (ioctl(fd, TUNGETIFF, &ifr) < 0)
        return errno == EBADFD ? NULL : "is not a tun/tap device";
    if (!(ifr.ifr_flags & IFF_TAP) || !(ifr.ifr_flags & IFF_VNET_HDR))
        return "is not a tap with the virtio-net header";
    return NULL;
}

/* What is wrong with a socket's descriptor, or NULL: the console's and the vsock device's are
 * UNIX stream sockets that listen (SO_ACCEPTCONN), the console's client one that does not. */
static const char *socket_fd_problem(int fd, bool want_listening)
{
    struct stat st;
    int domain = 0, type = 0, listening = 0;
    socklen_t len = sizeof(int);
    if (fstat(fd, &st) < 0 || !S_ISSOCK(st.st_mode))
        return "is not a socket";
    if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &len) < 0 || domain != AF_UNIX ||
        (len = sizeof(int), getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len)) < 0 ||
        type != SOCK_STREAM)
        return "is not a UNIX stream socket";
    len = sizeof(int);
    if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len) < 0 ||
        !listening != !want_listening)
        return want_listening ? "is not listening" : "is a listening socket";
    return NULL;
}

/* The `i`th descriptor of `devs`' announced counts: its kind, its index within the kind, and
 * what is wrong with it (NULL: nothing). */
static const char *device_fd_problem(const struct mig_devices *devs, unsigned i,
                                     const char **kind, unsigned *index)
{
    unsigned taps_end = devs->nr_disks + devs->nr_taps;
    *index = i < devs->nr_disks ? i : i < taps_end ? i - devs->nr_disks : 0;
    if (i < devs->nr_disks) {
        *kind = "disk";
        return disk_fd_problem(devs->fds[i]);
    }
    if (i < taps_end) {
        *kind = "tap queue";
        return tap_fd_problem(devs->fds[i]);
    }
    *kind = i == taps_end && devs->nr_consoles ? "console socket" : "vsock socket";
    return socket_fd_problem(devs->fds[i], true);
}

/* DEVICES' payload into devs' counts: 8 bytes (disks, taps) or 16 (and the sockets). */
static int read_device_counts(int fd, const struct mig_header *h, struct mig_devices *devs)
{
    uint8_t b[16] = { 0 };
    if (h->type != MIG_DEVICES) {
        log_error("migration: the source's %s came where its devices (DEVICES) belong",
                  mig_type_name(h->type));
        return -EPROTO;
    }
    if (h->len != 8 && h->len != 16) {
        log_error("migration: the source's DEVICES is %llu bytes long, neither 8 nor 16",
                  (unsigned long long)h->len);
        return -EPROTO;
    }
    int ret = mig_recv_all(fd, b, h->len);
    if (ret < 0)
        return ret;
    uint64_t counts[4] = { le_get(b, 4), le_get(b + 4, 4), le_get(b + 8, 4), le_get(b + 12, 4) };
    if (counts[0] > MIG_MAX_DEVICE_FDS || counts[1] > MIG_MAX_DEVICE_FDS || counts[2] > 1 ||
        counts[3] > 1) {
        log_error("migration: the source's devices are refused: %llu disks, %llu tap queues, "
                  "%llu console and %llu vsock sockets announced", (unsigned long long)counts[0],
                  (unsigned long long)counts[1], (unsigned long long)counts[2],
                  (unsigned long long)counts[3]);
        return -EPROTO;
    }
    devs->nr_disks = (unsigned)counts[0];
    devs->nr_taps = (unsigned)counts[1];
    devs->nr_consoles = (unsigned)counts[2];
    devs->nr_vsocks = (unsigned)counts[3];
    devs->sockets = h->len == 16;
    return 0;
}

/* DEVICES' payload and descriptors, checked: -EPROTO after one line. */
static int check_devices(int fd, const struct mig_header *h, unsigned n, struct mig_devices *devs)
{
    char why[160] = "";
    int ret = read_device_counts(fd, h, devs);
    if (ret < 0)
        return ret;
    if (n > MIG_MAX_DEVICE_FDS)
        snprintf(why, sizeof(why), "more than %u descriptors came", MIG_MAX_DEVICE_FDS);
    else if (mig_devices_count(devs) != n)
        snprintf(why, sizeof(why), "%u disks, %u tap queues, %u console and %u vsock sockets "
                 "announced, %u descriptors came", devs->nr_disks, devs->nr_taps,
                 devs->nr_consoles, devs->nr_vsocks, n);
    for (unsigned i = 0; !why[0] && i < n; i++) {
        const char *kind;
        unsigned index;
        const char *problem = device_fd_problem(devs, i, &kind, &index);
        if (problem)
            snprintf(why, sizeof(why), "%s %u's descriptor %s", kind, index, problem);
    }
    if (why[0]) {
        log_error("migration: the source's devices are refused: %s", why);
        return -EPROTO;
    }
    return 0;
}

int mig_recv_devices(int fd, struct mig_devices *devs)
{
    struct mig_header h;
    unsigned n;
    *devs = (struct mig_devices){ 0 };
    int ret = recv_header_fds(fd, &h, devs->fds, MIG_MAX_DEVICE_FDS, &n);
    if (ret == 0)
        ret = check_devices(fd, &h, n, devs);
    else if (ret != -EPROTO)
        log_error("migration: receiving the source's devices failed: %s", strerror(-ret));
    if (ret < 0) {
        devs->nr_disks = devs->nr_taps = devs->nr_consoles = devs->nr_vsocks = 0;
        for (unsigned i = 0; i < n && i < MIG_MAX_DEVICE_FDS; i++)
            if (devs->fds[i] >= 0)
                close(devs->fds[i]);
    }
    return ret;
}

int mig_send_cpu(int fd, const struct kvm_cpuid2 *cpuid)
{
    uint8_t count[4];
    le_put(count, 4, cpuid->nent);
    /* The entries as they lie in memory: both ends are x86-64, little-endian, and the struct
     * has no padding of its own (seven u32 and three reserved ones). */
    return mig_send2(fd, MIG_CPU, count, sizeof(count), cpuid->entries,
                     cpuid->nent * sizeof(cpuid->entries[0]));
}

/*
 * A counted list's payload of `len` bytes: u32 n (at most `max`), then n entries of `size`
 * bytes, read into a zeroed buffer after `prefix` bytes of room. *list is malloc'ed and *n set;
 * 0, -ENOMEM, -errno, or -EPROTO after one line ("migration: WHAT of LEN bytes VERDICT") for
 * a count over `max` or one that is not the payload's, found before any entry is read.
 */
static int recv_counted(int fd, uint64_t len, uint32_t max, size_t size, size_t prefix,
                        const char *what, const char *verdict, uint8_t **list, uint32_t *n)
{
    uint8_t count[4];
    *list = NULL;
    *n = 0;
    if (len < sizeof(count))
        goto bad;
    int ret = mig_recv_all(fd, count, sizeof(count));
    if (ret < 0)
        return ret;
    uint32_t got = (uint32_t)le_get(count, 4);
    if (got > max || len != sizeof(count) + (uint64_t)got * size)
        goto bad;
    uint8_t *buf = calloc(1, prefix + (size_t)got * size + 1); /* + 1: never a size of 0 */
    if (!buf)
        return -ENOMEM;
    ret = mig_recv_all(fd, buf + prefix, (size_t)got * size);
    if (ret < 0) {
        free(buf);
        return ret;
    }
    *list = buf;
    *n = got;
    return 0;
bad:
    log_error("migration: %s of %llu bytes %s", what, (unsigned long long)len, verdict);
    return -EPROTO;
}

int mig_recv_cpu(int fd, uint64_t len, struct kvm_cpuid2 **cpuid)
{
    uint8_t *buf;
    uint32_t n;
    int ret = recv_counted(fd, len, MIG_MAX_CPUID_ENTRIES, sizeof(struct kvm_cpuid_entry2),
                           sizeof(struct kvm_cpuid2), "a CPU model", "is not a CPUID table",
                           &buf, &n);
    if (ret < 0)
        return ret;
    *cpuid = (struct kvm_cpuid2 *)buf;
    (*cpuid)->nent = n;
    return 0;
}

int mig_send_routes(int fd, const struct mig_route *routes, unsigned count)
{
    uint8_t *buf = malloc(4 + (size_t)count * MIG_ROUTE_SIZE);
    if (!buf)
        return -ENOMEM;
    le_put(buf, 4, count);
    for (unsigned i = 0; i < count; i++) {
        uint8_t *e = buf + 4 + (size_t)i * MIG_ROUTE_SIZE;
        le_put(e, 4, routes[i].gsi);
        le_put(e + 4, 4, routes[i].data);
        le_put(e + 8, 8, routes[i].address);
    }
    int ret = mig_send(fd, MIG_ROUTES, buf, 4 + (size_t)count * MIG_ROUTE_SIZE);
    free(buf);
    return ret;
}

int mig_recv_routes(int fd, uint64_t len, struct mig_route **routes, unsigned *count)
{
    uint8_t *buf;
    uint32_t n;
    *routes = NULL;
    *count = 0;
    int ret = recv_counted(fd, len, MIG_MAX_ROUTES, MIG_ROUTE_SIZE, 0, "MSI routes",
                           "are not a list of routes", &buf, &n);
    if (ret < 0 || n == 0) {
        free(buf);
        return ret;
    }
    struct mig_route *r = calloc(n, sizeof(*r));
    for (uint32_t i = 0; r && i < n; i++) {
        const uint8_t *e = buf + (size_t)i * MIG_ROUTE_SIZE;
        r[i] = (struct mig_route){ .gsi = (uint32_t)le_get(e, 4),
                                   .data = (uint32_t)le_get(e + 4, 4),
                                   .address = le_get(e + 8, 8) };
    }
    free(buf);
    if (!r)
        return -ENOMEM;
    *routes = r;
    *count = n;
    return 0;
}

int mig_send_console_client(int fd, const struct virtio_console_client *c)
{
    uint8_t header[HEADER_LEN], payload[CLIENT_FIXED + VIRTIO_CONSOLE_PENDING_MAX];
    if (c->fd < 0 || c->pending_len > VIRTIO_CONSOLE_PENDING_MAX)
        return -EINVAL;
    size_t len = CLIENT_FIXED + c->pending_len;
    put_header(header, MIG_CLIENTS, len);
    le_put(payload, 4, c->pending_len);
    le_put(payload + 4, 4, c->tx_written);
    le_put(payload + 8, 2, c->tx_head);
    le_put(payload + 10, 2, c->tx_idx);
    memcpy(payload + CLIENT_FIXED, c->pending, c->pending_len);
    struct iovec iov = { header, sizeof(header) };
    /* The descriptor on the payload: the receiver reads every header without descriptors. */
    int ret = write_iov(fd, &iov, 1);
    return ret < 0 ? ret : mig_send_with_fds(fd, payload, len, &c->fd, 1);
}

int mig_recv_console_client(int fd, uint64_t len, struct virtio_console_client *c)
{
    uint8_t payload[CLIENT_FIXED + VIRTIO_CONSOLE_PENDING_MAX];
    int fds[1];
    unsigned n;
    const char *problem = NULL;
    c->fd = -1;
    if (len < CLIENT_FIXED || len > sizeof(payload)) {
        log_error("migration: a CLIENTS message of %llu bytes", (unsigned long long)len);
        return -EPROTO;
    }
    int ret = recv_all_fds(fd, payload, len, fds, 1, &n);
    if (ret < 0) {
        if (fds[0] >= 0)
            close(fds[0]);
        return ret;
    }
    c->pending_len = (uint32_t)le_get(payload, 4);
    c->tx_written = (uint32_t)le_get(payload + 4, 4);
    c->tx_head = (uint16_t)le_get(payload + 8, 2);
    c->tx_idx = (uint16_t)le_get(payload + 10, 2);
    if (len != CLIENT_FIXED + (uint64_t)c->pending_len)
        problem = "its input is not its length";
    else if (n != 1)
        problem = n ? "more than one descriptor came" : "no descriptor came";
    else
        problem = socket_fd_problem(fds[0], false);
    if (problem) {
        log_error("migration: the source's console client is refused: %s%s",
                  n == 1 && !strncmp(problem, "is", 2) ? "its descriptor " : "", problem);
        if (fds[0] >= 0)
            close(fds[0]);
        return -EPROTO;
    }
    memcpy(c->pending, payload + CLIENT_FIXED, c->pending_len);
    c->fd = fds[0];
    return 0;
}
