/*
 * vm_state.h: the whole VM's state but its RAM, as sections of the state format: the
 * configuration (JSON), the memory layout, the disks' sizes, every vCPU, every device of the
 * registry, and the in-kernel PIT, irqchip and clock. A snapshot's state file and a live
 * migration's final message hold exactly this.
 */
#ifndef GODWIT_MIGRATION_VM_STATE_H
#define GODWIT_MIGRATION_VM_STATE_H

#include "migration/state.h"

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

#endif
