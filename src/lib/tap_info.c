/* tap_info.c: a tap's multi-queue flag, asked of rtnetlink. */
#define _GNU_SOURCE
#include "lib/tap_info.h"

#include <errno.h>
#include <linux/if_link.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

/* The attribute `type` among the `len` bytes of attributes at `rta`, or NULL. */
static struct rtattr *find_attr(struct rtattr *rta, int len, unsigned short type)
{
    for (; RTA_OK(rta, len); rta = RTA_NEXT(rta, len))
        if ((rta->rta_type & NLA_TYPE_MASK) == type)
            return rta;
    return NULL;
}

/* IFLA_LINKINFO of one RTM_NEWLINK answer: 1 or 0 for a tap, else -errno. */
static int multi_queue_of(struct ifinfomsg *ifi, int len)
{
    struct rtattr *info = find_attr(IFLA_RTA(ifi), len, IFLA_LINKINFO);
    if (!info)
        return -EMEDIUMTYPE; /* no kind at all: a device without rtnl_link_ops */
    struct rtattr *kind = find_attr(RTA_DATA(info), (int)RTA_PAYLOAD(info), IFLA_INFO_KIND);
    if (!kind || RTA_PAYLOAD(kind) < 4 || memcmp(RTA_DATA(kind), "tun", 4) != 0)
        return -EMEDIUMTYPE;
    struct rtattr *data = find_attr(RTA_DATA(info), (int)RTA_PAYLOAD(info), IFLA_INFO_DATA);
    struct rtattr *mq = data ? find_attr(RTA_DATA(data), (int)RTA_PAYLOAD(data),
                                         IFLA_TUN_MULTI_QUEUE)
                             : NULL;
    if (!mq || RTA_PAYLOAD(mq) < 1)
        return -EOPNOTSUPP; /* a kernel whose tun driver does not describe itself */
    return *(const uint8_t *)RTA_DATA(mq) != 0;
}

/* Reads the kernel's answer to request `seq`: the flag, or -errno. */
static int read_answer(int fd, uint32_t seq)
{
    union {
        struct nlmsghdr nh;
        char bytes[16384];
    } buf;
    ssize_t n = recv(fd, &buf, sizeof(buf), 0);
    if (n < 0)
        return -errno;
    unsigned len = (unsigned)n; /* NLMSG_OK compares it with the u32 nlmsg_len */
    for (struct nlmsghdr *nh = &buf.nh; NLMSG_OK(nh, len); nh = NLMSG_NEXT(nh, len)) {
        if (nh->nlmsg_seq != seq)
            continue;
        if (nh->nlmsg_type == NLMSG_ERROR) {
            const struct nlmsgerr *err = NLMSG_DATA(nh);
            return nh->nlmsg_len >= NLMSG_LENGTH(sizeof(*err)) && err->error < 0 ? err->error
                                                                                 : -EPROTO;
        }
        if (nh->nlmsg_type == RTM_NEWLINK && nh->nlmsg_len >= NLMSG_LENGTH(sizeof(struct ifinfomsg)))
            return multi_queue_of(NLMSG_DATA(nh), (int)IFLA_PAYLOAD(nh));
    }
    return -EPROTO;
}

int tap_multi_queue(const char *name)
{
    if (!name || !*name || strlen(name) >= IFNAMSIZ)
        return -EINVAL;
    unsigned index = if_nametoindex(name);
    if (index == 0)
        return errno == ENODEV || errno == ENXIO ? -ENODEV : -errno;
    int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
    if (fd < 0)
        return -errno;
    /* The kernel answers at once; a second is only a bound on a kernel that does not. */
    struct timeval timeout = { .tv_sec = 1 };
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
    struct {
        struct nlmsghdr nh;
        struct ifinfomsg ifi;
    } req = {
        .nh = { .nlmsg_len = sizeof(req), .nlmsg_type = RTM_GETLINK,
                .nlmsg_flags = NLM_F_REQUEST, .nlmsg_seq = 1 },
        .ifi = { .ifi_family = AF_UNSPEC, .ifi_index = (int)index },
    };
    int ret = send(fd, &req, sizeof(req), 0) < 0 ? -errno : read_answer(fd, req.nh.nlmsg_seq);
    close(fd);
    return ret;
}
