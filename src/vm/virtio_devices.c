/*
 * virtio_devices.c: puts the virtio devices on the VM. Each gets a PCI slot and a BAR; its queue
 * doorbells are KVM ioeventfds watched by the main loop, so a kick costs no exit to
 * userspace; its MSI-X vectors are KVM MSI routes fired through irqfds, so any thread can
 * interrupt the guest with one eventfd write.
 */
#define _GNU_SOURCE
#include "vm/virtio_devices.h"

#include <errno.h>
#include <stddef.h>
#include <json-c/json.h>
#include <linux/kvm.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#include "boot/layout.h"
#include "io/unix_socket.h"
#include "lib/device_options.h"
#include "io/loop.h"
#include "clock.h"
#include "log.h"
#include "migration/channel.h"
#include "mmio/pci_host.h"
#include "virtio/blk.h"
#include "virtio/console.h"
#include "virtio/net.h"
#include "virtio/pci.h"
#include "virtio/rng.h"
#include "virtio/vsock.h"
#include "vm/registry.h"
#include "vm/vm.h"

struct virtio_slot;

/* One queue's doorbell: KVM signals `fd` when the guest writes the queue's notify address. */
struct virtio_kick {
    struct virtio_slot *slot;
    unsigned queue;
    int fd; /* blocking: the main loop reads it through the ring */
    bool watched;
    struct loop_watch watch;
    uint64_t count, last_ns; /* atomic: kicks seen, and when the last one was */
    struct loop_poller poller; /* --io-poll: the loop looks at this queue between waits */
    uint64_t polled;           /* atomic: times polling found entries (no kick needed) */
};

struct virtio_slot {
    struct vm *vm;
    char name[24]; /* "vda", "rng0": its registry id, bus entry and counters' key */
    /* The device model behind vdev, and what only the model knows how to do. */
    void *model;
    void (*model_destroy)(void *model);
    void (*model_counters)(void *model, struct json_object *o);
    bool unlocked_disk; /* a migration's destination: the disk's lock is still the source's */
    int backend_fd; /* the console's output file, or -1: the slot closes it */
    struct virtio_device vdev;
    struct virtio_pci pci;
    bool pci_ready;
    int gsi_base;
    unsigned nr_vectors;
    int irqfds[VIRTIO_PCI_MAX_VECTORS];
    uint64_t vector_count[VIRTIO_PCI_MAX_VECTORS];   /* atomic: interrupts raised */
    uint64_t vector_last_ns[VIRTIO_PCI_MAX_VECTORS]; /* atomic: when the last one was */
    struct virtio_kick kicks[VIRTIO_MAX_QUEUES];
    struct loop_tail notify_tail; /* the queues' interrupts, at the end of the loop's turn */
};

struct vm_virtio {
    uint32_t doorbell_len; /* KVM_IOEVENTFD length: 0 matches a write of any width */
    unsigned nr_slots; /* the slots themselves are entries of vm->registry */
    struct virtio_console *terminal_console; /* hvc0 fed by the terminal, or NULL */
};

/* ---- host callbacks of the transport ---- */

static int slot_msi_route(void *ctx, unsigned vector, uint64_t address, uint32_t data,
                          bool masked)
{
    struct virtio_slot *s = ctx;
    (void)masked; /* a masked vector is never raised: its route may stay */
    int ret = vm_set_msi_route(s->vm, (uint32_t)(s->gsi_base + (int)vector), address, data, true);
    if (ret < 0)
        log_warn("%s: cannot route MSI-X vector %u: %s", s->name, vector, strerror(-ret));
    return ret;
}

static void eventfd_signal(int fd)
{
    uint64_t one = 1;
    /* EAGAIN only when the counter is saturated: the signal is pending anyway. (The kick
     * fds are blocking, and would block there instead: at 2^64 - 2 signals, never.) */
    if (write(fd, &one, sizeof(one)) < 0 && errno != EAGAIN)
        log_warn("virtio: eventfd write failed: %s", strerror(errno));
}

static void slot_msi_raise(void *ctx, unsigned vector)
{
    struct virtio_slot *s = ctx;
    if (vector < s->nr_vectors) {
        /* A state load holds the routes back (vm_routing_hold): KVM drops an MSI it has no
         * route for. */
        if (atomic_load_explicit(&s->vm->routing_held, memory_order_relaxed))
            vm_routing_flush(s->vm);
        __atomic_fetch_add(&s->vector_count[vector], 1, __ATOMIC_RELAXED);
        __atomic_store_n(&s->vector_last_ns[vector], monotonic_ns(), __ATOMIC_RELAXED);
        eventfd_signal(s->irqfds[vector]);
    }
}

/* A doorbell that came through the MMIO bus (a vCPU thread): hand it to the main loop. */
static void slot_queue_kick(void *ctx, struct virtio_pci *vp, unsigned queue)
{
    struct virtio_slot *s = ctx;
    (void)vp;
    if (queue < s->pci.nr_queues)
        eventfd_signal(s->kicks[queue].fd);
}

/* The ring read the doorbell's count already (loop_watch_eventfd): one kick however many
 * writes it sums. */
static bool on_kick(struct event_loop *loop, void *opaque, int res)
{
    struct virtio_kick *k = opaque;
    (void)loop;
    if (res < 0)
        return false;
    if (res == sizeof(uint64_t)) {
        __atomic_fetch_add(&k->count, 1, __ATOMIC_RELAXED);
        __atomic_store_n(&k->last_ns, monotonic_ns(), __ATOMIC_RELAXED);
        virtio_pci_kick(&k->slot->pci, k->queue);
    }
    return true;
}

/* The loop's polls of a queue (--io-poll), counted like kicks when they find work. */
static bool on_poll(void *opaque)
{
    struct virtio_kick *k = opaque;
    bool took = virtio_pci_poll(&k->slot->pci, k->queue);
    if (took)
        __atomic_fetch_add(&k->polled, 1, __ATOMIC_RELAXED);
    return took;
}

static bool on_poll_end(void *opaque)
{
    struct virtio_kick *k = opaque;
    return virtio_pci_poll_end(&k->slot->pci, k->queue);
}

/* ---- interrupts, once per loop turn ---- */

static void slot_flush_notify(void *opaque)
{
    struct virtio_slot *s = opaque;
    pthread_mutex_lock(&s->pci.lock);
    virtio_flush_notify(&s->vdev);
    pthread_mutex_unlock(&s->pci.lock);
}

/* Completions run on the loop's thread: their interrupts wait for the end of the turn. From
 * a vCPU thread (a reset, the console's input) they go at once. */
static bool slot_defer_notify(struct virtio_device *vdev)
{
    struct virtio_slot *s = (struct virtio_slot *)((char *)vdev - offsetof(struct virtio_slot, vdev));
    struct event_loop *loop = s->vm->cfg->loop;
    if (!loop_on_thread(loop))
        return false;
    loop_at_turn_end(loop, &s->notify_tail, slot_flush_notify, s);
    return true;
}

/* ---- device models ---- */

static void blk_model_destroy(void *model) { virtio_blk_destroy(model); }
static void net_model_destroy(void *model) { virtio_net_destroy(model); }
static void console_model_destroy(void *model) { virtio_console_destroy(model); }
static void rng_model_destroy(void *model) { virtio_rng_destroy(model); }
static void vsock_model_destroy(void *model) { virtio_vsock_destroy(model); }

static struct json_object *json_u64(uint64_t v)
{
    return json_object_new_int64((int64_t)v);
}

static void blk_model_counters(void *model, struct json_object *o)
{
    uint64_t reads, writes, bytes_read, bytes_written;
    virtio_blk_counters(model, &reads, &writes, &bytes_read, &bytes_written);
    json_object_object_add(o, "reads", json_u64(reads));
    json_object_object_add(o, "writes", json_u64(writes));
    json_object_object_add(o, "bytes_read", json_u64(bytes_read));
    json_object_object_add(o, "bytes_written", json_u64(bytes_written));
    uint64_t answered, total_ns, max_ns;
    unsigned in_flight;
    virtio_blk_latency(model, &answered, &total_ns, &max_ns, &in_flight);
    json_object_object_add(o, "answered", json_u64(answered));
    json_object_object_add(o, "answer_us_total", json_u64(total_ns / 1000));
    json_object_object_add(o, "answer_us_max", json_u64(max_ns / 1000));
    json_object_object_add(o, "in_flight", json_u64(in_flight));
}

static void net_model_counters(void *model, struct json_object *o)
{
    struct virtio_net_counters c;
    virtio_net_counters(model, &c);
    json_object_object_add(o, "rx_packets", json_u64(c.rx_packets));
    json_object_object_add(o, "rx_bytes", json_u64(c.rx_bytes));
    json_object_object_add(o, "rx_dropped", json_u64(c.rx_dropped));
    json_object_object_add(o, "rx_zero_copy", json_u64(c.rx_zero_copy));
    json_object_object_add(o, "tx_packets", json_u64(c.tx_packets));
    json_object_object_add(o, "tx_bytes", json_u64(c.tx_bytes));
    json_object_object_add(o, "tx_dropped", json_u64(c.tx_dropped));
}

static void console_model_counters(void *model, struct json_object *o)
{
    uint64_t tx_bytes, tx_dropped;
    virtio_console_counters(model, &tx_bytes, &tx_dropped);
    json_object_object_add(o, "tx_bytes", json_u64(tx_bytes));
    json_object_object_add(o, "tx_dropped", json_u64(tx_dropped));
}

static int make_blk(struct virtio_slot *s, const void *arg, unsigned index)
{
    const struct godwit_disk *disk = arg;
    struct virtio_blk_config cfg = {
        .path = disk->path, .readonly = disk->readonly, .serial = disk->serial,
        .cache_none = disk->cache_none, .queues = vm_disk_queues(s->vm->cfg, disk),
        .use_fd = s->vm->cfg->disk_fds != NULL,
        .fd = s->vm->cfg->disk_fds ? s->vm->cfg->disk_fds[index] : -1,
        /* A handed-over image's lock is the source's own (the same open file): held now. */
        .lock_later = s->vm->cfg->incoming && !s->vm->cfg->disk_fds,
    };
    struct virtio_blk *blk;
    /* Linux names disks in probe order, which is slot order here: vda, vdb, ... */
    if (index < 26)
        snprintf(s->name, sizeof(s->name), "vd%c", 'a' + index);
    else
        snprintf(s->name, sizeof(s->name), "disk%u", index);
    int ret = virtio_blk_create(&blk, &cfg, s->vm->cfg->loop, &s->vm->mem, &s->vdev);
    if (ret == 0) {
        s->unlocked_disk = cfg.lock_later;
        s->model = blk;
        s->model_destroy = blk_model_destroy;
        s->model_counters = blk_model_counters;
    }
    return ret;
}

static int make_net(struct virtio_slot *s, const void *arg, unsigned index)
{
    const struct godwit_net *n = arg;
    const struct vm_config *vcfg = s->vm->cfg;
    struct virtio_net_config cfg = {
        .tap = n->tap, .queues = n->queues,
        .taps = vcfg->tap_fds ? vcfg->tap_fds + devopt_tap_queues(vcfg->nets, index) : NULL,
    };
    struct virtio_net *net;
    snprintf(s->name, sizeof(s->name), "net%u", index);
    if (n->mac) /* checked when the option was parsed */
        cfg.mac_set = devopt_parse_mac(n->mac, cfg.mac);
    int ret = virtio_net_create(&net, &cfg, s->vm->cfg->loop, &s->vm->mem, &s->vdev);
    if (ret == 0) {
        s->model = net;
        s->model_destroy = net_model_destroy;
        s->model_counters = net_model_counters;
    }
    return ret;
}

/* The console's backend fd for socket and file modes: a listening socket (a handover's, or
 * bound now) or an output file. */
static int open_console_backend(const struct vm_config *cfg)
{
    int fd = cfg->virtio_console != GODWIT_VIRTIO_CONSOLE_SOCKET
                 ? virtio_console_open_file(cfg->virtio_console_path)
             : cfg->console_listen_fd
                 ? unix_socket_adopt(*cfg->console_listen_fd, cfg->virtio_console_path, NULL)
                 : virtio_console_open_socket(cfg->virtio_console_path);
    if (fd < 0)
        log_error("virtio-console: cannot open %s: %s", cfg->virtio_console_path,
                  strerror(-fd));
    return fd;
}

/* hvc0 on the terminal (input from the VMM's console reader), a UNIX socket or a file. */
static int make_console(struct virtio_slot *s, const void *arg, unsigned index)
{
    const struct vm_config *cfg = arg;
    struct virtio_console_config con = { .in_fd = -1, .out_fd = -1 };
    struct virtio_console *console;
    int listen_fd = -1;
    (void)index;

    snprintf(s->name, sizeof(s->name), "hvc0");
    switch (cfg->virtio_console) {
    case GODWIT_VIRTIO_CONSOLE_TERMINAL:
        con.out_fd = cfg->console_out_fd;
        break;
    case GODWIT_VIRTIO_CONSOLE_FILE:
        if ((s->backend_fd = open_console_backend(cfg)) < 0)
            return s->backend_fd;
        con.out_fd = s->backend_fd;
        break;
    case GODWIT_VIRTIO_CONSOLE_SOCKET:
        if ((listen_fd = open_console_backend(cfg)) < 0)
            return listen_fd;
        break;
    case GODWIT_VIRTIO_CONSOLE_NONE:
        return -EINVAL;
    }
    int ret = virtio_console_create(&console, &con, cfg->loop, &s->vm->mem, &s->vdev);
    if (ret < 0) {
        if (listen_fd >= 0)
            close(listen_fd);
        return ret;
    }
    s->model = console;
    s->model_destroy = console_model_destroy;
    s->model_counters = console_model_counters;
    if (listen_fd >= 0) /* the console owns it from here, failure included */
        ret = virtio_console_listen(console, listen_fd);
    if (ret == 0 && cfg->virtio_console == GODWIT_VIRTIO_CONSOLE_TERMINAL)
        s->vm->virtio->terminal_console = console;
    return ret;
}

static int make_rng(struct virtio_slot *s, const void *arg, unsigned index)
{
    struct virtio_rng *rng;
    (void)arg, (void)index;
    snprintf(s->name, sizeof(s->name), "rng0");
    int ret = virtio_rng_create(&rng, &s->vm->mem, &s->vdev);
    if (ret == 0) {
        virtio_rng_set_loop(rng, s->vm->cfg->loop); /* a full ring is served over loop turns */
        s->model = rng;
        s->model_destroy = rng_model_destroy;
    }
    return ret;
}

static void vsock_model_counters(void *model, struct json_object *o)
{
    struct virtio_vsock_counters c;
    virtio_vsock_counters(model, &c);
    json_object_object_add(o, "rx_packets", json_u64(c.rx_packets));
    json_object_object_add(o, "rx_bytes", json_u64(c.rx_bytes));
    json_object_object_add(o, "tx_packets", json_u64(c.tx_packets));
    json_object_object_add(o, "tx_bytes", json_u64(c.tx_bytes));
    json_object_object_add(o, "bad_packets", json_u64(c.bad_packets));
    json_object_object_add(o, "credit_violations", json_u64(c.credit_violations));
    json_object_object_add(o, "conns_opened", json_u64(c.conns_opened));
    json_object_object_add(o, "conns_refused", json_u64(c.conns_refused));
    json_object_object_add(o, "rst_dropped", json_u64(c.rst_dropped));
    json_object_object_add(o, "conns", json_u64(c.conns));
    json_object_object_add(o, "buffered_bytes", json_u64(c.buffered));
}

/* The guest's CID in its config space; host programs on the VM's UNIX socket. */
static int make_vsock(struct virtio_slot *s, const void *arg, unsigned index)
{
    const struct vm_config *cfg = arg;
    struct virtio_vsock_config vc = {
        .guest_cid = cfg->vsock_cid, .path = cfg->vsock_path,
        .use_listen_fd = cfg->vsock_listen_fd != NULL,
        .listen_fd = cfg->vsock_listen_fd ? *cfg->vsock_listen_fd : -1,
    };
    struct virtio_vsock *vs;
    (void)index;
    snprintf(s->name, sizeof(s->name), "vsock0");
    int ret = virtio_vsock_create(&vs, &vc, cfg->loop, &s->vm->mem, &s->vdev);
    if (ret < 0) {
        log_error("virtio-vsock: cannot listen on %s: %s", cfg->vsock_path ? cfg->vsock_path : "",
                  ret == -EINVAL ? "a CID out of range or a path too long" : strerror(-ret));
        return ret;
    }
    s->model = vs;
    s->model_destroy = vsock_model_destroy;
    s->model_counters = vsock_model_counters;
    return 0;
}

/* ---- KVM plumbing ---- */

static int attach_irqfds(struct virtio_slot *s)
{
    s->nr_vectors = s->pci.nr_vectors;
    s->gsi_base = vm_alloc_msi_gsis(s->vm, s->nr_vectors);
    if (s->gsi_base < 0)
        return s->gsi_base;
    for (unsigned v = 0; v < s->nr_vectors; v++) {
        s->irqfds[v] = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        if (s->irqfds[v] < 0)
            return -errno;
        struct kvm_irqfd irqfd = { .fd = (uint32_t)s->irqfds[v],
                                   .gsi = (uint32_t)(s->gsi_base + (int)v) };
        if (ioctl(s->vm->vm_fd, KVM_IRQFD, &irqfd) < 0)
            return -errno;
    }
    return 0;
}

static int attach_kicks(struct virtio_slot *s)
{
    struct vm *vm = s->vm;
    for (unsigned q = 0; q < s->pci.nr_queues; q++) {
        struct virtio_kick *k = &s->kicks[q];
        k->slot = s;
        k->queue = q;
        k->fd = eventfd(0, EFD_CLOEXEC);
        if (k->fd < 0)
            return -errno;
        struct kvm_ioeventfd io = { .addr = virtio_pci_notify_gpa(&s->pci, q),
                                    .len = vm->virtio->doorbell_len, .fd = k->fd };
        if (ioctl(vm->vm_fd, KVM_IOEVENTFD, &io) < 0)
            return -errno;
        int ret = loop_watch_eventfd(vm->cfg->loop, &k->watch, k->fd, on_kick, k);
        if (ret < 0)
            return ret;
        k->watched = true;
        if (vm->cfg->loop->poll_ns && virtio_pci_pollable(&s->pci, q))
            loop_add_poller(vm->cfg->loop, &k->poller, on_poll, on_poll_end, k);
    }
    return 0;
}

static void slot_free(struct virtio_slot *s)
{
    if (s->vm->cfg->loop)
        loop_cancel_turn_end(s->vm->cfg->loop, &s->notify_tail);
    for (unsigned q = 0; q < VIRTIO_MAX_QUEUES; q++) {
        struct virtio_kick *k = &s->kicks[q];
        if (k->poller.added)
            loop_remove_poller(s->vm->cfg->loop, &k->poller);
        if (k->watched)
            loop_unwatch_sync(s->vm->cfg->loop, &k->watch);
        if (k->fd >= 0)
            close(k->fd);
    }
    if (s->model)
        s->model_destroy(s->model);
    if (s->backend_fd >= 0)
        close(s->backend_fd);
    if (s->pci_ready)
        virtio_pci_destroy(&s->pci);
    for (unsigned v = 0; v < VIRTIO_PCI_MAX_VECTORS; v++)
        if (s->irqfds[v] >= 0)
            close(s->irqfds[v]);
    free(s);
}

static struct virtio_slot *slot_alloc(struct vm *vm)
{
    struct virtio_slot *s = calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    s->vm = vm;
    s->backend_fd = -1;
    for (unsigned q = 0; q < VIRTIO_MAX_QUEUES; q++)
        s->kicks[q].fd = -1;
    for (unsigned v = 0; v < VIRTIO_PCI_MAX_VECTORS; v++)
        s->irqfds[v] = -1;
    return s;
}

/* The transport, the KVM plumbing and the bus entries of a slot whose model exists. */
static int slot_plug(struct vm *vm, struct pci_host *pci, struct virtio_slot *s, unsigned nr)
{
    const struct virtio_pci_host host = { .msi_route = slot_msi_route,
                                          .msi_raise = slot_msi_raise,
                                          .queue_kick = slot_queue_kick,
                                          .ctx = s };
    uint64_t bar = LAYOUT_PCI_MMIO_START + (uint64_t)nr * VIRTIO_PCI_BAR_SIZE;
    int ret = virtio_pci_init(&s->pci, &s->vdev, &host, bar);
    if (ret < 0)
        return ret;
    s->pci_ready = true;
    s->vdev.defer_notify = slot_defer_notify;
    if ((ret = attach_irqfds(s)) < 0 || (ret = attach_kicks(s)) < 0)
        return ret;
    if ((ret = pci_host_add_device(pci, nr, &virtio_pci_config_ops, &s->pci)) < 0)
        return ret;
    return bus_register(&vm->mmio, bar, VIRTIO_PCI_BAR_SIZE, s->name, &virtio_pci_bar_ops,
                        &s->pci);
}

/* ---- the slot as a registry entry ---- */

/* The model's quiesce and resume, under the transport's lock like every other model call. */
static int slot_quiesce(void *dev)
{
    struct virtio_slot *s = dev;
    int ret = 0;
    pthread_mutex_lock(&s->pci.lock);
    if (s->vdev.ops->quiesce)
        ret = s->vdev.ops->quiesce(&s->vdev);
    virtio_flush_notify(&s->vdev); /* quiet means answered: the interrupts too, now */
    pthread_mutex_unlock(&s->pci.lock);
    return ret;
}

static void slot_resume(void *dev)
{
    struct virtio_slot *s = dev;
    pthread_mutex_lock(&s->pci.lock);
    if (s->vdev.ops->resume)
        s->vdev.ops->resume(&s->vdev);
    pthread_mutex_unlock(&s->pci.lock);
}

static void slot_save(void *dev, struct state_writer *w)
{
    struct virtio_slot *s = dev;
    virtio_pci_save(&s->pci, w);
}

/* After a load, every queue is looked at once: the guest may have offered buffers and kicked
 * before the snapshot, and will not kick again for them. */
static int slot_load(void *dev, struct state_cursor *c, uint32_t version)
{
    struct virtio_slot *s = dev;
    int ret = virtio_pci_load(&s->pci, c, version);
    for (unsigned q = 0; ret == 0 && q < s->pci.nr_queues; q++)
        eventfd_signal(s->kicks[q].fd);
    return ret;
}

static struct json_object *slot_counters(void *dev);

static void slot_destroy(void *dev)
{
    struct virtio_slot *s = dev;
    if (s->vm->virtio->terminal_console == s->model)
        s->vm->virtio->terminal_console = NULL;
    slot_free(s);
}

static const struct vm_device_ops slot_ops = {
    .state_version = VIRTIO_PCI_STATE_VERSION,
    .quiesce = slot_quiesce,
    .resume = slot_resume,
    .save = slot_save,
    .load = slot_load,
    .counters = slot_counters,
    .destroy = slot_destroy,
};

/* Creates the model with `make`, then plugs it into the next free slot. */
static int add_device(struct vm *vm, struct pci_host *pci,
                      int (*make)(struct virtio_slot *s, const void *arg, unsigned index),
                      const void *arg, unsigned index)
{
    struct vm_virtio *vv = vm->virtio;
    unsigned nr = vv->nr_slots + 1; /* slot 0 is the host bridge */
    if (nr >= PCI_SLOTS) {
        log_error("virtio: too many devices (at most %d)", PCI_SLOTS - 1);
        return -ENOSPC;
    }
    struct virtio_slot *s = slot_alloc(vm);
    if (!s)
        return -ENOMEM;
    int ret = make(s, arg, index);
    if (ret == 0 && (ret = slot_plug(vm, pci, s, nr)) < 0)
        log_error("virtio: cannot attach %s: %s", s->name, strerror(-ret));
    if (ret == 0 && (ret = vm_registry_add(&vm->registry, s->name, &slot_ops, s)) < 0)
        log_error("virtio: cannot register %s: %s", s->name, strerror(-ret));
    if (ret < 0) {
        slot_free(s);
        return ret;
    }
    vv->nr_slots++;
    return 0;
}

int vm_virtio_create(struct vm *vm, struct pci_host *pci)
{
    const struct vm_config *cfg = vm->cfg;
    int ret = 0;

    vm->virtio = calloc(1, sizeof(*vm->virtio));
    if (!vm->virtio)
        return -ENOMEM;
    if (!cfg->loop) /* no main loop to run device I/O: only a VM without virtio devices */
        return cfg->nr_disks || cfg->nr_nets || cfg->virtio_console || !cfg->no_rng ||
                       cfg->vsock_cid ? -EINVAL : 0;
    if (kvm_check_extension(vm, KVM_CAP_IOEVENTFD) <= 0 ||
        kvm_check_extension(vm, KVM_CAP_IRQFD) <= 0) {
        log_error("virtio: KVM lacks ioeventfd or irqfd");
        return -ENOTSUP;
    }
    /* Linux writes a 16-bit queue index; KVM can match a write of any width where it may. */
    vm->virtio->doorbell_len = kvm_check_extension(vm, KVM_CAP_IOEVENTFD_ANY_LENGTH) > 0 ? 0 : 2;
    for (unsigned i = 0; i < cfg->nr_disks && ret == 0; i++)
        ret = add_device(vm, pci, make_blk, &cfg->disks[i], i);
    for (unsigned i = 0; i < cfg->nr_nets && ret == 0; i++)
        ret = add_device(vm, pci, make_net, &cfg->nets[i], i);
    if (ret == 0 && cfg->virtio_console != GODWIT_VIRTIO_CONSOLE_NONE)
        ret = add_device(vm, pci, make_console, cfg, 0);
    if (ret == 0 && !cfg->no_rng)
        ret = add_device(vm, pci, make_rng, NULL, 0);
    /* Last, so that the slots of the others stay where snapshots without it have them. */
    if (ret == 0 && cfg->vsock_cid)
        ret = add_device(vm, pci, make_vsock, cfg, 0);
    return ret;
}

void vm_virtio_destroy(struct vm *vm)
{
    struct vm_virtio *vv = vm->virtio;
    if (!vv)
        return;
    free(vv);
    vm->virtio = NULL;
}

/* A slot of the registry, or NULL for another kind of entry. */
static struct virtio_slot *slot_of(const struct vm_device_entry *e)
{
    return e->ops == &slot_ops ? e->dev : NULL;
}

int vm_virtio_lock_disks(struct vm *vm)
{
    int left = 0;
    for (unsigned i = 0; i < vm->registry.nr; i++) {
        struct virtio_slot *s = slot_of(&vm->registry.entries[i]);
        if (!s || !s->unlocked_disk)
            continue;
        int ret = virtio_blk_lock(s->model);
        if (ret == 0)
            s->unlocked_disk = false;
        else if (ret == -EBUSY)
            left++;
        else
            return ret;
    }
    return left;
}

/* Each kind's descriptors for a handover, written to out[] (at most VIRTIO_NET_MAX_PAIRS). */
static unsigned blk_handover_fds(void *model, int *out)
{
    out[0] = virtio_blk_fd(model);
    return 1;
}
static unsigned net_handover_fds(void *model, int *out) { return virtio_net_tap_fds(model, out); }
static unsigned console_handover_fds(void *model, int *out)
{
    out[0] = virtio_console_listen_fd(model); /* socket mode only */
    return out[0] >= 0;
}
static unsigned vsock_handover_fds(void *model, int *out)
{
    out[0] = virtio_vsock_listen_fd(model);
    return 1;
}

/* Appends the descriptors of every device of one kind (by its destroy op), in device order;
 * returns how many. */
static unsigned append_handover_fds(const struct vm *vm, void (*kind)(void *model),
                                    unsigned (*fds_of)(void *model, int *out),
                                    struct mig_devices *devs, unsigned *n)
{
    unsigned before = *n;
    for (unsigned i = 0; i < vm->registry.nr; i++) {
        const struct virtio_slot *s = slot_of(&vm->registry.entries[i]);
        int fds[VIRTIO_NET_MAX_PAIRS];
        unsigned nr = s && s->model_destroy == kind ? fds_of(s->model, fds) : 0;
        for (unsigned q = 0; q < nr && *n < MIG_MAX_DEVICE_FDS; q++)
            devs->fds[(*n)++] = fds[q];
    }
    return *n - before;
}

void vm_virtio_handover_fds(const struct vm *vm, struct mig_devices *devs)
{
    unsigned n = 0;
    *devs = (struct mig_devices){ 0 };
    devs->nr_disks = append_handover_fds(vm, blk_model_destroy, blk_handover_fds, devs, &n);
    devs->nr_taps = append_handover_fds(vm, net_model_destroy, net_handover_fds, devs, &n);
    devs->nr_consoles =
        append_handover_fds(vm, console_model_destroy, console_handover_fds, devs, &n);
    devs->nr_vsocks = append_handover_fds(vm, vsock_model_destroy, vsock_handover_fds, devs, &n);
}

int vm_virtio_disk_fd(const struct vm *vm, unsigned index)
{
    for (unsigned i = 0; i < vm->registry.nr; i++) {
        const struct virtio_slot *s = slot_of(&vm->registry.entries[i]);
        if (s && s->model_destroy == blk_model_destroy && index-- == 0)
            return virtio_blk_fd(s->model);
    }
    return -1;
}

void vm_virtio_own_sockets(struct vm *vm, bool own)
{
    for (unsigned i = 0; i < vm->registry.nr; i++) {
        struct virtio_slot *s = slot_of(&vm->registry.entries[i]);
        if (s && s->model_destroy == vsock_model_destroy)
            virtio_vsock_own_path(s->model, own);
    }
}

/* The console device on a socket (a console in other modes has no listening socket). */
static struct virtio_console *socket_console(struct vm *vm)
{
    for (unsigned i = 0; i < vm->registry.nr; i++) {
        struct virtio_slot *s = slot_of(&vm->registry.entries[i]);
        if (s && s->model_destroy == console_model_destroy &&
            virtio_console_listen_fd(s->model) >= 0)
            return s->model;
    }
    return NULL;
}

int vm_virtio_console_client(struct vm *vm, struct virtio_console_client *c)
{
    struct virtio_console *con = socket_console(vm);
    c->fd = -1;
    return con ? virtio_console_client(con, c) : 0;
}

int vm_virtio_adopt_console_client(struct vm *vm, const struct virtio_console_client *c)
{
    struct virtio_console *con = socket_console(vm);
    if (con)
        return virtio_console_adopt_client(con, c);
    if (c->fd >= 0)
        close(c->fd);
    return -ENODEV;
}

size_t vm_virtio_console_input(struct vm *vm, const uint8_t *buf, size_t len)
{
    struct virtio_console *con = vm->virtio ? vm->virtio->terminal_console : NULL;
    return con ? virtio_console_input(con, buf, len) : 0;
}

int vm_virtio_console_resize(struct vm *vm, uint16_t cols, uint16_t rows)
{
    struct virtio_console *con = vm->virtio ? vm->virtio->terminal_console : NULL;
    if (!con)
        return -ENODEV;
    virtio_console_set_size(con, cols, rows);
    return 0;
}

/* Milliseconds since `ns` (a monotonic_ns() value), or null for never. */
static struct json_object *json_age_ms(uint64_t ns, uint64_t now)
{
    return ns ? json_u64((now - ns) / 1000000u) : NULL;
}

/*
 * One enabled queue: the device's indexes beside the driver's, its kicks and its interrupts.
 * A queue whose avail_idx runs ahead of last_avail_idx has work the device has not taken; one
 * whose used_idx runs ahead of used_event (with EVENT_IDX) has answers the driver has not
 * seen: the two halves of a stall.
 */
static struct json_object *queue_counters(struct virtio_slot *s, unsigned q, uint64_t now)
{
    struct virtio_pci_queue_status st;
    if (!virtio_pci_queue_status(&s->pci, q, &st) || !st.ring.enabled)
        return NULL;
    const struct virtq_status *r = &st.ring;
    const struct virtio_kick *k = &s->kicks[q];
    struct json_object *o = json_object_new_object();
    json_object_object_add(o, "queue", json_u64(q));
    json_object_object_add(o, "size", json_u64(r->size));
    json_object_object_add(o, "avail_idx", json_u64(r->avail_idx));
    json_object_object_add(o, "last_avail_idx", json_u64(r->last_avail_idx));
    json_object_object_add(o, "used_idx", json_u64(r->used_idx));
    if (r->event_idx) {
        json_object_object_add(o, "used_event", json_u64(r->used_event));
        json_object_object_add(o, "avail_event", json_u64(r->avail_event));
    } else {
        json_object_object_add(o, "no_interrupt", json_object_new_boolean(r->no_interrupt));
    }
    json_object_object_add(o, "broken", json_object_new_boolean(r->broken));
    json_object_object_add(o, "kicks", json_u64(__atomic_load_n(&k->count, __ATOMIC_RELAXED)));
    if (k->poller.added)
        json_object_object_add(o, "polled",
                               json_u64(__atomic_load_n(&k->polled, __ATOMIC_RELAXED)));
    json_object_object_add(o, "last_kick_ms",
                           json_age_ms(__atomic_load_n(&k->last_ns, __ATOMIC_RELAXED), now));
    if (st.vector < s->nr_vectors) {
        json_object_object_add(o, "vector", json_u64(st.vector));
        json_object_object_add(o, "vector_masked", json_object_new_boolean(st.masked));
        json_object_object_add(o, "vector_pending", json_object_new_boolean(st.pending));
        json_object_object_add(o, "interrupts", json_u64(__atomic_load_n(
                                                    &s->vector_count[st.vector], __ATOMIC_RELAXED)));
        json_object_object_add(o, "last_interrupt_ms",
                               json_age_ms(__atomic_load_n(&s->vector_last_ns[st.vector],
                                                           __ATOMIC_RELAXED), now));
    }
    return o;
}

static struct json_object *slot_counters(void *dev)
{
    struct virtio_slot *s = dev;
    struct json_object *o = json_object_new_object();
    uint64_t kicks = 0, interrupts = 0, polled = 0;
    bool polls = false; /* as queue_counters says it: per queue the loop polls */
    for (unsigned q = 0; q < s->pci.nr_queues; q++) {
        kicks += __atomic_load_n(&s->kicks[q].count, __ATOMIC_RELAXED);
        polled += __atomic_load_n(&s->kicks[q].polled, __ATOMIC_RELAXED);
        polls |= s->kicks[q].poller.added;
    }
    for (unsigned v = 0; v < s->nr_vectors; v++)
        interrupts += __atomic_load_n(&s->vector_count[v], __ATOMIC_RELAXED);
    json_object_object_add(o, "kicks", json_u64(kicks));
    if (polls)
        json_object_object_add(o, "polled", json_u64(polled));
    json_object_object_add(o, "interrupts", json_u64(interrupts));
    if (s->model_counters) {
        virtio_lock(&s->vdev); /* a model's lists change under it (disks' requests) */
        s->model_counters(s->model, o);
        virtio_unlock(&s->vdev);
    }
    struct json_object *queues = json_object_new_array();
    uint64_t now = monotonic_ns();
    for (unsigned q = 0; q < s->pci.nr_queues; q++) {
        struct json_object *qo = queue_counters(s, q, now);
        if (qo)
            json_object_array_add(queues, qo);
    }
    json_object_object_add(o, "queues", queues);
    return o;
}
