/* fuzz_loader.c: the kernel loaders (vmlinux ELF with its PVH note, bzImage) on any image. */
#include "boot/boot.h"
#include "fuzz_common.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fuzz_quiet();
    fuzz_gm();
    return 0;
}

/*
 * The input is the kernel image, loaded with a command line and a small initrd into 64 MiB
 * of guest RAM. Guest memory is not cleared between runs: the loaders only write it.
 */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const uint8_t initrd[4096] = { 0x07, 0x07, 0x01 };
    struct guest_memory *gm = fuzz_gm();
    struct boot_request req = {
        .kernel = data,
        .kernel_len = size,
        .initrd = initrd,
        .initrd_len = sizeof(initrd),
        .cmdline = "console=ttyS0 panic=-1",
        .rsdp_gpa = 0xe0000,
    };
    struct boot_entry entry;
    enum kernel_format fmt = kernel_detect_format(data, size);

    if (boot_load_linux(gm, &req, &entry) == 0) {
        FUZZ_CHECK(fmt != KERNEL_FORMAT_UNKNOWN);
        FUZZ_CHECK(gm_ptr(gm, entry.arg_gpa, 1) != NULL);
    }
    return 0;
}
