/* snapshot/migstream: the live migration stream's records.  The header's
 * bytes exactly (zlib's CRC-32 of header and payload); a round trip of
 * every type through a pipe; every refusal names the byte offset and the
 * record: a flipped byte anywhere (header or payload), a cut at every
 * byte, an unknown type, a reserved word set, a length the type cannot
 * have; EOF before a record is the peer closing (-EPIPE). */
#include <setjmp.h> /* cmocka needs these first */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "snapshot/snapshot.h"

static char err[SNAP_ERR_MAX];

/* The bytes in a pipe's read end, for a reader. */
static int pipe_of(const uint8_t *b, size_t n)
{
	int p[2];
	assert_int_equal(pipe(p), 0);
	assert_int_equal(write(p[1], b, n), (ssize_t)n);
	close(p[1]);
	return p[0];
}

/* One record, written through a pipe and read back. */
static size_t one(uint32_t type, uint64_t a, uint64_t b, const void *pl, uint32_t len,
		  uint8_t *out)
{
	int p[2];
	assert_int_equal(pipe(p), 0);
	struct snap_stream s = {.fd = p[1]};
	assert_int_equal(snap_mig_put(&s, type, a, b, pl, len, err, sizeof(err)), 0);
	close(p[1]);
	assert_int_equal(s.off, SNAP_MIG_HDR + len);
	assert_int_equal(read(p[0], out, SNAP_MIG_HDR + len), (ssize_t)(SNAP_MIG_HDR + len));
	close(p[0]);
	return SNAP_MIG_HDR + len;
}

static void test_layout(void **state)
{
	uint8_t hdr[SNAP_MIG_HDR];
	snap_mig_encode(hdr, SNAP_MIG_ROUN, 3, 0x1234, NULL, 0);
	assert_memory_equal(hdr, "ROUN\0\0\0\0\x03\0\0\0\0\0\0\0\x34\x12\0\0\0\0\0\0", 24);
	assert_memory_equal(hdr + 28, "\0\0\0\0", 4);
	/* the CRC is of the header with its crc field 0 */
	uint8_t z[SNAP_MIG_HDR];
	memcpy(z, hdr, sizeof(z));
	memset(z + 24, 0, 4);
	uint32_t crc;
	memcpy(&crc, hdr + 24, 4);
	assert_int_equal(crc, snap_crc32(0, z, sizeof(z)));
	char n[12];
	assert_string_equal(snap_mig_name(SNAP_MIG_GOGO, n), "GOGO");
	assert_string_equal(snap_mig_name(0x12345678, n), "0x12345678");
}

static void test_round_trip(void **state)
{
	static uint8_t page[2 * SNAP_PAGE], buf[SNAP_MIG_HDR + 2 * SNAP_PAGE], in[2 * SNAP_PAGE];
	for (size_t i = 0; i < sizeof(page); i++)
		page[i] = (uint8_t)(i * 13 + 1);
	const struct {
		uint32_t type;
		uint64_t a, b;
		const void *pl;
		uint32_t len;
	} recs[] = {
	    {SNAP_MIG_MIGR, SNAP_MIG_VERSION, 0, SNAP_MIG_MAGIC, 8},
	    {SNAP_MIG_DATA, 7, 2, page, sizeof(page)},
	    {SNAP_MIG_ZERO, 9, 100, NULL, 0},
	    {SNAP_MIG_ROUN, 1, 102, NULL, 0},
	    {SNAP_MIG_NACK, 0, 0, "no avx2", 7},
	    {SNAP_MIG_DONE, 1024, 0xfeedULL, NULL, 0},
	    {SNAP_MIG_OKAY, 0, 0, NULL, 0},
	    {SNAP_MIG_REDY, 0, 0, NULL, 0},
	    {SNAP_MIG_GOGO, 0, 0, NULL, 0},
	};
	for (size_t k = 0; k < sizeof(recs) / sizeof(recs[0]); k++) {
		size_t n = one(recs[k].type, recs[k].a, recs[k].b, recs[k].pl, recs[k].len, buf);
		int fd = pipe_of(buf, n);
		struct snap_stream s = {.fd = fd, .off = 100};
		struct snap_mig_rec r;
		assert_int_equal(snap_mig_get_hdr(&s, &r, err, sizeof(err)), 0);
		assert_int_equal(r.type, recs[k].type);
		assert_int_equal(r.a, recs[k].a);
		assert_int_equal(r.b, recs[k].b);
		assert_int_equal(r.len, recs[k].len);
		assert_int_equal(r.off, 100);
		assert_int_equal(snap_mig_get_body(&s, &r, in, err, sizeof(err)), 0);
		if (recs[k].len)
			assert_memory_equal(in, recs[k].pl, recs[k].len);
		assert_int_equal(s.off, 100 + n);
		/* then the end: the peer closed */
		assert_int_equal(snap_mig_get_hdr(&s, &r, err, sizeof(err)), -EPIPE);
		assert_non_null(strstr(err, "the peer closed the stream"));
		close(fd);
	}
}

/* Read one record from b (n bytes): 0 or the refusal, message in err. */
static int read_one(const uint8_t *b, size_t n)
{
	static uint8_t in[SNAP_MIG_HDR + 2 * SNAP_PAGE];
	int fd = pipe_of(b, n);
	struct snap_stream s = {.fd = fd};
	struct snap_mig_rec r;
	int e = snap_mig_get_hdr(&s, &r, err, sizeof(err));
	if (!e)
		e = snap_mig_get_body(&s, &r, in, err, sizeof(err));
	close(fd);
	return e;
}

static void test_every_flip_refused(void **state)
{
	static uint8_t page[SNAP_PAGE], buf[SNAP_MIG_HDR + SNAP_PAGE];
	memset(page, 0x5a, sizeof(page));
	size_t n = one(SNAP_MIG_DATA, 3, 1, page, SNAP_PAGE, buf);
	for (size_t i = 0; i < n; i += (i < 64 ? 1 : 97)) {
		for (int bit = 0; bit < 8; bit += 3) {
			buf[i] ^= (uint8_t)(1u << bit);
			int e = read_one(buf, n);
			assert_int_not_equal(e, 0);
			assert_non_null(strstr(err, "stream: byte "));
			buf[i] ^= (uint8_t)(1u << bit);
		}
	}
	buf[SNAP_MIG_HDR + 10] ^= 1;
	assert_int_equal(read_one(buf, n), -EINVAL);
	assert_non_null(strstr(err, "stream: byte 0: record DATA (a 0x3, b 0x1, 4096 bytes): CRC "
				    "mismatch"));
	buf[SNAP_MIG_HDR + 10] ^= 1;
	assert_int_equal(read_one(buf, n), 0);
}

static void test_every_cut_refused(void **state)
{
	static uint8_t page[SNAP_PAGE], buf[SNAP_MIG_HDR + SNAP_PAGE];
	memset(page, 0xa5, sizeof(page));
	size_t n = one(SNAP_MIG_DATA, 0, 1, page, SNAP_PAGE, buf);
	for (size_t cut = 1; cut < n; cut++) {
		int e = read_one(buf, cut);
		assert_int_equal(e, -EINVAL);
		if (cut < SNAP_MIG_HDR)
			assert_non_null(strstr(err, "truncated in a record header"));
		else
			assert_non_null(strstr(err, "truncated in record DATA begun at byte 0"));
	}
	assert_int_equal(read_one(buf, 0), -EPIPE);
}

static void test_bad_headers(void **state)
{
	uint8_t hdr[SNAP_MIG_HDR];
	struct snap_mig_rec r;
	snap_mig_encode(hdr, 0x21212121, 0, 0, NULL, 0);
	assert_int_equal(snap_mig_decode(hdr, 64, &r, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "stream: byte 64: not a migration record (type 0x21212121"));
	snap_mig_encode(hdr, SNAP_MIG_GOGO, 0, 0, NULL, 0);
	hdr[28] = 1;
	assert_int_equal(snap_mig_decode(hdr, 0, &r, err, sizeof(err)), -EINVAL);
	/* lengths a type cannot have */
	const struct {
		uint32_t type, len;
		uint64_t b;
	} bad[] = {
	    {SNAP_MIG_DATA, 4096, 2},		    /* b pages, not len/4096 */
	    {SNAP_MIG_DATA, 0, 0},		    /* empty */
	    {SNAP_MIG_DATA, (SNAP_MIG_RUN_MAX + 1) * 4096, SNAP_MIG_RUN_MAX + 1},
	    {SNAP_MIG_ZERO, 8, 1},		    /* a payload */
	    {SNAP_MIG_MIGR, 9, 0},		    /* not the magic's 8 */
	    {SNAP_MIG_STAT, 10, 0},		    /* shorter than a state header */
	    {SNAP_MIG_NACK, SNAP_MIG_NACK_MAX + 1, 0},
	};
	for (size_t k = 0; k < sizeof(bad) / sizeof(bad[0]); k++) {
		snap_mig_encode(hdr, bad[k].type, 0, bad[k].b, NULL, 0);
		memcpy(hdr + 4, &bad[k].len, 4);
		assert_int_equal(snap_mig_decode(hdr, 32, &r, err, sizeof(err)), -EINVAL);
		assert_non_null(strstr(err, "stream: byte 32: record "));
		assert_non_null(strstr(err, "which it cannot have"));
	}
}

/* Post-copy's records: PCPY's bitmap in whole words up to its cap; PREQ
 * and PFIN are headers only; all three have names. */
static void test_postcopy_records(void **state)
{
	uint8_t hdr[SNAP_MIG_HDR];
	struct snap_mig_rec r;
	char n[12];
	const struct {
		uint32_t type, len;
		bool ok;
	} cases[] = {
	    {SNAP_MIG_PCPY, 8, true},	 {SNAP_MIG_PCPY, 2048, true},
	    {SNAP_MIG_PCPY, SNAP_MIG_BITMAP_MAX, true},
	    {SNAP_MIG_PCPY, 0, false},	 /* no bitmap */
	    {SNAP_MIG_PCPY, 12, false},	 /* not whole words */
	    {SNAP_MIG_PCPY, SNAP_MIG_BITMAP_MAX + 8, false},
	    {SNAP_MIG_PREQ, 0, true},	 {SNAP_MIG_PREQ, 8, false},
	    {SNAP_MIG_PFIN, 0, true},	 {SNAP_MIG_PFIN, 4096, false},
	};
	for (size_t k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
		snap_mig_encode(hdr, cases[k].type, 7, 0, NULL, 0);
		memcpy(hdr + 4, &cases[k].len, 4);
		assert_int_equal(snap_mig_decode(hdr, 0, &r, err, sizeof(err)),
				 cases[k].ok ? 0 : -EINVAL);
	}
	assert_string_equal(snap_mig_name(SNAP_MIG_PCPY, n), "PCPY");
	assert_string_equal(snap_mig_name(SNAP_MIG_PREQ, n), "PREQ");
	assert_string_equal(snap_mig_name(SNAP_MIG_PFIN, n), "PFIN");
	/* a PREQ round trip: the page it names comes back as a */
	static const uint64_t bitmap[2] = {0x8001, 0x1};
	uint8_t buf[SNAP_MIG_HDR + sizeof(bitmap)];
	size_t len = one(SNAP_MIG_PCPY, 3, 0, bitmap, sizeof(bitmap), buf);
	assert_int_equal(read_one(buf, len), 0);
}

/* The disk records: which a, b and lengths each may have. */
static void test_disk_records(void **state)
{
	uint8_t hdr[SNAP_MIG_HDR];
	struct snap_mig_rec r;
	char n[12];
	const uint64_t top = (1ULL << SNAP_MIG_DISK_SHIFT) - 512; /* the last offset */
	const struct {
		uint32_t type, len;
		uint64_t a, b;
		bool ok;
	} cases[] = {
	    {SNAP_MIG_DSKB, 2, 0, 1 << 20, true},
	    {SNAP_MIG_DSKB, SNAP_MIG_DISK_ID_MAX, 7, 512, true},
	    {SNAP_MIG_DSKB, 0, 0, 1 << 20, false},			 /* no id */
	    {SNAP_MIG_DSKB, SNAP_MIG_DISK_ID_MAX + 1, 0, 512, false}, /* too long */
	    {SNAP_MIG_DSKB, 2, SNAP_MIG_DISKS_MAX, 512, false},	 /* disk 8 */
	    {SNAP_MIG_DSKB, 2, 0, 0, false},				 /* empty disk */
	    {SNAP_MIG_DSKB, 2, 0, 1000, false},			 /* not sectors */
	    {SNAP_MIG_DSKD, 4096, SNAP_MIG_DISK_AT(1, 8192), 4096, true},
	    {SNAP_MIG_DSKD, SNAP_MIG_DISK_RUN_MAX, SNAP_MIG_DISK_AT(7, 0), SNAP_MIG_DISK_RUN_MAX,
	     true},
	    {SNAP_MIG_DSKD, 512, SNAP_MIG_DISK_AT(0, top), 512, true},
	    {SNAP_MIG_DSKD, 1024, SNAP_MIG_DISK_AT(0, top), 1024, false}, /* past 2^56 */
	    {SNAP_MIG_DSKD, 4096, SNAP_MIG_DISK_AT(0, 0), 8192, false},	  /* len != b */
	    {SNAP_MIG_DSKD, 0, SNAP_MIG_DISK_AT(0, 0), 0, false},	  /* empty */
	    {SNAP_MIG_DSKD, 4096, SNAP_MIG_DISK_AT(0, 100), 4096, false},	  /* unaligned */
	    {SNAP_MIG_DSKD, 4096, SNAP_MIG_DISK_AT(8, 0), 4096, false},	  /* disk 8 */
	    {SNAP_MIG_DSKD, SNAP_MIG_DISK_RUN_MAX + 512, 0, SNAP_MIG_DISK_RUN_MAX + 512, false},
	    {SNAP_MIG_DSKZ, 0, SNAP_MIG_DISK_AT(2, 4096), 1ULL << 40, true}, /* any size */
	    {SNAP_MIG_DSKZ, 512, SNAP_MIG_DISK_AT(2, 4096), 512, false},	   /* a payload */
	    {SNAP_MIG_DSKZ, 0, SNAP_MIG_DISK_AT(2, 4096), 100, false},
	    {SNAP_MIG_DSKE, 0, 3, 12345, true},
	    {SNAP_MIG_DSKE, 0, SNAP_MIG_DISKS_MAX, 0, false},
	    {SNAP_MIG_DSKE, 8, 0, 0, false},
	    {SNAP_MIG_DSKS, 0, 3, 0, true},
	    {SNAP_MIG_DSKS, 4, 3, 0, false},
	};
	for (size_t k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
		snap_mig_encode(hdr, cases[k].type, cases[k].a, cases[k].b, NULL, 0);
		memcpy(hdr + 4, &cases[k].len, 4);
		if (snap_mig_decode(hdr, 0, &r, err, sizeof(err)) != (cases[k].ok ? 0 : -EINVAL))
			fail_msg("case %zu (%s): %s", k, snap_mig_name(cases[k].type, n), err);
	}
	assert_string_equal(snap_mig_name(SNAP_MIG_DSKD, n), "DSKD");
	assert_int_equal(SNAP_MIG_DISK_N(SNAP_MIG_DISK_AT(5, 123 * 512)), 5);
	assert_int_equal(SNAP_MIG_DISK_OFF(SNAP_MIG_DISK_AT(5, 123 * 512)), 123 * 512);
	/* a DSKD round trip, its payload checked */
	static uint8_t data[4096 + SNAP_MIG_HDR];
	memset(data, 0x5a, 4096);
	uint8_t buf[SNAP_MIG_HDR + 4096];
	size_t len = one(SNAP_MIG_DSKD, SNAP_MIG_DISK_AT(1, 512), 4096, data, 4096, buf);
	assert_int_equal(read_one(buf, len), 0);
	buf[SNAP_MIG_HDR + 100] ^= 1;
	assert_int_equal(read_one(buf, len), -EINVAL); /* CRC */
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_postcopy_records),
	    cmocka_unit_test(test_disk_records),
	    cmocka_unit_test(test_layout),
	    cmocka_unit_test(test_round_trip),
	    cmocka_unit_test(test_every_flip_refused),
	    cmocka_unit_test(test_every_cut_refused),
	    cmocka_unit_test(test_bad_headers),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
