/*
 * jail.h: `godwit run --jail DIR --uid U --gid G`: the VM's process in a jail of its own, in
 * one step (as Firecracker's jailer does in a separate program): new mount, PID and IPC
 * namespaces, DIR as its root holding only what the VM needs, the unprivileged user U:G, no
 * capabilities, no new privileges, and resource limits.
 */
#ifndef GODWIT_CLI_JAIL_H
#define GODWIT_CLI_JAIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "cli/jail_cgroup.h"

/* Beyond the guest's RAM, what the jailed user may lock: the ring's own memory. */
#define JAIL_MEMLOCK_SLACK_MIB 16

struct jail {
    const char *dir; /* the jail's root, made if missing; NULL: no jail */
    uid_t uid;
    gid_t gid;
    bool ids_given;
    const char *name;          /* the VM's name, for its cgroup; NULL: "vm-PID" */
    uint64_t memlock_bytes;    /* RLIMIT_MEMLOCK at least this: guest RAM registered for I/O */
    struct jail_cgroup cgroup; /* --cgroup FILE=VALUE ...; none: no cgroup of its own */
};

/* What goes into the jail: files and directories bind-mounted where the VM will look for
 * them, read-only or not, and the device nodes it needs. */
#define JAIL_MAX_MOUNTS 64
struct jail_mount {
    const char *path; /* as the configuration names it: absolute, or relative to the cwd */
    bool parent_dir;  /* mount the directory it is in (a socket or file godwit creates) */
    bool readonly;
};

struct jail_plan {
    struct jail_mount mounts[JAIL_MAX_MOUNTS];
    size_t nr_mounts;
    bool tun; /* /dev/net/tun: the VM has taps */
};

/* Adds a mount to the plan; -E2BIG when full. NULL paths are skipped. */
int jail_plan_add(struct jail_plan *plan, const char *path, bool parent_dir, bool readonly);

/* Everything the VM `cfg` opens by path: kernel and initrd (read-only), disks, the directory of
 * its virtio console's socket or file and of its API socket, a snapshot to restore; and
 * /dev/net/tun when it has taps. -E2BIG after one line. */
struct vm_config;
int jail_plan_vm(struct jail_plan *plan, const struct vm_config *cfg, const char *api_socket,
                 const char *restore_dir);

/*
 * Where `path`, as the jailed process will name it (its cwd is kept), lies from outside: the
 * jail root `dir`, then `path` if absolute, or `cwd` and `path`. 0, or -ENAMETOOLONG, or
 * -EINVAL for a path that climbs out with "..".
 */
int jail_outside_path(const char *dir, const char *cwd, const char *path, char *out, size_t len);

/*
 * `--netns NAME|PATH`: joins a network namespace, /run/netns/NAME (as `ip netns add` makes
 * them) or a path such as /proc/PID/ns/net, before anything is opened: the VM's taps are
 * then that namespace's. With --jail too, or alone. 0, or -errno after one line.
 */
int jail_join_netns(const char *netns);

/*
 * Enters the jail. The calling process forks: the parent stays outside, forwards SIGINT,
 * SIGTERM and SIGHUP to the child and exits with its status, never returning; the child
 * returns 0 as PID 1 of a new PID namespace, with DIR as its root (the plan's mounts at the
 * same paths as outside, a fresh /dev with /dev/kvm and, for taps, /dev/net/tun, a /proc of
 * its own, a /run/godwit owned by U for its API socket, with XDG_RUNTIME_DIR=/run), running as
 * U:G without capabilities and with no_new_privs. Taps must exist already, owned by U (the
 * jail has no CAP_NET_ADMIN to make them). Returns -errno after one line when it cannot, with
 * nothing changed outside.
 * With cgroup settings, the jailed process runs in a cgroup of its own made for it
 * (jail_cgroup.h), removed when it ends.
 */
int jail_enter(struct jail *jail, const struct jail_plan *plan);

#endif
