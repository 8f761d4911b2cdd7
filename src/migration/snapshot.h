/*
 * snapshot.h: a VM written to a directory, and a VM built again from one.
 *
 * DIR/memory holds guest RAM at the offsets of the VM's memory file, sparse (pages that are
 * zero are holes); DIR/state holds everything else in the state format (state.h): the
 * configuration, the memory layout, the disks' sizes, each vCPU, the in-kernel irqchip, PIT
 * and clock, and every device of the registry. Disks are the user's: they are not copied.
 */
#ifndef GODWIT_MIGRATION_SNAPSHOT_H
#define GODWIT_MIGRATION_SNAPSHOT_H

#include <limits.h>
#include <stddef.h>
#include <stdint.h>

#include "migration/state.h"

struct vm;
struct guest_memory;

#define SNAPSHOT_STATE_FILE "state"
#define SNAPSHOT_MEMORY_FILE "memory"
#define SNAPSHOT_STATE_MAX (256u << 20) /* a larger state file is refused unread */

struct snapshot_stats {
    uint64_t memory_bytes;   /* guest RAM */
    uint64_t memory_written; /* of it, written: the pages that are not zero */
    uint64_t state_bytes;
};

/*
 * Writes the VM, which the caller paused (vCPUs parked, devices quiesced), into `dir`
 * (created when missing). Both files are written under temporary names, synced and renamed,
 * so an interrupted snapshot leaves no half-written one under the real names. Returns 0 or
 * -errno after one line naming the problem.
 */
int snapshot_save(struct vm *vm, const char *dir, const char *config_json,
                  struct snapshot_stats *stats);

/* A snapshot read back, its state file checked (format, bounds, checksums). */
struct snapshot {
    char dir[PATH_MAX];
    uint8_t *buf;
    size_t len;
    struct state_reader reader;
    char *config_json; /* NUL-terminated copy of the configuration section */
};

int snapshot_open(struct snapshot *snap, const char *dir);
void snapshot_close(struct snapshot *snap);

/* Maps DIR/memory privately as the RAM of `gm` (laid out as gm_init() would for `size`
 * bytes): pages are read on first touch, and the guest's writes stay in this process. */
int snapshot_map_memory(const struct snapshot *snap, struct guest_memory *gm, uint64_t size);

/*
 * Loads the state into a VM built from the snapshot's configuration, before its vCPUs first
 * run: checks the memory layout and the disks' sizes, then loads the vCPUs, the in-kernel
 * irqchip, PIT and clock, and the devices, in the order KVM needs. A section no one loaded
 * is refused rather than dropped. Returns 0 or -errno after one line.
 */
int snapshot_restore(struct vm *vm, struct snapshot *snap);

#endif
