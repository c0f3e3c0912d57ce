/* Shared by the boot-table unit tests: a 64 MiB guest memory, and
 * little-endian field reads and byte sums over what the builders wrote. */
#ifndef EMBER_TEST_GUEST_MEM_FIXTURE_H
#define EMBER_TEST_GUEST_MEM_FIXTURE_H

#include <stddef.h>
#include <stdint.h>

#include "base/guest_mem.h"

#define MiB (1024ULL * 1024)

static struct gmem mem;

static uint64_t get(const uint8_t *p, size_t off, unsigned n)
{
	uint64_t x = 0;
	for (unsigned i = 0; i < n; i++)
		x |= (uint64_t)p[off + i] << (8 * i);
	return x;
}

static uint8_t sum(const uint8_t *p, size_t len)
{
	uint8_t s = 0;
	for (size_t i = 0; i < len; i++)
		s += p[i];
	return s;
}

static int setup(void **state)
{
	(void)state;
	return gmem_init(&mem, 64 * MiB);
}

static int teardown(void **state)
{
	(void)state;
	gmem_free(&mem);
	return 0;
}

#endif
