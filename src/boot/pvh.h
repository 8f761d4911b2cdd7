/* pvh.h: the PVH boot ABI (hvm_start_info, version 1) handed to a vmlinux with a PVH entry. */
#ifndef GODWIT_PVH_H
#define GODWIT_PVH_H

#include <stdint.h>

/*
 * A kernel opts into PVH with an ELF note named "Xen" of this type whose descriptor is the
 * 32-bit physical entry point. The vCPU starts there in 32-bit protected mode, paging off,
 * with EBX = guest physical address of struct hvm_start_info.
 */
#define PVH_ELFNOTE_NAME "Xen"
#define PVH_ELFNOTE_PHYS32_ENTRY 18

#define PVH_START_MAGIC 0x336ec578u /* "xEn3" with the top bit of the 'E' set */
#define PVH_START_VERSION 1         /* version 1 adds the memory map */

/* Memory map entry types: the same numbers as e820. */
#define PVH_MEMMAP_RAM 1
#define PVH_MEMMAP_RESERVED 2
#define PVH_MEMMAP_ACPI 3

/* All addresses are guest physical; 0 means "not present". Little endian, natural layout. */
struct hvm_start_info {
    uint32_t magic;
    uint32_t version;
    uint32_t flags;
    uint32_t nr_modules;
    uint64_t modlist_paddr;  /* array of struct hvm_modlist_entry; module 0 is the initrd */
    uint64_t cmdline_paddr;  /* NUL-terminated */
    uint64_t rsdp_paddr;
    uint64_t memmap_paddr;   /* version 1: array of struct hvm_memmap_table_entry */
    uint32_t memmap_entries;
    uint32_t reserved;
};

struct hvm_modlist_entry {
    uint64_t paddr;
    uint64_t size;
    uint64_t cmdline_paddr;
    uint64_t reserved;
};

struct hvm_memmap_table_entry {
    uint64_t addr;
    uint64_t size;
    uint32_t type;
    uint32_t reserved;
};

_Static_assert(sizeof(struct hvm_start_info) == 56, "hvm_start_info is 56 bytes");
_Static_assert(sizeof(struct hvm_modlist_entry) == 32, "hvm_modlist_entry is 32 bytes");
_Static_assert(sizeof(struct hvm_memmap_table_entry) == 24, "hvm_memmap_table_entry is 24 bytes");

#endif
