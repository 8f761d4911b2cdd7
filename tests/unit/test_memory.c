/* test_memory.c: guest RAM layout around the MMIO hole and the checked translation. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <errno.h>
#include <fcntl.h>
#include <unistd.h>
#include <cmocka.h>

#include "vm/memory.h"

static void test_small_guest_is_one_region(void **state)
{
    (void)state;
    struct guest_memory gm;
    assert_int_equal(gm_init(&gm, 64 << 20, false), 0);
    assert_int_equal(gm.nr_regions, 1);
    assert_int_equal(gm_low_ram_end(&gm), 64 << 20);
    assert_non_null(gm_ptr(&gm, 0, 64 << 20));
    assert_non_null(gm_ptr(&gm, (64 << 20) - 1, 1));
    assert_null(gm_ptr(&gm, (64 << 20) - 1, 2));
    assert_null(gm_ptr(&gm, 64 << 20, 1));
    assert_null(gm_ptr(&gm, 0x1000, UINT64_MAX));
    assert_null(gm_ptr(&gm, UINT64_MAX, 2));
    gm_destroy(&gm);
}

static void test_large_guest_skips_the_hole(void **state)
{
    (void)state;
    struct guest_memory gm;
    const uint64_t size = 4ULL << 30; /* MAP_NORESERVE: nothing is touched */
    assert_int_equal(gm_init(&gm, size, false), 0);
    assert_int_equal(gm.nr_regions, 2);
    assert_int_equal(gm_low_ram_end(&gm), GM_MMIO_HOLE_START);
    assert_int_equal(gm.regions[1].gpa, GM_MMIO_HOLE_END);
    assert_int_equal(gm.regions[1].size, size - GM_MMIO_HOLE_START);
    assert_null(gm_ptr(&gm, GM_MMIO_HOLE_START, 1));
    assert_null(gm_ptr(&gm, GM_MMIO_HOLE_START - 4, 8)); /* straddles into the hole */
    assert_non_null(gm_ptr(&gm, GM_MMIO_HOLE_END, 4096));
    /* Both views of the memfd are the same memory: writes land where reads find them. */
    uint32_t v = 0xfeedface, r = 0;
    assert_int_equal(gm_write(&gm, GM_MMIO_HOLE_END + 8, &v, sizeof(v)), 0);
    assert_int_equal(gm_read(&gm, GM_MMIO_HOLE_END + 8, &r, sizeof(r)), 0);
    assert_int_equal(r, v);
    assert_int_equal(gm_write(&gm, GM_MMIO_HOLE_START, &v, sizeof(v)), -EFAULT);
    gm_destroy(&gm);
}

static void test_bad_sizes_rejected(void **state)
{
    (void)state;
    struct guest_memory gm;
    assert_int_equal(gm_init(&gm, 63 << 20, false), -EINVAL);
    assert_int_equal(gm_init(&gm, (64 << 20) + 1, false), -EINVAL);
    assert_int_equal(gm_init(&gm, (64 << 20) + 4096, true), -EINVAL);
}

/* A memory file handed over by another process: mapped shared in the same layout (both sides
 * see each other's writes, above the hole too), refused when it is smaller than the RAM or
 * not a file; the caller keeps its own descriptor. */
static void test_handed_over_file(void **state)
{
    (void)state;
    struct guest_memory src, dst;
    const uint64_t size = 4ULL << 30;
    assert_int_equal(gm_init(&src, size, false), 0);
    assert_int_equal(gm_init_from_fd(&dst, size, false, src.memfd), 0);
    assert_false(dst.private_file);
    assert_int_not_equal(dst.memfd, src.memfd);
    assert_int_equal(dst.nr_regions, 2);
    assert_int_equal(dst.ram_size, size);
    uint32_t v = 0xc0ffee, r = 0;
    assert_int_equal(gm_write(&src, GM_MMIO_HOLE_END + 4096, &v, sizeof(v)), 0);
    assert_int_equal(gm_read(&dst, GM_MMIO_HOLE_END + 4096, &r, sizeof(r)), 0);
    assert_int_equal(r, v);
    assert_int_equal(gm_write(&dst, 8, &v, sizeof(v)), 0);
    assert_int_equal(gm_read(&src, 8, &r, sizeof(r)), 0);
    assert_int_equal(r, v);
    gm_destroy(&dst);
    assert_int_equal(gm_init_from_fd(&dst, size + 4096, false, src.memfd), -EINVAL);
    int pipefd[2];
    assert_int_equal(pipe(pipefd), 0);
    assert_int_equal(gm_init_from_fd(&dst, 64 << 20, false, pipefd[0]), -EINVAL);
    close(pipefd[0]);
    close(pipefd[1]);
    assert_int_equal(fcntl(src.memfd, F_GETFD) >= 0, 1); /* still the source's */
    gm_destroy(&src);
}

static bool page_bit(const unsigned long *bm, uint64_t page)
{
    return (bm[page / GM_BITS_PER_LONG] >> (page % GM_BITS_PER_LONG)) & 1;
}

static uint64_t bits_set(const unsigned long *bm, uint64_t nr_pages)
{
    uint64_t n = 0;
    for (uint64_t i = 0; i < (nr_pages + GM_BITS_PER_LONG - 1) / GM_BITS_PER_LONG; i++)
        n += (uint64_t)__builtin_popcountl(bm[i]);
    return n;
}

/* The device dirty bitmap is indexed by the page's offset in the memory file: above 4 GiB
 * the pages follow the low region's. */
static void test_mark_dirty_uses_file_pages(void **state)
{
    (void)state;
    struct guest_memory gm;
    const uint64_t size = 4ULL << 30, pages = size / GM_PAGE_SIZE;
    const uint64_t low_pages = GM_MMIO_HOLE_START / GM_PAGE_SIZE;
    assert_int_equal(gm_init(&gm, size, false), 0);
    assert_null(gm.dirty);
    unsigned long *bm = calloc((pages + GM_BITS_PER_LONG - 1) / GM_BITS_PER_LONG, sizeof(*bm));
    assert_non_null(bm);

    /* Off: nothing is marked, nothing breaks. */
    uint32_t v = 1;
    assert_int_equal(gm_write(&gm, 0x1000, &v, sizeof(v)), 0);
    gm_mark_dirty(&gm, 0, size);
    assert_int_equal(bits_set(bm, pages), 0);

    gm.dirty = bm;
    assert_ptr_equal(gm_dirty_bitmap(&gm), bm);
    assert_int_equal(gm_write(&gm, 0x1ffe, &v, sizeof(v)), 0); /* across pages 1 and 2 */
    assert_true(page_bit(bm, 1) && page_bit(bm, 2));
    assert_int_equal(bits_set(bm, pages), 2);
    assert_int_equal(gm_write(&gm, GM_MMIO_HOLE_END + 5 * GM_PAGE_SIZE, &v, sizeof(v)), 0);
    assert_true(page_bit(bm, low_pages + 5));
    /* A refused write marks nothing. */
    assert_int_equal(gm_write(&gm, GM_MMIO_HOLE_START, &v, sizeof(v)), -EFAULT);
    assert_int_equal(bits_set(bm, pages), 3);

    /* A range over the MMIO hole marks both regions' parts, not the hole. */
    gm_mark_dirty(&gm, GM_MMIO_HOLE_START - GM_PAGE_SIZE, GM_MMIO_HOLE_END - GM_MMIO_HOLE_START +
                                                              2 * GM_PAGE_SIZE);
    assert_true(page_bit(bm, low_pages - 1) && page_bit(bm, low_pages));
    assert_int_equal(bits_set(bm, pages), 5);
    /* Many words at once; lengths that would overflow are clamped; zero marks nothing. */
    gm_mark_dirty(&gm, 64 * GM_PAGE_SIZE + 1, 200 * GM_PAGE_SIZE);
    assert_true(page_bit(bm, 64) && page_bit(bm, 264) && !page_bit(bm, 63) && !page_bit(bm, 265));
    assert_int_equal(bits_set(bm, pages), 5 + 201);
    const uint64_t ram_end = GM_MMIO_HOLE_END + (size - GM_MMIO_HOLE_START);
    gm_mark_dirty(&gm, ram_end + GM_PAGE_SIZE, 4096); /* beyond RAM: nothing */
    gm_mark_dirty(&gm, 300 * GM_PAGE_SIZE, 0);
    assert_false(page_bit(bm, 300));
    assert_int_equal(bits_set(bm, pages), 5 + 201);
    gm_mark_dirty(&gm, ram_end - 1, UINT64_MAX);
    assert_true(page_bit(bm, pages - 1)); /* the last page, from the clamped range */
    assert_int_equal(bits_set(bm, pages), 5 + 201 + 1);
    gm_mark_dirty(&gm, 0, UINT64_MAX);
    assert_int_equal(bits_set(bm, pages), pages);

    gm.dirty = NULL;
    free(bm);
    gm_destroy(&gm);
}

static void test_file_ptr(void **state)
{
    (void)state;
    struct guest_memory gm;
    const uint64_t size = 4ULL << 30;
    assert_int_equal(gm_init(&gm, size, false), 0);
    assert_ptr_equal(gm_file_ptr(&gm, 0, 4096), gm_ptr(&gm, 0, 4096));
    assert_ptr_equal(gm_file_ptr(&gm, GM_MMIO_HOLE_START, 4096), gm_ptr(&gm, GM_MMIO_HOLE_END, 4096));
    assert_ptr_equal(gm_file_ptr(&gm, size - 8, 8), gm_ptr(&gm, GM_MMIO_HOLE_END + size -
                                                                    GM_MMIO_HOLE_START - 8, 8));
    assert_null(gm_file_ptr(&gm, GM_MMIO_HOLE_START - 4, 8)); /* straddles the regions */
    assert_null(gm_file_ptr(&gm, size, 1));
    assert_null(gm_file_ptr(&gm, 4096, UINT64_MAX));
    gm_destroy(&gm);
}

/* An image of five pages and a bit, misaligned: data, two zero pages, data, a zero page, data. */
#define IMG_MISALIGN 0x123u
#define IMG_LEN (5 * GM_PAGE_SIZE + 100)
static void make_image(uint8_t *img)
{
    memset(img, 0, IMG_LEN);
    for (unsigned i = 0; i < IMG_LEN; i++) {
        unsigned page = (unsigned)((IMG_MISALIGN + i) / GM_PAGE_SIZE);
        if (page != 1 && page != 2 && page != 4)
            img[i] = (uint8_t)(i * 7 + 1);
    }
}

/* What a boot loads reads back exactly, over stale bytes, and leaves its neighbours alone;
 * its zero pages cost no memory in a fresh guest. */
static void test_load_writes_through_the_file(void **state)
{
    (void)state;
    struct guest_memory gm;
    static uint8_t img[IMG_LEN];
    const uint64_t gpa = (2ULL << 20) + IMG_MISALIGN;
    struct stat st;

    make_image(img);
    assert_int_equal(gm_init(&gm, 64 << 20, false), 0);
    assert_true(gm.file_writes);
    assert_int_equal(gm_load(&gm, gpa, img, IMG_LEN), 0);
    /* Before reading it back: a read through the mapping allocates the holes it touches. */
    assert_int_equal(fstat(gm.memfd, &st), 0);
    assert_int_equal(st.st_blocks * 512, 3 * GM_PAGE_SIZE); /* pages 0, 3 and 5 only */
    assert_memory_equal(gm_ptr(&gm, gpa, IMG_LEN), img, IMG_LEN);

    uint8_t *host = gm_ptr(&gm, gpa - IMG_MISALIGN, 7 * GM_PAGE_SIZE);
    memset(host, 0xaa, 7 * GM_PAGE_SIZE);
    assert_int_equal(gm_load(&gm, gpa, img, IMG_LEN), 0);
    assert_memory_equal(host + IMG_MISALIGN, img, IMG_LEN);
    assert_int_equal(host[IMG_MISALIGN - 1], 0xaa);
    assert_int_equal(host[IMG_MISALIGN + IMG_LEN], 0xaa);
    assert_int_equal(gm_load(&gm, (64 << 20) - 100, img, IMG_LEN), -EFAULT);
    gm_destroy(&gm);
}

static void test_zero_whole_and_partial_pages(void **state)
{
    (void)state;
    struct guest_memory gm;
    assert_int_equal(gm_init(&gm, 64 << 20, false), 0);
    uint8_t *host = gm_ptr(&gm, 0x100000, 8 * GM_PAGE_SIZE);
    memset(host, 0xaa, 8 * GM_PAGE_SIZE);
    const uint64_t start = 0x100000 + 10, len = 5 * GM_PAGE_SIZE;
    assert_int_equal(gm_zero(&gm, start, len), 0);
    for (uint64_t i = 0; i < 8 * GM_PAGE_SIZE; i++) {
        bool inside = 0x100000 + i >= start && 0x100000 + i < start + len;
        assert_int_equal(host[i], inside ? 0 : 0xaa);
    }
    assert_int_equal(gm_zero(&gm, (64 << 20) - 1, 2), -EFAULT);
    gm_destroy(&gm);
}

/* A restored guest's RAM is a snapshot's file mapped privately: a load must not write it. */
static void test_load_into_private_file_leaves_it(void **state)
{
    (void)state;
    struct guest_memory gm;
    static uint8_t img[IMG_LEN];
    char path[] = "/tmp/godwit-test-memory.XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    unlink(path);
    assert_int_equal(ftruncate(fd, 64 << 20), 0);
    assert_int_equal(gm_init_private(&gm, 64 << 20, fd), 0);
    assert_false(gm.file_writes);
    make_image(img);
    assert_int_equal(gm_load(&gm, 0x200000, img, IMG_LEN), 0);
    assert_memory_equal(gm_ptr(&gm, 0x200000, IMG_LEN), img, IMG_LEN);
    uint8_t first;
    assert_int_equal(pread(gm.memfd, &first, 1, 0x200000), 1);
    assert_int_equal(first, 0);
    gm_destroy(&gm);
}

/* Kilobytes of shared memory this process maps with PMDs (2 MiB pages). */
static long shmem_pmd_kib(void)
{
    char line[256];
    long kib = -1;
    FILE *f = fopen("/proc/self/smaps_rollup", "r");
    if (!f)
        return -1;
    while (fgets(line, sizeof(line), f))
        if (sscanf(line, "ShmemPmdMapped: %ld kB", &kib) == 1)
            break;
    fclose(f);
    return kib;
}

/* Where the host allows THP and we may mount (root): guest RAM, a kernel loaded into it
 * included, is mapped in 2 MiB pages; and its file is one that can be handed over. */
static void test_ram_dir_gives_huge_pages(void **state)
{
    (void)state;
    struct guest_memory gm, other;
    static uint8_t img[IMG_LEN];
    int dir = gm_ram_dir_open();
    if (dir < 0)
        skip();
    long before = shmem_pmd_kib();
    assert_int_equal(gm_init_in(&gm, 64 << 20, false, dir), 0);
    assert_true(gm.thp);
    make_image(img);
    const uint64_t gpa = (2ULL << 20) + IMG_MISALIGN;
    assert_int_equal(gm_load(&gm, gpa, img, IMG_LEN), 0);
    assert_memory_equal(gm_ptr(&gm, gpa, IMG_LEN), img, IMG_LEN);
    memset(gm_ptr(&gm, 4 << 20, 2 << 20), 0x5a, 2 << 20);
    assert_true(shmem_pmd_kib() - before >= 4096); /* the loaded piece and the written one */
    assert_int_equal(gm_init_from_fd(&other, 64 << 20, false, gm.memfd), 0);
    assert_memory_equal(gm_ptr(&other, gpa, IMG_LEN), img, IMG_LEN);
    gm_destroy(&other);
    gm_destroy(&gm);
    close(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_small_guest_is_one_region),
        cmocka_unit_test(test_large_guest_skips_the_hole),
        cmocka_unit_test(test_bad_sizes_rejected),
        cmocka_unit_test(test_handed_over_file),
        cmocka_unit_test(test_mark_dirty_uses_file_pages),
        cmocka_unit_test(test_file_ptr),
        cmocka_unit_test(test_load_writes_through_the_file),
        cmocka_unit_test(test_zero_whole_and_partial_pages),
        cmocka_unit_test(test_load_into_private_file_leaves_it),
        cmocka_unit_test(test_ram_dir_gives_huge_pages),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
