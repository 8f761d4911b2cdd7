/*
 * fuzz_virtio_pci.c: the virtio-pci transport under any sequence of config-space and BAR
 * accesses (common config, ISR, device config, doorbells, MSI-X table and PBA), with a device
 * model that answers every chain the guest offers; snapshots saved and loaded into a new
 * transport.
 */
#include "fuzz_regs.h"
#include "virtio/pci.h"

#define BAR_GPA 0xc0004000ull

/* The model: 16 bytes of config, two queues whose chains are handed straight back. */
struct model {
    uint8_t config[16];
};

static uint64_t m_features(struct virtio_device *vdev)
{
    (void)vdev;
    return 1ull << 5 | 1ull << VIRTIO_F_EVENT_IDX | 1ull << VIRTIO_F_INDIRECT_DESC;
}

static void m_read_config(struct virtio_device *vdev, uint32_t offset, void *data, uint32_t len)
{
    struct model *m = vdev->model;
    FUZZ_CHECK(offset <= sizeof(m->config) && len <= sizeof(m->config) - offset);
    memcpy(data, m->config + offset, len);
}

static void m_write_config(struct virtio_device *vdev, uint32_t offset, const void *data,
                           uint32_t len)
{
    struct model *m = vdev->model;
    FUZZ_CHECK(offset <= sizeof(m->config) && len <= sizeof(m->config) - offset);
    memcpy(m->config + offset, data, len);
}

static int m_activate(struct virtio_device *vdev)
{
    (void)vdev;
    return 0;
}

static void m_queue_notify(struct virtio_device *vdev, unsigned queue)
{
    static struct virtq_chain chain;
    struct virtqueue *vq;

    FUZZ_CHECK(queue < vdev->ops->nr_queues);
    vq = &vdev->queues[queue];
    for (unsigned n = 0; n < 8 && virtq_pop(vq, &chain) == 1; n++)
        virtq_push(vq, chain.head, 0);
    if (virtq_should_notify(vq))
        vdev->interrupt_queue(vdev, queue);
}

static void m_reset(struct virtio_device *vdev)
{
    (void)vdev;
}

static const struct virtio_device_ops model_ops = {
    .name = "fuzz", .device_id = VIRTIO_ID_BLOCK, .nr_queues = 2, .queue_max_size = 256,
    .config_size = 16, .features = m_features, .read_config = m_read_config,
    .write_config = m_write_config, .activate = m_activate, .queue_notify = m_queue_notify,
    .reset = m_reset,
};

/* The host side: MSI routes taken, interrupts dropped, kicks handed on at once. */
static int h_route(void *ctx, unsigned vector, uint64_t address, uint32_t data, bool masked)
{
    (void)ctx;
    (void)address;
    (void)data;
    (void)masked;
    FUZZ_CHECK(vector < VIRTIO_PCI_MAX_VECTORS);
    return 0;
}

static void h_raise(void *ctx, unsigned vector)
{
    (void)ctx;
    FUZZ_CHECK(vector < VIRTIO_PCI_MAX_VECTORS);
}

static void h_kick(void *ctx, struct virtio_pci *vp, unsigned queue)
{
    (void)ctx;
    virtio_pci_kick(vp, queue);
}

struct dev {
    struct virtio_device vdev;
    struct virtio_pci vp;
    struct model m;
};

static struct dev *dev_new(void)
{
    struct dev *d = calloc(1, sizeof(*d));
    struct virtio_pci_host host = { .msi_route = h_route, .msi_raise = h_raise,
                                    .queue_kick = h_kick };

    if (!d)
        abort();
    d->vdev.ops = &model_ops;
    d->vdev.model = &d->m;
    d->vdev.gm = fuzz_gm();
    FUZZ_CHECK(virtio_pci_init(&d->vp, &d->vdev, &host, BAR_GPA) == 0);
    return d;
}

static void dev_free(struct dev *d)
{
    virtio_pci_destroy(&d->vp);
    free(d);
}

static void save(void *dev, struct state_writer *w)
{
    virtio_pci_save(&((struct dev *)dev)->vp, w);
}

static int load(void *dev, struct state_cursor *c, uint32_t version)
{
    return virtio_pci_load(&((struct dev *)dev)->vp, c, version);
}

/* Config-space accesses go through the PCI host's rules: aligned, within 256 bytes. */
static void config_read(void *dev, uint64_t offset, uint8_t *data, uint32_t len)
{
    if ((offset & (len - 1)) == 0)
        virtio_pci_config_ops.config_read(&((struct dev *)dev)->vp, (uint32_t)offset, data, len);
}

static void config_write(void *dev, uint64_t offset, const uint8_t *data, uint32_t len)
{
    if ((offset & (len - 1)) == 0)
        virtio_pci_config_ops.config_write(&((struct dev *)dev)->vp, (uint32_t)offset, data, len);
}

static const struct device_ops config_ops = { .read = config_read, .write = config_write };

/* The BAR is 16 KiB: an access's offset takes two bytes of input, not one. */
static void bar_access(struct fuzz_in *in, struct dev *d)
{
    uint8_t op = fuzz_u8(in), data[8];
    uint32_t len = 1u << ((op >> 1) & 3);
    uint64_t offset = fuzz_u16(in) % VIRTIO_PCI_BAR_SIZE;

    if (offset + len > VIRTIO_PCI_BAR_SIZE)
        return;
    if (op & 1) {
        fuzz_bytes(in, data, len);
        virtio_pci_bar_ops.write(&d->vp, offset, data, len);
    } else {
        virtio_pci_bar_ops.read(&d->vp, offset, data, len);
    }
}

/* What one transport saves, a new one loads, and saves the same. */
static void move_state(struct dev *d)
{
    struct state_writer a, b;
    const uint8_t *pa, *pb;
    size_t la, lb;
    struct dev *d2 = dev_new();

    fuzz_save(save, d, VIRTIO_PCI_STATE_VERSION, &a);
    pa = fuzz_saved_payload(&a, &la);
    FUZZ_CHECK(fuzz_load(load, d2, VIRTIO_PCI_STATE_VERSION, pa, la) == 0);
    fuzz_save(save, d2, VIRTIO_PCI_STATE_VERSION, &b);
    pb = fuzz_saved_payload(&b, &lb);
    fuzz_check_same_state(pa, la, pb, lb);
    sw_free(&a);
    sw_free(&b);
    dev_free(d2);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fuzz_quiet();
    fuzz_gm();
    return 0;
}

/*
 * Each step: a config-space access, a BAR access, guest RAM written (rings and buffers), a
 * snapshot moved to a new transport, or a hostile snapshot loaded into a fresh one.
 */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct fuzz_in in = fuzz_in(data, size);
    struct guest_memory *gm = fuzz_gm();
    struct dev *d;

    fuzz_gm_reset(gm);
    d = dev_new();
    struct fuzz_range cfg = { &config_ops, d, 256, 4 };
    while (!fuzz_done(&in)) {
        uint8_t op = fuzz_u8(&in);
        switch (op % 16) {
        case 0 ... 5:
            fuzz_access(&in, &cfg, 1);
            break;
        case 6 ... 12:
            bar_access(&in, d);
            break;
        case 13: { /* the driver writes RAM below 4 MiB (rings, chains, buffers) */
            uint32_t gpa = fuzz_u32(&in) % (4u << 20);
            uint8_t buf[64];
            size_t n = fuzz_bytes(&in, buf, fuzz_u8(&in) % sizeof(buf));
            FUZZ_CHECK(gm_write(gm, gpa, buf, n) == 0);
            break;
        }
        case 14:
            move_state(d);
            break;
        default: {
            struct dev *d2 = dev_new();
            uint8_t buf[512];
            size_t n = fuzz_bytes(&in, buf, fuzz_u16(&in) % sizeof(buf));
            if (fuzz_load(load, d2, VIRTIO_PCI_STATE_VERSION, buf, n) == 0)
                move_state(d2);
            dev_free(d2);
            break;
        }
        }
    }
    dev_free(d);
    return 0;
}
