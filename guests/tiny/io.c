/* io.c: checks godwit's port and MMIO dispatch: PCI config (0xcf8/0xcfc and ECAM), UART, holes. */
#include "lib.h"

#define HOST_BRIDGE_DEV 0
#define ABSENT_DEV 0x1f
/* Inside the 32-bit PCI window (0xc0000000-0xe0000000) but below any BAR a tiny VM has. */
#define UNMAPPED_MMIO 0xd0000000ULL

static void check_pci_host_bridge(uint16_t *vendor_out, uint16_t *device_out)
{
    uint32_t id_cf8 = pci_read32_cf8(HOST_BRIDGE_DEV, 0, 0);
    uint32_t id_ecam = mmio_read32(pci_ecam(HOST_BRIDGE_DEV, 0, 0));
    uint16_t vendor = (uint16_t)id_cf8, device = (uint16_t)(id_cf8 >> 16);

    if (vendor == 0xffff || vendor == 0 || device == 0xffff)
        fail_hex("00:00.0 vendor/device through 0xcf8/0xcfc is absent:", id_cf8);
    if (id_ecam != id_cf8)
        fail_hex("00:00.0 vendor/device differs between 0xcfc and ECAM; ECAM read", id_ecam);

    /* Narrow accesses pick their bytes out of the dword by the low address bits. */
    outl(TINY_PCI_ADDR, pci_cf8(HOST_BRIDGE_DEV, 0, 0));
    if (inw(TINY_PCI_DATA) != vendor)
        fail("00:00.0 16-bit read at 0xcfc is not the vendor ID");
    if (inw(TINY_PCI_DATA + 2) != device)
        fail("00:00.0 16-bit read at 0xcfe is not the device ID");
    if (inb(TINY_PCI_DATA + 1) != (uint8_t)(vendor >> 8))
        fail("00:00.0 8-bit read at 0xcfd is not the vendor ID's high byte");
    if (mmio_read16(pci_ecam(HOST_BRIDGE_DEV, 0, 2)) != device)
        fail("00:00.0 16-bit ECAM read at offset 2 is not the device ID");
    if (mmio_read8(pci_ecam(HOST_BRIDGE_DEV, 0, 1)) != (uint8_t)(vendor >> 8))
        fail("00:00.0 8-bit ECAM read at offset 1 is not the vendor ID's high byte");

    /* The address register reads back what was written. */
    outl(TINY_PCI_ADDR, pci_cf8(HOST_BRIDGE_DEV, 0, 8));
    if (inl(TINY_PCI_ADDR) != pci_cf8(HOST_BRIDGE_DEV, 0, 8))
        fail_hex("0xcf8 does not read back the address written; read", inl(TINY_PCI_ADDR));

    *vendor_out = vendor;
    *device_out = device;
}

static void check_pci_absent_device(void)
{
    uint32_t v = pci_read32_cf8(ABSENT_DEV, 0, 0);
    if (v != 0xffffffffu)
        fail_hex("absent device 00:1f.0 through 0xcf8/0xcfc did not read as all ones:", v);
    v = mmio_read32(pci_ecam(ABSENT_DEV, 0, 0));
    if (v != 0xffffffffu)
        fail_hex("absent device 00:1f.0 through ECAM did not read as all ones:", v);
    /* With the enable bit clear, 0xcfc reaches no configuration space at all. */
    outl(TINY_PCI_ADDR, pci_cf8(HOST_BRIDGE_DEV, 0, 0) & ~0x80000000u);
    v = inl(TINY_PCI_DATA);
    if (v != 0xffffffffu)
        fail_hex("0xcfc with the 0xcf8 enable bit clear did not read as all ones:", v);
}

static void check_uart_scratch(void)
{
    static const uint8_t patterns[] = { 0x5a, 0xa5, 0x00, 0xff };
    for (unsigned i = 0; i < sizeof(patterns); i++) {
        outb(TINY_COM1 + TINY_UART_SCR, patterns[i]);
        uint8_t got = inb(TINY_COM1 + TINY_UART_SCR);
        if (got != patterns[i])
            fail_hex("UART scratch register did not keep the value written; read", got);
    }
    /* An idle 16550A with nothing sent pending: THR empty and transmitter idle. */
    uint8_t lsr = inb(TINY_COM1 + TINY_UART_LSR);
    if ((lsr & 0x60) != 0x60)
        fail_hex("UART LSR does not say THRE|TEMT when idle:", lsr);
}

static void check_unmapped_mmio(void)
{
    uint32_t v = mmio_read32(UNMAPPED_MMIO);
    if (v != 0xffffffffu)
        fail_hex("unmapped MMIO at 0xd0000000 did not read as all ones:", v);
    if (mmio_read8(UNMAPPED_MMIO + 3) != 0xff)
        fail("unmapped MMIO byte read did not return 0xff");
    /* A write there goes nowhere and must not come back. */
    mmio_write32(UNMAPPED_MMIO, 0x12345678);
    v = mmio_read32(UNMAPPED_MMIO);
    if (v != 0xffffffffu)
        fail_hex("unmapped MMIO kept a written value:", v);
}

void guest_main(void)
{
    uint16_t vendor, device;
    check_pci_host_bridge(&vendor, &device);
    check_pci_absent_device();
    check_uart_scratch();
    check_unmapped_mmio();
    uart_puts("tiny: io ok vendor=");
    uart_puthex(vendor, 4);
    uart_puts(" device=");
    uart_puthex(device, 4);
    uart_putc('\n');
}
