/* memory.c: guest RAM backed by one memfd, split around the 32-bit MMIO hole. */
#define _GNU_SOURCE
#include "vm/memory.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"

static int gm_map_region(struct guest_memory *gm, uint64_t gpa, uint64_t size, bool hugepages)
{
    struct gm_region *r = &gm->regions[gm->nr_regions];
    uint64_t offset = gm->ram_size;
    int share = gm->private_file ? MAP_PRIVATE : MAP_SHARED;
    void *host = mmap(NULL, size, PROT_READ | PROT_WRITE, share | MAP_NORESERVE, gm->memfd,
                      (off_t)offset);
    if (host == MAP_FAILED)
        return -errno;
    /* Guest RAM has no place in a core dump of the VMM: it is large and it is private. */
    madvise(host, size, MADV_DONTDUMP);
    if (!hugepages)
        madvise(host, size, MADV_HUGEPAGE);
    *r = (struct gm_region){ .gpa = gpa, .size = size, .host = host, .file_offset = offset };
    gm->nr_regions++;
    gm->ram_size += size;
    return 0;
}

/* RAM below the MMIO hole, the rest above 4 GiB; gm->memfd is set. Frees gm on failure. */
static int gm_map_layout(struct guest_memory *gm, uint64_t size, bool hugepages)
{
    uint64_t low = size < GM_MMIO_HOLE_START ? size : GM_MMIO_HOLE_START;
    int ret = gm_map_region(gm, 0, low, hugepages);
    if (ret == 0 && size > low)
        ret = gm_map_region(gm, GM_MMIO_HOLE_END, size - low, hugepages);
    if (ret < 0) {
        log_error("memory: cannot map %llu MiB of guest RAM: %s",
                  (unsigned long long)(size >> 20), strerror(-ret));
        gm_destroy(gm);
    }
    return ret;
}

int gm_init(struct guest_memory *gm, uint64_t size, bool hugepages)
{
    const uint64_t align = hugepages ? (2ULL << 20) : 4096;
    int ret;

    memset(gm, 0, sizeof(*gm));
    gm->memfd = -1;
    if (size < GM_MIN_SIZE || size % align != 0) {
        log_error("memory: %llu MiB is invalid: need at least %llu MiB%s",
                  (unsigned long long)(size >> 20), (unsigned long long)(GM_MIN_SIZE >> 20),
                  hugepages ? " in multiples of 2 MiB" : "");
        return -EINVAL;
    }
    gm->memfd = memfd_create("godwit-ram", MFD_CLOEXEC | (hugepages ? MFD_HUGETLB : 0));
    if (gm->memfd < 0) {
        ret = -errno;
        log_error("memory: memfd_create%s failed: %s", hugepages ? " (huge pages)" : "",
                  strerror(errno));
        return ret;
    }
    if (ftruncate(gm->memfd, (off_t)size) < 0) {
        ret = -errno;
        log_error("memory: cannot size guest RAM to %llu MiB: %s",
                  (unsigned long long)(size >> 20), strerror(errno));
        gm_destroy(gm);
        return ret;
    }
    return gm_map_layout(gm, size, hugepages);
}

int gm_init_private(struct guest_memory *gm, uint64_t size, int fd)
{
    memset(gm, 0, sizeof(*gm));
    gm->memfd = fd;
    gm->private_file = true;
    return gm_map_layout(gm, size, false);
}

int gm_init_from_fd(struct guest_memory *gm, uint64_t size, bool hugepages, int fd)
{
    struct stat st;
    memset(gm, 0, sizeof(*gm));
    gm->memfd = -1;
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || (uint64_t)st.st_size < size) {
        log_error("memory: the memory file handed over is not a memfd of at least %llu MiB "
                  "(the guest's RAM)", (unsigned long long)(size >> 20));
        return -EINVAL;
    }
    /* Our own descriptor: gm_destroy() closes it, whoever else holds the file. */
    gm->memfd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (gm->memfd < 0) {
        int ret = -errno;
        log_error("memory: cannot keep the memory file handed over: %s", strerror(errno));
        return ret;
    }
    return gm_map_layout(gm, size, hugepages);
}

void gm_destroy(struct guest_memory *gm)
{
    /* The dirty bitmap belongs to migration/dirty.c (dirty_log_free), not to us. */
    gm->dirty = NULL;
    for (unsigned i = 0; i < gm->nr_regions; i++)
        munmap(gm->regions[i].host, gm->regions[i].size);
    if (gm->memfd >= 0)
        close(gm->memfd);
    gm->nr_regions = 0;
    gm->memfd = -1;
}

void *gm_ptr(const struct guest_memory *gm, uint64_t gpa, uint64_t len)
{
    for (unsigned i = 0; i < gm->nr_regions; i++) {
        const struct gm_region *r = &gm->regions[i];
        if (gpa < r->gpa)
            continue;
        uint64_t off = gpa - r->gpa;
        /* Written so that no sum can overflow: off < size, then len <= size - off. */
        if (off < r->size && len <= r->size - off)
            return r->host + off;
    }
    return NULL;
}

void *gm_file_ptr(const struct guest_memory *gm, uint64_t offset, uint64_t len)
{
    for (unsigned i = 0; i < gm->nr_regions; i++) {
        const struct gm_region *r = &gm->regions[i];
        if (offset < r->file_offset)
            continue;
        uint64_t off = offset - r->file_offset;
        if (off < r->size && len <= r->size - off)
            return r->host + off;
    }
    return NULL;
}

/*
 * Sets bits [first, last] of a dirty bitmap, a word at a time. Always a read-modify-write,
 * even when the bits are set already: skipping it would leave nothing that orders our write
 * of the page before a concurrent harvest's read of it (the release RMW joins the word's
 * release sequence, which the harvest's acquire exchange synchronizes with).
 */
static void set_bits_atomic(unsigned long *bm, uint64_t first, uint64_t last)
{
    const uint64_t first_word = first / GM_BITS_PER_LONG, last_word = last / GM_BITS_PER_LONG;
    for (uint64_t w = first_word; w <= last_word; w++) {
        unsigned long mask = ~0UL;
        if (w == first_word)
            mask &= ~0UL << (first % GM_BITS_PER_LONG);
        if (w == last_word)
            mask &= ~0UL >> (GM_BITS_PER_LONG - 1 - last % GM_BITS_PER_LONG);
        __atomic_fetch_or(&bm[w], mask, __ATOMIC_RELEASE);
    }
}

void gm_mark_dirty_in(const struct guest_memory *gm, unsigned long *dirty, uint64_t gpa,
                      uint64_t len)
{
    if (len == 0)
        return;
    /* The last byte, clamped so that no sum overflows. */
    uint64_t last = len - 1 > UINT64_MAX - gpa ? UINT64_MAX : gpa + (len - 1);
    for (unsigned i = 0; i < gm->nr_regions; i++) {
        const struct gm_region *r = &gm->regions[i];
        uint64_t r_last = r->gpa + (r->size - 1);
        if (r->size == 0 || last < r->gpa || gpa > r_last)
            continue;
        uint64_t lo = gpa > r->gpa ? gpa : r->gpa;
        uint64_t hi = last < r_last ? last : r_last;
        set_bits_atomic(dirty, (r->file_offset + (lo - r->gpa)) / GM_PAGE_SIZE,
                        (r->file_offset + (hi - r->gpa)) / GM_PAGE_SIZE);
    }
}

void gm_mark_dirty(const struct guest_memory *gm, uint64_t gpa, uint64_t len)
{
    unsigned long *dirty = gm_dirty_bitmap(gm);
    if (dirty)
        gm_mark_dirty_in(gm, dirty, gpa, len);
}

int gm_write(const struct guest_memory *gm, uint64_t gpa, const void *src, uint64_t len)
{
    void *dst = gm_ptr(gm, gpa, len);
    if (!dst)
        return -EFAULT;
    memcpy(dst, src, len);
    gm_mark_dirty(gm, gpa, len); /* after the copy: see gm_mark_dirty() */
    return 0;
}

int gm_read(const struct guest_memory *gm, uint64_t gpa, void *dst, uint64_t len)
{
    const void *src = gm_ptr(gm, gpa, len);
    if (!src)
        return -EFAULT;
    memcpy(dst, src, len);
    return 0;
}

uint64_t gm_low_ram_end(const struct guest_memory *gm)
{
    return gm->nr_regions ? gm->regions[0].gpa + gm->regions[0].size : 0;
}
