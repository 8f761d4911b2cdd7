/* test_check_host.c: `godwit check-host` against fake /proc, /sys and /dev trees in a temp dir. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <grp.h>
#include <liburing.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cmocka.h>

#include "cli/check_host.h"
#include "io/loop.h"

#define UNPRIVILEGED_ID 65534 /* nobody */
#define CHILD_FAILED 255

#define CPUINFO_SVM                                                                                \
    "processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: fpu vme svm_lock svm nx\n\n"
#define CPUINFO_VMX "processor\t: 0\nvendor_id\t: GenuineIntel\nflags\t\t: fpu vmx ept\n\n"
/* "svm_lock" and "nosvm" must not be mistaken for svm. */
#define CPUINFO_NONE "processor\t: 0\nflags\t\t: fpu svm_lock nosvm hypervisor\n\n"
#define MEMINFO_HUGE                                                                               \
    "MemTotal:       8388608 kB\nMemAvailable:   4194304 kB\nHugePages_Total:     "                \
    "512\nHugepagesize:       2048 kB\n"
#define MEMINFO_NO_HUGE                                                                            \
    "MemTotal:       8388608 kB\nHugePages_Total:       0\nHugepagesize:       2048 kB\n"

struct fake_host {
    char root[64];
    char *output;
    int failures;
    char line[512]; /* the last line find_line() found */
};

static void write_file(const struct fake_host *host, const char *path, const char *content)
{
    char full[PATH_MAX];

    snprintf(full, sizeof(full), "%s%s", host->root, path);
    for (char *slash = strchr(full + strlen(host->root) + 1, '/'); slash;
         slash = strchr(slash + 1, '/')) {
        *slash = '\0';
        assert_true(mkdir(full, 0755) == 0 || errno == EEXIST);
        *slash = '/';
    }
    FILE *f = fopen(full, "w");
    assert_non_null(f);
    fputs(content, f);
    fclose(f);
}

static int setup_host(void **state)
{
    struct fake_host *host = calloc(1, sizeof(*host));

    snprintf(host->root, sizeof(host->root), "/tmp/godwit-check-host-XXXXXX");
    assert_non_null(mkdtemp(host->root));
    assert_int_equal(chmod(host->root, 0755), 0); /* an unprivileged child must reach it */
    /* io_uring's verdict would depend on the machine the test runs on: refuse it in the tree. */
    write_file(host, "/proc/sys/kernel/io_uring_disabled", "2\n");
    *state = host;
    return 0;
}

static int remove_entry(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
    (void)st, (void)type, (void)ftw;
    return remove(path);
}

static int teardown_host(void **state)
{
    struct fake_host *host = *state;

    nftw(host->root, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    free(host->output);
    free(host);
    return 0;
}

/* Runs the checks on the fake tree into host->output; no cmocka asserts (forked children use it).
 */
static int capture_checks(struct fake_host *host)
{
    struct check_host_env env = { .root = host->root };
    size_t size;
    FILE *out = open_memstream(&host->output, &size);

    if (!out)
        return -1;
    host->failures = check_host_run(&env, out);
    fclose(out);
    return 0;
}

/* Every line has the PASS/WARN/FAIL form, and every FAIL line is counted in the result. */
static void assert_output_well_formed(const struct fake_host *host)
{
    int fail_lines = 0;
    for (const char *line = host->output; *line; line = strchr(line, '\n') + 1) {
        assert_true(strncmp(line, "PASS  ", 6) == 0 || strncmp(line, "WARN  ", 6) == 0 ||
                    strncmp(line, "FAIL  ", 6) == 0);
        fail_lines += strncmp(line, "FAIL  ", 6) == 0;
        assert_non_null(strchr(line, '\n'));
    }
    assert_int_equal(fail_lines, host->failures);
}

static void run_checks(struct fake_host *host)
{
    assert_int_equal(capture_checks(host), 0);
    assert_output_well_formed(host);
}

/* The whole output line that starts with `prefix` (status and check name, at least). */
static const char *find_line(struct fake_host *host, const char *prefix)
{
    size_t prefix_len = strlen(prefix);

    for (const char *p = host->output; *p; p = strchr(p, '\n') + 1) {
        if (strncmp(p, prefix, prefix_len) == 0) {
            snprintf(host->line, sizeof(host->line), "%.*s", (int)(strchr(p, '\n') - p), p);
            return host->line;
        }
    }
    print_error("no line starting with \"%s\" in:\n%s", prefix, host->output);
    fail();
    return NULL;
}

static void assert_has_line(struct fake_host *host, const char *prefix)
{
    find_line(host, prefix);
}

static void assert_line_contains(struct fake_host *host, const char *prefix, const char *text)
{
    const char *line = find_line(host, prefix);
    if (!strstr(line, text)) {
        print_error("\"%s\" lacks \"%s\"\n", line, text);
        fail();
    }
}

static void test_amd_host_without_kvm_device(void **state)
{
    struct fake_host *host = *state;

    write_file(host, "/proc/cpuinfo", CPUINFO_SVM);
    write_file(host, "/proc/meminfo", MEMINFO_HUGE);
    write_file(host, "/sys/module/kvm_amd/parameters/npt", "Y\n");
    write_file(host, "/sys/module/kvm_amd/parameters/nested", "1\n");
    write_file(host, "/dev/vhost-net", "");
    run_checks(host);
    assert_line_contains(host, "FAIL  /dev/kvm present: ", "No such file or directory");
    /* Without a device, the API checks collapse into one line. */
    assert_has_line(host, "WARN  KVM API and capabilities: not checked");
    assert_null(strstr(host->output, "KVM API version"));
    assert_null(strstr(host->output, "KVM capabilities"));
    assert_has_line(host, "PASS  hardware virtualization: AMD-V (svm)\n");
    assert_has_line(host, "PASS  second-level address translation: NPT");
    assert_has_line(host, "PASS  nested virtualization: enabled in kvm_amd\n");
    assert_has_line(host, "FAIL  io_uring: disabled by kernel.io_uring_disabled=2");
    assert_line_contains(host, "WARN  tap devices: /dev/net/tun: ", "modprobe tun");
    assert_has_line(host, "PASS  vhost-net: ");
    assert_has_line(host, "PASS  huge pages: 512 pages of 2048 kB reserved (1.0 GiB)\n");
    assert_has_line(host, "PASS  memory: 8.0 GiB, 4.0 GiB available\n");
    assert_int_equal(host->failures, 2);
}

/* Guest RAM's page size, from the host's THP settings. */
static void test_transparent_huge_pages(void **state)
{
    struct fake_host *host = *state;

    write_file(host, "/sys/kernel/mm/transparent_hugepage/enabled", "always [madvise] never\n");
    write_file(host, "/sys/kernel/mm/transparent_hugepage/shmem_enabled",
               "always within_size advise [never] deny force\n");
    run_checks(host);
    assert_has_line(host, "PASS  transparent huge pages: madvise, memfds never: guest RAM is in "
                          "2 MiB pages when godwit starts as root (a tmpfs of its own), else "
                          "4 KiB\n");
    write_file(host, "/sys/kernel/mm/transparent_hugepage/shmem_enabled",
               "always within_size [advise] never deny force\n");
    free(host->output);
    run_checks(host);
    assert_has_line(host, "PASS  transparent huge pages: madvise, for memfds too (advise): guest "
                          "RAM is in 2 MiB pages\n");
    write_file(host, "/sys/kernel/mm/transparent_hugepage/enabled", "always madvise [never]\n");
    free(host->output);
    run_checks(host);
    assert_has_line(host, "WARN  transparent huge pages: off: guest RAM is in 4 KiB pages -- echo "
                          "madvise > /sys/kernel/mm/transparent_hugepage/enabled\n");
}

static void test_checks_come_in_documented_order(void **state)
{
    struct fake_host *host = *state;
    static const char *const order[] = {
        "/dev/kvm present",
        "KVM API and capabilities",
        "hardware virtualization",
        "second-level address translation",
        "nested virtualization",
        "io_uring",
        "tap devices",
        "vhost-net",
        "huge pages",
        "transparent huge pages",
        "memory",
    };
    const char *at;

    write_file(host, "/proc/cpuinfo", CPUINFO_SVM);
    run_checks(host);
    at = host->output;
    for (size_t i = 0; i < sizeof(order) / sizeof(order[0]); i++) {
        at = strstr(at, order[i]);
        assert_non_null(at);
    }
}

static void test_amd_params_off_warn_with_advice(void **state)
{
    struct fake_host *host = *state;

    write_file(host, "/proc/cpuinfo", CPUINFO_SVM);
    write_file(host, "/sys/module/kvm_amd/parameters/npt", "N\n");
    write_file(host, "/sys/module/kvm_amd/parameters/nested", "0\n");
    run_checks(host);
    assert_line_contains(host, "WARN  second-level address translation: NPT disabled -- ",
                         "options kvm_amd npt=1");
    assert_line_contains(host, "WARN  nested virtualization: disabled -- ",
                         "options kvm_amd nested=1");
    assert_has_line(host, "WARN  vhost-net: /dev/vhost-net absent");
    assert_int_equal(host->failures, 2); /* /dev/kvm and the io_uring refusal */
}

static void test_intel_host(void **state)
{
    struct fake_host *host = *state;

    write_file(host, "/proc/cpuinfo", CPUINFO_VMX);
    write_file(host, "/sys/module/kvm_intel/parameters/ept", "Y\n");
    write_file(host, "/sys/module/kvm_intel/parameters/nested", "N\n");
    run_checks(host);
    assert_has_line(host, "PASS  hardware virtualization: Intel VT-x (vmx)\n");
    assert_has_line(host, "PASS  second-level address translation: EPT (kvm_intel ept=Y)\n");
    assert_line_contains(host, "WARN  nested virtualization: disabled",
                         "options kvm_intel nested=1");
}

static void test_kvm_pvm_host(void **state)
{
    struct fake_host *host = *state;

    write_file(host, "/proc/cpuinfo", CPUINFO_NONE);
    write_file(host, "/sys/module/kvm/parameters/halt_poll_ns", "0\n");
    write_file(host, "/sys/module/kvm_pvm/parameters/placeholder", "0\n");
    /* A regular file stands in for the device: it opens, but answers no KVM ioctl. */
    write_file(host, "/dev/kvm", "");
    run_checks(host);
    assert_has_line(host, "FAIL  /dev/kvm present: ");
    assert_has_line(host, "PASS  /dev/kvm accessible: opened read-write\n");
    assert_line_contains(host, "FAIL  KVM API version: KVM_GET_API_VERSION", "Inappropriate ioctl");
    assert_null(strstr(host->output, "KVM capabilities"));
    assert_has_line(host,
                    "FAIL  hardware virtualization: kvm_pvm (software-emulated ring 0): unmodified "
                    "guest kernels cannot run here -- run guests inside the test host "
                    "(tools/testhost/testhost.sh)\n");
    assert_line_contains(host, "WARN  second-level address translation: not applicable", "kvm_pvm");
    assert_int_equal(host->failures, 4); /* device type, API, ring 0 emulation, io_uring */
}

static void test_kvm_pvm_without_device(void **state)
{
    struct fake_host *host = *state;

    write_file(host, "/proc/cpuinfo", CPUINFO_NONE);
    write_file(host, "/sys/module/kvm_pvm/parameters/placeholder", "0\n");
    run_checks(host);
    assert_line_contains(host, "FAIL  hardware virtualization: no vmx or svm flag", "testhost.sh");
}

static void test_no_virtualization_at_all(void **state)
{
    struct fake_host *host = *state;

    write_file(host, "/proc/cpuinfo", CPUINFO_NONE);
    run_checks(host);
    assert_line_contains(
        host, "FAIL  hardware virtualization: no vmx or svm flag in /proc/cpuinfo -- ", "firmware");
    assert_line_contains(host, "WARN  second-level address translation: unknown", "modprobe");
    assert_line_contains(host, "WARN  nested virtualization: unknown", "modprobe");
    /* No /proc/meminfo in the tree: both memory lines say so instead of failing. */
    assert_has_line(host, "WARN  huge pages: /proc/meminfo does not say");
    assert_has_line(host, "WARN  memory: /proc/meminfo does not say");
    assert_int_equal(host->failures, 3);
}

static void test_huge_pages_none_reserved(void **state)
{
    struct fake_host *host = *state;

    write_file(host, "/proc/meminfo", MEMINFO_NO_HUGE);
    run_checks(host);
    assert_has_line(host, "WARN  huge pages: none reserved (2048 kB pages) -- only needed for "
                          "--hugepages; echo N > /proc/sys/vm/nr_hugepages\n");
    assert_has_line(host, "PASS  memory: 8.0 GiB\n");
}

/* Whether a ring opens here, and the line check-host must then print: the setup flags are
 * the kernel's to grant, so the expectation asks the same ladder. */
static bool io_uring_works_here(char *line, size_t size)
{
    struct io_uring ring;
    unsigned flags;
    char setup[64];
    if (loop_ring_init(&ring, 4, &flags) < 0)
        return false;
    io_uring_queue_exit(&ring);
    loop_describe_setup(flags, setup, sizeof(setup));
    snprintf(line, size, "PASS  io_uring: works (setup: %s; registered files ", setup);
    return true;
}

static void test_io_uring_agrees_with_the_kernel(void **state)
{
    struct fake_host *host = *state;
    char path[PATH_MAX];

    snprintf(path, sizeof(path), "%s/proc/sys/kernel/io_uring_disabled", host->root);
    assert_int_equal(unlink(path), 0); /* absent sysctl: older kernels have none */
    char line[128];
    run_checks(host);
    if (io_uring_works_here(line, sizeof(line)))
        assert_has_line(host, line);
    else
        assert_has_line(host, "FAIL  io_uring: io_uring_queue_init failed: ");
}

static void run_checks_as_nobody_child(struct fake_host *host, int out_fd)
{
    if (setgroups(0, NULL) < 0 ||
        setresgid(UNPRIVILEGED_ID, UNPRIVILEGED_ID, UNPRIVILEGED_ID) < 0 ||
        setresuid(UNPRIVILEGED_ID, UNPRIVILEGED_ID, UNPRIVILEGED_ID) < 0 ||
        capture_checks(host) < 0)
        _exit(CHILD_FAILED);
    size_t len = strlen(host->output);
    _exit(write(out_fd, host->output, len) == (ssize_t)len ? host->failures : CHILD_FAILED);
}

/* Runs the checks as nobody in a child, so that file permissions apply even to root. */
static void run_checks_unprivileged(struct fake_host *host)
{
    int pipe_fds[2];

    if (geteuid() != 0) {
        run_checks(host);
        return;
    }
    assert_int_equal(pipe(pipe_fds), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(pipe_fds[0]);
        run_checks_as_nobody_child(host, pipe_fds[1]);
    }
    close(pipe_fds[1]);
    char buf[8192];
    size_t got = 0;
    for (ssize_t n; (n = read(pipe_fds[0], buf + got, sizeof(buf) - 1 - got)) > 0;)
        got += (size_t)n;
    close(pipe_fds[0]);
    buf[got] = '\0';
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) != CHILD_FAILED);
    host->failures = WEXITSTATUS(status);
    host->output = strdup(buf);
    assert_output_well_formed(host);
}

static void test_kvm_permission_denied_advises_group(void **state)
{
    struct fake_host *host = *state;
    char path[PATH_MAX];

    write_file(host, "/proc/cpuinfo", CPUINFO_SVM);
    write_file(host, "/dev/kvm", "");
    snprintf(path, sizeof(path), "%s/dev/kvm", host->root);
    assert_int_equal(chmod(path, 0600), 0);
    if (geteuid() != 0)
        assert_int_equal(chmod(path, 0), 0);
    run_checks_unprivileged(host);
    const char *line = find_line(host, "FAIL  /dev/kvm accessible: permission denied (group ");
    assert_non_null(strstr(line, "mode 0"));
    assert_non_null(strstr(line, " -- add the user to group kvm"));
    assert_has_line(host, "WARN  KVM API and capabilities: not checked");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_amd_host_without_kvm_device, setup_host,
                                        teardown_host),
        cmocka_unit_test_setup_teardown(test_checks_come_in_documented_order, setup_host,
                                        teardown_host),
        cmocka_unit_test_setup_teardown(test_transparent_huge_pages, setup_host, teardown_host),
        cmocka_unit_test_setup_teardown(test_amd_params_off_warn_with_advice, setup_host,
                                        teardown_host),
        cmocka_unit_test_setup_teardown(test_intel_host, setup_host, teardown_host),
        cmocka_unit_test_setup_teardown(test_kvm_pvm_host, setup_host, teardown_host),
        cmocka_unit_test_setup_teardown(test_kvm_pvm_without_device, setup_host, teardown_host),
        cmocka_unit_test_setup_teardown(test_no_virtualization_at_all, setup_host, teardown_host),
        cmocka_unit_test_setup_teardown(test_huge_pages_none_reserved, setup_host, teardown_host),
        cmocka_unit_test_setup_teardown(test_io_uring_agrees_with_the_kernel, setup_host,
                                        teardown_host),
        cmocka_unit_test_setup_teardown(test_kvm_permission_denied_advises_group, setup_host,
                                        teardown_host),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
