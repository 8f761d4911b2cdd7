/* test_state.c: the state format: round trips, and a reader that refuses every damaged stream. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "migration/state.h"

/* Two sections: "alpha" v1 with each integer width, "beta" v3 with 1000 bytes. */
static void write_sample(struct state_writer *w)
{
    uint8_t blob[1000];
    for (unsigned i = 0; i < sizeof(blob); i++)
        blob[i] = (uint8_t)(i * 7);
    sw_init(w);
    sw_begin(w, "alpha", 1);
    sw_u8(w, 0x12);
    sw_u16(w, 0x3456);
    sw_u32(w, 0x789abcde);
    sw_u64(w, 0x0123456789abcdefull);
    sw_end(w);
    sw_begin(w, "beta", 3);
    sw_bytes(w, blob, sizeof(blob));
    sw_end(w);
    assert_int_equal(sw_finish(w), 0);
}

static void test_round_trip(void **state)
{
    struct state_writer w;
    struct state_reader r;
    struct state_cursor c;
    (void)state;
    write_sample(&w);
    assert_int_equal(state_reader_open(&r, w.buf, w.len), 0);
    assert_int_equal(r.nr_sections, 2);
    const struct state_section *a = state_reader_find(&r, "alpha");
    assert_non_null(a);
    assert_int_equal(a->version, 1);
    assert_non_null(state_reader_unused(&r)); /* beta not asked for yet */
    sc_init(&c, a);
    assert_int_equal(sc_u8(&c), 0x12);
    assert_int_equal(sc_u16(&c), 0x3456);
    assert_int_equal(sc_u32(&c), 0x789abcde);
    assert_true(sc_u64(&c) == 0x0123456789abcdefull);
    assert_int_equal(sc_finish(&c), 0);
    const struct state_section *b = state_reader_find(&r, "beta");
    assert_non_null(b);
    assert_int_equal(b->version, 3);
    assert_int_equal(b->len, 1000);
    assert_int_equal(b->data[999], (uint8_t)(999 * 7));
    assert_null(state_reader_unused(&r));
    assert_null(state_reader_find(&r, "gamma"));
    state_reader_close(&r);
    sw_free(&w);
}

static void test_cursor_overrun_and_leftover(void **state)
{
    struct state_writer w;
    struct state_reader r;
    struct state_cursor c;
    (void)state;
    write_sample(&w);
    assert_int_equal(state_reader_open(&r, w.buf, w.len), 0);
    sc_init(&c, state_reader_find(&r, "alpha"));
    sc_u64(&c); /* 8 of 15 bytes */
    assert_int_equal(sc_left(&c), 7);
    assert_int_equal(sc_finish(&c), -EPROTO); /* bytes left over */
    sc_u64(&c);               /* past the end: zero, and the cursor remembers */
    assert_int_equal(sc_u8(&c), 0);
    assert_true(c.overrun);
    assert_int_equal(sc_finish(&c), -EPROTO);
    state_reader_close(&r);
    sw_free(&w);
}

static void test_writer_misuse(void **state)
{
    struct state_writer w;
    (void)state;
    sw_init(&w);
    sw_begin(&w, "open", 1);
    assert_int_equal(sw_finish(&w), -EINVAL); /* a section left open */
    sw_free(&w);
    sw_init(&w);
    sw_begin(&w, "an id far longer than thirty-one bytes", 1);
    assert_int_equal(sw_error(&w), -EINVAL);
    sw_free(&w);
    sw_init(&w);
    sw_end(&w); /* nothing open */
    assert_int_equal(sw_finish(&w), -EINVAL);
    sw_free(&w);
}

static int open_copy(const uint8_t *buf, size_t len)
{
    struct state_reader r;
    uint8_t *copy = malloc(len ? len : 1);
    assert_non_null(copy);
    memcpy(copy, buf, len);
    int ret = state_reader_open(&r, copy, len);
    if (ret == 0)
        state_reader_close(&r);
    free(copy);
    return ret;
}

static void test_refusals(void **state)
{
    struct state_writer w;
    (void)state;
    write_sample(&w);
    assert_int_equal(open_copy(w.buf, w.len), 0);
    /* Every truncation. */
    for (size_t len = 0; len < w.len; len++)
        assert_true(open_copy(w.buf, len) < 0);
    /* A byte after the last section. */
    uint8_t *longer = calloc(1, w.len + 1);
    memcpy(longer, w.buf, w.len);
    assert_int_equal(open_copy(longer, w.len + 1), -EPROTO);
    free(longer);
    /* Magic, format version, a section count too large, a payload byte (the checksum). */
    const struct { size_t offset; uint8_t value; int want; } bad[] = {
        { 0, 'X', -EINVAL },  { 8, 2, -EPROTO },    { 8, 0, -EPROTO },
        { 13, 0x10, -EPROTO }, { 16 + 48 + 3, 0, -EPROTO },
        { 16, 0, -EPROTO },    /* an empty id */
        { 16 + 32 + 8 + 7, 0x80, -EPROTO }, /* a length beyond the stream */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        uint8_t saved = w.buf[bad[i].offset];
        w.buf[bad[i].offset] = bad[i].value;
        assert_int_equal(open_copy(w.buf, w.len), bad[i].want);
        w.buf[bad[i].offset] = saved;
    }
    sw_free(&w);
}

static void test_duplicate_section(void **state)
{
    struct state_writer w;
    (void)state;
    sw_init(&w);
    sw_begin(&w, "same", 1);
    sw_u8(&w, 1);
    sw_end(&w);
    sw_begin(&w, "same", 1);
    sw_u8(&w, 2);
    sw_end(&w);
    assert_int_equal(sw_finish(&w), 0);
    assert_int_equal(open_copy(w.buf, w.len), -EPROTO);
    sw_free(&w);
}

/* Fuzz-style: thousands of random damages to a valid stream never crash the reader, and one
 * that opens has every section's bounds inside the buffer. */
static void test_random_damage(void **state)
{
    struct state_writer w;
    (void)state;
    write_sample(&w);
    srand(1234);
    for (unsigned round = 0; round < 20000; round++) {
        uint8_t *copy = malloc(w.len);
        memcpy(copy, w.buf, w.len);
        unsigned flips = 1 + (unsigned)rand() % 4;
        for (unsigned k = 0; k < flips; k++)
            copy[(size_t)rand() % w.len] ^= (uint8_t)(1u << (rand() % 8));
        size_t len = rand() % 8 == 0 ? (size_t)rand() % w.len : w.len;
        struct state_reader r;
        if (state_reader_open(&r, copy, len) == 0) {
            for (uint32_t i = 0; i < r.nr_sections; i++)
                assert_true(r.sections[i].data >= copy &&
                            r.sections[i].data + r.sections[i].len <= copy + len);
            state_reader_close(&r);
        }
        free(copy);
    }
    sw_free(&w);
}

static void test_crc32c(void **state)
{
    (void)state;
    /* The check value of CRC-32C (RFC 3720's polynomial). */
    assert_int_equal(state_crc32c("123456789", 9), 0xe3069283);
    assert_int_equal(state_crc32c("", 0), 0);
    assert_int_equal(state_crc32c_bytewise("123456789", 9), 0xe3069283);

    /* The CPU's instruction (where there is one) and the table agree for every length and
     * alignment around its 8-byte steps. */
    uint8_t buf[300];
    for (size_t i = 0; i < sizeof(buf); i++)
        buf[i] = (uint8_t)(i * 131 + 7);
    for (size_t off = 0; off < 8; off++)
        for (size_t len = 0; len + off <= sizeof(buf); len += 1 + len / 16)
            assert_int_equal(state_crc32c(buf + off, len), state_crc32c_bytewise(buf + off, len));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_cursor_overrun_and_leftover),
        cmocka_unit_test(test_writer_misuse),
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_duplicate_section),
        cmocka_unit_test(test_random_damage),
        cmocka_unit_test(test_crc32c),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
