/* emberd: placeholder until the supervisor lands (docs/ha.md). */
#include <stdio.h>

int main(void)
{
	fprintf(stderr, "emberd: not built yet\n");
	return 1;
}
