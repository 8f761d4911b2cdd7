/* pvpanic.h: the pvpanic ISA port (QEMU's "QEMU0001" device): the guest reports a panic. */
#ifndef GODWIT_PVPANIC_H
#define GODWIT_PVPANIC_H

#include "mmio/bus.h"
#include "vm/platform_events.h"

#define PVPANIC_IO_LEN 1
#define PVPANIC_PANICKED 0x01     /* the guest kernel panicked */
#define PVPANIC_CRASH_LOADED 0x02 /* ... and is starting its kdump kernel */

struct pvpanic {
    struct platform_events events;
    unsigned crash_loaded_logged; /* rate limit; updated atomically */
};

/* The handlers to register on the port bus at PORT_PVPANIC for PVPANIC_IO_LEN. */
extern const struct device_ops pvpanic_ops;

void pvpanic_init(struct pvpanic *pp, const struct platform_events *events);

#endif
