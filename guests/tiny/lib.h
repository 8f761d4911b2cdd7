/* lib.h: the support library of the tiny test guests: port and MMIO access, UART output, exits. */
#ifndef TINY_LIB_H
#define TINY_LIB_H

#include <stddef.h>
#include <stdint.h>

/* The platform as godwit builds it (src/boot/layout.h); repeated here because guests are
 * freestanding programs that share no headers with the VMM. */
#define TINY_COM1 0x3f8
#define TINY_UART_THR 0            /* register offsets from TINY_COM1 */
#define TINY_UART_IER 1
#define TINY_UART_FCR 2
#define TINY_UART_LCR 3
#define TINY_UART_MCR 4
#define TINY_UART_LSR 5
#define TINY_UART_SCR 7
#define TINY_PVPANIC 0x505
#define TINY_ACPI_PM1_EVT 0x600
#define TINY_ACPI_PM1_CNT 0x604
#define TINY_PM1_SLP_TYP_SHIFT 10
#define TINY_PM1_SLP_EN (1u << 13)
#define TINY_SLP_TYP_S5 5
#define TINY_PCI_ADDR 0xcf8
#define TINY_PCI_DATA 0xcfc
#define TINY_PCI_ECAM 0xe0000000ULL
#define TINY_PCI_ECAM_SIZE 0x100000ULL
#define TINY_LAPIC 0xfee00000ULL
#define TINY_ACPI_START 0xe0000ULL
#define TINY_ACPI_END 0x100000ULL
#define TINY_EBDA_LAST_KIB 0x9fc00ULL

static inline void outb(uint16_t port, uint8_t v) { __asm__ volatile("outb %0, %1" : : "a"(v), "Nd"(port)); }
static inline void outw(uint16_t port, uint16_t v) { __asm__ volatile("outw %0, %1" : : "a"(v), "Nd"(port)); }
static inline void outl(uint16_t port, uint32_t v) { __asm__ volatile("outl %0, %1" : : "a"(v), "Nd"(port)); }

static inline uint8_t inb(uint16_t port)
{
    uint8_t v;
    __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port));
    return v;
}

static inline uint16_t inw(uint16_t port)
{
    uint16_t v;
    __asm__ volatile("inw %1, %0" : "=a"(v) : "Nd"(port));
    return v;
}

static inline uint32_t inl(uint16_t port)
{
    uint32_t v;
    __asm__ volatile("inl %1, %0" : "=a"(v) : "Nd"(port));
    return v;
}

/*
 * MMIO through volatile pointers, one access of exactly the named width each (the asm keeps
 * the compiler from splitting or merging them: the width is what the device sees). The
 * addresses are identity-mapped physical addresses below 4 GiB.
 */
static inline uint8_t mmio_read8(uint64_t a) { uint8_t v; __asm__ volatile("movb (%1), %0" : "=q"(v) : "r"(a) : "memory"); return v; }
static inline uint16_t mmio_read16(uint64_t a) { uint16_t v; __asm__ volatile("movw (%1), %0" : "=r"(v) : "r"(a) : "memory"); return v; }
static inline uint32_t mmio_read32(uint64_t a) { uint32_t v; __asm__ volatile("movl (%1), %0" : "=r"(v) : "r"(a) : "memory"); return v; }
static inline uint64_t mmio_read64(uint64_t a) { uint64_t v; __asm__ volatile("movq (%1), %0" : "=r"(v) : "r"(a) : "memory"); return v; }
static inline void mmio_write8(uint64_t a, uint8_t v) { __asm__ volatile("movb %0, (%1)" : : "q"(v), "r"(a) : "memory"); }
static inline void mmio_write16(uint64_t a, uint16_t v) { __asm__ volatile("movw %0, (%1)" : : "r"(v), "r"(a) : "memory"); }
static inline void mmio_write32(uint64_t a, uint32_t v) { __asm__ volatile("movl %0, (%1)" : : "r"(v), "r"(a) : "memory"); }
static inline void mmio_write64(uint64_t a, uint64_t v) { __asm__ volatile("movq %0, (%1)" : : "r"(v), "r"(a) : "memory"); }

/* A pointer to guest-physical (= virtual, identity-mapped) memory. Laundered through asm so
 * that the compiler neither reasons about the "object" at a constant address (GCC 12's
 * -Warray-bounds does) nor assumes anything about what is there. */
static inline void *phys_ptr(uint64_t addr)
{
    void *p;
    __asm__("" : "=r"(p) : "0"(addr));
    return p;
}

static inline void cpuid(uint32_t leaf, uint32_t *a, uint32_t *b, uint32_t *c, uint32_t *d)
{
    __asm__ volatile("cpuid" : "=a"(*a), "=b"(*b), "=c"(*c), "=d"(*d) : "a"(leaf), "c"(0));
}

static inline void cpu_relax(void) { __asm__ volatile("pause" ::: "memory"); }

/* Configuration mechanism 1 address for bus 0. */
static inline uint32_t pci_cf8(unsigned dev, unsigned fn, unsigned reg)
{
    return 0x80000000u | (dev & 0x1f) << 11 | (fn & 7) << 8 | (reg & 0xfc);
}

/* ECAM address of a bus-0 config register. */
static inline uint64_t pci_ecam(unsigned dev, unsigned fn, unsigned reg)
{
    return TINY_PCI_ECAM | (uint64_t)(dev & 0x1f) << 15 | (uint64_t)(fn & 7) << 12 | (reg & 0xfff);
}

uint32_t pci_read32_cf8(unsigned dev, unsigned fn, unsigned reg);

/* Serial output: bytes go straight to THR, which godwit copies to its stdout. */
void uart_putc(char c);
void uart_puts(const char *s);
void uart_puthex(uint64_t v, unsigned digits); /* lowercase, exactly `digits` digits */
void uart_putdec(uint64_t v);

/* Ends the VM: ACPI S5 (godwit exits 0) or pvpanic (godwit exits 5). Neither returns. */
__attribute__((noreturn)) void poweroff(void);
__attribute__((noreturn)) void panic_exit(void);
/* Prints "tiny: FAIL: msg" and signals pvpanic: how a guest reports a failed check. */
__attribute__((noreturn)) void fail(const char *msg);
/* fail() with a value: "tiny: FAIL: msg 0x<value>". */
__attribute__((noreturn)) void fail_hex(const char *msg, uint64_t value);
/* Stops this CPU for good: interrupts off, halt. */
__attribute__((noreturn)) void halt_forever(void);

/*
 * A deadline measured with PIT channel 2 (one-shot, about 55 ms per round), so that a wait
 * is bounded in time rather than in instructions, whose cost varies by a factor of 1000
 * between hosts. Also capped in polls, should the PIT not count at all.
 */
struct pit_deadline {
    unsigned rounds_left;
    unsigned long polls_left;
};
void pit_deadline_start(struct pit_deadline *d, unsigned ms);
int pit_deadline_expired(struct pit_deadline *d); /* 1 once the time (or the poll cap) is up */

/* The freestanding compiler may still emit calls to these. */
void *memcpy(void *dst, const void *src, size_t n);
void *memset(void *dst, int c, size_t n);
int memcmp(const void *a, const void *b, size_t n);

/* Every guest defines this; returning from it powers the VM off. */
void guest_main(void);

#endif
