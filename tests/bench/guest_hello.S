/* Fallback bench_hello.elf: a PVH guest that prints "hello" on COM1 and
 * resets through the i8042 (0xfe to port 0x64), so ember and QEMU
 * (-no-reboot) both exit.  Built by bench.py only when build/guest has no
 * bench_hello.elf. */
	.code32
	.section .note.pvh, "a"
	.p2align 2
	.long 4, 4, 18		/* namesz, descsz, XEN_ELFNOTE_PHYS32_ENTRY */
	.asciz "Xen"
	.long _start
	.text
	.globl _start
_start:
	mov $0x3f8, %dx
	mov $'h', %al
	out %al, %dx
	mov $'e', %al
	out %al, %dx
	mov $'l', %al
	out %al, %dx
	out %al, %dx
	mov $'o', %al
	out %al, %dx
	mov $'\n', %al
	out %al, %dx
	mov $0xfe, %al
	out %al, $0x64
	hlt
