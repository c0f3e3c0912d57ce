/* Echoes the command line exactly as the monitor passed it. */
#include "lib.h"

int main(void)
{
	print("cmdline: ");
	print(cmdline());
	print("\n");
	return 0;
}
