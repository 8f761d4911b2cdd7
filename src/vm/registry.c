/* registry.c: the VM's devices, one table, the same operations for each (see registry.h). */
#include "vm/registry.h"

#include <errno.h>
#include <json-c/json.h>
#include <stdio.h>
#include <string.h>

#include "clock.h"
#include "log.h"
#include "migration/state.h"

int vm_registry_add(struct vm_registry *reg, const char *id, const struct vm_device_ops *ops,
                    void *dev)
{
    if (strlen(id) >= VM_DEVICE_ID_LEN)
        return -EINVAL;
    for (unsigned i = 0; i < reg->nr; i++)
        if (strcmp(reg->entries[i].id, id) == 0)
            return -EEXIST;
    if (reg->nr == VM_MAX_DEVICES)
        return -ENOSPC;
    struct vm_device_entry *e = &reg->entries[reg->nr++];
    memset(e, 0, sizeof(*e));
    strcpy(e->id, id);
    e->ops = ops;
    e->dev = dev;
    return 0;
}

void vm_registry_destroy(struct vm_registry *reg)
{
    while (reg->nr) {
        struct vm_device_entry *e = &reg->entries[--reg->nr];
        if (e->ops->destroy)
            e->ops->destroy(e->dev);
    }
}

int vm_registry_quiesce(struct vm_registry *reg)
{
    for (unsigned i = 0; i < reg->nr; i++) {
        struct vm_device_entry *e = &reg->entries[i];
        int ret = e->ops->quiesce && !e->quiesced ? e->ops->quiesce(e->dev) : 0;
        if (ret < 0) {
            log_error("%s: cannot quiesce: %s", e->id, strerror(-ret));
            vm_registry_resume(reg);
            return ret;
        }
        e->quiesced = true;
    }
    return 0;
}

void vm_registry_resume(struct vm_registry *reg)
{
    for (unsigned i = 0; i < reg->nr; i++) {
        struct vm_device_entry *e = &reg->entries[i];
        if (e->quiesced && e->ops->resume)
            e->ops->resume(e->dev);
        e->quiesced = false;
    }
}

int vm_registry_save(struct vm_registry *reg, struct state_writer *w)
{
    for (unsigned i = 0; i < reg->nr; i++) {
        struct vm_device_entry *e = &reg->entries[i];
        if (!e->ops->save)
            continue;
        sw_begin(w, e->id, e->ops->state_version);
        e->ops->save(e->dev, w);
        sw_end(w);
    }
    return sw_error(w);
}

static int load_one(struct vm_device_entry *e, const struct state_section *s)
{
    struct state_cursor c;
    if (!s) {
        log_error("state: no section for device %s", e->id);
        return -EPROTO;
    }
    if (s->version == 0 || s->version > e->ops->state_version) {
        log_error("state: section %s: version %u, this godwit loads up to %u", e->id, s->version,
                  e->ops->state_version);
        return -EPROTO;
    }
    sc_init(&c, s);
    return e->ops->load(e->dev, &c, s->version);
}

int vm_registry_load(struct vm_registry *reg, struct state_reader *r,
                     struct vm_registry_slowest *slowest)
{
    if (slowest)
        *slowest = (struct vm_registry_slowest){ .ms = 0 };
    for (unsigned i = 0; i < reg->nr; i++) {
        struct vm_device_entry *e = &reg->entries[i];
        if (!e->ops->load)
            continue;
        uint64_t t0 = monotonic_ns();
        int ret = load_one(e, state_reader_find(r, e->id));
        if (ret < 0)
            return ret;
        double ms = ms_since_ns(t0);
        if (slowest && ms > slowest->ms) {
            slowest->ms = ms;
            snprintf(slowest->id, sizeof(slowest->id), "%s", e->id);
        }
    }
    return 0;
}

void vm_registry_counters(struct vm_registry *reg, struct json_object *devices)
{
    for (unsigned i = 0; i < reg->nr; i++) {
        struct vm_device_entry *e = &reg->entries[i];
        struct json_object *c = e->ops->counters ? e->ops->counters(e->dev) : NULL;
        if (c)
            json_object_object_add(devices, e->id, c);
    }
}
