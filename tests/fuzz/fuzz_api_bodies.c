/* fuzz_api_bodies.c: the JSON bodies of PUT /vm/snapshot and PUT /vm/migrate (api/bodies.h).
 * The first byte picks the body; what a parse accepts must hold what the usage line promises. */
#include <json-c/json.h>

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

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    const char *body = (const char *)data + 1;
    size_t len = size - 1;
    if (data[0] & 1) {
        struct api_migrate_body m;
        if (api_parse_migrate_body(body, len, &m) == 0) {
            check_migrate(&m.opts);
            api_body_free(m.root);
        } else {
            FUZZ_CHECK(m.root == NULL);
        }
    } else {
        struct api_snapshot_body s;
        if (api_parse_snapshot_body(body, len, &s) == 0) {
            FUZZ_CHECK(s.dir && s.dir[0] == '/');
            api_body_free(s.root);
        } else {
            FUZZ_CHECK(s.root == NULL && s.dir == NULL);
        }
    }
    return 0;
}
