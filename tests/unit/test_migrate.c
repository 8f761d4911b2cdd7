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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fixed_cost),
        cmocka_unit_test(test_switch_decision),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
