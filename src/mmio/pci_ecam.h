/* pci_ecam.h: PCIe enhanced configuration access (MMIO) onto the PCI host's config core. */
#ifndef GODWIT_PCI_ECAM_H
#define GODWIT_PCI_ECAM_H

#include "mmio/bus.h"
#include "mmio/pci_host.h"

/* Register on the MMIO bus at LAYOUT_PCI_ECAM for LAYOUT_PCI_ECAM_SIZE, with the pci_host as
 * the device: offset = bus << 20 | slot << 15 | function << 12 | register. */
extern const struct device_ops pci_ecam_ops;

#endif
