/* dirty.h: which guest pages changed, for live migration's pre-copy passes. */
#ifndef GODWIT_MIGRATION_DIRTY_H
#define GODWIT_MIGRATION_DIRTY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "vm/memory.h"

struct vm;

/*
 * Pages are numbered by their offset in the memory file: page n is bytes [n * 4096,
 * (n + 1) * 4096) of the file, so RAM is pages 0 .. dirty_log_pages() - 1 whatever the guest
 * physical layout (gm_file_ptr() gives the host view). Bitmaps are arrays of unsigned long,
 * bit n in word n / GM_BITS_PER_LONG, DIRTY_BITMAP_LONGS(nr_pages) words long.
 */
#define DIRTY_BITMAP_LONGS(nr_pages) (((nr_pages) + GM_BITS_PER_LONG - 1) / GM_BITS_PER_LONG)

/* How KVM reports the vCPUs' writes. */
enum dirty_log_mode {
    DIRTY_LOG_OFF = 0,
    /* KVM_GET_DIRTY_LOG reads and clears (re-protects) in one go: dirty_log_clear is a no-op. */
    DIRTY_LOG_GET_CLEARS,
    /* KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2: KVM_GET_DIRTY_LOG only reads; the caller clears
     * (KVM_CLEAR_DIRTY_LOG, dirty_log_clear) just before it reads a page to send it. */
    DIRTY_LOG_MANUAL,
    /* The same with KVM_DIRTY_LOG_INITIALLY_SET: every page starts dirty in KVM's log and is
     * write-protected only when first cleared, so starting costs nothing up front. */
    DIRTY_LOG_MANUAL_INITIALLY_SET,
};

struct dirty_log_slot {
    uint64_t gpa, size, host; /* as registered by vm_map_memory() */
    uint64_t first_page;      /* memory-file page of the slot's first page */
    uint64_t nr_pages;
    unsigned long *kvm_bitmap; /* KVM_GET_DIRTY_LOG's buffer, DIRTY_BITMAP_LONGS(nr_pages) */
};

/* One VM's dirty tracking. Zero it before first use (= {0}); one thread at a time. */
struct dirty_log {
    enum dirty_log_mode mode; /* DIRTY_LOG_OFF while stopped */
    int vm_fd;
    struct guest_memory *mem;
    size_t nr_pages; /* RAM pages */
    unsigned nr_slots; /* slot i is region i */
    struct dirty_log_slot slots[GM_MAX_REGIONS];
    unsigned long *device; /* the device bitmap; kept after stop until dirty_log_free() */
    unsigned long *clear_buf; /* KVM_CLEAR_DIRTY_LOG's buffer */
};

/*
 * Turns tracking on: the device bitmap is allocated and published in vm->mem.dirty (so every
 * later device write is marked), KVM's manual-protect mode is enabled when offered (with
 * INITIALLY_SET when offered too), and every memory slot gets KVM_MEM_LOG_DIRTY_PAGES. From
 * then on every write to a page, by a vCPU or a device, is reported by a later
 * dirty_log_harvest(), until the page is cleared (dirty_log_clear in the manual modes, the
 * harvest itself otherwise) and written again. Returns 0 or -errno (everything undone).
 *
 * The passes, on the migration thread, with `bm` a bitmap of dirty_log_pages() bits:
 *
 *   dirty_log_start(&d, vm);
 *   pass 1: for each chunk [p, p + n) of RAM in order (n a multiple of 64, e.g. 32768):
 *       dirty_log_clear(&d, NULL, p, n);      // every page of the chunk, holes included
 *       memory_populated_ranges(&vm->mem, p, n, send_range, ...);  // scan AFTER the clear
 *   pass k > 1, and the final one with the VM paused (vm_pause):
 *       dirty_log_harvest(&d, bm, nr);        // bm |= dirtied since the previous harvest
 *       for each chunk [p, p + n) holding bits of bm:
 *           dirty_log_clear(&d, bm, p, n);    // only the pages about to be sent
 *           send the pages of bm in the chunk, clearing their bits in bm
 *   dirty_log_stop(&d, vm);   // after the final pass: not needed inside the downtime window
 *   dirty_log_free(&d);       // once no device can be pushing (paused, or the VM destroyed)
 *
 * Clearing right before reading is what keeps it exact: a write after the clear is logged
 * again, a write before it is in what is read. In pass 1 the populated-range scan must come
 * after the clear of its chunk, or a page first written between the scan and the clear would
 * be neither sent nor logged. With INITIALLY_SET pages never cleared stay dirty (reported by
 * every harvest), which is why pass 1 clears every chunk, holes included.
 *
 * vCPU writes reach KVM's log at the latest when the vCPU leaves KVM_RUN (PML buffers are
 * flushed on exit), so the final harvest must come after vm_pause() has stopped them.
 */
int dirty_log_start(struct dirty_log *d, struct vm *vm);

/*
 * out |= every page dirtied since the previous harvest (since the start for the first): KVM's
 * log of every slot, translated to memory-file pages, and the device bitmap, taken (read and
 * cleared) a word at a time with an atomic exchange. `out` holds nr_pages bits, at least
 * dirty_log_pages(). From any thread (KVM's dirty log ioctls are VM ioctls), but not
 * concurrently with another call on `d`. Returns 0, -EINVAL when not started or `out` is too
 * short, or -errno from KVM: then pages may have been lost from the log (KVM may have cleared
 * what it could not report), so the migration must be abandoned.
 */
int dirty_log_harvest(struct dirty_log *d, unsigned long *out, size_t nr_pages);

/*
 * Re-arms tracking for the pages of [first_page, first_page + nr_pages) whose bits are set in
 * `pages` (indexed like harvest's `out`: bit first_page is page first_page), or for every page
 * of the range when `pages` is NULL; call it just before reading those pages to send them.
 * KVM_CLEAR_DIRTY_LOG in the manual modes, nothing otherwise. Any range works; ranges that
 * start and end on multiples of 64 pages cost one ioctl per slot they touch (KVM clears in
 * 64-page aligned units; wider units are cleared only where `pages` has bits). Returns 0,
 * -EINVAL when not started or out of range, or -errno from KVM.
 */
int dirty_log_clear(struct dirty_log *d, const unsigned long *pages, uint64_t first_page,
                    uint64_t nr_pages);

/*
 * Turns tracking off: vm->mem.dirty back to NULL first (devices stop marking), then logging off
 * for every slot and manual protect off. The device bitmap is NOT freed: a push that loaded
 * the pointer just before may still be marking it. Harvest before this, not after.
 */
void dirty_log_stop(struct dirty_log *d, struct vm *vm);

/* Frees what start allocated, stopping first if still started (so call it before the VM is
 * destroyed). Call it only when no device can be inside a virtqueue push (the VM paused by
 * vm_pause, or its devices stopped); `d` is zeroed after, ready for another start. */
void dirty_log_free(struct dirty_log *d);

/* RAM pages: ram_size / 4096. */
size_t dirty_log_pages(const struct vm *vm);

/*
 * The device half, usable without KVM: dirty_bitmap_publish() zeroes `bitmap` (of
 * DIRTY_BITMAP_LONGS(ram pages) words) and makes it gm->dirty, then waits (membarrier) until
 * every thread of the process is ordered after the publication; returns 0 or -errno
 * (unpublished again). dirty_bitmap_unpublish() sets gm->dirty back to NULL (it does not free).
 */
int dirty_bitmap_publish(struct guest_memory *gm, unsigned long *bitmap);
void dirty_bitmap_unpublish(struct guest_memory *gm);

/* out |= dirty, and dirty = 0, over nr_pages bits, word by word with an atomic exchange (so a
 * concurrent gm_mark_dirty lands in this take or the next, never in neither). */
void dirty_bitmap_take(unsigned long *dirty, unsigned long *out, size_t nr_pages);

/*
 * Calls fn(opaque, first_page, nr_pages) for each run of pages in [first_page, first_page +
 * nr_pages) of the memory file that may hold data, in order, found with lseek SEEK_DATA /
 * SEEK_HOLE: holes (never written, read as zero) are skipped. The whole range is one run when
 * the file cannot tell (no SEEK_DATA support) or when gm->private_file (the guest's writes are
 * not in the file). Returns 0, fn's first non-zero return (it stops the walk), or -EINVAL
 * when the range is not inside RAM. Changes the memory file's file offset (use pread/pwrite on
 * it, never read/write). A page written after the scan may be missed: scan after clearing.
 */
int memory_populated_ranges(const struct guest_memory *gm, uint64_t first_page, uint64_t nr_pages,
                            int (*fn)(void *opaque, uint64_t first_page, uint64_t nr_pages),
                            void *opaque);


#endif
