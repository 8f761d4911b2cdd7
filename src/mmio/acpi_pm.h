/* acpi_pm.h: the ACPI fixed-hardware PM1a event and control registers (power button, S5). */
#ifndef GODWIT_ACPI_PM_H
#define GODWIT_ACPI_PM_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "vm/irq.h"
#include "mmio/bus.h"
#include "vm/platform_events.h"

struct state_writer;
struct state_cursor;

/* PM1a_EVT_BLK (4 bytes: PM1_STS, PM1_EN) then PM1a_CNT_BLK (2 bytes), one range from
 * PORT_ACPI_PM; the FADT gives PM1_EVT_LEN 4 and PM1_CNT_LEN 2. */
#define ACPI_PM_IO_LEN 6

#define ACPI_PM1_STS_PWRBTN 0x0100
#define ACPI_PM1_STS_WAK 0x8000
#define ACPI_PM1_EN_PWRBTN 0x0100

/* What a snapshot carries: the PM1 registers, plain values. There are no GPE blocks (the FADT
 * declares none), so no GPE registers either. */
struct acpi_pm_state {
    uint16_t pm1_sts;
    uint16_t pm1_en;
    uint16_t pm1_cnt; /* the readable bits the guest wrote (SCI_EN is added on read) */
};

struct acpi_pm {
    pthread_mutex_t lock; /* vCPU threads vs the main thread pressing the power button */
    struct irq_line sci;
    struct platform_events events;
    /* Last level sent to this process's SCI line. Not saved: it follows from the state, and a
     * load re-sends it to the (new) irqchip. */
    int sci_level;
    bool sleep_type_logged; /* this process's log only */
    struct acpi_pm_state st;
};

/* The register handlers to register on the port bus at PORT_ACPI_PM for ACPI_PM_IO_LEN. */
extern const struct device_ops acpi_pm_ops;

/* sci: IRQ_ACPI_SCI, level-triggered, active high; starts low. Returns 0 or -errno. */
int acpi_pm_init(struct acpi_pm *pm, const struct irq_line *sci,
                 const struct platform_events *events);
void acpi_pm_destroy(struct acpi_pm *pm);

/* Sets PWRBTN_STS: the guest sees a power-button press (an SCI if it enabled PWRBTN_EN). */
void acpi_pm_press_power_button(struct acpi_pm *pm);

/* Snapshots, as struct vm_device_ops save/load (dev: a struct acpi_pm). Load checks every
 * value before it applies any, then sets the SCI to what the loaded state implies. */
#define ACPI_PM_STATE_VERSION 1
void acpi_pm_save(void *dev, struct state_writer *w);
int acpi_pm_load(void *dev, struct state_cursor *c, uint32_t version);

#endif
