/* The boot-time benchmark guest: as few (emulated, ~200 ns each) ring-0
 * instructions as possible.  Stays in 32-bit protected mode, no stack, no
 * memory access: `hello\n` as six immediate outb's (unrolled, 13
 * instructions; a lodsb/out/dec/jnz loop would run 28), then the i8042
 * reset, which stops the VM with status 0. */
#include "boot.inc"

        pvh_entry_note _start

        .section .text.entry, "ax"
        .code32
        .globl _start
_start:
        mov $0x3f8, %dx               /* COM1 */
        .irp c, 'h', 'e', 'l', 'l', 'o', '\n'
        mov $\c, %al
        out %al, %dx
        .endr
        mov $0xfe, %al                /* i8042: pulse reset line */
        out %al, $0x64
1:      jmp 1b                        /* not reached */

        .section .note.GNU-stack, "", @progbits
