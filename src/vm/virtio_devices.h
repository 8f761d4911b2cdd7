/* vm_virtio.h: the VM's virtio-pci devices (disks, network, console, rng). */
#ifndef GODWIT_VM_VIRTIO_H
#define GODWIT_VM_VIRTIO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct vm;
struct pci_host;
struct json_object;

/*
 * Creates every virtio device vm->cfg asks for, each in its own PCI slot on `pci` with its
 * BAR on the VM's MMIO bus, an ioeventfd per queue (kicks reach the main loop without an
 * exit to userspace) and an irqfd per MSI-X vector. Returns 0 or -errno after one error
 * line naming the device.
 */
int vm_virtio_create(struct vm *vm, struct pci_host *pci);
/* Frees what vm_virtio_create() kept beside the devices, which the VM's registry destroys. */
void vm_virtio_destroy(struct vm *vm);

/* A live migration's destination opens its disks unlocked (the source holds the locks until
 * the guest runs here): tries to take each lock. Returns how many are still held elsewhere, or
 * -errno. On the main loop's thread. */
int vm_virtio_lock_disks(struct vm *vm);

/* A local live upgrade's handover: each disk's image and each tap queue, in device order
 * (the configuration's), then the console's listening socket and the vsock device's, for
 * migration/channel.h's DEVICES. The VM's own descriptors: valid while the VM exists. */
struct mig_devices;
void vm_virtio_handover_fds(const struct vm *vm, struct mig_devices *devs);

/* The open image of disk `index` (the configuration's order), or -1 when the VM has no such
 * disk device. The VM's own descriptor. */
int vm_virtio_disk_fd(const struct vm *vm, unsigned index);

/* Whether the VM's listening sockets' paths are its own to unlink when it ends (only the
 * vsock device's ever is: the console leaves its socket file): a local live upgrade's source
 * gives them up at GO, its destination takes them once the guest runs there. On the main
 * loop's thread. */
void vm_virtio_own_sockets(struct vm *vm, bool own);

/* A local live upgrade's console client (virtio/console.h): the one connected to the console's
 * socket, for the final step with the VM paused (c->fd -1: none, or no console on a socket),
 * and, at the destination, the same client served once GO came. As the console's calls. */
struct virtio_console_client;
int vm_virtio_console_client(struct vm *vm, struct virtio_console_client *c);
int vm_virtio_adopt_console_client(struct vm *vm, const struct virtio_console_client *c);

/* Terminal input for hvc0 (--console virtio); returns the bytes the guest took. Main loop. */
size_t vm_virtio_console_input(struct vm *vm, const uint8_t *buf, size_t len);

/* The terminal behind hvc0 is now cols x rows: tells the guest. -ENODEV without hvc0 on a
 * terminal. Any thread. */
int vm_virtio_console_resize(struct vm *vm, uint16_t cols, uint16_t rows);

#endif
