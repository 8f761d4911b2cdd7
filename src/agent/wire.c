/* wire.c: whole agent messages over a blocking file descriptor. */
#include "agent/wire.h"

#include <errno.h>

#include "io/fd_io.h"

int agent_read_msg(int fd, uint8_t *buf, struct agent_msg *m)
{
    int ret = fd_read_exact(fd, buf, AGENT_HEADER_SIZE);
    if (ret < 0)
        return ret;
    ret = agent_header_decode(buf, &m->h);
    if (ret < 0)
        return ret;
    m->payload = buf + AGENT_HEADER_SIZE;
    ret = fd_read_exact(fd, buf + AGENT_HEADER_SIZE, m->h.length);
    return ret == -ECONNRESET ? -EPROTO : ret;
}
