/* bodies.c: the API's request bodies, parsed and checked (bodies.h). */
#include "api/bodies.h"

#include <errno.h>
#include <json-c/json.h>
#include <stdint.h>
#include <string.h>

/* Deeper than any body needs; json-c's own default is 32. */
#define BODY_MAX_DEPTH 4

/* One JSON object, nothing but white space after it. */
static struct json_object *parse_object(const char *buf, size_t len)
{
    if (len > (size_t)INT32_MAX)
        return NULL;
    struct json_tokener *tok = json_tokener_new_ex(BODY_MAX_DEPTH);
    if (!tok)
        return NULL;
    struct json_object *obj = json_tokener_parse_ex(tok, buf, (int)len);
    size_t used = obj ? json_tokener_get_parse_end(tok) : 0;
    json_tokener_free(tok);
    while (used < len && buf[used] && strchr(" \t\r\n", buf[used]))
        used++;
    if (!obj || !json_object_is_type(obj, json_type_object) || used != len) {
        json_object_put(obj);
        return NULL;
    }
    return obj;
}

/* A string without NUL; absent: *out untouched, 0 when optional. */
static int get_string(struct json_object *obj, const char *key, bool required, const char **out)
{
    struct json_object *v;
    if (!json_object_object_get_ex(obj, key, &v))
        return required ? -EINVAL : 0;
    if (!json_object_is_type(v, json_type_string))
        return -EINVAL;
    const char *s = json_object_get_string(v);
    if (strlen(s) != (size_t)json_object_get_string_len(v))
        return -EINVAL;
    *out = s;
    return 0;
}

/* An integer in [min, max]; absent: *out untouched. */
static int get_uint(struct json_object *obj, const char *key, unsigned min, unsigned max,
                    unsigned *out)
{
    struct json_object *v;
    if (!json_object_object_get_ex(obj, key, &v))
        return 0;
    if (!json_object_is_type(v, json_type_int))
        return -EINVAL;
    int64_t n = json_object_get_int64(v);
    if (n < (int64_t)min || n > (int64_t)max)
        return -EINVAL;
    *out = (unsigned)n;
    return 0;
}

static int get_bool(struct json_object *obj, const char *key, bool *out)
{
    struct json_object *v;
    if (!json_object_object_get_ex(obj, key, &v))
        return 0;
    if (!json_object_is_type(v, json_type_boolean))
        return -EINVAL;
    *out = json_object_get_boolean(v);
    return 0;
}

int api_parse_snapshot_body(const char *buf, size_t len, struct api_snapshot_body *out)
{
    memset(out, 0, sizeof(*out));
    struct json_object *root = parse_object(buf, len);
    if (!root || get_string(root, "dir", true, &out->dir) < 0 || out->dir[0] != '/' ||
        get_bool(root, "stop", &out->stop) < 0 || get_bool(root, "freeze", &out->freeze) < 0) {
        json_object_put(root);
        memset(out, 0, sizeof(*out));
        return -EINVAL;
    }
    out->root = root;
    return 0;
}

int api_parse_migrate_body(const char *buf, size_t len, struct api_migrate_body *out)
{
    const char *action = "cancel";
    memset(out, 0, sizeof(*out));
    struct json_object *root = parse_object(buf, len);
    int ret = root ? get_string(root, "uri", true, &out->opts.uri) : -EINVAL;
    if (ret == 0)
        ret = get_uint(root, "downtime_ms", 1, 60000, &out->opts.downtime_ms);
    if (ret == 0)
        ret = get_uint(root, "timeout_s", 1, 86400, &out->opts.timeout_s);
    if (ret == 0)
        ret = get_string(root, "timeout_action", false, &action);
    if (ret == 0 && strcmp(action, "cancel") != 0 && strcmp(action, "switchover") != 0)
        ret = -EINVAL;
    if (ret == 0)
        ret = get_uint(root, "bandwidth_mibps", 1, 1000000, &out->opts.bandwidth_mibps);
    if (ret < 0) {
        json_object_put(root);
        memset(out, 0, sizeof(*out));
        return -EINVAL;
    }
    out->opts.switchover_on_timeout = strcmp(action, "switchover") == 0;
    out->root = root;
    return 0;
}

void api_body_free(struct json_object *root)
{
    json_object_put(root);
}
