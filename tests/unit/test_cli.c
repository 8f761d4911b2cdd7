/* test_cli.c: `godwit run` option parsing: defaults, values, and one error per bad input. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <errno.h>
#include <cmocka.h>

#include "cli.h"

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

static void test_help(void **state)
{
    (void)state;
    char *argv[] = { "run", "--help", NULL };
    struct vm_config cfg;
    assert_int_equal(parse(ARGC(argv), argv, &cfg), CLI_HELP);
}

static void expect_rejected(char **argv, int argc)
{
    struct vm_config cfg;
    assert_int_equal(parse(argc, argv, &cfg), -EINVAL);
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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_all_options),
        cmocka_unit_test(test_help),
        cmocka_unit_test(test_bad_input_rejected),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
