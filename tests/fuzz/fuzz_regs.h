/*
 * fuzz_regs.h: a guest's register accesses read from the input (which range, which offset,
 * what size, what value), and a device's snapshot taken and put back, for the harnesses of
 * the port and MMIO devices.
 */
#ifndef GODWIT_FUZZ_REGS_H
#define GODWIT_FUZZ_REGS_H

#include "fuzz_common.h"
#include "migration/state.h"
#include "mmio/bus.h"

/* One register range of a device, as the bus would hand it accesses. */
struct fuzz_range {
    const struct device_ops *ops;
    void *dev;
    uint32_t len;        /* bytes in the range: offsets are taken modulo this */
    uint32_t max_access; /* widest access the bus lets through: 1, 2, 4 or 8 */
};

/*
 * One access from the input: a byte (bit 0: write, bits 1-2: log2 of the size, the rest:
 * which range), the offset (a byte, four for a range over 256 bytes), and for a write the
 * value. Accesses that run past the end of
 * the range are not made (the bus refuses them before any device sees them).
 */
static inline void fuzz_access(struct fuzz_in *in, const struct fuzz_range *r, unsigned nr)
{
    uint8_t op = fuzz_u8(in);
    const struct fuzz_range *range = &r[(op >> 3) % nr];
    uint32_t len = 1u << ((op >> 1) & 3);
    uint64_t offset = (range->len > 256 ? fuzz_u32(in) : fuzz_u8(in)) % range->len;
    uint8_t data[8];

    if (len > range->max_access)
        len = range->max_access;
    if (offset + len > range->len)
        return;
    if (op & 1) {
        fuzz_bytes(in, data, len);
        range->ops->write(range->dev, offset, data, len);
    } else {
        memset(data, 0xa5, sizeof(data));
        range->ops->read(range->dev, offset, data, len);
    }
}

typedef void (*fuzz_save_fn)(void *dev, struct state_writer *w);
typedef int (*fuzz_load_fn)(void *dev, struct state_cursor *c, uint32_t version);

/* Saves dev's state as section "dev" of a stream; the stream is w's, free it with sw_free. */
static inline void fuzz_save(fuzz_save_fn save, void *dev, uint32_t version,
                             struct state_writer *w)
{
    sw_init(w);
    sw_begin(w, "dev", version);
    save(dev, w);
    sw_end(w);
    FUZZ_CHECK(sw_finish(w) == 0);
}

/* Hands load() a cursor on a section holding payload[0..len). Returns what load() returns. */
static inline int fuzz_load(fuzz_load_fn load, void *dev, uint32_t version, const void *payload,
                            size_t len)
{
    struct state_writer w;
    struct state_reader r;
    struct state_cursor c;
    const struct state_section *s;
    int ret;

    sw_init(&w);
    sw_begin(&w, "dev", version);
    sw_bytes(&w, payload, len);
    sw_end(&w);
    FUZZ_CHECK(sw_finish(&w) == 0);
    FUZZ_CHECK(state_reader_open(&r, w.buf, w.len) == 0);
    s = state_reader_find(&r, "dev");
    FUZZ_CHECK(s != NULL);
    sc_init(&c, s);
    ret = load(dev, &c, version);
    state_reader_close(&r);
    sw_free(&w);
    return ret;
}

/* The payload of the one section of a stream fuzz_save() wrote. */
static inline const uint8_t *fuzz_saved_payload(const struct state_writer *w, size_t *len)
{
    size_t hdr = 8 + 4 + 4, sec = STATE_ID_LEN + 4 + 4 + 8;
    FUZZ_CHECK(w->len >= hdr + sec);
    *len = w->len - hdr - sec;
    return w->buf + hdr + sec;
}

/* Two saves of one state are the same bytes; says where they part when not. */
static inline void fuzz_check_same_state(const uint8_t *a, size_t la, const uint8_t *b,
                                         size_t lb)
{
    size_t i = 0;
    while (i < la && i < lb && a[i] == b[i])
        i++;
    if (i == la && i == lb)
        return;
    fprintf(stderr, "fuzz: state saved again differs at byte %zu of %zu/%zu (%02x, then %02x)\n",
            i, la, lb, i < la ? a[i] : 0, i < lb ? b[i] : 0);
    abort();
}

/*
 * What a device saves, it loads, and saves again byte for byte: a snapshot of any state the
 * guest can reach is one the destination takes.
 */
static inline void fuzz_state_round_trip(fuzz_save_fn save, fuzz_load_fn load, void *dev,
                                         uint32_t version)
{
    struct state_writer a, b;
    const uint8_t *pa, *pb;
    size_t la, lb;

    fuzz_save(save, dev, version, &a);
    pa = fuzz_saved_payload(&a, &la);
    FUZZ_CHECK(fuzz_load(load, dev, version, pa, la) == 0);
    fuzz_save(save, dev, version, &b);
    pb = fuzz_saved_payload(&b, &lb);
    fuzz_check_same_state(pa, la, pb, lb);
    sw_free(&a);
    sw_free(&b);
}

#endif
