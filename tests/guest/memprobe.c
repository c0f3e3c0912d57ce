/* Checks that all RAM the memory map promises is really there: writes an
 * address-derived pattern to every free 8-byte word of it, then reads all
 * back (so aliased pages show up too).  Prints `memprobe: N MiB ok` (N =
 * RAM in the map, MiB rounded down) or `memprobe: FAIL at 0x...`.
 *
 * The sweep runs in ring 3: ring-0 code is emulated on this host, about
 * 90 ms per MiB even with rep stos/scas, while ring 3 runs natively.
 *
 * `wild=0xADDR` first reads and writes that guest-physical address (meant
 * to be outside RAM) with the monitor's help, to show the monitor survives
 * it; the probe follows as usual. */
#include "lib.h"

#define MAX_REGIONS 64
#define FOUR_GIB (4ULL << 30) /* start.S maps below */
#define PATTERN 0x5aa5c33c0ff0a55aULL

static struct ram_region regions[MAX_REGIONS]; /* 8-byte aligned */
static unsigned nregions;

/* Ring 3.  Returns the first bad address + 1, or 0 when all is well. */
static long probe(void *unused)
{
	(void)unused;
	for (unsigned i = 0; i < nregions; i++)
		for (volatile u64 *p = (u64 *)regions[i].start; p < (u64 *)regions[i].end; p++)
			*p = (u64)p ^ PATTERN;
	for (unsigned i = 0; i < nregions; i++)
		for (volatile u64 *p = (u64 *)regions[i].start; p < (u64 *)regions[i].end; p++)
			if (*p != ((u64)p ^ PATTERN))
				return (long)p + 1;
	return 0;
}

static void wild_access(u64 pa)
{
	volatile u32 *p = (volatile u32 *)pa;

	if (pa >= FOUR_GIB && map_2m(pa)) {
		kprintf("wild: cannot map 0x%lx\n", pa);
		return;
	}
	kprintf("wild: reading 0x%lx\n", pa);
	u32 v = *p;
	kprintf("wild: read 0x%x\n", v);
	kprintf("wild: writing 0x%lx\n", pa);
	*p = 0xdeadbeef;
	kprintf("wild: wrote, read back 0x%x\n", *p);
	print("wild: survived\n");
}

int main(void)
{
	const struct hvm_start_info *si = start_info();
	const char *arg = cmdline_arg("wild");
	u64 total = 0, tested = 0;

	if (!si || !si->memmap_entries) {
		print("memprobe: FAIL: no start info or memory map\n");
		return 1;
	}
	if (arg) {
		u64 pa;
		if (parse_u64(arg, &pa))
			print("wild: bad address\n");
		else
			wild_access(pa);
	}

	const struct hvm_memmap_entry *mm = (const void *)si->memmap_paddr;
	for (u32 i = 0; i < si->memmap_entries; i++) {
		kprintf("memprobe: map 0x%lx-0x%lx type %u\n", mm[i].addr, mm[i].addr + mm[i].size,
			mm[i].type);
		if (mm[i].type == MEMMAP_RAM)
			total += mm[i].size;
	}
	/* All of it but what is in use: boot data, start info, memory map,
	 * command line, this image (code, stacks, page tables). */
	nregions = free_ram(regions, MAX_REGIONS, 8, 0, ~0ULL);

	for (unsigned i = 0; i < nregions; i++) {
		struct ram_region *r = &regions[i];
		u64 a = r->start < FOUR_GIB ? FOUR_GIB : r->start & ~0x1fffffULL;
		for (; a < r->end; a += 2 << 20)
			if (map_2m(a)) {
				kprintf("memprobe: cannot map 0x%lx, skipping the rest\n", a);
				r->end = a > r->start ? a : r->start;
				break;
			}
		tested += r->end - r->start;
	}
	kprintf("memprobe: %lu MiB in map, testing %lu KiB\n", total >> 20, tested >> 10);

	long bad = user_call(probe, NULL);
	if (bad) {
		kprintf("memprobe: FAIL at 0x%lx\n", (u64)(bad - 1));
		return 1;
	}
	kprintf("memprobe: %lu MiB ok\n", total >> 20);
	return 0;
}
