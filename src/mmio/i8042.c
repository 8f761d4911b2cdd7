/* i8042.c: PS/2 controller commands, status and reset line; no keyboard or mouse attached. */
#include "mmio/i8042.h"

#include <string.h>

#include "log.h"
#include "migration/state.h"

/*
 * What a guest sees: a controller that passes its self tests, keeps its command byte, and
 * resets the machine through its output port. Nothing is attached: bytes written for the
 * keyboard are dropped (Linux's atkbd times out in the background), no interrupt (IRQ 1 or
 * 12) is ever raised, and the AUX interface test reports the port broken so that Linux
 * gives up on a mouse without further timeouts (it still waits once, ~0.5 s, for the
 * unsupported AUX loopback command 0xd3; i8042.noaux avoids that).
 */

#define STATUS_OBF 0x01      /* output buffer full: a byte waits on the data port */
#define STATUS_SYS 0x04      /* system flag, mirrors the command byte's bit 2 */
#define STATUS_CMD 0x08      /* last write was to the command port */
#define STATUS_UNLOCKED 0x10 /* keyboard not inhibited (Linux warns about a keylock if 0) */

#define CTR_KBD_INT 0x01
#define CTR_SYS 0x04
#define CTR_KBD_DISABLED 0x10
#define CTR_AUX_DISABLED 0x20
#define CTR_XLATE 0x40

#define OUTPORT_RESET_LINE 0x01 /* active low: clearing it resets the CPU */
#define OUTPORT_A20 0x02

enum i8042_command {
    CMD_READ_CTR = 0x20,
    CMD_WRITE_CTR = 0x60,
    CMD_AUX_DISABLE = 0xa7,
    CMD_AUX_ENABLE = 0xa8,
    CMD_AUX_TEST = 0xa9,
    CMD_SELF_TEST = 0xaa,
    CMD_KBD_TEST = 0xab,
    CMD_KBD_DISABLE = 0xad,
    CMD_KBD_ENABLE = 0xae,
    CMD_READ_OUTPORT = 0xd0,
    CMD_WRITE_OUTPORT = 0xd1,
    CMD_PULSE_FIRST = 0xf0, /* 0xf0-0xff pulse output lines low; bit 0 clear: reset line */
};

#define SELF_TEST_OK 0x55
#define INTERFACE_TEST_OK 0x00
#define INTERFACE_CLOCK_STUCK_HIGH 0x02
#define UNKNOWN_LOG_LIMIT 8

static void i8042_reply(struct i8042 *kbc, uint8_t byte)
{
    if (kbc->st.out_count == I8042_OUT_QUEUE)
        return; /* a guest that never reads loses replies, like a one-byte 8042 */
    kbc->st.out[(kbc->st.out_head + kbc->st.out_count) % I8042_OUT_QUEUE] = byte;
    kbc->st.out_count++;
}

static uint8_t i8042_status(const struct i8042 *kbc)
{
    uint8_t status = STATUS_UNLOCKED;
    if (kbc->st.out_count > 0)
        status |= STATUS_OBF;
    if (kbc->st.ctr & CTR_SYS)
        status |= STATUS_SYS;
    if (kbc->st.last_write_cmd)
        status |= STATUS_CMD;
    return status;
}

static void i8042_log_unknown(struct i8042 *kbc, uint8_t cmd)
{
    if (kbc->unknown_logged >= UNKNOWN_LOG_LIMIT)
        return;
    kbc->unknown_logged++;
    log_debug("i8042: ignoring command 0x%02x%s", cmd,
              kbc->unknown_logged == UNKNOWN_LOG_LIMIT ? " (further ones not logged)" : "");
}

/* Runs a command written to port 0x64; returns true when it resets the machine. */
static bool i8042_command(struct i8042 *kbc, uint8_t cmd)
{
    kbc->st.awaiting = 0;
    switch (cmd) {
    case CMD_READ_CTR:
        i8042_reply(kbc, kbc->st.ctr);
        break;
    case CMD_WRITE_CTR:
    case CMD_WRITE_OUTPORT:
        kbc->st.awaiting = cmd;
        break;
    case CMD_AUX_DISABLE:
        kbc->st.ctr |= CTR_AUX_DISABLED;
        break;
    case CMD_AUX_ENABLE:
        kbc->st.ctr &= ~CTR_AUX_DISABLED;
        break;
    case CMD_AUX_TEST:
        i8042_reply(kbc, INTERFACE_CLOCK_STUCK_HIGH); /* nothing there: see the top */
        break;
    case CMD_SELF_TEST:
        kbc->st.ctr |= CTR_SYS;
        i8042_reply(kbc, SELF_TEST_OK);
        break;
    case CMD_KBD_TEST:
        i8042_reply(kbc, INTERFACE_TEST_OK);
        break;
    case CMD_KBD_DISABLE:
        kbc->st.ctr |= CTR_KBD_DISABLED;
        break;
    case CMD_KBD_ENABLE:
        kbc->st.ctr &= ~CTR_KBD_DISABLED;
        break;
    case CMD_READ_OUTPORT:
        i8042_reply(kbc, kbc->st.output_port);
        break;
    default:
        if (cmd >= CMD_PULSE_FIRST)
            return !(cmd & OUTPORT_RESET_LINE);
        i8042_log_unknown(kbc, cmd);
    }
    return false;
}

/* A byte written to port 0x60: a command's parameter, or data for the (absent) keyboard. */
static bool i8042_data(struct i8042 *kbc, uint8_t byte)
{
    uint8_t cmd = kbc->st.awaiting;

    kbc->st.awaiting = 0;
    if (cmd == CMD_WRITE_CTR) {
        kbc->st.ctr = byte;
    } else if (cmd == CMD_WRITE_OUTPORT) {
        kbc->st.output_port = byte;
        return !(byte & OUTPORT_RESET_LINE);
    }
    return false;
}

static uint8_t i8042_read_data(struct i8042 *kbc)
{
    if (kbc->st.out_count > 0) {
        kbc->st.last_read = kbc->st.out[kbc->st.out_head];
        kbc->st.out_head = (kbc->st.out_head + 1) % I8042_OUT_QUEUE;
        kbc->st.out_count--;
    }
    return kbc->st.last_read;
}

/* Both ports are one byte wide, so the bus only passes one-byte accesses at offset 0; the
 * handlers still look at nothing else. */
static void i8042_data_read(void *dev, uint64_t offset, uint8_t *data, uint32_t len)
{
    struct i8042 *kbc = dev;

    memset(data, 0xff, len);
    if (offset != 0 || len == 0)
        return;
    pthread_mutex_lock(&kbc->lock);
    data[0] = i8042_read_data(kbc);
    pthread_mutex_unlock(&kbc->lock);
}

static void i8042_status_read(void *dev, uint64_t offset, uint8_t *data, uint32_t len)
{
    struct i8042 *kbc = dev;

    memset(data, 0xff, len);
    if (offset != 0 || len == 0)
        return;
    pthread_mutex_lock(&kbc->lock);
    data[0] = i8042_status(kbc);
    pthread_mutex_unlock(&kbc->lock);
}

static void i8042_port_write(struct i8042 *kbc, uint64_t offset, const uint8_t *data,
                             uint32_t len, bool is_command)
{
    bool reset;

    if (offset != 0 || len == 0)
        return;
    pthread_mutex_lock(&kbc->lock);
    kbc->st.last_write_cmd = is_command;
    reset = is_command ? i8042_command(kbc, data[0]) : i8042_data(kbc, data[0]);
    pthread_mutex_unlock(&kbc->lock);
    /* Outside the lock: the VM's handler may stop vCPUs, one of which could be in here. */
    if (reset)
        platform_event_notify(&kbc->events, PLATFORM_EVENT_RESET);
}

static void i8042_data_write(void *dev, uint64_t offset, const uint8_t *data, uint32_t len)
{
    i8042_port_write(dev, offset, data, len, false);
}

static void i8042_command_write(void *dev, uint64_t offset, const uint8_t *data, uint32_t len)
{
    i8042_port_write(dev, offset, data, len, true);
}

const struct device_ops i8042_data_ops = { .read = i8042_data_read, .write = i8042_data_write };
const struct device_ops i8042_command_ops = { .read = i8042_status_read,
                                              .write = i8042_command_write };

int i8042_init(struct i8042 *kbc, const struct platform_events *events)
{
    int ret;

    memset(kbc, 0, sizeof(*kbc));
    ret = pthread_mutex_init(&kbc->lock, NULL);
    if (ret)
        return -ret;
    if (events)
        kbc->events = *events;
    /* As firmware leaves it: POST passed, keyboard interrupt on, scancode translation. */
    kbc->st.ctr = CTR_KBD_INT | CTR_SYS | CTR_AUX_DISABLED | CTR_XLATE;
    kbc->st.output_port = OUTPORT_RESET_LINE | OUTPORT_A20;
    return 0;
}

void i8042_destroy(struct i8042 *kbc)
{
    pthread_mutex_destroy(&kbc->lock);
}

/* ---- Snapshots: the fields of struct i8042_state, one by one, in this order ---- */

void i8042_save(void *dev, struct state_writer *w)
{
    struct i8042 *kbc = dev;
    struct i8042_state s;

    pthread_mutex_lock(&kbc->lock);
    s = kbc->st;
    pthread_mutex_unlock(&kbc->lock);
    sw_u8(w, s.ctr);
    sw_u8(w, s.output_port);
    sw_u8(w, s.awaiting);
    sw_u8(w, s.last_write_cmd);
    sw_bytes(w, s.out, sizeof(s.out));
    sw_u8(w, s.out_head);
    sw_u8(w, s.out_count);
    sw_u8(w, s.last_read);
}

/* The command byte, output port and queued bytes take any value the guest wrote; the rest
 * only what the controller itself sets. */
static int i8042_state_check(const struct state_cursor *c, const struct i8042_state *s,
                             uint8_t last_write_cmd)
{
    if (s->awaiting != 0 && s->awaiting != CMD_WRITE_CTR && s->awaiting != CMD_WRITE_OUTPORT)
        return sc_reject(c, "awaiting 0x%02x: not a command that takes a parameter",
                         s->awaiting);
    if (last_write_cmd > 1)
        return sc_reject(c, "last_write_cmd %u: not 0 or 1", last_write_cmd);
    if (s->out_head >= I8042_OUT_QUEUE)
        return sc_reject(c, "out_head %u: past the %u-byte queue", s->out_head,
                         I8042_OUT_QUEUE);
    if (s->out_count > I8042_OUT_QUEUE)
        return sc_reject(c, "out_count %u: more than the %u-byte queue", s->out_count,
                         I8042_OUT_QUEUE);
    return 0;
}

int i8042_load(void *dev, struct state_cursor *c, uint32_t version)
{
    struct i8042 *kbc = dev;
    struct i8042_state s;
    uint8_t last_write_cmd; /* a byte of its own: a bool would hide a bad value */
    int ret;

    if (version != I8042_STATE_VERSION)
        return sc_reject(c, "version %u unknown", version);
    memset(&s, 0, sizeof(s));
    s.ctr = sc_u8(c);
    s.output_port = sc_u8(c);
    s.awaiting = sc_u8(c);
    last_write_cmd = sc_u8(c);
    sc_bytes(c, s.out, sizeof(s.out));
    s.out_head = sc_u8(c);
    s.out_count = sc_u8(c);
    s.last_read = sc_u8(c);
    if ((ret = sc_finish(c)) < 0)
        return ret;
    if ((ret = i8042_state_check(c, &s, last_write_cmd)) < 0)
        return ret;
    s.last_write_cmd = last_write_cmd;
    /* Nothing derived: no interrupt line, and a reset line held low was acted on at once. */
    pthread_mutex_lock(&kbc->lock);
    kbc->st = s;
    pthread_mutex_unlock(&kbc->lock);
    return 0;
}
