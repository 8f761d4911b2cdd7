/* aml.h: a small builder for ACPI Machine Language (the byte code of the DSDT). */
#ifndef GODWIT_AML_H
#define GODWIT_AML_H

#include <stddef.h>
#include <stdint.h>

/*
 * A growable byte buffer. The first failure (no memory, an invalid name, a length AML
 * cannot encode) is kept in `err` and every later call does nothing, so that a caller
 * checks once, at the end, with aml_error().
 *
 * Objects with a body (Scope, Device, Method, Package, ResourceTemplate) are built as
 *     size_t dev = aml_device_begin(a, "COM1");
 *     ... the body ...
 *     aml_end(a, dev);
 * and the PkgLength is inserted when the body is complete, so every size is exact.
 */
struct aml {
    uint8_t *buf;
    size_t len;
    size_t cap;
    int err; /* 0, or -ENOMEM / -EINVAL / -E2BIG */
};

void aml_init(struct aml *a);
void aml_free(struct aml *a);
int aml_error(const struct aml *a);

void aml_append(struct aml *a, const void *bytes, size_t len);
void aml_byte(struct aml *a, uint8_t byte);

/*
 * Encodes the PkgLength value `pkg_len` (which counts its own bytes) into out[].
 * Returns the number of bytes (1-4), or 0 when the value is above 2^28 - 1.
 */
size_t aml_pkglength_encode(uint32_t pkg_len, uint8_t out[4]);

/* Data objects. */
void aml_integer(struct aml *a, uint64_t value);   /* Zero, One, or the smallest prefix */
void aml_string(struct aml *a, const char *s);      /* ASCII, NUL-terminated */
uint32_t aml_eisaid_value(const char *id);          /* "PNP0A03" -> 0x030ad041; 0 if invalid */
void aml_eisaid(struct aml *a, const char *id);

/*
 * A NameString: an optional root '\' or parent '^' prefixes, then dot-separated
 * segments of 1-4 characters [A-Z0-9_] (the first not a digit), padded with '_'.
 * "\\_SB.PCI0", "_HID", "^COM1".
 */
void aml_name_string(struct aml *a, const char *path);

/* Name (path, <object>): the caller appends the object next. */
void aml_name(struct aml *a, const char *path);
void aml_name_integer(struct aml *a, const char *path, uint64_t value);
void aml_name_str(struct aml *a, const char *path, const char *value);
void aml_name_eisaid(struct aml *a, const char *path, const char *id);

/* Objects with a body: each returns a mark to hand to aml_end(). */
size_t aml_scope_begin(struct aml *a, const char *path);
size_t aml_device_begin(struct aml *a, const char *path);
size_t aml_method_begin(struct aml *a, const char *path, unsigned nr_args);
size_t aml_package_begin(struct aml *a, unsigned nr_elements);
void aml_end(struct aml *a, size_t mark);

/* Return (<object>): the caller appends the object next. */
void aml_return(struct aml *a);

/*
 * ResourceTemplate () { ... }: a Buffer of resource descriptors. aml_resource_end() adds
 * the end tag and the buffer's size.
 */
size_t aml_resource_begin(struct aml *a);
void aml_resource_end(struct aml *a, size_t mark);

/* IO (Decode16, min, max, align, len) */
void aml_res_io(struct aml *a, uint16_t min, uint16_t max, uint8_t align, uint8_t len);
/* IRQNoFlags () { irq }: edge-triggered, active high, exclusive */
void aml_res_irq_noflags(struct aml *a, unsigned irq);
/* Address space windows a bridge decodes: ResourceProducer, MinFixed, MaxFixed, PosDecode */
void aml_res_word_bus_number(struct aml *a, uint16_t min, uint16_t max);
void aml_res_word_io(struct aml *a, uint16_t min, uint16_t max);          /* EntireRange */
void aml_res_dword_memory(struct aml *a, uint32_t min, uint32_t max);    /* NonCacheable, RW */
void aml_res_qword_memory(struct aml *a, uint64_t min, uint64_t max);    /* NonCacheable, RW */

#endif
