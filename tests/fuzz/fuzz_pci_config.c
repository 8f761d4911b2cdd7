/*
 * fuzz_pci_config.c: PCI configuration accesses through ports 0xcf8/0xcfc and through ECAM,
 * to the host bridge and to a device with BARs of each kind and a capability; the host's
 * snapshot put back.
 */
#include "fuzz_regs.h"
#include "mmio/pci_ecam.h"
#include "boot/layout.h"

static void dev_read(void *dev, uint32_t offset, uint8_t *data, uint32_t len)
{
    FUZZ_CHECK(offset < PCI_CONFIG_SPACE_SIZE && (len == 1 || len == 2 || len == 4));
    FUZZ_CHECK((offset & 3) + len <= 4);
    pci_config_read(dev, offset, data, len);
}

static void dev_write(void *dev, uint32_t offset, const uint8_t *data, uint32_t len)
{
    FUZZ_CHECK(offset < PCI_CONFIG_SPACE_SIZE && (len == 1 || len == 2 || len == 4));
    FUZZ_CHECK((offset & 3) + len <= 4);
    pci_config_write(dev, offset, data, len);
}

static const struct pci_device_ops dev_ops = { .config_read = dev_read, .config_write = dev_write };

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fuzz_quiet();
    return 0;
}

/* A device like the ones godwit builds: I/O, 32-bit and 64-bit BARs, one vendor capability. */
static void device_init(struct pci_config_space *cs)
{
    static const struct pci_ids ids = { .vendor = 0x1af4, .device = 0x1042, .class_code = 0x010000,
                                        .interrupt_pin = 1 };
    static const uint8_t cap[16] = { 0x09, 0, 16, 1 };
    int off;

    pci_config_init(cs, &ids);
    FUZZ_CHECK(pci_config_set_bar(cs, 0, PCI_BAR_IO, 32, false) == 0);
    FUZZ_CHECK(pci_config_set_bar(cs, 1, PCI_BAR_MEM32, 4096, false) == 0);
    FUZZ_CHECK(pci_config_set_bar(cs, 2, PCI_BAR_MEM64, 1 << 20, true) == 0);
    off = pci_config_add_capability(cs, cap, sizeof(cap));
    FUZZ_CHECK(off >= 0x40);
    pci_config_set_masks(cs, (unsigned)off + 4, 4, 0xffffffff, 0);
}

/* Each step: a port access (0xcf8-0xcff), an ECAM access, or the host's snapshot put back. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct pci_host host;
    static struct pci_config_space cs;
    struct fuzz_in in = fuzz_in(data, size);

    FUZZ_CHECK(pci_host_init(&host) == 0);
    device_init(&cs);
    FUZZ_CHECK(pci_host_add_device(&host, 1, &dev_ops, &cs) == 0);
    struct fuzz_range r[] = { { &pci_host_io_ops, &host, PCI_HOST_IO_LEN, 4 },
                              { &pci_ecam_ops, &host, LAYOUT_PCI_ECAM_SIZE, 8 } };
    while (!fuzz_done(&in)) {
        if (fuzz_u8(&in) % 8 == 7)
            fuzz_state_round_trip(pci_host_save, pci_host_load, &host, PCI_HOST_STATE_VERSION);
        else
            fuzz_access(&in, r, 2);
    }
    pci_host_destroy(&host);
    return 0;
}
