/* test_acpi.c: the ACPI tables as a guest finds them, walking from the RSDP. */
#define _GNU_SOURCE /* memmem */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <cmocka.h>

#include "boot/boot.h"
#include "boot/layout.h"
#include "vm/memory.h"

/* Offsets from the ACPI 6.3 specification, kept apart from acpi.c's structs on purpose. */
#define HDR_LENGTH 4
#define HDR_REVISION 8
#define HDR_SIZE 36
#define FADT_FIRMWARE_CTRL 36
#define FADT_DSDT 40
#define FADT_SCI_INT 46
#define FADT_SMI_CMD 48
#define FADT_PM1A_EVT_BLK 56
#define FADT_PM1A_CNT_BLK 64
#define FADT_PM1_EVT_LEN 88
#define FADT_PM1_CNT_LEN 89
#define FADT_PM_TMR_LEN 91
#define FADT_IAPC_BOOT_ARCH 109
#define FADT_FLAGS 112
#define FADT_RESET_REG 116
#define FADT_RESET_VALUE 128
#define FADT_X_FIRMWARE_CTRL 132
#define FADT_X_DSDT 140
#define FADT_X_PM1A_EVT_BLK 148
#define FADT_X_PM1A_CNT_BLK 172
#define FADT_SIZE 276
#define MADT_ENTRIES 44

struct tables {
    struct guest_memory gm;
    uint64_t rsdp, xsdt, fadt, madt, dsdt, facs, mcfg;
};

static uint8_t rd8(const struct guest_memory *gm, uint64_t gpa)
{
    uint8_t v = 0;
    assert_int_equal(gm_read(gm, gpa, &v, sizeof(v)), 0);
    return v;
}

static uint16_t rd16(const struct guest_memory *gm, uint64_t gpa)
{
    uint16_t v = 0;
    assert_int_equal(gm_read(gm, gpa, &v, sizeof(v)), 0);
    return v;
}

static uint32_t rd32(const struct guest_memory *gm, uint64_t gpa)
{
    uint32_t v = 0;
    assert_int_equal(gm_read(gm, gpa, &v, sizeof(v)), 0);
    return v;
}

static uint64_t rd64(const struct guest_memory *gm, uint64_t gpa)
{
    uint64_t v = 0;
    assert_int_equal(gm_read(gm, gpa, &v, sizeof(v)), 0);
    return v;
}

static const uint8_t *bytes_at(const struct guest_memory *gm, uint64_t gpa, uint64_t len)
{
    const uint8_t *p = gm_ptr(gm, gpa, len);
    assert_non_null(p);
    return p;
}

static uint8_t byte_sum(const struct guest_memory *gm, uint64_t gpa, uint64_t len)
{
    const uint8_t *p = bytes_at(gm, gpa, len);
    uint8_t sum = 0;
    for (uint64_t i = 0; i < len; i++)
        sum += p[i];
    return sum;
}

/* A table lies wholly in the ACPI area, carries `signature`, and sums to zero. */
static uint32_t check_table(const struct guest_memory *gm, uint64_t gpa, const char *signature)
{
    assert_true(gpa >= LAYOUT_ACPI_START && gpa < LAYOUT_ACPI_END);
    assert_memory_equal(bytes_at(gm, gpa, 4), signature, 4);
    uint32_t len = rd32(gm, gpa + HDR_LENGTH);
    assert_true(len >= HDR_SIZE && len <= LAYOUT_ACPI_END - gpa);
    assert_int_equal(byte_sum(gm, gpa, len), 0);
    return len;
}

static void check_rsdp(const struct guest_memory *gm, uint64_t rsdp)
{
    assert_int_equal(rsdp % 16, 0);
    assert_memory_equal(bytes_at(gm, rsdp, 8), "RSD PTR ", 8);
    assert_int_equal(byte_sum(gm, rsdp, 20), 0);
    assert_int_equal(rd8(gm, rsdp + 15), 2);
    assert_int_equal(rd32(gm, rsdp + 20), 36);
    assert_int_equal(byte_sum(gm, rsdp, 36), 0);
}

/* Builds for `nr_cpus` and walks RSDP -> XSDT -> FADT -> DSDT/FACS, and the MADT. */
static void build_and_walk(struct tables *t, unsigned nr_cpus)
{
    memset(t, 0, sizeof(*t));
    assert_int_equal(gm_init(&t->gm, 64 << 20, false), 0);
    const struct platform_tables_config cfg = { .nr_cpus = nr_cpus };
    t->rsdp = acpi_build(&t->gm, &cfg);
    assert_int_equal(t->rsdp, LAYOUT_ACPI_START);
    check_rsdp(&t->gm, t->rsdp);

    t->xsdt = rd64(&t->gm, t->rsdp + 24);
    uint32_t xsdt_len = check_table(&t->gm, t->xsdt, "XSDT");
    assert_int_equal((xsdt_len - HDR_SIZE) % 8, 0);
    for (uint32_t off = HDR_SIZE; off < xsdt_len; off += 8) {
        uint64_t entry = rd64(&t->gm, t->xsdt + off);
        const uint8_t *sig = bytes_at(&t->gm, entry, 4);
        if (memcmp(sig, "FACP", 4) == 0)
            t->fadt = entry;
        else if (memcmp(sig, "APIC", 4) == 0)
            t->madt = entry;
        else if (memcmp(sig, "MCFG", 4) == 0)
            t->mcfg = entry;
        else
            fail_msg("unexpected table %.4s in the XSDT", (const char *)sig);
    }
    assert_int_equal(check_table(&t->gm, t->fadt, "FACP"), FADT_SIZE);
    check_table(&t->gm, t->madt, "APIC");
    t->dsdt = rd64(&t->gm, t->fadt + FADT_X_DSDT);
    check_table(&t->gm, t->dsdt, "DSDT");
    t->facs = rd32(&t->gm, t->fadt + FADT_FIRMWARE_CTRL);
    if (!t->facs)
        t->facs = rd64(&t->gm, t->fadt + FADT_X_FIRMWARE_CTRL);
}

/* The MCFG names the ECAM window (segment 0, bus 0), which e820 reserves. */
static void test_mcfg_describes_the_ecam_window(void **state)
{
    (void)state;
    struct tables t;
    build_and_walk(&t, 1);
    assert_int_equal(check_table(&t.gm, t.mcfg, "MCFG"), 60);
    assert_int_equal(rd8(&t.gm, t.mcfg + HDR_REVISION), 1);
    assert_int_equal(rd64(&t.gm, t.mcfg + 44), LAYOUT_PCI_ECAM);
    assert_int_equal(rd16(&t.gm, t.mcfg + 52), 0);  /* segment */
    assert_int_equal(rd8(&t.gm, t.mcfg + 54), 0);   /* first bus */
    assert_int_equal(rd8(&t.gm, t.mcfg + 55), (LAYOUT_PCI_ECAM_SIZE >> 20) - 1); /* last */
    struct e820_entry_gw map[16];
    unsigned n = e820_build(&t.gm, map, 16);
    bool reserved = false;
    for (unsigned i = 0; i < n; i++)
        reserved |= map[i].type == E820_RESERVED && map[i].addr <= LAYOUT_PCI_ECAM &&
                    map[i].addr + map[i].size >= LAYOUT_PCI_ECAM + LAYOUT_PCI_ECAM_SIZE;
    assert_true(reserved);
    gm_destroy(&t.gm);
}

static void release(struct tables *t)
{
    gm_destroy(&t->gm);
}

static void test_walk_finds_every_table_with_good_checksums(void **state)
{
    (void)state;
    struct tables t;
    build_and_walk(&t, 2);
    assert_int_equal(rd8(&t.gm, t.xsdt + HDR_REVISION), 1);
    assert_int_equal(rd8(&t.gm, t.fadt + HDR_REVISION), 6);
    assert_int_equal(rd8(&t.gm, t.dsdt + HDR_REVISION), 2); /* 64-bit AML integers */
    /* The FACS has no checksum, but must be 64-byte aligned and 64 bytes long. */
    assert_int_equal(t.facs % 64, 0);
    assert_true(t.facs >= LAYOUT_ACPI_START && t.facs + 64 <= LAYOUT_ACPI_END);
    assert_memory_equal(bytes_at(&t.gm, t.facs, 4), "FACS", 4);
    assert_int_equal(rd32(&t.gm, t.facs + 4), 64);
    release(&t);
}

static void check_gas_io(const struct guest_memory *gm, uint64_t gas, uint16_t port,
                         uint8_t bit_width)
{
    assert_int_equal(rd8(gm, gas), 1); /* SystemIO */
    assert_int_equal(rd8(gm, gas + 1), bit_width);
    assert_int_equal(rd8(gm, gas + 2), 0);
    assert_int_equal(rd64(gm, gas + 4), port);
}

static void test_fadt_describes_the_pm_device(void **state)
{
    (void)state;
    struct tables t;
    build_and_walk(&t, 1);
    const struct guest_memory *gm = &t.gm;
    assert_int_equal(rd32(gm, t.fadt + FADT_DSDT), t.dsdt);
    assert_int_equal(rd16(gm, t.fadt + FADT_SCI_INT), IRQ_ACPI_SCI);
    assert_int_equal(rd32(gm, t.fadt + FADT_SMI_CMD), 0);
    assert_int_equal(rd32(gm, t.fadt + FADT_PM1A_EVT_BLK), PORT_ACPI_PM1_EVT);
    assert_int_equal(rd32(gm, t.fadt + FADT_PM1A_CNT_BLK), PORT_ACPI_PM1_CNT);
    assert_int_equal(rd8(gm, t.fadt + FADT_PM1_EVT_LEN), 4);
    assert_int_equal(rd8(gm, t.fadt + FADT_PM1_CNT_LEN), 2);
    assert_int_equal(rd8(gm, t.fadt + FADT_PM_TMR_LEN), 0);
    check_gas_io(gm, t.fadt + FADT_X_PM1A_EVT_BLK, PORT_ACPI_PM1_EVT, 32);
    check_gas_io(gm, t.fadt + FADT_X_PM1A_CNT_BLK, PORT_ACPI_PM1_CNT, 16);
    check_gas_io(gm, t.fadt + FADT_RESET_REG, PORT_ACPI_RESET, 8);
    assert_int_equal(rd8(gm, t.fadt + FADT_RESET_VALUE), ACPI_RESET_VALUE);

    uint32_t flags = rd32(gm, t.fadt + FADT_FLAGS);
    assert_true(flags & (1u << 0));     /* WBINVD */
    assert_true(flags & (1u << 2));     /* PROC_C1 */
    assert_false(flags & (1u << 4));    /* the power button is the fixed-feature one */
    assert_true(flags & (1u << 5));     /* no sleep button */
    assert_true(flags & (1u << 10));    /* RESET_REG_SUP */
    assert_false(flags & (1u << 20));   /* not hardware-reduced */
    uint16_t boot_arch = rd16(gm, t.fadt + FADT_IAPC_BOOT_ARCH);
    assert_int_equal(boot_arch & 0x3, 0x3); /* LEGACY_DEVICES, 8042 */
    release(&t);
}

/* Walks the MADT entries and checks each kind; returns the number of Local APIC entries. */
static unsigned check_madt(const struct guest_memory *gm, uint64_t madt, unsigned nr_cpus)
{
    uint32_t len = rd32(gm, madt + HDR_LENGTH);
    unsigned lapics = 0, ioapics = 0, overrides = 0, nmis = 0;
    assert_int_equal(rd32(gm, madt + 36), LAYOUT_LAPIC_ADDR);
    assert_int_equal(rd32(gm, madt + 40) & 1, 1); /* PCAT_COMPAT */
    for (uint64_t e = madt + MADT_ENTRIES; e < madt + len;) {
        uint8_t type = rd8(gm, e), entry_len = rd8(gm, e + 1);
        assert_true(entry_len >= 2 && e + entry_len <= madt + len);
        if (type == 0) {
            assert_int_equal(entry_len, 8);
            assert_int_equal(rd8(gm, e + 2), lapics); /* processor UID */
            assert_int_equal(rd8(gm, e + 3), lapics); /* APIC ID */
            assert_int_equal(rd32(gm, e + 4), 1);     /* enabled */
            lapics++;
        } else if (type == 1) {
            assert_int_equal(rd8(gm, e + 2), nr_cpus);
            assert_int_equal(rd32(gm, e + 4), LAYOUT_IOAPIC_ADDR);
            assert_int_equal(rd32(gm, e + 8), 0);
            ioapics++;
        } else if (type == 2) {
            uint8_t irq = rd8(gm, e + 3);
            if (irq == 0) {
                assert_int_equal(rd32(gm, e + 4), 2);
                assert_int_equal(rd16(gm, e + 8) & 0xc, 0); /* not level: edge */
            } else {
                assert_int_equal(irq, IRQ_ACPI_SCI);
                assert_int_equal(rd32(gm, e + 4), IRQ_ACPI_SCI);
                assert_int_equal(rd16(gm, e + 8), 0x000d);
            }
            overrides++;
        } else if (type == 4) {
            assert_int_equal(rd8(gm, e + 2), 0xff);
            assert_int_equal(rd8(gm, e + 5), 1); /* LINT1 */
            nmis++;
        } else {
            fail_msg("unexpected MADT entry type %u", type);
        }
        e += entry_len;
    }
    assert_int_equal(ioapics, 1);
    assert_int_equal(overrides, 2);
    assert_int_equal(nmis, 1);
    return lapics;
}

static bool contains(const uint8_t *hay, size_t hay_len, const void *needle, size_t len)
{
    return memmem(hay, hay_len, needle, len) != NULL;
}

static unsigned count(const uint8_t *hay, size_t hay_len, const void *needle, size_t len)
{
    unsigned n = 0;
    for (const uint8_t *p = hay; (p = memmem(p, hay_len - (size_t)(p - hay), needle, len));
         p++)
        n++;
    return n;
}

/* Device (name): DeviceOp (5b 82), a PkgLength of one or two bytes, then the name. */
static bool has_device(const uint8_t *aml, size_t len, const char name[4])
{
    for (size_t i = 3; i + 4 <= len; i++) {
        if (memcmp(aml + i, name, 4) != 0)
            continue;
        if (aml[i - 3] == 0x5b && aml[i - 2] == 0x82 && aml[i - 1] <= 0x3f)
            return true;
        if (i >= 4 && aml[i - 4] == 0x5b && aml[i - 3] == 0x82 && (aml[i - 2] >> 6) == 1)
            return true;
    }
    return false;
}

static void check_dsdt_cpus(const struct guest_memory *gm, uint64_t dsdt, unsigned nr_cpus)
{
    uint32_t len = rd32(gm, dsdt + HDR_LENGTH);
    const uint8_t *aml = bytes_at(gm, dsdt, len);
    assert_int_equal(count(aml, len, "\x0d" "ACPI0007", 9), nr_cpus);
    char name[8];
    snprintf(name, sizeof(name), "CP%02X", nr_cpus - 1);
    assert_true(contains(aml, len, name, 4));
    snprintf(name, sizeof(name), "CP%02X", nr_cpus);
    assert_false(contains(aml, len, name, 4));
}

static void test_madt_and_dsdt_have_one_entry_per_cpu(void **state)
{
    (void)state;
    static const unsigned counts[] = { 1, 2, 8, 64, 255 };
    for (size_t i = 0; i < sizeof(counts) / sizeof(counts[0]); i++) {
        struct tables t;
        build_and_walk(&t, counts[i]);
        assert_int_equal(check_madt(&t.gm, t.madt, counts[i]), counts[i]);
        check_dsdt_cpus(&t.gm, t.dsdt, counts[i]);
        release(&t);
    }
}

static void test_dsdt_holds_s5_and_the_devices(void **state)
{
    (void)state;
    struct tables t;
    build_and_walk(&t, 1);
    uint32_t len = rd32(&t.gm, t.dsdt + HDR_LENGTH);
    const uint8_t *aml = bytes_at(&t.gm, t.dsdt + HDR_SIZE, len - HDR_SIZE);
    len -= HDR_SIZE;
    /* Name (_S5, Package (4) { 5, 5, 0, 0 }) */
    const uint8_t s5[] = { 0x08, '_', 'S', '5', '_', 0x12, 0x08, 0x04,
                           0x0a, ACPI_SLP_TYP_S5, 0x0a, ACPI_SLP_TYP_S5, 0x00, 0x00 };
    assert_true(contains(aml, len, s5, sizeof(s5)));
    /* Name (_HID, EisaId ("PNP0A03")), then ("PNP0501"), ("PNP0303"), ("PNP0B00") */
    const uint8_t pci_hid[] = { 0x08, '_', 'H', 'I', 'D', 0x0c, 0x41, 0xd0, 0x0a, 0x03 };
    assert_true(contains(aml, len, pci_hid, sizeof(pci_hid)));
    assert_true(contains(aml, len, "\x0c\x41\xd0\x05\x01", 5));
    assert_true(contains(aml, len, "\x0c\x41\xd0\x03\x03", 5));
    assert_true(contains(aml, len, "\x0c\x41\xd0\x0b\x00", 5));
    assert_true(contains(aml, len, "\x0dQEMU0001", 10));
    /* Scope (\_SB) and its devices */
    assert_true(contains(aml, len, "\\_SB_", 5));
    static const char *const devices[] = { "PCI0", "COM1", "PEVT", "PS2K", "RTC_" };
    for (size_t i = 0; i < sizeof(devices) / sizeof(devices[0]); i++)
        assert_true(has_device(aml, len, devices[i]));
    /* The I/O descriptor for COM1 and its IRQ */
    const uint8_t com1_res[] = { 0x47, 0x01, 0xf8, 0x03, 0xf8, 0x03, 0x01, 0x08, 0x22, 0x10, 0x00 };
    assert_true(contains(aml, len, com1_res, sizeof(com1_res)));
    release(&t);
}

static void test_refuses_cpu_counts_out_of_range(void **state)
{
    (void)state;
    struct guest_memory gm;
    assert_int_equal(gm_init(&gm, 64 << 20, false), 0);
    struct platform_tables_config cfg = { .nr_cpus = 0 };
    assert_int_equal(acpi_build(&gm, &cfg), 0);
    cfg.nr_cpus = 256;
    assert_int_equal(acpi_build(&gm, &cfg), 0);
    gm_destroy(&gm);
}

static void test_rebuild_leaves_nothing_of_the_last_one(void **state)
{
    (void)state;
    const uint64_t region_len = LAYOUT_ACPI_END - LAYOUT_ACPI_START;
    struct guest_memory fresh, reused;
    assert_int_equal(gm_init(&fresh, 64 << 20, false), 0);
    assert_int_equal(gm_init(&reused, 64 << 20, false), 0);
    struct platform_tables_config cfg = { .nr_cpus = 64 };
    assert_int_equal(acpi_build(&reused, &cfg), LAYOUT_ACPI_START);
    cfg.nr_cpus = 2;
    assert_int_equal(acpi_build(&reused, &cfg), LAYOUT_ACPI_START);
    assert_int_equal(acpi_build(&fresh, &cfg), LAYOUT_ACPI_START);
    assert_memory_equal(bytes_at(&fresh, LAYOUT_ACPI_START, region_len),
                        bytes_at(&reused, LAYOUT_ACPI_START, region_len), region_len);
    gm_destroy(&fresh);
    gm_destroy(&reused);
}

static void test_fails_when_ram_does_not_cover_the_area(void **state)
{
    (void)state;
    /* A memory map whose only RAM ends below the ACPI area. */
    uint8_t *small = calloc(1, 0x1000);
    assert_non_null(small);
    struct guest_memory gm = { .memfd = -1, .ram_size = 0x1000, .nr_regions = 1 };
    gm.regions[0] = (struct gm_region){ .gpa = 0, .size = 0x1000, .host = small };
    const struct platform_tables_config cfg = { .nr_cpus = 1 };
    assert_int_equal(acpi_build(&gm, &cfg), 0);
    free(small);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_walk_finds_every_table_with_good_checksums),
        cmocka_unit_test(test_fadt_describes_the_pm_device),
        cmocka_unit_test(test_madt_and_dsdt_have_one_entry_per_cpu),
        cmocka_unit_test(test_dsdt_holds_s5_and_the_devices),
        cmocka_unit_test(test_refuses_cpu_counts_out_of_range),
        cmocka_unit_test(test_mcfg_describes_the_ecam_window),
        cmocka_unit_test(test_rebuild_leaves_nothing_of_the_last_one),
        cmocka_unit_test(test_fails_when_ram_does_not_cover_the_area),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
