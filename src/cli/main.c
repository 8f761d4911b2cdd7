/* main.c: the godwit command line, a thin user of libgodwit. */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "api/runtime.h"
#include "api/server.h"
#include "cli/agent_cmds.h"
#include "cli/check_host.h"
#include "cli/cli.h"
#include "cli/ctl.h"
#include "godwit/godwit.h"
#include "lib/godwit_internal.h"
#include "log.h"
#include "sandbox/caps.h"
#include "sandbox/seccomp.h"
#include "cli/sd_notify.h"

/* Sent to the main thread when the VM has ended, to end its wait for signals. */
#define SIGNAL_VM_ENDED SIGUSR2
#define SHUTDOWN_TIMEOUT_MS 30000

struct run_context {
    pthread_t main_thread;
    struct godwit_vm *vm;
    const char *name;
    char socket_path[RUNTIME_PATH_MAX + 80];
    char vsock_path[RUNTIME_PATH_MAX + 80]; /* the default one, beside the API socket */
    struct api_server *api;
    bool announced;
};

static void on_event(struct godwit_vm *vm, enum godwit_event event, void *opaque)
{
    struct run_context *ctx = opaque;
    (void)vm;
    if (event == GODWIT_EVENT_POWERED_OFF || event == GODWIT_EVENT_ENDED ||
        event == GODWIT_EVENT_ERROR)
        pthread_kill(ctx->main_thread, SIGNAL_VM_ENDED);
}

/* The API socket opens on the main loop before it starts turning. */
static int start_api(void *opaque)
{
    struct run_context *ctx = opaque;
    return api_server_start(&ctx->api, godwit_loop(ctx->vm), ctx->vm, ctx->name, ctx->socket_path);
}

static void vm_started(void *opaque)
{
    struct run_context *ctx = opaque;
    char status[256];
    snprintf(status, sizeof(status), "READY=1\nSTATUS=VM %s running, API on %s", ctx->name,
             ctx->socket_path);
    sd_notify_send(status);
    /* Once per process: a guest reboot starts the vCPUs again, but it is the same VM. */
    if (!ctx->announced)
        log_info("VM %s running; API on %s", ctx->name, ctx->socket_path);
    ctx->announced = true;
}

/* The user's terminal changed size: hvc0 follows (when it is on the terminal). */
static void follow_terminal_size(struct godwit_vm *vm)
{
    struct winsize ws;
    if (ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col && ws.ws_row)
        godwit_console_resize(vm, ws.ws_col, ws.ws_row);
}

/*
 * SIGTERM asks the guest to power off and stops it after the shutdown timeout (a second
 * SIGTERM stops it at once); SIGINT and SIGHUP stop it at once.
 */
static void handle_signals(struct godwit_vm *vm, const sigset_t *mask)
{
    bool shutdown_requested = false;
    for (;;) {
        int sig = sigwaitinfo(mask, NULL);
        if (sig < 0 && errno == EINTR)
            continue;
        if (sig == SIGNAL_VM_ENDED || godwit_get_state(vm) == GODWIT_STATE_STOPPED)
            return;
        if (sig == SIGWINCH) {
            follow_terminal_size(vm);
            continue;
        }
        sd_notify_send("STOPPING=1");
        if (sig == SIGTERM && !shutdown_requested) {
            log_info("SIGTERM: asking the guest to power off");
            shutdown_requested = true;
            godwit_shutdown(vm, SHUTDOWN_TIMEOUT_MS);
            continue;
        }
        log_info("stopped by signal %s", strsignal(sig));
        godwit_stop(vm);
    }
}

/* NAME.vsock in the API socket's directory. */
static int default_vsock_path(struct run_context *ctx)
{
    const char *slash = strrchr(ctx->socket_path, '/');
    int dir_len = slash ? (int)(slash - ctx->socket_path) + 1 : 0;
    int n = snprintf(ctx->vsock_path, sizeof(ctx->vsock_path), "%.*s%s.vsock", dir_len,
                     ctx->socket_path, ctx->name);
    /* Room for the guest connections' "_PORT" after it too (sun_path). */
    if (n < 0 || n + 11 >= RUNTIME_PATH_MAX) {
        ctx->vsock_path[0] = '\0';
        log_error("--vsock: the default socket path is too long: give socket=PATH");
        return -ENAMETOOLONG;
    }
    return 0;
}

/* Claims the VM's name on this host and works out its API socket. Returns the lock fd. */
static int claim_identity(struct run_context *ctx, struct cli_run_options *opts, char *generated,
                          size_t len)
{
    if (!opts->extra.name) {
        runtime_generate_name(generated, len);
        ctx->name = generated;
    } else {
        ctx->name = opts->extra.name;
    }
    int lock = runtime_claim_name(ctx->name);
    if (lock == -EADDRINUSE) {
        log_error("--name: a VM named '%s' is already running on this host", ctx->name);
        return lock;
    }
    if (lock < 0) {
        log_error("cannot claim the name '%s' in the runtime directory: %s", ctx->name,
                  strerror(-lock));
        return lock;
    }
    int ret = opts->extra.api_socket
                  ? (snprintf(ctx->socket_path, sizeof(ctx->socket_path), "%s",
                              opts->extra.api_socket) < (int)sizeof(ctx->socket_path) ? 0 : -ENAMETOOLONG)
                  : runtime_socket_path(ctx->name, ctx->socket_path, sizeof(ctx->socket_path));
    if (ret < 0) {
        log_error("--api-socket: the path is too long");
        close(lock);
        return ret;
    }
    if (opts->cfg.vsock_cid && !opts->cfg.vsock_path && (ret = default_vsock_path(ctx)) < 0) {
        close(lock);
        return ret;
    }
    if (ctx->vsock_path[0])
        opts->cfg.vsock_path = ctx->vsock_path;
    return lock;
}

/* Before the VM's name is claimed: in the jail, the runtime directory is the jail's. */
static int enter_jail(struct cli_run_options *opts)
{
    struct jail_plan plan = { 0 };
    int ret = jail_plan_vm(&plan, &opts->cfg, opts->extra.api_socket, opts->restore_dir);
    opts->jail.name = opts->extra.name;
    /* The guest's RAM, and room for the ring itself: what the jailed user may pin (jail.c). */
    opts->jail.memlock_bytes = (opts->cfg.memory_mib + JAIL_MEMLOCK_SLACK_MIB) << 20;
    return ret < 0 ? ret : jail_enter(&opts->jail, &plan);
}

static struct godwit_vm *create_vm(const struct vm_config *cfg, const char *restore_dir,
                                   int incoming_fd, int incoming_memfd,
                                   const struct godwit_handover *handover,
                                   const struct config_extra *extra, int ram_dir_fd)
{
    struct godwit_config config = {
        .kernel = cfg->kernel_path, .initrd = cfg->initrd_path, .cmdline = cfg->cmdline,
        .memory_mib = cfg->memory_mib, .cpus = cfg->nr_cpus, .hugepages = cfg->hugepages,
        .no_thp = cfg->no_thp,
        .no_reboot = cfg->no_reboot, .console_in_fd = STDIN_FILENO,
        .console_out_fd = STDOUT_FILENO,
        .disks = cfg->disks, .nr_disks = cfg->nr_disks, .nets = cfg->nets, .nr_nets = cfg->nr_nets,
        .virtio_console = cfg->virtio_console, .virtio_console_path = cfg->virtio_console_path,
        .no_rng = cfg->no_rng, .vsock_cid = cfg->vsock_cid, .vsock_socket = cfg->vsock_path,
        .restore_dir = restore_dir,
        .no_kernel_decompress = cfg->no_kernel_decompress,
        .no_kernel_cache = cfg->no_kernel_cache,
        .incoming = incoming_fd > 0, .incoming_fd = incoming_fd,
        .incoming_memfd = incoming_memfd, .incoming_devices = handover,
        .seccomp = extra->seccomp, .io_poll_us = extra->io_poll_us,
        .ram_dir_fd = ram_dir_fd,
    };
    return godwit_create(&config);
}

static int cmd_run(int argc, char **argv)
{
    struct cli_run_options opts;
    struct run_context ctx = { .main_thread = pthread_self() };
    char generated[RUNTIME_NAME_MAX + 1];
    sigset_t mask;
    int status = GODWIT_EXIT_VMM_ERROR;

    int parsed = cli_parse_run(argc, argv, &opts);
    if (parsed != 0) {
        if (parsed == CLI_HELP)
            cli_usage_run(stdout);
        cli_run_options_free(&opts);
        return parsed == CLI_HELP ? 0 : GODWIT_EXIT_USAGE;
    }
    /* The cache lies outside the jail's root: a jailed VM decompresses in memory. */
    if (opts.jail.dir)
        opts.cfg.no_kernel_cache = true;
    /* Before the jail takes the right to mount: guest RAM's tmpfs of huge pages. */
    int ram_dir = opts.jail.dir && !opts.cfg.hugepages && !opts.cfg.no_thp ? godwit_ram_dir_open()
                                                                          : 0;
    if (ram_dir < 0)
        ram_dir = 0;
    if ((opts.netns && jail_join_netns(opts.netns) < 0) || (opts.jail.dir && enter_jail(&opts) < 0)) {
        cli_run_options_free(&opts);
        return GODWIT_EXIT_VMM_ERROR;
    }
    int lock = claim_identity(&ctx, &opts, generated, sizeof(generated));
    if (lock < 0) {
        cli_run_options_free(&opts);
        return lock == -EADDRINUSE ? GODWIT_EXIT_USAGE : GODWIT_EXIT_VMM_ERROR;
    }
    ctx.vm = create_vm(&opts.cfg, opts.restore_dir, opts.incoming_fd, opts.incoming_memfd,
                       &opts.handover, &opts.extra, ram_dir);
    if (ram_dir > 0)
        close(ram_dir); /* the VM keeps a duplicate */
    /* libgodwit's now, whatever became of the VM */
    opts.incoming_fd = opts.incoming_memfd = 0;
    opts.handover = (struct godwit_handover){ 0 };
    if (!ctx.vm)
        goto out;
    godwit_set_event_callback(ctx.vm, on_event, &ctx);
    struct godwit_hooks hooks = { .before_start = start_api, .started = vm_started, .opaque = &ctx };
    godwit_set_hooks(ctx.vm, &hooks);

    /* Blocked before any thread starts, so that every thread inherits the mask and only
     * this one receives them. */
    sigemptyset(&mask);
    sigaddset(&mask, SIGINT);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGHUP);
    sigaddset(&mask, SIGWINCH);
    sigaddset(&mask, SIGNAL_VM_ENDED);
    pthread_sigmask(SIG_BLOCK, &mask, NULL);
    signal(SIGPIPE, SIG_IGN);

    /* Before any thread starts: capabilities are per thread and inherited at creation. */
    if (!opts.extra.keep_caps && sandbox_caps_drop(opts.cfg.nr_nets > 0) < 0)
        goto out;
    int ret = godwit_start(ctx.vm);
    if (ret < 0) {
        log_error("cannot start the VM: %s", strerror(-ret));
        goto out;
    }
    /* After: the main loop's thread must not inherit this thread's filter, which forbids
     * nearly all it does. A VM whose sandbox cannot be complete is stopped. */
    if (sandbox_seccomp_install(SANDBOX_THREAD_CLI, opts.extra.seccomp) < 0)
        godwit_stop(ctx.vm);
    handle_signals(ctx.vm, &mask);
    status = godwit_wait(ctx.vm);
out:
    /* The API first: a snapshot's thread of its own (with "freeze") may still use the VM. The
     * main loop that served the API has ended (godwit_wait) or never started. */
    api_server_destroy(ctx.api);
    godwit_destroy(ctx.vm);
    close(lock);
    cli_run_options_free(&opts);
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
    if (strcmp(cmd, "check-host") == 0) {
        struct check_host_env env = { .root = "", .kvm_device = NULL };
        return check_host_run(&env, stdout) > 0 ? 1 : 0;
    }
    int status = agent_cmds_main(cmd, argc - 1, argv + 1);
    if (status >= 0)
        return status;
    status = ctl_main(cmd, argc - 1, argv + 1);
    if (status >= 0)
        return status;
    log_error("unknown command '%s' (see godwit help)", cmd);
    return GODWIT_EXIT_USAGE;
}
