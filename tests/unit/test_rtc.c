/* test_rtc.c: CMOS clock modes, setting the time, memory-size bytes, hostile writes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <cmocka.h>

#include "mmio/rtc.h"
#include "state_helpers.h"

#define GIB (1024ULL * 1024 * 1024)
#define MIB (1024ULL * 1024)

static int setup(void **state)
{
    struct rtc *rtc = calloc(1, sizeof(*rtc));
    assert_int_equal(rtc_init(rtc, 3 * GIB, 2 * GIB), 0);
    *state = rtc;
    return 0;
}

static int teardown(void **state)
{
    rtc_destroy(*state);
    free(*state);
    return 0;
}

static uint8_t cmos_read(struct rtc *rtc, uint8_t index)
{
    uint8_t v = 0;
    rtc_ops.write(rtc, 0, &index, 1);
    rtc_ops.read(rtc, 1, &v, 1);
    return v;
}

static void cmos_write(struct rtc *rtc, uint8_t index, uint8_t v)
{
    rtc_ops.write(rtc, 0, &index, 1);
    rtc_ops.write(rtc, 1, &v, 1);
}

static int bcd(uint8_t v)
{
    return (v >> 4) * 10 + (v & 0xf);
}

/* A time register in the current mode of register B, decoded. */
static int read_field(struct rtc *rtc, uint8_t index)
{
    bool binary = cmos_read(rtc, 0x0b) & 0x04;
    uint8_t v = cmos_read(rtc, index);
    return binary ? v : bcd(v);
}

static int read_hour(struct rtc *rtc)
{
    uint8_t b = cmos_read(rtc, 0x0b), v = cmos_read(rtc, 0x04);
    bool pm = !(b & 0x02) && (v & 0x80);
    if (!(b & 0x02))
        v &= 0x7f;
    int hour = (b & 0x04) ? v : bcd(v);
    return (b & 0x02) ? hour : hour % 12 + (pm ? 12 : 0);
}

/* Reads the clock the way Linux's mc146818_get_time() does and returns it as a time_t: field
 * by field, again when the seconds changed meanwhile (read across a minute's turn, 59 seconds
 * and the next minute would make a time a minute ahead). */
static time_t read_clock(struct rtc *rtc)
{
    for (unsigned tries = 0; tries < 10; tries++) {
        int sec = read_field(rtc, 0x00);
        struct tm tm = { .tm_sec = sec, .tm_min = read_field(rtc, 0x02),
                         .tm_hour = read_hour(rtc), .tm_mday = read_field(rtc, 0x07),
                         .tm_mon = read_field(rtc, 0x08) - 1,
                         .tm_year = read_field(rtc, 0x32) * 100 + read_field(rtc, 0x09) - 1900 };
        if (read_field(rtc, 0x00) == sec)
            return timegm(&tm);
    }
    fail_msg("the seconds changed during each of 10 reads of the clock");
    return 0;
}

static void assert_close_to(time_t got, time_t want)
{
    long long diff = (long long)got - (long long)want;
    if (diff < -2 || diff > 2)
        fail_msg("clock reads %lld, expected %lld", (long long)got, (long long)want);
}

static void test_bcd_matches_host_time(void **state)
{
    struct rtc *rtc = *state;
    assert_int_equal(cmos_read(rtc, 0x0b) & 0x06, 0x02); /* BCD, 24-hour */
    assert_close_to(read_clock(rtc), time(NULL));
    /* Every time byte is valid BCD. */
    static const uint8_t time_regs[] = { 0x00, 0x02, 0x04, 0x06, 0x07, 0x08, 0x09, 0x32 };
    for (unsigned i = 0; i < sizeof(time_regs); i++) {
        uint8_t v = cmos_read(rtc, time_regs[i]);
        assert_true((v & 0x0f) <= 9 && (v >> 4) <= 9);
    }
    assert_int_equal(cmos_read(rtc, 0x32), 0x20); /* 20xx, for this code's lifetime */
}

static void test_binary_and_12_hour_modes(void **state)
{
    struct rtc *rtc = *state;

    cmos_write(rtc, 0x0b, 0x06); /* binary, 24-hour */
    assert_close_to(read_clock(rtc), time(NULL));
    assert_int_equal(cmos_read(rtc, 0x32), 20);
    uint8_t hour24 = cmos_read(rtc, 0x04);
    assert_true(hour24 < 24);

    cmos_write(rtc, 0x0b, 0x04); /* binary, 12-hour */
    assert_close_to(read_clock(rtc), time(NULL));
    uint8_t hour12 = cmos_read(rtc, 0x04);
    if (cmos_read(rtc, 0x02) != 59) { /* not racing an hour change */
        assert_int_equal((hour12 & 0x80) != 0, hour24 >= 12);
        assert_int_equal(hour12 & 0x7f, hour24 % 12 ? hour24 % 12 : 12);
    }
    cmos_write(rtc, 0x0b, 0x00); /* BCD, 12-hour */
    assert_close_to(read_clock(rtc), time(NULL));
}

static void test_day_of_week_follows_date(void **state)
{
    struct rtc *rtc = *state;
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    uint8_t wday = cmos_read(rtc, 0x06);
    if (tm.tm_hour != 23 || tm.tm_min != 59)
        assert_int_equal(bcd(wday), tm.tm_wday + 1);
}

/* mc146818_set_time(): SET, then year, month, day, hour, minute, second, then clear SET. */
static void test_setting_the_clock_is_an_offset(void **state)
{
    struct rtc *rtc = *state;
    struct tm want = { .tm_year = 2001 - 1900, .tm_mon = 1, .tm_mday = 3, .tm_hour = 16,
                       .tm_min = 5, .tm_sec = 6 };
    uint8_t b = cmos_read(rtc, 0x0b);

    cmos_write(rtc, 0x0b, b | 0x80);
    cmos_write(rtc, 0x32, 0x20);
    cmos_write(rtc, 0x09, 0x01);
    cmos_write(rtc, 0x08, 0x02); /* February, even if today is the 31st: frozen, no carry */
    cmos_write(rtc, 0x07, 0x03);
    cmos_write(rtc, 0x04, 0x16);
    cmos_write(rtc, 0x02, 0x05);
    cmos_write(rtc, 0x00, 0x06);
    assert_int_equal(read_clock(rtc), timegm(&want)); /* frozen while SET */
    cmos_write(rtc, 0x0b, b);
    assert_close_to(read_clock(rtc), timegm(&want));

    /* One field written without SET moves the clock by that field only. */
    cmos_write(rtc, 0x09, 0x02);
    want.tm_year++;
    assert_close_to(read_clock(rtc), timegm(&want));
    /* 12-hour writes: 12 AM is midnight, 0x81 is 1 PM. */
    cmos_write(rtc, 0x0b, 0x00);
    cmos_write(rtc, 0x04, 0x81);
    want.tm_hour = 13;
    assert_close_to(read_clock(rtc), timegm(&want));
    cmos_write(rtc, 0x04, 0x12);
    want.tm_hour = 0;
    assert_close_to(read_clock(rtc), timegm(&want));
}

static void test_status_registers(void **state)
{
    struct rtc *rtc = *state;

    assert_int_equal(cmos_read(rtc, 0x0a), 0x26);
    cmos_write(rtc, 0x0a, 0xff);
    assert_int_equal(cmos_read(rtc, 0x0a), 0x7f); /* UIP never set */
    cmos_write(rtc, 0x0b, 0x72); /* PIE AIE UIE: stored, never fire */
    assert_int_equal(cmos_read(rtc, 0x0b), 0x72);
    assert_int_equal(cmos_read(rtc, 0x0c), 0);
    cmos_write(rtc, 0x0c, 0xff);
    assert_int_equal(cmos_read(rtc, 0x0c), 0);
    assert_int_equal(cmos_read(rtc, 0x0d), 0x80);
    cmos_write(rtc, 0x0d, 0x00);
    assert_int_equal(cmos_read(rtc, 0x0d), 0x80);
}

static void test_cmos_memory_and_index(void **state)
{
    struct rtc *rtc = *state;
    uint8_t v;

    cmos_write(rtc, 0x40, 0xab);
    assert_int_equal(cmos_read(rtc, 0x40), 0xab);
    cmos_write(rtc, 0x7f, 0xcd);
    assert_int_equal(cmos_read(rtc, 0x7f), 0xcd);
    assert_int_equal(cmos_read(rtc, 0xc0), 0xab); /* NMI-disable bit ignored */
    cmos_write(rtc, 0x01, 0x30);                  /* alarm seconds: plain storage */
    assert_int_equal(cmos_read(rtc, 0x01), 0x30);
    rtc_ops.read(rtc, 0, &v, 1);
    assert_int_equal(v, 0xff); /* the index port is write-only */
    /* A word write to the index port sets the index and writes the data port. */
    uint8_t pair[2] = { 0x41, 0x99 };
    rtc_ops.write(rtc, 0, pair, 2);
    assert_int_equal(cmos_read(rtc, 0x41), 0x99);
}

static unsigned cmos16(struct rtc *rtc, uint8_t i)
{
    return cmos_read(rtc, i) | cmos_read(rtc, i + 1) << 8;
}

static void test_memory_size_bytes(void **state)
{
    struct rtc *rtc = *state;
    assert_int_equal(cmos16(rtc, 0x15), 640);
    assert_int_equal(cmos16(rtc, 0x17), 0xffff);
    assert_int_equal(cmos16(rtc, 0x30), 0xffff);
    assert_int_equal(cmos16(rtc, 0x34), (3 * GIB - 16 * MIB) / 65536);
    assert_int_equal(cmos16(rtc, 0x5b) | cmos_read(rtc, 0x5d) << 16, 2 * GIB / 65536);

    struct rtc small;
    assert_int_equal(rtc_init(&small, 8 * MIB, 0), 0);
    assert_int_equal(cmos16(&small, 0x17), 7 * 1024);
    assert_int_equal(cmos16(&small, 0x34), 0);
    assert_int_equal(cmos16(&small, 0x5b) | cmos_read(&small, 0x5d) << 16, 0);
    rtc_destroy(&small);

    struct rtc huge; /* 4 TiB above 4 GiB saturates the 24-bit count */
    assert_int_equal(rtc_init(&huge, 3 * GIB, 4096 * GIB), 0);
    assert_int_equal(cmos16(&huge, 0x5b) | cmos_read(&huge, 0x5d) << 16, 0xffffff);
    rtc_destroy(&huge);
}

static void test_hostile_writes(void **state)
{
    struct rtc *rtc = *state;
    uint8_t data[8];

    for (unsigned b = 0; b < 256; b += 0x11) {
        for (unsigned index = 0; index < 256; index++) {
            if ((index & 0x7f) == 0x0b)
                continue;
            cmos_write(rtc, 0x0b, (uint8_t)b);
            for (unsigned v = 0; v < 256; v += 7)
                cmos_write(rtc, (uint8_t)index, (uint8_t)v);
            cmos_read(rtc, (uint8_t)index);
        }
    }
    /* Odd widths and offsets: bytes past the two ports are ignored / read as ones. */
    memset(data, 0x5a, sizeof(data));
    rtc_ops.write(rtc, 0, data, 8);
    rtc_ops.write(rtc, UINT64_MAX, data, 8);
    rtc_ops.read(rtc, 1, data, 4);
    assert_int_equal(data[1], 0xff);
    assert_int_equal(data[3], 0xff);
    rtc_ops.read(rtc, UINT64_MAX - 2, data, 8);
    assert_int_equal(data[0], 0xff);
    /* The clock still works and can be set back. */
    cmos_write(rtc, 0x0b, 0x86);
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    cmos_write(rtc, 0x32, (uint8_t)((tm.tm_year + 1900) / 100));
    cmos_write(rtc, 0x09, (uint8_t)(tm.tm_year % 100));
    cmos_write(rtc, 0x08, (uint8_t)(tm.tm_mon + 1));
    cmos_write(rtc, 0x07, (uint8_t)tm.tm_mday);
    cmos_write(rtc, 0x04, (uint8_t)tm.tm_hour);
    cmos_write(rtc, 0x02, (uint8_t)tm.tm_min);
    cmos_write(rtc, 0x00, (uint8_t)tm.tm_sec);
    cmos_write(rtc, 0x0b, 0x06);
    assert_close_to(read_clock(rtc), now);
}

/* Offsets in the payload, in the order rtc_save() writes the fields. */
#define AT_CMOS(i) (1 + (i))
enum { AT_INDEX = 0, AT_OFFSET = 129, AT_YEAR = 137, AT_MONTH = 141, AT_HOUR = 149,
       AT_WDAY = 161, PAYLOAD_LEN = 165 };

static struct rtc *rtc_new(void)
{
    struct rtc *rtc = calloc(1, sizeof(*rtc));
    assert_int_equal(rtc_init(rtc, 3 * GIB, 2 * GIB), 0);
    return rtc;
}

static void rtc_free(struct rtc *rtc)
{
    rtc_destroy(rtc);
    free(rtc);
}

/* 2001-02-03 16:05:06 set as Linux sets it, alarm 06:15:30, a CMOS byte, index at it. */
static const struct tm set_time = { .tm_year = 2001 - 1900, .tm_mon = 1, .tm_mday = 3,
                                    .tm_hour = 16, .tm_min = 5, .tm_sec = 6 };

static void drive_to_set_state(struct rtc *rtc)
{
    cmos_write(rtc, 0x0b, 0x82);
    cmos_write(rtc, 0x32, 0x20);
    cmos_write(rtc, 0x09, 0x01);
    cmos_write(rtc, 0x08, 0x02);
    cmos_write(rtc, 0x07, 0x03);
    cmos_write(rtc, 0x04, 0x16);
    cmos_write(rtc, 0x02, 0x05);
    cmos_write(rtc, 0x00, 0x06);
    cmos_write(rtc, 0x0b, 0x22); /* running again; AIE stored */
    cmos_write(rtc, 0x01, 0x30);
    cmos_write(rtc, 0x03, 0x15);
    cmos_write(rtc, 0x05, 0x06);
    cmos_write(rtc, 0x0a, 0x2f);
    cmos_write(rtc, 0x40, 0xab);
}

static void test_save_load_round_trip(void **state)
{
    struct rtc *rtc = *state, *other = rtc_new();
    struct tm want = set_time;
    uint8_t v = 0;

    drive_to_set_state(rtc);
    struct test_payload p = test_save(rtc_save, rtc, RTC_STATE_VERSION);
    assert_int_equal(p.len, PAYLOAD_LEN);
    assert_int_equal(p.data[AT_INDEX], 0x40);
    assert_int_equal(test_load(rtc_load, other, p.data, p.len, RTC_STATE_VERSION), 0);
    test_assert_saves(rtc_save, other, RTC_STATE_VERSION, &p);
    /* The index is kept: the data port reads the byte it selected. */
    rtc_ops.read(other, 1, &v, 1);
    assert_int_equal(v, 0xab);
    /* The clock goes on from the offset the guest set, over the host's clock. */
    assert_close_to(read_clock(other), timegm(&want));
    assert_int_equal(cmos_read(other, 0x0b), 0x22);
    assert_int_equal(cmos_read(other, 0x0a), 0x2f);
    assert_int_equal(cmos_read(other, 0x01), 0x30);
    assert_int_equal(cmos_read(other, 0x03), 0x15);
    assert_int_equal(cmos_read(other, 0x05), 0x06);
    assert_int_equal(cmos16(other, 0x15), 640);
    test_payload_free(&p);
    rtc_free(other);
}

/* Saved in the middle of mc146818_set_time(): the time being written is kept and used. */
static void test_round_trip_while_setting(void **state)
{
    struct rtc *rtc = *state, *other = rtc_new();
    struct tm want = set_time;

    drive_to_set_state(rtc);
    cmos_write(rtc, 0x0b, 0xa2);
    cmos_write(rtc, 0x09, 0x07); /* 2007, while frozen */
    struct test_payload p = test_save(rtc_save, rtc, RTC_STATE_VERSION);
    assert_int_equal(test_load(rtc_load, other, p.data, p.len, RTC_STATE_VERSION), 0);
    test_assert_saves(rtc_save, other, RTC_STATE_VERSION, &p);
    want.tm_year = 2007 - 1900;
    time_t frozen = read_clock(other);
    assert_true(frozen >= timegm(&want) && frozen <= timegm(&want) + 2);
    cmos_write(other, 0x0b, 0x22);
    assert_close_to(read_clock(other), frozen);
    test_payload_free(&p);
    rtc_free(other);
}

static void test_load_refuses_bad_payloads(void **state)
{
    struct rtc *rtc = *state, *other = rtc_new();
    static const struct { size_t at; uint8_t value; } hostile[] = {
        { AT_INDEX, 0x80 },             /* past the 128 bytes */
        { AT_CMOS(0x00), 0x01 },        /* time registers live in offset_s */
        { AT_CMOS(0x32), 0x20 },        /* the century too */
        { AT_CMOS(0x0a), 0xa6 },        /* UIP */
        { AT_CMOS(0x0c), 0x80 },        /* register C: no flags ever */
        { AT_CMOS(0x0d), 0x80 },        /* register D: read as a constant */
        { AT_OFFSET + 7, 0x7f },        /* an offset of 10^18 seconds */
        { AT_OFFSET + 7, 0x80 },
        { AT_YEAR + 3, 0x80 },          /* a year near -2^31 */
        { AT_YEAR + 2, 0x10 },          /* year past a million */
        { AT_MONTH + 1, 0x01 },         /* month 258 */
        { AT_HOUR + 3, 0xff },          /* a negative hour */
        { AT_WDAY, 8 },
    };

    drive_to_set_state(rtc);
    struct test_payload p = test_save(rtc_save, rtc, RTC_STATE_VERSION);
    test_assert_refuses_framing(rtc_save, rtc_load, other, &p, RTC_STATE_VERSION);
    for (unsigned i = 0; i < sizeof(hostile) / sizeof(hostile[0]); i++)
        test_assert_refuses_byte(rtc_save, rtc_load, other, &p, hostile[i].at,
                                 hostile[i].value, RTC_STATE_VERSION);
    /* Any byte a binary-mode guest can write into a latched field is fine. */
    assert_int_equal(test_load_patched(rtc_load, other, &p, AT_MONTH, 0xff, RTC_STATE_VERSION),
                     0);
    test_payload_free(&p);
    rtc_free(other);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_bcd_matches_host_time, setup, teardown),
        cmocka_unit_test_setup_teardown(test_binary_and_12_hour_modes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_day_of_week_follows_date, setup, teardown),
        cmocka_unit_test_setup_teardown(test_setting_the_clock_is_an_offset, setup, teardown),
        cmocka_unit_test_setup_teardown(test_status_registers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cmos_memory_and_index, setup, teardown),
        cmocka_unit_test_setup_teardown(test_memory_size_bytes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_hostile_writes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_save_load_round_trip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_round_trip_while_setting, setup, teardown),
        cmocka_unit_test_setup_teardown(test_load_refuses_bad_payloads, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
