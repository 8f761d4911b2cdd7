/* test_migrate.c: the switch-over's fixed cost from what the source measured, and the decision. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "migration/migrate.h"

static void test_fixed_cost(void **state)
{
    (void)state;
    /* Nothing measured, or no bandwidth yet: the first guess. */
    assert_true(migration_fixed_cost_ms(NULL, 1e9) == MIGRATION_MIN_FIXED_COST_MS);
    struct migration_cost c = { .pause_ms = 2, .save_ms = 4, .state_bytes = 1 << 20,
                                .rtt_ms = 0.5 };
    assert_true(migration_fixed_cost_ms(&c, 0) == MIGRATION_MIN_FIXED_COST_MS);
    /* 2 ms pausing, 4 saving, 4 loading (estimated as the save), 1 MiB at 100 MiB/s = 10 ms,
     * two round trips of 0.5 ms. */
    assert_float_equal(migration_fixed_cost_ms(&c, 100.0 * 1048576), 2 + 4 + 4 + 10 + 1, 1e-9);
    /* The state's share follows the bandwidth. */
    assert_float_equal(migration_fixed_cost_ms(&c, 50.0 * 1048576), 2 + 4 + 4 + 20 + 1, 1e-9);
    /* A fast host: never below the floor. */
    c = (struct migration_cost){ .pause_ms = 0.2, .save_ms = 0.3, .state_bytes = 20480 };
    assert_true(migration_fixed_cost_ms(&c, 1e9) == MIGRATION_MIN_FIXED_COST_MS);
}

/* Switch over when both fit; when the fixed cost alone is over the budget, once the pages are
 * as few as the budget less the first guess allows (more passes cannot help); else go on. */
static void test_switch_decision(void **state)
{
    (void)state;
    assert_int_equal(migration_switch_decision(10, 6, 4), MIGRATION_SWITCH);
    assert_int_equal(migration_switch_decision(10, 6, 4.5), MIGRATION_ANOTHER_PASS);
    assert_int_equal(migration_switch_decision(10, 30, 5), MIGRATION_SWITCH_OVER_BUDGET);
    assert_int_equal(migration_switch_decision(10, 30, 5.5), MIGRATION_ANOTHER_PASS);
    assert_int_equal(migration_switch_decision(300, 30, 270), MIGRATION_SWITCH);
    assert_int_equal(migration_switch_decision(300, 30, 280), MIGRATION_ANOTHER_PASS);
}

/* The busy guest of docs/migration.md: a pass of 200 KiB took 100 ms, 90 of them clearing the
 * dirty log. Its rate is its bytes over the 10 ms it sent, and over the last passes, weighted by
 * their bytes: not 2 KiB/ms, which made a 200 KiB switch-over look 100 ms away. */
static void test_rate_leaves_the_fixed_work_out(void **state)
{
    (void)state;
    struct migration_rate r = { 0 };
    assert_true(migration_rate_bps(&r) == 0);
    migration_rate_add(&r, 0, 50, 40); /* sent nothing: measured nothing */
    assert_true(migration_rate_bps(&r) == 0);
    migration_rate_add(&r, 200 * 1024, 100, 90);
    assert_float_equal(migration_rate_bps(&r) / 1024 / 1e3, 20, 1e-9);
    /* The switch-over with 200 KiB left, 6 ms of fixed cost and a 20 ms budget: 10 ms of
     * pages at this rate; at the whole pass's (2 KiB/ms) 100 ms, another pass. */
    double pages_ms = 200 * 1024 * 1e3 / migration_rate_bps(&r);
    assert_float_equal(pages_ms, 10, 1e-9);
    assert_int_equal(migration_switch_decision(20, 6, pages_ms), MIGRATION_SWITCH);
    assert_int_equal(migration_switch_decision(20, 6, 200.0 / 2), MIGRATION_ANOTHER_PASS);
    /* Several passes, weighted by bytes: 8000 KiB in 200 ms of sending and 200 KiB in 10. */
    migration_rate_add(&r, 8000 * 1024, 250, 50);
    assert_float_equal(migration_rate_bps(&r), 8200.0 * 1024 * 1e3 / 210, 1e-6);
    /* Only the last MIGRATION_RATE_PASSES count: two more passes push out the first. */
    migration_rate_add(&r, 4000 * 1024, 100, 0);
    migration_rate_add(&r, 4000 * 1024, 100, 0);
    assert_float_equal(migration_rate_bps(&r), 16000.0 * 1024 * 1e3 / 400, 1e-6);
    /* Fixed work that seems to fill the pass (lanes clearing while others sent): a tenth of
     * the pass is taken to be sending, not none. */
    struct migration_rate z = { 0 };
    migration_rate_add(&z, 1000 * 1024, 100, 120);
    assert_float_equal(migration_rate_bps(&z), 1000.0 * 1024 * 1e3 / 10, 1e-6);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fixed_cost),
        cmocka_unit_test(test_switch_decision),
        cmocka_unit_test(test_rate_leaves_the_fixed_work_out),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
