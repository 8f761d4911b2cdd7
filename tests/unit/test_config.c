/* test_config.c: the JSON configuration file: schema, exact error messages, round trip. */
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
#include <json-c/json.h>

#include "cli/cli.h"
#include "lib/config.h"

struct parsed {
    struct vm_config cfg;
    struct config_extra extra;
    struct config_strings owned;
    struct config_error err;
};

static int parse(struct parsed *p, const char *json)
{
    memset(p, 0, sizeof(*p));
    return config_parse_json(json, strlen(json), &p->cfg, &p->extra, &p->owned, &p->err);
}

/* Parses json, expects it refused, and checks the one-line message. */
static void expect_error(const char *json, const char *message)
{
    struct parsed p;
    assert_int_equal(parse(&p, json), -EINVAL);
    assert_string_equal(p.err.message, message);
    assert_null(p.owned.kernel);
}

static char *write_temp_file(const char *text)
{
    char *path = strdup("/tmp/godwit-test-config-XXXXXX");
    assert_non_null(path);
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    return path;
}

static const char full_file[] = "{\n"
                                "  \"name\": \"web-1\",\n"
                                "  \"kernel\": \"/boot/vmlinux\",\n"
                                "  \"initrd\": \"/boot/initrd.img\",\n"
                                "  \"cmdline\": \"console=ttyS0 quiet\",\n"
                                "  \"memory_mib\": 1024,\n"
                                "  \"cpus\": 4,\n"
                                "  \"hugepages\": true,\n"
                                "  \"thp\": false,\n"
                                "  \"no_reboot\": true,\n"
                                "  \"api_socket\": \"/run/user/1000/web-1.sock\"\n"
                                "}\n";

static void test_full_file(void **state)
{
    (void)state;
    struct parsed p = { 0 };
    char *path = write_temp_file(full_file);
    assert_int_equal(config_load_file(path, &p.cfg, &p.extra, &p.owned, &p.err), 0);
    assert_string_equal(p.cfg.kernel_path, "/boot/vmlinux");
    assert_string_equal(p.cfg.initrd_path, "/boot/initrd.img");
    assert_string_equal(p.cfg.cmdline, "console=ttyS0 quiet");
    assert_int_equal(p.cfg.memory_mib, 1024);
    assert_int_equal(p.cfg.nr_cpus, 4);
    assert_true(p.cfg.hugepages);
    assert_true(p.cfg.no_reboot);
    assert_int_equal(p.cfg.console_out_fd, STDOUT_FILENO);
    assert_string_equal(p.extra.name, "web-1");
    assert_string_equal(p.extra.api_socket, "/run/user/1000/web-1.sock");
    /* The strings are copies: they outlive the file's text and the json-c objects. */
    assert_ptr_equal(p.cfg.kernel_path, p.owned.kernel);
    config_strings_free(&p.owned);
    assert_null(p.owned.kernel);
    unlink(path);
    free(path);
}

static void test_defaults_for_absent_keys(void **state)
{
    (void)state;
    struct parsed p;
    assert_int_equal(parse(&p, "{\"kernel\": \"bzImage\"}"), 0);
    assert_string_equal(p.cfg.kernel_path, "bzImage");
    assert_null(p.cfg.initrd_path);
    assert_string_equal(p.cfg.cmdline, DEFAULT_CMDLINE);
    assert_int_equal(p.cfg.memory_mib, DEFAULT_MEMORY_MIB);
    assert_int_equal(p.cfg.nr_cpus, 1);
    assert_false(p.cfg.hugepages);
    assert_false(p.cfg.no_reboot);
    assert_null(p.extra.name);
    assert_null(p.extra.api_socket);
    config_strings_free(&p.owned);

    /* An empty command line is a choice, not a mistake. */
    assert_int_equal(parse(&p, "{\"kernel\": \"k\", \"cmdline\": \"\"}"), 0);
    assert_string_equal(p.cfg.cmdline, "");
    config_strings_free(&p.owned);
}

static void test_wrong_types(void **state)
{
    (void)state;
    static const struct {
        const char *json, *message;
    } cases[] = {
        { "{\"kernel\": 1}", "config: \"kernel\" must be a string" },
        { "{\"kernel\": \"k\", \"initrd\": null}", "config: \"initrd\" must be a string" },
        { "{\"kernel\": \"k\", \"cmdline\": [\"a\"]}", "config: \"cmdline\" must be a string" },
        { "{\"kernel\": \"k\", \"memory_mib\": \"512\"}", "config: \"memory_mib\" must be an integer" },
        { "{\"kernel\": \"k\", \"memory_mib\": 512.5}", "config: \"memory_mib\" must be an integer" },
        { "{\"kernel\": \"k\", \"cpus\": 2.0}", "config: \"cpus\" must be an integer" },
        { "{\"kernel\": \"k\", \"cpus\": true}", "config: \"cpus\" must be an integer" },
        { "{\"kernel\": \"k\", \"hugepages\": 1}", "config: \"hugepages\" must be true or false" },
        { "{\"kernel\": \"k\", \"no_reboot\": \"yes\"}", "config: \"no_reboot\" must be true or false" },
        { "{\"kernel\": \"k\", \"name\": {}}", "config: \"name\" must be a string" },
        { "{\"kernel\": \"k\", \"api_socket\": 7}", "config: \"api_socket\" must be a string" },
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        expect_error(cases[i].json, cases[i].message);
}

static void test_out_of_range(void **state)
{
    (void)state;
    char message[CONFIG_ERROR_MAX];
    long pages = sysconf(_SC_PHYS_PAGES), page_size = sysconf(_SC_PAGE_SIZE);
    uint64_t host_mib = ((uint64_t)pages * (uint64_t)page_size) >> 20;

    expect_error("{\"kernel\": \"k\", \"cpus\": 0}", "config: \"cpus\" is 0, must be 1 to 255");
    expect_error("{\"kernel\": \"k\", \"cpus\": 256}", "config: \"cpus\" is 256, must be 1 to 255");
    expect_error("{\"kernel\": \"k\", \"cpus\": -1}", "config: \"cpus\" is -1, must be 1 to 255");
    expect_error("{\"kernel\": \"k\", \"cpus\": 99999999999999999999}",
                 "config: \"cpus\" is out of range, must be 1 to 255");
    snprintf(message, sizeof(message), "config: \"memory_mib\" is 63, must be 64 to %llu",
             (unsigned long long)host_mib);
    expect_error("{\"kernel\": \"k\", \"memory_mib\": 63}", message);
    snprintf(message, sizeof(message),
             "config: \"memory_mib\" is 1099511627776, must be 64 to %llu",
             (unsigned long long)host_mib);
    expect_error("{\"kernel\": \"k\", \"memory_mib\": 1099511627776}", message);

    struct parsed p;
    assert_int_equal(parse(&p, "{\"kernel\": \"k\", \"cpus\": 255, \"memory_mib\": 64}"), 0);
    assert_int_equal(p.cfg.nr_cpus, 255);
    assert_int_equal(p.cfg.memory_mib, 64);
    config_strings_free(&p.owned);
}

static void test_bad_strings(void **state)
{
    (void)state;
    char long_socket[256];
    expect_error("{\"kernel\": \"\"}", "config: \"kernel\" must not be empty");
    expect_error("{\"kernel\": \"k\", \"initrd\": \"\"}", "config: \"initrd\" must not be empty");
    expect_error("{\"kernel\": \"vm\\u0000linux\"}",
                 "config: \"kernel\" must not contain a NUL character");
    snprintf(long_socket, sizeof(long_socket), "{\"kernel\": \"k\", \"api_socket\": \"/%0108d\"}", 0);
    expect_error(long_socket, "config: \"api_socket\" is too long (at most 107 bytes)");
}

static void test_unknown_and_missing_keys(void **state)
{
    (void)state;
    expect_error("{\"kernel\": \"k\", \"foo\": 1}", "config: unknown key \"foo\"");
    /* An option's spelling is not a key: the file uses underscores. */
    expect_error("{\"kernel\": \"k\", \"no-reboot\": true}", "config: unknown key \"no-reboot\"");
    expect_error("{\"kernel\": \"k\", \"a\\nb\": 1}", "config: unknown key \"a\\nb\"");
    expect_error("{\"memory_mib\": 128}", "config: \"kernel\" is required");
    expect_error("{}", "config: \"kernel\" is required");
}

static void test_syntax_errors_name_the_line(void **state)
{
    (void)state;
    expect_error("{\n  \"kernel\": \"k\",\n  \"cpus\": 2,\n}\n", "config: line 4: unexpected character");
    expect_error("{\n  \"kernel\" \"k\"\n}", "config: line 2: object property name separator ':' expected");
    expect_error("{\"kernel\": \"k\"", "config: line 1: unexpected end of data");
    expect_error("", "config: line 1: unexpected end of data");
    expect_error("{\"kernel\": \"k\"}\n\nx", "config: line 3: unexpected character");
    expect_error("{\"kernel\": tru}", "config: line 1: boolean expected");
    expect_error("{\"kernel\": \"\xff\"}", "config: line 1: invalid utf-8 string");
    expect_error("\n\n[\"kernel\"]", "config: line 3: the configuration must be a JSON object");
    expect_error("\"kernel\"", "config: line 1: the configuration must be a JSON object");

    struct parsed p;
    const char with_nul[] = "{\"kernel\": \"k\"}\0 trailing";
    memset(&p, 0, sizeof(p));
    assert_int_equal(config_parse_json(with_nul, sizeof(with_nul) - 1, &p.cfg, &p.extra, &p.owned,
                                       &p.err), -EINVAL);
    assert_string_equal(p.err.message, "config: line 1: unexpected character");
}

static void test_file_errors_name_the_file(void **state)
{
    (void)state;
    struct parsed p = { 0 };
    char message[CONFIG_ERROR_MAX];
    char *path = write_temp_file("{\n  \"kernel\": \"k\",\n  \"cpus\": 2 3\n}\n");

    assert_int_equal(config_load_file(path, &p.cfg, &p.extra, &p.owned, &p.err), -EINVAL);
    snprintf(message, sizeof(message), "config: %s: line 3: object value separator ',' expected",
             path);
    assert_string_equal(p.err.message, message);
    unlink(path);
    free(path);

    path = write_temp_file("{\"kernel\": \"k\", \"cpu\": 2}");
    assert_int_equal(config_load_file(path, &p.cfg, &p.extra, &p.owned, &p.err), -EINVAL);
    snprintf(message, sizeof(message), "config: %s: unknown key \"cpu\"", path);
    assert_string_equal(p.err.message, message);
    unlink(path);
    free(path);

    assert_int_equal(config_load_file("/nonexistent/vm.json", &p.cfg, &p.extra, &p.owned, &p.err),
                     -EINVAL);
    assert_string_equal(p.err.message, "config: /nonexistent/vm.json: No such file or directory");
}

static void test_oversized_input_refused(void **state)
{
    (void)state;
    struct parsed p = { 0 };
    char *text = malloc(CONFIG_FILE_MAX + 2);
    assert_non_null(text);
    memset(text, ' ', CONFIG_FILE_MAX + 1);
    memcpy(text, "{\"kernel\": \"k\"}", 15);
    text[CONFIG_FILE_MAX + 1] = '\0';
    assert_int_equal(config_parse_json(text, CONFIG_FILE_MAX + 1, &p.cfg, &p.extra, &p.owned, &p.err),
                     -EINVAL);
    assert_string_equal(p.err.message, "config: larger than 1048576 bytes");

    char *path = write_temp_file(text);
    char message[CONFIG_ERROR_MAX];
    assert_int_equal(config_load_file(path, &p.cfg, &p.extra, &p.owned, &p.err), -EINVAL);
    snprintf(message, sizeof(message), "config: %s: larger than 1048576 bytes", path);
    assert_string_equal(p.err.message, message);
    unlink(path);
    free(path);
    free(text);
}

static void test_failure_leaves_outputs_untouched(void **state)
{
    (void)state;
    struct parsed p;
    assert_int_equal(parse(&p, "{\"kernel\": \"first\", \"cpus\": 2}"), 0);
    struct parsed before = p;
    /* Valid keys before the bad one are not half-applied. */
    assert_int_equal(config_parse_json("{\"kernel\": \"second\", \"cpus\": 0}", 32, &p.cfg, &p.extra,
                                       &p.owned, &p.err), -EINVAL);
    assert_memory_equal(&p.cfg, &before.cfg, sizeof(p.cfg));
    assert_memory_equal(&p.owned, &before.owned, sizeof(p.owned));
    assert_string_equal(p.cfg.kernel_path, "first");
    config_strings_free(&p.owned);
}

static void test_errors_are_logged_without_err(void **state)
{
    (void)state;
    struct parsed p = { 0 };
    assert_int_equal(config_parse_json("{}", 2, &p.cfg, &p.extra, &p.owned, NULL), -EINVAL);
}

static void test_name_validation(void **state)
{
    (void)state;
    static const char *const good[] = { "a", "web-1", "A.b_c-9", "x.", "0" };
    static const char *const bad[] = { ".hidden", "-dash", "a b", "a/b", "caf\xc3\xa9",
                                       "12345678901234567890123456789012345678901234567890123456789012345" };
    char json[256];
    struct parsed p;

    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        snprintf(json, sizeof(json), "{\"kernel\": \"k\", \"name\": \"%s\"}", good[i]);
        assert_int_equal(parse(&p, json), 0);
        assert_string_equal(p.extra.name, good[i]);
        config_strings_free(&p.owned);
    }
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        snprintf(json, sizeof(json), "{\"kernel\": \"k\", \"name\": \"%s\"}", bad[i]);
        expect_error(json, "config: \"name\" must be 1 to 64 characters of A-Z a-z 0-9 . _ -, "
                           "not starting with '.' or '-'");
    }
    expect_error("{\"kernel\": \"k\", \"name\": \"\"}", "config: \"name\" must not be empty");
}

static void test_round_trip(void **state)
{
    (void)state;
    struct parsed first, second;
    char text[4096];

    assert_int_equal(parse(&first, full_file), 0);
    int len = config_to_json(&first.cfg, &first.extra, text, sizeof(text));
    assert_true(len > 0);
    assert_int_equal(strlen(text), (size_t)len);
    /* Paths keep their slashes unescaped, for people reading GET /vm. */
    assert_non_null(strstr(text, "\"/boot/vmlinux\""));
    assert_int_equal(parse(&second, text), 0);
    assert_string_equal(second.cfg.kernel_path, first.cfg.kernel_path);
    assert_string_equal(second.cfg.initrd_path, first.cfg.initrd_path);
    assert_string_equal(second.cfg.cmdline, first.cfg.cmdline);
    assert_int_equal(second.cfg.memory_mib, first.cfg.memory_mib);
    assert_int_equal(second.cfg.nr_cpus, first.cfg.nr_cpus);
    assert_int_equal(second.cfg.hugepages, first.cfg.hugepages);
    /* RAM's page size goes with a migration: --thp off stays off at the destination. */
    assert_true(second.cfg.no_thp);
    assert_int_equal(second.cfg.no_reboot, first.cfg.no_reboot);
    assert_string_equal(second.extra.name, first.extra.name);
    assert_string_equal(second.extra.api_socket, first.extra.api_socket);

    /* Too small a buffer is an error, never a truncated document. */
    assert_int_equal(config_to_json(&first.cfg, &first.extra, text, (size_t)len), -ENOSPC);
    config_strings_free(&first.owned);
    config_strings_free(&second.owned);
}

/* A disk without "queues" gets one per vCPU, at most 16, and the saved configuration (a
 * snapshot's, a migration's) says how many it got, so that a restore builds the same disk. */
static void test_disk_queues_default(void **state)
{
    (void)state;
    static const struct { const char *json; unsigned want; } cases[] = {
        { "{\"kernel\": \"k\", \"disks\": [{\"path\": \"d\"}]}", 1 },
        { "{\"kernel\": \"k\", \"cpus\": 4, \"disks\": [{\"path\": \"d\"}]}", 4 },
        { "{\"kernel\": \"k\", \"cpus\": 40, \"disks\": [{\"path\": \"d\"}]}", 16 },
        { "{\"kernel\": \"k\", \"cpus\": 4, \"disks\": [{\"path\": \"d\", \"queues\": 1}]}", 1 },
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct parsed first, second;
        char text[2048];
        assert_int_equal(parse(&first, cases[i].json), 0);
        assert_int_equal(vm_disk_queues(&first.cfg, &first.cfg.disks[0]), cases[i].want);
        assert_true(config_to_json(&first.cfg, NULL, text, sizeof(text)) > 0);
        assert_int_equal(parse(&second, text), 0);
        assert_int_equal(second.cfg.disks[0].queues, cases[i].want);
        config_strings_free(&first.owned);
        config_strings_free(&second.owned);
    }
}

static void test_round_trip_minimal(void **state)
{
    (void)state;
    struct parsed first, second;
    char text[1024];

    assert_int_equal(parse(&first, "{\"kernel\": \"k\"}"), 0);
    first.cfg.cmdline = NULL; /* vm_config's "the default" */
    assert_true(config_to_json(&first.cfg, NULL, text, sizeof(text)) > 0);
    assert_null(strstr(text, "initrd"));
    assert_null(strstr(text, "name"));
    assert_int_equal(parse(&second, text), 0);
    assert_string_equal(second.cfg.cmdline, DEFAULT_CMDLINE);
    assert_null(second.cfg.initrd_path);
    config_strings_free(&first.owned);
    config_strings_free(&second.owned);
}

static const char devices_file[] =
    "{\n"
    "  \"kernel\": \"k\",\n"
    "  \"disks\": [\n"
    "    {\"path\": \"/img/root.img\", \"serial\": \"12345678901234567890\"},\n"
    "    {\"path\": \"/dev/vg/data\", \"readonly\": true, \"cache\": \"none\", \"queues\": 16},\n"
    "    {\"path\": \"/img/wb.img\", \"readonly\": false, \"cache\": \"writeback\", \"queues\": 1}\n"
    "  ],\n"
    "  \"net\": [\n"
    "    {\"tap\": \"tap0\"},\n"
    "    {\"tap\": \"123456789012345\", \"mac\": \"52:54:00:AB:cd:EF\", \"queues\": 4}\n"
    "  ],\n"
    "  \"console\": {\"mode\": \"socket\", \"path\": \"/run/vm.console\"},\n"
    "  \"rng\": false\n"
    "}\n";

static void test_devices(void **state)
{
    (void)state;
    struct parsed p;
    assert_int_equal(parse(&p, devices_file), 0);
    assert_int_equal(p.cfg.nr_disks, 3);
    assert_ptr_equal(p.cfg.disks, p.owned.disks);
    assert_string_equal(p.cfg.disks[0].path, "/img/root.img");
    assert_false(p.cfg.disks[0].readonly);
    assert_string_equal(p.cfg.disks[0].serial, "12345678901234567890");
    assert_false(p.cfg.disks[0].cache_none);
    assert_int_equal(p.cfg.disks[0].queues, 0); /* not given: the default */
    assert_string_equal(p.cfg.disks[1].path, "/dev/vg/data");
    assert_true(p.cfg.disks[1].readonly);
    assert_null(p.cfg.disks[1].serial);
    assert_true(p.cfg.disks[1].cache_none);
    assert_int_equal(p.cfg.disks[1].queues, 16);
    assert_false(p.cfg.disks[2].readonly);
    assert_false(p.cfg.disks[2].cache_none);
    assert_int_equal(p.cfg.disks[2].queues, 1);
    assert_int_equal(p.cfg.nr_nets, 2);
    assert_string_equal(p.cfg.nets[0].tap, "tap0");
    assert_null(p.cfg.nets[0].mac);
    assert_int_equal(p.cfg.nets[0].queues, 0);
    assert_string_equal(p.cfg.nets[1].tap, "123456789012345");
    assert_string_equal(p.cfg.nets[1].mac, "52:54:00:AB:cd:EF");
    assert_int_equal(p.cfg.nets[1].queues, 4);
    assert_int_equal(p.cfg.virtio_console, GODWIT_VIRTIO_CONSOLE_SOCKET);
    assert_string_equal(p.cfg.virtio_console_path, "/run/vm.console");
    assert_true(p.cfg.no_rng);
    config_strings_free(&p.owned);
    assert_null(p.owned.disks);
    assert_null(p.owned.strings);

    /* Defaults: no devices but the rng, the serial console only. */
    assert_int_equal(parse(&p, "{\"kernel\": \"k\"}"), 0);
    assert_int_equal(p.cfg.nr_disks, 0);
    assert_int_equal(p.cfg.nr_nets, 0);
    assert_int_equal(p.cfg.virtio_console, GODWIT_VIRTIO_CONSOLE_NONE);
    assert_null(p.cfg.virtio_console_path);
    assert_false(p.cfg.no_rng);
    assert_false(p.cfg.no_kernel_decompress);
    assert_false(p.cfg.no_thp);
    config_strings_free(&p.owned);
    assert_int_equal(parse(&p, "{\"kernel\": \"k\", \"kernel_decompress\": false}"), 0);
    assert_true(p.cfg.no_kernel_decompress);
    config_strings_free(&p.owned);
    assert_int_equal(parse(&p, "{\"kernel\": \"k\", \"kernel_decompress\": \"off\"}"), -EINVAL);
    config_strings_free(&p.owned);
    assert_int_equal(parse(&p, "{\"kernel\": \"k\", \"thp\": false}"), 0);
    assert_true(p.cfg.no_thp);
    config_strings_free(&p.owned);
    assert_int_equal(parse(&p, "{\"kernel\": \"k\", \"thp\": 0}"), -EINVAL);
    config_strings_free(&p.owned);

    /* Empty lists are allowed; each console mode parses. */
    assert_int_equal(parse(&p, "{\"kernel\": \"k\", \"disks\": [], \"net\": [], \"rng\": true, "
                               "\"console\": {\"mode\": \"virtio\"}}"), 0);
    assert_int_equal(p.cfg.nr_disks, 0);
    assert_int_equal(p.cfg.nr_nets, 0);
    assert_false(p.cfg.no_rng);
    assert_int_equal(p.cfg.virtio_console, GODWIT_VIRTIO_CONSOLE_TERMINAL);
    assert_null(p.cfg.virtio_console_path);
    config_strings_free(&p.owned);
    assert_int_equal(parse(&p, "{\"kernel\": \"k\", \"console\": {\"mode\": \"serial\"}}"), 0);
    assert_int_equal(p.cfg.virtio_console, GODWIT_VIRTIO_CONSOLE_NONE);
    config_strings_free(&p.owned);
    assert_int_equal(parse(&p, "{\"kernel\": \"k\", \"console\": {\"path\": \"/log\", "
                               "\"mode\": \"file\"}}"), 0);
    assert_int_equal(p.cfg.virtio_console, GODWIT_VIRTIO_CONSOLE_FILE);
    assert_string_equal(p.cfg.virtio_console_path, "/log");
    config_strings_free(&p.owned);
}

static void test_device_limits(void **state)
{
    (void)state;
    char json[4096];
    size_t len;
    struct parsed p;

    /* 16 disks and 8 interfaces fit; one more of either does not. */
    for (unsigned extra = 0; extra < 2; extra++) {
        len = (size_t)snprintf(json, sizeof(json), "{\"kernel\": \"k\", \"disks\": [");
        for (unsigned i = 0; i < CONFIG_MAX_DISKS + extra; i++)
            len += (size_t)snprintf(json + len, sizeof(json) - len, "%s{\"path\": \"d%u\"}",
                                    i ? ", " : "", i);
        len += (size_t)snprintf(json + len, sizeof(json) - len, "], \"net\": [");
        for (unsigned i = 0; i < CONFIG_MAX_NETS; i++)
            len += (size_t)snprintf(json + len, sizeof(json) - len, "%s{\"tap\": \"t%u\"}",
                                    i ? ", " : "", i);
        snprintf(json + len, sizeof(json) - len, "]}");
        if (extra) {
            expect_error(json, "config: \"disks\" has 17 entries, at most 16");
            continue;
        }
        assert_int_equal(parse(&p, json), 0);
        assert_int_equal(p.cfg.nr_disks, CONFIG_MAX_DISKS);
        assert_string_equal(p.cfg.disks[15].path, "d15");
        assert_int_equal(p.cfg.nr_nets, CONFIG_MAX_NETS);
        assert_string_equal(p.cfg.nets[7].tap, "t7");
        config_strings_free(&p.owned);
    }
    expect_error("{\"kernel\": \"k\", \"net\": [{\"tap\": \"a\"}, {\"tap\": \"a\"}, {\"tap\": \"a\"}, "
                 "{\"tap\": \"a\"}, {\"tap\": \"a\"}, {\"tap\": \"a\"}, {\"tap\": \"a\"}, "
                 "{\"tap\": \"a\"}, {\"tap\": \"a\"}]}",
                 "config: \"net\" has 9 entries, at most 8");
}

static void test_device_errors(void **state)
{
    (void)state;
    static const struct {
        const char *json, *message;
    } cases[] = {
        /* disks */
        { "{\"kernel\": \"k\", \"disks\": {\"path\": \"a\"}}",
          "config: \"disks\" must be an array of objects" },
        { "{\"kernel\": \"k\", \"disks\": null}", "config: \"disks\" must be an array of objects" },
        { "{\"kernel\": \"k\", \"disks\": [\"a.img\"]}", "config: \"disks\"[0] must be an object" },
        { "{\"kernel\": \"k\", \"disks\": [{\"path\": \"a\"}, {\"readonly\": true}]}",
          "config: \"disks\"[1]: \"path\" is required" },
        { "{\"kernel\": \"k\", \"disks\": [{}]}", "config: \"disks\"[0]: \"path\" is required" },
        { "{\"kernel\": \"k\", \"disks\": [{\"path\": \"a\", \"ro\": true}]}",
          "config: \"disks\"[0]: unknown key \"ro\"" },
        { "{\"kernel\": \"k\", \"disks\": [{\"path\": \"\"}]}",
          "config: \"disks\"[0]: \"path\" must not be empty" },
        { "{\"kernel\": \"k\", \"disks\": [{\"path\": 3}]}",
          "config: \"disks\"[0]: \"path\" must be a string" },
        { "{\"kernel\": \"k\", \"disks\": [{\"path\": \"a\\u0000b\"}]}",
          "config: \"disks\"[0]: \"path\" must not contain a NUL character" },
        { "{\"kernel\": \"k\", \"disks\": [{\"path\": \"a\", \"readonly\": \"on\"}]}",
          "config: \"disks\"[0]: \"readonly\" must be true or false" },
        { "{\"kernel\": \"k\", \"disks\": [{\"path\": \"a\", \"serial\": \"123456789012345678901\"}]}",
          "config: \"disks\"[0]: \"serial\" is too long (at most 20 bytes)" },
        { "{\"kernel\": \"k\", \"disks\": [{\"path\": \"a\", \"serial\": \"\"}]}",
          "config: \"disks\"[0]: \"serial\" must not be empty" },
        { "{\"kernel\": \"k\", \"disks\": [{\"path\": \"a\", \"cache\": \"directsync\"}]}",
          "config: \"disks\"[0]: \"cache\" must be \"none\" or \"writeback\"" },
        { "{\"kernel\": \"k\", \"disks\": [{\"path\": \"a\", \"cache\": true}]}",
          "config: \"disks\"[0]: \"cache\" must be \"none\" or \"writeback\"" },
        { "{\"kernel\": \"k\", \"disks\": [{\"path\": \"a\", \"cache\": \"none\\u0000x\"}]}",
          "config: \"disks\"[0]: \"cache\" must be \"none\" or \"writeback\"" },
        { "{\"kernel\": \"k\", \"disks\": [{\"path\": \"a\", \"queues\": 0}]}",
          "config: \"disks\"[0]: \"queues\" is 0, must be 1 to 16" },
        { "{\"kernel\": \"k\", \"disks\": [{\"path\": \"a\", \"queues\": 17}]}",
          "config: \"disks\"[0]: \"queues\" is 17, must be 1 to 16" },
        { "{\"kernel\": \"k\", \"disks\": [{\"path\": \"a\", \"queues\": \"2\"}]}",
          "config: \"disks\"[0]: \"queues\" must be an integer" },
        /* net */
        { "{\"kernel\": \"k\", \"net\": \"tap0\"}", "config: \"net\" must be an array of objects" },
        { "{\"kernel\": \"k\", \"net\": [{\"mac\": \"52:54:00:12:34:56\"}]}",
          "config: \"net\"[0]: \"tap\" is required" },
        { "{\"kernel\": \"k\", \"net\": [{\"tap\": \"t\"}, {\"tap\": \"u\", \"ifname\": \"x\"}]}",
          "config: \"net\"[1]: unknown key \"ifname\"" },
        { "{\"kernel\": \"k\", \"net\": [{\"tap\": \"1234567890123456\"}]}",
          "config: \"net\"[0]: \"tap\" is too long (at most 15 bytes)" },
        { "{\"kernel\": \"k\", \"net\": [{\"tap\": \"\"}]}", "config: \"net\"[0]: \"tap\" must not be empty" },
        { "{\"kernel\": \"k\", \"net\": [{\"tap\": \"t\", \"mac\": \"01:00:5e:00:00:01\"}]}",
          "config: \"net\"[0]: \"mac\" must be a unicast address like 52:54:00:12:34:56" },
        { "{\"kernel\": \"k\", \"net\": [{\"tap\": \"t\", \"mac\": \"52:54:00:12:34\"}]}",
          "config: \"net\"[0]: \"mac\" must be a unicast address like 52:54:00:12:34:56" },
        { "{\"kernel\": \"k\", \"net\": [{\"tap\": \"t\", \"mac\": \"52-54-00-12-34-56\"}]}",
          "config: \"net\"[0]: \"mac\" must be a unicast address like 52:54:00:12:34:56" },
        { "{\"kernel\": \"k\", \"net\": [{\"tap\": \"t\", \"mac\": 5}]}",
          "config: \"net\"[0]: \"mac\" must be a string" },
        { "{\"kernel\": \"k\", \"net\": [{\"tap\": \"t\", \"queues\": 17}]}",
          "config: \"net\"[0]: \"queues\" is 17, must be 1 to 16" },
        /* console */
        { "{\"kernel\": \"k\", \"console\": \"virtio\"}", "config: \"console\" must be an object" },
        { "{\"kernel\": \"k\", \"console\": {}}", "config: \"console\": \"mode\" is required" },
        { "{\"kernel\": \"k\", \"console\": {\"mode\": \"bogus\"}}",
          "config: \"console\": \"mode\" must be \"serial\", \"virtio\", \"socket\" or \"file\"" },
        { "{\"kernel\": \"k\", \"console\": {\"mode\": 1}}",
          "config: \"console\": \"mode\" must be \"serial\", \"virtio\", \"socket\" or \"file\"" },
        { "{\"kernel\": \"k\", \"console\": {\"mode\": \"socket\"}}",
          "config: \"console\": \"path\" is required with \"mode\": \"socket\"" },
        { "{\"kernel\": \"k\", \"console\": {\"mode\": \"file\", \"path\": \"\"}}",
          "config: \"console\": \"path\" must not be empty" },
        { "{\"kernel\": \"k\", \"console\": {\"mode\": \"virtio\", \"path\": \"/x\"}}",
          "config: \"console\": \"path\" is only for \"mode\": \"socket\" or \"file\"" },
        { "{\"kernel\": \"k\", \"console\": {\"mode\": \"virtio\", \"socket\": \"/x\"}}",
          "config: \"console\": unknown key \"socket\"" },
        /* vsock */
        { "{\"kernel\": \"k\", \"vsock\": 3}", "config: \"vsock\" must be an object" },
        { "{\"kernel\": \"k\", \"vsock\": {}}", "config: \"vsock\": \"cid\" is required" },
        { "{\"kernel\": \"k\", \"vsock\": {\"cid\": 2}}",
          "config: \"vsock\": \"cid\" is 2, must be 3 to 4294967294" },
        { "{\"kernel\": \"k\", \"vsock\": {\"cid\": 3, \"socket\": \"\"}}",
          "config: \"vsock\": \"socket\" must not be empty" },
        { "{\"kernel\": \"k\", \"vsock\": {\"cid\": 3, \"port\": 1}}",
          "config: \"vsock\": unknown key \"port\"" },
        /* rng */
        { "{\"kernel\": \"k\", \"rng\": \"off\"}", "config: \"rng\" must be true or false" },
        { "{\"kernel\": \"k\", \"no_rng\": true}", "config: unknown key \"no_rng\"" },
        /* Messages after a nested one are not prefixed by it. */
        { "{\"disks\": [{\"path\": \"a\"}], \"console\": {\"mode\": \"virtio\"}}",
          "config: \"kernel\" is required" },
        { "{\"kernel\": \"k\", \"disks\": [{\"path\": \"a\"}], \"cpus\": 0}",
          "config: \"cpus\" is 0, must be 1 to 255" },
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        expect_error(cases[i].json, cases[i].message);
}

static void test_device_errors_name_the_file(void **state)
{
    (void)state;
    struct parsed p = { 0 };
    char message[CONFIG_ERROR_MAX];
    char *path = write_temp_file("{\n  \"kernel\": \"k\",\n  \"disks\": [\n    {\"path\": \"a\"},\n"
                                 "    {\"serial\": \"x\"}\n  ]\n}\n");
    assert_int_equal(config_load_file(path, &p.cfg, &p.extra, &p.owned, &p.err), -EINVAL);
    snprintf(message, sizeof(message), "config: %s: \"disks\"[1]: \"path\" is required", path);
    assert_string_equal(p.err.message, message);
    assert_null(p.owned.disks);
    assert_null(p.owned.strings);
    unlink(path);
    free(path);
}

/* "vsock" comes back as it went in; absent means no device, and is not written. */
static void test_round_trip_vsock(void **state)
{
    (void)state;
    struct parsed first, second;
    char text[4096];
    assert_int_equal(parse(&first, "{\"kernel\": \"k\", \"vsock\": {\"cid\": 4294967294, "
                                   "\"socket\": \"/run/godwit/a.vsock\"}}"), 0);
    assert_int_equal(first.cfg.vsock_cid, 4294967294u);
    assert_true(config_to_json(&first.cfg, &first.extra, text, sizeof(text)) > 0);
    assert_int_equal(parse(&second, text), 0);
    assert_int_equal(second.cfg.vsock_cid, 4294967294u);
    assert_string_equal(second.cfg.vsock_path, "/run/godwit/a.vsock");
    config_strings_free(&first.owned);
    config_strings_free(&second.owned);

    assert_int_equal(parse(&first, "{\"kernel\": \"k\"}"), 0);
    assert_int_equal(first.cfg.vsock_cid, 0);
    assert_true(config_to_json(&first.cfg, NULL, text, sizeof(text)) > 0);
    assert_null(strstr(text, "vsock"));
    config_strings_free(&first.owned);
}

static void test_round_trip_devices(void **state)
{
    (void)state;
    struct parsed first, second;
    char text[4096];

    assert_int_equal(parse(&first, devices_file), 0);
    assert_true(config_to_json(&first.cfg, &first.extra, text, sizeof(text)) > 0);
    assert_int_equal(parse(&second, text), 0);
    assert_int_equal(second.cfg.nr_disks, first.cfg.nr_disks);
    for (unsigned i = 0; i < first.cfg.nr_disks; i++) {
        const struct godwit_disk *a = &first.cfg.disks[i], *b = &second.cfg.disks[i];
        assert_string_equal(b->path, a->path);
        assert_int_equal(b->readonly, a->readonly);
        if (a->serial)
            assert_string_equal(b->serial, a->serial);
        else
            assert_null(b->serial);
        assert_int_equal(b->cache_none, a->cache_none);
        assert_int_equal(b->queues ? b->queues : 1, a->queues ? a->queues : 1);
    }
    assert_int_equal(second.cfg.nr_nets, first.cfg.nr_nets);
    for (unsigned i = 0; i < first.cfg.nr_nets; i++) {
        const struct godwit_net *a = &first.cfg.nets[i], *b = &second.cfg.nets[i];
        assert_string_equal(b->tap, a->tap);
        if (a->mac)
            assert_string_equal(b->mac, a->mac);
        else
            assert_null(b->mac);
        assert_int_equal(b->queues ? b->queues : 1, a->queues ? a->queues : 1);
    }
    assert_int_equal(second.cfg.virtio_console, first.cfg.virtio_console);
    assert_string_equal(second.cfg.virtio_console_path, first.cfg.virtio_console_path);
    assert_int_equal(second.cfg.no_rng, first.cfg.no_rng);
    config_strings_free(&first.owned);
    config_strings_free(&second.owned);

    /* The defaults are written out too (empty lists, the serial console, the rng). */
    assert_int_equal(parse(&first, "{\"kernel\": \"k\"}"), 0);
    assert_true(config_to_json(&first.cfg, NULL, text, sizeof(text)) > 0);
    struct json_object *obj = json_tokener_parse(text);
    assert_non_null(obj);
    struct json_object *v;
    assert_true(json_object_object_get_ex(obj, "disks", &v));
    assert_int_equal(json_object_array_length(v), 0);
    assert_true(json_object_object_get_ex(obj, "net", &v));
    assert_int_equal(json_object_array_length(v), 0);
    assert_true(json_object_object_get_ex(obj, "console", &v));
    assert_string_equal(json_object_to_json_string_ext(v, JSON_C_TO_STRING_PLAIN),
                        "{\"mode\":\"serial\"}");
    assert_true(json_object_object_get_ex(obj, "rng", &v));
    assert_true(json_object_get_boolean(v));
    json_object_put(obj);
    config_strings_free(&first.owned);

    /* Each console mode comes back as it went in; a path only where it means something. */
    static const char *const consoles[] = {
        "{\"mode\":\"serial\"}", "{\"mode\":\"virtio\"}",
        "{\"mode\":\"socket\",\"path\":\"\\/s\"}", "{\"mode\":\"file\",\"path\":\"\\/f\"}",
    };
    for (size_t i = 0; i < sizeof(consoles) / sizeof(consoles[0]); i++) {
        char json[256];
        snprintf(json, sizeof(json), "{\"kernel\": \"k\", \"console\": %s}", consoles[i]);
        assert_int_equal(parse(&first, json), 0);
        obj = config_to_json_object(&first.cfg, NULL);
        assert_non_null(obj);
        assert_true(json_object_object_get_ex(obj, "console", &v));
        assert_string_equal(json_object_to_json_string_ext(v, JSON_C_TO_STRING_PLAIN), consoles[i]);
        json_object_put(obj);
        config_strings_free(&first.owned);
    }
}

/* The sandbox keys: the process's settings (extra), never in a snapshot's configuration. */
static void test_sandbox_keys(void **state)
{
    struct parsed p;
    (void)state;
    assert_int_equal(parse(&p, "{\"kernel\": \"k\"}"), 0);
    assert_int_equal(p.extra.seccomp, GODWIT_SECCOMP_ON);
    assert_false(p.extra.keep_caps);
    config_strings_free(&p.owned);
    assert_int_equal(parse(&p, "{\"kernel\": \"k\", \"seccomp\": \"log\", \"caps\": \"keep\"}"), 0);
    assert_int_equal(p.extra.seccomp, GODWIT_SECCOMP_LOG);
    assert_true(p.extra.keep_caps);
    struct json_object *with = config_to_json_object(&p.cfg, &p.extra);
    struct json_object *without = config_to_json_object(&p.cfg, NULL);
    struct json_object *v;
    assert_true(json_object_object_get_ex(with, "seccomp", &v));
    assert_string_equal(json_object_get_string(v), "log");
    assert_true(json_object_object_get_ex(with, "caps", &v));
    assert_string_equal(json_object_get_string(v), "keep");
    assert_false(json_object_object_get_ex(without, "seccomp", &v));
    assert_false(json_object_object_get_ex(without, "caps", &v));
    json_object_put(with);
    json_object_put(without);
    config_strings_free(&p.owned);
    assert_int_equal(parse(&p, "{\"kernel\": \"k\", \"seccomp\": \"off\"}"), 0);
    assert_int_equal(p.extra.seccomp, GODWIT_SECCOMP_OFF);
    config_strings_free(&p.owned);
    expect_error("{\"kernel\": \"k\", \"seccomp\": true}",
                 "config: \"seccomp\" must be \"on\", \"log\" or \"off\"");
    expect_error("{\"kernel\": \"k\", \"seccomp\": \"strict\"}",
                 "config: \"seccomp\" must be \"on\", \"log\" or \"off\"");
    expect_error("{\"kernel\": \"k\", \"caps\": \"none\"}",
                 "config: \"caps\" must be \"drop\" or \"keep\"");
}

/* "io_poll_us": the host's polling window, shown with the sandbox's keys (not saved). */
static void test_io_poll_key(void **state)
{
    struct parsed p;
    (void)state;
    assert_int_equal(parse(&p, "{\"kernel\": \"k\"}"), 0);
    assert_int_equal(p.extra.io_poll_us, 0);
    config_strings_free(&p.owned);
    assert_int_equal(parse(&p, "{\"kernel\": \"k\", \"io_poll_us\": 50}"), 0);
    assert_int_equal(p.extra.io_poll_us, 50);
    struct json_object *with = config_to_json_object(&p.cfg, &p.extra);
    struct json_object *without = config_to_json_object(&p.cfg, NULL);
    struct json_object *v;
    assert_true(json_object_object_get_ex(with, "io_poll_us", &v));
    assert_int_equal(json_object_get_int(v), 50);
    assert_false(json_object_object_get_ex(without, "io_poll_us", &v));
    json_object_put(with);
    json_object_put(without);
    config_strings_free(&p.owned);
    expect_error("{\"kernel\": \"k\", \"io_poll_us\": 1001}",
                 "config: \"io_poll_us\" is 1001, must be 0 to 1000");
    expect_error("{\"kernel\": \"k\", \"io_poll_us\": \"50\"}",
                 "config: \"io_poll_us\" must be an integer");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_full_file),
        cmocka_unit_test(test_defaults_for_absent_keys),
        cmocka_unit_test(test_wrong_types),
        cmocka_unit_test(test_out_of_range),
        cmocka_unit_test(test_bad_strings),
        cmocka_unit_test(test_unknown_and_missing_keys),
        cmocka_unit_test(test_syntax_errors_name_the_line),
        cmocka_unit_test(test_file_errors_name_the_file),
        cmocka_unit_test(test_oversized_input_refused),
        cmocka_unit_test(test_failure_leaves_outputs_untouched),
        cmocka_unit_test(test_errors_are_logged_without_err),
        cmocka_unit_test(test_name_validation),
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_round_trip_minimal),
        cmocka_unit_test(test_disk_queues_default),
        cmocka_unit_test(test_devices),
        cmocka_unit_test(test_device_limits),
        cmocka_unit_test(test_device_errors),
        cmocka_unit_test(test_device_errors_name_the_file),
        cmocka_unit_test(test_round_trip_devices),
        cmocka_unit_test(test_round_trip_vsock),
        cmocka_unit_test(test_sandbox_keys),
        cmocka_unit_test(test_io_poll_key),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
