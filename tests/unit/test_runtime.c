/* test_runtime.c: the runtime directory is trusted only when it is the user's own. */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include "api/runtime.h"
#include "log.h"

/* A user that is not us, and the directory runtime_dir() picks for it: /tmp/godwit-UID. */
static uid_t fake_uid;
static char dir[RUNTIME_PATH_MAX];

static void remove_dir(void)
{
    char path[RUNTIME_PATH_MAX + 32];
    snprintf(path, sizeof(path), "%s/vm.lock", dir);
    unlink(path);
    if (rmdir(dir) < 0)
        unlink(dir); /* a symlink or a file */
}

static int setup(void **state)
{
    (void)state;
    if (geteuid() != 0)
        return 0; /* the tests skip: they chown */
    fake_uid = (uid_t)(0x7f000000u + ((unsigned)getpid() & 0xffffu));
    snprintf(dir, sizeof(dir), "/tmp/godwit-%u", (unsigned)fake_uid);
    unsetenv("XDG_RUNTIME_DIR");
    runtime_test_set_euid(fake_uid);
    remove_dir();
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    remove_dir();
    runtime_test_set_euid((uid_t)-1);
    return 0;
}

static int pick(void)
{
    char buf[RUNTIME_PATH_MAX];
    int ret = runtime_dir(buf, sizeof(buf));
    if (ret == 0)
        assert_string_equal(buf, dir);
    return ret;
}

/* The user's own 0700 directory is taken; one another user made, or one others may write to,
 * is refused, as is a symlink to the user's own. */
static void test_dir_owner_and_mode(void **state)
{
    (void)state;
    if (geteuid() != 0)
        skip();
    assert_int_equal(mkdir(dir, 0777), 0);
    assert_int_equal(chmod(dir, 0777), 0);
    assert_int_equal(chown(dir, fake_uid + 1, 0), 0); /* another user's, open to all */
    assert_int_equal(pick(), -EPERM);
    assert_int_equal(chown(dir, fake_uid, 0), 0); /* ours, but anyone may write in it */
    assert_int_equal(pick(), -EPERM);
    assert_int_equal(chmod(dir, 0720), 0);
    assert_int_equal(pick(), -EPERM);
    assert_int_equal(chmod(dir, 0755), 0); /* others may look, not write */
    assert_int_equal(pick(), 0);
    assert_int_equal(chmod(dir, 0700), 0);
    assert_int_equal(pick(), 0);

    /* A symlink at the path, even to a directory that passes, and a plain file. */
    char real[RUNTIME_PATH_MAX + 8];
    snprintf(real, sizeof(real), "%s.real", dir);
    assert_int_equal(rename(dir, real), 0);
    assert_int_equal(symlink(real, dir), 0);
    assert_int_equal(pick(), -EPERM);
    unlink(dir);
    assert_int_equal(rmdir(real), 0);
    int fd = open(dir, O_CREAT | O_WRONLY, 0700);
    assert_true(fd >= 0);
    assert_int_equal(fchown(fd, fake_uid, 0), 0);
    close(fd);
    assert_int_equal(pick(), -EPERM);
}

/* Created afresh it is the euid's (here root's, not the fake user's: refused too). */
static void test_dir_created(void **state)
{
    (void)state;
    if (geteuid() != 0)
        skip();
    assert_int_equal(pick(), -EPERM); /* made by root for a user that is not root */
    struct stat st;
    assert_int_equal(lstat(dir, &st), 0);
    assert_true(S_ISDIR(st.st_mode));
    assert_int_equal(st.st_mode & 0777, 0700);
    runtime_test_set_euid(0);
    assert_int_equal(runtime_dir_check(dir, 0), 0);
    runtime_test_set_euid(fake_uid);
}

/* A lock file planted as a symlink is not followed, so nothing is created where it points. */
static void test_lock_no_follow(void **state)
{
    (void)state;
    if (geteuid() != 0)
        skip();
    assert_int_equal(mkdir(dir, 0700), 0);
    assert_int_equal(chown(dir, fake_uid, 0), 0);
    char lock[RUNTIME_PATH_MAX + 32], target[RUNTIME_PATH_MAX + 32];
    snprintf(lock, sizeof(lock), "%s/vm.lock", dir);
    snprintf(target, sizeof(target), "%s.target", dir);
    unlink(target);
    assert_int_equal(symlink(target, lock), 0);
    assert_int_equal(runtime_claim_name("vm"), -ELOOP);
    assert_int_equal(access(target, F_OK), -1);
    unlink(lock);

    int fd = runtime_claim_name("vm");
    assert_true(fd >= 0);
    assert_int_equal(runtime_claim_name("vm"), -EADDRINUSE);
    close(fd);
}

/* A control command never creates the directory, and only root looks into one another user
 * owns: a service's /run/godwit, made by systemd for the unit's user. */
static void test_client_dir(void **state)
{
    (void)state;
    if (geteuid() != 0)
        skip();
    char buf[RUNTIME_PATH_MAX];
    assert_int_equal(runtime_client_dir(buf, sizeof(buf)), -ENOENT);
    assert_int_equal(access(dir, F_OK), -1);
    assert_int_equal(mkdir(dir, 0700), 0);
    assert_int_equal(chown(dir, fake_uid + 1, 0), 0);
    assert_int_equal(runtime_client_dir(buf, sizeof(buf)), -EPERM); /* not root: its own only */
    assert_int_equal(chown(dir, fake_uid, 0), 0);
    assert_int_equal(runtime_client_dir(buf, sizeof(buf)), 0);
    assert_string_equal(buf, dir);
    char sock[RUNTIME_PATH_MAX];
    assert_int_equal(runtime_client_socket_path("vm", sock, sizeof(sock)), 0);
    assert_string_equal(sock + strlen(dir), "/vm.sock");
    assert_int_equal(chmod(dir, 0777), 0);
    assert_int_equal(runtime_client_dir(buf, sizeof(buf)), -EPERM); /* others may write: never */
}

/* Root's clients accept /run/godwit owned by a service user; its servers do not. */
static void test_root_client_accepts_service_user(void **state)
{
    (void)state;
    if (geteuid() != 0)
        skip();
    runtime_test_set_euid(0);
    char buf[RUNTIME_PATH_MAX];
    int ret = runtime_client_dir(buf, sizeof(buf));
    runtime_test_set_euid(fake_uid);
    assert_string_equal(buf, "/run/godwit");
    struct stat st;
    if (lstat("/run/godwit", &st) == 0 && S_ISDIR(st.st_mode) && !(st.st_mode & 022))
        assert_int_equal(ret, 0); /* whoever owns it */
    assert_int_equal(runtime_dir_check(dir, 0), -ENOENT); /* a server checks its owner, */
    assert_int_equal(mkdir(dir, 0700), 0);
    assert_int_equal(chown(dir, fake_uid, 0), 0);
    assert_int_equal(runtime_dir_check(dir, 0), -EPERM); /* ... which must be itself */
}

int main(void)
{
    log_set_level(LOG_LVL_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_dir_owner_and_mode, setup, teardown),
        cmocka_unit_test_setup_teardown(test_dir_created, setup, teardown),
        cmocka_unit_test_setup_teardown(test_lock_no_follow, setup, teardown),
        cmocka_unit_test_setup_teardown(test_client_dir, setup, teardown),
        cmocka_unit_test_setup_teardown(test_root_client_accepts_service_user, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
