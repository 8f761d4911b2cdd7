/* i8042.h: the PS/2 controller, with nothing behind it: enough for Linux's probe and reboot. */
#ifndef GODWIT_I8042_H
#define GODWIT_I8042_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "mmio/bus.h"
#include "vm/platform_events.h"

struct state_writer;
struct state_cursor;

#define I8042_IO_LEN 1    /* each of the two ports is registered on its own */
#define I8042_OUT_QUEUE 4 /* command replies waiting to be read from the data port */

/* What a snapshot carries: the controller's registers and its reply queue, plain values. */
struct i8042_state {
    uint8_t ctr;          /* the controller's command byte */
    uint8_t output_port;  /* bit 0: reset line (0 = reset), bit 1: A20 */
    uint8_t awaiting;     /* command whose parameter the next data-port write is, or 0 */
    bool last_write_cmd;  /* status bit 3: the last write went to the command port */
    uint8_t out[I8042_OUT_QUEUE];
    uint8_t out_head, out_count;
    uint8_t last_read;    /* what the data port returns when nothing is waiting */
};

struct i8042 {
    pthread_mutex_t lock;
    struct platform_events events;
    unsigned unknown_logged; /* rate limit for unknown commands: this process's log only */
    struct i8042_state st;
};

/* Register i8042_data_ops at PORT_I8042_DATA and i8042_command_ops at PORT_I8042_CMD, each
 * I8042_IO_LEN long with the same struct i8042. Port 0x61 in between belongs to KVM's PIT. */
extern const struct device_ops i8042_data_ops;
extern const struct device_ops i8042_command_ops;

/* Resets through the reset line report PLATFORM_EVENT_RESET to events. Returns 0 or -errno. */
int i8042_init(struct i8042 *kbc, const struct platform_events *events);
void i8042_destroy(struct i8042 *kbc);

/* Snapshots, as struct vm_device_ops save/load (dev: a struct i8042). Load checks every value
 * before it applies any. */
#define I8042_STATE_VERSION 1
void i8042_save(void *dev, struct state_writer *w);
int i8042_load(void *dev, struct state_cursor *c, uint32_t version);

#endif
