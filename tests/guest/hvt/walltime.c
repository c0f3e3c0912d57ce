/* walltime.hvt: WALLTIME twice with some work between; the second must
 * be later, both must look like the present (after 2020), and the boot
 * info's cpu_cycle_freq must be set.  Halts 0 if all hold, else 1. */
#include "hvt_guest.h"

HVT_MANIFEST();

#define NS_2020 1577836800000000000ULL /* 2020-01-01T00:00:00Z */

int main(const struct hvt_boot_info *bi)
{
	int ok = 1;
	u64 t1 = hvt_walltime(), c1 = rdtsc();

	/* Work: a short counted loop and one more exit. */
	for (volatile unsigned i = 0; i < 2000; i++)
		;
	kprintf("walltime: working\n");
	u64 t2 = hvt_walltime(), c2 = rdtsc();

	kprintf("walltime: t1=%lu t2=%lu delta_ns=%lu\n", t1, t2, t2 - t1);
	kprintf("walltime: cpu_cycle_freq=%lu\n", bi->cpu_cycle_freq);
	if (bi->cpu_cycle_freq) {
		u64 mhz = bi->cpu_cycle_freq / 1000000 ? bi->cpu_cycle_freq / 1000000 : 1;
		kprintf("walltime: tsc_delta_ns=%lu\n", (c2 - c1) * 1000 / mhz);
	} else {
		kprintf("walltime: cpu_cycle_freq is zero\n");
		ok = 0;
	}
	if (t2 > t1)
		kprintf("walltime: forward\n");
	else {
		kprintf("walltime: not forward\n");
		ok = 0;
	}
	if (t1 > NS_2020)
		kprintf("walltime: plausible\n");
	else {
		kprintf("walltime: implausible (before 2020)\n");
		ok = 0;
	}
	return ok ? 0 : 1;
}
