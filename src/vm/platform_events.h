/* platform_events.h: how legacy devices tell the VM that the guest asked to power off, reset
 * or reported a panic, without knowing about the VM's lifecycle code. */
#ifndef GODWIT_PLATFORM_EVENTS_H
#define GODWIT_PLATFORM_EVENTS_H

enum platform_event {
    PLATFORM_EVENT_POWEROFF, /* ACPI S5 through PM1a control */
    PLATFORM_EVENT_RESET,    /* i8042 pulse reset line, 0xcf9 reset, ACPI reset register */
    PLATFORM_EVENT_PANIC,    /* pvpanic: the guest kernel panicked */
};

struct platform_events {
    void (*notify)(void *ctx, enum platform_event event);
    void *ctx;
};

static inline void platform_event_notify(const struct platform_events *ev, enum platform_event e)
{
    if (ev && ev->notify)
        ev->notify(ev->ctx, e);
}

#endif
