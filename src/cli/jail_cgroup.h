/*
 * jail_cgroup.h: `godwit run --jail ... --cgroup FILE=VALUE`: the jailed VM in a cgroup (v2) of
 * its own, <root>/godwit/<name>, with the limits given (memory.max, cpu.max, pids.max, ...).
 *
 * The root process outside makes the cgroup and writes the limits before the jailed process
 * exists; the jailed process moves itself in first thing (through a descriptor opened outside,
 * so the jail's root needs no /sys); the root process removes the cgroup once the VM ended.
 */
#ifndef GODWIT_CLI_JAIL_CGROUP_H
#define GODWIT_CLI_JAIL_CGROUP_H

#include <stddef.h>

#define JAIL_CGROUP_ROOT "/sys/fs/cgroup"
#define JAIL_CGROUP_MAX_SETTINGS 16

struct jail_cgroup {
    const char *settings[JAIL_CGROUP_MAX_SETTINGS]; /* "FILE=VALUE", as given */
    size_t nr_settings;
    char path[4096]; /* <root>/godwit/<name> once made; "" before */
    /* <root>/godwit and <name>, to remove it by: the jail's pivot_root also moves the root
     * of the process outside (they share the new mount namespace), so paths fail there. */
    int parent_fd;
    char name[256];
};

/*
 * Checks one `--cgroup FILE=VALUE`: FILE a controller's interface file ("memory.max",
 * "cpu.weight"; lower-case letters, digits, '_' and '.'), not one of cgroup.* (those move
 * processes or change the tree), VALUE non-empty, one line. 0, or -EINVAL after one line.
 */
int jail_cgroup_check_setting(const char *setting);

/* Adds a checked setting; -EINVAL (bad) or -E2BIG (too many) after one line. */
int jail_cgroup_add(struct jail_cgroup *cg, const char *setting);

/*
 * Whether `root` is a cgroup v2 hierarchy this process can make cgroups in: 0, or -errno after
 * one line (-ENOTSUP for no cgroup2 there).
 */
int jail_cgroup_usable(const char *root);

/*
 * Makes root/godwit/name (a stale empty one from an earlier run is replaced; one still holding
 * processes is refused, -EBUSY), enables in root and root/godwit the controllers the settings
 * name, and writes each setting. On failure nothing is left behind. 0 or -errno, one line.
 */
int jail_cgroup_make(struct jail_cgroup *cg, const char *root, const char *name);

/* Opens the cgroup's cgroup.procs for the jailed process to move itself in; fd or -errno. */
int jail_cgroup_open_procs(const struct jail_cgroup *cg);

/* Moves the calling process into the cgroup through `procs_fd` and closes it: 0 or -errno. */
int jail_cgroup_join(int procs_fd);

/* Removes the cgroup (through parent_fd, whatever the caller's root has become since),
 * waiting briefly while its last processes exit; closes parent_fd. */
void jail_cgroup_remove(struct jail_cgroup *cg);

#endif
