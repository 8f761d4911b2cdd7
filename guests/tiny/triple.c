/* triple.c: a triple fault on purpose (#UD with an empty IDT), which godwit must report as exit 4. */
#include "lib.h"

void guest_main(void)
{
    /* An IDT of limit 0: #UD cannot be delivered (#GP), nor can that (#DF): shutdown. */
    static const struct __attribute__((packed)) {
        uint16_t limit;
        uint64_t base;
    } empty_idt = { 0, 0 };

    uart_puts("tiny: about to triple fault\n");
    __asm__ volatile("lidt %0\n\tud2" : : "m"(empty_idt) : "memory");
    fail("still running after a triple fault");
}
