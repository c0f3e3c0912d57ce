/* snapshot/format: the state file.  A round trip of sections, each way a
 * file is refused (with its message), and the commit's atomicity: a
 * failed commit leaves the previous file and no temp file. */
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
#include <sys/stat.h>
#include <unistd.h>

#include "snapshot/snapshot.h"
#include "tmpdir_fixture.h"

#define TAG_VCPU SNAP_TAG('V', 'C', 'P', 'U')
#define TAG_DEVS SNAP_TAG('D', 'E', 'V', 'S')
#define TAG_BLK SNAP_TAG('B', 'L', 'K', ' ')

struct fx {
	char dir[128];
	char path[160];
	char err[SNAP_ERR_MAX];
	uint8_t vcpu0[100], vcpu1[7], blk[4096];
};

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));
	if (!f)
		return -1;
	if (tmpdir_make(f->dir, sizeof(f->dir), "ember-snapfmt"))
		return -1;
	snprintf(f->path, sizeof(f->path), "%s/state", f->dir);
	for (size_t i = 0; i < sizeof(f->vcpu0); i++)
		f->vcpu0[i] = (uint8_t)(i + 1);
	memcpy(f->vcpu1, "regs-1", 7);
	for (size_t i = 0; i < sizeof(f->blk); i++)
		f->blk[i] = (uint8_t)(i * 7);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;
	if (tmpdir_remove(f->dir))
		return -1;
	free(f);
	return 0;
}

static const struct snap_header hdr = {
    .nr_vcpus = 2, .mem_size = 256 << 20, .mem_digest = 0x1234, .cpuid_sig = 0xabcdef};

/* Four sections, one empty; 0 or the commit's error. */
static int write_sample(struct fx *f, const char *path)
{
	struct snap_writer w;
	snap_w_init(&w, &hdr);
	assert_int_equal(snap_w_add(&w, TAG_VCPU, 0, f->vcpu0, sizeof(f->vcpu0)), 0);
	assert_int_equal(snap_w_add(&w, TAG_VCPU, 1, f->vcpu1, sizeof(f->vcpu1)), 0);
	assert_int_equal(snap_w_add(&w, TAG_DEVS, 0, NULL, 0), 0);
	assert_int_equal(snap_w_add(&w, TAG_BLK, 3, f->blk, sizeof(f->blk)), 0);
	int r = snap_w_commit(&w, path, f->err, sizeof(f->err));
	snap_w_free(&w);
	return r;
}

static uint8_t *slurp(const char *path, size_t *len)
{
	FILE *fp = fopen(path, "rb");
	assert_non_null(fp);
	static uint8_t buf[1 << 16];
	*len = fread(buf, 1, sizeof(buf), fp);
	fclose(fp);
	return buf;
}

static void spill(const char *path, const uint8_t *buf, size_t len)
{
	FILE *fp = fopen(path, "wb");
	assert_non_null(fp);
	assert_int_equal(fwrite(buf, 1, len, fp), len);
	assert_int_equal(fclose(fp), 0);
}

/* Reseal a patched file, so that the check after the CRC is what refuses. */
static void reseal(uint8_t *b, size_t len)
{
	uint32_t crc = snap_crc32(0, b, len - 4);
	memcpy(b + len - 4, &crc, 4);
}

/* snap_r_open refuses path with -EINVAL and a message containing why. */
static void assert_refused(struct fx *f, const char *why)
{
	struct snap_reader r;
	f->err[0] = '\0';
	assert_int_equal(snap_r_open(&r, f->path, f->err, sizeof(f->err)), -EINVAL);
	assert_contains(f->err, why);
	assert_contains(f->err, f->path);
	snap_r_close(&r); /* harmless after a failed open */
}

static void test_crc32(void **state)
{
	(void)state;
	/* the catalogued check value of CRC-32/ISO-HDLC (zlib's crc32) */
	assert_int_equal(snap_crc32(0, "123456789", 9), 0xCBF43926u);
	assert_int_equal(snap_crc32(snap_crc32(0, "1234", 4), "56789", 5), 0xCBF43926u);
	assert_int_equal(snap_crc32(0, "", 0), 0);
}

static void test_round_trip(void **state)
{
	struct fx *f = *state;
	assert_int_equal(write_sample(f, f->path), 0);

	struct stat st;
	assert_int_equal(stat(f->path, &st), 0);
	assert_int_equal(st.st_size, 64 + (16 + 104) + (16 + 8) + 16 + (16 + 4096) + 4);
	assert_int_equal(st.st_mode & 0777, 0600);
	assert_int_equal(count_tmp(f->dir), 0);

	struct snap_reader r;
	assert_int_equal(snap_r_open(&r, f->path, f->err, sizeof(f->err)), 0);
	assert_memory_equal(r.h.magic, "EMBRSNAP", 8);
	assert_int_equal(r.h.version, SNAP_VERSION);
	assert_int_equal(r.h.arch, SNAP_ARCH_X86_64);
	assert_int_equal(r.h.nr_vcpus, 2);
	assert_int_equal(r.h.flags, 0);
	assert_int_equal(r.h.mem_size, 256 << 20);
	assert_int_equal(r.h.mem_digest, 0x1234);
	assert_int_equal(r.h.cpuid_sig, 0xabcdef);
	assert_int_equal(r.h.nr_sections, 4);
	assert_true(r.h.created_ns > 1600000000ULL * 1000000000ULL);

	uint64_t len = 99;
	const uint8_t *p = snap_r_find(&r, TAG_VCPU, 0, &len);
	assert_non_null(p);
	assert_int_equal(len, sizeof(f->vcpu0));
	assert_memory_equal(p, f->vcpu0, len);
	assert_int_equal((uintptr_t)p % 8, 0);
	p = snap_r_find(&r, TAG_VCPU, 1, &len);
	assert_non_null(p);
	assert_int_equal(len, 7);
	assert_string_equal((const char *)p, "regs-1");
	assert_int_equal((uintptr_t)p % 8, 0);
	p = snap_r_find(&r, TAG_DEVS, 0, &len);
	assert_non_null(p);
	assert_int_equal(len, 0);
	p = snap_r_find(&r, TAG_BLK, 3, NULL);
	assert_non_null(p);
	assert_memory_equal(p, f->blk, sizeof(f->blk));
	assert_null(snap_r_find(&r, TAG_VCPU, 2, &len));
	assert_null(snap_r_find(&r, TAG_BLK, 0, &len));

	/* read -> write gives the same bytes (created_ns included) */
	struct snap_writer w;
	snap_w_init(&w, &r.h);
	for (uint32_t i = 0; i < r.h.nr_sections; i++) {
		const struct snap_section *s = &r.sec[i];
		assert_int_equal(snap_w_add(&w, s->tag, s->index, s->data, s->len), 0);
	}
	char again[192];
	snprintf(again, sizeof(again), "%s/again", f->dir);
	assert_int_equal(snap_w_commit(&w, again, f->err, sizeof(f->err)), 0);
	snap_w_free(&w);
	snap_w_free(&w); /* safe twice */
	snap_r_close(&r);
	snap_r_close(&r); /* safe twice */
	size_t n1, n2;
	uint8_t *b = slurp(f->path, &n1);
	uint8_t *first = malloc(n1);
	memcpy(first, b, n1);
	b = slurp(again, &n2);
	assert_int_equal(n1, n2);
	assert_memory_equal(first, b, n1);
	free(first);
}

static void test_layout(void **state)
{
	struct fx *f = *state;
	/* Written twice with the same created_ns: byte-identical. */
	struct snap_header h = hdr;
	h.created_ns = 42;
	char p2[192];
	snprintf(p2, sizeof(p2), "%s/two", f->dir);
	const char *paths[2] = {f->path, p2};
	for (int k = 0; k < 2; k++) {
		struct snap_writer w;
		snap_w_init(&w, &h);
		assert_int_equal(snap_w_add(&w, TAG_VCPU, 0, f->vcpu0, sizeof(f->vcpu0)), 0);
		assert_int_equal(snap_w_add(&w, TAG_VCPU, 1, f->vcpu1, sizeof(f->vcpu1)), 0);
		assert_int_equal(snap_w_commit(&w, paths[k], f->err, sizeof(f->err)), 0);
		snap_w_free(&w);
	}
	size_t n1, n2;
	uint8_t *b = slurp(f->path, &n1);
	uint8_t *copy = malloc(n1);
	memcpy(copy, b, n1);
	b = slurp(p2, &n2);
	assert_int_equal(n1, n2);
	assert_memory_equal(copy, b, n1);
	/* little-endian, fixed offsets */
	assert_memory_equal(copy, "EMBRSNAP\x03\0\0\0\x01\0\0\0\x02\0\0\0", 20);
	assert_memory_equal(copy + 64, "VCPU\0\0\0\0\x64\0\0\0\0\0\0\0", 16);
	/* padding is zero */
	assert_memory_equal(copy + 64 + 16 + 100, "\0\0\0\0", 4);
	free(copy);
}

static void test_short_file(void **state)
{
	struct fx *f = *state;
	assert_int_equal(write_sample(f, f->path), 0);
	size_t len;
	uint8_t *b = slurp(f->path, &len);
	uint8_t *orig = malloc(len);
	memcpy(orig, b, len);
	const size_t short_at[] = {0, 1, 8, 63, 64, 67};
	for (size_t i = 0; i < sizeof(short_at) / sizeof(short_at[0]); i++) {
		spill(f->path, orig, short_at[i]);
		assert_refused(f, "short file");
	}
	const size_t cut_at[] = {68, 80, 200, len / 2, len - 4, len - 1};
	for (size_t i = 0; i < sizeof(cut_at) / sizeof(cut_at[0]); i++) {
		spill(f->path, orig, cut_at[i]);
		assert_refused(f, "CRC mismatch");
	}
	free(orig);
}

static void test_bad_magic(void **state)
{
	struct fx *f = *state;
	assert_int_equal(write_sample(f, f->path), 0);
	size_t len;
	uint8_t *b = slurp(f->path, &len);
	b[3] = 'X';
	spill(f->path, b, len);
	assert_refused(f, "bad magic");
}

static void test_other_version(void **state)
{
	struct fx *f = *state;
	assert_int_equal(write_sample(f, f->path), 0);
	size_t len;
	uint8_t *b = slurp(f->path, &len);
	b[8] = 7;
	spill(f->path, b, len); /* CRC left stale: the version is said first */
	assert_refused(f, "format version 7, this ember reads 3");
	reseal(b, len);
	spill(f->path, b, len);
	assert_refused(f, "format version 7, this ember reads 3");
}

static void test_other_arch(void **state)
{
	struct fx *f = *state;
	assert_int_equal(write_sample(f, f->path), 0);
	size_t len;
	uint8_t *b = slurp(f->path, &len);
	b[12] = 2;
	reseal(b, len);
	spill(f->path, b, len);
	assert_refused(f, "architecture 2, this ember is x86_64");
}

static void test_crc_flip(void **state)
{
	struct fx *f = *state;
	assert_int_equal(write_sample(f, f->path), 0);
	size_t len;
	uint8_t *b = slurp(f->path, &len);
	uint8_t *orig = malloc(len);
	memcpy(orig, b, len);
	/* header fields past the checked ones, a section header, data,
	 * padding, the trailer */
	const size_t at[] = {16, 30, 56, 64, 70, 100, 64 + 16 + 101, len - 2000, len - 5, len - 1};
	for (size_t i = 0; i < sizeof(at) / sizeof(at[0]); i++) {
		memcpy(b, orig, len);
		b[at[i]] ^= 0x10;
		spill(f->path, b, len);
		assert_refused(f, "CRC mismatch");
	}
	free(orig);
}

static void test_unknown_flags(void **state)
{
	struct fx *f = *state;
	assert_int_equal(write_sample(f, f->path), 0);
	size_t len;
	uint8_t *b = slurp(f->path, &len);
	b[20] = 0x6;
	reseal(b, len);
	spill(f->path, b, len);
	assert_refused(f, "unknown flags 0x6");
}

static void test_section_past_end(void **state)
{
	struct fx *f = *state;
	assert_int_equal(write_sample(f, f->path), 0);
	size_t len;
	uint8_t *b = slurp(f->path, &len);
	uint8_t *orig = malloc(len);
	memcpy(orig, b, len);
	/* The last section (BLK /3, 4096 bytes) grown by one byte, then by
	 * 2^63: both run past the trailer. */
	size_t last = len - 4 - 4096 - 16;
	assert_int_equal(b[last], 'B');
	const uint64_t lens[] = {4097, 1ULL << 63, UINT64_MAX};
	for (size_t i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
		memcpy(b, orig, len);
		memcpy(b + last + 8, &lens[i], 8);
		reseal(b, len);
		spill(f->path, b, len);
		assert_refused(f, "section 3 (BLK /3)");
		assert_refused(f, "run past the end");
	}
	/* The first section's length makes the walk land inside the last
	 * section's data, whose bytes then read as a header too long. */
	memcpy(b, orig, len);
	uint64_t l0 = 104 + 16 + 8 + 16 + 16 + 8;
	memcpy(b + 64 + 8, &l0, 8);
	reseal(b, len);
	spill(f->path, b, len);
	assert_refused(f, "run past the end");
	/* A trailing partial section header. */
	uint8_t *big = calloc(1, len + 8);
	memcpy(big, orig, len - 4);
	reseal(big, len + 8);
	spill(f->path, big, len + 8);
	assert_refused(f, "section 4: its header at offset");
	free(big);
	free(orig);
}

static void test_duplicate(void **state)
{
	struct fx *f = *state;
	assert_int_equal(write_sample(f, f->path), 0);
	size_t len;
	uint8_t *b = slurp(f->path, &len);
	/* VCPU/1 renamed VCPU/0 */
	size_t s1 = 64 + 16 + 104;
	assert_int_equal(b[s1 + 4], 1);
	b[s1 + 4] = 0;
	reseal(b, len);
	spill(f->path, b, len);
	assert_refused(f, "section VCPU/0 appears twice");

	/* the writer refuses it too, and remembers */
	struct snap_writer w;
	snap_w_init(&w, &hdr);
	assert_int_equal(snap_w_add(&w, TAG_VCPU, 0, "a", 1), 0);
	assert_int_equal(snap_w_add(&w, TAG_VCPU, 0, "b", 1), -EEXIST);
	assert_int_equal(snap_w_add(&w, TAG_VCPU, 1, "c", 1), -EEXIST);
	char other[192];
	snprintf(other, sizeof(other), "%s/other", f->dir);
	assert_int_equal(snap_w_commit(&w, other, f->err, sizeof(f->err)), -EEXIST);
	assert_contains(f->err, "section VCPU/0: added twice");
	assert_contains(f->err, other);
	snap_w_free(&w);
	assert_int_equal(access(other, F_OK), -1);
}

static void test_nr_sections(void **state)
{
	struct fx *f = *state;
	assert_int_equal(write_sample(f, f->path), 0);
	size_t len;
	uint8_t *b = slurp(f->path, &len);
	b[56] = 5;
	reseal(b, len);
	spill(f->path, b, len);
	assert_refused(f, "holds 4 sections, its header says 5");
	b[56] = 3;
	reseal(b, len);
	spill(f->path, b, len);
	assert_refused(f, "holds 4 sections, its header says 3");
}

static void test_no_file(void **state)
{
	struct fx *f = *state;
	struct snap_reader r;
	assert_int_equal(snap_r_open(&r, f->path, f->err, sizeof(f->err)), -ENOENT);
	assert_contains(f->err, f->path);
	assert_int_equal(snap_r_open(&r, f->dir, f->err, sizeof(f->err)), -EINVAL);
	assert_contains(f->err, "not a regular file");
}

/* The previous file is whole and alone after a failed commit. */
static void assert_old_intact(struct fx *f)
{
	struct snap_reader r;
	assert_int_equal(snap_r_open(&r, f->path, f->err, sizeof(f->err)), 0);
	assert_int_equal(r.h.nr_sections, 4);
	snap_r_close(&r);
	assert_int_equal(count_tmp(f->dir), 0);
}

static void test_commit_failed_add(void **state)
{
	struct fx *f = *state;
	assert_int_equal(write_sample(f, f->path), 0);
	struct snap_writer w;
	snap_w_init(&w, &hdr);
	assert_int_equal(snap_w_add(&w, TAG_VCPU, 0, "x", 1), 0);
	assert_int_equal(snap_w_add(&w, TAG_VCPU, 0, "x", 1), -EEXIST);
	assert_int_equal(snap_w_add(&w, TAG_VCPU, 1, NULL, 3), -EEXIST); /* first error kept */
	assert_int_equal(snap_w_commit(&w, f->path, f->err, sizeof(f->err)), -EEXIST);
	snap_w_free(&w);
	assert_old_intact(f);

	snap_w_init(&w, &hdr);
	assert_int_equal(snap_w_add(&w, TAG_VCPU, 1, NULL, 3), -EINVAL);
	assert_int_equal(snap_w_commit(&w, f->path, f->err, sizeof(f->err)), -EINVAL);
	assert_contains(f->err, "no data");
	snap_w_free(&w);
	assert_old_intact(f);
}

static void test_commit_tmp_blocked(void **state)
{
	struct fx *f = *state;
	assert_int_equal(write_sample(f, f->path), 0);
	/* Something that is not ours sits at the temp name: the commit
	 * fails before writing and leaves it (and the old file) alone. */
	char tmp[192];
	snprintf(tmp, sizeof(tmp), "%s.tmp-%ld", f->path, (long)getpid());
	assert_int_equal(mkdir(tmp, 0700), 0);
	assert_int_equal(write_sample(f, f->path), -EISDIR);
	assert_contains(f->err, f->path);
	assert_int_equal(rmdir(tmp), 0);
	assert_old_intact(f);
}

static void test_commit_rename_fails(void **state)
{
	struct fx *f = *state;
	/* path is a non-empty directory: the temp file is written, the
	 * rename fails, the temp file goes. */
	char inner[192];
	assert_int_equal(mkdir(f->path, 0700), 0);
	snprintf(inner, sizeof(inner), "%s/keep", f->path);
	spill(inner, (const uint8_t *)"k", 1);
	int r = write_sample(f, f->path);
	assert_true(r == -EISDIR || r == -ENOTEMPTY || r == -EEXIST);
	assert_contains(f->err, "rename");
	assert_int_equal(count_tmp(f->dir), 0);
	assert_int_equal(access(inner, F_OK), 0);
}

static void test_commit_readonly_dir(void **state)
{
	struct fx *f = *state;
	assert_int_equal(write_sample(f, f->path), 0);
	if (geteuid() == 0) /* root writes anyway: test_commit_tmp_blocked covers it */
		skip();
	assert_int_equal(chmod(f->dir, 0500), 0);
	assert_int_equal(write_sample(f, f->path), -EACCES);
	assert_int_equal(chmod(f->dir, 0700), 0);
	assert_old_intact(f);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
	    T(test_crc32),
	    T(test_round_trip),
	    T(test_layout),
	    T(test_short_file),
	    T(test_bad_magic),
	    T(test_other_version),
	    T(test_other_arch),
	    T(test_crc_flip),
	    T(test_unknown_flags),
	    T(test_section_past_end),
	    T(test_duplicate),
	    T(test_nr_sections),
	    T(test_no_file),
	    T(test_commit_failed_add),
	    T(test_commit_tmp_blocked),
	    T(test_commit_rename_fails),
	    T(test_commit_readonly_dir),
	};
	return cmocka_run_group_tests_name("snapshot_format", tests, NULL, NULL);
}
