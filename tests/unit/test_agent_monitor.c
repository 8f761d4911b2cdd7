/* test_agent_monitor.c: the agent's heartbeat as the VMM sees it, against a fake VM vsock socket
 * (Firecracker's CONNECT handshake) with a fake agent behind it that can fall silent. */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "agent/monitor.h"
#include "agent/wire.h"
#include "log.h"

struct fake_vm {
    char path[64];
    int listen_fd;
    pthread_t thread;
    volatile bool silent; /* the agent takes requests and answers none */
    volatile bool stop;
    pthread_mutex_t lock;
    unsigned found, lost, connections;
    unsigned set_times, thaws;
    unsigned drop_set_times; /* this many SET_TIMEs end the connection unanswered */
    unsigned set_time_delay_ms; /* a SET_TIME is taken in at once and answered this much later */
    unsigned set_times_taken;  /* SET_TIMEs received, answered or not yet */
    uint64_t time_ns;        /* the last SET_TIME's */
    unsigned poweroffs; /* SHUTDOWN requests with MODE poweroff */
    bool found_without_info; /* an AGENT_FOUND whose status lacked the agent's version */
};

/* The fake's writes: a monitor that closed its end must fail them, not kill the test with
 * SIGPIPE (the monitor's own writes must not raise it either: the test does not ignore it). */
static bool send_all(int fd, const void *buf, size_t len)
{
    return send(fd, buf, len, MSG_NOSIGNAL) == (ssize_t)len;
}

/* One connection: the CONNECT line, then INFO and PINGs answered until silent or closed. */
static void serve(struct fake_vm *vm, int fd)
{
    static uint8_t in[AGENT_BUF_SIZE], out[AGENT_BUF_SIZE];
    char line[32] = "";
    for (size_t n = 0; n < sizeof(line) - 1 && read(fd, line + n, 1) == 1 && line[n] != '\n'; n++)
        ;
    if (strncmp(line, "CONNECT 1024", 12) != 0 || !send_all(fd, "OK 1073741824\n", 14))
        return;
    struct agent_msg m;
    while (!vm->stop && agent_read_msg(fd, in, &m) == 0) {
        if (vm->silent)
            return; /* as a hung agent: the request goes unanswered, the connection ends */
        struct agent_builder b;
        if (m.h.type == AGENT_INFO) {
            agent_build_start(&b, out, AGENT_INFO_REPLY, 0, m.h.id);
            agent_put_str(&b, AGENT_T_VERSION, "9.9");
            agent_put_str(&b, AGENT_T_OS, "Fake Linux");
            agent_put_str(&b, AGENT_T_KERNEL, "6.1.0-test");
            agent_put_str(&b, AGENT_T_HOSTNAME, "guest");
            agent_put_str(&b, AGENT_T_ADDRESS, "10.0.0.2/24");
            agent_put_str(&b, AGENT_T_ADDRESS, "fe80::1/64");
        } else if (m.h.type == AGENT_PING) {
            agent_build_start(&b, out, AGENT_OK, 0, m.h.id);
        } else if (m.h.type == AGENT_SET_TIME) {
            pthread_mutex_lock(&vm->lock);
            vm->set_times_taken++;
            unsigned delay_ms = vm->set_time_delay_ms;
            pthread_mutex_unlock(&vm->lock);
            nanosleep(&(struct timespec){ .tv_sec = delay_ms / 1000,
                                          .tv_nsec = delay_ms % 1000 * 1000000L }, NULL);
            pthread_mutex_lock(&vm->lock);
            bool drop = vm->drop_set_times > 0;
            vm->drop_set_times -= drop;
            vm->set_times += !drop;
            agent_get_u64(&m, AGENT_T_TIME, &vm->time_ns);
            pthread_mutex_unlock(&vm->lock);
            if (drop)
                return; /* as a transport reset in the guest: the next connection gets it */
            agent_build_start(&b, out, AGENT_OK, 0, m.h.id);
        } else if (m.h.type == AGENT_THAW) {
            pthread_mutex_lock(&vm->lock);
            vm->thaws++;
            pthread_mutex_unlock(&vm->lock);
            agent_build_start(&b, out, AGENT_OK, 0, m.h.id);
            agent_put_u32(&b, AGENT_T_COUNT, 1);
        } else if (m.h.type == AGENT_SHUTDOWN) {
            uint32_t mode = 99;
            agent_get_u32(&m, AGENT_T_MODE, &mode);
            pthread_mutex_lock(&vm->lock);
            vm->poweroffs += mode == AGENT_SHUTDOWN_POWEROFF;
            pthread_mutex_unlock(&vm->lock);
            agent_build_start(&b, out, AGENT_OK, 0, m.h.id);
        } else {
            return; /* the monitor asks nothing else: the test then fails on its counts */
        }
        size_t len = agent_build_end(&b);
        if (!send_all(fd, out, len))
            return;
    }
}

static void *fake_vm_thread(void *arg)
{
    struct fake_vm *vm = arg;
    while (!vm->stop) {
        int fd = accept(vm->listen_fd, NULL, NULL);
        if (fd < 0)
            continue;
        pthread_mutex_lock(&vm->lock);
        vm->connections++;
        pthread_mutex_unlock(&vm->lock);
        serve(vm, fd);
        close(fd);
    }
    return NULL;
}

static void on_change(void *opaque, bool alive, const struct agent_status *st)
{
    struct fake_vm *vm = opaque;
    pthread_mutex_lock(&vm->lock);
    if (alive) {
        vm->found_without_info |= strcmp(st->version, "9.9") != 0;
        vm->found++;
    } else {
        vm->lost++;
    }
    pthread_mutex_unlock(&vm->lock);
}

static unsigned count(struct fake_vm *vm, unsigned *what)
{
    pthread_mutex_lock(&vm->lock);
    unsigned n = *what;
    pthread_mutex_unlock(&vm->lock);
    return n;
}

/* Waits up to `ms` for *what to reach `want`. */
static bool wait_for(struct fake_vm *vm, unsigned *what, unsigned want, unsigned ms)
{
    for (unsigned t = 0; t < ms; t += 50) {
        if (count(vm, what) >= want)
            return true;
        nanosleep(&(struct timespec){ .tv_nsec = 50 * 1000 * 1000 }, NULL);
    }
    return false;
}

static void fake_vm_start(struct fake_vm *vm)
{
    pthread_mutex_init(&vm->lock, NULL);
    snprintf(vm->path, sizeof(vm->path), "/tmp/godwit-agentmon-%d.vsock", (int)getpid());
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    strcpy(sa.sun_path, vm->path);
    unlink(vm->path);
    vm->listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_int_equal(bind(vm->listen_fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(listen(vm->listen_fd, 4), 0);
    assert_int_equal(pthread_create(&vm->thread, NULL, fake_vm_thread, vm), 0);
}

static void fake_vm_stop(struct fake_vm *vm)
{
    vm->stop = true;
    shutdown(vm->listen_fd, SHUT_RDWR);
    pthread_join(vm->thread, NULL);
    close(vm->listen_fd);
    unlink(vm->path);
    pthread_mutex_destroy(&vm->lock);
}

/* A monitor on `vm`'s fake agent, started, once the agent has answered. */
static struct agent_monitor *monitor_found(struct fake_vm *vm)
{
    struct agent_monitor *m;
    fake_vm_start(vm);
    assert_int_equal(agent_monitor_start(&m, vm->path, on_change, vm), 0);
    assert_true(wait_for(vm, &vm->found, 1, 5000));
    return m;
}

static void test_heartbeat_found_lost_found(void **state)
{
    (void)state;
    struct fake_vm vm = { .listen_fd = -1 };
    struct agent_monitor *m = monitor_found(&vm);
    struct agent_status st;
    agent_monitor_status(m, &st);
    assert_true(st.seen && st.alive);
    assert_true(st.age_ms < AGENT_LOST_MS);
    assert_string_equal(st.os, "Fake Linux");
    assert_string_equal(st.kernel, "6.1.0-test");
    assert_string_equal(st.addresses, "10.0.0.2/24 fe80::1/64");

    /* Silent: lost once its last answer is AGENT_LOST_MS old, and the age says so. */
    vm.silent = true;
    assert_true(wait_for(&vm, &vm.lost, 1, AGENT_LOST_MS + 5000));
    agent_monitor_status(m, &st);
    assert_false(st.alive);
    assert_true(st.age_ms >= AGENT_LOST_MS);
    assert_int_equal(count(&vm, &vm.found), 1);
    assert_false(vm.found_without_info);

    /* Answering again: found again, through a new connection. */
    vm.silent = false;
    assert_true(wait_for(&vm, &vm.found, 2, 5000));
    assert_true(count(&vm, &vm.connections) >= 2);
    agent_monitor_status(m, &st);
    assert_true(st.alive);

    /* Stopping does not wait for the agent. */
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    agent_monitor_stop(m);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    assert_true(t1.tv_sec - t0.tv_sec < 2);
    assert_int_equal(vm.set_times + vm.thaws, 0); /* nothing asked but INFO and PING */
    fake_vm_stop(&vm);
}

/* After a restore: the clock stepped to the host's and the filesystems thawed, once, even when
 * the first connection drops the request (the guest's transport reset). */
static void test_resumed_steps_clock(void **state)
{
    (void)state;
    struct fake_vm vm = { .listen_fd = -1, .drop_set_times = 1 };
    fake_vm_start(&vm);
    struct agent_monitor *m;
    assert_int_equal(agent_monitor_start(&m, vm.path, on_change, &vm), 0);
    agent_monitor_resumed(m, "restore", true);
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    assert_true(wait_for(&vm, &vm.thaws, 1, 8000));
    assert_int_equal(count(&vm, &vm.set_times), 1);
    assert_true(count(&vm, &vm.connections) >= 2);
    uint64_t host = (uint64_t)now.tv_sec * 1000000000ull + (uint64_t)now.tv_nsec;
    assert_true(vm.time_ns >= host && vm.time_ns - host < 8000000000ull);
    /* Done once: the heartbeat goes on without asking again. */
    nanosleep(&(struct timespec){ .tv_sec = 2 }, NULL);
    assert_int_equal(count(&vm, &vm.set_times), 1);
    assert_int_equal(count(&vm, &vm.thaws), 1);
    agent_monitor_stop(m);
    fake_vm_stop(&vm);
}

/* A power-off asked for goes to a live agent at once (not at the next ping), once. */
static void test_poweroff_request(void **state)
{
    (void)state;
    struct fake_vm vm = { .listen_fd = -1 };
    struct agent_monitor *m = monitor_found(&vm);
    assert_true(agent_monitor_request_poweroff(m));
    assert_true(wait_for(&vm, &vm.poweroffs, 1, AGENT_PING_INTERVAL_MS / 2));
    nanosleep(&(struct timespec){ .tv_sec = 1, .tv_nsec = 500 * 1000 * 1000 }, NULL);
    assert_int_equal(count(&vm, &vm.poweroffs), 1);
    agent_monitor_stop(m);
    fake_vm_stop(&vm);
}

/* No VM socket at all: never seen, never alive, and no event. */
static void test_no_agent(void **state)
{
    (void)state;
    struct fake_vm vm = { 0 };
    pthread_mutex_init(&vm.lock, NULL);
    struct agent_monitor *m;
    assert_int_equal(agent_monitor_start(&m, "/nonexistent/godwit.vsock", on_change, &vm), 0);
    nanosleep(&(struct timespec){ .tv_sec = 1, .tv_nsec = 500 * 1000 * 1000 }, NULL);
    struct agent_status st;
    agent_monitor_status(m, &st);
    assert_false(st.seen);
    assert_false(st.alive);
    assert_false(agent_monitor_request_poweroff(m)); /* nobody to ask */
    agent_monitor_stop(m);
    assert_int_equal(vm.found + vm.lost, 0);
    pthread_mutex_destroy(&vm.lock);
}

/* A resume's step taken over (the API's sync-time?after=resume makes it itself): the monitor
 * makes none; a restore's (with its thaw) and one for an agent that never answered stay its
 * own. */
static void test_take_resumed(void **state)
{
    (void)state;
    struct fake_vm vm = { .listen_fd = -1 };
    struct agent_monitor *m;
    fake_vm_start(&vm);
    assert_int_equal(agent_monitor_start(&m, vm.path, on_change, &vm), 0);
    agent_monitor_resumed(m, "resume", false);
    /* not alive yet: the monitor's */
    assert_int_equal(agent_monitor_take_resumed(m, "resume"), AGENT_RESUMED_NONE);
    assert_true(wait_for(&vm, &vm.found, 1, 5000));
    agent_monitor_resumed(m, "resume", false);
    assert_int_equal(agent_monitor_take_resumed(m, "resume"), AGENT_RESUMED_TAKEN);
    assert_int_equal(agent_monitor_take_resumed(m, "resume"), AGENT_RESUMED_NONE); /* once */
    unsigned before = count(&vm, &vm.set_times);
    nanosleep(&(struct timespec){ .tv_sec = 2 }, NULL);
    assert_int_equal(count(&vm, &vm.set_times), before);
    agent_monitor_resumed(m, "restore", true);
    assert_int_equal(agent_monitor_take_resumed(m, "resume"), AGENT_RESUMED_NONE);
    assert_true(wait_for(&vm, &vm.thaws, 1, 5000));
    agent_monitor_stop(m);
    fake_vm_stop(&vm);
}

/* An agent lost for a while, as during a pause longer than AGENT_LOST_MS: the step a resume
 * owes is still the caller's, which must not return before it. */
static void test_take_resumed_after_a_long_pause(void **state)
{
    (void)state;
    struct fake_vm vm = { .listen_fd = -1 };
    struct agent_monitor *m = monitor_found(&vm);
    vm.silent = true; /* no answers: the guest paused */
    assert_true(wait_for(&vm, &vm.lost, 1, AGENT_LOST_MS + 5000));
    agent_monitor_resumed(m, "resume", false);
    assert_int_equal(agent_monitor_take_resumed(m, "resume"), AGENT_RESUMED_TAKEN);
    agent_monitor_stop(m);
    fake_vm_stop(&vm);
}

/* The monitor's step found under way (its ping was answered first after the resume): the
 * caller is told so, and its wait ends only once the step has reached the agent. */
static struct agent_monitor *start_slow_step(struct fake_vm *vm)
{
    struct agent_monitor *m = monitor_found(vm);
    agent_monitor_resumed(m, "resume", false);
    assert_true(wait_for(vm, &vm->set_times_taken, 1, 3000)); /* the monitor's, being answered */
    assert_int_equal(agent_monitor_take_resumed(m, "resume"), AGENT_RESUMED_STEPPING);
    return m;
}

static void test_wait_for_monitors_step(void **state)
{
    (void)state;
    struct fake_vm vm = { .listen_fd = -1, .set_time_delay_ms = 700 };
    struct agent_monitor *m = start_slow_step(&vm);
    assert_int_equal(count(&vm, &vm.set_times), 0);
    agent_monitor_wait_step(m);
    assert_int_equal(count(&vm, &vm.set_times), 1);
    assert_int_equal(agent_monitor_take_resumed(m, "resume"), AGENT_RESUMED_NONE); /* made */
    agent_monitor_stop(m);
    fake_vm_stop(&vm);
}

static void *wait_step_thread(void *arg)
{
    agent_monitor_wait_step(arg);
    return NULL;
}

/* A stop while a caller waits for the step: the step ends (its connection shut down), the
 * waiter leaves, and only then is the monitor freed (ASan checks the order). */
static void test_stop_while_waiting_for_step(void **state)
{
    (void)state;
    struct fake_vm vm = { .listen_fd = -1, .set_time_delay_ms = 1500 };
    struct agent_monitor *m = start_slow_step(&vm);
    pthread_t waiter;
    assert_int_equal(pthread_create(&waiter, NULL, wait_step_thread, m), 0);
    nanosleep(&(struct timespec){ .tv_nsec = 100 * 1000 * 1000 }, NULL);
    agent_monitor_stop(m);
    pthread_join(waiter, NULL);
    fake_vm_stop(&vm);
}

/* What a monitor logs between its start and its stop, with `resumed` asked right after start;
 * `vm` (or none) behind it, silent after it was found. */
static void resumed_log(struct fake_vm *vm, char *out, size_t len)
{
    struct agent_monitor *m;
    FILE *tmp = tmpfile();
    assert_non_null(tmp);
    fflush(stderr);
    int saved = dup(STDERR_FILENO);
    assert_true(dup2(fileno(tmp), STDERR_FILENO) >= 0);
    log_set_level(LOG_LVL_WARN);
    assert_int_equal(agent_monitor_start(&m, vm ? vm->path : "/nonexistent/godwit.vsock",
                                         on_change, vm), 0);
    if (vm) {
        assert_true(wait_for(vm, &vm->found, 1, 5000));
        vm->silent = true;
    }
    agent_monitor_resumed(m, "resume", false);
    nanosleep(&(struct timespec){ .tv_sec = 2, .tv_nsec = 500 * 1000 * 1000 }, NULL);
    agent_monitor_stop(m);
    log_set_level(LOG_LVL_ERROR);
    fflush(stderr);
    dup2(saved, STDERR_FILENO);
    close(saved);
    rewind(tmp);
    size_t n = fread(out, 1, len - 1, tmp);
    out[n] = 0;
    fclose(tmp);
}

/* A resume with no answer: a warning when an agent answered before, none when no agent ever
 * did (a guest that runs none: its vsock device is for something else). */
static void test_resumed_warns_only_after_an_agent(void **state)
{
    (void)state;
    char log[4096];
    struct fake_vm vm = { .listen_fd = -1 };
    agent_monitor_test_set_wait(1000);
    resumed_log(NULL, log, sizeof(log));
    assert_null(strstr(log, "clock was not stepped"));
    fake_vm_start(&vm);
    resumed_log(&vm, log, sizeof(log));
    fake_vm_stop(&vm);
    agent_monitor_test_set_wait(AGENT_RESUMED_WAIT_MS);
    assert_non_null(strstr(log, "clock was not stepped"));
}

int main(void)
{
    log_set_level(LOG_LVL_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_heartbeat_found_lost_found),
        cmocka_unit_test(test_resumed_steps_clock),
        cmocka_unit_test(test_poweroff_request),
        cmocka_unit_test(test_no_agent),
        cmocka_unit_test(test_resumed_warns_only_after_an_agent),
        cmocka_unit_test(test_take_resumed),
        cmocka_unit_test(test_take_resumed_after_a_long_pause),
        cmocka_unit_test(test_wait_for_monitors_step),
        cmocka_unit_test(test_stop_while_waiting_for_step),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
