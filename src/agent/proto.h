/*
 * proto.h: the godwit guest agent's wire protocol, shared by the agent (a static guest
 * program) and the host's client. Freestanding of the VMM: only the C library's headers.
 *
 * A message is a 16-byte header and a payload of at most AGENT_MAX_PAYLOAD bytes, all
 * little-endian:
 *
 *   u32 magic "GWAG"   u8 version   u8 type   u16 flags   u32 request id   u32 payload length
 *
 * The payload is a sequence of fields: u16 tag, u32 length, then the value. Each message type
 * has a schema (which tags, how often, of which kind); agent_msg_check() refuses anything
 * else, so that a handler only sees fields that exist, fit and have their kind's size.
 */
#ifndef GODWIT_AGENT_PROTO_H
#define GODWIT_AGENT_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define AGENT_MAGIC 0x47415747u /* "GWAG" as little-endian bytes */
#define AGENT_PROTO_VERSION 1
#define AGENT_HEADER_SIZE 16
#define AGENT_MAX_PAYLOAD (128u * 1024)
#define AGENT_CHUNK (64u * 1024) /* data carried by one DATA field at most */
#define AGENT_MAX_STRING 4096    /* paths, arguments, keys, messages */
#define AGENT_MAX_VALUE 16384    /* a KVP value */
#define AGENT_MAX_ARGS 256
#define AGENT_DIGEST_SIZE 32     /* SHA-256 */
#define AGENT_VSOCK_PORT 1024

/* Message types. Requests go host to agent; replies and streams agent to host. */
enum agent_type {
    AGENT_EXEC = 1,        /* ARG+, USER?, ROWS?, COLS?  (flags: AGENT_FLAG_TTY) */
    AGENT_STDIN = 2,       /* DATA? (flags: AGENT_FLAG_EOF ends the command's stdin) */
    AGENT_SIGNAL = 3,      /* SIGNAL */
    AGENT_FILE_WRITE = 4,  /* PATH, MODE, SIZE; then DATA messages, then FILE_END */
    AGENT_FILE_READ = 5,   /* PATH; answered FILE_INFO, DATA messages, FILE_END */
    AGENT_KVP_GET = 6,     /* POOL, KEY */
    AGENT_KVP_SET = 7,     /* POOL, KEY, VALUE */
    AGENT_KVP_DELETE = 8,  /* POOL, KEY */
    AGENT_KVP_LIST = 9,    /* POOL */
    AGENT_INFO = 10,       /* nothing */
    AGENT_FREEZE = 11,     /* TIMEOUT (seconds) */
    AGENT_THAW = 12,       /* nothing */
    AGENT_SHUTDOWN = 13,   /* MODE (AGENT_SHUTDOWN_POWEROFF or _REBOOT) */
    AGENT_PING = 14,       /* nothing */
    AGENT_SET_TIME = 15,   /* TIME: the host's CLOCK_REALTIME, for a guest that stood still */
    AGENT_RESIZE = 16,     /* ROWS, COLS: the host's terminal changed size (exec -t) */

    AGENT_OK = 64,         /* COUNT? (frozen filesystems), VALUE? (kvp get) */
    AGENT_ERROR = 65,      /* ERRNO, MESSAGE */
    AGENT_OUTPUT = 66,     /* STREAM, DATA */
    AGENT_EXIT = 67,       /* EXIT_CODE or SIGNAL */
    AGENT_DATA = 68,       /* DATA (file contents, both ways) */
    AGENT_FILE_END = 69,   /* SIZE, DIGEST (both ways) */
    AGENT_FILE_INFO = 70,  /* MODE, SIZE */
    AGENT_KVP_ENTRY = 71,  /* KEY, VALUE (one per key of a list, then OK) */
    AGENT_INFO_REPLY = 72, /* VERSION, OS, KERNEL, HOSTNAME, ADDRESS* */
};

#define AGENT_FLAG_TTY 0x0001u
#define AGENT_FLAG_EOF 0x0002u
#define AGENT_FLAGS_KNOWN (AGENT_FLAG_TTY | AGENT_FLAG_EOF)

enum agent_tag {
    AGENT_T_ARG = 1, AGENT_T_USER, AGENT_T_ROWS, AGENT_T_COLS, AGENT_T_DATA, AGENT_T_SIGNAL,
    AGENT_T_PATH, AGENT_T_MODE, AGENT_T_SIZE, AGENT_T_DIGEST, AGENT_T_POOL, AGENT_T_KEY,
    AGENT_T_VALUE, AGENT_T_TIMEOUT, AGENT_T_ERRNO, AGENT_T_MESSAGE, AGENT_T_STREAM,
    AGENT_T_EXIT_CODE, AGENT_T_COUNT, AGENT_T_VERSION, AGENT_T_OS, AGENT_T_KERNEL,
    AGENT_T_HOSTNAME, AGENT_T_ADDRESS, AGENT_T_TIME,
    AGENT_T_MAX_
};

enum { AGENT_POOL_HOST = 0, AGENT_POOL_GUEST = 1 }; /* host-to-guest, guest-to-host */
enum { AGENT_STDOUT = 1, AGENT_STDERR = 2 };
enum { AGENT_SHUTDOWN_POWEROFF = 0, AGENT_SHUTDOWN_REBOOT = 1 };

struct agent_header {
    uint32_t magic;
    uint8_t version;
    uint8_t type;
    uint16_t flags;
    uint32_t id;
    uint32_t length;
};

/* A received message: its header and its payload (not owned). */
struct agent_msg {
    struct agent_header h;
    const uint8_t *payload;
};

struct agent_field {
    uint16_t tag;
    uint32_t len;
    const uint8_t *value;
};

/* Decodes a header; 0, or -EPROTO (magic, version, unknown type or flags), -EMSGSIZE. */
int agent_header_decode(const uint8_t *buf, struct agent_header *h);
/* Checks a whole message against its type's schema: 0 or -EPROTO / -EINVAL. */
int agent_msg_check(const struct agent_msg *m);
/* Iterates the fields of a checked message: *pos starts at 0; returns false at the end. */
bool agent_field_next(const struct agent_msg *m, size_t *pos, struct agent_field *f);
/* The first field with `tag`, or NULL in f->value when absent. */
bool agent_find(const struct agent_msg *m, uint16_t tag, struct agent_field *f);
bool agent_get_u32(const struct agent_msg *m, uint16_t tag, uint32_t *v);
bool agent_get_u64(const struct agent_msg *m, uint16_t tag, uint64_t *v);
/* Copies a string field into buf (NUL-terminated); false when absent or too long for buf. */
bool agent_get_str(const struct agent_msg *m, uint16_t tag, char *buf, size_t len);
const char *agent_type_name(unsigned type);

/* Building a message in a caller's buffer of AGENT_HEADER_SIZE + AGENT_MAX_PAYLOAD bytes. */
struct agent_builder {
    uint8_t *buf;
    size_t len;   /* bytes so far, header included */
    bool overflow;
};

void agent_build_start(struct agent_builder *b, uint8_t *buf, unsigned type, uint16_t flags,
                       uint32_t id);
void agent_put_bytes(struct agent_builder *b, uint16_t tag, const void *v, size_t len);
void agent_put_u32(struct agent_builder *b, uint16_t tag, uint32_t v);
void agent_put_u64(struct agent_builder *b, uint16_t tag, uint64_t v);
void agent_put_str(struct agent_builder *b, uint16_t tag, const char *s);
/* Writes the payload length; returns the message's total size, or 0 when it overflowed. */
size_t agent_build_end(struct agent_builder *b);

#endif
