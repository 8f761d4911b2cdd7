/*
 * registry.h: every device of a VM, one entry each, with the same operations.
 *
 * The VM pauses, saves, restores, reports and tears down its devices through this table
 * alone: it never asks what kind a device is. An entry's id is stable across processes
 * ("uart0", "rtc0", "pci-host", "virtio-blk0"): it names the device's section in the state
 * format, so a snapshot taken by one godwit loads into another built from the same config.
 */
#ifndef GODWIT_VM_REGISTRY_H
#define GODWIT_VM_REGISTRY_H

#include <stdbool.h>
#include <stdint.h>

struct state_writer;
struct state_reader;
struct state_cursor;
struct json_object;

#define VM_DEVICE_ID_LEN 24u
#define VM_MAX_DEVICES 64u

/* Every operation is optional (NULL: nothing to do, nothing to save, no counters). */
struct vm_device_ops {
    uint32_t state_version; /* of the section save() writes */
    /*
     * Stops touching guest memory and the host backend: a request in flight is completed (its
     * answer is in the used ring) or handed back to the driver before this returns. Called on
     * the main loop's thread with the vCPUs parked. Returns 0 or -errno.
     */
    int (*quiesce)(void *dev);
    /* Undoes quiesce; looks at every queue again, since a kick may have come meanwhile. */
    void (*resume)(void *dev);
    /* Writes the section's payload (the registry opens and closes the section). Quiesced. */
    void (*save)(void *dev, struct state_writer *w);
    /* Checks and applies a payload of `version` (at most state_version), before the vCPUs
     * first run. Returns 0, or -errno after one line naming the bad value (sc_reject). */
    int (*load)(void *dev, struct state_cursor *c, uint32_t version);
    /* Traffic counters for GET /vm/counters, or NULL. */
    struct json_object *(*counters)(void *dev);
    /* Frees the device; on the main loop's thread, after the vCPUs stopped. */
    void (*destroy)(void *dev);
};

struct vm_device_entry {
    char id[VM_DEVICE_ID_LEN];
    const struct vm_device_ops *ops;
    void *dev;
    bool quiesced;
};

struct vm_registry {
    unsigned nr;
    struct vm_device_entry entries[VM_MAX_DEVICES];
};

/* Adds a device; returns 0, -EEXIST for an id already there, -ENOSPC when full. */
int vm_registry_add(struct vm_registry *reg, const char *id, const struct vm_device_ops *ops,
                    void *dev);
/* Destroys every device, the last added first. */
void vm_registry_destroy(struct vm_registry *reg);

/* Quiesces every device in order; on failure resumes those already quiesced. */
int vm_registry_quiesce(struct vm_registry *reg);
void vm_registry_resume(struct vm_registry *reg);

/* One section per device that has state, named by its id. Returns 0 or the writer's error. */
int vm_registry_save(struct vm_registry *reg, struct state_writer *w);
/* The device whose load took longest, for a log line that says where a load's time went. */
struct vm_registry_slowest {
    char id[VM_DEVICE_ID_LEN];
    double ms;
};
/* Loads every device's section; a device with state whose section is missing, or a section
 * of a newer version than the device knows, is refused with a line naming it. `slowest`
 * (NULL: not wanted) is filled in. */
int vm_registry_load(struct vm_registry *reg, struct state_reader *r,
                     struct vm_registry_slowest *slowest);

/* Adds {id: counters} for each device that has counters. */
void vm_registry_counters(struct vm_registry *reg, struct json_object *devices);

#endif
