/* test_api_bodies.c: what PUT /vm/snapshot, /vm/migrate and the agent's routes accept as
 * bodies and queries, and refuse; guest output made valid UTF-8 for JSON. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
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
                             "60, \"timeout_action\": \"switchover\", \"bandwidth_mibps\": 8, "
                             "\"connections\": 8}", &b), 0);
    assert_int_equal(b.opts.connections, 8);
    assert_string_equal(b.opts.uri, "tcp:10.0.0.2:4444");
    assert_int_equal(b.opts.downtime_ms, 300);
    assert_int_equal(b.opts.timeout_s, 60);
    assert_true(b.opts.switchover_on_timeout);
    assert_int_equal(b.opts.bandwidth_mibps, 8);
    api_body_free(b.root);
    assert_int_equal(migrate("{\"uri\": \"unix:/run/m.sock\"}", &b), 0);
    assert_int_equal(b.opts.downtime_ms, 0); /* the defaults */
    assert_false(b.opts.switchover_on_timeout);
    assert_false(b.opts.local);
    assert_int_equal(b.opts.connections, 0); /* 1 */
    api_body_free(b.root);
    assert_int_equal(migrate("{\"uri\": \"unix:/run/m.sock\", \"local\": true}", &b), 0);
    assert_true(b.opts.local);
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
    assert_int_equal(migrate("{\"uri\": \"tcp:h:1\", \"connections\": 0}", &b), -EINVAL);
    assert_int_equal(migrate("{\"uri\": \"tcp:h:1\", \"connections\": 9}", &b), -EINVAL);
    assert_int_equal(migrate("{\"uri\": \"tcp:h:1\"} x", &b), -EINVAL);
    assert_int_equal(migrate("{\"uri\": \"unix:/m\", \"local\": 1}", &b), -EINVAL);
    assert_null(b.root);
}

static int exec_body(const char *text, struct api_exec_body *b)
{
    return api_parse_exec_body(text, strlen(text), b);
}

static void test_exec_body(void **state)
{
    (void)state;
    struct api_exec_body b;
    assert_int_equal(exec_body("{\"argv\": [\"sh\", \"-c\", \"cat\"], \"stdin\": \"a\\u0000b\", "
                               "\"user\": \"nobody\", \"timeout_s\": 300}", &b), 0);
    assert_string_equal(b.argv[0], "sh");
    assert_string_equal(b.argv[2], "cat");
    assert_null(b.argv[3]);
    assert_string_equal(b.user, "nobody");
    assert_int_equal(b.stdin_len, 3); /* stdin is bytes: its NUL stays */
    assert_memory_equal(b.stdin_data, "a\0b", 3);
    assert_int_equal(b.timeout_s, 300);
    api_body_free(b.root);
    assert_int_equal(exec_body("{\"argv\": [\"true\"]}", &b), 0);
    assert_null(b.user);
    assert_null(b.stdin_data);
    assert_int_equal(b.timeout_s, API_EXEC_TIMEOUT_S);
    api_body_free(b.root);

    assert_int_equal(exec_body("{\"argv\": []}", &b), -EINVAL);
    assert_int_equal(exec_body("{\"argv\": \"true\"}", &b), -EINVAL);
    assert_int_equal(exec_body("{\"argv\": [\"\"]}", &b), -EINVAL);
    assert_int_equal(exec_body("{\"argv\": [\"a\\u0000b\"]}", &b), -EINVAL);
    assert_int_equal(exec_body("{\"argv\": [\"true\", 1]}", &b), -EINVAL);
    assert_int_equal(exec_body("{\"argv\": [\"true\"], \"stdin\": 5}", &b), -EINVAL);
    assert_int_equal(exec_body("{\"argv\": [\"true\"], \"user\": \"\"}", &b), -EINVAL);
    assert_int_equal(exec_body("{\"argv\": [\"true\"], \"timeout_s\": 0}", &b), -EINVAL);
    assert_int_equal(exec_body("{\"argv\": [\"true\"], \"timeout_s\": 301}", &b), -EINVAL);
    assert_int_equal(exec_body("{\"stdin\": \"x\"}", &b), -EINVAL);
    assert_null(b.root);

    /* 256 arguments fit, 257 do not. */
    static char text[8192];
    for (int n = 256; n <= 257; n++) {
        size_t len = (size_t)snprintf(text, sizeof(text), "{\"argv\": [\"x\"");
        for (int i = 1; i < n; i++)
            len += (size_t)snprintf(text + len, sizeof(text) - len, ", \"x\"");
        snprintf(text + len, sizeof(text) - len, "]}");
        assert_int_equal(exec_body(text, &b), n == 256 ? 0 : -EINVAL);
        if (n == 256) {
            assert_null(b.argv[256]);
            api_body_free(b.root);
        }
    }
}

static int kvp_body(const char *text, struct api_kvp_body *b)
{
    return api_parse_kvp_body(text, strlen(text), b);
}

static void test_kvp_body(void **state)
{
    (void)state;
    struct api_kvp_body b;
    assert_int_equal(kvp_body("{\"key\": \"color\", \"value\": \"blue\"}", &b), 0);
    assert_false(b.guest_pool); /* the host's pool by default: the one the host writes */
    assert_string_equal(b.key, "color");
    assert_string_equal(b.value, "blue");
    api_body_free(b.root);
    assert_int_equal(kvp_body("{\"pool\": \"guest\", \"key\": \"k\", \"value\": \"\"}", &b), 0);
    assert_true(b.guest_pool);
    assert_string_equal(b.value, "");
    api_body_free(b.root);

    assert_int_equal(kvp_body("{\"key\": \"k\"}", &b), -EINVAL);
    assert_int_equal(kvp_body("{\"value\": \"v\"}", &b), -EINVAL);
    assert_int_equal(kvp_body("{\"key\": \"\", \"value\": \"v\"}", &b), -EINVAL);
    assert_int_equal(kvp_body("{\"key\": \"k\", \"value\": \"v\\u0000w\"}", &b), -EINVAL);
    assert_int_equal(kvp_body("{\"key\": \"k\", \"value\": \"v\", \"pool\": \"both\"}", &b), -EINVAL);
    assert_null(b.root);
    /* A key of 255 bytes fits, 256 do not; a value of 16384 fits, 16385 does not. */
    static char text[API_KVP_VALUE_MAX + 512];
    snprintf(text, sizeof(text), "{\"key\": \"%0255d\", \"value\": \"%016384d\"}", 0, 0);
    assert_int_equal(kvp_body(text, &b), 0);
    api_body_free(b.root);
    snprintf(text, sizeof(text), "{\"key\": \"%0256d\", \"value\": \"v\"}", 0);
    assert_int_equal(kvp_body(text, &b), -EINVAL);
    snprintf(text, sizeof(text), "{\"key\": \"k\", \"value\": \"%016385d\"}", 0);
    assert_int_equal(kvp_body(text, &b), -EINVAL);
}

static void test_kvp_query(void **state)
{
    (void)state;
    struct api_kvp_query q;
    assert_int_equal(api_parse_kvp_query(NULL, false, &q), 0);
    assert_true(q.guest_pool); /* what the guest tells, as godwit kvp */
    assert_false(q.has_key);
    assert_int_equal(api_parse_kvp_query("pool=host&key=a%3Ab%2bc", true, &q), 0);
    assert_false(q.guest_pool);
    assert_true(q.has_key);
    assert_string_equal(q.key, "a:b+c");
    assert_int_equal(api_parse_kvp_query("key=k&pool=guest", false, &q), 0);
    assert_true(q.guest_pool);
    assert_string_equal(q.key, "k");

    assert_int_equal(api_parse_kvp_query(NULL, true, &q), -EINVAL);       /* DELETE needs one */
    assert_int_equal(api_parse_kvp_query("pool=host", true, &q), -EINVAL);
    assert_int_equal(api_parse_kvp_query("key=", false, &q), -EINVAL);
    assert_int_equal(api_parse_kvp_query("key=a%00b", false, &q), -EINVAL); /* a NUL */
    assert_int_equal(api_parse_kvp_query("key=a%4", false, &q), -EINVAL);   /* cut short */
    assert_int_equal(api_parse_kvp_query("key=a%zz", false, &q), -EINVAL);
    assert_int_equal(api_parse_kvp_query("key=a&key=b", false, &q), -EINVAL);
    assert_int_equal(api_parse_kvp_query("pool=both", false, &q), -EINVAL);
    assert_int_equal(api_parse_kvp_query("pool=host&pool=guest", false, &q), -EINVAL);
    assert_int_equal(api_parse_kvp_query("other=1", false, &q), -EINVAL);
    assert_int_equal(api_parse_kvp_query("key", false, &q), -EINVAL);
    static char query[600];
    snprintf(query, sizeof(query), "key=%0255d", 0);
    assert_int_equal(api_parse_kvp_query(query, true, &q), 0);
    snprintf(query, sizeof(query), "key=%0256d", 0);
    assert_int_equal(api_parse_kvp_query(query, true, &q), -EINVAL);
}

static void test_file_query(void **state)
{
    (void)state;
    static struct api_file_query q;
    static char query[API_FILE_PATH_MAX + 64];
    assert_int_equal(api_parse_file_query("path=/tmp/a%20b", true, &q), 0);
    assert_string_equal(q.path, "/tmp/a b");
    assert_int_equal(q.mode, API_FILE_MODE);
    assert_int_equal(api_parse_file_query("mode=0755&path=/x", true, &q), 0);
    assert_string_equal(q.path, "/x");
    assert_int_equal(q.mode, 0755);
    assert_int_equal(api_parse_file_query("path=/x&mode=4750", true, &q), 0);
    assert_int_equal(q.mode, 04750);
    assert_int_equal(api_parse_file_query("path=/x&mode=0", true, &q), 0);
    assert_int_equal(q.mode, 0);
    assert_int_equal(api_parse_file_query("path=%2Fetc%2Fhosts", false, &q), 0);
    assert_string_equal(q.path, "/etc/hosts");

    assert_int_equal(api_parse_file_query(NULL, false, &q), -EINVAL);          /* no path */
    assert_int_equal(api_parse_file_query("mode=0644", true, &q), -EINVAL);
    assert_int_equal(api_parse_file_query("path=", false, &q), -EINVAL);
    assert_int_equal(api_parse_file_query("path=relative", false, &q), -EINVAL);
    assert_int_equal(api_parse_file_query("path=/a%00b", false, &q), -EINVAL); /* a NUL */
    assert_int_equal(api_parse_file_query("path=/a&path=/b", false, &q), -EINVAL);
    assert_int_equal(api_parse_file_query("path=/a&mode=0644", false, &q), -EINVAL); /* GET */
    assert_int_equal(api_parse_file_query("path=/a&mode=0648", true, &q), -EINVAL);
    assert_int_equal(api_parse_file_query("path=/a&mode=17777", true, &q), -EINVAL);
    assert_int_equal(api_parse_file_query("path=/a&mode=", true, &q), -EINVAL);
    assert_int_equal(api_parse_file_query("path=/a&mode=rw", true, &q), -EINVAL);
    assert_int_equal(api_parse_file_query("path=/a&mode=-644", true, &q), -EINVAL);
    assert_int_equal(api_parse_file_query("path=/a&mode=644&mode=600", true, &q), -EINVAL);
    assert_int_equal(api_parse_file_query("path=/a&x=1", true, &q), -EINVAL);
    assert_string_equal(q.path, ""); /* a failure leaves nothing behind */
    snprintf(query, sizeof(query), "path=/%04095d", 0);
    assert_int_equal(api_parse_file_query(query, false, &q), 0);
    snprintf(query, sizeof(query), "path=/%04096d", 0);
    assert_int_equal(api_parse_file_query(query, false, &q), -EINVAL);
}

static void test_freeze_body(void **state)
{
    (void)state;
    unsigned t;
    assert_int_equal(api_parse_freeze_body("", 0, &t), 0);
    assert_int_equal(t, API_FREEZE_TIMEOUT_S);
    assert_int_equal(api_parse_freeze_body(" \r\n", 3, &t), 0);
    assert_int_equal(api_parse_freeze_body("{}", 2, &t), 0);
    assert_int_equal(t, API_FREEZE_TIMEOUT_S);
    assert_int_equal(api_parse_freeze_body("{\"timeout_s\": 3600}", 19, &t), 0);
    assert_int_equal(t, 3600);
    assert_int_equal(api_parse_freeze_body("{\"timeout_s\": 3601}", 19, &t), -EINVAL);
    assert_int_equal(api_parse_freeze_body("{\"timeout_s\": 0}", 16, &t), -EINVAL);
    assert_int_equal(api_parse_freeze_body("{\"timeout_s\": \"5\"}", 18, &t), -EINVAL);
    assert_int_equal(api_parse_freeze_body("5", 1, &t), -EINVAL);
}

static void clean(const char *in, size_t len, const char *want)
{
    size_t n;
    char *out = api_utf8_clean(in, len, &n);
    assert_non_null(out);
    assert_int_equal(n, strlen(want));
    assert_string_equal(out, want);
    free(out);
}

static void test_utf8_clean(void **state)
{
    (void)state;
    clean("plain\n", 6, "plain\n");
    clean("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80", 14, "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80");
    clean("a\xff" "b", 3, "a\xef\xbf\xbd" "b");                  /* never UTF-8 */
    clean("\xc3", 1, "\xef\xbf\xbd");                            /* cut short */
    clean("\xc0\xaf", 2, "\xef\xbf\xbd\xef\xbf\xbd");            /* overlong '/' */
    clean("\xed\xa0\x80", 3, "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"); /* a surrogate */
    clean("\xf4\x90\x80\x80", 4,
          "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd");   /* past U+10FFFF */
    size_t n;
    char *out = api_utf8_clean("a\0b", 3, &n);                   /* NUL is valid UTF-8 */
    assert_int_equal(n, 3);
    assert_memory_equal(out, "a\0b", 3);
    free(out);
}

int main(void)
{
    log_set_level(LOG_LVL_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_snapshot_body),
        cmocka_unit_test(test_migrate_body),
        cmocka_unit_test(test_exec_body),
        cmocka_unit_test(test_kvp_body),
        cmocka_unit_test(test_kvp_query),
        cmocka_unit_test(test_file_query),
        cmocka_unit_test(test_freeze_body),
        cmocka_unit_test(test_utf8_clean),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
