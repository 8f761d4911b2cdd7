/* unpack.h: a bzImage's compressed payload decompressed on the host, checked, and cached. */
#ifndef GODWIT_BOOT_UNPACK_H
#define GODWIT_BOOT_UNPACK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>


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

/* Reads a cache file and checks it (exactly `expect_len` bytes, vmlinux_check()). Returns 0
 * with *out malloc'ed, -ENOENT when there is none, another -errno when it is unusable (one
 * warning logged: the caller decompresses instead). */
int kernel_cache_load(const char *path, size_t expect_len, uint8_t **out);

/* Writes the file atomically (a temporary file in the same directory, then rename), creating
 * the directory (0700, parents too) when missing. Returns 0 or -errno (one warning logged). */
int kernel_cache_store(const char *dir, const char *path, const uint8_t *img, size_t len);

#endif

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
    uint8_t *image;         /* the first boot's vmlinux, taken by it; later boots read the
                               cache file, or decompress again when there is none */
    bool cache_hit;         /* the cache had it when the VM was created */
};

/* Decides for the bzImage `bz`: returns 0 (u->active says whether the host decompresses),
 * or -ENOEXEC/-ENOMEM after one line when the payload is corrupt: a kernel that cannot boot
 * is refused here rather than halting in the guest's own decompressor. */
int kernel_unpack_prepare(struct kernel_unpack *u, const uint8_t *bz, size_t bz_len);

/* For one boot: the vmlinux (malloc'ed, *len bytes) from memory, the cache, or decompressed
 * again when the cache file went bad meanwhile. Logs which path boots. Returns 0 or -errno. */
int kernel_unpack_get(struct kernel_unpack *u, const uint8_t *bz, size_t bz_len, uint8_t **img,
                      size_t *len);

void kernel_unpack_release(struct kernel_unpack *u);
