/* regs.c: the boot vCPU's register state, GDT and identity page tables for each entry mode. */
#include <errno.h>
#include <string.h>

#include "boot/layout.h"
#include "vcpu/vcpu.h"

#define X86_CR0_PE (1ULL << 0)
#define X86_CR0_ET (1ULL << 4)
#define X86_CR0_PG (1ULL << 31)
#define X86_CR4_PAE (1ULL << 5)
#define X86_EFER_LME (1ULL << 8)
#define X86_EFER_LMA (1ULL << 10)
#define X86_RFLAGS_RESERVED (1ULL << 1)

#define PTE_PRESENT (1ULL << 0)
#define PTE_WRITE (1ULL << 1)
#define PTE_HUGE (1ULL << 7)

#define GDT_SEL_CODE 0x10
#define GDT_SEL_DATA 0x18
#define GDT_SEL_TSS 0x20
#define GDT_ENTRIES 5

/* The stack pointer handed over: free low memory; both entries set up their own stack. */
#define BOOT_STACK_TOP 0x8ff0ULL

/* An 8-byte segment descriptor from its parts (flags = G, D/B, L, AVL nibble + access byte). */
static uint64_t gdt_entry(uint16_t flags, uint32_t base, uint32_t limit)
{
    return ((uint64_t)(base & 0xff000000u) << 32) | ((uint64_t)(flags & 0xf0ffu) << 40) |
           ((uint64_t)(limit & 0x000f0000u) << 32) | ((uint64_t)(base & 0x00ffffffu) << 16) |
           (uint64_t)(limit & 0x0000ffffu);
}

/* Identity map of the first 4 GiB with 2 MiB pages: the 64-bit entry needs the kernel, its
 * zero page, command line and initrd mapped, and all of them sit below 4 GiB. */
int boot_write_page_tables(const struct guest_memory *gm)
{
    uint64_t *pml4 = gm_ptr(gm, LAYOUT_PML4, 4096);
    uint64_t *pdpt = gm_ptr(gm, LAYOUT_PDPT, 4096);
    uint64_t *pd = gm_ptr(gm, LAYOUT_PD, 4 * 4096);
    if (!pml4 || !pdpt || !pd)
        return -EFAULT;
    memset(pml4, 0, 4096);
    memset(pdpt, 0, 4096);
    pml4[0] = LAYOUT_PDPT | PTE_PRESENT | PTE_WRITE;
    for (uint64_t i = 0; i < 4; i++)
        pdpt[i] = (LAYOUT_PD + i * 4096) | PTE_PRESENT | PTE_WRITE;
    for (uint64_t i = 0; i < 4 * 512; i++)
        pd[i] = (i << 21) | PTE_PRESENT | PTE_WRITE | PTE_HUGE;
    return 0;
}

int boot_write_gdt(const struct guest_memory *gm, enum boot_entry_mode mode)
{
    /* Code: 64-bit (L) for the Linux entry, 32-bit (D) for PVH; data and TSS are flat. */
    uint16_t code_flags = mode == BOOT_ENTRY_LINUX64 ? 0xa09b : 0xc09b;
    uint64_t gdt[GDT_ENTRIES] = {
        [GDT_SEL_CODE / 8] = gdt_entry(code_flags, 0, 0xfffff),
        [GDT_SEL_DATA / 8] = gdt_entry(0xc093, 0, 0xfffff),
        [GDT_SEL_TSS / 8] = gdt_entry(0x008b, 0, 0x67),
    };
    return gm_write(gm, LAYOUT_GDT, gdt, sizeof(gdt));
}

static struct kvm_segment segment_from_gdt(uint16_t selector, uint16_t flags, uint32_t limit)
{
    bool granular = flags & 0x8000;
    return (struct kvm_segment){
        .base = 0,
        .limit = granular ? (limit << 12) | 0xfff : limit,
        .selector = selector,
        .type = flags & 0xf,
        .present = (flags >> 7) & 1,
        .dpl = (flags >> 5) & 3,
        .db = (flags >> 14) & 1,
        .s = (flags >> 4) & 1,
        .l = (flags >> 13) & 1,
        .g = granular,
    };
}

void boot_fill_sregs(struct kvm_sregs *sregs, enum boot_entry_mode mode)
{
    bool long_mode = mode == BOOT_ENTRY_LINUX64;
    struct kvm_segment code = segment_from_gdt(GDT_SEL_CODE, long_mode ? 0xa09b : 0xc09b, 0xfffff);
    struct kvm_segment data = segment_from_gdt(GDT_SEL_DATA, 0xc093, 0xfffff);

    sregs->cs = code;
    sregs->ds = sregs->es = sregs->fs = sregs->gs = sregs->ss = data;
    sregs->tr = segment_from_gdt(GDT_SEL_TSS, 0x008b, 0x67);
    sregs->gdt.base = LAYOUT_GDT;
    sregs->gdt.limit = GDT_ENTRIES * 8 - 1;
    sregs->idt.base = 0;
    sregs->idt.limit = 0;
    sregs->cr0 = X86_CR0_PE | X86_CR0_ET;
    sregs->cr4 = 0;
    sregs->efer = 0;
    sregs->cr3 = 0;
    if (long_mode) {
        sregs->cr0 |= X86_CR0_PG;
        sregs->cr3 = LAYOUT_PML4;
        sregs->cr4 |= X86_CR4_PAE;
        sregs->efer |= X86_EFER_LME | X86_EFER_LMA;
    }
}

void boot_fill_regs(struct kvm_regs *regs, const struct boot_entry *entry)
{
    memset(regs, 0, sizeof(*regs));
    regs->rflags = X86_RFLAGS_RESERVED;
    regs->rip = entry->rip;
    regs->rsp = BOOT_STACK_TOP;
    if (entry->mode == BOOT_ENTRY_LINUX64)
        regs->rsi = entry->arg_gpa; /* boot protocol: RSI = struct boot_params */
    else
        regs->rbx = entry->arg_gpa; /* PVH: EBX = struct hvm_start_info */
}
