/* rtc.h: the MC146818 CMOS real-time clock and its 128 bytes of CMOS memory. */
#ifndef GODWIT_RTC_H
#define GODWIT_RTC_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "mmio/bus.h"

struct state_writer;
struct state_cursor;

#define RTC_IO_LEN 2 /* index port, data port */
#define RTC_CMOS_SIZE 128
#define RTC_REG_CENTURY 0x32 /* the FADT's CENTURY field must name this index */

/* A calendar time as the clock's registers hold it, in binary, whatever the guest's mode. */
struct rtc_time {
    int year; /* full year, e.g. 2026 */
    int month; /* 1-12 */
    int mday;  /* 1-31 */
    int hour;  /* 0-23 */
    int min;
    int sec;
    int wday; /* 1-7, Sunday = 1 */
};

/*
 * What a snapshot carries, plain values. The clock itself is not stored: the guest's time is
 * the host's CLOCK_REALTIME plus offset_s, so a restored guest keeps its offset and its clock
 * goes on from the host's clock at load, like a battery-backed RTC across a power-off.
 */
struct rtc_state {
    uint8_t index;        /* selected CMOS byte (the NMI-disable bit dropped) */
    uint8_t cmos[RTC_CMOS_SIZE]; /* registers A and B, alarms and plain CMOS bytes */
    int64_t offset_s;     /* guest clock minus the host's CLOCK_REALTIME, in seconds */
    struct rtc_time frozen; /* what the guest is writing while register B's SET bit is on */
};

struct rtc {
    pthread_mutex_t lock; /* several vCPUs may use the index/data pair */
    struct rtc_state st;
};

/* The register handlers to register on the port bus at PORT_RTC for RTC_IO_LEN bytes. */
extern const struct device_ops rtc_ops;

/*
 * Sets up the clock on the host's UTC time and fills the CMOS memory-size bytes from the
 * guest's RAM: ram_below_4g counts from address 0 to the top of RAM under 4 GiB,
 * ram_above_4g the RAM from 4 GiB up. Returns 0 or -errno.
 */
int rtc_init(struct rtc *rtc, uint64_t ram_below_4g, uint64_t ram_above_4g);
void rtc_destroy(struct rtc *rtc);

/* Snapshots, as struct vm_device_ops save/load (dev: a struct rtc). Load checks every value
 * before it applies any. */
#define RTC_STATE_VERSION 1
void rtc_save(void *dev, struct state_writer *w);
int rtc_load(void *dev, struct state_cursor *c, uint32_t version);

#endif
