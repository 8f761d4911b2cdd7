/* pci_host.c: type-0 config spaces, the bus-0 device registry, config mechanism 1 ports. */
#include "mmio/pci_host.h"

#include <errno.h>
#include <linux/pci_regs.h>
#include <string.h>

#include "migration/state.h"

#define CONFIG_ENABLE 0x80000000u
#define CONFIG_ADDRESS_MASK 0x80fffffcu /* reserved bits 30-24 and 1-0 read as zero */
#define CAPS_START 0x40                 /* capabilities live after the standard header */

#define COMMAND_WRITABLE                                                                 \
    (PCI_COMMAND_IO | PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER | PCI_COMMAND_PARITY |     \
     PCI_COMMAND_SERR | PCI_COMMAND_INTX_DISABLE)
#define STATUS_WRITE1_CLEAR                                                              \
    (PCI_STATUS_DETECTED_PARITY | PCI_STATUS_SIG_SYSTEM_ERROR | PCI_STATUS_REC_MASTER_ABORT | \
     PCI_STATUS_REC_TARGET_ABORT | PCI_STATUS_SIG_TARGET_ABORT | PCI_STATUS_PARITY)

/* ---- Configuration space ---- */

static bool config_range_ok(uint64_t offset, uint64_t len)
{
    return offset < PCI_CONFIG_SPACE_SIZE && len <= PCI_CONFIG_SPACE_SIZE - offset;
}

uint32_t pci_config_get(const struct pci_config_space *cs, unsigned offset, unsigned len)
{
    uint32_t value = 0;
    if (len > 4 || !config_range_ok(offset, len))
        return 0xffffffff;
    for (unsigned i = 0; i < len; i++)
        value |= (uint32_t)cs->bytes[offset + i] << (8 * i);
    return value;
}

static void put_le(uint8_t *dst, unsigned len, uint32_t value)
{
    for (unsigned i = 0; i < len; i++)
        dst[i] = (uint8_t)(value >> (8 * i));
}

void pci_config_set(struct pci_config_space *cs, unsigned offset, unsigned len, uint32_t value)
{
    if (len <= 4 && config_range_ok(offset, len))
        put_le(&cs->bytes[offset], len, value);
}

void pci_config_set_masks(struct pci_config_space *cs, unsigned offset, unsigned len,
                          uint32_t writable, uint32_t write1_clear)
{
    if (len > 4 || !config_range_ok(offset, len))
        return;
    put_le(&cs->writable[offset], len, writable);
    put_le(&cs->write1_clear[offset], len, write1_clear);
}

void pci_config_init(struct pci_config_space *cs, const struct pci_ids *ids)
{
    memset(cs, 0, sizeof(*cs));
    pci_config_set(cs, PCI_VENDOR_ID, 2, ids->vendor);
    pci_config_set(cs, PCI_DEVICE_ID, 2, ids->device);
    pci_config_set(cs, PCI_CLASS_REVISION, 4, ids->class_code << 8 | ids->revision);
    pci_config_set(cs, PCI_HEADER_TYPE, 1, PCI_HEADER_TYPE_NORMAL);
    pci_config_set(cs, PCI_SUBSYSTEM_VENDOR_ID, 2, ids->subsystem_vendor);
    pci_config_set(cs, PCI_SUBSYSTEM_ID, 2, ids->subsystem);
    pci_config_set(cs, PCI_INTERRUPT_PIN, 1, ids->interrupt_pin);
    pci_config_set_masks(cs, PCI_COMMAND, 2, COMMAND_WRITABLE, 0);
    pci_config_set_masks(cs, PCI_STATUS, 2, 0, STATUS_WRITE1_CLEAR);
    pci_config_set_masks(cs, PCI_CACHE_LINE_SIZE, 1, 0xff, 0);
    pci_config_set_masks(cs, PCI_LATENCY_TIMER, 1, 0xff, 0);
    pci_config_set_masks(cs, PCI_INTERRUPT_LINE, 1, 0xff, 0);
    cs->next_cap_free = CAPS_START;
}

static bool is_power_of_two(uint64_t v)
{
    return v && !(v & (v - 1));
}

int pci_config_set_bar(struct pci_config_space *cs, unsigned bar, enum pci_bar_kind kind,
                       uint64_t size, bool prefetchable)
{
    unsigned offset = PCI_BASE_ADDRESS_0 + 4 * bar;
    uint64_t address_mask = ~(size - 1);

    if (bar >= PCI_BARS || !is_power_of_two(size))
        return -EINVAL;
    switch (kind) {
    case PCI_BAR_IO:
        if (size < 4 || size > 0x10000)
            return -EINVAL;
        pci_config_set(cs, offset, 4, PCI_BASE_ADDRESS_SPACE_IO);
        pci_config_set_masks(cs, offset, 4, (uint32_t)address_mask & ~3u, 0);
        return 0;
    case PCI_BAR_MEM32:
        if (size < 16 || size > (1ULL << 31))
            return -EINVAL;
        pci_config_set(cs, offset, 4, prefetchable ? PCI_BASE_ADDRESS_MEM_PREFETCH : 0);
        pci_config_set_masks(cs, offset, 4, (uint32_t)address_mask & ~15u, 0);
        return 0;
    case PCI_BAR_MEM64:
        if (bar + 1 >= PCI_BARS || size < 16)
            return -EINVAL;
        pci_config_set(cs, offset, 4, PCI_BASE_ADDRESS_MEM_TYPE_64 |
                                          (prefetchable ? PCI_BASE_ADDRESS_MEM_PREFETCH : 0));
        pci_config_set_masks(cs, offset, 4, (uint32_t)address_mask & ~15u, 0);
        pci_config_set(cs, offset + 4, 4, 0);
        pci_config_set_masks(cs, offset + 4, 4, (uint32_t)(address_mask >> 32), 0);
        return 0;
    }
    return -EINVAL;
}

uint64_t pci_config_bar_address(const struct pci_config_space *cs, unsigned bar)
{
    uint32_t low;

    if (bar >= PCI_BARS)
        return 0;
    low = pci_config_get(cs, PCI_BASE_ADDRESS_0 + 4 * bar, 4);
    if (low & PCI_BASE_ADDRESS_SPACE_IO)
        return low & PCI_BASE_ADDRESS_IO_MASK;
    if ((low & PCI_BASE_ADDRESS_MEM_TYPE_MASK) == PCI_BASE_ADDRESS_MEM_TYPE_64 &&
        bar + 1 < PCI_BARS)
        return (uint64_t)pci_config_get(cs, PCI_BASE_ADDRESS_0 + 4 * (bar + 1), 4) << 32 |
               (low & PCI_BASE_ADDRESS_MEM_MASK);
    return low & PCI_BASE_ADDRESS_MEM_MASK;
}

int pci_config_add_capability(struct pci_config_space *cs, const void *cap, unsigned len)
{
    unsigned offset = cs->next_cap_free < CAPS_START ? CAPS_START : cs->next_cap_free;

    if (len < 2 || !config_range_ok(offset, len))
        return -ENOSPC;
    memcpy(&cs->bytes[offset], cap, len);
    cs->bytes[offset + PCI_CAP_LIST_NEXT] = 0;
    pci_config_set_masks(cs, offset, 2, 0, 0);
    if (cs->last_cap)
        cs->bytes[cs->last_cap + PCI_CAP_LIST_NEXT] = (uint8_t)offset;
    else
        cs->bytes[PCI_CAPABILITY_LIST] = (uint8_t)offset;
    cs->bytes[PCI_STATUS] |= PCI_STATUS_CAP_LIST;
    cs->last_cap = (uint8_t)offset;
    cs->next_cap_free = (uint16_t)((offset + len + 3) & ~3u);
    return (int)offset;
}

void pci_config_read(const struct pci_config_space *cs, uint32_t offset, uint8_t *data,
                     uint32_t len)
{
    for (uint32_t i = 0; i < len; i++)
        data[i] = config_range_ok((uint64_t)offset + i, 1) ? cs->bytes[offset + i] : 0xff;
}

void pci_config_write(struct pci_config_space *cs, uint32_t offset, const uint8_t *data,
                      uint32_t len)
{
    for (uint32_t i = 0; i < len; i++) {
        uint64_t at = (uint64_t)offset + i;
        if (!config_range_ok(at, 1))
            break;
        uint8_t keep = cs->bytes[at] & ~cs->writable[at];
        uint8_t value = keep | (data[i] & cs->writable[at]);
        cs->bytes[at] = value & ~(data[i] & cs->write1_clear[at]);
    }
}

/* ---- Bus 0: the registry and the configuration-access core ---- */

static void bridge_config_read(void *dev, uint32_t offset, uint8_t *data, uint32_t len)
{
    pci_config_read(dev, offset, data, len);
}

static void bridge_config_write(void *dev, uint32_t offset, const uint8_t *data, uint32_t len)
{
    pci_config_write(dev, offset, data, len);
}

static const struct pci_device_ops bridge_ops = { .config_read = bridge_config_read,
                                                  .config_write = bridge_config_write };

int pci_host_init(struct pci_host *host)
{
    const struct pci_ids bridge_ids = { .vendor = PCI_HOST_BRIDGE_VENDOR,
                                        .device = PCI_HOST_BRIDGE_DEVICE,
                                        .class_code = PCI_CLASS_HOST_BRIDGE };
    int ret;

    memset(host, 0, sizeof(*host));
    ret = pthread_mutex_init(&host->lock, NULL);
    if (ret)
        return -ret;
    pci_config_init(&host->st.bridge, &bridge_ids);
    host->slots[0] = (struct pci_slot){ &bridge_ops, &host->st.bridge };
    return 0;
}

void pci_host_destroy(struct pci_host *host)
{
    pthread_mutex_destroy(&host->lock);
}

int pci_host_add_device(struct pci_host *host, unsigned slot, const struct pci_device_ops *ops,
                        void *dev)
{
    int ret = 0;

    if (slot >= PCI_SLOTS || !ops || !ops->config_read || !ops->config_write)
        return -EINVAL;
    pthread_mutex_lock(&host->lock);
    if (host->slots[slot].ops)
        ret = -EEXIST;
    else
        host->slots[slot] = (struct pci_slot){ ops, dev };
    pthread_mutex_unlock(&host->lock);
    return ret;
}

/* The device at an address, or NULL: only function 0 of slots on bus 0 exist. */
static const struct pci_slot *pci_host_lookup(const struct pci_host *host, unsigned bus,
                                              unsigned slot, unsigned function)
{
    if (bus != 0 || slot >= PCI_SLOTS || function != 0 || !host->slots[slot].ops)
        return NULL;
    return &host->slots[slot];
}

static bool pci_access_ok(uint32_t offset, uint32_t len)
{
    return (len == 1 || len == 2 || len == 4) && offset < PCI_CONFIG_SPACE_SIZE &&
           (offset & 3) + len <= 4;
}

static void config_read_locked(struct pci_host *host, unsigned bus, unsigned slot,
                               unsigned function, uint32_t offset, uint8_t *data, uint32_t len)
{
    const struct pci_slot *s = pci_host_lookup(host, bus, slot, function);

    memset(data, 0xff, len);
    if (s && pci_access_ok(offset, len))
        s->ops->config_read(s->dev, offset, data, len);
}

static void config_write_locked(struct pci_host *host, unsigned bus, unsigned slot,
                                unsigned function, uint32_t offset, const uint8_t *data,
                                uint32_t len)
{
    const struct pci_slot *s = pci_host_lookup(host, bus, slot, function);

    if (s && pci_access_ok(offset, len))
        s->ops->config_write(s->dev, offset, data, len);
}

void pci_host_config_read(struct pci_host *host, unsigned bus, unsigned slot,
                          unsigned function, uint32_t offset, uint8_t *data, uint32_t len)
{
    pthread_mutex_lock(&host->lock);
    config_read_locked(host, bus, slot, function, offset, data, len);
    pthread_mutex_unlock(&host->lock);
}

void pci_host_config_write(struct pci_host *host, unsigned bus, unsigned slot,
                           unsigned function, uint32_t offset, const uint8_t *data,
                           uint32_t len)
{
    pthread_mutex_lock(&host->lock);
    config_write_locked(host, bus, slot, function, offset, data, len);
    pthread_mutex_unlock(&host->lock);
}

/* ---- Configuration mechanism 1: ports 0xcf8-0xcff ---- */

#define PORT_ADDRESS 0 /* offsets from 0xcf8 */
#define PORT_DATA 4

static unsigned cf8_bus(uint32_t a) { return (a >> 16) & 0xff; }
static unsigned cf8_slot(uint32_t a) { return (a >> 11) & 0x1f; }
static unsigned cf8_function(uint32_t a) { return (a >> 8) & 0x7; }
static uint32_t cf8_register(uint32_t a) { return a & 0xfc; }

/* An access to the data window: 0xcfc + n reaches byte n of the addressed dword. */
static bool data_window_access(uint64_t offset, uint32_t len)
{
    return offset >= PORT_DATA && offset < PCI_HOST_IO_LEN && len <= PCI_HOST_IO_LEN - offset;
}

static void pci_host_io_read(void *dev, uint64_t offset, uint8_t *data, uint32_t len)
{
    struct pci_host *host = dev;

    memset(data, 0xff, len);
    pthread_mutex_lock(&host->lock);
    uint32_t a = host->st.config_address;
    if (offset == PORT_ADDRESS && len == 4)
        put_le(data, 4, a);
    else if (data_window_access(offset, len) && (a & CONFIG_ENABLE))
        config_read_locked(host, cf8_bus(a), cf8_slot(a), cf8_function(a),
                           cf8_register(a) + (uint32_t)(offset - PORT_DATA), data, len);
    /* Byte and word accesses to 0xcf8-0xcfb are other chipset ports: none here. */
    pthread_mutex_unlock(&host->lock);
}

static void pci_host_io_write(void *dev, uint64_t offset, const uint8_t *data, uint32_t len)
{
    struct pci_host *host = dev;

    pthread_mutex_lock(&host->lock);
    uint32_t a = host->st.config_address;
    if (offset == PORT_ADDRESS && len == 4)
        host->st.config_address =
            (data[0] | data[1] << 8 | data[2] << 16 | (uint32_t)data[3] << 24) &
            CONFIG_ADDRESS_MASK;
    else if (data_window_access(offset, len) && (a & CONFIG_ENABLE))
        config_write_locked(host, cf8_bus(a), cf8_slot(a), cf8_function(a),
                            cf8_register(a) + (uint32_t)(offset - PORT_DATA), data, len);
    pthread_mutex_unlock(&host->lock);
}

const struct device_ops pci_host_io_ops = { .read = pci_host_io_read, .write = pci_host_io_write };

/* ---- Snapshots: the address latch, then the bridge's 256 config bytes ---- */

void pci_host_save(void *dev, struct state_writer *w)
{
    struct pci_host *host = dev;
    uint8_t bytes[PCI_CONFIG_SPACE_SIZE];
    uint32_t address;

    pthread_mutex_lock(&host->lock);
    address = host->st.config_address;
    memcpy(bytes, host->st.bridge.bytes, sizeof(bytes));
    pthread_mutex_unlock(&host->lock);
    sw_u32(w, address);
    sw_bytes(w, bytes, sizeof(bytes));
}

/*
 * Loaded config bytes may differ from the bridge's own only where the guest can change them:
 * writable bits, and write-1-to-clear status bits (which hardware sets). All else (IDs, class,
 * header type, capability pointer) must be what this bridge is.
 */
static int bridge_bytes_check(const struct state_cursor *c, const struct pci_config_space *cs,
                              const uint8_t *bytes)
{
    for (unsigned i = 0; i < PCI_CONFIG_SPACE_SIZE; i++) {
        uint8_t fixed = (uint8_t)~(cs->writable[i] | cs->write1_clear[i]);
        if ((bytes[i] ^ cs->bytes[i]) & fixed)
            return sc_reject(c, "bridge config byte 0x%02x: 0x%02x, but its read-only bits "
                             "are 0x%02x here", i, bytes[i], cs->bytes[i] & fixed);
    }
    return 0;
}

int pci_host_load(void *dev, struct state_cursor *c, uint32_t version)
{
    struct pci_host *host = dev;
    uint8_t bytes[PCI_CONFIG_SPACE_SIZE];
    uint32_t address;
    int ret;

    if (version != PCI_HOST_STATE_VERSION)
        return sc_reject(c, "version %u unknown", version);
    address = sc_u32(c);
    sc_bytes(c, bytes, sizeof(bytes));
    if ((ret = sc_finish(c)) < 0)
        return ret;
    if (address & ~CONFIG_ADDRESS_MASK)
        return sc_reject(c, "config_address 0x%08x: reserved bits set", address);
    pthread_mutex_lock(&host->lock);
    ret = bridge_bytes_check(c, &host->st.bridge, bytes);
    if (ret == 0) {
        host->st.config_address = address;
        memcpy(host->st.bridge.bytes, bytes, sizeof(bytes));
    }
    pthread_mutex_unlock(&host->lock);
    return ret;
}
