/* memory.h: guest physical memory, and the one checked way to reach it from the host. */
#ifndef GODWIT_MEMORY_H
#define GODWIT_MEMORY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define GM_MAX_REGIONS 4

/* The x86-64 guest physical map (see docs/memory-map.md). */
#define GM_MMIO_HOLE_START 0xc0000000ULL /* 3 GiB: 32-bit PCI BARs, IOAPIC, LAPIC */
#define GM_MMIO_HOLE_END 0x100000000ULL  /* 4 GiB: RAM resumes here */
#define GM_MIN_SIZE (64ULL << 20)

struct gm_region {
    uint64_t gpa;   /* guest physical start */
    uint64_t size;  /* bytes */
    uint8_t *host;  /* host mapping of the memory file */
    uint64_t file_offset; /* offset of this region in the memory file */
};

#define GM_PAGE_SIZE 4096u
#define GM_BITS_PER_LONG (8u * (unsigned)sizeof(unsigned long))

struct guest_memory {
    int memfd;         /* the memory file: a memfd or tmpfs file, or a snapshot's (private_file) */
    bool private_file; /* mapped MAP_PRIVATE: the guest's writes are not in the file */
    bool file_writes;  /* not hugetlbfs: gm_load() writes through the file */
    bool thp;          /* made in gm_ram_dir_open()'s tmpfs: transparent huge pages */
    uint64_t ram_size; /* total RAM bytes across regions */
    unsigned nr_regions;
    struct gm_region regions[GM_MAX_REGIONS];
    /*
     * Pages the VMM itself (the devices) wrote, while live migration tracks them: one bit per
     * 4 KiB page of the memory file, bit (region->file_offset + (gpa - region->gpa)) / 4096,
     * in unsigned long words (bit n is bit n % GM_BITS_PER_LONG of word n / GM_BITS_PER_LONG).
     * NULL when nobody tracks. Owned and published by migration/dirty.c; read it only with
     * gm_dirty_bitmap(). The guest's own (vCPU) writes are KVM's dirty log, not this.
     */
    unsigned long *dirty;
};

/* Creates RAM of `size` bytes laid out around the MMIO hole: a memfd, of hugetlb pages with
 * `hugepages`. Returns 0 or -errno. */
int gm_init(struct guest_memory *gm, uint64_t size, bool hugepages);

/*
 * Guest RAM in transparent huge pages where the host allows THP for process memory but not for
 * memfds (the common default: THP "always" or "madvise", shmem_enabled "never"). Every 4 KiB
 * page costs the guest a nested page fault on its first touch; in a nested guest that is a
 * third of a kernel's boot, and 2 MiB pages cut the faults 512-fold, as THP does for QEMU's
 * anonymous RAM. The file is made on a tmpfs of our own with huge=within_size, mounted
 * nowhere (fsopen/fsmount): nobody else can reach it, and it is still a file that can be
 * handed over or scanned for holes like a memfd.
 *
 * gm_ram_dir_open() makes that tmpfs while the process may still mount (root, before its
 * capabilities are dropped). Returns its fd, or -errno when there is none: not root, no new
 * mount API, THP "never" on this host (then RAM is a memfd, as the administrator chose).
 */
int gm_ram_dir_open(void);
/* gm_init(), the file made in `ram_dir` (from gm_ram_dir_open) when it is >= 0 and `hugepages`
 * is not asked for; a memfd when that fails. */
int gm_init_in(struct guest_memory *gm, uint64_t size, bool hugepages, int ram_dir);
/* The same layout over `fd` (a snapshot's memory file, which gm then owns), mapped privately:
 * pages are read on first touch and the guest's writes stay in this process. */
int gm_init_private(struct guest_memory *gm, uint64_t size, int fd);
/* The same layout over `fd`, the memory file of another godwit process that hands this guest
 * over (a same-host live upgrade), mapped shared: both see the same RAM. gm keeps a duplicate
 * of fd. -EINVAL (one line) unless fd is a regular file (a memfd) of at least `size` bytes. */
int gm_init_from_fd(struct guest_memory *gm, uint64_t size, bool hugepages, int fd);
void gm_destroy(struct guest_memory *gm);

/*
 * Translates [gpa, gpa + len) to a host pointer. Returns NULL unless the whole range lies
 * inside one region (overflow-safe). Every access to guest memory goes through here.
 */
void *gm_ptr(const struct guest_memory *gm, uint64_t gpa, uint64_t len);

/*
 * Host view of [offset, offset + len) of the memory file (what dirty bitmaps and migration
 * index by), or NULL unless it lies wholly inside one region.
 */
void *gm_file_ptr(const struct guest_memory *gm, uint64_t offset, uint64_t len);

/*
 * The device dirty bitmap when tracking is on, else NULL: one load, nothing more. Call it
 * only AFTER the writes it is meant to cover (the compiler barrier here keeps the compiler
 * from sinking those writes below the load; migration/dirty.c pairs it with a membarrier()
 * when it publishes the bitmap, see there).
 */
static inline unsigned long *gm_dirty_bitmap(const struct guest_memory *gm)
{
    __atomic_signal_fence(__ATOMIC_SEQ_CST);
    return __atomic_load_n(&gm->dirty, __ATOMIC_ACQUIRE);
}

/*
 * Records that the VMM has written [gpa, gpa + len) of guest RAM, for live migration: sets
 * the pages' bits in gm->dirty atomically (a no-op, one load, when tracking is off). Call it
 * after the write, never before: the migration thread may harvest the bit and send the page
 * at any moment, and only a mark made after the write guarantees that the page is (re)sent
 * with the write in it. Parts of the range outside RAM are ignored.
 */
void gm_mark_dirty(const struct guest_memory *gm, uint64_t gpa, uint64_t len);
/* The same with the bitmap already loaded by gm_dirty_bitmap() (not NULL). */
void gm_mark_dirty_in(const struct guest_memory *gm, unsigned long *dirty, uint64_t gpa,
                      uint64_t len);

/* Copies into / out of guest memory; return 0 or -EFAULT when the range is not RAM.
 * gm_write() marks what it wrote dirty (gm_mark_dirty). */
int gm_write(const struct guest_memory *gm, uint64_t gpa, const void *src, uint64_t len);
int gm_read(const struct guest_memory *gm, uint64_t gpa, void *dst, uint64_t len);

/*
 * Loads an image (a kernel, an initrd) into [gpa, gpa + len) of guest RAM at boot, faster than
 * gm_write() where the memory file allows it (gm->file_writes): whole zero pages are skipped
 * where the file has a hole (a fresh guest's RAM: they cost nothing until the guest touches
 * them), the rest is written to the file with pwrite(). Neither faults pages into the VMM's
 * own mapping, which in a nested guest costs more than the copy. Returns 0, -EFAULT when the
 * range is not RAM, or -errno from the file (one line logged).
 */
int gm_load(const struct guest_memory *gm, uint64_t gpa, const void *src, uint64_t len);
/* Zeroes [gpa, gpa + len) of guest RAM; whole pages that are holes in the file are left. */
int gm_zero(const struct guest_memory *gm, uint64_t gpa, uint64_t len);

/* Whether the 4096 bytes at `page` are all zero (no alignment needed). */
bool page_is_zero(const void *page);

/* The end of RAM below 4 GiB (the top of the first region). */
uint64_t gm_low_ram_end(const struct guest_memory *gm);

#endif
