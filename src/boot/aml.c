/* aml.c: a small builder for ACPI Machine Language (ACPI 6.5, chapter 20). */
#include "boot/aml.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

/* Opcodes (ACPI 6.5, 20.3). */
#define AML_ZERO_OP 0x00
#define AML_ONE_OP 0x01
#define AML_NAME_OP 0x08
#define AML_BYTE_PREFIX 0x0a
#define AML_WORD_PREFIX 0x0b
#define AML_DWORD_PREFIX 0x0c
#define AML_STRING_PREFIX 0x0d
#define AML_QWORD_PREFIX 0x0e
#define AML_SCOPE_OP 0x10
#define AML_BUFFER_OP 0x11
#define AML_PACKAGE_OP 0x12
#define AML_METHOD_OP 0x14
#define AML_DUAL_NAME_PREFIX 0x2e
#define AML_MULTI_NAME_PREFIX 0x2f
#define AML_EXT_OP_PREFIX 0x5b
#define AML_DEVICE_OP 0x82 /* after AML_EXT_OP_PREFIX */
#define AML_ROOT_CHAR '\\'
#define AML_PARENT_PREFIX '^'
#define AML_RETURN_OP 0xa4

/* Resource descriptors (ACPI 6.5, 6.4). */
#define RES_IRQ_NOFLAGS 0x22      /* small item 0x04, length 2 */
#define RES_IO 0x47               /* small item 0x08, length 7 */
#define RES_END_TAG 0x79          /* small item 0x0f, length 1 */
#define RES_DWORD_ADDRESS 0x87    /* large items, then a 16-bit length */
#define RES_WORD_ADDRESS 0x88
#define RES_QWORD_ADDRESS 0x8a
#define RES_IO_DECODE16 0x01
#define RES_SPACE_MEMORY 0
#define RES_SPACE_IO 1
#define RES_SPACE_BUS 2
/* General flags of a bridge window: MaxFixed | MinFixed, PosDecode, ResourceProducer. */
#define RES_WINDOW_FLAGS 0x0c
#define RES_IO_ENTIRE_RANGE 0x03
#define RES_MEM_READ_WRITE 0x01   /* and NonCacheable */

#define AML_PKGLENGTH_MAX 0x0fffffffu
#define AML_NAMESEG_LEN 4

void aml_init(struct aml *a)
{
    *a = (struct aml){ 0 };
}

void aml_free(struct aml *a)
{
    free(a->buf);
    *a = (struct aml){ 0 };
}

int aml_error(const struct aml *a)
{
    return a->err;
}

static void aml_fail(struct aml *a, int err)
{
    if (!a->err)
        a->err = err;
}

static bool aml_reserve(struct aml *a, size_t extra)
{
    if (a->err)
        return false;
    if (extra <= a->cap - a->len)
        return true;
    if (extra > SIZE_MAX / 2 - a->len) {
        aml_fail(a, -ENOMEM);
        return false;
    }
    size_t cap = a->cap ? a->cap : 256;
    while (cap - a->len < extra)
        cap *= 2;
    uint8_t *buf = realloc(a->buf, cap);
    if (!buf) {
        aml_fail(a, -ENOMEM);
        return false;
    }
    a->buf = buf;
    a->cap = cap;
    return true;
}

void aml_append(struct aml *a, const void *bytes, size_t len)
{
    if (!aml_reserve(a, len))
        return;
    memcpy(a->buf + a->len, bytes, len);
    a->len += len;
}

void aml_byte(struct aml *a, uint8_t byte)
{
    aml_append(a, &byte, 1);
}

/* Inserts bytes at `pos`, moving what follows; used to put a PkgLength before its body. */
static void aml_insert(struct aml *a, size_t pos, const void *bytes, size_t len)
{
    if (pos > a->len) {
        aml_fail(a, -EINVAL);
        return;
    }
    if (!aml_reserve(a, len))
        return;
    memmove(a->buf + pos + len, a->buf + pos, a->len - pos);
    memcpy(a->buf + pos, bytes, len);
    a->len += len;
}

static void aml_le(struct aml *a, uint64_t value, size_t nr_bytes)
{
    uint8_t bytes[8];
    for (size_t i = 0; i < nr_bytes; i++)
        bytes[i] = (uint8_t)(value >> (8 * i));
    aml_append(a, bytes, nr_bytes);
}

size_t aml_pkglength_encode(uint32_t pkg_len, uint8_t out[4])
{
    if (pkg_len <= 0x3f) {
        out[0] = (uint8_t)pkg_len;
        return 1;
    }
    if (pkg_len > AML_PKGLENGTH_MAX)
        return 0;
    /* Lead byte: bits 7-6 = number of following bytes, bits 3-0 = the low nibble. */
    size_t follow = pkg_len <= 0xfff ? 1 : pkg_len <= 0xfffff ? 2 : 3;
    out[0] = (uint8_t)((follow << 6) | (pkg_len & 0x0f));
    for (size_t i = 1; i <= follow; i++)
        out[i] = (uint8_t)(pkg_len >> (4 + 8 * (i - 1)));
    return follow + 1;
}

/* The PkgLength for a body of `body_len` bytes: it counts its own bytes too. */
static size_t aml_pkglength_for_body(size_t body_len, uint8_t out[4])
{
    for (size_t size = 1; size <= 4; size++) {
        if (body_len > AML_PKGLENGTH_MAX - size)
            return 0;
        if (aml_pkglength_encode((uint32_t)(body_len + size), out) == size)
            return size;
    }
    return 0;
}

void aml_end(struct aml *a, size_t mark)
{
    if (a->err)
        return;
    if (mark > a->len) {
        aml_fail(a, -EINVAL);
        return;
    }
    uint8_t pkg[4];
    size_t pkg_size = aml_pkglength_for_body(a->len - mark, pkg);
    if (!pkg_size) {
        aml_fail(a, -E2BIG);
        return;
    }
    aml_insert(a, mark, pkg, pkg_size);
}

void aml_integer(struct aml *a, uint64_t value)
{
    if (value == 0) {
        aml_byte(a, AML_ZERO_OP);
    } else if (value == 1) {
        aml_byte(a, AML_ONE_OP);
    } else if (value <= UINT8_MAX) {
        aml_byte(a, AML_BYTE_PREFIX);
        aml_le(a, value, 1);
    } else if (value <= UINT16_MAX) {
        aml_byte(a, AML_WORD_PREFIX);
        aml_le(a, value, 2);
    } else if (value <= UINT32_MAX) {
        aml_byte(a, AML_DWORD_PREFIX);
        aml_le(a, value, 4);
    } else {
        aml_byte(a, AML_QWORD_PREFIX);
        aml_le(a, value, 8);
    }
}

void aml_string(struct aml *a, const char *s)
{
    for (const char *c = s; *c; c++) {
        if ((unsigned char)*c > 0x7f) {
            aml_fail(a, -EINVAL);
            return;
        }
    }
    aml_byte(a, AML_STRING_PREFIX);
    aml_append(a, s, strlen(s) + 1);
}

static int hex_digit(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

uint32_t aml_eisaid_value(const char *id)
{
    if (strlen(id) != 7)
        return 0;
    /* Three letters of 5 bits each ('A' = 1), then a 16-bit product number in hex. */
    uint32_t packed = 0;
    for (int i = 0; i < 3; i++) {
        if (id[i] < 'A' || id[i] > 'Z')
            return 0;
        packed = (packed << 5) | (uint32_t)(id[i] - 'A' + 1);
    }
    for (int i = 3; i < 7; i++) {
        int digit = hex_digit(id[i]);
        if (digit < 0)
            return 0;
        packed = (packed << 4) | (uint32_t)digit;
    }
    /* The ID is stored big-endian in a DWord that AML reads as little-endian. */
    return __builtin_bswap32(packed);
}

void aml_eisaid(struct aml *a, const char *id)
{
    uint32_t value = aml_eisaid_value(id);
    if (!value) {
        aml_fail(a, -EINVAL);
        return;
    }
    aml_byte(a, AML_DWORD_PREFIX);
    aml_le(a, value, 4);
}

static bool nameseg_char_ok(char c, bool first)
{
    return (c >= 'A' && c <= 'Z') || c == '_' || (!first && c >= '0' && c <= '9');
}

/* Appends the segment of `len` characters at `seg`, padded to four with '_'. */
static void aml_nameseg(struct aml *a, const char *seg, size_t len)
{
    char padded[AML_NAMESEG_LEN] = { '_', '_', '_', '_' };
    if (len == 0 || len > AML_NAMESEG_LEN) {
        aml_fail(a, -EINVAL);
        return;
    }
    for (size_t i = 0; i < len; i++) {
        if (!nameseg_char_ok(seg[i], i == 0)) {
            aml_fail(a, -EINVAL);
            return;
        }
        padded[i] = seg[i];
    }
    aml_append(a, padded, sizeof(padded));
}

void aml_name_string(struct aml *a, const char *path)
{
    if (*path == AML_ROOT_CHAR) {
        aml_byte(a, AML_ROOT_CHAR);
        path++;
    } else {
        while (*path == AML_PARENT_PREFIX)
            aml_byte(a, (uint8_t)*path++);
    }
    size_t nr_segs = *path ? 1 : 0;
    for (const char *c = path; *c; c++)
        nr_segs += *c == '.';
    if (nr_segs == 0) {
        aml_byte(a, AML_ZERO_OP); /* NullName */
        return;
    }
    if (nr_segs > UINT8_MAX) {
        aml_fail(a, -EINVAL);
        return;
    }
    if (nr_segs == 2) {
        aml_byte(a, AML_DUAL_NAME_PREFIX);
    } else if (nr_segs > 2) {
        aml_byte(a, AML_MULTI_NAME_PREFIX);
        aml_byte(a, (uint8_t)nr_segs);
    }
    while (*path) {
        size_t len = strcspn(path, ".");
        aml_nameseg(a, path, len);
        path += len;
        if (*path == '.' && *++path == '\0')
            aml_fail(a, -EINVAL); /* a trailing dot */
    }
}

void aml_name(struct aml *a, const char *path)
{
    aml_byte(a, AML_NAME_OP);
    aml_name_string(a, path);
}

void aml_name_integer(struct aml *a, const char *path, uint64_t value)
{
    aml_name(a, path);
    aml_integer(a, value);
}

void aml_name_str(struct aml *a, const char *path, const char *value)
{
    aml_name(a, path);
    aml_string(a, value);
}

void aml_name_eisaid(struct aml *a, const char *path, const char *id)
{
    aml_name(a, path);
    aml_eisaid(a, id);
}

/* The mark is where the PkgLength goes: right after the opcode. */
size_t aml_scope_begin(struct aml *a, const char *path)
{
    aml_byte(a, AML_SCOPE_OP);
    size_t mark = a->len;
    aml_name_string(a, path);
    return mark;
}

size_t aml_device_begin(struct aml *a, const char *path)
{
    aml_byte(a, AML_EXT_OP_PREFIX);
    aml_byte(a, AML_DEVICE_OP);
    size_t mark = a->len;
    aml_name_string(a, path);
    return mark;
}

size_t aml_method_begin(struct aml *a, const char *path, unsigned nr_args)
{
    if (nr_args > 7)
        aml_fail(a, -EINVAL);
    aml_byte(a, AML_METHOD_OP);
    size_t mark = a->len;
    aml_name_string(a, path);
    /* MethodFlags: bits 2-0 ArgCount; NotSerialized, SyncLevel 0. */
    aml_byte(a, (uint8_t)(nr_args & 7));
    return mark;
}

size_t aml_package_begin(struct aml *a, unsigned nr_elements)
{
    if (nr_elements > UINT8_MAX)
        aml_fail(a, -EINVAL);
    aml_byte(a, AML_PACKAGE_OP);
    size_t mark = a->len;
    aml_byte(a, (uint8_t)nr_elements);
    return mark;
}

void aml_return(struct aml *a)
{
    aml_byte(a, AML_RETURN_OP);
}

size_t aml_resource_begin(struct aml *a)
{
    aml_byte(a, AML_BUFFER_OP);
    return a->len;
}

void aml_resource_end(struct aml *a, size_t mark)
{
    /* Checksum 0: "treat the template as checksummed correctly" (6.4.2.9). */
    static const uint8_t end_tag[] = { RES_END_TAG, 0x00 };
    aml_append(a, end_tag, sizeof(end_tag));
    if (a->err)
        return;
    if (mark > a->len) {
        aml_fail(a, -EINVAL);
        return;
    }
    /* Buffer := BufferOp PkgLength BufferSize ByteList: BufferSize is an integer term. */
    struct aml size = { 0 };
    aml_integer(&size, a->len - mark);
    aml_insert(a, mark, size.buf, size.len);
    aml_fail(a, size.err);
    aml_free(&size);
    aml_end(a, mark);
}

void aml_res_io(struct aml *a, uint16_t min, uint16_t max, uint8_t align, uint8_t len)
{
    aml_byte(a, RES_IO);
    aml_byte(a, RES_IO_DECODE16);
    aml_le(a, min, 2);
    aml_le(a, max, 2);
    aml_byte(a, align);
    aml_byte(a, len);
}

void aml_res_irq_noflags(struct aml *a, unsigned irq)
{
    if (irq > 15) {
        aml_fail(a, -EINVAL);
        return;
    }
    aml_byte(a, RES_IRQ_NOFLAGS);
    aml_le(a, 1u << irq, 2);
}

/*
 * The address space descriptors share one layout: tag, 16-bit length of what follows,
 * resource type, general flags, type-specific flags, then granularity, minimum, maximum,
 * translation offset and length, each `width` bytes.
 */
static void aml_res_address(struct aml *a, uint8_t tag, size_t width, uint8_t space,
                            uint8_t type_flags, uint64_t min, uint64_t max)
{
    const uint64_t width_max = width == 8 ? UINT64_MAX : (1ULL << (8 * width)) - 1;
    /* The length field must hold max - min + 1: a window of the whole space cannot. */
    if (min > max || max - min == width_max) {
        aml_fail(a, -EINVAL);
        return;
    }
    aml_byte(a, tag);
    aml_le(a, 3 + 5 * width, 2);
    aml_byte(a, space);
    aml_byte(a, RES_WINDOW_FLAGS);
    aml_byte(a, type_flags);
    aml_le(a, 0, width);             /* granularity */
    aml_le(a, min, width);
    aml_le(a, max, width);
    aml_le(a, 0, width);             /* translation offset */
    aml_le(a, max - min + 1, width);
}

void aml_res_word_bus_number(struct aml *a, uint16_t min, uint16_t max)
{
    aml_res_address(a, RES_WORD_ADDRESS, 2, RES_SPACE_BUS, 0, min, max);
}

void aml_res_word_io(struct aml *a, uint16_t min, uint16_t max)
{
    aml_res_address(a, RES_WORD_ADDRESS, 2, RES_SPACE_IO, RES_IO_ENTIRE_RANGE, min, max);
}

void aml_res_dword_memory(struct aml *a, uint32_t min, uint32_t max)
{
    aml_res_address(a, RES_DWORD_ADDRESS, 4, RES_SPACE_MEMORY, RES_MEM_READ_WRITE, min, max);
}

void aml_res_qword_memory(struct aml *a, uint64_t min, uint64_t max)
{
    aml_res_address(a, RES_QWORD_ADDRESS, 8, RES_SPACE_MEMORY, RES_MEM_READ_WRITE, min, max);
}
