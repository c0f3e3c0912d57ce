/* emberctl: placeholder until the control CLI lands (docs/ha.md). */
#include <stdio.h>

int main(void)
{
	fprintf(stderr, "emberctl: not built yet\n");
	return 1;
}
