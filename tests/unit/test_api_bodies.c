/* test_api_bodies.c: what PUT /vm/snapshot and PUT /vm/migrate accept as bodies, and refuse. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "api/bodies.h"
#include "log.h"

static int snapshot(const char *text, struct api_snapshot_body *b)
{
    return api_parse_snapshot_body(text, strlen(text), b);
}

static int migrate(const char *text, struct api_migrate_body *b)
{
    return api_parse_migrate_body(text, strlen(text), b);
}

static void test_snapshot_body(void **state)
{
    (void)state;
    struct api_snapshot_body b;
    assert_int_equal(snapshot(" {\"dir\": \"/srv/snap\", \"stop\": true}\r\n", &b), 0);
    assert_string_equal(b.dir, "/srv/snap");
    assert_true(b.stop);
    api_body_free(b.root);
    assert_int_equal(snapshot("{\"dir\": \"/srv/snap\"}", &b), 0);
    assert_false(b.stop);
    assert_false(b.freeze);
    api_body_free(b.root);
    assert_int_equal(snapshot("{\"dir\": \"/srv/snap\", \"freeze\": true}", &b), 0);
    assert_true(b.freeze);
    assert_false(b.stop);
    api_body_free(b.root);
    assert_int_equal(snapshot("{\"dir\": \"/s\", \"freeze\": \"yes\"}", &b), -EINVAL);

    assert_int_equal(snapshot("{\"dir\": \"snap\"}", &b), -EINVAL);          /* relative */
    assert_int_equal(snapshot("{\"stop\": true}", &b), -EINVAL);             /* no dir */
    assert_int_equal(snapshot("{\"dir\": \"/s\", \"stop\": 1}", &b), -EINVAL);
    assert_int_equal(snapshot("[\"/s\"]", &b), -EINVAL);
    assert_int_equal(snapshot("{\"dir\": \"/s\"", &b), -EINVAL);             /* cut short */
    assert_int_equal(snapshot("", &b), -EINVAL);
    /* What follows the object would otherwise be ignored: refused. */
    assert_int_equal(snapshot("{\"dir\": \"/s\"} {\"dir\": \"/t\"}", &b), -EINVAL);
    /* A NUL would cut the path short where the server uses it: "/a" instead of "/a\0/../b". */
    assert_int_equal(snapshot("{\"dir\": \"/a\\u0000/../b\"}", &b), -EINVAL);
    assert_null(b.root);
    /* A body that does not end in NUL: the parser stops at its length. */
    const char raw[] = "{\"dir\": \"/x\"}garbage";
    assert_int_equal(api_parse_snapshot_body(raw, 13, &b), 0);
    assert_string_equal(b.dir, "/x");
    api_body_free(b.root);
    /* Nesting deeper than any body needs. */
    assert_int_equal(snapshot("{\"dir\": \"/s\", \"x\": [[[[[[[[1]]]]]]]]}", &b), -EINVAL);
}

static void test_migrate_body(void **state)
{
    (void)state;
    struct api_migrate_body b;
    assert_int_equal(migrate("{\"uri\": \"tcp:10.0.0.2:4444\", \"downtime_ms\": 300, \"timeout_s\": "
                             "60, \"timeout_action\": \"switchover\", \"bandwidth_mibps\": 8}", &b), 0);
    assert_string_equal(b.opts.uri, "tcp:10.0.0.2:4444");
    assert_int_equal(b.opts.downtime_ms, 300);
    assert_int_equal(b.opts.timeout_s, 60);
    assert_true(b.opts.switchover_on_timeout);
    assert_int_equal(b.opts.bandwidth_mibps, 8);
    api_body_free(b.root);
    assert_int_equal(migrate("{\"uri\": \"unix:/run/m.sock\"}", &b), 0);
    assert_int_equal(b.opts.downtime_ms, 0); /* the defaults */
    assert_false(b.opts.switchover_on_timeout);
    api_body_free(b.root);

    assert_int_equal(migrate("{}", &b), -EINVAL);
    assert_int_equal(migrate("{\"uri\": 5}", &b), -EINVAL);
    assert_int_equal(migrate("{\"uri\": \"tcp:h:1\", \"downtime_ms\": 0}", &b), -EINVAL);
    assert_int_equal(migrate("{\"uri\": \"tcp:h:1\", \"downtime_ms\": 60001}", &b), -EINVAL);
    assert_int_equal(migrate("{\"uri\": \"tcp:h:1\", \"downtime_ms\": 30.5}", &b), -EINVAL);
    assert_int_equal(migrate("{\"uri\": \"tcp:h:1\", \"timeout_s\": -1}", &b), -EINVAL);
    assert_int_equal(migrate("{\"uri\": \"tcp:h:1\", \"timeout_s\": 99999999999}", &b), -EINVAL);
    assert_int_equal(migrate("{\"uri\": \"tcp:h:1\", \"timeout_action\": \"wait\"}", &b), -EINVAL);
    assert_int_equal(migrate("{\"uri\": \"tcp:h:1\", \"bandwidth_mibps\": 0}", &b), -EINVAL);
    assert_int_equal(migrate("{\"uri\": \"tcp:h:1\"} x", &b), -EINVAL);
    assert_null(b.root);
}

int main(void)
{
    log_set_level(LOG_LVL_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_snapshot_body),
        cmocka_unit_test(test_migrate_body),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
