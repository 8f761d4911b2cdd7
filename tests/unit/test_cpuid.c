/* test_cpuid.c: each vCPU's CPUID carries its own APIC ID and the VM's topology. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <cmocka.h>

#include "vcpu/vcpu.h"

static struct kvm_cpuid2 *fake_supported(void)
{
    static const struct kvm_cpuid_entry2 entries[] = {
        { .function = 0, .eax = 0x1f, .ebx = 0x68747541 },
        { .function = 1, .eax = 0x00a00f11, .ebx = 0x00000800, .ecx = 0x7ed8320b, .edx = 0x178bfbff },
        { .function = 4, .index = 0, .eax = 0x00000121 },
        { .function = 0xa, .eax = 0x07300805, .ebx = 0x7, .edx = 0x603 },
        { .function = 0xb, .index = 0 }, { .function = 0xb, .index = 1 }, { .function = 0xb, .index = 2 },
        { .function = 0x80000008, .eax = 0x3030, .ecx = 0x7007 },
        { .function = 0x8000001e, .eax = 0x1234, .ebx = 0x0101, .ecx = 0x0300 },
    };
    size_t n = sizeof(entries) / sizeof(entries[0]);
    struct kvm_cpuid2 *c = calloc(1, sizeof(*c) + n * sizeof(entries[0]));
    c->nent = (uint32_t)n;
    for (size_t i = 0; i < n; i++)
        c->entries[i] = entries[i];
    return c;
}

static const struct kvm_cpuid_entry2 *find(const struct kvm_cpuid2 *c, uint32_t fn, uint32_t index)
{
    for (uint32_t i = 0; i < c->nent; i++)
        if (c->entries[i].function == fn && c->entries[i].index == index)
            return &c->entries[i];
    fail_msg("leaf 0x%x.%u missing", fn, index);
    return NULL;
}

static void test_apic_ids_and_counts(void **state)
{
    (void)state;
    struct kvm_cpuid2 *supported = fake_supported();
    for (unsigned n = 1; n <= 8; n++) {
        for (unsigned id = 0; id < n; id++) {
            struct kvm_cpuid2 *c = cpuid_build(supported, id, n);
            assert_non_null(c);
            const struct kvm_cpuid_entry2 *l1 = find(c, 1, 0);
            assert_int_equal(l1->ebx >> 24, id);
            assert_int_equal((l1->ebx >> 16) & 0xff, n);
            assert_int_equal(l1->ebx & 0xffff, 0x0800); /* CLFLUSH size kept */
            assert_true(l1->ecx & (1u << 31));          /* hypervisor present */
            assert_int_equal(!!(l1->edx & (1u << 28)), n > 1);
            assert_int_equal(find(c, 0xb, 0)->edx, id);
            assert_int_equal(find(c, 0xb, 1)->ebx, n);
            assert_int_equal((find(c, 0xb, 1)->ecx >> 8) & 0xff, 2); /* core level */
            assert_int_equal((find(c, 0xb, 2)->ecx >> 8) & 0xff, 0); /* end of levels */
            assert_true((1u << find(c, 0xb, 1)->eax) >= n);
            assert_int_equal(find(c, 4, 0)->eax >> 26, n - 1);
            assert_int_equal(find(c, 0x80000008, 0)->ecx & 0xff, n - 1);
            assert_int_equal(find(c, 0x8000001e, 0)->eax, id);
            assert_int_equal(find(c, 0xa, 0)->eax, 0); /* no PMU */
            free(c);
        }
    }
    free(supported);
}

static void test_invalid_arguments(void **state)
{
    (void)state;
    struct kvm_cpuid2 *supported = fake_supported();
    assert_null(cpuid_build(supported, 2, 2));
    assert_null(cpuid_build(supported, 0, 0));
    assert_null(cpuid_build(supported, 0, 256));
    assert_null(cpuid_build(NULL, 0, 1));
    free(supported);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_apic_ids_and_counts),
        cmocka_unit_test(test_invalid_arguments),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
