/* sd_notify.h: tells systemd about the service's state, without linking libsystemd. */
#ifndef GODWIT_SD_NOTIFY_H
#define GODWIT_SD_NOTIFY_H

#include <stdbool.h>
#include <stdint.h>

/*
 * Sends `state` (newline-separated assignments such as "READY=1\nSTATUS=guest running") as one
 * datagram to the socket named by $NOTIFY_SOCKET: a path, or an abstract name written with a
 * leading '@'. Returns 0 when $NOTIFY_SOCKET is unset or empty (not run by systemd, nothing
 * sent), 1 when the datagram was sent, or -errno: -ENAMETOOLONG for a name that does not fit
 * in sun_path, -EAFNOSUPPORT for an address that is neither a path nor '@'-abstract.
 */
int sd_notify_send(const char *state);

/*
 * Whether systemd expects "WATCHDOG=1" from this process: $WATCHDOG_USEC holds a positive
 * interval and $WATCHDOG_PID, when set, names this process. Stores the interval in *usec
 * (if usec is not NULL) when true.
 */
bool sd_watchdog_enabled(uint64_t *usec);

#endif
