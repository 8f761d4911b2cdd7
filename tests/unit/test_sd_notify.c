/* test_sd_notify.c: notify datagrams to path and abstract sockets; the watchdog variables. */
#define _GNU_SOURCE
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
#include <cmocka.h>

#include "cli/sd_notify.h"

/* Binds a datagram socket at `name` in NOTIFY_SOCKET's syntax ('@' for an abstract name). */
static int bind_listener(const char *name)
{
    struct sockaddr_un addr = { .sun_family = AF_UNIX };
    size_t len = strlen(name);
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);

    assert_true(fd >= 0);
    assert_true(len < sizeof(addr.sun_path));
    memcpy(addr.sun_path, name, len);
    if (name[0] == '@')
        addr.sun_path[0] = '\0';
    socklen_t addr_len =
        (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len + (name[0] != '@'));
    assert_int_equal(bind(fd, (struct sockaddr *)&addr, addr_len), 0);
    return fd;
}

static void assert_received(int fd, const char *expected)
{
    char buf[512];
    ssize_t n = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
    assert_int_equal(n, strlen(expected));
    assert_memory_equal(buf, expected, (size_t)n);
}

static void test_unset_is_a_no_op(void **state)
{
    (void)state;
    unsetenv("NOTIFY_SOCKET");
    assert_int_equal(sd_notify_send("READY=1"), 0);
    setenv("NOTIFY_SOCKET", "", 1);
    assert_int_equal(sd_notify_send("READY=1"), 0);
    unsetenv("NOTIFY_SOCKET");
}

static void test_sends_to_path_socket(void **state)
{
    (void)state;
    char dir[] = "/tmp/godwit-sd-notify-XXXXXX";
    char path[128];
    const char *message = "READY=1\nSTATUS=guest running";

    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/notify", dir);
    int fd = bind_listener(path);
    setenv("NOTIFY_SOCKET", path, 1);
    assert_int_equal(sd_notify_send(message), 1);
    assert_received(fd, message);
    unsetenv("NOTIFY_SOCKET");
    close(fd);
    unlink(path);
    rmdir(dir);
}

static void test_sends_to_abstract_socket(void **state)
{
    (void)state;
    char name[64];

    snprintf(name, sizeof(name), "@godwit-test-sd-notify-%d", (int)getpid());
    int fd = bind_listener(name);
    setenv("NOTIFY_SOCKET", name, 1);
    assert_int_equal(sd_notify_send("STOPPING=1"), 1);
    assert_received(fd, "STOPPING=1");
    /* A name that only starts like the bound one is another socket: nobody listens there. */
    name[strlen(name) - 1] = '\0';
    setenv("NOTIFY_SOCKET", name, 1);
    assert_int_equal(sd_notify_send("READY=1"), -ECONNREFUSED);
    unsetenv("NOTIFY_SOCKET");
    close(fd);
}

static void test_bad_addresses_refused(void **state)
{
    (void)state;
    char name[200];

    memset(name, 'a', sizeof(name) - 1);
    name[sizeof(name) - 1] = '\0';
    name[0] = '/';
    setenv("NOTIFY_SOCKET", name, 1);
    assert_int_equal(sd_notify_send("READY=1"), -ENAMETOOLONG);
    name[0] = '@';
    setenv("NOTIFY_SOCKET", name, 1);
    assert_int_equal(sd_notify_send("READY=1"), -ENAMETOOLONG);
    /* sun_path holds 108 bytes: "/" plus 107 fits only with no room for the NUL. */
    name[sizeof(((struct sockaddr_un *)0)->sun_path)] = '\0';
    name[0] = '/';
    setenv("NOTIFY_SOCKET", name, 1);
    assert_int_equal(sd_notify_send("READY=1"), -ENAMETOOLONG);
    setenv("NOTIFY_SOCKET", "relative/path", 1);
    assert_int_equal(sd_notify_send("READY=1"), -EAFNOSUPPORT);
    setenv("NOTIFY_SOCKET", "/nonexistent/godwit-notify", 1);
    assert_int_equal(sd_notify_send("READY=1"), -ENOENT);
    unsetenv("NOTIFY_SOCKET");
}

static void test_abstract_name_of_full_length_fits(void **state)
{
    (void)state;
    char name[sizeof(((struct sockaddr_un *)0)->sun_path) + 1];
    struct sockaddr_un addr = { .sun_family = AF_UNIX };
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);

    /* An abstract name may fill all of sun_path: '\0' plus 107 bytes, no terminator. */
    int prefix_len = snprintf(name, sizeof(name), "@godwit-test-full-%d-", (int)getpid());
    memset(name + prefix_len, 'x', sizeof(name) - 1 - (size_t)prefix_len);
    name[sizeof(name) - 1] = '\0';
    memcpy(addr.sun_path + 1, name + 1, sizeof(addr.sun_path) - 1);
    assert_true(fd >= 0);
    assert_int_equal(bind(fd, (struct sockaddr *)&addr, sizeof(addr)), 0);
    setenv("NOTIFY_SOCKET", name, 1);
    assert_int_equal(sd_notify_send("WATCHDOG=1"), 1);
    assert_received(fd, "WATCHDOG=1");
    unsetenv("NOTIFY_SOCKET");
    close(fd);
}

static void test_watchdog_variables(void **state)
{
    (void)state;
    char pid[32];
    uint64_t usec = 0;

    unsetenv("WATCHDOG_USEC");
    unsetenv("WATCHDOG_PID");
    assert_false(sd_watchdog_enabled(&usec));
    setenv("WATCHDOG_USEC", "30000000", 1);
    assert_true(sd_watchdog_enabled(&usec));
    assert_int_equal(usec, 30000000);
    assert_true(sd_watchdog_enabled(NULL));
    snprintf(pid, sizeof(pid), "%d", (int)getpid());
    setenv("WATCHDOG_PID", pid, 1);
    assert_true(sd_watchdog_enabled(&usec));
    setenv("WATCHDOG_PID", "1", 1); /* meant for another process */
    assert_false(sd_watchdog_enabled(&usec));
    unsetenv("WATCHDOG_PID");
    setenv("WATCHDOG_USEC", "0", 1);
    assert_false(sd_watchdog_enabled(&usec));
    setenv("WATCHDOG_USEC", "12abc", 1);
    assert_false(sd_watchdog_enabled(&usec));
    setenv("WATCHDOG_USEC", "-5", 1);
    assert_false(sd_watchdog_enabled(&usec));
    unsetenv("WATCHDOG_USEC");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_unset_is_a_no_op),
        cmocka_unit_test(test_sends_to_path_socket),
        cmocka_unit_test(test_sends_to_abstract_socket),
        cmocka_unit_test(test_bad_addresses_refused),
        cmocka_unit_test(test_abstract_name_of_full_length_fits),
        cmocka_unit_test(test_watchdog_variables),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
