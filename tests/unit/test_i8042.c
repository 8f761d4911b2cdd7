/* test_i8042.c: controller self tests, command byte, reset line, hostile input. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "mmio/i8042.h"
#include "state_helpers.h"

struct fixture {
    struct i8042 kbc;
    unsigned resets, other_events;
};

static void record_event(void *ctx, enum platform_event e)
{
    struct fixture *f = ctx;
    if (e == PLATFORM_EVENT_RESET)
        f->resets++;
    else
        f->other_events++;
}

static struct fixture *fixture_new(void)
{
    struct fixture *f = calloc(1, sizeof(*f));
    struct platform_events ev = { .notify = record_event, .ctx = f };
    assert_int_equal(i8042_init(&f->kbc, &ev), 0);
    return f;
}

static void fixture_free(struct fixture *f)
{
    i8042_destroy(&f->kbc);
    free(f);
}

static int setup(void **state)
{
    *state = fixture_new();
    return 0;
}

static int teardown(void **state)
{
    fixture_free(*state);
    return 0;
}

static uint8_t status(struct i8042 *k)
{
    uint8_t v = 0;
    i8042_command_ops.read(k, 0, &v, 1);
    return v;
}

static void command(struct i8042 *k, uint8_t cmd)
{
    i8042_command_ops.write(k, 0, &cmd, 1);
}

static void write_data(struct i8042 *k, uint8_t v)
{
    i8042_data_ops.write(k, 0, &v, 1);
}

static uint8_t read_data(struct i8042 *k)
{
    uint8_t v = 0;
    i8042_data_ops.read(k, 0, &v, 1);
    return v;
}

/* Linux's i8042_command(): the reply must be there (OBF) right after the command. */
static uint8_t query(struct i8042 *k, uint8_t cmd)
{
    assert_int_equal(status(k) & 0x02, 0); /* input buffer never busy */
    command(k, cmd);
    assert_int_equal(status(k) & 0x01, 0x01);
    uint8_t reply = read_data(k);
    assert_int_equal(status(k) & 0x01, 0x00);
    return reply;
}

static void test_linux_probe(void **state)
{
    struct fixture *f = *state;
    struct i8042 *k = &f->kbc;

    /* i8042_controller_check(): nothing to flush. */
    assert_int_equal(status(k) & 0x01, 0);
    assert_int_equal(status(k) & 0x10, 0x10); /* no keylock */
    assert_int_equal(query(k, 0xaa), 0x55);
    assert_true(status(k) & 0x04); /* system flag after the self test */
    /* i8042_controller_init(): two equal CTR reads, then write it back modified. */
    uint8_t ctr = query(k, 0x20);
    assert_int_equal(query(k, 0x20), ctr);
    command(k, 0x60);
    write_data(k, (uint8_t)((ctr | 0x10) & ~0x01));
    assert_int_equal(query(k, 0x20), (ctr | 0x10) & ~0x01);
    assert_int_equal(query(k, 0xab), 0x00);
    /* i8042_check_aux(): the loop command gets no reply; the AUX test reports a failure. */
    command(k, 0xd3);
    write_data(k, 0x5a);
    assert_int_equal(status(k) & 0x01, 0);
    uint8_t aux = query(k, 0xa9);
    assert_true(aux != 0 && aux != 0xfa && aux != 0xff);
    /* Port enables are reflected in the command byte. */
    command(k, 0xa7);
    assert_int_equal(query(k, 0x20) & 0x20, 0x20);
    command(k, 0xa8);
    assert_int_equal(query(k, 0x20) & 0x20, 0x00);
    command(k, 0xad);
    assert_int_equal(query(k, 0x20) & 0x10, 0x10);
    command(k, 0xae);
    assert_int_equal(query(k, 0x20) & 0x10, 0x00);
    /* Keyboard data with no keyboard: dropped, no reply. */
    write_data(k, 0xff);
    assert_int_equal(status(k) & 0x01, 0);
    assert_int_equal(status(k) & 0x08, 0); /* last write went to the data port */
    command(k, 0xae);
    assert_int_equal(status(k) & 0x08, 0x08);
    assert_int_equal(f->resets + f->other_events, 0);
}

static void test_pulse_reset_line(void **state)
{
    struct fixture *f = *state;

    command(&f->kbc, 0xfe);
    assert_int_equal(f->resets, 1);
    command(&f->kbc, 0xff); /* pulses nothing */
    command(&f->kbc, 0xfd); /* pulses line 1 only */
    assert_int_equal(f->resets, 1);
    command(&f->kbc, 0xf0); /* pulses all four, reset among them */
    assert_int_equal(f->resets, 2);
    assert_int_equal(f->other_events, 0);
}

static void test_output_port_reset(void **state)
{
    struct fixture *f = *state;
    struct i8042 *k = &f->kbc;

    assert_int_equal(query(k, 0xd0) & 0x03, 0x03);
    command(k, 0xd1);
    write_data(k, 0x03); /* A20 on, reset line high: nothing happens */
    assert_int_equal(f->resets, 0);
    command(k, 0xd1);
    write_data(k, 0x02);
    assert_int_equal(f->resets, 1);
    write_data(k, 0x00); /* no command pending: keyboard data, not the output port */
    assert_int_equal(f->resets, 1);
    /* A new command cancels a pending parameter. */
    command(k, 0xd1);
    command(k, 0xab);
    write_data(k, 0x00);
    assert_int_equal(f->resets, 1);
    assert_int_equal(read_data(k), 0x00);
}

static void test_reply_queue_is_bounded(void **state)
{
    struct fixture *f = *state;
    struct i8042 *k = &f->kbc;

    for (unsigned i = 0; i < 100; i++)
        command(k, 0xaa);
    for (unsigned i = 0; i < I8042_OUT_QUEUE; i++)
        assert_int_equal(read_data(k), 0x55);
    assert_int_equal(status(k) & 0x01, 0);
    assert_int_equal(read_data(k), 0x55); /* the last byte again, like real hardware */
}

static void test_hostile_input(void **state)
{
    struct fixture *f = *state;
    struct i8042 *k = &f->kbc;
    uint8_t data[8];

    for (unsigned cmd = 0; cmd < 256; cmd++) {
        for (unsigned v = 0; v < 256; v += 5) {
            command(k, (uint8_t)cmd);
            write_data(k, (uint8_t)v);
            read_data(k);
        }
    }
    assert_true(k->st.out_count <= I8042_OUT_QUEUE);
    assert_int_equal(f->other_events, 0);
    /* Odd widths and offsets read as ones beyond the one byte, and change nothing. */
    memset(data, 0, sizeof(data));
    i8042_command_ops.read(k, 0, data, 8);
    for (unsigned i = 1; i < 8; i++)
        assert_int_equal(data[i], 0xff);
    unsigned resets = f->resets;
    data[0] = 0xfe;
    i8042_command_ops.write(k, 1, data, 1);
    i8042_command_ops.write(k, UINT64_MAX, data, 8);
    i8042_data_ops.read(k, 3, data, 4);
    assert_int_equal(data[0], 0xff);
    assert_int_equal(f->resets, resets);
    i8042_command_ops.write(k, 0, data, 4); /* 0xff x4: data[0] only, pulses nothing */
    assert_int_equal(f->resets, resets);
}

/* Offsets in the payload, in the order i8042_save() writes the fields. */
enum { AT_CTR = 0, AT_AWAITING = 2, AT_LAST_WRITE_CMD = 3, AT_OUT_HEAD = 8, AT_OUT_COUNT = 9,
       PAYLOAD_LEN = 11 };

/* A new command byte, one reply read and one waiting, the output port write half done. */
static void drive_to_busy_state(struct i8042 *k)
{
    command(k, 0x60);
    write_data(k, 0x47);
    command(k, 0xaa);
    command(k, 0x20);
    assert_int_equal(read_data(k), 0x55);
    command(k, 0xd1);
}

static void test_save_load_round_trip(void **state)
{
    struct fixture *f = *state, *g = fixture_new();
    struct i8042 *k = &g->kbc;

    drive_to_busy_state(&f->kbc);
    struct test_payload p = test_save(i8042_save, &f->kbc, I8042_STATE_VERSION);
    assert_int_equal(p.len, PAYLOAD_LEN);
    assert_int_equal(test_load(i8042_load, k, p.data, p.len, I8042_STATE_VERSION), 0);
    test_assert_saves(i8042_save, k, I8042_STATE_VERSION, &p);
    assert_int_equal(status(k), 0x1d); /* unlocked, command last, system flag, reply waiting */
    write_data(k, 0x01); /* the output port's parameter: A20 off, no reset */
    assert_int_equal(read_data(k), 0x47);
    assert_int_equal(read_data(k), 0x47); /* the last byte again */
    assert_int_equal(query(k, 0xd0), 0x01);
    assert_int_equal(g->resets + g->other_events, 0);
    test_payload_free(&p);
    fixture_free(g);
}

static void test_load_refuses_bad_payloads(void **state)
{
    struct fixture *f = *state, *g = fixture_new();
    static const struct { size_t at; uint8_t value; } hostile[] = {
        { AT_AWAITING, 0x20 }, /* a command without a parameter */
        { AT_AWAITING, 0xff },
        { AT_LAST_WRITE_CMD, 2 },
        { AT_OUT_HEAD, I8042_OUT_QUEUE },
        { AT_OUT_COUNT, I8042_OUT_QUEUE + 1 },
    };

    drive_to_busy_state(&f->kbc);
    struct test_payload p = test_save(i8042_save, &f->kbc, I8042_STATE_VERSION);
    test_assert_refuses_framing(i8042_save, i8042_load, &g->kbc, &p, I8042_STATE_VERSION);
    for (unsigned i = 0; i < sizeof(hostile) / sizeof(hostile[0]); i++)
        test_assert_refuses_byte(i8042_save, i8042_load, &g->kbc, &p, hostile[i].at,
                                 hostile[i].value, I8042_STATE_VERSION);
    /* The command byte is the guest's to choose: any value loads. */
    assert_int_equal(test_load_patched(i8042_load, &g->kbc, &p, AT_CTR, 0xff,
                                       I8042_STATE_VERSION), 0);
    assert_int_equal(g->resets + g->other_events, 0);
    test_payload_free(&p);
    fixture_free(g);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_linux_probe, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pulse_reset_line, setup, teardown),
        cmocka_unit_test_setup_teardown(test_output_port_reset, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reply_queue_is_bounded, setup, teardown),
        cmocka_unit_test_setup_teardown(test_hostile_input, setup, teardown),
        cmocka_unit_test_setup_teardown(test_save_load_round_trip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_load_refuses_bad_payloads, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
