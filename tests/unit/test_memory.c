/* test_memory.c: guest RAM layout around the MMIO hole and the checked translation. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <errno.h>
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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_small_guest_is_one_region),
        cmocka_unit_test(test_large_guest_skips_the_hole),
        cmocka_unit_test(test_bad_sizes_rejected),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
