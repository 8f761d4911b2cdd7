/* pci.h: the modern (virtio 1.x) PCI transport: config space, BAR registers, MSI-X. */
#ifndef GODWIT_VIRTIO_PCI_H
#define GODWIT_VIRTIO_PCI_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "mmio/bus.h"
#include "mmio/pci_host.h"
#include "virtio/virtio.h"

#define VIRTIO_PCI_VENDOR 0x1af4
#define VIRTIO_PCI_DEVICE_BASE 0x1040 /* + the virtio device ID: modern-only devices */
#define VIRTIO_MSI_NO_VECTOR 0xffff

/*
 * The one BAR: 64-bit, non-prefetchable, 16 KiB, at BAR 4 (like QEMU's modern devices).
 * It is firmware-assigned: the VMM places it at bar_gpa and the guest cannot move it. A
 * 4-byte write of all ones to either half reads back the size mask (so Linux can size it);
 * any other write puts bar_gpa back. Linux keeps such a BAR where it is as long as it lies
 * inside the host bridge window (LAYOUT_PCI_MMIO_START..END).
 */
#define VIRTIO_PCI_BAR 4
#define VIRTIO_PCI_BAR_SIZE 0x4000u

/* The BAR's layout. Every region is 8-byte aligned, so no aligned access crosses two. */
#define VIRTIO_PCI_COMMON_OFFSET 0x0000u
#define VIRTIO_PCI_COMMON_LEN 0x38u /* virtio_pci_common_cfg without the 1.2 extras */
#define VIRTIO_PCI_ISR_OFFSET 0x1000u
#define VIRTIO_PCI_DEVICE_OFFSET 0x2000u
#define VIRTIO_PCI_DEVICE_MAX 0x1000u /* the largest device config space accepted */
#define VIRTIO_PCI_NOTIFY_OFFSET 0x3000u
#define VIRTIO_PCI_NOTIFY_MULTIPLIER 4u /* one 4-byte doorbell per queue */
#define VIRTIO_PCI_MSIX_TABLE_OFFSET 0x3400u
#define VIRTIO_PCI_MSIX_PBA_OFFSET 0x3c00u

/* One MSI-X vector per queue plus one for configuration changes. */
#define VIRTIO_PCI_MAX_VECTORS (VIRTIO_MAX_QUEUES + 1)
#define VIRTIO_PCI_MSIX_ENTRY_SIZE 16u

struct virtio_pci;

/*
 * How the transport reaches the VMM without knowing KVM (unit tests fake it). msi_route is
 * called whenever a vector's address, data or effective mask changes (masked: the entry's
 * mask bit, the function mask, or MSI-X disabled); msi_raise only for an unmasked vector;
 * queue_kick for a doorbell write that came through the MMIO bus (not ioeventfd).
 * Called with the transport's lock held: they must not call back into the transport, except
 * queue_kick, which is called without it.
 */
struct virtio_pci_host {
    int (*msi_route)(void *ctx, unsigned vector_index, uint64_t address, uint32_t data,
                     bool masked);
    void (*msi_raise)(void *ctx, unsigned vector_index);
    void (*queue_kick)(void *ctx, struct virtio_pci *vp, unsigned queue);
    void *ctx;
};

/* What the driver programmed for one queue before enabling it. */
struct virtio_pci_queue {
    uint16_t size;
    uint16_t msix_vector;
    uint64_t desc, driver, device;
};

struct virtio_pci {
    /* Recursive: a device model may raise interrupts or NEEDS_RESET from inside activate or
     * reset, which the transport calls with the lock held. */
    pthread_mutex_t lock;
    struct virtio_device *vdev;
    struct virtio_pci_host host;
    uint64_t bar_gpa;
    struct pci_config_space cs;
    uint8_t msix_cap; /* offset of the MSI-X capability in cs */
    unsigned nr_queues, nr_vectors;

    uint32_t device_feature_select, driver_feature_select;
    uint64_t driver_features; /* being negotiated; committed to vdev at FEATURES_OK */
    uint16_t config_msix_vector;
    uint16_t queue_select;
    uint8_t config_generation;
    uint8_t isr;
    unsigned needs_reset_logged; /* NEEDS_RESET warnings so far, capped */
    struct virtio_pci_queue queues[VIRTIO_MAX_QUEUES];

    uint8_t msix_table[VIRTIO_PCI_MAX_VECTORS * VIRTIO_PCI_MSIX_ENTRY_SIZE];
    uint64_t msix_pba[2];
};

/*
 * Builds the transport for `vdev` (whose ops, model and gm are set) with its BAR at
 * `bar_gpa` (16 KiB aligned, inside the PCI window), and fills vdev's interrupt_queue,
 * interrupt_config, needs_reset and transport. `host` is copied. Returns 0 or -EINVAL.
 */
int virtio_pci_init(struct virtio_pci *vp, struct virtio_device *vdev,
                    const struct virtio_pci_host *host, uint64_t bar_gpa);
void virtio_pci_destroy(struct virtio_pci *vp);

/* For pci_host_add_device(host, slot, &virtio_pci_config_ops, vp). */
extern const struct pci_device_ops virtio_pci_config_ops;
/* For bus_register(mmio, bar_gpa, VIRTIO_PCI_BAR_SIZE, name, &virtio_pci_bar_ops, vp). */
extern const struct device_ops virtio_pci_bar_ops;

/* One queue as it stands, with its MSI-X vector's state: for counters and stall reports. */
struct virtio_pci_queue_status {
    struct virtq_status ring;
    uint16_t vector;  /* VIRTIO_MSI_NO_VECTOR when none */
    bool masked;      /* the vector (or MSI-X as a whole) is masked */
    bool pending;     /* raised while masked: delivered when unmasked */
};

/* Returns false for a queue the device does not have. Any thread. */
bool virtio_pci_queue_status(struct virtio_pci *vp, unsigned queue,
                             struct virtio_pci_queue_status *st);

/* The guest address of queue `queue`'s doorbell (for a KVM ioeventfd), 0 when none. */
uint64_t virtio_pci_notify_gpa(const struct virtio_pci *vp, unsigned queue);

struct state_writer;
struct state_cursor;

/*
 * Snapshots: the transport's registers, feature negotiation, MSI-X table and PBA, the guest-
 * writable bytes of its config space and each queue's addresses and indexes, then the model's
 * own state. Save with the device quiesced. Load (into a device just built from the same
 * configuration, before the vCPUs run) checks every value first, then applies them, routes
 * the MSI-X vectors again and reactivates a running device. Returns 0 or -errno after one
 * line naming the bad value.
 */
#define VIRTIO_PCI_STATE_VERSION 1u
void virtio_pci_save(struct virtio_pci *vp, struct state_writer *w);
int virtio_pci_load(struct virtio_pci *vp, struct state_cursor *c, uint32_t version);

/*
 * The main loop's side of a doorbell (from queue_kick or an ioeventfd): passes it to the
 * device model when the driver is running and the queue is enabled; drops it otherwise.
 */
void virtio_pci_kick(struct virtio_pci *vp, unsigned queue);

/* Whether the model lets the main loop poll `queue` (virtio_device_ops.pollable). */
bool virtio_pci_pollable(struct virtio_pci *vp, unsigned queue);

/*
 * The main loop polling `queue` (`--io-poll`): virtio_pci_poll() stops the driver's kicks
 * (virtq_poll_begin) and passes entries it finds to the model, as a kick would;
 * virtio_pci_poll_end() asks for kicks again and passes what came meanwhile. Each returns
 * true when the model took entries: only progress counts, so that a queue whose model takes
 * nothing now (paused, throttled) cannot keep the loop from waiting.
 */
bool virtio_pci_poll(struct virtio_pci *vp, unsigned queue);
bool virtio_pci_poll_end(struct virtio_pci *vp, unsigned queue);

#endif
