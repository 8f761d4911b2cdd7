/* devices.h: the legacy platform a VM gets (UART, RTC, i8042, PCI host, ACPI PM, pvpanic). */
#ifndef GODWIT_DEVICES_H
#define GODWIT_DEVICES_H

#include <stddef.h>
#include <stdint.h>

struct vm;

/* Creates the devices and registers them on the VM's buses. Returns 0 or -errno. */
int vm_devices_create(struct vm *vm);
void vm_devices_destroy(struct vm *vm);

/* Console input for the guest's serial port; returns the bytes accepted (0: FIFO full). */
size_t vm_console_input(struct vm *vm, const uint8_t *buf, size_t len);

struct json_object;
/* Per-device traffic counters, for GET /vm/counters. */
struct json_object *vm_devices_counters_json(struct vm *vm);

/* Presses the ACPI power button: the guest is asked to shut down. */
void vm_press_power_button(struct vm *vm);

#endif
