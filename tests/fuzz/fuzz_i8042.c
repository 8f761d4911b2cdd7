/* fuzz_i8042.c: the keyboard controller's data and command ports under any guest accesses. */
#include "fuzz_regs.h"
#include "mmio/i8042.h"

static void notify(void *ctx, enum platform_event e)
{
    (void)ctx;
    (void)e;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fuzz_quiet();
    return 0;
}

/* Each step: an access to port 0x60 or 0x64, or a snapshot put back. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct fuzz_in in = fuzz_in(data, size);
    struct platform_events ev = { .notify = notify };
    struct i8042 kbc;

    FUZZ_CHECK(i8042_init(&kbc, &ev) == 0);
    struct fuzz_range r[] = { { &i8042_data_ops, &kbc, 1, 1 }, { &i8042_command_ops, &kbc, 1, 1 } };
    while (!fuzz_done(&in)) {
        if (fuzz_u8(&in) % 8 == 7)
            fuzz_state_round_trip(i8042_save, i8042_load, &kbc, I8042_STATE_VERSION);
        else
            fuzz_access(&in, r, 2);
    }
    i8042_destroy(&kbc);
    return 0;
}
