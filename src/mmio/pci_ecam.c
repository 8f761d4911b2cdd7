/* pci_ecam.c: PCIe enhanced configuration access (MMIO) onto the PCI host's config core. */
#include "mmio/pci_ecam.h"

#include <string.h>

#define ECAM_BUS(off) ((unsigned)((off) >> 20) & 0xff)
#define ECAM_SLOT(off) ((unsigned)((off) >> 15) & 0x1f)
#define ECAM_FUNCTION(off) ((unsigned)((off) >> 12) & 0x7)
#define ECAM_REGISTER(off) ((uint32_t)(off) & 0xfff)

/*
 * The config core takes at most one dword that does not cross a dword boundary, as ports
 * 0xcfc-0xcff do; an 8-byte or misaligned MMIO access is split into such pieces.
 */
static uint32_t ecam_piece_len(uint64_t offset, uint32_t left)
{
    uint32_t to_boundary = 4 - (uint32_t)(offset & 3);
    uint32_t len = left < to_boundary ? left : to_boundary;
    return len == 3 ? 2 : len;
}

static void ecam_access(struct pci_host *host, uint64_t offset, uint8_t *data, uint32_t len,
                        bool is_write)
{
    while (len > 0) {
        uint32_t piece = ecam_piece_len(offset, len);
        uint32_t reg = ECAM_REGISTER(offset);
        if (reg >= PCI_CONFIG_SPACE_SIZE) {
            /* Extended config space (256-4095): nothing implements it yet. */
            if (!is_write)
                memset(data, 0xff, piece);
        } else if (is_write) {
            pci_host_config_write(host, ECAM_BUS(offset), ECAM_SLOT(offset),
                                  ECAM_FUNCTION(offset), reg, data, piece);
        } else {
            pci_host_config_read(host, ECAM_BUS(offset), ECAM_SLOT(offset),
                                 ECAM_FUNCTION(offset), reg, data, piece);
        }
        offset += piece;
        data += piece;
        len -= piece;
    }
}

static void ecam_read(void *dev, uint64_t offset, uint8_t *data, uint32_t len)
{
    ecam_access(dev, offset, data, len, false);
}

static void ecam_write(void *dev, uint64_t offset, const uint8_t *data, uint32_t len)
{
    uint8_t copy[8];
    if (len > sizeof(copy))
        return;
    memcpy(copy, data, len);
    ecam_access(dev, offset, copy, len, true);
}

const struct device_ops pci_ecam_ops = { .read = ecam_read, .write = ecam_write };
