/* Snapshot streams: a state file and guest RAM in one byte stream, for
 * pipes and sockets (the layout is in snapshot.h).  Written and read in
 * order only; every refusal names the byte offset and the part. */
#include "snapshot/snap_priv.h"
#include "snapshot/snapshot.h"

#include <endian.h>
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define PAGE SNAP_PAGE
/* The most one write or read is asked to move (Linux moves at most
 * 0x7ffff000 bytes per call anyway). */
#define IO_CHUNK (1ULL << 30)
/* A run is read and hashed this much at a time: the pages are hashed
 * while they are still in the cache. */
#define HASH_CHUNK (256 * PAGE)


/* ---- writing ---- */

/* All of len bytes, whatever the fd gives at a time: short writes and
 * EINTR go round again; a non-blocking fd that is full is waited on. */
static int put(struct snap_stream *s, const void *buf, uint64_t len, const char *part, char *err,
	       size_t errlen)
{
	const uint8_t *p = buf;
	while (len) {
		ssize_t n = write(s->fd, p, len < IO_CHUNK ? len : IO_CHUNK);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			struct pollfd pf = {.fd = s->fd, .events = POLLOUT};
			if (ppoll(&pf, 1, NULL, NULL) >= 0 || errno == EINTR)
				continue;
		}
		if (n <= 0) {
			int e = n < 0 ? errno : EIO;
			snap_fail(err, errlen, "stream: byte %" PRIu64 ": writing %s: %s%s", s->off,
				  part, strerror(e), e == EPIPE ? " (the reader went away)" : "");
			return -e;
		}
		p += n, len -= (uint64_t)n, s->off += (uint64_t)n;
		snap_progress_add(s->prog, (uint64_t)n);
	}
	return 0;
}

int snap_stream_put_state(struct snap_stream *s, struct snap_writer *w, char *err, size_t errlen)
{
	uint8_t *state, hdr[SNAP_STREAM_HDR + 8];
	size_t len;
	int e = snap_w_bytes(w, &state, &len, err, errlen);
	if (e)
		return e;
	memcpy(hdr, SNAP_STREAM_MAGIC, 8);
	put32(hdr + 8, SNAP_STREAM_VERSION);
	put32(hdr + 12, 0);
	put64(hdr + 16, len);
	e = put(s, hdr, sizeof(hdr), "the stream header", err, errlen);
	if (!e)
		e = put(s, state, len, "the state file", err, errlen);
	free(state);
	return e;
}

void snap_mem_scan(const uint8_t *ram, uint64_t len, struct snap_mem_hash *h, uint64_t *nonzero)
{
	uint64_t pages = len / PAGE;
	h->sum = 0;
	memset(nonzero, 0, (pages + 63) / 64 * sizeof(*nonzero));
	for (uint64_t i = 0; i < pages; i++) {
		uint64_t t = 0;
		if (!snap_page_is_zero(ram + i * PAGE)) {
			t = snap_page_hash(ram + i * PAGE, i);
			nonzero[i / 64] |= 1ULL << (i % 64);
		}
		h->sum += t;
		if (h->terms)
			h->terms[i] = t;
	}
}

/* The first page at or after i (below pages) whose bit is set; pages
 * when there is none. */
static uint64_t next_set(const uint64_t *bits, uint64_t pages, uint64_t i)
{
	while (i < pages) {
		uint64_t w = bits[i / 64] & (~0ULL << (i % 64));
		if (w) {
			i = (i & ~63ULL) + (uint64_t)__builtin_ctzll(w);
			return i < pages ? i : pages;
		}
		i = (i & ~63ULL) + 64;
	}
	return pages;
}

static bool is_set(const uint64_t *bits, uint64_t i)
{
	return bits[i / 64] >> (i % 64) & 1;
}

static int put_record(struct snap_stream *s, uint32_t type, uint64_t a, uint64_t b, char *err,
		      size_t errlen)
{
	uint8_t rec[SNAP_STREAM_REC];
	put32(rec, type);
	put32(rec + 4, 0);
	put64(rec + 8, a);
	put64(rec + 16, b);
	return put(s, rec, sizeof(rec), "a record header", err, errlen);
}

uint64_t snap_stream_mem_bytes(const uint64_t *pages, uint64_t len)
{
	uint64_t n = len / PAGE, bytes = SNAP_STREAM_REC; /* ENDR */
	for (uint64_t i = next_set(pages, n, 0); i < n;) {
		uint64_t end = i;
		while (end < n && is_set(pages, end))
			end++;
		bytes += SNAP_STREAM_REC + (end - i) * PAGE;
		i = next_set(pages, n, end);
	}
	return bytes;
}

int snap_stream_put_mem(struct snap_stream *s, const uint8_t *ram, uint64_t len,
			const uint64_t *pages, uint64_t hash, char *err, size_t errlen)
{
	uint64_t n = len / PAGE;
	int e = 0;
	/* Runs of set pages of one kind (zero or not), in page order. */
	for (uint64_t i = next_set(pages, n, 0); i < n && !e;) {
		bool zero = snap_page_is_zero(ram + i * PAGE);
		uint64_t end = i + 1;
		while (end < n && is_set(pages, end) && snap_page_is_zero(ram + end * PAGE) == zero)
			end++;
		e = put_record(s, zero ? SNAP_REC_ZERO : SNAP_REC_DATA, i, end - i, err, errlen);
		if (!e && !zero)
			e = put(s, ram + i * PAGE, (end - i) * PAGE, "memory", err, errlen);
		i = next_set(pages, n, end);
	}
	return e ? e : put_record(s, SNAP_REC_END, n, hash, err, errlen);
}

/* ---- reading ---- */

/* Exactly len bytes, or a refusal: the stream ended (-EINVAL: "truncated
 * in PART") or could not be read (-errno).  *got (may be NULL) says how
 * many arrived. */
static int get(struct snap_stream *s, void *buf, uint64_t len, uint64_t *got, const char *part,
	       char *err, size_t errlen)
{
	uint8_t *p = buf;
	uint64_t have = 0;
	int e = 0;
	while (have < len) {
		ssize_t n = read(s->fd, p + have, len - have < IO_CHUNK ? len - have : IO_CHUNK);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			struct pollfd pf = {.fd = s->fd, .events = POLLIN};
			if (ppoll(&pf, 1, NULL, NULL) >= 0 || errno == EINTR)
				continue;
		}
		if (n < 0) {
			e = -errno;
			snap_fail(err, errlen, "stream: byte %" PRIu64 ": reading %s: %s", s->off,
				  part, strerror(-e));
			break;
		}
		if (n == 0) {
			e = -EINVAL;
			snap_fail(err, errlen, "stream: byte %" PRIu64 ": truncated in %s", s->off,
				  part);
			break;
		}
		have += (uint64_t)n, s->off += (uint64_t)n;
		snap_progress_add(s->prog, (uint64_t)n);
	}
	if (got)
		*got = have;
	return e;
}

int snap_stream_get_state(struct snap_stream *s, struct snap_reader *r, char *err, size_t errlen)
{
	uint8_t hdr[SNAP_STREAM_HDR + 8];
	memset(r, 0, sizeof(*r));
	int e = get(s, hdr, SNAP_STREAM_HDR, NULL, "the stream header", err, errlen);
	if (e)
		return e;
	uint32_t version = get32(hdr + 8), flags = get32(hdr + 12);
	if (memcmp(hdr, SNAP_STREAM_MAGIC, 8)) {
		snap_fail(err, errlen, "stream: byte 0: not an ember snapshot stream (bad magic)");
		return -EINVAL;
	}
	if (version != SNAP_STREAM_VERSION) {
		snap_fail(err, errlen,
			  "stream: byte 8: stream format version %u, this ember reads %u", version,
			  SNAP_STREAM_VERSION);
		return -EINVAL;
	}
	if (flags) {
		snap_fail(err, errlen, "stream: byte 12: unknown flags 0x%x", flags);
		return -EINVAL;
	}
	if ((e = get(s, hdr + SNAP_STREAM_HDR, 8, NULL, "the state file's length", err, errlen)))
		return e;
	uint64_t len = get64(hdr + SNAP_STREAM_HDR);
	if (len > SNAP_STREAM_STATE_MAX) {
		snap_fail(err, errlen,
			  "stream: byte %" PRIu64 ": a state file of %" PRIu64
			  " bytes, more than any ember writes (%u)",
			  s->off - 8, len, SNAP_STREAM_STATE_MAX);
		return -EINVAL;
	}
	char name[64];
	snprintf(name, sizeof(name), "stream: byte %" PRIu64 ": state file", s->off);
	uint8_t *buf = malloc(len ? len : 1);
	if (!buf) {
		snap_fail(err, errlen, "%s: out of memory", name);
		return -ENOMEM;
	}
	uint64_t got;
	if ((e = get(s, buf, len, &got, "the state file", err, errlen)) == -EINVAL)
		snap_fail(err, errlen,
			  "stream: byte %" PRIu64 ": truncated in the state file (%" PRIu64
			  " of its %" PRIu64 " bytes)",
			  s->off, got, len);
	if (!e)
		e = snap_r_open_mem(r, buf, (size_t)len, name, err, errlen);
	free(buf);
	return e;
}

/* Where the memory records stand: the next page a run may start at. */
struct mem_in {
	struct snap_stream *s;
	uint8_t *ram;
	uint64_t pages, next, sum;
	uint64_t *terms; /* NULL: computed from ram where needed */
	bool zeroed;
	char *err;
	size_t errlen;
};

/* The term page i has before a record changes it. */
static uint64_t old_term(const struct mem_in *m, uint64_t i)
{
	if (m->zeroed)
		return 0;
	return m->terms ? m->terms[i] : snap_mem_page_term(m->ram + i * PAGE, i);
}

/* A DATA run: read its pages straight into RAM a chunk at a time and
 * hash each chunk while it is in the cache. */
static int data_run(struct mem_in *m, uint64_t first, uint64_t count)
{
	for (uint64_t at = first; at < first + count;) {
		uint64_t n =
		    first + count - at < HASH_CHUNK / PAGE ? first + count - at : HASH_CHUNK / PAGE;
		for (uint64_t i = at; i < at + n; i++)
			m->sum -= old_term(m, i);
		uint64_t got;
		int e = get(m->s, m->ram + at * PAGE, n * PAGE, &got, "memory", m->err, m->errlen);
		if (e == -EINVAL)
			snap_fail(m->err, m->errlen,
				  "stream: byte %" PRIu64
				  ": truncated in memory run at page 0x%" PRIx64 " (0x%" PRIx64
				  " pages; page 0x%" PRIx64 " incomplete)",
				  m->s->off, first, count, (uint64_t)(at + got / PAGE));
		if (e)
			return e;
		for (uint64_t i = at; i < at + n; i++) {
			uint64_t t = snap_mem_page_term(m->ram + i * PAGE, i);
			m->sum += t;
			if (m->terms)
				m->terms[i] = t;
		}
		at += n;
	}
	return 0;
}

static void zero_run(struct mem_in *m, uint64_t first, uint64_t count)
{
	if (m->zeroed)
		return; /* already zero, and left unwritten: untouched pages cost nothing */
	for (uint64_t i = first; i < first + count; i++) {
		uint8_t *p = m->ram + i * PAGE;
		m->sum -= old_term(m, i);
		if (m->terms)
			m->terms[i] = 0;
		if (!snap_page_is_zero(p))
			memset(p, 0, PAGE);
	}
}

int snap_stream_get_mem(struct snap_stream *s, uint8_t *ram, uint64_t len, bool zeroed,
			struct snap_mem_hash *h, char *err, size_t errlen)
{
	struct mem_in m = {.s = s,
			   .ram = ram,
			   .pages = len / PAGE,
			   .sum = zeroed ? 0 : h->sum,
			   .terms = h->terms,
			   .zeroed = zeroed,
			   .err = err,
			   .errlen = errlen};
	if (zeroed && m.terms)
		memset(m.terms, 0, m.pages * sizeof(*m.terms));
	for (;;) {
		uint8_t rec[SNAP_STREAM_REC];
		uint64_t at = s->off, got;
		int e = get(s, rec, sizeof(rec), &got, "a record header", err, errlen);
		if (e == -EINVAL && !got)
			snap_fail(err, errlen,
				  "stream: byte %" PRIu64 ": truncated before the end record (the "
				  "memory is incomplete)",
				  s->off);
		if (e)
			return e;
		uint32_t type = get32(rec), zero = get32(rec + 4);
		uint64_t a = get64(rec + 8), b = get64(rec + 16);
		const char *kind = type == SNAP_REC_DATA ? "memory run" : "zero run";
		if (zero ||
		    (type != SNAP_REC_DATA && type != SNAP_REC_ZERO && type != SNAP_REC_END)) {
			snap_fail(err, errlen,
				  "stream: byte %" PRIu64
				  ": not a memory record (type 0x%08x, 0x%08x)",
				  at, type, zero);
			return -EINVAL;
		}
		if (type == SNAP_REC_END && a != m.pages) {
			snap_fail(err, errlen,
				  "stream: byte %" PRIu64 ": the end record says 0x%" PRIx64
				  " pages of RAM, the snapshot has 0x%" PRIx64,
				  at, a, m.pages);
			return -EINVAL;
		}
		if (type == SNAP_REC_END && b != m.sum) {
			snap_fail(err, errlen,
				  "stream: byte %" PRIu64 ": memory hash mismatch (the end record "
				  "says 0x%016" PRIx64 ", the pages hash to 0x%016" PRIx64
				  "): the memory is corrupt",
				  at, b, m.sum);
			return -EINVAL;
		}
		if (type == SNAP_REC_END) {
			h->sum = m.sum;
			return 0;
		}
		if (!b || a >= m.pages || b > m.pages - a) {
			snap_fail(err, errlen,
				  "stream: byte %" PRIu64 ": %s at page 0x%" PRIx64 " (0x%" PRIx64
				  " pages) %s (RAM has 0x%" PRIx64 " pages)",
				  at, kind, a, b, b ? "runs past the end of RAM" : "is empty",
				  m.pages);
			return -EINVAL;
		}
		if (a < m.next) {
			snap_fail(err, errlen,
				  "stream: byte %" PRIu64 ": %s at page 0x%" PRIx64 " (0x%" PRIx64
				  " pages) overlaps or precedes the run before it, which ended at "
				  "page 0x%" PRIx64 " (runs go in ascending order)",
				  at, kind, a, b, m.next);
			return -EINVAL;
		}
		if (type == SNAP_REC_DATA && (e = data_run(&m, a, b)))
			return e;
		if (type == SNAP_REC_ZERO)
			zero_run(&m, a, b);
		m.next = a + b;
	}
}

/* ---- for the migration stream (migstream.c) ---- */

int snap_stream_write(struct snap_stream *s, const void *buf, uint64_t len, const char *part,
		      char *err, size_t errlen)
{
	return put(s, buf, len, part, err, errlen);
}

int snap_stream_read(struct snap_stream *s, void *buf, uint64_t len, uint64_t *got,
		     const char *part, char *err, size_t errlen)
{
	return get(s, buf, len, got, part, err, errlen);
}
