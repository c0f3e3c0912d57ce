/* Spins forever with interrupts off and never halts: only the monitor's
 * timeout (or a kill) ends it. */
#include "lib.h"

int main(void)
{
	print("looping forever\n");
	__asm__ volatile("cli; 1: jmp 1b");
	return 1; /* not reached */
}
