/*
 * kvm_state.h: the VM-wide KVM state in the VM state stream: the in-kernel PIT, the two PICs
 * and the IOAPIC, and the guest clock (kvmclock). Layouts in vm/kvm_state.c.
 *
 * Restore order, for the caller: build the VM as for a boot (its vCPUs from vcpu_init()),
 * then vcpu_load_state() for every vCPU, then vm_kvm_state_load() (PIT, clock, irqchips), then
 * the devices, then start the vCPUs. The vCPUs come before the irqchips because the IOAPIC
 * delivers its pending lines to the LAPICs as soon as it is loaded, and KVM_SET_LAPIC would
 * drop them; the devices come last because one that raises its line on load must not have it
 * overwritten by the irqchip state.
 */
#ifndef GODWIT_VM_KVM_STATE_H
#define GODWIT_VM_KVM_STATE_H

#include <stdint.h>

struct vm;
struct state_writer;
struct state_reader;

#define VM_KVM_STATE_VERSION 1u

/* Writes sections "kvm-pit", "kvm-irqchip" and "kvm-clock" (in that order: the clock last, as
 * close to the end of the save as it can be). The vCPUs must be stopped (VM paused). Returns 0
 * or -errno after one error line. */
int vm_kvm_state_save(struct vm *vm, struct state_writer *w);

/* Checks all three sections, then sets the PIT, the clock and the irqchips. The clock is
 * advanced by the time the snapshot spent on disk and also stored in *vm->clock_at_pause,
 * where vm_resume() takes it from. Returns 0, -ENOENT (a section missing), -EPROTO
 * (truncated), -EINVAL (a value refused) or the -errno of a failed ioctl, after one line. */
int vm_kvm_state_load(struct vm *vm, struct state_reader *r);

/* The guest clock (ns) to restore: the saved one plus the host time elapsed since it was saved
 * (CLOCK_REALTIME, ns), or the saved one alone when that time is not believable (none saved, not
 * after the save, ten years or more). */
uint64_t vm_clock_after_restore(uint64_t saved_clock, uint64_t saved_realtime,
                                uint64_t now_realtime);

#endif
