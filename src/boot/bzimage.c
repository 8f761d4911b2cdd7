/* bzimage.c: loads a bzImage by the Linux/x86 boot protocol (2.12 and later), 64-bit entry. */
#include <errno.h>
#include <stddef.h>
#include <string.h>

#include "boot/layout.h"
#include "boot/loader.h"
#include "log.h"

#define BZ_MIN_VERSION 0x020c     /* 2.12: xloadflags, so the 64-bit entry can be checked */
#define BZ_VERSION_OFFSET 0x206
#define BZ_JUMP_OFFSET 0x200      /* "jmp short": its displacement gives the header's end */
#define BZ_HEADER_START offsetof(struct boot_params, hdr) /* 0x1f1 */
#define BZ_SECTOR 512
#define BZ_DEFAULT_SETUP_SECTS 4  /* setup_sects 0 means 4, for very old images */
#define BZ_ENTRY64_OFFSET 0x200   /* startup_64 sits 512 bytes into the protected-mode code */
#define BZ_HEAP_END 0xfe00        /* the real-mode heap ends 512 bytes below the 64 KiB setup */
#define BZ_LOADER_UNDEFINED 0xff

/* A 2.12 header reaches at least to the end of init_size, the last field read here. */
#define BZ_HEADER_MIN_END \
    (BZ_HEADER_START + offsetof(struct setup_header, init_size) + sizeof(uint32_t))
#define BZ_HEADER_MAX_END (BZ_HEADER_START + sizeof(struct setup_header))

/* Where the protected-mode kernel is in the file, and how much memory it needs once loaded. */
struct bz_kernel {
    size_t offset;      /* file offset of the protected-mode code */
    uint64_t size;      /* its length: syssize paragraphs */
    uint64_t footprint; /* memory from the load address: max(init_size, size) */
    uint64_t load_addr;
};

/* Copies the setup header into a zeroed zero page, after checking the protocol version. */
int bzimage_read_header(const uint8_t *img, size_t len, struct boot_params *bp)
{
    if (len < BZ_VERSION_OFFSET + sizeof(uint16_t)) {
        log_error("kernel: truncated: the bzImage ends inside its setup header");
        return -ENOEXEC;
    }
    uint16_t version = image_u16(img, BZ_VERSION_OFFSET);
    if (version < BZ_MIN_VERSION) {
        log_error("kernel: bzImage protocol %u.%02u is too old (need 2.12 for the 64-bit entry)",
                  version >> 8, version & 0xff);
        return -ENOEXEC;
    }
    size_t header_end = BZ_JUMP_OFFSET + 2 + img[BZ_JUMP_OFFSET + 1];
    if (header_end < BZ_HEADER_MIN_END) {
        log_error("kernel: bzImage setup header ends at %#zx, too short for protocol 2.12",
                  header_end);
        return -ENOEXEC;
    }
    if (header_end > len) {
        log_error("kernel: truncated: the bzImage setup header ends at %#zx, past the end of "
                  "the file", header_end);
        return -ENOEXEC;
    }
    /* Fields newer than our copy of struct setup_header stay behind: we do not know them. */
    if (header_end > BZ_HEADER_MAX_END)
        header_end = BZ_HEADER_MAX_END;
    memset(bp, 0, sizeof(*bp));
    memcpy(&bp->hdr, img + BZ_HEADER_START, header_end - BZ_HEADER_START);
    return 0;
}

static int bz_find_kernel(const struct setup_header *hdr, size_t len, struct bz_kernel *k)
{
    if (!(hdr->xloadflags & XLF_KERNEL_64)) {
        log_error("kernel: bzImage has no 64-bit entry point (XLF_KERNEL_64 is not set)");
        return -ENOEXEC;
    }
    unsigned setup_sects = hdr->setup_sects ? hdr->setup_sects : BZ_DEFAULT_SETUP_SECTS;
    k->offset = (size_t)(setup_sects + 1) * BZ_SECTOR;
    k->size = (uint64_t)hdr->syssize * 16;
    if (k->size == 0) {
        log_error("kernel: bzImage declares no protected-mode code (syssize is 0)");
        return -ENOEXEC;
    }
    if (!range_within(k->offset, k->size, len)) {
        log_error("kernel: truncated: the bzImage's %llu-byte kernel at offset %#zx extends past "
                  "the end of the file (%zu bytes)", (unsigned long long)k->size, k->offset, len);
        return -ENOEXEC;
    }
    k->footprint = hdr->init_size > k->size ? hdr->init_size : k->size;
    return 0;
}

/* pref_address when it fits in low RAM, else the first aligned address from 1 MiB. */
static int bz_choose_load_addr(const struct guest_memory *gm, const struct setup_header *hdr,
                               struct bz_kernel *k)
{
    /* Low RAM only: the identity map of the 64-bit entry covers the first 4 GiB. */
    uint64_t ram_end = gm_low_ram_end(gm);
    uint64_t align = hdr->kernel_alignment;

    if (hdr->pref_address >= LAYOUT_KERNEL_MIN &&
        range_within(hdr->pref_address, k->footprint, ram_end)) {
        k->load_addr = hdr->pref_address;
        return 0;
    }
    if (!hdr->relocatable_kernel) {
        log_error("kernel: bzImage is not relocatable and its %llu MiB at %#llx do not fit in "
                  "guest RAM", (unsigned long long)(k->footprint >> 20),
                  (unsigned long long)hdr->pref_address);
        return -ENOSPC;
    }
    if (align == 0 || (align & (align - 1)) != 0) {
        log_error("kernel: bzImage kernel_alignment %#llx is not a power of two",
                  (unsigned long long)align);
        return -ENOEXEC;
    }
    k->load_addr = (LAYOUT_KERNEL_MIN + align - 1) & ~(align - 1);
    if (!range_within(k->load_addr, k->footprint, ram_end)) {
        log_error("kernel: bzImage needs %llu MiB from %#llx, more than guest RAM holds",
                  (unsigned long long)(k->footprint >> 20), (unsigned long long)k->load_addr);
        return -ENOSPC;
    }
    return 0;
}

static void bz_fill_zero_page(struct boot_params *bp, const struct guest_memory *gm,
                              const struct boot_payload *payload, uint64_t rsdp_gpa,
                              const struct bz_kernel *k)
{
    bp->hdr.type_of_loader = BZ_LOADER_UNDEFINED;
    bp->hdr.loadflags |= CAN_USE_HEAP;
    bp->hdr.heap_end_ptr = BZ_HEAP_END;
    bp->hdr.code32_start = (uint32_t)k->load_addr; /* below 4 GiB: checked at placement */
    boot_params_set_payload(bp, gm, payload, rsdp_gpa); /* RSDP only from protocol 2.14 */
}

int bzimage_load_kernel(const struct guest_memory *gm, const struct boot_request *req,
                        struct boot_entry *entry)
{
    struct boot_params bp;
    struct bz_kernel k = { 0 };
    struct boot_payload payload;

    int ret = bzimage_read_header(req->kernel, req->kernel_len, &bp);
    if (ret == 0)
        ret = bz_find_kernel(&bp.hdr, req->kernel_len, &k);
    if (ret == 0)
        ret = bz_choose_load_addr(gm, &bp.hdr, &k);
    if (ret < 0)
        return ret;
    ret = gm_load(gm, k.load_addr, req->kernel + k.offset, k.size);
    if (ret == -EFAULT) /* cannot happen after bz_choose_load_addr; checked all the same */
        log_error("kernel: no guest RAM at %#llx for the bzImage",
                  (unsigned long long)k.load_addr);
    if (ret < 0)
        return ret == -EFAULT ? -ENOSPC : ret;

    struct boot_limits lim = {
        .kernel_start = k.load_addr,
        .kernel_end = k.load_addr + k.footprint,
        .initrd_end_max = (uint64_t)bp.hdr.initrd_addr_max + 1, /* the field is the last byte */
        .initrd_limit_what = "the kernel's initrd_addr_max",
        .cmdline_max = bp.hdr.cmdline_size,
    };
    ret = boot_place_payload(gm, req, &lim, &payload);
    if (ret < 0)
        return ret;
    bz_fill_zero_page(&bp, gm, &payload, req->rsdp_gpa, &k);
    return boot_params_install(gm, &bp, k.load_addr + BZ_ENTRY64_OFFSET, entry);
}
