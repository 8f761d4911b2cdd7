/* loader.c: kernel format detection, and the command line, initrd and zero page for all formats. */
#include "boot/loader.h"

#include <elf.h>
#include <errno.h>
#include <string.h>

#include "boot/layout.h"
#include "log.h"

_Static_assert(sizeof(struct boot_params) == 4096, "the zero page is one 4 KiB page");

enum kernel_format kernel_detect_format(const uint8_t *img, size_t len)
{
    if (!img)
        return KERNEL_FORMAT_UNKNOWN;
    if (len >= SELFMAG && memcmp(img, ELFMAG, SELFMAG) == 0)
        return KERNEL_FORMAT_ELF;
    if (len >= BZ_MAGIC_OFFSET + sizeof(uint32_t) &&
        image_u16(img, BZ_BOOT_FLAG_OFFSET) == BZ_BOOT_FLAG &&
        image_u32(img, BZ_MAGIC_OFFSET) == BZ_MAGIC)
        return KERNEL_FORMAT_BZIMAGE;
    return KERNEL_FORMAT_UNKNOWN;
}

int boot_load_linux(const struct guest_memory *gm, const struct boot_request *req,
                    struct boot_entry *entry)
{
    switch (kernel_detect_format(req->kernel, req->kernel_len)) {
    case KERNEL_FORMAT_ELF:
        return elf_load_kernel(gm, req, entry);
    case KERNEL_FORMAT_BZIMAGE:
        return bzimage_load_kernel(gm, req, entry);
    case KERNEL_FORMAT_UNKNOWN:
        break;
    }
    log_error("kernel: not an ELF or bzImage file");
    return -ENOEXEC;
}

static uint64_t min_u64(uint64_t a, uint64_t b)
{
    return a < b ? a : b;
}

static uint64_t max_u64(uint64_t a, uint64_t b)
{
    return a > b ? a : b;
}

static int place_cmdline(const struct guest_memory *gm, const struct boot_request *req,
                         const struct boot_limits *lim, struct boot_payload *out)
{
    const char *cmdline = req->cmdline ? req->cmdline : "";
    uint64_t max = min_u64(lim->cmdline_max, LAYOUT_CMDLINE_MAX - 1);
    size_t len = strlen(cmdline);

    if (len > max) {
        log_error("kernel: command line is %zu bytes, the kernel accepts %llu", len,
                  (unsigned long long)max);
        return -EINVAL;
    }
    if (gm_write(gm, LAYOUT_CMDLINE, cmdline, len + 1) < 0) {
        log_error("kernel: no guest RAM at %#llx for the command line",
                  (unsigned long long)LAYOUT_CMDLINE);
        return -ENOSPC;
    }
    out->cmdline_gpa = LAYOUT_CMDLINE;
    out->cmdline_len = len;
    return 0;
}

/* The highest page-aligned start with [start, start + size) inside [floor, end). */
static bool highest_fit(uint64_t floor, uint64_t end, uint64_t size, uint64_t *start)
{
    if (end < floor || size > end - floor)
        return false;
    uint64_t candidate = (end - size) & ~(BOOT_PAGE_SIZE - 1);
    if (candidate < floor)
        return false;
    *start = candidate;
    return true;
}

static int place_initrd(const struct guest_memory *gm, const struct boot_request *req,
                        const struct boot_limits *lim, struct boot_payload *out)
{
    uint64_t ram_end = gm_low_ram_end(gm);
    uint64_t end = min_u64(lim->initrd_end_max, ram_end);
    const char *end_what = lim->initrd_end_max < ram_end ? lim->initrd_limit_what
                                                         : "the end of low guest RAM";
    uint64_t size = req->initrd_len;
    uint64_t start;

    out->initrd_gpa = 0;
    out->initrd_size = 0;
    if (!req->initrd || size == 0)
        return 0;
    /* Above the kernel first; failing that, between the 1 MiB boot area and the kernel. */
    uint64_t above_kernel = max_u64(lim->kernel_end, LAYOUT_KERNEL_MIN);
    if (!highest_fit(above_kernel, end, size, &start) &&
        !highest_fit(LAYOUT_KERNEL_MIN, min_u64(end, lim->kernel_start), size, &start)) {
        log_error("initrd: %llu MiB does not fit below %#llx (%s) beside the kernel at "
                  "%#llx-%#llx",
                  (unsigned long long)((size + BOOT_MIB - 1) / BOOT_MIB), (unsigned long long)end,
                  end_what, (unsigned long long)lim->kernel_start,
                  (unsigned long long)lim->kernel_end);
        return -ENOSPC;
    }
    int ret = gm_load(gm, start, req->initrd, size);
    if (ret == -EFAULT)
        log_error("initrd: no guest RAM at %#llx", (unsigned long long)start);
    if (ret < 0)
        return ret == -EFAULT ? -ENOSPC : ret;
    out->initrd_gpa = start;
    out->initrd_size = size;
    return 0;
}

int boot_place_payload(const struct guest_memory *gm, const struct boot_request *req,
                       const struct boot_limits *lim, struct boot_payload *out)
{
    int ret = place_cmdline(gm, req, lim, out);
    return ret < 0 ? ret : place_initrd(gm, req, lim, out);
}

void boot_params_set_payload(struct boot_params *bp, const struct guest_memory *gm,
                             const struct boot_payload *payload, uint64_t rsdp_gpa)
{
    struct e820_entry_gw map[E820_MAX_ENTRIES_ZEROPAGE];
    unsigned n = e820_build(gm, map, E820_MAX_ENTRIES_ZEROPAGE);

    /* Each address is split into the 32-bit header field and its ext_* high half. */
    bp->hdr.cmd_line_ptr = (uint32_t)payload->cmdline_gpa;
    bp->ext_cmd_line_ptr = (uint32_t)(payload->cmdline_gpa >> 32);
    bp->hdr.ramdisk_image = (uint32_t)payload->initrd_gpa;
    bp->ext_ramdisk_image = (uint32_t)(payload->initrd_gpa >> 32);
    bp->hdr.ramdisk_size = (uint32_t)payload->initrd_size;
    bp->ext_ramdisk_size = (uint32_t)(payload->initrd_size >> 32);
    for (unsigned i = 0; i < n; i++) {
        bp->e820_table[i].addr = map[i].addr;
        bp->e820_table[i].size = map[i].size;
        bp->e820_table[i].type = map[i].type;
    }
    bp->e820_entries = (uint8_t)n;
    /* acpi_rsdp_addr exists from protocol 2.14; older kernels find the RSDP by scanning. */
    if (bp->hdr.version >= 0x020e)
        bp->acpi_rsdp_addr = rsdp_gpa;
}

int boot_params_install(const struct guest_memory *gm, const struct boot_params *bp,
                        uint64_t rip, struct boot_entry *entry)
{
    if (gm_write(gm, LAYOUT_BOOT_PARAMS, bp, sizeof(*bp)) < 0) {
        log_error("kernel: no guest RAM at %#llx for the zero page",
                  (unsigned long long)LAYOUT_BOOT_PARAMS);
        return -ENOSPC;
    }
    *entry = (struct boot_entry){
        .mode = BOOT_ENTRY_LINUX64, .rip = rip, .arg_gpa = LAYOUT_BOOT_PARAMS
    };
    return 0;
}
