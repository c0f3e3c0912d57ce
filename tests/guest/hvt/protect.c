/* protect.hvt: breaks one of the protections solo5-hvt gives its ELF
 * segments, chosen on the command line: "write_text" writes its own code,
 * "write_rodata" a constant, "exec_data" calls a `ret` placed in .data.
 * Prints "protect: about to CASE at 0xADDR" first; the monitor must stop
 * it.  "none" (or nothing) touches nothing and halts 0; a case that
 * survives prints "protect: CASE survived" and halts 3. */
#include "hvt_guest.h"

HVT_MANIFEST();

static const u32 constant __attribute__((used)) = 0x5a5a5a5a;
static volatile u8 data_code[16] = {0xc3}; /* ret */

__attribute__((noinline)) static int victim(void)
{
	return 1;
}

int main(const struct hvt_boot_info *bi)
{
	(void)bi;
	const char *c = cmdline_has("write_text")     ? "write_text"
			: cmdline_has("write_rodata") ? "write_rodata"
			: cmdline_has("exec_data")    ? "exec_data"
						      : NULL;
	if (!c) {
		kprintf("protect: nothing to break (text %p rodata %p data %p)\n",
			(void *)victim, (void *)&constant, (void *)data_code);
		return 0;
	}
	if (!strcmp(c, "write_text")) {
		volatile u8 *p = (volatile u8 *)(uintptr_t)victim;
		kprintf("protect: about to write_text at %p\n", (void *)p);
		*p = 0x90;
	} else if (!strcmp(c, "write_rodata")) {
		kprintf("protect: about to write_rodata at %p\n", (void *)&constant);
		*(volatile u32 *)(uintptr_t)&constant = 1;
	} else {
		kprintf("protect: about to exec_data at %p\n", (void *)data_code);
		((void (*)(void))(uintptr_t)data_code)();
	}
	kprintf("protect: %s survived\n", c);
	return 3;
}
