/* wire.c: whole agent messages over a blocking file descriptor. */
#include "agent/wire.h"

#include <errno.h>
#include <unistd.h>

int agent_write_all(int fd, const void *buf, size_t len)
{
    const uint8_t *p = buf;
    while (len) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -errno;
        if (n == 0)
            return -EPIPE;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

/* Reads exactly len bytes; -ECONNRESET when the peer closed first. */
static int read_exact(int fd, uint8_t *p, size_t len)
{
    while (len) {
        ssize_t n = read(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -errno;
        if (n == 0)
            return -ECONNRESET;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

int agent_read_msg(int fd, uint8_t *buf, struct agent_msg *m)
{
    int ret = read_exact(fd, buf, AGENT_HEADER_SIZE);
    if (ret < 0)
        return ret;
    ret = agent_header_decode(buf, &m->h);
    if (ret < 0)
        return ret;
    m->payload = buf + AGENT_HEADER_SIZE;
    ret = read_exact(fd, buf + AGENT_HEADER_SIZE, m->h.length);
    return ret == -ECONNRESET ? -EPROTO : ret;
}
