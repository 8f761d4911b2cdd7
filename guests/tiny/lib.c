/* lib.c: the tiny guests' support code: serial output, PCI config reads, PIT deadlines, exits. */
#include "lib.h"

void uart_putc(char c)
{
    outb(TINY_COM1 + TINY_UART_THR, (uint8_t)c);
}

void uart_puts(const char *s)
{
    while (*s)
        uart_putc(*s++);
}

void uart_puthex(uint64_t v, unsigned digits)
{
    static const char hex[] = "0123456789abcdef";
    while (digits-- > 0)
        uart_putc(hex[(v >> (4 * digits)) & 0xf]);
}

void uart_putdec(uint64_t v)
{
    char buf[21];
    unsigned n = 0;
    do {
        buf[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    while (n > 0)
        uart_putc(buf[--n]);
}

uint32_t pci_read32_cf8(unsigned dev, unsigned fn, unsigned reg)
{
    outl(TINY_PCI_ADDR, pci_cf8(dev, fn, reg));
    return inl(TINY_PCI_DATA);
}

void halt_forever(void)
{
    /* IF is clear and nothing sends NMIs, so hlt never returns; the loop is for certainty. */
    for (;;)
        __asm__ volatile("cli; hlt" ::: "memory");
}

void poweroff(void)
{
    outw(TINY_ACPI_PM1_CNT, (uint16_t)(TINY_SLP_TYP_S5 << TINY_PM1_SLP_TYP_SHIFT | TINY_PM1_SLP_EN));
    /* The vCPU may run on a little until the VMM stops it: wait halted. */
    halt_forever();
}

void panic_exit(void)
{
    outb(TINY_PVPANIC, 1);
    halt_forever();
}

void fail(const char *msg)
{
    uart_puts("tiny: FAIL: ");
    uart_puts(msg);
    uart_putc('\n');
    panic_exit();
}

void fail_hex(const char *msg, uint64_t value)
{
    uart_puts("tiny: FAIL: ");
    uart_puts(msg);
    uart_puts(" 0x");
    uart_puthex(value, 16);
    uart_putc('\n');
    panic_exit();
}

/* PIT channel 2 in mode 0: OUT2 (port 0x61 bit 5) rises when the count runs out. */
#define PIT_HZ 1193182u
#define PIT_ROUND_MS 50u
#define PIT_CH2 0x42
#define PIT_CMD 0x43
#define PIT_PORT_B 0x61
#define PORT_B_GATE2 0x01
#define PORT_B_SPEAKER 0x02
#define PORT_B_OUT2 0x20
#define PIT_POLLS_PER_ROUND 1000000ul

static void pit_round_start(void)
{
    const uint16_t count = (uint16_t)(PIT_HZ / 1000u * PIT_ROUND_MS);
    /* Gate on, speaker off; then channel 2, lobyte/hibyte, mode 0, binary. */
    outb(PIT_PORT_B, (uint8_t)((inb(PIT_PORT_B) & ~PORT_B_SPEAKER) | PORT_B_GATE2));
    outb(PIT_CMD, 0xb0);
    outb(PIT_CH2, (uint8_t)count);
    outb(PIT_CH2, (uint8_t)(count >> 8));
}

void pit_deadline_start(struct pit_deadline *d, unsigned ms)
{
    d->rounds_left = (ms + PIT_ROUND_MS - 1) / PIT_ROUND_MS;
    d->polls_left = (unsigned long)d->rounds_left * PIT_POLLS_PER_ROUND;
    pit_round_start();
}

int pit_deadline_expired(struct pit_deadline *d)
{
    if (d->polls_left == 0)
        return 1;
    d->polls_left--;
    if (!(inb(PIT_PORT_B) & PORT_B_OUT2))
        return 0;
    if (d->rounds_left <= 1) {
        d->rounds_left = 0;
        return 1;
    }
    d->rounds_left--;
    pit_round_start();
    return 0;
}

/* Byte loops on purpose: no SSE here, and -fno-tree-loop-distribute-patterns keeps the
 * compiler from turning them back into calls to themselves. */
void *memcpy(void *dst, const void *src, size_t n)
{
    uint8_t *d = dst;
    const uint8_t *s = src;
    while (n--)
        *d++ = *s++;
    return dst;
}

void *memset(void *dst, int c, size_t n)
{
    uint8_t *d = dst;
    while (n--)
        *d++ = (uint8_t)c;
    return dst;
}

int memcmp(const void *a, const void *b, size_t n)
{
    const uint8_t *x = a, *y = b;
    for (; n; n--, x++, y++) {
        if (*x != *y)
            return *x < *y ? -1 : 1;
    }
    return 0;
}
