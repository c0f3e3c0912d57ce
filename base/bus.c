/* PIO/MMIO trap bus: a sorted array, binary-searched on every exit. */
#include "base/bus.h"

#include <errno.h>
#include <string.h>

int bus_register(struct bus *b, uint64_t base, uint64_t len, bus_handler_fn fn, void *opaque,
		 const char *name)
{
	if (len == 0 || base + len < base || !fn)
		return -EINVAL;
	if (b->nr == BUS_MAX_RANGES)
		return -ENOSPC;
	unsigned pos = 0;
	while (pos < b->nr && b->r[pos].base < base)
		pos++;
	/* Overlap with the neighbours is all that needs checking: the array
	 * is sorted and itself free of overlaps. */
	if (pos > 0 && b->r[pos - 1].base + b->r[pos - 1].len > base)
		return -EEXIST;
	if (pos < b->nr && base + len > b->r[pos].base)
		return -EEXIST;
	memmove(&b->r[pos + 1], &b->r[pos], (b->nr - pos) * sizeof(b->r[0]));
	b->r[pos] = (struct bus_range){base, len, fn, opaque, name};
	b->nr++;
	return 0;
}

const struct bus_range *bus_find(const struct bus *b, uint64_t addr)
{
	unsigned lo = 0, hi = b->nr;
	while (lo < hi) {
		unsigned mid = lo + (hi - lo) / 2;
		const struct bus_range *r = &b->r[mid];
		if (addr < r->base)
			hi = mid;
		else if (addr - r->base >= r->len)
			lo = mid + 1;
		else
			return r;
	}
	return NULL;
}

int bus_dispatch(const struct bus *b, uint64_t addr, uint8_t *data, uint32_t len, bool is_write)
{
	const struct bus_range *r = bus_find(b, addr);
	if (!r)
		return -ENOENT;
	uint64_t off = addr - r->base;
	if (len == 0 || len > r->len - off)
		return -ERANGE;
	return r->fn(r->opaque, off, data, len, is_write);
}
