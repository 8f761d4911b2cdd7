/* test_pci_host.c: config mechanism 1, host bridge, device registry, BAR sizing. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <linux/pci_regs.h>
#include <cmocka.h>

#include "mmio/pci_host.h"
#include "state_helpers.h"

static int setup(void **state)
{
    struct pci_host *host = calloc(1, sizeof(*host));
    assert_int_equal(pci_host_init(host), 0);
    *state = host;
    return 0;
}

static int teardown(void **state)
{
    pci_host_destroy(*state);
    free(*state);
    return 0;
}

/* Port accesses as the guest makes them; port is absolute (0xcf8-0xcff). */
static uint32_t in(struct pci_host *h, unsigned port, uint32_t len)
{
    uint8_t d[4] = { 0 };
    uint32_t v = 0;
    pci_host_io_ops.read(h, port - 0xcf8, d, len);
    for (unsigned i = 0; i < len; i++)
        v |= (uint32_t)d[i] << (8 * i);
    return v;
}

static void out(struct pci_host *h, unsigned port, uint32_t len, uint32_t v)
{
    uint8_t d[4];
    for (unsigned i = 0; i < len; i++)
        d[i] = (uint8_t)(v >> (8 * i));
    pci_host_io_ops.write(h, port - 0xcf8, d, len);
}

static uint32_t cf8(unsigned bus, unsigned slot, unsigned fn, unsigned reg)
{
    return 0x80000000u | bus << 16 | slot << 11 | fn << 8 | (reg & 0xfc);
}

static uint32_t cfg_read(struct pci_host *h, unsigned slot, unsigned reg, uint32_t len)
{
    out(h, 0xcf8, 4, cf8(0, slot, 0, reg));
    return in(h, 0xcfc + (reg & 3), len);
}

static void cfg_write(struct pci_host *h, unsigned slot, unsigned reg, uint32_t len, uint32_t v)
{
    out(h, 0xcf8, 4, cf8(0, slot, 0, reg));
    out(h, 0xcfc + (reg & 3), len, v);
}

/* arch/x86/pci/direct.c: pci_check_type1() */
static void test_linux_type1_check(void **state)
{
    struct pci_host *h = *state;

    out(h, 0xcfb, 1, 0x01); /* byte write to 0xcfb: not the address register */
    uint32_t saved = in(h, 0xcf8, 4);
    assert_int_equal(saved, 0);
    out(h, 0xcf8, 4, 0x80000000);
    assert_int_equal(in(h, 0xcf8, 4), 0x80000000);
    out(h, 0xcf8, 4, saved);
    assert_int_equal(in(h, 0xcf8, 4), saved);
    /* Reserved bits of the address read back as zero. */
    out(h, 0xcf8, 4, 0xffffffff);
    assert_int_equal(in(h, 0xcf8, 4), 0x80fffffc);
    /* Byte and word accesses to 0xcf8-0xcfb neither latch nor read the address. */
    out(h, 0xcf8, 2, 0x1234);
    out(h, 0xcf9, 1, 0x06);
    assert_int_equal(in(h, 0xcf8, 4), 0x80fffffc);
    assert_int_equal(in(h, 0xcf8, 1), 0xff);
    assert_int_equal(in(h, 0xcfa, 2), 0xffff);
}

static void test_host_bridge_ids_at_every_width(void **state)
{
    struct pci_host *h = *state;
    uint32_t id = PCI_HOST_BRIDGE_DEVICE << 16 | PCI_HOST_BRIDGE_VENDOR;

    assert_int_equal(cfg_read(h, 0, 0, 4), id);
    out(h, 0xcf8, 4, cf8(0, 0, 0, 0));
    assert_int_equal(in(h, 0xcfc, 2), id & 0xffff);
    assert_int_equal(in(h, 0xcfe, 2), id >> 16);
    assert_int_equal(in(h, 0xcfd, 2), (id >> 8) & 0xffff); /* unaligned inside the dword */
    for (unsigned i = 0; i < 4; i++)
        assert_int_equal(in(h, 0xcfc + i, 1), (id >> (8 * i)) & 0xff);
    /* Class code: host bridge, revision 0. */
    assert_int_equal(cfg_read(h, 0, PCI_CLASS_REVISION, 4), PCI_CLASS_HOST_BRIDGE << 8);
    assert_int_equal(cfg_read(h, 0, PCI_CLASS_DEVICE, 2), 0x0600);
    assert_int_equal(cfg_read(h, 0, PCI_HEADER_TYPE, 1), 0); /* type 0, single function */
    assert_int_equal(cfg_read(h, 0, PCI_BASE_ADDRESS_0, 4), 0);
    /* Read-only IDs stay put; the command register takes its writable bits only. */
    cfg_write(h, 0, 0, 4, 0x12345678);
    assert_int_equal(cfg_read(h, 0, 0, 4), id);
    cfg_write(h, 0, PCI_COMMAND, 2, 0xffff);
    assert_int_equal(cfg_read(h, 0, PCI_COMMAND, 2), 0x0547);
    /* With the enable bit clear, the data window reads ones. */
    out(h, 0xcf8, 4, cf8(0, 0, 0, 0) & ~0x80000000u);
    assert_int_equal(in(h, 0xcfc, 4), 0xffffffff);
}

static void test_absent_devices_read_all_ones(void **state)
{
    struct pci_host *h = *state;

    assert_int_equal(cfg_read(h, 5, 0, 4), 0xffffffff);
    assert_int_equal(cfg_read(h, 31, 0, 2), 0xffff);
    assert_int_equal(cfg_read(h, 5, 0x3d, 1), 0xff);
    out(h, 0xcf8, 4, cf8(0, 0, 1, 0)); /* function 1 of the bridge */
    assert_int_equal(in(h, 0xcfc, 4), 0xffffffff);
    out(h, 0xcf8, 4, cf8(1, 0, 0, 0)); /* bus 1 */
    assert_int_equal(in(h, 0xcfc, 4), 0xffffffff);
    out(h, 0xcf8, 4, cf8(255, 31, 7, 0xfc));
    out(h, 0xcfc, 4, 0);
    assert_int_equal(in(h, 0xcfc, 4), 0xffffffff);
}

struct fake_device {
    uint32_t offset, len;
    unsigned reads, writes;
    uint8_t written[4];
};

static void fake_config_read(void *dev, uint32_t offset, uint8_t *data, uint32_t len)
{
    struct fake_device *f = dev;
    f->reads++;
    f->offset = offset;
    f->len = len;
    for (uint32_t i = 0; i < len; i++)
        data[i] = (uint8_t)(offset + i);
}

static void fake_config_write(void *dev, uint32_t offset, const uint8_t *data, uint32_t len)
{
    struct fake_device *f = dev;
    f->writes++;
    f->offset = offset;
    f->len = len;
    memcpy(f->written, data, len);
}

static const struct pci_device_ops fake_ops = { fake_config_read, fake_config_write };

static void test_registry_dispatch(void **state)
{
    struct pci_host *h = *state;
    struct fake_device dev = { 0 }, other = { 0 };

    assert_int_equal(pci_host_add_device(h, 3, &fake_ops, &dev), 0);
    assert_int_equal(pci_host_add_device(h, 3, &fake_ops, &other), -EEXIST);
    assert_int_equal(pci_host_add_device(h, 0, &fake_ops, &other), -EEXIST);
    assert_int_equal(pci_host_add_device(h, 32, &fake_ops, &other), -EINVAL);
    assert_int_equal(pci_host_add_device(h, 4, NULL, &other), -EINVAL);

    assert_int_equal(cfg_read(h, 3, 0x42, 2), 0x4342);
    assert_int_equal(dev.offset, 0x42);
    assert_int_equal(dev.len, 2);
    assert_int_equal(cfg_read(h, 3, 0x10, 4), 0x13121110);
    assert_int_equal(dev.len, 4);
    cfg_write(h, 3, 0x07, 1, 0xab);
    assert_int_equal(dev.offset, 0x07);
    assert_int_equal(dev.len, 1);
    assert_int_equal(dev.written[0], 0xab);
    /* The core, as ECAM will call it: misaligned or oversized accesses reach nobody. */
    uint8_t d[4];
    unsigned before = dev.reads;
    pci_host_config_read(h, 0, 3, 0, 0x0e, d, 4);
    assert_int_equal(d[0], 0xff);
    pci_host_config_read(h, 0, 3, 0, 0x100, d, 1);
    pci_host_config_read(h, 0, 3, 0, 0x10, d, 3);
    assert_int_equal(dev.reads, before);
    pci_host_config_read(h, 0, 3, 0, 0xfc, d, 4);
    assert_int_equal(dev.reads, before + 1);
    assert_int_equal(other.reads + other.writes, 0);
}

static void test_bar_sizing(void **state)
{
    (void)state;
    struct pci_config_space cs;
    const struct pci_ids ids = { .vendor = 0x1af4, .device = 0x1041, .class_code = 0x020000,
                                 .interrupt_pin = 1 };

    pci_config_init(&cs, &ids);
    assert_int_equal(pci_config_set_bar(&cs, 0, PCI_BAR_MEM32, 0x1000, false), 0);
    assert_int_equal(pci_config_set_bar(&cs, 1, PCI_BAR_IO, 0x20, false), 0);
    assert_int_equal(pci_config_set_bar(&cs, 2, PCI_BAR_MEM64, 8ULL << 30, true), 0);
    assert_int_equal(pci_config_set_bar(&cs, 5, PCI_BAR_MEM64, 0x1000, false), -EINVAL);
    assert_int_equal(pci_config_set_bar(&cs, 6, PCI_BAR_MEM32, 0x1000, false), -EINVAL);
    assert_int_equal(pci_config_set_bar(&cs, 4, PCI_BAR_MEM32, 0x1800, false), -EINVAL);
    assert_int_equal(pci_config_set_bar(&cs, 4, PCI_BAR_MEM32, 8, false), -EINVAL);

    uint8_t ones[4] = { 0xff, 0xff, 0xff, 0xff };
    for (unsigned bar = 0; bar < 6; bar++)
        pci_config_write(&cs, PCI_BASE_ADDRESS_0 + 4 * bar, ones, 4);
    pci_config_write(&cs, PCI_ROM_ADDRESS, ones, 4);
    assert_int_equal(pci_config_get(&cs, 0x10, 4), 0xfffff000);
    assert_int_equal(pci_config_get(&cs, 0x14, 4), 0xffffffe1);
    assert_int_equal(pci_config_get(&cs, 0x18, 4), 0x0000000c); /* 64-bit, prefetchable */
    assert_int_equal(pci_config_get(&cs, 0x1c, 4), 0xfffffffe);
    assert_int_equal(pci_config_get(&cs, 0x20, 4), 0); /* unimplemented */
    assert_int_equal(pci_config_get(&cs, 0x24, 4), 0);
    assert_int_equal(pci_config_get(&cs, PCI_ROM_ADDRESS, 4), 0);

    /* The guest places the BARs; the device reads back where. */
    uint8_t addr32[4] = { 0x00, 0x30, 0x00, 0xc0 };
    pci_config_write(&cs, 0x10, addr32, 4);
    assert_int_equal(pci_config_bar_address(&cs, 0), 0xc0003000);
    uint8_t io[2] = { 0x41, 0x10 };
    pci_config_write(&cs, 0x14, io, 2);
    pci_config_write(&cs, 0x16, (const uint8_t[]){ 0, 0 }, 2);
    assert_int_equal(pci_config_bar_address(&cs, 1), 0x1040);
    pci_config_write(&cs, 0x18, (const uint8_t[]){ 0, 0, 0, 0 }, 4);
    pci_config_write(&cs, 0x1c, (const uint8_t[]){ 0x03, 0, 0, 0 }, 4);
    assert_int_equal(pci_config_bar_address(&cs, 2), 0x200000000ULL);
    assert_int_equal(pci_config_get(&cs, PCI_INTERRUPT_PIN, 1), 1);
}

static void test_status_write1_clear_and_capabilities(void **state)
{
    (void)state;
    struct pci_config_space cs;
    const struct pci_ids ids = { .vendor = 0x1af4, .device = 0x1042, .class_code = 0x010000 };
    const uint8_t vendor_cap[16] = { PCI_CAP_ID_VNDR, 0xee, 16, 1 };
    const uint8_t msix_cap[12] = { PCI_CAP_ID_MSIX, 0xee };

    pci_config_init(&cs, &ids);
    assert_int_equal(pci_config_add_capability(&cs, vendor_cap, sizeof(vendor_cap)), 0x40);
    assert_int_equal(pci_config_add_capability(&cs, msix_cap, sizeof(msix_cap)), 0x50);
    assert_int_equal(pci_config_get(&cs, PCI_CAPABILITY_LIST, 1), 0x40);
    assert_int_equal(pci_config_get(&cs, 0x41, 1), 0x50);
    assert_int_equal(pci_config_get(&cs, 0x51, 1), 0x00);
    assert_int_equal(pci_config_get(&cs, 0x42, 1), 16);
    assert_int_equal(pci_config_add_capability(&cs, vendor_cap, 200), -ENOSPC);
    /* Capability bytes are read-only unless the device says otherwise. */
    pci_config_write(&cs, 0x40, (const uint8_t[]){ 0, 0, 0, 0 }, 4);
    assert_int_equal(pci_config_get(&cs, 0x40, 2), 0x5000 | PCI_CAP_ID_VNDR);
    pci_config_set_masks(&cs, 0x52, 2, 0xc000, 0);
    pci_config_write(&cs, 0x52, (const uint8_t[]){ 0xff, 0xff }, 2);
    assert_int_equal(pci_config_get(&cs, 0x52, 2), 0xc000);

    pci_config_set(&cs, PCI_STATUS, 2, pci_config_get(&cs, PCI_STATUS, 2) | 0xc100);
    pci_config_write(&cs, PCI_STATUS, (const uint8_t[]){ 0x10, 0x80 }, 2);
    assert_int_equal(pci_config_get(&cs, PCI_STATUS, 2), 0x4100 | PCI_STATUS_CAP_LIST);
    pci_config_write(&cs, PCI_STATUS + 1, (const uint8_t[]){ 0xff }, 1);
    assert_int_equal(pci_config_get(&cs, PCI_STATUS, 2), PCI_STATUS_CAP_LIST);
}

static void test_hostile_accesses(void **state)
{
    struct pci_host *h = *state;
    struct fake_device dev = { 0 };
    uint8_t d[8];

    assert_int_equal(pci_host_add_device(h, 1, &fake_ops, &dev), 0);
    srand(7);
    for (unsigned n = 0; n < 200000; n++) {
        uint32_t len = 1u << (rand() % 4);
        uint64_t off = (uint64_t)(rand() % 9);
        for (unsigned i = 0; i < len; i++)
            d[i] = (uint8_t)rand();
        if (rand() % 3 == 0) /* aim at existing devices often */
            out(h, 0xcf8, 4, cf8(0, rand() % 2, 0, (unsigned)rand()));
        if (rand() % 2)
            pci_host_io_ops.write(h, off, d, len);
        else
            pci_host_io_ops.read(h, off, d, len);
        if (dev.reads + dev.writes)
            assert_true((dev.offset & 3) + dev.len <= 4 && dev.offset < 256);
    }
    pci_host_io_ops.read(h, UINT64_MAX, d, 8);
    pci_host_io_ops.write(h, UINT64_MAX - 3, d, 8);
    /* The bridge's IDs survived. */
    assert_int_equal(cfg_read(h, 0, 0, 2), PCI_HOST_BRIDGE_VENDOR);
}

/* Offsets in the payload: the address latch, then the bridge's config bytes. */
#define AT_CONFIG(offset) (4 + (offset))
enum { AT_ADDRESS = 0, PAYLOAD_LEN = 4 + PCI_CONFIG_SPACE_SIZE };

static struct pci_host *host_new(void)
{
    struct pci_host *host = calloc(1, sizeof(*host));
    assert_int_equal(pci_host_init(host), 0);
    return host;
}

static void host_free(struct pci_host *host)
{
    pci_host_destroy(host);
    free(host);
}

/* The bridge's command, cache line, latency and interrupt line set; the latch on COMMAND. */
static void drive_to_busy_state(struct pci_host *h)
{
    cfg_write(h, 0, PCI_COMMAND, 2, 0x0007);
    cfg_write(h, 0, PCI_CACHE_LINE_SIZE, 1, 0x10);
    cfg_write(h, 0, PCI_LATENCY_TIMER, 1, 0x40);
    cfg_write(h, 0, PCI_INTERRUPT_LINE, 1, 0x0b);
    out(h, 0xcf8, 4, cf8(0, 0, 0, PCI_COMMAND));
}

static void test_save_load_round_trip(void **state)
{
    struct pci_host *h = *state, *other = host_new();
    struct fake_device dev = { 0 };

    drive_to_busy_state(h);
    struct test_payload p = test_save(pci_host_save, h, PCI_HOST_STATE_VERSION);
    assert_int_equal(p.len, PAYLOAD_LEN);
    assert_int_equal(pci_host_add_device(other, 3, &fake_ops, &dev), 0);
    assert_int_equal(test_load(pci_host_load, other, p.data, p.len, PCI_HOST_STATE_VERSION), 0);
    test_assert_saves(pci_host_save, other, PCI_HOST_STATE_VERSION, &p);
    /* The latch still addresses the bridge's command register. */
    assert_int_equal(in(other, 0xcf8, 4), cf8(0, 0, 0, PCI_COMMAND));
    assert_int_equal(in(other, 0xcfc, 2), 0x0007);
    assert_int_equal(cfg_read(other, 0, PCI_CACHE_LINE_SIZE, 1), 0x10);
    assert_int_equal(cfg_read(other, 0, PCI_LATENCY_TIMER, 1), 0x40);
    assert_int_equal(cfg_read(other, 0, PCI_INTERRUPT_LINE, 1), 0x0b);
    assert_int_equal(cfg_read(other, 0, 0, 4), PCI_HOST_BRIDGE_DEVICE << 16 |
                                                   PCI_HOST_BRIDGE_VENDOR);
    /* The slots are wiring: untouched by a load. */
    assert_int_equal(cfg_read(other, 3, 0x10, 4), 0x13121110);
    assert_int_equal(cfg_read(other, 0, PCI_COMMAND, 2), 0x0007); /* writable bits only */
    cfg_write(other, 0, PCI_COMMAND, 2, 0xffff);
    assert_int_equal(cfg_read(other, 0, PCI_COMMAND, 2), 0x0547);
    test_payload_free(&p);
    host_free(other);
}

static void test_load_refuses_bad_payloads(void **state)
{
    struct pci_host *h = *state, *other = host_new();
    static const struct { size_t at; uint8_t value; } hostile[] = {
        { AT_ADDRESS, 0x05 },                   /* reserved bits 1-0 */
        { AT_ADDRESS + 3, 0x81 },               /* reserved bits 30-24 */
        { AT_CONFIG(PCI_VENDOR_ID), 0x86 },     /* another bridge's IDs */
        { AT_CONFIG(PCI_HEADER_TYPE), 0x80 },   /* multi-function */
        { AT_CONFIG(PCI_CAPABILITY_LIST), 0x40 },
        { AT_CONFIG(PCI_COMMAND + 1), 0x08 },   /* a read-only command bit */
        { AT_CONFIG(0xff), 0x01 },
    };

    drive_to_busy_state(h);
    struct test_payload p = test_save(pci_host_save, h, PCI_HOST_STATE_VERSION);
    test_assert_refuses_framing(pci_host_save, pci_host_load, other, &p,
                                PCI_HOST_STATE_VERSION);
    for (unsigned i = 0; i < sizeof(hostile) / sizeof(hostile[0]); i++)
        test_assert_refuses_byte(pci_host_save, pci_host_load, other, &p, hostile[i].at,
                                 hostile[i].value, PCI_HOST_STATE_VERSION);
    /* A status bit that hardware sets and the guest clears loads: it may have been set. */
    assert_int_equal(test_load_patched(pci_host_load, other, &p, AT_CONFIG(PCI_STATUS + 1),
                                       PCI_STATUS_REC_MASTER_ABORT >> 8,
                                       PCI_HOST_STATE_VERSION), 0);
    assert_int_equal(cfg_read(other, 0, PCI_STATUS, 2), PCI_STATUS_REC_MASTER_ABORT);
    test_payload_free(&p);
    host_free(other);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_linux_type1_check, setup, teardown),
        cmocka_unit_test_setup_teardown(test_host_bridge_ids_at_every_width, setup, teardown),
        cmocka_unit_test_setup_teardown(test_absent_devices_read_all_ones, setup, teardown),
        cmocka_unit_test_setup_teardown(test_registry_dispatch, setup, teardown),
        cmocka_unit_test(test_bar_sizing),
        cmocka_unit_test(test_status_write1_clear_and_capabilities),
        cmocka_unit_test_setup_teardown(test_hostile_accesses, setup, teardown),
        cmocka_unit_test_setup_teardown(test_save_load_round_trip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_load_refuses_bad_payloads, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
