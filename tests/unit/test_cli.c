/* test_cli.c: `godwit run` option parsing: defaults, values, and one error per bad input. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "cli/cli.h"

#define ARGC(a) ((int)(sizeof(a) / sizeof((a)[0])) - 1)

/* Parses into a static options struct; cfg points into it (its strings may come from it). */
static int parse(int argc, char **argv, struct vm_config *cfg)
{
    static struct cli_run_options opts;
    cli_run_options_free(&opts);
    int ret = cli_parse_run(argc, argv, &opts);
    *cfg = opts.cfg;
    return ret;
}

static void test_defaults(void **state)
{
    (void)state;
    char *argv[] = { "run", "--kernel", "bzImage", NULL };
    struct vm_config cfg;
    assert_int_equal(parse(ARGC(argv), argv, &cfg), 0);
    assert_string_equal(cfg.kernel_path, "bzImage");
    assert_null(cfg.initrd_path);
    assert_string_equal(cfg.cmdline, DEFAULT_CMDLINE);
    assert_int_equal(cfg.memory_mib, DEFAULT_MEMORY_MIB);
    assert_int_equal(cfg.nr_cpus, 1);
    assert_false(cfg.no_reboot);
    assert_false(cfg.hugepages);
}

static void test_all_options(void **state)
{
    (void)state;
    char *argv[] = { "run", "-k", "vmlinux", "--initrd=initrd.gz", "--cmdline", "console=ttyS0 quiet",
                     "--memory", "1024", "--cpus", "4", "--no-reboot", "--hugepages", NULL };
    struct vm_config cfg;
    assert_int_equal(parse(ARGC(argv), argv, &cfg), 0);
    assert_string_equal(cfg.kernel_path, "vmlinux");
    assert_string_equal(cfg.initrd_path, "initrd.gz");
    assert_string_equal(cfg.cmdline, "console=ttyS0 quiet");
    assert_int_equal(cfg.memory_mib, 1024);
    assert_int_equal(cfg.nr_cpus, 4);
    assert_true(cfg.no_reboot);
    assert_true(cfg.hugepages);
}

static void expect_rejected(char **argv, int argc)
{
    struct vm_config cfg;
    assert_int_equal(parse(argc, argv, &cfg), -EINVAL);
}

/* An on|off option whose `off` sets one flag of the configuration: on by default, both words
 * taken (as a separate argument and after =), anything else refused. */
static void check_off_option(const char *option, size_t flag)
{
    char on_arg[64], bad_arg[64];
    snprintf(on_arg, sizeof(on_arg), "%s=on", option);
    snprintf(bad_arg, sizeof(bad_arg), "%s=no", option);
    char *off[] = { "run", "-k", "k", (char *)option, "off", NULL };
    char *on[] = { "run", "-k", "k", on_arg, NULL };
    char *bad[] = { "run", "-k", "k", bad_arg, NULL };
    char *plain[] = { "run", "-k", "k", NULL };
    struct vm_config cfg;
    const bool *set = (const bool *)((const char *)&cfg + flag);
    assert_int_equal(parse(ARGC(plain), plain, &cfg), 0);
    assert_false(*set);
    assert_int_equal(parse(ARGC(off), off, &cfg), 0);
    assert_true(*set);
    assert_int_equal(parse(ARGC(on), on, &cfg), 0);
    assert_false(*set);
    expect_rejected(bad, ARGC(bad));
}

static void test_on_off_options(void **state)
{
    (void)state;
    check_off_option("--kernel-decompress", offsetof(struct vm_config, no_kernel_decompress));
    check_off_option("--thp", offsetof(struct vm_config, no_thp));
}

static void test_help(void **state)
{
    (void)state;
    char *argv[] = { "run", "--help", NULL };
    struct vm_config cfg;
    assert_int_equal(parse(ARGC(argv), argv, &cfg), CLI_HELP);
}


static void test_bad_input_rejected(void **state)
{
    (void)state;
    char *no_kernel[] = { "run", "--memory", "128", NULL };
    char *bad_memory[] = { "run", "-k", "k", "--memory", "12x", NULL };
    char *small_memory[] = { "run", "-k", "k", "--memory", "63", NULL };
    char *negative_memory[] = { "run", "-k", "k", "--memory", "-5", NULL };
    char *huge_memory[] = { "run", "-k", "k", "--memory", "99999999999999999999", NULL };
    char *zero_cpus[] = { "run", "-k", "k", "--cpus", "0", NULL };
    char *many_cpus[] = { "run", "-k", "k", "--cpus", "256", NULL };
    char *unknown[] = { "run", "-k", "k", "--frobnicate", NULL };
    char *missing_value[] = { "run", "-k", "k", "--cpus", NULL };
    char *stray[] = { "run", "-k", "k", "extra", NULL };
    expect_rejected(no_kernel, ARGC(no_kernel));
    expect_rejected(bad_memory, ARGC(bad_memory));
    expect_rejected(small_memory, ARGC(small_memory));
    expect_rejected(negative_memory, ARGC(negative_memory));
    expect_rejected(huge_memory, ARGC(huge_memory));
    expect_rejected(zero_cpus, ARGC(zero_cpus));
    expect_rejected(many_cpus, ARGC(many_cpus));
    expect_rejected(unknown, ARGC(unknown));
    expect_rejected(missing_value, ARGC(missing_value));
    expect_rejected(stray, ARGC(stray));
}

static void test_device_options(void **state)
{
    (void)state;
    char *argv[] = { "run", "-k", "k", "--disk", "/img/root.img",
                     "--disk", "path=/dev/vg/data,readonly=on,serial=12345678901234567890,cache=none,queues=16",
                     "--disk", "b.img,ro,cache=writeback,queues=1",
                     "--disk", "readonly=off,path=c.img",
                     "--net", "tap0",
                     "--net", "tap=123456789012345,mac=52:54:00:ab:CD:ef,queues=4",
                     "--console", "virtio,socket=/run/vm.console", "--no-rng",
                     "--vsock", "cid=7,socket=/run/vm.vsock", NULL };
    struct vm_config cfg;
    assert_int_equal(parse(ARGC(argv), argv, &cfg), 0);
    assert_int_equal(cfg.nr_disks, 4);
    assert_string_equal(cfg.disks[0].path, "/img/root.img");
    assert_false(cfg.disks[0].readonly);
    assert_null(cfg.disks[0].serial);
    assert_false(cfg.disks[0].cache_none);
    assert_int_equal(cfg.disks[0].queues, 0);
    assert_string_equal(cfg.disks[1].path, "/dev/vg/data");
    assert_true(cfg.disks[1].readonly);
    assert_string_equal(cfg.disks[1].serial, "12345678901234567890");
    assert_true(cfg.disks[1].cache_none);
    assert_int_equal(cfg.disks[1].queues, 16);
    assert_string_equal(cfg.disks[2].path, "b.img");
    assert_true(cfg.disks[2].readonly);
    assert_false(cfg.disks[2].cache_none);
    assert_int_equal(cfg.disks[2].queues, 1);
    assert_string_equal(cfg.disks[3].path, "c.img");
    assert_false(cfg.disks[3].readonly);
    assert_int_equal(cfg.nr_nets, 2);
    assert_string_equal(cfg.nets[0].tap, "tap0");
    assert_null(cfg.nets[0].mac);
    assert_string_equal(cfg.nets[1].tap, "123456789012345");
    assert_string_equal(cfg.nets[1].mac, "52:54:00:ab:CD:ef");
    assert_int_equal(cfg.nets[1].queues, 4);
    assert_int_equal(cfg.virtio_console, GODWIT_VIRTIO_CONSOLE_SOCKET);
    assert_string_equal(cfg.virtio_console_path, "/run/vm.console");
    assert_true(cfg.no_rng);
    assert_int_equal(cfg.vsock_cid, 7);
    assert_string_equal(cfg.vsock_path, "/run/vm.vsock");

    /* Without these options: no devices but the rng. */
    char *plain[] = { "run", "-k", "k", NULL };
    assert_int_equal(parse(ARGC(plain), plain, &cfg), 0);
    assert_int_equal(cfg.nr_disks, 0);
    assert_int_equal(cfg.nr_nets, 0);
    assert_int_equal(cfg.virtio_console, GODWIT_VIRTIO_CONSOLE_NONE);
    assert_false(cfg.no_rng);
}

static void test_console_option(void **state)
{
    (void)state;
    static const struct {
        const char *arg;
        enum godwit_virtio_console mode;
        const char *path;
    } cases[] = {
        { "serial", GODWIT_VIRTIO_CONSOLE_NONE, NULL },
        { "virtio", GODWIT_VIRTIO_CONSOLE_TERMINAL, NULL },
        { "virtio,socket=/s", GODWIT_VIRTIO_CONSOLE_SOCKET, "/s" },
        { "virtio,file=/var/log/hvc0", GODWIT_VIRTIO_CONSOLE_FILE, "/var/log/hvc0" },
    };
    struct vm_config cfg;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *argv[] = { "run", "-k", "k", "--console", (char *)cases[i].arg, NULL };
        assert_int_equal(parse(ARGC(argv), argv, &cfg), 0);
        assert_int_equal(cfg.virtio_console, cases[i].mode);
        if (cases[i].path)
            assert_string_equal(cfg.virtio_console_path, cases[i].path);
        else
            assert_null(cfg.virtio_console_path);
    }
    /* The last --console counts. */
    char *twice[] = { "run", "-k", "k", "--console", "virtio,file=/f", "--console", "serial", NULL };
    assert_int_equal(parse(ARGC(twice), twice, &cfg), 0);
    assert_int_equal(cfg.virtio_console, GODWIT_VIRTIO_CONSOLE_NONE);
    assert_null(cfg.virtio_console_path);
}

static void test_bad_device_options_rejected(void **state)
{
    (void)state;
    static const char *const bad[][2] = {
        { "--disk", "path=a,foo=1" },
        { "--disk", "a,bogus" },
        { "--disk", "path=a,readonly=maybe" },
        { "--disk", "path=a,readonly=" },
        { "--disk", "path=a,cache=directsync" },
        { "--disk", "path=a,cache" },
        { "--disk", "path=a,queues=0" },
        { "--disk", "path=a,queues=17" },
        { "--disk", "path=a,queues=abc" },
        { "--disk", "path=a,queues=" },
        { "--disk", "path=a,queues=-1" },
        { "--disk", "path=a,queues=99999999999" },
        { "--disk", "path=a,serial=123456789012345678901" },
        { "--disk", "path=a,serial=" },
        { "--disk", "readonly=on" },
        { "--disk", "path=" },
        { "--disk", "" },
        { "--disk", "path=a,,ro" },
        { "--net", "tap=t,mac=01:00:5e:00:00:01" },
        { "--net", "tap=t,mac=52:54:00:12:34" },
        { "--net", "tap=t,mac=52:54:00:12:34:5g" },
        { "--net", "tap=t,mac=52-54-00-12-34-56" },
        { "--net", "tap=t,mac= 2:54:00:12:34:56" },
        { "--net", "tap=t,mac=-2:54:00:12:34:56" },
        { "--net", "tap=t,mac=" },
        { "--net", "tap=1234567890123456" },
        { "--net", "mac=52:54:00:12:34:56" },
        { "--net", "tap=" },
        { "--net", "tap=t,queues=0" },
        { "--net", "tap=t,queues=17" },
        { "--net", "tap=t,queues=abc" },
        { "--net", "tap=t,ifname=x" },
        { "--console", "virtio,socket=" },
        { "--console", "virtio,file=" },
        { "--console", "virtio,socket" },
        { "--console", "virtio,socket=/a,file=/b" },
        { "--console", "virtio,pipe=/p" },
        { "--console", "virtio=1" },
        { "--console", "serial,file=/f" },
        { "--console", "bogus" },
        { "--console", "" },
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char *argv[] = { "run", "-k", "k", (char *)bad[i][0], (char *)bad[i][1], NULL };
        print_message("%s %s\n", bad[i][0], bad[i][1]);
        expect_rejected(argv, ARGC(argv));
    }

    /* At most 16 disks and 8 interfaces. */
    char *many[2 * 17 + 4] = { "run", "-k", "k" };
    for (int i = 0; i < 17; i++) {
        many[3 + 2 * i] = "--disk";
        many[4 + 2 * i] = "d.img";
    }
    struct vm_config cfg;
    assert_int_equal(parse(3 + 2 * 16, many, &cfg), 0);
    assert_int_equal(cfg.nr_disks, 16);
    expect_rejected(many, 3 + 2 * 17);
    for (int i = 0; i < 9; i++) {
        many[3 + 2 * i] = "--net";
        many[4 + 2 * i] = "tap0";
    }
    assert_int_equal(parse(3 + 2 * 8, many, &cfg), 0);
    assert_int_equal(cfg.nr_nets, 8);
    expect_rejected(many, 3 + 2 * 9);
}

static char *write_temp_file(const char *text)
{
    char *path = strdup("/tmp/godwit-test-cli-XXXXXX");
    assert_non_null(path);
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    return path;
}

static void test_devices_override_config_file(void **state)
{
    (void)state;
    char *path = write_temp_file("{\"kernel\": \"k\", "
                                 "\"disks\": [{\"path\": \"file-a\"}, {\"path\": \"file-b\"}], "
                                 "\"net\": [{\"tap\": \"file-t\"}], "
                                 "\"console\": {\"mode\": \"file\", \"path\": \"/file.log\"}, "
                                 "\"rng\": false}");
    struct vm_config cfg;

    /* Nothing on the command line: the file's devices. */
    char *file_only[] = { "run", "--config", path, NULL };
    assert_int_equal(parse(ARGC(file_only), file_only, &cfg), 0);
    assert_int_equal(cfg.nr_disks, 2);
    assert_string_equal(cfg.disks[0].path, "file-a");
    assert_string_equal(cfg.disks[1].path, "file-b");
    assert_int_equal(cfg.nr_nets, 1);
    assert_string_equal(cfg.nets[0].tap, "file-t");
    assert_int_equal(cfg.virtio_console, GODWIT_VIRTIO_CONSOLE_FILE);
    assert_string_equal(cfg.virtio_console_path, "/file.log");
    assert_true(cfg.no_rng);

    /* The first --disk replaces the file's list, the next ones add; the nets stay. Order of
     * --config and --disk does not matter. */
    char *disks[] = { "run", "--disk", "cli-c", "--config", path, "--disk", "cli-d", NULL };
    assert_int_equal(parse(ARGC(disks), disks, &cfg), 0);
    assert_int_equal(cfg.nr_disks, 2);
    assert_string_equal(cfg.disks[0].path, "cli-c");
    assert_string_equal(cfg.disks[1].path, "cli-d");
    assert_int_equal(cfg.nr_nets, 1);
    assert_string_equal(cfg.nets[0].tap, "file-t");

    /* The same for --net; --console replaces the file's console. */
    char *nets[] = { "run", "--config", path, "--net", "cli-t", "--console", "virtio", NULL };
    assert_int_equal(parse(ARGC(nets), nets, &cfg), 0);
    assert_int_equal(cfg.nr_disks, 2);
    assert_string_equal(cfg.disks[1].path, "file-b");
    assert_int_equal(cfg.nr_nets, 1);
    assert_string_equal(cfg.nets[0].tap, "cli-t");
    assert_int_equal(cfg.virtio_console, GODWIT_VIRTIO_CONSOLE_TERMINAL);
    assert_null(cfg.virtio_console_path);
    unlink(path);
    free(path);

    /* A file with the most disks still lets one --disk replace them. */
    char json[1024];
    size_t len = (size_t)snprintf(json, sizeof(json), "{\"kernel\": \"k\", \"disks\": [");
    for (int i = 0; i < 16; i++)
        len += (size_t)snprintf(json + len, sizeof(json) - len, "%s{\"path\": \"f%d\"}",
                                i ? ", " : "", i);
    snprintf(json + len, sizeof(json) - len, "]}");
    path = write_temp_file(json);
    char *full[] = { "run", "--config", path, "--disk", "only", NULL };
    assert_int_equal(parse(ARGC(full), full, &cfg), 0);
    assert_int_equal(cfg.nr_disks, 1);
    assert_string_equal(cfg.disks[0].path, "only");

    /* A bad device in the file fails the whole command line. */
    unlink(path);
    free(path);
    path = write_temp_file("{\"kernel\": \"k\", \"disks\": [{\"path\": \"a\", \"cache\": \"x\"}]}");
    char *bad_file[] = { "run", "--config", path, "--disk", "good", NULL };
    expect_rejected(bad_file, ARGC(bad_file));
    unlink(path);
    free(path);
}

static void test_sandbox_options(void **state)
{
    static struct cli_run_options opts;
    (void)state;
    char *plain[] = { "run", "-k", "k", NULL };
    assert_int_equal(cli_parse_run(ARGC(plain), plain, &opts), 0);
    assert_int_equal(opts.extra.seccomp, GODWIT_SECCOMP_ON);
    assert_false(opts.extra.keep_caps);
    cli_run_options_free(&opts);
    char *set[] = { "run", "-k", "k", "--seccomp=log", "--caps", "keep", NULL };
    assert_int_equal(cli_parse_run(ARGC(set), set, &opts), 0);
    assert_int_equal(opts.extra.seccomp, GODWIT_SECCOMP_LOG);
    assert_true(opts.extra.keep_caps);
    cli_run_options_free(&opts);
    char *off[] = { "run", "-k", "k", "--seccomp", "off", NULL };
    assert_int_equal(cli_parse_run(ARGC(off), off, &opts), 0);
    assert_int_equal(opts.extra.seccomp, GODWIT_SECCOMP_OFF);
    cli_run_options_free(&opts);
    char *bad[] = { "run", "-k", "k", "--seccomp", "strict", NULL };
    assert_int_equal(cli_parse_run(ARGC(bad), bad, &opts), -EINVAL);
    cli_run_options_free(&opts);
    char *bad_caps[] = { "run", "-k", "k", "--caps", "none", NULL };
    assert_int_equal(cli_parse_run(ARGC(bad_caps), bad_caps, &opts), -EINVAL);
    cli_run_options_free(&opts);
}

static void test_io_poll_option(void **state)
{
    static struct cli_run_options opts;
    (void)state;
    char *plain[] = { "run", "-k", "k", NULL };
    assert_int_equal(cli_parse_run(ARGC(plain), plain, &opts), 0);
    assert_int_equal(opts.extra.io_poll_us, 0);
    cli_run_options_free(&opts);
    char *set[] = { "run", "-k", "k", "--io-poll", "50", NULL };
    assert_int_equal(cli_parse_run(ARGC(set), set, &opts), 0);
    assert_int_equal(opts.extra.io_poll_us, 50);
    cli_run_options_free(&opts);
    static char *bad[][6] = {
        { "run", "-k", "k", "--io-poll", "1001", NULL },
        { "run", "-k", "k", "--io-poll", "-1", NULL },
        { "run", "-k", "k", "--io-poll", "fast", NULL },
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(cli_parse_run(5, bad[i], &opts), -EINVAL);
        cli_run_options_free(&opts);
    }
}

static void test_jail_options(void **state)
{
    static struct cli_run_options opts;
    (void)state;
    char *jail[] = { "run", "-k", "k", "--jail", "/srv/j", "--uid", "1007", "--gid", "1008", NULL };
    assert_int_equal(cli_parse_run(ARGC(jail), jail, &opts), 0);
    assert_string_equal(opts.jail.dir, "/srv/j");
    assert_int_equal(opts.jail.uid, 1007);
    assert_int_equal(opts.jail.gid, 1008);
    assert_true(opts.jail.ids_given);
    cli_run_options_free(&opts);
    char *half[] = { "run", "-k", "k", "--jail", "/srv/j", "--uid", "1007", NULL };
    assert_int_equal(cli_parse_run(ARGC(half), half, &opts), 0);
    assert_false(opts.jail.ids_given); /* jail_enter() refuses it, naming both */
    cli_run_options_free(&opts);
    char *no_jail[] = { "run", "-k", "k", "--uid", "1007", "--gid", "1007", NULL };
    assert_int_equal(cli_parse_run(ARGC(no_jail), no_jail, &opts), -EINVAL);
    cli_run_options_free(&opts);
    char *bad_uid[] = { "run", "-k", "k", "--jail", "/j", "--uid", "nobody", "--gid", "1", NULL };
    assert_int_equal(cli_parse_run(ARGC(bad_uid), bad_uid, &opts), -EINVAL);
    cli_run_options_free(&opts);
}

/* A destination refuses a bad option before it waits for a source: it neither listens nor
 * blocks (without the early check each parse below would wait for a connection forever, which
 * the alarm turns into this test's failure). */
static void test_incoming_checks_options_first(void **state)
{
    (void)state;
    char path[] = "/tmp/godwit-test-cli-incoming.XXXXXX";
    assert_non_null(mkdtemp(path));
    char uri[sizeof(path) + 16];
    snprintf(uri, sizeof(uri), "unix:%s/mig.sock", path);
    char *bad_memory[] = { "run", "--incoming", uri, "--memory", "12x", NULL };
    char *unknown[] = { "run", "--incoming", uri, "--frobnicate", NULL };
    char *bad_seccomp[] = { "run", "--incoming", uri, "--seccomp", "maybe", NULL };
    char *uid_alone[] = { "run", "--incoming", uri, "--uid", "5", NULL };
    char *help[] = { "run", "--incoming", uri, "--help", NULL };
    struct vm_config cfg;
    alarm(20);
    assert_int_equal(parse(ARGC(bad_memory), bad_memory, &cfg), -EINVAL);
    assert_int_equal(parse(ARGC(unknown), unknown, &cfg), -EINVAL);
    assert_int_equal(parse(ARGC(bad_seccomp), bad_seccomp, &cfg), -EINVAL);
    assert_int_equal(parse(ARGC(uid_alone), uid_alone, &cfg), -EINVAL);
    assert_int_equal(parse(ARGC(help), help, &cfg), CLI_HELP);
    alarm(0);
    assert_int_equal(access(uri + 5, F_OK), -1); /* no socket was bound */
    assert_int_equal(rmdir(path), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sandbox_options),
        cmocka_unit_test(test_io_poll_option),
        cmocka_unit_test(test_jail_options),
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_all_options),
        cmocka_unit_test(test_help),
        cmocka_unit_test(test_bad_input_rejected),
        cmocka_unit_test(test_device_options),
        cmocka_unit_test(test_console_option),
        cmocka_unit_test(test_on_off_options),
        cmocka_unit_test(test_bad_device_options_rejected),
        cmocka_unit_test(test_devices_override_config_file),
        cmocka_unit_test(test_incoming_checks_options_first),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
