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

/* Reads the clock the way Linux's mc146818_get_time() does and returns it as a time_t. */
static time_t read_clock(struct rtc *rtc)
{
    struct tm tm = { .tm_sec = read_field(rtc, 0x00), .tm_min = read_field(rtc, 0x02),
                     .tm_hour = read_hour(rtc), .tm_mday = read_field(rtc, 0x07),
                     .tm_mon = read_field(rtc, 0x08) - 1,
                     .tm_year = read_field(rtc, 0x32) * 100 + read_field(rtc, 0x09) - 1900 };
    return timegm(&tm);
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
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
