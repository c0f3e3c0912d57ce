/* Application-processor start for smp.elf.  smp.c copies the real-mode
 * trampoline (ap_tramp_start..ap_tramp_end) to a low page and sends
 * INIT/SIPI; each AP enters there in real mode at vector*0x1000, switches
 * to protected mode with the common GDT, then to long mode with the common
 * page tables, takes a stack and calls ap_main(). */
#include "boot.inc"

#define AP_STACK_SIZE 8192
#define AP_MAX 64

        .text
        .code16
        .globl ap_tramp_start, ap_tramp_end
ap_tramp_start:
        cli
        /* position-independent: only %cs-relative data */
        lgdtl %cs:(ap_gdt_ptr - ap_tramp_start)
        mov %cr0, %eax
        or $1, %eax                   /* PE */
        mov %eax, %cr0
        ljmpl $KERNEL_CS32, $ap_entry32
        .p2align 2
ap_gdt_ptr:
        .word GDT_LIMIT
        .long gdt
ap_tramp_end:

        .code32
ap_entry32:
        mov $KERNEL_DS, %eax
        mov %eax, %ds
        mov %eax, %es
        mov %eax, %ss
        enter_long_mode ap_entry64

        .code64
ap_entry64:
        load_kernel_data_segments
        /* Stacks are handed out in arrival order (lock xadd, no cmpxchg). */
        mov $AP_STACK_SIZE, %eax
        lock xadd %eax, ap_stack_used(%rip)
        cmp $AP_STACK_SIZE * AP_MAX, %eax
        jae 2f                        /* more APs than stacks: park */
        lea ap_stacks + AP_STACK_SIZE(%rip), %rsp
        add %rax, %rsp
        lidt idt_ptr(%rip)            /* lib.c: exceptions get reported */
        call ap_main
2:      cli
        hlt
        jmp 2b

        .data
        .p2align 2
ap_stack_used:
        .long 0

        .bss
        .p2align 12
ap_stacks:
        .space AP_STACK_SIZE * AP_MAX

        .section .note.GNU-stack, "", @progbits
