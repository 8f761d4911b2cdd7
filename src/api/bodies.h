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
 * "timeout_action": "cancel"|"switchover", "bandwidth_mibps": 1-1000000} */
struct api_migrate_body {
    struct json_object *root;
    struct godwit_migrate_options opts;
};

#define API_SNAPSHOT_BODY_USAGE                                                                   \
    "the body must be {\"dir\": \"/absolute/path\"} with optional \"stop\" and \"freeze\" " \
    "(booleans)"
#define API_MIGRATE_BODY_USAGE                                                                    \
    "the body must be {\"uri\": \"tcp:HOST:PORT\"} with optional \"downtime_ms\" (1-60000), "     \
    "\"timeout_s\" (1-86400), \"timeout_action\" (\"cancel\" or \"switchover\") and "             \
    "\"bandwidth_mibps\" (1-1000000)"

/* 0, or -EINVAL (nothing to free) for a body that is not what the usage line says. */
int api_parse_snapshot_body(const char *buf, size_t len, struct api_snapshot_body *out);
int api_parse_migrate_body(const char *buf, size_t len, struct api_migrate_body *out);

void api_body_free(struct json_object *root);

#endif
