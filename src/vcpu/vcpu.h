/* vcpu.h: a virtual CPU: its KVM fd, its shared kvm_run page and its thread. */
#ifndef GODWIT_VCPU_H
#define GODWIT_VCPU_H

#include <linux/kvm.h>
#include <pthread.h>
#include <stdbool.h>
#include <time.h>

#include "boot/boot.h"

struct vm;

/* Exit counters, by what the exit was for (GET /vm/counters). */
enum vcpu_exit_kind {
    VCPU_EXIT_PIO,
    VCPU_EXIT_MMIO,
    VCPU_EXIT_INTERRUPTED, /* signals, interrupt windows */
    VCPU_EXIT_SYSTEM_EVENT,
    VCPU_EXIT_OTHER,
    VCPU_EXIT_KINDS,
};
extern const char *const vcpu_exit_kind_names[VCPU_EXIT_KINDS];

struct vcpu {
    struct vm *vm;
    unsigned index; /* also its APIC ID */
    int fd;
    struct kvm_run *run;
    pthread_t thread;
    bool thread_started;
    /* Auto-converge (vm_set_throttle): the timer that ends each slice in the guest; made by
     * the vCPU's own thread the first time it is throttled. */
    timer_t throttle_timer;
    bool throttle_timer_made;
    uint64_t exits[VCPU_EXIT_KINDS]; /* written by the vCPU thread, read relaxed by others */
};

/* Creates the vCPU and gives it CPUID, MSRs, LAPIC and FPU state. */
int vcpu_init(struct vcpu *vcpu, struct vm *vm, unsigned index);
/* Sets the boot vCPU's registers for the kernel's entry point. */
int vcpu_set_boot_regs(struct vcpu *vcpu, const struct boot_entry *entry);
int vcpu_start(struct vcpu *vcpu);
/* Makes the vCPU leave KVM_RUN promptly and not enter it again. */
void vcpu_kick(struct vcpu *vcpu);
/* Makes the vCPU leave KVM_RUN once, if it is there, to look at its throttle; it runs on. */
void vcpu_nudge(struct vcpu *vcpu);
void vcpu_join(struct vcpu *vcpu);
void vcpu_destroy(struct vcpu *vcpu);

/* One place for every exit reason KVM_RUN can return (vcpu/exit.c). Returns false when the
 * vCPU must stop running. */
bool vcpu_handle_exit(struct vcpu *vcpu);
/* Logs the general and segment registers, for crashes. */
void vcpu_log_registers(struct vcpu *vcpu);

/* What the stopped vCPU is doing, as JSON (vcpu/inspect.c): registers, run state, local
 * APIC, timer and paravirtual MSRs. Only while its thread is parked or not started. */
struct json_object *vcpu_inspect_json(struct vcpu *vcpu);

/* Guest-visible CPU model (vcpu/cpuid.c): from KVM's supported list to one vCPU's table.
 * Returns a malloc'ed table or NULL. */
struct kvm_cpuid2 *cpuid_build(const struct kvm_cpuid2 *supported, unsigned vcpu_index,
                               unsigned nr_vcpus);

/* KVM state of one vCPU in the VM state stream, section "vcpu<N>" (vcpu/state.c; its layout
 * is described there). */
struct state_writer;
struct state_reader;
#define VCPU_STATE_VERSION 1u
#define VCPU_STATE_MAX_MSRS 1024u
/* Saves the vCPU's registers, LAPIC, events, CPUID, TSC rate and MSRs. Only while its thread is
 * parked (VM paused) or not started. Returns 0 or -errno after one error line. */
int vcpu_save_state(struct vcpu *vcpu, struct state_writer *w);
/* Restores a vCPU fresh from vcpu_init() whose thread has not started: checks the whole section
 * and the CPU model before it changes anything. Returns 0, -ENOENT (no section), -EPROTO
 * (truncated), -EINVAL (a value refused) or the -errno of a failed ioctl, after one line. */
int vcpu_load_state(struct vcpu *vcpu, struct state_reader *r);
/* The checks on a saved MSR list: 0, -E2BIG (more than VCPU_STATE_MAX_MSRS) or -EEXIST (an
 * index twice, in *dup_index). */
int vcpu_state_check_msrs(const struct kvm_msr_entry *msrs, uint32_t n, uint32_t *dup_index);
/* Moves MSR_IA32_TSC to the front, the others keeping their order: KVM_SET_MSRS applies them
 * in order, and the TSC deadline is taken against the TSC. */
void vcpu_state_order_msrs(struct kvm_msr_entry *msrs, uint32_t n);
/* Whether two vCPUs' CPUID tables describe the same CPU, ignoring the bits KVM updates from the
 * guest's control registers as it runs. *where: the first entry that differs. */
bool vcpu_cpuid_same_model(const struct kvm_cpuid2 *saved, const struct kvm_cpuid2 *now,
                           uint32_t *where);
/* Whether a guest given the CPU model `guest` can run where cpuid_build() makes `here`, by the
 * same rule as a state load: 0, or -EINVAL with `why` naming the first feature the guest has
 * and this host lacks ("avx512f (CPUID 0x7.0 ebx bit 16)"), or the leaf that differs. */
int vcpu_cpu_model_check(const struct kvm_cpuid2 *guest, const struct kvm_cpuid2 *here,
                         char *why, size_t len);

/* CPUID feature names (vcpu/cpu_features.c): /proc/cpuinfo's name of a bit, or NULL. */
enum cpuid_reg { CPUID_EAX, CPUID_EBX, CPUID_ECX, CPUID_EDX };
const char *cpu_feature_name(uint32_t function, uint32_t index, unsigned reg, unsigned bit);

/* MSR values every vCPU starts with (vcpu/msr.c). */
int vcpu_set_boot_msrs(int vcpu_fd);

/* Boot-time register and page-table setup (vcpu/regs.c). */
int boot_write_page_tables(const struct guest_memory *gm);
int boot_write_gdt(const struct guest_memory *gm, enum boot_entry_mode mode);
void boot_fill_sregs(struct kvm_sregs *sregs, enum boot_entry_mode mode);
void boot_fill_regs(struct kvm_regs *regs, const struct boot_entry *entry);

#endif
