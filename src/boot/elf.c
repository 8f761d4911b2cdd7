/* elf.c: loads an uncompressed vmlinux (ELF64, x86-64) and starts it by PVH or the 64-bit entry. */
#include <elf.h>
#include <errno.h>
#include <string.h>

#include "boot/layout.h"
#include "boot/loader.h"
#include "boot/pvh.h"
#include "log.h"

#define ELF_MAX_PHDRS 256 /* a vmlinux has about five; more means a corrupt header */
#define FOUR_GIB 0x100000000ULL

/* The module list sits right after the start info; the memory map runs up to the zero page. */
#define PVH_MODLIST (LAYOUT_PVH_START_INFO + sizeof(struct hvm_start_info))
#define PVH_MEMMAP_MAX \
    ((unsigned)((LAYOUT_BOOT_PARAMS - LAYOUT_PVH_MEMMAP) / sizeof(struct hvm_memmap_table_entry)))
_Static_assert(PVH_MODLIST + sizeof(struct hvm_modlist_entry) <= LAYOUT_PVH_MEMMAP,
               "the PVH start info and module list fit below the memory map");

static int elf_check_header(const uint8_t *img, size_t len, Elf64_Ehdr *eh)
{
    if (len < sizeof(*eh)) {
        log_error("kernel: truncated: the ELF header needs %zu bytes, the file has %zu",
                  sizeof(*eh), len);
        return -ENOEXEC;
    }
    memcpy(eh, img, sizeof(*eh));
    if (eh->e_ident[EI_CLASS] != ELFCLASS64 || eh->e_ident[EI_DATA] != ELFDATA2LSB) {
        log_error("kernel: not a little-endian 64-bit ELF file");
        return -ENOEXEC;
    }
    if (eh->e_machine != EM_X86_64 || eh->e_type != ET_EXEC) {
        log_error("kernel: ELF machine %u type %u is not an x86-64 executable",
                  eh->e_machine, eh->e_type);
        return -ENOEXEC;
    }
    if (eh->e_phentsize != sizeof(Elf64_Phdr) || eh->e_phnum == 0 ||
        eh->e_phnum > ELF_MAX_PHDRS) {
        log_error("kernel: ELF has %u program headers of %u bytes (want 1-%d of %zu)",
                  eh->e_phnum, eh->e_phentsize, ELF_MAX_PHDRS, sizeof(Elf64_Phdr));
        return -ENOEXEC;
    }
    if (!range_within(eh->e_phoff, (uint64_t)eh->e_phnum * sizeof(Elf64_Phdr), len)) {
        log_error("kernel: truncated: the program header table extends past the end of the file");
        return -ENOEXEC;
    }
    return 0;
}

/* Only after elf_check_header: the whole table is inside the image. */
static Elf64_Phdr elf_phdr(const uint8_t *img, const Elf64_Ehdr *eh, unsigned i)
{
    Elf64_Phdr ph;
    memcpy(&ph, img + eh->e_phoff + (uint64_t)i * sizeof(ph), sizeof(ph));
    return ph;
}

static int elf_check_load_segment(const struct guest_memory *gm, size_t len,
                                  const Elf64_Phdr *ph, unsigned i)
{
    if (ph->p_filesz > ph->p_memsz) {
        log_error("kernel: program header %u has file size %#llx above its memory size %#llx", i,
                  (unsigned long long)ph->p_filesz, (unsigned long long)ph->p_memsz);
        return -ENOEXEC;
    }
    if (!range_within(ph->p_offset, ph->p_filesz, len)) {
        log_error("kernel: truncated: program header %u extends past the end of the file", i);
        return -ENOEXEC;
    }
    if (ph->p_paddr < LAYOUT_KERNEL_MIN) {
        log_error("kernel: program header %u loads at %#llx, inside the boot area below 1 MiB", i,
                  (unsigned long long)ph->p_paddr);
        return -ENOEXEC;
    }
    if (!gm_ptr(gm, ph->p_paddr, ph->p_memsz)) {
        log_error("kernel: program header %u (%#llx bytes at %#llx) is outside guest RAM", i,
                  (unsigned long long)ph->p_memsz, (unsigned long long)ph->p_paddr);
        return -ENOSPC;
    }
    return 0;
}

/* Validates every PT_LOAD and records the physical range the kernel spans. */
static int elf_check_segments(const struct guest_memory *gm, const uint8_t *img, size_t len,
                              const Elf64_Ehdr *eh, struct boot_limits *lim)
{
    lim->kernel_start = UINT64_MAX;
    lim->kernel_end = 0;
    for (unsigned i = 0; i < eh->e_phnum; i++) {
        Elf64_Phdr ph = elf_phdr(img, eh, i);
        if (ph.p_type != PT_LOAD || ph.p_memsz == 0)
            continue;
        int ret = elf_check_load_segment(gm, len, &ph, i);
        if (ret < 0)
            return ret;
        if (ph.p_paddr < lim->kernel_start)
            lim->kernel_start = ph.p_paddr;
        if (ph.p_paddr + ph.p_memsz > lim->kernel_end) /* no overflow: inside guest RAM */
            lim->kernel_end = ph.p_paddr + ph.p_memsz;
    }
    if (lim->kernel_end == 0) {
        log_error("kernel: ELF has no loadable segment");
        return -ENOEXEC;
    }
    return 0;
}

static bool elf_addr_loaded(const uint8_t *img, const Elf64_Ehdr *eh, uint64_t addr)
{
    for (unsigned i = 0; i < eh->e_phnum; i++) {
        Elf64_Phdr ph = elf_phdr(img, eh, i);
        if (ph.p_type == PT_LOAD && addr >= ph.p_paddr && addr - ph.p_paddr < ph.p_memsz)
            return true;
    }
    return false;
}

/* Segments were checked in elf_check_segments: each lies inside the file and guest RAM. */
static int elf_copy_segments(const struct guest_memory *gm, const uint8_t *img,
                             const Elf64_Ehdr *eh)
{
    for (unsigned i = 0; i < eh->e_phnum; i++) {
        Elf64_Phdr ph = elf_phdr(img, eh, i);
        if (ph.p_type != PT_LOAD || ph.p_memsz == 0)
            continue;
        int ret = gm_load(gm, ph.p_paddr, img + ph.p_offset, ph.p_filesz);
        if (ret == 0)
            ret = gm_zero(gm, ph.p_paddr + ph.p_filesz, ph.p_memsz - ph.p_filesz);
        if (ret < 0)
            return ret;
    }
    return 0;
}

static uint64_t align_up(uint64_t v, uint64_t align)
{
    return (v + align - 1) & ~(align - 1);
}

/* The PVH note's descriptor: a 32-bit entry, stored in 4 bytes or (by older kernels) in 8. */
static int pvh_note_entry(const uint8_t *desc, uint32_t descsz, uint32_t *entry)
{
    uint64_t value = 0;
    if (descsz != 4 && descsz != 8) {
        log_error("kernel: the PVH entry note has a %u-byte value (want 4 or 8)", descsz);
        return -ENOEXEC;
    }
    memcpy(&value, desc, descsz); /* little endian on both sides */
    if (value >= FOUR_GIB) {
        log_error("kernel: the PVH entry point %#llx is not a 32-bit address",
                  (unsigned long long)value);
        return -ENOEXEC;
    }
    *entry = (uint32_t)value;
    return 1;
}

/*
 * Walks the notes of one PT_NOTE segment. Returns 1 with *entry set when the PVH entry note
 * is there, 0 when it is not, -ENOEXEC for a note that runs past the segment.
 */
static int elf_scan_notes(const uint8_t *notes, uint64_t size, uint64_t align, unsigned phdr,
                          uint32_t *entry)
{
    uint64_t off = 0;
    while (off <= size && size - off >= sizeof(Elf64_Nhdr)) {
        Elf64_Nhdr nh;
        memcpy(&nh, notes + off, sizeof(nh));
        /* 32-bit sizes added to offsets below the image size: no overflow in 64 bits. */
        uint64_t name_off = off + sizeof(nh);
        uint64_t desc_off = name_off + align_up(nh.n_namesz, align);
        if (!range_within(name_off, nh.n_namesz, size) ||
            !range_within(desc_off, nh.n_descsz, size)) {
            log_error("kernel: truncated: a note in program header %u extends past its segment",
                      phdr);
            return -ENOEXEC;
        }
        if (nh.n_type == PVH_ELFNOTE_PHYS32_ENTRY && nh.n_namesz == sizeof(PVH_ELFNOTE_NAME) &&
            memcmp(notes + name_off, PVH_ELFNOTE_NAME, sizeof(PVH_ELFNOTE_NAME)) == 0)
            return pvh_note_entry(notes + desc_off, nh.n_descsz, entry);
        off = desc_off + align_up(nh.n_descsz, align);
    }
    return 0;
}

static int elf_find_pvh_entry(const uint8_t *img, size_t len, const Elf64_Ehdr *eh,
                              uint32_t *entry)
{
    for (unsigned i = 0; i < eh->e_phnum; i++) {
        Elf64_Phdr ph = elf_phdr(img, eh, i);
        if (ph.p_type != PT_NOTE)
            continue;
        if (!range_within(ph.p_offset, ph.p_filesz, len)) {
            log_error("kernel: truncated: program header %u extends past the end of the file", i);
            return -ENOEXEC;
        }
        /* Notes are 4-byte aligned in ELF64 practice; 8 only where the segment says so. */
        uint64_t align = ph.p_align == 8 ? 8 : 4;
        int found = elf_scan_notes(img + ph.p_offset, ph.p_filesz, align, i, entry);
        if (found != 0)
            return found;
    }
    return 0;
}

static int pvh_write_start_info(const struct guest_memory *gm, const struct boot_payload *payload,
                                uint64_t rsdp_gpa)
{
    struct e820_entry_gw map[PVH_MEMMAP_MAX];
    struct hvm_memmap_table_entry memmap[PVH_MEMMAP_MAX];
    unsigned n = e820_build(gm, map, PVH_MEMMAP_MAX);
    struct hvm_start_info info = {
        .magic = PVH_START_MAGIC, .version = PVH_START_VERSION,
        .cmdline_paddr = payload->cmdline_gpa, .rsdp_paddr = rsdp_gpa,
        .memmap_paddr = LAYOUT_PVH_MEMMAP, .memmap_entries = n,
    };
    struct hvm_modlist_entry initrd = { .paddr = payload->initrd_gpa,
                                        .size = payload->initrd_size };

    for (unsigned i = 0; i < n; i++) /* e820 and PVH share the type numbers */
        memmap[i] = (struct hvm_memmap_table_entry){ map[i].addr, map[i].size, map[i].type, 0 };
    if (payload->initrd_size) {
        info.nr_modules = 1;
        info.modlist_paddr = PVH_MODLIST;
    }
    if (gm_write(gm, LAYOUT_PVH_START_INFO, &info, sizeof(info)) < 0 ||
        gm_write(gm, PVH_MODLIST, &initrd, sizeof(initrd)) < 0 ||
        gm_write(gm, LAYOUT_PVH_MEMMAP, memmap, n * sizeof(memmap[0])) < 0) {
        log_error("kernel: no guest RAM at %#llx for the PVH start info",
                  (unsigned long long)LAYOUT_PVH_START_INFO);
        return -ENOSPC;
    }
    return 0;
}

/* A vmlinux has no setup header: fill in the fields the kernel reads on its 64-bit entry, or
 * take them from the bzImage it came out of. */
static int vmlinux_write_zero_page(const struct guest_memory *gm, const struct boot_payload *payload,
                                   const struct boot_request *req, uint64_t rip,
                                   struct boot_entry *entry)
{
    struct boot_params bp;

    if (req->bz_params) {
        bp = *req->bz_params;
        bp.hdr.type_of_loader = 0xff;
        boot_params_set_payload(&bp, gm, payload, req->rsdp_gpa);
        return boot_params_install(gm, &bp, rip, entry);
    }
    memset(&bp, 0, sizeof(bp));
    bp.hdr.boot_flag = BZ_BOOT_FLAG;
    bp.hdr.header = BZ_MAGIC;
    bp.hdr.version = 0x020f;
    bp.hdr.type_of_loader = 0xff; /* "undefined" loader */
    bp.hdr.kernel_alignment = 0x1000000;
    bp.hdr.cmdline_size = BOOT_VMLINUX_CMDLINE_MAX;
    boot_params_set_payload(&bp, gm, payload, req->rsdp_gpa);
    return boot_params_install(gm, &bp, rip, entry);
}

/* The bzImage's own limits when the vmlinux came out of one: what its loader would apply. */
static void vmlinux_limits(const struct boot_request *req, struct boot_limits *lim)
{
    lim->initrd_end_max = UINT64_MAX; /* no limit of its own: the end of low RAM applies */
    lim->initrd_limit_what = "the end of low guest RAM";
    lim->cmdline_max = BOOT_VMLINUX_CMDLINE_MAX;
    if (!req->bz_params)
        return;
    lim->initrd_end_max = (uint64_t)req->bz_params->hdr.initrd_addr_max + 1; /* the last byte */
    lim->initrd_limit_what = "the kernel's initrd_addr_max";
    if (req->bz_params->hdr.cmdline_size)
        lim->cmdline_max = req->bz_params->hdr.cmdline_size;
}

/* Validates everything before the first byte goes into guest memory. */
static int elf_check(const struct guest_memory *gm, const struct boot_request *req,
                     Elf64_Ehdr *eh, struct boot_limits *lim, uint64_t *rip, bool *pvh)
{
    uint32_t pvh_entry = 0;
    int ret = elf_check_header(req->kernel, req->kernel_len, eh);
    if (ret == 0)
        ret = elf_check_segments(gm, req->kernel, req->kernel_len, eh, lim);
    if (ret == 0)
        ret = elf_find_pvh_entry(req->kernel, req->kernel_len, eh, &pvh_entry);
    if (ret < 0)
        return ret;
    *pvh = ret == 1;
    /* vmlinux links e_entry at the physical startup_64; the 64-bit page tables map 4 GiB. */
    *rip = *pvh ? pvh_entry : eh->e_entry;
    if (!elf_addr_loaded(req->kernel, eh, *rip) || *rip >= FOUR_GIB) {
        log_error("kernel: %s entry point %#llx is not inside a segment below 4 GiB",
                  *pvh ? "PVH" : "ELF", (unsigned long long)*rip);
        return -ENOEXEC;
    }
    return 0;
}

int elf_load_kernel(const struct guest_memory *gm, const struct boot_request *req,
                    struct boot_entry *entry)
{
    Elf64_Ehdr eh;
    struct boot_limits lim;
    struct boot_payload payload;
    uint64_t rip;
    bool pvh;

    int ret = elf_check(gm, req, &eh, &lim, &rip, &pvh);
    if (ret < 0)
        return ret;
    if ((ret = elf_copy_segments(gm, req->kernel, &eh)) < 0)
        return ret;
    vmlinux_limits(req, &lim);
    ret = boot_place_payload(gm, req, &lim, &payload);
    if (ret < 0)
        return ret;
    if (!pvh)
        return vmlinux_write_zero_page(gm, &payload, req, rip, entry);
    ret = pvh_write_start_info(gm, &payload, req->rsdp_gpa);
    if (ret == 0)
        *entry = (struct boot_entry){
            .mode = BOOT_ENTRY_PVH, .rip = rip, .arg_gpa = LAYOUT_PVH_START_INFO
        };
    return ret;
}
