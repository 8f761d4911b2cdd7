/* fuzz_device_options.c: the values of --disk, --net and --console, and MAC addresses. */
#include "fuzz_common.h"
#include "lib/device_options.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fuzz_quiet();
    return 0;
}

static void check_disk(const char *arg)
{
    struct config_strings owned = { 0 };
    struct godwit_disk disk = { 0 };

    if (devopt_parse_disk("--disk", arg, &disk, &owned) == 0) {
        FUZZ_CHECK(disk.path != NULL);
        FUZZ_CHECK(!disk.serial || strlen(disk.serial) <= DEVICE_SERIAL_MAX);
        FUZZ_CHECK(disk.queues <= DEVICE_MAX_QUEUES);
    }
    config_strings_free(&owned);
}

static void check_net(const char *arg)
{
    struct config_strings owned = { 0 };
    struct godwit_net net = { 0 };

    if (devopt_parse_net("--net", arg, &net, &owned) == 0) {
        FUZZ_CHECK(net.tap != NULL && strlen(net.tap) <= DEVICE_TAP_NAME_MAX);
        FUZZ_CHECK(!net.mac || devopt_parse_mac(net.mac, NULL));
        FUZZ_CHECK(net.queues <= DEVICE_MAX_QUEUES);
    }
    config_strings_free(&owned);
}

static void check_console(const char *arg)
{
    struct config_strings owned = { 0 };
    enum godwit_virtio_console mode = GODWIT_VIRTIO_CONSOLE_NONE;
    const char *path = NULL;

    if (devopt_parse_console("--console", arg, &mode, &path, &owned) == 0) {
        if (mode == GODWIT_VIRTIO_CONSOLE_SOCKET || mode == GODWIT_VIRTIO_CONSOLE_FILE)
            FUZZ_CHECK(path != NULL);
    }
    config_strings_free(&owned);
}

static void check_mac(const char *arg)
{
    uint8_t mac[6];

    if (devopt_parse_mac(arg, mac))
        FUZZ_CHECK(!(mac[0] & 1)); /* unicast */
}

/* The first byte picks the option; the rest is its value, as the command line gives it. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *arg;

    if (size < 1)
        return 0;
    arg = malloc(size);
    if (!arg)
        abort();
    memcpy(arg, data + 1, size - 1);
    arg[size - 1] = '\0';
    switch (data[0] & 3) {
    case 0: check_disk(arg); break;
    case 1: check_net(arg); break;
    case 2: check_console(arg); break;
    default: check_mac(arg); break;
    }
    free(arg);
    return 0;
}
