/* fuzz_config.c: the JSON configuration (--config FILE, the migration HELLO), and its round trip. */
#include "fuzz_common.h"
#include "lib/config.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fuzz_quiet();
    return 0;
}

/* A configuration that parses is written back, and what is written parses to the same. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static char first[1 << 16], second[1 << 16];
    struct vm_config cfg, cfg2;
    struct config_extra extra, extra2;
    struct config_strings owned = { 0 }, owned2 = { 0 };
    struct config_error err;
    int len, len2;

    if (config_parse_json((const char *)data, size, &cfg, &extra, &owned, &err) != 0) {
        FUZZ_CHECK(memchr(err.message, 0, sizeof(err.message)) != NULL);
        return 0;
    }
    len = config_to_json(&cfg, &extra, first, sizeof(first));
    if (len >= 0) {
        FUZZ_CHECK(config_parse_json(first, (size_t)len, &cfg2, &extra2, &owned2, &err) == 0);
        len2 = config_to_json(&cfg2, &extra2, second, sizeof(second));
        FUZZ_CHECK(len2 == len && memcmp(first, second, (size_t)len) == 0);
        config_strings_free(&owned2);
    }
    config_strings_free(&owned);
    return 0;
}
