/* unpack.h: a bzImage's compressed payload decompressed on the host, checked, and cached. */
#ifndef GODWIT_BOOT_UNPACK_H
#define GODWIT_BOOT_UNPACK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>

/*
 * A bzImage's protected-mode code is a small decompressor around a compressed vmlinux (the
 * "payload"). In a nested guest decompressing it is a third of the boot; the host does it in
 * a fraction of that, once per image when the result can be cached. The payload is an ELF
 * vmlinux that the ELF loader boots like any other, with the bzImage's setup header.
 */

enum payload_format { PAYLOAD_NONE, PAYLOAD_GZIP, PAYLOAD_XZ, PAYLOAD_OTHER };

struct payload_info {
    enum payload_format format;
    const uint8_t *data;  /* the compressed stream, inside the image */
    size_t len;           /* its length, the trailing le32 size included */
    uint32_t unpacked_len; /* that le32: the vmlinux's size */
    const char *name;     /* "XZ", "gzip", or what the magic says it is */
};

/* Finds and identifies the payload of a bzImage (the caller checked the format). Returns 0,
 * or -ENOEXEC (one line logged) when the header's payload fields point outside the image. */
int payload_find(const uint8_t *bz, size_t bz_len, struct payload_info *out);

/* Decompresses a GZIP or XZ payload into a new buffer of exactly unpacked_len bytes and
 * checks it with vmlinux_check(). Returns 0 (*out malloc'ed), or -ENOEXEC/-ENOMEM after one
 * line that names the problem. */
int payload_decompress(const struct payload_info *p, uint8_t **out);

/* The checks a decompressed payload or a cache file must pass before it is booted: an ELF64
 * x86-64 executable whose program headers and PT_LOAD segments lie inside the file. Returns
 * true when it passes; logs nothing (the caller says what failed). */
bool vmlinux_check(const uint8_t *img, size_t len);

/* Where cached kernels go: $GODWIT_CACHE/kernels ($GODWIT_CACHE is godwit's cache directory,
 * as for the tools), else /var/cache/godwit/kernels when root, else
 * $XDG_CACHE_HOME/godwit/kernels or ~/.cache/godwit/kernels. Writes "" when there is none. */
void kernel_cache_dir(char *out, size_t size);

#define KERNEL_HASH_HEX_LEN 64
/* The image's SHA-256 in lowercase hex: the cache file's name. */
void kernel_image_hash(const uint8_t *img, size_t len, char out[KERNEL_HASH_HEX_LEN + 1]);

/* DIR/HASH.vmlinux into out; false when it does not fit. */
bool kernel_cache_path(const char *dir, const char *hash, char *out, size_t size);

/* A vmlinux held for booting: decompressed into the heap, or a cache file mapped read-only
 * (the loader copies straight from the page cache: no read into a buffer first). */
struct vmlinux_image {
    uint8_t *data; /* NULL: none */
    size_t len;
    bool mapped;
};
void vmlinux_image_release(struct vmlinux_image *img);

/* Maps a cache file and checks it (exactly `expect_len` bytes, vmlinux_check()). Returns 0
 * with *out set, -ENOENT when there is none, another -errno when it is unusable (one warning
 * logged: the caller decompresses instead). */
int kernel_cache_load(const char *path, size_t expect_len, struct vmlinux_image *out);

/*
 * The image hash memo: hashing an 8 MiB bzImage costs half a second in a nested guest, more
 * than the rest of godwit's start, so the hash of an image file is remembered by the file's
 * identity (device, inode, size, modification and change times, to the nanosecond), as a
 * link DIR/by-file/ID whose target is the hash. Any write to the file changes its change time,
 * which nobody can set, so a changed file is hashed again. A file changed less than
 * KERNEL_MEMO_SETTLE_S ago is not remembered: a second write within the same clock tick could
 * leave its times as they were.
 */
#define KERNEL_MEMO_SETTLE_S 2
#define KERNEL_IMAGE_ID_MAX 128
/* The identity of the file `st` describes, for the memo; false when it does not fit. */
bool kernel_image_id(const struct stat *st, char *out, size_t size);
/* The hash remembered for `id` in DIR's memo; false when there is none (or not a hash). */
bool kernel_memo_lookup(const char *dir, const char *id, char hash[KERNEL_HASH_HEX_LEN + 1]);
/* Remembers `hash` for the file `st` describes, unless it changed too recently. Failures are
 * silent: the memo only saves time. */
void kernel_memo_store(const char *dir, const struct stat *st, const char *hash);

/* Writes the file atomically (a temporary file in the same directory, then rename), creating
 * the directory (0700, parents too) when missing. Returns 0 or -errno (one warning logged). */
int kernel_cache_store(const char *dir, const char *path, const uint8_t *img, size_t len);

/*
 * The cache keeps the KERNEL_CACHE_KEEP images stored last (each a whole vmlinux, tens of MB)
 * and removes older ones, so that a host that upgrades its kernels does not keep every one it
 * ever booted; an image removed and booted again is decompressed and stored again. Only names
 * of the cache's own form (HASH.vmlinux) are looked at, and `keep_path` is never removed.
 * When images go, so do the by-file links to images the cache no longer holds.
 * Called after a store. Returns how many images were removed; failures are silent (one info
 * line).
 */
#define KERNEL_CACHE_KEEP 4u
unsigned kernel_cache_prune(const char *dir, const char *keep_path, unsigned keep);


/*
 * What one VM does with a bzImage's payload, decided once before its first boot (on the
 * thread that may still create files: the VM's threads run under seccomp filters that do not
 * let them) and used by every boot: the cache file to read, or the first boot's vmlinux
 * already in memory when there is no cache to use.
 */
struct kernel_unpack {
    bool enabled;           /* decompress XZ and gzip payloads on the host (the default) */
    bool no_cache;          /* never read or write the cache (a jailed VM) */
    bool active;            /* set by kernel_unpack_prepare(): boot the payload */
    const char *format;     /* its format, for the log */
    uint32_t len;           /* the vmlinux's size */
    char cache_path[4096];  /* the checked cache file; "" when the cache is not used */
    struct vmlinux_image image; /* the first boot's vmlinux, taken by it; later boots map
                                   the cache file, or decompress again when there is none */
    bool cache_hit;         /* the cache had it when the VM was created */
};

/* Decides for the bzImage `bz`: returns 0 (u->active says whether the host decompresses),
 * or -ENOEXEC/-ENOMEM after one line when the payload is corrupt: a kernel that cannot boot
 * is refused here rather than halting in the guest's own decompressor. `st` describes the
 * file `bz` was read from, unchanged while it was read (the memo's key), or is NULL. */
int kernel_unpack_prepare(struct kernel_unpack *u, const uint8_t *bz, size_t bz_len,
                          const struct stat *st);

/* For one boot: the vmlinux (release it with vmlinux_image_release()) from memory, the cache,
 * or decompressed again when the cache file went bad meanwhile. Logs which path boots.
 * Returns 0 or -errno. */
int kernel_unpack_get(struct kernel_unpack *u, const uint8_t *bz, size_t bz_len,
                      struct vmlinux_image *img);

void kernel_unpack_release(struct kernel_unpack *u);

#endif
