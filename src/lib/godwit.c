/* godwit.c: libgodwit: a VM's lifecycle on its own threads (the main loop and the vCPUs). */
#define _GNU_SOURCE
#include "godwit/godwit.h"

#include <errno.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "agent/client.h"
#include "agent/monitor.h"
#include "lib/defaults.h"
#include "io/console.h"
#include "io/unix_socket.h"
#include "vm/platform.h"
#include "clock.h"
#include "lib/godwit_internal.h"
#include "io/loop.h"
#include "lib/config.h"
#include "lib/device_options.h"
#include "lib/tap_info.h"
#include "log.h"
#include "migration/channel.h"
#include "migration/incoming.h"
#include "migration/migrate.h"
#include "migration/snapshot.h"
#include "sandbox/seccomp.h"
#include "vm/virtio_devices.h"
#include "vcpu/vcpu.h"
#include "vm/vm.h"
#include "boot/unpack.h"

/* After the power button, how long a guest with a live agent has before its agent is asked to
 * power off (half the shutdown timeout when that is shorter). */
#define AGENT_SHUTDOWN_GRACE_MS 5000u

/* Requests other threads hand to the main loop through `command_fd`. */
enum { COMMAND_SHUTDOWN_TIMER = 1 };

struct godwit_vm {
    struct vm_config cfg;
    struct kernel_unpack unpack; /* the bzImage's payload, decompressed once (boot/unpack.h) */
    char *kernel, *initrd, *cmdline; /* owned copies behind cfg's pointers */
    struct godwit_disk *disks;       /* owned copies, with their strings */
    struct godwit_net *nets;
    char *virtio_console_path;
    char *vsock_path;
    int console_in_fd;

    pthread_mutex_t lock;   /* guards everything below; recursive */
    pthread_cond_t ended_cond;
    enum godwit_state state;
    int exit_status;
    struct vm *vm;          /* the running VM, NULL between boots */
    bool host_reboot;       /* a reboot asked by the host restarts even with no_reboot */
    struct snapshot *restore; /* the first boot restores this snapshot; NULL after */
    int incoming_fd;          /* the first boot comes from this migration stream; -1 after */
    int incoming_memfd;       /* and maps this memory file (a local handover); -1: none */
    struct godwit_handover handover; /* its disks and taps, open for the VM's life (its sockets
                                      * until the first VM is built) */
    struct migration *migration; /* the current or last outgoing live migration */
    struct agent_monitor *agent; /* the guest agent's heartbeat, with a vsock device */
    struct loop_task *tasks;  /* calls posted to the main loop that have not run yet */
    pthread_cond_t task_cond;
    unsigned shutdown_timeout_ms;
    godwit_event_fn event_fn;
    void *event_opaque;

    pthread_t thread;
    bool thread_started;
    struct event_loop loop;
    bool loop_ready;
    bool ram_dir_ready; /* cfg.ram_dir was decided (and is ours to close when >= 0) */
    struct console console;
    bool console_attached;
    int command_fd;
    struct loop_watch exit_watch, command_watch, shutdown_timer;
    struct loop_watch agent_shutdown_timer; /* the grace before asking the agent */
    unsigned agent_grace_ms;
    struct loop_watch disk_lock_timer; /* after an incoming migration: the source's disk locks */
    unsigned disk_lock_tries;
    struct godwit_hooks hooks;

    /* A client attached to the serial console through the API (at most one). */
    pthread_mutex_t remote_lock; /* vCPU threads write to remote_fd */
    int remote_fd;
    struct console remote;
    int console_out_fd;
};

const char *godwit_state_name(enum godwit_state state)
{
    switch (state) {
    case GODWIT_STATE_CREATED: return "created";
    case GODWIT_STATE_RUNNING: return "running";
    case GODWIT_STATE_PAUSED: return "paused";
    case GODWIT_STATE_STOPPED: return "stopped";
    }
    return "unknown";
}

static void emit(struct godwit_vm *gv, enum godwit_event event)
{
    if (gv->event_fn)
        gv->event_fn(gv, event, gv->event_opaque);
}

static char *dup_or_null(const char *s, bool *failed)
{
    if (!s)
        return NULL;
    char *copy = strdup(s);
    if (!copy)
        *failed = true;
    return copy;
}

/* The guest's serial output: to the local console and to the attached client, if any. */
static void console_output(void *opaque, const uint8_t *buf, size_t len)
{
    struct godwit_vm *gv = opaque;
    if (gv->console_out_fd >= 0)
        console_write_all(gv->console_out_fd, buf, len, false);
    pthread_mutex_lock(&gv->remote_lock);
    if (gv->remote_fd >= 0)
        console_write_all(gv->remote_fd, buf, len, true);
    pthread_mutex_unlock(&gv->remote_lock);
}

static struct godwit_disk *copy_disks(const struct godwit_disk *src, unsigned n, bool *failed)
{
    struct godwit_disk *dst = n ? calloc(n, sizeof(*dst)) : NULL;
    if (n && !dst)
        *failed = true;
    for (unsigned i = 0; dst && i < n; i++) {
        dst[i] = src[i];
        dst[i].path = dup_or_null(src[i].path, failed);
        dst[i].serial = dup_or_null(src[i].serial, failed);
    }
    return dst;
}

static struct godwit_net *copy_nets(const struct godwit_net *src, unsigned n, bool *failed)
{
    struct godwit_net *dst = n ? calloc(n, sizeof(*dst)) : NULL;
    if (n && !dst)
        *failed = true;
    for (unsigned i = 0; dst && i < n; i++) {
        dst[i] = src[i];
        dst[i].tap = dup_or_null(src[i].tap, failed);
        dst[i].mac = dup_or_null(src[i].mac, failed);
    }
    return dst;
}

/* Each interface's queue pairs, decided once (devopt_net_default_queues), so that the VM and
 * its saved configuration count the same tap queues. Handed-over taps keep the count their
 * configuration gives: their names may now belong to other taps, or to none. */
static void resolve_net_queues(struct godwit_net *nets, unsigned n, unsigned cpus,
                               const struct godwit_handover *handover)
{
    if (handover && handover->nr_taps)
        return;
    for (unsigned i = 0; i < n; i++) {
        if (nets[i].queues)
            continue;
        int multi = tap_multi_queue(nets[i].tap);
        nets[i].queues = devopt_net_default_queues(cpus, multi);
        if (cpus > 1 && multi == 0)
            log_info("virtio-net: tap %s is single-queue: one queue pair for the %u vCPUs "
                     "(a tap made with `ip tuntap add NAME mode tap multi_queue` gets one each)",
                     nets[i].tap, cpus);
        else if (cpus > 1 && nets[i].queues == 1)
            log_info("virtio-net: cannot tell whether tap %s takes several queues (%s): one "
                     "queue pair for the %u vCPUs (queues=N asks for more)", nets[i].tap,
                     strerror(-multi), cpus);
    }
}

static void free_devices(struct godwit_vm *gv)
{
    for (unsigned i = 0; gv->disks && i < gv->cfg.nr_disks; i++) {
        free((char *)gv->disks[i].path);
        free((char *)gv->disks[i].serial);
    }
    for (unsigned i = 0; gv->nets && i < gv->cfg.nr_nets; i++) {
        free((char *)gv->nets[i].tap);
        free((char *)gv->nets[i].mac);
    }
    free(gv->disks);
    free(gv->nets);
    free(gv->virtio_console_path);
    free(gv->vsock_path);
}

/* One line for a device list that cannot work, before anything is opened. */
static bool devices_valid(const struct godwit_config *config)
{
    for (unsigned i = 0; i < config->nr_disks; i++)
        if (!config->disks[i].path) {
            log_error("config: disk %u has no path", i);
            return false;
        }
    for (unsigned i = 0; i < config->nr_nets; i++)
        if (!config->nets[i].tap) {
            log_error("config: network interface %u has no tap", i);
            return false;
        }
    if ((config->virtio_console == GODWIT_VIRTIO_CONSOLE_SOCKET ||
         config->virtio_console == GODWIT_VIRTIO_CONSOLE_FILE) && !config->virtio_console_path) {
        log_error("config: the virtio console needs a path");
        return false;
    }
    if (config->vsock_cid && !devopt_vsock_cid_valid(config->vsock_cid)) {
        log_error("config: vsock cid %llu is out of range (3 to 4294967294)",
                  (unsigned long long)config->vsock_cid);
        return false;
    }
    if (config->vsock_cid && !config->vsock_socket) {
        log_error("config: the vsock device needs a socket path");
        return false;
    }
    return true;
}

unsigned godwit_handover_count(const struct godwit_handover *h)
{
    return h->nr_disks + h->nr_taps + h->nr_consoles + h->nr_vsocks;
}

void godwit_handover_close(struct godwit_handover *h)
{
    for (unsigned i = 0; i < godwit_handover_count(h) && i < GODWIT_MAX_HANDOVER_FDS; i++)
        close(h->fds[i]);
    for (unsigned i = 0; i < h->nr_streams && i < GODWIT_MAX_MIGRATION_CONNECTIONS - 1; i++)
        close(h->streams[i]);
    h->nr_disks = h->nr_taps = h->nr_consoles = h->nr_vsocks = h->nr_streams = 0;
}

/* The handover's counts against the configuration: each kind none (opened as configured: the
 * caller overrode them, or an older source sent no sockets) or all of them. */
static bool handover_fits(const struct godwit_handover *h, const struct godwit_config *config)
{
    unsigned pairs = devopt_tap_queues(config->nets, config->nr_nets);
    bool console = config->virtio_console == GODWIT_VIRTIO_CONSOLE_SOCKET;
    if (h->nr_streams > GODWIT_MAX_MIGRATION_CONNECTIONS - 1 ||
        h->nr_disks > GODWIT_MAX_HANDOVER_FDS || h->nr_taps > GODWIT_MAX_HANDOVER_FDS ||
        h->nr_consoles > 1 || h->nr_vsocks > 1 ||
        godwit_handover_count(h) > GODWIT_MAX_HANDOVER_FDS ||
        (h->nr_disks && h->nr_disks != config->nr_disks) || (h->nr_taps && h->nr_taps != pairs) ||
        (h->nr_consoles && !console) || (h->nr_vsocks && !config->vsock_cid)) {
        log_error("migration: the source handed over %u disks, %u tap queues, %u console and "
                  "%u vsock sockets, the configuration has %u disks, %u tap queues, %u console "
                  "and %u vsock sockets", h->nr_disks, h->nr_taps, h->nr_consoles, h->nr_vsocks,
                  config->nr_disks, pairs, console ? 1 : 0, config->vsock_cid ? 1 : 0);
        return false;
    }
    return true;
}

/* A handed-over listening socket must be the one at the configured path: the one host
 * programs reach. */
static bool socket_fits(const char *what, int fd, const char *path)
{
    if (unix_socket_bound_to(fd, path))
        return true;
    log_error("migration: the source's %s socket is not bound to %s", what, path);
    return false;
}

/* Takes a local handover's disks, taps and sockets, or refuses them all with one line. */
static int take_handover(struct godwit_vm *gv, const struct godwit_config *config)
{
    struct godwit_handover *h = &gv->handover;
    *h = *config->incoming_devices;
    const int *sockets = h->fds + h->nr_disks + h->nr_taps;
    if (!handover_fits(h, config) ||
        (h->nr_consoles && !socket_fits("console", sockets[0], config->virtio_console_path)) ||
        (h->nr_vsocks && !socket_fits("vsock", sockets[h->nr_consoles], config->vsock_socket))) {
        godwit_handover_close(h);
        return -EINVAL;
    }
    gv->cfg.disk_fds = h->nr_disks ? h->fds : NULL;
    gv->cfg.tap_fds = h->nr_taps ? h->fds + h->nr_disks : NULL;
    gv->cfg.console_listen_fd = h->nr_consoles ? sockets : NULL;
    gv->cfg.vsock_listen_fd = h->nr_vsocks ? sockets + h->nr_consoles : NULL;
    unsigned taps = h->nr_taps ? config->nr_nets : 0;
    if (h->nr_disks || taps || h->nr_consoles || h->nr_vsocks)
        log_info("migration: %u disk%s and %u tap%s handed over (not reopened)%s%s", h->nr_disks,
                 h->nr_disks == 1 ? "" : "s", taps, taps == 1 ? "" : "s",
                 h->nr_consoles ? "; the console's socket handed over (not bound again)" : "",
                 h->nr_vsocks ? "; the vsock socket handed over (not bound again)" : "");
    return 0;
}

/* A handover's listening sockets serve the first VM only: once it is built, the devices hold
 * their own duplicates, and a guest reboot's VM binds the paths afresh, as any VM's does. */
static void drop_handover_sockets(struct godwit_vm *gv)
{
    struct godwit_handover *h = &gv->handover;
    for (unsigned i = h->nr_disks + h->nr_taps; i < godwit_handover_count(h); i++)
        close(h->fds[i]);
    h->nr_consoles = h->nr_vsocks = 0;
    gv->cfg.console_listen_fd = gv->cfg.vsock_listen_fd = NULL;
}

/*
 * What a migration in leaves behind: its connections, the handed-over memory file (the VM's
 * RAM holds its own descriptor) and sockets. After a switch-over this runs once the vCPUs
 * are let go, not in the guest's pause: closing a TCP connection sends its FIN, and over
 * loopback the receiving side's work runs inside that close() (one connection each, up to 8).
 * `guest_here`: GO came, so the guest's sockets' paths are this side's, to unlink at its end;
 * until then they were the source's, which may run the guest on.
 */
static void incoming_done(struct godwit_vm *gv, struct vm *vm, bool guest_here)
{
    if (gv->incoming_fd >= 0)
        close(gv->incoming_fd);
    gv->incoming_fd = -1;
    for (unsigned i = 0; i < gv->handover.nr_streams; i++)
        close(gv->handover.streams[i]);
    gv->handover.nr_streams = 0;
    if (gv->incoming_memfd >= 0)
        close(gv->incoming_memfd);
    gv->incoming_memfd = gv->cfg.incoming_memfd = -1;
    gv->cfg.incoming = false;
    drop_handover_sockets(gv);
    if (guest_here)
        vm_virtio_own_sockets(vm, true);
}

/* Reads the snapshot now, so that a bad one is refused before anything starts. */
static int open_restore(struct godwit_vm *gv, const char *dir)
{
    gv->restore = calloc(1, sizeof(*gv->restore));
    if (!gv->restore)
        return -ENOMEM;
    int ret = snapshot_open(gv->restore, dir);
    if (ret < 0) {
        free(gv->restore);
        gv->restore = NULL;
        return ret;
    }
    gv->cfg.restore = gv->restore;
    return 0;
}

/* The VM as configured, but for a local handover's disks and taps (godwit_create's). */
static struct godwit_vm *new_vm(const struct godwit_config *config)
{
    bool failed = false;
    if (!config || (!config->kernel && !config->restore_dir && !config->incoming)) {
        log_error("config: a kernel is required");
        return NULL;
    }
    if (config->cpus > VM_MAX_VCPUS || (config->memory_mib && config->memory_mib < 64)) {
        log_error("config: %s is out of range", config->cpus > VM_MAX_VCPUS ? "cpus" : "memory");
        return NULL;
    }
    if (!devices_valid(config))
        return NULL;
    struct godwit_vm *gv = calloc(1, sizeof(*gv));
    if (!gv)
        return NULL;
    /* Recursive: pausing drains device I/O by running the main loop, whose callbacks (an API
     * request, say) may take it again on the same thread. */
    pthread_mutexattr_t recursive;
    pthread_mutexattr_init(&recursive);
    pthread_mutexattr_settype(&recursive, PTHREAD_MUTEX_RECURSIVE);
    pthread_mutex_init(&gv->lock, &recursive);
    pthread_mutexattr_destroy(&recursive);
    pthread_cond_init(&gv->ended_cond, NULL);
    pthread_cond_init(&gv->task_cond, NULL);
    pthread_mutex_init(&gv->remote_lock, NULL);
    gv->command_fd = -1;
    gv->remote_fd = -1;
    gv->incoming_fd = gv->incoming_memfd = -1; /* the caller's until this VM is made */
    gv->kernel = dup_or_null(config->kernel, &failed);
    gv->initrd = dup_or_null(config->initrd, &failed);
    gv->cmdline = dup_or_null(config->cmdline ? config->cmdline : DEFAULT_CMDLINE, &failed);
    gv->disks = copy_disks(config->disks, config->nr_disks, &failed);
    gv->nets = copy_nets(config->nets, config->nr_nets, &failed);
    gv->virtio_console_path = dup_or_null(config->virtio_console_path, &failed);
    gv->vsock_path = config->vsock_cid ? dup_or_null(config->vsock_socket, &failed) : NULL;
    gv->cfg.nr_disks = gv->disks ? config->nr_disks : 0; /* what free_devices() walks */
    gv->cfg.nr_nets = gv->nets ? config->nr_nets : 0;
    if (failed) {
        godwit_destroy(gv);
        return NULL;
    }
    gv->cfg = (struct vm_config){
        .kernel_path = gv->kernel, .initrd_path = gv->initrd, .cmdline = gv->cmdline,
        .memory_mib = config->memory_mib ? config->memory_mib : DEFAULT_MEMORY_MIB,
        .nr_cpus = config->cpus ? config->cpus : 1,
        .hugepages = config->hugepages, .no_thp = config->no_thp,
        .no_reboot = config->no_reboot,
        .console_out_fd = config->console_out_fd,
        .console_out = console_output, .console_opaque = gv,
        .disks = gv->disks, .nr_disks = config->nr_disks,
        .nets = gv->nets, .nr_nets = config->nr_nets,
        .virtio_console = config->virtio_console,
        .virtio_console_path = gv->virtio_console_path,
        .no_rng = config->no_rng,
        .vsock_cid = config->vsock_cid, .vsock_path = gv->vsock_path,
        .unpack = &gv->unpack,
        .seccomp = config->seccomp,
        .io_poll_us = config->io_poll_us < GODWIT_MAX_IO_POLL_US ? config->io_poll_us
                                                                : GODWIT_MAX_IO_POLL_US,
        .loop = &gv->loop,
        .ram_dir = -1,
    };
    resolve_net_queues(gv->nets, gv->cfg.nr_nets, gv->cfg.nr_cpus,
                       config->incoming ? config->incoming_devices : NULL);
    gv->console_out_fd = config->console_out_fd;
    gv->console_in_fd = config->console_in_fd;
    gv->state = GODWIT_STATE_CREATED;
    gv->cfg.incoming = config->incoming;
    gv->cfg.incoming_memfd = -1;
    gv->unpack.enabled = !config->no_kernel_decompress;
    gv->unpack.no_cache = config->no_kernel_cache;
    if (config->restore_dir ? open_restore(gv, config->restore_dir) < 0
        : !config->incoming && vm_check_images(&gv->cfg) < 0) {
        godwit_destroy(gv);
        return NULL;
    }
    if (config->incoming) {
        gv->incoming_fd = config->incoming_fd;
        gv->incoming_memfd = config->incoming_memfd > 0 ? config->incoming_memfd : -1;
        gv->cfg.incoming_memfd = gv->incoming_memfd;
    }
    /* Here, while the process may still mount: guest RAM's tmpfs with huge pages. */
    if (!config->hugepages && !config->no_thp) {
        int dir = config->ram_dir_fd > 0 ? fcntl(config->ram_dir_fd, F_DUPFD_CLOEXEC, 3)
                                         : gm_ram_dir_open();
        if (dir < 0)
            log_debug("memory: guest RAM is a memfd, without a tmpfs of huge pages: %s",
                      strerror(config->ram_dir_fd > 0 ? errno : -dir));
        gv->cfg.ram_dir = dir < 0 ? -1 : dir;
    }
    gv->ram_dir_ready = true;
    /* The ring is made here, not at start: the kernel charges the guest RAM it will register
     * to RLIMIT_MEMLOCK (8 MiB by default) unless the process that made it held CAP_IPC_LOCK,
     * and `godwit run` drops its capabilities between create and start. */
    if (loop_init(&gv->loop, 256) < 0) {
        godwit_destroy(gv);
        return NULL;
    }
    gv->loop_ready = true;
    loop_set_poll(&gv->loop, (uint64_t)gv->cfg.io_poll_us * 1000);
    return gv;
}

/* What a refused incoming configuration handed godwit, closed: its stream, its memory file
 * and the handover's descriptors. */
static void close_incoming(const struct godwit_config *config)
{
    if (!config || !config->incoming)
        return;
    if (config->incoming_fd >= 0)
        close(config->incoming_fd);
    if (config->incoming_memfd > 0)
        close(config->incoming_memfd);
    if (config->incoming_devices) {
        struct godwit_handover left = *config->incoming_devices;
        godwit_handover_close(&left);
    }
}

/* An incoming configuration's stream, memory file and handover are godwit's from here,
 * whatever becomes of the VM: the VM takes them, or they are closed. */
struct godwit_vm *godwit_create(const struct godwit_config *config)
{
    const struct godwit_handover *handover = config && config->incoming ? config->incoming_devices
                                                                         : NULL;
    struct godwit_vm *gv = new_vm(config);
    if (!gv) {
        close_incoming(config);
        return NULL;
    }
    if (handover && take_handover(gv, config) < 0) {
        godwit_destroy(gv);
        return NULL;
    }
    return gv;
}

int godwit_ram_dir_open(void)
{
    return gm_ram_dir_open();
}

void godwit_set_event_callback(struct godwit_vm *gv, godwit_event_fn fn, void *opaque)
{
    gv->event_fn = fn;
    gv->event_opaque = opaque;
}

void godwit_set_hooks(struct godwit_vm *gv, const struct godwit_hooks *hooks)
{
    gv->hooks = *hooks;
}

struct event_loop *godwit_loop(struct godwit_vm *gv)
{
    return &gv->loop;
}

const struct vm_config *godwit_config(struct godwit_vm *gv)
{
    return &gv->cfg;
}

static int exit_status_for(enum vm_exit_reason reason)
{
    switch (reason) {
    case VM_EXIT_POWEROFF: return GODWIT_EXIT_POWEROFF;
    case VM_EXIT_RESET: return GODWIT_EXIT_REBOOT;
    case VM_EXIT_PANIC: return GODWIT_EXIT_PANIC;
    case VM_EXIT_CRASH: return GODWIT_EXIT_CRASH;
    case VM_EXIT_STOPPED: return GODWIT_EXIT_STOPPED;
    case VM_EXIT_MIGRATED: return GODWIT_EXIT_POWEROFF;
    case VM_EXIT_NONE:
    case VM_EXIT_VMM_ERROR: break;
    }
    return GODWIT_EXIT_VMM_ERROR;
}

static bool on_vm_exit(struct event_loop *loop, void *opaque, int res)
{
    struct godwit_vm *gv = opaque;
    uint64_t count;
    (void)res;
    if (read(gv->vm->exit_fd, &count, sizeof(count)) < 0 && errno != EAGAIN)
        log_warn("reading the exit event failed: %s", strerror(errno));
    loop->stop = true;
    return false; /* this VM is ending; the next boot watches its own exit_fd */
}

static bool on_shutdown_timeout(struct event_loop *loop, void *opaque, int res)
{
    struct godwit_vm *gv = opaque;
    (void)loop;
    (void)res;
    pthread_mutex_lock(&gv->lock);
    if (gv->vm) {
        log_warn("the guest did not power off in time: stopping it");
        vm_request_exit(gv->vm, VM_EXIT_STOPPED);
    }
    pthread_mutex_unlock(&gv->lock);
    return false;
}

/*
 * The guest has not powered off AGENT_SHUTDOWN_GRACE_MS after the power button: a guest that
 * ignores it (no acpid, a busy init) may still have a live agent, which is asked to power off.
 * The monitor's thread sends the request: the main loop never waits for the guest.
 */
static bool on_agent_shutdown_grace(struct event_loop *loop, void *opaque, int res)
{
    struct godwit_vm *gv = opaque;
    (void)loop;
    (void)res;
    pthread_mutex_lock(&gv->lock);
    if (gv->vm && gv->agent && agent_monitor_request_poweroff(gv->agent))
        log_warn("the guest has not powered off %u s after the ACPI power button: asking its "
                 "agent to power off", gv->agent_grace_ms / 1000);
    pthread_mutex_unlock(&gv->lock);
    return false;
}

/* Half the shutdown timeout, AGENT_SHUTDOWN_GRACE_MS at most: the agent's power-off has time
 * to finish before the timeout stops the guest. */
static unsigned agent_grace_for(unsigned timeout_ms)
{
    return timeout_ms / 2 < AGENT_SHUTDOWN_GRACE_MS ? timeout_ms / 2 : AGENT_SHUTDOWN_GRACE_MS;
}

static bool on_command(struct event_loop *loop, void *opaque, int res)
{
    struct godwit_vm *gv = opaque;
    uint64_t commands;
    (void)res;
    if (read(gv->command_fd, &commands, sizeof(commands)) != sizeof(commands))
        return true;
    pthread_mutex_lock(&gv->lock);
    unsigned timeout = gv->shutdown_timeout_ms;
    bool agent = gv->agent != NULL;
    gv->shutdown_timeout_ms = 0;
    pthread_mutex_unlock(&gv->lock);
    if (timeout)
        loop_after(loop, &gv->shutdown_timer, timeout, on_shutdown_timeout, gv);
    gv->agent_grace_ms = agent_grace_for(timeout);
    /* Only the first request: a second one's timer would reuse a watch still in flight. */
    if (timeout && agent && gv->agent_grace_ms && !gv->agent_shutdown_timer.armed)
        loop_after(loop, &gv->agent_shutdown_timer, gv->agent_grace_ms, on_agent_shutdown_grace,
                   gv);
    return true;
}

static size_t console_to_guest(void *opaque, const uint8_t *buf, size_t len)
{
    struct godwit_vm *gv = opaque;
    return gv->vm ? vm_console_input(gv->vm, buf, len) : 0;
}

static void remote_console_closed(void *opaque)
{
    struct godwit_vm *gv = opaque;
    pthread_mutex_lock(&gv->remote_lock);
    close(gv->remote_fd);
    gv->remote_fd = -1;
    pthread_mutex_unlock(&gv->remote_lock);
}

int godwit_console_attach(struct godwit_vm *gv, int fd, const char *greeting)
{
    pthread_mutex_lock(&gv->remote_lock);
    int ret = gv->remote_fd >= 0 ? -EBUSY : 0;
    if (ret == 0 && (ret = console_init(&gv->remote, fd, console_to_guest, gv)) == 0) {
        console_write_all(fd, (const uint8_t *)greeting, strlen(greeting), true);
        gv->remote.on_closed = remote_console_closed;
        gv->remote_fd = fd;
    }
    pthread_mutex_unlock(&gv->remote_lock);
    /* On the loop's thread (the API calls this from a request): watch the client's input. */
    if (ret == 0 && (ret = console_attach(&gv->remote, &gv->loop)) < 0)
        remote_console_closed(gv);
    return ret;
}

static void set_state(struct godwit_vm *gv, enum godwit_state state)
{
    pthread_mutex_lock(&gv->lock);
    gv->state = state;
    pthread_mutex_unlock(&gv->lock);
}

static void fail_pending_tasks(struct godwit_vm *gv);

#define DISK_LOCK_RETRY_MS 20u
#define DISK_LOCK_TRIES 1500u /* 30 s */

/*
 * A migrated guest runs at once on disks its source still holds locked: the source is paused
 * for good and lets go when it ends (moments after the acknowledgement). Their locks are taken
 * as soon as they are free, so that no third VM can open them meanwhile.
 */
static bool take_disk_locks(struct event_loop *loop, void *opaque, int res)
{
    struct godwit_vm *gv = opaque;
    (void)res;
    int left = gv->vm ? vm_virtio_lock_disks(gv->vm) : 0;
    if (left < 0)
        log_warn("migration: cannot lock the disks: %s", strerror(-left));
    else if (left > 0 && ++gv->disk_lock_tries < DISK_LOCK_TRIES)
        loop_after(loop, &gv->disk_lock_timer, DISK_LOCK_RETRY_MS, take_disk_locks, gv);
    else if (left > 0)
        log_warn("migration: %d disk(s) still locked by another process after %u s; the guest "
                 "runs on them unlocked", left, DISK_LOCK_TRIES * DISK_LOCK_RETRY_MS / 1000);
    return false;
}

static void on_agent_change(void *opaque, bool alive, const struct agent_status *st)
{
    (void)st;
    emit(opaque, alive ? GODWIT_EVENT_AGENT_FOUND : GODWIT_EVENT_AGENT_LOST);
}

/*
 * With a vsock device, the guest agent's heartbeat (agent/monitor.h); a VM runs without.
 * `resumed_from`: the guest runs again after a "restore" or "migration" (else NULL), and its
 * clock is stepped to the host's; a restore also thaws, as a snapshot taken with --freeze
 * holds its filesystems frozen (the thaw came after the copy).
 */
static void start_agent_monitor(struct godwit_vm *gv, const char *resumed_from)
{
    struct agent_monitor *m = NULL;
    if (gv->vsock_path && agent_monitor_start(&m, gv->vsock_path, on_agent_change, gv) == 0) {
        if (resumed_from)
            agent_monitor_resumed(m, resumed_from, strcmp(resumed_from, "restore") == 0);
        pthread_mutex_lock(&gv->lock);
        gv->agent = m;
        pthread_mutex_unlock(&gv->lock);
    }
}

static void stop_agent_monitor(struct godwit_vm *gv)
{
    pthread_mutex_lock(&gv->lock);
    struct agent_monitor *m = gv->agent;
    gv->agent = NULL;
    pthread_mutex_unlock(&gv->lock);
    agent_monitor_stop(m); /* outside the lock: its thread may be emitting an event */
}

struct json_object *godwit_agent_json(struct godwit_vm *gv)
{
    struct agent_status st;
    pthread_mutex_lock(&gv->lock);
    bool watched = gv->agent != NULL;
    if (watched)
        agent_monitor_status(gv->agent, &st);
    pthread_mutex_unlock(&gv->lock);
    if (!watched)
        return NULL;
    struct json_object *obj = json_object_new_object();
    json_object_object_add(obj, "alive", json_object_new_boolean(st.alive));
    if (!st.seen)
        return obj;
    json_object_object_add(obj, "heartbeat_age_ms", json_object_new_int64((int64_t)st.age_ms));
    json_object_object_add(obj, "version", json_object_new_string(st.version));
    json_object_object_add(obj, "os", json_object_new_string(st.os));
    json_object_object_add(obj, "kernel", json_object_new_string(st.kernel));
    json_object_object_add(obj, "hostname", json_object_new_string(st.hostname));
    json_object_object_add(obj, "addresses", json_object_new_string(st.addresses));
    return obj;
}

bool godwit_agent_take_resume(struct godwit_vm *gv)
{
    pthread_mutex_lock(&gv->lock);
    struct agent_monitor *m = gv->agent;
    enum agent_resumed_claim claim = m ? agent_monitor_take_resumed(m, "resume")
                                       : AGENT_RESUMED_NONE;
    pthread_mutex_unlock(&gv->lock);
    if (claim == AGENT_RESUMED_STEPPING)
        agent_monitor_wait_step(m); /* m lives until then: stop waits for its waiters */
    return claim == AGENT_RESUMED_TAKEN;
}

void godwit_agent_give_back_resume(struct godwit_vm *gv)
{
    pthread_mutex_lock(&gv->lock);
    if (gv->agent)
        agent_monitor_resumed(gv->agent, "resume", false);
    pthread_mutex_unlock(&gv->lock);
}

/* Boots the VM once and runs the main loop until it ends; returns why it ended. */
static enum vm_exit_reason run_once(struct godwit_vm *gv)
{
    struct vm *vm = calloc(1, sizeof(*vm));
    enum vm_exit_reason reason = VM_EXIT_VMM_ERROR;

    if (!vm)
        return reason;
    gv->loop.stop = false;
    uint64_t create_start = monotonic_ns();
    int created = vm_create(vm, &gv->cfg);
    bool restored = gv->restore != NULL;
    if (gv->restore) { /* a later boot (a guest reboot) starts the kernel afresh */
        snapshot_close(gv->restore);
        free(gv->restore);
        gv->restore = NULL;
        gv->cfg.restore = NULL;
    }
    bool migrated_in = gv->incoming_fd >= 0;
    int migrated_fd = -1; /* told RUNNING once the vCPUs run */
    bool held = false;    /* the vCPU threads made, waiting for the switch-over */
    if (migrated_in) { /* the guest's RAM and state come from the source */
        if (created == 0) {
            uint64_t threads_start = monotonic_ns();
            created = vm_start_held(vm);
            held = true; /* even when it failed: some may have started */
            if (created == 0)
                log_info("migration: the VM here built in %.1f ms (%.1f ms its memory, devices "
                         "and KVM objects, %.1f ms its vCPU threads)", ms_since_ns(create_start),
                         ns_to_ms(threads_start - create_start), ms_since_ns(threads_start));
        }
        if (created == 0)
            created = migration_receive(vm, gv->incoming_fd, gv->incoming_memfd >= 0,
                                        gv->handover.streams, gv->handover.nr_streams);
        if (created == 0)
            migrated_fd = gv->incoming_fd;
        else
            incoming_done(gv, vm, false);
    }
    if (created < 0) {
        if (held)
            vm_stop(vm); /* the waiting vCPU threads end */
        goto out;
    }
    pthread_mutex_lock(&gv->lock);
    gv->vm = vm;
    pthread_mutex_unlock(&gv->lock);
    int started = loop_watch_readable(&gv->loop, &gv->exit_watch, vm->exit_fd, on_vm_exit, gv);
    /* RUNNING goes before the held vCPU threads are let go (a migrated-in VM's are held, and
     * letting them go cannot fail): once woken they take this thread's CPU (the test host has
     * two), and the source's figure for the pause would wait on them (6 ms of 26 there). */
    if (migrated_fd >= 0 && started == 0)
        migration_confirm_running(migrated_fd); /* without it the source keeps the guest paused */
    if (started == 0 && held)
        vm_release(vm);
    else if (started == 0)
        started = vm_start(vm);
    if (migrated_fd >= 0) /* the guest runs: what the migration left can go now */
        incoming_done(gv, vm, true);
    if (started < 0) {
        vm_request_exit(vm, VM_EXIT_VMM_ERROR);
    } else {
        set_state(gv, GODWIT_STATE_RUNNING);
        if (migrated_in) {
            gv->disk_lock_tries = 0;
            take_disk_locks(&gv->loop, gv, 0);
        }
        emit(gv, GODWIT_EVENT_STARTED);
        if (gv->hooks.started)
            gv->hooks.started(gv->hooks.opaque);
        start_agent_monitor(gv, restored ? "restore" : migrated_in ? "migration" : NULL);
        if (loop_run(&gv->loop) < 0)
            vm_request_exit(vm, VM_EXIT_VMM_ERROR);
        stop_agent_monitor(gv);
    }
    loop_unwatch(&gv->loop, &gv->exit_watch);
    loop_unwatch(&gv->loop, &gv->shutdown_timer);
    loop_unwatch(&gv->loop, &gv->agent_shutdown_timer);
    loop_unwatch(&gv->loop, &gv->disk_lock_timer);
    vm_stop(vm);
    reason = (enum vm_exit_reason)vm->exit_reason;
out:
    pthread_mutex_lock(&gv->lock);
    gv->vm = NULL;
    pthread_mutex_unlock(&gv->lock);
    fail_pending_tasks(gv);
    migration_free(gv->migration); /* its thread reads this VM's memory: done before it goes */
    gv->migration = NULL;
    vm_destroy(vm);
    free(vm);
    return reason;
}

static bool should_restart(struct godwit_vm *gv, enum vm_exit_reason reason)
{
    pthread_mutex_lock(&gv->lock);
    bool host = gv->host_reboot;
    gv->host_reboot = false;
    pthread_mutex_unlock(&gv->lock);
    return reason == VM_EXIT_RESET && (host || !gv->cfg.no_reboot);
}

static void *main_loop_thread(void *arg)
{
    struct godwit_vm *gv = arg;
    enum vm_exit_reason reason = VM_EXIT_VMM_ERROR;

    /* First: the vCPU and migration threads this one creates run under this filter too. */
    bool sandboxed = sandbox_seccomp_install(SANDBOX_THREAD_MAIN_LOOP, gv->cfg.seccomp) == 0;
    while (sandboxed) {
        reason = run_once(gv);
        if (!should_restart(gv, reason))
            break;
        log_info("guest rebooted: restarting the VM");
    }
    if (gv->console_attached)
        console_restore(&gv->console);
    if (reason == VM_EXIT_PANIC || reason == VM_EXIT_RESET)
        log_info("%s", vm_exit_reason_name(reason));
    pthread_mutex_lock(&gv->lock);
    gv->exit_status = exit_status_for(reason);
    gv->state = GODWIT_STATE_STOPPED;
    pthread_cond_broadcast(&gv->ended_cond);
    pthread_mutex_unlock(&gv->lock);
    if (gv->hooks.ended)
        gv->hooks.ended(gv->hooks.opaque);
    emit(gv, reason == VM_EXIT_POWEROFF ? GODWIT_EVENT_POWERED_OFF
             : reason == VM_EXIT_VMM_ERROR ? GODWIT_EVENT_ERROR : GODWIT_EVENT_ENDED);
    return NULL;
}

int godwit_start(struct godwit_vm *gv)
{
    int ret;
    if (gv->state != GODWIT_STATE_CREATED)
        return -EALREADY;
    gv->command_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (gv->command_fd < 0)
        return -errno;
    if ((ret = loop_watch_readable(&gv->loop, &gv->command_watch, gv->command_fd, on_command,
                                   gv)) < 0)
        return ret;
    if (gv->console_in_fd >= 0) {
        if ((ret = console_init(&gv->console, gv->console_in_fd, console_to_guest, gv)) < 0 ||
            (ret = console_attach(&gv->console, &gv->loop)) < 0)
            return ret;
        gv->console_attached = true;
    }
    if (gv->hooks.before_start && (ret = gv->hooks.before_start(gv->hooks.opaque)) < 0)
        return ret;
    ret = pthread_create(&gv->thread, NULL, main_loop_thread, gv);
    if (ret != 0)
        return -ret;
    pthread_setname_np(gv->thread, "godwit-main");
    gv->thread_started = true;
    return 0;
}

static struct json_object *exits_json(const uint64_t *exits)
{
    struct json_object *obj = json_object_new_object();
    for (unsigned k = 0; k < VCPU_EXIT_KINDS; k++)
        json_object_object_add(obj, vcpu_exit_kind_names[k], json_object_new_int64((int64_t)exits[k]));
    return obj;
}

/* The main loop's polling (--io-poll): its window now, the cap, and how windows ended. */
static struct json_object *io_poll_json(const struct event_loop *loop)
{
    struct loop_poll_stats st;
    loop_poll_stats(loop, &st);
    struct json_object *obj = json_object_new_object();
    json_object_object_add(obj, "window_us", json_object_new_double((double)st.window_ns / 1000));
    json_object_object_add(obj, "max_us", json_object_new_int64((int64_t)(st.max_ns / 1000)));
    json_object_object_add(obj, "hits", json_object_new_int64((int64_t)st.hits));
    json_object_object_add(obj, "misses", json_object_new_int64((int64_t)st.misses));
    return obj;
}

struct json_object *godwit_counters_json(struct godwit_vm *gv)
{
    uint64_t total[VCPU_EXIT_KINDS] = { 0 };
    pthread_mutex_lock(&gv->lock);
    struct vm *vm = gv->vm;
    if (!vm) {
        pthread_mutex_unlock(&gv->lock);
        return NULL;
    }
    struct json_object *obj = json_object_new_object();
    struct json_object *per_vcpu = json_object_new_array();
    for (unsigned i = 0; i < vm->nr_vcpus; i++) {
        uint64_t exits[VCPU_EXIT_KINDS];
        for (unsigned k = 0; k < VCPU_EXIT_KINDS; k++) {
            exits[k] = __atomic_load_n(&vm->vcpus[i].exits[k], __ATOMIC_RELAXED);
            total[k] += exits[k];
        }
        json_object_array_add(per_vcpu, exits_json(exits));
    }
    json_object_object_add(obj, "exits", exits_json(total));
    json_object_object_add(obj, "vcpus", per_vcpu);
    json_object_object_add(obj, "devices", vm_devices_counters_json(vm));
    if (gv->cfg.io_poll_us)
        json_object_object_add(obj, "io_poll", io_poll_json(&gv->loop));
    pthread_mutex_unlock(&gv->lock);
    return obj;
}

struct json_object *godwit_vcpus_json(struct godwit_vm *gv)
{
    pthread_mutex_lock(&gv->lock);
    struct vm *vm = gv->vm;
    /* The vCPU ioctls wait for KVM_RUN to return: the vCPUs stop for the reading. */
    bool stopped_here = vm && !vm_is_paused(vm) && vm_pause_vcpus(vm) == 0;
    struct json_object *arr = NULL;
    if (vm && vm_is_paused(vm)) {
        arr = json_object_new_array();
        for (unsigned i = 0; i < vm->nr_vcpus; i++)
            json_object_array_add(arr, vcpu_inspect_json(&vm->vcpus[i]));
    }
    if (stopped_here)
        vm_resume(vm);
    pthread_mutex_unlock(&gv->lock);
    return arr;
}

/* Runs fn on the current VM under the lock; -ESRCH when none runs. */
static int with_vm(struct godwit_vm *gv, int (*fn)(struct godwit_vm *, struct vm *, void *),
                   void *arg)
{
    pthread_mutex_lock(&gv->lock);
    int ret = gv->vm ? fn(gv, gv->vm, arg) : -ESRCH;
    pthread_mutex_unlock(&gv->lock);
    return ret;
}

/* A with_vm() call handed to the main loop's thread by another thread. */
struct loop_task {
    struct godwit_vm *gv;
    int (*fn)(struct godwit_vm *, struct vm *, void *);
    void *arg;
    int ret;
    bool done;
    struct loop_call call;
    struct loop_task *next;
};

/* With gv->lock held: the task is answered and its caller woken. */
static void task_finish(struct godwit_vm *gv, struct loop_task *t, int ret)
{
    for (struct loop_task **p = &gv->tasks; *p; p = &(*p)->next) {
        if (*p == t) {
            *p = t->next;
            break;
        }
    }
    t->ret = ret;
    t->done = true;
    pthread_cond_broadcast(&gv->task_cond);
}

static void run_task(void *opaque)
{
    struct loop_task *t = opaque;
    struct godwit_vm *gv = t->gv;
    pthread_mutex_lock(&gv->lock);
    task_finish(gv, t, gv->vm ? t->fn(gv, gv->vm, t->arg) : -ESRCH);
    pthread_mutex_unlock(&gv->lock);
}

/* A VM ended with calls still posted: they get -ESRCH instead of waiting for ever. */
static void fail_pending_tasks(struct godwit_vm *gv)
{
    pthread_mutex_lock(&gv->lock);
    while (gv->tasks) {
        loop_cancel_post(&gv->loop, &gv->tasks->call);
        task_finish(gv, gv->tasks, -ESRCH);
    }
    pthread_mutex_unlock(&gv->lock);
}

/*
 * with_vm() on the main loop's thread, for what must run there: pausing drains the devices'
 * io_uring work, which only that thread may touch. From that thread (an API request) it is a
 * plain call; from any other (an embedder), the call is posted and waited for.
 */
static int with_vm_on_loop(struct godwit_vm *gv,
                           int (*fn)(struct godwit_vm *, struct vm *, void *), void *arg)
{
    if (gv->thread_started && pthread_equal(pthread_self(), gv->thread))
        return with_vm(gv, fn, arg);
    struct loop_task t = { .gv = gv, .fn = fn, .arg = arg };
    pthread_mutex_lock(&gv->lock);
    if (!gv->vm) {
        pthread_mutex_unlock(&gv->lock);
        return -ESRCH;
    }
    t.next = gv->tasks;
    gv->tasks = &t;
    loop_post(&gv->loop, &t.call, run_task, &t);
    while (!t.done)
        pthread_cond_wait(&gv->task_cond, &gv->lock);
    pthread_mutex_unlock(&gv->lock);
    return t.ret;
}

static int do_pause(struct godwit_vm *gv, struct vm *vm, void *arg)
{
    (void)arg;
    int ret = vm_pause(vm);
    if (ret == 0)
        gv->state = GODWIT_STATE_PAUSED;
    return ret;
}

static int do_resume(struct godwit_vm *gv, struct vm *vm, void *arg)
{
    (void)arg;
    int ret = vm_resume(vm);
    if (ret == 0)
        gv->state = GODWIT_STATE_RUNNING;
    return ret;
}

int godwit_pause(struct godwit_vm *gv)
{
    int ret = with_vm_on_loop(gv, do_pause, NULL);
    if (ret == 0)
        emit(gv, GODWIT_EVENT_PAUSED);
    return ret;
}

int godwit_resume(struct godwit_vm *gv)
{
    int ret = with_vm_on_loop(gv, do_resume, NULL);
    if (ret == 0) {
        /* The guest's clock stood still while paused (vm_resume): the agent's monitor steps it
         * to the host's once the agent answers, as after a restore, for every caller (the API,
         * an embedder), not only the godwit resume command. Under the lock: stop_agent_monitor
         * frees the monitor once it is unpublished. */
        pthread_mutex_lock(&gv->lock);
        if (gv->agent)
            agent_monitor_resumed(gv->agent, "resume", false);
        pthread_mutex_unlock(&gv->lock);
        emit(gv, GODWIT_EVENT_RESUMED);
    }
    return ret;
}

struct snapshot_request {
    const char *dir;
    bool stop;
    struct godwit_snapshot_info *info;
};

/* The configuration as the snapshot keeps it: without the name and API socket, which belong
 * to the process, so that clones restored from it do not collide. */
static char *snapshot_config_json(const struct vm_config *cfg)
{
    struct json_object *obj = config_to_json_object(cfg, NULL);
    char *text = obj ? strdup(json_object_to_json_string_ext(obj, JSON_C_TO_STRING_PLAIN)) : NULL;
    json_object_put(obj);
    return text;
}

static int do_snapshot(struct godwit_vm *gv, struct vm *vm, void *arg)
{
    struct snapshot_request *req = arg;
    struct snapshot_stats stats;
    bool was_paused = vm_is_paused(vm);
    char *config = snapshot_config_json(&gv->cfg);
    int ret = config ? 0 : -ENOMEM;

    uint64_t t0 = monotonic_ns();
    if (ret == 0 && !was_paused)
        ret = vm_pause(vm);
    if (ret == 0) {
        ret = snapshot_save(vm, req->dir, config, &stats);
        if (ret == 0 && req->stop)
            vm_request_exit(vm, VM_EXIT_STOPPED);
        else if (!was_paused)
            vm_resume(vm);
    }
    if (ret == 0 && req->info)
        *req->info = (struct godwit_snapshot_info){
            .memory_bytes = stats.memory_bytes, .memory_written = stats.memory_written,
            .state_bytes = stats.state_bytes, .paused_ms = was_paused ? 0 : ms_since_ns(t0),
        };
    free(config);
    return ret;
}

int godwit_snapshot(struct godwit_vm *gv, const char *dir, bool stop,
                    struct godwit_snapshot_info *info)
{
    struct snapshot_request req = { .dir = dir, .stop = stop, .info = info };
    if (!dir || !*dir)
        return -EINVAL;
    return with_vm_on_loop(gv, do_snapshot, &req);
}

/* How long a freeze (a sync of every filesystem) or thaw may take the agent. */
#define AGENT_FREEZE_ANSWER_S 60

/* Freezes (or thaws) the guest's filesystems through its agent; 0 or -errno, why in `why`. */
static int agent_freeze(struct godwit_vm *gv, struct agent_client **c, bool freeze, char *why,
                        size_t len)
{
    int ret = 0;
    uint32_t n;
    if (!*c)
        *c = agent_client_connect(gv->vsock_path, false, AGENT_VSOCK_PORT, &ret);
    if (*c) {
        /* A guest that hangs mid-freeze must not hold the caller for ever. */
        struct timeval tv = { .tv_sec = AGENT_FREEZE_ANSWER_S };
        setsockopt((*c)->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        ret = agent_client_freeze(*c, freeze, GODWIT_SNAPSHOT_FREEZE_S, &n);
    }
    if (ret < 0)
        snprintf(why, len, "cannot %s the guest's filesystems: %.200s", freeze ? "freeze" : "thaw",
                 *c && (*c)->error[0] ? (*c)->error
                 : *c ? strerror(-ret) : "the guest agent does not answer");
    else
        log_info("snapshot: %s %u filesystem(s) through the guest agent",
                 freeze ? "froze" : "thawed", n);
    return ret;
}

int godwit_snapshot_frozen(struct godwit_vm *gv, const char *dir, bool stop,
                           struct godwit_snapshot_info *info)
{
    struct godwit_snapshot_info local;
    struct agent_client *c = NULL;
    char why[sizeof(local.error)];
    info = info ? info : &local;
    info->error[0] = '\0';
    if (gv->thread_started && pthread_equal(pthread_self(), gv->thread))
        return -EDEADLK;
    if (!gv->vsock_path) {
        snprintf(info->error, sizeof(info->error),
                 "the VM has no vsock device: no guest agent to freeze its filesystems");
        return -ENODEV;
    }
    if (godwit_get_state(gv) != GODWIT_STATE_RUNNING) {
        snprintf(info->error, sizeof(info->error),
                 "the VM is %s: its guest agent cannot freeze its filesystems",
                 godwit_state_name(godwit_get_state(gv)));
        return -EBUSY;
    }
    int ret = agent_freeze(gv, &c, true, info->error, sizeof(info->error));
    if (ret == 0) {
        ret = godwit_snapshot(gv, dir, stop, info);
        /* Also after a failure: the guest is never left frozen. The snapshot holds it frozen
         * (the thaw comes after the copy): a restore thaws (start_agent_monitor), and so does
         * the restore of one that stopped this VM, which cannot be thawed here. */
        if ((!stop || ret < 0) && agent_freeze(gv, &c, false, why, sizeof(why)) < 0)
            log_warn("snapshot: %s; the agent thaws them itself after %d s", why,
                     GODWIT_SNAPSHOT_FREEZE_S);
    }
    if (ret < 0 && info->error[0])
        log_error("snapshot: %s", info->error);
    agent_client_close(c);
    return ret;
}

/* ---- live migration ---- */

struct final_call {
    int (*fn)(struct migration *m, struct vm *vm);
    struct migration *m;
    bool left_paused;
};

static int run_final_call(struct godwit_vm *gv, struct vm *vm, void *arg)
{
    struct final_call *c = arg;
    int ret = c->fn(c->m, vm);
    /* Failed after GO: the guest stays paused here (the destination may run it), and says so. */
    if (ret < 0 && vm_is_paused(vm) && gv->state == GODWIT_STATE_RUNNING) {
        gv->state = GODWIT_STATE_PAUSED;
        c->left_paused = true;
    }
    return ret;
}

/* The migration's final step pauses the VM: on the main loop's thread, like every pause. */
static int migration_on_loop_hook(void *ctx, int (*fn)(struct migration *m, struct vm *vm),
                                  struct migration *m)
{
    struct final_call c = { fn, m, false };
    int ret = with_vm_on_loop(ctx, run_final_call, &c);
    if (c.left_paused)
        emit(ctx, GODWIT_EVENT_PAUSED); /* outside the lock: a hook may call back in */
    return ret;
}

static int do_migrate(struct godwit_vm *gv, struct vm *vm, void *arg)
{
    const struct migration_params *params = arg;
    struct migration_progress p;
    if (gv->migration) {
        migration_get_progress(gv->migration, &p);
        if (p.state == MIGRATION_ACTIVE)
            return -EBUSY;
        migration_free(gv->migration); /* its thread has ended */
        gv->migration = NULL;
    }
    char *config = snapshot_config_json(&gv->cfg);
    int ret = config ? 0 : -ENOMEM;
    if (config)
        gv->migration = migration_start(vm, params, config, migration_on_loop_hook, gv, &ret);
    free(config);
    return ret;
}

int godwit_migrate(struct godwit_vm *gv, const struct godwit_migrate_options *opts)
{
    struct migration_params params = { .downtime_ms = opts->downtime_ms,
                                       .timeout_s = opts->timeout_s,
                                       .switchover_on_timeout = opts->switchover_on_timeout,
                                       .bandwidth_mibps = opts->bandwidth_mibps,
                                       .local = opts->local,
                                       .connections = opts->connections };
    if (!opts->uri || snprintf(params.uri, sizeof(params.uri), "%s", opts->uri) >=
                          (int)sizeof(params.uri))
        return -EINVAL;
    return with_vm_on_loop(gv, do_migrate, &params); /* it may free a finished one's bitmap */
}

int godwit_migration_status(struct godwit_vm *gv, struct godwit_migration_status *st)
{
    struct migration_progress p;
    pthread_mutex_lock(&gv->lock);
    bool any = gv->migration != NULL;
    if (any)
        migration_get_progress(gv->migration, &p);
    pthread_mutex_unlock(&gv->lock);
    if (!any)
        return -ENOENT;
    *st = (struct godwit_migration_status){
        .state = migration_state_name(p.state), .pass = p.pass, .bytes_sent = p.bytes_sent,
        .bytes_left = p.bytes_left, .bandwidth_bps = p.bandwidth_bps,
        .dirty_bytes_per_s = p.dirty_bytes_per_s, .expected_downtime_ms = p.expected_downtime_ms,
        .fixed_cost_ms = p.fixed_cost_ms,
        .downtime_ms = p.downtime_ms, .total_ms = p.total_ms, .forced = p.forced,
        .throttle_pct = p.throttle_pct,
    };
    snprintf(st->error, sizeof(st->error), "%s", p.error);
    return 0;
}

int godwit_migrate_cancel(struct godwit_vm *gv)
{
    struct migration_progress p;
    int ret = -ENOENT;
    pthread_mutex_lock(&gv->lock);
    if (gv->migration) {
        migration_get_progress(gv->migration, &p);
        if (p.state == MIGRATION_ACTIVE) {
            migration_cancel(gv->migration);
            ret = 0;
        }
    }
    pthread_mutex_unlock(&gv->lock);
    return ret;
}

/* How long the destination waits for each extra connection, and for its JOIN. */
#define JOIN_TIMEOUT_MS 10000u

/* The source's extra connections (CONNECTIONS said how many), each placed by its JOIN's index.
 * 0, or -errno after one line with none kept. */
static int accept_streams(int listener, const char *uri, const struct mig_connections *c,
                          struct godwit_handover *devices)
{
    unsigned joined = 0;
    int ret = 0;
    for (unsigned i = 1; i < c->count && ret == 0; i++) {
        int fd = mig_accept_on(listener, uri, JOIN_TIMEOUT_MS);
        int index = fd < 0 ? fd : mig_recv_join(fd, c, joined, JOIN_TIMEOUT_MS);
        if (index > 0) {
            devices->streams[index - 1] = fd;
            joined |= 1u << index;
        } else if (fd >= 0) {
            close(fd);
        }
        ret = index < 0 ? index : 0;
    }
    for (unsigned i = 1; ret < 0 && i < c->count; i++)
        if (joined & (1u << i))
            close(devices->streams[i - 1]);
    if (ret == 0)
        devices->nr_streams = c->count - 1;
    return ret;
}

int godwit_incoming_accept(const char *uri, char **config_json, int *memfd,
                           struct godwit_handover *devices)
{
    struct mig_devices devs = { 0 };
    struct mig_connections conns;
    *memfd = -1;
    *config_json = NULL;
    *devices = (struct godwit_handover){ 0 };
    int listener = mig_listen(uri);
    if (listener < 0)
        return listener;
    int fd = mig_accept_on(listener, uri, 0);
    int ret = fd < 0 ? fd : mig_recv_opening(fd, config_json, memfd, &conns);
    /* A source that hands its memory over hands its disks and taps over too (channel.h). */
    if (ret == 0 && *memfd >= 0 && (ret = mig_recv_devices(fd, &devs)) < 0) {
        close(*memfd);
        *memfd = -1;
    }
    if (ret == 0 && conns.count > 1)
        ret = accept_streams(listener, uri, &conns, devices);
    mig_unlisten(listener, uri);
    if (ret < 0 && fd >= 0) {
        if (*config_json) {
            free(*config_json);
            *config_json = NULL;
        }
        close(fd);
    }
    if (ret < 0)
        return ret;
    _Static_assert(GODWIT_MAX_HANDOVER_FDS == MIG_MAX_DEVICE_FDS, "one limit");
    _Static_assert(GODWIT_MAX_MIGRATION_CONNECTIONS == MIG_MAX_CONNECTIONS, "one limit");
    devices->nr_disks = devs.nr_disks;
    devices->nr_taps = devs.nr_taps;
    devices->nr_consoles = devs.nr_consoles;
    devices->nr_vsocks = devs.nr_vsocks;
    devices->sockets = devs.sockets;
    memcpy(devices->fds, devs.fds, mig_devices_count(&devs) * sizeof(int));
    return fd;
}

static int do_shutdown(struct godwit_vm *gv, struct vm *vm, void *arg)
{
    const uint64_t one = 1;
    /* A paused guest cannot see the button: let it run to answer. */
    if (vm_is_paused(vm) && vm_resume(vm) == 0)
        gv->state = GODWIT_STATE_RUNNING;
    vm_press_power_button(vm);
    gv->shutdown_timeout_ms = *(unsigned *)arg ? *(unsigned *)arg : 1;
    return write(gv->command_fd, &one, sizeof(one)) < 0 ? -errno : 0;
}

struct console_size {
    unsigned cols, rows;
};

static int do_console_resize(struct godwit_vm *gv, struct vm *vm, void *arg)
{
    const struct console_size *size = arg;
    (void)gv;
    return vm_virtio_console_resize(vm, (uint16_t)size->cols, (uint16_t)size->rows);
}

int godwit_console_resize(struct godwit_vm *gv, unsigned cols, unsigned rows)
{
    struct console_size size = { cols, rows };
    if (!cols || !rows || cols > UINT16_MAX || rows > UINT16_MAX)
        return -EINVAL;
    return with_vm(gv, do_console_resize, &size);
}

int godwit_shutdown(struct godwit_vm *gv, unsigned timeout_ms)
{
    return with_vm_on_loop(gv, do_shutdown, &timeout_ms);
}

static int do_request_exit(struct godwit_vm *gv, struct vm *vm, void *arg)
{
    enum vm_exit_reason reason = *(enum vm_exit_reason *)arg;
    if (reason == VM_EXIT_RESET)
        gv->host_reboot = true;
    vm_request_exit(vm, reason);
    return 0;
}

int godwit_reboot(struct godwit_vm *gv)
{
    enum vm_exit_reason reason = VM_EXIT_RESET;
    return with_vm(gv, do_request_exit, &reason);
}

int godwit_stop(struct godwit_vm *gv)
{
    enum vm_exit_reason reason = VM_EXIT_STOPPED;
    return with_vm(gv, do_request_exit, &reason);
}

enum godwit_state godwit_get_state(struct godwit_vm *gv)
{
    pthread_mutex_lock(&gv->lock);
    enum godwit_state state = gv->state;
    pthread_mutex_unlock(&gv->lock);
    return state;
}

int godwit_wait(struct godwit_vm *gv)
{
    if (!gv->thread_started)
        return gv->state == GODWIT_STATE_STOPPED ? gv->exit_status : GODWIT_EXIT_VMM_ERROR;
    pthread_join(gv->thread, NULL);
    gv->thread_started = false;
    return gv->exit_status;
}

void godwit_destroy(struct godwit_vm *gv)
{
    if (!gv)
        return;
    if (gv->thread_started) {
        godwit_stop(gv);
        godwit_wait(gv);
    }
    if (gv->console_attached)
        console_restore(&gv->console);
    if (gv->loop_ready)
        loop_destroy(&gv->loop);
    if (gv->command_fd >= 0)
        close(gv->command_fd);
    if (gv->remote_fd >= 0)
        close(gv->remote_fd);
    pthread_mutex_destroy(&gv->remote_lock);
    pthread_mutex_destroy(&gv->lock);
    pthread_cond_destroy(&gv->ended_cond);
    pthread_cond_destroy(&gv->task_cond);
    if (gv->restore) {
        snapshot_close(gv->restore);
        free(gv->restore);
    }
    if (gv->incoming_fd >= 0)
        close(gv->incoming_fd);
    if (gv->incoming_memfd >= 0)
        close(gv->incoming_memfd);
    godwit_handover_close(&gv->handover);
    kernel_unpack_release(&gv->unpack);
    if (gv->ram_dir_ready && gv->cfg.ram_dir >= 0)
        close(gv->cfg.ram_dir);
    free(gv->kernel);
    free(gv->initrd);
    free(gv->cmdline);
    free_devices(gv);
    free(gv);
}
