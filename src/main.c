/* main.c: the godwit command line, a thin user of libgodwit. */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "godwit/godwit.h"
#include "godwit_internal.h"
#include "log.h"

/* Sent to the main thread when the VM has ended, to end its wait for signals. */
#define SIGNAL_VM_ENDED SIGUSR2

struct run_context {
    pthread_t main_thread;
    unsigned shutdown_timeout_ms;
};

static void on_event(struct godwit_vm *vm, enum godwit_event event, void *opaque)
{
    struct run_context *ctx = opaque;
    (void)vm;
    if (event == GODWIT_EVENT_POWERED_OFF || event == GODWIT_EVENT_ENDED ||
        event == GODWIT_EVENT_ERROR)
        pthread_kill(ctx->main_thread, SIGNAL_VM_ENDED);
}

/*
 * SIGTERM asks the guest to power off and stops it after the shutdown timeout (a second
 * SIGTERM stops it at once); SIGINT and SIGHUP stop it at once.
 */
static void handle_signals(struct godwit_vm *vm, const sigset_t *mask, const struct run_context *ctx)
{
    bool shutdown_requested = false;
    for (;;) {
        int sig = sigwaitinfo(mask, NULL);
        if (sig < 0 && errno == EINTR)
            continue;
        if (sig == SIGNAL_VM_ENDED || godwit_get_state(vm) == GODWIT_STATE_STOPPED)
            return;
        if (sig == SIGTERM && !shutdown_requested) {
            log_info("SIGTERM: asking the guest to power off");
            shutdown_requested = true;
            godwit_shutdown(vm, ctx->shutdown_timeout_ms);
            continue;
        }
        log_info("stopped by signal %s", strsignal(sig));
        godwit_stop(vm);
    }
}

static int cmd_run(int argc, char **argv)
{
    struct vm_config cfg;
    struct run_context ctx = { .main_thread = pthread_self(), .shutdown_timeout_ms = 30000 };
    sigset_t mask;

    int parsed = cli_parse_run(argc, argv, &cfg);
    if (parsed == CLI_HELP) {
        cli_usage_run(stdout);
        return 0;
    }
    if (parsed < 0)
        return GODWIT_EXIT_USAGE;
    struct godwit_config config = {
        .kernel = cfg.kernel_path, .initrd = cfg.initrd_path, .cmdline = cfg.cmdline,
        .memory_mib = cfg.memory_mib, .cpus = cfg.nr_cpus, .hugepages = cfg.hugepages,
        .no_reboot = cfg.no_reboot, .console_in_fd = STDIN_FILENO,
        .console_out_fd = STDOUT_FILENO,
    };
    struct godwit_vm *vm = godwit_create(&config);
    if (!vm)
        return GODWIT_EXIT_VMM_ERROR;
    godwit_set_event_callback(vm, on_event, &ctx);

    /* Blocked before any thread starts, so that every thread inherits the mask and only
     * this one receives them. */
    sigemptyset(&mask);
    sigaddset(&mask, SIGINT);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGHUP);
    sigaddset(&mask, SIGNAL_VM_ENDED);
    pthread_sigmask(SIG_BLOCK, &mask, NULL);
    signal(SIGPIPE, SIG_IGN);

    int ret = godwit_start(vm);
    if (ret < 0) {
        log_error("cannot start the VM: %s", strerror(-ret));
        godwit_destroy(vm);
        return GODWIT_EXIT_VMM_ERROR;
    }
    handle_signals(vm, &mask, &ctx);
    int status = godwit_wait(vm);
    godwit_destroy(vm);
    return status;
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
