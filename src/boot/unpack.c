/* unpack.c: finds a bzImage's payload, decompresses it (XZ, gzip), checks it, caches it. */
#define _GNU_SOURCE /* mkostemp */
#include "boot/unpack.h"

#include <dirent.h>
#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <lzma.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#include "agent/sha256.h"
#include "boot/loader.h"
#include "io/fd_io.h"
#include "log.h"

#define BZ_SETUP_SECTS_OFFSET 0x1f1
#define BZ_PAYLOAD_OFFSET 0x248 /* payload_offset, then payload_length (protocol 2.08+) */
#define BZ_SECTOR 512
#define PAYLOAD_SIZE_LEN 4      /* the le32 the kernel build appends: the vmlinux's size */
#define UNPACKED_MAX (1ULL << 30) /* a vmlinux is tens of MiB; more is a corrupt size */
#define ELF_MAX_PHDRS 256

static const uint8_t xz_magic[] = { 0xfd, '7', 'z', 'X', 'Z', 0x00 };
static const uint8_t gzip_magic[] = { 0x1f, 0x8b };

static bool starts_with(const uint8_t *p, size_t len, const uint8_t *magic, size_t mlen)
{
    return len >= mlen && memcmp(p, magic, mlen) == 0;
}

/* The formats a kernel may be built with that we do not decompress: the guest does. */
static const char *other_format_name(const uint8_t *p, size_t len)
{
    if (len >= 4 && memcmp(p, "\x28\xb5\x2f\xfd", 4) == 0)
        return "zstd";
    if (len >= 3 && memcmp(p, "BZh", 3) == 0)
        return "bzip2";
    if (len >= 3 && memcmp(p, "\x5d\x00\x00", 3) == 0)
        return "LZMA";
    if (len >= 4 && memcmp(p, "\x02\x21\x4c\x18", 4) == 0)
        return "LZ4";
    if (len >= 4 && memcmp(p, "\x89LZO", 4) == 0)
        return "LZO";
    return "an unknown format";
}

int payload_find(const uint8_t *bz, size_t bz_len, struct payload_info *out)
{
    memset(out, 0, sizeof(*out));
    if (bz_len < BZ_PAYLOAD_OFFSET + 2 * sizeof(uint32_t)) {
        log_error("kernel: truncated: the bzImage ends inside its setup header");
        return -ENOEXEC;
    }
    unsigned sects = bz[BZ_SETUP_SECTS_OFFSET] ? bz[BZ_SETUP_SECTS_OFFSET] : 4;
    uint64_t start = (uint64_t)(sects + 1) * BZ_SECTOR + image_u32(bz, BZ_PAYLOAD_OFFSET);
    uint64_t len = image_u32(bz, BZ_PAYLOAD_OFFSET + sizeof(uint32_t));
    if (len < PAYLOAD_SIZE_LEN || !range_within(start, len, bz_len)) {
        log_error("kernel: the bzImage's %llu-byte payload at %#llx is not inside its %zu bytes",
                  (unsigned long long)len, (unsigned long long)start, bz_len);
        return -ENOEXEC;
    }
    out->data = bz + start;
    out->len = len;
    out->unpacked_len = image_u32(out->data, len - PAYLOAD_SIZE_LEN);
    if (starts_with(out->data, len, xz_magic, sizeof(xz_magic))) {
        out->format = PAYLOAD_XZ;
        out->name = "XZ";
    } else if (starts_with(out->data, len, gzip_magic, sizeof(gzip_magic))) {
        out->format = PAYLOAD_GZIP;
        out->name = "gzip";
    } else {
        out->format = PAYLOAD_OTHER;
        out->name = other_format_name(out->data, len);
    }
    return 0;
}

/* The kernel build appends the size after the XZ stream: the stream is all but 4 bytes. */
static int decompress_xz(const struct payload_info *p, uint8_t *dst)
{
    lzma_stream s = LZMA_STREAM_INIT;
    if (lzma_stream_decoder(&s, UINT64_MAX, 0) != LZMA_OK)
        return -ENOMEM;
    s.next_in = p->data;
    s.avail_in = p->len - PAYLOAD_SIZE_LEN;
    s.next_out = dst;
    s.avail_out = p->unpacked_len;
    lzma_ret r = lzma_code(&s, LZMA_FINISH);
    uint64_t produced = s.total_out;
    lzma_end(&s);
    if (r == LZMA_MEM_ERROR)
        return -ENOMEM;
    return r == LZMA_STREAM_END && produced == p->unpacked_len ? 0 : -ENOEXEC;
}

/* gzip carries the size itself (ISIZE): that is the le32 at the end. */
static int decompress_gzip(const struct payload_info *p, uint8_t *dst)
{
    z_stream z = { 0 };
    if (inflateInit2(&z, 16 + MAX_WBITS) != Z_OK) /* 16: a gzip wrapper, not zlib's */
        return -ENOMEM;
    int r = Z_STREAM_END;
    size_t in_left = p->len;
    const uint8_t *in = p->data;
    z.next_out = dst;
    z.avail_out = p->unpacked_len;
    /* zlib counts in uInt: feed the input in pieces (a payload is far below 4 GiB anyway). */
    do {
        uInt piece = in_left > UINT_MAX ? UINT_MAX : (uInt)in_left;
        z.next_in = (Bytef *)in;
        z.avail_in = piece;
        r = inflate(&z, Z_FINISH);
        in += piece - z.avail_in;
        in_left -= piece - z.avail_in;
    } while (r == Z_BUF_ERROR && z.avail_out > 0 && in_left > 0 && z.avail_in == 0);
    uint64_t produced = z.total_out;
    inflateEnd(&z);
    if (r == Z_MEM_ERROR)
        return -ENOMEM;
    return r == Z_STREAM_END && produced == p->unpacked_len ? 0 : -ENOEXEC;
}

int payload_decompress(const struct payload_info *p, uint8_t **out)
{
    *out = NULL;
    if (p->format != PAYLOAD_XZ && p->format != PAYLOAD_GZIP)
        return -EOPNOTSUPP;
    if (p->unpacked_len < sizeof(Elf64_Ehdr) || p->unpacked_len > UNPACKED_MAX) {
        log_error("kernel: the bzImage's %s payload declares %u bytes, not a vmlinux's size",
                  p->name, p->unpacked_len);
        return -ENOEXEC;
    }
    uint8_t *buf = malloc(p->unpacked_len);
    if (!buf) {
        log_error("kernel: no memory for the %u-byte vmlinux", p->unpacked_len);
        return -ENOMEM;
    }
    int ret = p->format == PAYLOAD_XZ ? decompress_xz(p, buf) : decompress_gzip(p, buf);
    if (ret == 0 && !vmlinux_check(buf, p->unpacked_len))
        ret = -EBADMSG;
    if (ret < 0) {
        log_error("kernel: the bzImage's %s payload %s", p->name,
                  ret == -ENOMEM ? "needs more memory than there is to decompress"
                  : ret == -EBADMSG ? "is not an x86-64 ELF vmlinux once decompressed"
                  : "is corrupt or truncated (it does not decompress to its declared size)");
        free(buf);
        return ret == -EBADMSG ? -ENOEXEC : ret;
    }
    *out = buf;
    return 0;
}

static bool elf_header_ok(const Elf64_Ehdr *eh, size_t len)
{
    return memcmp(eh->e_ident, ELFMAG, SELFMAG) == 0 && eh->e_ident[EI_CLASS] == ELFCLASS64 &&
           eh->e_ident[EI_DATA] == ELFDATA2LSB && eh->e_machine == EM_X86_64 &&
           eh->e_type == ET_EXEC && eh->e_phentsize == sizeof(Elf64_Phdr) && eh->e_phnum > 0 &&
           eh->e_phnum <= ELF_MAX_PHDRS &&
           range_within(eh->e_phoff, (uint64_t)eh->e_phnum * sizeof(Elf64_Phdr), len);
}

bool vmlinux_check(const uint8_t *img, size_t len)
{
    Elf64_Ehdr eh;
    unsigned loads = 0;

    if (!img || len < sizeof(eh))
        return false;
    memcpy(&eh, img, sizeof(eh));
    if (!elf_header_ok(&eh, len))
        return false;
    for (unsigned i = 0; i < eh.e_phnum; i++) {
        Elf64_Phdr ph;
        memcpy(&ph, img + eh.e_phoff + (uint64_t)i * sizeof(ph), sizeof(ph));
        if (ph.p_type != PT_LOAD)
            continue;
        if (ph.p_filesz > ph.p_memsz || !range_within(ph.p_offset, ph.p_filesz, len))
            return false;
        loads++;
    }
    return loads > 0;
}

/* A variable naming a directory counts only when it is absolute (XDG's rule). */
static const char *abs_env(const char *name)
{
    const char *v = getenv(name);
    return v && v[0] == '/' ? v : NULL;
}

void kernel_cache_dir(char *out, size_t size)
{
    const char *v = getenv("GODWIT_CACHE");
    int n = -1;

    if (v && v[0])
        n = snprintf(out, size, "%s/kernels", v);
    else if (geteuid() == 0)
        n = snprintf(out, size, "/var/cache/godwit/kernels");
    else if ((v = abs_env("XDG_CACHE_HOME")))
        n = snprintf(out, size, "%s/godwit/kernels", v);
    else if ((v = abs_env("HOME")))
        n = snprintf(out, size, "%s/.cache/godwit/kernels", v);
    if (n < 0 || (size_t)n >= size)
        out[0] = '\0';
}

void kernel_image_hash(const uint8_t *img, size_t len, char out[KERNEL_HASH_HEX_LEN + 1])
{
    static const char hex[] = "0123456789abcdef";
    struct sha256 s;
    uint8_t d[KERNEL_HASH_HEX_LEN / 2];

    sha256_init(&s);
    sha256_update(&s, img, len);
    sha256_final(&s, d);
    for (unsigned i = 0; i < sizeof(d); i++) {
        out[2 * i] = hex[d[i] >> 4];
        out[2 * i + 1] = hex[d[i] & 0xf];
    }
    out[KERNEL_HASH_HEX_LEN] = '\0';
}

bool kernel_cache_path(const char *dir, const char *hash, char *out, size_t size)
{
    int n = snprintf(out, size, "%s/%s.vmlinux", dir, hash);
    return n > 0 && (size_t)n < size;
}

/* Someone else's file, or one others may write, is not ours to boot. */
static const char *cache_file_problem(const struct stat *st, size_t expect_len)
{
    if (!S_ISREG(st->st_mode))
        return "not a regular file";
    if ((st->st_uid != geteuid() && st->st_uid != 0) || (st->st_mode & 022))
        return "owned or writable by another user";
    if ((uint64_t)st->st_size != expect_len)
        return "of the wrong size";
    return NULL;
}

void vmlinux_image_release(struct vmlinux_image *img)
{
    if (img->data && img->mapped)
        munmap(img->data, img->len);
    else
        free(img->data);
    *img = (struct vmlinux_image){ 0 };
}

int kernel_cache_load(const char *path, size_t expect_len, struct vmlinux_image *out)
{
    struct stat st;
    const char *problem = NULL;
    void *map = MAP_FAILED;
    int ret;

    *out = (struct vmlinux_image){ 0 };
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0 && errno == ENOENT)
        return -ENOENT;
    if (fd < 0) {
        ret = -errno;
        problem = "unreadable";
        goto fail;
    }
    if (fstat(fd, &st) < 0 || (problem = cache_file_problem(&st, expect_len))) {
        ret = -EINVAL;
        goto fail;
    }
    /* Populated: the loader reads nearly all of it, and one call beats a fault per 64 KiB. */
    map = mmap(NULL, expect_len, PROT_READ, MAP_PRIVATE | MAP_POPULATE, fd, 0);
    if (map == MAP_FAILED) {
        ret = -errno;
        problem = "unreadable";
        goto fail;
    }
    if (!vmlinux_check(map, expect_len)) {
        problem = "not an x86-64 ELF vmlinux";
        ret = -EINVAL;
        goto fail;
    }
    close(fd);
    *out = (struct vmlinux_image){ .data = map, .len = expect_len, .mapped = true };
    return 0;
fail:
    if (map != MAP_FAILED)
        munmap(map, expect_len);
    if (fd >= 0)
        close(fd);
    log_warn("kernel: the cache file %s is %s: decompressing again", path,
             problem ? problem : "unusable");
    return ret;
}

bool kernel_image_id(const struct stat *st, char *out, size_t size)
{
    int n = snprintf(out, size, "%llx-%llx-%llx-%lld.%09ld-%lld.%09ld",
                     (unsigned long long)st->st_dev, (unsigned long long)st->st_ino,
                     (unsigned long long)st->st_size, (long long)st->st_mtim.tv_sec,
                     st->st_mtim.tv_nsec, (long long)st->st_ctim.tv_sec, st->st_ctim.tv_nsec);
    return n > 0 && (size_t)n < size;
}

static bool memo_path(const char *dir, const char *id, char *out, size_t size)
{
    int n = snprintf(out, size, "%s/by-file/%s", dir, id);
    return n > 0 && (size_t)n < size;
}

static bool is_hash(const char *s, size_t len)
{
    if (len != KERNEL_HASH_HEX_LEN)
        return false;
    for (size_t i = 0; i < len; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return false;
    return true;
}

bool kernel_memo_lookup(const char *dir, const char *id, char hash[KERNEL_HASH_HEX_LEN + 1])
{
    char path[PATH_MAX];
    if (!memo_path(dir, id, path, sizeof(path)))
        return false;
    ssize_t n = readlink(path, hash, KERNEL_HASH_HEX_LEN + 1);
    if (n < 0 || !is_hash(hash, (size_t)n))
        return false;
    hash[n] = '\0';
    return true;
}

static int make_dirs(const char *dir);

void kernel_memo_store(const char *dir, const struct stat *st, const char *hash)
{
    char id[KERNEL_IMAGE_ID_MAX], path[PATH_MAX], tmp[PATH_MAX], sub[PATH_MAX];
    struct timespec now;

    if (clock_gettime(CLOCK_REALTIME, &now) < 0 ||
        now.tv_sec - st->st_ctim.tv_sec <= KERNEL_MEMO_SETTLE_S ||
        now.tv_sec - st->st_mtim.tv_sec <= KERNEL_MEMO_SETTLE_S)
        return;
    if (!kernel_image_id(st, id, sizeof(id)) || !memo_path(dir, id, path, sizeof(path)) ||
        snprintf(tmp, sizeof(tmp), "%s.%d", path, (int)getpid()) >= (int)sizeof(tmp) ||
        snprintf(sub, sizeof(sub), "%s/by-file", dir) >= (int)sizeof(sub) || make_dirs(sub) < 0)
        return;
    /* A new link under a temporary name, then renamed over any old one: never half made. */
    unlink(tmp);
    if (symlink(hash, tmp) < 0)
        return;
    if (rename(tmp, path) < 0)
        unlink(tmp);
}

/* mkdir -p, 0700: the cache holds what this user boots. */
static int make_dirs(const char *dir)
{
    char path[PATH_MAX];
    int n = snprintf(path, sizeof(path), "%s", dir);
    if (n <= 0 || (size_t)n >= sizeof(path))
        return -ENAMETOOLONG;
    for (char *p = path + 1;; p++) {
        bool end = *p == '\0';
        if (*p != '/' && !end)
            continue;
        *p = '\0';
        if (mkdir(path, 0700) < 0 && errno != EEXIST)
            return -errno;
        if (end)
            return 0;
        *p = '/';
    }
}

/* A name of the cache's own form: HASH.vmlinux. */
static bool is_cache_name(const char *name)
{
    const char *dot = strchr(name, '.');
    return dot && strcmp(dot, ".vmlinux") == 0 && is_hash(name, (size_t)(dot - name));
}

struct cache_entry {
    char name[KERNEL_HASH_HEX_LEN + sizeof(".vmlinux")]; /* HASH.vmlinux and its NUL */
    struct timespec mtime;
};

/* Newest first. */
static int cache_entry_cmp(const void *a, const void *b)
{
    const struct cache_entry *x = a, *y = b;
    if (x->mtime.tv_sec != y->mtime.tv_sec)
        return x->mtime.tv_sec < y->mtime.tv_sec ? 1 : -1;
    if (x->mtime.tv_nsec != y->mtime.tv_nsec)
        return x->mtime.tv_nsec < y->mtime.tv_nsec ? 1 : -1;
    return strcmp(x->name, y->name);
}

/* The cache's images in `dir`, newest first, in *out (malloc'd); their count, or -errno. */
static int cache_entries(DIR *d, struct cache_entry **out)
{
    struct cache_entry *list = NULL;
    size_t n = 0, cap = 0;
    struct dirent *e;
    struct stat st;

    while ((e = readdir(d))) {
        if (!is_cache_name(e->d_name) ||
            fstatat(dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISREG(st.st_mode))
            continue;
        if (n == cap) {
            cap = cap ? 2 * cap : 16;
            struct cache_entry *bigger = realloc(list, cap * sizeof(*list));
            if (!bigger) {
                free(list);
                return -ENOMEM;
            }
            list = bigger;
        }
        memcpy(list[n].name, e->d_name, sizeof(list[n].name)); /* its length: is_cache_name */
        list[n++].mtime = st.st_mtim;
    }
    if (n > 1)
        qsort(list, n, sizeof(*list), cache_entry_cmp);
    *out = list;
    return (int)n;
}

/* Whether `hash` names one of the images the cache kept: an entry of `list` that was not
 * blanked when its file was removed. */
static bool hash_kept(const char *hash, const struct cache_entry *list, int n)
{
    for (int i = 0; i < n; i++)
        if (list[i].name[0] && strncmp(list[i].name, hash, KERNEL_HASH_HEX_LEN) == 0)
            return true;
    return false;
}

/* The by-file links whose image the cache no longer holds: each names one version of a file
 * once booted, and without this they would pile up with every kernel upgrade. Anything in
 * by-file that is not a link to a hash stays. A link that another godwit made for an image it
 * has not stored yet may go too: that costs its next boot the hash, nothing else. */
static unsigned prune_memos(int dir_fd, const struct cache_entry *list, int n)
{
    int fd = openat(dir_fd, "by-file", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
    unsigned removed = 0;
    struct dirent *e;
    char hash[KERNEL_HASH_HEX_LEN + 1];

    if (!d) {
        if (fd >= 0)
            close(fd);
        return 0;
    }
    while ((e = readdir(d))) {
        ssize_t len = readlinkat(dirfd(d), e->d_name, hash, sizeof(hash));
        if (len < 0 || !is_hash(hash, (size_t)len) || hash_kept(hash, list, n))
            continue;
        if (unlinkat(dirfd(d), e->d_name, 0) == 0)
            removed++;
    }
    closedir(d);
    return removed;
}

unsigned kernel_cache_prune(const char *dir, const char *keep_path, unsigned keep)
{
    const char *slash = strrchr(keep_path, '/');
    const char *keep_name = slash ? slash + 1 : keep_path;
    struct cache_entry *list = NULL;
    unsigned removed = 0, kept = 0, memos = 0;
    DIR *d = opendir(dir);
    int n = d ? cache_entries(d, &list) : -errno;

    for (int i = 0; i < n; i++) {
        if (strcmp(list[i].name, keep_name) == 0 || kept < keep) {
            kept++;
            continue;
        }
        if (unlinkat(dirfd(d), list[i].name, 0) == 0) {
            removed++;
            list[i].name[0] = '\0'; /* not kept: its memo links go too */
        }
    }
    if (removed)
        memos = prune_memos(dirfd(d), list, n);
    if (n < 0)
        log_info("kernel: cannot look for old images in the cache %s: %s", dir, strerror(-n));
    else if (removed)
        log_info("kernel: removed %u older image(s) from the cache %s (it keeps %u), and %u "
                 "link(s) to them in by-file", removed, dir, keep, memos);
    free(list);
    if (d)
        closedir(d);
    return removed;
}

/* Written whole, synced, then renamed into place: without the sync a crash can leave the new
 * name on a file of the right size whose blocks were never written (zeros), which the size and
 * ELF checks on use would pass and the guest would boot. Only a first boot pays for it. */
int kernel_cache_store(const char *dir, const char *path, const uint8_t *img, size_t len)
{
    char tmp[PATH_MAX];
    int n = snprintf(tmp, sizeof(tmp), "%s.XXXXXX", path);
    int ret = n > 0 && (size_t)n < sizeof(tmp) ? make_dirs(dir) : -ENAMETOOLONG;
    int fd = -1;

    if (ret == 0 && (fd = mkostemp(tmp, O_CLOEXEC)) < 0)
        ret = -errno;
    if (ret == 0 && (ret = fd_write_all(fd, img, len)) == 0 &&
        (fsync(fd) < 0 || rename(tmp, path) < 0))
        ret = -errno;
    if (fd >= 0) {
        close(fd);
        if (ret < 0)
            unlink(tmp);
    }
    if (ret < 0)
        log_warn("kernel: cannot cache the decompressed kernel in %s: %s (booting it from "
                 "memory)", dir, strerror(-ret));
    return ret;
}
