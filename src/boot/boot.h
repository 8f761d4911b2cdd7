/* boot.h: kernel and initrd loading, and the boot structures handed to the guest. */
#ifndef GODWIT_BOOT_H
#define GODWIT_BOOT_H

#include <stddef.h>
#include <stdint.h>

#include "vm/memory.h"

struct boot_params;

/* How the boot vCPU must be started. */
enum boot_entry_mode {
    BOOT_ENTRY_LINUX64, /* 64-bit mode, identity paging, RSI = boot_params */
    BOOT_ENTRY_PVH,     /* 32-bit protected mode, paging off, EBX = hvm_start_info */
};

struct boot_entry {
    enum boot_entry_mode mode;
    uint64_t rip;        /* guest physical entry point */
    uint64_t arg_gpa;    /* boot_params or hvm_start_info */
};

/* What the platform tells the loader; filled by the VM builder. */
struct boot_request {
    const uint8_t *kernel; /* whole kernel image, as read from its file */
    size_t kernel_len;
    const uint8_t *initrd; /* may be NULL */
    size_t initrd_len;
    const char *cmdline;   /* may be NULL (empty) */
    uint64_t rsdp_gpa;     /* 0 when there are no ACPI tables */
    /* Set when `kernel` is a bzImage's payload, decompressed by the host (unpack.h): that
     * bzImage's setup header (in a zeroed zero page), whose limits and fields then apply. */
    const struct boot_params *bz_params;
};

/* Image kind detection from the first bytes; used to pick the loader and for messages. */
enum kernel_format { KERNEL_FORMAT_UNKNOWN, KERNEL_FORMAT_ELF, KERNEL_FORMAT_BZIMAGE };
enum kernel_format kernel_detect_format(const uint8_t *img, size_t len);
/* A bzImage's setup header in a zeroed zero page; 0 or -ENOEXEC after one line. */
int bzimage_read_header(const uint8_t *img, size_t len, struct boot_params *bp);

/*
 * Loads the kernel, initrd and command line into guest memory and writes the boot
 * structures (boot_params with its e820 map, or hvm_start_info with its memory map).
 * Returns 0, or -EINVAL/-ENOSPC/-ENOEXEC after logging one line that names the problem.
 * Never reads outside [kernel, kernel + kernel_len).
 */
int boot_load_linux(const struct guest_memory *gm, const struct boot_request *req,
                    struct boot_entry *entry);

/* e820 map for the memory layout: fills up to `max` entries, returns how many. */
struct e820_entry_gw {
    uint64_t addr;
    uint64_t size;
    uint32_t type; /* 1 = RAM, 2 = reserved, 3 = ACPI */
};
#define E820_RAM 1
#define E820_RESERVED 2
#define E820_ACPI 3
unsigned e820_build(const struct guest_memory *gm, struct e820_entry_gw *out, unsigned max);

/* ACPI tables (RSDP, XSDT, FADT, DSDT, MADT, ...) and the MP table. */
#define ACPI_MAX_CPUS 255   /* one-byte APIC IDs and processor UIDs (0xff means "all") */
#define MPTABLE_MAX_CPUS 40 /* what fits in the EBDA's last KiB */
struct platform_tables_config {
    unsigned nr_cpus;
};
/* Builds the ACPI tables in [LAYOUT_ACPI_START, LAYOUT_ACPI_END). Returns RSDP gpa or 0. */
uint64_t acpi_build(const struct guest_memory *gm, const struct platform_tables_config *cfg);
/* Builds the Intel MP table at LAYOUT_MPTABLE. Returns 0 or -ENOSPC. */
int mptable_build(const struct guest_memory *gm, const struct platform_tables_config *cfg);

#endif
