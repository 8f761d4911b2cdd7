/*
 * fuzz_virtqueue.c: the split virtqueue against a hostile driver: descriptor table, avail
 * ring and buffers from the input, chains walked (direct and indirect), used entries pushed.
 */
#include <errno.h>

#include "fuzz_common.h"
#include "virtio/virtqueue.h"

#define DESC_GPA 0x100000ull
#define AVAIL_GPA 0x200000ull
#define USED_GPA 0x300000ull
#define BUF_GPA 0x400000ull /* buffers and indirect tables */
#define BUF_LEN 0x10000ull

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fuzz_quiet();
    fuzz_gm();
    return 0;
}

/* Whether [p, p + len) lies inside guest RAM's host mapping. */
static bool in_ram(const struct guest_memory *gm, const void *p, uint64_t len)
{
    const uint8_t *b = p;
    for (unsigned i = 0; i < gm->nr_regions; i++) {
        const struct gm_region *r = &gm->regions[i];
        if (b >= r->host && len <= r->size && (uint64_t)(b - r->host) <= r->size - len)
            return true;
    }
    return false;
}

/* What virtq_pop() promises of a chain it hands out. */
static void check_chain(const struct guest_memory *gm, const struct virtq_chain *c, uint16_t size)
{
    uint64_t readable = 0, writable = 0;
    bool seen_writable = false;

    FUZZ_CHECK(c->head < size);
    FUZZ_CHECK(c->nr_segs <= VIRTQ_MAX_SEGS);
    for (unsigned i = 0; i < c->nr_segs; i++) {
        const struct virtq_seg *s = &c->segs[i];
        FUZZ_CHECK(s->len > 0 && in_ram(gm, s->host, s->len));
        if (s->device_writes) {
            writable += s->len;
            seen_writable = true;
        } else {
            FUZZ_CHECK(!seen_writable);
            readable += s->len;
        }
    }
    FUZZ_CHECK(readable == c->readable_len && writable == c->writable_len);
    FUZZ_CHECK(readable + writable <= VIRTQ_MAX_CHAIN_BYTES);
}

/*
 * The input: the queue's size and features, the descriptor table, the avail ring and the
 * buffers, then steps: take a chain and give it back, or the driver offering more.
 */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct virtqueue vq;
    static struct virtq_chain chain;
    struct fuzz_in in = fuzz_in(data, size);
    struct guest_memory *gm = fuzz_gm();
    uint8_t cfg = fuzz_u8(&in);
    uint16_t qsize = (uint16_t)(1u << (cfg % 9)); /* 1 .. 256 */
    bool event_idx = cfg & 0x10, indirect = cfg & 0x20;
    uint8_t scratch[256];

    fuzz_gm_reset(gm); /* chains written last run may lie anywhere */
    fuzz_bytes(&in, gm_ptr(gm, DESC_GPA, VIRTQ_DESC_TABLE_BYTES(qsize)),
               VIRTQ_DESC_TABLE_BYTES(qsize));
    fuzz_bytes(&in, gm_ptr(gm, AVAIL_GPA, VIRTQ_AVAIL_BYTES(qsize, true)),
               VIRTQ_AVAIL_BYTES(qsize, true));
    fuzz_bytes(&in, gm_ptr(gm, BUF_GPA, BUF_LEN), fuzz_u16(&in));
    FUZZ_CHECK(virtq_setup(&vq, gm, qsize, DESC_GPA, AVAIL_GPA, USED_GPA, event_idx, indirect) ==
               0);

    for (unsigned steps = 0; steps < 64 && !fuzz_done(&in); steps++) {
        uint8_t op = fuzz_u8(&in);
        int ret;

        switch (op % 4) {
        case 0: /* the device takes a chain, writes into it and hands it back */
        case 1:
            ret = virtq_pop(&vq, &chain);
            FUZZ_CHECK(ret == -EIO || ret == 0 || ret == 1);
            if (ret == 1) {
                size_t n;
                check_chain(gm, &chain, qsize);
                n = virtq_chain_read(&chain, fuzz_u8(&in), scratch, sizeof(scratch));
                FUZZ_CHECK(n <= sizeof(scratch) && n <= chain.readable_len);
                n = virtq_chain_write(&chain, fuzz_u8(&in), scratch, sizeof(scratch));
                FUZZ_CHECK(n <= sizeof(scratch) && n <= chain.writable_len);
                if (op & 4)
                    (void)virtq_push_pending(&vq, chain.head, chain.writable_len);
                else
                    (void)virtq_push(&vq, chain.head, (uint32_t)n);
            }
            if (ret < 0)
                FUZZ_CHECK(vq.broken);
            break;
        case 2: { /* the driver offers entries, or rewrites a descriptor */
            uint16_t idx = fuzz_u16(&in);
            if (op & 4)
                FUZZ_CHECK(gm_write(gm, AVAIL_GPA + 2, &idx, 2) == 0);
            else
                fuzz_bytes(&in, gm_ptr(gm, DESC_GPA + 16ull * (idx % qsize), 16), 16);
            break;
        }
        default: {
            struct virtq_status st;
            virtq_publish(&vq);
            (void)virtq_should_notify(&vq);
            virtq_get_status(&vq, &st);
            FUZZ_CHECK(st.size == qsize);
            /* a push for a head the driver never offered: refused or taken, never a crash */
            if (op & 4)
                (void)virtq_push(&vq, fuzz_u16(&in), fuzz_u32(&in));
            break;
        }
        }
    }
    virtq_reset(&vq);
    return 0;
}
