/* Guest memory's dirty tracking without KVM (no slots attached): ember's
 * own marks, the fetch's bitmap over the mapping, and what switching
 * logging on and off means for the next fetch. */
#include <errno.h>
#include <fcntl.h>
#include <unistd.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "base/guest_mem.h"

#define PAGE 4096ULL
#define MIB (1024ULL * 1024)

static bool bit(const uint64_t *bm, uint64_t page)
{
	return bm[page / 64] >> (page % 64) & 1;
}

static uint64_t count(const uint64_t *bm, uint64_t words)
{
	uint64_t n = 0;
	for (uint64_t w = 0; w < words; w++)
		n += (uint64_t)__builtin_popcountll(bm[w]);
	return n;
}

static void fetch(struct gmem *m, uint64_t *out)
{
	assert_int_equal(gmem_dirty_fetch(m, out), 0);
}

static void test_off_means_every_page(void **state)
{
	struct gmem m;
	assert_int_equal(gmem_init(&m, 1 * MIB + 5 * PAGE), 0); /* 261 pages: a part word */
	uint64_t words = gmem_dirty_words(&m);
	assert_int_equal(words, 5);
	uint64_t *bm = malloc(words * 8);
	/* Marks are dropped while logging is off: nothing touches the bitmap. */
	gmem_mark(&m, gmem_ptr(&m, 0, 8), 8);
	for (uint64_t w = 0; w < words; w++)
		assert_int_equal(atomic_load(&m.dirty[w]), 0);
	/* and a fetch says every page, none past the last */
	for (int i = 0; i < 2; i++) {
		fetch(&m, bm);
		assert_int_equal(count(bm, words), 261);
		assert_true(bit(bm, 260));
		assert_int_equal(bm[4] >> 5, 0);
	}
	free(bm);
	gmem_free(&m);
}

static void test_on_then_marks_only(void **state)
{
	struct gmem m;
	assert_int_equal(gmem_init(&m, 4 * MIB), 0);
	uint64_t words = gmem_dirty_words(&m);
	uint64_t *bm = malloc(words * 8);
	assert_int_equal(gmem_log_dirty(&m, true), 0);
	assert_int_equal(gmem_log_dirty(&m, true), 0); /* already on */
	/* turned on: no base yet, so the first fetch is every page */
	fetch(&m, bm);
	assert_int_equal(count(bm, words), 1024);
	/* then only what was marked: a write across a page boundary is two */
	memset(bm, 0xaa, words * 8); /* overwritten, not ORed */
	fetch(&m, bm);
	assert_int_equal(count(bm, words), 0);
	gmem_mark(&m, gmem_ptr(&m, 4 * PAGE - 1, 2), 2);
	gmem_mark(&m, gmem_ptr(&m, 1000 * PAGE, PAGE), PAGE);
	gmem_mark(&m, gmem_ptr(&m, 9 * PAGE, 1), 0); /* empty: nothing */
	fetch(&m, bm);
	assert_int_equal(count(bm, words), 3);
	assert_true(bit(bm, 3) && bit(bm, 4) && bit(bm, 1000));
	/* handed over and cleared */
	fetch(&m, bm);
	assert_int_equal(count(bm, words), 0);

	/* off and on again: what happened meanwhile is unknown, every page */
	assert_int_equal(gmem_log_dirty(&m, false), 0);
	gmem_mark(&m, gmem_ptr(&m, 5 * PAGE, 1), 1);
	assert_int_equal(gmem_log_dirty(&m, true), 0);
	fetch(&m, bm);
	assert_int_equal(count(bm, words), 1024);
	fetch(&m, bm);
	assert_int_equal(count(bm, words), 0);
	free(bm);
	gmem_free(&m);
}

/* Above 3 GiB: slot 1's pages follow slot 0's in the bitmap, as the
 * mapping lays them out (the gap of the hole is not in it). */
static void test_two_regions(void **state)
{
	struct gmem m;
	assert_int_equal(gmem_init(&m, GMEM_HOLE_START + 3 * PAGE), 0);
	assert_int_equal(m.nr, 2);
	uint64_t low = GMEM_HOLE_START / PAGE, words = gmem_dirty_words(&m);
	assert_int_equal(words, low / 64 + 1);
	uint64_t *bm = malloc(words * 8);
	assert_int_equal(gmem_log_dirty(&m, true), 0);
	fetch(&m, bm);
	assert_int_equal(count(bm, words), low + 3);
	gmem_mark(&m, gmem_ptr(&m, GMEM_HOLE_START - 1, 1), 1);
	gmem_mark(&m, gmem_ptr(&m, GMEM_HOLE_END + 2 * PAGE, 8), 8);
	fetch(&m, bm);
	assert_int_equal(count(bm, words), 2);
	assert_true(bit(bm, low - 1) && bit(bm, low + 2));
	free(bm);
	gmem_free(&m);
}

static void test_refusals(void **state)
{
	struct gmem m;
	memset(&m, 0, sizeof(m)); /* never mapped: no bitmap */
	assert_int_equal(gmem_log_dirty(&m, true), -EINVAL);
	gmem_mark(&m, NULL, 8); /* logging off: nothing */
	gmem_free(&m);
	gmem_free(&m); /* twice is safe */
}

/* Marks made while fetches run land in one fetch or a later one: the
 * union of the fetches is every page marked. */
#define MARKERS 2
#define ROUNDS 2000
static struct gmem shared;

static void *marker(void *arg)
{
	uintptr_t k = (uintptr_t)arg;
	for (uint64_t r = 0; r < ROUNDS; r++) {
		uint64_t page = (r * MARKERS + k) % (shared.ram_size / PAGE);
		gmem_mark(&shared, gmem_ptr(&shared, page * PAGE, 1), 1);
	}
	return NULL;
}

static void test_concurrent_marks(void **state)
{
	assert_int_equal(gmem_init(&shared, 16 * MIB), 0); /* 4096 pages >= MARKERS * ROUNDS */
	uint64_t words = gmem_dirty_words(&shared);
	uint64_t *bm = malloc(words * 8), *all = calloc(words, 8);
	assert_int_equal(gmem_log_dirty(&shared, true), 0);
	fetch(&shared, bm); /* the first: every page */
	pthread_t t[MARKERS];
	for (uintptr_t k = 0; k < MARKERS; k++)
		assert_int_equal(pthread_create(&t[k], NULL, marker, (void *)k), 0);
	for (int i = 0; i < 200; i++) {
		fetch(&shared, bm);
		for (uint64_t w = 0; w < words; w++)
			all[w] |= bm[w];
	}
	for (unsigned k = 0; k < MARKERS; k++)
		pthread_join(t[k], NULL);
	fetch(&shared, bm);
	for (uint64_t w = 0; w < words; w++)
		all[w] |= bm[w];
	assert_int_equal(count(all, words), MARKERS * ROUNDS);
	free(bm);
	free(all);
	gmem_free(&shared);
}

/* gmem_populated: exactly the pages written, read from pagemap without
 * faulting the others in (reading them would populate them too); a
 * memory that is not anonymous is refused. */
static void test_populated_pages(void **state)
{
	int fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		skip();
	struct gmem m;
	assert_int_equal(gmem_init(&m, 4 * MIB), 0);
	uint64_t words = gmem_dirty_words(&m);
	uint64_t *bm = malloc(words * 8);
	m.base[3 * PAGE] = 1;
	m.base[700 * PAGE + 5] = 2;
	assert_int_equal(gmem_populated(&m, fd, bm), 0);
	assert_int_equal(count(bm, words), 2);
	assert_true(bit(bm, 3) && bit(bm, 700));
	assert_int_equal(gmem_populated(&m, fd, bm), 0); /* nothing faulted in meanwhile */
	assert_int_equal(count(bm, words), 2);
	assert_int_equal(gmem_populated(&m, -1, bm), -EINVAL);
	m.anon = false;
	assert_int_equal(gmem_populated(&m, fd, bm), -EINVAL);
	free(bm);
	gmem_free(&m);
	close(fd);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_populated_pages),
	    cmocka_unit_test(test_off_means_every_page), cmocka_unit_test(test_on_then_marks_only),
	    cmocka_unit_test(test_two_regions),		 cmocka_unit_test(test_refusals),
	    cmocka_unit_test(test_concurrent_marks),
	};
	return cmocka_run_group_tests_name("guest memory dirty tracking", tests, NULL, NULL);
}
