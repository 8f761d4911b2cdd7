/* test_virtio_pci.c: Linux's virtio_pci probe sequence, MSI-X, and a hostile sweep. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <linux/pci_regs.h>

#include "migration/state.h"
#include "state_helpers.h"
#include "virtio/pci.h"

#define BAR_GPA 0xc0004000ull
#define FAKE_FEATURE 5
#define QSIZE 16
#define DESC_GPA 0x100000ull
#define AVAIL_GPA 0x200000ull
#define USED_GPA 0x300000ull

struct fx {
    struct guest_memory gm;
    struct virtio_device vdev;
    struct virtio_pci vp;
    uint8_t config[16];
    unsigned activates, resets, notifies[2];
    unsigned kicks[2], raises[3], routes;
    unsigned last_route_vector;
    uint64_t last_route_address;
    uint32_t last_route_data;
    bool last_route_masked;
    int activate_ret;
    bool takes; /* queue_notify pops what the driver offered */
};

/* ---- The fake device model ---- */

static uint64_t fake_features(struct virtio_device *vdev)
{
    (void)vdev;
    return 1ULL << FAKE_FEATURE;
}

static struct fx *fx_of(struct virtio_device *vdev)
{
    return vdev->model;
}

static void fake_read_config(struct virtio_device *vdev, uint32_t offset, void *data,
                             uint32_t len)
{
    assert_true(offset + len <= 16);
    memcpy(data, fx_of(vdev)->config + offset, len);
}

static void fake_write_config(struct virtio_device *vdev, uint32_t offset, const void *data,
                              uint32_t len)
{
    assert_true(offset + len <= 16);
    memcpy(fx_of(vdev)->config + offset, data, len);
}

static int fake_activate(struct virtio_device *vdev)
{
    fx_of(vdev)->activates++;
    return fx_of(vdev)->activate_ret;
}

static void fake_queue_notify(struct virtio_device *vdev, unsigned queue)
{
    assert_true(queue < 2);
    fx_of(vdev)->notifies[queue]++;
    static struct virtq_chain chain;
    while (fx_of(vdev)->takes && virtq_pop(&vdev->queues[queue], &chain) > 0)
        ;
}

static bool fake_pollable(struct virtio_device *vdev, unsigned queue)
{
    (void)vdev;
    return queue == 0;
}

static void fake_reset(struct virtio_device *vdev)
{
    fx_of(vdev)->resets++;
}

static const struct virtio_device_ops fake_ops = {
    .name = "fake", .device_id = VIRTIO_ID_BLOCK, .nr_queues = 2, .queue_max_size = 256,
    .config_size = 16, .features = fake_features, .read_config = fake_read_config,
    .write_config = fake_write_config, .activate = fake_activate,
    .queue_notify = fake_queue_notify, .pollable = fake_pollable, .reset = fake_reset,
};

/* ---- The fake host ---- */

static int fake_route(void *ctx, unsigned vector, uint64_t address, uint32_t data, bool masked)
{
    struct fx *f = ctx;
    assert_true(vector < 3);
    f->routes++;
    f->last_route_vector = vector;
    f->last_route_address = address;
    f->last_route_data = data;
    f->last_route_masked = masked;
    return 0;
}

static void fake_raise(void *ctx, unsigned vector)
{
    struct fx *f = ctx;
    assert_true(vector < 3);
    f->raises[vector]++;
}

static void fake_kick(void *ctx, struct virtio_pci *vp, unsigned queue)
{
    struct fx *f = ctx;
    assert_ptr_equal(vp, &f->vp);
    assert_true(queue < 2);
    f->kicks[queue]++;
}

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    assert_int_equal(gm_init(&f->gm, 64ull << 20, false), 0);
    f->vdev.ops = &fake_ops;
    f->vdev.model = f;
    f->vdev.gm = &f->gm;
    for (unsigned i = 0; i < 16; i++)
        f->config[i] = (uint8_t)(0xa0 + i);
    struct virtio_pci_host host = { .msi_route = fake_route, .msi_raise = fake_raise,
                                    .queue_kick = fake_kick, .ctx = f };
    assert_int_equal(virtio_pci_init(&f->vp, &f->vdev, &host, BAR_GPA), 0);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;
    virtio_pci_destroy(&f->vp);
    gm_destroy(&f->gm);
    free(f);
    return 0;
}

/* ---- Access helpers ---- */

static uint32_t cfg_rd(struct fx *f, uint32_t offset, uint32_t len)
{
    uint8_t b[4] = { 0 };
    virtio_pci_config_ops.config_read(&f->vp, offset, b, len);
    return (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
}

static void cfg_wr(struct fx *f, uint32_t offset, uint32_t len, uint32_t value)
{
    uint8_t b[4];
    for (unsigned i = 0; i < 4; i++)
        b[i] = (uint8_t)(value >> (8 * i));
    virtio_pci_config_ops.config_write(&f->vp, offset, b, len);
}

static uint64_t bar_rd(struct fx *f, uint64_t offset, uint32_t len)
{
    uint8_t b[8] = { 0 };
    uint64_t v = 0;
    virtio_pci_bar_ops.read(&f->vp, offset, b, len);
    for (unsigned i = 0; i < 8; i++)
        v |= (uint64_t)b[i] << (8 * i);
    return v;
}

static void bar_wr(struct fx *f, uint64_t offset, uint32_t len, uint64_t value)
{
    uint8_t b[8];
    for (unsigned i = 0; i < 8; i++)
        b[i] = (uint8_t)(value >> (8 * i));
    virtio_pci_bar_ops.write(&f->vp, offset, b, len);
}

/* Walks the capability list like Linux's virtio_pci_find_capability(). */
static uint32_t find_virtio_cap(struct fx *f, uint8_t type)
{
    unsigned hops = 0;
    for (uint32_t pos = cfg_rd(f, PCI_CAPABILITY_LIST, 1); pos && hops < 48;
         pos = cfg_rd(f, pos + 1, 1), hops++)
        if (cfg_rd(f, pos, 1) == PCI_CAP_ID_VNDR && cfg_rd(f, pos + 3, 1) == type)
            return pos;
    return 0;
}

static uint32_t find_cap(struct fx *f, uint8_t id)
{
    unsigned hops = 0;
    for (uint32_t pos = cfg_rd(f, PCI_CAPABILITY_LIST, 1); pos && hops < 48;
         pos = cfg_rd(f, pos + 1, 1), hops++)
        if (cfg_rd(f, pos, 1) == id)
            return pos;
    return 0;
}

static uint8_t status(struct fx *f)
{
    return (uint8_t)bar_rd(f, VIRTIO_PCI_COMMON_OFFSET + 0x14, 1);
}

static void set_status(struct fx *f, uint8_t s)
{
    bar_wr(f, VIRTIO_PCI_COMMON_OFFSET + 0x14, 1, s);
}

static void enable_pci(struct fx *f)
{
    uint32_t msix = find_cap(f, PCI_CAP_ID_MSIX);
    cfg_wr(f, PCI_COMMAND, 2, PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER);
    cfg_wr(f, msix + PCI_MSIX_FLAGS, 2, PCI_MSIX_FLAGS_ENABLE);
}

static void program_vector(struct fx *f, unsigned v, uint64_t address, uint32_t data,
                           bool masked)
{
    uint64_t e = VIRTIO_PCI_MSIX_TABLE_OFFSET + 16ull * v;
    bar_wr(f, e, 4, (uint32_t)address);
    bar_wr(f, e + 4, 4, address >> 32);
    bar_wr(f, e + 8, 4, data);
    bar_wr(f, e + 12, 4, masked);
}

/* Features, FEATURES_OK: what Linux's virtio_dev_probe + vp_finalize_features do. */
static void negotiate(struct fx *f, uint64_t features)
{
    set_status(f, 0);
    set_status(f, VIRTIO_STATUS_ACKNOWLEDGE);
    set_status(f, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER);
    bar_wr(f, 0x08, 4, 0);
    bar_wr(f, 0x0c, 4, (uint32_t)features);
    bar_wr(f, 0x08, 4, 1);
    bar_wr(f, 0x0c, 4, features >> 32);
    set_status(f, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER | VIRTIO_STATUS_FEATURES_OK);
}

static void setup_queue(struct fx *f, unsigned q, uint64_t desc, uint16_t vector)
{
    bar_wr(f, 0x16, 2, q);
    bar_wr(f, 0x18, 2, QSIZE);
    bar_wr(f, 0x1a, 2, vector);
    bar_wr(f, 0x20, 4, (uint32_t)desc);
    bar_wr(f, 0x24, 4, desc >> 32);
    bar_wr(f, 0x28, 8, AVAIL_GPA + 0x1000 * q);
    bar_wr(f, 0x30, 4, (uint32_t)(USED_GPA + 0x1000 * q));
    bar_wr(f, 0x34, 4, 0);
    bar_wr(f, 0x1c, 2, 1);
}

/* The full driver bring-up: both queues on vectors 1 and 2, config on vector 0. */
static void bring_up(struct fx *f)
{
    enable_pci(f);
    for (unsigned v = 0; v < 3; v++)
        program_vector(f, v, 0xfee00000 + v, 0x40 + v, false);
    negotiate(f, 1ULL << VIRTIO_F_VERSION_1 | 1ULL << VIRTIO_F_EVENT_IDX);
    bar_wr(f, 0x10, 2, 0);
    setup_queue(f, 0, DESC_GPA, 1);
    setup_queue(f, 1, DESC_GPA + 0x1000, 2);
    set_status(f, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER | VIRTIO_STATUS_FEATURES_OK |
                      VIRTIO_STATUS_DRIVER_OK);
}

/* ---- Tests ---- */

static void test_ids(void **state)
{
    struct fx *f = *state;
    assert_int_equal(cfg_rd(f, PCI_VENDOR_ID, 2), 0x1af4);
    assert_int_equal(cfg_rd(f, PCI_DEVICE_ID, 2), 0x1040 + VIRTIO_ID_BLOCK);
    assert_int_equal(cfg_rd(f, PCI_REVISION_ID, 1), 1);
    assert_int_equal(cfg_rd(f, PCI_CLASS_REVISION, 4) >> 8, 0x018000);
    assert_int_equal(cfg_rd(f, PCI_SUBSYSTEM_VENDOR_ID, 2), 0x1af4);
    assert_int_equal(cfg_rd(f, PCI_SUBSYSTEM_ID, 2), VIRTIO_ID_BLOCK);
    assert_int_equal(cfg_rd(f, PCI_INTERRUPT_PIN, 1), 0);
    assert_int_equal(cfg_rd(f, PCI_HEADER_TYPE, 1), 0);
    assert_true(cfg_rd(f, PCI_STATUS, 2) & PCI_STATUS_CAP_LIST);
}

static void test_capabilities(void **state)
{
    struct fx *f = *state;
    static const struct { uint8_t type; uint32_t offset, min_len; } want[] = {
        { 1, VIRTIO_PCI_COMMON_OFFSET, 0x38 }, { 2, VIRTIO_PCI_NOTIFY_OFFSET, 8 },
        { 3, VIRTIO_PCI_ISR_OFFSET, 1 }, { 4, VIRTIO_PCI_DEVICE_OFFSET, 16 },
    };
    for (unsigned i = 0; i < 4; i++) {
        uint32_t pos = find_virtio_cap(f, want[i].type);
        assert_int_not_equal(pos, 0);
        assert_int_equal(pos % 4, 0);
        assert_int_equal(cfg_rd(f, pos + 4, 1), VIRTIO_PCI_BAR);
        assert_int_equal(cfg_rd(f, pos + 8, 4), want[i].offset);
        assert_true(cfg_rd(f, pos + 12, 4) >= want[i].min_len);
        assert_true(cfg_rd(f, pos + 2, 1) >= 16);
    }
    uint32_t notify = find_virtio_cap(f, 2);
    assert_int_equal(cfg_rd(f, notify + 2, 1), 20);
    assert_int_equal(cfg_rd(f, notify + 16, 4), 4);

    uint32_t msix = find_cap(f, PCI_CAP_ID_MSIX);
    assert_int_not_equal(msix, 0);
    assert_int_equal(cfg_rd(f, msix + PCI_MSIX_FLAGS, 2) & PCI_MSIX_FLAGS_QSIZE, 2);
    assert_int_equal(cfg_rd(f, msix + PCI_MSIX_TABLE, 4),
                     VIRTIO_PCI_MSIX_TABLE_OFFSET | VIRTIO_PCI_BAR);
    assert_int_equal(cfg_rd(f, msix + PCI_MSIX_PBA, 4),
                     VIRTIO_PCI_MSIX_PBA_OFFSET | VIRTIO_PCI_BAR);
    /* The capability bytes are read-only. */
    cfg_wr(f, msix + PCI_MSIX_TABLE, 4, 0);
    assert_int_equal(cfg_rd(f, msix + PCI_MSIX_TABLE, 4),
                     VIRTIO_PCI_MSIX_TABLE_OFFSET | VIRTIO_PCI_BAR);
}

static void test_bar_sizing(void **state)
{
    struct fx *f = *state;
    uint32_t bar = PCI_BASE_ADDRESS_0 + 4 * VIRTIO_PCI_BAR;
    assert_int_equal(cfg_rd(f, bar, 4), (uint32_t)BAR_GPA | PCI_BASE_ADDRESS_MEM_TYPE_64);
    assert_int_equal(cfg_rd(f, bar + 4, 4), 0);
    cfg_wr(f, bar, 4, 0xffffffff);
    cfg_wr(f, bar + 4, 4, 0xffffffff);
    assert_int_equal(cfg_rd(f, bar, 4),
                     (uint32_t)~(VIRTIO_PCI_BAR_SIZE - 1) | PCI_BASE_ADDRESS_MEM_TYPE_64);
    assert_int_equal(cfg_rd(f, bar + 4, 4), 0xffffffff);
    /* Linux writes the old value back; anything else also leaves the BAR where it is. */
    cfg_wr(f, bar, 4, 0xd0000000);
    cfg_wr(f, bar + 4, 4, 0x1);
    assert_int_equal(cfg_rd(f, bar, 4), (uint32_t)BAR_GPA | PCI_BASE_ADDRESS_MEM_TYPE_64);
    assert_int_equal(cfg_rd(f, bar + 4, 4), 0);
    cfg_wr(f, bar, 1, 0xff);
    assert_int_equal(cfg_rd(f, bar, 4), (uint32_t)BAR_GPA | PCI_BASE_ADDRESS_MEM_TYPE_64);
    /* The other BARs are not implemented. */
    for (unsigned b = 0; b < 4; b++) {
        cfg_wr(f, PCI_BASE_ADDRESS_0 + 4 * b, 4, 0xffffffff);
        assert_int_equal(cfg_rd(f, PCI_BASE_ADDRESS_0 + 4 * b, 4), 0);
    }
    assert_int_equal(virtio_pci_notify_gpa(&f->vp, 1), BAR_GPA + VIRTIO_PCI_NOTIFY_OFFSET + 4);
    assert_int_equal(virtio_pci_notify_gpa(&f->vp, 2), 0);
}

static void test_memory_decode(void **state)
{
    struct fx *f = *state;
    assert_int_equal(bar_rd(f, 0x12, 2), 0xffff); /* decoding off after reset */
    bar_wr(f, 0x16, 2, 1);
    enable_pci(f);
    assert_int_equal(bar_rd(f, 0x12, 2), 2);
    assert_int_equal(bar_rd(f, 0x16, 2), 0);
}

static void test_features(void **state)
{
    struct fx *f = *state;
    enable_pci(f);
    set_status(f, 0);
    assert_int_equal(f->resets, 1);
    bar_wr(f, 0x00, 4, 0);
    uint32_t lo = (uint32_t)bar_rd(f, 0x04, 4);
    bar_wr(f, 0x00, 4, 1);
    uint32_t hi = (uint32_t)bar_rd(f, 0x04, 4);
    assert_int_equal(lo, 1u << FAKE_FEATURE | 1u << VIRTIO_F_INDIRECT_DESC |
                             1u << VIRTIO_F_EVENT_IDX);
    assert_int_equal(hi, 1);
    bar_wr(f, 0x00, 4, 7);
    assert_int_equal(bar_rd(f, 0x04, 4), 0);

    negotiate(f, 1ULL << VIRTIO_F_VERSION_1 | 1ULL << FAKE_FEATURE);
    assert_true(status(f) & VIRTIO_STATUS_FEATURES_OK);
    assert_int_equal(f->vdev.driver_features, 1ULL << VIRTIO_F_VERSION_1 | 1ULL << FAKE_FEATURE);
    bar_wr(f, 0x08, 4, 1);
    assert_int_equal(bar_rd(f, 0x0c, 4), 1);
    /* Frozen after FEATURES_OK. */
    bar_wr(f, 0x0c, 4, 0);
    assert_int_equal(bar_rd(f, 0x0c, 4), 1);

    negotiate(f, 1ULL << VIRTIO_F_VERSION_1 | 1ULL << 40);
    assert_false(status(f) & VIRTIO_STATUS_FEATURES_OK);
    assert_int_equal(status(f), VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER);
    negotiate(f, 1ULL << FAKE_FEATURE); /* legacy driver: no VERSION_1 */
    assert_false(status(f) & VIRTIO_STATUS_FEATURES_OK);
    /* DRIVER_OK without FEATURES_OK is not taken either. */
    set_status(f, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER | VIRTIO_STATUS_DRIVER_OK);
    assert_false(status(f) & VIRTIO_STATUS_DRIVER_OK);
    assert_int_equal(f->activates, 0);
}

static void test_queue_setup_and_kick(void **state)
{
    struct fx *f = *state;
    bring_up(f);
    assert_int_equal(f->activates, 1);
    assert_true(status(f) & VIRTIO_STATUS_DRIVER_OK);
    assert_true(f->vdev.queues[0].enabled);
    assert_true(f->vdev.queues[1].enabled);
    assert_true(f->vdev.queues[0].event_idx);
    assert_false(f->vdev.queues[0].indirect);
    assert_int_equal(f->vdev.queues[1].size, QSIZE);
    assert_int_equal(f->vdev.queues[1].desc_gpa, DESC_GPA + 0x1000);
    assert_int_equal(f->vdev.queues[1].avail_gpa, AVAIL_GPA + 0x1000);
    assert_int_equal(f->vdev.queues[1].used_gpa, USED_GPA + 0x1000);

    bar_wr(f, 0x16, 2, 1);
    assert_int_equal(bar_rd(f, 0x18, 2), QSIZE);
    assert_int_equal(bar_rd(f, 0x1a, 2), 2);
    assert_int_equal(bar_rd(f, 0x1c, 2), 1);
    assert_int_equal(bar_rd(f, 0x1e, 2), 1);
    assert_int_equal(bar_rd(f, 0x20, 8), DESC_GPA + 0x1000);
    assert_int_equal(bar_rd(f, 0x12, 2), 2);
    /* Enabled queues keep their setup. */
    bar_wr(f, 0x18, 2, 4);
    bar_wr(f, 0x20, 8, 0x5000);
    assert_int_equal(bar_rd(f, 0x18, 2), QSIZE);
    assert_int_equal(bar_rd(f, 0x20, 8), DESC_GPA + 0x1000);

    bar_wr(f, VIRTIO_PCI_NOTIFY_OFFSET + 4, 2, 1);
    assert_int_equal(f->kicks[1], 1);
    assert_int_equal(f->kicks[0], 0);
    bar_wr(f, VIRTIO_PCI_NOTIFY_OFFSET + 8, 2, 2); /* no queue 2 */
    virtio_pci_kick(&f->vp, 1);
    assert_int_equal(f->notifies[1], 1);
    virtio_pci_kick(&f->vp, 7);

    set_status(f, 0);
    assert_int_equal(f->resets, 2); /* negotiate() reset once too */
    assert_false(f->vdev.queues[0].enabled);
    assert_int_equal(status(f), 0);
    assert_int_equal(bar_rd(f, 0x10, 2), VIRTIO_MSI_NO_VECTOR);
    virtio_pci_kick(&f->vp, 1);
    assert_int_equal(f->notifies[1], 1);
}

/* The driver offers descriptor 0 on queue 0 `n` times. */
static void offer(struct fx *f, unsigned n)
{
    struct virtq_desc d = { .addr = 0x400000, .len = 64 };
    assert_int_equal(gm_write(&f->gm, DESC_GPA, &d, sizeof(d)), 0);
    for (unsigned i = 0; i < n; i++) {
        uint16_t idx, head = 0;
        assert_int_equal(gm_read(&f->gm, AVAIL_GPA + 2, &idx, 2), 0);
        assert_int_equal(gm_write(&f->gm, AVAIL_GPA + 4 + 2 * (idx % QSIZE), &head, 2), 0);
        idx++;
        assert_int_equal(gm_write(&f->gm, AVAIL_GPA + 2, &idx, 2), 0);
    }
}

static uint16_t avail_event_of(struct fx *f)
{
    uint16_t v;
    assert_int_equal(gm_read(&f->gm, USED_GPA + 4 + 8 * QSIZE, &v, 2), 0);
    return v;
}

/* Polling a queue (--io-poll): only progress counts, kicks are held while it lasts and asked
 * for again at its end, and a queue the model does not poll or a reset device is left alone. */
static void test_poll(void **state)
{
    struct fx *f = *state;
    bring_up(f);
    assert_true(virtio_pci_pollable(&f->vp, 0));
    assert_false(virtio_pci_pollable(&f->vp, 1));
    assert_false(virtio_pci_pollable(&f->vp, 9));
    assert_false(virtio_pci_poll(&f->vp, 0)); /* nothing offered */
    assert_true(f->vdev.queues[0].polled);

    f->takes = true;
    offer(f, 2);
    assert_true(virtio_pci_poll(&f->vp, 0));
    assert_int_equal(f->vdev.queues[0].last_avail_idx, 2);
    assert_int_equal(avail_event_of(f), 0); /* the driver is not asked to kick */

    f->takes = false; /* paused, say: entries wait, but that is not work */
    offer(f, 1);
    assert_false(virtio_pci_poll(&f->vp, 0));
    assert_false(virtio_pci_poll_end(&f->vp, 0));
    assert_false(f->vdev.queues[0].polled);
    assert_int_equal(avail_event_of(f), 2); /* kicks asked for again */

    f->takes = true;
    assert_true(virtio_pci_poll_end(&f->vp, 0)); /* the waiting entry is taken */
    assert_int_equal(f->vdev.queues[0].last_avail_idx, 3);
    assert_false(virtio_pci_poll_end(&f->vp, 0));
    assert_false(virtio_pci_poll_end(&f->vp, 7));

    set_status(f, 0);
    offer(f, 1);
    assert_false(virtio_pci_poll(&f->vp, 0));
    assert_false(f->vdev.queues[0].polled);
}

static void test_queue_select_and_size(void **state)
{
    struct fx *f = *state;
    enable_pci(f);
    negotiate(f, 1ULL << VIRTIO_F_VERSION_1);
    bar_wr(f, 0x16, 2, 0);
    assert_int_equal(bar_rd(f, 0x18, 2), 256);
    bar_wr(f, 0x18, 2, 100); /* not a power of two */
    assert_int_equal(bar_rd(f, 0x18, 2), 256);
    bar_wr(f, 0x18, 2, 512); /* above the maximum */
    assert_int_equal(bar_rd(f, 0x18, 2), 256);
    bar_wr(f, 0x18, 2, 64);
    assert_int_equal(bar_rd(f, 0x18, 2), 64);
    bar_wr(f, 0x1a, 2, 3); /* no such vector */
    assert_int_equal(bar_rd(f, 0x1a, 2), VIRTIO_MSI_NO_VECTOR);

    bar_wr(f, 0x16, 2, 9);
    bar_wr(f, 0x18, 2, 4);
    bar_wr(f, 0x20, 8, 0x1234);
    bar_wr(f, 0x1c, 2, 1);
    assert_int_equal(bar_rd(f, 0x16, 2), 9);
    for (uint64_t off = 0x18; off < 0x38; off += 2)
        assert_int_equal(bar_rd(f, off, 2), 0);
}

static void test_bad_rings_need_reset(void **state)
{
    struct fx *f = *state;
    enable_pci(f);
    program_vector(f, 0, 0xfee00000, 0x40, false);
    negotiate(f, 1ULL << VIRTIO_F_VERSION_1);
    bar_wr(f, 0x10, 2, 0);
    setup_queue(f, 0, (64ull << 20) - 128, 1); /* desc table runs past RAM's end */
    assert_false(f->vdev.queues[0].enabled);
    assert_true(status(f) & VIRTIO_STATUS_NEEDS_RESET);
    assert_int_equal(f->raises[0], 0); /* not before DRIVER_OK */
    set_status(f, 0);
    assert_int_equal(status(f), 0);

    negotiate(f, 1ULL << VIRTIO_F_VERSION_1);
    setup_queue(f, 0, DESC_GPA + 8, 1); /* misaligned */
    assert_true(status(f) & VIRTIO_STATUS_NEEDS_RESET);
    set_status(f, 0);

    /* A failing activate marks the device broken, and the config vector tells the driver. */
    f->activate_ret = -5;
    bring_up(f);
    assert_true(status(f) & VIRTIO_STATUS_NEEDS_RESET);
    assert_int_equal(f->raises[0], 1);
}

static void test_msix(void **state)
{
    struct fx *f = *state;
    bring_up(f);
    assert_int_equal(f->last_route_vector, 2);
    assert_int_equal(f->last_route_address, 0xfee00002);
    assert_int_equal(f->last_route_data, 0x42);
    assert_false(f->last_route_masked);

    f->vdev.interrupt_queue(&f->vdev, 1);
    assert_int_equal(f->raises[2], 1);
    assert_int_equal(bar_rd(f, VIRTIO_PCI_ISR_OFFSET, 1), 1);
    assert_int_equal(bar_rd(f, VIRTIO_PCI_ISR_OFFSET, 1), 0); /* read clears */

    /* Masked entry: pending, then delivered on unmask. */
    bar_wr(f, VIRTIO_PCI_MSIX_TABLE_OFFSET + 16 * 2 + 12, 4, 1);
    assert_true(f->last_route_masked);
    f->vdev.interrupt_queue(&f->vdev, 1);
    assert_int_equal(f->raises[2], 1);
    assert_int_equal(bar_rd(f, VIRTIO_PCI_MSIX_PBA_OFFSET, 8), 1u << 2);
    bar_wr(f, VIRTIO_PCI_MSIX_TABLE_OFFSET + 16 * 2 + 12, 4, 0);
    assert_int_equal(f->raises[2], 2);
    assert_int_equal(bar_rd(f, VIRTIO_PCI_MSIX_PBA_OFFSET, 8), 0);
    assert_int_equal(bar_rd(f, VIRTIO_PCI_MSIX_TABLE_OFFSET + 16 * 2, 8), 0xfee00002);
    assert_int_equal(bar_rd(f, VIRTIO_PCI_MSIX_TABLE_OFFSET + 16 * 2 + 8, 8), 0x42);

    /* Function mask: same rule for every vector. */
    uint32_t msix = find_cap(f, PCI_CAP_ID_MSIX);
    cfg_wr(f, msix + PCI_MSIX_FLAGS, 2, PCI_MSIX_FLAGS_ENABLE | PCI_MSIX_FLAGS_MASKALL);
    f->vdev.interrupt_queue(&f->vdev, 0);
    f->vdev.interrupt_config(&f->vdev);
    assert_int_equal(f->raises[1], 0);
    assert_int_equal(f->raises[0], 0);
    cfg_wr(f, msix + PCI_MSIX_FLAGS, 2, PCI_MSIX_FLAGS_ENABLE);
    assert_int_equal(f->raises[1], 1);
    assert_int_equal(f->raises[0], 1);

    /* Config change: ISR bit 1, a new generation. */
    uint8_t gen = (uint8_t)bar_rd(f, 0x15, 1);
    f->vdev.interrupt_config(&f->vdev);
    assert_int_equal(f->raises[0], 2);
    assert_int_equal(bar_rd(f, 0x15, 1), (uint8_t)(gen + 1));
    assert_int_equal(bar_rd(f, VIRTIO_PCI_ISR_OFFSET, 1) & 2, 2);

    /* NO_VECTOR: nothing raised. */
    bar_wr(f, 0x10, 2, VIRTIO_MSI_NO_VECTOR);
    f->vdev.interrupt_config(&f->vdev);
    assert_int_equal(f->raises[0], 2);

    /* MSI-X disabled: nothing raised, nothing pending. */
    cfg_wr(f, msix + PCI_MSIX_FLAGS, 2, 0);
    f->vdev.interrupt_queue(&f->vdev, 0);
    assert_int_equal(f->raises[1], 1);
    assert_int_equal(bar_rd(f, VIRTIO_PCI_MSIX_PBA_OFFSET, 8), 0);

    /* needs_reset from the model after DRIVER_OK: status bit and a config interrupt. */
    cfg_wr(f, msix + PCI_MSIX_FLAGS, 2, PCI_MSIX_FLAGS_ENABLE);
    bar_wr(f, 0x10, 2, 0);
    f->vdev.needs_reset(&f->vdev, "test");
    assert_true(status(f) & VIRTIO_STATUS_NEEDS_RESET);
    assert_int_equal(f->raises[0], 3);
    virtio_pci_kick(&f->vp, 0);
    assert_int_equal(f->notifies[0], 0);
}

static void test_device_config(void **state)
{
    struct fx *f = *state;
    enable_pci(f);
    uint64_t base = VIRTIO_PCI_DEVICE_OFFSET;
    assert_int_equal(bar_rd(f, base, 4), 0xa3a2a1a0);
    assert_int_equal(bar_rd(f, base + 8, 8), 0xafaeadacabaaa9a8ull);
    assert_int_equal(bar_rd(f, base + 15, 1), 0xaf);
    bar_wr(f, base + 4, 2, 0x1234);
    assert_int_equal(f->config[4], 0x34);
    assert_int_equal(f->config[5], 0x12);
    /* Past the end, straddling the end, and misaligned: zeros, nothing written. */
    assert_int_equal(bar_rd(f, base + 16, 4), 0);
    assert_int_equal(bar_rd(f, base + 0xffc, 4), 0);
    bar_wr(f, base + 16, 4, 0xffffffff);
    assert_int_equal(bar_rd(f, base + 14, 4), 0); /* misaligned */
    assert_int_equal(bar_rd(f, base + 12, 4), 0xafaeadac);
}

/* Random values at every offset and width: no crash, no sanitizer report. */
static void test_hostile_sweep(void **state)
{
    struct fx *f = *state;
    unsigned widths[] = { 1, 2, 4, 8, 3, 0 };
    uint8_t buf[8];
    srand(7);
    for (uint32_t off = 0; off < 260; off++)
        for (unsigned w = 0; w < 3; w++) {
            uint32_t len = 1u << w;
            if (off % 4 + len > 4)
                continue; /* the host never splits a dword */
            cfg_wr(f, off, len, (uint32_t)rand() * 2654435761u);
            (void)cfg_rd(f, off, len);
        }
    for (unsigned pass = 0; pass < 3; pass++) {
        enable_pci(f);
        if (pass == 1)
            bring_up(f);
        for (uint64_t off = 0; off < VIRTIO_PCI_BAR_SIZE + 16; off++)
            for (unsigned w = 0; w < 6; w++) {
                uint32_t len = widths[w];
                uint64_t v = (uint64_t)rand() << 33 ^ (uint64_t)rand() << 7 ^ (uint64_t)rand();
                if (off >= 0x14 && off < 0x18 && pass == 1)
                    continue; /* keep the device running in this pass */
                bar_wr(f, off, len, v);
                memset(buf, 0, sizeof(buf));
                if (len && len <= 8)
                    virtio_pci_bar_ops.read(&f->vp, off, buf, len);
            }
        f->vdev.interrupt_queue(&f->vdev, 0);
        f->vdev.interrupt_queue(&f->vdev, 1);
        f->vdev.interrupt_queue(&f->vdev, 99);
        f->vdev.interrupt_config(&f->vdev);
        virtio_pci_kick(&f->vp, 0);
        virtio_pci_kick(&f->vp, 1);
    }
    set_status(f, 0);
    assert_int_equal(status(f), 0);
}

static void test_init_rejects(void **state)
{
    struct fx *f = *state;
    struct virtio_pci vp;
    struct virtio_pci_host host = { 0 };
    struct virtio_device_ops ops = fake_ops;
    struct virtio_device vdev = { .ops = &ops, .gm = &f->gm };
    assert_int_equal(virtio_pci_init(&vp, &vdev, &host, BAR_GPA + 0x100), -EINVAL);
    ops.nr_queues = 0;
    assert_int_equal(virtio_pci_init(&vp, &vdev, &host, BAR_GPA), -EINVAL);
    ops.nr_queues = 2;
    ops.queue_max_size = 100;
    assert_int_equal(virtio_pci_init(&vp, &vdev, &host, BAR_GPA), -EINVAL);
    ops.queue_max_size = 256;
    ops.config_size = 0x2000;
    assert_int_equal(virtio_pci_init(&vp, &vdev, &host, BAR_GPA), -EINVAL);
    ops.config_size = 0;
    ops.device_id = VIRTIO_ID_NET;
    ops.nr_queues = VIRTIO_MAX_QUEUES;
    assert_int_equal(virtio_pci_init(&vp, &vdev, &host, BAR_GPA), 0);
    uint8_t b[4];
    virtio_pci_config_ops.config_read(&vp, PCI_CLASS_REVISION, b, 4);
    assert_int_equal(b[3] << 16 | b[2] << 8 | b[1], 0x020000);
    assert_int_equal(virtio_pci_notify_gpa(&vp, 63),
                     BAR_GPA + VIRTIO_PCI_NOTIFY_OFFSET + 4 * 63);
    virtio_pci_destroy(&vp);
}

/* ---- Snapshots ---- */

static void save_vp(void *dev, struct state_writer *w)
{
    virtio_pci_save(dev, w);
}

static int load_vp(void *dev, struct state_cursor *c, uint32_t version)
{
    return virtio_pci_load(dev, c, version);
}

/* Payload offsets of a few fields: config space, 2 selects, 2 feature words, then status. */
#define SNAP_STATUS (256 + 4 + 4 + 8 + 8)
#define SNAP_NR_QUEUES (SNAP_STATUS + 1 + 1 + 1 + 2 + 2)
#define SNAP_QUEUE0_SIZE (SNAP_NR_QUEUES + 4)
#define SNAP_QUEUE0_VECTOR (SNAP_QUEUE0_SIZE + 2)

/* A running device with indexes that moved and an interrupt pending behind a mask. */
static struct test_payload running_snapshot(struct fx *f)
{
    bring_up(f);
    f->vdev.queues[1].last_avail_idx = 7;
    f->vdev.queues[1].used_idx = 6;
    bar_wr(f, VIRTIO_PCI_MSIX_TABLE_OFFSET + 16 * 2 + 12, 4, 1);
    f->vdev.interrupt_queue(&f->vdev, 1);
    return test_save(save_vp, &f->vp, VIRTIO_PCI_STATE_VERSION);
}

static void test_snapshot_round_trip(void **state)
{
    struct fx *f = *state;
    struct test_payload p = running_snapshot(f);
    void *other;
    setup(&other);
    struct fx *g = other;

    assert_int_equal(test_load(load_vp, &g->vp, p.data, p.len, VIRTIO_PCI_STATE_VERSION), 0);
    /* The same bytes back, a running device again, its backend restarted, its routes. */
    test_assert_saves(save_vp, &g->vp, VIRTIO_PCI_STATE_VERSION, &p);
    assert_int_equal(g->activates, 1);
    assert_true(status(g) & VIRTIO_STATUS_DRIVER_OK);
    assert_true(g->vdev.queues[1].enabled);
    assert_true(g->vdev.queues[1].event_idx);
    assert_int_equal(g->vdev.queues[1].last_avail_idx, 7);
    assert_int_equal(g->vdev.queues[1].used_idx, 6);
    assert_int_equal(g->vdev.queues[1].used_gpa, USED_GPA + 0x1000);
    assert_true(g->routes >= 3);
    assert_int_equal(bar_rd(g, VIRTIO_PCI_MSIX_PBA_OFFSET, 8), 1u << 2);
    /* The pending interrupt is delivered when the guest unmasks it, as before the snapshot. */
    bar_wr(g, VIRTIO_PCI_MSIX_TABLE_OFFSET + 16 * 2 + 12, 4, 0);
    assert_int_equal(g->raises[2], 1);
    virtio_pci_kick(&g->vp, 1);
    assert_int_equal(g->notifies[1], 1);
    test_payload_free(&p);
    teardown(&other);
}

static void test_snapshot_refusals(void **state)
{
    struct fx *f = *state;
    struct test_payload p = running_snapshot(f);
    void *other;
    setup(&other);
    struct fx *g = other;

    test_assert_refuses_framing(save_vp, load_vp, &g->vp, &p, VIRTIO_PCI_STATE_VERSION);
    test_assert_refuses_byte(save_vp, load_vp, &g->vp, &p, SNAP_STATUS, 0x1f,
                             VIRTIO_PCI_STATE_VERSION); /* an unknown status bit */
    test_assert_refuses_byte(save_vp, load_vp, &g->vp, &p, SNAP_NR_QUEUES, 3,
                             VIRTIO_PCI_STATE_VERSION); /* another device's queue count */
    test_assert_refuses_byte(save_vp, load_vp, &g->vp, &p, SNAP_QUEUE0_SIZE, 3,
                             VIRTIO_PCI_STATE_VERSION); /* not a power of two */
    test_assert_refuses_byte(save_vp, load_vp, &g->vp, &p, SNAP_QUEUE0_VECTOR, 9,
                             VIRTIO_PCI_STATE_VERSION); /* a vector it does not have */
    test_assert_refuses_byte(save_vp, load_vp, &g->vp, &p, SNAP_QUEUE0_VECTOR + 2 + 4, 0xff,
                             VIRTIO_PCI_STATE_VERSION); /* desc ring far outside RAM */
    assert_int_equal(g->activates, 0);
    test_payload_free(&p);
    teardown(&other);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_ids, setup, teardown),
        cmocka_unit_test_setup_teardown(test_capabilities, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bar_sizing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_memory_decode, setup, teardown),
        cmocka_unit_test_setup_teardown(test_features, setup, teardown),
        cmocka_unit_test_setup_teardown(test_queue_setup_and_kick, setup, teardown),
        cmocka_unit_test_setup_teardown(test_poll, setup, teardown),
        cmocka_unit_test_setup_teardown(test_queue_select_and_size, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_rings_need_reset, setup, teardown),
        cmocka_unit_test_setup_teardown(test_msix, setup, teardown),
        cmocka_unit_test_setup_teardown(test_device_config, setup, teardown),
        cmocka_unit_test_setup_teardown(test_hostile_sweep, setup, teardown),
        cmocka_unit_test_setup_teardown(test_init_rejects, setup, teardown),
        cmocka_unit_test_setup_teardown(test_snapshot_round_trip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_snapshot_refusals, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
