/* reset.c: the FADT reset register: a write with RST_CPU set resets the machine. */
#include "mmio/reset.h"

#include <string.h>

/* Intel's reset control register layout, which ACPI_RESET_VALUE (0x06) follows: bit 1
 * picks a full reset, bit 2 (RST_CPU) starts it. Any reset here is the same full reset. */
#define RESET_RST_CPU 0x04

static void reset_port_read(void *dev, uint64_t offset, uint8_t *data, uint32_t len)
{
    (void)dev;
    (void)offset;
    memset(data, 0, len); /* nothing to report; the register is effectively write-only */
}

static void reset_port_write(void *dev, uint64_t offset, const uint8_t *data, uint32_t len)
{
    struct reset_port *rp = dev;

    if (offset == 0 && len >= 1 && (data[0] & RESET_RST_CPU))
        platform_event_notify(&rp->events, PLATFORM_EVENT_RESET);
}

const struct device_ops reset_port_ops = { .read = reset_port_read, .write = reset_port_write };

void reset_port_init(struct reset_port *rp, const struct platform_events *events)
{
    memset(rp, 0, sizeof(*rp));
    if (events)
        rp->events = *events;
}
