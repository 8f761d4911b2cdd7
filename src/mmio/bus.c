/* bus.c: sorted, non-overlapping address ranges mapped to device handlers. */
#include "mmio/bus.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

#define BUS_UNMAPPED_LOG_LIMIT 16

void bus_init(struct bus *bus, const char *name)
{
    memset(bus, 0, sizeof(*bus));
    bus->name = name;
    pthread_rwlock_init(&bus->lock, NULL);
}

void bus_destroy(struct bus *bus)
{
    free(bus->ranges);
    pthread_rwlock_destroy(&bus->lock);
    bus->ranges = NULL;
    bus->nr_ranges = bus->capacity = 0;
}

/* Index of the first range whose base is above addr. */
static unsigned bus_upper_bound(const struct bus *bus, uint64_t addr)
{
    unsigned lo = 0, hi = bus->nr_ranges;
    while (lo < hi) {
        unsigned mid = lo + (hi - lo) / 2;
        if (bus->ranges[mid].base <= addr)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static bool ranges_overlap(uint64_t a, uint64_t alen, uint64_t b, uint64_t blen)
{
    return a < b + blen && b < a + alen;
}

int bus_register(struct bus *bus, uint64_t base, uint64_t len, const char *name,
                 const struct device_ops *ops, void *dev)
{
    int ret = 0;
    if (len == 0 || base + len < base)
        return -EINVAL;
    pthread_rwlock_wrlock(&bus->lock);
    unsigned pos = bus_upper_bound(bus, base);
    if ((pos > 0 && ranges_overlap(base, len, bus->ranges[pos - 1].base, bus->ranges[pos - 1].len)) ||
        (pos < bus->nr_ranges && ranges_overlap(base, len, bus->ranges[pos].base, bus->ranges[pos].len))) {
        ret = -EEXIST;
        goto out;
    }
    if (bus->nr_ranges == bus->capacity) {
        unsigned cap = bus->capacity ? bus->capacity * 2 : 16;
        struct bus_range *r = realloc(bus->ranges, cap * sizeof(*r));
        if (!r) {
            ret = -ENOMEM;
            goto out;
        }
        bus->ranges = r;
        bus->capacity = cap;
    }
    memmove(&bus->ranges[pos + 1], &bus->ranges[pos], (bus->nr_ranges - pos) * sizeof(bus->ranges[0]));
    bus->ranges[pos] = (struct bus_range){ base, len, name, ops, dev };
    bus->nr_ranges++;
out:
    pthread_rwlock_unlock(&bus->lock);
    if (ret < 0)
        log_error("%s bus: cannot register %s at 0x%llx+0x%llx: %s", bus->name, name,
                  (unsigned long long)base, (unsigned long long)len, strerror(-ret));
    return ret;
}

static void bus_note_unmapped(struct bus *bus, uint64_t addr, uint32_t len, bool is_write)
{
    unsigned n = __atomic_fetch_add(&bus->unmapped_logged, 1, __ATOMIC_RELAXED);
    if (n < BUS_UNMAPPED_LOG_LIMIT)
        log_debug("%s bus: %s of %u bytes at 0x%llx hits no device%s", bus->name,
                  is_write ? "write" : "read", len, (unsigned long long)addr,
                  n + 1 == BUS_UNMAPPED_LOG_LIMIT ? " (further ones not logged)" : "");
}

bool bus_access(struct bus *bus, uint64_t addr, uint8_t *data, uint32_t len, bool is_write)
{
    const struct bus_range *hit = NULL;

    pthread_rwlock_rdlock(&bus->lock);
    unsigned pos = bus_upper_bound(bus, addr);
    if (pos > 0) {
        const struct bus_range *r = &bus->ranges[pos - 1];
        uint64_t off = addr - r->base;
        if (off < r->len && len <= r->len - off)
            hit = r;
    }
    if (hit) {
        if (is_write && hit->ops->write)
            hit->ops->write(hit->dev, addr - hit->base, data, len);
        else if (!is_write && hit->ops->read)
            hit->ops->read(hit->dev, addr - hit->base, data, len);
        else if (!is_write)
            memset(data, 0xff, len);
    }
    pthread_rwlock_unlock(&bus->lock);
    if (!hit) {
        if (!is_write)
            memset(data, 0xff, len);
        bus_note_unmapped(bus, addr, len, is_write);
    }
    return hit != NULL;
}
