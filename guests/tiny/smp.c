/* smp.c: counts the CPUs in the ACPI MADT, starts every AP by INIT-SIPI-SIPI, and checks they all ran. */
#include "lib.h"

#define TRAMPOLINE 0x10000ULL
#define SIPI_VECTOR (TRAMPOLINE >> 12)
#define AP_WAIT_MS 5000
#define MAX_APIC_IDS 256
#define MAX_TABLE_LEN 0x10000u /* far above what a VM with 255 CPUs needs: a sanity bound */

#define LAPIC_ID 0x20
#define LAPIC_VERSION 0x30
#define LAPIC_SVR 0xf0
#define LAPIC_ICR_LO 0x300
#define LAPIC_ICR_HI 0x310
#define SVR_ENABLE (1u << 8)
#define ICR_INIT (5u << 8)
#define ICR_STARTUP (6u << 8)
#define ICR_PENDING (1u << 12)
#define ICR_ASSERT (1u << 14)
#define ICR_ALL_BUT_SELF (3u << 18)

extern const uint8_t ap_trampoline_start[], ap_trampoline_end[], ap_counter[], ap_bitmap[];

struct cpu_set {
    uint8_t bits[MAX_APIC_IDS / 8];
    unsigned count;
};

static void cpu_set_add(struct cpu_set *s, unsigned id)
{
    if (id >= MAX_APIC_IDS)
        fail_hex("APIC ID out of the range this guest handles:", id);
    if (s->bits[id / 8] & (1u << (id % 8)))
        fail_hex("APIC ID listed twice:", id);
    s->bits[id / 8] |= (uint8_t)(1u << (id % 8));
    s->count++;
}

static uint8_t checksum(const uint8_t *p, uint32_t len)
{
    uint8_t sum = 0;
    while (len--)
        sum = (uint8_t)(sum + *p++);
    return sum;
}

static uint32_t rd32(const uint8_t *p) { return p[0] | p[1] << 8 | p[2] << 16 | (uint32_t)p[3] << 24; }
static uint64_t rd64(const uint8_t *p) { return rd32(p) | (uint64_t)rd32(p + 4) << 32; }
static uint16_t rd16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }

/* A system description table at gpa whose header, length and checksum are sane; else NULL. */
static const uint8_t *acpi_table(uint64_t gpa, const char *what)
{
    if (gpa == 0 || gpa >= 0x100000000ULL)
        fail_hex(what, gpa);
    const uint8_t *t = phys_ptr(gpa);
    uint32_t len = rd32(t + 4);
    if (len < 36 || len > MAX_TABLE_LEN)
        fail_hex("ACPI table with a bad length:", len);
    if (checksum(t, len) != 0)
        fail_hex("ACPI table with a bad checksum at", gpa);
    return t;
}

static const uint8_t *acpi_find_rsdp(void)
{
    for (uint64_t a = TINY_ACPI_START; a < TINY_ACPI_END; a += 16) {
        const uint8_t *p = phys_ptr(a);
        if (memcmp(p, "RSD PTR ", 8) == 0 && checksum(p, 20) == 0)
            return p;
    }
    fail("no RSDP in 0xe0000-0xfffff");
}

/* The MADT through RSDP -> XSDT (or RSDT on ACPI 1.0). */
static const uint8_t *acpi_find_madt(void)
{
    const uint8_t *rsdp = acpi_find_rsdp();
    int use_xsdt = rsdp[15] >= 2 && rd64(rsdp + 24) != 0;
    if (use_xsdt && checksum(rsdp, rd32(rsdp + 20) < 36 ? 36 : rd32(rsdp + 20)) != 0)
        fail("RSDP extended checksum is wrong");
    const uint8_t *sdt = use_xsdt ? acpi_table(rd64(rsdp + 24), "bad XSDT address")
                                  : acpi_table(rd32(rsdp + 16), "bad RSDT address");
    unsigned entry = use_xsdt ? 8 : 4;
    uint32_t n = (rd32(sdt + 4) - 36) / entry;
    for (uint32_t i = 0; i < n; i++) {
        const uint8_t *e = sdt + 36 + i * entry;
        uint64_t gpa = use_xsdt ? rd64(e) : rd32(e);
        const uint8_t *t = acpi_table(gpa, "bad table address in the XSDT/RSDT");
        if (memcmp(t, "APIC", 4) == 0)
            return t;
    }
    fail("no MADT (APIC) in the XSDT/RSDT");
}

/* Enabled processors of the MADT: Local APIC (type 0) and Local x2APIC (type 9) entries. */
static void madt_cpus(struct cpu_set *cpus)
{
    const uint8_t *madt = acpi_find_madt();
    uint32_t len = rd32(madt + 4);
    for (uint32_t off = 44; off < len;) {
        const uint8_t *e = madt + off;
        if (len - off < 2 || e[1] < 2 || e[1] > len - off)
            fail_hex("MADT entry with a bad length at offset", off);
        if (e[0] == 0 && e[1] >= 8 && (rd32(e + 4) & 1))
            cpu_set_add(cpus, e[3]);
        else if (e[0] == 9 && e[1] >= 16 && (rd32(e + 8) & 1))
            cpu_set_add(cpus, rd32(e + 4));
        off += e[1];
    }
    if (cpus->count == 0)
        fail("the MADT lists no enabled processor");
}

static const uint8_t *mp_find_floating(uint64_t start, uint64_t end)
{
    for (uint64_t a = start; a < end; a += 16) {
        const uint8_t *p = phys_ptr(a);
        if (memcmp(p, "_MP_", 4) == 0 && checksum(p, 16) == 0)
            return p;
    }
    return 0;
}

/* The MP table must describe the same processors, with the BSP flag on this CPU. */
static void mp_check_cpus(const struct cpu_set *madt, unsigned bsp_id)
{
    const uint8_t *fp = mp_find_floating(TINY_EBDA_LAST_KIB, TINY_EBDA_LAST_KIB + 0x400);
    if (!fp)
        fp = mp_find_floating(0xf0000, 0x100000);
    if (!fp)
        fail("no MP floating pointer in the last KiB of base memory or 0xf0000-0xfffff");
    uint32_t cfg_gpa = rd32(fp + 4);
    if (cfg_gpa == 0)
        fail("MP floating pointer without a configuration table (default configs unsupported)");
    const uint8_t *cfg = phys_ptr(cfg_gpa);
    uint16_t len = rd16(cfg + 4), n = rd16(cfg + 34);
    if (memcmp(cfg, "PCMP", 4) != 0 || len < 44 || checksum(cfg, len) != 0)
        fail("MP configuration table header is bad");
    struct cpu_set mp = { 0 };
    const uint8_t *e = cfg + 44, *end = cfg + len;
    for (uint16_t i = 0; i < n; i++) {
        unsigned size = e[0] == 0 ? 20 : 8; /* processor entries are 20 bytes, the rest 8 */
        if (e[0] > 4 || size > (unsigned)(end - e))
            fail_hex("MP table entry bad or past the table's end: type", e[0]);
        if (e[0] == 0 && (e[3] & 1)) {
            cpu_set_add(&mp, e[1]);
            if ((e[3] & 2) && e[1] != bsp_id)
                fail_hex("the MP table marks another CPU as the BSP: APIC ID", e[1]);
        }
        e += size;
    }
    if (mp.count != madt->count || memcmp(mp.bits, madt->bits, sizeof(mp.bits)) != 0)
        fail_hex("MP table and MADT list different processors; MP table count", mp.count);
}

static uint32_t lapic_read(unsigned reg) { return mmio_read32(TINY_LAPIC + reg); }
static void lapic_write(unsigned reg, uint32_t v) { mmio_write32(TINY_LAPIC + reg, v); }

static void lapic_ipi_all_but_self(uint32_t icr_lo)
{
    lapic_write(LAPIC_ICR_HI, 0);
    lapic_write(LAPIC_ICR_LO, icr_lo | ICR_ALL_BUT_SELF);
    for (unsigned i = 0; lapic_read(LAPIC_ICR_LO) & ICR_PENDING; i++) {
        if (i > 100000)
            fail("LAPIC ICR delivery status stays pending");
        cpu_relax();
    }
}

static void wait_ms(unsigned ms)
{
    struct pit_deadline d;
    pit_deadline_start(&d, ms);
    while (!pit_deadline_expired(&d))
        ;
}

void guest_main(void)
{
    struct cpu_set cpus = { 0 };
    uint32_t a, b, c, d;
    cpuid(1, &a, &b, &c, &d);
    unsigned bsp_id = b >> 24;

    madt_cpus(&cpus);
    if (!(cpus.bits[bsp_id / 8] & (1u << (bsp_id % 8))))
        fail_hex("the BSP's APIC ID is not in the MADT:", bsp_id);
    mp_check_cpus(&cpus, bsp_id);

    /* The in-kernel LAPIC answers at its MMIO page and agrees with CPUID about our ID. */
    uint32_t version = lapic_read(LAPIC_VERSION);
    if (version == 0 || version == 0xffffffffu)
        fail_hex("LAPIC version register reads", version);
    if (lapic_read(LAPIC_ID) >> 24 != bsp_id)
        fail_hex("LAPIC ID register disagrees with CPUID: reads", lapic_read(LAPIC_ID));
    lapic_write(LAPIC_SVR, SVR_ENABLE | 0xff);

    size_t tlen = (size_t)(ap_trampoline_end - ap_trampoline_start);
    memcpy(phys_ptr(TRAMPOLINE), ap_trampoline_start, tlen);
    volatile uint32_t *counter = phys_ptr(TRAMPOLINE + (uint64_t)(ap_counter - ap_trampoline_start));
    volatile uint8_t *bitmap = phys_ptr(TRAMPOLINE + (uint64_t)(ap_bitmap - ap_trampoline_start));

    /* The MP spec's sequence: INIT, 10 ms, SIPI, then a second SIPI for any AP that missed
     * the first. Sent even with one CPU: an IPI to nobody must be harmless too. */
    lapic_ipi_all_but_self(ICR_INIT | ICR_ASSERT);
    wait_ms(10);
    lapic_ipi_all_but_self(ICR_STARTUP | SIPI_VECTOR);
    wait_ms(1);
    lapic_ipi_all_but_self(ICR_STARTUP | SIPI_VECTOR);

    unsigned want = cpus.count - 1;
    struct pit_deadline deadline;
    pit_deadline_start(&deadline, AP_WAIT_MS);
    while (*counter < want) {
        if (pit_deadline_expired(&deadline)) {
            uart_puts("tiny: smp: ");
            uart_putdec(*counter);
            uart_puts(" of ");
            uart_putdec(want);
            uart_puts(" APs checked in\n");
            fail("APs did not all start within 5 s");
        }
    }
    /* No AP may run twice (the second SIPI must not restart one that already runs). */
    wait_ms(50);
    if (*counter != want)
        fail_hex("more AP starts than APs: count", *counter);
    for (unsigned id = 0; id < MAX_APIC_IDS; id++) {
        int expected = id != bsp_id && (cpus.bits[id / 8] & (1u << (id % 8)));
        int seen = (bitmap[id / 8] >> (id % 8)) & 1;
        if (expected != seen)
            fail_hex(seen ? "an unexpected APIC ID checked in:" : "an AP never checked in: APIC ID",
                     id);
    }
    uart_puts("tiny: smp ");
    uart_putdec(cpus.count);
    uart_puts(" cpus up\n");
}
