/* acpi_pm.c: PM1a status, enable and control registers: power-button SCI, S5 poweroff. */
#include "mmio/acpi_pm.h"

#include <string.h>

#include "boot/layout.h"
#include "log.h"
#include "migration/state.h"

/*
 * ACPI mode is permanently on: the FADT has no SMI_CMD, so SCI_EN reads 1 and the guest
 * never switches modes. Only the power button raises the SCI; S5 is the only sleep state
 * (the DSDT offers no other), and requests for any other one are ignored.
 */

#define PM1_CNT_SCI_EN 0x0001
#define PM1_CNT_BM_RLD 0x0002
#define PM1_CNT_SLP_TYP_SHIFT 10
#define PM1_CNT_SLP_TYP_MASK 0x1c00
#define PM1_CNT_SLP_EN 0x2000 /* write-only, like GBL_RLS (bit 2) */
#define PM1_CNT_READABLE (PM1_CNT_BM_RLD | PM1_CNT_SLP_TYP_MASK)

enum pm_register { REG_PM1_STS = 0, REG_PM1_EN = 2, REG_PM1_CNT = 4 };

/* The bytes of an access that land on the 16-bit register at reg: their value and mask. */
static uint16_t access_slice(uint64_t offset, const uint8_t *data, uint32_t len, unsigned reg,
                             uint16_t *value)
{
    uint16_t mask = 0;
    *value = 0;
    for (unsigned b = 0; b < 2; b++) {
        uint64_t at = reg + b;
        if (at >= offset && at - offset < len) {
            *value |= (uint16_t)(data[at - offset] << (8 * b));
            mask |= (uint16_t)(0xff << (8 * b));
        }
    }
    return mask;
}

static void acpi_pm_update_sci(struct acpi_pm *pm)
{
    int level = (pm->st.pm1_sts & pm->st.pm1_en & ACPI_PM1_STS_PWRBTN) != 0;
    if (level != pm->sci_level) {
        pm->sci_level = level;
        irq_line_set(&pm->sci, level);
    }
}

/* SLP_EN was written: returns true when the machine must power off. */
static bool acpi_pm_sleep(struct acpi_pm *pm)
{
    unsigned type = (pm->st.pm1_cnt & PM1_CNT_SLP_TYP_MASK) >> PM1_CNT_SLP_TYP_SHIFT;
    if (type == ACPI_SLP_TYP_S5)
        return true;
    if (!pm->sleep_type_logged) {
        pm->sleep_type_logged = true;
        log_warn("acpi: guest asked for sleep type %u; only S5 (%u) is supported, ignoring "
                 "(logged once)", type, ACPI_SLP_TYP_S5);
    }
    return false;
}

/* Applies a guest write; returns true when it powers the machine off. */
static bool acpi_pm_write_locked(struct acpi_pm *pm, uint64_t offset, const uint8_t *data,
                                 uint32_t len)
{
    uint16_t value, mask;

    mask = access_slice(offset, data, len, REG_PM1_STS, &value);
    pm->st.pm1_sts &= (uint16_t)~(value & mask); /* write 1 to clear */
    mask = access_slice(offset, data, len, REG_PM1_EN, &value);
    pm->st.pm1_en = (uint16_t)((pm->st.pm1_en & ~mask) | (value & mask));
    mask = access_slice(offset, data, len, REG_PM1_CNT, &value);
    pm->st.pm1_cnt = (uint16_t)((pm->st.pm1_cnt & ~mask) | (value & mask & PM1_CNT_READABLE));
    return (value & mask & PM1_CNT_SLP_EN) && acpi_pm_sleep(pm);
}

static void acpi_pm_read(void *dev, uint64_t offset, uint8_t *data, uint32_t len)
{
    struct acpi_pm *pm = dev;
    uint8_t regs[ACPI_PM_IO_LEN];

    pthread_mutex_lock(&pm->lock);
    uint16_t cnt = pm->st.pm1_cnt | PM1_CNT_SCI_EN;
    regs[0] = (uint8_t)pm->st.pm1_sts;
    regs[1] = (uint8_t)(pm->st.pm1_sts >> 8);
    regs[2] = (uint8_t)pm->st.pm1_en;
    regs[3] = (uint8_t)(pm->st.pm1_en >> 8);
    regs[4] = (uint8_t)cnt;
    regs[5] = (uint8_t)(cnt >> 8);
    pthread_mutex_unlock(&pm->lock);
    for (uint32_t i = 0; i < len; i++)
        data[i] = offset < ACPI_PM_IO_LEN && i < ACPI_PM_IO_LEN - offset ? regs[offset + i] : 0xff;
}

static void acpi_pm_write(void *dev, uint64_t offset, const uint8_t *data, uint32_t len)
{
    struct acpi_pm *pm = dev;
    bool poweroff;

    pthread_mutex_lock(&pm->lock);
    poweroff = acpi_pm_write_locked(pm, offset, data, len);
    acpi_pm_update_sci(pm);
    pthread_mutex_unlock(&pm->lock);
    /* Outside the lock: the VM's handler may stop vCPUs, one of which could be in here. */
    if (poweroff)
        platform_event_notify(&pm->events, PLATFORM_EVENT_POWEROFF);
}

const struct device_ops acpi_pm_ops = { .read = acpi_pm_read, .write = acpi_pm_write };

int acpi_pm_init(struct acpi_pm *pm, const struct irq_line *sci,
                 const struct platform_events *events)
{
    int ret;

    memset(pm, 0, sizeof(*pm));
    ret = pthread_mutex_init(&pm->lock, NULL);
    if (ret)
        return -ret;
    if (sci)
        pm->sci = *sci;
    if (events)
        pm->events = *events;
    return 0;
}

void acpi_pm_destroy(struct acpi_pm *pm)
{
    pthread_mutex_destroy(&pm->lock);
}

void acpi_pm_press_power_button(struct acpi_pm *pm)
{
    pthread_mutex_lock(&pm->lock);
    pm->st.pm1_sts |= ACPI_PM1_STS_PWRBTN;
    acpi_pm_update_sci(pm);
    pthread_mutex_unlock(&pm->lock);
}

/* ---- Snapshots: the fields of struct acpi_pm_state, one by one, in this order ---- */

void acpi_pm_save(void *dev, struct state_writer *w)
{
    struct acpi_pm *pm = dev;
    struct acpi_pm_state s;

    pthread_mutex_lock(&pm->lock);
    s = pm->st;
    pthread_mutex_unlock(&pm->lock);
    sw_u16(w, s.pm1_sts);
    sw_u16(w, s.pm1_en);
    sw_u16(w, s.pm1_cnt);
}

/* PM1_EN keeps any bits the guest writes; status and control only what the device keeps. */
static int acpi_pm_state_check(const struct state_cursor *c, const struct acpi_pm_state *s)
{
    if (s->pm1_sts & ~ACPI_PM1_STS_PWRBTN)
        return sc_reject(c, "pm1_sts 0x%04x: bits other than PWRBTN_STS, which nothing sets",
                         s->pm1_sts);
    if (s->pm1_cnt & ~PM1_CNT_READABLE)
        return sc_reject(c, "pm1_cnt 0x%04x: bits other than SLP_TYP and BM_RLD", s->pm1_cnt);
    return 0;
}

int acpi_pm_load(void *dev, struct state_cursor *c, uint32_t version)
{
    struct acpi_pm *pm = dev;
    struct acpi_pm_state s;
    int ret;

    if (version != ACPI_PM_STATE_VERSION)
        return sc_reject(c, "version %u unknown", version);
    s.pm1_sts = sc_u16(c);
    s.pm1_en = sc_u16(c);
    s.pm1_cnt = sc_u16(c);
    if ((ret = sc_finish(c)) < 0)
        return ret;
    if ((ret = acpi_pm_state_check(c, &s)) < 0)
        return ret;
    pthread_mutex_lock(&pm->lock);
    pm->st = s;
    acpi_pm_update_sci(pm); /* the line of this process: raised again if the state says so */
    pthread_mutex_unlock(&pm->lock);
    return 0;
}
