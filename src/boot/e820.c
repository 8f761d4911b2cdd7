/* e820.c: the guest's e820 memory map, from the RAM regions and the fixed low-memory layout. */
#include <stdbool.h>

#include "boot/boot.h"
#include "boot/layout.h"

struct e820_sink {
    struct e820_entry_gw *out;
    unsigned max;
    unsigned n;
};

static void e820_add(struct e820_sink *s, uint64_t addr, uint64_t end, uint32_t type)
{
    if (end <= addr || s->n >= s->max)
        return;
    s->out[s->n++] = (struct e820_entry_gw){ .addr = addr, .size = end - addr, .type = type };
}

static uint64_t min_u64(uint64_t a, uint64_t b)
{
    return a < b ? a : b;
}

/*
 * The region at 0 holds the legacy PC layout:
 *   0 - 0x9fc00          RAM (zero page, command line, page tables, ...)
 *   0x9fc00 - 0xa0000    reserved: the EBDA's last KiB, where the MP table is
 *   0xa0000 - 0xe0000    no entry: VGA hole and option ROM area, nothing for the OS to use
 *   0xe0000 - 0x100000   reserved: the BIOS area holding the RSDP and ACPI tables. Reserved
 *                        rather than ACPI (reclaimable): the kernel finds the tables through
 *                        the RSDP either way and must never hand this area out as RAM.
 *   1 MiB - end          RAM
 * The MMIO hole above it (IOAPIC, LAPIC, PCI BARs) gets no entry: Linux knows those addresses,
 * but for the PCIe ECAM window (below).
 */
static void e820_add_low_region(struct e820_sink *s, uint64_t size)
{
    e820_add(s, 0, min_u64(size, LAYOUT_EBDA_START), E820_RAM);
    e820_add(s, LAYOUT_EBDA_START, min_u64(size, LAYOUT_LOW_RAM_END), E820_RESERVED);
    e820_add(s, LAYOUT_ACPI_START, min_u64(size, LAYOUT_ACPI_END), E820_RESERVED);
    e820_add(s, LAYOUT_KERNEL_MIN, size, E820_RAM);
}

/*
 * The PCIe ECAM window that the MCFG table describes is reserved: Linux accepts an MCFG
 * region only when the firmware reserved it (in e820, or as a motherboard resource in the
 * DSDT), and checks e820 first, before ACPI is up. Kept in address order with the RAM.
 */
unsigned e820_build(const struct guest_memory *gm, struct e820_entry_gw *out, unsigned max)
{
    struct e820_sink sink = { .out = out, .max = max, .n = 0 };
    bool ecam_done = false;

    for (unsigned i = 0; i < gm->nr_regions; i++) {
        const struct gm_region *r = &gm->regions[i];
        if (!ecam_done && r->gpa >= LAYOUT_PCI_ECAM) {
            e820_add(&sink, LAYOUT_PCI_ECAM, LAYOUT_PCI_ECAM + LAYOUT_PCI_ECAM_SIZE, E820_RESERVED);
            ecam_done = true;
        }
        if (r->gpa == 0)
            e820_add_low_region(&sink, r->size);
        else
            e820_add(&sink, r->gpa, r->gpa + r->size, E820_RAM);
    }
    if (!ecam_done)
        e820_add(&sink, LAYOUT_PCI_ECAM, LAYOUT_PCI_ECAM + LAYOUT_PCI_ECAM_SIZE, E820_RESERVED);
    return sink.n;
}
