/* test_e820.c: the e820 map built from guest RAM regions and the low-memory layout. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "boot/boot.h"
#include "boot/layout.h"

#define MIB (1ULL << 20)
#define GIB (1ULL << 30)

static void assert_entry(const struct e820_entry_gw *e, uint64_t addr, uint64_t end, uint32_t type)
{
    assert_int_equal(e->addr, addr);
    assert_int_equal(e->size, end - addr);
    assert_int_equal(e->type, type);
}

static void test_small_guest_has_low_layout_and_one_ram_block(void **state)
{
    (void)state;
    struct guest_memory gm;
    struct e820_entry_gw map[16];

    assert_int_equal(gm_init(&gm, 64 * MIB, false), 0);
    assert_int_equal(e820_build(&gm, map, 16), 5);
    assert_entry(&map[0], 0, LAYOUT_EBDA_START, E820_RAM);
    assert_entry(&map[1], LAYOUT_EBDA_START, LAYOUT_LOW_RAM_END, E820_RESERVED);
    assert_entry(&map[2], LAYOUT_ACPI_START, LAYOUT_ACPI_END, E820_RESERVED);
    assert_entry(&map[3], LAYOUT_KERNEL_MIN, 64 * MIB, E820_RAM);
    /* The ECAM window of the MCFG table: Linux uses it only when it is reserved. */
    assert_entry(&map[4], LAYOUT_PCI_ECAM, LAYOUT_PCI_ECAM + LAYOUT_PCI_ECAM_SIZE, E820_RESERVED);
    gm_destroy(&gm);
}

static void test_large_guest_adds_ram_above_4g(void **state)
{
    (void)state;
    struct guest_memory gm;
    struct e820_entry_gw map[16];

    assert_int_equal(gm_init(&gm, 4 * GIB, false), 0);
    assert_int_equal(e820_build(&gm, map, 16), 6);
    assert_entry(&map[3], LAYOUT_KERNEL_MIN, GM_MMIO_HOLE_START, E820_RAM);
    assert_entry(&map[4], LAYOUT_PCI_ECAM, LAYOUT_PCI_ECAM + LAYOUT_PCI_ECAM_SIZE, E820_RESERVED);
    assert_entry(&map[5], GM_MMIO_HOLE_END, GM_MMIO_HOLE_END + GIB, E820_RAM);
    gm_destroy(&gm);
}

static void test_entries_sorted_disjoint_and_ram_avoids_bios_area(void **state)
{
    (void)state;
    struct guest_memory gm;
    struct e820_entry_gw map[16];

    assert_int_equal(gm_init(&gm, 3 * GIB + 512 * MIB, false), 0);
    unsigned n = e820_build(&gm, map, 16);
    uint64_t ram = 0;
    for (unsigned i = 0; i < n; i++) {
        assert_true(map[i].size > 0);
        if (i > 0)
            assert_true(map[i - 1].addr + map[i - 1].size <= map[i].addr);
        if (map[i].type == E820_RAM) {
            ram += map[i].size;
            bool below = map[i].addr + map[i].size <= LAYOUT_EBDA_START;
            bool above = map[i].addr >= LAYOUT_KERNEL_MIN;
            assert_true(below || above);
        }
    }
    /* All RAM is reported except the EBDA KiB and the 640 KiB-1 MiB hole. */
    assert_int_equal(ram, gm.ram_size - (LAYOUT_KERNEL_MIN - LAYOUT_EBDA_START));
    gm_destroy(&gm);
}

static void test_never_writes_past_max(void **state)
{
    (void)state;
    struct guest_memory gm;
    struct e820_entry_gw map[3];
    const struct e820_entry_gw guard = { 0x1234, 0x5678, 99 };

    assert_int_equal(gm_init(&gm, 4 * GIB, false), 0);
    map[2] = guard;
    assert_int_equal(e820_build(&gm, map, 2), 2);
    assert_memory_equal(&map[2], &guard, sizeof(guard));
    assert_int_equal(e820_build(&gm, map, 0), 0);
    gm_destroy(&gm);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_small_guest_has_low_layout_and_one_ram_block),
        cmocka_unit_test(test_large_guest_adds_ram_above_4g),
        cmocka_unit_test(test_entries_sorted_disjoint_and_ram_avoids_bios_area),
        cmocka_unit_test(test_never_writes_past_max),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
