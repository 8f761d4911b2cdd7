/* test_tap_info.c: a tap's multi-queue flag as rtnetlink tells it, on real taps where this
 * process may make them (root with /dev/net/tun), without attaching to them. */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <linux/if_tun.h>
#include <net/if.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "lib/tap_info.h"

/* A tap of this process's for the test's life (gone when the fd closes), or -1. */
static int make_tap(const char *name, bool multi_queue)
{
    int fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC);
    if (fd < 0)
        return -1;
    struct ifreq ifr = { .ifr_flags = IFF_TAP | IFF_NO_PI };
    if (multi_queue)
        ifr.ifr_flags |= IFF_MULTI_QUEUE;
    snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", name);
    if (ioctl(fd, TUNSETIFF, &ifr) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static void test_refusals(void **state)
{
    (void)state;
    assert_int_equal(tap_multi_queue(NULL), -EINVAL);
    assert_int_equal(tap_multi_queue(""), -EINVAL);
    assert_int_equal(tap_multi_queue("a-name-longer-than-ifnamsiz"), -EINVAL);
    assert_int_equal(tap_multi_queue("gwti-none"), -ENODEV);
    /* Loopback is no tap. */
    assert_int_equal(tap_multi_queue("lo"), -EMEDIUMTYPE);
}

static void test_real_taps(void **state)
{
    (void)state;
    char single[IFNAMSIZ], multi[IFNAMSIZ];
    snprintf(single, sizeof(single), "gwti%ds", (int)getpid() % 100000);
    snprintf(multi, sizeof(multi), "gwti%dm", (int)getpid() % 100000);
    int s = make_tap(single, false);
    if (s < 0)
        skip(); /* not root, or no /dev/net/tun */
    int m = make_tap(multi, true);
    assert_true(m >= 0);
    int answer_single = tap_multi_queue(single), answer_multi = tap_multi_queue(multi);
    close(s);
    close(m);
    if (answer_single == -EOPNOTSUPP)
        skip(); /* a kernel whose tun driver does not describe itself */
    assert_int_equal(answer_single, 0);
    assert_int_equal(answer_multi, 1);
    assert_int_equal(tap_multi_queue(single), -ENODEV); /* gone with its last fd */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_real_taps),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
