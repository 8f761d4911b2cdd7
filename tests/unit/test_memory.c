/* test_memory.c: guest RAM layout around the MMIO hole and the checked translation. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <errno.h>
#include <fcntl.h>
#include <unistd.h>
#include <cmocka.h>

#include "vm/memory.h"

static void test_small_guest_is_one_region(void **state)
{
    (void)state;
    struct guest_memory gm;
    assert_int_equal(gm_init(&gm, 64 << 20, false), 0);
    assert_int_equal(gm.nr_regions, 1);
    assert_int_equal(gm_low_ram_end(&gm), 64 << 20);
    assert_non_null(gm_ptr(&gm, 0, 64 << 20));
    assert_non_null(gm_ptr(&gm, (64 << 20) - 1, 1));
    assert_null(gm_ptr(&gm, (64 << 20) - 1, 2));
    assert_null(gm_ptr(&gm, 64 << 20, 1));
    assert_null(gm_ptr(&gm, 0x1000, UINT64_MAX));
    assert_null(gm_ptr(&gm, UINT64_MAX, 2));
    gm_destroy(&gm);
}

static void test_large_guest_skips_the_hole(void **state)
{
    (void)state;
    struct guest_memory gm;
    const uint64_t size = 4ULL << 30; /* MAP_NORESERVE: nothing is touched */
    assert_int_equal(gm_init(&gm, size, false), 0);
    assert_int_equal(gm.nr_regions, 2);
    assert_int_equal(gm_low_ram_end(&gm), GM_MMIO_HOLE_START);
    assert_int_equal(gm.regions[1].gpa, GM_MMIO_HOLE_END);
    assert_int_equal(gm.regions[1].size, size - GM_MMIO_HOLE_START);
    assert_null(gm_ptr(&gm, GM_MMIO_HOLE_START, 1));
    assert_null(gm_ptr(&gm, GM_MMIO_HOLE_START - 4, 8)); /* straddles into the hole */
    assert_non_null(gm_ptr(&gm, GM_MMIO_HOLE_END, 4096));
    /* Both views of the memfd are the same memory: writes land where reads find them. */
    uint32_t v = 0xfeedface, r = 0;
    assert_int_equal(gm_write(&gm, GM_MMIO_HOLE_END + 8, &v, sizeof(v)), 0);
    assert_int_equal(gm_read(&gm, GM_MMIO_HOLE_END + 8, &r, sizeof(r)), 0);
    assert_int_equal(r, v);
    assert_int_equal(gm_write(&gm, GM_MMIO_HOLE_START, &v, sizeof(v)), -EFAULT);
    gm_destroy(&gm);
}

static void test_bad_sizes_rejected(void **state)
{
    (void)state;
    struct guest_memory gm;
    assert_int_equal(gm_init(&gm, 63 << 20, false), -EINVAL);
    assert_int_equal(gm_init(&gm, (64 << 20) + 1, false), -EINVAL);
    assert_int_equal(gm_init(&gm, (64 << 20) + 4096, true), -EINVAL);
}

/* A memory file handed over by another process: mapped shared in the same layout (both sides
 * see each other's writes, above the hole too), refused when it is smaller than the RAM or
 * not a file; the caller keeps its own descriptor. */
static void test_handed_over_file(void **state)
{
    (void)state;
    struct guest_memory src, dst;
    const uint64_t size = 4ULL << 30;
    assert_int_equal(gm_init(&src, size, false), 0);
    assert_int_equal(gm_init_from_fd(&dst, size, false, src.memfd), 0);
    assert_false(dst.private_file);
    assert_int_not_equal(dst.memfd, src.memfd);
    assert_int_equal(dst.nr_regions, 2);
    assert_int_equal(dst.ram_size, size);
    uint32_t v = 0xc0ffee, r = 0;
    assert_int_equal(gm_write(&src, GM_MMIO_HOLE_END + 4096, &v, sizeof(v)), 0);
    assert_int_equal(gm_read(&dst, GM_MMIO_HOLE_END + 4096, &r, sizeof(r)), 0);
    assert_int_equal(r, v);
    assert_int_equal(gm_write(&dst, 8, &v, sizeof(v)), 0);
    assert_int_equal(gm_read(&src, 8, &r, sizeof(r)), 0);
    assert_int_equal(r, v);
    gm_destroy(&dst);
    assert_int_equal(gm_init_from_fd(&dst, size + 4096, false, src.memfd), -EINVAL);
    int pipefd[2];
    assert_int_equal(pipe(pipefd), 0);
    assert_int_equal(gm_init_from_fd(&dst, 64 << 20, false, pipefd[0]), -EINVAL);
    close(pipefd[0]);
    close(pipefd[1]);
    assert_int_equal(fcntl(src.memfd, F_GETFD) >= 0, 1); /* still the source's */
    gm_destroy(&src);
}

static bool page_bit(const unsigned long *bm, uint64_t page)
{
    return (bm[page / GM_BITS_PER_LONG] >> (page % GM_BITS_PER_LONG)) & 1;
}

static uint64_t bits_set(const unsigned long *bm, uint64_t nr_pages)
{
    uint64_t n = 0;
    for (uint64_t i = 0; i < (nr_pages + GM_BITS_PER_LONG - 1) / GM_BITS_PER_LONG; i++)
        n += (uint64_t)__builtin_popcountl(bm[i]);
    return n;
}

/* The device dirty bitmap is indexed by the page's offset in the memory file: above 4 GiB
 * the pages follow the low region's. */
static void test_mark_dirty_uses_file_pages(void **state)
{
    (void)state;
    struct guest_memory gm;
    const uint64_t size = 4ULL << 30, pages = size / GM_PAGE_SIZE;
    const uint64_t low_pages = GM_MMIO_HOLE_START / GM_PAGE_SIZE;
    assert_int_equal(gm_init(&gm, size, false), 0);
    assert_null(gm.dirty);
    unsigned long *bm = calloc((pages + GM_BITS_PER_LONG - 1) / GM_BITS_PER_LONG, sizeof(*bm));
    assert_non_null(bm);

    /* Off: nothing is marked, nothing breaks. */
    uint32_t v = 1;
    assert_int_equal(gm_write(&gm, 0x1000, &v, sizeof(v)), 0);
    gm_mark_dirty(&gm, 0, size);
    assert_int_equal(bits_set(bm, pages), 0);

    gm.dirty = bm;
    assert_ptr_equal(gm_dirty_bitmap(&gm), bm);
    assert_int_equal(gm_write(&gm, 0x1ffe, &v, sizeof(v)), 0); /* across pages 1 and 2 */
    assert_true(page_bit(bm, 1) && page_bit(bm, 2));
    assert_int_equal(bits_set(bm, pages), 2);
    assert_int_equal(gm_write(&gm, GM_MMIO_HOLE_END + 5 * GM_PAGE_SIZE, &v, sizeof(v)), 0);
    assert_true(page_bit(bm, low_pages + 5));
    /* A refused write marks nothing. */
    assert_int_equal(gm_write(&gm, GM_MMIO_HOLE_START, &v, sizeof(v)), -EFAULT);
    assert_int_equal(bits_set(bm, pages), 3);

    /* A range over the MMIO hole marks both regions' parts, not the hole. */
    gm_mark_dirty(&gm, GM_MMIO_HOLE_START - GM_PAGE_SIZE, GM_MMIO_HOLE_END - GM_MMIO_HOLE_START +
                                                              2 * GM_PAGE_SIZE);
    assert_true(page_bit(bm, low_pages - 1) && page_bit(bm, low_pages));
    assert_int_equal(bits_set(bm, pages), 5);
    /* Many words at once; lengths that would overflow are clamped; zero marks nothing. */
    gm_mark_dirty(&gm, 64 * GM_PAGE_SIZE + 1, 200 * GM_PAGE_SIZE);
    assert_true(page_bit(bm, 64) && page_bit(bm, 264) && !page_bit(bm, 63) && !page_bit(bm, 265));
    assert_int_equal(bits_set(bm, pages), 5 + 201);
    const uint64_t ram_end = GM_MMIO_HOLE_END + (size - GM_MMIO_HOLE_START);
    gm_mark_dirty(&gm, ram_end + GM_PAGE_SIZE, 4096); /* beyond RAM: nothing */
    gm_mark_dirty(&gm, 300 * GM_PAGE_SIZE, 0);
    assert_false(page_bit(bm, 300));
    assert_int_equal(bits_set(bm, pages), 5 + 201);
    gm_mark_dirty(&gm, ram_end - 1, UINT64_MAX);
    assert_true(page_bit(bm, pages - 1)); /* the last page, from the clamped range */
    assert_int_equal(bits_set(bm, pages), 5 + 201 + 1);
    gm_mark_dirty(&gm, 0, UINT64_MAX);
    assert_int_equal(bits_set(bm, pages), pages);

    gm.dirty = NULL;
    free(bm);
    gm_destroy(&gm);
}

static void test_file_ptr(void **state)
{
    (void)state;
    struct guest_memory gm;
    const uint64_t size = 4ULL << 30;
    assert_int_equal(gm_init(&gm, size, false), 0);
    assert_ptr_equal(gm_file_ptr(&gm, 0, 4096), gm_ptr(&gm, 0, 4096));
    assert_ptr_equal(gm_file_ptr(&gm, GM_MMIO_HOLE_START, 4096), gm_ptr(&gm, GM_MMIO_HOLE_END, 4096));
    assert_ptr_equal(gm_file_ptr(&gm, size - 8, 8), gm_ptr(&gm, GM_MMIO_HOLE_END + size -
                                                                    GM_MMIO_HOLE_START - 8, 8));
    assert_null(gm_file_ptr(&gm, GM_MMIO_HOLE_START - 4, 8)); /* straddles the regions */
    assert_null(gm_file_ptr(&gm, size, 1));
    assert_null(gm_file_ptr(&gm, 4096, UINT64_MAX));
    gm_destroy(&gm);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_small_guest_is_one_region),
        cmocka_unit_test(test_large_guest_skips_the_hole),
        cmocka_unit_test(test_bad_sizes_rejected),
        cmocka_unit_test(test_handed_over_file),
        cmocka_unit_test(test_mark_dirty_uses_file_pages),
        cmocka_unit_test(test_file_ptr),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
