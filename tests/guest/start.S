/* Common entry for the C test guests: PVH entry note, the switch to long
 * mode, static identity page tables, exception stubs, and the ring-3 round
 * trip (run_user).
 *
 * Why long mode: on hosts like the one this was written on (KVM nested on
 * PVM) guest ring-0 code is emulated, ~200 ns an instruction, while ring-3
 * code runs natively.  Measured there: iret to ring 3 with paging off is an
 * emulation failure, and 32-bit PSE paging or 1 GiB pages triple-fault, so
 * this uses long mode with 2 MiB pages. */
#include "boot.inc"

        pvh_entry_note _start

/* Entry: 32-bit protected mode, paging off, ebx = struct hvm_start_info. */
        .section .text.entry, "ax"
        .code32
        .globl _start
_start:
        mov %ebx, start_info_pa       /* upper half stays zero (.data) */
        lgdt gdt_ptr                  /* the boot GDT at 0x500 is the
                                         monitor's; ours adds ring 3 + TSS */
        enter_long_mode start64

        .code64
start64:
        load_kernel_data_segments
        lea boot_stack_top(%rip), %rsp
        call guest_init
        call main
        mov %eax, %edi
        call exit_guest               /* does not return */

/* Exceptions 0-31: push a dummy error code where the CPU pushes none, then
 * the vector, and report from C (lib.c: exception_report). */
        .text
.macro exc_stub vec
exc\vec:
        .if \vec == 6                 /* #UD: maybe user_exit_ud2 */
        cmpq $user_exit_ud2, (%rsp)
        je user_exit
        .endif
        .if !(\vec == 8 || (\vec >= 10 && \vec <= 14) || \vec == 17 || \vec == 21 || \vec == 29 || \vec == 30)
        push $0
        .endif
        push $\vec
        jmp exc_common
.endm
        .irp v, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
        exc_stub \v
        .endr

exc_common:
        mov %rsp, %rdi                /* struct exc_frame * */
        and $-16, %rsp
        call exception_report         /* does not return */
        ud2

        .section .rodata
        .p2align 3
        .globl exc_table
exc_table:
        .irp v, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
        .quad exc\v
        .endr

/* long run_user(long (*fn)(void *), void *arg, void *stack_top)
 * Runs fn(arg) in ring 3 (natively on this host, unlike ring 0) and returns
 * its result.  Ring 3 has IOPL 0, so fn may not do port I/O.  It comes back
 * with a ud2 at a known address that the #UD stub recognises: `int n` from
 * ring 3 raises #UD on this host's hypervisor (PVM), exceptions do work.
 * Not reentrant and BSP only: one saved kernel stack pointer. */
        .text
        .globl run_user
run_user:
        push %rbx
        push %rbp
        push %r12
        push %r13
        push %r14
        push %r15
        mov %rsp, kern_rsp(%rip)
        mov %rsp, tss+4(%rip)         /* TSS.rsp0: traps from ring 3 land
                                         below the saved registers */
        push $USER_DS                 /* ss */
        push %rdx                     /* rsp */
        push $0x2                     /* rflags: IF=0, IOPL=0 */
        push $USER_CS                 /* cs */
        lea user_tramp(%rip), %rax
        push %rax                     /* rip */
        mov %rdi, %rax
        mov %rsi, %rdi
        iretq

user_tramp:                           /* ring 3 */
        call *%rax
        mov %rax, %rdi
user_exit_ud2:
        ud2

user_exit:                            /* ring 0, from exc6 */
        mov $KERNEL_DS, %eax
        mov %eax, %ds
        mov %eax, %es
        mov %eax, %ss
        mov kern_rsp(%rip), %rsp
        mov %rdi, %rax
        pop %r15
        pop %r14
        pop %r13
        pop %r12
        pop %rbp
        pop %rbx
        ret

        .data
        .p2align 3
        .globl start_info_pa
start_info_pa:
        .quad 0
kern_rsp:
        .quad 0

/* GDT: ring-0 32-bit code (PVH entry, AP trampoline), data, 64-bit code,
 * then ring-3 data and 64-bit code, then the 64-bit TSS (16 bytes, its base
 * filled in by guest_init). */
        .p2align 3
        .globl gdt, gdt_ptr
gdt:
        .quad 0
        .quad 0x00cf9a000000ffff      /* 0x08 KERNEL_CS32 */
        .quad 0x00cf92000000ffff      /* 0x10 KERNEL_DS */
        .quad 0x00af9a000000ffff      /* 0x18 KERNEL_CS64 */
        .quad 0x00cff2000000ffff      /* 0x20 USER_DS (0x23) */
        .quad 0x00affa000000ffff      /* 0x28 USER_CS (0x2b) */
        .quad 0, 0                    /* 0x30 TSS_SEL */
gdt_end:
        .if gdt_end - gdt - 1 != GDT_LIMIT
        .error "GDT_LIMIT in boot.inc is stale"
        .endif
gdt_ptr:
        .word GDT_LIMIT
        .quad gdt                     /* 32-bit lgdt reads 4 bytes of it */

        .p2align 4
        .globl tss
tss:
        .fill 25, 4, 0                /* 64-bit TSS; rsp0 at offset 4 */
        .word 0, 104                  /* I/O bitmap base = limit: none */

/* Identity map of 0-4 GiB with 2 MiB pages, all user-accessible (ring-3
 * code touches any RAM).  The 3-4 GiB gigabyte (MMIO hole: IOAPIC, LAPIC)
 * is uncached (PCD|PWT).  map_2m() in lib.c adds pages above 4 GiB. */
        .p2align 12
        .globl pml4
pml4:
        .quad pdpt + 0x7              /* P | RW | US */
        .fill 511, 8, 0
pdpt:
        .quad pd + 0x7, pd + 0x1007, pd + 0x2007, pd + 0x3007
        .fill 508, 8, 0
pd:
        .Lpde = 0
        .rept 2048
        .if .Lpde < 1536
        .quad (.Lpde << 21) | 0x87        /* P | RW | US | PS */
        .else
        .quad (.Lpde << 21) | 0x9f        /* ... | PWT | PCD */
        .endif
        .Lpde = .Lpde + 1
        .endr

        .bss
        .p2align 12
boot_stack:
        .space 16384
boot_stack_top:

        .section .note.GNU-stack, "", @progbits
