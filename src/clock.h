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

#endif
