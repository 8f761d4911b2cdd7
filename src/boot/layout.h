/* layout.h: where the VMM puts boot structures in low guest memory (see docs/memory-map.md). */
#ifndef GODWIT_LAYOUT_H
#define GODWIT_LAYOUT_H

#define LAYOUT_GDT 0x500ULL            /* boot GDT, 4 entries */
#define LAYOUT_BOOT_PARAMS 0x7000ULL   /* Linux zero page (struct boot_params, 4 KiB) */
#define LAYOUT_PVH_START_INFO 0x6000ULL /* struct hvm_start_info + modules */
#define LAYOUT_PVH_MEMMAP 0x6400ULL    /* struct hvm_memmap_table_entry[] for PVH */
#define LAYOUT_PML4 0x9000ULL          /* identity page tables for the 64-bit entry: */
#define LAYOUT_PDPT 0xa000ULL          /*   PML4, PDPT, then 4 PDs of 2 MiB pages, */
#define LAYOUT_PD 0xb000ULL            /*   0xb000-0xefff, mapping the first 4 GiB */
#define LAYOUT_CMDLINE 0x20000ULL      /* kernel command line */
#define LAYOUT_CMDLINE_MAX 0x10000ULL  /* ... up to 64 KiB including the NUL */
#define LAYOUT_EBDA_START 0x9fc00ULL   /* MP table lives in the EBDA's last KiB */
#define LAYOUT_MPTABLE LAYOUT_EBDA_START
#define LAYOUT_LOW_RAM_END 0xa0000ULL  /* 640 KiB: VGA hole and BIOS area follow */
#define LAYOUT_ACPI_START 0xe0000ULL   /* RSDP and ACPI tables (BIOS read-only area) */
#define LAYOUT_ACPI_END 0x100000ULL
#define LAYOUT_KERNEL_MIN 0x100000ULL  /* 1 MiB: protected-mode kernel of a bzImage */

/* Fixed legacy platform addresses. */
#define LAYOUT_IOAPIC_ADDR 0xfec00000ULL
#define LAYOUT_LAPIC_ADDR 0xfee00000ULL
#define LAYOUT_KVM_IDENTITY_MAP 0xfeffc000ULL /* KVM_SET_IDENTITY_MAP_ADDR (1 page) */
#define LAYOUT_KVM_TSS 0xfeffd000ULL          /* KVM_SET_TSS_ADDR (3 pages) */
#define LAYOUT_PCI_MMIO_START 0xc0000000ULL   /* 32-bit PCI BAR window */
#define LAYOUT_PCI_MMIO_END 0xe0000000ULL
#define LAYOUT_PCI_ECAM 0xe0000000ULL         /* PCIe ECAM (MMIO config space), bus 0 only */
#define LAYOUT_PCI_ECAM_SIZE 0x100000ULL

/* Port I/O map of the legacy platform. */
#define PORT_I8042_DATA 0x60
#define PORT_I8042_CMD 0x64
#define PORT_RTC 0x70          /* index 0x70, data 0x71 */
#define PORT_COM1 0x3f8        /* 8 registers, IRQ 4 */
#define PORT_PVPANIC 0x505     /* 1 byte: bit 0 = guest panicked */
#define PORT_ACPI_PM 0x600     /* PM1a event (4 bytes) then PM1a control (2 bytes) */
#define PORT_ACPI_PM1_EVT PORT_ACPI_PM
#define PORT_ACPI_PM1_CNT (PORT_ACPI_PM + 4)
/* The FADT's RESET_REG. Not the chipset's 0xcf9, which sits inside the PCI host's
 * 0xcf8-0xcff window here; Linux resets through the FADT register first anyway. */
#define PORT_ACPI_RESET 0x608
#define PORT_PCI_CONFIG 0xcf8  /* 0xcf8 address, 0xcfc-0xcff data */

#define IRQ_COM1 4
#define IRQ_ACPI_SCI 9

/* Sleep type that the DSDT's \_S5 reports and the PM1 control register acts on. */
#define ACPI_SLP_TYP_S5 5
#define ACPI_RESET_VALUE 0x6

#endif
