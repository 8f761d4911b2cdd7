/* test_jail.c: what --jail puts in the jail, where, and what it refuses before changing anything. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "cli/jail.h"
#include "log.h"
#include "vm/vm.h"

static void test_outside_path(void **state)
{
    (void)state;
    char out[64];
    assert_int_equal(jail_outside_path("/srv/jail", "/home/u", "/var/k/bzImage", out, sizeof(out)), 0);
    assert_string_equal(out, "/srv/jail/var/k/bzImage");
    /* A relative path: the jailed process keeps its working directory. */
    assert_int_equal(jail_outside_path("/srv/jail", "/home/u", "disk.img", out, sizeof(out)), 0);
    assert_string_equal(out, "/srv/jail/home/u/disk.img");
    /* '..' could climb out of the jail: refused; a name that only contains dots is not. */
    assert_int_equal(jail_outside_path("/srv/jail", "/home/u", "../../etc/shadow", out, sizeof(out)),
                     -EINVAL);
    assert_int_equal(jail_outside_path("/srv/jail", "/", "/a/../../etc", out, sizeof(out)), -EINVAL);
    assert_int_equal(jail_outside_path("/srv/jail", "/", "/a/..b/c...", out, sizeof(out)), 0);
    assert_int_equal(jail_outside_path("/srv/jail", "/", "/a/very/long/path/beyond/the/buffer/size/x",
                                       out, 32), -ENAMETOOLONG);
}

static void test_plan_of_a_vm(void **state)
{
    (void)state;
    struct godwit_disk disks[2] = { { .path = "root.img" }, { .path = "/srv/seed.iso", .readonly = true } };
    struct godwit_net net = { .tap = "tap0" };
    struct vm_config cfg = { .kernel_path = "/boot/vmlinuz", .initrd_path = NULL, .disks = disks,
                             .nr_disks = 2, .nets = &net, .nr_nets = 1,
                             .virtio_console = GODWIT_VIRTIO_CONSOLE_SOCKET,
                             .virtio_console_path = "/run/vm/hvc0.sock" };
    struct jail_plan plan = { 0 };
    assert_int_equal(jail_plan_vm(&plan, &cfg, "/run/vm/api.sock", NULL), 0);
    assert_int_equal(plan.nr_mounts, 5); /* no initrd, no snapshot */
    assert_string_equal(plan.mounts[0].path, "/boot/vmlinuz");
    assert_true(plan.mounts[0].readonly);
    assert_string_equal(plan.mounts[1].path, "root.img");
    assert_false(plan.mounts[1].readonly);
    assert_true(plan.mounts[2].readonly); /* a read-only disk stays so */
    assert_true(plan.mounts[3].parent_dir); /* the console socket: its directory */
    assert_true(plan.mounts[4].parent_dir); /* the API socket: its directory */
    assert_true(plan.tun);

    struct jail_plan full = { 0 };
    for (int i = 0; i < JAIL_MAX_MOUNTS; i++)
        assert_int_equal(jail_plan_add(&full, "/x", false, false), 0);
    assert_int_equal(jail_plan_add(&full, "/x", false, false), -E2BIG);
}

/* Refused before any namespace is made: a relative or climbing root, no user, or root. */
static void test_refusals(void **state)
{
    (void)state;
    struct jail_plan plan = { 0 };
    struct jail j = { .dir = "jail", .uid = 1000, .gid = 1000, .ids_given = true };
    assert_int_equal(jail_enter(&j, &plan), -EINVAL);
    j.dir = "/srv/../jail";
    assert_int_equal(jail_enter(&j, &plan), -EINVAL);
    j.dir = "/srv/jail";
    j.ids_given = false;
    assert_int_equal(jail_enter(&j, &plan), -EINVAL);
    j.ids_given = true;
    j.uid = 0;
    assert_int_equal(jail_enter(&j, &plan), -EINVAL);
}

int main(void)
{
    log_set_level(LOG_LVL_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_outside_path),
        cmocka_unit_test(test_plan_of_a_vm),
        cmocka_unit_test(test_refusals),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
