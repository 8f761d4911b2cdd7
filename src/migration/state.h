/*
 * state.h: the VM state format, shared by snapshots and (later) live migration.
 *
 * A state stream is a header followed by sections:
 *
 *   header:  magic "GODWITVM", u32 format version, u32 number of sections
 *   section: char id[32] (NUL-padded: "vcpu0", "uart0", "virtio-blk0"), u32 version,
 *            u32 crc32c of the payload, u64 payload length, then the payload
 *
 * All integers are little-endian. A section's payload is whatever its owner writes: most
 * write their plain state struct (`struct uart_state`, `struct kvm_regs`) with the sw_*
 * calls, and a change of that struct's layout bumps the section's version while the loader
 * keeps reading the older one. The reader checks the header, every section's bounds and
 * checksum before any owner sees a byte, so an owner's load only has to check its values.
 */
#ifndef GODWIT_MIGRATION_STATE_H
#define GODWIT_MIGRATION_STATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The little-endian integers of the state format and the migration stream: the low `n` bytes
 * of `v` at `p`, and the `n`-byte integer at `p` (n up to 8). */
static inline void le_put(uint8_t *p, unsigned n, uint64_t v)
{
    for (unsigned i = 0; i < n; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static inline uint64_t le_get(const uint8_t *p, unsigned n)
{
    uint64_t v = 0;
    for (unsigned i = 0; i < n; i++)
        v |= (uint64_t)p[i] << (8 * i);
    return v;
}

#define STATE_MAGIC "GODWITVM"
#define STATE_FORMAT_VERSION 1u
#define STATE_ID_LEN 32u
#define STATE_MAX_SECTIONS 4096u
#define STATE_MAX_SECTION_BYTES (64u << 20) /* far above any device's state */

/* ---- writing ---- */

/*
 * Builds a stream in memory. Errors are sticky: after the first one (out of memory, a call
 * out of order) every call does nothing and state_writer_error() reports it, so a save can
 * write all its fields and check once.
 */
struct state_writer {
    uint8_t *buf;
    size_t len, cap;
    size_t section_start; /* offset of the open section's header; 0: none open */
    uint32_t nr_sections;
    int error; /* 0 or -errno */
};

void sw_init(struct state_writer *w);
void sw_free(struct state_writer *w);
/* Opens section `id` (at most STATE_ID_LEN - 1 bytes) at `version`; one open at a time. */
void sw_begin(struct state_writer *w, const char *id, uint32_t version);
/* Closes the open section: fills its length and checksum. */
void sw_end(struct state_writer *w);
void sw_bytes(struct state_writer *w, const void *p, size_t len);
void sw_u8(struct state_writer *w, uint8_t v);
void sw_u16(struct state_writer *w, uint16_t v);
void sw_u32(struct state_writer *w, uint32_t v);
void sw_u64(struct state_writer *w, uint64_t v);
/* A length-prefixed blob: u32 byte count, then the bytes (a KVM structure, an XSAVE area). */
void sw_blob(struct state_writer *w, const void *p, size_t len);
/* Records an error of the caller's (it ran out of memory): the stream fails with it. */
void sw_fail(struct state_writer *w, int err);
/* 0, or the first error. */
int sw_error(const struct state_writer *w);
/* Finishes the stream (the section count in the header): returns 0 or the first error. The
 * bytes are w->buf[0..w->len). */
int sw_finish(struct state_writer *w);

/* ---- reading ---- */

/* One section, checked: its payload lies inside the stream and matches its checksum. */
struct state_section {
    char id[STATE_ID_LEN]; /* NUL-terminated */
    uint32_t version;
    const uint8_t *data;
    size_t len;
};

/* The sections of a stream, indexed once by state_reader_open(). */
struct state_reader {
    uint32_t format_version;
    uint32_t nr_sections;
    struct state_section *sections;
    bool *used; /* sections a loader asked for: the rest are reported as unknown */
};

/*
 * Checks the header and every section (bounds, checksum, an id that is a NUL-terminated
 * printable string, no id twice) of buf[0..len), which must outlive the reader. Returns 0, or
 * -EINVAL / -EPROTO / -ENOMEM after one error line that names the problem and the section.
 */
int state_reader_open(struct state_reader *r, const uint8_t *buf, size_t len);
void state_reader_close(struct state_reader *r);
/* The section called `id`, or NULL. Marks it used. */
const struct state_section *state_reader_find(struct state_reader *r, const char *id);
/* The first section not asked for, or NULL: a loader refuses a stream with state it does not
 * know how to load rather than drop it. */
const struct state_section *state_reader_unused(const struct state_reader *r);

/*
 * Reads one section's payload in order. Like the writer, errors are sticky: reading past the
 * end yields zeroes and sets `overrun`; sc_finish() then refuses the section, as it refuses
 * bytes left over.
 */
struct state_cursor {
    const struct state_section *section;
    size_t pos;
    bool overrun;
};

void sc_init(struct state_cursor *c, const struct state_section *s);
void sc_bytes(struct state_cursor *c, void *p, size_t len);
uint8_t sc_u8(struct state_cursor *c);
uint16_t sc_u16(struct state_cursor *c);
uint32_t sc_u32(struct state_cursor *c);
uint64_t sc_u64(struct state_cursor *c);
size_t sc_left(const struct state_cursor *c);
/* A blob that must be exactly `size` bytes (a fixed-size structure of this build): 0, -EINVAL
 * for another length (one line naming `what`), or -EPROTO past the end of the section. */
int sc_blob(struct state_cursor *c, const char *what, void *p, size_t size);
/* 0 when the whole payload was read and no more; -EPROTO (with one error line naming the
 * section) for a short or a long one. */
int sc_finish(struct state_cursor *c);
/* Logs "state: section ID: WHY" and returns -EINVAL: for an owner that found a bad value. */
int sc_reject(const struct state_cursor *c, const char *why, ...)
    __attribute__((format(printf, 2, 3)));

/* CRC-32C (Castagnoli) of buf, as the sections carry: with the CPU's instruction where it has
 * one. The same from the table alone, for tests that hold the two against each other. */
uint32_t state_crc32c(const void *buf, size_t len);
uint32_t state_crc32c_bytewise(const void *buf, size_t len);

#endif
