/* godwit.h: the public interface of godwit, a KVM virtual machine monitor (libgodwit). */
#ifndef GODWIT_GODWIT_H
#define GODWIT_GODWIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/*
 * Exit status of `godwit run`, one per way a VM can end; godwit_wait() returns the same
 * values. Scripts and supervisors rely on them; they do not change between releases.
 */
enum godwit_exit_status {
    GODWIT_EXIT_POWEROFF = 0,  /* the guest powered off, or moved away (live migration) */
    GODWIT_EXIT_VMM_ERROR = 1, /* godwit failed (cannot open /dev/kvm, bad image, ...) */
    GODWIT_EXIT_USAGE = 2,     /* bad command line or configuration */
    GODWIT_EXIT_REBOOT = 3,    /* the guest asked to reboot and no_reboot was set */
    GODWIT_EXIT_CRASH = 4,     /* triple fault or KVM internal error; registers were logged */
    GODWIT_EXIT_PANIC = 5,     /* the guest kernel panicked (reported through pvpanic) */
    GODWIT_EXIT_STOPPED = 6,   /* stopped from the host: escape key, signal, API or library */
};

enum godwit_state {
    GODWIT_STATE_CREATED,  /* configured, not started */
    GODWIT_STATE_RUNNING,
    GODWIT_STATE_PAUSED,
    GODWIT_STATE_STOPPED,  /* ended; godwit_wait() returns at once */
};

enum godwit_event {
    GODWIT_EVENT_STARTED,     /* the vCPUs run (again, after a guest reboot) */
    GODWIT_EVENT_PAUSED,
    GODWIT_EVENT_RESUMED,
    GODWIT_EVENT_POWERED_OFF, /* the guest powered off */
    GODWIT_EVENT_ENDED,       /* the VM ended for any other reason; see godwit_wait() */
    GODWIT_EVENT_ERROR,       /* the VMM failed */
    GODWIT_EVENT_AGENT_FOUND, /* the guest agent answers (again) */
    GODWIT_EVENT_AGENT_LOST,  /* the guest agent stopped answering (its heartbeat) */
};

/* A virtio-blk disk: a raw image file or a host block device. */
struct godwit_disk {
    const char *path;    /* required */
    bool readonly;       /* the guest sees a read-only disk; writes fail with an I/O error */
    const char *serial;  /* the disk's ID in the guest (up to 20 bytes); NULL: none */
    bool cache_none;     /* O_DIRECT: bypass the host's page cache */
    unsigned queues;     /* request queues; 0: one per vCPU, at most 16 */
};

/* A virtio-net interface on a host tap device (created when it does not exist). */
struct godwit_net {
    const char *tap;     /* required: the tap's name */
    const char *mac;     /* "52:54:00:12:34:56"; NULL: a random local address */
    unsigned queues;     /* queue pairs; 0: one per vCPU (at most 16), one on a single-queue tap */
};

/* Where the guest's hvc0 (virtio-console) goes; the serial console stays as it is. */
enum godwit_virtio_console {
    GODWIT_VIRTIO_CONSOLE_NONE = 0,
    GODWIT_VIRTIO_CONSOLE_TERMINAL, /* hvc0 takes the console input; output to console_out_fd */
    GODWIT_VIRTIO_CONSOLE_SOCKET,   /* a UNIX socket at virtio_console_path, one client */
    GODWIT_VIRTIO_CONSOLE_FILE,     /* output appended to virtio_console_path, no input */
};

/*
 * System call filters on godwit's own threads (the main loop, the vCPUs, a migration's
 * copier; docs/sandbox.md): each may make only the calls it needs. The default, ON, ends the
 * process with one line naming a call outside them; LOG lets it through and has the kernel
 * log it (for finding what a filter lacks); OFF loads none. The embedder's threads are never
 * filtered, but the callbacks godwit calls (events, hooks) run on godwit's threads.
 */
enum godwit_seccomp {
    GODWIT_SECCOMP_ON = 0,
    GODWIT_SECCOMP_LOG,
    GODWIT_SECCOMP_OFF,
};

/* What a VM is made of. Strings and arrays are copied by godwit_create(). */
struct godwit_config {
    const char *kernel;   /* bzImage or vmlinux ELF; required */
    const char *initrd;   /* NULL: none */
    const char *cmdline;  /* NULL: "console=ttyS0 reboot=acpi panic=1" */
    uint64_t memory_mib;  /* 0: 512 */
    unsigned cpus;        /* 0: 1 */
    bool hugepages;
    bool no_reboot;       /* a guest reboot ends the VM instead of restarting it */
    int console_in_fd;    /* serial console input; -1: none */
    int console_out_fd;   /* serial console output; -1: discarded */
    const struct godwit_disk *disks; /* nr_disks of them, in guest order (vda, vdb, ...) */
    unsigned nr_disks;
    const struct godwit_net *nets;
    unsigned nr_nets;
    enum godwit_virtio_console virtio_console;
    const char *virtio_console_path; /* for SOCKET and FILE */
    bool no_rng;          /* no virtio-rng device (by default the guest gets one) */
    /* A virtio-vsock device (docs/vsock.md) when vsock_cid is not 0: the guest's CID, 3 or
     * more, and the UNIX socket host programs connect to (required with it; guest
     * connections to host port P go to vsock_socket_P). */
    uint64_t vsock_cid;
    const char *vsock_socket;
    /* A bzImage whose payload is XZ or gzip is decompressed by godwit, cached by the image's
     * SHA-256 ($GODWIT_CACHE/kernels, /var/cache/godwit/kernels for root, else
     * ~/.cache/godwit/kernels; docs/config.md) and
     * booted as its vmlinux; these turn that off, or the cache alone. */
    bool no_kernel_decompress;
    bool no_kernel_cache;
    /* Build the VM from the snapshot in this directory (godwit_snapshot()) instead of booting
     * the kernel: the rest of the configuration must describe the same machine (memory, CPUs,
     * devices), with the disks, taps and console paths free to differ (a clone needs its own
     * tap and MAC). NULL: boot. */
    const char *restore_dir;
    /* Build the VM from a live migration instead (godwit_incoming_accept()): `incoming_fd` is
     * the stream after its HELLO, whose configuration this one must describe. godwit closes
     * the fd. `incoming_memfd` (> 0): the memory file that godwit_incoming_accept() received
     * from a source that hands its RAM over (a same-host live upgrade), which becomes this
     * VM's RAM; godwit closes it too. 0 or -1: RAM comes as pages. */
    bool incoming;
    int incoming_fd;
    int incoming_memfd;
    /* With incoming_memfd: the disks, taps and listening sockets that godwit_incoming_accept()
     * received with it, used instead of opening the disks' paths and the taps and binding the
     * sockets' paths (nothing is reopened, the disks' locks stay held, the sockets' paths
     * keep answering), or NULL. A count of 0 opens that kind as configured (an override);
     * else it must match the configuration: nr_disks its disks, nr_taps its interfaces' queue
     * pairs, nr_consoles 1 for a virtio console in socket mode, nr_vsocks 1 for a vsock
     * device, each socket bound to the configured path. godwit closes the descriptors,
     * whatever becomes of the VM. */
    const struct godwit_handover *incoming_devices;
    /* > 0: a directory in which guest RAM's file is made (O_TMPFILE), from
     * godwit_ram_dir_open() before the process gave up the right to mount (a jail); godwit
     * keeps a duplicate, the caller closes its own. 0: godwit makes that directory itself
     * when it may. Ignored with `hugepages`. */
    int ram_dir_fd;
    enum godwit_seccomp seccomp; /* 0 (GODWIT_SECCOMP_ON): filters on */
    /* Microseconds the main loop polls the disks' and the interfaces' transmit queues (and
     * its I/O completions) before it waits, sparing the guest its kicks while I/O keeps
     * coming, at the cost of a CPU while it polls; 0 (the default): never. At most
     * GODWIT_MAX_IO_POLL_US. */
    unsigned io_poll_us;
    /* Guest RAM in a memfd, not in godwit's tmpfs of transparent huge pages (`--thp off`):
     * 4 KiB pages unless the host's shmem_enabled gives memfds huge pages (docs/memory-map.md). */
    bool no_thp;
};
#define GODWIT_MAX_IO_POLL_US 1000

/* What a source hands over with its memory in a same-host live upgrade
 * (godwit_incoming_accept()): each disk's open image in the configuration's order, then each
 * network interface's tap queues (one per queue pair), interface after interface, then the
 * virtio console's listening socket (socket mode) and the vsock device's (0 or 1 each).
 * `sockets`: the source said which sockets it hands over (an older godwit's does not, and
 * hands none over: they are bound by path as configured). And, from a source that migrates
 * over several connections (--connections), the extra ones. */
#define GODWIT_MAX_HANDOVER_FDS 146 /* 16 disks, 8 interfaces of 16 queue pairs, 2 sockets */
#define GODWIT_MAX_MIGRATION_CONNECTIONS 8
struct godwit_handover {
    unsigned nr_disks, nr_taps, nr_consoles, nr_vsocks;
    bool sockets;
    int fds[GODWIT_MAX_HANDOVER_FDS]; /* the disks', the taps', the console's, the vsock's */
    unsigned nr_streams; /* extra connections, in the source's order; 0: the stream alone */
    int streams[GODWIT_MAX_MIGRATION_CONNECTIONS - 1];
};

/* Live migration, the source's side (godwit_migrate()). */
struct godwit_migrate_options {
    const char *uri;      /* "tcp:HOST:PORT" or "unix:PATH": a `godwit run --incoming` there */
    unsigned downtime_ms; /* budget for the guest's pause at the switch-over; 0: 10 ms */
    unsigned timeout_s;   /* cancel (the guest runs on here) after this long; 0: 600 s */
    bool switchover_on_timeout; /* at the timeout, switch over anyway (over the budget) */
    unsigned bandwidth_mibps;   /* the most the passes before the pause send, MiB/s; 0: no limit */
    /* Same-host live upgrade (unix: only): hand the guest's memory file to the destination
     * instead of copying RAM; the guest pauses only for its device state. */
    bool local;
    /* TCP connections to open, 1 to GODWIT_MAX_MIGRATION_CONNECTIONS (tcp: only; 0: 1); the
     * pages of each pass are spread over all of them. */
    unsigned connections;
};

struct godwit_migration_status {
    const char *state;    /* "none", "active", "completed", "failed", "cancelled" */
    unsigned pass;        /* 1: the first copy of RAM; then one a round of dirtied pages */
    uint64_t bytes_sent, bytes_left;
    uint64_t bandwidth_bps, dirty_bytes_per_s;
    double expected_downtime_ms; /* while active: what the switch-over would cost now */
    double fixed_cost_ms; /* the part of that beyond the pages left (docs/migration.md) */
    double downtime_ms;          /* once completed: how long the guest was paused */
    double total_ms;
    bool forced;                 /* switched over at the timeout, over the downtime budget */
    unsigned throttle_pct;       /* auto-converge: how much the vCPUs are held back (0-99) */
    char error[200];             /* why it failed or was cancelled */
};

/* What godwit_snapshot() wrote. */
struct godwit_snapshot_info {
    uint64_t memory_bytes;   /* guest RAM */
    uint64_t memory_written; /* of it, written to the memory file: the pages that are not zero */
    uint64_t state_bytes;    /* the state file */
    double paused_ms;        /* how long the guest was stopped for it */
    char error[300];         /* godwit_snapshot_frozen(): why the freeze failed, in words */
};

struct godwit_vm;

typedef void (*godwit_event_fn)(struct godwit_vm *vm, enum godwit_event event, void *opaque);

/* Validates the configuration, reads the kernel and makes the VM's io_uring ring; NULL (with
 * one logged line) on error. Guest RAM is registered with that ring as I/O buffers: made by a
 * process holding CAP_IPC_LOCK, the ring pins it outside RLIMIT_MEMLOCK, so a caller that
 * drops capabilities does so after this call (as `godwit run` does). */
struct godwit_vm *godwit_create(const struct godwit_config *config);
/* A directory for guest RAM's file in transparent huge pages (a tmpfs of its own, mounted
 * nowhere: docs/memory-map.md), for godwit_config.ram_dir_fd; made while the process may mount
 * (root). The fd, or -errno (not root, THP off on this host): RAM is then a memfd. */
int godwit_ram_dir_open(void);
/* Called from godwit's own thread; must be quick and must not call godwit_destroy(). */
void godwit_set_event_callback(struct godwit_vm *vm, godwit_event_fn fn, void *opaque);
/* Boots the VM on godwit's own threads. Returns 0 or -errno. */
int godwit_start(struct godwit_vm *vm);
int godwit_pause(struct godwit_vm *vm);
/* With a vsock device, the guest's clock (which stood still while paused) is then stepped to
 * the host's through the guest agent once it answers, within 60 s; one log line either way. */
int godwit_resume(struct godwit_vm *vm);
/*
 * Writes the running or paused VM to `dir` (created when missing): DIR/memory (guest RAM,
 * sparse) and DIR/state (everything else). The guest is paused for it, then resumed, or
 * stopped when `stop` is set (then godwit_wait() returns GODWIT_EXIT_STOPPED); a VM paused
 * before stays paused. Disks are not copied: copy or reflink them while the VM is paused or
 * stopped. `info` may be NULL. Returns 0 or -errno.
 */
int godwit_snapshot(struct godwit_vm *vm, const char *dir, bool stop,
                    struct godwit_snapshot_info *info);
/*
 * godwit_snapshot() of an application-consistent guest: its filesystems frozen through the
 * guest agent first (as godwit_freeze does; the agent thaws by itself after
 * GODWIT_SNAPSHOT_FREEZE_S should this process die) and thawed after, also when the snapshot
 * fails. It waits for the agent, which the main loop serves: never call it from there
 * (-EDEADLK). -ENODEV: no vsock device; a failed freeze says why in info->error.
 */
#define GODWIT_SNAPSHOT_FREEZE_S 60
int godwit_snapshot_frozen(struct godwit_vm *vm, const char *dir, bool stop,
                           struct godwit_snapshot_info *info);
/*
 * Starts moving the running guest to another godwit (`godwit run --incoming URI`) and returns:
 * memory is copied while the guest runs, then the guest pauses for the rest and its state and
 * resumes there. Once the destination has it, this VM ends (godwit_wait() returns 0). If
 * anything fails or it is cancelled, the guest runs on here. -EBUSY while one is active.
 */
int godwit_migrate(struct godwit_vm *vm, const struct godwit_migrate_options *opts);
/* The current or last migration's progress. -ENOENT when there was none. */
int godwit_migration_status(struct godwit_vm *vm, struct godwit_migration_status *status);
/* Stops an active migration; the guest runs on here. -ENOENT when none is active. */
int godwit_migrate_cancel(struct godwit_vm *vm);
/* The destination's first step: listens on `uri`, accepts the source and reads its HELLO.
 * Returns the stream's fd (for godwit_config.incoming_fd) with the VM's configuration as JSON
 * in *config_json (malloc'ed; docs/config.md), or -errno after one logged line. *memfd: the
 * guest's memory file when the source hands it over (godwit_config.incoming_memfd; only over
 * unix:), else -1; *devices then its disks and taps (godwit_config.incoming_devices; the
 * caller's to close until then), else none; devices->streams: the source's extra connections
 * when it uses several (accepted here too), likewise. */
int godwit_incoming_accept(const char *uri, char **config_json, int *memfd,
                           struct godwit_handover *devices);
/* How many descriptors `h` holds in fds (its streams aside). */
unsigned godwit_handover_count(const struct godwit_handover *h);
/* Closes a handover's descriptors and streams that no godwit_create() took, and empties it. */
void godwit_handover_close(struct godwit_handover *h);
/* Asks the guest to power off (ACPI power button); stops it after timeout_ms. A guest still
 * running 5 s after the button (half of timeout_ms when shorter) whose agent answers (a vsock
 * device; its heartbeat) has the agent asked to power off, with one log line. */
int godwit_shutdown(struct godwit_vm *vm, unsigned timeout_ms);
/* Resets the guest at once (as its reset line would). */
int godwit_reboot(struct godwit_vm *vm);
/* Stops the VM at once. */
int godwit_stop(struct godwit_vm *vm);
/* The terminal that carries the virtio console (GODWIT_VIRTIO_CONSOLE_TERMINAL) is now
 * cols x rows: the guest's hvc0 follows. Returns 0, -ESRCH when no VM runs, -ENODEV when the
 * VM has no virtio console on a terminal, -EINVAL for a zero or oversized dimension. */
int godwit_console_resize(struct godwit_vm *vm, unsigned cols, unsigned rows);
enum godwit_state godwit_get_state(struct godwit_vm *vm);
/* Blocks until the VM has ended; returns its enum godwit_exit_status. */
int godwit_wait(struct godwit_vm *vm);
/* Ends the VM if it still runs and frees everything. */
void godwit_destroy(struct godwit_vm *vm);

const char *godwit_state_name(enum godwit_state state);

/*
 * The guest agent (guests/agent/README.md), reached through a VM's vsock socket (its
 * vsock_socket above): exec, file copies, key/value pools, the clock. Functions return 0 or
 * -errno; godwit_agent_error() says why in words. A connection serves any number of requests,
 * then at most one exec, which ends it.
 */
struct godwit_agent;
/* vsock_socket: the VM's vsock UNIX socket ("CONNECT 1024" on it). NULL with *err set. */
struct godwit_agent *godwit_agent_connect(const char *vsock_socket, int *err);
void godwit_agent_close(struct godwit_agent *agent);
const char *godwit_agent_error(const struct godwit_agent *agent);
/* Runs argv (as `user`, NULL: root) to its end: stdin_fd (-1: none) to its stdin, its stdout
 * and stderr to the fds given. *status: its exit code, or 128 + the signal that ended it. */
int godwit_agent_exec(struct godwit_agent *agent, const char *const *argv, const char *user,
                      int stdin_fd, int stdout_fd, int stderr_fd, int *status);
/* Copies with the mode kept, checked by SHA-256, into place by an atomic rename. */
int godwit_agent_copy_in(struct godwit_agent *agent, const char *local, const char *guest_path);
int godwit_agent_copy_out(struct godwit_agent *agent, const char *guest_path, const char *local);
/* The same through file descriptors (a pipe, a socket: read and written in order, never
 * sought). copy_to: `size` bytes read from fd become guest_path with `mode` (07777 bits);
 * fewer is an error and the guest's file stays as it was. copy_from: the guest file's bytes
 * written to fd, *mode its mode; they are checked only at the end: on an error (-EBADMSG: the
 * copy differs) throw away what was written. */
int godwit_agent_copy_to(struct godwit_agent *agent, int fd, uint64_t size,
                         const char *guest_path, unsigned mode);
int godwit_agent_copy_from(struct godwit_agent *agent, const char *guest_path, int fd,
                           unsigned *mode);
/* The host-to-guest pool: set, delete; get from it (guest_pool false) or from the pool the
 * guest writes (true), the value NUL-terminated into buf. */
int godwit_agent_kvp_set(struct godwit_agent *agent, const char *key, const char *value);
int godwit_agent_kvp_delete(struct godwit_agent *agent, const char *key);
int godwit_agent_kvp_get(struct godwit_agent *agent, bool guest_pool, const char *key, char *buf,
                         size_t len);
/* Steps the guest's clock to the host's (after a resume: it stood still). */
int godwit_agent_sync_time(struct godwit_agent *agent);
/* Every later wait for the agent lasts at most timeout_ms (0: no limit, the default);
 * a request it ends returns -EAGAIN or -ETIMEDOUT. */
int godwit_agent_set_timeout(struct godwit_agent *agent, unsigned timeout_ms);
/* From another thread: the request under way (and every later one) ends with an error. */
void godwit_agent_interrupt(struct godwit_agent *agent);
/* A command run to its end with its output kept (godwit_agent_run). */
struct godwit_agent_result {
    int status;          /* its exit code, or 128 + the signal that ended it */
    char *out, *err;     /* stdout and stderr, NUL-terminated (they may hold NULs too) */
    size_t out_len, err_len;
};
/* Runs argv (as `user`, NULL: root) with in_len bytes of `in` as its stdin (NULL: none),
 * keeping at most max_output bytes of its stdout and of its stderr (-EFBIG beyond), for at
 * most timeout_ms (-ETIMEDOUT; 0: no limit). After -EFBIG or -ETIMEDOUT close the agent: the
 * guest's agent kills a command whose connection ends. On 0 free *result with
 * godwit_agent_result_free(). */
int godwit_agent_run(struct godwit_agent *agent, const char *const *argv, const char *user,
                     const void *in, size_t in_len, size_t max_output, unsigned timeout_ms,
                     struct godwit_agent_result *result);
void godwit_agent_result_free(struct godwit_agent_result *result);
/* Each key of a pool (guest_pool: the one the guest writes) with its value, to fn. */
int godwit_agent_kvp_list(struct godwit_agent *agent, bool guest_pool,
                          void (*fn)(const char *key, const char *value, void *opaque),
                          void *opaque);
/* Freezes the guest's filesystems (FIFREEZE) until a thaw, or timeout_s (1-3600) after which
 * the agent thaws them itself; *count: how many it froze (thawed). */
int godwit_agent_freeze(struct godwit_agent *agent, unsigned timeout_s, unsigned *count);
int godwit_agent_thaw(struct godwit_agent *agent, unsigned *count);
/* Asks the agent to power the guest off (or reboot it). */
int godwit_agent_shutdown(struct godwit_agent *agent, bool reboot);

#ifdef __cplusplus
}
#endif

#endif
