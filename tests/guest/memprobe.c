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

struct region {
	u64 start, end; /* [start, end), 8-byte aligned */
};

static struct region regions[MAX_REGIONS];
static unsigned nregions;

static void add_region(u64 start, u64 end)
{
	start = (start + 7) & ~7ULL;
	end &= ~7ULL;
	if (start < end && nregions < MAX_REGIONS)
		regions[nregions++] = (struct region){start, end};
}

/* Removes [lo, hi) from every region, splitting where needed. */
static void exclude(u64 lo, u64 hi)
{
	for (unsigned i = 0, n = nregions; i < n; i++) {
		struct region r = regions[i];
		if (hi <= r.start || lo >= r.end)
			continue;
		regions[i].end = regions[i].start; /* emptied; remnants appended */
		if (r.start < lo)
			add_region(r.start, lo);
		if (hi < r.end)
			add_region(hi, r.end);
	}
}

static void exclude_obj(u64 pa, u64 len)
{
	exclude(pa & ~0xfffULL, (pa + len + 0xfff) & ~0xfffULL);
}

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
		if (mm[i].type != MEMMAP_RAM)
			continue;
		total += mm[i].size;
		add_region(mm[i].addr, mm[i].addr + mm[i].size);
	}

	/* Keep out of what is in use: the boot data areas of the ABI, the
	 * start info, memory map and command line wherever this monitor put
	 * them, and this image (code, stacks, page tables). */
	exclude(0, 0xc000);
	exclude(0x20000, 0x20800);
	exclude_obj((u64)si, sizeof(*si));
	exclude_obj(si->memmap_paddr, si->memmap_entries * sizeof(*mm));
	exclude_obj(si->modlist_paddr, si->nr_modules * 32ULL);
	exclude_obj(si->cmdline_paddr, strlen(cmdline()) + 1);
	exclude((u64)__image_start, (u64)__image_end);

	for (unsigned i = 0; i < nregions; i++) {
		struct region *r = &regions[i];
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
