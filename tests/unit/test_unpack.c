/* test_unpack.c: a bzImage's payload decompressed on the host (XZ, gzip), its checks and cache. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <elf.h>
#include <fcntl.h>
#include <lzma.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>
#include <cmocka.h>

#include <asm/bootparam.h>

#include "boot/boot.h"
#include "boot/layout.h"
#include "boot/unpack.h"
#include "log.h"

#define MIB (1ULL << 20)
#define RAM_SIZE (64 * MIB)
#define KERNEL_PADDR (16 * MIB)
#define CODE_OFF 0x1000u
#define CODE_LEN 0x3000u
#define ELF_LEN (CODE_OFF + CODE_LEN)
#define SETUP_SECTS 4
#define PAYLOAD_OFF 0x100u /* payload_offset: inside the protected-mode code, as in real ones */
#define BZ_CAP (256 * 1024)

/* A tiny vmlinux: one PT_LOAD of recognisable bytes, e_entry at its start, no PVH note. */
static size_t make_elf(uint8_t *buf)
{
    Elf64_Ehdr eh = { .e_type = ET_EXEC, .e_machine = EM_X86_64, .e_version = EV_CURRENT,
                      .e_entry = KERNEL_PADDR, .e_phoff = sizeof(Elf64_Ehdr),
                      .e_ehsize = sizeof(Elf64_Ehdr), .e_phentsize = sizeof(Elf64_Phdr),
                      .e_phnum = 1 };
    Elf64_Phdr load = { .p_type = PT_LOAD, .p_flags = PF_R | PF_X, .p_offset = CODE_OFF,
                        .p_vaddr = 0xffffffff80000000ULL + KERNEL_PADDR,
                        .p_paddr = KERNEL_PADDR, .p_filesz = CODE_LEN, .p_memsz = CODE_LEN + 0x1000,
                        .p_align = 4096 };
    memset(buf, 0, ELF_LEN);
    memcpy(eh.e_ident, ELFMAG, SELFMAG);
    eh.e_ident[EI_CLASS] = ELFCLASS64;
    eh.e_ident[EI_DATA] = ELFDATA2LSB;
    eh.e_ident[EI_VERSION] = EV_CURRENT;
    memcpy(buf, &eh, sizeof(eh));
    memcpy(buf + sizeof(eh), &load, sizeof(load));
    for (size_t i = 0; i < CODE_LEN; i++)
        buf[CODE_OFF + i] = (uint8_t)(i * 13 + 5);
    return ELF_LEN;
}

static size_t compress_xz(const uint8_t *in, size_t len, uint8_t *out, size_t cap)
{
    size_t pos = 0;
    assert_int_equal(lzma_easy_buffer_encode(6, LZMA_CHECK_CRC32, NULL, in, len, out, &pos, cap),
                     LZMA_OK);
    return pos;
}

static size_t compress_gzip(const uint8_t *in, size_t len, uint8_t *out, size_t cap)
{
    z_stream z = { 0 };
    assert_int_equal(deflateInit2(&z, 9, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY), Z_OK);
    z.next_in = (Bytef *)in;
    z.avail_in = (uInt)len;
    z.next_out = out;
    z.avail_out = (uInt)cap;
    assert_int_equal(deflate(&z, Z_FINISH), Z_STREAM_END);
    size_t n = z.total_out;
    deflateEnd(&z);
    return n;
}

enum fmt { XZ, GZIP };

/* Stream + le32 size (gzip's trailer already ends with it), as the kernel build lays it out. */
static size_t make_payload(enum fmt f, const uint8_t *elf, size_t elf_len, uint8_t *out, size_t cap)
{
    if (f == GZIP)
        return compress_gzip(elf, elf_len, out, cap);
    size_t n = compress_xz(elf, elf_len, out, cap - 4);
    uint32_t size = (uint32_t)elf_len;
    memcpy(out + n, &size, 4);
    return n + 4;
}

/* A bzImage around a payload: setup sectors with the header, then the protected-mode code
 * (int3s) holding the payload at payload_offset. */
static size_t make_bzimage(uint8_t *bz, const uint8_t *payload, size_t payload_len)
{
    struct setup_header h = { 0 };
    size_t pm = (SETUP_SECTS + 1) * 512;
    size_t pm_len = (PAYLOAD_OFF + payload_len + 0x100 + 15) & ~(size_t)15;

    assert_true(pm + pm_len <= BZ_CAP);
    memset(bz, 0xcc, pm + pm_len);
    h.setup_sects = SETUP_SECTS;
    h.syssize = (uint32_t)(pm_len / 16);
    h.boot_flag = 0xaa55;
    h.jump = 0x66eb;
    h.header = 0x53726448;
    h.version = 0x020f;
    h.loadflags = LOADED_HIGH;
    h.initrd_addr_max = 0x37ffffff;
    h.kernel_alignment = 2 * MIB;
    h.relocatable_kernel = 1;
    h.xloadflags = XLF_KERNEL_64;
    h.cmdline_size = 255;
    h.pref_address = KERNEL_PADDR;
    h.init_size = 8 * MIB;
    h.payload_offset = PAYLOAD_OFF;
    h.payload_length = (uint32_t)payload_len;
    memcpy(bz + offsetof(struct boot_params, hdr), &h, sizeof(h));
    memcpy(bz + pm + PAYLOAD_OFF, payload, payload_len);
    return pm + pm_len;
}

struct fixture {
    uint8_t elf[ELF_LEN];
    uint8_t payload[BZ_CAP];
    size_t payload_len;
    uint8_t bz[BZ_CAP];
    size_t bz_len;
    char cache[64];
};

static size_t payload_pos(void)
{
    return (SETUP_SECTS + 1) * 512 + PAYLOAD_OFF;
}

static void build(struct fixture *f, enum fmt fmt)
{
    make_elf(f->elf);
    f->payload_len = make_payload(fmt, f->elf, ELF_LEN, f->payload, sizeof(f->payload));
    f->bz_len = make_bzimage(f->bz, f->payload, f->payload_len);
}

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    if (!f)
        return -1;
    snprintf(f->cache, sizeof(f->cache), "/tmp/godwit-unpack.XXXXXX");
    if (!mkdtemp(f->cache))
        return -1;
    setenv("GODWIT_CACHE", f->cache, 1);
    log_set_level((enum log_level)0); /* corrupt images print expected errors */
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->cache);
    assert_int_equal(system(cmd), 0);
    unsetenv("GODWIT_CACHE");
    free(f);
    return 0;
}

static int decompress(const uint8_t *bz, size_t len, uint8_t **out)
{
    struct payload_info p;
    int ret = payload_find(bz, len, &p);
    return ret < 0 ? ret : payload_decompress(&p, out);
}

static void round_trip(struct fixture *f, enum fmt fmt, const char *name)
{
    struct payload_info p;
    uint8_t *out = NULL;

    build(f, fmt);
    assert_int_equal(payload_find(f->bz, f->bz_len, &p), 0);
    assert_string_equal(p.name, name);
    assert_int_equal(p.unpacked_len, ELF_LEN);
    assert_ptr_equal(p.data, f->bz + payload_pos());
    assert_int_equal(payload_decompress(&p, &out), 0);
    assert_memory_equal(out, f->elf, ELF_LEN);
    free(out);
}

static void test_xz_payload_round_trip(void **state)
{
    round_trip(*state, XZ, "XZ");
}

static void test_gzip_payload_round_trip(void **state)
{
    round_trip(*state, GZIP, "gzip");
}

static void test_other_formats_named_not_decompressed(void **state)
{
    struct fixture *f = *state;
    struct payload_info p;
    uint8_t *out = (uint8_t *)1;

    build(f, XZ);
    memcpy(f->bz + payload_pos(), "\x28\xb5\x2f\xfd", 4);
    assert_int_equal(payload_find(f->bz, f->bz_len, &p), 0);
    assert_int_equal(p.format, PAYLOAD_OTHER);
    assert_string_equal(p.name, "zstd");
    assert_int_equal(payload_decompress(&p, &out), -EOPNOTSUPP);
    assert_null(out);
}

static void test_payload_outside_image_refused(void **state)
{
    struct fixture *f = *state;
    struct payload_info p;

    build(f, XZ);
    struct setup_header *h = (struct setup_header *)(f->bz + offsetof(struct boot_params, hdr));
    h->payload_length = (uint32_t)f->bz_len;
    assert_int_equal(payload_find(f->bz, f->bz_len, &p), -ENOEXEC);
    h->payload_length = 3; /* not even the le32 size */
    assert_int_equal(payload_find(f->bz, f->bz_len, &p), -ENOEXEC);
    h->payload_length = (uint32_t)f->payload_len;
    h->payload_offset = UINT32_MAX;
    assert_int_equal(payload_find(f->bz, f->bz_len, &p), -ENOEXEC);
    assert_int_equal(payload_find(f->bz, 0x240, &p), -ENOEXEC); /* ends inside the header */
}

/* Every byte flipped in the stream: refused with an error, never a crash or a wrong image. */
static void test_corrupt_payloads_refused(void **state)
{
    struct fixture *f = *state;

    for (int fmt = XZ; fmt <= GZIP; fmt++) {
        build(f, (enum fmt)fmt);
        size_t stream = fmt == XZ ? f->payload_len - 4 : f->payload_len - 8;
        for (size_t i = 0; i < stream; i++) {
            uint8_t *out = NULL;
            f->bz[payload_pos() + i] ^= 0x5a;
            int ret = decompress(f->bz, f->bz_len, &out);
            /* A flip may land where the format does not look (gzip's header flags, XZ's
             * padding): then the result must be the same vmlinux, byte for byte. */
            if (ret == 0)
                assert_memory_equal(out, f->elf, ELF_LEN);
            else
                assert_true(ret == -ENOEXEC || ret == -EOPNOTSUPP);
            free(out);
            f->bz[payload_pos() + i] ^= 0x5a;
        }
    }
}

static void set_payload_len(struct fixture *f, size_t len, uint32_t size)
{
    struct setup_header *h = (struct setup_header *)(f->bz + offsetof(struct boot_params, hdr));
    h->payload_length = (uint32_t)len;
    memcpy(f->bz + payload_pos() + len - 4, &size, 4);
}

static void test_truncated_payloads_and_wrong_sizes_refused(void **state)
{
    struct fixture *f = *state;
    uint8_t *out = NULL;

    for (int fmt = XZ; fmt <= GZIP; fmt++) {
        build(f, (enum fmt)fmt);
        for (size_t len = 10; len < f->payload_len; len += 7) { /* cut short, magic kept */
            build(f, (enum fmt)fmt);
            set_payload_len(f, len, ELF_LEN);
            assert_int_equal(decompress(f->bz, f->bz_len, &out), -ENOEXEC);
        }
        uint32_t sizes[] = { ELF_LEN - 1, ELF_LEN + 1, 0, UINT32_MAX };
        for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
            build(f, (enum fmt)fmt);
            set_payload_len(f, f->payload_len, sizes[i]);
            assert_int_equal(decompress(f->bz, f->bz_len, &out), -ENOEXEC);
        }
    }
    assert_null(out);
}

static void test_payload_that_is_not_a_vmlinux_refused(void **state)
{
    struct fixture *f = *state;
    uint8_t *out = NULL;

    make_elf(f->elf);
    f->elf[EI_CLASS] = ELFCLASS32;
    f->payload_len = make_payload(XZ, f->elf, ELF_LEN, f->payload, sizeof(f->payload));
    f->bz_len = make_bzimage(f->bz, f->payload, f->payload_len);
    assert_int_equal(decompress(f->bz, f->bz_len, &out), -ENOEXEC);
    make_elf(f->elf);
    Elf64_Phdr ph;
    memcpy(&ph, f->elf + sizeof(Elf64_Ehdr), sizeof(ph));
    ph.p_filesz = ELF_LEN; /* a segment past the end of the file */
    memcpy(f->elf + sizeof(Elf64_Ehdr), &ph, sizeof(ph));
    assert_false(vmlinux_check(f->elf, ELF_LEN));
    f->payload_len = make_payload(XZ, f->elf, ELF_LEN, f->payload, sizeof(f->payload));
    f->bz_len = make_bzimage(f->bz, f->payload, f->payload_len);
    assert_int_equal(decompress(f->bz, f->bz_len, &out), -ENOEXEC);
    assert_null(out);
}

/* ---- the cache ---- */

static void cache_file(const struct fixture *f, char *path, size_t size)
{
    char hash[KERNEL_HASH_HEX_LEN + 1], dir[4096], expect[4096];
    kernel_image_hash(f->bz, f->bz_len, hash);
    kernel_cache_dir(dir, sizeof(dir));
    snprintf(expect, sizeof(expect), "%s/kernels", f->cache);
    assert_string_equal(dir, expect);
    assert_true(kernel_cache_path(dir, hash, path, size));
}

/* Prepares and boots-gets once, as a VM does; the vmlinux must be the right one. */
static struct kernel_unpack prepare_and_get_from(const struct fixture *f, const struct stat *st,
                                                 const uint8_t *expect)
{
    struct kernel_unpack u = { .enabled = true };
    struct vmlinux_image img;

    assert_int_equal(kernel_unpack_prepare(&u, f->bz, f->bz_len, st), 0);
    assert_true(u.active);
    assert_int_equal(kernel_unpack_get(&u, f->bz, f->bz_len, &img), 0);
    assert_int_equal(img.len, ELF_LEN);
    assert_memory_equal(img.data, expect, ELF_LEN);
    vmlinux_image_release(&img);
    /* A later boot (a guest reboot) gets it again, from the cache or decompressed again. */
    assert_int_equal(kernel_unpack_get(&u, f->bz, f->bz_len, &img), 0);
    assert_memory_equal(img.data, expect, ELF_LEN);
    vmlinux_image_release(&img);
    kernel_unpack_release(&u);
    return u;
}

static struct kernel_unpack prepare_and_get(const struct fixture *f)
{
    return prepare_and_get_from(f, NULL, f->elf);
}

static void test_cache_written_then_hit(void **state)
{
    struct fixture *f = *state;
    char path[4096];
    struct stat st;

    build(f, XZ);
    cache_file(f, path, sizeof(path));
    struct kernel_unpack u = prepare_and_get(f);
    assert_false(u.cache_hit);
    assert_string_equal(u.cache_path, path);
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_size, ELF_LEN);
    assert_int_equal(st.st_mode & 077, 0);
    u = prepare_and_get(f);
    assert_true(u.cache_hit);
}

static void write_file(const char *path, const uint8_t *data, size_t len, mode_t mode)
{
    unlink(path);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, mode);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, data, len), (ssize_t)len);
    assert_int_equal(fchmod(fd, mode), 0);
    close(fd);
}

/* A bad cache file is never booted and never fails the boot: decompressed again, rewritten. */
static void test_bad_cache_files_replaced(void **state)
{
    struct fixture *f = *state;
    char path[4096];
    uint8_t bad[ELF_LEN];

    build(f, GZIP);
    cache_file(f, path, sizeof(path));
    char dir[4096];
    kernel_cache_dir(dir, sizeof(dir));
    assert_int_equal(mkdir(dir, 0700), 0);
    for (int kind = 0; kind < 4; kind++) {
        memcpy(bad, f->elf, ELF_LEN);
        size_t len = ELF_LEN;
        mode_t mode = 0600;
        if (kind == 0)
            len = ELF_LEN / 2; /* cut short */
        else if (kind == 1)
            bad[EI_MAG1] = 'X'; /* not an ELF */
        else if (kind == 2)
            mode = 0666; /* anyone could have written it */
        else
            bad[EI_CLASS] = ELFCLASS32;
        write_file(path, bad, len, mode);
        struct kernel_unpack u = prepare_and_get(f);
        assert_false(u.cache_hit);
        struct stat st;
        assert_int_equal(stat(path, &st), 0);
        assert_int_equal(st.st_size, ELF_LEN);
        assert_int_equal(st.st_mode & 077, 0);
    }
}

/* After a store the cache keeps the newest images and the one just stored; names of other
 * forms (a store's temporary file, anything else) and links are left alone. The by-file links
 * to the images removed go; the others there stay. */
static void test_cache_pruned_to_the_newest(void **state)
{
    (void)state;
    char dir[] = "/tmp/godwit-prune.XXXXXX", path[4096], names[6][128];
    assert_non_null(mkdtemp(dir));
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    for (int i = 0; i < 6; i++) { /* images[0] is the oldest */
        snprintf(names[i], sizeof(names[i]), "%064x.vmlinux", i + 1);
        snprintf(path, sizeof(path), "%s/%s", dir, names[i]);
        write_file(path, (const uint8_t *)"x", 1, 0600);
        struct timespec t[2] = { now, { now.tv_sec - 100 + i, 0 } };
        assert_int_equal(utimensat(AT_FDCWD, path, t, 0), 0);
    }
    const char *others[] = { /* not the cache's: another file, a store's temporary one */
        "notes.txt", "0000000000000000000000000000000000000000000000000000000000000001.vmlinux.Ab12Cd",
    };
    for (int i = 0; i < 2; i++) {
        snprintf(path, sizeof(path), "%s/%s", dir, others[i]);
        write_file(path, (const uint8_t *)"x", 1, 0600);
    }
    snprintf(path, sizeof(path), "%s/%064x.vmlinux", dir, 99);
    assert_int_equal(symlink(names[0], path), 0);

    /* by-file: links to two images that go and to one that stays, and what is not such a
     * link (a link to something else, a file). */
    char memo[4096], target[KERNEL_HASH_HEX_LEN + 1];
    snprintf(memo, sizeof(memo), "%s/by-file", dir);
    assert_int_equal(mkdir(memo, 0700), 0);
    const char *memos[] = { "v0", "v1", "v5", "other", "file" };
    for (int i = 0; i < 4; i++) {
        snprintf(memo, sizeof(memo), "%s/by-file/%s", dir, memos[i]);
        snprintf(target, sizeof(target), "%.64s", i < 3 ? names[i < 2 ? i : 5] : "notes.txt");
        assert_int_equal(symlink(target, memo), 0);
    }
    snprintf(memo, sizeof(memo), "%s/by-file/file", dir);
    write_file(memo, (const uint8_t *)"x", 1, 0600);

    snprintf(path, sizeof(path), "%s/%s", dir, names[5]);
    assert_int_equal(kernel_cache_prune(dir, path, 4), 2);
    for (int i = 0; i < 6; i++) {
        snprintf(path, sizeof(path), "%s/%s", dir, names[i]);
        assert_int_equal(access(path, F_OK) == 0, i >= 2);
    }
    for (int i = 0; i < 5; i++) {
        struct stat memo_st;
        snprintf(memo, sizeof(memo), "%s/by-file/%s", dir, memos[i]);
        assert_int_equal(lstat(memo, &memo_st) == 0, i >= 2);
        unlink(memo);
    }
    snprintf(memo, sizeof(memo), "%s/by-file", dir);
    assert_int_equal(rmdir(memo), 0);
    for (int i = 0; i < 2; i++) {
        snprintf(path, sizeof(path), "%s/%s", dir, others[i]);
        assert_int_equal(access(path, F_OK), 0);
        unlink(path);
    }
    snprintf(path, sizeof(path), "%s/%064x.vmlinux", dir, 99);
    struct stat st;
    assert_int_equal(lstat(path, &st), 0);
    unlink(path);
    /* The one just stored stays even when it is not among the newest. */
    snprintf(path, sizeof(path), "%s/%s", dir, names[2]);
    assert_int_equal(kernel_cache_prune(dir, path, 1), 2);
    assert_int_equal(access(path, F_OK), 0);
    for (int i = 2; i < 6; i++) {
        snprintf(path, sizeof(path), "%s/%s", dir, names[i]);
        assert_int_equal(access(path, F_OK) == 0, i == 2 || i == 5);
        unlink(path);
    }
    assert_int_equal(kernel_cache_prune("/nonexistent/godwit-cache", path, 1), 0);
    assert_int_equal(rmdir(dir), 0);
}

static void test_symlinked_cache_file_not_followed(void **state)
{
    struct fixture *f = *state;
    char path[4096], target[4096];

    build(f, XZ);
    cache_file(f, path, sizeof(path));
    snprintf(target, sizeof(target), "%s/elsewhere", f->cache);
    char dir[4096];
    kernel_cache_dir(dir, sizeof(dir));
    assert_int_equal(mkdir(dir, 0700), 0);
    write_file(target, f->elf, ELF_LEN, 0600);
    assert_int_equal(symlink(target, path), 0);
    struct kernel_unpack u = prepare_and_get(f);
    assert_false(u.cache_hit);
    struct stat st;
    assert_int_equal(lstat(path, &st), 0);
    assert_true(S_ISREG(st.st_mode)); /* the link itself replaced, its target untouched */
}

/* No usable cache directory: the vmlinux comes from memory, every boot. */
static void test_unusable_cache_dir_boots_from_memory(void **state)
{
    struct fixture *f = *state;
    char file[4096];

    build(f, XZ);
    snprintf(file, sizeof(file), "%s/a-file", f->cache);
    write_file(file, f->elf, 1, 0600);
    setenv("GODWIT_CACHE", file, 1); /* under a file: no directory can be made */
    struct kernel_unpack u = prepare_and_get(f);
    assert_string_equal(u.cache_path, "");
    setenv("GODWIT_CACHE", "/proc/godwit-no-such-dir", 1);
    u = prepare_and_get(f);
    assert_string_equal(u.cache_path, "");
    setenv("GODWIT_CACHE", f->cache, 1);
    struct kernel_unpack jailed = { .enabled = true, .no_cache = true };
    assert_int_equal(kernel_unpack_prepare(&jailed, f->bz, f->bz_len, NULL), 0);
    assert_true(jailed.active);
    assert_string_equal(jailed.cache_path, "");
    assert_non_null(jailed.image.data);
    kernel_unpack_release(&jailed);
}

static void test_disabled_or_corrupt_prepare(void **state)
{
    struct fixture *f = *state;
    struct kernel_unpack off = { .enabled = false };

    build(f, XZ);
    assert_int_equal(kernel_unpack_prepare(&off, f->bz, f->bz_len, NULL), 0);
    assert_false(off.active);
    struct kernel_unpack u = { .enabled = true };
    f->bz[payload_pos() + f->payload_len / 2] ^= 0xff;
    assert_int_equal(kernel_unpack_prepare(&u, f->bz, f->bz_len, NULL), -ENOEXEC);
    assert_false(u.active);
    assert_null(u.image.data);
}

/* ---- the hash memo ---- */

/* A file's identity as stat() gives it, settled (changed long ago) unless `fresh`. */
static struct stat file_version(long ino, long ctime_ns, bool fresh)
{
    struct stat st = { .st_dev = 0x801, .st_ino = (ino_t)ino, .st_size = 8 * (off_t)MIB };
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    st.st_mtim.tv_sec = now.tv_sec - 3600;
    st.st_ctim.tv_sec = fresh ? now.tv_sec : now.tv_sec - 3600;
    st.st_ctim.tv_nsec = ctime_ns;
    return st;
}

/* A remembered hash is used instead of hashing: shown by a memo that names another kernel's
 * cache file, which is then what boots. A file changed since (another change time) is hashed
 * again, and one changed a moment ago is not remembered. */
static void test_memo_used_for_the_same_file_version(void **state)
{
    struct fixture *f = *state;
    char dir[4096], path[4096], id[KERNEL_IMAGE_ID_MAX], hash[KERNEL_HASH_HEX_LEN + 1];
    const char *other = "1111111111111111111111111111111111111111111111111111111111111111";
    uint8_t other_elf[ELF_LEN];

    build(f, XZ);
    kernel_cache_dir(dir, sizeof(dir));
    assert_int_equal(mkdir(dir, 0700), 0);
    memcpy(other_elf, f->elf, ELF_LEN);
    other_elf[CODE_OFF] ^= 0xff; /* another kernel, as valid */
    assert_true(kernel_cache_path(dir, other, path, sizeof(path)));
    write_file(path, other_elf, ELF_LEN, 0600);

    struct stat settled = file_version(42, 5, false);
    kernel_memo_store(dir, &settled, other);
    assert_true(kernel_image_id(&settled, id, sizeof(id)));
    assert_true(kernel_memo_lookup(dir, id, hash));
    assert_string_equal(hash, other);
    struct kernel_unpack u = prepare_and_get_from(f, &settled, other_elf);
    assert_true(u.cache_hit);

    struct stat changed = file_version(42, 6, false);
    u = prepare_and_get_from(f, &changed, f->elf);
    assert_false(u.cache_hit); /* hashed: its own hash was not cached yet */
    assert_true(kernel_image_id(&changed, id, sizeof(id)));
    assert_true(kernel_memo_lookup(dir, id, hash));
    kernel_image_hash(f->bz, f->bz_len, path);
    assert_string_equal(hash, path);

    struct stat fresh = file_version(43, 7, true);
    u = prepare_and_get_from(f, &fresh, f->elf);
    assert_true(u.cache_hit);
    assert_true(kernel_image_id(&fresh, id, sizeof(id)));
    assert_false(kernel_memo_lookup(dir, id, hash));
}

/* A memo entry that is not a hash is ignored, never followed as a path. */
static void test_memo_entry_not_a_hash_ignored(void **state)
{
    struct fixture *f = *state;
    char dir[4096], sub[4200], link[8400], id[KERNEL_IMAGE_ID_MAX], hash[KERNEL_HASH_HEX_LEN + 1];

    build(f, XZ);
    kernel_cache_dir(dir, sizeof(dir));
    struct stat st = file_version(44, 0, false);
    assert_true(kernel_image_id(&st, id, sizeof(id)));
    snprintf(sub, sizeof(sub), "%s/by-file", dir);
    assert_int_equal(mkdir(dir, 0700), 0);
    assert_int_equal(mkdir(sub, 0700), 0);
    snprintf(link, sizeof(link), "%s/%s", sub, id);
    assert_int_equal(symlink("../../etc/passwd", link), 0);
    assert_false(kernel_memo_lookup(dir, id, hash));
    struct kernel_unpack u = prepare_and_get_from(f, &st, f->elf);
    assert_false(u.cache_hit);
    assert_true(kernel_memo_lookup(dir, id, hash)); /* replaced by the real hash */
}

/* ---- booting the payload with the bzImage's header ---- */

static void test_payload_boots_with_the_bzimage_header(void **state)
{
    struct fixture *f = *state;
    struct guest_memory gm;
    struct boot_params bz, zp;
    struct boot_entry entry;
    char longline[300];

    build(f, XZ);
    uint8_t *img = NULL;
    assert_int_equal(decompress(f->bz, f->bz_len, &img), 0);
    assert_int_equal(bzimage_read_header(f->bz, f->bz_len, &bz), 0);
    assert_int_equal(gm_init(&gm, RAM_SIZE, false), 0);
    uint8_t initrd[4096];
    memset(initrd, 0x42, sizeof(initrd));
    struct boot_request req = { .kernel = img, .kernel_len = ELF_LEN, .cmdline = "console=ttyS0",
                                .initrd = initrd, .initrd_len = sizeof(initrd),
                                .rsdp_gpa = LAYOUT_ACPI_START, .bz_params = &bz };
    assert_int_equal(boot_load_linux(&gm, &req, &entry), 0);
    assert_int_equal(entry.mode, BOOT_ENTRY_LINUX64);
    assert_int_equal(entry.rip, KERNEL_PADDR);
    assert_memory_equal(gm_ptr(&gm, KERNEL_PADDR, CODE_LEN), f->elf + CODE_OFF, CODE_LEN);
    assert_int_equal(gm_read(&gm, LAYOUT_BOOT_PARAMS, &zp, sizeof(zp)), 0);
    assert_int_equal(zp.hdr.version, 0x020f);
    assert_int_equal(zp.hdr.cmdline_size, 255);
    assert_int_equal(zp.hdr.init_size, 8 * MIB);
    assert_int_equal(zp.hdr.type_of_loader, 0xff);
    assert_int_equal(zp.acpi_rsdp_addr, LAYOUT_ACPI_START);
    assert_int_equal(zp.hdr.ramdisk_size, sizeof(initrd));
    assert_true(zp.hdr.ramdisk_image + sizeof(initrd) <= 0x38000000ULL); /* initrd_addr_max */
    assert_string_equal((char *)gm_ptr(&gm, zp.hdr.cmd_line_ptr, 14), "console=ttyS0");
    /* The bzImage's cmdline_size applies, not a vmlinux's 2047. */
    memset(longline, 'a', sizeof(longline) - 1);
    longline[sizeof(longline) - 1] = '\0';
    req.cmdline = longline;
    assert_int_equal(boot_load_linux(&gm, &req, &entry), -EINVAL);
    gm_destroy(&gm);
    free(img);
}

static void test_image_hash_is_sha256(void **state)
{
    (void)state;
    char hex[KERNEL_HASH_HEX_LEN + 1];
    kernel_image_hash((const uint8_t *)"abc", 3, hex);
    assert_string_equal(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

static uint8_t *read_whole(const char *dir, const char *name, size_t *len)
{
    char path[4096];
    struct stat st;
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    int fd = open(path, O_RDONLY);
    if (fd < 0 || fstat(fd, &st) < 0) {
        if (fd >= 0)
            close(fd);
        return NULL;
    }
    uint8_t *buf = malloc((size_t)st.st_size);
    assert_non_null(buf);
    assert_int_equal(read(fd, buf, (size_t)st.st_size), st.st_size);
    close(fd);
    *len = (size_t)st.st_size;
    return buf;
}

/* With GODWIT_TEST_KERNEL_DIR (vmlinuz and vmlinux of the default guest): the payload of
 * Debian's bzImage decompresses to exactly the vmlinux extracted from it. */
static void test_real_debian_kernel(void **state)
{
    (void)state;
    const char *dir = getenv("GODWIT_TEST_KERNEL_DIR");
    size_t bz_len = 0, elf_len = 0;
    if (!dir || !*dir)
        skip();
    uint8_t *bz = read_whole(dir, "vmlinuz", &bz_len), *elf = read_whole(dir, "vmlinux", &elf_len);
    uint8_t *out = NULL;
    if (bz && elf) {
        assert_int_equal(decompress(bz, bz_len, &out), 0);
        assert_int_equal(memcmp(out, elf, elf_len), 0);
    }
    free(out);
    free(bz);
    free(elf);
    if (!bz || !elf)
        skip();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_image_hash_is_sha256),
        cmocka_unit_test(test_real_debian_kernel),
        cmocka_unit_test_setup_teardown(test_xz_payload_round_trip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_gzip_payload_round_trip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_other_formats_named_not_decompressed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_payload_outside_image_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_corrupt_payloads_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_truncated_payloads_and_wrong_sizes_refused, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_payload_that_is_not_a_vmlinux_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cache_written_then_hit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_cache_files_replaced, setup, teardown),
        cmocka_unit_test_setup_teardown(test_symlinked_cache_file_not_followed, setup, teardown),
        cmocka_unit_test(test_cache_pruned_to_the_newest),
        cmocka_unit_test_setup_teardown(test_unusable_cache_dir_boots_from_memory, setup, teardown),
        cmocka_unit_test_setup_teardown(test_disabled_or_corrupt_prepare, setup, teardown),
        cmocka_unit_test_setup_teardown(test_memo_used_for_the_same_file_version, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_memo_entry_not_a_hash_ignored, setup, teardown),
        cmocka_unit_test_setup_teardown(test_payload_boots_with_the_bzimage_header, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
