/* platform.c: creates the legacy platform devices and puts them on the VM's buses. */
#include "vm/platform.h"

#include <errno.h>
#include <json-c/json.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "boot/layout.h"
#include "io/console.h"
#include "log.h"
#include "mmio/acpi_pm.h"
#include "mmio/i8042.h"
#include "mmio/pci_ecam.h"
#include "mmio/pci_host.h"
#include "mmio/pvpanic.h"
#include "mmio/reset.h"
#include "mmio/rtc.h"
#include "mmio/uart.h"
#include "vm/registry.h"
#include "vm/vm.h"
#include "vm/virtio_devices.h"

/* The platform's devices; each one that holds state is an entry in the VM's registry. */
struct vm_devices {
    struct uart com1;
    struct rtc rtc;
    struct i8042 kbc;
    struct pci_host pci;
    struct acpi_pm pm;
    struct reset_port reset;
    struct pvpanic pvpanic;
    struct uart_tx_buffer com1_out; /* serial output on its way to the console */
    uint64_t com1_tx_bytes, com1_rx_bytes; /* atomic: vCPU threads and the main loop */
};

/* How long the VM's end waits for a slow console to take the output still buffered. */
#define COM1_FLUSH_MS 500

/* Serial output, from a vCPU thread under the UART's lock: into the bounded buffer, which the
 * main loop drains. A stalled reader costs the guest output (counted), never a vCPU. */
static void com1_output(void *ctx, const uint8_t *buf, size_t len)
{
    const struct vm *vm = ctx;
    __atomic_fetch_add(&vm->devices->com1_tx_bytes, len, __ATOMIC_RELAXED);
    uart_tx_buffer_out(&vm->devices->com1_out, buf, len);
}

/* The buffer's sink, on the main loop's thread once the console fd has room. A failed write
 * means the reader is gone: the rest is dropped. */
static void com1_sink(void *ctx, const uint8_t *buf, size_t len)
{
    const struct vm *vm = ctx;
    if (vm->cfg->console_out) {
        vm->cfg->console_out(vm->cfg->console_opaque, buf, len);
        return;
    }
    console_write_all(vm->cfg->console_out_fd, buf, len, false);
}

static struct irq_line vm_irq_line(struct vm *vm, uint32_t gsi)
{
    return (struct irq_line){ .set_level = vm_set_irq_level, .ctx = vm, .gsi = gsi };
}

/* ---- registry operations of each device ---- */

static void com1_destroy(void *dev) { uart_destroy(dev); }
static void rtc_dev_destroy(void *dev) { rtc_destroy(dev); }
static void kbc_destroy(void *dev) { i8042_destroy(dev); }
static void pci_destroy(void *dev) { pci_host_destroy(dev); }
static void pm_destroy(void *dev) { acpi_pm_destroy(dev); }

static struct json_object *com1_counters(void *dev)
{
    struct vm_devices *d = (struct vm_devices *)((char *)dev - offsetof(struct vm_devices, com1));
    struct json_object *o = json_object_new_object();
    json_object_object_add(o, "tx_bytes", json_object_new_int64((int64_t)__atomic_load_n(
                                              &d->com1_tx_bytes, __ATOMIC_RELAXED)));
    json_object_object_add(o, "rx_bytes", json_object_new_int64((int64_t)__atomic_load_n(
                                              &d->com1_rx_bytes, __ATOMIC_RELAXED)));
    json_object_object_add(o, "tx_dropped",
                           json_object_new_int64((int64_t)uart_tx_buffer_dropped(&d->com1_out)));
    return o;
}

static const struct vm_device_ops com1_ops = {
    .state_version = UART_STATE_VERSION, .save = uart_save, .load = uart_load,
    .counters = com1_counters, .destroy = com1_destroy,
};
static const struct vm_device_ops rtc_dev_ops = {
    .state_version = RTC_STATE_VERSION, .save = rtc_save, .load = rtc_load,
    .destroy = rtc_dev_destroy,
};
static const struct vm_device_ops kbc_ops = {
    .state_version = I8042_STATE_VERSION, .save = i8042_save, .load = i8042_load,
    .destroy = kbc_destroy,
};
static const struct vm_device_ops pci_ops = {
    .state_version = PCI_HOST_STATE_VERSION, .save = pci_host_save, .load = pci_host_load,
    .destroy = pci_destroy,
};
static const struct vm_device_ops pm_ops = {
    .state_version = ACPI_PM_STATE_VERSION, .save = acpi_pm_save, .load = acpi_pm_load,
    .destroy = pm_destroy,
};

/* Adds a device that initialised, or undoes its init when the registry is full. */
static int add_entry(struct vm *vm, int init_ret, const char *id, const struct vm_device_ops *ops,
                     void *dev)
{
    if (init_ret < 0)
        return init_ret;
    int ret = vm_registry_add(&vm->registry, id, ops, dev);
    if (ret < 0)
        ops->destroy(dev);
    return ret;
}

/* In this order: the registry saves, loads and (backwards) destroys them in it. */
static int devices_init(struct vm *vm, struct vm_devices *d)
{
    struct irq_line com1_irq = vm_irq_line(vm, IRQ_COM1);
    struct irq_line sci = vm_irq_line(vm, IRQ_ACPI_SCI);
    struct uart_host_ops com1_host = { .out = com1_output, .ctx = vm };
    uint64_t low = gm_low_ram_end(&vm->mem);
    int ret = uart_tx_buffer_init(&d->com1_out, 0, vm->cfg->loop, vm->cfg->console_out_fd,
                                  com1_sink, vm);

    if (ret < 0 || (ret = add_entry(vm, uart_init(&d->com1, &com1_irq, &com1_host), "com1", &com1_ops,
                         &d->com1)) < 0 ||
        (ret = add_entry(vm, rtc_init(&d->rtc, low, vm->mem.ram_size - low), "rtc", &rtc_dev_ops,
                         &d->rtc)) < 0 ||
        (ret = add_entry(vm, i8042_init(&d->kbc, &vm->events), "i8042", &kbc_ops, &d->kbc)) < 0 ||
        (ret = add_entry(vm, pci_host_init(&d->pci), "pci-host", &pci_ops, &d->pci)) < 0 ||
        (ret = add_entry(vm, acpi_pm_init(&d->pm, &sci, &vm->events), "acpi-pm", &pm_ops,
                         &d->pm)) < 0)
        return ret;
    reset_port_init(&d->reset, &vm->events);
    pvpanic_init(&d->pvpanic, &vm->events);
    return 0;
}

/* The port and MMIO map of the platform; see docs/memory-map.md. */
static int devices_register(struct vm *vm, struct vm_devices *d)
{
    const struct {
        struct bus *bus;
        uint64_t base, len;
        const char *name;
        const struct device_ops *ops;
        void *dev;
    } map[] = {
        { &vm->pio, PORT_COM1, UART_IO_LEN, "com1", &uart_ops, &d->com1 },
        { &vm->pio, PORT_RTC, RTC_IO_LEN, "rtc", &rtc_ops, &d->rtc },
        { &vm->pio, PORT_I8042_DATA, I8042_IO_LEN, "i8042-data", &i8042_data_ops, &d->kbc },
        { &vm->pio, PORT_I8042_CMD, I8042_IO_LEN, "i8042-cmd", &i8042_command_ops, &d->kbc },
        { &vm->pio, PORT_PCI_CONFIG, PCI_HOST_IO_LEN, "pci-host", &pci_host_io_ops, &d->pci },
        { &vm->pio, PORT_ACPI_PM, ACPI_PM_IO_LEN, "acpi-pm", &acpi_pm_ops, &d->pm },
        { &vm->pio, PORT_ACPI_RESET, RESET_PORT_IO_LEN, "acpi-reset", &reset_port_ops, &d->reset },
        { &vm->pio, PORT_PVPANIC, PVPANIC_IO_LEN, "pvpanic", &pvpanic_ops, &d->pvpanic },
        { &vm->mmio, LAYOUT_PCI_ECAM, LAYOUT_PCI_ECAM_SIZE, "pci-ecam", &pci_ecam_ops, &d->pci },
    };
    for (size_t i = 0; i < sizeof(map) / sizeof(map[0]); i++) {
        int ret = bus_register(map[i].bus, map[i].base, map[i].len, map[i].name, map[i].ops,
                               map[i].dev);
        if (ret < 0)
            return ret;
    }
    return 0;
}

int vm_devices_create(struct vm *vm)
{
    struct vm_devices *d = calloc(1, sizeof(*d));
    if (!d)
        return -ENOMEM;
    vm->devices = d;
    int ret = devices_init(vm, d);
    if (ret < 0) {
        log_error("devices: initialisation failed: %s", strerror(-ret));
        return ret;
    }
    if ((ret = devices_register(vm, d)) < 0)
        return ret;
    return vm_virtio_create(vm, &d->pci);
}

void vm_devices_destroy(struct vm *vm)
{
    vm_registry_destroy(&vm->registry); /* the virtio devices first: they sit on the PCI host */
    vm_virtio_destroy(vm);
    if (vm->devices)
        uart_tx_buffer_destroy(&vm->devices->com1_out, COM1_FLUSH_MS);
    free(vm->devices);
    vm->devices = NULL;
}

size_t vm_console_input(struct vm *vm, const uint8_t *buf, size_t len)
{
    if (vm->cfg->virtio_console == GODWIT_VIRTIO_CONSOLE_TERMINAL)
        return vm_virtio_console_input(vm, buf, len);
    struct uart *com1 = &vm->devices->com1;
    size_t room = uart_rx_space(com1);
    size_t taken = uart_receive(com1, buf, len < room ? len : room);
    __atomic_fetch_add(&vm->devices->com1_rx_bytes, taken, __ATOMIC_RELAXED);
    return taken;
}

struct json_object *vm_devices_counters_json(struct vm *vm)
{
    struct json_object *devices = json_object_new_object();
    vm_registry_counters(&vm->registry, devices);
    return devices;
}

void vm_press_power_button(struct vm *vm)
{
    acpi_pm_press_power_button(&vm->devices->pm);
}
