/* pci_host.h: PCI bus 0 via ports 0xcf8/0xcfc, its host bridge, reusable config spaces. */
#ifndef GODWIT_PCI_HOST_H
#define GODWIT_PCI_HOST_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "mmio/bus.h"

struct state_writer;
struct state_cursor;

#define PCI_HOST_IO_LEN 8 /* 0xcf8 address register, 0xcfc-0xcff data window */
#define PCI_CONFIG_SPACE_SIZE 256
#define PCI_SLOTS 32
#define PCI_BARS 6

/* The host bridge at 00:00.0: Red Hat's "QEMU PCIe host bridge" IDs, which no Linux quirk
 * matches (an Intel chipset ID would pull in chipset-specific quirks). */
#define PCI_HOST_BRIDGE_VENDOR 0x1b36
#define PCI_HOST_BRIDGE_DEVICE 0x0008
#define PCI_CLASS_HOST_BRIDGE 0x060000

/* ---- A type-0 configuration space that devices can embed ---- */

/*
 * The bytes and two masks per byte: which bits the guest may change, and which bits a
 * guest write of 1 clears (status registers). All else is read-only. BAR sizing needs no
 * code of its own: a BAR's low address bits are read-only zeros, so writing all ones reads
 * back the size mask.
 */
struct pci_config_space {
    uint8_t bytes[PCI_CONFIG_SPACE_SIZE];
    uint8_t writable[PCI_CONFIG_SPACE_SIZE];
    uint8_t write1_clear[PCI_CONFIG_SPACE_SIZE];
    uint8_t last_cap;      /* offset of the last capability in the list, 0 for none */
    uint8_t next_cap_free; /* where pci_config_add_capability() puts the next one */
};

struct pci_ids {
    uint16_t vendor, device;
    uint32_t class_code; /* 24 bits: class, subclass, programming interface */
    uint8_t revision;
    uint16_t subsystem_vendor, subsystem;
    uint8_t interrupt_pin; /* 0 none, 1-4 INTA#-INTD# */
};

enum pci_bar_kind {
    PCI_BAR_IO,    /* I/O space */
    PCI_BAR_MEM32, /* 32-bit memory */
    PCI_BAR_MEM64, /* 64-bit memory: takes this BAR and the next */
};

/* Header type 0 with the ids; command, status, cache line, latency, interrupt line. */
void pci_config_init(struct pci_config_space *cs, const struct pci_ids *ids);
/* Declares BAR `bar`; size is a power of two, at least 16 (4 for I/O). Returns 0 or -EINVAL. */
int pci_config_set_bar(struct pci_config_space *cs, unsigned bar, enum pci_bar_kind kind,
                       uint64_t size, bool prefetchable);
/* Where the guest put the BAR (without the type bits); a 64-bit BAR includes the high half. */
uint64_t pci_config_bar_address(const struct pci_config_space *cs, unsigned bar);
/*
 * Appends a capability: copies `len` bytes (first byte the capability ID, the second is
 * overwritten with the link) to a 4-byte-aligned offset from 0x40 up and links it in.
 * Returns that offset, or -ENOSPC. Its bytes are read-only until pci_config_set_masks().
 */
int pci_config_add_capability(struct pci_config_space *cs, const void *cap, unsigned len);

/* Host-side access to 1, 2 or 4 little-endian bytes, ignoring the masks. */
uint32_t pci_config_get(const struct pci_config_space *cs, unsigned offset, unsigned len);
void pci_config_set(struct pci_config_space *cs, unsigned offset, unsigned len, uint32_t value);
void pci_config_set_masks(struct pci_config_space *cs, unsigned offset, unsigned len,
                          uint32_t writable, uint32_t write1_clear);

/* Guest accesses, with the masks applied. Bytes past the 256 read as ones, are not written. */
void pci_config_read(const struct pci_config_space *cs, uint32_t offset, uint8_t *data,
                     uint32_t len);
void pci_config_write(struct pci_config_space *cs, uint32_t offset, const uint8_t *data,
                      uint32_t len);

/* ---- The bus and its registry ---- */

/*
 * A device's configuration space as the host sees it: offset < 256, len 1, 2 or 4, never
 * crossing a 4-byte boundary. Called on vCPU threads with the host's lock held (all config
 * accesses are serialized), so they must not call back into pci_host.
 */
struct pci_device_ops {
    void (*config_read)(void *dev, uint32_t offset, uint8_t *data, uint32_t len);
    void (*config_write)(void *dev, uint32_t offset, const uint8_t *data, uint32_t len);
};

struct pci_slot {
    const struct pci_device_ops *ops; /* NULL: empty slot */
    void *dev;
};

/*
 * What a snapshot carries: the address latch and the bridge's own config space. Of the
 * latter only the bytes are saved; its masks and capability bookkeeping are the device
 * model's, set up again by pci_host_init(). The devices in the slots save their own.
 */
struct pci_host_state {
    uint32_t config_address; /* the 0xcf8 latch */
    struct pci_config_space bridge;
};

struct pci_host {
    pthread_mutex_t lock;
    struct pci_host_state st;
    struct pci_slot slots[PCI_SLOTS]; /* function 0 of each slot on bus 0; slot 0 the bridge */
};

/* The port handlers to register on the port bus at PORT_PCI_CONFIG for PCI_HOST_IO_LEN. */
extern const struct device_ops pci_host_io_ops;

/* Sets up bus 0 with the host bridge at slot 0. Returns 0 or -errno. */
int pci_host_init(struct pci_host *host);
void pci_host_destroy(struct pci_host *host);
/* Puts a single-function device at bus 0, `slot` (1-31). Returns 0, -EINVAL or -EEXIST. */
int pci_host_add_device(struct pci_host *host, unsigned slot, const struct pci_device_ops *ops,
                        void *dev);

/* Snapshots, as struct vm_device_ops save/load (dev: a struct pci_host, initialised, so that
 * load can hold the bridge's read-only bytes against its own). Load checks every value
 * before it applies any. */
#define PCI_HOST_STATE_VERSION 1
void pci_host_save(void *dev, struct state_writer *w);
int pci_host_load(void *dev, struct state_cursor *c, uint32_t version);

/*
 * The configuration-access core, for any access mechanism (ports now, ECAM later): one
 * access to bus/slot/function/offset, len 1, 2 or 4 within one dword. Absent devices,
 * buses other than 0 and offsets past 256 read as all ones; writes to them are dropped.
 */
void pci_host_config_read(struct pci_host *host, unsigned bus, unsigned slot,
                          unsigned function, uint32_t offset, uint8_t *data, uint32_t len);
void pci_host_config_write(struct pci_host *host, unsigned bus, unsigned slot,
                           unsigned function, uint32_t offset, const uint8_t *data,
                           uint32_t len);

#endif
