/* test_bus.c: range registration and dispatch of the port-I/O / MMIO bus. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <errno.h>
#include <cmocka.h>

#include "mmio/bus.h"

struct fake_dev {
    uint64_t last_offset;
    uint32_t last_len;
    uint8_t last_written;
    unsigned reads, writes;
};

static void fake_read(void *dev, uint64_t offset, uint8_t *data, uint32_t len)
{
    struct fake_dev *f = dev;
    f->reads++;
    f->last_offset = offset;
    f->last_len = len;
    memset(data, 0x5a, len);
}

static void fake_write(void *dev, uint64_t offset, const uint8_t *data, uint32_t len)
{
    struct fake_dev *f = dev;
    f->writes++;
    f->last_offset = offset;
    f->last_len = len;
    f->last_written = data[0];
}

static const struct device_ops fake_ops = { .read = fake_read, .write = fake_write };

static void test_dispatch_uses_offset_within_range(void **state)
{
    (void)state;
    struct bus bus;
    struct fake_dev a = { 0 }, b = { 0 };
    uint8_t data[4] = { 0x11 };

    bus_init(&bus, "pio");
    assert_int_equal(bus_register(&bus, 0x3f8, 8, "a", &fake_ops, &a), 0);
    assert_int_equal(bus_register(&bus, 0x60, 1, "b", &fake_ops, &b), 0);
    assert_true(bus_access(&bus, 0x3fb, data, 1, true));
    assert_int_equal(a.writes, 1);
    assert_int_equal(a.last_offset, 3);
    assert_int_equal(a.last_written, 0x11);
    assert_true(bus_access(&bus, 0x60, data, 1, false));
    assert_int_equal(b.reads, 1);
    assert_int_equal(data[0], 0x5a);
    bus_destroy(&bus);
}

static void test_unmapped_reads_all_ones(void **state)
{
    (void)state;
    struct bus bus;
    struct fake_dev a = { 0 };
    uint8_t data[4] = { 0 };

    bus_init(&bus, "mmio");
    assert_int_equal(bus_register(&bus, 0x1000, 0x10, "a", &fake_ops, &a), 0);
    assert_false(bus_access(&bus, 0x2000, data, 4, false));
    assert_memory_equal(data, "\xff\xff\xff\xff", 4);
    /* An access straddling the end of a range reaches nobody. */
    assert_false(bus_access(&bus, 0x100e, data, 4, false));
    assert_false(bus_access(&bus, 0xfff, data, 2, true));
    assert_int_equal(a.reads + a.writes, 0);
    bus_destroy(&bus);
}

static void test_overlaps_and_empty_ranges_refused(void **state)
{
    (void)state;
    struct bus bus;
    struct fake_dev a = { 0 };

    bus_init(&bus, "pio");
    assert_int_equal(bus_register(&bus, 0x100, 0x10, "a", &fake_ops, &a), 0);
    assert_int_equal(bus_register(&bus, 0x10f, 1, "b", &fake_ops, &a), -EEXIST);
    assert_int_equal(bus_register(&bus, 0xf8, 0x9, "c", &fake_ops, &a), -EEXIST);
    assert_int_equal(bus_register(&bus, 0x0, 0x1000, "d", &fake_ops, &a), -EEXIST);
    assert_int_equal(bus_register(&bus, 0x200, 0, "e", &fake_ops, &a), -EINVAL);
    assert_int_equal(bus_register(&bus, UINT64_MAX, 2, "f", &fake_ops, &a), -EINVAL);
    assert_int_equal(bus_register(&bus, 0x110, 1, "g", &fake_ops, &a), 0);
    assert_int_equal(bus_register(&bus, 0xff, 1, "h", &fake_ops, &a), 0);
    bus_destroy(&bus);
}

static void test_many_ranges_stay_sorted(void **state)
{
    (void)state;
    struct bus bus;
    struct fake_dev devs[100] = { 0 };
    uint8_t data = 7;

    bus_init(&bus, "mmio");
    /* Register in a scrambled order so that insertion in the middle is exercised. */
    for (unsigned i = 0; i < 100; i++) {
        unsigned k = (i * 37) % 100;
        assert_int_equal(bus_register(&bus, 0x1000 * (k + 1), 0x100, "d", &fake_ops, &devs[k]), 0);
    }
    for (unsigned k = 0; k < 100; k++) {
        assert_true(bus_access(&bus, 0x1000 * (k + 1) + 0xff, &data, 1, true));
        assert_int_equal(devs[k].writes, 1);
        assert_int_equal(devs[k].last_offset, 0xff);
    }
    for (unsigned i = 1; i < bus.nr_ranges; i++)
        assert_true(bus.ranges[i - 1].base < bus.ranges[i].base);
    bus_destroy(&bus);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dispatch_uses_offset_within_range),
        cmocka_unit_test(test_unmapped_reads_all_ones),
        cmocka_unit_test(test_overlaps_and_empty_ranges_refused),
        cmocka_unit_test(test_many_ranges_stay_sorted),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
