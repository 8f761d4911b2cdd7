/* proto.c: the guest agent protocol's header, schema checks, field access and building. */
#include "agent/proto.h"

#include <errno.h>
#include <string.h>

enum kind { K_NONE, K_U32, K_U64, K_STR, K_BYTES, K_DIGEST };

/* What each tag holds; strings carry no NUL and have a bound of their own. */
static const struct {
    uint8_t kind;
    uint32_t max;
} tag_kinds[AGENT_T_MAX_] = {
    [AGENT_T_ARG] = { K_STR, AGENT_MAX_STRING },    [AGENT_T_USER] = { K_STR, 256 },
    [AGENT_T_ROWS] = { K_U32, 0 },                  [AGENT_T_COLS] = { K_U32, 0 },
    [AGENT_T_DATA] = { K_BYTES, AGENT_CHUNK },      [AGENT_T_SIGNAL] = { K_U32, 0 },
    [AGENT_T_PATH] = { K_STR, AGENT_MAX_STRING },   [AGENT_T_MODE] = { K_U32, 0 },
    [AGENT_T_SIZE] = { K_U64, 0 },                  [AGENT_T_DIGEST] = { K_DIGEST, 0 },
    [AGENT_T_POOL] = { K_U32, 0 },                  [AGENT_T_KEY] = { K_STR, 512 },
    [AGENT_T_VALUE] = { K_STR, AGENT_MAX_VALUE },   [AGENT_T_TIMEOUT] = { K_U32, 0 },
    [AGENT_T_ERRNO] = { K_U32, 0 },                 [AGENT_T_MESSAGE] = { K_STR, AGENT_MAX_STRING },
    [AGENT_T_STREAM] = { K_U32, 0 },                [AGENT_T_EXIT_CODE] = { K_U32, 0 },
    [AGENT_T_COUNT] = { K_U32, 0 },                 [AGENT_T_VERSION] = { K_STR, 64 },
    [AGENT_T_OS] = { K_STR, 256 },                  [AGENT_T_KERNEL] = { K_STR, 256 },
    [AGENT_T_HOSTNAME] = { K_STR, 256 },            [AGENT_T_ADDRESS] = { K_STR, 64 },
    [AGENT_T_TIME] = { K_U64, 0 },
};

/* Which fields a type takes, how often. A tag not listed for the type is refused. */
struct rule {
    uint8_t type, tag;
    uint16_t min, max;
};

static const struct rule rules[] = {
    { AGENT_EXEC, AGENT_T_ARG, 1, AGENT_MAX_ARGS }, { AGENT_EXEC, AGENT_T_USER, 0, 1 },
    { AGENT_EXEC, AGENT_T_ROWS, 0, 1 }, { AGENT_EXEC, AGENT_T_COLS, 0, 1 },
    { AGENT_STDIN, AGENT_T_DATA, 0, 1 },
    { AGENT_SIGNAL, AGENT_T_SIGNAL, 1, 1 },
    { AGENT_FILE_WRITE, AGENT_T_PATH, 1, 1 }, { AGENT_FILE_WRITE, AGENT_T_MODE, 1, 1 },
    { AGENT_FILE_WRITE, AGENT_T_SIZE, 1, 1 },
    { AGENT_FILE_READ, AGENT_T_PATH, 1, 1 },
    { AGENT_KVP_GET, AGENT_T_POOL, 1, 1 }, { AGENT_KVP_GET, AGENT_T_KEY, 1, 1 },
    { AGENT_KVP_SET, AGENT_T_POOL, 1, 1 }, { AGENT_KVP_SET, AGENT_T_KEY, 1, 1 },
    { AGENT_KVP_SET, AGENT_T_VALUE, 1, 1 },
    { AGENT_KVP_DELETE, AGENT_T_POOL, 1, 1 }, { AGENT_KVP_DELETE, AGENT_T_KEY, 1, 1 },
    { AGENT_KVP_LIST, AGENT_T_POOL, 1, 1 },
    { AGENT_FREEZE, AGENT_T_TIMEOUT, 1, 1 },
    { AGENT_SHUTDOWN, AGENT_T_MODE, 1, 1 },
    { AGENT_SET_TIME, AGENT_T_TIME, 1, 1 },
    { AGENT_RESIZE, AGENT_T_ROWS, 1, 1 }, { AGENT_RESIZE, AGENT_T_COLS, 1, 1 },
    { AGENT_OK, AGENT_T_COUNT, 0, 1 }, { AGENT_OK, AGENT_T_VALUE, 0, 1 },
    { AGENT_ERROR, AGENT_T_ERRNO, 1, 1 }, { AGENT_ERROR, AGENT_T_MESSAGE, 1, 1 },
    { AGENT_OUTPUT, AGENT_T_STREAM, 1, 1 }, { AGENT_OUTPUT, AGENT_T_DATA, 1, 1 },
    { AGENT_EXIT, AGENT_T_EXIT_CODE, 0, 1 }, { AGENT_EXIT, AGENT_T_SIGNAL, 0, 1 },
    { AGENT_DATA, AGENT_T_DATA, 1, 1 },
    { AGENT_FILE_END, AGENT_T_SIZE, 1, 1 }, { AGENT_FILE_END, AGENT_T_DIGEST, 1, 1 },
    { AGENT_FILE_INFO, AGENT_T_MODE, 1, 1 }, { AGENT_FILE_INFO, AGENT_T_SIZE, 1, 1 },
    { AGENT_KVP_ENTRY, AGENT_T_KEY, 1, 1 }, { AGENT_KVP_ENTRY, AGENT_T_VALUE, 1, 1 },
    { AGENT_INFO_REPLY, AGENT_T_VERSION, 1, 1 }, { AGENT_INFO_REPLY, AGENT_T_OS, 1, 1 },
    { AGENT_INFO_REPLY, AGENT_T_KERNEL, 1, 1 }, { AGENT_INFO_REPLY, AGENT_T_HOSTNAME, 1, 1 },
    { AGENT_INFO_REPLY, AGENT_T_ADDRESS, 0, 64 },
};

static const char *const type_names[] = {
    [AGENT_EXEC] = "exec", [AGENT_STDIN] = "stdin", [AGENT_SIGNAL] = "signal",
    [AGENT_FILE_WRITE] = "file-write", [AGENT_FILE_READ] = "file-read",
    [AGENT_KVP_GET] = "kvp-get", [AGENT_KVP_SET] = "kvp-set", [AGENT_KVP_DELETE] = "kvp-delete",
    [AGENT_KVP_LIST] = "kvp-list", [AGENT_INFO] = "info", [AGENT_FREEZE] = "freeze",
    [AGENT_THAW] = "thaw", [AGENT_SHUTDOWN] = "shutdown", [AGENT_PING] = "ping", [AGENT_SET_TIME] = "set-time", [AGENT_RESIZE] = "resize",
    [AGENT_OK] = "ok", [AGENT_ERROR] = "error", [AGENT_OUTPUT] = "output", [AGENT_EXIT] = "exit",
    [AGENT_DATA] = "data", [AGENT_FILE_END] = "file-end", [AGENT_FILE_INFO] = "file-info",
    [AGENT_KVP_ENTRY] = "kvp-entry", [AGENT_INFO_REPLY] = "info-reply",
};

const char *agent_type_name(unsigned type)
{
    if (type < sizeof(type_names) / sizeof(type_names[0]) && type_names[type])
        return type_names[type];
    return NULL;
}

static uint16_t get16(const uint8_t *p)
{
    return (uint16_t)(p[0] | p[1] << 8);
}

static uint32_t get32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void put16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

static void put32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint16_t allowed_flags(unsigned type)
{
    if (type == AGENT_EXEC)
        return AGENT_FLAG_TTY;
    if (type == AGENT_STDIN)
        return AGENT_FLAG_EOF;
    return 0;
}

int agent_header_decode(const uint8_t *buf, struct agent_header *h)
{
    h->magic = get32(buf);
    h->version = buf[4];
    h->type = buf[5];
    h->flags = get16(buf + 6);
    h->id = get32(buf + 8);
    h->length = get32(buf + 12);
    if (h->magic != AGENT_MAGIC || h->version != AGENT_PROTO_VERSION)
        return -EPROTO;
    if (h->length > AGENT_MAX_PAYLOAD)
        return -EMSGSIZE;
    /* An unknown type still has a sound frame: the reader skips it and answers an error. */
    if (agent_type_name(h->type) && (h->flags & ~allowed_flags(h->type)))
        return -EPROTO;
    return 0;
}

bool agent_field_next(const struct agent_msg *m, size_t *pos, struct agent_field *f)
{
    size_t left = m->h.length - *pos;
    if (*pos >= m->h.length || left < 6)
        return false;
    const uint8_t *p = m->payload + *pos;
    f->tag = get16(p);
    f->len = get32(p + 2);
    if (f->len > left - 6)
        return false;
    f->value = p + 6;
    *pos += 6 + (size_t)f->len;
    return true;
}

static int field_valid(const struct agent_field *f)
{
    if (f->tag == 0 || f->tag >= AGENT_T_MAX_)
        return -EPROTO;
    switch (tag_kinds[f->tag].kind) {
    case K_U32:
        return f->len == 4 ? 0 : -EPROTO;
    case K_U64:
        return f->len == 8 ? 0 : -EPROTO;
    case K_DIGEST:
        return f->len == AGENT_DIGEST_SIZE ? 0 : -EPROTO;
    case K_BYTES:
        return f->len <= tag_kinds[f->tag].max ? 0 : -EPROTO;
    case K_STR:
        if (f->len > tag_kinds[f->tag].max || memchr(f->value, 0, f->len))
            return -EPROTO;
        return 0;
    }
    return -EPROTO;
}

static const struct rule *rule_for(unsigned type, unsigned tag)
{
    for (size_t i = 0; i < sizeof(rules) / sizeof(rules[0]); i++)
        if (rules[i].type == type && rules[i].tag == tag)
            return &rules[i];
    return NULL;
}

/* Every field known to the type, no more often than allowed, then no fewer than required. */
static int check_schema(const struct agent_msg *m)
{
    uint16_t count[AGENT_T_MAX_] = { 0 };
    struct agent_field f;
    size_t pos = 0;
    while (agent_field_next(m, &pos, &f)) {
        if (field_valid(&f) < 0)
            return -EPROTO;
        const struct rule *r = rule_for(m->h.type, f.tag);
        if (!r || ++count[f.tag] > r->max)
            return -EPROTO;
    }
    if (pos != m->h.length) /* a truncated field at the end */
        return -EPROTO;
    for (size_t i = 0; i < sizeof(rules) / sizeof(rules[0]); i++)
        if (rules[i].type == m->h.type && count[rules[i].tag] < rules[i].min)
            return -EPROTO;
    return 0;
}

/* The ranges of values a type accepts, beyond the schema. */
static int check_values(const struct agent_msg *m)
{
    uint32_t v;
    switch (m->h.type) {
    case AGENT_SIGNAL:
        agent_get_u32(m, AGENT_T_SIGNAL, &v);
        return v >= 1 && v <= 64 ? 0 : -EINVAL;
    case AGENT_FILE_WRITE:
    case AGENT_FILE_INFO:
        agent_get_u32(m, AGENT_T_MODE, &v);
        return v <= 07777 ? 0 : -EINVAL;
    case AGENT_KVP_GET: case AGENT_KVP_SET: case AGENT_KVP_DELETE: case AGENT_KVP_LIST:
        agent_get_u32(m, AGENT_T_POOL, &v);
        return v <= AGENT_POOL_GUEST ? 0 : -EINVAL;
    case AGENT_SHUTDOWN:
        agent_get_u32(m, AGENT_T_MODE, &v);
        return v <= AGENT_SHUTDOWN_REBOOT ? 0 : -EINVAL;
    case AGENT_OUTPUT:
        agent_get_u32(m, AGENT_T_STREAM, &v);
        return v == AGENT_STDOUT || v == AGENT_STDERR ? 0 : -EINVAL;
    case AGENT_EXIT: {
        struct agent_field f;
        bool code = agent_find(m, AGENT_T_EXIT_CODE, &f), sig = agent_find(m, AGENT_T_SIGNAL, &f);
        return code != sig ? 0 : -EINVAL; /* exactly one */
    }
    case AGENT_EXEC:
    case AGENT_RESIZE:
        if (agent_get_u32(m, AGENT_T_ROWS, &v) && v > 0xffff)
            return -EINVAL;
        if (agent_get_u32(m, AGENT_T_COLS, &v) && v > 0xffff)
            return -EINVAL;
        return 0;
    }
    return 0;
}

int agent_msg_check(const struct agent_msg *m)
{
    if (!agent_type_name(m->h.type))
        return -EPROTO;
    int ret = check_schema(m);
    return ret < 0 ? ret : check_values(m);
}

bool agent_find(const struct agent_msg *m, uint16_t tag, struct agent_field *f)
{
    size_t pos = 0;
    while (agent_field_next(m, &pos, f))
        if (f->tag == tag)
            return true;
    f->value = NULL;
    f->len = 0;
    return false;
}

bool agent_get_u32(const struct agent_msg *m, uint16_t tag, uint32_t *v)
{
    struct agent_field f;
    *v = 0;
    if (!agent_find(m, tag, &f) || f.len != 4)
        return false;
    *v = get32(f.value);
    return true;
}

bool agent_get_u64(const struct agent_msg *m, uint16_t tag, uint64_t *v)
{
    struct agent_field f;
    *v = 0;
    if (!agent_find(m, tag, &f) || f.len != 8)
        return false;
    *v = get32(f.value) | (uint64_t)get32(f.value + 4) << 32;
    return true;
}

bool agent_get_str(const struct agent_msg *m, uint16_t tag, char *buf, size_t len)
{
    struct agent_field f;
    if (len)
        buf[0] = 0;
    if (!agent_find(m, tag, &f) || f.len >= len)
        return false;
    memcpy(buf, f.value, f.len);
    buf[f.len] = 0;
    return true;
}

void agent_build_start(struct agent_builder *b, uint8_t *buf, unsigned type, uint16_t flags,
                       uint32_t id)
{
    b->buf = buf;
    b->len = AGENT_HEADER_SIZE;
    b->overflow = false;
    put32(buf, AGENT_MAGIC);
    buf[4] = AGENT_PROTO_VERSION;
    buf[5] = (uint8_t)type;
    put16(buf + 6, flags);
    put32(buf + 8, id);
    put32(buf + 12, 0);
}

void agent_put_bytes(struct agent_builder *b, uint16_t tag, const void *v, size_t len)
{
    if (b->overflow || len > AGENT_MAX_PAYLOAD ||
        b->len + 6 + len > AGENT_HEADER_SIZE + AGENT_MAX_PAYLOAD) {
        b->overflow = true;
        return;
    }
    put16(b->buf + b->len, tag);
    put32(b->buf + b->len + 2, (uint32_t)len);
    if (len)
        memcpy(b->buf + b->len + 6, v, len);
    b->len += 6 + len;
}

void agent_put_u32(struct agent_builder *b, uint16_t tag, uint32_t v)
{
    uint8_t le[4];
    put32(le, v);
    agent_put_bytes(b, tag, le, 4);
}

void agent_put_u64(struct agent_builder *b, uint16_t tag, uint64_t v)
{
    uint8_t le[8];
    put32(le, (uint32_t)v);
    put32(le + 4, (uint32_t)(v >> 32));
    agent_put_bytes(b, tag, le, 8);
}

void agent_put_str(struct agent_builder *b, uint16_t tag, const char *s)
{
    agent_put_bytes(b, tag, s, strlen(s));
}

size_t agent_build_end(struct agent_builder *b)
{
    if (b->overflow)
        return 0;
    put32(b->buf + 12, (uint32_t)(b->len - AGENT_HEADER_SIZE));
    return b->len;
}
