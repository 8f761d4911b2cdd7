/* fuzz_acpi_pm.c: the ACPI PM1 event and control registers under any guest accesses, the
 * power button pressed between them; the snapshot put back. */
#include "fuzz_regs.h"
#include "mmio/acpi_pm.h"

static void set_level(void *ctx, uint32_t gsi, int level)
{
    (void)ctx;
    (void)gsi;
    FUZZ_CHECK(level == 0 || level == 1);
}

static void notify(void *ctx, enum platform_event e)
{
    (void)ctx;
    (void)e;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fuzz_quiet();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct fuzz_in in = fuzz_in(data, size);
    struct irq_line sci = { .set_level = set_level, .gsi = 9 };
    struct platform_events ev = { .notify = notify };
    struct acpi_pm pm;

    FUZZ_CHECK(acpi_pm_init(&pm, &sci, &ev) == 0);
    struct fuzz_range r = { &acpi_pm_ops, &pm, ACPI_PM_IO_LEN, 4 };
    while (!fuzz_done(&in)) {
        switch (fuzz_u8(&in) % 8) {
        case 6:
            acpi_pm_press_power_button(&pm);
            break;
        case 7:
            fuzz_state_round_trip(acpi_pm_save, acpi_pm_load, &pm, ACPI_PM_STATE_VERSION);
            break;
        default:
            fuzz_access(&in, &r, 1);
            break;
        }
    }
    acpi_pm_destroy(&pm);
    return 0;
}
