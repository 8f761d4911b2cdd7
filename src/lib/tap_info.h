/* tap_info.h: what the host says about a tap device, asked without attaching to it. */
#ifndef GODWIT_TAP_INFO_H
#define GODWIT_TAP_INFO_H

/*
 * Whether the tap named `name` takes several queues (IFF_MULTI_QUEUE): 1 yes, 0 no, from
 * the kernel's own account of the link (rtnetlink RTM_GETLINK, the tun driver's
 * IFLA_TUN_MULTI_QUEUE), in this process's network namespace, so that it holds in a jail
 * without /sys and after --netns alike. -ENODEV: there is no such interface (godwit will
 * make it); -EMEDIUMTYPE: it is not a tun/tap device; other -errno: the kernel did not say
 * (an old kernel, a refused socket).
 */
int tap_multi_queue(const char *name);

#endif
