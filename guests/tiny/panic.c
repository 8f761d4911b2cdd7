/* panic.c: reports a panic through pvpanic (port 0x505), which godwit turns into exit status 5. */
#include "lib.h"

void guest_main(void)
{
    uart_puts("tiny: panicking on purpose\n");
    panic_exit();
}
