/* clock.h: the monotonic clock in nanoseconds, for ages and durations. */
#ifndef GODWIT_CLOCK_H
#define GODWIT_CLOCK_H

#include <stdint.h>
#include <time.h>

static inline uint64_t monotonic_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* A duration in nanoseconds, in milliseconds (for log lines and figures). */
static inline double ns_to_ms(uint64_t ns)
{
    return (double)ns / 1e6;
}

/* Milliseconds since monotonic_ns() gave t0. */
static inline double ms_since_ns(uint64_t t0)
{
    return ns_to_ms(monotonic_ns() - t0);
}

#endif
