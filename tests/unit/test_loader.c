/* test_loader.c: kernel loading (vmlinux ELF, PVH, bzImage), boot structures, corrupt images. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <elf.h>
#include <sys/mman.h>
#include <cmocka.h>

#include <asm/bootparam.h>

#include "boot/boot.h"
#include "boot/layout.h"
#include "boot/pvh.h"
#include "log.h"

#define MIB (1ULL << 20)
#define RAM_SIZE (128 * MIB)
#define KERNEL_PADDR (16 * MIB)
#define PAYLOAD_LEN 8192u
#define RSDP_GPA 0xe0000ULL
#define CMDLINE "console=ttyS0 panic=-1"

/* Synthetic vmlinux: Ehdr, PT_LOAD + PT_NOTE headers, two notes, then the one segment. */
#define ELF_NOTES_OFF (sizeof(Elf64_Ehdr) + 2 * sizeof(Elf64_Phdr))
#define ELF_PAYLOAD_OFF 0x100u
#define ELF_LEN (ELF_PAYLOAD_OFF + PAYLOAD_LEN)
#define ELF_ENTRY_OFF 0x40u  /* e_entry: startup_64 inside the segment */
#define PVH_ENTRY_OFF 0x180u /* the PVH note's 32-bit entry */
#define ELF_BSS 0x3000u

/* Synthetic bzImage: boot sector + setup sectors with the header, then the "kernel". */
#define BZ_MAX_LEN ((255 + 1) * 512 + PAYLOAD_LEN)

struct elf_opts {
    bool pvh;
    uint32_t pvh_descsz; /* 4 (current kernels) or 8 (older ones) */
    uint64_t paddr;
};

struct bz_opts {
    uint16_t version;
    uint8_t setup_sects;
    uint16_t xloadflags;
    uint64_t pref_address;
    uint32_t init_size;
    uint32_t kernel_alignment;
    uint8_t relocatable;
    uint32_t cmdline_size;
    uint32_t initrd_addr_max;
};

struct loaded {
    int ret;
    struct boot_entry entry;
};

static void quiet_logs(bool quiet)
{
    /* The corrupt-image loops would print thousands of (expected) error lines. */
    log_set_level(quiet ? (enum log_level)0 : LOG_LVL_INFO);
}

static uint8_t payload_byte(size_t i)
{
    return (uint8_t)(i * 7 + 3);
}

static void fill_payload(uint8_t *dst)
{
    for (size_t i = 0; i < PAYLOAD_LEN; i++)
        dst[i] = payload_byte(i);
}

/* ---- image builders ---- */

static size_t put_note(uint8_t *dst, const char *name, uint32_t type, const void *desc,
                       uint32_t descsz)
{
    Elf64_Nhdr nh = { .n_namesz = (uint32_t)strlen(name) + 1, .n_descsz = descsz, .n_type = type };
    size_t name_len = (nh.n_namesz + 3u) & ~3u;
    size_t desc_len = (descsz + 3u) & ~3u;
    memcpy(dst, &nh, sizeof(nh));
    memcpy(dst + sizeof(nh), name, nh.n_namesz);
    memcpy(dst + sizeof(nh) + name_len, desc, descsz);
    return sizeof(nh) + name_len + desc_len;
}

static size_t make_elf(uint8_t *buf, const struct elf_opts *o)
{
    Elf64_Ehdr eh = { .e_type = ET_EXEC, .e_machine = EM_X86_64, .e_version = EV_CURRENT,
                      .e_entry = o->paddr + ELF_ENTRY_OFF, .e_phoff = sizeof(Elf64_Ehdr),
                      .e_ehsize = sizeof(Elf64_Ehdr), .e_phentsize = sizeof(Elf64_Phdr),
                      .e_phnum = 2 };
    Elf64_Phdr load = { .p_type = PT_LOAD, .p_flags = PF_R | PF_X, .p_offset = ELF_PAYLOAD_OFF,
                        .p_vaddr = 0xffffffff80000000ULL + o->paddr, .p_paddr = o->paddr,
                        .p_filesz = PAYLOAD_LEN, .p_memsz = PAYLOAD_LEN + ELF_BSS,
                        .p_align = 4096 };
    Elf64_Phdr note = { .p_type = PT_NOTE, .p_flags = PF_R, .p_offset = ELF_NOTES_OFF,
                        .p_align = 4 };
    uint64_t pvh_entry = o->paddr + PVH_ENTRY_OFF;
    size_t notes = 0;

    memset(buf, 0, ELF_LEN);
    memcpy(eh.e_ident, ELFMAG, SELFMAG);
    eh.e_ident[EI_CLASS] = ELFCLASS64;
    eh.e_ident[EI_DATA] = ELFDATA2LSB;
    eh.e_ident[EI_VERSION] = EV_CURRENT;
    /* A note of another kind first (6-byte value: exercises padding), then the PVH one. */
    notes += put_note(buf + ELF_NOTES_OFF, "Linux", 1, "6.1.0", 6);
    if (o->pvh)
        notes += put_note(buf + ELF_NOTES_OFF + notes, "Xen", PVH_ELFNOTE_PHYS32_ENTRY,
                          &pvh_entry, o->pvh_descsz);
    note.p_filesz = notes;
    memcpy(buf, &eh, sizeof(eh));
    memcpy(buf + sizeof(eh), &load, sizeof(load));
    memcpy(buf + sizeof(eh) + sizeof(load), &note, sizeof(note));
    fill_payload(buf + ELF_PAYLOAD_OFF);
    return ELF_LEN;
}

static struct elf_opts elf_plain(void)
{
    return (struct elf_opts){ .pvh = false, .paddr = KERNEL_PADDR };
}

static struct elf_opts elf_pvh(void)
{
    return (struct elf_opts){ .pvh = true, .pvh_descsz = 4, .paddr = KERNEL_PADDR };
}

static Elf64_Ehdr get_ehdr(const uint8_t *buf)
{
    Elf64_Ehdr eh;
    memcpy(&eh, buf, sizeof(eh));
    return eh;
}

static void put_ehdr(uint8_t *buf, const Elf64_Ehdr *eh)
{
    memcpy(buf, eh, sizeof(*eh));
}

static Elf64_Phdr get_phdr(const uint8_t *buf, unsigned i)
{
    Elf64_Phdr ph;
    memcpy(&ph, buf + sizeof(Elf64_Ehdr) + i * sizeof(ph), sizeof(ph));
    return ph;
}

static void put_phdr(uint8_t *buf, unsigned i, const Elf64_Phdr *ph)
{
    memcpy(buf + sizeof(Elf64_Ehdr) + i * sizeof(*ph), ph, sizeof(*ph));
}

static struct bz_opts bz_defaults(void)
{
    return (struct bz_opts){ .version = 0x020f, .setup_sects = 4,
                             .xloadflags = XLF_KERNEL_64 | XLF_CAN_BE_LOADED_ABOVE_4G,
                             .pref_address = KERNEL_PADDR, .init_size = 4 * MIB,
                             .kernel_alignment = 2 * MIB, .relocatable = 1,
                             .cmdline_size = 2047, .initrd_addr_max = 0x7fffffff };
}

static size_t bz_kernel_offset(const struct bz_opts *o)
{
    return ((size_t)(o->setup_sects ? o->setup_sects : 4) + 1) * 512;
}

static size_t make_bzimage(uint8_t *buf, const struct bz_opts *o)
{
    struct setup_header h;
    size_t kernel_off = bz_kernel_offset(o);

    memset(&h, 0, sizeof(h));
    h.setup_sects = o->setup_sects;
    h.syssize = PAYLOAD_LEN / 16;
    h.vid_mode = 0xffff;
    h.boot_flag = 0xaa55;
    h.jump = 0x66eb; /* "jmp short +0x66": the header ends at 0x268 */
    h.header = 0x53726448;
    h.version = o->version;
    h.loadflags = LOADED_HIGH;
    h.code32_start = 0x100000;
    h.initrd_addr_max = o->initrd_addr_max;
    h.kernel_alignment = o->kernel_alignment;
    h.relocatable_kernel = o->relocatable;
    h.xloadflags = o->xloadflags;
    h.cmdline_size = o->cmdline_size;
    h.pref_address = o->pref_address;
    h.init_size = o->init_size;
    memset(buf, 0xcc, kernel_off); /* setup code stands in as int3s */
    memcpy(buf + offsetof(struct boot_params, hdr), &h, sizeof(h));
    fill_payload(buf + kernel_off);
    return kernel_off + PAYLOAD_LEN;
}

/* ---- helpers ---- */

static int setup_ram(void **state)
{
    struct guest_memory *gm = malloc(sizeof(*gm));
    if (!gm || gm_init(gm, RAM_SIZE, false) < 0) {
        free(gm);
        return -1;
    }
    *state = gm;
    return 0;
}

static int teardown_ram(void **state)
{
    gm_destroy(*state);
    free(*state);
    return 0;
}

static struct loaded load(const struct guest_memory *gm, const uint8_t *img, size_t len,
                          const char *cmdline, const void *initrd, size_t initrd_len)
{
    struct boot_request req = { .kernel = img, .kernel_len = len, .initrd = initrd,
                                .initrd_len = initrd_len, .cmdline = cmdline,
                                .rsdp_gpa = RSDP_GPA };
    struct loaded out;
    memset(&out, 0, sizeof(out));
    out.ret = boot_load_linux(gm, &req, &out.entry);
    return out;
}

static struct boot_params read_zero_page(const struct guest_memory *gm)
{
    struct boot_params bp;
    assert_int_equal(gm_read(gm, LAYOUT_BOOT_PARAMS, &bp, sizeof(bp)), 0);
    return bp;
}

static void assert_payload_at(const struct guest_memory *gm, uint64_t gpa)
{
    const uint8_t *p = gm_ptr(gm, gpa, PAYLOAD_LEN);
    assert_non_null(p);
    for (size_t i = 0; i < PAYLOAD_LEN; i++)
        if (p[i] != payload_byte(i))
            fail_msg("payload byte %zu at %#llx is %#x", i, (unsigned long long)gpa, p[i]);
}

static void assert_cmdline_at(const struct guest_memory *gm, uint64_t gpa, const char *expect)
{
    const char *s = gm_ptr(gm, gpa, strlen(expect) + 1);
    assert_non_null(s);
    assert_memory_equal(s, expect, strlen(expect) + 1); /* NUL included */
}

/* Page aligned, inside [1 MiB, limit), clear of the kernel, bytes intact. */
static void assert_initrd_at(const struct guest_memory *gm, uint64_t gpa, const uint8_t *data,
                             size_t len, uint64_t kernel_start, uint64_t kernel_end,
                             uint64_t limit)
{
    assert_int_equal(gpa % 4096, 0);
    assert_true(gpa >= LAYOUT_KERNEL_MIN);
    assert_true(gpa + len <= limit);
    assert_true(gpa + len <= kernel_start || gpa >= kernel_end);
    const uint8_t *p = gm_ptr(gm, gpa, len);
    assert_non_null(p);
    assert_memory_equal(p, data, len);
}

static uint8_t *make_initrd(size_t len)
{
    uint8_t *d = malloc(len);
    assert_non_null(d);
    for (size_t i = 0; i < len; i++)
        d[i] = (uint8_t)(i ^ (i >> 8) ^ 0x5a);
    return d;
}

/* Every proper prefix of a valid image must be refused, and never read past its end. */
static void assert_every_prefix_refused(const struct guest_memory *gm, const uint8_t *img,
                                        size_t len)
{
    quiet_logs(true);
    for (size_t cut = 0; cut < len; cut++) {
        uint8_t *copy = malloc(cut ? cut : 1); /* exact size: ASan sees any over-read */
        assert_non_null(copy);
        memcpy(copy, img, cut);
        struct loaded l = load(gm, copy, cut, CMDLINE, NULL, 0);
        free(copy);
        if (l.ret != -ENOEXEC) {
            quiet_logs(false);
            fail_msg("a %zu-byte prefix of a %zu-byte image gave %d", cut, len, l.ret);
        }
    }
    quiet_logs(false);
}

static int load_quietly(const struct guest_memory *gm, const uint8_t *img, size_t len)
{
    quiet_logs(true);
    struct loaded l = load(gm, img, len, CMDLINE, NULL, 0);
    quiet_logs(false);
    return l.ret;
}

/* ---- format detection ---- */

static void test_detects_formats(void **state)
{
    (void)state;
    static uint8_t elf[ELF_LEN], bz[BZ_MAX_LEN];
    struct bz_opts o = bz_defaults();

    make_elf(elf, &(struct elf_opts){ .paddr = KERNEL_PADDR });
    size_t bz_len = make_bzimage(bz, &o);
    assert_int_equal(kernel_detect_format(elf, ELF_LEN), KERNEL_FORMAT_ELF);
    assert_int_equal(kernel_detect_format(bz, bz_len), KERNEL_FORMAT_BZIMAGE);
    assert_int_equal(kernel_detect_format(bz, 0x205), KERNEL_FORMAT_UNKNOWN);
    assert_int_equal(kernel_detect_format(elf, 3), KERNEL_FORMAT_UNKNOWN);
    assert_int_equal(kernel_detect_format(NULL, 0), KERNEL_FORMAT_UNKNOWN);
    bz[0x202] = 'X';
    assert_int_equal(kernel_detect_format(bz, bz_len), KERNEL_FORMAT_UNKNOWN);
}

static void test_refuses_unknown_format(void **state)
{
    const uint8_t junk[1024] = { 'M', 'Z' };
    assert_int_equal(load_quietly(*state, junk, sizeof(junk)), -ENOEXEC);
    assert_int_equal(load_quietly(*state, NULL, 0), -ENOEXEC);
}

/* ---- vmlinux, 64-bit entry ---- */

static void test_elf_loads_segment_and_zero_page(void **state)
{
    const struct guest_memory *gm = *state;
    static uint8_t img[ELF_LEN];
    size_t initrd_len = 10000;
    uint8_t *initrd = make_initrd(initrd_len);
    uint8_t *bss = gm_ptr(gm, KERNEL_PADDR + PAYLOAD_LEN, ELF_BSS);

    memset(bss, 0xee, ELF_BSS); /* stale bytes the loader must clear */
    struct loaded l = load(gm, img, make_elf(img, &(struct elf_opts){ .paddr = KERNEL_PADDR }),
                           CMDLINE, initrd, initrd_len);
    assert_int_equal(l.ret, 0);
    assert_int_equal(l.entry.mode, BOOT_ENTRY_LINUX64);
    assert_int_equal(l.entry.rip, KERNEL_PADDR + ELF_ENTRY_OFF);
    assert_int_equal(l.entry.arg_gpa, LAYOUT_BOOT_PARAMS);
    assert_payload_at(gm, KERNEL_PADDR);
    for (size_t i = 0; i < ELF_BSS; i++)
        assert_int_equal(bss[i], 0);

    struct boot_params bp = read_zero_page(gm);
    assert_int_equal(bp.hdr.boot_flag, 0xaa55);
    assert_int_equal(bp.hdr.header, 0x53726448);
    assert_int_equal(bp.hdr.version, 0x020f);
    assert_int_equal(bp.hdr.type_of_loader, 0xff);
    assert_int_equal(bp.hdr.kernel_alignment, 0x1000000);
    assert_int_equal(bp.hdr.cmd_line_ptr, LAYOUT_CMDLINE);
    assert_int_equal(bp.ext_cmd_line_ptr, 0);
    assert_cmdline_at(gm, LAYOUT_CMDLINE, CMDLINE);
    assert_int_equal(bp.acpi_rsdp_addr, RSDP_GPA);
    assert_int_equal(bp.e820_entries, 5); /* the 4 of low RAM and the ECAM window */
    assert_int_equal(bp.e820_table[3].addr, LAYOUT_KERNEL_MIN);
    assert_int_equal(bp.e820_table[3].size, RAM_SIZE - LAYOUT_KERNEL_MIN);
    assert_int_equal(bp.e820_table[3].type, E820_RAM);
    assert_int_equal(bp.hdr.ramdisk_size, initrd_len);
    assert_int_equal(bp.ext_ramdisk_image, 0);
    /* Highest page-aligned spot: right below the end of RAM. */
    assert_int_equal(bp.hdr.ramdisk_image, (RAM_SIZE - initrd_len) & ~4095ULL);
    assert_initrd_at(gm, bp.hdr.ramdisk_image, initrd, initrd_len, KERNEL_PADDR,
                     KERNEL_PADDR + PAYLOAD_LEN + ELF_BSS, RAM_SIZE);
    free(initrd);
}

static void test_elf_without_cmdline_or_initrd(void **state)
{
    const struct guest_memory *gm = *state;
    static uint8_t img[ELF_LEN];
    struct elf_opts o = elf_plain();

    struct loaded l = load(gm, img, make_elf(img, &o), NULL, NULL, 0);
    assert_int_equal(l.ret, 0);
    struct boot_params bp = read_zero_page(gm);
    assert_cmdline_at(gm, bp.hdr.cmd_line_ptr, "");
    assert_int_equal(bp.hdr.ramdisk_image, 0);
    assert_int_equal(bp.hdr.ramdisk_size, 0);
}

/* ---- vmlinux, PVH entry ---- */

static void check_pvh_load(const struct guest_memory *gm, uint32_t descsz)
{
    static uint8_t img[ELF_LEN];
    struct elf_opts o = elf_pvh();
    size_t initrd_len = 3 * MIB + 5;
    uint8_t *initrd = make_initrd(initrd_len);

    o.pvh_descsz = descsz;
    struct loaded l = load(gm, img, make_elf(img, &o), CMDLINE, initrd, initrd_len);
    assert_int_equal(l.ret, 0);
    assert_int_equal(l.entry.mode, BOOT_ENTRY_PVH);
    assert_int_equal(l.entry.rip, KERNEL_PADDR + PVH_ENTRY_OFF);
    assert_int_equal(l.entry.arg_gpa, LAYOUT_PVH_START_INFO);
    assert_payload_at(gm, KERNEL_PADDR);

    struct hvm_start_info si;
    assert_int_equal(gm_read(gm, LAYOUT_PVH_START_INFO, &si, sizeof(si)), 0);
    assert_int_equal(si.magic, PVH_START_MAGIC);
    assert_int_equal(si.version, 1);
    assert_int_equal(si.rsdp_paddr, RSDP_GPA);
    assert_cmdline_at(gm, si.cmdline_paddr, CMDLINE);
    assert_int_equal(si.nr_modules, 1);

    struct hvm_modlist_entry mod;
    assert_int_equal(gm_read(gm, si.modlist_paddr, &mod, sizeof(mod)), 0);
    assert_int_equal(mod.size, initrd_len);
    assert_initrd_at(gm, mod.paddr, initrd, initrd_len, KERNEL_PADDR,
                     KERNEL_PADDR + PAYLOAD_LEN + ELF_BSS, RAM_SIZE);

    struct e820_entry_gw expect[8];
    unsigned n = e820_build(gm, expect, 8);
    struct hvm_memmap_table_entry mm[8];
    assert_int_equal(si.memmap_paddr, LAYOUT_PVH_MEMMAP);
    assert_int_equal(si.memmap_entries, n);
    assert_int_equal(gm_read(gm, si.memmap_paddr, mm, n * sizeof(mm[0])), 0);
    for (unsigned i = 0; i < n; i++) {
        assert_int_equal(mm[i].addr, expect[i].addr);
        assert_int_equal(mm[i].size, expect[i].size);
        assert_int_equal(mm[i].type, expect[i].type);
    }
    free(initrd);
}

static void test_pvh_note_with_4_byte_entry(void **state)
{
    check_pvh_load(*state, 4);
}

static void test_pvh_note_with_8_byte_entry(void **state)
{
    check_pvh_load(*state, 8);
}

static void test_pvh_without_initrd_has_no_modules(void **state)
{
    const struct guest_memory *gm = *state;
    static uint8_t img[ELF_LEN];
    struct elf_opts o = elf_pvh();
    struct hvm_start_info si;

    assert_int_equal(load(gm, img, make_elf(img, &o), CMDLINE, NULL, 0).ret, 0);
    assert_int_equal(gm_read(gm, LAYOUT_PVH_START_INFO, &si, sizeof(si)), 0);
    assert_int_equal(si.nr_modules, 0);
    assert_int_equal(si.modlist_paddr, 0);
}

static void test_pvh_note_with_bad_value_size(void **state)
{
    static uint8_t img[ELF_LEN];
    struct elf_opts o = elf_pvh();
    o.pvh_descsz = 2;
    assert_int_equal(load_quietly(*state, img, make_elf(img, &o)), -ENOEXEC);
}

static void test_pvh_entry_above_4g_refused(void **state)
{
    static uint8_t img[ELF_LEN];
    struct elf_opts o = elf_pvh();
    o.pvh_descsz = 8;
    make_elf(img, &o);
    /* The second note's value: set its high half. */
    size_t first = sizeof(Elf64_Nhdr) + 8 + 8; /* "Linux\0" padded to 8, 6-byte value to 8 */
    size_t value_off = ELF_NOTES_OFF + first + sizeof(Elf64_Nhdr) + 4;
    img[value_off + 4] = 1;
    assert_int_equal(load_quietly(*state, img, ELF_LEN), -ENOEXEC);
}

static void test_note_running_past_its_segment_refused(void **state)
{
    static uint8_t img[ELF_LEN];
    struct elf_opts o = elf_pvh();
    make_elf(img, &o);
    uint32_t huge = 0xfffffff0u;
    memcpy(img + ELF_NOTES_OFF, &huge, sizeof(huge)); /* first note's n_namesz */
    assert_int_equal(load_quietly(*state, img, ELF_LEN), -ENOEXEC);
    make_elf(img, &o);
    memcpy(img + ELF_NOTES_OFF + 4, &huge, sizeof(huge)); /* its n_descsz */
    assert_int_equal(load_quietly(*state, img, ELF_LEN), -ENOEXEC);
}

/* ---- corrupt ELF images ---- */

static void test_elf_every_truncation_refused(void **state)
{
    static uint8_t img[ELF_LEN];
    struct elf_opts plain = elf_plain(), pvh = elf_pvh();
    assert_every_prefix_refused(*state, img, make_elf(img, &plain));
    assert_every_prefix_refused(*state, img, make_elf(img, &pvh));
}

static void test_elf_bad_ident_and_header_refused(void **state)
{
    static uint8_t img[ELF_LEN];
    struct elf_opts o = elf_plain();
    static const struct { size_t off; uint8_t value; } patches[] = {
        { 1, 'e' },                        /* magic */
        { EI_CLASS, ELFCLASS32 },
        { EI_DATA, ELFDATA2MSB },
        { offsetof(Elf64_Ehdr, e_type), ET_DYN },
        { offsetof(Elf64_Ehdr, e_machine), EM_386 },
        { offsetof(Elf64_Ehdr, e_phentsize), 32 },
    };
    for (size_t i = 0; i < sizeof(patches) / sizeof(patches[0]); i++) {
        make_elf(img, &o);
        img[patches[i].off] = patches[i].value;
        assert_int_equal(load_quietly(*state, img, ELF_LEN), -ENOEXEC);
    }
}

static void test_elf_bad_program_header_table_refused(void **state)
{
    static uint8_t img[ELF_LEN];
    struct elf_opts o = elf_plain();
    const uint16_t phnums[] = { 0, 257, 0xffff };
    const uint64_t phoffs[] = { ELF_LEN, ELF_LEN - sizeof(Elf64_Phdr), UINT64_MAX - 8,
                                UINT64_MAX };
    for (size_t i = 0; i < sizeof(phnums) / sizeof(phnums[0]); i++) {
        make_elf(img, &o);
        Elf64_Ehdr eh = get_ehdr(img);
        eh.e_phnum = phnums[i];
        put_ehdr(img, &eh);
        assert_int_equal(load_quietly(*state, img, ELF_LEN), -ENOEXEC);
    }
    for (size_t i = 0; i < sizeof(phoffs) / sizeof(phoffs[0]); i++) {
        make_elf(img, &o);
        Elf64_Ehdr eh = get_ehdr(img);
        eh.e_phoff = phoffs[i];
        put_ehdr(img, &eh);
        assert_int_equal(load_quietly(*state, img, ELF_LEN), -ENOEXEC);
    }
}

static int load_with_segment(const struct guest_memory *gm, unsigned phdr,
                             void (*edit)(Elf64_Phdr *ph))
{
    static uint8_t img[ELF_LEN];
    struct elf_opts o = elf_pvh();
    make_elf(img, &o);
    Elf64_Phdr ph = get_phdr(img, phdr);
    edit(&ph);
    put_phdr(img, phdr, &ph);
    return load_quietly(gm, img, ELF_LEN);
}

static void offset_overflows(Elf64_Phdr *ph) { ph->p_offset = UINT64_MAX - 4; }
static void offset_past_end(Elf64_Phdr *ph) { ph->p_offset = ELF_LEN; }
static void filesz_past_end(Elf64_Phdr *ph) { ph->p_filesz = ph->p_memsz = ELF_LEN; }
static void memsz_below_filesz(Elf64_Phdr *ph) { ph->p_memsz = ph->p_filesz - 1; }
static void paddr_above_ram(Elf64_Phdr *ph) { ph->p_paddr = 1ULL << 30; }
static void paddr_wraps(Elf64_Phdr *ph) { ph->p_paddr = UINT64_MAX - 100; }
static void memsz_huge(Elf64_Phdr *ph) { ph->p_memsz = UINT64_MAX; }
static void memsz_past_ram(Elf64_Phdr *ph) { ph->p_memsz = RAM_SIZE - KERNEL_PADDR + 1; }
static void paddr_in_boot_area(Elf64_Phdr *ph) { ph->p_paddr = LAYOUT_BOOT_PARAMS; }
static void paddr_zero(Elf64_Phdr *ph) { ph->p_paddr = 0; }
static void not_loadable(Elf64_Phdr *ph) { ph->p_type = PT_NULL; }

static void test_elf_bad_segments_refused(void **state)
{
    const struct guest_memory *gm = *state;
    assert_int_equal(load_with_segment(gm, 0, offset_overflows), -ENOEXEC);
    assert_int_equal(load_with_segment(gm, 0, offset_past_end), -ENOEXEC);
    assert_int_equal(load_with_segment(gm, 0, filesz_past_end), -ENOEXEC);
    assert_int_equal(load_with_segment(gm, 0, memsz_below_filesz), -ENOEXEC);
    assert_int_equal(load_with_segment(gm, 0, paddr_in_boot_area), -ENOEXEC);
    assert_int_equal(load_with_segment(gm, 0, paddr_zero), -ENOEXEC);
    assert_int_equal(load_with_segment(gm, 0, not_loadable), -ENOEXEC);
    assert_int_equal(load_with_segment(gm, 0, paddr_above_ram), -ENOSPC);
    assert_int_equal(load_with_segment(gm, 0, paddr_wraps), -ENOSPC);
    assert_int_equal(load_with_segment(gm, 0, memsz_huge), -ENOSPC);
    assert_int_equal(load_with_segment(gm, 0, memsz_past_ram), -ENOSPC);
    /* The same faults in the note segment's header. */
    assert_int_equal(load_with_segment(gm, 1, offset_overflows), -ENOEXEC);
    assert_int_equal(load_with_segment(gm, 1, offset_past_end), -ENOEXEC);
    assert_int_equal(load_with_segment(gm, 1, filesz_past_end), -ENOEXEC);
}

static void test_elf_entry_outside_segments_refused(void **state)
{
    static uint8_t img[ELF_LEN];
    struct elf_opts o = elf_plain();
    make_elf(img, &o);
    Elf64_Ehdr eh = get_ehdr(img);
    eh.e_entry = 0xffffffff81000000ULL; /* a virtual address: not what a loader can jump to */
    put_ehdr(img, &eh);
    assert_int_equal(load_quietly(*state, img, ELF_LEN), -ENOEXEC);
}

/* Each header byte set to a few values: any outcome but a crash or an over-read. */
static void test_elf_header_byte_flips_never_crash(void **state)
{
    static uint8_t img[ELF_LEN];
    const uint8_t values[] = { 0x00, 0xff, 0x80, 0x7f, 0x01 };
    struct elf_opts o = elf_pvh();
    for (size_t off = 0; off < ELF_PAYLOAD_OFF; off++) {
        for (size_t v = 0; v < sizeof(values); v++) {
            make_elf(img, &o);
            img[off] = values[v];
            int ret = load_quietly(*state, img, ELF_LEN);
            assert_true(ret == 0 || ret == -ENOEXEC || ret == -ENOSPC || ret == -EINVAL);
        }
    }
}

/* ---- bzImage ---- */

static void test_bzimage_loads_at_pref_address(void **state)
{
    const struct guest_memory *gm = *state;
    static uint8_t img[BZ_MAX_LEN];
    struct bz_opts o = bz_defaults();
    size_t initrd_len = 2 * MIB;
    uint8_t *initrd = make_initrd(initrd_len);

    struct loaded l = load(gm, img, make_bzimage(img, &o), CMDLINE, initrd, initrd_len);
    assert_int_equal(l.ret, 0);
    assert_int_equal(l.entry.mode, BOOT_ENTRY_LINUX64);
    assert_int_equal(l.entry.rip, KERNEL_PADDR + 0x200);
    assert_int_equal(l.entry.arg_gpa, LAYOUT_BOOT_PARAMS);
    assert_payload_at(gm, KERNEL_PADDR);

    struct boot_params bp = read_zero_page(gm);
    /* The header came from the image... */
    assert_memory_equal(&bp.hdr, img + offsetof(struct boot_params, hdr),
                        offsetof(struct setup_header, type_of_loader));
    assert_int_equal(bp.hdr.init_size, o.init_size);
    assert_int_equal(bp.hdr.pref_address, KERNEL_PADDR);
    assert_int_equal(bp.hdr.xloadflags, o.xloadflags);
    assert_int_equal(bp.sentinel, 0);
    /* ...and the loader's fields were set. */
    assert_int_equal(bp.hdr.type_of_loader, 0xff);
    assert_true(bp.hdr.loadflags & CAN_USE_HEAP);
    assert_true(bp.hdr.loadflags & LOADED_HIGH);
    assert_int_equal(bp.hdr.heap_end_ptr, 0xfe00);
    assert_int_equal(bp.hdr.code32_start, KERNEL_PADDR);
    assert_int_equal(bp.hdr.cmd_line_ptr, LAYOUT_CMDLINE);
    assert_cmdline_at(gm, LAYOUT_CMDLINE, CMDLINE);
    assert_int_equal(bp.acpi_rsdp_addr, RSDP_GPA);
    assert_int_equal(bp.e820_entries, 5); /* the 4 of low RAM and the ECAM window */
    assert_int_equal(bp.e820_table[0].addr, 0);
    assert_int_equal(bp.e820_table[0].size, LAYOUT_EBDA_START);
    assert_int_equal(bp.hdr.ramdisk_size, initrd_len);
    assert_int_equal(bp.hdr.ramdisk_image, RAM_SIZE - initrd_len);
    assert_initrd_at(gm, bp.hdr.ramdisk_image, initrd, initrd_len, KERNEL_PADDR,
                     KERNEL_PADDR + o.init_size, RAM_SIZE);
    free(initrd);
}

static void test_bzimage_relocated_when_pref_address_does_not_fit(void **state)
{
    const struct guest_memory *gm = *state;
    static uint8_t img[BZ_MAX_LEN];
    struct bz_opts o = bz_defaults();

    o.pref_address = 512 * MIB; /* beyond the 128 MiB guest */
    struct loaded l = load(gm, img, make_bzimage(img, &o), CMDLINE, NULL, 0);
    assert_int_equal(l.ret, 0);
    assert_int_equal(l.entry.rip, 2 * MIB + 0x200); /* 1 MiB rounded up to 2 MiB alignment */
    assert_payload_at(gm, 2 * MIB);
    assert_int_equal(read_zero_page(gm).hdr.code32_start, 2 * MIB);

    o.pref_address = 0x10000; /* in the boot area: never used */
    o.kernel_alignment = 0x100000;
    l = load(gm, img, make_bzimage(img, &o), CMDLINE, NULL, 0);
    assert_int_equal(l.ret, 0);
    assert_int_equal(l.entry.rip, 1 * MIB + 0x200);
}

static void test_bzimage_setup_sects_zero_means_four(void **state)
{
    static uint8_t img[BZ_MAX_LEN];
    struct bz_opts o = bz_defaults();
    o.setup_sects = 0;
    struct loaded l = load(*state, img, make_bzimage(img, &o), CMDLINE, NULL, 0);
    assert_int_equal(l.ret, 0);
    assert_payload_at(*state, KERNEL_PADDR);
}

static void test_bzimage_rsdp_only_from_protocol_2_14(void **state)
{
    static uint8_t img[BZ_MAX_LEN];
    struct bz_opts o = bz_defaults();
    o.version = 0x020c;
    assert_int_equal(load(*state, img, make_bzimage(img, &o), CMDLINE, NULL, 0).ret, 0);
    assert_int_equal(read_zero_page(*state).acpi_rsdp_addr, 0);
}

static void test_bzimage_initrd_respects_initrd_addr_max(void **state)
{
    const struct guest_memory *gm = *state;
    static uint8_t img[BZ_MAX_LEN];
    struct bz_opts o = bz_defaults();
    size_t initrd_len = 5000;
    uint8_t *initrd = make_initrd(initrd_len);

    o.initrd_addr_max = 64 * MIB - 1;
    assert_int_equal(load(gm, img, make_bzimage(img, &o), CMDLINE, initrd, initrd_len).ret, 0);
    struct boot_params bp = read_zero_page(gm);
    assert_int_equal(bp.hdr.ramdisk_image, (64 * MIB - initrd_len) & ~4095ULL);
    assert_initrd_at(gm, bp.hdr.ramdisk_image, initrd, initrd_len, KERNEL_PADDR,
                     KERNEL_PADDR + o.init_size, 64 * MIB);
    free(initrd);
}

static void test_bzimage_initrd_goes_below_kernel_when_above_is_full(void **state)
{
    const struct guest_memory *gm = *state;
    static uint8_t img[BZ_MAX_LEN];
    struct bz_opts o = bz_defaults();
    size_t initrd_len = 20 * MIB;
    uint8_t *initrd = make_initrd(initrd_len);

    o.pref_address = 100 * MIB; /* kernel 100-104 MiB: 6 MiB above it under the limit */
    o.initrd_addr_max = 110 * MIB - 1;
    assert_int_equal(load(gm, img, make_bzimage(img, &o), CMDLINE, initrd, initrd_len).ret, 0);
    struct boot_params bp = read_zero_page(gm);
    assert_int_equal(bp.hdr.ramdisk_image, 80 * MIB);
    assert_initrd_at(gm, bp.hdr.ramdisk_image, initrd, initrd_len, 100 * MIB, 104 * MIB,
                     110 * MIB);
    free(initrd);
}

static void test_bzimage_every_truncation_refused(void **state)
{
    static uint8_t img[BZ_MAX_LEN];
    struct bz_opts o = bz_defaults();
    assert_every_prefix_refused(*state, img, make_bzimage(img, &o));
}

static int load_bz_quietly(const struct guest_memory *gm, const struct bz_opts *o)
{
    static uint8_t img[BZ_MAX_LEN];
    return load_quietly(gm, img, make_bzimage(img, o));
}

static void test_bzimage_bad_headers_refused(void **state)
{
    const struct guest_memory *gm = *state;
    struct bz_opts too_old = bz_defaults(), before_2_12 = bz_defaults();
    struct bz_opts no_64bit_entry = bz_defaults();
    struct bz_opts odd_alignment = bz_defaults(), zero_alignment = bz_defaults();

    too_old.version = 0x0205;
    before_2_12.version = 0x020b;
    no_64bit_entry.xloadflags = XLF_CAN_BE_LOADED_ABOVE_4G;
    /* The alignment matters once pref_address does not fit and the kernel is relocated. */
    odd_alignment.pref_address = zero_alignment.pref_address = 1ULL << 40;
    odd_alignment.kernel_alignment = 3 * MIB;
    zero_alignment.kernel_alignment = 0;
    assert_int_equal(load_bz_quietly(gm, &too_old), -ENOEXEC);
    assert_int_equal(load_bz_quietly(gm, &before_2_12), -ENOEXEC);
    assert_int_equal(load_bz_quietly(gm, &no_64bit_entry), -ENOEXEC);
    assert_int_equal(load_bz_quietly(gm, &odd_alignment), -ENOEXEC);
    assert_int_equal(load_bz_quietly(gm, &zero_alignment), -ENOEXEC);
}

static void test_bzimage_huge_setup_sects_refused(void **state)
{
    static uint8_t img[BZ_MAX_LEN];
    struct bz_opts o = bz_defaults();
    size_t len = make_bzimage(img, &o);
    img[offsetof(struct boot_params, hdr)] = 255; /* setup_sects: the kernel would start at 128 KiB */
    assert_int_equal(load_quietly(*state, img, len), -ENOEXEC);
}

static void test_bzimage_short_or_long_setup_header(void **state)
{
    static uint8_t img[BZ_MAX_LEN];
    struct bz_opts o = bz_defaults();
    size_t len = make_bzimage(img, &o);

    img[0x201] = 0x20; /* header would end at 0x222, before xloadflags */
    assert_int_equal(load_quietly(*state, img, len), -ENOEXEC);
    len = make_bzimage(img, &o);
    img[0x201] = 0x7f; /* a newer, longer header: fields beyond ours are ignored */
    assert_int_equal(load_quietly(*state, img, len), 0);
}

static void test_bzimage_zero_syssize_refused(void **state)
{
    static uint8_t img[BZ_MAX_LEN];
    struct bz_opts o = bz_defaults();
    size_t len = make_bzimage(img, &o);
    memset(img + offsetof(struct boot_params, hdr.syssize), 0, 4);
    assert_int_equal(load_quietly(*state, img, len), -ENOEXEC);
    memset(img + offsetof(struct boot_params, hdr.syssize), 0xff, 4); /* 64 GiB of kernel */
    assert_int_equal(load_quietly(*state, img, len), -ENOEXEC);
}

static void test_bzimage_too_big_for_ram(void **state)
{
    const struct guest_memory *gm = *state;
    struct bz_opts big = bz_defaults(), max_init = bz_defaults(), fixed = bz_defaults();

    big.init_size = 200 * MIB;
    max_init.init_size = 0xffffffff;
    fixed.relocatable = 0;
    fixed.pref_address = 512 * MIB;
    assert_int_equal(load_bz_quietly(gm, &big), -ENOSPC);
    assert_int_equal(load_bz_quietly(gm, &max_init), -ENOSPC);
    assert_int_equal(load_bz_quietly(gm, &fixed), -ENOSPC);
}

static void test_bzimage_header_byte_flips_never_crash(void **state)
{
    static uint8_t img[BZ_MAX_LEN];
    const uint8_t values[] = { 0x00, 0xff, 0x80, 0x01 };
    struct bz_opts o = bz_defaults();
    for (size_t off = 0x1f1; off < 0x268; off++) {
        for (size_t v = 0; v < sizeof(values); v++) {
            size_t len = make_bzimage(img, &o);
            img[off] = values[v];
            int ret = load_quietly(*state, img, len);
            assert_true(ret == 0 || ret == -ENOEXEC || ret == -ENOSPC || ret == -EINVAL);
        }
    }
}

/* ---- command line and initrd limits ---- */

static char *make_cmdline(size_t len)
{
    char *s = malloc(len + 1);
    assert_non_null(s);
    memset(s, 'a', len);
    s[len] = '\0';
    return s;
}

static void test_cmdline_limits(void **state)
{
    const struct guest_memory *gm = *state;
    static uint8_t elf[ELF_LEN], bz[BZ_MAX_LEN];
    struct elf_opts eo = elf_pvh();
    struct bz_opts bo = bz_defaults();
    size_t elf_len = make_elf(elf, &eo);
    char *at_limit = make_cmdline(2047), *over = make_cmdline(2048), *huge = make_cmdline(70000);

    assert_int_equal(load(gm, elf, elf_len, at_limit, NULL, 0).ret, 0);
    assert_cmdline_at(gm, LAYOUT_CMDLINE, at_limit);
    quiet_logs(true);
    assert_int_equal(load(gm, elf, elf_len, over, NULL, 0).ret, -EINVAL);
    assert_int_equal(load(gm, elf, elf_len, huge, NULL, 0).ret, -EINVAL);
    bo.cmdline_size = 255;
    size_t bz_len = make_bzimage(bz, &bo);
    over[256] = '\0';
    assert_int_equal(load(gm, bz, bz_len, over, NULL, 0).ret, -EINVAL);
    bo.cmdline_size = 0xffffffff; /* the kernel's limit is above ours: LAYOUT_CMDLINE_MAX wins */
    bz_len = make_bzimage(bz, &bo);
    assert_int_equal(load(gm, bz, bz_len, huge, NULL, 0).ret, -EINVAL);
    quiet_logs(false);
    over[255] = '\0';
    bo.cmdline_size = 255;
    bz_len = make_bzimage(bz, &bo);
    assert_int_equal(load(gm, bz, bz_len, over, NULL, 0).ret, 0);
    assert_cmdline_at(gm, LAYOUT_CMDLINE, over);
    free(at_limit);
    free(over);
    free(huge);
}

static void test_initrd_too_big_refused(void **state)
{
    const struct guest_memory *gm = *state;
    static uint8_t elf[ELF_LEN], bz[BZ_MAX_LEN];
    struct elf_opts eo = elf_pvh();
    struct bz_opts bo = bz_defaults();
    size_t big = 900 * MIB;
    /* Real, readable memory (zero pages, never touched) so that any read is legal but slow. */
    void *initrd = mmap(NULL, big, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    assert_true(initrd != MAP_FAILED);

    quiet_logs(true);
    assert_int_equal(load(gm, elf, make_elf(elf, &eo), CMDLINE, initrd, big).ret, -ENOSPC);
    assert_int_equal(load(gm, bz, make_bzimage(bz, &bo), CMDLINE, initrd, big).ret, -ENOSPC);
    /* Fits in RAM, but not below initrd_addr_max. */
    bo.initrd_addr_max = 8 * MIB - 1;
    assert_int_equal(load(gm, bz, make_bzimage(bz, &bo), CMDLINE, initrd, 8 * MIB).ret,
                     -ENOSPC);
    /* 110 MiB: fits neither above the kernel (16-20 MiB; 108 MiB free) nor below it. */
    bo = bz_defaults();
    assert_int_equal(load(gm, bz, make_bzimage(bz, &bo), CMDLINE, initrd, 110 * MIB).ret,
                     -ENOSPC);
    quiet_logs(false);
    munmap(initrd, big);
}

/* ---- real kernels, when the guest build cached them ---- */

static uint8_t *read_file(const char *dir, const char *name, size_t *len)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    uint8_t *data = NULL;
    if (fseek(f, 0, SEEK_END) == 0) {
        long size = ftell(f);
        data = size > 0 ? malloc((size_t)size) : NULL;
        rewind(f);
        if (data && fread(data, 1, (size_t)size, f) != (size_t)size) {
            free(data);
            data = NULL;
        }
        *len = (size_t)size;
    }
    fclose(f);
    return data;
}

static void check_real_bzimage(const struct guest_memory *gm, const uint8_t *img, size_t len,
                               const uint8_t *initrd, size_t initrd_len)
{
    struct loaded l = load(gm, img, len, CMDLINE, initrd, initrd_len);
    assert_int_equal(l.ret, 0);
    assert_int_equal(l.entry.mode, BOOT_ENTRY_LINUX64);
    struct boot_params bp = read_zero_page(gm);
    assert_true(bp.hdr.version >= 0x020c);
    assert_int_equal(l.entry.rip, bp.hdr.code32_start + 0x200ULL);
    size_t kernel_off = ((size_t)(bp.hdr.setup_sects ? bp.hdr.setup_sects : 4) + 1) * 512;
    const uint8_t *loaded = gm_ptr(gm, bp.hdr.code32_start, 4096);
    assert_non_null(loaded);
    assert_memory_equal(loaded, img + kernel_off, 4096);
    assert_cmdline_at(gm, bp.hdr.cmd_line_ptr, CMDLINE);
    assert_initrd_at(gm, bp.hdr.ramdisk_image, initrd, initrd_len, bp.hdr.code32_start,
                     bp.hdr.code32_start + (uint64_t)bp.hdr.init_size,
                     (uint64_t)bp.hdr.initrd_addr_max + 1);
}

static void check_real_vmlinux(const struct guest_memory *gm, const uint8_t *img, size_t len,
                               const uint8_t *initrd, size_t initrd_len)
{
    struct loaded l = load(gm, img, len, CMDLINE, initrd, initrd_len);
    assert_int_equal(l.ret, 0);
    if (l.entry.mode == BOOT_ENTRY_PVH) {
        struct hvm_start_info si;
        assert_int_equal(gm_read(gm, l.entry.arg_gpa, &si, sizeof(si)), 0);
        assert_int_equal(si.magic, PVH_START_MAGIC);
        assert_int_equal(si.nr_modules, 1);
        assert_cmdline_at(gm, si.cmdline_paddr, CMDLINE);
    } else {
        assert_int_equal(l.entry.rip, get_ehdr(img).e_entry);
    }
}

static void test_real_debian_kernels(void **state)
{
    (void)state;
    const char *dir = getenv("GODWIT_TEST_KERNEL_DIR");
    size_t bz_len = 0, elf_len = 0;
    if (!dir || !*dir)
        skip();
    uint8_t *bz = read_file(dir, "vmlinuz", &bz_len);
    uint8_t *elf = read_file(dir, "vmlinux", &elf_len);
    if (!bz || !elf) {
        free(bz);
        free(elf);
        skip();
    }
    struct guest_memory gm;
    size_t initrd_len = 1 * MIB + 123;
    uint8_t *initrd = make_initrd(initrd_len);
    assert_int_equal(gm_init(&gm, 512 * MIB, false), 0);
    assert_int_equal(kernel_detect_format(bz, bz_len), KERNEL_FORMAT_BZIMAGE);
    assert_int_equal(kernel_detect_format(elf, elf_len), KERNEL_FORMAT_ELF);
    check_real_bzimage(&gm, bz, bz_len, initrd, initrd_len);
    check_real_vmlinux(&gm, elf, elf_len, initrd, initrd_len);
    gm_destroy(&gm);
    free(initrd);
    free(bz);
    free(elf);
}

#define RAM_TEST(fn) cmocka_unit_test_setup_teardown(fn, setup_ram, teardown_ram)

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_detects_formats),
        RAM_TEST(test_refuses_unknown_format),
        RAM_TEST(test_elf_loads_segment_and_zero_page),
        RAM_TEST(test_elf_without_cmdline_or_initrd),
        RAM_TEST(test_pvh_note_with_4_byte_entry),
        RAM_TEST(test_pvh_note_with_8_byte_entry),
        RAM_TEST(test_pvh_without_initrd_has_no_modules),
        RAM_TEST(test_pvh_note_with_bad_value_size),
        RAM_TEST(test_pvh_entry_above_4g_refused),
        RAM_TEST(test_note_running_past_its_segment_refused),
        RAM_TEST(test_elf_every_truncation_refused),
        RAM_TEST(test_elf_bad_ident_and_header_refused),
        RAM_TEST(test_elf_bad_program_header_table_refused),
        RAM_TEST(test_elf_bad_segments_refused),
        RAM_TEST(test_elf_entry_outside_segments_refused),
        RAM_TEST(test_elf_header_byte_flips_never_crash),
        RAM_TEST(test_bzimage_loads_at_pref_address),
        RAM_TEST(test_bzimage_relocated_when_pref_address_does_not_fit),
        RAM_TEST(test_bzimage_setup_sects_zero_means_four),
        RAM_TEST(test_bzimage_rsdp_only_from_protocol_2_14),
        RAM_TEST(test_bzimage_initrd_respects_initrd_addr_max),
        RAM_TEST(test_bzimage_initrd_goes_below_kernel_when_above_is_full),
        RAM_TEST(test_bzimage_every_truncation_refused),
        RAM_TEST(test_bzimage_bad_headers_refused),
        RAM_TEST(test_bzimage_huge_setup_sects_refused),
        RAM_TEST(test_bzimage_short_or_long_setup_header),
        RAM_TEST(test_bzimage_zero_syssize_refused),
        RAM_TEST(test_bzimage_too_big_for_ram),
        RAM_TEST(test_bzimage_header_byte_flips_never_crash),
        RAM_TEST(test_cmdline_limits),
        RAM_TEST(test_initrd_too_big_refused),
        cmocka_unit_test(test_real_debian_kernels),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
