/* config.c: a VM's configuration as a JSON file (`godwit run --config FILE`), read and written. */
#define _GNU_SOURCE
#include "lib/config.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "api/runtime.h"
#include "lib/defaults.h"
#include "lib/device_options.h"
#include "log.h"
#include "sandbox/seccomp.h"
#include "vm/memory.h"

/* What one parse builds; copied to the caller's structs only when the whole object is valid. */
struct config_parse {
    const char *source; /* the file name for messages, or NULL */
    struct config_error *err;
    struct vm_config cfg;
    struct config_extra extra;
    struct config_strings owned;
    char where[32]; /* inside a list or object: `"disks"[1]: `, put before each message */
};

struct config_key {
    const char *name;
    int (*apply)(struct config_parse *p, const char *key, struct json_object *value);
};

void config_defaults(struct vm_config *cfg, struct config_extra *extra)
{
    *cfg = (struct vm_config){ .memory_mib = DEFAULT_MEMORY_MIB, .nr_cpus = 1,
                               .cmdline = DEFAULT_CMDLINE, .console_out_fd = STDOUT_FILENO,
                               .ram_dir = -1 };
    *extra = (struct config_extra){ 0 };
}

void config_strings_free(struct config_strings *owned)
{
    free(owned->kernel);
    free(owned->initrd);
    free(owned->cmdline);
    free(owned->name);
    free(owned->api_socket);
    free(owned->disks);
    free(owned->nets);
    for (unsigned i = 0; i < owned->nr_strings; i++)
        free(owned->strings[i]);
    free(owned->strings);
    *owned = (struct config_strings){ 0 };
}

/* Records "config: [SOURCE: ]MESSAGE" where the caller wants it. */
__attribute__((format(printf, 3, 4)))
static int config_fail(const char *source, struct config_error *err, const char *fmt, ...)
{
    struct config_error local;
    struct config_error *out = err ? err : &local;
    size_t size = sizeof(out->message);
    va_list ap;

    int n = snprintf(out->message, size, "config: %s%s", source ? source : "", source ? ": " : "");
    size_t used = n < 0 ? 0 : (size_t)n < size ? (size_t)n : size - 1;
    va_start(ap, fmt);
    vsnprintf(out->message + used, size - used, fmt, ap);
    va_end(ap);
    if (!err)
        log_error("%s", out->message);
    return -EINVAL;
}

/* config_fail() for a key of the object being parsed (nested ones say where they are). */
__attribute__((format(printf, 2, 3)))
static int parse_fail(struct config_parse *p, const char *fmt, ...)
{
    char message[CONFIG_ERROR_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(message, sizeof(message), fmt, ap);
    va_end(ap);
    return config_fail(p->source, p->err, "%s%s", p->where, message);
}

static uint64_t host_memory_mib(void)
{
    long pages = sysconf(_SC_PHYS_PAGES), page_size = sysconf(_SC_PAGE_SIZE);
    if (pages <= 0 || page_size <= 0)
        return UINT64_MAX >> 20;
    return ((uint64_t)pages * (uint64_t)page_size) >> 20;
}

/* A string value's text; empty strings are refused unless allow_empty. */
static int string_value(struct config_parse *p, const char *key, struct json_object *value,
                        bool allow_empty, const char **s, size_t *len)
{
    if (!json_object_is_type(value, json_type_string))
        return parse_fail(p, "\"%s\" must be a string", key);
    *s = json_object_get_string(value);
    *len = (size_t)json_object_get_string_len(value);
    /* "\u0000" is valid JSON but would silently cut a path or command line short. */
    if (strlen(*s) != *len)
        return parse_fail(p, "\"%s\" must not contain a NUL character", key);
    if (*len == 0 && !allow_empty)
        return parse_fail(p, "\"%s\" must not be empty", key);
    return 0;
}

/* Copies a string value into *copy; empty strings are refused unless allow_empty. */
static int take_string(struct config_parse *p, const char *key, struct json_object *value,
                       bool allow_empty, char **copy)
{
    /* Set by string_value() whenever it returns 0; initialised for -O3, which cannot see that. */
    const char *s = NULL;
    size_t len = 0;
    int ret = string_value(p, key, value, allow_empty, &s, &len);
    if (ret < 0)
        return ret;
    free(*copy); /* a repeated key: json-c keeps the last value, and so do we */
    *copy = strdup(s);
    return *copy ? 0 : -ENOMEM;
}

/* A device's string (not empty, at most max bytes unless max is 0), kept in owned->strings. */
static int take_device_string(struct config_parse *p, const char *key, struct json_object *value,
                              size_t max, const char **out)
{
    /* Set by string_value() whenever it returns 0; initialised for -O3, which cannot see that. */
    const char *s = NULL;
    size_t len = 0;
    int ret = string_value(p, key, value, false, &s, &len);
    if (ret < 0)
        return ret;
    if (max && len > max)
        return parse_fail(p, "\"%s\" is too long (at most %zu bytes)", key, max);
    *out = devopt_keep(&p->owned, s, len);
    return *out ? 0 : -ENOMEM;
}

static int take_integer(struct config_parse *p, const char *key, struct json_object *value,
                        uint64_t min, uint64_t max, uint64_t *out)
{
    if (!json_object_is_type(value, json_type_int))
        return parse_fail(p, "\"%s\" must be an integer", key);
    /* json-c saturates literals beyond 64 bits to these two values. */
    int64_t v = json_object_get_int64(value);
    if (v == INT64_MAX || v == INT64_MIN)
        return parse_fail(p, "\"%s\" is out of range, must be %" PRIu64 " to %" PRIu64, key, min,
                          max);
    if (v < 0 || (uint64_t)v < min || (uint64_t)v > max)
        return parse_fail(p, "\"%s\" is %" PRId64 ", must be %" PRIu64 " to %" PRIu64, key, v,
                          min, max);
    *out = (uint64_t)v;
    return 0;
}

static int take_bool(struct config_parse *p, const char *key, struct json_object *value,
                     bool *out)
{
    if (!json_object_is_type(value, json_type_boolean))
        return parse_fail(p, "\"%s\" must be true or false", key);
    *out = json_object_get_boolean(value);
    return 0;
}

static int apply_kernel(struct config_parse *p, const char *key, struct json_object *value)
{
    int ret = take_string(p, key, value, false, &p->owned.kernel);
    p->cfg.kernel_path = p->owned.kernel;
    return ret;
}

static int apply_initrd(struct config_parse *p, const char *key, struct json_object *value)
{
    int ret = take_string(p, key, value, false, &p->owned.initrd);
    p->cfg.initrd_path = p->owned.initrd;
    return ret;
}

static int apply_cmdline(struct config_parse *p, const char *key, struct json_object *value)
{
    int ret = take_string(p, key, value, true, &p->owned.cmdline);
    if (ret == 0)
        p->cfg.cmdline = p->owned.cmdline;
    return ret;
}

static int apply_memory(struct config_parse *p, const char *key, struct json_object *value)
{
    return take_integer(p, key, value, GM_MIN_SIZE >> 20, host_memory_mib(), &p->cfg.memory_mib);
}

static int apply_cpus(struct config_parse *p, const char *key, struct json_object *value)
{
    uint64_t cpus = p->cfg.nr_cpus;
    int ret = take_integer(p, key, value, 1, VM_MAX_VCPUS, &cpus);
    p->cfg.nr_cpus = (unsigned)cpus;
    return ret;
}

static int apply_hugepages(struct config_parse *p, const char *key, struct json_object *value)
{
    return take_bool(p, key, value, &p->cfg.hugepages);
}

static int apply_no_reboot(struct config_parse *p, const char *key, struct json_object *value)
{
    return take_bool(p, key, value, &p->cfg.no_reboot);
}

static int apply_name(struct config_parse *p, const char *key, struct json_object *value)
{
    int ret = take_string(p, key, value, false, &p->owned.name);
    p->extra.name = p->owned.name;
    if (ret == 0 && !runtime_name_valid(p->owned.name))
        return parse_fail(p, "\"%s\" must be 1 to %d characters of A-Z a-z 0-9 . _ -, not "
                             "starting with '.' or '-'", key, RUNTIME_NAME_MAX);
    return ret;
}

static int apply_api_socket(struct config_parse *p, const char *key, struct json_object *value)
{
    int ret = take_string(p, key, value, false, &p->owned.api_socket);
    p->extra.api_socket = p->owned.api_socket;
    if (ret == 0 && strlen(p->owned.api_socket) >= RUNTIME_PATH_MAX)
        return parse_fail(p, "\"%s\" is too long (at most %d bytes)", key, RUNTIME_PATH_MAX - 1);
    return ret;
}

static int fail_unknown_key(struct config_parse *p, const char *key);

/* Whether value is the string s (all of it: "none\u0000x" is not "none"). */
static bool string_is(struct json_object *value, const char *s)
{
    return json_object_is_type(value, json_type_string) &&
           (size_t)json_object_get_string_len(value) == strlen(s) &&
           strcmp(json_object_get_string(value), s) == 0;
}

static int take_queues(struct config_parse *p, const char *key, struct json_object *value,
                       unsigned *out)
{
    uint64_t n;
    int ret = take_integer(p, key, value, 1, DEVICE_MAX_QUEUES, &n);
    if (ret == 0)
        *out = (unsigned)n;
    return ret;
}

static int disk_key(struct config_parse *p, const char *key, struct json_object *value,
                    struct godwit_disk *disk)
{
    if (strcmp(key, "path") == 0)
        return take_device_string(p, key, value, 0, &disk->path);
    if (strcmp(key, "readonly") == 0)
        return take_bool(p, key, value, &disk->readonly);
    if (strcmp(key, "serial") == 0)
        return take_device_string(p, key, value, DEVICE_SERIAL_MAX, &disk->serial);
    if (strcmp(key, "queues") == 0)
        return take_queues(p, key, value, &disk->queues);
    if (strcmp(key, "cache") == 0) {
        if (!string_is(value, "none") && !string_is(value, "writeback"))
            return parse_fail(p, "\"%s\" must be \"none\" or \"writeback\"", key);
        disk->cache_none = string_is(value, "none");
        return 0;
    }
    return fail_unknown_key(p, key);
}

static int net_key(struct config_parse *p, const char *key, struct json_object *value,
                   struct godwit_net *net)
{
    if (strcmp(key, "tap") == 0)
        return take_device_string(p, key, value, DEVICE_TAP_NAME_MAX, &net->tap);
    if (strcmp(key, "queues") == 0)
        return take_queues(p, key, value, &net->queues);
    if (strcmp(key, "mac") == 0) {
        int ret = take_device_string(p, key, value, 0, &net->mac);
        if (ret == 0 && !devopt_parse_mac(net->mac, NULL))
            return parse_fail(p, "\"%s\" must be a unicast address like 52:54:00:12:34:56",
                              key);
        return ret;
    }
    return fail_unknown_key(p, key);
}

/* "disks" and "net": arrays of objects, each entry one device, in guest order. */
static int apply_device_list(struct config_parse *p, const char *key, struct json_object *value,
                             size_t max, bool disks)
{
    if (!json_object_is_type(value, json_type_array))
        return parse_fail(p, "\"%s\" must be an array of objects", key);
    size_t n = json_object_array_length(value);
    if (n > max)
        return parse_fail(p, "\"%s\" has %zu entries, at most %zu", key, n, max);
    if (disks)
        p->cfg.nr_disks = 0; /* a repeated key: the last list counts */
    else
        p->cfg.nr_nets = 0;
    for (size_t i = 0; i < n; i++) {
        struct json_object *entry = json_object_array_get_idx(value, i);
        if (!json_object_is_type(entry, json_type_object))
            return parse_fail(p, "\"%s\"[%zu] must be an object", key, i);
        struct godwit_disk disk = { 0 };
        struct godwit_net net = { 0 };
        int ret = 0;
        snprintf(p->where, sizeof(p->where), "\"%s\"[%zu]: ", key, i);
        json_object_object_foreach(entry, k, v)
        {
            ret = disks ? disk_key(p, k, v, &disk) : net_key(p, k, v, &net);
            if (ret < 0)
                return ret;
        }
        if (disks && !disk.path)
            return parse_fail(p, "\"path\" is required");
        if (!disks && !net.tap)
            return parse_fail(p, "\"tap\" is required");
        p->where[0] = '\0';
        ret = disks ? devopt_add_disk(&p->cfg, &p->owned, &disk)
                    : devopt_add_net(&p->cfg, &p->owned, &net);
        if (ret < 0)
            return ret;
    }
    return 0;
}

static int apply_disks(struct config_parse *p, const char *key, struct json_object *value)
{
    return apply_device_list(p, key, value, CONFIG_MAX_DISKS, true);
}

static int apply_net(struct config_parse *p, const char *key, struct json_object *value)
{
    return apply_device_list(p, key, value, CONFIG_MAX_NETS, false);
}

/* The "mode" values of "console", in enum godwit_virtio_console's order. */
static const char *const console_modes[] = {
    [GODWIT_VIRTIO_CONSOLE_NONE] = "serial",
    [GODWIT_VIRTIO_CONSOLE_TERMINAL] = "virtio",
    [GODWIT_VIRTIO_CONSOLE_SOCKET] = "socket",
    [GODWIT_VIRTIO_CONSOLE_FILE] = "file",
};

#define NR_CONSOLE_MODES (sizeof(console_modes) / sizeof(console_modes[0]))

/* "console": {"mode": "serial" | "virtio" | "socket" | "file", "path": PATH}. */
static int apply_console(struct config_parse *p, const char *key, struct json_object *value)
{
    if (!json_object_is_type(value, json_type_object))
        return parse_fail(p, "\"%s\" must be an object", key);
    struct json_object *mode_value = NULL, *path_value = NULL;
    snprintf(p->where, sizeof(p->where), "\"%s\": ", key);
    json_object_object_foreach(value, k, v)
    {
        if (strcmp(k, "mode") == 0)
            mode_value = v;
        else if (strcmp(k, "path") == 0)
            path_value = v;
        else
            return fail_unknown_key(p, k);
    }
    if (!mode_value)
        return parse_fail(p, "\"mode\" is required");
    size_t mode = 0;
    while (mode < NR_CONSOLE_MODES && !string_is(mode_value, console_modes[mode]))
        mode++;
    if (mode == NR_CONSOLE_MODES)
        return parse_fail(p, "\"mode\" must be \"serial\", \"virtio\", \"socket\" or \"file\"");
    bool wants_path = mode == GODWIT_VIRTIO_CONSOLE_SOCKET || mode == GODWIT_VIRTIO_CONSOLE_FILE;
    const char *path = NULL;
    if (wants_path && !path_value)
        return parse_fail(p, "\"path\" is required with \"mode\": \"%s\"", console_modes[mode]);
    if (!wants_path && path_value)
        return parse_fail(p, "\"path\" is only for \"mode\": \"socket\" or \"file\"");
    if (path_value) {
        int ret = take_device_string(p, "path", path_value, 0, &path);
        if (ret < 0)
            return ret;
    }
    p->where[0] = '\0';
    p->cfg.virtio_console = (enum godwit_virtio_console)mode;
    p->cfg.virtio_console_path = path;
    return 0;
}

static int apply_kernel_decompress(struct config_parse *p, const char *key,
                                   struct json_object *value)
{
    bool on = !p->cfg.no_kernel_decompress;
    int ret = take_bool(p, key, value, &on);
    p->cfg.no_kernel_decompress = !on;
    return ret;
}

static int apply_thp(struct config_parse *p, const char *key, struct json_object *value)
{
    bool thp = !p->cfg.no_thp;
    int ret = take_bool(p, key, value, &thp);
    p->cfg.no_thp = !thp;
    return ret;
}

static int apply_rng(struct config_parse *p, const char *key, struct json_object *value)
{
    bool rng = !p->cfg.no_rng;
    int ret = take_bool(p, key, value, &rng);
    p->cfg.no_rng = !rng;
    return ret;
}

/* "vsock": {"cid": N, "socket": PATH}: N 3 to 4294967294, the socket optional (the CLI puts
 * the default beside the API socket; libgodwit needs one). */
static int apply_vsock(struct config_parse *p, const char *key, struct json_object *value)
{
    if (!json_object_is_type(value, json_type_object))
        return parse_fail(p, "\"%s\" must be an object", key);
    uint64_t cid = 0;
    const char *path = NULL;
    snprintf(p->where, sizeof(p->where), "\"%s\": ", key);
    json_object_object_foreach(value, k, v)
    {
        int ret;
        if (strcmp(k, "cid") == 0)
            ret = take_integer(p, k, v, 3, UINT32_MAX - 1, &cid);
        else if (strcmp(k, "socket") == 0)
            ret = take_device_string(p, k, v, 0, &path);
        else
            return fail_unknown_key(p, k);
        if (ret < 0)
            return ret;
    }
    if (!cid)
        return parse_fail(p, "\"cid\" is required");
    p->where[0] = '\0';
    p->cfg.vsock_cid = cid;
    p->cfg.vsock_path = path;
    return 0;
}

/* "seccomp": "on" | "log" | "off" (docs/sandbox.md). */
static int apply_seccomp(struct config_parse *p, const char *key, struct json_object *value)
{
    static const enum godwit_seccomp modes[] = { GODWIT_SECCOMP_ON, GODWIT_SECCOMP_LOG,
                                                 GODWIT_SECCOMP_OFF };
    for (size_t i = 0; i < sizeof(modes) / sizeof(modes[0]); i++)
        if (string_is(value, sandbox_seccomp_name(modes[i]))) {
            p->extra.seccomp = modes[i];
            return 0;
        }
    return parse_fail(p, "\"%s\" must be \"on\", \"log\" or \"off\"", key);
}

/* "caps": "drop" | "keep" (docs/sandbox.md). */
static int apply_caps(struct config_parse *p, const char *key, struct json_object *value)
{
    if (!string_is(value, "drop") && !string_is(value, "keep"))
        return parse_fail(p, "\"%s\" must be \"drop\" or \"keep\"", key);
    p->extra.keep_caps = string_is(value, "keep");
    return 0;
}

/* "io_poll_us": 0 to GODWIT_MAX_IO_POLL_US. */
static int apply_io_poll(struct config_parse *p, const char *key, struct json_object *value)
{
    uint64_t us = p->extra.io_poll_us; /* kept when refused, as apply_cpus does */
    int ret = take_integer(p, key, value, 0, GODWIT_MAX_IO_POLL_US, &us);
    p->extra.io_poll_us = (unsigned)us;
    return ret;
}

/* The schema; docs/config.md documents it next to the command-line options. */
static const struct config_key config_keys[] = {
    { "kernel", apply_kernel },         { "initrd", apply_initrd },
    { "cmdline", apply_cmdline },       { "memory_mib", apply_memory },
    { "cpus", apply_cpus },             { "hugepages", apply_hugepages },
    { "thp", apply_thp },
    { "no_reboot", apply_no_reboot },   { "name", apply_name },
    { "api_socket", apply_api_socket }, { "disks", apply_disks },
    { "net", apply_net },               { "console", apply_console },
    { "rng", apply_rng },               { "seccomp", apply_seccomp },
    { "caps", apply_caps },             { "vsock", apply_vsock },
    { "kernel_decompress", apply_kernel_decompress }, { "io_poll_us", apply_io_poll },
};

static const struct config_key *config_key_find(const char *name)
{
    for (size_t i = 0; i < sizeof(config_keys) / sizeof(config_keys[0]); i++)
        if (strcmp(config_keys[i].name, name) == 0)
            return &config_keys[i];
    return NULL;
}

/* Names an unknown key as JSON quotes it, so that odd bytes in it cannot garble the line. */
static int fail_unknown_key(struct config_parse *p, const char *key)
{
    struct json_object *quoted = json_object_new_string(key);
    int ret = parse_fail(p, "unknown key %s",
                         quoted ? json_object_to_json_string_ext(quoted, JSON_C_TO_STRING_PLAIN |
                                                                     JSON_C_TO_STRING_NOSLASHESCAPE)
                                : "(unprintable)");
    json_object_put(quoted);
    return ret;
}

static int apply_object(struct config_parse *p, struct json_object *root)
{
    json_object_object_foreach(root, key, value)
    {
        const struct config_key *k = config_key_find(key);
        int ret = k ? k->apply(p, key, value) : fail_unknown_key(p, key);
        if (ret < 0)
            return ret;
    }
    if (!p->cfg.kernel_path)
        return parse_fail(p, "\"kernel\" is required");
    return 0;
}

static unsigned line_at(const char *text, size_t len, size_t offset)
{
    unsigned line = 1;
    for (size_t i = 0; i < offset && i < len; i++)
        line += text[i] == '\n';
    return line;
}

static bool is_json_space(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

/* Tokenizes text into one JSON object, or fails naming the line json-c stopped at. */
static int tokenize_object(struct config_parse *p, const char *text, size_t len,
                           struct json_object **root)
{
    if (len > CONFIG_FILE_MAX)
        return parse_fail(p, "larger than %d bytes", CONFIG_FILE_MAX);
    struct json_tokener *tok = json_tokener_new();
    if (!tok)
        return -ENOMEM;
    json_tokener_set_flags(tok, JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8);
    *root = json_tokener_parse_ex(tok, text, (int)len);
    enum json_tokener_error jerr = json_tokener_get_error(tok);
    size_t end = json_tokener_get_parse_end(tok);
    json_tokener_free(tok);
    /* All input taken but the value is unfinished: json-c says "continue". */
    if (jerr == json_tokener_continue)
        jerr = json_tokener_error_parse_eof;
    if (!*root || jerr != json_tokener_success)
        return parse_fail(p, "line %u: %s", line_at(text, len, end),
                          json_tokener_error_desc(jerr));
    if (end < len) { /* a NUL byte stops json-c short of the end */
        json_object_put(*root);
        return parse_fail(p, "line %u: unexpected character", line_at(text, len, end));
    }
    if (!json_object_is_type(*root, json_type_object)) {
        size_t start = 0;
        while (start < len && is_json_space(text[start]))
            start++;
        json_object_put(*root);
        return parse_fail(p, "line %u: the configuration must be a JSON object",
                          line_at(text, len, start));
    }
    return 0;
}

static int parse_with_source(const char *source, const char *text, size_t len,
                             struct vm_config *cfg, struct config_extra *extra,
                             struct config_strings *owned, struct config_error *err)
{
    struct config_parse p = { .source = source, .err = err };
    struct json_object *root;

    config_defaults(&p.cfg, &p.extra);
    int ret = tokenize_object(&p, text, len, &root);
    if (ret == 0) {
        ret = apply_object(&p, root);
        json_object_put(root);
    }
    if (ret == -ENOMEM)
        config_fail(source, err, "out of memory");
    if (ret < 0) {
        config_strings_free(&p.owned);
        return ret;
    }
    *cfg = p.cfg;
    *extra = p.extra;
    *owned = p.owned;
    return 0;
}

int config_parse_json(const char *text, size_t len, struct vm_config *cfg,
                      struct config_extra *extra, struct config_strings *owned,
                      struct config_error *err)
{
    return parse_with_source(NULL, text, len, cfg, extra, owned, err);
}

/* Reads at most CONFIG_FILE_MAX + 1 bytes (enough to notice a larger file); pipes work too. */
static int read_bounded(int fd, char **out, size_t *out_len)
{
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    if (!buf)
        return -ENOMEM;
    for (;;) {
        if (len == cap) {
            char *bigger = realloc(buf, cap * 2);
            if (!bigger) {
                free(buf);
                return -ENOMEM;
            }
            buf = bigger;
            cap *= 2;
        }
        ssize_t n = read(fd, buf + len, cap - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            int ret = -errno;
            free(buf);
            return ret;
        }
        len += (size_t)n;
        if (n == 0 || len > CONFIG_FILE_MAX)
            break;
    }
    *out = buf;
    *out_len = len;
    return 0;
}

int config_load_file(const char *path, struct vm_config *cfg, struct config_extra *extra,
                     struct config_strings *owned, struct config_error *err)
{
    char *text = NULL;
    size_t len = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return config_fail(path, err, "%s", strerror(errno));
    int ret = read_bounded(fd, &text, &len);
    close(fd);
    if (ret < 0) {
        config_fail(path, err, "%s", strerror(-ret));
        return ret;
    }
    ret = parse_with_source(path, text, len, cfg, extra, owned, err);
    free(text);
    return ret;
}

/* Adds key: value, taking value's reference; a NULL value (allocation failed) fails. */
static int add_value(struct json_object *obj, const char *key, struct json_object *value)
{
    if (!value)
        return -ENOMEM;
    if (json_object_object_add(obj, key, value) < 0) {
        json_object_put(value);
        return -ENOMEM;
    }
    return 0;
}

static int add_string_if_set(struct json_object *obj, const char *key, const char *value)
{
    return value ? add_value(obj, key, json_object_new_string(value)) : 0;
}

/* Puts obj and returns NULL when ret reports a failed add. */
static struct json_object *built(struct json_object *obj, int ret)
{
    if (ret) {
        json_object_put(obj);
        return NULL;
    }
    return obj;
}

static struct json_object *disks_to_json(const struct vm_config *cfg)
{
    struct json_object *list = json_object_new_array();
    for (unsigned i = 0; list && i < cfg->nr_disks; i++) {
        const struct godwit_disk *d = &cfg->disks[i];
        struct json_object *obj = json_object_new_object();
        int ret = obj ? 0 : -ENOMEM;
        if (obj) {
            ret |= add_string_if_set(obj, "path", d->path);
            ret |= add_value(obj, "readonly", json_object_new_boolean(d->readonly));
            ret |= add_string_if_set(obj, "serial", d->serial);
            ret |= add_value(obj, "cache",
                             json_object_new_string(d->cache_none ? "none" : "writeback"));
            ret |= add_value(obj, "queues", json_object_new_int64(vm_disk_queues(cfg, d)));
        }
        if (ret || json_object_array_add(list, obj) < 0) {
            json_object_put(obj);
            json_object_put(list);
            return NULL;
        }
    }
    return list;
}

static struct json_object *nets_to_json(const struct vm_config *cfg)
{
    struct json_object *list = json_object_new_array();
    for (unsigned i = 0; list && i < cfg->nr_nets; i++) {
        const struct godwit_net *n = &cfg->nets[i];
        struct json_object *obj = json_object_new_object();
        int ret = obj ? 0 : -ENOMEM;
        if (obj) {
            ret |= add_string_if_set(obj, "tap", n->tap);
            ret |= add_string_if_set(obj, "mac", n->mac);
            ret |= add_value(obj, "queues", json_object_new_int64(n->queues ? n->queues : 1));
        }
        if (ret || json_object_array_add(list, obj) < 0) {
            json_object_put(obj);
            json_object_put(list);
            return NULL;
        }
    }
    return list;
}

static struct json_object *console_to_json(const struct vm_config *cfg)
{
    struct json_object *obj = json_object_new_object();
    if (!obj)
        return NULL;
    unsigned mode = cfg->virtio_console < NR_CONSOLE_MODES ? cfg->virtio_console : 0;
    int ret = add_value(obj, "mode", json_object_new_string(console_modes[mode]));
    if (mode == GODWIT_VIRTIO_CONSOLE_SOCKET || mode == GODWIT_VIRTIO_CONSOLE_FILE)
        ret |= add_string_if_set(obj, "path", cfg->virtio_console_path);
    return built(obj, ret);
}

/* Only for a VM that has the device: no key means none. */
static int add_vsock(struct json_object *parent, const struct vm_config *cfg)
{
    if (!cfg->vsock_cid)
        return 0;
    struct json_object *obj = json_object_new_object();
    if (!obj)
        return -1;
    int ret = add_value(obj, "cid", json_object_new_int64((int64_t)cfg->vsock_cid));
    ret |= add_string_if_set(obj, "socket", cfg->vsock_path);
    return add_value(parent, "vsock", built(obj, ret));
}

struct json_object *config_to_json_object(const struct vm_config *cfg,
                                          const struct config_extra *extra)
{
    struct json_object *obj = json_object_new_object();
    if (!obj)
        return NULL;
    int ret = 0;
    ret |= add_string_if_set(obj, "name", extra ? extra->name : NULL);
    ret |= add_string_if_set(obj, "kernel", cfg->kernel_path);
    ret |= add_string_if_set(obj, "initrd", cfg->initrd_path);
    ret |= add_string_if_set(obj, "cmdline", cfg->cmdline ? cfg->cmdline : DEFAULT_CMDLINE);
    ret |= add_value(obj, "memory_mib", json_object_new_int64((int64_t)cfg->memory_mib));
    ret |= add_value(obj, "cpus", json_object_new_int64(cfg->nr_cpus));
    ret |= add_value(obj, "hugepages", json_object_new_boolean(cfg->hugepages));
    ret |= add_value(obj, "thp", json_object_new_boolean(!cfg->no_thp));
    ret |= add_value(obj, "no_reboot", json_object_new_boolean(cfg->no_reboot));
    ret |= add_string_if_set(obj, "api_socket", extra ? extra->api_socket : NULL);
    ret |= add_value(obj, "disks", disks_to_json(cfg));
    ret |= add_value(obj, "net", nets_to_json(cfg));
    ret |= add_value(obj, "console", console_to_json(cfg));
    ret |= add_value(obj, "rng", json_object_new_boolean(!cfg->no_rng));
    ret |= add_vsock(obj, cfg);
    ret |= add_value(obj, "kernel_decompress", json_object_new_boolean(!cfg->no_kernel_decompress));
    if (extra) {
        ret |= add_value(obj, "seccomp", json_object_new_string(sandbox_seccomp_name(extra->seccomp)));
        ret |= add_value(obj, "caps", json_object_new_string(extra->keep_caps ? "keep" : "drop"));
        ret |= add_value(obj, "io_poll_us", json_object_new_int64(extra->io_poll_us));
    }
    return built(obj, ret);
}

int config_to_json(const struct vm_config *cfg, const struct config_extra *extra, char *buf,
                   size_t len)
{
    struct json_object *obj = config_to_json_object(cfg, extra);
    if (!obj)
        return -ENOMEM;
    size_t text_len;
    const char *text = json_object_to_json_string_length(
        obj, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_NOSLASHESCAPE, &text_len);
    int ret = -ENOMEM;
    if (text && text_len < len && text_len <= INT32_MAX) {
        memcpy(buf, text, text_len + 1);
        ret = (int)text_len;
    } else if (text) {
        ret = -ENOSPC;
    }
    json_object_put(obj);
    return ret;
}
