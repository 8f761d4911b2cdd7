/* test_jail.c: what --jail puts in the jail, where, and what it refuses before changing anything. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
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

/* --cgroup FILE=VALUE: a controller's file and one line; never cgroup.* (they move processes). */
static void test_cgroup_settings(void **state)
{
    (void)state;
    assert_int_equal(jail_cgroup_check_setting("memory.max=1G"), 0);
    assert_int_equal(jail_cgroup_check_setting("cpu.max=50000 100000"), 0);
    assert_int_equal(jail_cgroup_check_setting("memory.swap.max=0"), 0);
    assert_int_equal(jail_cgroup_check_setting("memory.max"), -EINVAL);        /* no value */
    assert_int_equal(jail_cgroup_check_setting("memory.max="), -EINVAL);
    assert_int_equal(jail_cgroup_check_setting("=1G"), -EINVAL);
    assert_int_equal(jail_cgroup_check_setting("max=1G"), -EINVAL);            /* no controller */
    assert_int_equal(jail_cgroup_check_setting("../memory.max=1G"), -EINVAL);  /* a path */
    assert_int_equal(jail_cgroup_check_setting("memory/x.max=1G"), -EINVAL);
    assert_int_equal(jail_cgroup_check_setting("cgroup.procs=1"), -EINVAL);
    assert_int_equal(jail_cgroup_check_setting("cgroup.subtree_control=+cpu"), -EINVAL);
    assert_int_equal(jail_cgroup_check_setting("memory.max=1G\n+cpu"), -EINVAL);

    struct jail_cgroup cg = { 0 };
    for (int i = 0; i < JAIL_CGROUP_MAX_SETTINGS; i++)
        assert_int_equal(jail_cgroup_add(&cg, "pids.max=64"), 0);
    assert_int_equal(jail_cgroup_add(&cg, "pids.max=64"), -E2BIG);
    assert_int_equal(jail_cgroup_add(&cg, "cgroup.procs=1"), -EINVAL);
}

/* A directory that is not cgroup2 is refused before anything is made; a cgroup whose limit
 * cannot be written is taken away again, and a stale empty one from a killed run is replaced. */
static void test_cgroup_make_cleans_up(void **state)
{
    (void)state;
    char root[] = "/tmp/godwit-cgroup-XXXXXX", path[128];
    assert_non_null(mkdtemp(root));
    assert_int_equal(jail_cgroup_usable(root), -ENOTSUP);

    /* cgroupfs has cgroup.subtree_control in every cgroup; a plain directory needs them made. */
    snprintf(path, sizeof(path), "%s/godwit", root);
    assert_int_equal(mkdir(path, 0755), 0);
    snprintf(path, sizeof(path), "%s/cgroup.subtree_control", root);
    fclose(fopen(path, "w"));
    snprintf(path, sizeof(path), "%s/godwit/cgroup.subtree_control", root);
    fclose(fopen(path, "w"));
    snprintf(path, sizeof(path), "%s/godwit/vm1", root);
    assert_int_equal(mkdir(path, 0755), 0); /* stale, empty */

    struct jail_cgroup cg = { 0 };
    assert_int_equal(jail_cgroup_add(&cg, "memory.max=1G"), 0);
    /* vm1 is replaced, then its memory.max (no such file in a plain directory) fails. */
    assert_int_equal(jail_cgroup_make(&cg, root, "vm1"), -ENOENT);
    assert_int_equal(access(path, F_OK), -1);
    assert_string_equal(cg.path, "");
    char line[32] = "";
    snprintf(path, sizeof(path), "%s/godwit/cgroup.subtree_control", root);
    FILE *f = fopen(path, "r");
    assert_non_null(fgets(line, sizeof(line), f));
    fclose(f);
    assert_string_equal(line, "+memory"); /* enabled for the VM's cgroup first */

    /* One still in use (on cgroupfs: processes, EBUSY; here a child) is not taken over. */
    snprintf(path, sizeof(path), "%s/godwit/vm2", root);
    assert_int_equal(mkdir(path, 0755), 0);
    snprintf(path, sizeof(path), "%s/godwit/vm2/inner", root);
    assert_int_equal(mkdir(path, 0755), 0);
    assert_int_equal(jail_cgroup_make(&cg, root, "vm2"), -ENOTEMPTY);
    assert_int_equal(access(path, F_OK), 0);
    char cmd[160];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", root);
    assert_int_equal(system(cmd), 0);
}

int main(void)
{
    log_set_level(LOG_LVL_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_outside_path),
        cmocka_unit_test(test_plan_of_a_vm),
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_cgroup_settings),
        cmocka_unit_test(test_cgroup_make_cleans_up),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
