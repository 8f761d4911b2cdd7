/*
 * bodies.h: the JSON bodies of the API's requests, checked apart from the server so that
 * they are unit-tested and fuzzed alone (tests/fuzz/fuzz_api_bodies.c).
 *
 * A body is one JSON object and nothing after it but white space; strings hold no NUL (a path
 * "/a\u0000/b" would otherwise act as "/a"); numbers are integers in their documented range.
 * A parsed body owns its strings until api_body_free().
 */
#ifndef GODWIT_API_BODIES_H
#define GODWIT_API_BODIES_H

#include <stdbool.h>
#include <stddef.h>

#include "godwit/godwit.h"

struct json_object;

/* PUT /vm/snapshot {"dir": "/absolute/path", "stop": false, "freeze": false} */
struct api_snapshot_body {
    struct json_object *root;
    const char *dir;
    bool stop;
    bool freeze; /* the guest's filesystems frozen through its agent for it */
};

/* PUT /vm/migrate {"uri": "tcp:HOST:PORT", "downtime_ms": 1-60000, "timeout_s": 1-86400,
 * "timeout_action": "cancel"|"switchover", "bandwidth_mibps": 1-1000000, "local": bool} */
struct api_migrate_body {
    struct json_object *root;
    struct godwit_migrate_options opts;
};

/* PUT /vm/agent/exec {"argv": ["CMD", "ARG"...], "user": "NAME", "stdin": "TEXT",
 * "timeout_s": 1-300}: only argv is required (1-256 strings of 1-4096 bytes, no NUL); stdin
 * may hold any character, NUL too. */
#define API_EXEC_MAX_ARGS 256
#define API_EXEC_MAX_ARG 4096
#define API_EXEC_TIMEOUT_S 30
#define API_EXEC_MAX_TIMEOUT_S 300
struct api_exec_body {
    struct json_object *root;
    const char *argv[API_EXEC_MAX_ARGS + 1]; /* NULL-terminated */
    const char *user;                        /* NULL: root */
    const char *stdin_data;                  /* NULL: no stdin (it ends at once) */
    size_t stdin_len;
    unsigned timeout_s;
};

/* PUT /vm/agent/kvp {"pool": "host", "key": "KEY", "value": "VALUE"}: pool "host" (the
 * default) or "guest", a key of 1-255 bytes, a value of at most 16384, neither with NUL. */
#define API_KVP_KEY_MAX 255
#define API_KVP_VALUE_MAX 16384
struct api_kvp_body {
    struct json_object *root;
    bool guest_pool;
    const char *key, *value;
};

/* GET and DELETE /vm/agent/kvp?pool=host|guest&key=KEY: percent-encoded; pool "guest" by
 * default (what the guest tells, as godwit kvp), no key: the pool's list. */
struct api_kvp_query {
    bool guest_pool;
    bool has_key;
    char key[API_KVP_KEY_MAX + 1];
};

/* GET and PUT /vm/agent/file?path=/GUEST/PATH&mode=0644: percent-encoded; an absolute path
 * of at most 4096 bytes; mode (PUT only) 1-4 octal digits, 0644 when absent. */
#define API_FILE_PATH_MAX 4096
#define API_FILE_MODE 0644
struct api_file_query {
    char path[API_FILE_PATH_MAX + 1];
    unsigned mode;
};

/* PUT /vm/agent/freeze {"timeout_s": 1-3600}, or no body: 60 s. */
#define API_FREEZE_TIMEOUT_S 60
#define API_FREEZE_MAX_TIMEOUT_S 3600

#define API_SNAPSHOT_BODY_USAGE                                                                   \
    "the body must be {\"dir\": \"/absolute/path\"} with optional \"stop\" and \"freeze\" " \
    "(booleans)"
#define API_MIGRATE_BODY_USAGE                                                                    \
    "the body must be {\"uri\": \"tcp:HOST:PORT\"} with optional \"downtime_ms\" (1-60000), "     \
    "\"timeout_s\" (1-86400), \"timeout_action\" (\"cancel\" or \"switchover\"), "               \
    "\"bandwidth_mibps\" (1-1000000), \"connections\" (1-8, tcp: only) and \"local\" (true: "    \
    "hand the memory over, unix: only)"
#define API_EXEC_BODY_USAGE                                                                       \
    "the body must be {\"argv\": [\"command\", \"argument\"...]} (1-256 strings) with optional "   \
    "\"user\", \"stdin\" (a string) and \"timeout_s\" (1-300, default 30)"
#define API_KVP_BODY_USAGE                                                                        \
    "the body must be {\"key\": \"KEY\", \"value\": \"VALUE\"} (a key of 1-255 bytes, a value of "  \
    "at most 16384) with optional \"pool\" (\"host\", the default, or \"guest\")"
#define API_KVP_QUERY_USAGE                                                                       \
    "the query must be ?pool=host|guest&key=KEY (percent-encoded, a key of 1-255 bytes)"
#define API_FILE_QUERY_USAGE                                                                      \
    "the query must be ?path=/GUEST/PATH (absolute, percent-encoded)"
#define API_FILE_PUT_QUERY_USAGE                                                                  \
    "the query must be ?path=/GUEST/PATH (absolute, percent-encoded) with optional mode=0644 "    \
    "(1-4 octal digits)"
#define API_FREEZE_BODY_USAGE "the body must be empty or {\"timeout_s\": 1-3600}"

/* 0, or -EINVAL (nothing to free) for a body that is not what the usage line says. */
int api_parse_snapshot_body(const char *buf, size_t len, struct api_snapshot_body *out);
int api_parse_migrate_body(const char *buf, size_t len, struct api_migrate_body *out);
int api_parse_exec_body(const char *buf, size_t len, struct api_exec_body *out);
int api_parse_kvp_body(const char *buf, size_t len, struct api_kvp_body *out);
/* query: what follows '?' (NULL: none). want_key: DELETE's key is required. */
int api_parse_kvp_query(const char *query, bool want_key, struct api_kvp_query *out);
/* with_mode: PUT's query, which may carry a mode. */
int api_parse_file_query(const char *query, bool with_mode, struct api_file_query *out);
int api_parse_freeze_body(const char *buf, size_t len, unsigned *timeout_s);

/* Guest bytes as a JSON string's text: valid UTF-8 kept, every other byte U+FFFD. malloc'ed,
 * NUL-terminated, its length in *out_len; NULL when out of memory. */
char *api_utf8_clean(const char *buf, size_t len, size_t *out_len);

void api_body_free(struct json_object *root);

#endif
