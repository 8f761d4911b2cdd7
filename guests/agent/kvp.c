/*
 * kvp.c: the key/value pools, as Hyper-V's KVP exchange has them: the host-to-guest pool
 * (STATE/host, written by the host, read by guest programs as plain files) and the
 * guest-to-host pool (STATE/guest, written by guest programs, read by the host). A key is a
 * file name; a value is its contents, replaced atomically by a rename.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agent.h"

static const char *const pool_names[] = { [AGENT_POOL_HOST] = "host", [AGENT_POOL_GUEST] = "guest" };

int kvp_key_valid(const char *key)
{
    size_t len = strlen(key);
    if (len == 0 || len > 255 || key[0] == '.')
        return -EINVAL;
    for (const char *p = key; *p; p++)
        if (!strchr("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-:@+,=", *p))
            return -EINVAL;
    return 0;
}

static int pool_dir(struct conn *c, uint32_t pool, char *buf, size_t len)
{
    snprintf(buf, len, "%s/%s", c->cfg->state_dir, pool_names[pool]);
    return mkdir(buf, 0755) == 0 || errno == EEXIST ? 0 : -errno;
}

/* A value file into buf (NUL-terminated); values hold no NUL and at most AGENT_MAX_VALUE. */
static int read_value(int dirfd, const char *key, char *buf)
{
    int fd = openat(dirfd, key, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
    if (fd < 0)
        return -errno;
    size_t got = 0;
    ssize_t n = 0;
    while (got <= AGENT_MAX_VALUE) { /* buf holds AGENT_MAX_VALUE + 1 bytes */
        n = read(fd, buf + got, AGENT_MAX_VALUE + 1 - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    int err = n < 0 ? -errno : 0;
    close(fd);
    if (err)
        return err;
    if (got > AGENT_MAX_VALUE)
        return -EFBIG;
    buf[got] = 0;
    return memchr(buf, 0, got) ? -EILSEQ : 0;
}

static int kvp_set(int dirfd, const char *key, const char *value)
{
    char tmp[32]; /* not derived from the key: a 255-byte key leaves no room for a suffix */
    snprintf(tmp, sizeof(tmp), ".tmp-%ld", (long)getpid());
    int fd = openat(dirfd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0644);
    if (fd < 0)
        return -errno;
    size_t len = strlen(value);
    int ret = write(fd, value, len) == (ssize_t)len && fsync(fd) == 0 ? 0 : -EIO;
    close(fd);
    if (ret == 0 && renameat(dirfd, tmp, dirfd, key) < 0)
        ret = -errno;
    if (ret < 0)
        unlinkat(dirfd, tmp, 0);
    return ret;
}

static int send_entry(struct conn *c, uint32_t id, const char *key, const char *value)
{
    struct agent_builder b;
    agent_build_start(&b, c->out, AGENT_KVP_ENTRY, 0, id);
    agent_put_str(&b, AGENT_T_KEY, key);
    agent_put_str(&b, AGENT_T_VALUE, value);
    return send_msg(c, agent_build_end(&b));
}

/* Every valid key of the pool as an entry, then OK with their count. */
static int kvp_list(struct conn *c, int dirfd, uint32_t id, char *value)
{
    DIR *d = fdopendir(dup(dirfd));
    struct dirent *e;
    uint32_t count = 0;
    if (!d)
        return reply_error(c, id, errno, "kvp list: %s", strerror(errno));
    while ((e = readdir(d))) {
        if (kvp_key_valid(e->d_name) < 0 || read_value(dirfd, e->d_name, value) < 0)
            continue; /* temporaries, and files no value can come from */
        int ret = send_entry(c, id, e->d_name, value);
        if (ret < 0) {
            closedir(d);
            return ret;
        }
        count++;
    }
    closedir(d);
    struct agent_builder b;
    agent_build_start(&b, c->out, AGENT_OK, 0, id);
    agent_put_u32(&b, AGENT_T_COUNT, count);
    return send_msg(c, agent_build_end(&b));
}

static int kvp_get(struct conn *c, int dirfd, uint32_t id, const char *key, char *value)
{
    int ret = read_value(dirfd, key, value);
    if (ret == -ENOENT)
        return reply_error(c, id, ENOENT, "kvp: no key '%s'", key);
    if (ret < 0)
        return reply_error(c, id, ret, "kvp: cannot read '%s': %s", key, strerror(-ret));
    struct agent_builder b;
    agent_build_start(&b, c->out, AGENT_OK, 0, id);
    agent_put_str(&b, AGENT_T_VALUE, value);
    return send_msg(c, agent_build_end(&b));
}

static int kvp_change(struct conn *c, const struct agent_msg *m, int dirfd, uint32_t pool,
                      const char *key, char *value)
{
    int ret;
    if (pool != AGENT_POOL_HOST)
        return reply_error(c, m->h.id, EPERM, "kvp: the guest pool is written by the guest only");
    if (m->h.type == AGENT_KVP_SET) {
        agent_get_str(m, AGENT_T_VALUE, value, AGENT_MAX_VALUE + 1);
        ret = kvp_set(dirfd, key, value);
    } else {
        ret = unlinkat(dirfd, key, 0) < 0 ? -errno : 0;
    }
    if (ret == -ENOENT)
        return reply_error(c, m->h.id, ENOENT, "kvp: no key '%s'", key);
    if (ret < 0)
        return reply_error(c, m->h.id, ret, "kvp: '%s': %s", key, strerror(-ret));
    return reply_ok(c, m->h.id);
}

int handle_kvp(struct conn *c, const struct agent_msg *m)
{
    static char value[AGENT_MAX_VALUE + 1];
    char dir[1024], key[513];
    uint32_t pool;
    agent_get_u32(m, AGENT_T_POOL, &pool);
    int ret = pool_dir(c, pool, dir, sizeof(dir));
    if (ret < 0)
        return reply_error(c, m->h.id, ret, "kvp: cannot make %s: %s", dir, strerror(-ret));
    int dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dirfd < 0)
        return reply_error(c, m->h.id, errno, "kvp: %s: %s", dir, strerror(errno));
    if (m->h.type == AGENT_KVP_LIST) {
        ret = kvp_list(c, dirfd, m->h.id, value);
    } else {
        agent_get_str(m, AGENT_T_KEY, key, sizeof(key));
        if (kvp_key_valid(key) < 0)
            ret = reply_error(c, m->h.id, EINVAL, "kvp: '%s' is not a valid key (1-255 of "
                              "A-Za-z0-9._-:@+,=, not starting with '.')", key);
        else if (m->h.type == AGENT_KVP_GET)
            ret = kvp_get(c, dirfd, m->h.id, key, value);
        else
            ret = kvp_change(c, m, dirfd, pool, key, value);
    }
    close(dirfd);
    return ret;
}
