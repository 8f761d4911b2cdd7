/* test_handover.c: what libgodwit does with a local live upgrade's descriptors (the memory
 * file, the stream, the disks, taps and sockets handed over) when it cannot take them: every
 * one is closed, as godwit.h promises, whatever refused them. Nothing boots here. */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include "godwit/godwit.h"

static bool is_open(int fd)
{
    return fcntl(fd, F_GETFD) >= 0;
}

static int open_null(void)
{
    int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    assert_true(fd >= 0);
    return fd;
}

/* A handover of `disks` descriptors and one extra stream. */
static struct godwit_handover handover_of(unsigned disks)
{
    struct godwit_handover h = { .nr_disks = disks, .nr_streams = 1 };
    for (unsigned i = 0; i < disks; i++)
        h.fds[i] = open_null();
    h.streams[0] = open_null();
    return h;
}

static void assert_all_closed(const struct godwit_handover *h, unsigned disks)
{
    for (unsigned i = 0; i < disks; i++)
        assert_false(is_open(h->fds[i]));
    assert_false(is_open(h->streams[0]));
}

static void test_close_empties(void **state)
{
    (void)state;
    struct godwit_handover h = handover_of(3);
    struct godwit_handover before = h;
    assert_int_equal(godwit_handover_count(&h), 3);
    godwit_handover_close(&h);
    assert_all_closed(&before, 3);
    assert_int_equal(godwit_handover_count(&h), 0);
    assert_int_equal(h.nr_streams, 0);
    godwit_handover_close(&h); /* again: nothing left to close */
}

/* An incoming configuration that hands `h` over with a memory file and a stream. */
static struct godwit_config incoming_config(const struct godwit_handover *h, int stream,
                                            int memfd)
{
    return (struct godwit_config){ .incoming = true, .incoming_fd = stream,
                                   .incoming_memfd = memfd, .incoming_devices = h,
                                   .console_in_fd = -1, .console_out_fd = -1 };
}

/* godwit_create() refuses an incoming configuration with a handover of `disks` disks (and
 * `cpus` vCPUs) and closes everything it was handed: the disks, the stream, the memory file. */
static void assert_refusal_closes_all(unsigned disks, unsigned cpus)
{
    struct godwit_handover h = handover_of(disks);
    int stream = open_null(), memfd = memfd_create("test-ram", MFD_CLOEXEC);
    assert_true(memfd >= 0);
    struct godwit_config config = incoming_config(&h, stream, memfd);
    config.cpus = cpus;
    assert_null(godwit_create(&config));
    assert_all_closed(&h, disks);
    assert_false(is_open(stream));
    assert_false(is_open(memfd));
}

/* Two disks handed over for a configuration with none: the handover is refused. */
static void test_refused_handover_is_closed(void **state)
{
    (void)state;
    assert_refusal_closes_all(2, 1);
}

/* A configuration refused before any VM is made (too many vCPUs). */
static void test_refused_config_closes_handover(void **state)
{
    (void)state;
    assert_refusal_closes_all(1, 100000);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_close_empties),
        cmocka_unit_test(test_refused_handover_is_closed),
        cmocka_unit_test(test_refused_config_closes_handover),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
