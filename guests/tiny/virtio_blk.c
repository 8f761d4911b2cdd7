/*
 * virtio_blk.c: a minimal virtio-pci (modern, 1.x) block driver: finds the disk on PCI bus 0,
 * brings it up with one polled split virtqueue, then writes, reads back, flushes, asks for the
 * serial, reads past the end, and breaks the queue on purpose to check NEEDS_RESET and a reset.
 *
 * Modes, from the kernel command line (--cmdline): "tiny.blk=ro" expects a read-only disk
 * (--disk ...,readonly=on): its writes must fail with IOERR. Anything else: a writable disk.
 *
 * What the host test (tests/kvm/run-kvm-tests.sh, case virtio-blk) prepares and checks: the
 * image is zero but for sector 0, which holds pattern(HOST_SEED, 0, i); the guest writes
 * pattern(GUEST_SEED, s, i) to sectors TEST_SECTOR..TEST_SECTOR+7; pattern() below and the
 * script's pattern_sectors() must agree. The disk's serial is EXPECTED_SERIAL.
 *
 * No interrupts: MSI-X stays disabled and the driver polls used->idx. The polling runs in
 * ring 0 like every other tiny guest (none has a ring-3 part); the waits are short and
 * bounded by a PIT deadline.
 */
#include "lib.h"

#define VIRTIO_VENDOR 0x1af4
#define VIRTIO_DEV_BLK_MODERN 0x1042 /* 0x1040 + device ID 2 */

/* PCI configuration registers. */
#define PCI_COMMAND 0x04
#define PCI_STATUS 0x06
#define PCI_BAR0 0x10
#define PCI_CAP_PTR 0x34
#define PCI_COMMAND_MEMORY 0x2
#define PCI_COMMAND_MASTER 0x4
#define PCI_STATUS_CAP_LIST 0x10
#define PCI_CAP_ID_VNDR 0x09
#define PCI_WINDOW_START 0xc0000000ULL /* where godwit places BARs */
#define PCI_WINDOW_END 0xe0000000ULL

/* virtio_pci_cap cfg_type (virtio 1.2, 4.1.4). */
#define CAP_COMMON 1
#define CAP_NOTIFY 2
#define CAP_ISR 3
#define CAP_DEVICE 4

/* virtio_pci_common_cfg (virtio 1.2, 4.1.4.3). */
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
#define CC_MIN_LEN 0x38

/* Device status bits (virtio 1.2, 2.1). */
#define S_ACKNOWLEDGE 1
#define S_DRIVER 2
#define S_DRIVER_OK 4
#define S_FEATURES_OK 8
#define S_NEEDS_RESET 64
#define S_FAILED 128

#define F_VERSION_1 32
#define BLK_F_RO 5
#define NO_VECTOR 0xffff
#define ISR_CONFIG 2

/* virtio-blk requests (virtio 1.2, 5.2.6). */
#define T_IN 0
#define T_OUT 1
#define T_FLUSH 4
#define T_GET_ID 8
#define BLK_S_OK 0
#define BLK_S_IOERR 1
#define BLK_S_UNSUPP 2
#define BLK_ID_BYTES 20
#define SECTOR 512u

/* The test's contract with tests/kvm/run-kvm-tests.sh. */
#define TEST_SECTOR 129u
#define TEST_SECTORS 8u
#define TEST_BYTES (TEST_SECTORS * SECTOR)
#define HOST_SEED 0x3c
#define GUEST_SEED 0x5a
#define EXPECTED_SERIAL "tiny-serial"
#define CMDLINE_RO "tiny.blk=ro"
/* Not RAM in any VM: the PCI window's unused part (io.c reads it as unmapped). */
#define OUTSIDE_RAM 0xd0000000ULL

/* The Linux zero page godwit hands a non-PVH ELF kernel (src/boot/layout.h, bootparam.h). */
#define ZERO_PAGE 0x7000ULL
#define ZP_EXT_CMD_LINE_PTR 0x0c8
#define ZP_CMD_LINE_PTR 0x228

#define WAIT_MS 10000u

/* ---- The split virtqueue (virtio 1.2, 2.7), in the guest's own .bss ---- */

#define QSIZE 8
#define VRING_DESC_F_NEXT 1
#define VRING_DESC_F_WRITE 2
#define VRING_AVAIL_F_NO_INTERRUPT 1

struct vring_desc {
    uint64_t addr;
    uint32_t len;
    uint16_t flags;
    uint16_t next;
};

struct vring_avail {
    uint16_t flags;
    uint16_t idx;
    uint16_t ring[QSIZE];
    uint16_t used_event;
};

struct vring_used_elem {
    uint32_t id;
    uint32_t len;
};

struct vring_used {
    uint16_t flags;
    uint16_t idx;
    struct vring_used_elem ring[QSIZE];
    uint16_t avail_event;
};

/* Each part on a page of its own: more alignment than the 16/2/4 bytes the spec asks. */
static struct {
    struct vring_desc desc[QSIZE] __attribute__((aligned(4096)));
    struct vring_avail avail __attribute__((aligned(4096)));
    struct vring_used used __attribute__((aligned(4096)));
} vq;

struct blk_req_hdr {
    uint32_t type;
    uint32_t ioprio;
    uint64_t sector;
};

static struct blk_req_hdr req_hdr __attribute__((aligned(16)));
static uint8_t req_status __attribute__((aligned(16)));
static uint8_t wbuf[TEST_BYTES] __attribute__((aligned(4096)));
static uint8_t rbuf[TEST_BYTES] __attribute__((aligned(4096)));
static uint8_t idbuf[BLK_ID_BYTES] __attribute__((aligned(64)));

/* The device as found on the bus. */
static struct {
    unsigned slot;
    uint64_t bar;
    uint64_t common, notify, isr, device;
    uint32_t common_len, notify_len, isr_len, device_len;
    uint32_t notify_mult;
    uint64_t doorbell;   /* queue 0's notify address */
    uint16_t avail_idx;  /* next avail->idx we publish */
    uint16_t used_seen;  /* used->idx we have consumed up to */
} dev;

/* ---- Small helpers ---- */

static inline void full_barrier(void)
{
    /* A locked RMW orders everything before it (no SSE fences in tiny guests). */
    __asm__ volatile("lock; addl $0, (%%rsp)" ::: "memory", "cc");
}

static inline uint16_t vread16(const uint16_t *p) { return *(const volatile uint16_t *)p; }
static inline uint32_t vread32(const uint32_t *p) { return *(const volatile uint32_t *)p; }
static inline void vwrite16(uint16_t *p, uint16_t v) { *(volatile uint16_t *)p = v; }

static uint64_t phys(const void *p)
{
    return (uint64_t)(uintptr_t)p; /* identity-mapped */
}

static uint8_t pattern(unsigned seed, uint64_t sector, unsigned i)
{
    return (uint8_t)(seed + sector * 37u + i * 7u + (i >> 8) * 101u);
}

static void fill_pattern(uint8_t *buf, unsigned seed, uint64_t first, unsigned sectors)
{
    for (unsigned s = 0; s < sectors; s++)
        for (unsigned i = 0; i < SECTOR; i++)
            buf[s * SECTOR + i] = pattern(seed, first + s, i);
}

/* Fails, naming the first byte that differs, unless buf holds the pattern. */
static void check_pattern(const uint8_t *buf, unsigned seed, uint64_t first, unsigned sectors,
                          const char *what)
{
    for (unsigned s = 0; s < sectors; s++) {
        for (unsigned i = 0; i < SECTOR; i++) {
            uint8_t want = pattern(seed, first + s, i);
            uint8_t got = buf[s * SECTOR + i];
            if (got != want) {
                uart_puts("tiny: virtio-blk: ");
                uart_puts(what);
                uart_puts(": sector ");
                uart_putdec(first + s);
                uart_puts(" byte ");
                uart_putdec(i);
                uart_puts(" is 0x");
                uart_puthex(got, 2);
                uart_puts(", expected 0x");
                uart_puthex(want, 2);
                uart_putc('\n');
                fail(what);
            }
        }
    }
}

static int contains(const char *hay, const char *needle)
{
    for (; *hay; hay++) {
        size_t i = 0;
        while (needle[i] && hay[i] == needle[i])
            i++;
        if (!needle[i])
            return 1;
    }
    return 0;
}

/* The kernel command line from the zero page, or "" when there is none. */
static const char *cmdline(void)
{
    const volatile uint8_t *zp = phys_ptr(ZERO_PAGE);
    uint64_t lo = (uint64_t)zp[ZP_CMD_LINE_PTR] | (uint64_t)zp[ZP_CMD_LINE_PTR + 1] << 8 |
                  (uint64_t)zp[ZP_CMD_LINE_PTR + 2] << 16 | (uint64_t)zp[ZP_CMD_LINE_PTR + 3] << 24;
    uint64_t hi = (uint64_t)zp[ZP_EXT_CMD_LINE_PTR] | (uint64_t)zp[ZP_EXT_CMD_LINE_PTR + 1] << 8 |
                  (uint64_t)zp[ZP_EXT_CMD_LINE_PTR + 2] << 16 |
                  (uint64_t)zp[ZP_EXT_CMD_LINE_PTR + 3] << 24;
    uint64_t addr = lo | hi << 32;
    /* Only below the 64 MiB the tests give: anything else is not a command line we can read. */
    if (addr == 0 || addr >= 0x4000000ULL)
        return "";
    return phys_ptr(addr);
}

/* ---- PCI configuration space through 0xcf8/0xcfc ---- */

static uint8_t pci_read8(unsigned slot, unsigned reg)
{
    return (uint8_t)(pci_read32_cf8(slot, 0, reg) >> (8 * (reg & 3)));
}

static uint16_t pci_read16(unsigned slot, unsigned reg)
{
    return (uint16_t)(pci_read32_cf8(slot, 0, reg) >> (8 * (reg & 2)));
}

static void pci_write16(unsigned slot, unsigned reg, uint16_t v)
{
    outl(TINY_PCI_ADDR, pci_cf8(slot, 0, reg));
    outw((uint16_t)(TINY_PCI_DATA + (reg & 2)), v);
}

static int find_device(unsigned *slot)
{
    for (unsigned s = 0; s < 32; s++) {
        uint32_t id = pci_read32_cf8(s, 0, 0);
        if ((id & 0xffff) == VIRTIO_VENDOR && (id >> 16) == VIRTIO_DEV_BLK_MODERN) {
            *slot = s;
            return 1;
        }
    }
    return 0;
}

/* The address a memory BAR decodes (the VMM assigned it: read only, never sized or moved). */
static uint64_t bar_address(unsigned slot, unsigned bar)
{
    if (bar > 5)
        fail_hex("virtio capability names a BAR that does not exist:", bar);
    uint32_t lo = pci_read32_cf8(slot, 0, PCI_BAR0 + 4 * bar);
    if (lo & 1)
        fail_hex("virtio BAR is an I/O BAR, not memory:", lo);
    uint64_t addr = lo & ~0xfULL;
    if (((lo >> 1) & 3) == 2) {
        if (bar == 5)
            fail("64-bit BAR 5 has no upper half");
        addr |= (uint64_t)pci_read32_cf8(slot, 0, PCI_BAR0 + 4 * (bar + 1)) << 32;
    }
    return addr;
}

/* Walks the capability list for the four virtio structures; the first of each type counts. */
static void find_caps(void)
{
    unsigned slot = dev.slot;
    if (!(pci_read16(slot, PCI_STATUS) & PCI_STATUS_CAP_LIST))
        fail("virtio-blk has no capability list");
    unsigned ptr = pci_read8(slot, PCI_CAP_PTR) & 0xfc;
    unsigned seen = 0;

    for (unsigned n = 0; ptr && n < 48; n++) {
        if (ptr < 0x40)
            fail_hex("capability pointer into the standard header:", ptr);
        uint8_t id = pci_read8(slot, ptr);
        unsigned next = pci_read8(slot, ptr + 1) & 0xfc;
        if (id == PCI_CAP_ID_VNDR) {
            uint8_t type = pci_read8(slot, ptr + 3);
            uint8_t bar = pci_read8(slot, ptr + 4);
            uint32_t off = pci_read32_cf8(slot, 0, ptr + 8);
            uint32_t len = pci_read32_cf8(slot, 0, ptr + 12);
            if (type >= CAP_COMMON && type <= CAP_DEVICE && !(seen & (1u << type))) {
                seen |= 1u << type;
                uint64_t base = bar_address(slot, bar);
                if (bar != 4)
                    fail_hex("godwit's virtio structures should be in BAR 4, not", bar);
                if (dev.bar && dev.bar != base)
                    fail("virtio structures in different BARs");
                dev.bar = base;
                switch (type) {
                case CAP_COMMON: dev.common = base + off; dev.common_len = len; break;
                case CAP_ISR: dev.isr = base + off; dev.isr_len = len; break;
                case CAP_DEVICE: dev.device = base + off; dev.device_len = len; break;
                case CAP_NOTIFY:
                    dev.notify = base + off;
                    dev.notify_len = len;
                    dev.notify_mult = pci_read32_cf8(slot, 0, ptr + 16);
                    break;
                }
            }
        }
        ptr = next;
    }
    if (seen != (1u << CAP_COMMON | 1u << CAP_NOTIFY | 1u << CAP_ISR | 1u << CAP_DEVICE))
        fail_hex("virtio capabilities missing; found types (bitmask)", seen);
    if (dev.bar < PCI_WINDOW_START || dev.bar >= PCI_WINDOW_END)
        fail_hex("BAR 4 is not inside the PCI window:", dev.bar);
    if (dev.common_len < CC_MIN_LEN || dev.isr_len < 1 || dev.device_len < 8 || dev.notify_len < 2)
        fail("a virtio capability is too short");
}

/* ---- Common configuration ---- */

static uint8_t cc_read8(unsigned off) { return mmio_read8(dev.common + off); }
static uint16_t cc_read16(unsigned off) { return mmio_read16(dev.common + off); }
static uint32_t cc_read32(unsigned off) { return mmio_read32(dev.common + off); }
static void cc_write8(unsigned off, uint8_t v) { mmio_write8(dev.common + off, v); }
static void cc_write16(unsigned off, uint16_t v) { mmio_write16(dev.common + off, v); }
static void cc_write32(unsigned off, uint32_t v) { mmio_write32(dev.common + off, v); }

static uint8_t status(void) { return cc_read8(CC_STATUS); }

static void add_status(uint8_t bits)
{
    cc_write8(CC_STATUS, (uint8_t)(status() | bits));
}

/* Writes 0 and waits until the device reads back 0 (virtio 1.2, 4.1.4.3.2). */
static void reset_device(void)
{
    struct pit_deadline d;
    cc_write8(CC_STATUS, 0);
    pit_deadline_start(&d, WAIT_MS);
    while (status() != 0) {
        if (pit_deadline_expired(&d))
            fail_hex("device status did not read 0 after a reset:", status());
        cpu_relax();
    }
}

static uint64_t device_features(void)
{
    cc_write32(CC_DFSELECT, 0);
    uint64_t lo = cc_read32(CC_DF);
    cc_write32(CC_DFSELECT, 1);
    uint64_t hi = cc_read32(CC_DF);
    return lo | hi << 32;
}

static void set_driver_features(uint64_t f)
{
    cc_write32(CC_GFSELECT, 0);
    cc_write32(CC_GF, (uint32_t)f);
    cc_write32(CC_GFSELECT, 1);
    cc_write32(CC_GF, (uint32_t)(f >> 32));
}

static void write_addr(unsigned lo_off, uint64_t addr)
{
    cc_write32(lo_off, (uint32_t)addr);
    cc_write32(lo_off + 4, (uint32_t)(addr >> 32));
}

/* The driver initialization sequence (virtio 1.2, 3.1.1) with queue 0 of QSIZE entries. */
static uint64_t init_device(void)
{
    reset_device();
    add_status(S_ACKNOWLEDGE);
    add_status(S_DRIVER);

    uint64_t features = device_features();
    if (!(features & (1ULL << F_VERSION_1)))
        fail_hex("device does not offer VERSION_1; features", features);
    set_driver_features(1ULL << F_VERSION_1);
    add_status(S_FEATURES_OK);
    if (!(status() & S_FEATURES_OK))
        fail_hex("FEATURES_OK did not stick; status", status());

    if (cc_read16(CC_NUM_QUEUES) < 1)
        fail("device has no queues");
    cc_write16(CC_MSIX_CONFIG, NO_VECTOR);
    cc_write16(CC_Q_SELECT, 0);
    if (cc_read16(CC_Q_ENABLE) != 0)
        fail("queue 0 is enabled right after a reset");
    uint16_t max = cc_read16(CC_Q_SIZE);
    if (max < QSIZE)
        fail_hex("queue 0 is smaller than we need:", max);
    cc_write16(CC_Q_SIZE, QSIZE);
    if (cc_read16(CC_Q_SIZE) != QSIZE)
        fail_hex("queue size did not take our value; reads", cc_read16(CC_Q_SIZE));
    cc_write16(CC_Q_MSIX, NO_VECTOR);

    /* Fresh rings: the device starts again at index 0, and so do we. */
    memset(&vq, 0, sizeof(vq));
    vq.avail.flags = VRING_AVAIL_F_NO_INTERRUPT; /* we poll */
    dev.avail_idx = 0;
    dev.used_seen = 0;
    write_addr(CC_Q_DESCLO, phys(vq.desc));
    write_addr(CC_Q_AVAILLO, phys(&vq.avail));
    write_addr(CC_Q_USEDLO, phys(&vq.used));
    if (cc_read32(CC_Q_DESCLO) != (uint32_t)phys(vq.desc) || cc_read32(CC_Q_USEDHI) != 0)
        fail("queue addresses did not read back");

    uint32_t noff = cc_read16(CC_Q_NOFF);
    if ((uint64_t)noff * dev.notify_mult + 2 > dev.notify_len)
        fail_hex("queue 0's doorbell lies outside the notify structure; queue_notify_off", noff);
    dev.doorbell = dev.notify + (uint64_t)noff * dev.notify_mult;

    full_barrier();
    cc_write16(CC_Q_ENABLE, 1);
    if (cc_read16(CC_Q_ENABLE) != 1)
        fail("queue_enable did not read back 1");
    add_status(S_DRIVER_OK);
    uint8_t st = status();
    if ((st & (S_DRIVER_OK | S_NEEDS_RESET | S_FAILED)) != S_DRIVER_OK)
        fail_hex("device did not come up; status", st);
    return features;
}

/* Reads a config field twice over if the generation moved (virtio 1.2, 4.1.4.3.1). */
static uint64_t read_capacity(void)
{
    uint8_t gen;
    uint64_t lo, hi;
    do {
        gen = cc_read8(CC_CFG_GENERATION);
        lo = mmio_read32(dev.device + 0);
        hi = mmio_read32(dev.device + 4);
    } while (gen != cc_read8(CC_CFG_GENERATION));
    return lo | hi << 32;
}

/* ---- Requests ---- */

struct seg {
    uint64_t addr;
    uint32_t len;
    int device_writes;
};

/* Puts the chain into descriptors 0..n-1, makes it available and rings the doorbell. */
static void submit(const struct seg *segs, unsigned n)
{
    for (unsigned i = 0; i < n; i++) {
        vq.desc[i] = (struct vring_desc){
            .addr = segs[i].addr, .len = segs[i].len,
            .flags = (uint16_t)((segs[i].device_writes ? VRING_DESC_F_WRITE : 0) |
                                (i + 1 < n ? VRING_DESC_F_NEXT : 0)),
            .next = (uint16_t)(i + 1 < n ? i + 1 : 0),
        };
    }
    vq.avail.ring[dev.avail_idx % QSIZE] = 0; /* head: descriptor 0 */
    full_barrier(); /* the descriptors and the ring entry before the index */
    dev.avail_idx++;
    vwrite16(&vq.avail.idx, dev.avail_idx);
    full_barrier(); /* the index before the doorbell */
    mmio_write16(dev.doorbell, 0); /* the queue index, as Linux writes it */
}

/* Waits for the one outstanding chain to come back; returns the used element's len. */
static uint32_t wait_used(const char *what)
{
    struct pit_deadline d;
    pit_deadline_start(&d, WAIT_MS);
    while (vread16(&vq.used.idx) == dev.used_seen) {
        if (pit_deadline_expired(&d)) {
            uart_puts("tiny: virtio-blk: no answer to ");
            uart_puts(what);
            uart_puts(", device status 0x");
            uart_puthex(status(), 2);
            uart_putc('\n');
            fail("request timed out");
        }
        cpu_relax();
    }
    full_barrier(); /* the index before the element and the data */
    uint16_t idx = vread16(&vq.used.idx);
    if ((uint16_t)(idx - dev.used_seen) != 1)
        fail_hex("used->idx moved by more than the one request outstanding; now", idx);
    const struct vring_used_elem *e = &vq.used.ring[dev.used_seen % QSIZE];
    uint32_t id = vread32(&e->id), len = vread32(&e->len);
    dev.used_seen = idx;
    if (id != 0)
        fail_hex("used element names a head we did not make available:", id);
    return len;
}

/*
 * One request: header, then data in `parts` descriptors of equal size (device-writable for
 * IN and GET_ID), then the status byte. Returns the status; checks the used length.
 */
static uint8_t blk_request(uint32_t type, uint64_t sector, void *buf, uint32_t len,
                           unsigned parts, const char *what)
{
    struct seg segs[6];
    unsigned n = 0;
    int in = type == T_IN || type == T_GET_ID;

    req_hdr = (struct blk_req_hdr){ .type = type, .ioprio = 0, .sector = sector };
    req_status = 0xff;
    segs[n++] = (struct seg){ phys(&req_hdr), sizeof(req_hdr), 0 };
    for (unsigned p = 0; p < parts && len; p++)
        segs[n++] = (struct seg){ phys(buf) + p * (len / parts), len / parts, in };
    segs[n++] = (struct seg){ phys(&req_status), 1, 1 };
    submit(segs, n);

    uint32_t used_len = wait_used(what);
    uint8_t st = *(volatile uint8_t *)&req_status;
    if (st == 0xff)
        fail("the device did not write the status byte");
    /* Bytes written into the chain: the data of a good IN, then the status byte. */
    uint32_t want = 1 + (in && st == BLK_S_OK ? len : 0);
    if (used_len != want) {
        uart_puts("tiny: virtio-blk: ");
        uart_puts(what);
        uart_puts(": used len ");
        uart_putdec(used_len);
        uart_puts(", expected ");
        uart_putdec(want);
        uart_putc('\n');
        fail("wrong used length");
    }
    return st;
}

static void expect_status(uint8_t got, uint8_t want, const char *what)
{
    if (got == want)
        return;
    uart_puts("tiny: virtio-blk: ");
    uart_puts(what);
    uart_puts(": status ");
    uart_putdec(got);
    uart_puts(", expected ");
    uart_putdec(want);
    uart_putc('\n');
    fail(what);
}

static void check_serial(void)
{
    static const char want[] = EXPECTED_SERIAL;
    memset(idbuf, 0xee, sizeof(idbuf));
    expect_status(blk_request(T_GET_ID, 0, idbuf, BLK_ID_BYTES, 1, "GET_ID"), BLK_S_OK, "GET_ID");
    /* Shorter than 20 bytes: zero-padded. */
    for (unsigned i = 0; i < BLK_ID_BYTES; i++) {
        uint8_t w = i < sizeof(want) - 1 ? (uint8_t)want[i] : 0;
        if (idbuf[i] != w) {
            uart_puts("tiny: virtio-blk: serial byte ");
            uart_putdec(i);
            uart_puts(" is 0x");
            uart_puthex(idbuf[i], 2);
            uart_putc('\n');
            fail("GET_ID did not return the serial " EXPECTED_SERIAL);
        }
    }
}

/* A chain whose data buffer is not guest RAM: the device must give up on the queue, with
 * NEEDS_RESET and a config-change ISR bit, and answer nothing. */
static void break_queue(void)
{
    struct pit_deadline d;
    uint16_t used_before = vread16(&vq.used.idx);

    (void)mmio_read8(dev.isr); /* reading clears it: start from nothing */
    req_hdr = (struct blk_req_hdr){ .type = T_IN, .sector = TEST_SECTOR };
    req_status = 0xff;
    const struct seg segs[3] = {
        { phys(&req_hdr), sizeof(req_hdr), 0 },
        { OUTSIDE_RAM, SECTOR, 1 },
        { phys(&req_status), 1, 1 },
    };
    submit(segs, 3);
    pit_deadline_start(&d, WAIT_MS);
    while (!(status() & S_NEEDS_RESET)) {
        if (pit_deadline_expired(&d))
            fail_hex("a descriptor outside RAM did not set NEEDS_RESET; status", status());
        cpu_relax();
    }
    uint8_t isr = mmio_read8(dev.isr);
    if (!(isr & ISR_CONFIG))
        fail_hex("NEEDS_RESET after DRIVER_OK without the config-change ISR bit; ISR", isr);
    if (vread16(&vq.used.idx) != used_before)
        fail("the device answered a chain with a buffer outside RAM");
    if (*(volatile uint8_t *)&req_status != 0xff)
        fail("the device wrote a status for a chain with a buffer outside RAM");
    uart_puts("tiny: virtio-blk: buffer outside RAM gave NEEDS_RESET, status 0x");
    uart_puthex(status(), 2);
    uart_putc('\n');
}

void guest_main(void)
{
    int ro = contains(cmdline(), CMDLINE_RO);

    uart_puts(ro ? "tiny: virtio-blk: read-only mode\n" : "tiny: virtio-blk: read-write mode\n");
    if (!find_device(&dev.slot))
        fail("no modern virtio-blk (1af4:1042) on PCI bus 0");
    find_caps();
    uart_puts("tiny: virtio-blk at 00:");
    uart_puthex(dev.slot, 2);
    uart_puts(".0 BAR 4 0x");
    uart_puthex(dev.bar, 8);
    uart_putc('\n');

    /* Memory decoding for the BAR, bus mastering for the rings; the address stays put. */
    uint16_t cmd = pci_read16(dev.slot, PCI_COMMAND);
    pci_write16(dev.slot, PCI_COMMAND, (uint16_t)(cmd | PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER));
    if ((pci_read16(dev.slot, PCI_COMMAND) & (PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER)) !=
        (PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER))
        fail("command register did not keep memory decoding and bus mastering");

    uint64_t features = init_device();
    if (!!(features & (1ULL << BLK_F_RO)) != ro)
        fail_hex(ro ? "read-only disk without VIRTIO_BLK_F_RO; features"
                    : "writable disk offers VIRTIO_BLK_F_RO; features", features);
    uint64_t capacity = read_capacity();
    if (capacity < TEST_SECTOR + TEST_SECTORS)
        fail_hex("disk too small for the test; capacity", capacity);

    /* Sector 0 as the host test wrote it. */
    memset(rbuf, 0, SECTOR);
    expect_status(blk_request(T_IN, 0, rbuf, SECTOR, 1, "read of sector 0"), BLK_S_OK,
                  "read of sector 0");
    check_pattern(rbuf, HOST_SEED, 0, 1, "sector 0 does not hold the host's pattern");

    fill_pattern(wbuf, GUEST_SEED, TEST_SECTOR, TEST_SECTORS);
    uint8_t st = blk_request(T_OUT, TEST_SECTOR, wbuf, TEST_BYTES, 1, "write");
    memset(rbuf, 0xee, TEST_BYTES);
    /* Back in two data descriptors: a chain of four. */
    expect_status(blk_request(T_IN, TEST_SECTOR, rbuf, TEST_BYTES, 2, "read-back"), BLK_S_OK,
                  "read-back");
    if (ro) {
        expect_status(st, BLK_S_IOERR, "write to a read-only disk");
        for (unsigned i = 0; i < TEST_BYTES; i++)
            if (rbuf[i] != 0)
                fail_hex("a failed write changed the read-only disk; byte", i);
    } else {
        expect_status(st, BLK_S_OK, "write");
        check_pattern(rbuf, GUEST_SEED, TEST_SECTOR, TEST_SECTORS, "read-back differs");
    }
    expect_status(blk_request(T_FLUSH, 0, NULL, 0, 0, "flush"), BLK_S_OK, "flush");
    check_serial();

    /* Past the end, and across it. */
    expect_status(blk_request(T_IN, capacity, rbuf, SECTOR, 1, "read at capacity"), BLK_S_IOERR,
                  "read at capacity");
    expect_status(blk_request(T_IN, capacity - 1, rbuf, 2 * SECTOR, 1, "read across the end"),
                  BLK_S_IOERR, "read across the end");
    uart_puts("tiny: virtio-blk: requests ok, capacity ");
    uart_putdec(capacity);
    uart_putc('\n');

    break_queue();
    reset_device();
    init_device();
    memset(rbuf, 0xee, TEST_BYTES);
    expect_status(blk_request(T_IN, TEST_SECTOR, rbuf, TEST_BYTES, 1, "read after reset"),
                  BLK_S_OK, "read after reset");
    if (ro) {
        for (unsigned i = 0; i < TEST_BYTES; i++)
            if (rbuf[i] != 0)
                fail_hex("read after reset: read-only disk not zero at byte", i);
    } else {
        check_pattern(rbuf, GUEST_SEED, TEST_SECTOR, TEST_SECTORS, "read after reset differs");
    }
    reset_device(); /* leave it quiet */

    uart_puts(ro ? "tiny: virtio-blk readonly ok capacity=" : "tiny: virtio-blk ok capacity=");
    uart_putdec(capacity);
    uart_puts(" serial=" EXPECTED_SERIAL "\n");
}
