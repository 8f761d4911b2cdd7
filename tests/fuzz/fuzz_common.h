/*
 * fuzz_common.h: what every harness shares: quiet logs, the input read as a stream of
 * little-endian fields (zeroes once it runs out), and one guest memory kept across runs.
 */
#ifndef GODWIT_FUZZ_COMMON_H
#define GODWIT_FUZZ_COMMON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>

#include "log.h"
#include "vm/memory.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

/* A property the code under test promised: a failure is a finding (assert() would vanish
 * under NDEBUG). */
#define FUZZ_CHECK(cond)                                                                     \
    do {                                                                                     \
        if (!(cond)) {                                                                       \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);         \
            abort();                                                                         \
        }                                                                                    \
    } while (0)

/* The input, consumed front to back. */
struct fuzz_in {
    const uint8_t *p;
    size_t left;
};

static inline struct fuzz_in fuzz_in(const uint8_t *data, size_t size)
{
    return (struct fuzz_in){ .p = data, .left = size };
}

/* Copies up to len bytes out; what the input lacks reads as zeroes. Returns the bytes taken. */
static inline size_t fuzz_bytes(struct fuzz_in *in, void *dst, size_t len)
{
    size_t n = len < in->left ? len : in->left;
    if (n)
        memcpy(dst, in->p, n);
    memset((uint8_t *)dst + n, 0, len - n);
    in->p += n;
    in->left -= n;
    return n;
}

static inline uint8_t fuzz_u8(struct fuzz_in *in)
{
    uint8_t v;
    fuzz_bytes(in, &v, 1);
    return v;
}

static inline uint16_t fuzz_u16(struct fuzz_in *in)
{
    uint16_t v;
    fuzz_bytes(in, &v, 2);
    return v;
}

static inline uint32_t fuzz_u32(struct fuzz_in *in)
{
    uint32_t v;
    fuzz_bytes(in, &v, 4);
    return v;
}

static inline uint64_t fuzz_u64(struct fuzz_in *in)
{
    uint64_t v;
    fuzz_bytes(in, &v, 8);
    return v;
}

static inline bool fuzz_done(const struct fuzz_in *in)
{
    return in->left == 0;
}

/* Logs are dropped (every refusal of a bad input logs a line) unless GODWIT_FUZZ_LOG is set. */
static inline void fuzz_quiet(void)
{
    if (!getenv("GODWIT_FUZZ_LOG"))
        log_set_level((enum log_level)0);
}

/*
 * Guest RAM for harnesses that need it: GM_MIN_SIZE (64 MiB), created once. A harness whose
 * device reads guest RAM clears it at the start of each run (fuzz_gm_reset), so that runs
 * do not see each other's bytes and a finding replays alone.
 */
static inline struct guest_memory *fuzz_gm(void)
{
    static struct guest_memory gm;
    static bool made;
    if (!made) {
        if (gm_init(&gm, GM_MIN_SIZE, false) != 0) {
            fprintf(stderr, "fuzz: cannot create guest memory\n");
            abort();
        }
        made = true;
    }
    return &gm;
}

/* All of guest RAM back to zeroes, at the cost of the pages the last run touched: a harness
 * whose guest may place rings and buffers anywhere calls it at the start of each run. */
static inline void fuzz_gm_reset(struct guest_memory *gm)
{
    uint64_t end = 0;
    for (unsigned i = 0; i < gm->nr_regions; i++)
        if (gm->regions[i].file_offset + gm->regions[i].size > end)
            end = gm->regions[i].file_offset + gm->regions[i].size;
    if (fallocate(gm->memfd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, (off_t)end) != 0)
        abort();
}

#endif
