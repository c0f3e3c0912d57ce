/* The smallest C guest: one line, then exit status 0 through port 0xf4. */
#include "lib.h"

int main(void)
{
	print("Hello from ember guest\n");
	return 0;
}
