/* Halts with interrupts off: nothing can ever wake the vCPU, which the
 * monitor should notice instead of waiting forever. */
#include "lib.h"

int main(void)
{
	print("halting\n");
	__asm__ volatile("cli; hlt");
	print("halt: woke up?\n"); /* an NMI or INIT could get here */
	return 1;
}
