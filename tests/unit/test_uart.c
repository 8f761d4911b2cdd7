/* test_uart.c: the 16550A as Linux's 8250 driver probes and drives it. */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "mmio/uart.h"
#include "state_helpers.h"

enum { RBR = 0, IER = 1, IIR = 2, FCR = 2, LCR = 3, MCR = 4, LSR = 5, MSR = 6, SCR = 7 };

struct fake_irq {
    int level;
    unsigned changes;
};

static void fake_set_level(void *ctx, uint32_t gsi, int level)
{
    struct fake_irq *f = ctx;
    assert_int_equal(gsi, 4);
    assert_int_not_equal(level, f->level); /* the UART only reports changes */
    f->level = level;
    f->changes++;
}

struct fake_host {
    uint8_t out[256];
    size_t out_len;
    unsigned rx_ready_calls;
};

static void fake_out(void *ctx, const uint8_t *buf, size_t len)
{
    struct fake_host *h = ctx;
    for (size_t i = 0; i < len && h->out_len < sizeof(h->out); i++)
        h->out[h->out_len++] = buf[i];
}

static void fake_rx_ready(void *ctx)
{
    struct fake_host *h = ctx;
    h->rx_ready_calls++;
}

struct fixture {
    struct uart uart;
    struct fake_irq irq;
    struct fake_host host;
};

static struct fixture *fixture_new(void)
{
    struct fixture *f = calloc(1, sizeof(*f));
    struct irq_line line = { .set_level = fake_set_level, .ctx = &f->irq, .gsi = 4 };
    struct uart_host_ops host = { .out = fake_out, .rx_ready = fake_rx_ready, .ctx = &f->host };
    assert_int_equal(uart_init(&f->uart, &line, &host), 0);
    return f;
}

static void fixture_free(struct fixture *f)
{
    uart_destroy(&f->uart);
    free(f);
}

static int setup(void **state)
{
    *state = fixture_new();
    return 0;
}

static int teardown(void **state)
{
    fixture_free(*state);
    return 0;
}

static uint8_t inb(struct uart *u, unsigned reg)
{
    uint8_t v = 0;
    uart_ops.read(u, reg, &v, 1);
    return v;
}

static void outb(struct uart *u, unsigned reg, uint8_t v)
{
    uart_ops.write(u, reg, &v, 1);
}

/* serial8250 autoconfig() and autoconfig_16550a(), in the order Linux runs them. */
static void test_linux_probe_identifies_16550a(void **state)
{
    struct fixture *f = *state;
    struct uart *u = &f->uart;

    /* Existence test: IER low nibble writable, reads back. */
    uint8_t saved_ier = inb(u, IER);
    outb(u, IER, 0);
    assert_int_equal(inb(u, IER) & 0x0f, 0);
    outb(u, IER, 0x0f);
    assert_int_equal(inb(u, IER) & 0x0f, 0x0f);
    outb(u, IER, saved_ier);

    /* Loopback test: RTS|OUT2 must show as CTS|DCD. */
    uint8_t save_mcr = inb(u, MCR), save_lcr = inb(u, LCR);
    outb(u, MCR, 0x10 | 0x0a);
    assert_int_equal(inb(u, MSR) & 0xf0, 0x90);
    outb(u, MCR, save_mcr);

    /* EFR clear (FCR write under LCR 0xbf), then the FIFO test through IIR bits 6-7. */
    outb(u, LCR, 0xbf);
    outb(u, FCR, 0);
    outb(u, LCR, 0);
    outb(u, FCR, 0x01);
    assert_int_equal(inb(u, IIR) >> 6, 3);

    /* 16550A variants: no EFR under DLAB or 0xbf, so IIR there must not read 0. */
    outb(u, LCR, 0x80);
    assert_int_not_equal(inb(u, IIR), 0);
    outb(u, LCR, 0xbf);
    assert_int_not_equal(inb(u, IIR), 0);
    /* Not a National SuperIO: "EXCR1" (IIR under LCR 0xe0) does not follow MCR loop. */
    outb(u, LCR, 0);
    uint8_t status1 = inb(u, MCR);
    outb(u, LCR, 0xe0);
    uint8_t status2 = inb(u, IIR);
    assert_int_equal((status1 ^ status2) & 0x10, 0);
    outb(u, LCR, 0);
    outb(u, MCR, status1 ^ 0x10);
    outb(u, LCR, 0xe0);
    status2 = inb(u, IIR);
    outb(u, LCR, 0);
    outb(u, MCR, status1);
    assert_int_equal((status1 ^ status2) & 0x10, 0);
    /* Not a TI16750: no 64-byte FIFO bit (IIR bit 5), with or without DLAB. */
    outb(u, FCR, 0x21);
    status1 = inb(u, IIR) >> 5;
    outb(u, FCR, 0x01);
    outb(u, LCR, 0x80);
    outb(u, FCR, 0x21);
    status2 = inb(u, IIR) >> 5;
    outb(u, FCR, 0x01);
    outb(u, LCR, 0);
    assert_false(status1 == 6 && status2 == 7);
    assert_int_equal(status1 & 1, 0);
    /* Not an XScale: IER bit 6 (UUE) does not stick. */
    outb(u, IER, 0x40);
    assert_int_equal(inb(u, IER) & 0x40, 0);
    outb(u, IER, 0);

    /* Scratch register (the 8250/16450 test). */
    outb(u, SCR, 0xa5);
    assert_int_equal(inb(u, SCR), 0xa5);
    outb(u, SCR, 0x5a);
    assert_int_equal(inb(u, SCR), 0x5a);

    /* Reset as autoconfig leaves it, then serial8250_do_startup's THRE re-assert test. */
    outb(u, LCR, save_lcr);
    outb(u, FCR, 0x07);
    outb(u, FCR, 0);
    inb(u, RBR);
    assert_int_not_equal(inb(u, LSR), 0xff);
    outb(u, IER, 0x02);
    uint8_t iir1 = inb(u, IIR);
    outb(u, IER, 0);
    outb(u, IER, 0x02);
    uint8_t iir = inb(u, IIR);
    outb(u, IER, 0);
    assert_int_equal(iir1 & 0x01, 0); /* interrupt pending */
    assert_int_equal(iir & 0x01, 0);  /* and again: no UART_BUG_THRE */
    /* The TXEN test: THRE interrupt seen right after enabling it. */
    outb(u, IER, 0x02);
    assert_true(inb(u, LSR) & 0x40);
    assert_int_equal(inb(u, IIR) & 0x0f, 0x02);
    outb(u, IER, 0);
    assert_int_equal(f->host.out_len, 0);
}

static void test_tx_reaches_output(void **state)
{
    struct fixture *f = *state;
    const char *msg = "hello\r\n";

    for (const char *p = msg; *p; p++) {
        assert_true(inb(&f->uart, LSR) & 0x20);
        outb(&f->uart, RBR, (uint8_t)*p);
    }
    assert_int_equal(f->host.out_len, strlen(msg));
    assert_memory_equal(f->host.out, msg, strlen(msg));
    assert_int_equal(inb(&f->uart, LSR) & 0x60, 0x60);
}

static void test_rx_readable_and_raises_irq(void **state)
{
    struct fixture *f = *state;
    struct uart *u = &f->uart;

    outb(u, MCR, 0x0b); /* DTR RTS OUT2, as Linux sets them */
    outb(u, IER, 0x01);
    assert_int_equal(f->irq.level, 0);
    assert_int_equal(inb(u, IIR), 0x01);
    assert_int_equal(uart_receive(u, (const uint8_t *)"a", 1), 1);
    assert_int_equal(f->irq.level, 1);
    assert_int_equal(inb(u, LSR) & 0x01, 0x01);
    assert_int_equal(inb(u, IIR), 0x04);
    assert_int_equal(inb(u, RBR), 'a');
    assert_int_equal(f->irq.level, 0);
    assert_int_equal(inb(u, LSR) & 0x01, 0);
    assert_int_equal(inb(u, IIR), 0x01);
}

static void test_out2_gates_irq(void **state)
{
    struct fixture *f = *state;
    struct uart *u = &f->uart;

    outb(u, IER, 0x01);
    uart_receive(u, (const uint8_t *)"z", 1);
    assert_int_equal(inb(u, IIR), 0x04); /* pending inside the chip... */
    assert_int_equal(f->irq.level, 0);   /* ...but OUT2 is off */
    outb(u, MCR, 0x08);
    assert_int_equal(f->irq.level, 1);
    outb(u, MCR, 0x00);
    assert_int_equal(f->irq.level, 0);
}

static void test_fifo_full_accepts_partially_and_overruns(void **state)
{
    struct fixture *f = *state;
    struct uart *u = &f->uart;
    uint8_t buf[20];

    for (unsigned i = 0; i < sizeof(buf); i++)
        buf[i] = (uint8_t)('A' + i);
    /* FIFO off: a single holding register. */
    assert_int_equal(uart_rx_space(u), 1);
    assert_int_equal(uart_receive(u, buf, 2), 1);
    assert_int_equal(inb(u, LSR) & 0x03, 0x03); /* DR and OE */
    assert_int_equal(inb(u, LSR) & 0x03, 0x01); /* OE cleared by the read */
    assert_int_equal(f->host.rx_ready_calls, 0);
    assert_int_equal(inb(u, RBR), 'A');
    assert_int_equal(f->host.rx_ready_calls, 1);

    f->host.rx_ready_calls = 0;
    outb(u, FCR, 0x01);
    assert_int_equal(uart_rx_space(u), 16);
    assert_int_equal(uart_receive(u, buf, sizeof(buf)), 16);
    assert_int_equal(uart_rx_space(u), 0);
    assert_int_equal(inb(u, LSR) & 0x02, 0x02);
    assert_int_equal(f->host.rx_ready_calls, 0);
    for (unsigned i = 0; i < 16; i++) {
        assert_int_equal(inb(u, RBR), buf[i]);
        /* Only the first read after the FIFO was full tells the host there is room. */
        assert_int_equal(f->host.rx_ready_calls, 1);
    }
    assert_int_equal(uart_rx_space(u), 16);
    assert_int_equal(inb(u, LSR) & 0x03, 0);
    assert_int_equal(uart_receive(u, buf, 0), 0);
    assert_int_equal(inb(u, LSR) & 0x02, 0);
}

static void test_fifo_trigger_level_and_timeout(void **state)
{
    struct fixture *f = *state;
    struct uart *u = &f->uart;
    uint8_t buf[8] = { 0 };

    outb(u, MCR, 0x08);
    outb(u, IER, 0x01);
    outb(u, FCR, 0x81); /* trigger at 8 bytes */
    uart_receive(u, buf, 3);
    assert_int_equal(inb(u, IIR), 0xcc); /* below the trigger: timeout indication */
    assert_int_equal(f->irq.level, 1);
    uart_receive(u, buf, 5);
    assert_int_equal(inb(u, IIR), 0xc4);
    outb(u, FCR, 0x83); /* clear RX */
    assert_int_equal(inb(u, LSR) & 0x01, 0);
    assert_int_equal(inb(u, IIR), 0xc1);
    assert_int_equal(f->irq.level, 0);
    /* FCR bits without bit 0 do nothing but turn the FIFO off (which empties it). */
    uart_receive(u, buf, 4);
    outb(u, FCR, 0xc2);
    assert_int_equal(inb(u, IIR), 0x01);
    assert_int_equal(uart_rx_space(u), 1);
}

static void test_iir_priority_order(void **state)
{
    struct fixture *f = *state;
    struct uart *u = &f->uart;
    uint8_t buf[17] = { 0 };

    outb(u, FCR, 0x01);
    outb(u, MCR, 0x08);
    outb(u, IER, 0x0f);
    outb(u, MCR, 0x10); /* into loopback: every modem input drops */
    outb(u, MCR, 0x08); /* and back */
    uart_receive(u, buf, sizeof(buf)); /* data and an overrun */
    assert_int_equal(inb(u, IIR) & 0x0f, 0x06); /* line status first */
    inb(u, LSR);
    assert_int_equal(inb(u, IIR) & 0x0f, 0x04); /* then received data */
    for (unsigned i = 0; i < 16; i++)
        inb(u, RBR);
    assert_int_equal(inb(u, IIR) & 0x0f, 0x02); /* then THRE, which this read acknowledges */
    assert_int_equal(inb(u, IIR) & 0x0f, 0x00); /* then modem status */
    assert_int_equal(f->irq.level, 1);
    assert_int_equal(inb(u, MSR) & 0x0f, 0x0b); /* DCTS DDSR DDCD */
    assert_int_equal(inb(u, IIR) & 0x0f, 0x01);
    assert_int_equal(f->irq.level, 0);
}

static void test_thre_interrupt(void **state)
{
    struct fixture *f = *state;
    struct uart *u = &f->uart;

    outb(u, MCR, 0x0b);
    outb(u, IER, 0x02);
    assert_int_equal(f->irq.level, 1);
    assert_int_equal(inb(u, IIR), 0x02);
    assert_int_equal(f->irq.level, 0); /* acknowledged by the IIR read */
    assert_int_equal(inb(u, IIR), 0x01);
    outb(u, RBR, 'x'); /* THR empties again at once */
    assert_int_equal(f->irq.level, 1);
    outb(u, RBR, 'y');
    assert_int_equal(f->irq.level, 1);
    outb(u, IER, 0x00); /* what Linux does when the tx buffer runs dry */
    assert_int_equal(f->irq.level, 0);
    outb(u, IER, 0x00);
    assert_int_equal(f->irq.level, 0);
    outb(u, IER, 0x02);
    assert_int_equal(f->irq.level, 1);
    /* Rewriting IER with ETBEI still set does not re-raise an acknowledged THRE. */
    inb(u, IIR);
    outb(u, IER, 0x03);
    assert_int_equal(f->irq.level, 0);
    /* A pending THRE is not acknowledged by an IIR read that reports something else. */
    outb(u, RBR, 'z');
    uart_receive(u, (const uint8_t *)"r", 1);
    assert_int_equal(inb(u, IIR), 0x04);
    inb(u, RBR);
    assert_int_equal(inb(u, IIR), 0x02);
    assert_int_equal(inb(u, IIR), 0x01);
    assert_memory_equal(f->host.out, "xyz", 3);
}

static void test_dlab_maps_divisor_latch(void **state)
{
    struct fixture *f = *state;
    struct uart *u = &f->uart;

    outb(u, IER, 0x05);
    outb(u, LCR, 0x83);
    outb(u, RBR, 0x01);
    outb(u, IER, 0x00);
    assert_int_equal(inb(u, RBR), 0x01);
    assert_int_equal(inb(u, IER), 0x00);
    assert_int_equal(inb(u, LCR), 0x83);
    outb(u, LCR, 0x03);
    assert_int_equal(inb(u, IER), 0x05); /* untouched by the divisor writes */
    assert_int_equal(f->host.out_len, 0); /* the DLL write was not a THR write */
    outb(u, LCR, 0x80);
    assert_int_equal(inb(u, RBR), 0x01);
    assert_int_equal(inb(u, IER), 0x00);
    assert_int_equal(inb(u, IIR), 0x01); /* IIR is not behind DLAB */
}

static void test_loopback_routes_tx_to_rx(void **state)
{
    struct fixture *f = *state;
    struct uart *u = &f->uart;

    outb(u, IER, 0x01);
    outb(u, MCR, 0x10 | 0x08 | 0x01); /* loop, OUT2, DTR */
    assert_int_equal(inb(u, MSR) & 0xf0, 0xa0); /* DCD (OUT2) and DSR (DTR) */
    outb(u, RBR, 'q');
    assert_int_equal(f->host.out_len, 0);
    assert_int_equal(inb(u, IIR), 0x04);
    assert_int_equal(f->irq.level, 0); /* loopback cuts the PC's IRQ gate */
    assert_int_equal(inb(u, RBR), 'q');
    /* Without FIFO, a second byte before reading is an overrun. */
    outb(u, RBR, '1');
    outb(u, RBR, '2');
    assert_int_equal(inb(u, LSR) & 0x03, 0x03);
    assert_int_equal(inb(u, RBR), '1');
    outb(u, MCR, 0x08);
    assert_int_equal(inb(u, MSR) & 0xf0, 0xb0);
    outb(u, RBR, 'o');
    assert_int_equal(f->host.out_len, 1);
    assert_int_equal(f->host.out[0], 'o');
}

static void test_hostile_values_and_widths(void **state)
{
    struct fixture *f = *state;
    struct uart *u = &f->uart;
    uint8_t data[8];

    /* A word read at offset 0 reads RBR then IER, like two byte reads on an ISA bus. */
    outb(u, IER, 0x03);
    uart_receive(u, (const uint8_t *)"w", 1);
    memset(data, 0, sizeof(data));
    uart_ops.read(u, 0, data, 2);
    assert_int_equal(data[0], 'w');
    assert_int_equal(data[1], 0x03);
    /* Bytes past the eight registers read as ones and are not written. */
    uart_ops.read(u, 6, data, 4);
    assert_int_equal(data[2], 0xff);
    assert_int_equal(data[3], 0xff);
    uart_ops.read(u, UINT64_MAX, data, 8);
    for (unsigned i = 0; i < 8; i++)
        assert_int_equal(data[i], 0xff);
    memset(data, 0xff, sizeof(data));
    uart_ops.write(u, UINT64_MAX - 1, data, 8);
    uart_ops.write(u, 8, data, 8);
    /* Every value into every register at every width. */
    srand(1);
    for (unsigned n = 0; n < 200000; n++) {
        uint32_t len = 1u << (rand() % 4);
        uint64_t off = (uint64_t)(rand() % 9);
        for (unsigned i = 0; i < len; i++)
            data[i] = (uint8_t)rand();
        if (rand() % 2)
            uart_ops.write(u, off, data, len);
        else
            uart_ops.read(u, off, data, len);
        if (n % 64 == 0)
            uart_receive(u, data, rand() % 8);
        assert_true(u->st.rx_count <= UART_FIFO_SIZE);
        assert_true(u->st.rx_head < UART_FIFO_SIZE);
        assert_true(f->irq.level == 0 || f->irq.level == 1);
    }
}

struct pump {
    struct uart *uart;
    unsigned total;
};

static void *feeder(void *arg)
{
    struct pump *p = arg;
    unsigned sent = 0;
    while (sent < p->total) {
        uint8_t b[4];
        unsigned n = p->total - sent < 4 ? p->total - sent : 4;
        for (unsigned i = 0; i < n; i++)
            b[i] = (uint8_t)(sent + i);
        if (uart_rx_space(p->uart) == 0) {
            sched_yield();
            continue;
        }
        sent += (unsigned)uart_receive(p->uart, b, n);
    }
    return NULL;
}

/* Input from the main thread while a vCPU thread drains RBR: nothing lost or reordered. */
static void test_concurrent_input_and_reads(void **state)
{
    struct fixture *f = *state;
    struct uart *u = &f->uart;
    struct pump p = { u, 20000 };
    pthread_t t;
    unsigned got = 0;

    outb(u, FCR, 0x01);
    assert_int_equal(pthread_create(&t, NULL, feeder, &p), 0);
    while (got < p.total) {
        uint8_t lsr = inb(u, LSR);
        if (!(lsr & 0x01)) {
            sched_yield();
            continue;
        }
        assert_int_equal(inb(u, RBR), (uint8_t)got);
        got++;
    }
    pthread_join(t, NULL);
}

/* Offsets in the payload, in the order uart_save() writes the fields. */
enum { AT_IER = 0, AT_MCR = 2, AT_LSR_ERRORS = 3, AT_MSR_DELTA = 4, AT_FIFO_ENABLED = 8,
       AT_RX_TRIGGER = 9, AT_THRE_PENDING = 10, AT_RX_HEAD = 27, AT_RX_COUNT = 28,
       PAYLOAD_LEN = 29 };

/* Divisor, line settings, FIFO at trigger 8 holding "abc" from index 2, a modem delta. */
static void drive_to_busy_state(struct uart *u)
{
    outb(u, LCR, 0x83);
    outb(u, RBR, 0x01); /* DLL */
    outb(u, IER, 0x02); /* DLM */
    outb(u, LCR, 0x1b);
    outb(u, FCR, 0x81);
    outb(u, MCR, 0x10); /* loopback and back: every modem input changed */
    outb(u, MCR, 0x0b);
    outb(u, IER, 0x05);
    outb(u, SCR, 0xa5);
    assert_int_equal(uart_receive(u, (const uint8_t *)"xyabc", 5), 5);
    assert_int_equal(inb(u, RBR), 'x');
    assert_int_equal(inb(u, RBR), 'y');
}

static void test_save_load_round_trip(void **state)
{
    struct fixture *f = *state, *g = fixture_new();
    struct uart *u = &g->uart;

    drive_to_busy_state(&f->uart);
    struct test_payload p = test_save(uart_save, &f->uart, UART_STATE_VERSION);
    assert_int_equal(p.len, PAYLOAD_LEN);
    assert_int_equal(p.data[AT_RX_HEAD], 2);
    assert_int_equal(p.data[AT_RX_COUNT], 3);

    assert_int_equal(test_load(uart_load, u, p.data, p.len, UART_STATE_VERSION), 0);
    test_assert_saves(uart_save, u, UART_STATE_VERSION, &p);
    /* The line was raised on load: RX timeout pending, enabled, OUT2 on. */
    assert_int_equal(g->irq.level, 1);
    assert_int_equal(inb(u, LCR), 0x1b);
    assert_int_equal(inb(u, SCR), 0xa5);
    assert_int_equal(inb(u, IER), 0x05);
    assert_int_equal(inb(u, MCR), 0x0b);
    assert_int_equal(inb(u, MSR), 0xbb); /* DCD DSR CTS, and their deltas */
    assert_int_equal(inb(u, IIR), 0xcc);
    assert_int_equal(uart_rx_space(u), 13);
    assert_int_equal(inb(u, RBR), 'a');
    assert_int_equal(inb(u, RBR), 'b');
    assert_int_equal(inb(u, RBR), 'c');
    assert_int_equal(g->irq.level, 0);
    assert_int_equal(inb(u, LSR), 0x60);
    outb(u, LCR, 0x9b);
    assert_int_equal(inb(u, RBR), 0x01);
    assert_int_equal(inb(u, IER), 0x02);
    assert_int_equal(g->host.out_len, 0);
    test_payload_free(&p);
    fixture_free(g);
}

/* A fresh device's own save loads back into a busy one and lowers its line. */
static void test_load_lowers_the_line(void **state)
{
    struct fixture *f = *state, *g = fixture_new();

    drive_to_busy_state(&f->uart);
    assert_int_equal(f->irq.level, 1);
    struct test_payload p = test_save(uart_save, &g->uart, UART_STATE_VERSION);
    assert_int_equal(test_load(uart_load, &f->uart, p.data, p.len, UART_STATE_VERSION), 0);
    assert_int_equal(f->irq.level, 0);
    test_assert_saves(uart_save, &f->uart, UART_STATE_VERSION, &p);
    test_payload_free(&p);
    fixture_free(g);
}

static void test_load_refuses_bad_payloads(void **state)
{
    struct fixture *f = *state, *g = fixture_new();
    static const struct { size_t at; uint8_t value; } hostile[] = {
        { AT_IER, 0x10 },          { AT_MCR, 0x20 },          { AT_LSR_ERRORS, 0x01 },
        { AT_MSR_DELTA, 0x10 },    { AT_FIFO_ENABLED, 2 },    { AT_RX_TRIGGER, 2 },
        { AT_THRE_PENDING, 0xff }, { AT_RX_HEAD, 16 },        { AT_RX_COUNT, 17 },
        { AT_FIFO_ENABLED, 0 }, /* three bytes in the one-byte holding register */
    };

    drive_to_busy_state(&f->uart);
    struct test_payload p = test_save(uart_save, &f->uart, UART_STATE_VERSION);
    test_assert_refuses_framing(uart_save, uart_load, &g->uart, &p, UART_STATE_VERSION);
    for (unsigned i = 0; i < sizeof(hostile) / sizeof(hostile[0]); i++)
        test_assert_refuses_byte(uart_save, uart_load, &g->uart, &p, hostile[i].at,
                                 hostile[i].value, UART_STATE_VERSION);
    assert_int_equal(g->irq.changes, 0);
    /* A full FIFO is fine: 16 bytes from the last slot on wrap around. */
    p.data[AT_RX_HEAD] = 15;
    p.data[AT_RX_COUNT] = 16;
    assert_int_equal(test_load(uart_load, &g->uart, p.data, p.len, UART_STATE_VERSION), 0);
    assert_int_equal(uart_rx_space(&g->uart), 0);
    test_payload_free(&p);
    fixture_free(g);
}

/* ---- the transmit buffer ---- */

static bool stop_loop(struct event_loop *loop, void *opaque, int res)
{
    (void)opaque, (void)res;
    loop->stop = true;
    return false;
}

/* Runs the loop for `ms`: it must come back, whatever the console fd does. */
static void run_for(struct event_loop *loop, unsigned ms)
{
    struct loop_watch timer;
    loop->stop = false;
    assert_int_equal(loop_after(loop, &timer, ms, stop_loop, NULL), 0);
    assert_int_equal(loop_run(loop), 0);
}

static double seconds_since(const struct timespec *t0)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)(t.tv_sec - t0->tv_sec) + (double)(t.tv_nsec - t0->tv_nsec) / 1e9;
}

/* Reads what the pipe holds (non-blocking) into buf; returns how many bytes. */
static size_t read_pipe(int fd, uint8_t *buf, size_t len)
{
    size_t got = 0;
    ssize_t n;
    while (got < len && (n = read(fd, buf + got, len - got)) > 0)
        got += (size_t)n;
    return got;
}

/* A console nobody reads (a full pipe, blocking as stdout is): 1 MiB through THR comes back at
 * once, the buffer keeps what fits and counts the rest dropped, and the main loop writes only
 * what the pipe has room for, never waiting for it. */
static void test_tx_buffer_stalled_reader(void **state)
{
    struct fixture *f = *state;
    const size_t total = 1u << 20;
    int p[2];
    struct event_loop loop;
    struct uart_tx_buffer tx;
    assert_int_equal(pipe2(p, O_CLOEXEC), 0);
    assert_true(fcntl(p[0], F_SETFL, O_NONBLOCK) == 0);
    assert_true(fcntl(p[1], F_SETPIPE_SZ, 4096) >= 4096);
    assert_int_equal(loop_init(&loop, 16), 0);
    assert_int_equal(uart_tx_buffer_init(&tx, 0, &loop, p[1], NULL, NULL), 0);
    f->uart.host = (struct uart_host_ops){ .out = uart_tx_buffer_out, .ctx = &tx };

    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (size_t i = 0; i < total; i++)
        outb(&f->uart, RBR, (uint8_t)(i * 7 + i / 4096));
    assert_true(seconds_since(&t0) < 5.0); /* milliseconds, unless the vCPU waited */
    assert_int_equal(uart_tx_buffer_dropped(&tx), total - UART_TX_BUFFER_SIZE);

    /* The pipe takes a page at a time; the rest waits in the buffer, in order. */
    static uint8_t got[UART_TX_BUFFER_SIZE];
    size_t have = 0;
    for (unsigned turns = 0; have < sizeof(got) && turns < 1000; turns++) {
        run_for(&loop, 2);
        have += read_pipe(p[0], got + have, sizeof(got) - have);
    }
    assert_int_equal(have, sizeof(got));
    for (size_t i = 0; i < have; i++)
        assert_int_equal(got[i], (uint8_t)(i * 7 + i / 4096));

    /* Output left when the VM ends: what the pipe takes, the rest dropped and counted. */
    for (size_t i = 0; i < 3 * 4096; i++)
        outb(&f->uart, RBR, 'z');
    uart_tx_buffer_destroy(&tx, 50);
    assert_int_equal(read_pipe(p[0], got, sizeof(got)), 4096);
    loop_destroy(&loop);
    close(p[0]);
    close(p[1]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_linux_probe_identifies_16550a, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tx_reaches_output, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rx_readable_and_raises_irq, setup, teardown),
        cmocka_unit_test_setup_teardown(test_out2_gates_irq, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fifo_full_accepts_partially_and_overruns, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fifo_trigger_level_and_timeout, setup, teardown),
        cmocka_unit_test_setup_teardown(test_iir_priority_order, setup, teardown),
        cmocka_unit_test_setup_teardown(test_thre_interrupt, setup, teardown),
        cmocka_unit_test_setup_teardown(test_dlab_maps_divisor_latch, setup, teardown),
        cmocka_unit_test_setup_teardown(test_loopback_routes_tx_to_rx, setup, teardown),
        cmocka_unit_test_setup_teardown(test_hostile_values_and_widths, setup, teardown),
        cmocka_unit_test_setup_teardown(test_concurrent_input_and_reads, setup, teardown),
        cmocka_unit_test_setup_teardown(test_save_load_round_trip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_load_lowers_the_line, setup, teardown),
        cmocka_unit_test_setup_teardown(test_load_refuses_bad_payloads, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tx_buffer_stalled_reader, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
