/*
 * inspect.c: what a stopped vCPU is doing, for people: where it runs, whether it halted and
 * with interrupts on, what its local APIC holds pending and when its timer fires. This is what
 * tells a guest waiting for an interrupt that never comes from one waiting for the VMM.
 */
#include <json-c/json.h>
#include <linux/kvm.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>

#include "vm/memory.h"
#include "vcpu/vcpu.h"
#include "vm/vm.h"

#define RFLAGS_IF (1u << 9)
/* Local APIC registers, as offsets into struct kvm_lapic_state (the xAPIC page). */
#define APIC_TPR 0x80
#define APIC_ISR 0x100
#define APIC_IRR 0x200
#define APIC_LVT_TIMER 0x320
#define APIC_TIMER_INITIAL 0x380
#define APIC_TIMER_CURRENT 0x390
#define APIC_LVT_MASKED (1u << 16)

#define MSR_IA32_TSC 0x10
#define MSR_IA32_TSC_DEADLINE 0x6e0
#define MSR_KVM_ASYNC_PF_EN 0x4b564d02
#define MSR_KVM_PV_EOI_EN 0x4b564d04
#define MSR_KVM_ASYNC_PF_INT 0x4b564d06

static const char *mp_state_name(uint32_t state)
{
    switch (state) {
    case KVM_MP_STATE_RUNNABLE: return "runnable";
    case KVM_MP_STATE_UNINITIALIZED: return "uninitialized";
    case KVM_MP_STATE_INIT_RECEIVED: return "init-received";
    case KVM_MP_STATE_HALTED: return "halted";
    case KVM_MP_STATE_SIPI_RECEIVED: return "sipi-received";
    default: return "other";
    }
}

static uint32_t lapic_reg(const struct kvm_lapic_state *l, unsigned offset)
{
    uint32_t v;
    memcpy(&v, &l->regs[offset], sizeof(v));
    return v;
}

/* The vectors set in a 256-bit APIC register (ISR, IRR): eight 32-bit words 16 bytes apart. */
static struct json_object *lapic_vectors(const struct kvm_lapic_state *l, unsigned base)
{
    struct json_object *a = json_object_new_array();
    for (unsigned word = 0; word < 8; word++) {
        uint32_t bits = lapic_reg(l, base + 16 * word);
        for (unsigned bit = 0; bit < 32; bit++)
            if (bits & (1u << bit))
                json_object_array_add(a, json_object_new_int((int)(word * 32 + bit)));
    }
    return a;
}

static struct json_object *hex(uint64_t v)
{
    char buf[24];
    snprintf(buf, sizeof(buf), "0x%llx", (unsigned long long)v);
    return json_object_new_string(buf);
}

static void add_lapic(struct vcpu *vcpu, struct json_object *o)
{
    struct kvm_lapic_state l;
    if (ioctl(vcpu->fd, KVM_GET_LAPIC, &l) < 0)
        return;
    struct json_object *a = json_object_new_object();
    json_object_object_add(a, "tpr", json_object_new_int((int)lapic_reg(&l, APIC_TPR)));
    json_object_object_add(a, "irr", lapic_vectors(&l, APIC_IRR));
    json_object_object_add(a, "isr", lapic_vectors(&l, APIC_ISR));
    uint32_t lvt = lapic_reg(&l, APIC_LVT_TIMER);
    json_object_object_add(a, "timer_lvt", hex(lvt));
    json_object_object_add(a, "timer_masked", json_object_new_boolean(lvt & APIC_LVT_MASKED));
    json_object_object_add(a, "timer_initial", json_object_new_int64(lapic_reg(&l, APIC_TIMER_INITIAL)));
    json_object_object_add(a, "timer_current", json_object_new_int64(lapic_reg(&l, APIC_TIMER_CURRENT)));
    json_object_object_add(o, "lapic", a);
}

/* The MSRs that decide when a halted guest wakes: its TSC against its timer deadline, and the
 * paravirtual features that deliver wake-ups (async page faults, PV EOI). */
static void add_msrs(struct vcpu *vcpu, struct json_object *o)
{
    static const struct { uint32_t index; const char *name; } wanted[] = {
        { MSR_IA32_TSC, "tsc" }, { MSR_IA32_TSC_DEADLINE, "tsc_deadline" },
        { MSR_KVM_ASYNC_PF_EN, "kvm_async_pf_en" }, { MSR_KVM_ASYNC_PF_INT, "kvm_async_pf_int" },
        { MSR_KVM_PV_EOI_EN, "kvm_pv_eoi_en" },
    };
    enum { N = sizeof(wanted) / sizeof(wanted[0]) };
    /* The header with room for N entries after it (not a struct: clang refuses a flexible
     * array member that is not last). */
    union {
        struct kvm_msrs hdr;
        uint8_t bytes[sizeof(struct kvm_msrs) + N * sizeof(struct kvm_msr_entry)];
    } m = { .hdr.nmsrs = N };
    struct kvm_msr_entry *e = m.hdr.entries;
    for (unsigned i = 0; i < N; i++)
        e[i].index = wanted[i].index;
    int got = ioctl(vcpu->fd, KVM_GET_MSRS, &m);
    struct json_object *a = json_object_new_object();
    for (int i = 0; i < got && i < N; i++)
        json_object_object_add(a, wanted[i].name, hex(e[i].data));
    json_object_object_add(o, "msrs", a);
}

/* The instruction bytes at `rip`, through the guest's own page tables (KVM_TRANSLATE). */
static void add_code_bytes(struct vcpu *vcpu, uint64_t rip, struct json_object *o)
{
    struct kvm_translation t = { .linear_address = rip };
    uint8_t code[16];
    if (ioctl(vcpu->fd, KVM_TRANSLATE, &t) < 0 || !t.valid)
        return;
    /* Up to the end of the page: the next one may map elsewhere. */
    size_t len = 4096 - (t.physical_address & 4095);
    if (len > sizeof(code))
        len = sizeof(code);
    if (gm_read(&vcpu->vm->mem, t.physical_address, code, len) < 0)
        return;
    char text[2 * sizeof(code) + 1];
    for (size_t i = 0; i < len; i++)
        snprintf(text + 2 * i, 3, "%02x", code[i]);
    json_object_object_add(o, "code", json_object_new_string(text));
}

struct json_object *vcpu_inspect_json(struct vcpu *vcpu)
{
    struct json_object *o = json_object_new_object();
    struct kvm_regs r;
    struct kvm_sregs s;
    struct kvm_mp_state mp;
    struct kvm_vcpu_events ev;

    json_object_object_add(o, "index", json_object_new_int((int)vcpu->index));
    if (ioctl(vcpu->fd, KVM_GET_MP_STATE, &mp) == 0)
        json_object_object_add(o, "state", json_object_new_string(mp_state_name(mp.mp_state)));
    bool have_regs = ioctl(vcpu->fd, KVM_GET_REGS, &r) == 0;
    if (have_regs) {
        json_object_object_add(o, "rip", hex(r.rip));
        json_object_object_add(o, "rsp", hex(r.rsp));
        json_object_object_add(o, "rflags", hex(r.rflags));
        json_object_object_add(o, "interrupts_enabled",
                               json_object_new_boolean(r.rflags & RFLAGS_IF));
    }
    if (ioctl(vcpu->fd, KVM_GET_SREGS, &s) == 0) {
        json_object_object_add(o, "cpl", json_object_new_int(s.cs.dpl));
        json_object_object_add(o, "cr3", hex(s.cr3));
    }
    if (ioctl(vcpu->fd, KVM_GET_VCPU_EVENTS, &ev) == 0) {
        json_object_object_add(o, "interrupt_injected",
                               json_object_new_boolean(ev.interrupt.injected));
        json_object_object_add(o, "interrupt_shadow", json_object_new_int(ev.interrupt.shadow));
        json_object_object_add(o, "nmi_pending", json_object_new_boolean(ev.nmi.pending));
        bool exception = ev.exception.injected || ev.exception.pending;
        json_object_object_add(o, "exception_pending", json_object_new_boolean(exception));
        if (exception) {
            json_object_object_add(o, "exception_vector", json_object_new_int(ev.exception.nr));
            if (ev.exception.has_error_code)
                json_object_object_add(o, "exception_error_code", hex(ev.exception.error_code));
        }
    }
    if (have_regs)
        add_code_bytes(vcpu, r.rip, o);
    add_lapic(vcpu, o);
    add_msrs(vcpu, o);
    return o;
}
