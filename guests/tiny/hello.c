/* hello.c: the smallest guest: one line on the serial console, then ACPI poweroff (exit 0). */
#include "lib.h"

void guest_main(void)
{
    uart_puts("tiny: hello from the guest\n");
}
