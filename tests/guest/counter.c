/* Counts: "count 1", "count 2", ... with a pause between lines spent in
 * ring 3 (native speed on hosts that emulate ring 0), until `count=N`
 * (default: forever).  `spin=N` sets the pause in loop iterations
 * (default 2000000, a few milliseconds).  The snapshot tests pause, save,
 * kill and restore it: the lines of both runs joined must count on with
 * no number lost or repeated. */
#include "lib.h"

static long spin(void *arg)
{
	for (volatile unsigned long n = (unsigned long)arg; n; n--)
		;
	return 0;
}

int main(void)
{
	u64 limit = 0, every = 2000000;
	const char *v;

	if ((v = cmdline_arg("count")) && parse_u64(v, &limit))
		limit = 0;
	if ((v = cmdline_arg("spin")) && parse_u64(v, &every))
		every = 2000000;
	for (u64 i = 1; !limit || i <= limit; i++) {
		kprintf("count %lu\n", (unsigned long)i);
		user_call(spin, (void *)(unsigned long)every);
	}
	return 0;
}
