/* mptable.c: the Intel MultiProcessor Specification 1.4 table in the EBDA's last KiB. */
#include <errno.h>
#include <string.h>

#include "boot/boot.h"
#include "boot/layout.h"
#include "log.h"

#define MP_SPEC_REV 4 /* version 1.4 */
#define MP_AREA_LEN 0x400ULL /* [LAYOUT_MPTABLE, LAYOUT_LOW_RAM_END) */
_Static_assert(LAYOUT_MPTABLE + MP_AREA_LEN == LAYOUT_LOW_RAM_END, "MP table area");

struct mp_floating_pointer {
    char signature[4];     /* "_MP_" */
    uint32_t config_table; /* physical address of the configuration table */
    uint8_t length;        /* in 16-byte paragraphs */
    uint8_t spec_rev;
    uint8_t checksum;
    uint8_t features[5];   /* all 0: a configuration table follows; no IMCR (virtual wire) */
} __attribute__((packed));
_Static_assert(sizeof(struct mp_floating_pointer) == 16, "MP floating pointer layout");

struct mp_config_header {
    char signature[4]; /* "PCMP" */
    uint16_t base_table_length;
    uint8_t spec_rev;
    uint8_t checksum;
    char oem_id[8];
    char product_id[12];
    uint32_t oem_table_pointer;
    uint16_t oem_table_size;
    uint16_t entry_count;
    uint32_t lapic_address;
    uint16_t extended_table_length;
    uint8_t extended_table_checksum;
    uint8_t reserved;
} __attribute__((packed));
_Static_assert(sizeof(struct mp_config_header) == 44, "MP configuration table header");

struct mp_processor {
    uint8_t type;
    uint8_t lapic_id;
    uint8_t lapic_version;
    uint8_t cpu_flags;
    uint32_t cpu_signature;
    uint32_t feature_flags;
    uint8_t reserved[8];
} __attribute__((packed));
_Static_assert(sizeof(struct mp_processor) == 20, "MP processor entry");

struct mp_bus {
    uint8_t type;
    uint8_t bus_id;
    char bus_type[6];
} __attribute__((packed));
_Static_assert(sizeof(struct mp_bus) == 8, "MP bus entry");

struct mp_ioapic {
    uint8_t type;
    uint8_t ioapic_id;
    uint8_t ioapic_version;
    uint8_t flags;
    uint32_t address;
} __attribute__((packed));
_Static_assert(sizeof(struct mp_ioapic) == 8, "MP I/O APIC entry");

/* I/O interrupt and local interrupt assignment entries share this layout. */
struct mp_interrupt {
    uint8_t type;
    uint8_t interrupt_type;
    uint16_t flags;
    uint8_t source_bus_id;
    uint8_t source_bus_irq;
    uint8_t dest_apic_id;
    uint8_t dest_pin;
} __attribute__((packed));
_Static_assert(sizeof(struct mp_interrupt) == 8, "MP interrupt assignment entry");

#define MP_ENTRY_PROCESSOR 0
#define MP_ENTRY_BUS 1
#define MP_ENTRY_IOAPIC 2
#define MP_ENTRY_IO_INTERRUPT 3
#define MP_ENTRY_LOCAL_INTERRUPT 4
#define MP_CPU_ENABLED (1u << 0)
#define MP_CPU_BSP (1u << 1)
#define MP_IOAPIC_ENABLED (1u << 0)
#define MP_INT_INT 0
#define MP_INT_NMI 1
#define MP_INT_EXTINT 3
#define MP_IRQ_CONFORMS 0 /* polarity and trigger as the bus defines them (ISA: edge, high) */
#define MP_ALL_LAPICS 0xff

#define MP_LAPIC_VERSION 0x14  /* an integrated xAPIC, as KVM's */
#define MP_IOAPIC_VERSION 0x11 /* KVM's IOAPIC */
/* Family 6; CPUID.1:EDX with FPU (bit 0) and APIC (bit 9). Linux only prints these. */
#define MP_CPU_SIGNATURE 0x600
#define MP_CPU_FEATURES ((1u << 0) | (1u << 9))
#define MP_ISA_BUS_ID 0
#define MP_ISA_IRQS 16
#define MP_ISA_IRQ_CASCADE 2 /* the 8259 cascade: not routed to the IOAPIC */
#define MP_IOAPIC_PIN_TIMER 2
#define MP_LINT0 0
#define MP_LINT1 1

/* ISA IRQs 0-15 but the cascade, then ExtINT on LINT0 and NMI on LINT1. */
#define MP_IO_INTERRUPTS (MP_ISA_IRQS - 1)
#define MP_LOCAL_INTERRUPTS 2
#define MP_FIXED_LEN                                                                   \
    (sizeof(struct mp_floating_pointer) + sizeof(struct mp_config_header) +           \
     sizeof(struct mp_bus) + sizeof(struct mp_ioapic) +                               \
     (MP_IO_INTERRUPTS + MP_LOCAL_INTERRUPTS) * sizeof(struct mp_interrupt))
/*
 * The whole structure must fit in the 1 KiB: 16 + 44 + 8 + 8 + 17 * 8 = 212 bytes, plus
 * 20 per processor, gives (1024 - 212) / 20 = 40 vCPUs. Beyond that the guest has to find
 * its processors in the ACPI MADT.
 */
#define MP_MAX_CPUS ((MP_AREA_LEN - MP_FIXED_LEN) / sizeof(struct mp_processor))
_Static_assert(MP_MAX_CPUS == MPTABLE_MAX_CPUS, "MPTABLE_MAX_CPUS in boot.h must match");

static uint8_t mp_checksum(const void *data, size_t len)
{
    const uint8_t *bytes = data;
    uint8_t sum = 0;
    for (size_t i = 0; i < len; i++)
        sum += bytes[i];
    return (uint8_t)-sum;
}

/* Appends one entry to the configuration table under construction at `table`. */
static void mp_add(uint8_t *table, size_t *pos, const void *entry, size_t len)
{
    memcpy(table + *pos, entry, len);
    *pos += len;
}

static void mp_add_processors(uint8_t *table, size_t *pos, unsigned nr_cpus)
{
    for (unsigned cpu = 0; cpu < nr_cpus; cpu++) {
        const struct mp_processor proc = {
            .type = MP_ENTRY_PROCESSOR,
            .lapic_id = (uint8_t)cpu,
            .lapic_version = MP_LAPIC_VERSION,
            .cpu_flags = MP_CPU_ENABLED | (cpu == 0 ? MP_CPU_BSP : 0),
            .cpu_signature = MP_CPU_SIGNATURE,
            .feature_flags = MP_CPU_FEATURES,
        };
        mp_add(table, pos, &proc, sizeof(proc));
    }
}

static void mp_add_isa_interrupts(uint8_t *table, size_t *pos, uint8_t ioapic_id)
{
    for (unsigned irq = 0; irq < MP_ISA_IRQS; irq++) {
        if (irq == MP_ISA_IRQ_CASCADE)
            continue;
        const struct mp_interrupt entry = {
            .type = MP_ENTRY_IO_INTERRUPT,
            .interrupt_type = MP_INT_INT,
            .flags = MP_IRQ_CONFORMS,
            .source_bus_id = MP_ISA_BUS_ID,
            .source_bus_irq = (uint8_t)irq,
            .dest_apic_id = ioapic_id,
            /* The PIT's IRQ 0 is wired to pin 2, as the MADT's override says. */
            .dest_pin = (uint8_t)(irq == 0 ? MP_IOAPIC_PIN_TIMER : irq),
        };
        mp_add(table, pos, &entry, sizeof(entry));
    }
}

static void mp_add_local_interrupts(uint8_t *table, size_t *pos)
{
    const struct mp_interrupt extint = {
        .type = MP_ENTRY_LOCAL_INTERRUPT,
        .interrupt_type = MP_INT_EXTINT,
        .source_bus_id = MP_ISA_BUS_ID,
        .dest_apic_id = MP_ALL_LAPICS,
        .dest_pin = MP_LINT0,
    };
    const struct mp_interrupt nmi = {
        .type = MP_ENTRY_LOCAL_INTERRUPT,
        .interrupt_type = MP_INT_NMI,
        .source_bus_id = MP_ISA_BUS_ID,
        .dest_apic_id = MP_ALL_LAPICS,
        .dest_pin = MP_LINT1,
    };
    mp_add(table, pos, &extint, sizeof(extint));
    mp_add(table, pos, &nmi, sizeof(nmi));
}

/* Fills the configuration table (header and entries, in the order the spec requires). */
static size_t mp_fill_config(uint8_t *table, unsigned nr_cpus)
{
    const uint8_t ioapic_id = (uint8_t)nr_cpus;
    size_t pos = sizeof(struct mp_config_header);
    mp_add_processors(table, &pos, nr_cpus);
    const struct mp_bus isa = { MP_ENTRY_BUS, MP_ISA_BUS_ID, { 'I', 'S', 'A', ' ', ' ', ' ' } };
    mp_add(table, &pos, &isa, sizeof(isa));
    const struct mp_ioapic ioapic = {
        .type = MP_ENTRY_IOAPIC,
        .ioapic_id = ioapic_id,
        .ioapic_version = MP_IOAPIC_VERSION,
        .flags = MP_IOAPIC_ENABLED,
        .address = LAYOUT_IOAPIC_ADDR,
    };
    mp_add(table, &pos, &ioapic, sizeof(ioapic));
    mp_add_isa_interrupts(table, &pos, ioapic_id);
    mp_add_local_interrupts(table, &pos);

    struct mp_config_header header = {
        .signature = { 'P', 'C', 'M', 'P' },
        .base_table_length = (uint16_t)pos,
        .spec_rev = MP_SPEC_REV,
        .oem_id = { 'G', 'O', 'D', 'W', 'I', 'T', ' ', ' ' },
        .product_id = { 'G', 'O', 'D', 'W', 'I', 'T', 'V', 'M', ' ', ' ', ' ', ' ' },
        .entry_count = (uint16_t)(nr_cpus + 1 + 1 + MP_IO_INTERRUPTS + MP_LOCAL_INTERRUPTS),
        .lapic_address = LAYOUT_LAPIC_ADDR,
    };
    memcpy(table, &header, sizeof(header));
    ((struct mp_config_header *)table)->checksum = mp_checksum(table, pos);
    return pos;
}

int mptable_build(const struct guest_memory *gm, const struct platform_tables_config *cfg)
{
    if (cfg->nr_cpus == 0) {
        log_error("mptable: no vCPUs to describe");
        return -EINVAL;
    }
    if (cfg->nr_cpus > MP_MAX_CPUS) {
        log_error("mptable: %u vCPUs do not fit in the MP table's 1 KiB (at most %u)",
                  cfg->nr_cpus, (unsigned)MP_MAX_CPUS);
        return -ENOSPC;
    }
    /* The floating pointer first (Linux scans 16-byte boundaries), the table after it. */
    uint8_t area[MP_AREA_LEN] = { 0 };
    const uint64_t config_gpa = LAYOUT_MPTABLE + sizeof(struct mp_floating_pointer);
    mp_fill_config(area + sizeof(struct mp_floating_pointer), cfg->nr_cpus);
    struct mp_floating_pointer fp = {
        .signature = { '_', 'M', 'P', '_' },
        .config_table = (uint32_t)config_gpa,
        .length = sizeof(fp) / 16,
        .spec_rev = MP_SPEC_REV,
    };
    fp.checksum = mp_checksum(&fp, sizeof(fp));
    memcpy(area, &fp, sizeof(fp));
    int ret = gm_write(gm, LAYOUT_MPTABLE, area, sizeof(area));
    if (ret < 0)
        log_error("mptable: guest RAM does not cover %#llx-%#llx",
                  (unsigned long long)LAYOUT_MPTABLE, (unsigned long long)LAYOUT_LOW_RAM_END);
    return ret;
}
