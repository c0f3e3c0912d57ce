/* Entry of ember's hvt test guests.  The monitor already did everything a
 * Solo5 hvt guest is owed (long mode, identity paging, a stack at the top
 * of RAM, rdi = struct hvt_boot_info), so this only notes the entry state
 * for hello.hvt to report, aligns the stack as a call expects, and calls
 * hvt_start(boot_info).  No GDT, IDT or TSS of our own: an exception
 * triple-faults, which is what the tests want to see. */
        .section .text.entry, "ax"
        .code64
        .globl _start
_start:
        mov %rdi, hvt_entry_rdi(%rip)
        mov %rsp, hvt_entry_rsp(%rip)
        pushfq
        popq hvt_entry_rflags(%rip)
        and $-16, %rsp                /* ABI: rsp+8 16-aligned at a callee */
        call hvt_start                /* rdi is still the boot info */
1:      hlt                           /* hvt_start halts; never here */
        jmp 1b

        .section .bss
        .p2align 3
        .globl hvt_entry_rdi, hvt_entry_rsp, hvt_entry_rflags
hvt_entry_rdi:    .quad 0
hvt_entry_rsp:    .quad 0
hvt_entry_rflags: .quad 0

        .section .note.GNU-stack, "", @progbits
