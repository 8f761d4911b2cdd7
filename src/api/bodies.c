/* bodies.c: the API's request bodies, parsed and checked (bodies.h). */
#include "api/bodies.h"

#include <errno.h>
#include <json-c/json.h>
#include <stdint.h>
#include <stdlib.h>
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

/* A parse's end: on failure the body is freed and *out zeroed (out->root is *root). */
static int body_end(int ret, struct json_object **root, void *out, size_t size)
{
    if (ret == 0)
        return 0;
    json_object_put(*root);
    memset(out, 0, size);
    return -EINVAL;
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
    if (ret == 0)
        ret = get_bool(root, "local", &out->opts.local);
    if (ret == 0)
        ret = get_uint(root, "connections", 1, GODWIT_MAX_MIGRATION_CONNECTIONS,
                       &out->opts.connections);
    if (ret < 0) {
        json_object_put(root);
        memset(out, 0, sizeof(*out));
        return -EINVAL;
    }
    out->opts.switchover_on_timeout = strcmp(action, "switchover") == 0;
    out->root = root;
    return 0;
}

/* A string of 1 to max bytes without NUL. */
static int get_bounded(struct json_object *obj, const char *key, bool required, size_t max,
                       const char **out)
{
    const char *v = NULL;
    int ret = get_string(obj, key, required, &v);
    if (ret == 0 && v && (v[0] == '\0' || strlen(v) > max))
        ret = -EINVAL;
    if (ret == 0 && v)
        *out = v;
    return ret;
}

/* argv: an array of 1-API_EXEC_MAX_ARGS strings, each 1-API_EXEC_MAX_ARG bytes, no NUL. */
static int get_argv(struct json_object *obj, const char **argv)
{
    struct json_object *arr;
    if (!json_object_object_get_ex(obj, "argv", &arr) || !json_object_is_type(arr, json_type_array))
        return -EINVAL;
    size_t n = json_object_array_length(arr);
    if (n == 0 || n > API_EXEC_MAX_ARGS)
        return -EINVAL;
    for (size_t i = 0; i < n; i++) {
        struct json_object *v = json_object_array_get_idx(arr, i);
        if (!json_object_is_type(v, json_type_string))
            return -EINVAL;
        const char *s = json_object_get_string(v);
        size_t len = (size_t)json_object_get_string_len(v);
        if (len == 0 || len > API_EXEC_MAX_ARG || strlen(s) != len)
            return -EINVAL;
        argv[i] = s;
    }
    argv[n] = NULL;
    return 0;
}

int api_parse_exec_body(const char *buf, size_t len, struct api_exec_body *out)
{
    struct json_object *v;
    memset(out, 0, sizeof(*out));
    out->timeout_s = API_EXEC_TIMEOUT_S;
    struct json_object *root = parse_object(buf, len);
    int ret = root ? get_argv(root, out->argv) : -EINVAL;
    if (ret == 0)
        ret = get_bounded(root, "user", false, API_EXEC_MAX_ARG, &out->user);
    if (ret == 0)
        ret = get_uint(root, "timeout_s", 1, API_EXEC_MAX_TIMEOUT_S, &out->timeout_s);
    /* stdin is bytes: NUL is fine there, the length says where it ends. */
    if (ret == 0 && json_object_object_get_ex(root, "stdin", &v)) {
        if (json_object_is_type(v, json_type_string)) {
            out->stdin_data = json_object_get_string(v);
            out->stdin_len = (size_t)json_object_get_string_len(v);
        } else {
            ret = -EINVAL;
        }
    }
    out->root = root;
    return body_end(ret, &out->root, out, sizeof(*out));
}

/* "host" or "guest"; absent: *guest untouched. */
static int get_pool(struct json_object *obj, bool *guest)
{
    const char *pool = NULL;
    int ret = get_string(obj, "pool", false, &pool);
    if (ret < 0 || !pool)
        return ret;
    if (strcmp(pool, "host") != 0 && strcmp(pool, "guest") != 0)
        return -EINVAL;
    *guest = strcmp(pool, "guest") == 0;
    return 0;
}

int api_parse_kvp_body(const char *buf, size_t len, struct api_kvp_body *out)
{
    memset(out, 0, sizeof(*out));
    struct json_object *root = parse_object(buf, len);
    int ret = root ? get_bounded(root, "key", true, API_KVP_KEY_MAX, &out->key) : -EINVAL;
    if (ret == 0)
        ret = get_string(root, "value", true, &out->value);
    if (ret == 0 && strlen(out->value) > API_KVP_VALUE_MAX)
        ret = -EINVAL;
    if (ret == 0)
        ret = get_pool(root, &out->guest_pool);
    out->root = root;
    return body_end(ret, &out->root, out, sizeof(*out));
}

static int hex_digit(char c)
{
    return c >= '0' && c <= '9' ? c - '0'
           : c >= 'a' && c <= 'f' ? c - 'a' + 10
           : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

/* Percent-decodes [s, end) into buf (max bytes and a NUL); no NUL may come out of it. */
static int decode(const char *s, const char *end, char *buf, size_t max)
{
    size_t n = 0;
    for (; s < end; s++) {
        int c = (unsigned char)*s;
        if (c == '%') {
            int hi = end - s > 2 ? hex_digit(s[1]) : -1, lo = hi >= 0 ? hex_digit(s[2]) : -1;
            if (lo < 0)
                return -EINVAL;
            c = hi * 16 + lo;
            s += 2;
        }
        if (c == 0 || n == max)
            return -EINVAL;
        buf[n++] = (char)c;
    }
    buf[n] = '\0';
    return (int)n;
}

/* One name=value of the query into out: 0 or -EINVAL (unknown, repeated or invalid). */
static int query_param(const char *p, const char *end, struct api_kvp_query *out, bool *seen_pool)
{
    char pool[8];
    const char *eq = memchr(p, '=', (size_t)(end - p));
    size_t name_len = eq ? (size_t)(eq - p) : 0;
    if (name_len == 3 && memcmp(p, "key", 3) == 0 && !out->has_key) {
        out->has_key = true;
        return decode(eq + 1, end, out->key, API_KVP_KEY_MAX) > 0 ? 0 : -EINVAL;
    }
    if (name_len == 4 && memcmp(p, "pool", 4) == 0 && !*seen_pool &&
        decode(eq + 1, end, pool, sizeof(pool) - 1) >= 0 &&
        (strcmp(pool, "host") == 0 || strcmp(pool, "guest") == 0)) {
        *seen_pool = true;
        out->guest_pool = strcmp(pool, "guest") == 0;
        return 0;
    }
    return -EINVAL;
}

/* Each name=value of a query (NULL: none) to fn, with [p, end) and opaque, until one fails. */
static int each_param(const char *query, int (*fn)(const char *p, const char *end, void *opaque),
                      void *opaque)
{
    int ret = 0;
    for (const char *p = query; ret == 0 && p && *p;) {
        const char *amp = strchr(p, '&'), *end = amp ? amp : p + strlen(p);
        ret = fn(p, end, opaque);
        p = amp ? amp + 1 : end;
    }
    return ret;
}

struct kvp_query_parse {
    struct api_kvp_query *out;
    bool seen_pool;
};

static int kvp_param(const char *p, const char *end, void *opaque)
{
    struct kvp_query_parse *q = opaque;
    return query_param(p, end, q->out, &q->seen_pool);
}

int api_parse_kvp_query(const char *query, bool want_key, struct api_kvp_query *out)
{
    struct kvp_query_parse q = { .out = out };
    memset(out, 0, sizeof(*out));
    out->guest_pool = true;
    int ret = each_param(query, kvp_param, &q);
    if (ret < 0 || (want_key && !out->has_key)) {
        memset(out, 0, sizeof(*out));
        return -EINVAL;
    }
    return 0;
}

/* 1-4 octal digits: a file's mode (07777 at most), as chmod takes it. */
static int parse_mode(const char *s, const char *end, unsigned *mode)
{
    unsigned m = 0;
    if (end - s < 1 || end - s > 4)
        return -EINVAL;
    for (; s < end; s++) {
        if (*s < '0' || *s > '7')
            return -EINVAL;
        m = m * 8 + (unsigned)(*s - '0');
    }
    *mode = m;
    return 0;
}

struct file_query_parse {
    struct api_file_query *out;
    bool with_mode, seen_mode;
};

/* One name=value of a file's query: 0 or -EINVAL (unknown, repeated or invalid). */
static int file_param(const char *p, const char *end, void *opaque)
{
    struct file_query_parse *q = opaque;
    const char *eq = memchr(p, '=', (size_t)(end - p));
    size_t name_len = eq ? (size_t)(eq - p) : 0;
    if (name_len == 4 && memcmp(p, "path", 4) == 0 && !q->out->path[0])
        return decode(eq + 1, end, q->out->path, API_FILE_PATH_MAX) > 0 && q->out->path[0] == '/'
               ? 0 : -EINVAL;
    if (name_len == 4 && memcmp(p, "mode", 4) == 0 && q->with_mode && !q->seen_mode) {
        q->seen_mode = true;
        return parse_mode(eq + 1, end, &q->out->mode);
    }
    return -EINVAL;
}

int api_parse_file_query(const char *query, bool with_mode, struct api_file_query *out)
{
    struct file_query_parse q = { .out = out, .with_mode = with_mode };
    memset(out, 0, sizeof(*out));
    out->mode = API_FILE_MODE;
    int ret = each_param(query, file_param, &q);
    if (ret < 0 || !out->path[0]) {
        memset(out, 0, sizeof(*out));
        return -EINVAL;
    }
    return 0;
}

int api_parse_freeze_body(const char *buf, size_t len, unsigned *timeout_s)
{
    size_t i = 0;
    *timeout_s = API_FREEZE_TIMEOUT_S;
    while (i < len && buf[i] && strchr(" \t\r\n", buf[i]))
        i++;
    if (i == len)
        return 0; /* no body: the default */
    struct json_object *root = parse_object(buf, len);
    int ret = root ? get_uint(root, "timeout_s", 1, API_FREEZE_MAX_TIMEOUT_S, timeout_s) : -EINVAL;
    json_object_put(root);
    if (ret < 0)
        *timeout_s = API_FREEZE_TIMEOUT_S;
    return ret < 0 ? -EINVAL : 0;
}

/* The length of the valid UTF-8 sequence at p (at most `left` bytes), or 0. */
static size_t utf8_seq(const unsigned char *p, size_t left)
{
    unsigned c = p[0];
    size_t n = c < 0x80 ? 1 : c >= 0xc2 && c <= 0xdf ? 2 : c >= 0xe0 && c <= 0xef ? 3
             : c >= 0xf0 && c <= 0xf4 ? 4 : 0;
    if (n == 0 || n > left)
        return 0;
    for (size_t i = 1; i < n; i++)
        if ((p[i] & 0xc0) != 0x80)
            return 0;
    /* Overlong forms, UTF-16 surrogates and beyond U+10FFFF. */
    if ((c == 0xe0 && p[1] < 0xa0) || (c == 0xed && p[1] > 0x9f) || (c == 0xf0 && p[1] < 0x90) ||
        (c == 0xf4 && p[1] > 0x8f))
        return 0;
    return n;
}

char *api_utf8_clean(const char *buf, size_t len, size_t *out_len)
{
    static const char replacement[] = "\xef\xbf\xbd"; /* U+FFFD */
    const unsigned char *p = (const unsigned char *)buf;
    /* Each byte becomes at most three. */
    char *out = len < SIZE_MAX / 3 ? malloc(len * 3 + 1) : NULL;
    size_t o = 0;
    if (!out)
        return NULL;
    for (size_t i = 0; i < len;) {
        size_t n = utf8_seq(p + i, len - i);
        if (n) {
            memcpy(out + o, p + i, n);
            o += n;
            i += n;
        } else {
            memcpy(out + o, replacement, 3);
            o += 3;
            i++;
        }
    }
    out[o] = '\0';
    *out_len = o;
    return out;
}

void api_body_free(struct json_object *root)
{
    json_object_put(root);
}
