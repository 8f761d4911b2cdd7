/* msr.c: model-specific registers every vCPU starts with. */
#include <errno.h>
#include <linux/kvm.h>
#include <stdlib.h>
#include <sys/ioctl.h>

#include "log.h"
#include "vcpu/vcpu.h"

#define MSR_IA32_TSC 0x10
#define MSR_IA32_SYSENTER_CS 0x174
#define MSR_IA32_SYSENTER_ESP 0x175
#define MSR_IA32_SYSENTER_EIP 0x176
#define MSR_IA32_MISC_ENABLE 0x1a0
#define MSR_MTRR_DEF_TYPE 0x2ff
#define MSR_STAR 0xc0000081
#define MSR_LSTAR 0xc0000082
#define MSR_CSTAR 0xc0000083
#define MSR_SYSCALL_MASK 0xc0000084
#define MSR_KERNEL_GS_BASE 0xc0000102

#define MISC_ENABLE_FAST_STRING 1ULL
/* MTRRs enabled with write-back as the default type: without it the guest maps all RAM
 * uncached and runs many times slower. */
#define MTRR_DEF_TYPE_ENABLE_WB ((1ULL << 11) | 6ULL)

int vcpu_set_boot_msrs(int vcpu_fd)
{
    static const struct { uint32_t index; uint64_t value; } boot_msrs[] = {
        { MSR_IA32_SYSENTER_CS, 0 },     { MSR_IA32_SYSENTER_ESP, 0 },
        { MSR_IA32_SYSENTER_EIP, 0 },    { MSR_STAR, 0 },
        { MSR_CSTAR, 0 },                { MSR_KERNEL_GS_BASE, 0 },
        { MSR_SYSCALL_MASK, 0 },         { MSR_LSTAR, 0 },
        { MSR_IA32_TSC, 0 },             { MSR_IA32_MISC_ENABLE, MISC_ENABLE_FAST_STRING },
        { MSR_MTRR_DEF_TYPE, MTRR_DEF_TYPE_ENABLE_WB },
    };
    const unsigned n = sizeof(boot_msrs) / sizeof(boot_msrs[0]);
    struct kvm_msrs *msrs = calloc(1, sizeof(*msrs) + n * sizeof(struct kvm_msr_entry));
    if (!msrs)
        return -ENOMEM;
    msrs->nmsrs = n;
    for (unsigned i = 0; i < n; i++) {
        msrs->entries[i].index = boot_msrs[i].index;
        msrs->entries[i].data = boot_msrs[i].value;
    }
    int set = ioctl(vcpu_fd, KVM_SET_MSRS, msrs);
    free(msrs);
    if (set < 0)
        return -errno;
    /* KVM_SET_MSRS stops at the first MSR it rejects and returns how many it set. */
    if ((unsigned)set != n) {
        log_error("vcpu: KVM refused MSR 0x%x", boot_msrs[set].index);
        return -EINVAL;
    }
    return 0;
}
