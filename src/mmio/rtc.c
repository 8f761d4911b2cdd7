/* rtc.c: MC146818 RTC: time registers over the host's UTC clock, plus CMOS memory. */
#include "mmio/rtc.h"

#include <string.h>
#include <time.h>

#include "migration/state.h"

/*
 * Simplifications:
 * - No interrupts: periodic, alarm and update-ended interrupts are never raised, IRQ 8 stays
 *   low and register C always reads 0 (no flags). PIE/AIE/UIE in register B are stored only.
 * - Register A's UIP bit always reads 0: the time is computed from the host clock on every
 *   read, so there is no update cycle to wait for. Linux re-reads until two reads agree.
 * - Setting the clock records an offset from the host clock (seconds); the day of week is
 *   always derived from the date, so writes to register 6 are ignored.
 * - Register B's SET bit freezes the time the guest reads and writes; clearing it starts
 *   the clock from what was written, as Linux's mc146818_set_time() expects.
 */

enum rtc_index {
    RTC_SECONDS = 0x00,
    RTC_MINUTES = 0x02,
    RTC_HOURS = 0x04,
    RTC_DAY_OF_WEEK = 0x06,
    RTC_DAY_OF_MONTH = 0x07,
    RTC_MONTH = 0x08,
    RTC_YEAR = 0x09,
    RTC_REG_A = 0x0a,
    RTC_REG_B = 0x0b,
    RTC_REG_C = 0x0c,
    RTC_REG_D = 0x0d,
};

#define REG_A_UIP 0x80
#define REG_B_SET 0x80
#define REG_B_BINARY 0x04 /* DM: binary instead of BCD */
#define REG_B_24H 0x02
#define REG_D_VRT 0x80     /* valid RAM and time: the battery is fine */
#define HOUR_PM 0x80       /* in 12-hour mode */
#define INDEX_MASK 0x7f    /* bit 7 of the index port disables NMIs: ignored */

/* CMOS bytes the BIOS fills with the memory size. */
#define CMOS_BASE_MEM_KB 0x15      /* 2 bytes: conventional memory in KiB */
#define CMOS_EXT_MEM_KB 0x17       /* 2 bytes: memory above 1 MiB in KiB (max 0xffff) */
#define CMOS_EXT_MEM_KB_COPY 0x30  /* same value, where later BIOSes put it */
#define CMOS_MEM_ABOVE_16M 0x34    /* 2 bytes: memory 16 MiB - 4 GiB in 64 KiB units */
#define CMOS_MEM_ABOVE_4G 0x5b     /* 3 bytes: memory above 4 GiB in 64 KiB units */

static int64_t host_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return ts.tv_sec;
}

static void rtc_time_from_seconds(int64_t t, struct rtc_time *out)
{
    struct tm tm;
    time_t tt = (time_t)t;
    if (!gmtime_r(&tt, &tm))
        memset(&tm, 0, sizeof(tm)); /* unreachable: offsets stay within a few 10k years */
    *out = (struct rtc_time){ .year = tm.tm_year + 1900, .month = tm.tm_mon + 1,
                              .mday = tm.tm_mday, .hour = tm.tm_hour, .min = tm.tm_min,
                              .sec = tm.tm_sec, .wday = tm.tm_wday + 1 };
}

static bool rtc_setting(const struct rtc *rtc)
{
    return rtc->st.cmos[RTC_REG_B] & REG_B_SET;
}

/* The time the guest sees now: frozen while it is setting the clock. */
static void rtc_guest_time(const struct rtc *rtc, struct rtc_time *out)
{
    if (rtc_setting(rtc))
        *out = rtc->st.frozen;
    else
        rtc_time_from_seconds(host_now() + rtc->st.offset_s, out);
}

/* Starts the clock from fields the guest wrote; out-of-range fields carry like mktime's. */
static void rtc_commit(struct rtc *rtc, const struct rtc_time *t)
{
    struct tm tm = { .tm_year = t->year - 1900, .tm_mon = t->month - 1, .tm_mday = t->mday,
                     .tm_hour = t->hour, .tm_min = t->min, .tm_sec = t->sec };
    rtc->st.offset_s = (int64_t)timegm(&tm) - host_now();
}

static uint8_t to_bcd(int v)
{
    unsigned u = v < 0 ? 0 : (unsigned)v; /* years before 0 AD only after hostile writes */
    return (uint8_t)((u / 10 % 10) << 4 | u % 10);
}

/* Invalid BCD digits (a hostile guest's) decode to up to 165, which rtc_commit carries. */
static int from_bcd(uint8_t v)
{
    return (v >> 4) * 10 + (v & 0x0f);
}

static uint8_t rtc_encode(const struct rtc *rtc, int v)
{
    return (rtc->st.cmos[RTC_REG_B] & REG_B_BINARY) ? (uint8_t)v : to_bcd(v);
}

static int rtc_decode(const struct rtc *rtc, uint8_t v)
{
    return (rtc->st.cmos[RTC_REG_B] & REG_B_BINARY) ? v : from_bcd(v);
}

static uint8_t rtc_encode_hour(const struct rtc *rtc, int hour)
{
    int hour12 = hour % 12 ? hour % 12 : 12;
    if (rtc->st.cmos[RTC_REG_B] & REG_B_24H)
        return rtc_encode(rtc, hour);
    return rtc_encode(rtc, hour12) | (hour >= 12 ? HOUR_PM : 0);
}

static int rtc_decode_hour(const struct rtc *rtc, uint8_t v)
{
    if (rtc->st.cmos[RTC_REG_B] & REG_B_24H)
        return rtc_decode(rtc, v);
    return rtc_decode(rtc, v & ~HOUR_PM) % 12 + ((v & HOUR_PM) ? 12 : 0);
}

static bool rtc_is_time_register(unsigned index)
{
    switch (index) {
    case RTC_SECONDS: case RTC_MINUTES: case RTC_HOURS: case RTC_DAY_OF_WEEK:
    case RTC_DAY_OF_MONTH: case RTC_MONTH: case RTC_YEAR: case RTC_REG_CENTURY:
        return true;
    }
    return false;
}

static uint8_t rtc_read_time_register(const struct rtc *rtc, unsigned index)
{
    struct rtc_time t;
    rtc_guest_time(rtc, &t);
    switch (index) {
    case RTC_SECONDS:
        return rtc_encode(rtc, t.sec);
    case RTC_MINUTES:
        return rtc_encode(rtc, t.min);
    case RTC_HOURS:
        return rtc_encode_hour(rtc, t.hour);
    case RTC_DAY_OF_WEEK:
        return rtc_encode(rtc, t.wday);
    case RTC_DAY_OF_MONTH:
        return rtc_encode(rtc, t.mday);
    case RTC_MONTH:
        return rtc_encode(rtc, t.month);
    case RTC_YEAR:
        return rtc_encode(rtc, t.year % 100);
    default:
        return rtc_encode(rtc, t.year / 100 % 100);
    }
}

static void rtc_write_time_register(struct rtc *rtc, unsigned index, uint8_t val)
{
    struct rtc_time t;
    rtc_guest_time(rtc, &t);
    switch (index) {
    case RTC_SECONDS:
        t.sec = rtc_decode(rtc, val);
        break;
    case RTC_MINUTES:
        t.min = rtc_decode(rtc, val);
        break;
    case RTC_HOURS:
        t.hour = rtc_decode_hour(rtc, val);
        break;
    case RTC_DAY_OF_MONTH:
        t.mday = rtc_decode(rtc, val);
        break;
    case RTC_MONTH:
        t.month = rtc_decode(rtc, val);
        break;
    case RTC_YEAR:
        t.year = t.year / 100 * 100 + rtc_decode(rtc, val);
        break;
    case RTC_REG_CENTURY:
        t.year = rtc_decode(rtc, val) * 100 + t.year % 100;
        break;
    default:
        return; /* day of week: derived from the date */
    }
    if (rtc_setting(rtc))
        rtc->st.frozen = t;
    else
        rtc_commit(rtc, &t);
}

static void rtc_write_reg_b(struct rtc *rtc, uint8_t val)
{
    bool was_setting = rtc_setting(rtc);
    bool setting = val & REG_B_SET;

    if (setting && !was_setting)
        rtc_guest_time(rtc, &rtc->st.frozen); /* still running: latch the current time */
    rtc->st.cmos[RTC_REG_B] = val;
    if (was_setting && !setting)
        rtc_commit(rtc, &rtc->st.frozen);
}

static uint8_t rtc_read_data(struct rtc *rtc)
{
    unsigned index = rtc->st.index;
    if (rtc_is_time_register(index))
        return rtc_read_time_register(rtc, index);
    switch (index) {
    case RTC_REG_A:
        return rtc->st.cmos[RTC_REG_A] & ~REG_A_UIP;
    case RTC_REG_C:
        return 0; /* no interrupt flags: nothing ever raises IRQ 8 */
    case RTC_REG_D:
        return REG_D_VRT;
    }
    return rtc->st.cmos[index];
}

static void rtc_write_data(struct rtc *rtc, uint8_t val)
{
    unsigned index = rtc->st.index;
    if (rtc_is_time_register(index)) {
        rtc_write_time_register(rtc, index, val);
        return;
    }
    switch (index) {
    case RTC_REG_A:
        rtc->st.cmos[RTC_REG_A] = val & ~REG_A_UIP;
        break;
    case RTC_REG_B:
        rtc_write_reg_b(rtc, val);
        break;
    case RTC_REG_C:
    case RTC_REG_D:
        break; /* read-only */
    default:
        rtc->st.cmos[index] = val;
    }
}

/* Byte i of an access at offset lands on port 0 (index) or 1 (data); false past them. */
static bool rtc_port_of(uint64_t offset, uint32_t i, unsigned *port)
{
    if (offset >= RTC_IO_LEN || i >= RTC_IO_LEN - offset)
        return false;
    *port = (unsigned)(offset + i);
    return true;
}

/* Wider accesses act like an ISA bus splitting them: a word write to 0x70 sets index, data. */
static void rtc_read(void *dev, uint64_t offset, uint8_t *data, uint32_t len)
{
    struct rtc *rtc = dev;
    unsigned port;

    pthread_mutex_lock(&rtc->lock);
    for (uint32_t i = 0; i < len; i++) {
        /* The index port is write-only; reading it gives the floating bus. */
        bool is_data = rtc_port_of(offset, i, &port) && port == 1;
        data[i] = is_data ? rtc_read_data(rtc) : 0xff;
    }
    pthread_mutex_unlock(&rtc->lock);
}

static void rtc_write(void *dev, uint64_t offset, const uint8_t *data, uint32_t len)
{
    struct rtc *rtc = dev;
    unsigned port;

    pthread_mutex_lock(&rtc->lock);
    for (uint32_t i = 0; i < len; i++) {
        if (!rtc_port_of(offset, i, &port))
            break;
        if (port == 0)
            rtc->st.index = data[i] & INDEX_MASK;
        else
            rtc_write_data(rtc, data[i]);
    }
    pthread_mutex_unlock(&rtc->lock);
}

const struct device_ops rtc_ops = { .read = rtc_read, .write = rtc_write };

static void cmos_put(struct rtc *rtc, unsigned index, uint64_t value, unsigned bytes)
{
    for (unsigned i = 0; i < bytes; i++)
        rtc->st.cmos[index + i] = (uint8_t)(value >> (8 * i));
}

static uint64_t min_u64(uint64_t a, uint64_t b)
{
    return a < b ? a : b;
}

static void rtc_store_memory_size(struct rtc *rtc, uint64_t ram_below_4g, uint64_t ram_above_4g)
{
    const uint64_t kib = 1024, mib = 1024 * kib, unit64k = 64 * kib;
    uint64_t above_1m = ram_below_4g > mib ? ram_below_4g - mib : 0;
    uint64_t above_16m = ram_below_4g > 16 * mib ? ram_below_4g - 16 * mib : 0;

    cmos_put(rtc, CMOS_BASE_MEM_KB, 640, 2);
    cmos_put(rtc, CMOS_EXT_MEM_KB, min_u64(above_1m / kib, 0xffff), 2);
    cmos_put(rtc, CMOS_EXT_MEM_KB_COPY, min_u64(above_1m / kib, 0xffff), 2);
    cmos_put(rtc, CMOS_MEM_ABOVE_16M, min_u64(above_16m / unit64k, 0xffff), 2);
    cmos_put(rtc, CMOS_MEM_ABOVE_4G, min_u64(ram_above_4g / unit64k, 0xffffff), 3);
}

int rtc_init(struct rtc *rtc, uint64_t ram_below_4g, uint64_t ram_above_4g)
{
    int ret;

    memset(rtc, 0, sizeof(*rtc));
    ret = pthread_mutex_init(&rtc->lock, NULL);
    if (ret)
        return -ret;
    rtc->st.cmos[RTC_REG_A] = 0x26; /* 32.768 kHz time base, 1024 Hz rate: the PC default */
    rtc->st.cmos[RTC_REG_B] = REG_B_24H; /* BCD, 24-hour */
    rtc_store_memory_size(rtc, ram_below_4g, ram_above_4g);
    return 0;
}

void rtc_destroy(struct rtc *rtc)
{
    pthread_mutex_destroy(&rtc->lock);
}

/* ---- Snapshots: the fields of struct rtc_state, one by one, in this order ---- */

/*
 * Bounds for a loaded clock, far beyond any date a guest sets (Linux's RTC code stops at
 * 2099; one round of hostile writes reaches about year 26000). They keep every later sum and
 * gmtime() call from overflowing. The offset gets half the years, so that a time latched
 * from it still passes the year bound.
 */
#define LOAD_YEAR_LIMIT 1000000
#define LOAD_OFFSET_LIMIT_S ((int64_t)LOAD_YEAR_LIMIT / 2 * 366 * 24 * 3600)
#define LOAD_FIELD_MAX 255 /* a field written in binary mode: any byte */

static void rtc_time_write(struct state_writer *w, const struct rtc_time *t)
{
    const int fields[] = { t->year, t->month, t->mday, t->hour, t->min, t->sec, t->wday };
    for (unsigned i = 0; i < sizeof(fields) / sizeof(fields[0]); i++)
        sw_u32(w, (uint32_t)fields[i]); /* two's complement: a year may be below 0 */
}

void rtc_save(void *dev, struct state_writer *w)
{
    struct rtc *rtc = dev;
    struct rtc_state s;

    pthread_mutex_lock(&rtc->lock);
    s = rtc->st;
    pthread_mutex_unlock(&rtc->lock);
    sw_u8(w, s.index);
    sw_bytes(w, s.cmos, sizeof(s.cmos));
    sw_u64(w, (uint64_t)s.offset_s);
    rtc_time_write(w, &s.frozen);
}

static void rtc_time_read(struct state_cursor *c, struct rtc_time *t)
{
    int *fields[] = { &t->year, &t->month, &t->mday, &t->hour, &t->min, &t->sec, &t->wday };
    for (unsigned i = 0; i < sizeof(fields) / sizeof(fields[0]); i++)
        *fields[i] = (int32_t)sc_u32(c);
}

static int rtc_check_field(const struct state_cursor *c, const char *name, int v, int max)
{
    if (v < 0 || v > max)
        return sc_reject(c, "frozen.%s %d: not within 0-%d", name, v, max);
    return 0;
}

/* The latched time: anything the guest can write into it, and no more. */
static int rtc_time_check(const struct state_cursor *c, const struct rtc_time *t)
{
    int ret;

    if (t->year < -LOAD_YEAR_LIMIT || t->year > LOAD_YEAR_LIMIT)
        return sc_reject(c, "frozen.year %d: beyond +-%d", t->year, LOAD_YEAR_LIMIT);
    if ((ret = rtc_check_field(c, "month", t->month, LOAD_FIELD_MAX)) < 0 ||
        (ret = rtc_check_field(c, "mday", t->mday, LOAD_FIELD_MAX)) < 0 ||
        (ret = rtc_check_field(c, "hour", t->hour, LOAD_FIELD_MAX)) < 0 ||
        (ret = rtc_check_field(c, "min", t->min, LOAD_FIELD_MAX)) < 0 ||
        (ret = rtc_check_field(c, "sec", t->sec, LOAD_FIELD_MAX)) < 0)
        return ret;
    /* Never written by the guest: 1-7 from the date, or 0 before the first latch. */
    return rtc_check_field(c, "wday", t->wday, 7);
}

/* CMOS bytes the device never stores into hold 0: time registers (kept as offset_s), C, D. */
static int rtc_cmos_check(const struct state_cursor *c, const uint8_t *cmos)
{
    for (unsigned i = 0; i < RTC_CMOS_SIZE; i++)
        if ((rtc_is_time_register(i) || i == RTC_REG_C || i == RTC_REG_D) && cmos[i])
            return sc_reject(c, "cmos[0x%02x] 0x%02x: a byte this clock never stores", i,
                             cmos[i]);
    if (cmos[RTC_REG_A] & REG_A_UIP)
        return sc_reject(c, "cmos[0x%02x] 0x%02x: UIP set", RTC_REG_A, cmos[RTC_REG_A]);
    return 0;
}

static int rtc_state_check(const struct state_cursor *c, const struct rtc_state *s)
{
    int ret;

    if (s->index > INDEX_MASK)
        return sc_reject(c, "index 0x%02x: past the %u CMOS bytes", s->index, RTC_CMOS_SIZE);
    if ((ret = rtc_cmos_check(c, s->cmos)) < 0)
        return ret;
    if (s->offset_s < -LOAD_OFFSET_LIMIT_S || s->offset_s > LOAD_OFFSET_LIMIT_S)
        return sc_reject(c, "offset_s %lld: beyond %d years", (long long)s->offset_s,
                         LOAD_YEAR_LIMIT / 2);
    return rtc_time_check(c, &s->frozen);
}

int rtc_load(void *dev, struct state_cursor *c, uint32_t version)
{
    struct rtc *rtc = dev;
    struct rtc_state s;
    int ret;

    if (version != RTC_STATE_VERSION)
        return sc_reject(c, "version %u unknown", version);
    memset(&s, 0, sizeof(s));
    s.index = sc_u8(c);
    sc_bytes(c, s.cmos, sizeof(s.cmos));
    s.offset_s = (int64_t)sc_u64(c);
    rtc_time_read(c, &s.frozen);
    if ((ret = sc_finish(c)) < 0)
        return ret;
    if ((ret = rtc_state_check(c, &s)) < 0)
        return ret;
    pthread_mutex_lock(&rtc->lock);
    rtc->st = s; /* nothing derived: every read computes the time afresh */
    pthread_mutex_unlock(&rtc->lock);
    return 0;
}
