/* exit.c: where every guest exit from KVM_RUN is handled. */
#include <linux/kvm.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>

#include "log.h"
#include "vcpu/vcpu.h"
#include "vm/vm.h"

static bool vcpu_handle_io(struct vcpu *vcpu)
{
    struct kvm_run *run = vcpu->run;
    const uint64_t total = (uint64_t)run->io.size * run->io.count;
    const bool is_write = run->io.direction == KVM_EXIT_IO_OUT;

    /* The data lives in the kvm_run mapping; never trust offsets to stay inside it. */
    if (run->io.data_offset > (uint64_t)vcpu->vm->vcpu_mmap_size ||
        total > (uint64_t)vcpu->vm->vcpu_mmap_size - run->io.data_offset) {
        log_error("vcpu %u: port I/O exit with data outside kvm_run", vcpu->index);
        vm_request_exit(vcpu->vm, VM_EXIT_VMM_ERROR);
        return false;
    }
    uint8_t *data = (uint8_t *)run + run->io.data_offset;
    for (uint32_t i = 0; i < run->io.count; i++, data += run->io.size)
        bus_access(&vcpu->vm->pio, run->io.port, data, run->io.size, is_write);
    return true;
}

static bool vcpu_handle_mmio(struct vcpu *vcpu)
{
    struct kvm_run *run = vcpu->run;
    if (run->mmio.len > sizeof(run->mmio.data))
        return true;
    bus_access(&vcpu->vm->mmio, run->mmio.phys_addr, run->mmio.data, run->mmio.len,
               run->mmio.is_write);
    return true;
}

static bool vcpu_guest_crashed(struct vcpu *vcpu, const char *what)
{
    log_error("vcpu %u: %s", vcpu->index, what);
    vcpu_log_registers(vcpu);
    vm_request_exit(vcpu->vm, VM_EXIT_CRASH);
    return false;
}

static bool vcpu_handle_internal_error(struct vcpu *vcpu)
{
    static const char *const suberrors[] = {
        [KVM_INTERNAL_ERROR_EMULATION] = "instruction emulation failed",
        [KVM_INTERNAL_ERROR_SIMUL_EX] = "exception while delivering an exception",
        [KVM_INTERNAL_ERROR_DELIVERY_EV] = "event delivery failed",
        [KVM_INTERNAL_ERROR_UNEXPECTED_EXIT_REASON] = "unexpected hardware exit reason",
    };
    uint32_t sub = vcpu->run->internal.suberror;
    const char *name = sub < sizeof(suberrors) / sizeof(suberrors[0]) && suberrors[sub]
                           ? suberrors[sub] : "unknown suberror";
    char what[128];
    snprintf(what, sizeof(what), "KVM internal error %u (%s)", sub, name);
    return vcpu_guest_crashed(vcpu, what);
}

static bool vcpu_handle_system_event(struct vcpu *vcpu)
{
    switch (vcpu->run->system_event.type) {
    case KVM_SYSTEM_EVENT_SHUTDOWN:
        vm_request_exit(vcpu->vm, VM_EXIT_POWEROFF);
        return false;
    case KVM_SYSTEM_EVENT_RESET:
        vm_request_exit(vcpu->vm, VM_EXIT_RESET);
        return false;
    default:
        return vcpu_guest_crashed(vcpu, "system event: crash");
    }
}

const char *const vcpu_exit_kind_names[VCPU_EXIT_KINDS] = {
    [VCPU_EXIT_PIO] = "pio", [VCPU_EXIT_MMIO] = "mmio", [VCPU_EXIT_INTERRUPTED] = "interrupted",
    [VCPU_EXIT_SYSTEM_EVENT] = "system_event", [VCPU_EXIT_OTHER] = "other",
};

static void vcpu_count_exit(struct vcpu *vcpu, uint32_t reason)
{
    enum vcpu_exit_kind kind;
    switch (reason) {
    case KVM_EXIT_IO: kind = VCPU_EXIT_PIO; break;
    case KVM_EXIT_MMIO: kind = VCPU_EXIT_MMIO; break;
    case KVM_EXIT_INTR:
    case KVM_EXIT_IRQ_WINDOW_OPEN: kind = VCPU_EXIT_INTERRUPTED; break;
    case KVM_EXIT_SYSTEM_EVENT: kind = VCPU_EXIT_SYSTEM_EVENT; break;
    default: kind = VCPU_EXIT_OTHER; break;
    }
    __atomic_store_n(&vcpu->exits[kind], vcpu->exits[kind] + 1, __ATOMIC_RELAXED);
}

bool vcpu_handle_exit(struct vcpu *vcpu)
{
    struct kvm_run *run = vcpu->run;

    vcpu_count_exit(vcpu, run->exit_reason);
    switch (run->exit_reason) {
    case KVM_EXIT_IO:
        return vcpu_handle_io(vcpu);
    case KVM_EXIT_MMIO:
        return vcpu_handle_mmio(vcpu);
    case KVM_EXIT_INTR:
    case KVM_EXIT_IRQ_WINDOW_OPEN:
        return true;
    case KVM_EXIT_HLT:
        /* Only without an in-kernel LAPIC; ours always has one, so a halt here is final. */
        return vcpu_guest_crashed(vcpu, "halted with no way to wake up");
    case KVM_EXIT_SHUTDOWN:
        return vcpu_guest_crashed(vcpu, "triple fault (shutdown)");
    case KVM_EXIT_INTERNAL_ERROR:
        return vcpu_handle_internal_error(vcpu);
    case KVM_EXIT_FAIL_ENTRY: {
        char what[96];
        snprintf(what, sizeof(what), "VM entry failed (hardware reason 0x%llx)",
                 (unsigned long long)run->fail_entry.hardware_entry_failure_reason);
        return vcpu_guest_crashed(vcpu, what);
    }
    case KVM_EXIT_SYSTEM_EVENT:
        return vcpu_handle_system_event(vcpu);
    default:
        log_error("vcpu %u: unhandled KVM exit reason %u", vcpu->index, run->exit_reason);
        vm_request_exit(vcpu->vm, VM_EXIT_VMM_ERROR);
        return false;
    }
}

void vcpu_log_registers(struct vcpu *vcpu)
{
    struct kvm_regs r;
    struct kvm_sregs s;
    if (ioctl(vcpu->fd, KVM_GET_REGS, &r) < 0 || ioctl(vcpu->fd, KVM_GET_SREGS, &s) < 0) {
        log_error("vcpu %u: cannot read registers", vcpu->index);
        return;
    }
    log_error("vcpu %u: rip=%016llx rsp=%016llx rflags=%016llx", vcpu->index, r.rip, r.rsp,
              r.rflags);
    log_error("vcpu %u: rax=%016llx rbx=%016llx rcx=%016llx rdx=%016llx", vcpu->index, r.rax,
              r.rbx, r.rcx, r.rdx);
    log_error("vcpu %u: rsi=%016llx rdi=%016llx rbp=%016llx r8=%016llx", vcpu->index, r.rsi,
              r.rdi, r.rbp, r.r8);
    log_error("vcpu %u: cr0=%016llx cr2=%016llx cr3=%016llx cr4=%016llx efer=%016llx",
              vcpu->index, s.cr0, s.cr2, s.cr3, s.cr4, s.efer);
    log_error("vcpu %u: cs=%04x (base %llx, l=%u db=%u dpl=%u) ss=%04x", vcpu->index,
              s.cs.selector, s.cs.base, s.cs.l, s.cs.db, s.cs.dpl, s.ss.selector);
}
