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

struct guest_memory {
    int memfd;         /* the memory file: a memfd, or a snapshot's file (private_file) */
    bool private_file; /* mapped MAP_PRIVATE: the guest's writes are not in the file */
    uint64_t ram_size; /* total RAM bytes across regions */
    unsigned nr_regions;
    struct gm_region regions[GM_MAX_REGIONS];
};

/* Creates RAM of `size` bytes laid out around the MMIO hole. Returns 0 or -errno. */
int gm_init(struct guest_memory *gm, uint64_t size, bool hugepages);
/* The same layout over `fd` (a snapshot's memory file, which gm then owns), mapped privately:
 * pages are read on first touch and the guest's writes stay in this process. */
int gm_init_private(struct guest_memory *gm, uint64_t size, int fd);
void gm_destroy(struct guest_memory *gm);

/*
 * Translates [gpa, gpa + len) to a host pointer. Returns NULL unless the whole range lies
 * inside one region (overflow-safe). Every access to guest memory goes through here.
 */
void *gm_ptr(const struct guest_memory *gm, uint64_t gpa, uint64_t len);

/* Copies into / out of guest memory; return 0 or -EFAULT when the range is not RAM. */
int gm_write(const struct guest_memory *gm, uint64_t gpa, const void *src, uint64_t len);
int gm_read(const struct guest_memory *gm, uint64_t gpa, void *dst, uint64_t len);

/* The end of RAM below 4 GiB (the top of the first region). */
uint64_t gm_low_ram_end(const struct guest_memory *gm);

#endif
