/* One trap API for port I/O and MMIO (as kvmtool's): a device registers a
 * range and a handler; vCPU exits are dispatched here.  A bus is filled
 * during VM assembly, before any vCPU runs, and is read-only afterwards,
 * so lookups need no lock. */
#ifndef EMBER_BUS_H
#define EMBER_BUS_H

#include <stdbool.h>
#include <stdint.h>

#define BUS_MAX_RANGES 64

/* offset is relative to the registered base; data holds len (1..8) bytes,
 * little-endian: the handler fills it on a read and consumes it on a write.
 * Return 0, or a negative errno that the caller logs; a handler never
 * exits the process. */
typedef int (*bus_handler_fn)(void *opaque, uint64_t offset, uint8_t *data, uint32_t len,
			      bool is_write);

struct bus_range {
	uint64_t base;
	uint64_t len;
	bus_handler_fn fn;
	void *opaque;
	const char *name;
};

struct bus {
	struct bus_range r[BUS_MAX_RANGES]; /* sorted by base, non-overlapping */
	unsigned nr;
};

/* Add [base, base+len).  -EINVAL for len 0 or wrap-around, -EEXIST if it
 * overlaps a registered range, -ENOSPC when full. */
__attribute__((warn_unused_result)) int bus_register(struct bus *b, uint64_t base, uint64_t len,
						     bus_handler_fn fn, void *opaque,
						     const char *name);

/* The range holding addr, or NULL.  O(log n). */
const struct bus_range *bus_find(const struct bus *b, uint64_t addr);

/* Dispatch an access at addr.  An access that starts inside a range but
 * runs past its end is refused.  Returns the handler's result, or -ENOENT
 * when nothing is registered there (the caller decides: reads of unclaimed
 * ports return all ones, as on real hardware). */
__attribute__((warn_unused_result)) int bus_dispatch(const struct bus *b, uint64_t addr,
						     uint8_t *data, uint32_t len, bool is_write);

#endif
