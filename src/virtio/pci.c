/* pci.c: the modern virtio PCI transport: capabilities, common config, doorbells, MSI-X. */
#include "virtio/pci.h"

#include <errno.h>
#include <linux/pci_regs.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "migration/state.h"

/* virtio_pci_cap cfg_type values (virtio 1.2, 4.1.4). */
#define CAP_COMMON 1
#define CAP_NOTIFY 2
#define CAP_ISR 3
#define CAP_DEVICE 4

/* Common configuration fields (virtio 1.2, 4.1.4.3). */
#define CC_DFSELECT 0x00
#define CC_DF 0x04
#define CC_GFSELECT 0x08
#define CC_GF 0x0c
#define CC_MSIX_CONFIG 0x10
#define CC_NUM_QUEUES 0x12
#define CC_STATUS 0x14
#define CC_CFG_GENERATION 0x15
#define CC_Q_SELECT 0x16
#define CC_Q_SIZE 0x18
#define CC_Q_MSIX 0x1a
#define CC_Q_ENABLE 0x1c
#define CC_Q_NOFF 0x1e
#define CC_Q_DESCLO 0x20
#define CC_Q_DESCHI 0x24
#define CC_Q_AVAILLO 0x28
#define CC_Q_AVAILHI 0x2c
#define CC_Q_USEDLO 0x30
#define CC_Q_USEDHI 0x34
#define CC_SNAPSHOT_LEN 0x40

#define ISR_QUEUE 1
#define ISR_CONFIG 2

#define MSIX_ENTRY_CTRL 12
#define MSIX_CTRL_MASKED 1u

#define TRANSPORT_FEATURES                                                              \
    ((1ULL << VIRTIO_F_VERSION_1) | (1ULL << VIRTIO_F_INDIRECT_DESC) |                  \
     (1ULL << VIRTIO_F_EVENT_IDX))

struct virtio_pci_cap {
    uint8_t cap_vndr, cap_next, cap_len, cfg_type, bar, id, padding[2];
    uint32_t offset, length;
    uint32_t notify_off_multiplier; /* only in the NOTIFY capability */
} __attribute__((packed));

struct msix_cap {
    uint8_t cap_id, cap_next;
    uint16_t control;
    uint32_t table, pba; /* offset | BIR */
} __attribute__((packed));

static void put_le(uint8_t *dst, unsigned len, uint64_t value)
{
    for (unsigned i = 0; i < len; i++)
        dst[i] = (uint8_t)(value >> (8 * i));
}

static uint64_t get_le(const uint8_t *src, unsigned len)
{
    uint64_t value = 0;
    for (unsigned i = 0; i < len; i++)
        value |= (uint64_t)src[i] << (8 * i);
    return value;
}

static uint64_t offered_features(struct virtio_pci *vp)
{
    return vp->vdev->ops->features(vp->vdev) | TRANSPORT_FEATURES;
}

static struct virtio_pci_queue *selected_queue(struct virtio_pci *vp)
{
    return vp->queue_select < vp->nr_queues ? &vp->queues[vp->queue_select] : NULL;
}

/* ---- MSI-X ---- */

static uint16_t msix_control(const struct virtio_pci *vp)
{
    return (uint16_t)pci_config_get(&vp->cs, vp->msix_cap + PCI_MSIX_FLAGS, 2);
}

/* Whether a vector may fire now: MSI-X on, the function and the entry unmasked. */
static bool vector_masked(const struct virtio_pci *vp, unsigned vector)
{
    uint16_t control = msix_control(vp);
    const uint8_t *entry = &vp->msix_table[vector * VIRTIO_PCI_MSIX_ENTRY_SIZE];

    return !(control & PCI_MSIX_FLAGS_ENABLE) || (control & PCI_MSIX_FLAGS_MASKALL) ||
           (get_le(entry + MSIX_ENTRY_CTRL, 4) & MSIX_CTRL_MASKED);
}

static void route_vector(struct virtio_pci *vp, unsigned vector)
{
    const uint8_t *entry = &vp->msix_table[vector * VIRTIO_PCI_MSIX_ENTRY_SIZE];
    int ret;

    if (!vp->host.msi_route)
        return;
    ret = vp->host.msi_route(vp->host.ctx, vector, get_le(entry, 8),
                             (uint32_t)get_le(entry + 8, 4), vector_masked(vp, vector));
    if (ret < 0)
        log_warn("virtio-pci %s: MSI-X vector %u route failed (%d)", vp->vdev->ops->name,
                 vector, ret);
}

static bool pending(const struct virtio_pci *vp, unsigned vector)
{
    return vp->msix_pba[vector / 64] & (1ULL << (vector % 64));
}

static void set_pending(struct virtio_pci *vp, unsigned vector, bool on)
{
    if (on)
        vp->msix_pba[vector / 64] |= 1ULL << (vector % 64);
    else
        vp->msix_pba[vector / 64] &= ~(1ULL << (vector % 64));
}

/* Fires a vector, or holds it in the PBA while it is masked (PCI's pending-bit rule). */
static void signal_vector(struct virtio_pci *vp, uint16_t vector)
{
    uint16_t control = msix_control(vp);

    /* No INTx pin: with MSI-X off or no vector, only the ISR says what happened. */
    if (vector >= vp->nr_vectors || !(control & PCI_MSIX_FLAGS_ENABLE))
        return;
    if (vector_masked(vp, vector)) {
        set_pending(vp, vector, true);
        return;
    }
    if (vp->host.msi_raise)
        vp->host.msi_raise(vp->host.ctx, vector);
}

static void deliver_if_unmasked(struct virtio_pci *vp, unsigned vector)
{
    if (pending(vp, vector) && !vector_masked(vp, vector)) {
        set_pending(vp, vector, false);
        if (vp->host.msi_raise)
            vp->host.msi_raise(vp->host.ctx, vector);
    }
}

/* Enable or function mask changed: every vector's effective mask may have changed. */
static void msix_control_changed(struct virtio_pci *vp)
{
    for (unsigned v = 0; v < vp->nr_vectors; v++) {
        route_vector(vp, v);
        deliver_if_unmasked(vp, v);
    }
}

static void msix_table_write(struct virtio_pci *vp, uint32_t rel, const uint8_t *data,
                             uint32_t len)
{
    unsigned vector = rel / VIRTIO_PCI_MSIX_ENTRY_SIZE;
    uint8_t before[VIRTIO_PCI_MSIX_ENTRY_SIZE];
    uint8_t *entry;

    if (vector >= vp->nr_vectors)
        return;
    entry = &vp->msix_table[vector * VIRTIO_PCI_MSIX_ENTRY_SIZE];
    memcpy(before, entry, sizeof(before));
    memcpy(&vp->msix_table[rel], data, len);
    /* Vector control bits 31:1 are reserved and read as zero. */
    put_le(entry + MSIX_ENTRY_CTRL, 4, get_le(entry + MSIX_ENTRY_CTRL, 4) & MSIX_CTRL_MASKED);
    if (memcmp(before, entry, sizeof(before)) == 0)
        return;
    route_vector(vp, vector);
    deliver_if_unmasked(vp, vector);
}

static void msix_table_read(struct virtio_pci *vp, uint32_t rel, uint8_t *data, uint32_t len)
{
    if (rel / VIRTIO_PCI_MSIX_ENTRY_SIZE < vp->nr_vectors)
        memcpy(data, &vp->msix_table[rel], len);
}

static void msix_pba_read(struct virtio_pci *vp, uint32_t rel, uint8_t *data, uint32_t len)
{
    for (uint32_t i = 0; i < len; i++)
        if (rel + i < sizeof(vp->msix_pba))
            data[i] = (uint8_t)(vp->msix_pba[(rel + i) / 8] >> (8 * ((rel + i) % 8)));
}

/* ---- Device status and reset ---- */

static void reset_state(struct virtio_pci *vp)
{
    struct virtio_device *vdev = vp->vdev;

    for (unsigned q = 0; q < VIRTIO_MAX_QUEUES; q++)
        virtq_reset(&vdev->queues[q]);
    for (unsigned q = 0; q < vp->nr_queues; q++)
        vp->queues[q] = (struct virtio_pci_queue){ .size = vdev->ops->queue_max_size,
                                                   .msix_vector = VIRTIO_MSI_NO_VECTOR };
    vdev->status = 0;
    vdev->driver_features = 0;
    vp->driver_features = 0;
    vp->device_feature_select = 0;
    vp->driver_feature_select = 0;
    vp->config_msix_vector = VIRTIO_MSI_NO_VECTOR;
    vp->queue_select = 0;
    vp->isr = 0;
}

/* Device status 0: the model first, so it stops using the queues before they go. */
static void transport_reset(struct virtio_pci *vp)
{
    if (vp->vdev->ops->reset)
        vp->vdev->ops->reset(vp->vdev);
    reset_state(vp);
}

static void signal_config(struct virtio_pci *vp)
{
    vp->isr |= ISR_CONFIG;
    signal_vector(vp, vp->config_msix_vector);
}

static void mark_needs_reset(struct virtio_pci *vp, const char *why)
{
    struct virtio_device *vdev = vp->vdev;

    if (vdev->status & VIRTIO_STATUS_NEEDS_RESET)
        return;
    /* The guest can break and reset the device in a loop: bound the log. */
    if (vp->needs_reset_logged < 8) {
        vp->needs_reset_logged++;
        log_warn("virtio-pci %s: device needs reset: %s", vdev->ops->name, why);
    }
    vdev->status |= VIRTIO_STATUS_NEEDS_RESET;
    /* Before DRIVER_OK the driver is not listening (virtio 1.2, 2.1.2). */
    if (vdev->status & VIRTIO_STATUS_DRIVER_OK)
        signal_config(vp);
}

/* FEATURES_OK holds only for a subset of what was offered that includes VERSION_1. */
static bool features_acceptable(struct virtio_pci *vp)
{
    return !(vp->driver_features & ~offered_features(vp)) &&
           (vp->driver_features & (1ULL << VIRTIO_F_VERSION_1));
}

static void write_status(struct virtio_pci *vp, uint8_t value)
{
    struct virtio_device *vdev = vp->vdev;
    uint8_t old = vdev->status;
    /* Only the bits a driver may set (virtio 1.2, 2.1): the reserved ones (0x10, 0x20) are
     * dropped, as a snapshot's load refuses them. */
    const uint8_t driver_bits = VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER |
                                VIRTIO_STATUS_DRIVER_OK | VIRTIO_STATUS_FEATURES_OK |
                                VIRTIO_STATUS_FAILED;
    uint8_t added = value & ~old & driver_bits;

    if (value == 0) {
        transport_reset(vp);
        return;
    }
    if ((added & VIRTIO_STATUS_FEATURES_OK) && !features_acceptable(vp))
        added &= (uint8_t)~VIRTIO_STATUS_FEATURES_OK;
    if ((added & VIRTIO_STATUS_DRIVER_OK) &&
        !((old | added) & VIRTIO_STATUS_FEATURES_OK))
        added &= (uint8_t)~VIRTIO_STATUS_DRIVER_OK;
    /* The driver may only add bits (virtio 1.2, 2.1.1); clearing one takes a reset. */
    vdev->status = old | added;
    if (added & VIRTIO_STATUS_FEATURES_OK)
        vdev->driver_features = vp->driver_features;
    if ((added & VIRTIO_STATUS_DRIVER_OK) && vdev->ops->activate &&
        vdev->ops->activate(vdev) < 0)
        mark_needs_reset(vp, "activation failed");
}

/* ---- Common configuration ---- */

static void common_snapshot(struct virtio_pci *vp, uint8_t *b)
{
    struct virtio_pci_queue *q = selected_queue(vp);
    uint64_t offered = offered_features(vp);

    memset(b, 0, CC_SNAPSHOT_LEN);
    put_le(b + CC_DFSELECT, 4, vp->device_feature_select);
    if (vp->device_feature_select < 2)
        put_le(b + CC_DF, 4, offered >> (32 * vp->device_feature_select));
    put_le(b + CC_GFSELECT, 4, vp->driver_feature_select);
    if (vp->driver_feature_select < 2)
        put_le(b + CC_GF, 4, vp->driver_features >> (32 * vp->driver_feature_select));
    put_le(b + CC_MSIX_CONFIG, 2, vp->config_msix_vector);
    put_le(b + CC_NUM_QUEUES, 2, vp->nr_queues);
    b[CC_STATUS] = vp->vdev->status;
    b[CC_CFG_GENERATION] = vp->config_generation;
    put_le(b + CC_Q_SELECT, 2, vp->queue_select);
    if (!q)
        return;
    put_le(b + CC_Q_SIZE, 2, q->size);
    put_le(b + CC_Q_MSIX, 2, q->msix_vector);
    put_le(b + CC_Q_ENABLE, 2, vp->vdev->queues[vp->queue_select].enabled);
    put_le(b + CC_Q_NOFF, 2, vp->queue_select);
    put_le(b + CC_Q_DESCLO, 8, q->desc);
    put_le(b + CC_Q_AVAILLO, 8, q->driver);
    put_le(b + CC_Q_USEDLO, 8, q->device);
}

static void common_read(struct virtio_pci *vp, uint32_t rel, uint8_t *data, uint32_t len)
{
    uint8_t snapshot[CC_SNAPSHOT_LEN];

    if (rel + len > CC_SNAPSHOT_LEN)
        return;
    common_snapshot(vp, snapshot);
    memcpy(data, snapshot + rel, len);
}

static void enable_queue(struct virtio_pci *vp)
{
    struct virtio_device *vdev = vp->vdev;
    struct virtio_pci_queue *q = &vp->queues[vp->queue_select];
    int ret;

    if (vdev->queues[vp->queue_select].enabled)
        return;
    ret = virtq_setup(&vdev->queues[vp->queue_select], vdev->gm, q->size, q->desc, q->driver,
                      q->device, virtio_has_feature(vdev, VIRTIO_F_EVENT_IDX),
                      virtio_has_feature(vdev, VIRTIO_F_INDIRECT_DESC));
    if (ret < 0)
        mark_needs_reset(vp, "queue rings outside RAM or misaligned");
    else
        virtq_init_used_flags(&vdev->queues[vp->queue_select]);
}

/* A vector number the driver may use: one of ours, or none. */
static uint16_t checked_vector(const struct virtio_pci *vp, uint64_t value)
{
    return value < vp->nr_vectors ? (uint16_t)value : VIRTIO_MSI_NO_VECTOR;
}

static void set_driver_features(struct virtio_pci *vp, uint32_t value)
{
    unsigned shift = 32 * vp->driver_feature_select;

    /* Frozen once FEATURES_OK is set (virtio 1.2, 3.1.1). */
    if (vp->driver_feature_select >= 2 || (vp->vdev->status & VIRTIO_STATUS_FEATURES_OK))
        return;
    vp->driver_features = (vp->driver_features & ~(0xffffffffULL << shift)) |
                          (uint64_t)value << shift;
}

/* Queue addresses: as one 8-byte write or as two 4-byte halves. */
static void set_queue_address(struct virtio_pci *vp, uint32_t rel, uint32_t len, uint64_t value)
{
    struct virtio_pci_queue *q = selected_queue(vp);
    uint64_t *field;

    if (!q || vp->vdev->queues[vp->queue_select].enabled || (len != 4 && len != 8))
        return;
    field = rel < CC_Q_AVAILLO ? &q->desc : rel < CC_Q_USEDLO ? &q->driver : &q->device;
    if (len == 8)
        *field = value;
    else if (rel % 8)
        *field = (*field & 0xffffffffULL) | value << 32;
    else
        *field = (*field & ~0xffffffffULL) | (uint32_t)value;
}

static bool power_of_two(uint64_t v)
{
    return v && !(v & (v - 1));
}

static void queue_field_write(struct virtio_pci *vp, uint32_t rel, uint64_t value)
{
    struct virtio_pci_queue *q = selected_queue(vp);
    bool enabled;

    if (!q)
        return;
    enabled = vp->vdev->queues[vp->queue_select].enabled;
    if (rel == CC_Q_SIZE && !enabled && power_of_two(value) &&
        value <= vp->vdev->ops->queue_max_size)
        q->size = (uint16_t)value;
    else if (rel == CC_Q_MSIX)
        q->msix_vector = checked_vector(vp, value);
    else if (rel == CC_Q_ENABLE && value == 1)
        enable_queue(vp);
}

/* Each field takes its own width only (virtio 1.2, 4.1.3.1); anything else is dropped. */
static void common_write(struct virtio_pci *vp, uint32_t rel, uint32_t len, uint64_t value)
{
    if (rel >= CC_Q_DESCLO && rel < CC_Q_USEDHI + 4) {
        set_queue_address(vp, rel, len, value);
        return;
    }
    if (len == 4 && rel == CC_DFSELECT)
        vp->device_feature_select = (uint32_t)value;
    else if (len == 4 && rel == CC_GFSELECT)
        vp->driver_feature_select = (uint32_t)value;
    else if (len == 4 && rel == CC_GF)
        set_driver_features(vp, (uint32_t)value);
    else if (len == 2 && rel == CC_MSIX_CONFIG)
        vp->config_msix_vector = checked_vector(vp, value);
    else if (len == 1 && rel == CC_STATUS)
        write_status(vp, (uint8_t)value);
    else if (len == 2 && rel == CC_Q_SELECT)
        vp->queue_select = (uint16_t)value;
    else if (len == 2 && (rel == CC_Q_SIZE || rel == CC_Q_MSIX || rel == CC_Q_ENABLE))
        queue_field_write(vp, rel, value);
}

/* ---- Device-specific configuration and ISR ---- */

static bool device_config_range(const struct virtio_pci *vp, uint32_t rel, uint32_t len)
{
    return rel < vp->vdev->ops->config_size && len <= vp->vdev->ops->config_size - rel;
}

static void device_config_read(struct virtio_pci *vp, uint32_t rel, uint8_t *data,
                               uint32_t len)
{
    if (device_config_range(vp, rel, len) && vp->vdev->ops->read_config)
        vp->vdev->ops->read_config(vp->vdev, rel, data, len);
}

static void device_config_write(struct virtio_pci *vp, uint32_t rel, const uint8_t *data,
                                uint32_t len)
{
    if (device_config_range(vp, rel, len) && vp->vdev->ops->write_config)
        vp->vdev->ops->write_config(vp->vdev, rel, data, len);
}

/* Reading the ISR clears it (virtio 1.2, 4.1.4.5). */
static void isr_read(struct virtio_pci *vp, uint32_t rel, uint8_t *data)
{
    if (rel == 0) {
        data[0] = vp->isr;
        vp->isr = 0;
    }
}

/* ---- The BAR ---- */

static bool memory_decode(const struct virtio_pci *vp)
{
    return pci_config_get(&vp->cs, PCI_COMMAND, 2) & PCI_COMMAND_MEMORY;
}

/* Naturally aligned 1, 2, 4 or 8 bytes inside the BAR (virtio 1.2, 4.1.3.1). */
static bool bar_access_ok(uint64_t offset, uint32_t len)
{
    return (len == 1 || len == 2 || len == 4 || len == 8) && offset < VIRTIO_PCI_BAR_SIZE &&
           len <= VIRTIO_PCI_BAR_SIZE - offset && offset % len == 0;
}

static void bar_read_locked(struct virtio_pci *vp, uint32_t off, uint8_t *data, uint32_t len)
{
    if (off < VIRTIO_PCI_ISR_OFFSET)
        common_read(vp, off - VIRTIO_PCI_COMMON_OFFSET, data, len);
    else if (off < VIRTIO_PCI_DEVICE_OFFSET)
        isr_read(vp, off - VIRTIO_PCI_ISR_OFFSET, data);
    else if (off < VIRTIO_PCI_NOTIFY_OFFSET)
        device_config_read(vp, off - VIRTIO_PCI_DEVICE_OFFSET, data, len);
    else if (off >= VIRTIO_PCI_MSIX_PBA_OFFSET)
        msix_pba_read(vp, off - VIRTIO_PCI_MSIX_PBA_OFFSET, data, len);
    else if (off >= VIRTIO_PCI_MSIX_TABLE_OFFSET)
        msix_table_read(vp, off - VIRTIO_PCI_MSIX_TABLE_OFFSET, data, len);
    /* Doorbells read as zero. */
}

static void bar_read(void *dev, uint64_t offset, uint8_t *data, uint32_t len)
{
    struct virtio_pci *vp = dev;

    memset(data, 0, len);
    if (!bar_access_ok(offset, len))
        return;
    pthread_mutex_lock(&vp->lock);
    if (memory_decode(vp))
        bar_read_locked(vp, (uint32_t)offset, data, len);
    else
        memset(data, 0xff, len); /* decoding off: nobody answers */
    pthread_mutex_unlock(&vp->lock);
}

/* Returns the queue whose doorbell was rung, or -1. */
static int bar_write_locked(struct virtio_pci *vp, uint32_t off, const uint8_t *data,
                            uint32_t len)
{
    uint32_t rel;

    if (off < VIRTIO_PCI_ISR_OFFSET) {
        common_write(vp, off - VIRTIO_PCI_COMMON_OFFSET, len, get_le(data, len));
    } else if (off >= VIRTIO_PCI_DEVICE_OFFSET && off < VIRTIO_PCI_NOTIFY_OFFSET) {
        device_config_write(vp, off - VIRTIO_PCI_DEVICE_OFFSET, data, len);
    } else if (off >= VIRTIO_PCI_MSIX_TABLE_OFFSET && off < VIRTIO_PCI_MSIX_PBA_OFFSET) {
        msix_table_write(vp, off - VIRTIO_PCI_MSIX_TABLE_OFFSET, data, len);
    } else if (off >= VIRTIO_PCI_NOTIFY_OFFSET && off < VIRTIO_PCI_MSIX_TABLE_OFFSET) {
        rel = (off - VIRTIO_PCI_NOTIFY_OFFSET) / VIRTIO_PCI_NOTIFY_MULTIPLIER;
        if (len <= VIRTIO_PCI_NOTIFY_MULTIPLIER && rel < vp->nr_queues)
            return (int)rel; /* any width, any value: no NOTIFICATION_DATA */
    }
    /* The ISR and the PBA are read-only. */
    return -1;
}

static void bar_write(void *dev, uint64_t offset, const uint8_t *data, uint32_t len)
{
    struct virtio_pci *vp = dev;
    int kick = -1;

    if (!bar_access_ok(offset, len))
        return;
    pthread_mutex_lock(&vp->lock);
    if (memory_decode(vp))
        kick = bar_write_locked(vp, (uint32_t)offset, data, len);
    pthread_mutex_unlock(&vp->lock);
    /* Unlocked: the VMM's kick handler may come straight back into the transport. */
    if (kick >= 0 && vp->host.queue_kick)
        vp->host.queue_kick(vp->host.ctx, vp, (unsigned)kick);
}

const struct device_ops virtio_pci_bar_ops = { .read = bar_read, .write = bar_write };

/* ---- Configuration space ---- */

#define BAR_REG (PCI_BASE_ADDRESS_0 + 4 * VIRTIO_PCI_BAR)

/* The BAR's dwords read back their address, or the size mask right after all ones. */
static void bar_register_write(struct virtio_pci *vp, uint32_t offset, const uint8_t *data,
                               uint32_t len)
{
    unsigned dword = (offset - BAR_REG) / 4;
    bool sizing = len == 4 && get_le(data, 4) == 0xffffffffu;
    uint64_t value = sizing ? ~(uint64_t)(VIRTIO_PCI_BAR_SIZE - 1) : vp->bar_gpa;
    uint32_t half = (uint32_t)(value >> (32 * dword));

    if (dword == 0)
        half = (half & PCI_BASE_ADDRESS_MEM_MASK) | PCI_BASE_ADDRESS_MEM_TYPE_64;
    pci_config_set(&vp->cs, BAR_REG + 4 * dword, 4, half);
}

static void config_read(void *dev, uint32_t offset, uint8_t *data, uint32_t len)
{
    struct virtio_pci *vp = dev;

    pthread_mutex_lock(&vp->lock);
    pci_config_read(&vp->cs, offset, data, len);
    pthread_mutex_unlock(&vp->lock);
}

static void config_write(void *dev, uint32_t offset, const uint8_t *data, uint32_t len)
{
    struct virtio_pci *vp = dev;
    uint16_t control;

    pthread_mutex_lock(&vp->lock);
    if (offset >= BAR_REG && offset < BAR_REG + 8) {
        bar_register_write(vp, offset, data, len);
    } else {
        control = msix_control(vp);
        pci_config_write(&vp->cs, offset, data, len);
        if (msix_control(vp) != control)
            msix_control_changed(vp);
    }
    pthread_mutex_unlock(&vp->lock);
}

const struct pci_device_ops virtio_pci_config_ops = { .config_read = config_read,
                                                      .config_write = config_write };

/* ---- Interrupts from the device model ---- */

static void interrupt_queue(struct virtio_device *vdev, unsigned queue)
{
    struct virtio_pci *vp = vdev->transport;

    pthread_mutex_lock(&vp->lock);
    if (queue < vp->nr_queues) {
        vp->isr |= ISR_QUEUE;
        signal_vector(vp, vp->queues[queue].msix_vector);
    }
    pthread_mutex_unlock(&vp->lock);
}

/* The device changed its config: a new generation, so the driver rereads it all. */
static void interrupt_config(struct virtio_device *vdev)
{
    struct virtio_pci *vp = vdev->transport;

    pthread_mutex_lock(&vp->lock);
    vp->config_generation++;
    signal_config(vp);
    pthread_mutex_unlock(&vp->lock);
}

static void needs_reset(struct virtio_device *vdev, const char *why)
{
    struct virtio_pci *vp = vdev->transport;

    pthread_mutex_lock(&vp->lock);
    mark_needs_reset(vp, why);
    pthread_mutex_unlock(&vp->lock);
}

/* With vp->lock held: whether the model takes entries from `queue` now. */
static bool queue_running(struct virtio_pci *vp, unsigned queue)
{
    struct virtio_device *vdev = vp->vdev;
    return queue < vp->nr_queues && vdev->queues[queue].enabled &&
           (vdev->status & VIRTIO_STATUS_DRIVER_OK) &&
           !(vdev->status & VIRTIO_STATUS_NEEDS_RESET) && vdev->ops->queue_notify;
}

void virtio_pci_kick(struct virtio_pci *vp, unsigned queue)
{
    struct virtio_device *vdev = vp->vdev;

    pthread_mutex_lock(&vp->lock);
    if (queue_running(vp, queue))
        vdev->ops->queue_notify(vdev, queue);
    pthread_mutex_unlock(&vp->lock);
}

bool virtio_pci_pollable(struct virtio_pci *vp, unsigned queue)
{
    struct virtio_device *vdev = vp->vdev;
    return queue < vp->nr_queues && vdev->ops->pollable && vdev->ops->pollable(vdev, queue);
}

/* Passes waiting entries to the model; true when it took some. With vp->lock held. */
static bool take_polled(struct virtio_pci *vp, unsigned queue)
{
    struct virtio_device *vdev = vp->vdev;
    struct virtqueue *vq = &vdev->queues[queue];
    if (!virtq_has_avail(vq))
        return false;
    uint16_t before = vq->last_avail_idx;
    vdev->ops->queue_notify(vdev, queue);
    return vq->enabled && vq->last_avail_idx != before;
}

bool virtio_pci_poll(struct virtio_pci *vp, unsigned queue)
{
    bool took = false;
    pthread_mutex_lock(&vp->lock);
    if (queue_running(vp, queue)) {
        virtq_poll_begin(&vp->vdev->queues[queue]);
        took = take_polled(vp, queue);
    }
    pthread_mutex_unlock(&vp->lock);
    return took;
}

bool virtio_pci_poll_end(struct virtio_pci *vp, unsigned queue)
{
    bool took = false;
    pthread_mutex_lock(&vp->lock);
    if (queue < vp->nr_queues) {
        bool waiting = virtq_poll_end(&vp->vdev->queues[queue]);
        took = waiting && queue_running(vp, queue) && take_polled(vp, queue);
    }
    pthread_mutex_unlock(&vp->lock);
    return took;
}

bool virtio_pci_queue_status(struct virtio_pci *vp, unsigned queue,
                             struct virtio_pci_queue_status *st)
{
    if (queue >= vp->nr_queues)
        return false;
    pthread_mutex_lock(&vp->lock);
    virtq_get_status(&vp->vdev->queues[queue], &st->ring);
    st->vector = vp->queues[queue].msix_vector;
    st->masked = st->vector < vp->nr_vectors && vector_masked(vp, st->vector);
    st->pending = st->vector < vp->nr_vectors && pending(vp, st->vector);
    pthread_mutex_unlock(&vp->lock);
    return true;
}

uint64_t virtio_pci_notify_gpa(const struct virtio_pci *vp, unsigned queue)
{
    if (queue >= vp->nr_queues)
        return 0;
    return vp->bar_gpa + VIRTIO_PCI_NOTIFY_OFFSET + VIRTIO_PCI_NOTIFY_MULTIPLIER * queue;
}

/* ---- Construction ---- */

static uint32_t class_code(uint16_t device_id)
{
    switch (device_id) {
    case VIRTIO_ID_BLOCK:
        return 0x018000; /* mass storage, other */
    case VIRTIO_ID_NET:
        return 0x020000; /* Ethernet */
    case VIRTIO_ID_CONSOLE:
        return 0x078000; /* communication, other */
    default:
        return 0x00ff00; /* unclassified */
    }
}

static int add_virtio_cap(struct virtio_pci *vp, uint8_t type, uint32_t offset,
                          uint32_t length)
{
    struct virtio_pci_cap cap = { .cap_vndr = PCI_CAP_ID_VNDR, .cfg_type = type,
                                  .bar = VIRTIO_PCI_BAR, .offset = offset, .length = length,
                                  .notify_off_multiplier = VIRTIO_PCI_NOTIFY_MULTIPLIER };
    unsigned len = type == CAP_NOTIFY ? 20 : 16;

    cap.cap_len = (uint8_t)len;
    return pci_config_add_capability(&vp->cs, &cap, len) < 0 ? -EINVAL : 0;
}

static int add_msix_cap(struct virtio_pci *vp)
{
    struct msix_cap cap = { .cap_id = PCI_CAP_ID_MSIX,
                            .control = (uint16_t)(vp->nr_vectors - 1),
                            .table = VIRTIO_PCI_MSIX_TABLE_OFFSET | VIRTIO_PCI_BAR,
                            .pba = VIRTIO_PCI_MSIX_PBA_OFFSET | VIRTIO_PCI_BAR };
    int offset = pci_config_add_capability(&vp->cs, &cap, sizeof(cap));

    if (offset < 0)
        return -EINVAL;
    vp->msix_cap = (uint8_t)offset;
    pci_config_set_masks(&vp->cs, (unsigned)offset + PCI_MSIX_FLAGS, 2,
                         PCI_MSIX_FLAGS_ENABLE | PCI_MSIX_FLAGS_MASKALL, 0);
    return 0;
}

static int build_config_space(struct virtio_pci *vp)
{
    const struct virtio_device_ops *ops = vp->vdev->ops;
    struct pci_ids ids = { .vendor = VIRTIO_PCI_VENDOR,
                           .device = (uint16_t)(VIRTIO_PCI_DEVICE_BASE + ops->device_id),
                           .class_code = class_code(ops->device_id), .revision = 1,
                           .subsystem_vendor = VIRTIO_PCI_VENDOR,
                           .subsystem = ops->device_id };
    int ret;

    pci_config_init(&vp->cs, &ids);
    ret = pci_config_set_bar(&vp->cs, VIRTIO_PCI_BAR, PCI_BAR_MEM64, VIRTIO_PCI_BAR_SIZE,
                             false);
    if (ret < 0)
        return ret;
    /* Firmware-assigned: bar_register_write() alone changes these bytes. */
    pci_config_set_masks(&vp->cs, BAR_REG, 4, 0, 0);
    pci_config_set_masks(&vp->cs, BAR_REG + 4, 4, 0, 0);
    bar_register_write(vp, BAR_REG, (const uint8_t[4]){ 0 }, 4);
    bar_register_write(vp, BAR_REG + 4, (const uint8_t[4]){ 0 }, 4);
    ret = add_virtio_cap(vp, CAP_COMMON, VIRTIO_PCI_COMMON_OFFSET, VIRTIO_PCI_COMMON_LEN);
    ret = ret ?: add_virtio_cap(vp, CAP_ISR, VIRTIO_PCI_ISR_OFFSET, 1);
    ret = ret ?: add_virtio_cap(vp, CAP_NOTIFY, VIRTIO_PCI_NOTIFY_OFFSET,
                                VIRTIO_PCI_NOTIFY_MULTIPLIER * vp->nr_queues);
    if (!ret && ops->config_size)
        ret = add_virtio_cap(vp, CAP_DEVICE, VIRTIO_PCI_DEVICE_OFFSET,
                             (uint32_t)ops->config_size);
    return ret ?: add_msix_cap(vp);
}

static bool device_ok(const struct virtio_device *vdev, uint64_t bar_gpa)
{
    const struct virtio_device_ops *ops = vdev->ops;

    return ops && ops->features && vdev->gm && ops->nr_queues >= 1 &&
           ops->nr_queues <= VIRTIO_MAX_QUEUES && power_of_two(ops->queue_max_size) &&
           ops->queue_max_size <= VIRTQ_MAX_SIZE && ops->config_size <= VIRTIO_PCI_DEVICE_MAX &&
           bar_gpa && !(bar_gpa % VIRTIO_PCI_BAR_SIZE);
}

int virtio_pci_init(struct virtio_pci *vp, struct virtio_device *vdev,
                    const struct virtio_pci_host *host, uint64_t bar_gpa)
{
    pthread_mutexattr_t attr;
    int ret;

    if (!device_ok(vdev, bar_gpa))
        return -EINVAL;
    memset(vp, 0, sizeof(*vp));
    vp->vdev = vdev;
    vp->host = *host;
    vp->bar_gpa = bar_gpa;
    vp->nr_queues = vdev->ops->nr_queues;
    vp->nr_vectors = vp->nr_queues + 1;
    ret = build_config_space(vp);
    if (ret < 0)
        return ret;
    /* PCI: every MSI-X vector starts masked. */
    for (unsigned v = 0; v < vp->nr_vectors; v++)
        vp->msix_table[v * VIRTIO_PCI_MSIX_ENTRY_SIZE + MSIX_ENTRY_CTRL] = MSIX_CTRL_MASKED;
    pthread_mutexattr_init(&attr);
    pthread_mutexattr_settype(&attr, PTHREAD_MUTEX_RECURSIVE);
    ret = pthread_mutex_init(&vp->lock, &attr);
    pthread_mutexattr_destroy(&attr);
    if (ret)
        return -ret;
    vdev->transport = vp;
    vdev->lock = &vp->lock;
    vdev->interrupt_queue = interrupt_queue;
    vdev->interrupt_config = interrupt_config;
    vdev->needs_reset = needs_reset;
    reset_state(vp);
    return 0;
}

void virtio_pci_destroy(struct virtio_pci *vp)
{
    pthread_mutex_destroy(&vp->lock);
}

/* ---- Snapshots ---- */

/* What a snapshot carries of one queue: the driver's programming and the device's indexes. */
struct queue_state {
    struct virtio_pci_queue reg;
    bool enabled;
    uint16_t last_avail_idx, used_idx, signalled_used;
};

/* The transport's registers as saved; checked as a whole before any is applied. */
struct transport_state {
    uint8_t config_space[PCI_CONFIG_SPACE_SIZE];
    uint32_t device_feature_select, driver_feature_select;
    uint64_t negotiating_features, accepted_features;
    uint8_t status, config_generation, isr;
    uint16_t config_msix_vector, queue_select;
    uint32_t nr_queues;
    struct queue_state queues[VIRTIO_MAX_QUEUES];
    uint8_t msix_table[VIRTIO_PCI_MAX_VECTORS * VIRTIO_PCI_MSIX_ENTRY_SIZE];
    uint64_t msix_pba[2];
};

/* The live registers, in the form a snapshot carries them. With vp->lock held. */
static void capture_transport(struct virtio_pci *vp, struct transport_state *t)
{
    struct virtio_device *vdev = vp->vdev;
    memset(t, 0, sizeof(*t));
    memcpy(t->config_space, vp->cs.bytes, sizeof(t->config_space));
    t->device_feature_select = vp->device_feature_select;
    t->driver_feature_select = vp->driver_feature_select;
    t->negotiating_features = vp->driver_features;
    t->accepted_features = vdev->driver_features;
    t->status = vdev->status;
    t->config_generation = vp->config_generation;
    t->isr = vp->isr;
    t->config_msix_vector = vp->config_msix_vector;
    t->queue_select = vp->queue_select;
    t->nr_queues = vp->nr_queues;
    for (unsigned q = 0; q < vp->nr_queues; q++) {
        const struct virtqueue *vq = &vdev->queues[q];
        t->queues[q] = (struct queue_state){ .reg = vp->queues[q], .enabled = vq->enabled,
                                             .last_avail_idx = vq->last_avail_idx,
                                             .used_idx = vq->used_idx,
                                             .signalled_used = vq->signalled_used };
    }
    memcpy(t->msix_table, vp->msix_table, sizeof(t->msix_table));
    t->msix_pba[0] = vp->msix_pba[0];
    t->msix_pba[1] = vp->msix_pba[1];
}

static void write_transport(const struct transport_state *t, unsigned nr_vectors,
                            struct state_writer *w)
{
    sw_bytes(w, t->config_space, sizeof(t->config_space));
    sw_u32(w, t->device_feature_select);
    sw_u32(w, t->driver_feature_select);
    sw_u64(w, t->negotiating_features);
    sw_u64(w, t->accepted_features);
    sw_u8(w, t->status);
    sw_u8(w, t->config_generation);
    sw_u8(w, t->isr);
    sw_u16(w, t->config_msix_vector);
    sw_u16(w, t->queue_select);
    sw_u32(w, t->nr_queues);
    for (unsigned q = 0; q < t->nr_queues; q++) {
        const struct queue_state *qs = &t->queues[q];
        sw_u16(w, qs->reg.size);
        sw_u16(w, qs->reg.msix_vector);
        sw_u64(w, qs->reg.desc);
        sw_u64(w, qs->reg.driver);
        sw_u64(w, qs->reg.device);
        sw_u8(w, qs->enabled);
        sw_u16(w, qs->last_avail_idx);
        sw_u16(w, qs->used_idx);
        sw_u16(w, qs->signalled_used);
    }
    sw_bytes(w, t->msix_table, nr_vectors * VIRTIO_PCI_MSIX_ENTRY_SIZE);
    sw_u64(w, t->msix_pba[0]);
    sw_u64(w, t->msix_pba[1]);
}

void virtio_pci_save(struct virtio_pci *vp, struct state_writer *w)
{
    struct virtio_device *vdev = vp->vdev;
    struct transport_state *t = malloc(sizeof(*t));
    if (!t) {
        sw_fail(w, -ENOMEM);
        return;
    }
    pthread_mutex_lock(&vp->lock);
    capture_transport(vp, t);
    write_transport(t, vp->nr_vectors, w);
    /* The model's own state last, behind its version. */
    sw_u32(w, vdev->ops->save ? vdev->ops->state_version : 0);
    if (vdev->ops->save)
        vdev->ops->save(vdev, w);
    pthread_mutex_unlock(&vp->lock);
    free(t);
}

static void read_queue(struct state_cursor *c, struct queue_state *q)
{
    q->reg.size = sc_u16(c);
    q->reg.msix_vector = sc_u16(c);
    q->reg.desc = sc_u64(c);
    q->reg.driver = sc_u64(c);
    q->reg.device = sc_u64(c);
    q->enabled = sc_u8(c) != 0;
    q->last_avail_idx = sc_u16(c);
    q->used_idx = sc_u16(c);
    q->signalled_used = sc_u16(c);
}

static int read_transport(struct virtio_pci *vp, struct state_cursor *c, struct transport_state *t)
{
    sc_bytes(c, t->config_space, sizeof(t->config_space));
    t->device_feature_select = sc_u32(c);
    t->driver_feature_select = sc_u32(c);
    t->negotiating_features = sc_u64(c);
    t->accepted_features = sc_u64(c);
    t->status = sc_u8(c);
    t->config_generation = sc_u8(c);
    t->isr = sc_u8(c);
    t->config_msix_vector = sc_u16(c);
    t->queue_select = sc_u16(c);
    t->nr_queues = sc_u32(c);
    if (t->nr_queues != vp->nr_queues)
        return sc_reject(c, "%u queues, this device has %u", t->nr_queues, vp->nr_queues);
    for (unsigned q = 0; q < vp->nr_queues; q++)
        read_queue(c, &t->queues[q]);
    sc_bytes(c, t->msix_table, vp->nr_vectors * VIRTIO_PCI_MSIX_ENTRY_SIZE);
    t->msix_pba[0] = sc_u64(c);
    t->msix_pba[1] = sc_u64(c);
    return c->overrun ? sc_finish(c) : 0;
}

static bool vector_valid(const struct virtio_pci *vp, uint16_t v)
{
    return v == VIRTIO_MSI_NO_VECTOR || v < vp->nr_vectors;
}

/* Every value a guest or a corrupt file could have set, against what this device allows. */
static int check_transport(struct virtio_pci *vp, struct state_cursor *c,
                           const struct transport_state *t)
{
    const uint8_t known = VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER |
                          VIRTIO_STATUS_DRIVER_OK | VIRTIO_STATUS_FEATURES_OK |
                          VIRTIO_STATUS_NEEDS_RESET | VIRTIO_STATUS_FAILED;
    uint64_t offered = offered_features(vp);

    if (t->status & ~known)
        return sc_reject(c, "unknown status bits 0x%x", t->status);
    /* Only what was accepted: the driver may write any bits to driver_feature before
     * FEATURES_OK (which then refuses them), and a snapshot may come in between. */
    if (t->accepted_features & ~offered)
        return sc_reject(c, "features 0x%llx not offered by this device",
                         (unsigned long long)t->accepted_features);
    if (!vector_valid(vp, t->config_msix_vector))
        return sc_reject(c, "configuration vector %u out of range", t->config_msix_vector);
    for (unsigned q = 0; q < vp->nr_queues; q++) {
        const struct queue_state *qs = &t->queues[q];
        if (!power_of_two(qs->reg.size) || qs->reg.size > vp->vdev->ops->queue_max_size)
            return sc_reject(c, "queue %u: size %u", q, qs->reg.size);
        if (!vector_valid(vp, qs->reg.msix_vector))
            return sc_reject(c, "queue %u: vector %u out of range", q, qs->reg.msix_vector);
    }
    for (unsigned v = vp->nr_vectors; v < 128; v++)
        if (t->msix_pba[v / 64] & (1ULL << (v % 64)))
            return sc_reject(c, "pending bit of vector %u, which does not exist", v);
    return 0;
}

/* Only what the guest can write of the config space comes from the file; the rest (IDs,
 * capabilities, the firmware-placed BAR) is this device's own. */
static void apply_config_space(struct virtio_pci *vp, const uint8_t *saved)
{
    for (unsigned i = 0; i < PCI_CONFIG_SPACE_SIZE; i++)
        vp->cs.bytes[i] = (uint8_t)((vp->cs.bytes[i] & ~vp->cs.writable[i]) |
                                    (saved[i] & vp->cs.writable[i]));
    /* A BAR dword the guest was sizing (all ones written) still reads back its size mask. */
    for (uint32_t off = BAR_REG; off < BAR_REG + 8; off += 4) {
        bar_register_write(vp, off, (const uint8_t[4]){ 0xff, 0xff, 0xff, 0xff }, 4);
        if (pci_config_get(&vp->cs, off, 4) != get_le(saved + off, 4))
            bar_register_write(vp, off, (const uint8_t[4]){ 0 }, 4);
    }
}

static int apply_queues(struct virtio_pci *vp, struct state_cursor *c,
                        const struct transport_state *t)
{
    struct virtio_device *vdev = vp->vdev;
    for (unsigned q = 0; q < vp->nr_queues; q++) {
        const struct queue_state *qs = &t->queues[q];
        struct virtqueue *vq = &vdev->queues[q];
        vp->queues[q] = qs->reg;
        if (!qs->enabled)
            continue;
        if (virtq_setup(vq, vdev->gm, qs->reg.size, qs->reg.desc, qs->reg.driver,
                        qs->reg.device, virtio_has_feature(vdev, VIRTIO_F_EVENT_IDX),
                        virtio_has_feature(vdev, VIRTIO_F_INDIRECT_DESC)) < 0)
            return sc_reject(c, "queue %u: rings outside RAM or misaligned", q);
        vq->last_avail_idx = qs->last_avail_idx;
        vq->used_idx = qs->used_idx;
        vq->signalled_used = qs->signalled_used;
    }
    return 0;
}

static int apply_transport(struct virtio_pci *vp, struct state_cursor *c,
                           const struct transport_state *t)
{
    struct virtio_device *vdev = vp->vdev;
    reset_state(vp);
    apply_config_space(vp, t->config_space);
    vp->device_feature_select = t->device_feature_select;
    vp->driver_feature_select = t->driver_feature_select;
    vp->driver_features = t->negotiating_features;
    vdev->driver_features = t->accepted_features;
    vdev->status = t->status;
    vp->config_generation = t->config_generation;
    vp->isr = t->isr;
    vp->config_msix_vector = t->config_msix_vector;
    vp->queue_select = t->queue_select;
    memcpy(vp->msix_table, t->msix_table, vp->nr_vectors * VIRTIO_PCI_MSIX_ENTRY_SIZE);
    vp->msix_pba[0] = t->msix_pba[0];
    vp->msix_pba[1] = t->msix_pba[1];
    int ret = apply_queues(vp, c, t);
    if (ret < 0)
        return ret;
    /* KVM's MSI routes are not state: derive them again from the table. */
    for (unsigned v = 0; v < vp->nr_vectors; v++)
        route_vector(vp, v);
    return 0;
}

static int load_model(struct virtio_pci *vp, struct state_cursor *c)
{
    struct virtio_device *vdev = vp->vdev;
    uint32_t version = sc_u32(c);
    if (version == 0)
        return vdev->ops->load ? sc_reject(c, "no state for the %s model", vdev->ops->name) : 0;
    if (!vdev->ops->load || version > vdev->ops->state_version)
        return sc_reject(c, "%s model state version %u, this godwit loads up to %u",
                         vdev->ops->name, version, vdev->ops->load ? vdev->ops->state_version : 0);
    return vdev->ops->load(vdev, c, version);
}

int virtio_pci_load(struct virtio_pci *vp, struct state_cursor *c, uint32_t version)
{
    struct transport_state *t = calloc(1, sizeof(*t)), *before = malloc(sizeof(*before));
    int ret = -ENOMEM;
    if (!t || !before)
        goto out;
    if (version != VIRTIO_PCI_STATE_VERSION) {
        ret = sc_reject(c, "transport version %u, this godwit loads %u", version,
                        VIRTIO_PCI_STATE_VERSION);
        goto out;
    }
    pthread_mutex_lock(&vp->lock);
    capture_transport(vp, before);
    if ((ret = read_transport(vp, c, t)) == 0 && (ret = check_transport(vp, c, t)) == 0 &&
        (ret = apply_transport(vp, c, t)) == 0 && (ret = load_model(vp, c)) == 0)
        ret = sc_finish(c);
    if (ret < 0) /* a refused load leaves the device as it was (models check before applying) */
        apply_transport(vp, c, before);
    else if ((vp->vdev->status & VIRTIO_STATUS_DRIVER_OK) &&
             !(vp->vdev->status & VIRTIO_STATUS_NEEDS_RESET) && vp->vdev->ops->activate &&
             vp->vdev->ops->activate(vp->vdev) < 0)
        ret = sc_reject(c, "the %s backend cannot start", vp->vdev->ops->name);
    pthread_mutex_unlock(&vp->lock);
out:
    free(t);
    free(before);
    return ret;
}
