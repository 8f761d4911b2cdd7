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

#include "cli.h"
#include "config.h"

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
    assert_int_equal(second.cfg.no_reboot, first.cfg.no_reboot);
    assert_string_equal(second.extra.name, first.extra.name);
    assert_string_equal(second.extra.api_socket, first.extra.api_socket);

    /* Too small a buffer is an error, never a truncated document. */
    assert_int_equal(config_to_json(&first.cfg, &first.extra, text, (size_t)len), -ENOSPC);
    config_strings_free(&first.owned);
    config_strings_free(&second.owned);
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
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
