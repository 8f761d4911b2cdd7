/* sd_notify.c: the sd_notify(3) datagram protocol over AF_UNIX, without libsystemd. */
#define _GNU_SOURCE
#include "cli/sd_notify.h"

#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

/*
 * Fills *addr from $NOTIFY_SOCKET's value and returns the exact address length. An abstract
 * name's length counts only its own bytes: the kernel compares abstract names over the whole
 * length given, so padding them with sun_path's trailing zeros would name another socket.
 */
static int notify_address(const char *name, struct sockaddr_un *addr, socklen_t *addr_len)
{
    size_t len = strlen(name);

    memset(addr, 0, sizeof(*addr));
    addr->sun_family = AF_UNIX;
    if (name[0] == '@') {
        if (len > sizeof(addr->sun_path))
            return -ENAMETOOLONG;
        memcpy(addr->sun_path + 1, name + 1, len - 1); /* sun_path[0] stays '\0' */
        *addr_len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len);
        return 0;
    }
    if (name[0] != '/')
        return -EAFNOSUPPORT;
    if (len >= sizeof(addr->sun_path))
        return -ENAMETOOLONG;
    memcpy(addr->sun_path, name, len);
    *addr_len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len + 1);
    return 0;
}

int sd_notify_send(const char *state)
{
    const char *name = getenv("NOTIFY_SOCKET");
    struct sockaddr_un addr;
    socklen_t addr_len;
    size_t state_len = strlen(state);

    if (!name || !name[0])
        return 0;
    int ret = notify_address(name, &addr, &addr_len);
    if (ret < 0)
        return ret;
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    ssize_t sent = sendto(fd, state, state_len, MSG_NOSIGNAL, (struct sockaddr *)&addr, addr_len);
    ret = sent < 0 ? -errno : (size_t)sent == state_len ? 1 : -EMSGSIZE;
    close(fd);
    return ret;
}

/* A positive decimal with nothing after it. */
static bool parse_positive_u64(const char *s, uint64_t *value)
{
    char *end;

    if (!s || !*s || *s == '-')
        return false;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end || v == 0)
        return false;
    *value = v;
    return true;
}

bool sd_watchdog_enabled(uint64_t *usec)
{
    uint64_t interval, pid;
    const char *pid_text = getenv("WATCHDOG_PID");

    if (!parse_positive_u64(getenv("WATCHDOG_USEC"), &interval))
        return false;
    /* The variable may have been inherited by a child that systemd does not watch. */
    if (pid_text && (!parse_positive_u64(pid_text, &pid) || pid != (uint64_t)getpid()))
        return false;
    if (usec)
        *usec = interval;
    return true;
}
