/*
 * vm_state.h: the whole VM's state but its RAM, as sections of the state format: the
 * configuration (JSON), the memory layout, the disks' sizes, every vCPU, every device of the
 * registry, and the in-kernel PIT, irqchip and clock. A snapshot's state file and a live
 * migration's final message hold exactly this.
 */
#ifndef GODWIT_MIGRATION_VM_STATE_H
#define GODWIT_MIGRATION_VM_STATE_H

#include "migration/state.h"
#include "vm/registry.h"

struct vm;

#define VM_STATE_CONFIG "config" /* the section with the configuration's JSON */

/* Starts `w` (sw_init) and writes every section; the VM is paused (vCPUs parked, devices
 * quiesced). Returns 0, or -errno after one line. */
int vm_state_save(struct vm *vm, const char *config_json, struct state_writer *w);

/*
 * Loads the state into a VM built from the same configuration, before its vCPUs first run:
 * checks the memory layout and the disks' sizes, then loads the vCPUs, the in-kernel irqchip,
 * PIT and clock, and the devices, in the order KVM needs. A section no one loaded is refused
 * rather than dropped. Returns 0 or -errno after one line.
 */
int vm_state_load(struct vm *vm, struct state_reader *r);

/* Where a load's time went (ms), for the log line of whoever waits on it. */
struct vm_state_load_times {
    double checks_ms;      /* the memory layout and the disks' sizes (a stat each) */
    double vcpus_ms;       /* every vCPU's sections: read, checked, applied (KVM_SET_*) */
    double vm_ms;          /* the PIT, clock and irqchips */
    double devices_ms;     /* every device's section, its backend's start included */
    double routing_ms;     /* of all of it: KVM_SET_GSI_ROUTING (MSI-X routes), */
    unsigned routing_sets; /* called this many times */
    struct vm_registry_slowest slowest; /* the device that took longest */
};
/* vm_state_load(), timed into *t. */
int vm_state_load_timed(struct vm *vm, struct state_reader *r, struct vm_state_load_times *t);

#endif
