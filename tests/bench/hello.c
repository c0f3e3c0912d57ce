/* Exec-cost reference: built static and dynamic by bench.py. */
#include <stdio.h>

int main(void)
{
	puts("hello");
	return 0;
}
