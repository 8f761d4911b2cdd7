/* vm.h: one virtual machine: its KVM handles, memory, buses, devices and lifecycle. */
#ifndef GODWIT_VM_H
#define GODWIT_VM_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "boot/boot.h"
#include "boot/unpack.h"
#include "godwit/godwit.h"
#include "vm/memory.h"
#include "mmio/bus.h"
#include "vm/platform_events.h"
#include "vm/registry.h"

struct vcpu;
struct kvm_cpuid2;
struct vm_devices;
struct snapshot;

#define VM_MAX_VCPUS 255

struct vm_config {
    const char *kernel_path;
    /* How a bzImage's payload is decompressed on the host (boot/unpack.h), prepared by
     * vm_check_images(); NULL: a bzImage boots as is and the guest decompresses it. */
    struct kernel_unpack *unpack;
    bool no_kernel_decompress, no_kernel_cache; /* what the CLI and the JSON ask for */
    const char *initrd_path; /* NULL: none */
    const char *cmdline;     /* NULL: the default command line */
    uint64_t memory_mib;
    unsigned nr_cpus;
    bool hugepages;
    int ram_dir; /* where guest RAM's file is made (gm_ram_dir_open), or -1: a memfd */
    bool no_thp; /* RAM in a memfd even with a ram_dir (--thp off) */
    bool no_reboot; /* a guest reboot ends the process instead of restarting the VM */
    int console_out_fd; /* where the serial console's output goes, unless console_out is set */
    /* Serial console output, on the main loop's thread (at most 4 KiB a call, once the console
     * fd can take it); libgodwit sends it to attached clients too. */
    void (*console_out)(void *opaque, const uint8_t *buf, size_t len);
    void *console_opaque;

    /* Virtio devices (the arrays are owned by whoever owns the config). */
    const struct godwit_disk *disks;
    unsigned nr_disks;
    const struct godwit_net *nets;
    unsigned nr_nets;
    enum godwit_virtio_console virtio_console;
    const char *virtio_console_path;
    bool no_rng;
    uint64_t vsock_cid;      /* 0: no virtio-vsock device */
    const char *vsock_path;  /* its listening socket */
    /* Build the VM from this snapshot instead of booting the kernel (migration/snapshot.h). */
    struct snapshot *restore;
    /* Build the VM for a live migration's destination: RAM and state come later (incoming.h). */
    bool incoming;
    /* With incoming: the source's memory file when it hands its RAM over (a same-host live
     * upgrade), mapped shared as this VM's RAM instead of new memory; -1: pages will come. */
    int incoming_memfd;
    /* A local live upgrade's devices, handed over with the memory file (migration/channel.h
     * DEVICES), kept open by whoever owns the config for the VM's whole life: the disks'
     * images (nr_disks of them) and the taps' queues (every interface's pairs, in order). Each
     * VM built from this config, the first and any after a guest reboot, uses duplicates of
     * them instead of opening paths and taps. NULL: open them. */
    const int *disk_fds;
    const int *tap_fds;
    /* The same for the virtio console's and the vsock device's listening UNIX sockets (the
     * handover's, bound to virtio_console_path and vsock_path): served instead of binding the
     * paths, never unlinked by the devices built on them until vm_virtio_own_sockets(). NULL:
     * listen on the paths. Only the first VM built uses them: a guest reboot's binds afresh. */
    const int *console_listen_fd;
    const int *vsock_listen_fd;
    /* The system call filters of the VM's threads (the vCPUs', a migration's); not part of
     * the VM's description, so never saved with it. */
    enum godwit_seccomp seccomp;
    unsigned io_poll_us; /* the main loop's polling window (godwit_config.io_poll_us) */
    /* The main loop that runs device I/O; set by whoever runs the VM (libgodwit). */
    struct event_loop *loop;
};

/* The queues (disks) or queue pairs (nets) a device gets when none were asked for: one per
 * vCPU (as QEMU gives disks), so that the guest's CPUs need not share one; at least one, at
 * most 16, as the options allow. */
#define VM_DEFAULT_MAX_QUEUES 16u
static inline unsigned vm_queues_per_vcpu(unsigned nr_cpus)
{
    return nr_cpus == 0 ? 1 : nr_cpus < VM_DEFAULT_MAX_QUEUES ? nr_cpus : VM_DEFAULT_MAX_QUEUES;
}

/* A disk's request queues: as asked, else one per vCPU. */
static inline unsigned vm_disk_queues(const struct vm_config *cfg, const struct godwit_disk *d)
{
    return d->queues ? d->queues : vm_queues_per_vcpu(cfg->nr_cpus);
}

/* Why the VM stopped running; main() turns it into the process exit status. */
enum vm_exit_reason {
    VM_EXIT_NONE = 0,   /* still running */
    VM_EXIT_POWEROFF,   /* the guest powered off (ACPI S5) */
    VM_EXIT_RESET,      /* the guest asked for a reset (reboot) */
    VM_EXIT_PANIC,      /* the guest kernel reported a panic (pvpanic) */
    VM_EXIT_CRASH,      /* triple fault, KVM internal error, failed entry */
    VM_EXIT_STOPPED,    /* stopped from the host (signal) */
    VM_EXIT_VMM_ERROR,  /* the VMM itself failed */
    VM_EXIT_MIGRATED,   /* the guest runs at a live migration's destination now */
};

struct vm {
    const struct vm_config *cfg;
    int kvm_fd;
    int vm_fd;
    int vcpu_mmap_size;
    struct kvm_cpuid2 *supported_cpuid;
    struct guest_memory mem;
    bool mem_registered; /* its regions are the loop's registered buffers (loop_buffers_*) */
    struct bus pio;
    struct bus mmio;
    struct vm_devices *devices;   /* the platform's devices (platform.c) */
    struct vm_registry registry;  /* every device, platform and virtio: pause, save, restore */
    struct vm_virtio *virtio; /* the virtio-pci devices (vm/virtio_devices.c) */
    struct platform_events events; /* how devices reach vm_request_exit() */
    unsigned nr_vcpus;
    struct vcpu *vcpus;
    struct boot_entry entry;
    uint8_t *kernel, *initrd; /* file contents, held until loaded into guest RAM */
    size_t kernel_len, initrd_len;
    struct stat kernel_stat;  /* the kernel file as read, when it did not change meanwhile */
    bool kernel_stat_valid;
    struct vmlinux_image payload;  /* a bzImage's payload, when the host decompressed it */
    struct boot_params *bz_params; /* the bzImage's header, then */

    /* Lifecycle: the first exit reason wins; exit_fd wakes the main loop. */
    _Atomic int exit_reason;
    int exit_fd; /* eventfd */

    /* Pause: vCPU threads park on `pause_cond` while `pause_requested` is set. */
    pthread_mutex_t pause_lock;
    pthread_cond_t pause_cond;
    _Atomic bool pause_requested;
    unsigned vcpus_parked;
    bool paused;
    bool pausing; /* vm_pause() is quiescing the devices: the loop runs re-entrantly */
    bool devices_quiesced; /* paused by vm_pause(), not vm_pause_vcpus() */
    bool held; /* vm_start_held(): the vCPU threads wait on pause_cond before their first run */
    struct kvm_clock_data *clock_at_pause; /* the guest clock stops while paused */

    /* Auto-converge: the share of time each vCPU is kept out of the guest (vm_set_throttle). */
    _Atomic unsigned throttle_pct;

    /* MSI routes: GSIs from VM_MSI_GSI_BASE up, one per MSI-X vector of a device. KVM takes
     * the whole routing table at once, so every change rewrites it under routing_lock. */
    pthread_mutex_t routing_lock;
    struct vm_msi_route *msi_routes;
    unsigned nr_msi_gsis;
    /* How often, and for how long in all, the table was rewritten (under routing_lock): each
     * KVM_SET_GSI_ROUTING waits for KVM's readers of the old table (an SRCU grace period),
     * which a state load's log line counts. */
    unsigned routing_sets;
    uint64_t routing_ns;
    _Atomic bool routing_held;  /* vm_routing_hold(): KVM's table waits for the release */
    bool routing_pending;       /* held, and the table changed since KVM last took it */
};

#define VM_MSI_GSI_BASE 24 /* above the IOAPIC's pins */
#define VM_MAX_MSI_GSIS 2048

struct vm_msi_route {
    uint64_t address;
    uint32_t data;
    bool valid; /* programmed by the guest */
};

/* Reads the kernel and initrd and checks the kernel's format, then decides how a bzImage's
 * payload boots (cfg->unpack, on this thread: it may write the kernel cache). One error
 * line if they are
 * unusable. Lets a caller refuse bad paths before starting anything. */
int vm_check_images(const struct vm_config *cfg);
/* Builds the whole VM (memory, devices, tables, kernel, vCPUs). Returns 0 or -errno. */
int vm_create(struct vm *vm, const struct vm_config *cfg);
/* Starts one thread per vCPU. */
int vm_start(struct vm *vm);
/* The same, but each thread, once ready (its filter loaded), waits before it ever enters the
 * guest, until vm_release() or the VM's end: a migration's destination makes them before the
 * switch-over, so that the guest's pause does not wait for threads to be made. Meanwhile the
 * vCPUs' state may be loaded from another thread, as while paused. */
int vm_start_held(struct vm *vm);
void vm_release(struct vm *vm);
/* Called by a vCPU thread before its first KVM_RUN: waits while the VM is held. */
void vm_wait_released(struct vm *vm);
/* Records why the VM must stop (first reason wins) and wakes the main loop. */
void vm_request_exit(struct vm *vm, enum vm_exit_reason reason);
/* Stops every vCPU at an instruction boundary and the guest's clock with them, then quiesces
 * every device: once it returns, nothing writes guest RAM or a disk until vm_resume(), which
 * restarts them where they were. Both on the main loop's thread; both return 0 or -errno. */
int vm_pause(struct vm *vm);
int vm_resume(struct vm *vm);
/* Parks the vCPUs only, for a look at them (GET /vm/vcpus): the devices run on, so a device
 * stuck in I/O cannot hold up the look. Undone by vm_resume(). */
int vm_pause_vcpus(struct vm *vm);
bool vm_is_paused(struct vm *vm);
/* Auto-converge for a live migration: keeps each vCPU out of the guest `pct`% of the time
 * (0: not at all; at most VM_MAX_THROTTLE_PCT), from its next exit on. Any thread. */
#define VM_MAX_THROTTLE_PCT 99u
void vm_set_throttle(struct vm *vm, unsigned pct);
/* Called by a vCPU thread that saw pause_requested: waits until resumed or stopped. */
void vm_park_vcpu(struct vm *vm);

/* Kicks every vCPU out of KVM_RUN and joins the threads. */
void vm_stop(struct vm *vm);
void vm_destroy(struct vm *vm);

/* KVM_CHECK_EXTENSION on /dev/kvm: > 0 when the capability is there. */
int kvm_check_extension(const struct vm *vm, unsigned long cap);

/* Reserves `count` consecutive MSI GSIs; returns the first, or -ENOSPC. */
int vm_alloc_msi_gsis(struct vm *vm, unsigned count);
/* Points MSI GSI `gsi` at the guest's address/data, or removes its route (valid false). */
int vm_set_msi_route(struct vm *vm, uint32_t gsi, uint64_t address, uint32_t data, bool valid);
/*
 * A state load sets every device's vectors, one KVM_SET_GSI_ROUTING each (an SRCU grace period
 * each: milliseconds under nested virtualization). Between hold and release, routes change only
 * in godwit's table; release gives KVM the whole table once, if it changed. An interrupt raised
 * meanwhile must call vm_routing_flush() first (virtio_devices.c's raise does). 0 or -errno.
 */
void vm_routing_hold(struct vm *vm);
int vm_routing_release(struct vm *vm);
/* A copy of the MSI route table: *routes (malloc'ed, NULL when empty) holds *nr entries, entry
 * i for GSI VM_MSI_GSI_BASE + i, each valid or not. 0 or -ENOMEM. */
int vm_msi_routes_copy(struct vm *vm, struct vm_msi_route **routes, unsigned *nr);
/* While held: gives KVM the table now, if it changed. 0 or -errno. */
int vm_routing_flush(struct vm *vm);

/* Wires a guest interrupt line (GSI) from a device to the in-kernel irqchip. */
void vm_set_irq_level(void *vm, uint32_t gsi, int level);

const char *vm_exit_reason_name(enum vm_exit_reason reason);

#endif
