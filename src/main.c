/* main.c: the godwit command line: parses `godwit run ...` and runs the VM's main loop. */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include "cli.h"
#include "console.h"
#include "devices.h"
#include "godwit/godwit.h"
#include "io/loop.h"
#include "log.h"
#include "vm.h"

/* The main thread's view of one run: the loop, the console and the current VM. */
struct runner {
    struct event_loop loop;
    struct console console;
    struct vm *vm;
    int signal_fd;
    struct loop_watch exit_watch;
    struct loop_watch signal_watch;
    int stop_signal;
};

static void on_vm_exit(struct event_loop *loop, void *opaque, int res)
{
    struct runner *r = opaque;
    uint64_t count;
    (void)res;
    if (read(r->vm->exit_fd, &count, sizeof(count)) < 0 && errno != EAGAIN)
        log_warn("reading the exit event failed: %s", strerror(errno));
    loop->stop = true;
}

static void on_signal(struct event_loop *loop, void *opaque, int res)
{
    struct runner *r = opaque;
    struct signalfd_siginfo info;
    (void)res;
    if (read(r->signal_fd, &info, sizeof(info)) == (ssize_t)sizeof(info)) {
        r->stop_signal = (int)info.ssi_signo;
        loop->stop = true;
    }
}

static size_t console_to_vm(void *opaque, const uint8_t *buf, size_t len)
{
    struct runner *r = opaque;
    return vm_console_input(r->vm, buf, len);
}

static int exit_status_for(enum vm_exit_reason reason)
{
    switch (reason) {
    case VM_EXIT_POWEROFF: return GODWIT_EXIT_POWEROFF;
    case VM_EXIT_RESET: return GODWIT_EXIT_REBOOT;
    case VM_EXIT_PANIC: return GODWIT_EXIT_PANIC;
    case VM_EXIT_CRASH: return GODWIT_EXIT_CRASH;
    case VM_EXIT_STOPPED: return GODWIT_EXIT_STOPPED;
    case VM_EXIT_NONE:
    case VM_EXIT_VMM_ERROR: break;
    }
    return GODWIT_EXIT_VMM_ERROR;
}

/* Boots the VM once; returns why it ended. */
static enum vm_exit_reason run_once(struct runner *r, const struct vm_config *cfg)
{
    struct vm vm;
    enum vm_exit_reason reason = VM_EXIT_VMM_ERROR;

    r->vm = &vm;
    r->loop.stop = false;
    if (vm_create(&vm, cfg) < 0)
        goto out;
    if (loop_watch_readable(&r->loop, &r->exit_watch, vm.exit_fd, on_vm_exit, r) < 0 ||
        vm_start(&vm) < 0) {
        vm_request_exit(&vm, VM_EXIT_VMM_ERROR);
    } else if (loop_run(&r->loop) < 0) {
        vm_request_exit(&vm, VM_EXIT_VMM_ERROR);
    }
    loop_unwatch(&r->loop, &r->exit_watch);
    vm_stop(&vm); /* no-op for the reason if the guest already chose one */
    reason = (enum vm_exit_reason)vm.exit_reason;
    if (r->stop_signal)
        log_info("stopped by signal %s", strsignal(r->stop_signal));
    else if (r->console.quit_requested)
        log_info("stopped from the console");
out:
    vm_destroy(&vm);
    r->vm = NULL;
    return reason;
}

static int setup_signals(struct runner *r)
{
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGINT);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGHUP);
    /* Blocked before any vCPU thread exists, so every thread inherits the mask. */
    if (pthread_sigmask(SIG_BLOCK, &mask, NULL) != 0)
        return -EINVAL;
    signal(SIGPIPE, SIG_IGN);
    r->signal_fd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
    if (r->signal_fd < 0)
        return -errno;
    return loop_watch_readable(&r->loop, &r->signal_watch, r->signal_fd, on_signal, r);
}

static int cmd_run(int argc, char **argv)
{
    struct vm_config cfg;
    struct runner r = { .signal_fd = -1 };
    enum vm_exit_reason reason;

    int parsed = cli_parse_run(argc, argv, &cfg);
    if (parsed == CLI_HELP) {
        cli_usage_run(stdout);
        return 0;
    }
    if (parsed < 0)
        return GODWIT_EXIT_USAGE;
    if (loop_init(&r.loop, 64) < 0)
        return GODWIT_EXIT_VMM_ERROR;
    if (setup_signals(&r) < 0 || console_init(&r.console, STDIN_FILENO, console_to_vm, &r) < 0 ||
        console_attach(&r.console, &r.loop) < 0) {
        log_error("cannot set up the main loop");
        console_restore(&r.console);
        return GODWIT_EXIT_VMM_ERROR;
    }
    for (;;) {
        reason = run_once(&r, &cfg);
        if (reason != VM_EXIT_RESET || cfg.no_reboot || r.stop_signal)
            break;
        log_info("guest rebooted: restarting the VM");
    }
    console_restore(&r.console);
    /* Crashes and VMM errors were already explained where they happened. */
    if (reason == VM_EXIT_PANIC || reason == VM_EXIT_RESET)
        log_info("%s", vm_exit_reason_name(reason));
    loop_destroy(&r.loop);
    if (r.signal_fd >= 0)
        close(r.signal_fd);
    return exit_status_for(reason);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        cli_usage_main(stderr);
        return GODWIT_EXIT_USAGE;
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "run") == 0)
        return cmd_run(argc - 1, argv + 1);
    if (strcmp(cmd, "version") == 0 || strcmp(cmd, "--version") == 0) {
        printf("godwit %s\n", GODWIT_VERSION);
        return 0;
    }
    if (strcmp(cmd, "help") == 0 || strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0) {
        cli_usage_main(stdout);
        return 0;
    }
    log_error("unknown command '%s' (see godwit help)", cmd);
    return GODWIT_EXIT_USAGE;
}
