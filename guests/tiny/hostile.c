/* hostile.c: abuses ports, MMIO and config space in ways a buggy or malicious guest might; godwit must survive. */
#include "lib.h"

/* Ports no device of a tiny VM claims (PCI I/O BARs exist only with virtio devices). */
#define UNMAPPED_PORT 0xf000
#define LAST_PORT 0xffff
#define UNMAPPED_MMIO 0xd0000000ULL
#define PM1_EN (TINY_ACPI_PM1_EVT + 2)
#define ACPI_RESET_REG 0x608
#define RTC_INDEX 0x70
#define RTC_DATA 0x71
#define STRING_LEN 8192 /* two pages and more: string I/O that crosses page boundaries */

static uint8_t buf[STRING_LEN + 64] __attribute__((aligned(4096)));

static void rep_outsb(uint16_t port, const void *src, size_t n)
{
    __asm__ volatile("rep outsb" : "+S"(src), "+c"(n) : "d"(port) : "memory");
}

static void rep_outsw(uint16_t port, const void *src, size_t n)
{
    __asm__ volatile("rep outsw" : "+S"(src), "+c"(n) : "d"(port) : "memory");
}

static void rep_outsl(uint16_t port, const void *src, size_t n)
{
    __asm__ volatile("rep outsl" : "+S"(src), "+c"(n) : "d"(port) : "memory");
}

static void rep_insb(uint16_t port, void *dst, size_t n)
{
    __asm__ volatile("rep insb" : "+D"(dst), "+c"(n) : "d"(port) : "memory");
}

static void rep_insw(uint16_t port, void *dst, size_t n)
{
    __asm__ volatile("rep insw" : "+D"(dst), "+c"(n) : "d"(port) : "memory");
}

static void rep_movsb(void *dst, const void *src, size_t n)
{
    __asm__ volatile("rep movsb" : "+D"(dst), "+S"(src), "+c"(n) : : "memory");
}

static void rep_movsq(void *dst, const void *src, size_t n)
{
    __asm__ volatile("rep movsq" : "+D"(dst), "+S"(src), "+c"(n) : : "memory");
}

static void rep_stosq(void *dst, uint64_t v, size_t n)
{
    __asm__ volatile("rep stosq" : "+D"(dst), "+c"(n) : "a"(v) : "memory");
}

static uint32_t garbage(uint32_t i)
{
    return (i + 1) * 0x9e3779b9u; /* varied bit patterns, no need for quality */
}

static void expect_all_ones(const uint8_t *p, size_t n, const char *what)
{
    for (size_t i = 0; i < n; i++) {
        if (p[i] != 0xff)
            fail(what);
    }
}

/* Long and odd-sized string I/O to the UART and to ports nobody owns. */
static void abuse_string_io(void)
{
    static const char line[] = "tiny: hostile rep outsb to the UART, a long string\n";
    for (size_t i = 0; i < STRING_LEN; i++)
        buf[i] = (uint8_t)line[i % (sizeof(line) - 1)];
    rep_outsb(TINY_COM1 + TINY_UART_THR, buf, STRING_LEN);
    uart_putc('\n');
    /* Wider accesses than the 8-bit UART registers take, the last one past its 8 ports. */
    rep_outsw(TINY_COM1 + TINY_UART_THR, buf, 64);
    uart_putc('\n');
    rep_outsl(TINY_COM1 + 6, buf, 64);
    rep_insb(TINY_COM1 + TINY_UART_THR, buf, STRING_LEN); /* nothing was typed */
    rep_insw(TINY_COM1 + 6, buf, 64);

    for (size_t i = 0; i < STRING_LEN; i++)
        buf[i] = (uint8_t)garbage((uint32_t)i);
    rep_outsb(UNMAPPED_PORT, buf, STRING_LEN);
    rep_outsl(UNMAPPED_PORT, buf, STRING_LEN / 4);
    memset(buf, 0, STRING_LEN);
    rep_insb(UNMAPPED_PORT, buf, STRING_LEN);
    expect_all_ones(buf, STRING_LEN, "rep insb from an unmapped port did not read all ones");

    /* Accesses that run past the last port (0xffff + 1 and beyond). */
    outw(LAST_PORT, 0xbeef);
    outl(LAST_PORT - 1, 0xdeadbeef);
    outl(LAST_PORT, 0xdeadbeef);
    memset(buf, 0, 64);
    rep_insw(LAST_PORT, buf, 8);
    expect_all_ones(buf, 16, "a word read at port 0xffff did not read all ones");
    if (inl(LAST_PORT - 2) != 0xffffffffu || inl(LAST_PORT) != 0xffffffffu)
        fail("dword reads at the top of the port space did not read all ones");
}

/* 8-byte, misaligned and boundary-crossing MMIO, in the ECAM and in unmapped space. */
static void abuse_mmio(void)
{
    static const uint64_t targets[] = {
        TINY_PCI_ECAM,                                /* vendor/device: read-only */
        TINY_PCI_ECAM + 0x8,                          /* revision/class */
        TINY_PCI_ECAM + 0xffc,                        /* into function 1's page */
        TINY_PCI_ECAM + TINY_PCI_ECAM_SIZE - 4,       /* out of the ECAM window */
        TINY_PCI_ECAM - 4,                            /* from the hole into the ECAM */
        UNMAPPED_MMIO,
        UNMAPPED_MMIO + 0xffc,                        /* across a page in the hole */
        UNMAPPED_MMIO + 0x7ff,                        /* misaligned */
        0x3f000000ULL,                                /* past the end of a 64 MiB guest's RAM */
    };
    for (unsigned i = 0; i < sizeof(targets) / sizeof(targets[0]); i++) {
        (void)mmio_read64(targets[i]);
        mmio_write64(targets[i], 0xdeadbeefcafef00dULL ^ i);
        (void)mmio_read64(targets[i] + 1);
        mmio_write64(targets[i] + 3, ~0ULL);
        (void)mmio_read32(targets[i] + 1);
        mmio_write16(targets[i] + 3, 0xffff);
    }
    if (mmio_read64(UNMAPPED_MMIO) != ~0ULL)
        fail("an 8-byte read of unmapped MMIO did not read all ones");

    /* String MMIO: the emulator splits these into many exits. */
    rep_movsb(buf, phys_ptr(TINY_PCI_ECAM), 256);
    rep_movsq(phys_ptr(UNMAPPED_MMIO), buf, 64);
    rep_stosq(phys_ptr(UNMAPPED_MMIO + 0x1000), 0x5555aaaa5555aaaaULL, 64);
    memset(buf, 0, 64);
    rep_movsb(buf, phys_ptr(UNMAPPED_MMIO + 0x2ff0), 64);
    expect_all_ones(buf, 64, "rep movsb from unmapped MMIO did not read all ones");
}

/* Garbage into every config register of 00:00.0 (both ways), and into absent devices. */
static void abuse_pci_config(void)
{
    for (unsigned reg = 0; reg < 256; reg += 4) {
        outl(TINY_PCI_ADDR, pci_cf8(0, 0, reg));
        outl(TINY_PCI_DATA, garbage(reg));
        outw(TINY_PCI_DATA + 2, (uint16_t)garbage(reg + 1));
        outb(TINY_PCI_DATA + 3, (uint8_t)garbage(reg + 2));
        outb(TINY_PCI_DATA + 1, 0xff);
        (void)inl(TINY_PCI_DATA);
        (void)inw(TINY_PCI_DATA + 3); /* a word across the end of the data window */
    }
    for (unsigned reg = 0; reg < 4096; reg += 4)
        mmio_write32(pci_ecam(0, 0, reg), garbage(reg) | 0x80000001u);
    for (unsigned reg = 0; reg < 4096; reg += 509)
        mmio_write8(pci_ecam(0, 0, reg), 0xff);
    for (unsigned dev = 1; dev < 32; dev++) {
        mmio_write32(pci_ecam(dev, 7, 4), 0xffffffffu);
        outl(TINY_PCI_ADDR, pci_cf8(dev, 7, 4));
        outl(TINY_PCI_DATA, 0xffffffffu);
    }
    /* Odd address register values: reserved bits, other buses, partial writes. */
    static const uint32_t addrs[] = { 0xffffffffu, 0xff000000u, 0x8fff0003u, 0x80ff0000u, 0x7fffffffu };
    for (unsigned i = 0; i < sizeof(addrs) / sizeof(addrs[0]); i++) {
        outl(TINY_PCI_ADDR, addrs[i]);
        outl(TINY_PCI_DATA, 0xffffffffu);
        (void)inl(TINY_PCI_DATA);
    }
    outb(TINY_PCI_ADDR + 1, 0x06); /* 0xcf9: the chipset reset port elsewhere, not here */
    outw(TINY_PCI_ADDR + 2, 0xffff);
    outb(TINY_PCI_ADDR, 0xff);
}

/* PM1: every sleep type but S5, S5 without SLP_EN, partial and wide writes. */
static void abuse_acpi_pm(void)
{
    for (unsigned typ = 0; typ < 8; typ++) {
        if (typ != TINY_SLP_TYP_S5)
            outw(TINY_ACPI_PM1_CNT, (uint16_t)(typ << TINY_PM1_SLP_TYP_SHIFT | TINY_PM1_SLP_EN));
    }
    outw(TINY_ACPI_PM1_CNT, (uint16_t)(TINY_SLP_TYP_S5 << TINY_PM1_SLP_TYP_SHIFT));
    outb(TINY_ACPI_PM1_CNT, 0xff);                 /* low byte only: no SLP_EN in it */
    outl(TINY_ACPI_PM1_EVT + 2, 0xdfff0000u);       /* PM1_EN = 0 and PM1_CNT = all but SLP_EN */
    outb(TINY_ACPI_PM1_CNT + 1, 0x20);              /* SLP_EN alone: sleep type 0 */
    outl(TINY_ACPI_PM1_EVT, 0xffffffffu);           /* clear all status, enable everything */
    outw(PM1_EN, 0);
    (void)inl(TINY_ACPI_PM1_EVT);
    (void)inw(TINY_ACPI_PM1_CNT);
    (void)inl(TINY_ACPI_PM1_CNT);                   /* past the end of the PM block */
    /* The reset register resets only with RST_CPU (bit 2) set; none of these has it. */
    outb(ACPI_RESET_REG, 0x00);
    outb(ACPI_RESET_REG, 0x02);
    outb(ACPI_RESET_REG, 0xf8);
    /* pvpanic with no event bit is not a panic. */
    outb(TINY_PVPANIC, 0);
    (void)inb(TINY_PVPANIC);
}

/* Every UART register with extreme values, loopback and divisor included; then sane again. */
static void abuse_uart(void)
{
    for (uint16_t reg = 1; reg < 8; reg++) {
        outb(TINY_COM1 + reg, 0xff);
        (void)inb(TINY_COM1 + reg);
    }
    outb(TINY_COM1 + TINY_UART_LCR, 0x80); /* DLAB: registers 0 and 1 are the divisor */
    outb(TINY_COM1 + 0, 0);
    outb(TINY_COM1 + 1, 0);
    outb(TINY_COM1 + TINY_UART_LCR, 0x03);
    outb(TINY_COM1 + TINY_UART_MCR, 0x1f); /* loopback: what we send comes back to RBR */
    for (unsigned i = 0; i < 100; i++)
        outb(TINY_COM1 + TINY_UART_THR, (uint8_t)i);
    for (unsigned i = 0; i < 200; i++) /* past the FIFO's end, and past empty */
        (void)inb(TINY_COM1 + TINY_UART_THR);
    outl(TINY_COM1 + TINY_UART_THR, 0xffffffffu);
    outl(TINY_COM1 + 4, 0xffffffffu);
    outw(TINY_COM1 + 7, 0xffff);
    (void)inl(TINY_COM1 + 4);
    outb(TINY_COM1 + TINY_UART_FCR, 0xff);

    /* Back to 115200 8N1, FIFOs cleared, no loopback, no interrupts, for the last line. */
    outb(TINY_COM1 + TINY_UART_LCR, 0x80);
    outb(TINY_COM1 + 0, 1);
    outb(TINY_COM1 + 1, 0);
    outb(TINY_COM1 + TINY_UART_LCR, 0x03);
    outb(TINY_COM1 + TINY_UART_FCR, 0x07);
    outb(TINY_COM1 + TINY_UART_MCR, 0x03);
    outb(TINY_COM1 + TINY_UART_IER, 0);
    outb(TINY_COM1 + TINY_UART_SCR, 0x42);
    if (inb(TINY_COM1 + TINY_UART_SCR) != 0x42)
        fail("the UART scratch register no longer works after the abuse");
}

/* The RTC's index/data pair with every index, and odd rate and control values. */
static void abuse_rtc(void)
{
    for (unsigned idx = 0; idx < 256; idx += 3) {
        outb(RTC_INDEX, (uint8_t)idx);
        (void)inb(RTC_DATA);
    }
    static const uint8_t regs[] = { 0x0a, 0x0b, 0x0c, 0x0d, 0x7f };
    static const uint8_t values[] = { 0xff, 0x00, 0x2f, 0x70 };
    for (unsigned r = 0; r < sizeof(regs); r++) {
        for (unsigned v = 0; v < sizeof(values); v++) {
            outb(RTC_INDEX, regs[r]);
            outb(RTC_DATA, values[v]);
            (void)inb(RTC_DATA);
        }
    }
    outw(RTC_INDEX, 0xffff);
    (void)inw(RTC_INDEX);
    outb(RTC_INDEX, 0x0a);
    outb(RTC_DATA, 0x26); /* the usual divider and rate */
    outb(RTC_INDEX, 0x0b);
    outb(RTC_DATA, 0x02); /* 24-hour mode, no interrupts */
}

void guest_main(void)
{
    uint32_t id_before = pci_read32_cf8(0, 0, 0);

    uart_puts("tiny: hostile: starting\n");
    abuse_string_io();
    abuse_mmio();
    abuse_pci_config();
    abuse_acpi_pm();
    abuse_rtc();
    abuse_uart();

    /* Read-only identity survives the garbage, the same through both mechanisms. */
    uint32_t id_cf8 = pci_read32_cf8(0, 0, 0);
    if (id_cf8 != id_before)
        fail_hex("00:00.0 vendor/device changed after garbage writes; now", id_cf8);
    if (mmio_read32(pci_ecam(0, 0, 0)) != id_before)
        fail_hex("00:00.0 vendor/device through ECAM changed; now", mmio_read32(pci_ecam(0, 0, 0)));
    /* On a line of its own, whatever the abuse left unterminated. */
    uart_puts("\ntiny: survived\n");
}
