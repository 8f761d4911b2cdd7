/* bus.h: maps port-I/O and MMIO address ranges to device handlers. */
#ifndef GODWIT_BUS_H
#define GODWIT_BUS_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

/*
 * A device's register interface. `offset` is relative to the start of the range the device
 * registered; `len` is 1, 2, 4 or 8. Handlers run on the vCPU thread that made the access,
 * so they must be short and must lock whatever they share with the event loop.
 */
struct device_ops {
    void (*read)(void *dev, uint64_t offset, uint8_t *data, uint32_t len);
    void (*write)(void *dev, uint64_t offset, const uint8_t *data, uint32_t len);
};

struct bus_range {
    uint64_t base;
    uint64_t len;
    const char *name;
    const struct device_ops *ops;
    void *dev;
};

struct bus {
    const char *name; /* "pio" or "mmio", for messages */
    struct bus_range *ranges; /* sorted by base, non-overlapping */
    unsigned nr_ranges;
    unsigned capacity;
    unsigned unmapped_logged; /* rate limit for accesses to nothing */
    pthread_rwlock_t lock;
};

void bus_init(struct bus *bus, const char *name);
void bus_destroy(struct bus *bus);

/* Returns 0, -EEXIST when the range overlaps another, -EINVAL for an empty range. */
int bus_register(struct bus *bus, uint64_t base, uint64_t len, const char *name,
                 const struct device_ops *ops, void *dev);

/*
 * Dispatches one access. An access that no range covers wholly reads as all ones and writes
 * are dropped; returns false in that case.
 */
bool bus_access(struct bus *bus, uint64_t addr, uint8_t *data, uint32_t len, bool is_write);

#endif
