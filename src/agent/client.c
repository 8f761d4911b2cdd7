/* client.c: the host's side of the guest agent protocol: connecting, requests, file transfer. */
#define _GNU_SOURCE
#include "agent/client.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "agent/sha256.h"
#include "io/fd_io.h"

/* send(MSG_NOSIGNAL), not write(): a guest (or a client) that closed the connection must not
 * raise SIGPIPE in a program that embeds libgodwit (the godwit command ignores it; a library
 * cannot ask that of its caller). */
int agent_send_all(int fd, const void *buf, size_t len)
{
    const uint8_t *p = buf;
    while (len) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -errno;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

/* Takes the answer line and not a byte more (what follows it is already the agent's stream):
 * a peek finds its end, one read takes it, rather than a poll and a read for every byte. */
int agent_vsock_handshake(int fd, unsigned port, unsigned timeout_ms)
{
    char line[64];
    int len = snprintf(line, sizeof(line), "CONNECT %u\n", port);
    int ret = agent_send_all(fd, line, (size_t)len);
    if (ret < 0)
        return ret;
    for (size_t n = 0; n < sizeof(line) - 1;) {
        struct pollfd p = { .fd = fd, .events = POLLIN };
        int r = poll(&p, 1, (int)timeout_ms);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return r < 0 ? -errno : -ETIMEDOUT;
        ssize_t got = recv(fd, line + n, sizeof(line) - 1 - n, MSG_PEEK);
        if (got < 0 && errno == EINTR)
            continue;
        if (got <= 0)
            return -ECONNREFUSED; /* nothing listens on that port in the guest */
        char *nl = memchr(line + n, '\n', (size_t)got);
        size_t take = nl ? (size_t)(nl - (line + n)) + 1 : (size_t)got;
        if (recv(fd, line + n, take, 0) != (ssize_t)take)
            return -EPROTO; /* what the peek saw is there: only a broken socket says less */
        n += take;
        if (nl) {
            *nl = 0;
            return strncmp(line, "OK ", 3) == 0 ? 0 : -ECONNREFUSED;
        }
    }
    return -EPROTO;
}

struct agent_client *agent_client_connect(const char *path, bool direct, unsigned port, int *err)
{
    return agent_client_connect_within(path, direct, port, AGENT_CONNECT_TIMEOUT_MS, err);
}

struct agent_client *agent_client_connect_within(const char *path, bool direct, unsigned port,
                                                 unsigned timeout_ms, int *err)
{
    struct agent_client *c = agent_client_open(path, err);
    if (c && !direct && (*err = agent_vsock_handshake(c->fd, port, timeout_ms)) < 0) {
        agent_client_close(c);
        return NULL;
    }
    return c;
}

struct agent_client *agent_client_open(const char *path, int *err)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    struct agent_client *c;
    if (strlen(path) >= sizeof(sa.sun_path)) {
        *err = -ENAMETOOLONG;
        return NULL;
    }
    strcpy(sa.sun_path, path);
    if (!(c = calloc(1, sizeof(*c)))) {
        *err = -ENOMEM;
        return NULL;
    }
    c->next_id = 1;
    c->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (c->fd < 0 || connect(c->fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        *err = -errno;
        agent_client_close(c);
        return NULL;
    }
    *err = 0;
    return c;
}

void agent_client_close(struct agent_client *c)
{
    if (!c)
        return;
    if (c->fd >= 0)
        close(c->fd);
    free(c);
}

int agent_client_send(struct agent_client *c, size_t len)
{
    if (len == 0)
        return -EMSGSIZE;
    return agent_send_all(c->fd, c->out, len);
}

int agent_client_recv(struct agent_client *c, struct agent_msg *m)
{
    int ret = agent_read_msg(c->fd, c->in, m);
    if (ret == -ECONNRESET) {
        snprintf(c->error, sizeof(c->error), "the agent closed the connection");
        return ret;
    }
    if (ret < 0 || (ret = agent_msg_check(m)) < 0) {
        snprintf(c->error, sizeof(c->error), "a malformed message from the agent: %s",
                 strerror(-ret));
        return -EPROTO;
    }
    if (m->h.type != AGENT_ERROR)
        return 0;
    uint32_t err;
    agent_get_u32(m, AGENT_T_ERRNO, &err);
    agent_get_str(m, AGENT_T_MESSAGE, c->error, sizeof(c->error));
    return err && err < 4096 ? -(int)err : -EIO;
}

/* Reads a reply and insists on its type. */
static int expect(struct agent_client *c, struct agent_msg *m, unsigned type)
{
    int ret = agent_client_recv(c, m);
    if (ret < 0)
        return ret;
    if (m->h.type != type) {
        snprintf(c->error, sizeof(c->error), "the agent answered %s, not %s",
                 agent_type_name(m->h.type), agent_type_name(type));
        return -EPROTO;
    }
    return 0;
}

int agent_client_simple(struct agent_client *c, unsigned type, struct agent_msg *reply)
{
    struct agent_builder b;
    agent_build_start(&b, c->out, type, 0, c->next_id++);
    int ret = agent_client_send(c, agent_build_end(&b));
    if (ret < 0)
        return ret;
    ret = agent_client_recv(c, reply);
    return ret;
}

/* A send failed mid-transfer: the agent's ERROR, if it sent one, says why. */
static int send_failed(struct agent_client *c, int ret)
{
    struct agent_msg m = { 0 };
    int why = agent_client_recv(c, &m);
    if (why < 0 && m.h.type == AGENT_ERROR)
        return why;
    snprintf(c->error, sizeof(c->error), "sending: %s", strerror(-ret));
    return ret;
}

/* Reads from a file descriptor: the source of agent_client_put. */
static ssize_t read_fd(void *opaque, void *buf, size_t len)
{
    ssize_t n;
    do
        n = read(*(int *)opaque, buf, len);
    while (n < 0 && errno == EINTR);
    return n < 0 ? -errno : n;
}

static int send_file_data(struct agent_client *c, const struct agent_source *src, uint64_t size,
                          uint8_t digest[32])
{
    /* Not static: the API copies from threads of its own, at once. */
    uint8_t *buf = malloc(AGENT_CHUNK);
    struct sha256 sum;
    uint64_t sent = 0;
    int ret = buf ? 0 : -ENOMEM;
    sha256_init(&sum);
    while (ret == 0 && sent < size) {
        ssize_t n = src->read(src->opaque, buf, AGENT_CHUNK < size - sent ? AGENT_CHUNK
                                                                       : (size_t)(size - sent));
        if (n <= 0) {
            snprintf(c->error, sizeof(c->error), "the local file %s while sending",
                     n == 0 ? "ended early" : "could not be read");
            ret = n == 0 ? -EIO : (int)n;
            break;
        }
        sha256_update(&sum, buf, (size_t)n);
        struct agent_builder b;
        agent_build_start(&b, c->out, AGENT_DATA, 0, c->next_id);
        agent_put_bytes(&b, AGENT_T_DATA, buf, (size_t)n);
        if ((ret = agent_client_send(c, agent_build_end(&b))) < 0)
            ret = send_failed(c, ret);
        sent += (uint64_t)n;
    }
    free(buf);
    sha256_final(&sum, digest);
    return ret;
}

int agent_client_put_from(struct agent_client *c, const struct agent_source *src,
                          const char *guest_path, uint32_t mode, uint64_t size)
{
    struct agent_builder b;
    struct agent_msg m;
    uint8_t digest[AGENT_DIGEST_SIZE];
    uint32_t id = c->next_id++;
    agent_build_start(&b, c->out, AGENT_FILE_WRITE, 0, id);
    agent_put_str(&b, AGENT_T_PATH, guest_path);
    agent_put_u32(&b, AGENT_T_MODE, mode & 07777);
    agent_put_u64(&b, AGENT_T_SIZE, size);
    int ret = agent_client_send(c, agent_build_end(&b));
    if (ret < 0 || (ret = expect(c, &m, AGENT_OK)) < 0)
        return ret;
    if (src->accepted && (ret = src->accepted(src->opaque)) < 0)
        return ret;
    if ((ret = send_file_data(c, src, size, digest)) < 0)
        return ret;
    agent_build_start(&b, c->out, AGENT_FILE_END, 0, id);
    agent_put_u64(&b, AGENT_T_SIZE, size);
    agent_put_bytes(&b, AGENT_T_DIGEST, digest, sizeof(digest));
    ret = agent_client_send(c, agent_build_end(&b));
    if (ret < 0)
        return send_failed(c, ret);
    return expect(c, &m, AGENT_OK);
}

int agent_client_put(struct agent_client *c, int fd, const char *guest_path, uint32_t mode,
                     uint64_t size)
{
    struct agent_source src = { .read = read_fd, .opaque = &fd };
    return agent_client_put_from(c, &src, guest_path, mode, size);
}

/* agent_client_get's sink: a file descriptor, and where the mode goes. */
struct fd_sink {
    int fd;
    uint32_t *mode;
};

static int fd_sink_info(void *opaque, uint32_t mode, uint64_t size)
{
    struct fd_sink *f = opaque;
    (void)size;
    *f->mode = mode;
    return 0;
}

static int fd_sink_data(void *opaque, const void *data, size_t len)
{
    return fd_write_all(((struct fd_sink *)opaque)->fd, data, len);
}

/* The guest's DATA messages to the sink until FILE_END, which must match what came. */
static int receive_file(struct agent_client *c, const struct agent_sink *sink)
{
    struct agent_msg m;
    struct sha256 sum;
    uint64_t size, got = 0;
    int ret;
    sha256_init(&sum);
    while ((ret = agent_client_recv(c, &m)) == 0 && m.h.type == AGENT_DATA) {
        struct agent_field f;
        agent_find(&m, AGENT_T_DATA, &f);
        sha256_update(&sum, f.value, f.len);
        got += f.len;
        if ((ret = sink->data(sink->opaque, f.value, f.len)) < 0) {
            snprintf(c->error, sizeof(c->error), "writing the local file: %s", strerror(-ret));
            return ret;
        }
    }
    if (ret < 0)
        return ret;
    if (m.h.type != AGENT_FILE_END) {
        snprintf(c->error, sizeof(c->error), "%s in the middle of a file", agent_type_name(m.h.type));
        return -EPROTO;
    }
    uint8_t mine[AGENT_DIGEST_SIZE];
    struct agent_field digest;
    sha256_final(&sum, mine);
    agent_get_u64(&m, AGENT_T_SIZE, &size);
    agent_find(&m, AGENT_T_DIGEST, &digest);
    if (size != got || memcmp(mine, digest.value, sizeof(mine)) != 0) {
        snprintf(c->error, sizeof(c->error), "the copy differs from the guest's file (size or SHA-256)");
        return -EBADMSG;
    }
    return 0;
}

int agent_client_get_to(struct agent_client *c, const char *guest_path,
                        const struct agent_sink *sink)
{
    struct agent_builder b;
    struct agent_msg m;
    uint32_t mode = 0;
    uint64_t size = 0;
    agent_build_start(&b, c->out, AGENT_FILE_READ, 0, c->next_id++);
    agent_put_str(&b, AGENT_T_PATH, guest_path);
    int ret = agent_client_send(c, agent_build_end(&b));
    if (ret < 0 || (ret = expect(c, &m, AGENT_FILE_INFO)) < 0)
        return ret;
    agent_get_u32(&m, AGENT_T_MODE, &mode);
    agent_get_u64(&m, AGENT_T_SIZE, &size);
    if (sink->info && (ret = sink->info(sink->opaque, mode & 07777, size)) < 0)
        return ret;
    return receive_file(c, sink);
}

int agent_client_get(struct agent_client *c, const char *guest_path, int fd, uint32_t *mode)
{
    struct fd_sink f = { .fd = fd, .mode = mode };
    struct agent_sink sink = { .info = fd_sink_info, .data = fd_sink_data, .opaque = &f };
    return agent_client_get_to(c, guest_path, &sink);
}

static int kvp_request(struct agent_client *c, unsigned type, uint32_t pool, const char *key,
                       const char *value, struct agent_msg *m)
{
    struct agent_builder b;
    agent_build_start(&b, c->out, type, 0, c->next_id++);
    agent_put_u32(&b, AGENT_T_POOL, pool);
    if (key)
        agent_put_str(&b, AGENT_T_KEY, key);
    if (value)
        agent_put_str(&b, AGENT_T_VALUE, value);
    size_t len = agent_build_end(&b);
    if (len == 0) {
        snprintf(c->error, sizeof(c->error), "the key or value is too long");
        return -EMSGSIZE;
    }
    int ret = agent_client_send(c, len);
    return ret < 0 ? ret : agent_client_recv(c, m);
}

int agent_client_kvp_get(struct agent_client *c, uint32_t pool, const char *key, char *buf,
                         size_t len)
{
    struct agent_msg m;
    int ret = kvp_request(c, AGENT_KVP_GET, pool, key, NULL, &m);
    if (ret < 0)
        return ret;
    if (m.h.type != AGENT_OK || !agent_get_str(&m, AGENT_T_VALUE, buf, len)) {
        snprintf(c->error, sizeof(c->error), "the agent's answer holds no value");
        return -EPROTO;
    }
    return 0;
}

int agent_client_kvp_set(struct agent_client *c, const char *key, const char *value)
{
    struct agent_msg m;
    int ret = kvp_request(c, AGENT_KVP_SET, AGENT_POOL_HOST, key, value, &m);
    return ret < 0 ? ret : (m.h.type == AGENT_OK ? 0 : -EPROTO);
}

int agent_client_kvp_delete(struct agent_client *c, const char *key)
{
    struct agent_msg m;
    int ret = kvp_request(c, AGENT_KVP_DELETE, AGENT_POOL_HOST, key, NULL, &m);
    return ret < 0 ? ret : (m.h.type == AGENT_OK ? 0 : -EPROTO);
}

int agent_client_kvp_list(struct agent_client *c, uint32_t pool,
                          void (*fn)(const char *key, const char *value, void *opaque),
                          void *opaque)
{
    /* Not static: the API lists from threads of its own, at once. */
    char *key = malloc(AGENT_MAX_STRING + 1), *value = malloc(AGENT_MAX_VALUE + 1);
    struct agent_msg m;
    int ret = key && value ? kvp_request(c, AGENT_KVP_LIST, pool, NULL, NULL, &m) : -ENOMEM;
    for (; ret == 0 && m.h.type == AGENT_KVP_ENTRY; ret = agent_client_recv(c, &m)) {
        agent_get_str(&m, AGENT_T_KEY, key, AGENT_MAX_STRING + 1);
        agent_get_str(&m, AGENT_T_VALUE, value, AGENT_MAX_VALUE + 1);
        fn(key, value, opaque);
    }
    free(key);
    free(value);
    if (ret == 0 && m.h.type != AGENT_OK) {
        snprintf(c->error, sizeof(c->error), "%s in a key list", agent_type_name(m.h.type));
        return -EPROTO;
    }
    return ret;
}

int agent_client_put_path(struct agent_client *c, const char *local, const char *guest_path)
{
    char full[AGENT_MAX_STRING + 1], copy[PATH_MAX];
    struct stat st;
    int fd = open(local, O_RDONLY | O_CLOEXEC);
    if (fd < 0 || fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        int ret = fd < 0 ? -errno : -EINVAL;
        snprintf(c->error, sizeof(c->error), "cp: %s: %s", local,
                 fd < 0 ? strerror(-ret) : "not a regular file");
        if (fd >= 0)
            close(fd);
        return ret;
    }
    /* DIR/ in the guest: the file keeps its name there. */
    size_t len = strlen(guest_path);
    snprintf(copy, sizeof(copy), "%s", local);
    snprintf(full, sizeof(full), "%s%s", guest_path,
             len && guest_path[len - 1] == '/' ? basename(copy) : "");
    int ret = agent_client_put(c, fd, full, st.st_mode & 07777, (uint64_t)st.st_size);
    close(fd);
    return ret;
}

/* Into a temporary file beside the target, renamed over it once the checksum agrees. */
int agent_client_get_path(struct agent_client *c, const char *guest_path, const char *local)
{
    char target[PATH_MAX], tmp[PATH_MAX + 32], d[PATH_MAX], b[PATH_MAX];
    struct stat st;
    snprintf(b, sizeof(b), "%s", guest_path);
    if (stat(local, &st) == 0 && S_ISDIR(st.st_mode))
        snprintf(target, sizeof(target), "%s/%s", local, basename(b));
    else
        snprintf(target, sizeof(target), "%s", local);
    snprintf(d, sizeof(d), "%s", target);
    snprintf(b, sizeof(b), "%s", target);
    snprintf(tmp, sizeof(tmp), "%s/.%s.godwit-XXXXXX", dirname(d), basename(b));
    int fd = mkostemp(tmp, O_CLOEXEC);
    if (fd < 0) {
        int ret = -errno;
        snprintf(c->error, sizeof(c->error), "cp: cannot create a file beside %s: %s", target,
                 strerror(errno));
        return ret;
    }
    uint32_t mode = 0600;
    int ret = agent_client_get(c, guest_path, fd, &mode);
    if (ret == 0 && (fchmod(fd, mode & 07777) < 0 || fsync(fd) < 0 || rename(tmp, target) < 0)) {
        ret = -errno;
        snprintf(c->error, sizeof(c->error), "cp: cannot put %s in place: %s", target,
                 strerror(errno));
    }
    close(fd);
    if (ret < 0)
        unlink(tmp);
    return ret;
}

int agent_client_set_time(struct agent_client *c, uint64_t ns)
{
    struct agent_builder b;
    struct agent_msg m;
    agent_build_start(&b, c->out, AGENT_SET_TIME, 0, c->next_id++);
    agent_put_u64(&b, AGENT_T_TIME, ns);
    int ret = agent_client_send(c, agent_build_end(&b));
    return ret < 0 ? ret : agent_client_recv(c, &m);
}

int agent_client_freeze(struct agent_client *c, bool freeze, unsigned timeout_s, uint32_t *count)
{
    struct agent_builder b;
    struct agent_msg m;
    agent_build_start(&b, c->out, freeze ? AGENT_FREEZE : AGENT_THAW, 0, c->next_id++);
    if (freeze)
        agent_put_u32(&b, AGENT_T_TIMEOUT, timeout_s);
    int ret = agent_client_send(c, agent_build_end(&b));
    if (ret == 0)
        ret = expect(c, &m, AGENT_OK);
    *count = 0;
    if (ret == 0)
        agent_get_u32(&m, AGENT_T_COUNT, count);
    return ret;
}

int agent_client_shutdown(struct agent_client *c, bool reboot)
{
    struct agent_builder b;
    struct agent_msg m;
    agent_build_start(&b, c->out, AGENT_SHUTDOWN, 0, c->next_id++);
    agent_put_u32(&b, AGENT_T_MODE, reboot ? AGENT_SHUTDOWN_REBOOT : AGENT_SHUTDOWN_POWEROFF);
    int ret = agent_client_send(c, agent_build_end(&b));
    return ret < 0 ? ret : expect(c, &m, AGENT_OK);
}
