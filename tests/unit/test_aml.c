/* test_aml.c: the AML builder's encodings, checked byte for byte. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <errno.h>
#include <cmocka.h>

#include "boot/aml.h"

/* Builds with `build`, then compares the bytes with `expect`. */
#define assert_aml_bytes(a, ...)                                                       \
    do {                                                                               \
        const uint8_t expect_[] = { __VA_ARGS__ };                                     \
        assert_int_equal(aml_error(a), 0);                                             \
        assert_int_equal((a)->len, sizeof(expect_));                                   \
        assert_memory_equal((a)->buf, expect_, sizeof(expect_));                       \
    } while (0)

static void expect_pkglength(uint32_t value, size_t nr_bytes, const uint8_t *bytes)
{
    uint8_t out[4] = { 0 };
    assert_int_equal(aml_pkglength_encode(value, out), nr_bytes);
    assert_memory_equal(out, bytes, nr_bytes);
}

static void test_pkglength_encoding_boundaries(void **state)
{
    (void)state;
    expect_pkglength(0, 1, (const uint8_t[]){ 0x00 });
    expect_pkglength(63, 1, (const uint8_t[]){ 0x3f });
    /* From 64 on, bits 7-6 of the lead byte count the bytes that follow. */
    expect_pkglength(64, 2, (const uint8_t[]){ 0x40, 0x04 });
    expect_pkglength(4095, 2, (const uint8_t[]){ 0x4f, 0xff });
    expect_pkglength(4096, 3, (const uint8_t[]){ 0x80, 0x00, 0x01 });
    expect_pkglength(0xfffff, 3, (const uint8_t[]){ 0x8f, 0xff, 0xff });
    expect_pkglength(0x100000, 4, (const uint8_t[]){ 0xc0, 0x00, 0x00, 0x01 });
    expect_pkglength(0x0fffffff, 4, (const uint8_t[]){ 0xcf, 0xff, 0xff, 0xff });
    uint8_t out[4];
    assert_int_equal(aml_pkglength_encode(0x10000000, out), 0);
}

/* A package whose body (count byte + elements) is `body_len` bytes long. */
static void check_body_pkglength(size_t body_len, size_t pkg_size, uint32_t pkg_value)
{
    struct aml a;
    aml_init(&a);
    size_t mark = aml_package_begin(&a, 0);
    for (size_t i = 1; i < body_len; i++)
        aml_byte(&a, (uint8_t)i);
    aml_end(&a, mark);
    assert_int_equal(aml_error(&a), 0);
    assert_int_equal(a.len, 1 + pkg_size + body_len);

    uint8_t expect[4];
    assert_int_equal(aml_pkglength_encode(pkg_value, expect), pkg_size);
    assert_memory_equal(a.buf + 1, expect, pkg_size);
    /* The PkgLength counts itself and the body, and the body moved intact. */
    assert_int_equal(pkg_value, pkg_size + body_len);
    assert_int_equal(a.buf[1 + pkg_size], 0);
    assert_int_equal(a.buf[a.len - 1], (uint8_t)(body_len - 1));
    aml_free(&a);
}

static void test_pkglength_fits_its_body(void **state)
{
    (void)state;
    check_body_pkglength(1, 1, 2);
    check_body_pkglength(62, 1, 63);     /* the largest one-byte PkgLength */
    check_body_pkglength(63, 2, 65);     /* 64 would not fit in one byte */
    check_body_pkglength(64, 2, 66);
    check_body_pkglength(4093, 2, 4095); /* the largest two-byte PkgLength */
    check_body_pkglength(4094, 3, 4097);
    check_body_pkglength(4096, 3, 4099);
}

static void test_integer_encodings(void **state)
{
    (void)state;
    struct aml a;
    aml_init(&a);
    aml_integer(&a, 0);
    aml_integer(&a, 1);
    aml_integer(&a, 2);
    aml_integer(&a, 0xff);
    aml_integer(&a, 0x100);
    aml_integer(&a, 0xffff);
    aml_integer(&a, 0x10000);
    aml_integer(&a, 0xffffffff);
    aml_integer(&a, 0x100000000ULL);
    aml_integer(&a, UINT64_MAX);
    assert_aml_bytes(&a, 0x00, 0x01, 0x0a, 0x02, 0x0a, 0xff, 0x0b, 0x00, 0x01, 0x0b, 0xff, 0xff,
                     0x0c, 0x00, 0x00, 0x01, 0x00, 0x0c, 0xff, 0xff, 0xff, 0xff,
                     0x0e, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00,
                     0x0e, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff);
    aml_free(&a);
}

static void test_string_and_eisaid(void **state)
{
    (void)state;
    assert_int_equal(aml_eisaid_value("PNP0A03"), 0x030ad041);
    assert_int_equal(aml_eisaid_value("PNP0501"), 0x0105d041);
    assert_int_equal(aml_eisaid_value("PNP0B00"), 0x000bd041);
    assert_int_equal(aml_eisaid_value("pnp0a03"), 0);
    assert_int_equal(aml_eisaid_value("PNP0A0"), 0);
    assert_int_equal(aml_eisaid_value("PNP0A0G"), 0);

    struct aml a;
    aml_init(&a);
    aml_string(&a, "QEMU0001");
    aml_eisaid(&a, "PNP0A03");
    assert_aml_bytes(&a, 0x0d, 'Q', 'E', 'M', 'U', '0', '0', '0', '1', 0x00,
                     0x0c, 0x41, 0xd0, 0x0a, 0x03);
    aml_free(&a);
}

static void test_name_strings(void **state)
{
    (void)state;
    struct aml a;
    aml_init(&a);
    aml_name_string(&a, "_HID");
    aml_name_string(&a, "RTC");
    aml_name_string(&a, "\\_SB");
    aml_name_string(&a, "\\_SB.PCI0");
    aml_name_string(&a, "\\_SB.PCI0.ISA");
    aml_name_string(&a, "^^COM1");
    aml_name_string(&a, "\\");
    assert_aml_bytes(&a, '_', 'H', 'I', 'D', 'R', 'T', 'C', '_', '\\', '_', 'S', 'B', '_',
                     '\\', 0x2e, '_', 'S', 'B', '_', 'P', 'C', 'I', '0',
                     '\\', 0x2f, 0x03, '_', 'S', 'B', '_', 'P', 'C', 'I', '0', 'I', 'S', 'A', '_',
                     '^', '^', 'C', 'O', 'M', '1', '\\', 0x00);
    aml_free(&a);
}

static void test_invalid_names_fail_and_stick(void **state)
{
    (void)state;
    static const char *const bad[] = { "pci0", "ABCDE", "1ABC", "A..B", "A.", ".A", "A-B" };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct aml a;
        aml_init(&a);
        aml_name_string(&a, bad[i]);
        assert_int_equal(aml_error(&a), -EINVAL);
        size_t len = a.len;
        aml_integer(&a, 0x1234);
        assert_int_equal(a.len, len); /* nothing more is appended after a failure */
        aml_free(&a);
    }
}

static void test_address_windows_must_be_encodable(void **state)
{
    (void)state;
    struct aml a;
    aml_init(&a);
    aml_res_word_io(&a, 0x0000, 0xffff); /* a length of 0x10000 does not fit in a word */
    assert_int_equal(aml_error(&a), -EINVAL);
    aml_free(&a);
    aml_init(&a);
    aml_res_dword_memory(&a, 2, 1);
    assert_int_equal(aml_error(&a), -EINVAL);
    aml_free(&a);
    aml_init(&a);
    aml_res_irq_noflags(&a, 16);
    assert_int_equal(aml_error(&a), -EINVAL);
    aml_free(&a);
}

/*
 * The reference bytes are what iasl 20200925 compiles (after the 36-byte header) from:
 *   Name (_S5, Package (4) { 5, 5, 0, 0 })
 *   Scope (\_SB) {
 *     Device (COM1) {
 *       Name (_HID, EisaId ("PNP0501"))  Name (_UID, 1)
 *       Name (_CRS, ResourceTemplate () { IO (Decode16, 0x3F8, 0x3F8, 0x01, 0x08)
 *                                         IRQNoFlags () {4} }) }
 *     Device (PEVT) {
 *       Name (_HID, "QEMU0001")  Method (_STA, 0, NotSerialized) { Return (0x0F) } }
 *     Device (BRDG) {
 *       Name (_CRS, ResourceTemplate () {
 *         WordBusNumber (ResourceProducer, MinFixed, MaxFixed, PosDecode, 0, 0, 0xFF, 0, 0x100)
 *         WordIO (ResourceProducer, MinFixed, MaxFixed, PosDecode, EntireRange,
 *                 0, 0x0D00, 0xFFFF, 0, 0xF300)
 *         DWordMemory (ResourceProducer, PosDecode, MinFixed, MaxFixed, NonCacheable,
 *                      ReadWrite, 0, 0xC0000000, 0xDFFFFFFF, 0, 0x20000000)
 *         QWordMemory (ResourceProducer, PosDecode, MinFixed, MaxFixed, NonCacheable,
 *                      ReadWrite, 0, 0x100000000, 0x1FFFFFFFF, 0, 0x100000000) }) } }
 */
static const uint8_t iasl_reference[] = {
    0x08, 0x5f, 0x53, 0x35, 0x5f, 0x12, 0x08, 0x04, 0x0a, 0x05, 0x0a, 0x05,
    0x00, 0x00, 0x10, 0x4f, 0x0c, 0x5f, 0x53, 0x42, 0x5f, 0x5b, 0x82, 0x2b,
    0x43, 0x4f, 0x4d, 0x31, 0x08, 0x5f, 0x48, 0x49, 0x44, 0x0c, 0x41, 0xd0,
    0x05, 0x01, 0x08, 0x5f, 0x55, 0x49, 0x44, 0x01, 0x08, 0x5f, 0x43, 0x52,
    0x53, 0x11, 0x10, 0x0a, 0x0d, 0x47, 0x01, 0xf8, 0x03, 0xf8, 0x03, 0x01,
    0x08, 0x22, 0x10, 0x00, 0x79, 0x00, 0x5b, 0x82, 0x1e, 0x50, 0x45, 0x56,
    0x54, 0x08, 0x5f, 0x48, 0x49, 0x44, 0x0d, 0x51, 0x45, 0x4d, 0x55, 0x30,
    0x30, 0x30, 0x31, 0x00, 0x14, 0x09, 0x5f, 0x53, 0x54, 0x41, 0x00, 0xa4,
    0x0a, 0x0f, 0x5b, 0x82, 0x4a, 0x07, 0x42, 0x52, 0x44, 0x47, 0x08, 0x5f,
    0x43, 0x52, 0x53, 0x11, 0x4e, 0x06, 0x0a, 0x6a, 0x88, 0x0d, 0x00, 0x02,
    0x0c, 0x00, 0x00, 0x00, 0x00, 0x00, 0xff, 0x00, 0x00, 0x00, 0x00, 0x01,
    0x88, 0x0d, 0x00, 0x01, 0x0c, 0x03, 0x00, 0x00, 0x00, 0x0d, 0xff, 0xff,
    0x00, 0x00, 0x00, 0xf3, 0x87, 0x17, 0x00, 0x00, 0x0c, 0x01, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0xc0, 0xff, 0xff, 0xff, 0xdf, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x20, 0x8a, 0x2b, 0x00, 0x00, 0x0c, 0x01,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x01, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0x01, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x01, 0x00, 0x00, 0x00, 0x79, 0x00,
};

static void build_reference(struct aml *a)
{
    aml_name(a, "_S5");
    size_t pkg = aml_package_begin(a, 4);
    aml_integer(a, 5);
    aml_integer(a, 5);
    aml_integer(a, 0);
    aml_integer(a, 0);
    aml_end(a, pkg);
    size_t sb = aml_scope_begin(a, "_SB"); /* iasl drops the '\' at the root scope */

    size_t com1 = aml_device_begin(a, "COM1");
    aml_name_eisaid(a, "_HID", "PNP0501");
    aml_name_integer(a, "_UID", 1);
    aml_name(a, "_CRS");
    size_t res = aml_resource_begin(a);
    aml_res_io(a, 0x3f8, 0x3f8, 1, 8);
    aml_res_irq_noflags(a, 4);
    aml_resource_end(a, res);
    aml_end(a, com1);

    size_t pevt = aml_device_begin(a, "PEVT");
    aml_name_str(a, "_HID", "QEMU0001");
    size_t sta = aml_method_begin(a, "_STA", 0);
    aml_return(a);
    aml_integer(a, 0x0f);
    aml_end(a, sta);
    aml_end(a, pevt);

    size_t brdg = aml_device_begin(a, "BRDG");
    aml_name(a, "_CRS");
    res = aml_resource_begin(a);
    aml_res_word_bus_number(a, 0, 0xff);
    aml_res_word_io(a, 0x0d00, 0xffff);
    aml_res_dword_memory(a, 0xc0000000, 0xdfffffff);
    aml_res_qword_memory(a, 0x100000000ULL, 0x1ffffffffULL);
    aml_resource_end(a, res);
    aml_end(a, brdg);

    aml_end(a, sb);
}

static void test_matches_iasl_output(void **state)
{
    (void)state;
    struct aml a;
    aml_init(&a);
    build_reference(&a);
    assert_int_equal(aml_error(&a), 0);
    assert_int_equal(a.len, sizeof(iasl_reference));
    assert_memory_equal(a.buf, iasl_reference, sizeof(iasl_reference));
    aml_free(&a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pkglength_encoding_boundaries),
        cmocka_unit_test(test_pkglength_fits_its_body),
        cmocka_unit_test(test_integer_encodings),
        cmocka_unit_test(test_string_and_eisaid),
        cmocka_unit_test(test_name_strings),
        cmocka_unit_test(test_invalid_names_fail_and_stick),
        cmocka_unit_test(test_address_windows_must_be_encodable),
        cmocka_unit_test(test_matches_iasl_output),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
