/*
 * fuzz_state.c: the VM state loader: a whole stream as a snapshot file or a migration brings
 * it (header, sections, checksums), and each device's section payload handed to its load().
 */
#include "fuzz_regs.h"
#include "mmio/acpi_pm.h"
#include "mmio/i8042.h"
#include "mmio/pci_host.h"
#include "mmio/rtc.h"
#include "mmio/uart.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fuzz_quiet();
    return 0;
}

/* A stream the reader takes: every section lies inside it and reads to its end. */
static void fuzz_stream(const uint8_t *data, size_t size)
{
    struct state_reader r;
    const struct state_section *s;
    struct state_cursor c;
    uint8_t sink[64];

    if (state_reader_open(&r, data, size) != 0)
        return;
    for (uint32_t i = 0; i < r.nr_sections; i++) {
        s = &r.sections[i];
        FUZZ_CHECK(s->data >= data && s->len <= size && s->data + s->len <= data + size);
        FUZZ_CHECK(memchr(s->id, 0, sizeof(s->id)) != NULL);
        FUZZ_CHECK(state_reader_find(&r, s->id) == s);
        sc_init(&c, s);
        while (sc_left(&c) > 0)
            sc_bytes(&c, sink, sc_left(&c) < sizeof(sink) ? sc_left(&c) : sizeof(sink));
        FUZZ_CHECK(sc_finish(&c) == 0);
        sc_u64(&c);
        FUZZ_CHECK(sc_finish(&c) != 0);
    }
    FUZZ_CHECK(state_reader_unused(&r) == NULL);
    state_reader_close(&r);
}

static void ignore_level(void *ctx, uint32_t gsi, int level)
{
    (void)ctx;
    (void)gsi;
    (void)level;
}

static void ignore_event(void *ctx, enum platform_event e)
{
    (void)ctx;
    (void)e;
}

/*
 * A device's payload: what load() takes, it saves again and takes again the same (a state a
 * load accepted is one the device can be in).
 */
static void fuzz_device(unsigned which, uint32_t version, const uint8_t *p, size_t len)
{
    struct irq_line irq = { .set_level = ignore_level };
    struct platform_events ev = { .notify = ignore_event };
    struct uart_host_ops host = { 0 };
    union {
        struct uart uart;
        struct rtc rtc;
        struct i8042 kbc;
        struct acpi_pm pm;
        struct pci_host pci;
    } *d = calloc(1, sizeof(*d));
    fuzz_save_fn save;
    fuzz_load_fn load;

    if (!d)
        abort();
    switch (which) {
    case 0:
        FUZZ_CHECK(uart_init(&d->uart, &irq, &host) == 0);
        save = uart_save, load = uart_load;
        break;
    case 1:
        FUZZ_CHECK(rtc_init(&d->rtc, 3ull << 30, 0) == 0);
        save = rtc_save, load = rtc_load;
        break;
    case 2:
        FUZZ_CHECK(i8042_init(&d->kbc, &ev) == 0);
        save = i8042_save, load = i8042_load;
        break;
    case 3:
        FUZZ_CHECK(acpi_pm_init(&d->pm, &irq, &ev) == 0);
        save = acpi_pm_save, load = acpi_pm_load;
        break;
    default:
        FUZZ_CHECK(pci_host_init(&d->pci) == 0);
        save = pci_host_save, load = pci_host_load;
        break;
    }
    if (fuzz_load(load, d, version, p, len) == 0)
        fuzz_state_round_trip(save, load, d, version);
    switch (which) {
    case 0: uart_destroy(&d->uart); break;
    case 1: rtc_destroy(&d->rtc); break;
    case 2: i8042_destroy(&d->kbc); break;
    case 3: acpi_pm_destroy(&d->pm); break;
    default: pci_host_destroy(&d->pci); break;
    }
    free(d);
}

/*
 * The first byte: below 0x80 a whole stream follows; otherwise bits 0-2 pick a device, bit 3
 * asks for a version past the one it knows, and the rest is that device's payload.
 */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    if (data[0] < 0x80)
        fuzz_stream(data + 1, size - 1);
    else
        fuzz_device((data[0] & 7) % 5, (data[0] & 8) ? 2 : 1, data + 1, size - 1);
    return 0;
}
