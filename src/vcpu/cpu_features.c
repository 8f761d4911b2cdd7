/* cpu_features.c: names for CPUID feature bits, so that a refusal says "avx2", not a leaf. */
#include <stddef.h>
#include <stdint.h>

#include "vcpu/vcpu.h"

struct feature {
    uint32_t function, index;
    uint8_t reg; /* CPUID_EAX .. CPUID_EDX */
    uint8_t bit;
    const char *name;
};

/* The features a guest kernel or program is likely to pick up and use at once; the names are
 * those of /proc/cpuinfo. */
static const struct feature features[] = {
    { 1, 0, CPUID_ECX, 0, "pni" },          { 1, 0, CPUID_ECX, 1, "pclmulqdq" },
    { 1, 0, CPUID_ECX, 9, "ssse3" },        { 1, 0, CPUID_ECX, 12, "fma" },
    { 1, 0, CPUID_ECX, 13, "cx16" },        { 1, 0, CPUID_ECX, 19, "sse4_1" },
    { 1, 0, CPUID_ECX, 20, "sse4_2" },      { 1, 0, CPUID_ECX, 21, "x2apic" },
    { 1, 0, CPUID_ECX, 22, "movbe" },       { 1, 0, CPUID_ECX, 23, "popcnt" },
    { 1, 0, CPUID_ECX, 24, "tsc_deadline_timer" }, { 1, 0, CPUID_ECX, 25, "aes" },
    { 1, 0, CPUID_ECX, 26, "xsave" },       { 1, 0, CPUID_ECX, 28, "avx" },
    { 1, 0, CPUID_ECX, 29, "f16c" },        { 1, 0, CPUID_ECX, 30, "rdrand" },
    { 1, 0, CPUID_EDX, 0, "fpu" },          { 1, 0, CPUID_EDX, 4, "tsc" },
    { 1, 0, CPUID_EDX, 5, "msr" },          { 1, 0, CPUID_EDX, 6, "pae" },
    { 1, 0, CPUID_EDX, 8, "cx8" },          { 1, 0, CPUID_EDX, 11, "sep" },
    { 1, 0, CPUID_EDX, 13, "pge" },         { 1, 0, CPUID_EDX, 15, "cmov" },
    { 1, 0, CPUID_EDX, 16, "pat" },         { 1, 0, CPUID_EDX, 19, "clflush" },
    { 1, 0, CPUID_EDX, 23, "mmx" },         { 1, 0, CPUID_EDX, 24, "fxsr" },
    { 1, 0, CPUID_EDX, 25, "sse" },         { 1, 0, CPUID_EDX, 26, "sse2" },
    { 7, 0, CPUID_EBX, 0, "fsgsbase" },     { 7, 0, CPUID_EBX, 3, "bmi1" },
    { 7, 0, CPUID_EBX, 4, "hle" },          { 7, 0, CPUID_EBX, 5, "avx2" },
    { 7, 0, CPUID_EBX, 7, "smep" },         { 7, 0, CPUID_EBX, 8, "bmi2" },
    { 7, 0, CPUID_EBX, 9, "erms" },         { 7, 0, CPUID_EBX, 10, "invpcid" },
    { 7, 0, CPUID_EBX, 11, "rtm" },         { 7, 0, CPUID_EBX, 16, "avx512f" },
    { 7, 0, CPUID_EBX, 17, "avx512dq" },    { 7, 0, CPUID_EBX, 18, "rdseed" },
    { 7, 0, CPUID_EBX, 19, "adx" },         { 7, 0, CPUID_EBX, 20, "smap" },
    { 7, 0, CPUID_EBX, 23, "clflushopt" },  { 7, 0, CPUID_EBX, 24, "clwb" },
    { 7, 0, CPUID_EBX, 28, "avx512cd" },    { 7, 0, CPUID_EBX, 29, "sha_ni" },
    { 7, 0, CPUID_EBX, 30, "avx512bw" },    { 7, 0, CPUID_EBX, 31, "avx512vl" },
    { 7, 0, CPUID_ECX, 1, "avx512vbmi" },   { 7, 0, CPUID_ECX, 2, "umip" },
    { 7, 0, CPUID_ECX, 3, "pku" },          { 7, 0, CPUID_ECX, 8, "gfni" },
    { 7, 0, CPUID_ECX, 9, "vaes" },         { 7, 0, CPUID_ECX, 10, "vpclmulqdq" },
    { 7, 0, CPUID_ECX, 11, "avx512_vnni" }, { 7, 0, CPUID_ECX, 16, "la57" },
    { 7, 0, CPUID_ECX, 22, "rdpid" },       { 7, 0, CPUID_EDX, 4, "fsrm" },
    { 7, 0, CPUID_EDX, 14, "serialize" },   { 0xd, 1, CPUID_EAX, 0, "xsaveopt" },
    { 0xd, 1, CPUID_EAX, 1, "xsavec" },     { 0xd, 1, CPUID_EAX, 3, "xsaves" },
    { 0x80000001, 0, CPUID_ECX, 0, "lahf_lm" }, { 0x80000001, 0, CPUID_ECX, 5, "abm" },
    { 0x80000001, 0, CPUID_ECX, 6, "sse4a" },   { 0x80000001, 0, CPUID_ECX, 8, "3dnowprefetch" },
    { 0x80000001, 0, CPUID_ECX, 11, "xop" },    { 0x80000001, 0, CPUID_ECX, 16, "fma4" },
    { 0x80000001, 0, CPUID_EDX, 11, "syscall" }, { 0x80000001, 0, CPUID_EDX, 20, "nx" },
    { 0x80000001, 0, CPUID_EDX, 26, "pdpe1gb" }, { 0x80000001, 0, CPUID_EDX, 27, "rdtscp" },
    { 0x80000001, 0, CPUID_EDX, 29, "lm" },
};

const char *cpu_feature_name(uint32_t function, uint32_t index, unsigned reg, unsigned bit)
{
    for (size_t i = 0; i < sizeof(features) / sizeof(features[0]); i++) {
        const struct feature *f = &features[i];
        if (f->function == function && f->index == index && f->reg == reg && f->bit == bit)
            return f->name;
    }
    return NULL;
}
