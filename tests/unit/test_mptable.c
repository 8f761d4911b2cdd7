/* test_mptable.c: the MP floating pointer and configuration table as a guest scans them. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <errno.h>
#include <cmocka.h>

#include "boot/boot.h"
#include "boot/layout.h"
#include "vm/memory.h"

/*
 * 16 (floating pointer) + 44 (header) + 8 (ISA bus) + 8 (IOAPIC) + 15 ISA IRQs and 2 local
 * interrupts of 8 bytes = 212 bytes, then 20 per processor within 1 KiB: 40 processors.
 */
#define MP_MAX_CPUS 40

/* Offsets from the MultiProcessor Specification 1.4. */
#define FP_CONFIG_TABLE 4
#define FP_LENGTH 8
#define FP_SPEC_REV 9
#define CT_BASE_LENGTH 4
#define CT_SPEC_REV 6
#define CT_ENTRY_COUNT 34
#define CT_LAPIC_ADDRESS 36
#define CT_ENTRIES 44

static uint8_t byte_sum(const uint8_t *p, size_t len)
{
    uint8_t sum = 0;
    for (size_t i = 0; i < len; i++)
        sum += p[i];
    return sum;
}

static uint16_t le16(const uint8_t *p)
{
    return (uint16_t)(p[0] | p[1] << 8);
}

static uint32_t le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

struct mp_counts {
    unsigned processors, bsps, buses, ioapics, io_interrupts, local_interrupts;
};

static size_t entry_length(uint8_t type)
{
    return type == 0 ? 20 : 8;
}

static void check_processor(const uint8_t *e, unsigned index, struct mp_counts *c)
{
    assert_int_equal(e[1], index); /* APIC ID */
    assert_int_equal(e[2], 0x14);
    assert_true(e[3] & 1);         /* enabled */
    if (e[3] & 2) {
        assert_int_equal(index, 0);
        c->bsps++;
    }
    c->processors++;
}

static void check_io_interrupt(const uint8_t *e, uint8_t ioapic_id, struct mp_counts *c)
{
    uint8_t irq = e[5];
    assert_int_equal(e[1], 0);       /* INT */
    assert_int_equal(e[4], 0);       /* the ISA bus */
    assert_int_not_equal(irq, 2);    /* the cascade is not routed */
    assert_int_equal(e[6], ioapic_id);
    assert_int_equal(e[7], irq == 0 ? 2 : irq);
    c->io_interrupts++;
}

/* Walks the entries in order; the spec wants them sorted by type. */
static struct mp_counts walk_entries(const uint8_t *table, unsigned nr_cpus)
{
    struct mp_counts c = { 0 };
    const uint16_t base_len = le16(table + CT_BASE_LENGTH);
    const uint16_t nr_entries = le16(table + CT_ENTRY_COUNT);
    size_t pos = CT_ENTRIES;
    uint8_t last_type = 0;
    for (unsigned i = 0; i < nr_entries; i++) {
        const uint8_t *e = table + pos;
        assert_true(e[0] <= 4 && e[0] >= last_type);
        last_type = e[0];
        if (e[0] == 0) {
            check_processor(e, c.processors, &c);
        } else if (e[0] == 1) {
            assert_int_equal(e[1], 0);
            assert_memory_equal(e + 2, "ISA   ", 6);
            c.buses++;
        } else if (e[0] == 2) {
            assert_int_equal(e[1], nr_cpus);
            assert_int_equal(e[2], 0x11);
            assert_true(e[3] & 1);
            assert_int_equal(le32(e + 4), LAYOUT_IOAPIC_ADDR);
            c.ioapics++;
        } else if (e[0] == 3) {
            check_io_interrupt(e, (uint8_t)nr_cpus, &c);
        } else {
            assert_int_equal(e[1], c.local_interrupts == 0 ? 3 : 1); /* ExtINT, then NMI */
            assert_int_equal(e[6], 0xff);
            assert_int_equal(e[7], c.local_interrupts); /* LINT0, then LINT1 */
            c.local_interrupts++;
        }
        pos += entry_length(e[0]);
        assert_true(pos <= base_len);
    }
    assert_int_equal(pos, base_len);
    return c;
}

/* Builds for `nr_cpus` and checks everything a scanning guest relies on. */
static void check_build(unsigned nr_cpus)
{
    struct guest_memory gm;
    assert_int_equal(gm_init(&gm, 64 << 20, false), 0);
    const struct platform_tables_config cfg = { .nr_cpus = nr_cpus };
    assert_int_equal(mptable_build(&gm, &cfg), 0);

    const uint8_t *fp = gm_ptr(&gm, LAYOUT_MPTABLE, 16);
    assert_non_null(fp);
    assert_memory_equal(fp, "_MP_", 4);
    assert_int_equal(fp[FP_LENGTH], 1);
    assert_int_equal(fp[FP_SPEC_REV], 4);
    assert_int_equal(byte_sum(fp, 16), 0);

    const uint32_t table_gpa = le32(fp + FP_CONFIG_TABLE);
    assert_true(table_gpa >= LAYOUT_MPTABLE + 16 && table_gpa < LAYOUT_LOW_RAM_END);
    const uint8_t *header = gm_ptr(&gm, table_gpa, CT_ENTRIES);
    assert_non_null(header);
    assert_memory_equal(header, "PCMP", 4);
    const uint16_t base_len = le16(header + CT_BASE_LENGTH);
    assert_true(base_len <= LAYOUT_LOW_RAM_END - table_gpa); /* all within the 1 KiB */
    const uint8_t *table = gm_ptr(&gm, table_gpa, base_len);
    assert_non_null(table);
    assert_int_equal(table[CT_SPEC_REV], 4);
    assert_int_equal(byte_sum(table, base_len), 0);
    assert_int_equal(le32(table + CT_LAPIC_ADDRESS), LAYOUT_LAPIC_ADDR);

    struct mp_counts c = walk_entries(table, nr_cpus);
    assert_int_equal(c.processors, nr_cpus);
    assert_int_equal(c.bsps, 1);
    assert_int_equal(c.buses, 1);
    assert_int_equal(c.ioapics, 1);
    assert_int_equal(c.io_interrupts, 15);
    assert_int_equal(c.local_interrupts, 2);
    gm_destroy(&gm);
}

static void test_tables_for_several_cpu_counts(void **state)
{
    (void)state;
    check_build(1);
    check_build(2);
    check_build(8);
    check_build(MP_MAX_CPUS);
}

static void test_refuses_what_does_not_fit(void **state)
{
    (void)state;
    struct guest_memory gm;
    assert_int_equal(gm_init(&gm, 64 << 20, false), 0);
    struct platform_tables_config cfg = { .nr_cpus = MP_MAX_CPUS + 1 };
    assert_int_equal(mptable_build(&gm, &cfg), -ENOSPC);
    cfg.nr_cpus = 255;
    assert_int_equal(mptable_build(&gm, &cfg), -ENOSPC);
    cfg.nr_cpus = 0;
    assert_int_equal(mptable_build(&gm, &cfg), -EINVAL);
    gm_destroy(&gm);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tables_for_several_cpu_counts),
        cmocka_unit_test(test_refuses_what_does_not_fit),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
