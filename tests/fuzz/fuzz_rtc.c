/* fuzz_rtc.c: the CMOS RTC's index and data ports under any sequence of guest accesses. */
#include "fuzz_regs.h"
#include "mmio/rtc.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fuzz_quiet();
    return 0;
}

/* Each step: a register access, or a snapshot put back. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct fuzz_in in = fuzz_in(data, size);
    struct rtc rtc;

    FUZZ_CHECK(rtc_init(&rtc, 3ull << 30, 2ull << 30) == 0);
    struct fuzz_range r = { &rtc_ops, &rtc, RTC_IO_LEN, 1 };
    while (!fuzz_done(&in)) {
        if (fuzz_u8(&in) % 8 == 7)
            fuzz_state_round_trip(rtc_save, rtc_load, &rtc, RTC_STATE_VERSION);
        else
            fuzz_access(&in, &r, 1);
    }
    rtc_destroy(&rtc);
    return 0;
}
