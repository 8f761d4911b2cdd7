/* dirty.c: KVM's dirty log for the vCPUs' writes, plus the VMM's own bitmap for the devices'. */
#define _GNU_SOURCE
#include "migration/dirty.h"

#include <errno.h>
#include <linux/kvm.h>
#include <linux/membarrier.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "log.h"
#include "vm/vm.h"

#define BPL ((uint64_t)GM_BITS_PER_LONG)
/* KVM_CLEAR_DIRTY_LOG's unit: first_page (and num_pages, but at a slot's end) multiples of it. */
#define KVM_CLEAR_UNIT 64u

/* ---- bitmaps ---- */

static bool bit_test(const unsigned long *bm, uint64_t n)
{
    return (bm[n / BPL] >> (n % BPL)) & 1;
}

static void bit_set(unsigned long *bm, uint64_t n)
{
    bm[n / BPL] |= 1UL << (n % BPL);
}

/* dst[dst_bit .. dst_bit + n) |= src[src_bit .. src_bit + n); neither is shared. */
static void bits_or(unsigned long *dst, uint64_t dst_bit, const unsigned long *src,
                    uint64_t src_bit, uint64_t n)
{
    if (dst_bit % BPL == 0 && src_bit % BPL == 0) {
        unsigned long *d = dst + dst_bit / BPL;
        const unsigned long *s = src + src_bit / BPL;
        uint64_t words = n / BPL;
        for (uint64_t i = 0; i < words; i++)
            d[i] |= s[i];
        if (n % BPL)
            d[words] |= s[words] & (~0UL >> (BPL - n % BPL));
        return;
    }
    for (uint64_t i = 0; i < n;) {
        uint64_t sb = src_bit + i;
        if (sb % BPL == 0 && n - i >= BPL && src[sb / BPL] == 0) {
            i += BPL; /* a clean word of the source: nothing to copy */
            continue;
        }
        if (bit_test(src, sb))
            bit_set(dst, dst_bit + i);
        i++;
    }
}

/* dst[dst_bit .. dst_bit + n) = 1. */
static void bits_fill(unsigned long *dst, uint64_t dst_bit, uint64_t n)
{
    for (uint64_t i = 0; i < n;) {
        uint64_t b = dst_bit + i;
        if (b % BPL == 0 && n - i >= BPL) {
            dst[b / BPL] = ~0UL;
            i += BPL;
        } else {
            bit_set(dst, b);
            i++;
        }
    }
}

void dirty_bitmap_take(unsigned long *dirty, unsigned long *out, size_t nr_pages)
{
    size_t words = DIRTY_BITMAP_LONGS(nr_pages);
    for (size_t i = 0; i < words; i++) {
        /* A clean word is left alone (no store, no cache line taken from the markers); a mark
         * landing just after this load is in the word for the next take. */
        if (__atomic_load_n(&dirty[i], __ATOMIC_RELAXED) == 0)
            continue;
        /* Acquire pairs with the markers' release fetch_or: the writes they marked are
         * visible to whoever reads the pages after this take. */
        unsigned long w = __atomic_exchange_n(&dirty[i], 0UL, __ATOMIC_ACQUIRE);
        if (i == words - 1 && nr_pages % BPL)
            w &= ~0UL >> (BPL - nr_pages % BPL);
        out[i] |= w;
    }
}

/* ---- the device bitmap: publication ---- */

/*
 * A full memory barrier on every thread of this process, now (membarrier(2)).
 *
 * Why it is needed: a device thread writes a page, then loads gm->dirty (gm_dirty_bitmap: a
 * compiler barrier, then the load) and, seeing NULL, marks nothing. Meanwhile the migration
 * thread stores the bitmap in gm->dirty and then reads the page for pass 1. Without a full
 * fence on both sides (the store-buffering pattern; x86 too reorders a store with a later
 * load), both could miss: the device sees NULL while its page write still sits in its store
 * buffer, and pass 1 reads the old page. We do not want an mfence in every push, so the
 * migration side pays for both: after the membarrier every device thread has either executed
 * a full barrier after its load of gm->dirty (so that load, and the writes before it, are
 * visible before pass 1 reads anything) or has not loaded it yet (and will see the bitmap).
 * Kernel writes (io_uring) are visible to the device thread before it pushes, and a full
 * barrier there makes them visible to everyone.
 */
static int membarrier_all_threads(void)
{
    if (syscall(__NR_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, 0, 0) == 0 &&
        syscall(__NR_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0, 0) == 0)
        return 0;
    /* Older kernels (before 4.14): the slow global one. */
    if (syscall(__NR_membarrier, MEMBARRIER_CMD_GLOBAL, 0, 0) == 0)
        return 0;
    int err = errno;
    log_error("dirty log: membarrier() failed (%s): device writes cannot be tracked exactly",
              strerror(err));
    return -err;
}

int dirty_bitmap_publish(struct guest_memory *gm, unsigned long *bitmap)
{
    /* Atomic stores: a push of an earlier tracking session may still be marking this bitmap
     * (its bits then show up as harmless over-reporting). */
    size_t words = DIRTY_BITMAP_LONGS(gm->ram_size / GM_PAGE_SIZE);
    for (size_t i = 0; i < words; i++)
        __atomic_store_n(&bitmap[i], 0UL, __ATOMIC_RELAXED);
    /* Release: a device that loads the pointer sees the zeroed bitmap, not what was there. */
    __atomic_store_n(&gm->dirty, bitmap, __ATOMIC_RELEASE);
    int ret = membarrier_all_threads();
    if (ret < 0)
        dirty_bitmap_unpublish(gm);
    return ret;
}

void dirty_bitmap_unpublish(struct guest_memory *gm)
{
    /* Devices stop marking from their next load on; one that loaded the pointer before may
     * still be marking, which is why the bitmap outlives this (dirty_log_free). */
    __atomic_store_n(&gm->dirty, NULL, __ATOMIC_RELEASE);
}

/* ---- KVM ---- */

static const char *mode_name(enum dirty_log_mode mode)
{
    switch (mode) {
    case DIRTY_LOG_GET_CLEARS: return "KVM_GET_DIRTY_LOG (clears as it reads)";
    case DIRTY_LOG_MANUAL: return "manual protect (KVM_CLEAR_DIRTY_LOG)";
    case DIRTY_LOG_MANUAL_INITIALLY_SET: return "manual protect, initially set";
    case DIRTY_LOG_OFF: break;
    }
    return "off";
}

/* Re-registers slot i exactly as vm_map_memory() did (flags 0 there), logging on or off. */
static int set_slot_logging(const struct dirty_log *d, unsigned i, bool on)
{
    const struct dirty_log_slot *s = &d->slots[i];
    struct kvm_userspace_memory_region region = {
        .slot = i,
        .flags = on ? KVM_MEM_LOG_DIRTY_PAGES : 0,
        .guest_phys_addr = s->gpa,
        .memory_size = s->size,
        .userspace_addr = s->host,
    };
    if (ioctl(d->vm_fd, KVM_SET_USER_MEMORY_REGION, &region) < 0) {
        int err = errno;
        log_error("dirty log: cannot turn logging %s for slot %u: %s", on ? "on" : "off", i,
                  strerror(err));
        return -err;
    }
    return 0;
}

static int enable_manual_protect(int vm_fd, uint64_t flags)
{
    struct kvm_enable_cap cap = { .cap = KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2, .args = { flags } };
    return ioctl(vm_fd, KVM_ENABLE_CAP, &cap) < 0 ? -errno : 0;
}

/* Picks the mode and enables manual protect when KVM offers it (before any slot logs). */
static enum dirty_log_mode choose_mode(struct vm *vm)
{
    int caps = ioctl(vm->vm_fd, KVM_CHECK_EXTENSION,
                     (unsigned long)KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2);
    if (caps < 0)
        caps = kvm_check_extension(vm, KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2);
    /* It answers the flags it supports (1, MANUAL_PROTECT_ENABLE, on kernels before
     * INITIALLY_SET existed). */
    if (caps <= 0 || !(caps & KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE))
        return DIRTY_LOG_GET_CLEARS;
    if ((caps & KVM_DIRTY_LOG_INITIALLY_SET) &&
        enable_manual_protect(vm->vm_fd, KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE |
                                             KVM_DIRTY_LOG_INITIALLY_SET) == 0)
        return DIRTY_LOG_MANUAL_INITIALLY_SET;
    if (enable_manual_protect(vm->vm_fd, KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE) == 0)
        return DIRTY_LOG_MANUAL;
    return DIRTY_LOG_GET_CLEARS;
}

size_t dirty_log_pages(const struct vm *vm)
{
    return (size_t)(vm->mem.ram_size / GM_PAGE_SIZE);
}

/* Allocates (or reuses, from an earlier start on the same VM) the bitmaps. */
static int dirty_log_alloc(struct dirty_log *d, struct vm *vm)
{
    const struct guest_memory *gm = &vm->mem;
    size_t nr_pages = dirty_log_pages(vm);
    uint64_t max_slot_pages = 0;

    if (d->device && (d->mem != &vm->mem || d->nr_pages != nr_pages))
        return -EINVAL; /* another VM's: cannot be freed safely from here */
    if (nr_pages == 0 || gm->nr_regions == 0 || gm->nr_regions > GM_MAX_REGIONS)
        return -EINVAL;
    d->mem = &vm->mem;
    d->vm_fd = vm->vm_fd;
    d->nr_pages = nr_pages;
    if (!d->device && !(d->device = calloc(DIRTY_BITMAP_LONGS(nr_pages), sizeof(unsigned long))))
        return -ENOMEM;
    d->nr_slots = gm->nr_regions;
    for (unsigned i = 0; i < gm->nr_regions; i++) {
        const struct gm_region *r = &gm->regions[i];
        struct dirty_log_slot *s = &d->slots[i];
        if (r->file_offset % GM_PAGE_SIZE || r->size % GM_PAGE_SIZE)
            return -EINVAL;
        uint64_t pages = r->size / GM_PAGE_SIZE;
        if (s->kvm_bitmap && s->nr_pages != pages) {
            free(s->kvm_bitmap);
            s->kvm_bitmap = NULL;
        }
        s->gpa = r->gpa;
        s->size = r->size;
        s->host = (uint64_t)(uintptr_t)r->host;
        s->first_page = r->file_offset / GM_PAGE_SIZE;
        s->nr_pages = pages;
        if (s->first_page > nr_pages || pages > nr_pages - s->first_page)
            return -EINVAL;
        if (!s->kvm_bitmap && !(s->kvm_bitmap = calloc(DIRTY_BITMAP_LONGS(pages),
                                                        sizeof(unsigned long))))
            return -ENOMEM;
        if (pages > max_slot_pages)
            max_slot_pages = pages;
    }
    free(d->clear_buf);
    d->clear_buf = calloc(DIRTY_BITMAP_LONGS(max_slot_pages), sizeof(unsigned long));
    return d->clear_buf ? 0 : -ENOMEM;
}

int dirty_log_start(struct dirty_log *d, struct vm *vm)
{
    if (d->mode != DIRTY_LOG_OFF)
        return -EBUSY;
    int ret = dirty_log_alloc(d, vm);
    if (ret < 0) {
        log_error("dirty log: cannot set up tracking: %s", strerror(-ret));
        return ret;
    }

    /* Manual protect must be on before a slot starts logging: it decides how the slot's log
     * starts (all set or all clear) and whether GET_DIRTY_LOG re-protects. */
    enum dirty_log_mode mode = choose_mode(vm);
    bool manual = mode != DIRTY_LOG_GET_CLEARS;

    /* The two halves may start in either order: both are on before start returns, and pass 1
     * reads nothing before that. */
    ret = dirty_bitmap_publish(&vm->mem, d->device);
    unsigned on = 0; /* slots logging */
    while (ret == 0 && on < d->nr_slots) {
        ret = set_slot_logging(d, on, true);
        if (ret == 0)
            on++;
    }
    if (ret < 0) {
        while (on > 0)
            set_slot_logging(d, --on, false);
        dirty_bitmap_unpublish(&vm->mem);
        if (manual)
            enable_manual_protect(vm->vm_fd, 0);
        return ret;
    }
    d->mode = mode;
    log_info("dirty log: tracking %zu pages in %u slots with %s", d->nr_pages, d->nr_slots,
             mode_name(mode));
    return 0;
}

int dirty_log_harvest(struct dirty_log *d, unsigned long *out, size_t nr_pages)
{
    if (d->mode == DIRTY_LOG_OFF || nr_pages < d->nr_pages)
        return -EINVAL;
    int ret = 0;
    for (unsigned i = 0; i < d->nr_slots; i++) {
        struct dirty_log_slot *s = &d->slots[i];
        struct kvm_dirty_log log = { .slot = i, .dirty_bitmap = s->kvm_bitmap };
        /* KVM writes the whole bitmap, DIRTY_BITMAP_LONGS(nr_pages) words: bits past the
         * slot's end are zero. Without manual protect it also clears and re-protects. */
        if (ioctl(d->vm_fd, KVM_GET_DIRTY_LOG, &log) < 0) {
            ret = -errno;
            log_error("dirty log: KVM_GET_DIRTY_LOG (slot %u) failed: %s", i, strerror(errno));
            continue;
        }
        bits_or(out, s->first_page, s->kvm_bitmap, 0, s->nr_pages);
    }
    dirty_bitmap_take(d->device, out, d->nr_pages);
    return ret;
}

int dirty_log_clear(struct dirty_log *d, const unsigned long *pages, uint64_t first_page,
                    uint64_t nr_pages)
{
    if (d->mode == DIRTY_LOG_OFF || first_page > d->nr_pages ||
        nr_pages > d->nr_pages - first_page)
        return -EINVAL;
    if (d->mode == DIRTY_LOG_GET_CLEARS || nr_pages == 0)
        return 0;
    const uint64_t end = first_page + nr_pages;
    for (unsigned i = 0; i < d->nr_slots; i++) {
        const struct dirty_log_slot *s = &d->slots[i];
        uint64_t lo = first_page > s->first_page ? first_page : s->first_page;
        uint64_t hi = end < s->first_page + s->nr_pages ? end : s->first_page + s->nr_pages;
        if (lo >= hi)
            continue;
        /* Slot-relative, widened to KVM's unit: only the requested pages get bits. */
        uint64_t rel_lo = lo - s->first_page, rel_hi = hi - s->first_page;
        uint64_t k_first = rel_lo - rel_lo % KVM_CLEAR_UNIT;
        uint64_t k_end = rel_hi + (KVM_CLEAR_UNIT - rel_hi % KVM_CLEAR_UNIT) % KVM_CLEAR_UNIT;
        if (k_end > s->nr_pages)
            k_end = s->nr_pages; /* KVM allows an unaligned count that ends the slot */
        size_t words = DIRTY_BITMAP_LONGS(k_end - k_first);
        memset(d->clear_buf, 0, words * sizeof(unsigned long));
        if (pages)
            bits_or(d->clear_buf, rel_lo - k_first, pages, lo, hi - lo);
        else
            bits_fill(d->clear_buf, rel_lo - k_first, hi - lo);
        bool any = false;
        for (size_t w = 0; w < words && !any; w++)
            any = d->clear_buf[w] != 0;
        if (!any)
            continue;
        struct kvm_clear_dirty_log clear = {
            .slot = i,
            .num_pages = (uint32_t)(k_end - k_first),
            .first_page = k_first,
            .dirty_bitmap = d->clear_buf,
        };
        if (ioctl(d->vm_fd, KVM_CLEAR_DIRTY_LOG, &clear) < 0) {
            int err = errno;
            log_error("dirty log: KVM_CLEAR_DIRTY_LOG (slot %u, pages %llu+%llu) failed: %s", i,
                      (unsigned long long)k_first, (unsigned long long)(k_end - k_first),
                      strerror(err));
            return -err;
        }
    }
    return 0;
}

static void dirty_log_stop_internal(struct dirty_log *d)
{
    if (d->mode == DIRTY_LOG_OFF)
        return;
    /* Devices first: from here on no push starts marking (one already marking finishes into
     * a bitmap that stays allocated). */
    dirty_bitmap_unpublish(d->mem);
    for (unsigned i = 0; i < d->nr_slots; i++)
        set_slot_logging(d, i, false);
    if (d->mode != DIRTY_LOG_GET_CLEARS && enable_manual_protect(d->vm_fd, 0) < 0)
        log_debug("dirty log: cannot turn manual protect off: %s", strerror(errno));
    d->mode = DIRTY_LOG_OFF;
}

void dirty_log_stop(struct dirty_log *d, struct vm *vm)
{
    if (d->mode != DIRTY_LOG_OFF && d->mem != &vm->mem)
        log_error("dirty log: stopped with another VM than it was started with");
    dirty_log_stop_internal(d);
}

void dirty_log_free(struct dirty_log *d)
{
    dirty_log_stop_internal(d);
    for (unsigned i = 0; i < GM_MAX_REGIONS; i++)
        free(d->slots[i].kvm_bitmap);
    free(d->device);
    free(d->clear_buf);
    memset(d, 0, sizeof(*d));
}

int memory_populated_ranges(const struct guest_memory *gm, uint64_t first_page, uint64_t nr_pages,
                            int (*fn)(void *opaque, uint64_t first_page, uint64_t nr_pages),
                            void *opaque)
{
    const uint64_t total = gm->ram_size / GM_PAGE_SIZE;
    if (first_page > total || nr_pages > total - first_page)
        return -EINVAL;
    const uint64_t end = first_page + nr_pages;
    if (nr_pages == 0)
        return 0;
    if (gm->private_file || gm->memfd < 0)
        return fn(opaque, first_page, nr_pages);

    for (uint64_t pos = first_page; pos < end;) {
        off_t data = lseek(gm->memfd, (off_t)(pos * GM_PAGE_SIZE), SEEK_DATA);
        if (data < 0) {
            if (errno == ENXIO)
                return 0; /* nothing but hole from pos to the end of the file */
            return fn(opaque, pos, end - pos); /* the file cannot tell: all of it */
        }
        uint64_t data_page = (uint64_t)data / GM_PAGE_SIZE;
        if (data_page >= end)
            return 0;
        if (data_page < pos)
            data_page = pos;
        off_t hole = lseek(gm->memfd, data, SEEK_HOLE);
        uint64_t hole_page = hole < 0 ? end : ((uint64_t)hole + GM_PAGE_SIZE - 1) / GM_PAGE_SIZE;
        if (hole_page > end)
            hole_page = end;
        if (hole_page <= data_page)
            hole_page = data_page + 1; /* always progress */
        int ret = fn(opaque, data_page, hole_page - data_page);
        if (ret)
            return ret;
        pos = hole_page;
    }
    return 0;
}
