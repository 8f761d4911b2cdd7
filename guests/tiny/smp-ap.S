/* smp-ap.S: the real-mode code an AP starts in after SIPI: it reports its APIC ID, then halts. */
/*
 * The BSP copies [ap_trampoline_start, ap_trampoline_end) to 0x10000 and sends SIPI vector
 * 0x10, so an AP starts here with CS = 0x1000, IP = 0. It stays in real mode (nothing it does
 * needs more), finds its APIC ID with CPUID leaf 1 (the LAPIC's MMIO page is out of reach of
 * real mode's 1 MiB), sets its bit in ap_bitmap, then counts itself in ap_counter: bit first,
 * so that once the BSP sees the count, every bit is already there. Both are locked
 * read-modify-writes because all APs start at once.
 *
 * It lives in .rodata: it is data to the 64-bit image (copied, never executed in place), and
 * keeping it out of .text keeps the 64-bit disassembly check from decoding 16-bit code.
 */
    .section .rodata.ap_trampoline, "a"
    .code16
    .globl ap_trampoline_start, ap_trampoline_end, ap_counter, ap_bitmap
ap_trampoline_start:
    cli
    cld
    mov %cs, %ax
    mov %ax, %ds
    mov $1, %eax
    cpuid
    shr $24, %ebx
    lock btsl %ebx, (ap_bitmap - ap_trampoline_start)
    lock incl (ap_counter - ap_trampoline_start)
1:  cli
    hlt
    jmp 1b

    .balign 4
ap_counter:
    .long 0
ap_bitmap:
    .skip 32               /* 256 APIC IDs */
ap_trampoline_end:

    .section .note.GNU-stack, "", @progbits
