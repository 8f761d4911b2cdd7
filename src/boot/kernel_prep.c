/* kernel_prep.c: per VM, which vmlinux a bzImage boots as, and from where (see unpack.h). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "boot/unpack.h"
#include "log.h"

/* The image's hash: remembered for its file, or computed (and remembered). */
static void image_hash(const char *dir, const uint8_t *bz, size_t bz_len, const struct stat *st,
                       char hash[KERNEL_HASH_HEX_LEN + 1])
{
    char id[KERNEL_IMAGE_ID_MAX];
    bool known = st && kernel_image_id(st, id, sizeof(id));

    if (known && kernel_memo_lookup(dir, id, hash))
        return;
    kernel_image_hash(bz, bz_len, hash);
    if (known)
        kernel_memo_store(dir, st, hash);
}

/* Looks the payload up in the cache, or decompresses it and stores it there. */
static int prepare_cached(struct kernel_unpack *u, const struct payload_info *p, const uint8_t *bz,
                          size_t bz_len, const struct stat *st)
{
    char dir[sizeof(u->cache_path)], hash[KERNEL_HASH_HEX_LEN + 1];
    uint8_t *img = NULL;

    u->cache_path[0] = '\0';
    if (!u->no_cache) {
        kernel_cache_dir(dir, sizeof(dir));
        if (dir[0]) {
            image_hash(dir, bz, bz_len, st, hash);
            if (!kernel_cache_path(dir, hash, u->cache_path, sizeof(u->cache_path)))
                u->cache_path[0] = '\0';
        }
    }
    if (u->cache_path[0] && kernel_cache_load(u->cache_path, p->unpacked_len, &u->image) == 0) {
        u->cache_hit = true; /* the first boot's; later boots map the file again */
        return 0;
    }
    int ret = payload_decompress(p, &img);
    if (ret < 0)
        return ret;
    if (u->cache_path[0] && kernel_cache_store(dir, u->cache_path, img, p->unpacked_len) < 0)
        u->cache_path[0] = '\0';
    else if (u->cache_path[0])
        kernel_cache_prune(dir, u->cache_path, KERNEL_CACHE_KEEP);
    /* The first boot takes it: no need to read back what was just written. */
    u->image = (struct vmlinux_image){ .data = img, .len = p->unpacked_len };
    return 0;
}

int kernel_unpack_prepare(struct kernel_unpack *u, const uint8_t *bz, size_t bz_len,
                          const struct stat *st)
{
    struct payload_info p;

    u->active = false;
    if (!u->enabled)
        return 0;
    int ret = payload_find(bz, bz_len, &p);
    if (ret < 0)
        return ret;
    u->format = p.name;
    u->len = p.unpacked_len;
    if (p.format != PAYLOAD_XZ && p.format != PAYLOAD_GZIP)
        return 0; /* kernel_unpack_get() is not called: the guest decompresses, as it can */
    ret = prepare_cached(u, &p, bz, bz_len, st);
    u->active = ret == 0;
    return ret;
}

static int decompress_again(struct kernel_unpack *u, const uint8_t *bz, size_t bz_len,
                            struct vmlinux_image *img)
{
    struct payload_info p;
    uint8_t *data = NULL;
    int ret = payload_find(bz, bz_len, &p);
    if (ret == 0 && p.unpacked_len != u->len) {
        log_error("kernel: the bzImage changed since the VM was created");
        ret = -ESTALE;
    }
    if (ret == 0 && (ret = payload_decompress(&p, &data)) == 0)
        *img = (struct vmlinux_image){ .data = data, .len = p.unpacked_len };
    return ret;
}

int kernel_unpack_get(struct kernel_unpack *u, const uint8_t *bz, size_t bz_len,
                      struct vmlinux_image *img)
{
    const char *from = "decompressed on the host, cached as";
    int ret = 0;

    *img = (struct vmlinux_image){ 0 };
    if (u->image.data) {
        *img = u->image;
        u->image = (struct vmlinux_image){ 0 };
        if (u->cache_hit)
            from = "read from the cache";
    } else if (u->cache_path[0] && kernel_cache_load(u->cache_path, u->len, img) == 0) {
        from = "read from the cache";
    } else {
        ret = decompress_again(u, bz, bz_len, img);
        u->cache_path[0] = '\0';
    }
    if (ret == 0)
        log_info("kernel: booting the bzImage's %s payload as a vmlinux, %s %s", u->format,
                 u->cache_path[0] ? from : "decompressed on the host, not cached",
                 u->cache_path);
    return ret;
}

void kernel_unpack_release(struct kernel_unpack *u)
{
    vmlinux_image_release(&u->image);
}
