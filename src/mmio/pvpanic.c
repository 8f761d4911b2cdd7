/* pvpanic.c: the pvpanic port: reads list the supported events, writes report one. */
#include "mmio/pvpanic.h"

#include <string.h>

#include "log.h"

#define CRASH_LOADED_LOG_LIMIT 4

static void pvpanic_read(void *dev, uint64_t offset, uint8_t *data, uint32_t len)
{
    (void)dev;
    memset(data, 0xff, len);
    if (offset == 0 && len >= 1)
        data[0] = PVPANIC_PANICKED | PVPANIC_CRASH_LOADED;
}

static void pvpanic_note_crash_loaded(struct pvpanic *pp)
{
    unsigned n = __atomic_fetch_add(&pp->crash_loaded_logged, 1, __ATOMIC_RELAXED);
    if (n < CRASH_LOADED_LOG_LIMIT)
        log_warn("pvpanic: guest panicked and is starting its crash kernel; letting it run%s",
                 n + 1 == CRASH_LOADED_LOG_LIMIT ? " (further ones not logged)" : "");
}

static void pvpanic_write(void *dev, uint64_t offset, const uint8_t *data, uint32_t len)
{
    struct pvpanic *pp = dev;

    if (offset != 0 || len == 0)
        return;
    if (data[0] & PVPANIC_PANICKED)
        platform_event_notify(&pp->events, PLATFORM_EVENT_PANIC);
    else if (data[0] & PVPANIC_CRASH_LOADED)
        pvpanic_note_crash_loaded(pp);
}

const struct device_ops pvpanic_ops = { .read = pvpanic_read, .write = pvpanic_write };

void pvpanic_init(struct pvpanic *pp, const struct platform_events *events)
{
    memset(pp, 0, sizeof(*pp));
    if (events)
        pp->events = *events;
}
