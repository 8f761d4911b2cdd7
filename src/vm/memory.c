/* memory.c: guest RAM backed by one file (a memfd, or a tmpfs file in huge pages), split around
 * the 32-bit MMIO hole. */
#define _GNU_SOURCE
#include "vm/memory.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <linux/mount.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "io/fd_io.h"
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

/* Is THP off for process memory on this host? Then so is it for guest RAM. */
static bool thp_disabled(void)
{
    char buf[128] = "";
    int fd = open("/sys/kernel/mm/transparent_hugepage/enabled", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return true; /* no THP in this kernel */
    ssize_t n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    return n <= 0 || strstr(buf, "[never]") != NULL;
}

int gm_ram_dir_open(void)
{
    if (thp_disabled())
        return -EOPNOTSUPP;
    int fs = (int)syscall(SYS_fsopen, "tmpfs", FSOPEN_CLOEXEC);
    if (fs < 0)
        return -errno;
    /* No size limit (a VM's RAM is bounded by its configuration); the root directory open to
     * the jailed user that may make the next VM's file, and reachable only through our fd. */
    static const char *const options[][2] = {
        { "huge", "within_size" }, { "nr_blocks", "0" }, { "mode", "1777" },
    };
    int ret = 0;
    for (unsigned i = 0; ret == 0 && i < sizeof(options) / sizeof(options[0]); i++)
        if (syscall(SYS_fsconfig, fs, FSCONFIG_SET_STRING, options[i][0], options[i][1], 0) < 0)
            ret = -errno;
    if (ret == 0 && syscall(SYS_fsconfig, fs, FSCONFIG_CMD_CREATE, NULL, NULL, 0) < 0)
        ret = -errno;
    int mnt = ret < 0 ? ret
                      : (int)syscall(SYS_fsmount, fs, FSMOUNT_CLOEXEC,
                                     MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC | MOUNT_ATTR_NOSUID);
    if (mnt < 0 && ret == 0)
        ret = -errno;
    close(fs);
    return ret < 0 ? ret : mnt;
}

/* The memory file: in `ram_dir`'s tmpfs when there is one, else a memfd. */
static int gm_open_file(struct guest_memory *gm, bool hugepages, int ram_dir)
{
    if (ram_dir >= 0 && !hugepages) {
        int fd = openat(ram_dir, ".", O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
        if (fd >= 0) {
            gm->thp = true;
            return fd;
        }
        log_debug("memory: no file on the huge-page tmpfs (%s): guest RAM is a memfd",
                  strerror(errno));
    }
    int fd = memfd_create("godwit-ram", MFD_CLOEXEC | (hugepages ? MFD_HUGETLB : 0));
    if (fd < 0)
        log_error("memory: memfd_create%s failed: %s", hugepages ? " (huge pages)" : "",
                  strerror(errno));
    return fd < 0 ? -errno : fd;
}

int gm_init_in(struct guest_memory *gm, uint64_t size, bool hugepages, int ram_dir)
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
    gm->memfd = gm_open_file(gm, hugepages, ram_dir);
    if (gm->memfd < 0) {
        ret = gm->memfd;
        gm->memfd = -1;
        return ret;
    }
    gm->file_writes = !hugepages; /* hugetlbfs has no write() */
    if (ftruncate(gm->memfd, (off_t)size) < 0) {
        ret = -errno;
        log_error("memory: cannot size guest RAM to %llu MiB: %s",
                  (unsigned long long)(size >> 20), strerror(errno));
        gm_destroy(gm);
        return ret;
    }
    return gm_map_layout(gm, size, hugepages);
}

int gm_init(struct guest_memory *gm, uint64_t size, bool hugepages)
{
    return gm_init_in(gm, size, hugepages, -1);
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

/* The region holding all of [gpa, gpa + len), or NULL. */
static const struct gm_region *gm_region_of(const struct guest_memory *gm, uint64_t gpa,
                                            uint64_t len)
{
    for (unsigned i = 0; i < gm->nr_regions; i++) {
        const struct gm_region *r = &gm->regions[i];
        if (gpa < r->gpa)
            continue;
        uint64_t off = gpa - r->gpa;
        /* Written so that no sum can overflow: off < size, then len <= size - off. */
        if (off < r->size && len <= r->size - off)
            return r;
    }
    return NULL;
}

void *gm_ptr(const struct guest_memory *gm, uint64_t gpa, uint64_t len)
{
    const struct gm_region *r = gm_region_of(gm, gpa, len);
    return r ? r->host + (gpa - r->gpa) : NULL;
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

bool page_is_zero(const void *page)
{
    const unsigned char *p = page;
    for (size_t i = 0; i < GM_PAGE_SIZE; i += 64) {
        uint64_t w[8];
        memcpy(w, p + i, sizeof(w)); /* no alignment assumed; compiled to vector loads */
        if ((w[0] | w[1] | w[2] | w[3] | w[4] | w[5] | w[6] | w[7]) != 0)
            return false;
    }
    return true;
}

/* Is [off, off + len) of the memory file a hole, which reads as zeros and holds no page? Only
 * asked, never made: punching a hole would split a huge page around it. */
static bool file_hole(const struct guest_memory *gm, uint64_t off, uint64_t len)
{
    off_t data = lseek(gm->memfd, (off_t)off, SEEK_DATA);
    return data < 0 ? errno == ENXIO : (uint64_t)data >= off + len;
}

/* Length of the run at src[0, len) whose pages are all zero (want_zero) or all not, page by
 * page of the file from `off`; a partial page counts as data. */
static uint64_t run_length(const uint8_t *src, uint64_t len, uint64_t off, bool want_zero)
{
    uint64_t run = 0;
    while (run < len) {
        uint64_t n = GM_PAGE_SIZE - (off + run) % GM_PAGE_SIZE;
        if (n > len - run)
            n = len - run;
        bool zero = n == GM_PAGE_SIZE && page_is_zero(src + run);
        if (zero != want_zero)
            break;
        run += n;
    }
    return run;
}

int gm_load(const struct guest_memory *gm, uint64_t gpa, const void *src, uint64_t len)
{
    const struct gm_region *r = gm_region_of(gm, gpa, len);
    if (!r)
        return -EFAULT;
    if (!gm->file_writes)
        return gm_write(gm, gpa, src, len);
    const uint8_t *s = src;
    const uint64_t base = r->file_offset + (gpa - r->gpa);
    for (uint64_t done = 0; done < len;) {
        bool zero = len - done >= GM_PAGE_SIZE && (base + done) % GM_PAGE_SIZE == 0 &&
                    page_is_zero(s + done);
        uint64_t run = run_length(s + done, len - done, base + done, zero);
        int ret = zero && file_hole(gm, base + done, run)
                      ? 0 : fd_pwrite_all(gm->memfd, s + done, run, (off_t)(base + done));
        if (ret < 0) {
            log_error("memory: cannot load %llu bytes at %#llx into guest RAM: %s",
                      (unsigned long long)run, (unsigned long long)(gpa + done), strerror(-ret));
            return ret;
        }
        done += run;
    }
    gm_mark_dirty(gm, gpa, len);
    return 0;
}

int gm_zero(const struct guest_memory *gm, uint64_t gpa, uint64_t len)
{
    const struct gm_region *r = gm_region_of(gm, gpa, len);
    if (!r)
        return -EFAULT;
    uint8_t *host = r->host + (gpa - r->gpa);
    const uint64_t off = r->file_offset + (gpa - r->gpa);
    uint64_t head = (GM_PAGE_SIZE - off % GM_PAGE_SIZE) % GM_PAGE_SIZE;
    if (!gm->file_writes || len < head + GM_PAGE_SIZE) {
        memset(host, 0, len);
    } else {
        uint64_t whole = (len - head) / GM_PAGE_SIZE * GM_PAGE_SIZE;
        memset(host, 0, head);
        if (!file_hole(gm, off + head, whole))
            memset(host + head, 0, whole);
        memset(host + head + whole, 0, len - head - whole);
    }
    gm_mark_dirty(gm, gpa, len);
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
