/*
 * state_helpers.h: for device snapshot tests. A device's save() payload, taken back out of
 * a real stream; a payload (as saved, or altered) written as a section and loaded through
 * the reader and a cursor, as the registry will.
 */
#ifndef GODWIT_TESTS_STATE_HELPERS_H
#define GODWIT_TESTS_STATE_HELPERS_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "migration/state.h"

#define TEST_SECTION_ID "dev0"

typedef void (*test_save_fn)(void *dev, struct state_writer *w);
typedef int (*test_load_fn)(void *dev, struct state_cursor *c, uint32_t version);

struct test_payload {
    uint8_t *data;
    size_t len;
};

static inline void test_payload_free(struct test_payload *p)
{
    free(p->data);
    p->data = NULL;
    p->len = 0;
}

/* What save() writes for dev, as the reader finds it in a stream. */
static inline struct test_payload test_save(test_save_fn save, void *dev, uint32_t version)
{
    struct state_writer w;
    struct state_reader r;
    const struct state_section *s;
    struct test_payload p;

    sw_init(&w);
    sw_begin(&w, TEST_SECTION_ID, version);
    save(dev, &w);
    sw_end(&w);
    assert_int_equal(sw_finish(&w), 0);
    assert_int_equal(state_reader_open(&r, w.buf, w.len), 0);
    s = state_reader_find(&r, TEST_SECTION_ID);
    assert_non_null(s);
    assert_int_equal(s->version, version);
    p.len = s->len;
    p.data = malloc(p.len ? p.len : 1);
    assert_non_null(p.data);
    memcpy(p.data, s->data, p.len);
    state_reader_close(&r);
    sw_free(&w);
    return p;
}

/* Writes len bytes as the payload of a section of `version`, opens the stream and hands
 * load() a cursor on that section. Returns what load() returns. */
static inline int test_load(test_load_fn load, void *dev, const void *payload, size_t len,
                            uint32_t version)
{
    struct state_writer w;
    struct state_reader r;
    struct state_cursor c;
    const struct state_section *s;
    int ret;

    sw_init(&w);
    sw_begin(&w, TEST_SECTION_ID, version);
    sw_bytes(&w, payload, len);
    sw_end(&w);
    assert_int_equal(sw_finish(&w), 0);
    assert_int_equal(state_reader_open(&r, w.buf, w.len), 0);
    s = state_reader_find(&r, TEST_SECTION_ID);
    assert_non_null(s);
    sc_init(&c, s);
    ret = load(dev, &c, version);
    state_reader_close(&r);
    sw_free(&w);
    return ret;
}

/* save() writes exactly the bytes of want: after a round trip, or a refused load. */
static inline void test_assert_saves(test_save_fn save, void *dev, uint32_t version,
                                     const struct test_payload *want)
{
    struct test_payload got = test_save(save, dev, version);
    assert_int_equal(got.len, want->len);
    assert_memory_equal(got.data, want->data, want->len);
    test_payload_free(&got);
}

/* Loads p with the byte at offset replaced by value. */
static inline int test_load_patched(test_load_fn load, void *dev, const struct test_payload *p,
                                    size_t offset, uint8_t value, uint32_t version)
{
    uint8_t *copy = malloc(p->len);
    int ret;

    assert_non_null(copy);
    assert_true(offset < p->len);
    memcpy(copy, p->data, p->len);
    copy[offset] = value;
    ret = test_load(load, dev, copy, p->len, version);
    free(copy);
    return ret;
}

/*
 * The refusals common to every device, each leaving dev as it was: p one byte short, one
 * byte long, and at a version the device does not know. p is a valid payload of `version`.
 */
static inline void test_assert_refuses_framing(test_save_fn save, test_load_fn load, void *dev,
                                               const struct test_payload *p, uint32_t version)
{
    struct test_payload before = test_save(save, dev, version);
    uint8_t *longer = calloc(1, p->len + 1);

    assert_non_null(longer);
    assert_true(p->len > 0);
    memcpy(longer, p->data, p->len);
    assert_int_equal(test_load(load, dev, p->data, p->len - 1, version), -EPROTO);
    test_assert_saves(save, dev, version, &before);
    assert_int_equal(test_load(load, dev, longer, p->len + 1, version), -EPROTO);
    test_assert_saves(save, dev, version, &before);
    assert_int_equal(test_load(load, dev, p->data, p->len, version + 1), -EINVAL);
    test_assert_saves(save, dev, version, &before);
    free(longer);
    test_payload_free(&before);
}

/* A hostile value: p with one byte replaced is refused with -EINVAL, dev left as it was. */
static inline void test_assert_refuses_byte(test_save_fn save, test_load_fn load, void *dev,
                                            const struct test_payload *p, size_t offset,
                                            uint8_t value, uint32_t version)
{
    struct test_payload before = test_save(save, dev, version);

    assert_int_equal(test_load_patched(load, dev, p, offset, value, version), -EINVAL);
    test_assert_saves(save, dev, version, &before);
    test_payload_free(&before);
}

#endif
