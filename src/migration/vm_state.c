/* vm_state.c: the whole VM's state but its RAM, as sections, saved and loaded in KVM's order. */
#define _GNU_SOURCE
#include "migration/vm_state.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#include "clock.h"
#include "log.h"
#include "vcpu/vcpu.h"
#include "virtio/blk.h"
#include "vm/kvm_state.h"
#include "vm/virtio_devices.h"
#include "vm/vm.h"

#define SECTION_MEMORY "memory"
#define SECTION_DISKS "disks"

/* The size of a disk image or block device; 0 when it cannot be told. */
static uint64_t file_size(int fd)
{
    uint64_t bytes;
    uint32_t block;
    return virtio_blk_image_size(fd, &bytes, &block) == 0 ? bytes : 0;
}

/* The size of disk `index`: of the image the VM has open (a same-host handover's may have been
 * renamed since, and opening paths costs the pause system calls), else of its path's file. */
static uint64_t disk_size(const struct vm *vm, unsigned index)
{
    int fd = vm_virtio_disk_fd(vm, index);
    if (fd >= 0)
        return file_size(fd);
    fd = open(vm->cfg->disks[index].path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    uint64_t size = file_size(fd);
    close(fd);
    return size;
}

static void save_layout(struct vm *vm, struct state_writer *w)
{
    sw_begin(w, SECTION_MEMORY, 1);
    sw_u64(w, vm->mem.ram_size);
    sw_u32(w, vm->mem.nr_regions);
    for (unsigned i = 0; i < vm->mem.nr_regions; i++) {
        sw_u64(w, vm->mem.regions[i].gpa);
        sw_u64(w, vm->mem.regions[i].size);
        sw_u64(w, vm->mem.regions[i].file_offset);
    }
    sw_end(w);
}

/* Each disk's size: a restore onto a disk of another size would show the guest a different
 * disk under the same driver state. */
static void save_disks(struct vm *vm, struct state_writer *w)
{
    sw_begin(w, SECTION_DISKS, 1);
    sw_u32(w, vm->cfg->nr_disks);
    for (unsigned i = 0; i < vm->cfg->nr_disks; i++)
        sw_u64(w, disk_size(vm, i));
    sw_end(w);
}

int vm_state_save(struct vm *vm, const char *config_json, struct state_writer *w)
{
    sw_init(w);
    sw_begin(w, VM_STATE_CONFIG, 1);
    sw_bytes(w, config_json, strlen(config_json));
    sw_end(w);
    save_layout(vm, w);
    save_disks(vm, w);
    for (unsigned i = 0; i < vm->nr_vcpus; i++) {
        int ret = vcpu_save_state(&vm->vcpus[i], w);
        if (ret < 0)
            return ret;
    }
    int ret = vm_registry_save(&vm->registry, w);
    /* The clock last, so that it is read as close to the end as the state allows. */
    if (ret == 0)
        ret = vm_kvm_state_save(vm, w);
    return ret ?: sw_finish(w);
}

/* A cursor on section `id`, which every state has; -EPROTO after one line if it is missing. */
static int open_section(struct state_reader *r, const char *id, struct state_cursor *c)
{
    const struct state_section *s = state_reader_find(r, id);
    if (!s) {
        log_error("state: no %s section", id);
        return -EPROTO;
    }
    sc_init(c, s);
    return 0;
}

static int check_layout(struct vm *vm, struct state_reader *r)
{
    struct state_cursor c;
    if (open_section(r, SECTION_MEMORY, &c) < 0)
        return -EPROTO;
    uint64_t ram = sc_u64(&c);
    uint32_t n = sc_u32(&c);
    if (ram != vm->mem.ram_size || n != vm->mem.nr_regions)
        return c.overrun ? sc_finish(&c) : sc_reject(&c, "another RAM size or layout");
    for (unsigned i = 0; i < n; i++) {
        const struct gm_region *g = &vm->mem.regions[i];
        uint64_t gpa = sc_u64(&c), size = sc_u64(&c), off = sc_u64(&c);
        if (gpa != g->gpa || size != g->size || off != g->file_offset)
            return c.overrun ? sc_finish(&c) : sc_reject(&c, "region %u differs", i);
    }
    return sc_finish(&c);
}

static int check_disks(struct vm *vm, struct state_reader *r)
{
    struct state_cursor c;
    if (open_section(r, SECTION_DISKS, &c) < 0)
        return -EPROTO;
    uint32_t n = sc_u32(&c);
    if (n != vm->cfg->nr_disks)
        return c.overrun ? sc_finish(&c)
                         : sc_reject(&c, "%u disks, the VM has %u", n, vm->cfg->nr_disks);
    for (unsigned i = 0; i < n; i++) {
        uint64_t size = sc_u64(&c), now = disk_size(vm, i);
        if (!c.overrun && size != now)
            return sc_reject(&c, "disk %u (%s) holds %llu bytes, it held %llu at the snapshot", i,
                             vm->cfg->disks[i].path, (unsigned long long)now,
                             (unsigned long long)size);
    }
    return sc_finish(&c);
}

int vm_state_load_timed(struct vm *vm, struct state_reader *r, struct vm_state_load_times *t)
{
    int ret;
    *t = (struct vm_state_load_times){ .checks_ms = 0 };
    /* The configuration built this VM already: it is read by whoever built it. */
    if (!state_reader_find(r, VM_STATE_CONFIG)) {
        log_error("state: no configuration section");
        return -EPROTO;
    }
    unsigned routing_sets = vm->routing_sets;
    uint64_t routing_ns = vm->routing_ns, t0 = monotonic_ns();
    if ((ret = check_layout(vm, r)) < 0 || (ret = check_disks(vm, r)) < 0)
        return ret;
    uint64_t t1 = monotonic_ns();
    /* vCPUs first, then the VM-wide PIT, clock and irqchip, the devices last: a device that
     * raises its interrupt line on load must find the irqchip already restored. */
    for (unsigned i = 0; i < vm->nr_vcpus; i++)
        if ((ret = vcpu_load_state(&vm->vcpus[i], r)) < 0)
            return ret;
    uint64_t t2 = monotonic_ns();
    if ((ret = vm_kvm_state_load(vm, r)) < 0)
        return ret;
    uint64_t t3 = monotonic_ns();
    /* Every device's MSI-X vectors, given to KVM once (vm_routing_hold). */
    vm_routing_hold(vm);
    ret = vm_registry_load(&vm->registry, r, &t->slowest);
    int routed = vm_routing_release(vm);
    if (ret < 0 || (ret = routed) < 0)
        return ret;
    uint64_t t4 = monotonic_ns();
    *t = (struct vm_state_load_times){
        .checks_ms = ns_to_ms(t1 - t0), .vcpus_ms = ns_to_ms(t2 - t1),
        .vm_ms = ns_to_ms(t3 - t2), .devices_ms = ns_to_ms(t4 - t3),
        .routing_ms = ns_to_ms(vm->routing_ns - routing_ns),
        .routing_sets = vm->routing_sets - routing_sets, .slowest = t->slowest,
    };
    const struct state_section *unknown = state_reader_unused(r);
    if (unknown) {
        log_error("state: section %s belongs to nothing in this VM (another configuration?)",
                  unknown->id);
        return -EPROTO;
    }
    return 0;
}

int vm_state_load(struct vm *vm, struct state_reader *r)
{
    struct vm_state_load_times t;
    return vm_state_load_timed(vm, r, &t);
}
