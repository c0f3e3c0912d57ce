/* snapshot/memfile: memory files.  A full file is sparse and reads back
 * equal; a diff holds exactly the dirty pages; merge(base, diff) is the
 * RAM after the diff; both ways of mapping read back the same; the digest
 * sees its sampled pages; wrong sizes are refused. */
#include <setjmp.h> /* cmocka needs these first */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "snapshot/snapshot.h"
#include "tmpdir_fixture.h"

#define MiB (1024ULL * 1024)
#define PG SNAP_PAGE
#define RAM (64 * MiB)
#define PAGES (RAM / PG)

struct fx {
	char dir[128];
	char base[160], diff[160], full[160];
	char err[SNAP_ERR_MAX];
	uint8_t *ram; /* RAM bytes, anonymous like guest RAM */
	uint64_t dirty[PAGES / 64];
};

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));
	if (!f)
		return -1;
	if (tmpdir_make(f->dir, sizeof(f->dir), "ember-snapmem"))
		return -1;
	snprintf(f->base, sizeof(f->base), "%s/base.mem", f->dir);
	snprintf(f->diff, sizeof(f->diff), "%s/diff.mem", f->dir);
	snprintf(f->full, sizeof(f->full), "%s/full.mem", f->dir);
	f->ram = mmap(NULL, RAM, PROT_READ | PROT_WRITE,
		      MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (f->ram == MAP_FAILED)
		return -1;
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;
	if (tmpdir_remove(f->dir))
		return -1;
	munmap(f->ram, RAM);
	free(f);
	return 0;
}

/* Page p filled with a pattern of its own. */
static void fill(uint8_t *ram, uint64_t p, uint8_t seed)
{
	for (uint64_t i = 0; i < PG; i++)
		ram[p * PG + i] = (uint8_t)(seed + p * 13 + i);
}

static void mark(struct fx *f, uint64_t p)
{
	f->dirty[p / 64] |= 1ULL << (p % 64);
}

static bool is_dirty(const struct fx *f, uint64_t p)
{
	return f->dirty[p / 64] >> (p % 64) & 1;
}

/* The file's SEEK_DATA map, one bool per page. */
static void data_map(const char *path, bool *map)
{
	int fd = open(path, O_RDONLY);
	assert_true(fd >= 0);
	memset(map, 0, PAGES);
	off_t at = 0;
	for (;;) {
		off_t d = lseek(fd, at, SEEK_DATA);
		if (d < 0) {
			assert_int_equal(errno, ENXIO);
			break;
		}
		off_t h = lseek(fd, d, SEEK_HOLE);
		assert_true(h > d);
		for (off_t o = d; o < h; o += PG)
			map[o / PG] = true;
		at = h;
	}
	close(fd);
}

/* The file at path holds exactly ram, read both ways. */
static void assert_file_is(struct fx *f, const char *path, const uint8_t *ram)
{
	for (int copy = 0; copy < 2; copy++) {
		uint8_t *m = NULL;
		assert_int_equal(snap_mem_map(path, RAM, copy, &m, f->err, sizeof(f->err)), 0);
		assert_non_null(m);
		if (memcmp(m, ram, RAM))
			fail_msg("%s (copy=%d) differs from the RAM", path, copy);
		assert_true(snap_mem_digest(m, RAM) == snap_mem_digest(ram, RAM));
		snap_mem_unmap(m, RAM);
	}
}

static const uint64_t touched[] = {0, 1, 2, 100, 101, 102, 4095, 4096, 9999, PAGES - 1};
#define NTOUCHED (sizeof(touched) / sizeof(touched[0]))

static void test_full_sparse(void **state)
{
	struct fx *f = *state;
	for (size_t i = 0; i < NTOUCHED; i++)
		fill(f->ram, touched[i], 1);
	/* a page written and zeroed again is still a hole */
	fill(f->ram, 5000, 1);
	memset(f->ram + 5000 * PG, 0, PG);
	/* a page with one non-zero byte at its very end is data */
	f->ram[7001 * PG - 1] = 1;

	assert_int_equal(snap_mem_write_full(f->full, f->ram, RAM, NULL, NULL, f->err, sizeof(f->err)), 0);
	assert_int_equal(count_tmp(f->dir), 0);
	struct stat st;
	assert_int_equal(stat(f->full, &st), 0);
	assert_int_equal(st.st_size, RAM);
	assert_int_equal(st.st_mode & 0777, 0600);
	/* 11 pages of data (plus what the file system keeps for extents) */
	assert_true((uint64_t)st.st_blocks * 512 < 64 * PG);

	static bool map[PAGES];
	data_map(f->full, map);
	for (uint64_t p = 0; p < PAGES; p++) {
		bool want = p == 7000;
		for (size_t i = 0; i < NTOUCHED; i++)
			want |= touched[i] == p;
		if (map[p] != want)
			fail_msg("page %llu: data %d, expected %d", (unsigned long long)p, map[p],
				 want);
	}
	assert_file_is(f, f->full, f->ram);
}

static void test_full_dense(void **state)
{
	struct fx *f = *state;
	memset(f->ram, 0x5a, RAM); /* one run of 64 MiB */
	memset(f->ram + 77 * PG, 0, PG);
	assert_int_equal(snap_mem_write_full(f->full, f->ram, RAM, NULL, NULL, f->err, sizeof(f->err)), 0);
	/* the map first: on tmpfs, faulting a hole in through a mapping
	 * allocates it */
	static bool map[PAGES];
	data_map(f->full, map);
	assert_false(map[77]);
	assert_true(map[76] && map[78] && map[0] && map[PAGES - 1]);
	assert_file_is(f, f->full, f->ram);
}

static void test_full_replaces(void **state)
{
	struct fx *f = *state;
	fill(f->ram, 3, 1);
	assert_int_equal(snap_mem_write_full(f->full, f->ram, RAM, NULL, NULL, f->err, sizeof(f->err)), 0);
	uint8_t *old = malloc(RAM);
	memcpy(old, f->ram, RAM);

	/* a blocked temp name: the commit fails, the old file stays */
	fill(f->ram, 4, 1);
	char tmp[192];
	snprintf(tmp, sizeof(tmp), "%s.tmp-%ld", f->full, (long)getpid());
	assert_int_equal(mkdir(tmp, 0700), 0);
	assert_int_equal(snap_mem_write_full(f->full, f->ram, RAM, NULL, NULL, f->err, sizeof(f->err)),
			 -EISDIR);
	assert_contains(f->err, f->full);
	assert_int_equal(rmdir(tmp), 0);
	assert_file_is(f, f->full, old);

	/* then it goes through */
	assert_int_equal(snap_mem_write_full(f->full, f->ram, RAM, NULL, NULL, f->err, sizeof(f->err)), 0);
	assert_file_is(f, f->full, f->ram);
	assert_int_equal(count_tmp(f->dir), 0);
	free(old);
}

static void test_bad_len(void **state)
{
	struct fx *f = *state;
	assert_int_equal(snap_mem_write_full(f->full, f->ram, 0, NULL, NULL, f->err, sizeof(f->err)), -EINVAL);
	assert_int_equal(snap_mem_write_full(f->full, f->ram, PG + 1, NULL, NULL, f->err, sizeof(f->err)),
			 -EINVAL);
	assert_contains(f->err, "not a positive multiple of 4096");
	assert_int_equal(
	    snap_mem_write_diff(f->diff, f->ram, 100, f->dirty, NULL, NULL, f->err, sizeof(f->err)), -EINVAL);
	assert_int_equal(count_tmp(f->dir), 0);
	assert_int_equal(access(f->full, F_OK), -1);
}

static const uint64_t dirtied[] = {3, 63, 64, 65, 66, 127, 128, 1000, 1001, 8191, PAGES - 1};
#define NDIRTIED (sizeof(dirtied) / sizeof(dirtied[0]))

static void test_diff_exact(void **state)
{
	struct fx *f = *state;
	fill(f->ram, 2, 1);
	fill(f->ram, 3, 1);
	for (size_t i = 0; i < NDIRTIED; i++)
		mark(f, dirtied[i]);
	fill(f->ram, 64, 9); /* the other dirty pages are all zero: data all the same */
	assert_int_equal(
	    snap_mem_write_diff(f->diff, f->ram, RAM, f->dirty, NULL, NULL, f->err, sizeof(f->err)), 0);
	assert_int_equal(count_tmp(f->dir), 0);

	static bool map[PAGES];
	data_map(f->diff, map);
	for (uint64_t p = 0; p < PAGES; p++) {
		if (map[p] != is_dirty(f, p))
			fail_msg("page %llu: data %d, dirty %d", (unsigned long long)p, map[p],
				 is_dirty(f, p));
	}
	int fd = open(f->diff, O_RDONLY);
	assert_true(fd >= 0);
	uint8_t page[PG];
	for (size_t i = 0; i < NDIRTIED; i++) {
		assert_int_equal(pread(fd, page, PG, (off_t)(dirtied[i] * PG)), PG);
		assert_memory_equal(page, f->ram + dirtied[i] * PG, PG);
	}
	struct stat st;
	assert_int_equal(fstat(fd, &st), 0);
	assert_int_equal(st.st_size, RAM);
	close(fd);

	/* nothing dirty: an empty diff, all hole */
	memset(f->dirty, 0, sizeof(f->dirty));
	assert_int_equal(
	    snap_mem_write_diff(f->diff, f->ram, RAM, f->dirty, NULL, NULL, f->err, sizeof(f->err)), 0);
	data_map(f->diff, map);
	for (uint64_t p = 0; p < PAGES; p++)
		assert_false(map[p]);
	/* everything dirty: one run */
	memset(f->dirty, 0xff, sizeof(f->dirty));
	assert_int_equal(
	    snap_mem_write_diff(f->diff, f->ram, RAM, f->dirty, NULL, NULL, f->err, sizeof(f->err)), 0);
	data_map(f->diff, map);
	for (uint64_t p = 0; p < PAGES; p++)
		assert_true(map[p]);
}

static void test_merge(void **state)
{
	struct fx *f = *state;
	for (uint64_t p = 0; p < 300; p++)
		fill(f->ram, p, 1);
	fill(f->ram, PAGES - 2, 1);
	assert_int_equal(snap_mem_write_full(f->base, f->ram, RAM, NULL, NULL, f->err, sizeof(f->err)), 0);
	assert_int_equal(chmod(f->base, 0640), 0);

	/* after the base: new data, changed data, data zeroed, untouched */
	for (size_t i = 0; i < NDIRTIED; i++) {
		mark(f, dirtied[i]);
		fill(f->ram, dirtied[i], 77);
	}
	memset(f->ram + 64 * PG, 0, PG); /* was data in the base, zero now */
	memset(f->ram + 65 * PG, 0, PG);
	assert_int_equal(
	    snap_mem_write_diff(f->diff, f->ram, RAM, f->dirty, NULL, NULL, f->err, sizeof(f->err)), 0);
	struct stat before;
	assert_int_equal(stat(f->diff, &before), 0);

	assert_int_equal(snap_mem_merge(f->base, f->diff, f->err, sizeof(f->err)), 0);
	assert_int_equal(count_tmp(f->dir), 0);
	struct stat st;
	assert_int_equal(stat(f->base, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0640); /* kept */
	/* base stays sparse: its holes were not copied as zeros (checked
	 * before mapping it: on tmpfs a mapping's faults fill holes) */
	assert_true((uint64_t)st.st_blocks * 512 < 400 * PG);
	assert_file_is(f, f->base, f->ram);
	/* the diff is as it was */
	struct stat after;
	assert_int_equal(stat(f->diff, &after), 0);
	assert_int_equal(after.st_size, before.st_size);
	assert_int_equal(after.st_blocks, before.st_blocks);

	/* a second diff on top of the merged base */
	memset(f->dirty, 0, sizeof(f->dirty));
	fill(f->ram, 5, 200);
	mark(f, 5);
	assert_int_equal(
	    snap_mem_write_diff(f->diff, f->ram, RAM, f->dirty, NULL, NULL, f->err, sizeof(f->err)), 0);
	assert_int_equal(snap_mem_merge(f->base, f->diff, f->err, sizeof(f->err)), 0);
	assert_file_is(f, f->base, f->ram);
}

static void test_merge_refuses(void **state)
{
	struct fx *f = *state;
	fill(f->ram, 1, 1);
	assert_int_equal(snap_mem_write_full(f->base, f->ram, RAM, NULL, NULL, f->err, sizeof(f->err)), 0);
	fill(f->ram, 2, 1);
	mark(f, 2);
	assert_int_equal(
	    snap_mem_write_diff(f->diff, f->ram, RAM / 2, f->dirty, NULL, NULL, f->err, sizeof(f->err)), 0);
	assert_int_equal(snap_mem_merge(f->base, f->diff, f->err, sizeof(f->err)), -EINVAL);
	assert_contains(f->err, f->base);
	assert_contains(f->err, "not of the same VM");
	assert_int_equal(count_tmp(f->dir), 0);
	memset(f->ram + 2 * PG, 0, PG);
	assert_file_is(f, f->base, f->ram);

	assert_int_equal(snap_mem_merge(f->base, f->full, f->err, sizeof(f->err)), -ENOENT);
	assert_contains(f->err, f->full);
	assert_int_equal(snap_mem_merge(f->full, f->diff, f->err, sizeof(f->err)), -ENOENT);
	assert_contains(f->err, f->full);
}

static void test_map(void **state)
{
	struct fx *f = *state;
	for (size_t i = 0; i < NTOUCHED; i++)
		fill(f->ram, touched[i], 3);
	assert_int_equal(snap_mem_write_full(f->full, f->ram, RAM, NULL, NULL, f->err, sizeof(f->err)), 0);

	uint8_t *a, *b;
	assert_int_equal(snap_mem_map(f->full, RAM, false, &a, f->err, sizeof(f->err)), 0);
	assert_int_equal(snap_mem_map(f->full, RAM, true, &b, f->err, sizeof(f->err)), 0);
	assert_true(memcmp(a, b, RAM) == 0);
	assert_true(memcmp(a, f->ram, RAM) == 0);
	/* MAP_PRIVATE: the guest's writes never reach the file */
	memset(a, 0xee, 3 * PG);
	a[RAM - 1] = 1;
	snap_mem_unmap(a, RAM);
	/* the copy no longer needs the file */
	assert_int_equal(unlink(f->full), 0);
	assert_true(memcmp(b, f->ram, RAM) == 0);
	snap_mem_unmap(b, RAM);
	snap_mem_unmap(NULL, RAM);

	assert_int_equal(snap_mem_write_full(f->full, f->ram, RAM, NULL, NULL, f->err, sizeof(f->err)), 0);
	assert_file_is(f, f->full, f->ram);
}

static void test_map_refuses(void **state)
{
	struct fx *f = *state;
	assert_int_equal(snap_mem_write_full(f->full, f->ram, RAM, NULL, NULL, f->err, sizeof(f->err)), 0);
	uint8_t *m = (uint8_t *)1;
	for (int copy = 0; copy < 2; copy++) {
		assert_int_equal(snap_mem_map(f->full, RAM - PG, copy, &m, f->err, sizeof(f->err)),
				 -ERANGE);
		assert_null(m);
		assert_contains(f->err, f->full);
		assert_contains(f->err, "not its memory file");
		assert_int_equal(snap_mem_map(f->full, 2 * RAM, copy, &m, f->err, sizeof(f->err)),
				 -ERANGE);
		assert_int_equal(snap_mem_map(f->dir, RAM, copy, &m, f->err, sizeof(f->err)),
				 -EINVAL);
		assert_contains(f->err, "not a regular file");
		assert_int_equal(snap_mem_map(f->base, RAM, copy, &m, f->err, sizeof(f->err)),
				 -ENOENT);
		assert_contains(f->err, f->base);
	}
}

static void test_digest(void **state)
{
	struct fx *f = *state;
	uint64_t zero = snap_mem_digest(f->ram, RAM);
	assert_true(zero == snap_mem_digest(f->ram, RAM));
	assert_true(zero != snap_mem_digest(f->ram, RAM - PG)); /* the size counts */

	/* the sampled pages: head, 60 spread, last */
	const uint64_t first = 16, span = PAGES - 1 - first;
	uint64_t sampled[] = {
	    0,	      15, first + 0 * span / 60, first + 30 * span / 60, first + 59 * span / 60,
	    PAGES - 1};
	uint64_t prev = zero;
	for (size_t i = 0; i < sizeof(sampled) / sizeof(sampled[0]); i++) {
		uint8_t *p = f->ram + sampled[i] * PG + (i * 517) % PG;
		*p ^= 1;
		uint64_t d = snap_mem_digest(f->ram, RAM);
		if (d == prev)
			fail_msg("digest blind to page %llu", (unsigned long long)sampled[i]);
		*p ^= 1;
		assert_true(snap_mem_digest(f->ram, RAM) == zero);
		prev = d;
	}
	/* a page between samples is not seen: a tie, not a checksum */
	f->ram[(first + 1) * PG + 8] = 1;
	assert_true(snap_mem_digest(f->ram, RAM) == zero);
	f->ram[(first + 1) * PG + 8] = 0;

	/* small RAM: all of it counts, down to the last byte */
	uint64_t small = snap_mem_digest(f->ram, 40 * PG);
	f->ram[40 * PG - 1] = 1;
	assert_true(snap_mem_digest(f->ram, 40 * PG) != small);
	f->ram[40 * PG - 1] = 0;
	assert_true(snap_mem_digest(f->ram, 40 * PG) == small);

	/* fixed by the format (state files store it): pinned values */
	for (uint64_t i = 0; i < RAM; i += PG)
		f->ram[i + (i / PG) % PG] = (uint8_t)(i / PG + 1);
	assert_true(snap_mem_digest(f->ram, RAM) == 0x0317201b3d4a9a4eULL);
	assert_true(snap_mem_digest(f->ram, 40 * PG) == 0x947b2466160e1405ULL);
}

/* The content hash: the writer's equals a hash of the RAM and of the
 * file read back (holes and zero data pages alike add nothing); a diff
 * updates it to the hash of the RAM after it, which the merged file
 * has; any one changed byte, or a page moved, changes it. */
static void test_hash(void **state)
{
	struct fx *f = *state;
	uint64_t *terms = calloc(PAGES, sizeof(uint64_t));
	uint64_t *terms2 = calloc(PAGES, sizeof(uint64_t));
	assert_non_null(terms);
	assert_non_null(terms2);
	for (uint64_t p = 0; p < PAGES; p += 7)
		fill(f->ram, p, 1);
	struct snap_mem_hash w = {0, terms}, r = {0, terms2}, m = {0, NULL};
	assert_int_equal(snap_mem_write_full(f->base, f->ram, RAM, &w, NULL, f->err, sizeof(f->err)), 0);
	snap_mem_hash_ram(f->ram, RAM, &m);
	assert_true(m.sum == w.sum && w.sum != 0);
	int fd = open(f->base, O_RDONLY);
	assert_true(fd >= 0);
	assert_int_equal(snap_mem_hash_fd(fd, RAM, f->base, &r, f->err, sizeof(f->err)), 0);
	close(fd);
	assert_true(r.sum == w.sum);
	assert_memory_equal(terms, terms2, PAGES * sizeof(uint64_t));

	/* a diff: some pages changed, one zeroed, one new */
	memset(f->dirty, 0, sizeof(f->dirty));
	fill(f->ram, 14, 9), mark(f, 14);
	memset(f->ram + 21 * PG, 0, PG), mark(f, 21);
	fill(f->ram, 22, 3), mark(f, 22);
	uint64_t before = w.sum;
	assert_int_equal(snap_mem_write_diff(f->diff, f->ram, RAM, f->dirty, &w, NULL, f->err,
					     sizeof(f->err)),
			 0);
	assert_true(w.sum != before);
	snap_mem_hash_ram(f->ram, RAM, &m);
	assert_true(m.sum == w.sum);
	assert_int_equal(snap_mem_merge(f->base, f->diff, f->err, sizeof(f->err)), 0);
	fd = open(f->base, O_RDONLY);
	assert_true(fd >= 0);
	assert_int_equal(snap_mem_hash_fd(fd, RAM, f->base, &r, f->err, sizeof(f->err)), 0);
	close(fd);
	assert_true(r.sum == w.sum);
	/* the unmerged diff is not the RAM */
	fd = open(f->diff, O_RDONLY);
	assert_int_equal(snap_mem_hash_fd(fd, RAM, f->diff, &r, f->err, sizeof(f->err)), 0);
	close(fd);
	assert_true(r.sum != w.sum);

	/* one byte anywhere; the same page at another index */
	m.terms = NULL;
	f->ram[RAM - 1] ^= 1;
	snap_mem_hash_ram(f->ram, RAM, &m);
	assert_true(m.sum != w.sum);
	f->ram[RAM - 1] ^= 1;
	memcpy(f->ram + 15 * PG, f->ram + 14 * PG, PG);
	memset(f->ram + 14 * PG, 0, PG);
	snap_mem_hash_ram(f->ram, RAM, &m);
	assert_true(m.sum != w.sum);

	/* fixed by the format: a pinned value */
	memset(f->ram, 0, 3 * PG);
	f->ram[PG + 5] = 1;
	m.terms = NULL;
	snap_mem_hash_ram(f->ram, 3 * PG, &m);
	assert_true(m.sum == snap_mem_page_term(f->ram + PG, 1));
	assert_true(m.sum == 0x5e5acf74c73abff9ULL);
	assert_true(snap_mem_page_term(f->ram, 0) == 0);
	free(terms);
	free(terms2);
}

/* A diff without the previous terms cannot say the RAM's hash. */
static void test_hash_diff_needs_terms(void **state)
{
	struct fx *f = *state;
	struct snap_mem_hash h = {0, NULL};
	mark(f, 1);
	assert_int_equal(
	    snap_mem_write_diff(f->diff, f->ram, RAM, f->dirty, &h, NULL, f->err, sizeof(f->err)),
	    -EINVAL);
	assert_non_null(strstr(f->err, "page hashes"));
	assert_int_equal(access(f->diff, F_OK), -1);
}

/* A FIFO is refused, not waited on. */
static void test_merge_fifo(void **state)
{
	struct fx *f = *state;
	assert_int_equal(snap_mem_write_full(f->base, f->ram, RAM, NULL, NULL, f->err, sizeof(f->err)),
			 0);
	assert_int_equal(mkfifo(f->diff, 0600), 0);
	assert_int_equal(snap_mem_merge(f->base, f->diff, f->err, sizeof(f->err)), -EINVAL);
	assert_non_null(strstr(f->err, "a FIFO, not a regular file"));
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
	    T(test_full_sparse), T(test_full_dense), T(test_full_replaces), T(test_bad_len),
	    T(test_diff_exact),	 T(test_merge),	     T(test_merge_refuses), T(test_map),
	    T(test_map_refuses), T(test_digest),     T(test_hash),	    T(test_hash_diff_needs_terms),
	    T(test_merge_fifo),
	};
	return cmocka_run_group_tests_name("snapshot_mem", tests, NULL, NULL);
}
