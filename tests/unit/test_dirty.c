/* test_dirty.c: dirty-page tracking for live migration, against a fake KVM dirty log. */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <pthread.h>
#include <linux/kvm.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <cmocka.h>

#include "log.h"
#include "migration/dirty.h"
#include "vm/vm.h"

#define PAGE 4096ull
#define RAM_SIZE (64ull << 20)
#define RAM_PAGES (RAM_SIZE / PAGE)

static bool bit(const unsigned long *bm, uint64_t n)
{
    return (bm[n / GM_BITS_PER_LONG] >> (n % GM_BITS_PER_LONG)) & 1;
}

static uint64_t count_bits(const unsigned long *bm, uint64_t nr)
{
    uint64_t n = 0;
    for (uint64_t i = 0; i < nr; i++)
        n += bit(bm, i);
    return n;
}

static unsigned long *bitmap_new(uint64_t nr_pages)
{
    unsigned long *bm = calloc(DIRTY_BITMAP_LONGS(nr_pages), sizeof(unsigned long));
    assert_non_null(bm);
    return bm;
}

/* ---- a fake KVM, behind ioctl() on two made-up descriptors ---- */

#define FAKE_VM_FD 7001
#define FAKE_KVM_FD 7002

struct fake_slot {
    bool logging;
    uint64_t pages;
    unsigned long *log;
};

static struct fake_kvm {
    const struct guest_memory *gm;
    int caps;                /* what CHECK_EXTENSION(MANUAL_DIRTY_LOG_PROTECT2) answers */
    bool refuse_init_set;    /* ENABLE_CAP with INITIALLY_SET fails */
    int fail_slot;           /* SET_USER_MEMORY_REGION fails for this slot (-1: none) */
    uint64_t manual;         /* the enabled flags */
    unsigned nr_set_region, nr_get, nr_clear;
    struct kvm_clear_dirty_log last_clear;
    unsigned long last_clear_bits[8]; /* the first words of the last clear's bitmap */
    struct fake_slot slots[GM_MAX_REGIONS];
} fake;

static void fake_reset(const struct guest_memory *gm, int caps)
{
    for (unsigned i = 0; i < GM_MAX_REGIONS; i++)
        free(fake.slots[i].log);
    memset(&fake, 0, sizeof(fake));
    fake.gm = gm;
    fake.caps = caps;
    fake.fail_slot = -1;
}

/* The guest (a vCPU) writes page `page` of slot `slot`. */
static void fake_guest_write(unsigned slot, uint64_t page)
{
    struct fake_slot *s = &fake.slots[slot];
    assert_true(s->logging);
    assert_true(page < s->pages);
    s->log[page / GM_BITS_PER_LONG] |= 1UL << (page % GM_BITS_PER_LONG);
}

static int fake_region(const struct kvm_userspace_memory_region *r)
{
    fake.nr_set_region++;
    /* dirty.c must re-register the slot exactly as vm_map_memory() did. */
    assert_true(r->slot < fake.gm->nr_regions);
    const struct gm_region *g = &fake.gm->regions[r->slot];
    assert_int_equal(r->guest_phys_addr, g->gpa);
    assert_int_equal(r->memory_size, g->size);
    assert_int_equal(r->userspace_addr, (uint64_t)(uintptr_t)g->host);
    assert_true(r->flags == 0 || r->flags == KVM_MEM_LOG_DIRTY_PAGES);
    if ((int)r->slot == fake.fail_slot) {
        errno = ENOMEM;
        return -1;
    }
    struct fake_slot *s = &fake.slots[r->slot];
    bool on = r->flags & KVM_MEM_LOG_DIRTY_PAGES;
    if (on && !s->logging) {
        s->pages = g->size / PAGE;
        s->log = bitmap_new(s->pages);
        if ((fake.manual & KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE) &&
            (fake.manual & KVM_DIRTY_LOG_INITIALLY_SET))
            for (uint64_t p = 0; p < s->pages; p++)
                s->log[p / GM_BITS_PER_LONG] |= 1UL << (p % GM_BITS_PER_LONG);
    } else if (!on && s->logging) {
        free(s->log);
        s->log = NULL;
    }
    s->logging = on;
    return 0;
}

static int fake_get(struct kvm_dirty_log *l)
{
    fake.nr_get++;
    assert_true(l->slot < fake.gm->nr_regions);
    struct fake_slot *s = &fake.slots[l->slot];
    if (!s->logging) {
        errno = ENOENT;
        return -1;
    }
    size_t bytes = DIRTY_BITMAP_LONGS(s->pages) * sizeof(unsigned long);
    memcpy(l->dirty_bitmap, s->log, bytes);
    if (!(fake.manual & KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE))
        memset(s->log, 0, bytes); /* the old way: read and re-protect */
    return 0;
}

static int fake_clear(struct kvm_clear_dirty_log *c)
{
    fake.nr_clear++;
    fake.last_clear = *c;
    memset(fake.last_clear_bits, 0, sizeof(fake.last_clear_bits));
    assert_true(fake.manual & KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE);
    assert_true(c->slot < fake.gm->nr_regions);
    struct fake_slot *s = &fake.slots[c->slot];
    assert_true(s->logging);
    /* KVM's rules: first_page a multiple of 64, num_pages too unless it ends the slot. */
    assert_int_equal(c->first_page % 64, 0);
    assert_true(c->num_pages % 64 == 0 || c->first_page + c->num_pages == s->pages);
    assert_true(c->first_page <= s->pages && c->num_pages <= s->pages - c->first_page);
    const unsigned long *in = c->dirty_bitmap;
    for (uint64_t i = 0; i < c->num_pages; i++) {
        if (!bit(in, i))
            continue;
        uint64_t p = c->first_page + i;
        s->log[p / GM_BITS_PER_LONG] &= ~(1UL << (p % GM_BITS_PER_LONG));
        if (i < 8 * GM_BITS_PER_LONG)
            fake.last_clear_bits[i / GM_BITS_PER_LONG] |= 1UL << (i % GM_BITS_PER_LONG);
    }
    return 0;
}

/* Interposes on libc's ioctl for this test binary: the fake descriptors reach the fake. */
int ioctl(int fd, unsigned long request, ...)
{
    va_list ap;
    va_start(ap, request);
    void *arg = va_arg(ap, void *);
    va_end(ap);
    if (fd != FAKE_VM_FD && fd != FAKE_KVM_FD)
        return (int)syscall(SYS_ioctl, fd, request, arg);
    switch (request) {
    case KVM_CHECK_EXTENSION:
        return (uintptr_t)arg == KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 ? fake.caps : 0;
    case KVM_ENABLE_CAP: {
        const struct kvm_enable_cap *cap = arg;
        assert_int_equal(fd, FAKE_VM_FD);
        assert_int_equal(cap->cap, KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2);
        if ((cap->args[0] & ~(uint64_t)fake.caps) ||
            (fake.refuse_init_set && (cap->args[0] & KVM_DIRTY_LOG_INITIALLY_SET))) {
            errno = EINVAL;
            return -1;
        }
        fake.manual = cap->args[0];
        return 0;
    }
    case KVM_SET_USER_MEMORY_REGION:
        assert_int_equal(fd, FAKE_VM_FD);
        return fake_region(arg);
    case KVM_GET_DIRTY_LOG:
        assert_int_equal(fd, FAKE_VM_FD);
        return fake_get(arg);
    case KVM_CLEAR_DIRTY_LOG:
        assert_int_equal(fd, FAKE_VM_FD);
        return fake_clear(arg);
    }
    errno = ENOTTY;
    return -1;
}

static struct vm *vm_new(uint64_t ram, int caps)
{
    struct vm *vm = calloc(1, sizeof(*vm));
    assert_non_null(vm);
    vm->vm_fd = FAKE_VM_FD;
    vm->kvm_fd = FAKE_KVM_FD;
    assert_int_equal(gm_init(&vm->mem, ram, false), 0);
    fake_reset(&vm->mem, caps);
    return vm;
}

static void vm_free(struct vm *vm)
{
    gm_destroy(&vm->mem);
    free(vm);
    fake_reset(NULL, 0);
}

/* ---- the device bitmap ---- */

static void test_take_returns_and_clears(void **state)
{
    (void)state;
    struct guest_memory gm;
    assert_int_equal(gm_init(&gm, RAM_SIZE, false), 0);
    unsigned long *dev = bitmap_new(RAM_PAGES), *out = bitmap_new(RAM_PAGES);
    uint8_t buf[2 * PAGE] = { 1 };

    /* Nothing is marked before publication, nor after. */
    assert_int_equal(gm_write(&gm, 0x1000, buf, 8), 0);
    dev[0] = ~0UL; /* stale contents: publication zeroes them */
    assert_int_equal(dirty_bitmap_publish(&gm, dev), 0);
    assert_ptr_equal(gm.dirty, dev);
    assert_int_equal(count_bits(dev, RAM_PAGES), 0);

    /* gm_write and gm_mark_dirty mark; a write across a page boundary marks both pages. */
    assert_int_equal(gm_write(&gm, 5 * PAGE + 100, buf, 8), 0);
    assert_int_equal(gm_write(&gm, 9 * PAGE - 4, buf, 8), 0);
    gm_mark_dirty(&gm, RAM_SIZE - 1, 1);
    out[0] = 1UL << 1; /* take ORs into what is there */
    dirty_bitmap_take(dev, out, RAM_PAGES);
    assert_int_equal(count_bits(out, RAM_PAGES), 5);
    assert_true(bit(out, 1) && bit(out, 5) && bit(out, 8) && bit(out, 9));
    assert_true(bit(out, RAM_PAGES - 1));
    assert_int_equal(count_bits(dev, RAM_PAGES), 0);

    /* A second take finds nothing new. */
    memset(out, 0, DIRTY_BITMAP_LONGS(RAM_PAGES) * sizeof(unsigned long));
    dirty_bitmap_take(dev, out, RAM_PAGES);
    assert_int_equal(count_bits(out, RAM_PAGES), 0);

    /* Unpublished: writes mark nothing, and the bitmap is still ours to free. */
    dirty_bitmap_unpublish(&gm);
    assert_null(gm.dirty);
    assert_int_equal(gm_write(&gm, 3 * PAGE, buf, sizeof(buf)), 0);
    gm_mark_dirty(&gm, 0, RAM_SIZE);
    assert_int_equal(count_bits(dev, RAM_PAGES), 0);
    free(dev);
    free(out);
    gm_destroy(&gm);
}

/* A take of fewer pages than the bitmap holds stops at nr_pages, even inside a word. */
static void test_take_partial_word(void **state)
{
    (void)state;
    unsigned long dev[2] = { ~0UL, ~0UL }, out[2] = { 0, 0 };
    dirty_bitmap_take(dev, out, GM_BITS_PER_LONG + 3);
    assert_true(out[0] == ~0UL);
    assert_true(out[1] == 7UL);
    assert_true(dev[0] == 0 && dev[1] == 0);
}

/* A device thread marks every page once while the migration thread keeps taking: every mark
 * ends up in exactly one of the takes, none is lost. */
struct marker {
    struct guest_memory *gm;
    _Atomic bool done;
};

static void *marker_thread(void *opaque)
{
    struct marker *m = opaque;
    uint8_t v = 0x5a;
    for (uint64_t p = 0; p < RAM_PAGES; p++)
        assert_int_equal(gm_write(m->gm, p * PAGE + (p % 7) * 8, &v, 1), 0);
    m->done = true;
    return NULL;
}

static void test_take_concurrent_with_marks(void **state)
{
    (void)state;
    struct guest_memory gm;
    assert_int_equal(gm_init(&gm, RAM_SIZE, false), 0);
    unsigned long *dev = bitmap_new(RAM_PAGES), *out = bitmap_new(RAM_PAGES);
    assert_int_equal(dirty_bitmap_publish(&gm, dev), 0);

    struct marker m = { .gm = &gm };
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, marker_thread, &m), 0);
    unsigned takes = 0;
    while (!m.done) {
        dirty_bitmap_take(dev, out, RAM_PAGES);
        takes++;
    }
    pthread_join(t, NULL);
    dirty_bitmap_take(dev, out, RAM_PAGES);
    assert_int_equal(count_bits(out, RAM_PAGES), RAM_PAGES);
    assert_true(takes > 0);
    dirty_bitmap_unpublish(&gm);
    free(dev);
    free(out);
    gm_destroy(&gm);
}

/* ---- the first pass's helpers ---- */

struct ranges {
    unsigned n;
    uint64_t first[16], count[16];
    int stop_after; /* return 1 from the callback after this many (0: never) */
};

static int collect(void *opaque, uint64_t first, uint64_t count)
{
    struct ranges *r = opaque;
    assert_true(r->n < 16);
    assert_true(count > 0);
    if (r->n > 0) /* in order, never overlapping */
        assert_true(first >= r->first[r->n - 1] + r->count[r->n - 1]);
    r->first[r->n] = first;
    r->count[r->n] = count;
    r->n++;
    return r->stop_after && (int)r->n >= r->stop_after ? 1 : 0;
}

static bool covered(const struct ranges *r, uint64_t page)
{
    for (unsigned i = 0; i < r->n; i++)
        if (page >= r->first[i] && page < r->first[i] + r->count[i])
            return true;
    return false;
}

static uint64_t covered_pages(const struct ranges *r)
{
    uint64_t n = 0;
    for (unsigned i = 0; i < r->n; i++)
        n += r->count[i];
    return n;
}

static void test_populated_ranges(void **state)
{
    (void)state;
    struct guest_memory gm;
    assert_int_equal(gm_init(&gm, RAM_SIZE, false), 0);
    const uint64_t written[] = { 5, 6, 1000, RAM_PAGES - 1 };
    uint8_t v = 1;
    for (unsigned i = 0; i < 4; i++)
        assert_int_equal(gm_write(&gm, written[i] * PAGE + 12, &v, 1), 0);

    /* The whole of RAM: the written pages are found, the rest (holes) is skipped. Huge
     * pages backing the file may widen a run to 2 MiB (512 pages), never more. */
    struct ranges r = { 0 };
    assert_int_equal(memory_populated_ranges(&gm, 0, RAM_PAGES, collect, &r), 0);
    for (unsigned i = 0; i < 4; i++)
        assert_true(covered(&r, written[i]));
    assert_true(r.n >= 3);
    assert_true(covered_pages(&r) <= 3 * 512);
    assert_false(covered(&r, 4096));
    if (covered_pages(&r) < 512) { /* 4 KiB pages: exact */
        assert_int_equal(r.n, 3);
        assert_int_equal(r.first[0], 5);
        assert_int_equal(r.count[0], 2);
        assert_int_equal(r.first[1], 1000);
        assert_int_equal(r.count[1], 1);
        assert_int_equal(r.first[2], RAM_PAGES - 1);
        assert_int_equal(r.count[2], 1);
    }

    /* A window: runs are clipped to it. */
    memset(&r, 0, sizeof(r));
    assert_int_equal(memory_populated_ranges(&gm, 6, 900, collect, &r), 0);
    assert_true(r.n >= 1);
    assert_int_equal(r.first[0], 6);
    assert_true(r.first[r.n - 1] + r.count[r.n - 1] <= 906);

    /* Only holes: nothing. */
    memset(&r, 0, sizeof(r));
    assert_int_equal(memory_populated_ranges(&gm, 2048, 4096, collect, &r), 0);
    assert_int_equal(r.n, 0);

    /* The callback stops the walk with its return value. */
    memset(&r, 0, sizeof(r));
    r.stop_after = 1;
    assert_int_equal(memory_populated_ranges(&gm, 0, RAM_PAGES, collect, &r), 1);
    assert_int_equal(r.n, 1);

    /* Outside RAM. */
    assert_int_equal(memory_populated_ranges(&gm, RAM_PAGES, 1, collect, &r), -EINVAL);
    assert_int_equal(memory_populated_ranges(&gm, 1, RAM_PAGES, collect, &r), -EINVAL);
    assert_int_equal(memory_populated_ranges(&gm, RAM_PAGES, 0, collect, &r), 0);

    /* A privately mapped file says nothing about the guest's writes: all of it. */
    gm.private_file = true;
    memset(&r, 0, sizeof(r));
    assert_int_equal(memory_populated_ranges(&gm, 10, 20, collect, &r), 0);
    assert_int_equal(r.n, 1);
    assert_int_equal(r.first[0], 10);
    assert_int_equal(r.count[0], 20);
    gm.private_file = false;
    gm_destroy(&gm);
}

static void test_page_is_zero(void **state)
{
    (void)state;
    uint8_t *buf = calloc(1, 2 * PAGE + 1);
    assert_non_null(buf);
    assert_true(page_is_zero(buf));
    assert_true(page_is_zero(buf + 1)); /* unaligned */
    const size_t at[] = { 0, 1, 63, 64, 2047, 4095 };
    for (unsigned i = 0; i < sizeof(at) / sizeof(at[0]); i++) {
        buf[at[i]] = 0x80;
        assert_false(page_is_zero(buf));
        buf[at[i]] = 0;
    }
    buf[PAGE] = 1; /* the byte after the page does not count */
    assert_true(page_is_zero(buf));
    free(buf);
}

/* ---- the whole log, against the fake KVM ---- */

static void test_not_started(void **state)
{
    (void)state;
    struct dirty_log d = { 0 };
    unsigned long out[4] = { 0 };
    assert_int_equal(dirty_log_harvest(&d, out, 256), -EINVAL);
    assert_int_equal(dirty_log_clear(&d, NULL, 0, 64), -EINVAL);
    dirty_log_free(&d);
}

/* Without manual protect: GET_DIRTY_LOG reads and clears, dirty_log_clear does nothing. */
static void test_get_clears_mode(void **state)
{
    (void)state;
    struct vm *vm = vm_new(RAM_SIZE, 0);
    struct dirty_log d = { 0 };
    unsigned long *out = bitmap_new(RAM_PAGES);
    uint8_t v = 1;

    assert_int_equal(dirty_log_pages(vm), RAM_PAGES);
    assert_int_equal(dirty_log_start(&d, vm), 0);
    assert_int_equal(d.mode, DIRTY_LOG_GET_CLEARS);
    assert_int_equal(dirty_log_start(&d, vm), -EBUSY);
    assert_true(fake.slots[0].logging);
    assert_int_equal(fake.manual, 0);
    assert_non_null(vm->mem.dirty);

    fake_guest_write(0, 3);
    assert_int_equal(gm_write(&vm->mem, 10 * PAGE, &v, 1), 0);
    assert_int_equal(dirty_log_harvest(&d, out, RAM_PAGES - 1), -EINVAL); /* too short */
    assert_int_equal(dirty_log_harvest(&d, out, RAM_PAGES), 0);
    assert_int_equal(count_bits(out, RAM_PAGES), 2);
    assert_true(bit(out, 3) && bit(out, 10));
    assert_int_equal(dirty_log_clear(&d, out, 0, 64), 0);
    assert_int_equal(fake.nr_clear, 0);

    memset(out, 0, DIRTY_BITMAP_LONGS(RAM_PAGES) * sizeof(unsigned long));
    assert_int_equal(dirty_log_harvest(&d, out, RAM_PAGES), 0);
    assert_int_equal(count_bits(out, RAM_PAGES), 0);

    dirty_log_stop(&d, vm);
    assert_false(fake.slots[0].logging);
    assert_null(vm->mem.dirty);
    assert_int_equal(dirty_log_harvest(&d, out, RAM_PAGES), -EINVAL);
    dirty_log_free(&d);
    free(out);
    vm_free(vm);
}

/* Manual protect: harvests keep reporting a page until it is cleared. */
static void test_manual_mode(void **state)
{
    (void)state;
    struct vm *vm = vm_new(RAM_SIZE, KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE);
    struct dirty_log d = { 0 };
    unsigned long *out = bitmap_new(RAM_PAGES);

    assert_int_equal(dirty_log_start(&d, vm), 0);
    assert_int_equal(d.mode, DIRTY_LOG_MANUAL);
    assert_int_equal(fake.manual, KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE);

    fake_guest_write(0, 3);
    fake_guest_write(0, 70);
    assert_int_equal(dirty_log_harvest(&d, out, RAM_PAGES), 0);
    assert_int_equal(count_bits(out, RAM_PAGES), 2);
    memset(out, 0, DIRTY_BITMAP_LONGS(RAM_PAGES) * sizeof(unsigned long));
    assert_int_equal(dirty_log_harvest(&d, out, RAM_PAGES), 0);
    assert_int_equal(count_bits(out, RAM_PAGES), 2); /* not cleared yet */

    /* Clearing the first chunk clears page 3 only: 70 is in the next chunk. */
    fake_guest_write(0, 4); /* dirtied after the harvest: not in out, so not cleared */
    assert_int_equal(dirty_log_clear(&d, out, 0, 64), 0);
    assert_int_equal(fake.nr_clear, 1);
    assert_int_equal(fake.last_clear.slot, 0);
    assert_int_equal(fake.last_clear.first_page, 0);
    assert_int_equal(fake.last_clear.num_pages, 64);
    assert_true(fake.last_clear_bits[0] == 1UL << 3);
    /* A chunk without bits costs no ioctl. */
    assert_int_equal(dirty_log_clear(&d, out, 128, 64), 0);
    assert_int_equal(fake.nr_clear, 1);

    memset(out, 0, DIRTY_BITMAP_LONGS(RAM_PAGES) * sizeof(unsigned long));
    assert_int_equal(dirty_log_harvest(&d, out, RAM_PAGES), 0);
    assert_int_equal(count_bits(out, RAM_PAGES), 2);
    assert_true(bit(out, 4) && bit(out, 70));

    assert_int_equal(dirty_log_clear(&d, NULL, 0, RAM_PAGES), 0);
    memset(out, 0, DIRTY_BITMAP_LONGS(RAM_PAGES) * sizeof(unsigned long));
    assert_int_equal(dirty_log_harvest(&d, out, RAM_PAGES), 0);
    assert_int_equal(count_bits(out, RAM_PAGES), 0);
    assert_int_equal(dirty_log_clear(&d, NULL, RAM_PAGES - 10, 11), -EINVAL);

    dirty_log_stop(&d, vm);
    assert_int_equal(fake.manual, 0); /* manual protect off again */
    dirty_log_free(&d);
    free(out);
    vm_free(vm);
}

/* INITIALLY_SET: everything starts dirty; clearing (pass 1) arms it a chunk at a time, with
 * ranges of any alignment widened to KVM's 64-page units. */
static void test_initially_set_mode(void **state)
{
    (void)state;
    /* 10 pages past a multiple of 64: the slot's last unit is short. */
    const uint64_t ram = RAM_SIZE + 10 * PAGE, pages = ram / PAGE;
    struct vm *vm = vm_new(ram, KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE | KVM_DIRTY_LOG_INITIALLY_SET);
    struct dirty_log d = { 0 };
    unsigned long *out = bitmap_new(pages);

    assert_int_equal(dirty_log_start(&d, vm), 0);
    assert_int_equal(d.mode, DIRTY_LOG_MANUAL_INITIALLY_SET);
    assert_int_equal(dirty_log_harvest(&d, out, pages), 0);
    assert_int_equal(count_bits(out, pages), pages);

    /* An unaligned range: KVM sees the aligned unit, with bits for the range only. */
    assert_int_equal(dirty_log_clear(&d, NULL, 70, 10), 0);
    assert_int_equal(fake.last_clear.first_page, 64);
    assert_int_equal(fake.last_clear.num_pages, 64);
    assert_true(fake.last_clear_bits[0] == 0x3ffUL << 6);
    /* The slot's short tail: an unaligned count that ends the slot. */
    assert_int_equal(dirty_log_clear(&d, NULL, pages - 14, 14), 0);
    assert_int_equal(fake.last_clear.first_page, pages - 10 - 64);
    assert_int_equal(fake.last_clear.num_pages, 74);

    assert_int_equal(dirty_log_clear(&d, NULL, 0, pages), 0);
    memset(out, 0, DIRTY_BITMAP_LONGS(pages) * sizeof(unsigned long));
    assert_int_equal(dirty_log_harvest(&d, out, pages), 0);
    assert_int_equal(count_bits(out, pages), 0);
    dirty_log_free(&d); /* stops too */
    assert_false(fake.slots[0].logging);
    assert_null(vm->mem.dirty);
    free(out);

    /* A KVM that offers INITIALLY_SET but refuses it: plain manual protect. */
    fake_reset(&vm->mem, KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE | KVM_DIRTY_LOG_INITIALLY_SET);
    fake.refuse_init_set = true;
    assert_int_equal(dirty_log_start(&d, vm), 0);
    assert_int_equal(d.mode, DIRTY_LOG_MANUAL);
    dirty_log_free(&d);
    vm_free(vm);
}

/* Above 4 GiB: slot 1's pages follow slot 0's in the memory file. */
static void test_two_slots(void **state)
{
    (void)state;
    const uint64_t ram = (4ull << 30) + (64ull << 20), pages = ram / PAGE;
    const uint64_t low_pages = GM_MMIO_HOLE_START / PAGE;
    struct vm *vm = vm_new(ram, KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE);
    struct dirty_log d = { 0 };
    unsigned long *out = bitmap_new(pages);
    uint8_t v = 1;

    assert_int_equal(vm->mem.nr_regions, 2);
    assert_int_equal(dirty_log_start(&d, vm), 0);
    assert_true(fake.slots[0].logging && fake.slots[1].logging);
    fake_guest_write(1, 5);
    fake_guest_write(0, low_pages - 1);
    assert_int_equal(gm_write(&vm->mem, GM_MMIO_HOLE_END + 7 * PAGE, &v, 1), 0);
    assert_int_equal(dirty_log_harvest(&d, out, pages), 0);
    assert_int_equal(count_bits(out, pages), 3);
    assert_true(bit(out, low_pages + 5) && bit(out, low_pages - 1) && bit(out, low_pages + 7));

    /* A range across both slots: one clear per slot, each slot-relative. */
    assert_int_equal(dirty_log_clear(&d, out, low_pages - 64, 128), 0);
    assert_int_equal(fake.nr_clear, 2);
    assert_int_equal(fake.last_clear.slot, 1);
    assert_int_equal(fake.last_clear.first_page, 0);
    /* Slot 1's bits of `out`, the device's page 7 among them (clearing it in KVM is
     * harmless: its bit there was clear). */
    assert_true(fake.last_clear_bits[0] == ((1UL << 5) | (1UL << 7)));
    memset(out, 0, DIRTY_BITMAP_LONGS(pages) * sizeof(unsigned long));
    assert_int_equal(dirty_log_harvest(&d, out, pages), 0);
    assert_int_equal(count_bits(out, pages), 0);
    dirty_log_free(&d);
    assert_false(fake.slots[0].logging || fake.slots[1].logging);
    free(out);
    vm_free(vm);
}

/* A slot that cannot log: everything is undone. */
static void test_start_failure_undoes(void **state)
{
    (void)state;
    const uint64_t ram = (4ull << 30) + (64ull << 20);
    struct vm *vm = vm_new(ram, KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE);
    struct dirty_log d = { 0 };
    log_set_level((enum log_level)(LOG_LVL_ERROR - 1)); /* the failure is expected: keep the output quiet */
    fake.fail_slot = 1;
    assert_int_equal(dirty_log_start(&d, vm), -ENOMEM);
    log_set_level(LOG_LVL_WARN);
    assert_int_equal(d.mode, DIRTY_LOG_OFF);
    assert_false(fake.slots[0].logging);
    assert_null(vm->mem.dirty);
    assert_int_equal(fake.manual, 0);
    /* It can be tried again. */
    fake.fail_slot = -1;
    assert_int_equal(dirty_log_start(&d, vm), 0);
    dirty_log_free(&d);
    vm_free(vm);
}

int main(void)
{
    log_set_level(LOG_LVL_WARN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_take_returns_and_clears),
        cmocka_unit_test(test_take_partial_word),
        cmocka_unit_test(test_take_concurrent_with_marks),
        cmocka_unit_test(test_populated_ranges),
        cmocka_unit_test(test_page_is_zero),
        cmocka_unit_test(test_not_started),
        cmocka_unit_test(test_get_clears_mode),
        cmocka_unit_test(test_manual_mode),
        cmocka_unit_test(test_initially_set_mode),
        cmocka_unit_test(test_two_slots),
        cmocka_unit_test(test_start_failure_undoes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
