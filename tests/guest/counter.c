/* Counts: "count 1", "count 2", ... with a pause between lines spent in
 * ring 3 (native speed on hosts that emulate ring 0), until `count=N`
 * (default: forever).  `spin=N` sets the pause in loop iterations
 * (default 2000000, a few milliseconds).  The snapshot tests pause, save,
 * kill and restore it: the lines of both runs joined must count on with
 * no number lost or repeated.
 *
 * For the snapshot benchmark (tests/bench/bench_snapshot.py):
 *   fill=MiB    before counting, write a non-zero pattern over that much
 *               free RAM (from the PVH memory map, above this image and
 *               clear of the boot data), in ring 3, then print
 *               "filled N MiB" (N: what it could fill, MiB rounded down);
 *   dirty=PAGES after each count line, write one byte into each of PAGES
 *               pages spread evenly over the filled area (ring 3), so a
 *               diff snapshot between two lines holds about PAGES pages;
 *   check=1     after each count line, read the whole filled area back
 *               (ring 3) and print "pattern ok" or "pattern bad at ADDR"
 *               (the same-host and post-copy migration tests: the memory
 *               arrived whole).
 * Without them it behaves as it always did. */
#include "lib.h"

#define MAX_REGIONS 16
#define FOUR_GIB (4ULL << 30) /* start.S maps below */
#define PATTERN 0x5aa5c33c0ff0a55aULL

static struct ram_region regions[MAX_REGIONS]; /* page aligned */
static unsigned nregions;
static u64 filled_pages;

/* Free RAM below 4 GiB and above 1 MiB, clipped to want bytes in all. */
static void find_ram(u64 want)
{
	nregions = free_ram(regions, MAX_REGIONS, 4096, 1ULL << 20, FOUR_GIB);
	for (unsigned i = 0; i < nregions; i++) {
		u64 len = regions[i].end - regions[i].start;
		if (len > want)
			regions[i].end = regions[i].start + want;
		want -= regions[i].end - regions[i].start;
		filled_pages += (regions[i].end - regions[i].start) >> 12;
	}
}

/* Ring 3: the pattern over every region. */
static long fill(void *unused)
{
	(void)unused;
	for (unsigned i = 0; i < nregions; i++)
		for (volatile u64 *p = (u64 *)regions[i].start; p < (u64 *)regions[i].end; p++)
			*p = (u64)p ^ PATTERN;
	return 0;
}

static u64 dirty_pages, dirty_round, bad_at;

/* Ring 3: the filled area still holds fill's pattern (0, or 1 with the
 * first address that does not in bad_at). */
static long verify(void *unused)
{
	(void)unused;
	for (unsigned i = 0; i < nregions; i++)
		for (volatile u64 *p = (u64 *)regions[i].start; p < (u64 *)regions[i].end; p++)
			if (*p != ((u64)p ^ PATTERN)) {
				bad_at = (u64)p;
				return 1;
			}
	return 0;
}

/* Ring 3: one byte into each of dirty_pages pages spread over the area. */
static long dirty(void *unused)
{
	(void)unused;
	dirty_round++;
	for (u64 k = 0; k < dirty_pages; k++) {
		u64 idx = k * filled_pages / dirty_pages;
		for (unsigned i = 0; i < nregions; i++) {
			u64 n = (regions[i].end - regions[i].start) >> 12;
			if (idx < n) {
				*(volatile u8 *)(regions[i].start + (idx << 12) + (k & 0xfff)) =
				    (u8)(dirty_round | 1);
				break;
			}
			idx -= n;
		}
	}
	return 0;
}

static long spin(void *arg)
{
	for (volatile unsigned long n = (unsigned long)arg; n; n--)
		;
	return 0;
}

int main(void)
{
	u64 limit = 0, every = 2000000, fill_mib = 0, check = 0;
	const char *v;

	if ((v = cmdline_arg("count")) && parse_u64(v, &limit))
		limit = 0;
	if ((v = cmdline_arg("spin")) && parse_u64(v, &every))
		every = 2000000;
	if ((v = cmdline_arg("fill")) && parse_u64(v, &fill_mib))
		fill_mib = 0;
	if ((v = cmdline_arg("check")) && parse_u64(v, &check))
		check = 0;
	if ((v = cmdline_arg("dirty")) && parse_u64(v, &dirty_pages))
		dirty_pages = 0;
	if (fill_mib || dirty_pages) {
		/* dirty= alone spreads over all free RAM without filling it */
		find_ram(fill_mib ? fill_mib << 20 : ~0ULL >> 1);
		if (fill_mib) {
			user_call(fill, NULL);
			kprintf("filled %lu MiB\n", (unsigned long)(filled_pages >> 8));
		}
		if (dirty_pages > filled_pages)
			dirty_pages = filled_pages;
	}
	for (u64 i = 1; !limit || i <= limit; i++) {
		kprintf("count %lu\n", (unsigned long)i);
		if (dirty_pages)
			user_call(dirty, NULL);
		else if (check && fill_mib) {
			if (user_call(verify, NULL))
				kprintf("pattern bad at %lx\n", (unsigned long)bad_at);
			else
				kprintf("pattern ok\n");
		}
		user_call(spin, (void *)(unsigned long)every);
	}
	return 0;
}
