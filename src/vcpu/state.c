/*
 * state.c: a vCPU's KVM state in the VM state stream (section "vcpu<N>"), and back.
 *
 * Section layout, version 1. Integers are little-endian; a "blob" is a u32 byte count and then
 * that many bytes of the KVM structure as the x86-64 ABI lays it out:
 *
 *   u32  mp_state                  KVM_GET_MP_STATE
 *   blob struct kvm_regs           KVM_GET_REGS
 *   blob struct kvm_sregs          KVM_GET_SREGS
 *   blob xsave area                KVM_GET_XSAVE2 (KVM_CAP_XSAVE2 bytes), else KVM_GET_XSAVE (4096)
 *   blob struct kvm_xcrs           KVM_GET_XCRS
 *   blob struct kvm_debugregs      KVM_GET_DEBUGREGS
 *   blob struct kvm_lapic_state    KVM_GET_LAPIC
 *   blob struct kvm_vcpu_events    KVM_GET_VCPU_EVENTS
 *   blob CPUID entries             KVM_GET_CPUID2: nent * struct kvm_cpuid_entry2
 *   u32  tsc_khz                   KVM_GET_TSC_KHZ
 *   u32  nr_msrs, then nr_msrs * { u32 index, u64 value }
 *
 * Save runs on another thread while the vCPU's thread is parked (VM paused): KVM takes vCPU
 * ioctls from any thread as long as the vCPU is not inside KVM_RUN. Load runs on a vCPU fresh
 * from vcpu_init(), before its thread starts, in three steps: the section alone is checked,
 * then the host (CPU model, xsave size) with read-only ioctls, and only then is the vCPU set.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>

#include "log.h"
#include "migration/state.h"
#include "vcpu/vcpu.h"
#include "vm/vm.h"

#define MAX_CPUID_ENTRIES 256      /* what vm.c asks KVM_GET_SUPPORTED_CPUID for */
#define MAX_XSAVE_BYTES (1u << 20) /* far above today's largest area (AMX, about 11 KiB) */
#define MSR_BATCH 128              /* KVM refuses 256 or more MSRs in one KVM_GET/SET_MSRS */

#define MSR_IA32_TSC 0x10

#define CPUID_1_ECX_MONITOR (1u << 3)
#define CPUID_1_ECX_OSXSAVE (1u << 27)
#define CPUID_1_EDX_APIC (1u << 9)
#define CPUID_7_ECX_OSPKE (1u << 4)

#define KNOWN_EVENT_FLAGS                                                                      \
    (KVM_VCPUEVENT_VALID_NMI_PENDING | KVM_VCPUEVENT_VALID_SIPI_VECTOR |                       \
     KVM_VCPUEVENT_VALID_SHADOW | KVM_VCPUEVENT_VALID_SMM | KVM_VCPUEVENT_VALID_PAYLOAD |      \
     KVM_VCPUEVENT_VALID_TRIPLE_FAULT)

/* One vCPU's state, as saved or as read back from a section. */
struct vcpu_snapshot {
    struct kvm_mp_state mp;
    struct kvm_regs regs;
    struct kvm_sregs sregs;
    struct kvm_xsave *xsave;
    uint32_t xsave_len;
    struct kvm_xcrs xcrs;
    struct kvm_debugregs debugregs;
    struct kvm_lapic_state lapic;
    struct kvm_vcpu_events events;
    struct kvm_cpuid2 *cpuid;
    uint32_t tsc_khz;
    struct kvm_msrs *msrs;
};

static void snapshot_free(struct vcpu_snapshot *s)
{
    free(s->xsave);
    free(s->cpuid);
    free(s->msrs);
}

static void section_id(char id[STATE_ID_LEN], unsigned index)
{
    snprintf(id, STATE_ID_LEN, "vcpu%u", index);
}

/* One vCPU ioctl; a failure is logged with the ioctl's name. */
static int vcpu_ioctl(const struct vcpu *vcpu, unsigned long request, void *arg, const char *name)
{
    if (ioctl(vcpu->fd, request, arg) >= 0)
        return 0;
    int err = errno;
    log_error("vcpu %u: %s failed: %s", vcpu->index, name, strerror(err));
    return -err;
}
#define VCPU_IOCTL(vcpu, request, arg) vcpu_ioctl(vcpu, request, arg, #request)

static struct kvm_msrs *msrs_alloc(uint32_t n)
{
    return calloc(1, sizeof(struct kvm_msrs) + (size_t)n * sizeof(struct kvm_msr_entry));
}

/* ---- checks that need no KVM (exported for the tests) ---- */

int vcpu_state_check_msrs(const struct kvm_msr_entry *msrs, uint32_t n, uint32_t *dup_index)
{
    if (n > VCPU_STATE_MAX_MSRS)
        return -E2BIG;
    /* Quadratic, but n is at most 1024 and this runs once per vCPU per restore. */
    for (uint32_t i = 1; i < n; i++) {
        for (uint32_t j = 0; j < i; j++) {
            if (msrs[i].index == msrs[j].index) {
                *dup_index = msrs[i].index;
                return -EEXIST;
            }
        }
    }
    return 0;
}

void vcpu_state_order_msrs(struct kvm_msr_entry *msrs, uint32_t n)
{
    for (uint32_t i = 1; i < n; i++) {
        if (msrs[i].index != MSR_IA32_TSC)
            continue;
        struct kvm_msr_entry tsc = msrs[i];
        memmove(&msrs[1], &msrs[0], i * sizeof(msrs[0]));
        msrs[0] = tsc;
        return;
    }
}

/*
 * Bits KVM rewrites while the guest runs (kvm_update_cpuid_runtime): they mirror the guest's
 * CR4, XCR0/XSS, APIC base and MISC_ENABLE, its current settings rather than the CPU model.
 * Order: eax, ebx, ecx, edx.
 */
static void cpuid_runtime_bits(const struct kvm_cpuid_entry2 *e, uint32_t mask[4])
{
    memset(mask, 0, 4 * sizeof(mask[0]));
    if (e->function == 1) {
        mask[2] = CPUID_1_ECX_OSXSAVE | CPUID_1_ECX_MONITOR;
        mask[3] = CPUID_1_EDX_APIC;
    } else if (e->function == 7 && e->index == 0) {
        mask[2] = CPUID_7_ECX_OSPKE;
    } else if (e->function == 0xd && e->index <= 1) {
        mask[1] = ~0u; /* the XSAVE area size for the XCR0 (and XSS) now enabled */
    }
}

static bool cpuid_entry_same(const struct kvm_cpuid_entry2 *a, const struct kvm_cpuid_entry2 *b)
{
    uint32_t m[4];
    if (a->function != b->function || a->index != b->index || a->flags != b->flags)
        return false;
    cpuid_runtime_bits(a, m);
    return ((a->eax ^ b->eax) & ~m[0]) == 0 && ((a->ebx ^ b->ebx) & ~m[1]) == 0 &&
           ((a->ecx ^ b->ecx) & ~m[2]) == 0 && ((a->edx ^ b->edx) & ~m[3]) == 0;
}

bool vcpu_cpuid_same_model(const struct kvm_cpuid2 *saved, const struct kvm_cpuid2 *now,
                           uint32_t *where)
{
    uint32_t n = saved->nent < now->nent ? saved->nent : now->nent;
    /* Entry by entry: both tables come from cpuid_build() over KVM's list, in its order. */
    for (uint32_t i = 0; i < n; i++) {
        if (!cpuid_entry_same(&saved->entries[i], &now->entries[i])) {
            *where = i;
            return false;
        }
    }
    *where = n;
    return saved->nent == now->nent;
}

int vcpu_cpu_model_check(const struct kvm_cpuid2 *guest, const struct kvm_cpuid2 *here,
                         char *why, size_t len)
{
    static const char *const reg_names[4] = { "eax", "ebx", "ecx", "edx" };
    uint32_t at;
    if (vcpu_cpuid_same_model(guest, here, &at))
        return 0;
    if (at >= guest->nent || at >= here->nent) {
        snprintf(why, len, "the guest's CPU model has %u CPUID entries, this host's %u",
                 guest->nent, here->nent);
        return -EINVAL;
    }
    const struct kvm_cpuid_entry2 *g = &guest->entries[at], *h = &here->entries[at];
    if (g->function != h->function || g->index != h->index || g->flags != h->flags) {
        snprintf(why, len, "the guest's CPUID leaf 0x%x.%u stands where this host has 0x%x.%u",
                 g->function, g->index, h->function, h->index);
        return -EINVAL;
    }
    uint32_t mask[4];
    const uint32_t gv[4] = { g->eax, g->ebx, g->ecx, g->edx }, hv[4] = { h->eax, h->ebx, h->ecx, h->edx };
    cpuid_runtime_bits(g, mask);
    for (unsigned r = 0; r < 4; r++) { /* a feature the guest has and this host lacks, first */
        uint32_t missing = gv[r] & ~hv[r] & ~mask[r];
        if (!missing)
            continue;
        unsigned bit = (unsigned)__builtin_ctz(missing);
        const char *name = cpu_feature_name(g->function, g->index, r, bit);
        snprintf(why, len, "this host's CPU lacks %s (CPUID 0x%x.%u %s bit %u), which the guest "
                 "was given", name ? name : "a feature", g->function, g->index, reg_names[r], bit);
        return -EINVAL;
    }
    for (unsigned r = 0; r < 4; r++) {
        if (((gv[r] ^ hv[r]) & ~mask[r]) == 0)
            continue;
        snprintf(why, len, "CPUID 0x%x.%u %s differs: the guest's 0x%08x, this host's 0x%08x",
                 g->function, g->index, reg_names[r], gv[r], hv[r]);
        return -EINVAL;
    }
    return -EINVAL; /* not reached: vcpu_cpuid_same_model found a difference */
}

/* ---- save ---- */

/* KVM_CAP_XSAVE2, asked of the VM fd as the API says: the size of KVM_GET_XSAVE2's area, or 0
 * on a kernel without it, which has only the 4 KiB KVM_GET_XSAVE. */
static int xsave2_size(const struct vm *vm)
{
    int size = ioctl(vm->vm_fd, KVM_CHECK_EXTENSION, KVM_CAP_XSAVE2);
    return size > 0 ? size : 0;
}

static uint32_t host_xsave_len(int xsave2)
{
    return xsave2 > (int)sizeof(struct kvm_xsave) ? (uint32_t)xsave2 : sizeof(struct kvm_xsave);
}

static int get_xsave(struct vcpu *vcpu, struct vcpu_snapshot *s)
{
    int xsave2 = xsave2_size(vcpu->vm);
    s->xsave_len = host_xsave_len(xsave2);
    s->xsave = calloc(1, s->xsave_len);
    if (!s->xsave)
        return -ENOMEM;
    if (xsave2)
        return VCPU_IOCTL(vcpu, KVM_GET_XSAVE2, s->xsave);
    return VCPU_IOCTL(vcpu, KVM_GET_XSAVE, s->xsave);
}

static int get_cpuid(struct vcpu *vcpu, struct kvm_cpuid2 **out)
{
    struct kvm_cpuid2 *c = calloc(1, sizeof(*c) + MAX_CPUID_ENTRIES * sizeof(c->entries[0]));
    if (!c)
        return -ENOMEM;
    c->nent = MAX_CPUID_ENTRIES;
    int ret = VCPU_IOCTL(vcpu, KVM_GET_CPUID2, c);
    if (ret < 0) {
        free(c);
        return ret;
    }
    *out = c;
    return 0;
}

/* KVM_GET_TSC_KHZ answers with the rate itself. */
static int get_tsc_khz(struct vcpu *vcpu, uint32_t *khz)
{
    int ret = ioctl(vcpu->fd, KVM_GET_TSC_KHZ, 0);
    if (ret < 0) {
        int err = errno;
        log_error("vcpu %u: KVM_GET_TSC_KHZ failed: %s", vcpu->index, strerror(err));
        return -err;
    }
    *khz = (uint32_t)ret;
    return 0;
}

/* The MSRs KVM can save, from /dev/kvm. Asked with room for none, KVM answers E2BIG and the
 * count, so the second call gets the whole list. */
static int msr_index_list(const struct vm *vm, struct kvm_msr_list **out)
{
    struct kvm_msr_list probe = { .nmsrs = 0 };
    struct kvm_msr_list *list = NULL;
    if (ioctl(vm->kvm_fd, KVM_GET_MSR_INDEX_LIST, &probe) == 0 || errno == E2BIG) {
        list = calloc(1, sizeof(*list) + probe.nmsrs * sizeof(uint32_t));
        if (!list)
            return -ENOMEM;
        list->nmsrs = probe.nmsrs;
        if (ioctl(vm->kvm_fd, KVM_GET_MSR_INDEX_LIST, list) == 0) {
            *out = list;
            return 0;
        }
    }
    int err = errno;
    free(list);
    log_error("vm: KVM_GET_MSR_INDEX_LIST failed: %s", strerror(err));
    return -err;
}

/*
 * Reads every MSR of `list` this vCPU has. KVM_GET_MSRS stops at the first MSR it cannot read
 * (one KVM lists but this vCPU's CPUID lacks) and returns how many it read: the next call
 * starts after that one.
 */
static int read_msrs(struct vcpu *vcpu, const struct kvm_msr_list *list, struct kvm_msrs *all)
{
    struct kvm_msrs *batch = msrs_alloc(MSR_BATCH);
    if (!batch)
        return -ENOMEM;
    uint32_t next = 0;
    while (next < list->nmsrs) {
        uint32_t n = list->nmsrs - next < MSR_BATCH ? list->nmsrs - next : MSR_BATCH;
        memset(batch->entries, 0, n * sizeof(batch->entries[0]));
        batch->nmsrs = n;
        for (uint32_t i = 0; i < n; i++)
            batch->entries[i].index = list->indices[next + i];
        int got = ioctl(vcpu->fd, KVM_GET_MSRS, batch);
        if (got < 0) {
            int err = errno;
            log_error("vcpu %u: KVM_GET_MSRS failed: %s", vcpu->index, strerror(err));
            free(batch);
            return -err;
        }
        uint32_t read = (uint32_t)got < n ? (uint32_t)got : n;
        memcpy(&all->entries[all->nmsrs], batch->entries, read * sizeof(batch->entries[0]));
        all->nmsrs += read;
        next += read < n ? read + 1 : read; /* past the one KVM could not read */
    }
    free(batch);
    return 0;
}

static int get_msrs(struct vcpu *vcpu, struct vcpu_snapshot *s)
{
    struct kvm_msr_list *list = NULL;
    uint32_t dup;
    int ret = msr_index_list(vcpu->vm, &list);
    if (ret < 0)
        return ret;
    s->msrs = msrs_alloc(list->nmsrs);
    ret = s->msrs ? read_msrs(vcpu, list, s->msrs) : -ENOMEM;
    free(list);
    if (ret < 0)
        return ret;
    /* What the loader would refuse is refused here, before a useless snapshot is written. */
    ret = vcpu_state_check_msrs(s->msrs->entries, s->msrs->nmsrs, &dup);
    if (ret < 0)
        log_error("vcpu %u: %u MSRs to save, %s", vcpu->index, s->msrs->nmsrs,
                  ret == -E2BIG ? "more than a snapshot holds" : "KVM listed one twice");
    return ret;
}

static int snapshot_take(struct vcpu *vcpu, struct vcpu_snapshot *s)
{
    int ret;
    /* MP state first: reading it lets KVM take a pending INIT or SIPI, which changes the
     * registers read after it. */
    if ((ret = VCPU_IOCTL(vcpu, KVM_GET_MP_STATE, &s->mp)) < 0 ||
        (ret = VCPU_IOCTL(vcpu, KVM_GET_REGS, &s->regs)) < 0 ||
        (ret = VCPU_IOCTL(vcpu, KVM_GET_SREGS, &s->sregs)) < 0 || (ret = get_xsave(vcpu, s)) < 0 ||
        (ret = VCPU_IOCTL(vcpu, KVM_GET_XCRS, &s->xcrs)) < 0 ||
        (ret = VCPU_IOCTL(vcpu, KVM_GET_DEBUGREGS, &s->debugregs)) < 0 ||
        (ret = VCPU_IOCTL(vcpu, KVM_GET_LAPIC, &s->lapic)) < 0 ||
        (ret = VCPU_IOCTL(vcpu, KVM_GET_VCPU_EVENTS, &s->events)) < 0 ||
        (ret = get_cpuid(vcpu, &s->cpuid)) < 0 || (ret = get_tsc_khz(vcpu, &s->tsc_khz)) < 0 ||
        (ret = get_msrs(vcpu, s)) < 0)
        return ret;
    return 0;
}

static void snapshot_write(struct state_writer *w, unsigned index, const struct vcpu_snapshot *s)
{
    char id[STATE_ID_LEN];
    section_id(id, index);
    sw_begin(w, id, VCPU_STATE_VERSION);
    sw_u32(w, s->mp.mp_state);
    sw_blob(w, &s->regs, sizeof(s->regs));
    sw_blob(w, &s->sregs, sizeof(s->sregs));
    sw_blob(w, s->xsave, s->xsave_len);
    sw_blob(w, &s->xcrs, sizeof(s->xcrs));
    sw_blob(w, &s->debugregs, sizeof(s->debugregs));
    sw_blob(w, &s->lapic, sizeof(s->lapic));
    sw_blob(w, &s->events, sizeof(s->events));
    sw_blob(w, s->cpuid->entries, s->cpuid->nent * sizeof(s->cpuid->entries[0]));
    sw_u32(w, s->tsc_khz);
    sw_u32(w, s->msrs->nmsrs);
    for (uint32_t i = 0; i < s->msrs->nmsrs; i++) {
        sw_u32(w, s->msrs->entries[i].index);
        sw_u64(w, s->msrs->entries[i].data);
    }
    sw_end(w);
}

int vcpu_save_state(struct vcpu *vcpu, struct state_writer *w)
{
    struct vcpu_snapshot s = { 0 };
    /* Everything is read before the section opens: a failed ioctl leaves no half section. */
    int ret = snapshot_take(vcpu, &s);
    if (ret == 0) {
        snapshot_write(w, vcpu->index, &s);
        ret = sw_error(w);
    }
    snapshot_free(&s);
    return ret;
}

/* ---- load: the section alone ---- */

static int read_xsave(struct state_cursor *c, struct vcpu_snapshot *s)
{
    uint32_t len = sc_u32(c);
    if (c->overrun)
        return sc_finish(c);
    if (len < sizeof(struct kvm_xsave) || len > MAX_XSAVE_BYTES)
        return sc_reject(c, "xsave: %u bytes, not between %zu and %u", len,
                         sizeof(struct kvm_xsave), MAX_XSAVE_BYTES);
    if (!(s->xsave = calloc(1, len)))
        return -ENOMEM;
    s->xsave_len = len;
    sc_bytes(c, s->xsave, len);
    return c->overrun ? sc_finish(c) : 0;
}

static int read_cpuid(struct state_cursor *c, struct vcpu_snapshot *s)
{
    const size_t entry = sizeof(struct kvm_cpuid_entry2);
    uint32_t len = sc_u32(c);
    if (c->overrun)
        return sc_finish(c);
    if (len % entry != 0 || len / entry > MAX_CPUID_ENTRIES)
        return sc_reject(c, "CPUID: %u bytes, not up to %u entries of %zu", len,
                         MAX_CPUID_ENTRIES, entry);
    if (!(s->cpuid = calloc(1, sizeof(*s->cpuid) + len)))
        return -ENOMEM;
    s->cpuid->nent = (uint32_t)(len / entry);
    sc_bytes(c, s->cpuid->entries, len);
    return c->overrun ? sc_finish(c) : 0;
}

static int read_msr_list(struct state_cursor *c, struct vcpu_snapshot *s)
{
    uint32_t n = sc_u32(c);
    if (c->overrun)
        return sc_finish(c);
    /* Bounded before the allocation it sizes. */
    if (n > VCPU_STATE_MAX_MSRS)
        return sc_reject(c, "%u MSRs, more than the %u a snapshot holds", n, VCPU_STATE_MAX_MSRS);
    if (!(s->msrs = msrs_alloc(n)))
        return -ENOMEM;
    s->msrs->nmsrs = n;
    for (uint32_t i = 0; i < n; i++) {
        s->msrs->entries[i].index = sc_u32(c);
        s->msrs->entries[i].data = sc_u64(c);
    }
    return c->overrun ? sc_finish(c) : 0;
}

static int snapshot_read(struct state_cursor *c, struct vcpu_snapshot *s)
{
    int ret;
    if (c->section->version != VCPU_STATE_VERSION)
        return sc_reject(c, "version %u unknown", c->section->version);
    s->mp.mp_state = sc_u32(c);
    if ((ret = sc_blob(c, "regs", &s->regs, sizeof(s->regs))) < 0 ||
        (ret = sc_blob(c, "sregs", &s->sregs, sizeof(s->sregs))) < 0 ||
        (ret = read_xsave(c, s)) < 0 ||
        (ret = sc_blob(c, "xcrs", &s->xcrs, sizeof(s->xcrs))) < 0 ||
        (ret = sc_blob(c, "debugregs", &s->debugregs, sizeof(s->debugregs))) < 0 ||
        (ret = sc_blob(c, "lapic", &s->lapic, sizeof(s->lapic))) < 0 ||
        (ret = sc_blob(c, "vcpu_events", &s->events, sizeof(s->events))) < 0 ||
        (ret = read_cpuid(c, s)) < 0)
        return ret;
    s->tsc_khz = sc_u32(c);
    if ((ret = read_msr_list(c, s)) < 0)
        return ret;
    return sc_finish(c);
}

static int check_events(const struct state_cursor *c, const struct kvm_vcpu_events *ev)
{
    if (ev->flags & ~KNOWN_EVENT_FLAGS)
        return sc_reject(c, "vcpu_events flags 0x%x: unknown bits", ev->flags);
    /* The vector only counts, for KVM too, when an exception is there. */
    if ((ev->exception.injected || ev->exception.pending) && ev->exception.nr > 31)
        return sc_reject(c, "pending exception vector %u: not an exception", ev->exception.nr);
    if (ev->interrupt.shadow & ~(KVM_X86_SHADOW_INT_MOV_SS | KVM_X86_SHADOW_INT_STI))
        return sc_reject(c, "interrupt shadow 0x%x: unknown bits", ev->interrupt.shadow);
    return 0;
}

/* Values KVM would refuse, or misread, checked before any of them reaches it. */
static int snapshot_check(const struct state_cursor *c, const struct vcpu_snapshot *s)
{
    uint32_t dup = 0;
    /* x86 vCPUs are in one of these; AP_RESET_HOLD is for SEV-ES guests only. */
    if (s->mp.mp_state > KVM_MP_STATE_SIPI_RECEIVED)
        return sc_reject(c, "mp_state %u: not an x86 run state", s->mp.mp_state);
    if (s->xcrs.nr_xcrs > KVM_MAX_XCRS || s->xcrs.flags)
        return sc_reject(c, "xcrs: %u registers, flags 0x%x", s->xcrs.nr_xcrs, s->xcrs.flags);
    if (s->debugregs.flags || (s->debugregs.dr6 >> 32) || (s->debugregs.dr7 >> 32))
        return sc_reject(c, "debugregs: flags or upper halves of DR6/DR7 set");
    int ret = check_events(c, &s->events);
    if (ret < 0)
        return ret;
    if (vcpu_state_check_msrs(s->msrs->entries, s->msrs->nmsrs, &dup) < 0)
        return sc_reject(c, "MSR 0x%x appears twice", dup);
    return 0;
}

/* ---- load: against this host, read-only ---- */

/* The vCPU got its CPUID at vcpu_init() and KVM takes no other after it runs: the guest
 * must find the CPU it was running on, or it may use features this vCPU lacks. */
static int check_cpu_model(struct vcpu *vcpu, const struct state_cursor *c,
                           const struct kvm_cpuid2 *saved)
{
    struct kvm_cpuid2 *now = NULL;
    uint32_t where;
    int ret = get_cpuid(vcpu, &now);
    if (ret < 0)
        return ret;
    if (vcpu_cpuid_same_model(saved, now, &where))
        ret = 0;
    else if (where < saved->nent && where < now->nent)
        ret = sc_reject(c, "the snapshot's CPU model differs from this host's (CPUID 0x%x.%u)",
                        now->entries[where].function, now->entries[where].index);
    else
        ret = sc_reject(c, "the snapshot's CPU model differs from this host's (%u CPUID "
                           "entries, this host %u)", saved->nent, now->nent);
    free(now);
    return ret;
}

static int check_host(struct vcpu *vcpu, const struct state_cursor *c,
                      const struct vcpu_snapshot *s)
{
    int ret = check_cpu_model(vcpu, c, s->cpuid);
    if (ret < 0)
        return ret;
    /* KVM_SET_XSAVE copies exactly this host's size. */
    uint32_t len = host_xsave_len(xsave2_size(vcpu->vm));
    if (s->xsave_len != len)
        return sc_reject(c, "xsave: %u bytes, this host's KVM uses %u", s->xsave_len, len);
    return 0;
}

/* ---- load: apply ---- */

static int set_tsc_khz(struct vcpu *vcpu, uint32_t khz)
{
    if (khz == 0)
        return 0; /* the saving host's KVM did not know its rate */
    int now = ioctl(vcpu->fd, KVM_GET_TSC_KHZ, 0);
    if (now < 0) {
        int err = errno;
        log_error("vcpu %u: KVM_GET_TSC_KHZ failed: %s", vcpu->index, strerror(err));
        return -err;
    }
    if ((uint32_t)now == khz)
        return 0;
    if (kvm_check_extension(vcpu->vm, KVM_CAP_TSC_CONTROL) <= 0) {
        log_warn("vcpu %u: the guest's TSC ran at %u kHz, this host's runs at %d kHz and KVM "
                 "cannot scale it: guest time may drift", vcpu->index, khz, now);
        return 0;
    }
    if (ioctl(vcpu->fd, KVM_SET_TSC_KHZ, (unsigned long)khz) < 0) {
        int err = errno;
        log_error("vcpu %u: KVM_SET_TSC_KHZ %u failed: %s", vcpu->index, khz, strerror(err));
        return -err;
    }
    return 0;
}

/* KVM_SET_MSRS stops at the first MSR it refuses and returns how many it set. */
static int set_msr_batch(struct vcpu *vcpu, struct kvm_msrs *batch)
{
    int set = ioctl(vcpu->fd, KVM_SET_MSRS, batch);
    if (set < 0) {
        int err = errno;
        log_error("vcpu %u: KVM_SET_MSRS failed: %s", vcpu->index, strerror(err));
        return -err;
    }
    if ((uint32_t)set < batch->nmsrs) {
        const struct kvm_msr_entry *e = &batch->entries[set];
        log_error("vcpu %u: KVM_SET_MSRS refused MSR 0x%x = 0x%llx", vcpu->index, e->index,
                  (unsigned long long)e->data);
        return -EINVAL;
    }
    return 0;
}

static int set_msrs(struct vcpu *vcpu, struct kvm_msrs *all)
{
    struct kvm_msrs *batch = msrs_alloc(MSR_BATCH);
    int ret = 0;
    if (!batch)
        return -ENOMEM;
    /* KVM sets them in array order, and arms the TSC-deadline timer against the guest TSC
     * as it is when the deadline is written: the TSC goes first. */
    vcpu_state_order_msrs(all->entries, all->nmsrs);
    for (uint32_t next = 0; next < all->nmsrs && ret == 0; next += batch->nmsrs) {
        uint32_t left = all->nmsrs - next;
        batch->nmsrs = left < MSR_BATCH ? left : MSR_BATCH;
        memcpy(batch->entries, &all->entries[next], batch->nmsrs * sizeof(batch->entries[0]));
        ret = set_msr_batch(vcpu, batch);
    }
    free(batch);
    return ret;
}

static int snapshot_apply(struct vcpu *vcpu, struct vcpu_snapshot *s)
{
    int ret;
    /* The TSC rate before anything else: KVM scales the TSC written with the MSRs by it. */
    if ((ret = set_tsc_khz(vcpu, s->tsc_khz)) < 0)
        return ret;
    /* MP state before the events: KVM refuses INIT_RECEIVED on a vCPU in SMM, and the
     * events may put it there. */
    if ((ret = VCPU_IOCTL(vcpu, KVM_SET_MP_STATE, &s->mp)) < 0 ||
        (ret = VCPU_IOCTL(vcpu, KVM_SET_REGS, &s->regs)) < 0)
        return ret;
    /* SREGS carries the APIC base: it must be in place (enabled, xAPIC or x2APIC) before the
     * LAPIC state, which KVM reads in that mode. */
    if ((ret = VCPU_IOCTL(vcpu, KVM_SET_SREGS, &s->sregs)) < 0 ||
        (ret = VCPU_IOCTL(vcpu, KVM_SET_XSAVE, s->xsave)) < 0 ||
        (ret = VCPU_IOCTL(vcpu, KVM_SET_XCRS, &s->xcrs)) < 0 ||
        (ret = VCPU_IOCTL(vcpu, KVM_SET_DEBUGREGS, &s->debugregs)) < 0)
        return ret;
    /* LAPIC before the MSRs: a TSC deadline is only taken in the timer mode set here. */
    if ((ret = VCPU_IOCTL(vcpu, KVM_SET_LAPIC, &s->lapic)) < 0 ||
        (ret = set_msrs(vcpu, s->msrs)) < 0)
        return ret;
    /* Events last: KVM_SET_REGS dropped any pending exception and these bring it back. GET
     * reports the SIPI vector and a pending NMI without marking them valid, and SET ignores
     * both unless they are: an AP waiting for a SIPI needs the vector, and an NMI the guest
     * had not taken yet (its watchdog, a backtrace request) would be lost. */
    s->events.flags |= KVM_VCPUEVENT_VALID_SIPI_VECTOR | KVM_VCPUEVENT_VALID_NMI_PENDING;
    return VCPU_IOCTL(vcpu, KVM_SET_VCPU_EVENTS, &s->events);
}

/* Tells a guest with kvmclock that it was stopped, so that its watchdogs do not take the time
 * in the snapshot for a lockup. Optional: EINVAL means the guest has no kvmclock. */
static void kvmclock_ctrl(struct vcpu *vcpu)
{
    if (ioctl(vcpu->fd, KVM_KVMCLOCK_CTRL, 0) < 0 && errno != EINVAL)
        log_warn("vcpu %u: KVM_KVMCLOCK_CTRL failed: %s", vcpu->index, strerror(errno));
}

int vcpu_load_state(struct vcpu *vcpu, struct state_reader *r)
{
    char id[STATE_ID_LEN];
    struct state_cursor c;
    struct vcpu_snapshot s = { 0 };

    section_id(id, vcpu->index);
    const struct state_section *section = state_reader_find(r, id);
    if (!section) {
        log_error("state: no section %s", id);
        return -ENOENT;
    }
    sc_init(&c, section);
    int ret = snapshot_read(&c, &s);
    if (ret == 0)
        ret = snapshot_check(&c, &s);
    if (ret == 0)
        ret = check_host(vcpu, &c, &s);
    if (ret == 0)
        ret = snapshot_apply(vcpu, &s);
    if (ret == 0)
        kvmclock_ctrl(vcpu);
    snapshot_free(&s);
    return ret;
}
