/* cpuid.c: the CPU model each vCPU sees, derived from what KVM supports plus our topology. */
#include <linux/kvm.h>
#include <stdlib.h>
#include <string.h>

#include "vcpu/vcpu.h"

#define CPUID_LEAF1_ECX_HYPERVISOR (1u << 31)
#define CPUID_LEAF1_EDX_HTT (1u << 28)
#define CPUID_TOPOLOGY_LEVEL_SMT 1
#define CPUID_TOPOLOGY_LEVEL_CORE 2

/* Bits needed to number n APIC IDs (ceil(log2(n))). */
static unsigned apic_id_bits(unsigned n)
{
    unsigned bits = 0;
    while ((1u << bits) < n)
        bits++;
    return bits;
}

/*
 * Leaves 0xb and 0x1f: one thread per core, nr_vcpus cores in one package. The guest derives
 * its topology from these, so they must agree with the APIC IDs in the MADT (0..n-1).
 */
static void set_extended_topology(struct kvm_cpuid_entry2 *e, unsigned apic_id, unsigned nr_vcpus)
{
    e->edx = apic_id;
    switch (e->index) {
    case 0:
        e->eax = 0; /* no bits for the SMT level: one thread per core */
        e->ebx = 1;
        e->ecx = (CPUID_TOPOLOGY_LEVEL_SMT << 8) | e->index;
        break;
    case 1:
        e->eax = apic_id_bits(nr_vcpus);
        e->ebx = nr_vcpus;
        e->ecx = (CPUID_TOPOLOGY_LEVEL_CORE << 8) | e->index;
        break;
    default:
        e->eax = e->ebx = 0;
        e->ecx = e->index; /* level type 0: invalid, ends the enumeration */
        break;
    }
}

static void adjust_entry(struct kvm_cpuid_entry2 *e, unsigned apic_id, unsigned nr_vcpus)
{
    switch (e->function) {
    case 1:
        /* EBX: initial APIC ID, logical processor count, CLFLUSH line size kept. */
        e->ebx = (e->ebx & 0x0000ffffu) | (apic_id << 24) | ((nr_vcpus & 0xffu) << 16);
        e->ecx |= CPUID_LEAF1_ECX_HYPERVISOR;
        if (nr_vcpus > 1)
            e->edx |= CPUID_LEAF1_EDX_HTT;
        else
            e->edx &= ~CPUID_LEAF1_EDX_HTT;
        break;
    case 4:
        /* Deterministic cache parameters: cores per package - 1 in EAX[31:26], and each
         * cache is private to its core (threads sharing it - 1 = 0 in EAX[25:14]). */
        e->eax = (e->eax & 0x3fffu) | (((nr_vcpus - 1) & 0x3fu) << 26);
        break;
    case 0xa:
        /* No virtual PMU: the guest would otherwise probe counters we do not manage. */
        e->eax = e->ebx = e->ecx = e->edx = 0;
        break;
    case 0xb:
    case 0x1f:
        set_extended_topology(e, apic_id, nr_vcpus);
        break;
    case 0x80000008:
        /* AMD: number of cores - 1, and the APIC ID size in bits. */
        e->ecx = (e->ecx & ~0xf0ffu) | ((nr_vcpus - 1) & 0xffu) | (apic_id_bits(nr_vcpus) << 12);
        break;
    case 0x8000001e:
        /* AMD: extended APIC ID; core ID = APIC ID, one thread per core; one node. */
        e->eax = apic_id;
        e->ebx = apic_id & 0xffu;
        e->ecx = 0;
        break;
    default:
        break;
    }
}

struct kvm_cpuid2 *cpuid_build(const struct kvm_cpuid2 *supported, unsigned vcpu_index,
                               unsigned nr_vcpus)
{
    if (!supported || nr_vcpus == 0 || nr_vcpus > 255 || vcpu_index >= nr_vcpus)
        return NULL;
    size_t size = sizeof(struct kvm_cpuid2) + supported->nent * sizeof(struct kvm_cpuid_entry2);
    struct kvm_cpuid2 *out = malloc(size);
    if (!out)
        return NULL;
    memcpy(out, supported, size);
    for (unsigned i = 0; i < out->nent; i++)
        adjust_entry(&out->entries[i], vcpu_index, nr_vcpus);
    return out;
}
