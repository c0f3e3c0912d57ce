/* Fallback loop.elf: a PVH guest that spins forever, for RSS sampling.
 * Built by bench.py only when build/guest has no loop.elf. */
	.code32
	.section .note.pvh, "a"
	.p2align 2
	.long 4, 4, 18		/* namesz, descsz, XEN_ELFNOTE_PHYS32_ENTRY */
	.asciz "Xen"
	.long _start
	.text
	.globl _start
_start:
	jmp _start
