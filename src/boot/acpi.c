/* acpi.c: the ACPI tables (RSDP, XSDT, FADT, FACS, DSDT, MADT, MCFG) in the BIOS area. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "boot/aml.h"
#include "boot/boot.h"
#include "boot/layout.h"
#include "log.h"
#include "mmio/rtc.h"

/*
 * Local APIC IDs and ACPI processor UIDs are one byte in the MADT, and UID 0xff means
 * "all processors" in the Local APIC NMI entry: UIDs 0..254.
 */

#define ACPI_OEM_ID "GODWIT"
#define ACPI_OEM_TABLE_ID "GODWITVM"
#define ACPI_CREATOR_ID "GDWT"

/* Table revisions of ACPI 6.3. */
#define ACPI_RSDP_REVISION 2
#define ACPI_XSDT_REVISION 1
#define ACPI_FADT_REVISION 6
#define ACPI_FADT_MINOR_REVISION 3
#define ACPI_MADT_REVISION 5
#define ACPI_DSDT_REVISION 2 /* 2 or more: AML integers are 64 bits */
#define ACPI_FACS_VERSION 2
#define ACPI_MCFG_REVISION 1 /* PCI Firmware Specification 3.0 */

struct acpi_rsdp {
    char signature[8];
    uint8_t checksum; /* over the first 20 bytes (the ACPI 1.0 part) */
    char oem_id[6];
    uint8_t revision;
    uint32_t rsdt_address;
    uint32_t length;
    uint64_t xsdt_address;
    uint8_t extended_checksum; /* over all 36 bytes */
    uint8_t reserved[3];
} __attribute__((packed));
_Static_assert(sizeof(struct acpi_rsdp) == 36, "RSDP layout");
#define ACPI_RSDP_V1_LEN 20

struct acpi_header {
    char signature[4];
    uint32_t length;
    uint8_t revision;
    uint8_t checksum;
    char oem_id[6];
    char oem_table_id[8];
    uint32_t oem_revision;
    char creator_id[4];
    uint32_t creator_revision;
} __attribute__((packed));
_Static_assert(sizeof(struct acpi_header) == 36, "system description table header");

/* Generic Address Structure. */
struct acpi_gas {
    uint8_t space_id;
    uint8_t bit_width;
    uint8_t bit_offset;
    uint8_t access_size;
    uint64_t address;
} __attribute__((packed));
_Static_assert(sizeof(struct acpi_gas) == 12, "GAS layout");
#define ACPI_GAS_SYSTEM_IO 1
#define ACPI_GAS_ACCESS_BYTE 1
#define ACPI_GAS_ACCESS_WORD 2

struct acpi_fadt {
    struct acpi_header header;
    uint32_t firmware_ctrl;
    uint32_t dsdt;
    uint8_t reserved0;
    uint8_t preferred_pm_profile;
    uint16_t sci_int;
    uint32_t smi_cmd;
    uint8_t acpi_enable;
    uint8_t acpi_disable;
    uint8_t s4bios_req;
    uint8_t pstate_cnt;
    uint32_t pm1a_evt_blk;
    uint32_t pm1b_evt_blk;
    uint32_t pm1a_cnt_blk;
    uint32_t pm1b_cnt_blk;
    uint32_t pm2_cnt_blk;
    uint32_t pm_tmr_blk;
    uint32_t gpe0_blk;
    uint32_t gpe1_blk;
    uint8_t pm1_evt_len;
    uint8_t pm1_cnt_len;
    uint8_t pm2_cnt_len;
    uint8_t pm_tmr_len;
    uint8_t gpe0_blk_len;
    uint8_t gpe1_blk_len;
    uint8_t gpe1_base;
    uint8_t cst_cnt;
    uint16_t p_lvl2_lat;
    uint16_t p_lvl3_lat;
    uint16_t flush_size;
    uint16_t flush_stride;
    uint8_t duty_offset;
    uint8_t duty_width;
    uint8_t day_alrm;
    uint8_t mon_alrm;
    uint8_t century;
    uint16_t iapc_boot_arch;
    uint8_t reserved1;
    uint32_t flags;
    struct acpi_gas reset_reg;
    uint8_t reset_value;
    uint16_t arm_boot_arch;
    uint8_t minor_revision;
    uint64_t x_firmware_ctrl;
    uint64_t x_dsdt;
    struct acpi_gas x_pm1a_evt_blk;
    struct acpi_gas x_pm1b_evt_blk;
    struct acpi_gas x_pm1a_cnt_blk;
    struct acpi_gas x_pm1b_cnt_blk;
    struct acpi_gas x_pm2_cnt_blk;
    struct acpi_gas x_pm_tmr_blk;
    struct acpi_gas x_gpe0_blk;
    struct acpi_gas x_gpe1_blk;
    struct acpi_gas sleep_control_reg;
    struct acpi_gas sleep_status_reg;
    uint64_t hypervisor_vendor_id;
} __attribute__((packed));
_Static_assert(sizeof(struct acpi_fadt) == 276, "FADT layout (revision 6)");

/* FADT feature flags and IA-PC boot architecture flags used here. */
#define FADT_F_WBINVD (1u << 0)
#define FADT_F_PROC_C1 (1u << 2)
#define FADT_F_SLP_BUTTON (1u << 5)   /* no fixed-feature sleep button */
#define FADT_F_FIX_RTC (1u << 6)      /* no RTC wake status in PM1_STS */
#define FADT_F_RESET_REG_SUP (1u << 10)
#define FADT_BOOT_LEGACY_DEVICES (1u << 0)
#define FADT_BOOT_8042 (1u << 1)
#define FADT_BOOT_VGA_NOT_PRESENT (1u << 2)
/* Latencies above these limits say "C2/C3 not supported". */
#define FADT_NO_C2_LATENCY 101
#define FADT_NO_C3_LATENCY 1001

#define PM1_EVT_LEN 4 /* PM1_STS (2 bytes) then PM1_EN (2 bytes) */
#define PM1_CNT_LEN 2

struct acpi_facs {
    char signature[4];
    uint32_t length;
    uint32_t hardware_signature;
    uint32_t firmware_waking_vector;
    uint32_t global_lock;
    uint32_t flags;
    uint64_t x_firmware_waking_vector;
    uint8_t version;
    uint8_t reserved0[3];
    uint32_t ospm_flags;
    uint8_t reserved1[24];
} __attribute__((packed));
_Static_assert(sizeof(struct acpi_facs) == 64, "FACS layout");
#define ACPI_FACS_ALIGN 64

struct acpi_madt {
    struct acpi_header header;
    uint32_t lapic_address;
    uint32_t flags;
} __attribute__((packed));
_Static_assert(sizeof(struct acpi_madt) == 44, "MADT layout");
#define MADT_PCAT_COMPAT (1u << 0) /* dual 8259 PICs present */

struct madt_lapic {
    uint8_t type;
    uint8_t length;
    uint8_t processor_uid;
    uint8_t apic_id;
    uint32_t flags;
} __attribute__((packed));
_Static_assert(sizeof(struct madt_lapic) == 8, "MADT Local APIC entry");

struct madt_ioapic {
    uint8_t type;
    uint8_t length;
    uint8_t ioapic_id;
    uint8_t reserved;
    uint32_t address;
    uint32_t gsi_base;
} __attribute__((packed));
_Static_assert(sizeof(struct madt_ioapic) == 12, "MADT I/O APIC entry");

struct madt_irq_override {
    uint8_t type;
    uint8_t length;
    uint8_t bus;
    uint8_t source_irq;
    uint32_t gsi;
    uint16_t flags;
} __attribute__((packed));
_Static_assert(sizeof(struct madt_irq_override) == 10, "MADT interrupt source override");

struct madt_lapic_nmi {
    uint8_t type;
    uint8_t length;
    uint8_t processor_uid;
    uint16_t flags;
    uint8_t lint;
} __attribute__((packed));
_Static_assert(sizeof(struct madt_lapic_nmi) == 6, "MADT Local APIC NMI entry");

#define MADT_TYPE_LAPIC 0
#define MADT_TYPE_IOAPIC 1
#define MADT_TYPE_IRQ_OVERRIDE 2
#define MADT_TYPE_LAPIC_NMI 4
#define MADT_LAPIC_ENABLED (1u << 0)
#define MADT_ALL_PROCESSORS 0xff
#define MADT_IRQ_CONFORMS 0x0000     /* ISA: edge-triggered, active high */
#define MADT_IRQ_LEVEL_HIGH 0x000d   /* active high (01), level-triggered (11 << 2) */
#define ISA_IRQ_TIMER 0
#define IOAPIC_GSI_TIMER 2
#define LAPIC_LINT1 1

/* Places tables one after another in [LAYOUT_ACPI_START, LAYOUT_ACPI_END). */
struct acpi_writer {
    const struct guest_memory *gm;
    uint64_t next;
};

static uint8_t acpi_checksum(const void *data, size_t len)
{
    const uint8_t *bytes = data;
    uint8_t sum = 0;
    for (size_t i = 0; i < len; i++)
        sum += bytes[i];
    return (uint8_t)-sum;
}

/* Copies `len` bytes at the next `align`-aligned address; stores it in *gpa. */
static int acpi_place(struct acpi_writer *w, const void *data, size_t len, uint64_t align,
                      uint64_t *gpa)
{
    uint64_t at = (w->next + align - 1) & ~(align - 1);
    if (at > LAYOUT_ACPI_END || len > LAYOUT_ACPI_END - at)
        return -ENOSPC;
    int ret = gm_write(w->gm, at, data, len);
    if (ret < 0)
        return ret;
    w->next = at + len;
    *gpa = at;
    return 0;
}

/* Fills the header of a table of `len` bytes whose body is complete, checksum last. */
static void acpi_finish_table(void *table, const char signature[4], uint32_t len,
                              uint8_t revision)
{
    struct acpi_header header = {
        .length = len,
        .revision = revision,
        .oem_revision = 1,
        .creator_revision = 1,
    };
    memcpy(header.signature, signature, sizeof(header.signature));
    memcpy(header.oem_id, ACPI_OEM_ID, sizeof(header.oem_id));
    memcpy(header.oem_table_id, ACPI_OEM_TABLE_ID, sizeof(header.oem_table_id));
    memcpy(header.creator_id, ACPI_CREATOR_ID, sizeof(header.creator_id));
    memcpy(table, &header, sizeof(header));
    ((struct acpi_header *)table)->checksum = acpi_checksum(table, len);
}

static void dsdt_sleep_states(struct aml *a)
{
    /* \_S5_: the SLP_TYP values for PM1a_CNT and PM1b_CNT, then two reserved. */
    aml_name(a, "_S5");
    size_t pkg = aml_package_begin(a, 4);
    aml_integer(a, ACPI_SLP_TYP_S5);
    aml_integer(a, ACPI_SLP_TYP_S5);
    aml_integer(a, 0);
    aml_integer(a, 0);
    aml_end(a, pkg);
}

static void dsdt_pci_host_bridge(struct aml *a)
{
    size_t dev = aml_device_begin(a, "PCI0");
    aml_name_eisaid(a, "_HID", "PNP0A03");
    aml_name_integer(a, "_ADR", 0);
    aml_name_integer(a, "_SEG", 0);
    aml_name_integer(a, "_UID", 0);
    aml_name_integer(a, "_BBN", 0);
    aml_name(a, "_CRS");
    size_t res = aml_resource_begin(a);
    /* Bus 0 alone, as the MCFG says: Linux warns of a bridge its ECAM covers in part. */
    aml_res_word_bus_number(a, 0x00, (uint16_t)((LAYOUT_PCI_ECAM_SIZE >> 20) - 1));
    /* The configuration ports are the bridge's own; the I/O windows go around them. */
    aml_res_io(a, PORT_PCI_CONFIG, PORT_PCI_CONFIG, 1, 8);
    aml_res_word_io(a, 0x0000, PORT_PCI_CONFIG - 1);
    aml_res_word_io(a, 0x0d00, 0xffff);
    aml_res_dword_memory(a, LAYOUT_PCI_MMIO_START, LAYOUT_PCI_MMIO_END - 1);
    aml_resource_end(a, res);
    aml_end(a, dev);
}

static void dsdt_com1(struct aml *a)
{
    size_t dev = aml_device_begin(a, "COM1");
    aml_name_eisaid(a, "_HID", "PNP0501");
    aml_name_integer(a, "_UID", 1);
    aml_name(a, "_CRS");
    size_t res = aml_resource_begin(a);
    aml_res_io(a, PORT_COM1, PORT_COM1, 1, 8);
    aml_res_irq_noflags(a, IRQ_COM1);
    aml_resource_end(a, res);
    aml_end(a, dev);
}

static void dsdt_pvpanic(struct aml *a)
{
    size_t dev = aml_device_begin(a, "PEVT");
    aml_name_str(a, "_HID", "QEMU0001");
    aml_name(a, "_CRS");
    size_t res = aml_resource_begin(a);
    aml_res_io(a, PORT_PVPANIC, PORT_PVPANIC, 1, 1);
    aml_resource_end(a, res);
    size_t sta = aml_method_begin(a, "_STA", 0);
    aml_return(a);
    aml_integer(a, 0x0f); /* present, enabled, shown in UI, functioning */
    aml_end(a, sta);
    aml_end(a, dev);
}

static void dsdt_i8042(struct aml *a)
{
    size_t dev = aml_device_begin(a, "PS2K");
    aml_name_eisaid(a, "_HID", "PNP0303");
    aml_name(a, "_CRS");
    size_t res = aml_resource_begin(a);
    aml_res_io(a, PORT_I8042_DATA, PORT_I8042_DATA, 1, 1);
    aml_res_io(a, PORT_I8042_CMD, PORT_I8042_CMD, 1, 1);
    /* Without an IRQ here Linux warns and assumes IRQ 1 anyway. */
    aml_res_irq_noflags(a, 1);
    aml_resource_end(a, res);
    aml_end(a, dev);
}

static void dsdt_rtc(struct aml *a)
{
    size_t dev = aml_device_begin(a, "RTC");
    aml_name_eisaid(a, "_HID", "PNP0B00");
    aml_name(a, "_CRS");
    size_t res = aml_resource_begin(a);
    aml_res_io(a, PORT_RTC, PORT_RTC, 1, 2);
    aml_res_irq_noflags(a, 8);
    aml_resource_end(a, res);
    aml_end(a, dev);
}

/* Processor devices; _UID matches the processor UID of the MADT's Local APIC entry. */
static void dsdt_cpus(struct aml *a, unsigned nr_cpus)
{
    for (unsigned cpu = 0; cpu < nr_cpus; cpu++) {
        char name[8];
        snprintf(name, sizeof(name), "CP%02X", cpu & 0xff);
        size_t dev = aml_device_begin(a, name);
        aml_name_str(a, "_HID", "ACPI0007");
        aml_name_integer(a, "_UID", cpu);
        aml_end(a, dev);
    }
}

/* Builds the DSDT (header included) into `a`. */
static void dsdt_build(struct aml *a, unsigned nr_cpus)
{
    const struct acpi_header placeholder = { 0 };
    aml_append(a, &placeholder, sizeof(placeholder));
    dsdt_sleep_states(a);
    size_t sb = aml_scope_begin(a, "\\_SB");
    dsdt_pci_host_bridge(a);
    dsdt_com1(a);
    dsdt_pvpanic(a);
    dsdt_i8042(a);
    dsdt_rtc(a);
    dsdt_cpus(a, nr_cpus);
    aml_end(a, sb);
}

static int acpi_place_dsdt(struct acpi_writer *w, unsigned nr_cpus, uint64_t *gpa)
{
    struct aml dsdt;
    aml_init(&dsdt);
    dsdt_build(&dsdt, nr_cpus);
    int ret = aml_error(&dsdt);
    if (ret == 0 && dsdt.len > LAYOUT_ACPI_END - LAYOUT_ACPI_START)
        ret = -ENOSPC;
    if (ret == 0) {
        acpi_finish_table(dsdt.buf, "DSDT", (uint32_t)dsdt.len, ACPI_DSDT_REVISION);
        ret = acpi_place(w, dsdt.buf, dsdt.len, 8, gpa);
    }
    aml_free(&dsdt);
    return ret;
}

static int acpi_place_facs(struct acpi_writer *w, uint64_t *gpa)
{
    struct acpi_facs facs = {
        .signature = { 'F', 'A', 'C', 'S' },
        .length = sizeof(facs),
        .version = ACPI_FACS_VERSION,
    };
    return acpi_place(w, &facs, sizeof(facs), ACPI_FACS_ALIGN, gpa);
}

static struct acpi_gas io_gas(uint16_t port, uint8_t bytes, uint8_t access_size)
{
    return (struct acpi_gas){
        .space_id = ACPI_GAS_SYSTEM_IO,
        .bit_width = (uint8_t)(8 * bytes),
        .access_size = access_size,
        .address = port,
    };
}

static int acpi_place_fadt(struct acpi_writer *w, uint64_t dsdt, uint64_t facs, uint64_t *gpa)
{
    struct acpi_fadt fadt = {
        /* FACS through the 32-bit field only: with X_FIRMWARE_CTRL set too, older
         * revisions of the spec require FIRMWARE_CTRL to be zero. */
        .firmware_ctrl = (uint32_t)facs,
        .dsdt = (uint32_t)dsdt,
        .x_dsdt = dsdt,
        .sci_int = IRQ_ACPI_SCI,
        .smi_cmd = 0, /* no SMI command port: the OS finds ACPI already enabled */
        .pm1a_evt_blk = PORT_ACPI_PM1_EVT,
        .pm1a_cnt_blk = PORT_ACPI_PM1_CNT,
        .pm1_evt_len = PM1_EVT_LEN,
        .pm1_cnt_len = PM1_CNT_LEN,
        .p_lvl2_lat = FADT_NO_C2_LATENCY,
        .p_lvl3_lat = FADT_NO_C3_LATENCY,
        .century = RTC_REG_CENTURY,
        .iapc_boot_arch = FADT_BOOT_LEGACY_DEVICES | FADT_BOOT_8042 | FADT_BOOT_VGA_NOT_PRESENT,
        .flags = FADT_F_WBINVD | FADT_F_PROC_C1 | FADT_F_SLP_BUTTON | FADT_F_FIX_RTC |
                 FADT_F_RESET_REG_SUP,
        .reset_reg = io_gas(PORT_ACPI_RESET, 1, ACPI_GAS_ACCESS_BYTE),
        .reset_value = ACPI_RESET_VALUE,
        .minor_revision = ACPI_FADT_MINOR_REVISION,
        .x_pm1a_evt_blk = io_gas(PORT_ACPI_PM1_EVT, PM1_EVT_LEN, ACPI_GAS_ACCESS_WORD),
        .x_pm1a_cnt_blk = io_gas(PORT_ACPI_PM1_CNT, PM1_CNT_LEN, ACPI_GAS_ACCESS_WORD),
    };
    acpi_finish_table(&fadt, "FACP", sizeof(fadt), ACPI_FADT_REVISION);
    return acpi_place(w, &fadt, sizeof(fadt), 8, gpa);
}

static size_t madt_size(unsigned nr_cpus)
{
    return sizeof(struct acpi_madt) + nr_cpus * sizeof(struct madt_lapic) +
           sizeof(struct madt_ioapic) + 2 * sizeof(struct madt_irq_override) +
           sizeof(struct madt_lapic_nmi);
}

/* Appends an entry at *pos; the caller sized the buffer with madt_size(). */
static void madt_add(uint8_t *madt, size_t *pos, const void *entry, size_t len)
{
    memcpy(madt + *pos, entry, len);
    *pos += len;
}

static void madt_fill(uint8_t *madt, unsigned nr_cpus)
{
    const struct acpi_madt fixed = { .lapic_address = LAYOUT_LAPIC_ADDR,
                                     .flags = MADT_PCAT_COMPAT };
    size_t pos = 0;
    madt_add(madt, &pos, &fixed, sizeof(fixed));
    for (unsigned cpu = 0; cpu < nr_cpus; cpu++) {
        const struct madt_lapic lapic = {
            .type = MADT_TYPE_LAPIC,
            .length = sizeof(struct madt_lapic),
            .processor_uid = (uint8_t)cpu,
            .apic_id = (uint8_t)cpu,
            .flags = MADT_LAPIC_ENABLED,
        };
        madt_add(madt, &pos, &lapic, sizeof(lapic));
    }
    const struct madt_ioapic ioapic = {
        .type = MADT_TYPE_IOAPIC,
        .length = sizeof(struct madt_ioapic),
        .ioapic_id = (uint8_t)nr_cpus, /* the first ID after the vCPUs' */
        .address = LAYOUT_IOAPIC_ADDR,
        .gsi_base = 0,
    };
    madt_add(madt, &pos, &ioapic, sizeof(ioapic));
    /* The PIT's IRQ 0 is wired to IOAPIC pin 2 (pin 0 carries the 8259's ExtINT). */
    const struct madt_irq_override timer = {
        .type = MADT_TYPE_IRQ_OVERRIDE,
        .length = sizeof(struct madt_irq_override),
        .bus = 0, /* ISA */
        .source_irq = ISA_IRQ_TIMER,
        .gsi = IOAPIC_GSI_TIMER,
        .flags = MADT_IRQ_CONFORMS,
    };
    madt_add(madt, &pos, &timer, sizeof(timer));
    /* The SCI is level-triggered and, as ACPI defines it on ISA, active high. */
    const struct madt_irq_override sci = {
        .type = MADT_TYPE_IRQ_OVERRIDE,
        .length = sizeof(struct madt_irq_override),
        .bus = 0,
        .source_irq = IRQ_ACPI_SCI,
        .gsi = IRQ_ACPI_SCI,
        .flags = MADT_IRQ_LEVEL_HIGH,
    };
    madt_add(madt, &pos, &sci, sizeof(sci));
    const struct madt_lapic_nmi nmi = {
        .type = MADT_TYPE_LAPIC_NMI,
        .length = sizeof(struct madt_lapic_nmi),
        .processor_uid = MADT_ALL_PROCESSORS,
        .flags = MADT_IRQ_CONFORMS,
        .lint = LAPIC_LINT1,
    };
    madt_add(madt, &pos, &nmi, sizeof(nmi));
}

static int acpi_place_madt(struct acpi_writer *w, unsigned nr_cpus, uint64_t *gpa)
{
    size_t len = madt_size(nr_cpus);
    uint8_t *madt = calloc(1, len);
    if (!madt)
        return -ENOMEM;
    madt_fill(madt, nr_cpus);
    acpi_finish_table(madt, "APIC", (uint32_t)len, ACPI_MADT_REVISION);
    int ret = acpi_place(w, madt, len, 8, gpa);
    free(madt);
    return ret;
}

/* MCFG: where the ECAM window is, so that a config access is one MMIO access rather than an
 * address and a data port access. One segment, bus 0 only: the window is 1 MiB. */
struct acpi_mcfg {
    struct acpi_header header;
    uint64_t reserved;
    uint64_t base;
    uint16_t segment;
    uint8_t start_bus, end_bus;
    uint32_t reserved2;
} __attribute__((packed));
_Static_assert(sizeof(struct acpi_mcfg) == 60, "MCFG with one allocation");

static int acpi_place_mcfg(struct acpi_writer *w, uint64_t *gpa)
{
    struct acpi_mcfg mcfg = { .base = LAYOUT_PCI_ECAM, .segment = 0, .start_bus = 0,
                              .end_bus = (uint8_t)((LAYOUT_PCI_ECAM_SIZE >> 20) - 1) };
    acpi_finish_table(&mcfg, "MCFG", sizeof(mcfg), ACPI_MCFG_REVISION);
    return acpi_place(w, &mcfg, sizeof(mcfg), 8, gpa);
}

#define XSDT_ENTRIES 3

struct acpi_xsdt {
    struct acpi_header header;
    uint64_t entries[XSDT_ENTRIES];
} __attribute__((packed));

static int acpi_place_xsdt(struct acpi_writer *w, uint64_t fadt, uint64_t madt, uint64_t mcfg,
                           uint64_t *gpa)
{
    struct acpi_xsdt xsdt = { .entries = { fadt, madt, mcfg } };
    acpi_finish_table(&xsdt, "XSDT", sizeof(xsdt), ACPI_XSDT_REVISION);
    return acpi_place(w, &xsdt, sizeof(xsdt), 8, gpa);
}

static int acpi_write_rsdp(const struct guest_memory *gm, uint64_t xsdt)
{
    struct acpi_rsdp rsdp = {
        .signature = { 'R', 'S', 'D', ' ', 'P', 'T', 'R', ' ' },
        .revision = ACPI_RSDP_REVISION,
        .length = sizeof(rsdp),
        .xsdt_address = xsdt,
    };
    memcpy(rsdp.oem_id, ACPI_OEM_ID, sizeof(rsdp.oem_id));
    rsdp.checksum = acpi_checksum(&rsdp, ACPI_RSDP_V1_LEN);
    rsdp.extended_checksum = acpi_checksum(&rsdp, sizeof(rsdp));
    return gm_write(gm, LAYOUT_ACPI_START, &rsdp, sizeof(rsdp));
}

/* Leaves first, so that every table knows the addresses it points to; the RSDP last. */
static int acpi_write_tables(const struct guest_memory *gm, unsigned nr_cpus)
{
    struct acpi_writer w = { .gm = gm, .next = LAYOUT_ACPI_START + sizeof(struct acpi_rsdp) };
    uint64_t facs, dsdt, fadt, madt, mcfg, xsdt;
    int ret = acpi_place_facs(&w, &facs);
    if (ret == 0)
        ret = acpi_place_dsdt(&w, nr_cpus, &dsdt);
    if (ret == 0)
        ret = acpi_place_fadt(&w, dsdt, facs, &fadt);
    if (ret == 0)
        ret = acpi_place_madt(&w, nr_cpus, &madt);
    if (ret == 0)
        ret = acpi_place_mcfg(&w, &mcfg);
    if (ret == 0)
        ret = acpi_place_xsdt(&w, fadt, madt, mcfg, &xsdt);
    if (ret == 0)
        ret = acpi_write_rsdp(gm, xsdt);
    return ret;
}

uint64_t acpi_build(const struct guest_memory *gm, const struct platform_tables_config *cfg)
{
    const uint64_t region_len = LAYOUT_ACPI_END - LAYOUT_ACPI_START;
    if (cfg->nr_cpus == 0 || cfg->nr_cpus > ACPI_MAX_CPUS) {
        log_error("acpi: cannot describe %u vCPUs (1-%u)", cfg->nr_cpus, ACPI_MAX_CPUS);
        return 0;
    }
    /* Start from zeros, so that a rebuild (reset) leaves nothing of the last one. */
    uint8_t *region = gm_ptr(gm, LAYOUT_ACPI_START, region_len);
    if (!region) {
        log_error("acpi: guest RAM does not cover the table area at %#llx",
                  (unsigned long long)LAYOUT_ACPI_START);
        return 0;
    }
    memset(region, 0, region_len);
    int ret = acpi_write_tables(gm, cfg->nr_cpus);
    if (ret < 0) {
        log_error("acpi: cannot build the tables for %u vCPUs in %llu KiB at %#llx: %s",
                  cfg->nr_cpus, (unsigned long long)(region_len >> 10),
                  (unsigned long long)LAYOUT_ACPI_START, strerror(-ret));
        return 0;
    }
    return LAYOUT_ACPI_START;
}
