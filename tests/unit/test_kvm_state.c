/*
 * test_kvm_state.c: the KVM state of vCPUs and of the VM, without KVM: the checks on saved MSRs
 * and CPUID, the clock arithmetic of a restore, and loaders that refuse a hostile section
 * before their first ioctl (every fd here is -1, so an ioctl would answer -EBADF).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <cmocka.h>

#include <errno.h>
#include <string.h>

#include "migration/state.h"
#include "vcpu/vcpu.h"
#include "vm/kvm_state.h"
#include "vm/vm.h"

#define NS 1000000000ull
#define YEAR_NS (365ull * 24 * 3600 * NS)
#define MSR_IA32_TSC 0x10
#define MSR_IA32_TSC_DEADLINE 0x6e0
#define MSR_IA32_SYSENTER_CS 0x174
#define MSR_EFER 0xc0000080

/* ---- pure checks ---- */

static void test_clock_after_restore(void **state)
{
    (void)state;
    const uint64_t t = 1700000000ull * NS; /* a host time in 2023 */
    /* Advanced by the time on disk. */
    assert_int_equal(vm_clock_after_restore(5 * NS, t, t + 3 * NS), 8 * NS);
    assert_int_equal(vm_clock_after_restore(0, t, t + 1), 1);
    assert_int_equal(vm_clock_after_restore(7 * NS, t, t + 9 * YEAR_NS), 7 * NS + 9 * YEAR_NS);
    /* Not believable: the saved clock alone. */
    assert_int_equal(vm_clock_after_restore(5 * NS, t, t), 5 * NS);          /* no time */
    assert_int_equal(vm_clock_after_restore(5 * NS, t, t - NS), 5 * NS);     /* backwards */
    assert_int_equal(vm_clock_after_restore(5 * NS, 0, t), 5 * NS);          /* none saved */
    assert_int_equal(vm_clock_after_restore(5 * NS, t, t + 11 * YEAR_NS), 5 * NS);
    assert_int_equal(vm_clock_after_restore(5 * NS, 1, UINT64_MAX), 5 * NS);
    /* A clock that would wrap stays where it was. */
    assert_int_equal(vm_clock_after_restore(UINT64_MAX - 10, t, t + 100), UINT64_MAX - 10);
}

static void test_check_msrs(void **state)
{
    (void)state;
    struct kvm_msr_entry e[4] = {
        { .index = MSR_IA32_TSC }, { .index = MSR_EFER }, { .index = MSR_IA32_SYSENTER_CS },
        { .index = MSR_EFER },
    };
    uint32_t dup = 0;
    assert_int_equal(vcpu_state_check_msrs(e, 0, &dup), 0);
    assert_int_equal(vcpu_state_check_msrs(e, 3, &dup), 0);
    assert_int_equal(vcpu_state_check_msrs(e, 4, &dup), -EEXIST);
    assert_int_equal(dup, MSR_EFER);

    struct kvm_msr_entry *many = calloc(VCPU_STATE_MAX_MSRS + 1, sizeof(*many));
    assert_non_null(many);
    for (uint32_t i = 0; i <= VCPU_STATE_MAX_MSRS; i++)
        many[i].index = 0x1000 + i;
    assert_int_equal(vcpu_state_check_msrs(many, VCPU_STATE_MAX_MSRS, &dup), 0);
    assert_int_equal(vcpu_state_check_msrs(many, VCPU_STATE_MAX_MSRS + 1, &dup), -E2BIG);
    free(many);
}

static void assert_order(const struct kvm_msr_entry *e, const uint32_t *want, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++) {
        assert_int_equal(e[i].index, want[i]);
        assert_int_equal(e[i].data, want[i] + 1); /* each value stays with its MSR */
    }
}

static void fill(struct kvm_msr_entry *e, const uint32_t *index, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++)
        e[i] = (struct kvm_msr_entry){ .index = index[i], .data = index[i] + 1 };
}

static void test_order_msrs(void **state)
{
    (void)state;
    struct kvm_msr_entry e[4];
    const uint32_t mixed[] = { MSR_IA32_SYSENTER_CS, MSR_IA32_TSC_DEADLINE, MSR_IA32_TSC,
                               MSR_EFER };
    const uint32_t tsc_first[] = { MSR_IA32_TSC, MSR_IA32_SYSENTER_CS, MSR_IA32_TSC_DEADLINE,
                                   MSR_EFER };
    const uint32_t no_tsc[] = { MSR_IA32_TSC_DEADLINE, MSR_EFER, MSR_IA32_SYSENTER_CS };

    fill(e, mixed, 4);
    vcpu_state_order_msrs(e, 4);
    assert_order(e, tsc_first, 4);
    vcpu_state_order_msrs(e, 4); /* already in order: unchanged */
    assert_order(e, tsc_first, 4);
    fill(e, no_tsc, 3);
    vcpu_state_order_msrs(e, 3);
    assert_order(e, no_tsc, 3);
    vcpu_state_order_msrs(e, 0);
    fill(e, mixed + 2, 1);
    vcpu_state_order_msrs(e, 1);
    assert_order(e, mixed + 2, 1);
}

static struct kvm_cpuid2 *cpuid_table(void)
{
    static const struct kvm_cpuid_entry2 entries[] = {
        { .function = 0, .eax = 0xd, .ebx = 0x756e6547 },
        { .function = 1, .eax = 0x806f8, .ebx = 0x00010800, .ecx = 0xf6fa3203, .edx = 0x0f8bfbff },
        { .function = 7, .index = 0, .flags = KVM_CPUID_FLAG_SIGNIFCANT_INDEX, .ebx = 0xf1bf07ab },
        { .function = 0xd, .index = 0, .flags = KVM_CPUID_FLAG_SIGNIFCANT_INDEX, .eax = 0x2e7,
          .ebx = 0x240, .ecx = 0x2b00 },
        { .function = 0xd, .index = 1, .flags = KVM_CPUID_FLAG_SIGNIFCANT_INDEX, .eax = 0xf },
        { .function = 0xd, .index = 2, .flags = KVM_CPUID_FLAG_SIGNIFCANT_INDEX, .eax = 0x100,
          .ebx = 0x240 },
    };
    size_t n = sizeof(entries) / sizeof(entries[0]);
    struct kvm_cpuid2 *c = calloc(1, sizeof(*c) + n * sizeof(entries[0]));
    assert_non_null(c);
    c->nent = (uint32_t)n;
    memcpy(c->entries, entries, sizeof(entries));
    return c;
}

static void test_cpuid_same_model(void **state)
{
    (void)state;
    struct kvm_cpuid2 *saved = cpuid_table(), *now = cpuid_table();
    uint32_t where = 99;
    assert_true(vcpu_cpuid_same_model(saved, now, &where));
    assert_int_equal(where, saved->nent);

    /* What the guest changed by running: OSXSAVE, APIC enable, OSPKE, the XSAVE sizes. */
    saved->entries[1].ecx |= 1u << 27;
    saved->entries[1].edx &= ~(1u << 9);
    saved->entries[2].ecx |= 1u << 4;
    saved->entries[3].ebx = 0x988;
    saved->entries[4].ebx = 0x990;
    assert_true(vcpu_cpuid_same_model(saved, now, &where));

    /* The model itself: a feature, the size of a component, the flags, the count. */
    saved->entries[2].ebx ^= 1u << 5;
    assert_false(vcpu_cpuid_same_model(saved, now, &where));
    assert_int_equal(where, 2);
    saved->entries[2].ebx ^= 1u << 5;
    saved->entries[5].ebx = 0x300;
    assert_false(vcpu_cpuid_same_model(saved, now, &where));
    assert_int_equal(where, 5);
    saved->entries[5].ebx = 0x240;
    saved->entries[1].ecx ^= 1u << 0;
    assert_false(vcpu_cpuid_same_model(saved, now, &where));
    assert_int_equal(where, 1);
    saved->entries[1].ecx ^= 1u << 0;
    saved->entries[0].flags = KVM_CPUID_FLAG_SIGNIFCANT_INDEX;
    assert_false(vcpu_cpuid_same_model(saved, now, &where));
    saved->entries[0].flags = 0;
    assert_true(vcpu_cpuid_same_model(saved, now, &where));
    now->nent--;
    assert_false(vcpu_cpuid_same_model(saved, now, &where));
    assert_int_equal(where, now->nent);
    free(saved);
    free(now);
}

/* ---- vcpu_load_state on hostile sections ---- */

/* A "vcpu0" section, field by field, with every length and count as the test sets it. */
struct vcpu_fields {
    uint32_t version, mp_state;
    uint32_t regs_len, sregs_len, xsave_len, xcrs_len, debugregs_len, lapic_len, events_len;
    uint32_t cpuid_len;
    struct kvm_xcrs xcrs;
    struct kvm_debugregs debugregs;
    struct kvm_vcpu_events events;
    uint32_t nr_msrs, msrs_written;
    bool dup_msr, extra_byte;
};

static struct vcpu_fields good_vcpu(void)
{
    struct vcpu_fields f;
    memset(&f, 0, sizeof(f));
    f.version = VCPU_STATE_VERSION;
    f.mp_state = KVM_MP_STATE_HALTED;
    f.regs_len = sizeof(struct kvm_regs);
    f.sregs_len = sizeof(struct kvm_sregs);
    f.xsave_len = sizeof(struct kvm_xsave);
    f.xcrs_len = sizeof(struct kvm_xcrs);
    f.debugregs_len = sizeof(struct kvm_debugregs);
    f.lapic_len = sizeof(struct kvm_lapic_state);
    f.events_len = sizeof(struct kvm_vcpu_events);
    f.cpuid_len = 2 * sizeof(struct kvm_cpuid_entry2);
    f.xcrs.nr_xcrs = 1;
    f.xcrs.xcrs[0].value = 7;
    f.debugregs.dr6 = 0xffff0ff0;
    f.debugregs.dr7 = 0x400;
    f.events.flags = KVM_VCPUEVENT_VALID_NMI_PENDING | KVM_VCPUEVENT_VALID_SHADOW;
    f.events.exception.nr = 14;
    f.nr_msrs = f.msrs_written = 3;
    return f;
}

/* `len` bytes: from `p` when it has them (exactly `have`), zeroes otherwise (at most 64 KiB,
 * enough for every length a loader accepts). */
static void put_blob(struct state_writer *w, uint32_t len, const void *p, size_t have)
{
    sw_u32(w, len);
    if (p && len == have) {
        sw_bytes(w, p, len);
        return;
    }
    size_t n = len < (1u << 16) ? len : (1u << 16);
    void *zero = calloc(1, n ? n : 1);
    assert_non_null(zero);
    sw_bytes(w, zero, n);
    free(zero);
}

static void build_vcpu(struct state_writer *w, const struct vcpu_fields *f)
{
    sw_init(w);
    sw_begin(w, "vcpu0", f->version);
    sw_u32(w, f->mp_state);
    put_blob(w, f->regs_len, NULL, 0);
    put_blob(w, f->sregs_len, NULL, 0);
    put_blob(w, f->xsave_len, NULL, 0);
    put_blob(w, f->xcrs_len, &f->xcrs, sizeof(f->xcrs));
    put_blob(w, f->debugregs_len, &f->debugregs, sizeof(f->debugregs));
    put_blob(w, f->lapic_len, NULL, 0);
    put_blob(w, f->events_len, &f->events, sizeof(f->events));
    put_blob(w, f->cpuid_len, NULL, 0);
    sw_u32(w, 2500000); /* TSC kHz */
    sw_u32(w, f->nr_msrs);
    for (uint32_t i = 0; i < f->msrs_written; i++) {
        sw_u32(w, f->dup_msr && i == 2 ? MSR_IA32_TSC : MSR_IA32_TSC + i);
        sw_u64(w, i);
    }
    if (f->extra_byte)
        sw_u8(w, 0);
    sw_end(w);
    assert_int_equal(sw_finish(w), 0);
}

static int load_vcpu(const struct vcpu_fields *f, unsigned index)
{
    struct state_writer w;
    struct state_reader r;
    struct vm vm;
    struct vcpu vcpu;

    build_vcpu(&w, f);
    assert_int_equal(state_reader_open(&r, w.buf, w.len), 0);
    memset(&vm, 0, sizeof(vm));
    vm.kvm_fd = vm.vm_fd = -1;
    memset(&vcpu, 0, sizeof(vcpu));
    vcpu.vm = &vm;
    vcpu.fd = -1;
    vcpu.index = index;
    int ret = vcpu_load_state(&vcpu, &r);
    state_reader_close(&r);
    sw_free(&w);
    return ret;
}

/* A well-formed section passes every check: the first thing to fail is the first ioctl. */
static void test_vcpu_good_section_reaches_kvm(void **state)
{
    (void)state;
    struct vcpu_fields f = good_vcpu();
    assert_int_equal(load_vcpu(&f, 0), -EBADF);
    f.nr_msrs = f.msrs_written = 0;
    f.events.exception.nr = 200; /* a stale vector, no exception: KVM ignores it too */
    assert_int_equal(load_vcpu(&f, 0), -EBADF);
    assert_int_equal(load_vcpu(&f, 1), -ENOENT); /* no "vcpu1" */
}

/* Hostile change number `which` to a good section: returns the error the loader must give,
 * or 0 past the last one. */
static int mutate_vcpu(struct vcpu_fields *f, unsigned which, const char **what)
{
    switch (which) {
    case 0: *what = "version 2"; f->version = 2; return -EINVAL;
    case 1: *what = "mp_state 5"; f->mp_state = KVM_MP_STATE_STOPPED; return -EINVAL;
    case 2: *what = "mp_state huge"; f->mp_state = 0xffffffff; return -EINVAL;
    case 3: *what = "regs short"; f->regs_len = sizeof(struct kvm_regs) - 8; return -EINVAL;
    case 4: *what = "sregs long"; f->sregs_len = sizeof(struct kvm_sregs) + 8; return -EINVAL;
    case 5: *what = "xsave small"; f->xsave_len = 512; return -EINVAL;
    case 6: *what = "xsave huge"; f->xsave_len = 0xffffffff; return -EINVAL;
    case 7: *what = "xsave past the end"; f->xsave_len = (1u << 16) + 4096; return -EPROTO;
    case 8: *what = "xcrs count"; f->xcrs.nr_xcrs = KVM_MAX_XCRS + 1; return -EINVAL;
    case 9: *what = "xcrs flags"; f->xcrs.flags = 1; return -EINVAL;
    case 10: *what = "lapic length"; f->lapic_len = 0; return -EINVAL;
    case 11: *what = "debugregs flags"; f->debugregs.flags = 1; return -EINVAL;
    case 12: *what = "dr7 upper half"; f->debugregs.dr7 = 1ull << 40; return -EINVAL;
    case 13: *what = "events flags"; f->events.flags = 1u << 30; return -EINVAL;
    case 14:
        *what = "exception vector";
        f->events.exception.injected = 1;
        f->events.exception.nr = 32;
        return -EINVAL;
    case 15: *what = "interrupt shadow"; f->events.interrupt.shadow = 4; return -EINVAL;
    case 16: *what = "events length"; f->events_len = 16; return -EINVAL;
    case 17: *what = "cpuid partial entry"; f->cpuid_len = 41; return -EINVAL;
    case 18: *what = "cpuid too many"; f->cpuid_len = 257 * 40; return -EINVAL;
    case 19: *what = "msr count huge"; f->nr_msrs = 0x7fffffff; return -EINVAL;
    case 20: *what = "msr count above"; f->nr_msrs = VCPU_STATE_MAX_MSRS + 1; return -EINVAL;
    case 21: *what = "msr duplicate"; f->dup_msr = true; return -EINVAL;
    case 22: *what = "msrs truncated"; f->msrs_written = 2; return -EPROTO;
    case 23: *what = "bytes left over"; f->extra_byte = true; return -EPROTO;
    }
    return 0;
}

static void test_vcpu_hostile_sections(void **state)
{
    (void)state;
    const char *what = NULL;
    for (unsigned i = 0;; i++) {
        struct vcpu_fields f = good_vcpu();
        int expect = mutate_vcpu(&f, i, &what);
        if (expect == 0)
            break;
        int ret = load_vcpu(&f, 0);
        if (ret != expect)
            fail_msg("%s: %d, expected %d", what, ret, expect);
    }
}

/* A stream cut anywhere inside the section never gets past the checks. */
static void test_vcpu_truncated_everywhere(void **state)
{
    (void)state;
    struct vcpu_fields f = good_vcpu();
    struct state_writer w;
    build_vcpu(&w, &f);
    const size_t header = 16 + 48; /* stream header, section header */
    size_t payload = w.len - header;
    struct vm vm;
    struct vcpu vcpu;
    memset(&vm, 0, sizeof(vm));
    vm.kvm_fd = vm.vm_fd = -1;
    memset(&vcpu, 0, sizeof(vcpu));
    vcpu.vm = &vm;
    vcpu.fd = -1;
    for (size_t len = 0; len < payload; len += 7) {
        /* A section of its own whose payload is the first `len` bytes of the good one. */
        struct state_writer cut;
        struct state_reader r;
        sw_init(&cut);
        sw_begin(&cut, "vcpu0", VCPU_STATE_VERSION);
        sw_bytes(&cut, w.buf + header, len);
        sw_end(&cut);
        assert_int_equal(sw_finish(&cut), 0);
        assert_int_equal(state_reader_open(&r, cut.buf, cut.len), 0);
        int ret = vcpu_load_state(&vcpu, &r);
        if (ret != -EPROTO && ret != -EINVAL)
            fail_msg("cut at %zu of %zu: %d", len, payload, ret);
        state_reader_close(&r);
        sw_free(&cut);
    }
    sw_free(&w);
}

/* ---- vm_kvm_state_load on hostile sections ---- */

struct vm_fields {
    struct kvm_pit_state2 pit;
    uint32_t pit_len;
    uint32_t chip_ids[KVM_NR_IRQCHIPS], chip_lens[KVM_NR_IRQCHIPS];
    struct kvm_pic_state pic;
    struct kvm_ioapic_state ioapic;
    bool no_clock, clock_truncated;
};

static struct vm_fields good_vm(void)
{
    struct vm_fields f;
    memset(&f, 0, sizeof(f));
    f.pit_len = sizeof(f.pit);
    for (unsigned i = 0; i < 3; i++) {
        f.pit.channels[i].mode = 0xff; /* never programmed */
        f.pit.channels[i].count = 0x10000;
        f.pit.channels[i].gate = i != 2;
    }
    f.pit.channels[0].mode = 2; /* rate generator, as Linux programs it */
    f.pit.channels[0].count = 1193;
    f.pit.channels[0].rw_mode = f.pit.channels[0].read_state = f.pit.channels[0].write_state = 3;
    f.pit.channels[0].count_load_time = -123456789; /* another boot's time: not checked */
    f.pit.flags = KVM_PIT_FLAGS_SPEAKER_DATA_ON;
    for (uint32_t id = 0; id < KVM_NR_IRQCHIPS; id++)
        f.chip_ids[id] = id;
    f.chip_lens[0] = f.chip_lens[1] = sizeof(struct kvm_pic_state);
    f.chip_lens[2] = sizeof(struct kvm_ioapic_state);
    f.pic.imr = 0xff;
    f.pic.irq_base = 0x30;
    f.ioapic.base_address = 0xfec00000;
    f.ioapic.id = 0xab; /* guest values, taken as they are */
    f.ioapic.redirtbl[5].bits = 0xffffffffffffffffull;
    return f;
}

static void build_vm(struct state_writer *w, const struct vm_fields *f)
{
    sw_init(w);
    sw_begin(w, "kvm-pit", VM_KVM_STATE_VERSION);
    put_blob(w, f->pit_len, &f->pit, sizeof(f->pit));
    sw_end(w);
    sw_begin(w, "kvm-irqchip", VM_KVM_STATE_VERSION);
    for (unsigned i = 0; i < KVM_NR_IRQCHIPS; i++) {
        sw_u32(w, f->chip_ids[i]);
        if (i == KVM_IRQCHIP_IOAPIC)
            put_blob(w, f->chip_lens[i], &f->ioapic, sizeof(f->ioapic));
        else
            put_blob(w, f->chip_lens[i], &f->pic, sizeof(f->pic));
    }
    sw_end(w);
    if (!f->no_clock) {
        sw_begin(w, "kvm-clock", VM_KVM_STATE_VERSION);
        sw_u64(w, 42 * NS);
        if (!f->clock_truncated)
            sw_u64(w, 1700000000ull * NS);
        sw_end(w);
    }
    assert_int_equal(sw_finish(w), 0);
}

static int load_vm(const struct vm_fields *f)
{
    struct state_writer w;
    struct state_reader r;
    struct vm vm;
    struct kvm_clock_data clock = { .clock = 1234 };

    build_vm(&w, f);
    assert_int_equal(state_reader_open(&r, w.buf, w.len), 0);
    memset(&vm, 0, sizeof(vm));
    vm.kvm_fd = vm.vm_fd = -1;
    vm.clock_at_pause = &clock;
    int ret = vm_kvm_state_load(&vm, &r);
    assert_int_equal(clock.clock, 1234); /* untouched unless KVM took the clock */
    state_reader_close(&r);
    sw_free(&w);
    return ret;
}

static void test_vm_good_sections_reach_kvm(void **state)
{
    (void)state;
    struct vm_fields f = good_vm();
    assert_int_equal(load_vm(&f), -EBADF);
}

/* Hostile change number `which` to a good section: returns the error the loader must give,
 * or 0 past the last one. */
static int mutate_vm(struct vm_fields *f, unsigned which, const char **what)
{
    switch (which) {
    case 0: *what = "pit length"; f->pit_len = sizeof(struct kvm_pit_state); return -EINVAL;
    case 1: *what = "pit mode 6"; f->pit.channels[1].mode = 6; return -EINVAL;
    case 2: *what = "pit count"; f->pit.channels[0].count = 0x10001; return -EINVAL;
    case 3: *what = "pit rw mode"; f->pit.channels[2].rw_mode = 4; return -EINVAL;
    case 4: *what = "pit read state"; f->pit.channels[0].read_state = 5; return -EINVAL;
    case 5: *what = "pit gate"; f->pit.channels[0].gate = 2; return -EINVAL;
    case 6: *what = "pit flags"; f->pit.flags = 4; return -EINVAL;
    case 7: *what = "irqchips swapped"; f->chip_ids[0] = 1; f->chip_ids[1] = 0; return -EINVAL;
    case 8: *what = "pic length"; f->chip_lens[1] = 512; return -EINVAL;
    case 9: *what = "ioapic length"; f->chip_lens[2] = 16; return -EINVAL;
    case 10: *what = "ioapic moved"; f->ioapic.base_address = 0xfee00000; return -EINVAL;
    case 11: *what = "no clock"; f->no_clock = true; return -ENOENT;
    case 12: *what = "clock truncated"; f->clock_truncated = true; return -EPROTO;
    }
    return 0;
}

static void test_vm_hostile_sections(void **state)
{
    (void)state;
    const char *what = NULL;
    for (unsigned i = 0;; i++) {
        struct vm_fields f = good_vm();
        int expect = mutate_vm(&f, i, &what);
        if (expect == 0)
            break;
        int ret = load_vm(&f);
        if (ret != expect)
            fail_msg("%s: %d, expected %d", what, ret, expect);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_clock_after_restore),
        cmocka_unit_test(test_check_msrs),
        cmocka_unit_test(test_order_msrs),
        cmocka_unit_test(test_cpuid_same_model),
        cmocka_unit_test(test_vcpu_good_section_reaches_kvm),
        cmocka_unit_test(test_vcpu_hostile_sections),
        cmocka_unit_test(test_vcpu_truncated_everywhere),
        cmocka_unit_test(test_vm_good_sections_reach_kvm),
        cmocka_unit_test(test_vm_hostile_sections),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
