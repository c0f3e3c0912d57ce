/* snapshot/stream: a state file and RAM in one stream.  Round trip
 * through a pipe (the writer on a thread, non-blocking); a cut at every
 * record boundary and inside each part refused with its byte offset and
 * part; a flipped byte in a page (the hash) and in the state (its CRC);
 * bad magic, version, flags; runs past RAM, empty, overlapping or out of
 * order; unknown records; zero markers and a dirty set applied onto RAM
 * that already holds the previous round. */
#include <setjmp.h> /* cmocka needs these first */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "snapshot/snapshot.h"

#define PG SNAP_PAGE
#define PAGES 1024ULL
#define RAM (PAGES * PG)

struct fx {
	uint8_t *src, *dst; /* RAM: the writer's and the reader's */
	uint8_t *bytes;	    /* a whole stream of src, from write_full */
	size_t len;
	uint64_t state_len; /* its state file's length */
	char err[SNAP_ERR_MAX];
};

static uint8_t *map_ram(void)
{
	uint8_t *p = mmap(NULL, RAM, PROT_READ | PROT_WRITE,
			  MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	assert_true(p != MAP_FAILED);
	return p;
}

static void fill(uint8_t *ram, uint64_t p, uint8_t seed)
{
	for (uint64_t i = 0; i < PG; i++)
		ram[p * PG + i] = (uint8_t)(seed + p * 7 + i);
}

/* A small state file's writer, as a snapshot of this RAM would start. */
static void state(struct snap_writer *w)
{
	struct snap_header h = {.nr_vcpus = 1, .mem_size = RAM, .created_ns = 1};
	snap_w_init(w, &h);
	static const char conf[] = "a configuration";
	assert_int_equal(snap_w_add(w, SNAP_TAG('C', 'O', 'N', 'F'), 0, conf, sizeof(conf)), 0);
}

/* A full stream of ram into fd: its hash in *sum. */
static int write_full(int fd, const uint8_t *ram, uint64_t *sum, uint64_t *off, char *err)
{
	struct snap_writer w;
	struct snap_stream s = {.fd = fd};
	struct snap_mem_hash h = {0, NULL};
	static uint64_t nonzero[PAGES / 64];
	state(&w);
	snap_mem_scan(ram, RAM, &h, nonzero);
	int e = snap_stream_put_state(&s, &w, err, SNAP_ERR_MAX);
	if (!e)
		e = snap_stream_put_mem(&s, ram, RAM, nonzero, h.sum, err, SNAP_ERR_MAX);
	snap_w_free(&w);
	if (sum)
		*sum = h.sum;
	if (off)
		*off = s.off;
	return e;
}

/* An fd that reads back n bytes (a memfd: as a pipe would give them). */
static int feed(const uint8_t *b, size_t n)
{
	int fd = memfd_create("stream", MFD_CLOEXEC);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, b, n), (ssize_t)n);
	assert_int_equal(lseek(fd, 0, SEEK_SET), 0);
	return fd;
}

/* Read a whole stream from b[0..n) into dst: 0 or the refusal. */
static int read_all(struct fx *f, const uint8_t *b, size_t n, uint64_t *sum)
{
	int fd = feed(b, n);
	struct snap_stream s = {.fd = fd};
	struct snap_reader r;
	struct snap_mem_hash h = {0, NULL};
	f->err[0] = '\0';
	int e = snap_stream_get_state(&s, &r, f->err, sizeof(f->err));
	if (!e) {
		assert_int_equal(r.h.mem_size, RAM);
		snap_r_close(&r);
		e = snap_stream_get_mem(&s, f->dst, RAM, true, &h, f->err, sizeof(f->err));
	}
	close(fd);
	if (!e && sum)
		*sum = h.sum;
	if (!e)
		assert_int_equal(s.off, n); /* exactly to the end record, nothing past it */
	return e;
}

static int setup(void **st)
{
	struct fx *f = calloc(1, sizeof(*f));
	assert_non_null(f);
	f->src = map_ram();
	f->dst = map_ram();
	/* runs of data between zero pages, the first and last page too */
	for (uint64_t p = 0; p < PAGES; p++)
		if (p % 7 != 3 && !(p >= 100 && p < 300))
			fill(f->src, p, 1);
	int fd = memfd_create("full", MFD_CLOEXEC);
	assert_true(fd >= 0);
	assert_int_equal(write_full(fd, f->src, NULL, NULL, f->err), 0);
	f->len = (size_t)lseek(fd, 0, SEEK_END);
	f->bytes = malloc(f->len);
	assert_int_equal(pread(fd, f->bytes, f->len, 0), (ssize_t)f->len);
	close(fd);
	memcpy(&f->state_len, f->bytes + 16, 8);
	*st = f;
	return 0;
}

static int teardown(void **st)
{
	struct fx *f = *st;
	munmap(f->src, RAM);
	munmap(f->dst, RAM);
	free(f->bytes);
	free(f);
	return 0;
}

/* ---- round trip ---- */

struct writer_arg {
	int fd;
	const uint8_t *ram;
	uint64_t sum, off;
	int e;
	char err[SNAP_ERR_MAX];
};

static void *writer(void *p)
{
	struct writer_arg *a = p;
	a->e = write_full(a->fd, a->ram, &a->sum, &a->off, a->err);
	close(a->fd);
	return NULL;
}

static void test_pipe_round_trip(void **st)
{
	struct fx *f = *st;
	int p[2];
	assert_int_equal(pipe2(p, O_CLOEXEC), 0);
	/* non-blocking: the writer waits for room itself */
	assert_int_equal(fcntl(p[1], F_SETFL, O_NONBLOCK), 0);
	struct writer_arg a = {.fd = p[1], .ram = f->src};
	pthread_t t;
	assert_int_equal(pthread_create(&t, NULL, writer, &a), 0);
	struct snap_stream s = {.fd = p[0]};
	struct snap_reader r;
	struct snap_mem_hash h = {0, NULL};
	assert_int_equal(snap_stream_get_state(&s, &r, f->err, sizeof(f->err)), 0);
	assert_int_equal(r.h.nr_sections, 1);
	assert_non_null(snap_r_find(&r, SNAP_TAG('C', 'O', 'N', 'F'), 0, NULL));
	snap_r_close(&r);
	int e = snap_stream_get_mem(&s, f->dst, RAM, true, &h, f->err, sizeof(f->err));
	pthread_join(t, NULL);
	close(p[0]);
	assert_int_equal(a.e, 0);
	assert_int_equal(e, 0);
	assert_memory_equal(f->src, f->dst, RAM);
	struct snap_mem_hash want = {0, NULL};
	snap_mem_hash_ram(f->src, RAM, &want);
	assert_true(h.sum == want.sum && a.sum == want.sum);
	assert_true(s.off == a.off && s.off == f->len);
	/* only the non-zero pages travel: 24 bytes a record, 4096 a page */
	uint64_t nonzero = 0;
	for (uint64_t i = 0; i < PAGES; i++)
		nonzero += !!f->src[i * PG + 1];
	assert_true(f->len < 24 + f->state_len + nonzero * (PG + 24) + 24);
	assert_true(f->len > 24 + f->state_len + nonzero * PG + 24);
}

/* ---- truncation: at every record boundary and inside every part ---- */

static void expect(struct fx *f, size_t cut, const char *part)
{
	char want[128];
	memset(f->dst, 0, RAM);
	int e = read_all(f, f->bytes, cut, NULL);
	if (e != -EINVAL)
		fail_msg("cut at %zu: %d (%s)", cut, e, f->err);
	snprintf(want, sizeof(want), "stream: byte %zu: truncated %s", cut, part);
	if (strncmp(f->err, want, strlen(want)))
		fail_msg("cut at %zu: \"%s\", wanted \"%s...\"", cut, f->err, want);
}

static void test_truncated_everywhere(void **st)
{
	struct fx *f = *st;
	expect(f, 0, "in the stream header");
	expect(f, 15, "in the stream header");
	expect(f, 16, "in the state file's length");
	expect(f, 23, "in the state file's length");
	expect(f, 24, "in the state file (0 of its");
	expect(f, 24 + f->state_len - 1, "in the state file (");
	unsigned records = 0, data = 0;
	for (size_t at = 24 + f->state_len; at < f->len; records++) {
		uint32_t type;
		uint64_t first, count;
		memcpy(&type, f->bytes + at, 4);
		memcpy(&first, f->bytes + at + 8, 8);
		memcpy(&count, f->bytes + at + 16, 8);
		expect(f, at, "before the end record");
		expect(f, at + 1, "in a record header");
		expect(f, at + 23, "in a record header");
		if (type == SNAP_REC_END)
			break;
		assert_true(type == SNAP_REC_DATA); /* a full stream: no zero markers */
		char part[96];
		snprintf(part, sizeof(part), "in memory run at page 0x%" PRIx64, first);
		expect(f, at + 24, part);
		expect(f, at + 24 + 4095, part);
		expect(f, at + 24 + count * PG - 1, part);
		at += 24 + count * PG;
		data++;
	}
	assert_true(data >= 3 && records == data); /* the end record breaks out uncounted */
	assert_int_equal(read_all(f, f->bytes, f->len, NULL), 0);
}

/* ---- corruption ---- */

static void test_flipped_page_byte(void **st)
{
	struct fx *f = *st;
	size_t at = 24 + f->state_len + 24 + 5 * PG + 100; /* in the first run's sixth page */
	f->bytes[at] ^= 0x40;
	assert_int_equal(read_all(f, f->bytes, f->len, NULL), -EINVAL);
	char want[64];
	snprintf(want, sizeof(want), "stream: byte %zu: memory hash mismatch", f->len - 24);
	assert_non_null(strstr(f->err, want));
	f->bytes[at] ^= 0x40;
	uint64_t sum;
	assert_int_equal(read_all(f, f->bytes, f->len, &sum), 0);
}

static void test_flipped_state_byte(void **st)
{
	struct fx *f = *st;
	f->bytes[24 + 70] ^= 1;
	assert_int_equal(read_all(f, f->bytes, f->len, NULL), -EINVAL);
	assert_non_null(strstr(f->err, "stream: byte 24: state file: CRC mismatch"));
}

static void test_bad_header(void **st)
{
	struct fx *f = *st;
	f->bytes[3] = 'x';
	assert_int_equal(read_all(f, f->bytes, f->len, NULL), -EINVAL);
	assert_string_equal(f->err, "stream: byte 0: not an ember snapshot stream (bad magic)");
	f->bytes[3] = 'R';
	f->bytes[8] = 9;
	assert_int_equal(read_all(f, f->bytes, f->len, NULL), -EINVAL);
	assert_string_equal(f->err, "stream: byte 8: stream format version 9, this ember reads 1");
	f->bytes[8] = 1;
	f->bytes[12] = 2;
	assert_int_equal(read_all(f, f->bytes, f->len, NULL), -EINVAL);
	assert_string_equal(f->err, "stream: byte 12: unknown flags 0x2");
	f->bytes[12] = 0;
	f->bytes[16 + 7] = 1; /* a state of 2^56 bytes */
	assert_int_equal(read_all(f, f->bytes, f->len, NULL), -EINVAL);
	assert_non_null(strstr(f->err, "stream: byte 16: a state file of"));
}

/* ---- crafted memory records ---- */

struct out {
	uint8_t b[64 * 1024];
	size_t n;
};

static void add(struct out *o, const void *p, size_t n)
{
	assert_true(o->n + n <= sizeof(o->b));
	memcpy(o->b + o->n, p, n);
	o->n += n;
}

static void rec(struct out *o, uint32_t type, uint64_t a, uint64_t b)
{
	uint8_t r[24] = {0};
	memcpy(r, &type, 4);
	memcpy(r + 8, &a, 8);
	memcpy(r + 16, &b, 8);
	add(o, r, sizeof(r));
}

/* The header and state of the fixture's stream, then records. */
static void begin(struct fx *f, struct out *o)
{
	o->n = 0;
	add(o, f->bytes, 24 + f->state_len);
}

static void page(struct out *o, uint8_t seed)
{
	uint8_t p[PG];
	memset(p, seed, sizeof(p));
	add(o, p, sizeof(p));
}

static void refused(struct fx *f, struct out *o, size_t at, const char *why)
{
	char want[96];
	assert_int_equal(read_all(f, o->b, o->n, NULL), -EINVAL);
	snprintf(want, sizeof(want), "stream: byte %zu: ", at);
	if (strncmp(f->err, want, strlen(want)) || !strstr(f->err, why))
		fail_msg("\"%s\", wanted \"%s...%s\"", f->err, want, why);
}

static void test_run_outside_ram(void **st)
{
	struct fx *f = *st;
	static struct out o;
	begin(f, &o);
	size_t at = o.n;
	rec(&o, SNAP_REC_DATA, PAGES - 1, 2);
	page(&o, 1), page(&o, 2);
	refused(f, &o, at, "memory run at page 0x3ff (0x2 pages) runs past the end of RAM");
	begin(f, &o);
	rec(&o, SNAP_REC_ZERO, PAGES, 1);
	refused(f, &o, at, "zero run at page 0x400 (0x1 pages) runs past the end of RAM");
	begin(f, &o);
	rec(&o, SNAP_REC_DATA, 0, UINT64_MAX); /* first + count overflows */
	refused(f, &o, at, "runs past the end of RAM");
	begin(f, &o);
	rec(&o, SNAP_REC_DATA, 4, 0);
	refused(f, &o, at, "memory run at page 0x4 (0x0 pages) is empty");
}

static void test_runs_out_of_order(void **st)
{
	struct fx *f = *st;
	static struct out o;
	begin(f, &o);
	rec(&o, SNAP_REC_DATA, 10, 5);
	for (int i = 0; i < 5; i++)
		page(&o, 7);
	size_t at = o.n;
	rec(&o, SNAP_REC_DATA, 12, 1); /* inside the run before */
	page(&o, 8);
	refused(f, &o, at,
		"memory run at page 0xc (0x1 pages) overlaps or precedes the run "
		"before it, which ended at page 0xf");
	o.n = at;
	rec(&o, SNAP_REC_ZERO, 3, 1); /* before it */
	refused(f, &o, at, "zero run at page 0x3 (0x1 pages) overlaps or precedes");
	o.n = at;
	rec(&o, SNAP_REC_ZERO, 15, 1); /* right after it: fine */
	struct snap_mem_hash h = {0, NULL};
	uint8_t p[PG];
	memset(p, 7, sizeof(p));
	for (int i = 10; i < 15; i++)
		h.sum += snap_mem_page_term(p, (uint64_t)i);
	rec(&o, SNAP_REC_END, PAGES, h.sum);
	uint64_t sum;
	memset(f->dst, 0, RAM);
	assert_int_equal(read_all(f, o.b, o.n, &sum), 0);
	assert_true(sum == h.sum);
	assert_int_equal(f->dst[10 * PG], 7);
	assert_int_equal(f->dst[14 * PG + 4095], 7);
	assert_int_equal(f->dst[15 * PG], 0);
}

static void test_bad_records(void **st)
{
	struct fx *f = *st;
	static struct out o;
	begin(f, &o);
	size_t at = o.n;
	rec(&o, SNAP_TAG('J', 'U', 'N', 'K'), 0, 1);
	refused(f, &o, at, "not a memory record (type 0x4b4e554a");
	begin(f, &o);
	rec(&o, SNAP_REC_END, PAGES * 2, 0);
	refused(f, &o, at, "the end record says 0x800 pages of RAM, the snapshot has 0x400");
	begin(f, &o);
	rec(&o, SNAP_REC_END, PAGES, 12345);
	refused(f, &o, at,
		"memory hash mismatch (the end record says 0x0000000000003039, the "
		"pages hash to 0x0000000000000000)");
	begin(f, &o);
	rec(&o, SNAP_REC_END, PAGES, 0); /* all-zero RAM: a stream of nothing */
	assert_int_equal(read_all(f, o.b, o.n, NULL), 0);
}

/* ---- a dirty set onto RAM that holds the previous round ---- */

static void test_dirty_set_with_zero_markers(void **st)
{
	struct fx *f = *st;
	/* the reader has round 1 (the full stream) */
	uint64_t sum1;
	assert_int_equal(read_all(f, f->bytes, f->len, &sum1), 0);
	/* the writer's RAM moves on: pages cleared, changed, written anew */
	static uint64_t dirty[PAGES / 64];
	memset(dirty, 0, sizeof(dirty));
	static const uint64_t cleared[] = {0, 1, 2, 500, 501, 1023};
	static const uint64_t changed[] = {5, 6, 150, 502, 900};
	for (size_t i = 0; i < sizeof(cleared) / sizeof(cleared[0]); i++) {
		memset(f->src + cleared[i] * PG, 0, PG);
		dirty[cleared[i] / 64] |= 1ULL << (cleared[i] % 64);
	}
	for (size_t i = 0; i < sizeof(changed) / sizeof(changed[0]); i++) {
		fill(f->src, changed[i], 99);
		dirty[changed[i] / 64] |= 1ULL << (changed[i] % 64);
	}
	struct snap_mem_hash want = {0, NULL};
	snap_mem_hash_ram(f->src, RAM, &want);
	int fd = memfd_create("round2", MFD_CLOEXEC);
	struct snap_stream s = {.fd = fd};
	assert_int_equal(
	    snap_stream_put_mem(&s, f->src, RAM, dirty, want.sum, f->err, sizeof(f->err)), 0);
	/* 0-2 zero, 5-6 data, 150 data, 500-501 zero, 502 data, 900 data,
	 * 1023 zero: 7 runs, 3 of them zero markers, then the end */
	static uint8_t b[16 * PG];
	ssize_t n = pread(fd, b, sizeof(b), 0);
	assert_int_equal(n, (ssize_t)s.off);
	assert_int_equal(n, 8 * 24 + 5 * PG);
	uint32_t types[8];
	for (size_t at = 0, i = 0; at < (size_t)n; i++) {
		uint64_t count;
		memcpy(&types[i], b + at, 4);
		memcpy(&count, b + at + 16, 8);
		at += 24 + (types[i] == SNAP_REC_DATA ? count * PG : 0);
	}
	assert_true(types[0] == SNAP_REC_ZERO && types[1] == SNAP_REC_DATA &&
		    types[3] == SNAP_REC_ZERO && types[6] == SNAP_REC_ZERO &&
		    types[7] == SNAP_REC_END);
	/* applied twice: with each page's term kept, and computed from RAM */
	static uint64_t terms[PAGES];
	static uint8_t before[RAM];
	memcpy(before, f->dst, RAM);
	for (int kept = 0; kept < 2; kept++) {
		memcpy(f->dst, before, RAM);
		struct snap_mem_hash h = {sum1, kept ? terms : NULL};
		if (kept)
			snap_mem_hash_ram(f->dst, RAM, &h);
		assert_int_equal(lseek(fd, 0, SEEK_SET), 0);
		s.off = 0;
		assert_int_equal(
		    snap_stream_get_mem(&s, f->dst, RAM, false, &h, f->err, sizeof(f->err)), 0);
		assert_true(h.sum == want.sum);
		assert_memory_equal(f->src, f->dst, RAM);
		if (kept)
			for (uint64_t i = 0; i < PAGES; i++)
				assert_true(terms[i] == snap_mem_page_term(f->src + i * PG, i));
	}
	/* the same round onto RAM that did not have round 1: the hash says so */
	memset(f->dst, 0, RAM);
	struct snap_mem_hash h = {0, NULL};
	assert_int_equal(lseek(fd, 0, SEEK_SET), 0);
	s.off = 0;
	assert_int_equal(snap_stream_get_mem(&s, f->dst, RAM, true, &h, f->err, sizeof(f->err)),
			 -EINVAL);
	assert_non_null(strstr(f->err, "memory hash mismatch"));
	close(fd);
}

static void test_write_to_closed_pipe(void **st)
{
	struct fx *f = *st;
	int p[2];
	assert_int_equal(pipe2(p, O_CLOEXEC), 0);
	close(p[0]);
	void (*old)(int) = signal(SIGPIPE, SIG_IGN);
	assert_int_equal(write_full(p[1], f->src, NULL, NULL, f->err), -EPIPE);
	signal(SIGPIPE, old);
	close(p[1]);
	assert_string_equal(f->err, "stream: byte 0: writing the stream header: Broken pipe (the "
				    "reader went away)");
}

/* snap_w_bytes() is the file snap_w_commit() writes, byte for byte. */
static void test_state_bytes_are_the_file(void **st)
{
	struct fx *f = *st;
	char dir[] = "/tmp/ember-stream-XXXXXX", path[160];
	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/s.state", dir);
	struct snap_writer w;
	state(&w);
	uint8_t *b;
	size_t n;
	assert_int_equal(snap_w_bytes(&w, &b, &n, f->err, sizeof(f->err)), 0);
	assert_int_equal(snap_w_commit(&w, path, f->err, sizeof(f->err)), 0);
	snap_w_free(&w);
	FILE *fp = fopen(path, "rb");
	assert_non_null(fp);
	static uint8_t file[4096];
	assert_int_equal(fread(file, 1, sizeof(file), fp), n);
	fclose(fp);
	assert_memory_equal(file, b, n);
	assert_int_equal(n, f->state_len);
	assert_memory_equal(f->bytes + 24, b, n);
	free(b);
	assert_int_equal(unlink(path), 0);
	assert_int_equal(rmdir(dir), 0);
}

/* Progress: a full stream's memory part is exactly what
 * snap_stream_mem_bytes() predicts, and the writer and the reader each
 * count every byte they move. */
static void test_progress_counts_the_bytes(void **st)
{
	struct fx *f = *st;
	static uint64_t nonzero[PAGES / 64];
	struct snap_mem_hash h = {0, NULL};
	snap_mem_scan(f->src, RAM, &h, nonzero);
	uint64_t mem = snap_stream_mem_bytes(nonzero, RAM);
	assert_int_equal(mem, f->len - 24 - f->state_len);
	uint64_t filled = 0; /* as setup() filled them */
	for (uint64_t p = 0; p < PAGES; p++)
		filled += p % 7 != 3 && !(p >= 100 && p < 300);
	assert_int_equal(snap_pages_bytes(nonzero, RAM), filled * PG);

	int fd = memfd_create("prog", MFD_CLOEXEC);
	assert_true(fd >= 0);
	struct snap_progress wp = {0}, rp = {0};
	struct snap_stream w = {.fd = fd, .prog = &wp};
	snap_progress_phase(&wp, "memory", mem);
	assert_int_equal(snap_stream_put_mem(&w, f->src, RAM, nonzero, h.sum, f->err, SNAP_ERR_MAX), 0);
	assert_int_equal(atomic_load(&wp.done), mem);
	assert_int_equal(atomic_load(&wp.total), mem);
	assert_string_equal(atomic_load(&wp.phase), "memory");

	assert_int_equal(lseek(fd, 0, SEEK_SET), 0);
	struct snap_stream r = {.fd = fd, .prog = &rp};
	struct snap_mem_hash got = {0, NULL};
	assert_int_equal(snap_stream_get_mem(&r, f->dst, RAM, true, &got, f->err, sizeof(f->err)), 0);
	assert_int_equal(atomic_load(&rp.done), mem);
	close(fd);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
	    T(test_state_bytes_are_the_file),
	    T(test_pipe_round_trip),
	    T(test_truncated_everywhere),
	    T(test_flipped_page_byte),
	    T(test_flipped_state_byte),
	    T(test_bad_header),
	    T(test_run_outside_ram),
	    T(test_runs_out_of_order),
	    T(test_bad_records),
	    T(test_dirty_set_with_zero_markers),
	    T(test_write_to_closed_pipe),
	    T(test_progress_counts_the_bytes),
	};
	return cmocka_run_group_tests_name("snapshot_stream", tests, NULL, NULL);
}
