/* test_acpi_pm.c: PM1 registers (S5, SCI, W1C), the reset register and pvpanic. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "boot/layout.h"
#include "mmio/acpi_pm.h"
#include "mmio/pvpanic.h"
#include "mmio/reset.h"
#include "state_helpers.h"

struct fixture {
    struct acpi_pm pm;
    int sci_level;
    unsigned sci_changes;
    unsigned events[3];
};

static void record_event(void *ctx, enum platform_event e)
{
    struct fixture *f = ctx;
    assert_true((unsigned)e < 3);
    f->events[e]++;
}

static void record_sci(void *ctx, uint32_t gsi, int level)
{
    struct fixture *f = ctx;
    assert_int_equal(gsi, IRQ_ACPI_SCI);
    f->sci_level = level;
    f->sci_changes++;
}

static struct fixture *fixture_new(void)
{
    struct fixture *f = calloc(1, sizeof(*f));
    struct irq_line sci = { .set_level = record_sci, .ctx = f, .gsi = IRQ_ACPI_SCI };
    struct platform_events ev = { .notify = record_event, .ctx = f };
    assert_int_equal(acpi_pm_init(&f->pm, &sci, &ev), 0);
    return f;
}

static void fixture_free(struct fixture *f)
{
    acpi_pm_destroy(&f->pm);
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

/* Accesses by absolute port, as ACPICA makes them. */
static uint32_t in(struct acpi_pm *pm, unsigned port, uint32_t len)
{
    uint8_t d[4] = { 0 };
    uint32_t v = 0;
    acpi_pm_ops.read(pm, port - PORT_ACPI_PM, d, len);
    for (unsigned i = 0; i < len; i++)
        v |= (uint32_t)d[i] << (8 * i);
    return v;
}

static void out(struct acpi_pm *pm, unsigned port, uint32_t len, uint32_t v)
{
    uint8_t d[4];
    for (unsigned i = 0; i < len; i++)
        d[i] = (uint8_t)(v >> (8 * i));
    acpi_pm_ops.write(pm, port - PORT_ACPI_PM, d, len);
}

#define STS PORT_ACPI_PM1_EVT
#define EN (PORT_ACPI_PM1_EVT + 2)
#define CNT PORT_ACPI_PM1_CNT
#define SLP_EN 0x2000

static void test_sci_en_always_set(void **state)
{
    struct fixture *f = *state;
    assert_int_equal(in(&f->pm, CNT, 2) & 1, 1);
    out(&f->pm, CNT, 2, 0);
    assert_int_equal(in(&f->pm, CNT, 2), 1);
    assert_int_equal(in(&f->pm, STS, 2), 0);
    assert_int_equal(in(&f->pm, EN, 2), 0);
}

/* acpi_hw_legacy_sleep(): SLP_TYP first, then SLP_TYP | SLP_EN. */
static void test_s5_powers_off(void **state)
{
    struct fixture *f = *state;
    uint16_t typ = ACPI_SLP_TYP_S5 << 10;

    out(&f->pm, STS, 2, 0xffff); /* clear all status, as ACPICA does first */
    out(&f->pm, CNT, 2, typ | 1);
    assert_int_equal(f->events[PLATFORM_EVENT_POWEROFF], 0);
    assert_int_equal(in(&f->pm, CNT, 2), typ | 1); /* SLP_TYP reads back */
    out(&f->pm, CNT, 2, typ | SLP_EN | 1);
    assert_int_equal(f->events[PLATFORM_EVENT_POWEROFF], 1);
    assert_int_equal(in(&f->pm, CNT, 2) & SLP_EN, 0); /* write-only */
    /* A byte write to the high half carries both SLP_TYP and SLP_EN. */
    out(&f->pm, CNT + 1, 1, (typ | SLP_EN) >> 8);
    assert_int_equal(f->events[PLATFORM_EVENT_POWEROFF], 2);
    /* So does a dword write spanning PM1_EN and PM1_CNT. */
    out(&f->pm, EN, 4, (uint32_t)(typ | SLP_EN) << 16);
    assert_int_equal(f->events[PLATFORM_EVENT_POWEROFF], 3);
    assert_int_equal(f->events[PLATFORM_EVENT_RESET] + f->events[PLATFORM_EVENT_PANIC], 0);
}

static void test_other_sleep_types_ignored(void **state)
{
    struct fixture *f = *state;

    for (unsigned typ = 0; typ < 8; typ++) {
        if (typ == ACPI_SLP_TYP_S5)
            continue;
        out(&f->pm, CNT, 2, typ << 10 | SLP_EN);
        out(&f->pm, CNT, 2, typ << 10 | SLP_EN); /* logged once only */
    }
    assert_int_equal(f->events[PLATFORM_EVENT_POWEROFF], 0);
    assert_true(f->pm.sleep_type_logged);
    /* SLP_TYP S5 without SLP_EN does nothing either. */
    out(&f->pm, CNT, 2, ACPI_SLP_TYP_S5 << 10);
    assert_int_equal(f->events[PLATFORM_EVENT_POWEROFF], 0);
}

static void test_power_button_sci_follows_sts_and_en(void **state)
{
    struct fixture *f = *state;

    acpi_pm_press_power_button(&f->pm);
    assert_int_equal(in(&f->pm, STS, 2), 0x0100);
    assert_int_equal(f->sci_level, 0); /* not enabled */
    assert_int_equal(f->sci_changes, 0);
    out(&f->pm, EN, 2, 0x0100);
    assert_int_equal(f->sci_level, 1);
    assert_int_equal(in(&f->pm, EN, 2), 0x0100);
    /* Writing 0 to a status bit does nothing; writing 1 clears it. */
    out(&f->pm, STS, 2, 0x0000);
    assert_int_equal(f->sci_level, 1);
    out(&f->pm, STS, 2, 0x8000); /* WAK_STS: not this bit */
    assert_int_equal(f->sci_level, 1);
    out(&f->pm, STS + 1, 1, 0x01);
    assert_int_equal(in(&f->pm, STS, 2), 0);
    assert_int_equal(f->sci_level, 0);
    /* Pressed while enabled: SCI at once; disabling drops it with the status kept. */
    acpi_pm_press_power_button(&f->pm);
    assert_int_equal(f->sci_level, 1);
    out(&f->pm, EN, 2, 0);
    assert_int_equal(f->sci_level, 0);
    assert_int_equal(in(&f->pm, STS, 2), 0x0100);
    /* A dword write to the event block clears status and sets enable together. */
    out(&f->pm, STS, 4, 0x01000100);
    assert_int_equal(in(&f->pm, STS, 4), 0x01000000);
    assert_int_equal(f->sci_level, 0);
    assert_int_equal(f->sci_changes, 4);
}

static void test_hostile_widths_and_values(void **state)
{
    struct fixture *f = *state;
    uint8_t d[8];

    for (unsigned off = 0; off < ACPI_PM_IO_LEN; off++) {
        for (unsigned v = 0; v < 256; v++) {
            if (off == 5 && (v & 0x20) && ((v >> 2) & 7) == ACPI_SLP_TYP_S5)
                continue;
            memset(d, (int)v, sizeof(d));
            acpi_pm_ops.write(&f->pm, off, d, 1);
            acpi_pm_ops.read(&f->pm, off, d, 1);
        }
    }
    memset(d, 0, sizeof(d));
    acpi_pm_ops.read(&f->pm, 4, d, 8);
    assert_int_equal(d[0] & 1, 1);
    for (unsigned i = 2; i < 8; i++)
        assert_int_equal(d[i], 0xff);
    acpi_pm_ops.read(&f->pm, UINT64_MAX, d, 8);
    assert_int_equal(d[0], 0xff);
    memset(d, 0, sizeof(d));
    acpi_pm_ops.write(&f->pm, UINT64_MAX - 2, d, 8);
    assert_int_equal(f->events[PLATFORM_EVENT_POWEROFF], 0);
}

static void test_reset_register(void **state)
{
    struct fixture *f = *state;
    struct platform_events ev = { .notify = record_event, .ctx = f };
    struct reset_port rp;
    uint8_t v;

    reset_port_init(&rp, &ev);
    v = ACPI_RESET_VALUE;
    reset_port_ops.write(&rp, 0, &v, 1);
    assert_int_equal(f->events[PLATFORM_EVENT_RESET], 1);
    v = 0x0e;
    reset_port_ops.write(&rp, 0, &v, 1);
    assert_int_equal(f->events[PLATFORM_EVENT_RESET], 2);
    for (unsigned x = 0; x < 256; x++) {
        v = (uint8_t)x;
        if (!(x & 0x04))
            reset_port_ops.write(&rp, 0, &v, 1);
    }
    assert_int_equal(f->events[PLATFORM_EVENT_RESET], 2);
    reset_port_ops.read(&rp, 0, &v, 1);
    assert_int_equal(f->events[PLATFORM_EVENT_POWEROFF] + f->events[PLATFORM_EVENT_PANIC], 0);
}

static void test_pvpanic(void **state)
{
    struct fixture *f = *state;
    struct platform_events ev = { .notify = record_event, .ctx = f };
    struct pvpanic pp;
    uint8_t v = 0;

    pvpanic_init(&pp, &ev);
    pvpanic_ops.read(&pp, 0, &v, 1);
    assert_int_equal(v, 0x03);
    v = 0x02; /* crash kernel loading: logged, no event */
    for (unsigned i = 0; i < 10; i++)
        pvpanic_ops.write(&pp, 0, &v, 1);
    assert_int_equal(f->events[PLATFORM_EVENT_PANIC], 0);
    v = 0x01;
    pvpanic_ops.write(&pp, 0, &v, 1);
    assert_int_equal(f->events[PLATFORM_EVENT_PANIC], 1);
    v = 0x03;
    pvpanic_ops.write(&pp, 0, &v, 1);
    assert_int_equal(f->events[PLATFORM_EVENT_PANIC], 2);
    v = 0xfc;
    pvpanic_ops.write(&pp, 0, &v, 1);
    assert_int_equal(f->events[PLATFORM_EVENT_PANIC], 2);
    assert_int_equal(f->events[PLATFORM_EVENT_POWEROFF] + f->events[PLATFORM_EVENT_RESET], 0);
}

/* Offsets in the payload, in the order acpi_pm_save() writes the fields. */
enum { AT_STS = 0, AT_EN = 2, AT_CNT = 4, PAYLOAD_LEN = 6 };

/* Power button enabled and pressed (SCI high), SLP_TYP S3 and BM_RLD written. */
static void drive_to_busy_state(struct fixture *f)
{
    out(&f->pm, EN, 2, 0x0121);
    out(&f->pm, CNT, 2, 1 << 10 | 0x0002);
    acpi_pm_press_power_button(&f->pm);
    assert_int_equal(f->sci_level, 1);
}

static void test_save_load_round_trip(void **state)
{
    struct fixture *f = *state, *g = fixture_new();

    drive_to_busy_state(f);
    struct test_payload p = test_save(acpi_pm_save, &f->pm, ACPI_PM_STATE_VERSION);
    assert_int_equal(p.len, PAYLOAD_LEN);
    assert_int_equal(test_load(acpi_pm_load, &g->pm, p.data, p.len, ACPI_PM_STATE_VERSION), 0);
    test_assert_saves(acpi_pm_save, &g->pm, ACPI_PM_STATE_VERSION, &p);
    /* The pending power-button SCI is raised again on the new line. */
    assert_int_equal(g->sci_level, 1);
    assert_int_equal(g->sci_changes, 1);
    assert_int_equal(in(&g->pm, STS, 2), 0x0100);
    assert_int_equal(in(&g->pm, EN, 2), 0x0121);
    assert_int_equal(in(&g->pm, CNT, 2), 0x0403);
    out(&g->pm, STS, 2, 0x0100);
    assert_int_equal(g->sci_level, 0);
    /* And a quiet state loaded over a pending one lowers it. */
    struct test_payload quiet = test_save(acpi_pm_save, &g->pm, ACPI_PM_STATE_VERSION);
    assert_int_equal(test_load(acpi_pm_load, &f->pm, quiet.data, quiet.len,
                               ACPI_PM_STATE_VERSION), 0);
    assert_int_equal(f->sci_level, 0);
    assert_int_equal(g->events[PLATFORM_EVENT_POWEROFF], 0);
    test_payload_free(&quiet);
    test_payload_free(&p);
    fixture_free(g);
}

static void test_load_refuses_bad_payloads(void **state)
{
    struct fixture *f = *state, *g = fixture_new();
    static const struct { size_t at; uint8_t value; } hostile[] = {
        { AT_STS + 1, 0x81 }, /* WAK_STS: nothing here sets it */
        { AT_STS, 0x01 },     /* TMR_STS: no PM timer */
        { AT_CNT, 0x03 },     /* SCI_EN is not stored: it reads 1 always */
        { AT_CNT + 1, 0x24 }, /* SLP_EN is write-only */
    };

    drive_to_busy_state(f);
    struct test_payload p = test_save(acpi_pm_save, &f->pm, ACPI_PM_STATE_VERSION);
    test_assert_refuses_framing(acpi_pm_save, acpi_pm_load, &g->pm, &p, ACPI_PM_STATE_VERSION);
    for (unsigned i = 0; i < sizeof(hostile) / sizeof(hostile[0]); i++)
        test_assert_refuses_byte(acpi_pm_save, acpi_pm_load, &g->pm, &p, hostile[i].at,
                                 hostile[i].value, ACPI_PM_STATE_VERSION);
    assert_int_equal(g->sci_changes, 0);
    test_payload_free(&p);
    fixture_free(g);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_sci_en_always_set, setup, teardown),
        cmocka_unit_test_setup_teardown(test_s5_powers_off, setup, teardown),
        cmocka_unit_test_setup_teardown(test_other_sleep_types_ignored, setup, teardown),
        cmocka_unit_test_setup_teardown(test_power_button_sci_follows_sts_and_en, setup, teardown),
        cmocka_unit_test_setup_teardown(test_hostile_widths_and_values, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reset_register, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pvpanic, setup, teardown),
        cmocka_unit_test_setup_teardown(test_save_load_round_trip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_load_refuses_bad_payloads, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
