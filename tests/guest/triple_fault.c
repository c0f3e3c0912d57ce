/* Faults with no IDT: #UD cannot be delivered, nor the #GP/#DF after it,
 * so the CPU shuts down (triple fault) and the monitor must report it. */
#include "lib.h"

int main(void)
{
	static const struct __attribute__((packed)) {
		u16 limit;
		u64 base;
	} empty_idt = {0, 0};

	print("about to triple fault\n");
	__asm__ volatile("lidt %0; ud2" : : "m"(empty_idt));
	return 1; /* not reached */
}
