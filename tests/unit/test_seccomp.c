/* test_seccomp.c: each thread's filter, loaded in a forked child: what it lets through works,
 * a call outside it ends the child with one line that names the call. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/capability.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "sandbox/caps.h"
#include "sandbox/seccomp.h"

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_UNDEFINED__)
#define SANITIZER_BUILD 1 /* the filters let the sanitizers' runtime fork, map and clone */
#endif

#define CHILD_OK 0
#define CHILD_SETUP_FAILED 99

/* What a child did: its wait status and what it wrote to stderr. */
struct outcome {
    int status;
    char err[1024];
};

typedef void (*child_fn)(void);

/* Runs fn in a child with stderr on a pipe; fn's thread loads `thread`'s filter first. */
static void run_child(enum sandbox_thread thread, enum godwit_seccomp mode, child_fn fn,
                      struct outcome *out)
{
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(fds[0]);
        dup2(fds[1], STDERR_FILENO);
        if (sandbox_seccomp_install(thread, mode) < 0)
            _exit(CHILD_SETUP_FAILED);
        fn();
        _exit(CHILD_OK);
    }
    close(fds[1]);
    size_t len = 0;
    ssize_t n;
    while (len < sizeof(out->err) - 1 &&
           (n = read(fds[0], out->err + len, sizeof(out->err) - 1 - len)) > 0)
        len += (size_t)n;
    out->err[len] = '\0';
    close(fds[0]);
    assert_int_equal(waitpid(pid, &out->status, 0), pid);
}

static void assert_ended_naming(const struct outcome *o, const char *thread, const char *call)
{
    char expected[128];
    assert_true(WIFEXITED(o->status));
    assert_int_equal(WEXITSTATUS(o->status), SANDBOX_SECCOMP_EXIT_STATUS);
    snprintf(expected, sizeof(expected), "the %s thread made a system call its filter forbids: %s%s",
             thread, call ? call : "", call ? " (" : "");
    if (!strstr(o->err, expected))
        fail_msg("expected '%s' in '%s'", expected, o->err);
    assert_non_null(strstr(o->err, "godwit: error: seccomp:"));
}

static void assert_ok(const struct outcome *o)
{
    if (!WIFEXITED(o->status) || WEXITSTATUS(o->status) != CHILD_OK)
        fail_msg("child status 0x%x, stderr '%s'", o->status, o->err);
}

/* ---- what the children do ---- */

static void everyday_calls(void)
{
    struct timespec ts = { 0, 1000 };
    char *big = malloc(8 << 20); /* mmap'ed by malloc */
    if (!big)
        _exit(1);
    memset(big, 1, 8 << 20);
    free(big);
    clock_gettime(CLOCK_MONOTONIC, &ts);
    nanosleep(&(struct timespec){ 0, 1000 }, NULL);
    fprintf(stderr, "pid %d\n", getpid()); /* a log line, with its isatty() */
    if (isatty(STDERR_FILENO))
        _exit(2);
}

/* The RTC's clock on a vCPU: glibc loads the time zone on the first gmtime_r(). */
static void read_the_clock(void)
{
    time_t now = time(NULL);
    struct tm tm;
    if (!gmtime_r(&now, &tm))
        _exit(6);
}

static void make_socket(void)
{
    socket(AF_INET, SOCK_STREAM, 0);
}

static void make_unix_socket(void)
{
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        _exit(3);
    close(fd);
}

static void create_vm_ioctl(void)
{
    ioctl(STDERR_FILENO, KVM_CREATE_VM, 0);
}

static void kvm_run_ioctl(void)
{
    /* On a pipe: fails with ENOTTY, but the filter let it through. */
    if (ioctl(STDERR_FILENO, KVM_RUN, 0) == 0 || errno != ENOTTY)
        _exit(4);
}

static void make_directory(void)
{
    mkdir("/nonexistent-godwit-seccomp-test/x", 0700);
}

static void *thread_body(void *arg)
{
    return arg;
}

static void start_thread(void)
{
    pthread_t t;
    if (pthread_create(&t, NULL, thread_body, NULL) != 0 || pthread_join(t, NULL) != 0)
        _exit(5);
}

#ifndef SANITIZER_BUILD
static void fork_process(void)
{
    pid_t pid = fork();
    if (pid == 0)
        _exit(0);
}

static void map_code(void)
{
    mmap(NULL, 4096, PROT_READ | PROT_EXEC, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
}
#endif

/* A vCPU as godwit makes it (the main loop's filter, then its own) with auto-converge's slice
 * timer: made for this thread, armed, disarmed, deleted. */
static void vcpu_slice_timer(void)
{
    if (sandbox_seccomp_install(SANDBOX_THREAD_VCPU, GODWIT_SECCOMP_ON) < 0)
        _exit(CHILD_SETUP_FAILED);
    struct sigevent sev = { .sigev_notify = SIGEV_THREAD_ID, .sigev_signo = SIGUSR1 };
    sev._sigev_un._tid = gettid();
    timer_t timer;
    struct itimerspec slice = { .it_value = { .tv_sec = 3600 } }, off = { 0 };
    if (timer_create(CLOCK_MONOTONIC, &sev, &timer) < 0 || timer_settime(timer, 0, &slice, NULL) < 0 ||
        timer_settime(timer, 0, &off, NULL) < 0 || timer_delete(timer) < 0)
        _exit(7);
    clock_nanosleep(CLOCK_MONOTONIC, 0, &(struct timespec){ 0, 1000 }, NULL);
}

/* ---- the tests ---- */

static void test_vcpu_throttle_calls(void **state)
{
    (void)state;
    struct outcome o;
    run_child(SANDBOX_THREAD_MAIN_LOOP, GODWIT_SECCOMP_ON, vcpu_slice_timer, &o);
    assert_ok(&o);
}

static void test_allowed_calls_work(void **state)
{
    static const enum sandbox_thread threads[] = { SANDBOX_THREAD_MAIN_LOOP, SANDBOX_THREAD_VCPU,
                                                   SANDBOX_THREAD_MIGRATION, SANDBOX_THREAD_CLI };
    (void)state;
    for (size_t i = 0; i < sizeof(threads) / sizeof(threads[0]); i++) {
        struct outcome o;
        run_child(threads[i], GODWIT_SECCOMP_ON, everyday_calls, &o);
        assert_ok(&o);
        run_child(threads[i], GODWIT_SECCOMP_ON, read_the_clock, &o);
        assert_ok(&o);
    }
}

static void test_forbidden_call_is_named(void **state)
{
    struct outcome o;
    (void)state;
    run_child(SANDBOX_THREAD_VCPU, GODWIT_SECCOMP_ON, make_socket, &o);
    assert_ended_naming(&o, "vCPU", "socket");
    run_child(SANDBOX_THREAD_MIGRATION, GODWIT_SECCOMP_ON, make_directory, &o);
    assert_ended_naming(&o, "migration", "mkdir");
}

static void test_vcpu_ioctls_are_checked(void **state)
{
    struct outcome o;
    (void)state;
    run_child(SANDBOX_THREAD_VCPU, GODWIT_SECCOMP_ON, kvm_run_ioctl, &o);
    assert_ok(&o);
    run_child(SANDBOX_THREAD_VCPU, GODWIT_SECCOMP_ON, create_vm_ioctl, &o);
    assert_ended_naming(&o, "vCPU", "ioctl");
    assert_non_null(strstr(o.err, ", 0xae01,")); /* the request, to tell which ioctl */
    run_child(SANDBOX_THREAD_MAIN_LOOP, GODWIT_SECCOMP_ON, create_vm_ioctl, &o);
    assert_ok(&o);
}

static void test_socket_families_are_checked(void **state)
{
    struct outcome o;
    (void)state;
    run_child(SANDBOX_THREAD_MAIN_LOOP, GODWIT_SECCOMP_ON, make_socket, &o);
    assert_ok(&o);
    run_child(SANDBOX_THREAD_MIGRATION, GODWIT_SECCOMP_ON, make_socket, &o);
    assert_ended_naming(&o, "migration", "socket");
    run_child(SANDBOX_THREAD_CLI, GODWIT_SECCOMP_ON, make_unix_socket, &o);
    assert_ok(&o);
#ifdef SANITIZER_BUILD
    skip(); /* the command line's thread is not filtered there (LeakSanitizer) */
#else
    run_child(SANDBOX_THREAD_CLI, GODWIT_SECCOMP_ON, make_socket, &o);
    assert_ended_naming(&o, "command line", "socket");
#endif
}

static void test_threads_but_no_processes(void **state)
{
    struct outcome o;
    (void)state;
    run_child(SANDBOX_THREAD_MAIN_LOOP, GODWIT_SECCOMP_ON, start_thread, &o);
    assert_ok(&o);
#ifdef SANITIZER_BUILD
    skip();
#else
    run_child(SANDBOX_THREAD_MAIN_LOOP, GODWIT_SECCOMP_ON, fork_process, &o);
    assert_ended_naming(&o, "main loop", "clone");
    /* which call comes first (rt_sigaction, clone3) is glibc's business */
    run_child(SANDBOX_THREAD_VCPU, GODWIT_SECCOMP_ON, start_thread, &o);
    assert_ended_naming(&o, "vCPU", NULL);
#endif
}

static void test_no_code_mappings(void **state)
{
    (void)state;
#ifdef SANITIZER_BUILD
    skip();
#else
    struct outcome o;
    run_child(SANDBOX_THREAD_VCPU, GODWIT_SECCOMP_ON, map_code, &o);
    assert_ended_naming(&o, "vCPU", "mmap");
#endif
}

static void test_log_mode_lets_calls_through(void **state)
{
    struct outcome o;
    (void)state;
    run_child(SANDBOX_THREAD_VCPU, GODWIT_SECCOMP_LOG, make_directory, &o);
    assert_ok(&o);
    run_child(SANDBOX_THREAD_VCPU, GODWIT_SECCOMP_OFF, make_socket, &o);
    assert_ok(&o);
}

/* Filters compiled ahead (as a VM does for its vCPU threads) load in the children forked after
 * (the cache is the process's) and act as the ones each thread built itself. Run last: from
 * here on every vCPU filter in this process comes from the cache. */
static void test_compiled_ahead(void **state)
{
    struct outcome o;
    (void)state;
    assert_int_equal(sandbox_seccomp_prepare(SANDBOX_THREAD_VCPU, GODWIT_SECCOMP_ON), 0);
    assert_int_equal(sandbox_seccomp_prepare(SANDBOX_THREAD_VCPU, GODWIT_SECCOMP_LOG), 0);
    assert_int_equal(sandbox_seccomp_prepare(SANDBOX_THREAD_VCPU, GODWIT_SECCOMP_ON), 0); /* once */
    assert_int_equal(sandbox_seccomp_prepare(SANDBOX_THREAD_VCPU, GODWIT_SECCOMP_OFF), 0);
    run_child(SANDBOX_THREAD_VCPU, GODWIT_SECCOMP_ON, kvm_run_ioctl, &o);
    assert_ok(&o);
    run_child(SANDBOX_THREAD_VCPU, GODWIT_SECCOMP_ON, read_the_clock, &o);
    assert_ok(&o);
    run_child(SANDBOX_THREAD_VCPU, GODWIT_SECCOMP_ON, make_socket, &o);
    assert_ended_naming(&o, "vCPU", "socket");
    run_child(SANDBOX_THREAD_VCPU, GODWIT_SECCOMP_ON, create_vm_ioctl, &o);
    assert_ended_naming(&o, "vCPU", "ioctl");
    run_child(SANDBOX_THREAD_VCPU, GODWIT_SECCOMP_LOG, make_directory, &o);
    assert_ok(&o);
}

static void test_mode_names(void **state)
{
    enum godwit_seccomp mode = GODWIT_SECCOMP_ON;
    (void)state;
    assert_int_equal(sandbox_seccomp_parse("log", &mode), 0);
    assert_int_equal(mode, GODWIT_SECCOMP_LOG);
    assert_int_equal(sandbox_seccomp_parse("off", &mode), 0);
    assert_int_equal(mode, GODWIT_SECCOMP_OFF);
    assert_int_equal(sandbox_seccomp_parse("on", &mode), 0);
    assert_int_equal(mode, GODWIT_SECCOMP_ON);
    assert_int_equal(sandbox_seccomp_parse("yes", &mode), -EINVAL);
    assert_string_equal(sandbox_seccomp_name(GODWIT_SECCOMP_LOG), "log");
    assert_true(sandbox_seccomp_available());
}

static bool capget_now(struct __user_cap_data_struct data[2])
{
    struct __user_cap_header_struct hdr = { _LINUX_CAPABILITY_VERSION_3, 0 };
    return syscall(SYS_capget, &hdr, data) == 0;
}

/* In a child: after the drop, no_new_privs is set and of its powers only the kept remain. */
static void drop_and_check(void)
{
    struct __user_cap_data_struct before[2], after[2];
    if (!capget_now(before))
        _exit(9);
    if (sandbox_caps_drop(false) < 0)
        _exit(10);
    if (prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) != 1)
        _exit(11);
    if (!capget_now(after))
        _exit(12);
    if ((after[0].effective & ~(1u << CAP_DAC_OVERRIDE)) || after[1].effective ||
        (after[0].permitted & ~(1u << CAP_DAC_OVERRIDE)) || after[1].permitted ||
        after[0].inheritable || after[1].inheritable)
        _exit(13);
    if ((before[0].effective & (1u << CAP_SETPCAP)) &&
        (prctl(PR_CAPBSET_READ, CAP_SYS_ADMIN, 0, 0, 0) != 0 ||
         prctl(PR_CAPBSET_READ, CAP_NET_ADMIN, 0, 0, 0) != 0))
        _exit(14);
}

static void test_caps_drop(void **state)
{
    (void)state;
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        drop_and_check();
        _exit(0);
    }
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_allowed_calls_work),
        cmocka_unit_test(test_vcpu_throttle_calls),
        cmocka_unit_test(test_forbidden_call_is_named),
        cmocka_unit_test(test_vcpu_ioctls_are_checked),
        cmocka_unit_test(test_socket_families_are_checked),
        cmocka_unit_test(test_threads_but_no_processes),
        cmocka_unit_test(test_no_code_mappings),
        cmocka_unit_test(test_log_mode_lets_calls_through),
        cmocka_unit_test(test_mode_names),
        cmocka_unit_test(test_caps_drop),
        cmocka_unit_test(test_compiled_ahead), /* last: it fills the process's cache */
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
