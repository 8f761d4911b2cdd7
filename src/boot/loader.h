/* loader.h: what the kernel format loaders (elf.c, bzimage.c) share with loader.c; internal. */
#ifndef GODWIT_BOOT_LOADER_H
#define GODWIT_BOOT_LOADER_H

#include <asm/bootparam.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "boot/boot.h"

#define BOOT_PAGE_SIZE 4096ULL
#define BOOT_MIB (1ULL << 20)

/* The bzImage signature: boot flag at 0x1fe, then "HdrS" at 0x202 (setup header offsets). */
#define BZ_BOOT_FLAG_OFFSET 0x1fe
#define BZ_BOOT_FLAG 0xaa55
#define BZ_MAGIC_OFFSET 0x202
#define BZ_MAGIC 0x53726448u /* "HdrS" */

/* x86 COMMAND_LINE_SIZE is 2048: a vmlinux states no limit of its own, so assume that one. */
#define BOOT_VMLINUX_CMDLINE_MAX 2047ULL

/* True when [off, off + len) lies inside [0, total); written so that no sum can overflow. */
static inline bool range_within(uint64_t off, uint64_t len, uint64_t total)
{
    return off <= total && len <= total - off;
}

/* Image fields are read with memcpy: an image buffer has no alignment guarantee. */
static inline uint16_t image_u16(const uint8_t *img, size_t off)
{
    uint16_t v;
    memcpy(&v, img + off, sizeof(v));
    return v;
}

static inline uint32_t image_u32(const uint8_t *img, size_t off)
{
    uint32_t v;
    memcpy(&v, img + off, sizeof(v));
    return v;
}

/* Where the kernel is and what it accepts; the format loader fills this for loader.c. */
struct boot_limits {
    uint64_t kernel_start, kernel_end; /* guest physical range the kernel occupies */
    uint64_t initrd_end_max;           /* the initrd must end at or below this address */
    const char *initrd_limit_what;     /* names that limit in messages */
    uint64_t cmdline_max;              /* longest command line, its NUL not counted */
};

/* Where the command line and the initrd went. */
struct boot_payload {
    uint64_t cmdline_gpa;
    uint64_t cmdline_len; /* without the NUL */
    uint64_t initrd_gpa;  /* 0 when there is no initrd */
    uint64_t initrd_size;
};

/* Copies the command line to LAYOUT_CMDLINE and the initrd as high as `lim` allows. */
int boot_place_payload(const struct guest_memory *gm, const struct boot_request *req,
                       const struct boot_limits *lim, struct boot_payload *out);

/* Fills the zero-page fields both 64-bit entries share: command line, initrd, e820, RSDP. */
void boot_params_set_payload(struct boot_params *bp, const struct guest_memory *gm,
                             const struct boot_payload *payload, uint64_t rsdp_gpa);

/* Writes the zero page to LAYOUT_BOOT_PARAMS and describes the 64-bit entry at `rip`. */
int boot_params_install(const struct guest_memory *gm, const struct boot_params *bp,
                        uint64_t rip, struct boot_entry *entry);

/* The format loaders; each logs one line and returns -errno on failure. */
int elf_load_kernel(const struct guest_memory *gm, const struct boot_request *req,
                    struct boot_entry *entry);
int bzimage_load_kernel(const struct guest_memory *gm, const struct boot_request *req,
                        struct boot_entry *entry);

#endif
