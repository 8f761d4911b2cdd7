/* start.S: a tiny guest's entry: own stack, guest_main(), then ACPI poweroff (64-bit, ring 0). */
    .section .text.start, "ax"
    .code64
    .globl _start
    .type _start, @function
_start:
    /* godwit hands over RSP = 0x8ff0 in low memory; use our own stack in .bss instead. */
    cli
    lea stack_top(%rip), %rsp
    xor %ebp, %ebp
    call guest_main
    call poweroff              /* does not return */
1:  hlt
    jmp 1b
    .size _start, . - _start

    .bss
    .balign 16
stack_bottom:
    .skip 16384
stack_top:

    .section .note.GNU-stack, "", @progbits
