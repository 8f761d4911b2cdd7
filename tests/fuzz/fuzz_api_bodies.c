/* fuzz_api_bodies.c: the API's request bodies and queries (api/bodies.h), and the cleaning
 * of guest output for JSON. The first byte picks which; what a parse accepts must hold what
 * the usage line promises. */
#include <json-c/json.h>
#include <stdlib.h>
#include <string.h>

#include "api/bodies.h"
#include "fuzz_common.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fuzz_quiet();
    return 0;
}

static void check_migrate(const struct godwit_migrate_options *o)
{
    FUZZ_CHECK(o->uri);
    FUZZ_CHECK(o->downtime_ms <= 60000 && o->timeout_s <= 86400 && o->bandwidth_mibps <= 1000000);
}

static void check_exec(const char *body, size_t len)
{
    struct api_exec_body e;
    if (api_parse_exec_body(body, len, &e) < 0) {
        FUZZ_CHECK(e.root == NULL && e.argv[0] == NULL);
        return;
    }
    size_t n = 0;
    for (; e.argv[n]; n++)
        FUZZ_CHECK(n < API_EXEC_MAX_ARGS && e.argv[n][0] && strlen(e.argv[n]) <= API_EXEC_MAX_ARG);
    FUZZ_CHECK(n >= 1);
    FUZZ_CHECK(e.timeout_s >= 1 && e.timeout_s <= API_EXEC_MAX_TIMEOUT_S);
    FUZZ_CHECK(!e.user || e.user[0]);
    FUZZ_CHECK(e.stdin_data || e.stdin_len == 0);
    api_body_free(e.root);
}

static void check_kvp(const char *body, size_t len)
{
    struct api_kvp_body k;
    if (api_parse_kvp_body(body, len, &k) < 0) {
        FUZZ_CHECK(k.root == NULL && k.key == NULL);
        return;
    }
    FUZZ_CHECK(k.key[0] && strlen(k.key) <= API_KVP_KEY_MAX && strlen(k.value) <= API_KVP_VALUE_MAX);
    api_body_free(k.root);
}

/* The query is a C string in the server (the parser's buffer ends it): one is made here. */
static void check_query(const char *body, size_t len, bool want_key)
{
    char *q = malloc(len + 1);
    struct api_kvp_query k;
    if (!q)
        return;
    memcpy(q, body, len);
    q[len] = '\0';
    if (api_parse_kvp_query(q, want_key, &k) == 0) {
        FUZZ_CHECK(!want_key || k.has_key);
        FUZZ_CHECK(!k.has_key || (k.key[0] && strlen(k.key) <= API_KVP_KEY_MAX));
    }
    free(q);
}

/* GET and PUT /vm/agent/file's query (with_mode: PUT's), a C string as the server has it. */
static void check_file_query(const char *body, size_t len, bool with_mode)
{
    char *q = malloc(len + 1);
    struct api_file_query *f = malloc(sizeof(*f));
    if (q && f) {
        memcpy(q, body, len);
        q[len] = '\0';
        if (api_parse_file_query(q, with_mode, f) == 0) {
            FUZZ_CHECK(f->path[0] == '/' && strlen(f->path) <= API_FILE_PATH_MAX);
            FUZZ_CHECK(f->mode <= 07777 && (with_mode || f->mode == API_FILE_MODE));
        } else {
            FUZZ_CHECK(f->path[0] == '\0');
        }
    }
    free(f);
    free(q);
}

static void check_utf8(const char *body, size_t len)
{
    size_t n;
    char *out = api_utf8_clean(body, len, &n);
    if (!out)
        return;
    FUZZ_CHECK(n <= len * 3 && out[n] == '\0');
    /* Cleaning clean text changes nothing. */
    size_t n2;
    char *again = api_utf8_clean(out, n, &n2);
    FUZZ_CHECK(again && n2 == n && memcmp(again, out, n) == 0);
    free(again);
    free(out);
}

/* The first byte picks what the rest is: 0 snapshot, 1 migrate (as the first seeds have it),
 * 2 exec, 3 kvp, 4 and 5 a kvp query (5: DELETE's, with a key), 6 freeze, 7 guest output; its
 * low four bits 8 and 9: a file's query (9: PUT's, with a mode); 10-15 as their low three. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    const char *body = (const char *)data + 1;
    size_t len = size - 1;
    unsigned t;
    if ((data[0] & 15) == 8 || (data[0] & 15) == 9) {
        check_file_query(body, len, data[0] & 1);
        return 0;
    }
    switch (data[0] & 7) {
    case 0: {
        struct api_snapshot_body s;
        if (api_parse_snapshot_body(body, len, &s) == 0) {
            FUZZ_CHECK(s.dir && s.dir[0] == '/');
            api_body_free(s.root);
        } else {
            FUZZ_CHECK(s.root == NULL && s.dir == NULL);
        }
        break;
    }
    case 1: {
        struct api_migrate_body m;
        if (api_parse_migrate_body(body, len, &m) == 0) {
            check_migrate(&m.opts);
            api_body_free(m.root);
        } else {
            FUZZ_CHECK(m.root == NULL);
        }
        break;
    }
    case 2: check_exec(body, len); break;
    case 3: check_kvp(body, len); break;
    case 4:
    case 5: check_query(body, len, data[0] & 1); break;
    case 6:
        if (api_parse_freeze_body(body, len, &t) == 0)
            FUZZ_CHECK(t >= 1 && t <= API_FREEZE_MAX_TIMEOUT_S);
        break;
    default: check_utf8(body, len); break;
    }
    return 0;
}
