/* reset.h: the FADT's reset register: a one-byte port whose RST_CPU bit resets the machine. */
#ifndef GODWIT_RESET_H
#define GODWIT_RESET_H

#include "mmio/bus.h"
#include "vm/platform_events.h"

#define RESET_PORT_IO_LEN 1

/* No state but where resets go: nothing for migration to save. */
struct reset_port {
    struct platform_events events;
};

/* The handlers to register on the port bus at PORT_ACPI_RESET for RESET_PORT_IO_LEN. */
extern const struct device_ops reset_port_ops;

void reset_port_init(struct reset_port *rp, const struct platform_events *events);

#endif
