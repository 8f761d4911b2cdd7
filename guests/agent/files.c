/*
 * files.c: file transfer. A write lands in a temporary file in the target's own directory,
 * is checked against the host's size and SHA-256, synced, then renamed over the target, so a
 * reader sees the old file or the whole new one. A read sends the file's mode and size, its
 * contents in chunks, and its size and SHA-256 at the end.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agent.h"
#include "agent/sha256.h"
#include "io/fd_io.h"

struct upload {
    char path[AGENT_MAX_STRING + 1];
    char tmp[AGENT_MAX_STRING + 32];
    int fd;
    uint64_t size, got;
    uint32_t mode;
    struct sha256 sum;
};

/* The temporary file beside the target: DIR/.NAME.godwit-XXXXXX. */
static int open_temp(struct upload *up)
{
    char copy[AGENT_MAX_STRING + 1], copy2[AGENT_MAX_STRING + 1];
    strcpy(copy, up->path);
    strcpy(copy2, up->path);
    const char *dir = dirname(copy), *base = basename(copy2);
    if (snprintf(up->tmp, sizeof(up->tmp), "%s/.%s.godwit-XXXXXX", dir, base) >=
        (int)sizeof(up->tmp))
        return -ENAMETOOLONG;
    up->fd = mkostemp(up->tmp, O_CLOEXEC);
    return up->fd < 0 ? -errno : 0;
}

static int fsync_dir_of(const char *path)
{
    char copy[AGENT_MAX_STRING + 1];
    snprintf(copy, sizeof(copy), "%s", path);
    int fd = open(dirname(copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    int ret = fsync(fd) < 0 ? -errno : 0;
    close(fd);
    return ret;
}

/* The end of the transfer: sizes and checksums agree, then mode, sync and rename. */
static int finish(struct upload *up, const struct agent_msg *m, char *why, size_t len)
{
    uint64_t size;
    struct agent_field digest;
    uint8_t mine[AGENT_DIGEST_SIZE];
    agent_get_u64(m, AGENT_T_SIZE, &size);
    agent_find(m, AGENT_T_DIGEST, &digest);
    sha256_final(&up->sum, mine);
    if (size != up->size || up->got != up->size) {
        snprintf(why, len, "received %llu bytes of %llu", (unsigned long long)up->got,
                 (unsigned long long)up->size);
        return -EIO;
    }
    if (memcmp(mine, digest.value, sizeof(mine)) != 0) {
        snprintf(why, len, "the SHA-256 of what arrived differs from the host's");
        return -EBADMSG;
    }
    if (fchmod(up->fd, up->mode) < 0 || fsync(up->fd) < 0 || rename(up->tmp, up->path) < 0) {
        snprintf(why, len, "cannot put it in place: %s", strerror(errno));
        return -errno;
    }
    up->tmp[0] = 0;
    fsync_dir_of(up->path);
    return 0;
}

static int write_chunk(struct upload *up, const struct agent_msg *m, char *why, size_t len)
{
    struct agent_field f;
    agent_find(m, AGENT_T_DATA, &f);
    if (f.len > up->size - up->got) {
        snprintf(why, len, "more data than the %llu bytes announced",
                 (unsigned long long)up->size);
        return -EFBIG;
    }
    sha256_update(&up->sum, f.value, f.len);
    int ret = fd_write_all(up->fd, f.value, f.len);
    if (ret < 0) {
        snprintf(why, len, "write: %s", strerror(-ret));
        return ret;
    }
    up->got += f.len;
    return 0;
}

/* DATA messages until FILE_END. 1 when done, or -errno with `why` filled. */
static int receive(struct conn *c, struct upload *up, char *why, size_t len)
{
    struct agent_msg m;
    for (;;) {
        int ret = next_msg(c, &m);
        if (ret < 0) {
            snprintf(why, len, "the host went away");
            return ret;
        }
        if (m.h.type == AGENT_FILE_END)
            return finish(up, &m, why, len);
        if (m.h.type != AGENT_DATA) {
            snprintf(why, len, "%s in the middle of a file", agent_type_name(m.h.type));
            return -EPROTO;
        }
        ret = write_chunk(up, &m, why, len);
        if (ret < 0)
            return ret;
    }
}

int handle_file_write(struct conn *c, const struct agent_msg *m)
{
    struct upload up = { .fd = -1 };
    char why[512];
    agent_get_str(m, AGENT_T_PATH, up.path, sizeof(up.path));
    agent_get_u64(m, AGENT_T_SIZE, &up.size);
    agent_get_u32(m, AGENT_T_MODE, &up.mode);
    if (up.path[0] != '/')
        return reply_error(c, m->h.id, EINVAL, "file write: '%s' is not an absolute path", up.path);
    if (up.size > c->cfg->max_file_size)
        return reply_error(c, m->h.id, EFBIG, "file write: %llu bytes is over the agent's limit of %llu",
                           (unsigned long long)up.size, (unsigned long long)c->cfg->max_file_size);
    int ret = open_temp(&up);
    if (ret < 0)
        return reply_error(c, m->h.id, ret, "file write: cannot create a file beside %s: %s",
                           up.path, strerror(-ret));
    sha256_init(&up.sum);
    ret = reply_ok(c, m->h.id);
    if (ret == 0)
        ret = receive(c, &up, why, sizeof(why));
    close(up.fd);
    if (up.tmp[0])
        unlink(up.tmp);
    if (ret == -ECONNRESET)
        return ret;
    if (ret < 0) {
        /* The host's remaining DATA would read as requests: answer, then end the connection. */
        reply_error(c, m->h.id, ret, "file write %s: %s", up.path, why);
        return -ECONNRESET;
    }
    return reply_ok(c, m->h.id);
}

static int send_file(struct conn *c, int fd, uint32_t id)
{
    static uint8_t buf[AGENT_CHUNK];
    struct sha256 sum;
    uint64_t total = 0;
    struct agent_builder b;
    sha256_init(&sum);
    for (;;) {
        ssize_t n = read(fd, buf, sizeof(buf));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return reply_error(c, id, errno, "file read: %s", strerror(errno));
        if (n == 0)
            break;
        sha256_update(&sum, buf, (size_t)n);
        total += (uint64_t)n;
        agent_build_start(&b, c->out, AGENT_DATA, 0, id);
        agent_put_bytes(&b, AGENT_T_DATA, buf, (size_t)n);
        int ret = send_msg(c, agent_build_end(&b));
        if (ret < 0)
            return ret;
    }
    uint8_t digest[AGENT_DIGEST_SIZE];
    sha256_final(&sum, digest);
    agent_build_start(&b, c->out, AGENT_FILE_END, 0, id);
    agent_put_u64(&b, AGENT_T_SIZE, total);
    agent_put_bytes(&b, AGENT_T_DIGEST, digest, sizeof(digest));
    return send_msg(c, agent_build_end(&b));
}

int handle_file_read(struct conn *c, const struct agent_msg *m)
{
    char path[AGENT_MAX_STRING + 1];
    struct stat st;
    agent_get_str(m, AGENT_T_PATH, path, sizeof(path));
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (fd < 0)
        return reply_error(c, m->h.id, errno, "file read: %s: %s", path, strerror(errno));
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return reply_error(c, m->h.id, EINVAL, "file read: %s is not a regular file", path);
    }
    if ((uint64_t)st.st_size > c->cfg->max_file_size) {
        close(fd);
        return reply_error(c, m->h.id, EFBIG, "file read: %s is over the agent's limit of %llu bytes",
                           path, (unsigned long long)c->cfg->max_file_size);
    }
    struct agent_builder b;
    agent_build_start(&b, c->out, AGENT_FILE_INFO, 0, m->h.id);
    agent_put_u32(&b, AGENT_T_MODE, st.st_mode & 07777);
    agent_put_u64(&b, AGENT_T_SIZE, (uint64_t)st.st_size);
    int ret = send_msg(c, agent_build_end(&b));
    if (ret == 0)
        ret = send_file(c, fd, m->h.id);
    close(fd);
    return ret;
}
