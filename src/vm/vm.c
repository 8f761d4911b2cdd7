/* vm.c: assembles a VM in one readable order, and runs down its lifecycle. */
#define _GNU_SOURCE
#include "vm/vm.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <asm/bootparam.h>

#include "boot/layout.h"
#include "boot/unpack.h"
#include "clock.h"
#include "io/loop.h"
#include "vm/platform.h"
#include "log.h"
#include "migration/snapshot.h"
#include "sandbox/seccomp.h"
#include "vcpu/vcpu.h"

#define KVM_DEVICE "/dev/kvm"
#define KVM_MAX_CPUID_ENTRIES 256
#define CPUID_1_ECX_TSC_DEADLINE (1u << 24)

const char *vm_exit_reason_name(enum vm_exit_reason reason)
{
    switch (reason) {
    case VM_EXIT_NONE: return "running";
    case VM_EXIT_POWEROFF: return "guest powered off";
    case VM_EXIT_RESET: return "guest requested a reboot";
    case VM_EXIT_PANIC: return "guest kernel panicked";
    case VM_EXIT_CRASH: return "guest crashed";
    case VM_EXIT_STOPPED: return "stopped by the host";
    case VM_EXIT_VMM_ERROR: return "VMM error";
    case VM_EXIT_MIGRATED: return "migrated";
    }
    return "unknown";
}

void vm_request_exit(struct vm *vm, enum vm_exit_reason reason)
{
    int expected = VM_EXIT_NONE;
    if (atomic_compare_exchange_strong(&vm->exit_reason, &expected, (int)reason)) {
        uint64_t one = 1;
        if (write(vm->exit_fd, &one, sizeof(one)) < 0)
            log_error("vm: cannot wake the main loop: %s", strerror(errno));
        /* A vm_pause() waiting for vCPUs that will now never park must give up. */
        pthread_mutex_lock(&vm->pause_lock);
        pthread_cond_broadcast(&vm->pause_cond);
        pthread_mutex_unlock(&vm->pause_lock);
    }
}

static void vm_platform_event(void *ctx, enum platform_event event)
{
    static const enum vm_exit_reason reasons[] = {
        [PLATFORM_EVENT_POWEROFF] = VM_EXIT_POWEROFF,
        [PLATFORM_EVENT_RESET] = VM_EXIT_RESET,
        [PLATFORM_EVENT_PANIC] = VM_EXIT_PANIC,
    };
    vm_request_exit(ctx, reasons[event]);
}

void vm_set_irq_level(void *opaque, uint32_t gsi, int level)
{
    struct vm *vm = opaque;
    struct kvm_irq_level irq = { .irq = gsi, .level = (uint32_t)level };
    if (ioctl(vm->vm_fd, KVM_IRQ_LINE, &irq) < 0)
        log_warn("vm: KVM_IRQ_LINE %u failed: %s", gsi, strerror(errno));
}

int kvm_check_extension(const struct vm *vm, unsigned long cap)
{
    return ioctl(vm->kvm_fd, KVM_CHECK_EXTENSION, cap);
}

static int vm_open_kvm(struct vm *vm)
{
    static const struct { unsigned long cap; const char *name; } required[] = {
        { KVM_CAP_IRQCHIP, "in-kernel irqchip" },   { KVM_CAP_USER_MEMORY, "user memory" },
        { KVM_CAP_SET_TSS_ADDR, "TSS address" },    { KVM_CAP_EXT_CPUID, "CPUID2" },
        { KVM_CAP_PIT2, "in-kernel PIT" },          { KVM_CAP_IMMEDIATE_EXIT, "immediate exit" },
    };
    vm->kvm_fd = open(KVM_DEVICE, O_RDWR | O_CLOEXEC);
    if (vm->kvm_fd < 0) {
        log_error("cannot open %s: %s (is the kvm module loaded, may this user open it?)", KVM_DEVICE,
                  strerror(errno));
        return -errno;
    }
    int version = ioctl(vm->kvm_fd, KVM_GET_API_VERSION, 0);
    if (version != KVM_API_VERSION) {
        log_error("%s speaks KVM API %d, godwit needs %d", KVM_DEVICE, version, KVM_API_VERSION);
        return -ENOTSUP;
    }
    for (size_t i = 0; i < sizeof(required) / sizeof(required[0]); i++) {
        if (kvm_check_extension(vm, required[i].cap) <= 0) {
            log_error("KVM lacks a capability godwit needs: %s", required[i].name);
            return -ENOTSUP;
        }
    }
    int max_vcpus = kvm_check_extension(vm, KVM_CAP_MAX_VCPUS);
    if (max_vcpus <= 0)
        max_vcpus = kvm_check_extension(vm, KVM_CAP_NR_VCPUS);
    if (max_vcpus > 0 && vm->cfg->nr_cpus > (unsigned)max_vcpus) {
        log_error("--cpus %u: this host's KVM allows at most %d", vm->cfg->nr_cpus, max_vcpus);
        return -EINVAL;
    }
    vm->vcpu_mmap_size = ioctl(vm->kvm_fd, KVM_GET_VCPU_MMAP_SIZE, 0);
    if (vm->vcpu_mmap_size < (int)sizeof(struct kvm_run)) {
        log_error("KVM_GET_VCPU_MMAP_SIZE failed: %s", strerror(errno));
        return -EIO;
    }
    return 0;
}

static int vm_get_supported_cpuid(struct vm *vm)
{
    vm->supported_cpuid = calloc(1, sizeof(struct kvm_cpuid2) +
                                        KVM_MAX_CPUID_ENTRIES * sizeof(struct kvm_cpuid_entry2));
    if (!vm->supported_cpuid)
        return -ENOMEM;
    vm->supported_cpuid->nent = KVM_MAX_CPUID_ENTRIES;
    if (ioctl(vm->kvm_fd, KVM_GET_SUPPORTED_CPUID, vm->supported_cpuid) < 0) {
        log_error("KVM_GET_SUPPORTED_CPUID failed: %s", strerror(errno));
        return -errno;
    }
    /* KVM emulates the TSC-deadline timer in its LAPIC but leaves the bit to the VMM. Without
     * it the guest must calibrate the LAPIC timer against the PIT, a slow and fragile step. */
    if (kvm_check_extension(vm, KVM_CAP_TSC_DEADLINE_TIMER) > 0) {
        for (unsigned i = 0; i < vm->supported_cpuid->nent; i++)
            if (vm->supported_cpuid->entries[i].function == 1)
                vm->supported_cpuid->entries[i].ecx |= CPUID_1_ECX_TSC_DEADLINE;
    }
    return 0;
}

/*
 * GSI routing of a PC: ISA IRQ n reaches PIC pin n and IOAPIC pin n, except that the PIT's
 * IRQ 0 is wired to IOAPIC pin 2 (the override the MADT and MP table declare). KVM's default
 * routing sends GSI 0 to IOAPIC pin 0, where the guest never listens.
 */
#define IOAPIC_PINS 24
#define PIC_PINS 16
static unsigned irqchip_routes(struct kvm_irq_routing_entry *e)
{
    unsigned n = 0;
    for (unsigned gsi = 0; gsi < PIC_PINS; gsi++) {
        if (gsi == 2)
            continue; /* the cascade */
        e[n++] = (struct kvm_irq_routing_entry){
            .gsi = gsi, .type = KVM_IRQ_ROUTING_IRQCHIP,
            .u.irqchip = { .irqchip = gsi < 8 ? KVM_IRQCHIP_PIC_MASTER : KVM_IRQCHIP_PIC_SLAVE,
                           .pin = gsi % 8 },
        };
    }
    for (unsigned gsi = 0; gsi < IOAPIC_PINS; gsi++) {
        if (gsi == 2)
            continue; /* pin 2 is reached through GSI 0 */
        e[n++] = (struct kvm_irq_routing_entry){
            .gsi = gsi, .type = KVM_IRQ_ROUTING_IRQCHIP,
            .u.irqchip = { .irqchip = KVM_IRQCHIP_IOAPIC, .pin = gsi == 0 ? 2 : gsi },
        };
    }
    return n;
}

/* The whole table: the irqchip pins, then every MSI route the guest has programmed. Called
 * with routing_lock held (or before any vCPU runs). */
static int vm_set_irq_routing(struct vm *vm)
{
    struct kvm_irq_routing *routing = calloc(
        1, sizeof(*routing) +
               (IOAPIC_PINS + PIC_PINS + vm->nr_msi_gsis) * sizeof(struct kvm_irq_routing_entry));
    if (!routing)
        return -ENOMEM;
    unsigned n = irqchip_routes(routing->entries);
    for (unsigned i = 0; i < vm->nr_msi_gsis; i++) {
        const struct vm_msi_route *r = &vm->msi_routes[i];
        if (!r->valid)
            continue;
        routing->entries[n++] = (struct kvm_irq_routing_entry){
            .gsi = VM_MSI_GSI_BASE + i, .type = KVM_IRQ_ROUTING_MSI,
            .u.msi = { .address_lo = (uint32_t)r->address,
                       .address_hi = (uint32_t)(r->address >> 32), .data = r->data },
        };
    }
    routing->nr = n;
    uint64_t t0 = monotonic_ns();
    int ret = ioctl(vm->vm_fd, KVM_SET_GSI_ROUTING, routing) < 0 ? -errno : 0;
    vm->routing_ns += monotonic_ns() - t0;
    vm->routing_sets++;
    free(routing);
    return ret;
}

int vm_alloc_msi_gsis(struct vm *vm, unsigned count)
{
    pthread_mutex_lock(&vm->routing_lock);
    int first = -ENOSPC;
    if (count <= VM_MAX_MSI_GSIS - vm->nr_msi_gsis) {
        struct vm_msi_route *grown =
            realloc(vm->msi_routes, (vm->nr_msi_gsis + count) * sizeof(*grown));
        if (grown) {
            memset(grown + vm->nr_msi_gsis, 0, count * sizeof(*grown));
            vm->msi_routes = grown;
            first = (int)(VM_MSI_GSI_BASE + vm->nr_msi_gsis);
            vm->nr_msi_gsis += count;
        } else {
            first = -ENOMEM;
        }
    }
    pthread_mutex_unlock(&vm->routing_lock);
    return first;
}

int vm_set_msi_route(struct vm *vm, uint32_t gsi, uint64_t address, uint32_t data, bool valid)
{
    if (gsi < VM_MSI_GSI_BASE || gsi - VM_MSI_GSI_BASE >= vm->nr_msi_gsis)
        return -EINVAL;
    pthread_mutex_lock(&vm->routing_lock);
    struct vm_msi_route *r = &vm->msi_routes[gsi - VM_MSI_GSI_BASE];
    int ret = 0;
    if (r->valid != valid || r->address != address || r->data != data) {
        *r = (struct vm_msi_route){ .address = address, .data = data, .valid = valid };
        if (atomic_load(&vm->routing_held))
            vm->routing_pending = true;
        else
            ret = vm_set_irq_routing(vm);
    }
    pthread_mutex_unlock(&vm->routing_lock);
    return ret;
}

void vm_routing_hold(struct vm *vm)
{
    pthread_mutex_lock(&vm->routing_lock);
    atomic_store(&vm->routing_held, true);
    pthread_mutex_unlock(&vm->routing_lock);
}

static int flush_routes_locked(struct vm *vm)
{
    int ret = vm->routing_pending ? vm_set_irq_routing(vm) : 0;
    if (ret < 0)
        log_warn("vm: cannot give KVM the MSI routes: %s", strerror(-ret));
    else
        vm->routing_pending = false;
    return ret;
}

int vm_routing_flush(struct vm *vm)
{
    pthread_mutex_lock(&vm->routing_lock);
    int ret = flush_routes_locked(vm);
    pthread_mutex_unlock(&vm->routing_lock);
    return ret;
}

int vm_routing_release(struct vm *vm)
{
    pthread_mutex_lock(&vm->routing_lock);
    int ret = flush_routes_locked(vm);
    atomic_store(&vm->routing_held, false);
    pthread_mutex_unlock(&vm->routing_lock);
    return ret;
}

int vm_msi_routes_copy(struct vm *vm, struct vm_msi_route **routes, unsigned *nr)
{
    int ret = 0;
    pthread_mutex_lock(&vm->routing_lock);
    *nr = vm->nr_msi_gsis;
    *routes = NULL;
    if (*nr) {
        *routes = malloc(*nr * sizeof(**routes));
        if (*routes)
            memcpy(*routes, vm->msi_routes, *nr * sizeof(**routes));
        else
            ret = -ENOMEM;
    }
    pthread_mutex_unlock(&vm->routing_lock);
    return ret;
}

/* The VM-wide KVM objects: the VM, its irqchip (PIC + IOAPIC + LAPICs) and PIT. */
static int vm_create_kvm_vm(struct vm *vm)
{
    struct kvm_pit_config pit = { .flags = KVM_PIT_SPEAKER_DUMMY };
    const char *step = "KVM_CREATE_VM";

    vm->vm_fd = ioctl(vm->kvm_fd, KVM_CREATE_VM, 0);
    if (vm->vm_fd < 0)
        goto fail;
    step = "KVM_SET_TSS_ADDR";
    if (ioctl(vm->vm_fd, KVM_SET_TSS_ADDR, (unsigned long)LAYOUT_KVM_TSS) < 0)
        goto fail;
    uint64_t identity_map = LAYOUT_KVM_IDENTITY_MAP;
    step = "KVM_SET_IDENTITY_MAP_ADDR";
    if (ioctl(vm->vm_fd, KVM_SET_IDENTITY_MAP_ADDR, &identity_map) < 0)
        goto fail;
    step = "KVM_CREATE_IRQCHIP";
    if (ioctl(vm->vm_fd, KVM_CREATE_IRQCHIP, 0) < 0)
        goto fail;
    step = "KVM_SET_GSI_ROUTING";
    if ((errno = -vm_set_irq_routing(vm)) != 0)
        goto fail;
    step = "KVM_CREATE_PIT2";
    if (ioctl(vm->vm_fd, KVM_CREATE_PIT2, &pit) < 0)
        goto fail;
    return 0;
fail:
    log_error("%s failed: %s", step, strerror(errno));
    return -errno;
}

/*
 * Guest RAM as the loop's registered buffers, so disk I/O into it need not map its pages
 * each time. Only a shared mapping of RAM's file: it stays where it is, whole, until vm_destroy()
 * (a snapshot's private file mapping would be copied page by page as it is pinned). Without
 * them (an old kernel, RLIMIT_MEMLOCK), I/O takes guest pages per request as before.
 */
static void vm_register_memory(struct vm *vm)
{
    struct iovec areas[GM_MAX_REGIONS];
    if (!vm->cfg->loop || vm->mem.private_file || vm->mem.nr_regions > GM_MAX_REGIONS)
        return;
    for (unsigned i = 0; i < vm->mem.nr_regions; i++)
        areas[i] = (struct iovec){ .iov_base = vm->mem.regions[i].host,
                                   .iov_len = vm->mem.regions[i].size };
    int ret = loop_buffers_enable(vm->cfg->loop, areas, vm->mem.nr_regions);
    if (ret < 0)
        log_debug("io_uring: no registered buffers for guest RAM: %s", strerror(-ret));
    vm->mem_registered = ret == 0;
}

static int vm_map_memory(struct vm *vm)
{
    uint64_t size = vm->cfg->memory_mib << 20;
    bool handed_over = vm->cfg->incoming && vm->cfg->incoming_memfd >= 0;
    int ret = vm->cfg->restore ? snapshot_map_memory(vm->cfg->restore, &vm->mem, size)
              : handed_over ? gm_init_from_fd(&vm->mem, size, vm->cfg->hugepages,
                                              vm->cfg->incoming_memfd)
                            : gm_init_in(&vm->mem, size, vm->cfg->hugepages,
                                         vm->cfg->no_thp ? -1 : vm->cfg->ram_dir);
    if (ret < 0)
        return ret;
    for (unsigned i = 0; i < vm->mem.nr_regions; i++) {
        const struct gm_region *r = &vm->mem.regions[i];
        struct kvm_userspace_memory_region slot = {
            .slot = i,
            .guest_phys_addr = r->gpa,
            .memory_size = r->size,
            .userspace_addr = (uint64_t)(uintptr_t)r->host,
        };
        if (ioctl(vm->vm_fd, KVM_SET_USER_MEMORY_REGION, &slot) < 0) {
            log_error("KVM_SET_USER_MEMORY_REGION (slot %u, %llu MiB) failed: %s", i,
                      (unsigned long long)(r->size >> 20), strerror(errno));
            return -errno;
        }
    }
    vm_register_memory(vm);
    return 0;
}

static bool same_version(const struct stat *a, const struct stat *b)
{
    return a->st_dev == b->st_dev && a->st_ino == b->st_ino && a->st_size == b->st_size &&
           a->st_mtim.tv_sec == b->st_mtim.tv_sec && a->st_mtim.tv_nsec == b->st_mtim.tv_nsec &&
           a->st_ctim.tv_sec == b->st_ctim.tv_sec && a->st_ctim.tv_nsec == b->st_ctim.tv_nsec;
}

/* Reads a whole file (kernel or initrd) into memory; a mapping would do, but a copy cannot
 * change under us while the loader validates it. With `version`, *version_valid says whether
 * the file stayed as *version describes it while it was read. */
static int read_whole_file(const char *what, const char *path, uint8_t **buf, size_t *len,
                           struct stat *version, bool *version_valid)
{
    struct stat st, after;
    int ret = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0 || fstat(fd, &st) < 0) {
        ret = -errno;
        log_error("%s: cannot open %s: %s", what, path, strerror(errno));
        goto out;
    }
    if (!S_ISREG(st.st_mode) || st.st_size == 0) {
        ret = -EINVAL;
        log_error("%s: %s is %s", what, path, S_ISREG(st.st_mode) ? "empty" : "not a regular file");
        goto out;
    }
    *len = (size_t)st.st_size;
    *buf = malloc(*len);
    if (!*buf) {
        ret = -ENOMEM;
        log_error("%s: %s is too large to read (%zu bytes)", what, path, *len);
        goto out;
    }
    for (size_t done = 0; done < *len;) {
        ssize_t n = read(fd, *buf + done, *len - done);
        if (n <= 0) {
            ret = n < 0 ? -errno : -EIO;
            log_error("%s: reading %s failed: %s", what, path, n < 0 ? strerror(errno) : "short read");
            free(*buf);
            *buf = NULL;
            goto out;
        }
        done += (size_t)n;
    }
    if (version) {
        *version = st;
        *version_valid = fstat(fd, &after) == 0 && same_version(&st, &after);
    }
out:
    if (fd >= 0)
        close(fd);
    return ret;
}

/* Reads the kernel and initrd before anything else, so that a bad path is reported as such
 * on any host. */
static int vm_read_images(struct vm *vm)
{
    int ret = read_whole_file("kernel", vm->cfg->kernel_path, &vm->kernel, &vm->kernel_len,
                              &vm->kernel_stat, &vm->kernel_stat_valid);
    if (ret < 0)
        return ret;
    if (kernel_detect_format(vm->kernel, vm->kernel_len) == KERNEL_FORMAT_UNKNOWN) {
        log_error("kernel: %s is neither a bzImage nor an ELF vmlinux", vm->cfg->kernel_path);
        return -ENOEXEC;
    }
    if (vm->cfg->initrd_path)
        ret = read_whole_file("initrd", vm->cfg->initrd_path, &vm->initrd, &vm->initrd_len,
                              NULL, NULL);
    return ret;
}

static void vm_free_images(struct vm *vm)
{
    free(vm->kernel);
    free(vm->initrd);
    vmlinux_image_release(&vm->payload);
    free(vm->bz_params);
    vm->kernel = vm->initrd = NULL;
    vm->bz_params = NULL;
}

int vm_check_images(const struct vm_config *cfg)
{
    struct vm probe = { .cfg = cfg };
    int ret = vm_read_images(&probe);
    if (ret == 0 && cfg->unpack &&
        kernel_detect_format(probe.kernel, probe.kernel_len) == KERNEL_FORMAT_BZIMAGE)
        ret = kernel_unpack_prepare(cfg->unpack, probe.kernel, probe.kernel_len,
                                    probe.kernel_stat_valid ? &probe.kernel_stat : NULL);
    vm_free_images(&probe);
    return ret;
}

/* Gets a bzImage's payload (vm->payload) when the host decompresses it; says which path boots. */
static int vm_unpack_kernel(struct vm *vm)
{
    struct kernel_unpack *u = vm->cfg->unpack;

    if (kernel_detect_format(vm->kernel, vm->kernel_len) != KERNEL_FORMAT_BZIMAGE)
        return 0;
    if (!u || !u->active) {
        if (u && u->enabled && u->format)
            log_info("kernel: booting the bzImage as is: its payload is %s, which the guest "
                     "decompresses", u->format);
        else
            log_info("kernel: booting the bzImage as is%s: the guest decompresses it",
                     u && !u->enabled ? " (--kernel-decompress off)" : "");
        return 0;
    }
    vm->bz_params = calloc(1, sizeof(*vm->bz_params));
    if (!vm->bz_params)
        return -ENOMEM;
    int ret = bzimage_read_header(vm->kernel, vm->kernel_len, vm->bz_params);
    if (ret == 0)
        ret = kernel_unpack_get(u, vm->kernel, vm->kernel_len, &vm->payload);
    return ret;
}

static int vm_load_guest(struct vm *vm)
{
    struct platform_tables_config tables = { .nr_cpus = vm->nr_vcpus };
    struct boot_request req = {
        .kernel = vm->kernel, .kernel_len = vm->kernel_len,
        .initrd = vm->initrd, .initrd_len = vm->initrd_len,
        .cmdline = vm->cfg->cmdline,
    };
    int ret;

    if ((ret = vm_unpack_kernel(vm)) < 0)
        return ret;
    if (vm->payload.data) {
        req.kernel = vm->payload.data;
        req.kernel_len = vm->payload.len;
        req.bz_params = vm->bz_params;
    }
    req.rsdp_gpa = acpi_build(&vm->mem, &tables);
    if (req.rsdp_gpa == 0)
        return -ENOSPC;
    if (vm->nr_vcpus <= MPTABLE_MAX_CPUS && (ret = mptable_build(&vm->mem, &tables)) < 0)
        return ret;
    if ((ret = boot_load_linux(&vm->mem, &req, &vm->entry)) < 0)
        return ret;
    if ((ret = boot_write_gdt(&vm->mem, vm->entry.mode)) < 0 ||
        (ret = boot_write_page_tables(&vm->mem)) < 0)
        log_error("boot: low memory is too small for the boot page tables");
    vm_free_images(vm);
    return ret;
}

static int vm_create_vcpus(struct vm *vm)
{
    vm->vcpus = calloc(vm->nr_vcpus, sizeof(*vm->vcpus));
    if (!vm->vcpus)
        return -ENOMEM;
    for (unsigned i = 0; i < vm->nr_vcpus; i++)
        vm->vcpus[i].fd = -1;
    for (unsigned i = 0; i < vm->nr_vcpus; i++) {
        int ret = vcpu_init(&vm->vcpus[i], vm, i);
        if (ret < 0)
            return ret;
    }
    /* Their threads' filter compiled now, not by each thread as it starts: a migrated guest
     * waits for them after the switch-over. A failure is not one: each then builds its own. */
    sandbox_seccomp_prepare(SANDBOX_THREAD_VCPU, vm->cfg->seccomp);
    if (vm->cfg->restore || vm->cfg->incoming) /* their registers come from the saved state */
        return 0;
    /* Only the boot CPU gets registers: the others wait for INIT/SIPI in the in-kernel LAPIC. */
    return vcpu_set_boot_regs(&vm->vcpus[0], &vm->entry);
}

int vm_create(struct vm *vm, const struct vm_config *cfg)
{
    int ret;

    memset(vm, 0, sizeof(*vm));
    vm->cfg = cfg;
    vm->kvm_fd = vm->vm_fd = vm->exit_fd = -1;
    vm->mem.memfd = -1;
    vm->nr_vcpus = cfg->nr_cpus;
    vm->events = (struct platform_events){ .notify = vm_platform_event, .ctx = vm };
    bus_init(&vm->pio, "pio");
    bus_init(&vm->mmio, "mmio");
    pthread_mutex_init(&vm->pause_lock, NULL);
    pthread_cond_init(&vm->pause_cond, NULL);
    pthread_mutex_init(&vm->routing_lock, NULL);
    vm->clock_at_pause = calloc(1, sizeof(*vm->clock_at_pause));
    if (!vm->clock_at_pause)
        return -ENOMEM;
    vm->exit_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (vm->exit_fd < 0)
        return -errno;

    /* A restored VM is built the same way, but its RAM, registers and devices come from the
     * snapshot instead of the kernel image and the reset state. */
    bool boot = !cfg->restore && !cfg->incoming;
    if ((boot && (ret = vm_read_images(vm)) < 0) || (ret = vm_open_kvm(vm)) < 0 ||
        (ret = vm_get_supported_cpuid(vm)) < 0 ||
        (ret = vm_create_kvm_vm(vm)) < 0 || (ret = vm_map_memory(vm)) < 0 ||
        (ret = vm_devices_create(vm)) < 0 || (boot && (ret = vm_load_guest(vm)) < 0) ||
        (ret = vm_create_vcpus(vm)) < 0)
        return ret;
    return cfg->restore ? snapshot_restore(vm, cfg->restore) : 0;
}

int vm_start(struct vm *vm)
{
    for (unsigned i = 0; i < vm->nr_vcpus; i++) {
        int ret = vcpu_start(&vm->vcpus[i]);
        if (ret < 0)
            return ret;
    }
    return 0;
}

int vm_start_held(struct vm *vm)
{
    pthread_mutex_lock(&vm->pause_lock);
    vm->held = true;
    pthread_mutex_unlock(&vm->pause_lock);
    return vm_start(vm); /* on failure, vm_stop() ends the threads made */
}

void vm_release(struct vm *vm)
{
    pthread_mutex_lock(&vm->pause_lock);
    vm->held = false;
    pthread_cond_broadcast(&vm->pause_cond);
    pthread_mutex_unlock(&vm->pause_lock);
}

void vm_wait_released(struct vm *vm)
{
    pthread_mutex_lock(&vm->pause_lock);
    while (vm->held && vm->exit_reason == VM_EXIT_NONE)
        pthread_cond_wait(&vm->pause_cond, &vm->pause_lock);
    pthread_mutex_unlock(&vm->pause_lock);
}

static void vm_kick_all(struct vm *vm)
{
    for (unsigned i = 0; i < vm->nr_vcpus && vm->vcpus; i++)
        vcpu_kick(&vm->vcpus[i]);
}

/* Parks every vCPU; with pause_lock held. Returns 0, or -ESRCH when the VM ends meanwhile. */
static int park_vcpus(struct vm *vm)
{
    vm->pause_requested = true;
    vm_kick_all(vm);
    while (vm->vcpus_parked < vm->nr_vcpus && vm->exit_reason == VM_EXIT_NONE)
        pthread_cond_wait(&vm->pause_cond, &vm->pause_lock);
    return vm->exit_reason == VM_EXIT_NONE ? 0 : -ESRCH;
}

static int pause_vm(struct vm *vm, bool quiesce_devices)
{
    int ret;
    pthread_mutex_lock(&vm->pause_lock);
    if (vm->paused || vm->pausing || vm->exit_reason != VM_EXIT_NONE) {
        ret = vm->paused ? -EALREADY : vm->pausing ? -EBUSY : -ESRCH;
        pthread_mutex_unlock(&vm->pause_lock);
        return ret;
    }
    vm->pausing = true;
    ret = park_vcpus(vm);
    pthread_mutex_unlock(&vm->pause_lock);
    /* Devices after the vCPUs, so that a request in flight completes (and interrupts) into
     * the parked guest; outside the lock, since draining runs the main loop. */
    if (ret == 0 && quiesce_devices)
        ret = vm_registry_quiesce(&vm->registry);
    pthread_mutex_lock(&vm->pause_lock);
    vm->pausing = false;
    if (ret == 0) {
        vm->devices_quiesced = quiesce_devices;
        /* kvmclock follows host time unless told otherwise: freeze it for the guest. */
        if (ioctl(vm->vm_fd, KVM_GET_CLOCK, vm->clock_at_pause) < 0)
            log_warn("vm: KVM_GET_CLOCK failed: %s", strerror(errno));
        vm->paused = true;
    } else {
        vm->pause_requested = false;
        pthread_cond_broadcast(&vm->pause_cond);
    }
    pthread_mutex_unlock(&vm->pause_lock);
    return ret;
}

int vm_pause(struct vm *vm)
{
    return pause_vm(vm, true);
}

int vm_pause_vcpus(struct vm *vm)
{
    return pause_vm(vm, false);
}

int vm_resume(struct vm *vm)
{
    int ret = 0;
    pthread_mutex_lock(&vm->pause_lock);
    if (!vm->paused) {
        ret = vm->pausing ? -EBUSY : -EALREADY;
        goto out;
    }
    struct kvm_clock_data clock = { .clock = vm->clock_at_pause->clock };
    if (ioctl(vm->vm_fd, KVM_SET_CLOCK, &clock) < 0)
        log_warn("vm: KVM_SET_CLOCK failed: %s", strerror(errno));
    if (vm->devices_quiesced)
        vm_registry_resume(&vm->registry);
    vm->paused = false;
    vm->pause_requested = false;
    pthread_cond_broadcast(&vm->pause_cond);
out:
    pthread_mutex_unlock(&vm->pause_lock);
    return ret;
}

void vm_set_throttle(struct vm *vm, unsigned pct)
{
    vm->throttle_pct = pct < VM_MAX_THROTTLE_PCT ? pct : VM_MAX_THROTTLE_PCT;
    for (unsigned i = 0; i < vm->nr_vcpus && vm->vcpus; i++)
        vcpu_nudge(&vm->vcpus[i]); /* one that runs a long stretch in the guest starts now */
}

bool vm_is_paused(struct vm *vm)
{
    pthread_mutex_lock(&vm->pause_lock);
    bool paused = vm->paused;
    pthread_mutex_unlock(&vm->pause_lock);
    return paused;
}

void vm_park_vcpu(struct vm *vm)
{
    pthread_mutex_lock(&vm->pause_lock);
    vm->vcpus_parked++;
    pthread_cond_broadcast(&vm->pause_cond);
    while (vm->pause_requested && vm->exit_reason == VM_EXIT_NONE)
        pthread_cond_wait(&vm->pause_cond, &vm->pause_lock);
    vm->vcpus_parked--;
    pthread_mutex_unlock(&vm->pause_lock);
}

void vm_stop(struct vm *vm)
{
    vm_request_exit(vm, VM_EXIT_STOPPED);
    /* Parked vCPUs wait on the condition, not in KVM_RUN: wake them too. */
    pthread_mutex_lock(&vm->pause_lock);
    pthread_cond_broadcast(&vm->pause_cond);
    pthread_mutex_unlock(&vm->pause_lock);
    vm_kick_all(vm);
    for (unsigned i = 0; i < vm->nr_vcpus && vm->vcpus; i++)
        vcpu_join(&vm->vcpus[i]);
}

void vm_destroy(struct vm *vm)
{
    if (vm->vcpus) {
        for (unsigned i = 0; i < vm->nr_vcpus; i++)
            vcpu_destroy(&vm->vcpus[i]);
        free(vm->vcpus);
        vm->vcpus = NULL;
    }
    vm_devices_destroy(vm);
    vm_free_images(vm);
    bus_destroy(&vm->pio);
    bus_destroy(&vm->mmio);
    if (vm->mem_registered) /* the devices that did I/O into it are gone */
        loop_buffers_disable(vm->cfg->loop);
    vm->mem_registered = false;
    gm_destroy(&vm->mem);
    free(vm->supported_cpuid);
    free(vm->clock_at_pause);
    vm->supported_cpuid = NULL;
    vm->clock_at_pause = NULL;
    pthread_mutex_destroy(&vm->pause_lock);
    pthread_cond_destroy(&vm->pause_cond);
    pthread_mutex_destroy(&vm->routing_lock);
    free(vm->msi_routes);
    vm->msi_routes = NULL;
    if (vm->vm_fd >= 0)
        close(vm->vm_fd);
    if (vm->kvm_fd >= 0)
        close(vm->kvm_fd);
    if (vm->exit_fd >= 0)
        close(vm->exit_fd);
    vm->vm_fd = vm->kvm_fd = vm->exit_fd = -1;
}
