/* test_device_options.c: the values of --disk, --net and --console, and the device lists. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <errno.h>
#include <string.h>
#include <cmocka.h>

#include "lib/device_options.h"

static void test_mac(void **state)
{
    (void)state;
    uint8_t mac[6];
    static const uint8_t expected[6] = { 0x52, 0x54, 0x00, 0xab, 0xcd, 0xef };
    assert_true(devopt_parse_mac("52:54:00:ab:CD:Ef", mac));
    assert_memory_equal(mac, expected, sizeof(mac));
    assert_true(devopt_parse_mac("02:00:00:00:00:00", NULL));
    assert_true(devopt_parse_mac("fe:ff:ff:ff:ff:ff", NULL));

    static const char *const bad[] = {
        "01:00:5e:00:00:01",   /* multicast */
        "ff:ff:ff:ff:ff:ff",   /* broadcast */
        "52:54:00:12:34",      /* short */
        "52:54:00:12:34:56:",  /* long */
        "52:54:00:12:34:567",
        "52-54-00-12-34-56",
        "5254.0012.3456....",
        "52:54:00:12:34:5g",
        " 2:54:00:12:34:56",   /* sscanf's %x would take these: */
        "-2:54:00:12:34:56",
        "+2:54:00:12:34:56",
        "0x:54:00:12:34:56",
        "52:54:00:12: 4:56",
        "52:54:00:12:34:+5",
        "",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        memset(mac, 0xaa, sizeof(mac));
        print_message("%s\n", bad[i]);
        assert_false(devopt_parse_mac(bad[i], mac));
        assert_int_equal(mac[0], 0xaa); /* untouched on failure */
    }
}

static void test_disk(void **state)
{
    (void)state;
    struct config_strings owned = { 0 };
    struct godwit_disk disk;

    assert_int_equal(devopt_parse_disk("--disk", "a.img", &disk, &owned), 0);
    assert_string_equal(disk.path, "a.img");
    assert_false(disk.readonly);
    assert_null(disk.serial);
    assert_false(disk.cache_none);
    assert_int_equal(disk.queues, 0);

    assert_int_equal(devopt_parse_disk("--disk", "b.img,readonly,serial=S1,cache=none,queues=2",
                                       &disk, &owned), 0);
    assert_string_equal(disk.path, "b.img");
    assert_true(disk.readonly);
    assert_string_equal(disk.serial, "S1");
    assert_true(disk.cache_none);
    assert_int_equal(disk.queues, 2);

    assert_int_equal(devopt_parse_disk("--disk", "ro=true,path=c,readonly=false", &disk, &owned), 0);
    assert_string_equal(disk.path, "c");
    assert_false(disk.readonly);

    assert_int_equal(devopt_parse_disk("--disk", "cache=writeback", &disk, &owned), -EINVAL);
    assert_int_equal(devopt_parse_disk("--disk", "a,queues=16x", &disk, &owned), -EINVAL);
    assert_int_equal(devopt_parse_disk("--disk", "a,queues=+1", &disk, &owned), -EINVAL);
    config_strings_free(&owned);
}

static void test_net(void **state)
{
    (void)state;
    struct config_strings owned = { 0 };
    struct godwit_net net;

    assert_int_equal(devopt_parse_net("--net", "tap0", &net, &owned), 0);
    assert_string_equal(net.tap, "tap0");
    assert_null(net.mac);
    assert_int_equal(net.queues, 0);
    assert_int_equal(devopt_parse_net("--net", "queues=3,mac=52:54:00:00:00:01,tap=t", &net,
                                      &owned), 0);
    assert_string_equal(net.tap, "t");
    assert_string_equal(net.mac, "52:54:00:00:00:01");
    assert_int_equal(net.queues, 3);
    assert_int_equal(devopt_parse_net("--net", "tap=t,mac=53:54:00:00:00:01", &net, &owned),
                     -EINVAL);
    assert_int_equal(devopt_parse_net("--net", "tap=t,mac=52:54:00:00:00:01:02", &net, &owned),
                     -EINVAL);
    config_strings_free(&owned);
}

/* An interface without queues=N: one pair per vCPU up to 16, one on a single-queue tap. */
static void test_net_default_queues(void **state)
{
    (void)state;
    /* No such tap yet (godwit makes it multi-queue), or a multi-queue one: one pair each. */
    assert_int_equal(devopt_net_default_queues(1, -ENODEV), 1);
    assert_int_equal(devopt_net_default_queues(4, -ENODEV), 4);
    assert_int_equal(devopt_net_default_queues(64, -ENODEV), 16);
    assert_int_equal(devopt_net_default_queues(4, 1), 4);
    assert_int_equal(devopt_net_default_queues(0, 1), 1);
    /* Single-queue, not a tap, or the host did not say: one, as before the default. */
    assert_int_equal(devopt_net_default_queues(4, 0), 1);
    assert_int_equal(devopt_net_default_queues(4, -EMEDIUMTYPE), 1);
    assert_int_equal(devopt_net_default_queues(4, -EOPNOTSUPP), 1);
    assert_int_equal(devopt_net_default_queues(4, -EPERM), 1);
}

static void test_console(void **state)
{
    (void)state;
    struct config_strings owned = { 0 };
    enum godwit_virtio_console mode = GODWIT_VIRTIO_CONSOLE_FILE;
    const char *path = "old";

    assert_int_equal(devopt_parse_console("--console", "serial", &mode, &path, &owned), 0);
    assert_int_equal(mode, GODWIT_VIRTIO_CONSOLE_NONE);
    assert_null(path);
    assert_int_equal(devopt_parse_console("--console", "virtio,file=/f", &mode, &path, &owned), 0);
    assert_int_equal(mode, GODWIT_VIRTIO_CONSOLE_FILE);
    assert_string_equal(path, "/f");
    assert_int_equal(devopt_parse_console("--console", "virtio", &mode, &path, &owned), 0);
    assert_int_equal(mode, GODWIT_VIRTIO_CONSOLE_TERMINAL);
    assert_null(path);
    assert_int_equal(devopt_parse_console("--console", "virtio,socket=/s", &mode, &path, &owned), 0);
    assert_int_equal(mode, GODWIT_VIRTIO_CONSOLE_SOCKET);
    assert_string_equal(path, "/s");

    static const char *const bad[] = { "", "bogus", "serial,socket=/s", "serial=1",
                                       "virtio,socket=", "virtio,file", "virtio,x=1",
                                       "virtio,socket=/a,file=/b", "Virtio" };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(devopt_parse_console("--console", bad[i], &mode, &path, &owned), -EINVAL);
    config_strings_free(&owned);
}

static void test_vsock(void **state)
{
    (void)state;
    struct config_strings owned = { 0 };
    uint64_t cid = 9;
    const char *path = "old";

    assert_int_equal(devopt_parse_vsock("--vsock", "cid=3", &cid, &path, &owned), 0);
    assert_int_equal(cid, 3);
    assert_null(path);
    assert_int_equal(devopt_parse_vsock("--vsock", "42,socket=/run/v.sock", &cid, &path, &owned),
                     0);
    assert_int_equal(cid, 42);
    assert_string_equal(path, "/run/v.sock");
    assert_int_equal(devopt_parse_vsock("--vsock", "socket=/s,cid=4294967294", &cid, &path,
                                        &owned), 0);
    assert_int_equal(cid, 4294967294u);

    static const char *const bad[] = { "", "cid=2", "cid=0", "cid=4294967295", "cid=-3",
                                       "cid=3x", "cid=", "socket=/s", "cid=3,socket=",
                                       "cid=3,port=1", "cid=99999999999999999999" };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(devopt_parse_vsock("--vsock", bad[i], &cid, &path, &owned), -EINVAL);
    assert_false(devopt_vsock_cid_valid(2));
    assert_true(devopt_vsock_cid_valid(3));
    config_strings_free(&owned);
}

static void test_lists(void **state)
{
    (void)state;
    struct config_strings owned = { 0 };
    struct vm_config cfg = { 0 };
    struct godwit_disk disk = { .path = "d" };
    struct godwit_net net = { .tap = "t" };

    for (unsigned i = 0; i < CONFIG_MAX_DISKS; i++)
        assert_int_equal(devopt_add_disk(&cfg, &owned, &disk), 0);
    assert_int_equal(cfg.nr_disks, CONFIG_MAX_DISKS);
    assert_ptr_equal(cfg.disks, owned.disks);
    assert_int_equal(devopt_add_disk(&cfg, &owned, &disk), -ENOSPC);
    for (unsigned i = 0; i < CONFIG_MAX_NETS; i++)
        assert_int_equal(devopt_add_net(&cfg, &owned, &net), 0);
    assert_int_equal(devopt_add_net(&cfg, &owned, &net), -ENOSPC);
    assert_int_equal(cfg.nr_nets, CONFIG_MAX_NETS);

    /* A full list that is not owned's is replaced, not counted against the maximum. */
    struct godwit_disk others[CONFIG_MAX_DISKS] = { 0 };
    struct godwit_net other_nets[CONFIG_MAX_NETS] = { 0 };
    struct config_strings fresh = { 0 };
    cfg.disks = others;
    cfg.nr_disks = CONFIG_MAX_DISKS;
    cfg.nets = other_nets;
    cfg.nr_nets = CONFIG_MAX_NETS;
    assert_int_equal(devopt_add_disk(&cfg, &fresh, &disk), 0);
    assert_int_equal(cfg.nr_disks, 1);
    assert_ptr_equal(cfg.disks, fresh.disks);
    assert_int_equal(devopt_add_net(&cfg, &fresh, &net), 0);
    assert_int_equal(cfg.nr_nets, 1);
    assert_ptr_equal(cfg.nets, fresh.nets);

    const char *kept = devopt_keep(&fresh, "abcdef", 3);
    assert_string_equal(kept, "abc");
    assert_int_equal(fresh.nr_strings, 1);
    config_strings_free(&owned);
    config_strings_free(&fresh);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mac),
        cmocka_unit_test(test_disk),
        cmocka_unit_test(test_net),
        cmocka_unit_test(test_net_default_queues),
        cmocka_unit_test(test_console),
        cmocka_unit_test(test_vsock),
        cmocka_unit_test(test_lists),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
