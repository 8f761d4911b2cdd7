/* counter.c: counts in a RAM variable for ever and prints the count every COUNTER_STEP
 * iterations, so that a snapshot and restore shows whether the count goes on (snapshot case
 * of tests/kvm/run-kvm-tests.sh). Never powers off: the host stops it. */
#include "lib.h"

/* A line every 2^22 iterations: a few a second in the nested test host, a hundred or so on a
 * bare /dev/kvm. The test script knows this step (COUNTER_STEP there). */
#define COUNTER_STEP (1ull << 22)

/* In guest RAM (.bss), read and written on every iteration: what a snapshot must carry. */
static volatile uint64_t count;

void guest_main(void)
{
    uart_puts("tiny: counter started, a line every ");
    uart_putdec(COUNTER_STEP);
    uart_puts(" iterations\n");
    for (;;) {
        uint64_t c = count + 1;
        count = c;
        if ((c & (COUNTER_STEP - 1)) == 0) {
            /* The whole line from one read of the variable: the count that was reached. */
            uart_puts("tiny: count ");
            uart_putdec(c);
            uart_putc('\n');
        }
    }
}
