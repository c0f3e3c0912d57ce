/* base/blk_mirror.c: the copy's plan over data and hole extents, the
 * "already copied" watermark that decides which guest writes are
 * mirrored, and a whole copy of a sparse file with writes and discards
 * racing it (as a guest's would, between two steps). */
#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "base/backend.h"
#include "base/blk_mirror.h"
#include "tmpdir_fixture.h"

#define KiB 1024ull
#define MiB (1024ull * 1024)
#define SIZE (8 * MiB)
#define CHUNK (256 * KiB)

static void test_clip(void **state)
{
	struct blk_span s = blk_mirror_clip(0, 0, 4096); /* nothing copied yet */
	assert_int_equal(s.len, 0);
	s = blk_mirror_clip(8192, 0, 4096); /* wholly below */
	assert_int_equal(s.off, 0);
	assert_int_equal(s.len, 4096);
	s = blk_mirror_clip(8192, 4096, 8192); /* straddles the watermark */
	assert_int_equal(s.off, 4096);
	assert_int_equal(s.len, 4096);
	s = blk_mirror_clip(8192, 8192, 512); /* at it: not copied yet */
	assert_int_equal(s.len, 0);
	s = blk_mirror_clip(UINT64_MAX, UINT64_MAX - 10, 10); /* no overflow */
	assert_int_equal(s.len, 10);
}

static void test_plan(void **state)
{
	/* data from the watermark: a chunk of it */
	struct blk_span s = blk_mirror_plan(0, SIZE, 0, (int64_t)SIZE, CHUNK);
	assert_int_equal(s.off, 0);
	assert_int_equal(s.len, CHUNK);
	/* a hole first: skipped, then up to the data's end */
	s = blk_mirror_plan(0, SIZE, (int64_t)(3 * MiB), (int64_t)(3 * MiB + 4096), CHUNK);
	assert_int_equal(s.off, 3 * MiB);
	assert_int_equal(s.len, 4096);
	/* no more data: done at the end */
	s = blk_mirror_plan(5 * MiB, SIZE, -1, -1, CHUNK);
	assert_int_equal(s.off, SIZE);
	assert_int_equal(s.len, 0);
	/* data past the disk's end (a file longer than the disk): done */
	s = blk_mirror_plan(5 * MiB, SIZE, (int64_t)SIZE, -1, CHUNK);
	assert_int_equal(s.len, 0);
	/* no hole answer (or a nonsense one): to the end, a chunk at a time */
	s = blk_mirror_plan(SIZE - 4096, SIZE, (int64_t)(SIZE - 4096), -1, CHUNK);
	assert_int_equal(s.len, 4096);
	s = blk_mirror_plan(0, SIZE, 0, 0, CHUNK);
	assert_int_equal(s.len, CHUNK);
	/* a data answer before the watermark (a file changing): from it */
	s = blk_mirror_plan(4096, SIZE, 0, (int64_t)(8192), CHUNK);
	assert_int_equal(s.off, 4096);
	assert_int_equal(s.len, 4096);
}

struct fx {
	char dir[128], src[192], dst[192];
	int sfd, dfd;
	uint8_t *buf;
};

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));
	if (!f || tmpdir_make(f->dir, sizeof(f->dir), "ember-test-mirror"))
		return -1;
	snprintf(f->src, sizeof(f->src), "%s/src.img", f->dir);
	snprintf(f->dst, sizeof(f->dst), "%s/dst.img", f->dir);
	f->sfd = open(f->src, O_RDWR | O_CREAT | O_EXCL, 0600);
	f->dfd = open(f->dst, O_RDWR | O_CREAT | O_EXCL, 0600);
	f->buf = malloc(CHUNK);
	if (f->sfd < 0 || f->dfd < 0 || !f->buf || ftruncate(f->sfd, SIZE))
		return -1;
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;
	close(f->sfd);
	close(f->dfd);
	free(f->buf);
	int r = tmpdir_remove(f->dir);
	free(f);
	return r;
}

static void put(int fd, uint64_t off, size_t len, uint8_t byte)
{
	uint8_t *p = malloc(len);
	assert_non_null(p);
	memset(p, byte, len);
	assert_int_equal(pwrite(fd, p, len, (off_t)off), (ssize_t)len);
	free(p);
}

static void assert_same(struct fx *f)
{
	uint8_t *a = malloc(SIZE), *b = malloc(SIZE);
	assert_true(a && b);
	assert_int_equal(pread(f->sfd, a, SIZE, 0), (ssize_t)SIZE);
	assert_int_equal(pread(f->dfd, b, SIZE, 0), (ssize_t)SIZE);
	for (uint64_t i = 0; i < SIZE; i++)
		if (a[i] != b[i])
			fail_msg("source and destination differ at byte %llu (%u, %u)",
				 (unsigned long long)i, a[i], b[i]);
	free(a);
	free(b);
}

/* Steps until done; returns the number of steps. */
static int run_to_end(struct blk_mirror *m, struct fx *f)
{
	bool done = false;
	int n = 0;
	while (!done) {
		assert_true(blk_mirror_step(m, f->buf, CHUNK, &done) >= 0);
		assert_true(++n < 1000);
	}
	return n;
}

/* Holes stay holes, zeroes are not written, data is read once. */
static void test_sparse_copy(void **state)
{
	struct fx *f = *state;
	put(f->sfd, 0, 64 * KiB, 0xaa);
	put(f->sfd, 3 * MiB, 300 * KiB, 0xbb);
	put(f->sfd, 6 * MiB, 64 * KiB, 0); /* allocated, but zeroes */
	put(f->sfd, SIZE - 4096, 4096, 0xcc);
	put(f->dfd, 0, 1 * MiB, 0x11); /* an old destination: emptied first */
	struct blk_mirror m;
	assert_int_equal(blk_mirror_init(&m, f->sfd, f->dfd, SIZE), 0);
	run_to_end(&m, f);
	assert_int_equal(m.copied, SIZE);
	assert_int_equal(m.err, 0);
	assert_int_equal(m.data_bytes, 64 * KiB + 300 * KiB + 64 * KiB + 4096);
	assert_same(f);
	struct stat st;
	assert_int_equal(fstat(f->dfd, &st), 0);
	assert_int_equal(st.st_size, SIZE);
	/* the data's blocks, not the zeroes' nor the holes' */
	assert_true((uint64_t)st.st_blocks * 512 <= 64 * KiB + 300 * KiB + 4096 + 64 * KiB);
	blk_mirror_fini(&m);
}

/* Writes below the watermark reach both files, above it the source only
 * (the copy carries them); discards likewise; the end result is equal. */
static void test_mirrored_writes(void **state)
{
	struct fx *f = *state;
	put(f->sfd, 0, SIZE, 0x55);
	struct blk_backend be = {.fd = f->sfd, .capacity = SIZE};
	struct blk_mirror m;
	assert_int_equal(blk_mirror_init(&m, f->sfd, f->dfd, SIZE), 0);
	be.mirror = &m;
	bool done = false;
	assert_int_equal(blk_mirror_step(&m, f->buf, CHUNK, &done), (int64_t)CHUNK);
	assert_int_equal(m.copied, CHUNK);

	uint8_t w[4096], r[4096];
	memset(w, 0x77, sizeof(w));
	/* below: mirrored at once */
	assert_int_equal(blk_write(&be, 8192, w, sizeof(w)), 0);
	assert_int_equal(pread(f->dfd, r, sizeof(r), 8192), (ssize_t)sizeof(r));
	assert_memory_equal(r, w, sizeof(w));
	/* straddling: the copied part mirrored, the rest not yet */
	assert_int_equal(blk_write(&be, CHUNK - 2048, w, sizeof(w)), 0);
	assert_int_equal(pread(f->dfd, r, sizeof(r), CHUNK - 2048), (ssize_t)sizeof(r));
	assert_memory_equal(r, w, 2048);
	for (unsigned i = 2048; i < sizeof(r); i++)
		assert_int_equal(r[i], 0);
	assert_int_equal(m.mirrored, 4096 + 2048);
	/* above: the source only */
	assert_int_equal(blk_write(&be, 4 * MiB, w, sizeof(w)), 0);
	assert_int_equal(pread(f->dfd, r, sizeof(r), 4 * MiB), (ssize_t)sizeof(r));
	for (unsigned i = 0; i < sizeof(r); i++)
		assert_int_equal(r[i], 0);
	/* a discard below the watermark: punched in both */
	assert_int_equal(
	    fallocate(f->sfd, FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE, 65536, 65536), 0);
	blk_mirror_fallocated(&m, FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE, 65536, 65536);
	assert_int_equal(blk_flush(&be), 0);
	run_to_end(&m, f);
	assert_int_equal(m.err, 0);
	assert_same(f);
	blk_mirror_fini(&m);
}

/* A destination that cannot be written: the step fails with the reason,
 * which sticks; the guest's own writes still succeed. */
static void test_destination_failure(void **state)
{
	struct fx *f = *state;
	put(f->sfd, 0, 1 * MiB, 0x42);
	int ro = open(f->dst, O_RDONLY);
	assert_true(ro >= 0);
	struct blk_mirror m;
	/* ftruncate on a read-only fd fails at once */
	assert_int_equal(blk_mirror_init(&m, f->sfd, ro, SIZE), -EINVAL);
	assert_contains(m.why, "sizing the destination");
	blk_mirror_fini(&m);
	assert_int_equal(blk_mirror_init(&m, f->sfd, f->dfd, SIZE), 0);
	m.dst_fd = ro; /* as if the destination failed later */
	bool done = false;
	assert_int_equal(blk_mirror_step(&m, f->buf, CHUNK, &done), -EBADF);
	char why[BLK_MIRROR_ERR_MAX];
	assert_int_equal(blk_mirror_error(&m, why, sizeof(why)), -EBADF);
	assert_contains(why, "writing the destination at offset 0");
	assert_int_equal(blk_mirror_step(&m, f->buf, CHUNK, &done), -EBADF);
	struct blk_backend be = {.fd = f->sfd, .capacity = SIZE, .mirror = &m};
	uint8_t w[512] = {1};
	assert_int_equal(blk_write(&be, 0, w, sizeof(w)), 0);
	close(ro);
	blk_mirror_fini(&m);
}

/* The fixture's leftover check, used here too: no stray temp files. */
static void test_no_temp_files(void **state)
{
	struct fx *f = *state;
	assert_int_equal(count_tmp(f->dir), 0);
}

/* Tracking mode (a live migration's disk copy): the copy reads extents
 * (holes skipped) that the caller sends elsewhere, writes below the
 * watermark mark blocks, the dirty blocks are taken and sent again; what
 * arrives (here: written into dst) equals the source. */
static void apply(struct fx *f, struct blk_span sp, const uint8_t *buf, bool zero)
{
	if (zero)
		assert_int_equal(fallocate(f->dfd, FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE,
					   (off_t)sp.off, (off_t)sp.len),
				 0);
	else
		assert_int_equal(pwrite(f->dfd, buf, sp.len, (off_t)sp.off), (ssize_t)sp.len);
}

static void test_track(void **state)
{
	struct fx *f = *state;
	struct blk_mirror m;
	struct blk_backend be = {.fd = f->sfd, .capacity = SIZE};
	put(f->sfd, 1 * MiB, 512 * KiB, 0xa1);
	put(f->sfd, 6 * MiB, 64 * KiB, 0xb2);
	assert_int_equal(blk_mirror_init_track(&m, f->sfd, SIZE), 0);
	assert_int_equal(ftruncate(f->dfd, SIZE), 0);
	be.mirror = &m;
	bool done = false, zero;
	struct blk_span sp;
	int steps = 0;
	uint64_t data = 0;
	while (!done) {
		assert_int_equal(blk_mirror_read_step(&m, f->buf, CHUNK, &sp, &zero, &done), 0);
		if (sp.len && !zero)
			apply(f, sp, f->buf, false), data += sp.len;
		if (steps++ == 1) {
			/* between steps: below the watermark (marked), above
			 * it (the copy reads it), and a discard below it */
			uint8_t w[4096];
			memset(w, 0xc3, sizeof(w));
			assert_int_equal(blk_write(&be, 1 * MiB, w, sizeof(w)), 0);
			assert_int_equal(blk_write(&be, 7 * MiB, w, sizeof(w)), 0);
			assert_int_equal(fallocate(f->sfd, FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE,
						   (off_t)(1 * MiB + 8 * KiB), 8 * KiB),
					 0);
			blk_mirror_fallocated(&m, FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE,
					      1 * MiB + 8 * KiB, 8 * KiB);
		}
		assert_true(steps < 1000);
	}
	assert_int_equal(data, 512 * KiB + 64 * KiB + 4096); /* the write above: copied */
	/* 1 MiB's 4 KiB write and the 8 KiB discard 8 KiB further: three
	 * blocks, two runs */
	assert_int_equal(blk_mirror_dirty_bytes(&m), 3 * BLK_TRACK_BLOCK);
	int runs = 0;
	for (;;) {
		assert_int_equal(blk_mirror_take_dirty(&m, f->buf, CHUNK, &sp, &zero), 0);
		if (!sp.len)
			break;
		apply(f, sp, f->buf, zero);
		runs++;
	}
	assert_int_equal(runs, 2);
	assert_int_equal(blk_mirror_dirty_bytes(&m), 0);
	assert_same(f);
	/* stopped: writes mark nothing, a step fails */
	blk_mirror_stop(&m);
	uint8_t w[512] = {1};
	assert_int_equal(blk_write(&be, 0, w, sizeof(w)), 0);
	assert_int_equal(blk_mirror_take_dirty(&m, f->buf, CHUNK, &sp, &zero), -ECANCELED);
	blk_mirror_fini(&m);
}

int main(void)
{
#define ON_FILES(t) cmocka_unit_test_setup_teardown(t, setup, teardown)
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_clip),	cmocka_unit_test(test_plan), ON_FILES(test_track),
	    ON_FILES(test_sparse_copy),		ON_FILES(test_mirrored_writes),
	    ON_FILES(test_destination_failure), ON_FILES(test_no_temp_files),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
