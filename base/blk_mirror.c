/* The active mirror of a raw disk (base/blk_mirror.h). */
#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/backend.h"
#include "base/blk_mirror.h"

/* Writeback of the destination is started after each step and waited
 * for this far behind the watermark, so the pivot's fdatasync has little
 * left to do and the copy goes at the destination's pace, not the page
 * cache's. */
#define WRITEBACK_LAG (32ull << 20)

struct blk_span blk_mirror_clip(uint64_t copied, uint64_t off, uint64_t len)
{
	if (off >= copied || len == 0)
		return (struct blk_span){off, 0};
	uint64_t end = copied - off < len ? copied : off + len;
	return (struct blk_span){off, end - off};
}

struct blk_span blk_mirror_plan(uint64_t pos, uint64_t size, int64_t data_off, int64_t hole_off,
				uint64_t chunk)
{
	if (pos >= size || data_off < 0 || (uint64_t)data_off >= size)
		return (struct blk_span){size, 0};
	uint64_t from = (uint64_t)data_off < pos ? pos : (uint64_t)data_off;
	/* A hole answer before the data (a file changing under us) or past
	 * the end: copy to the end, a chunk at a time. */
	uint64_t to = hole_off < 0 || (uint64_t)hole_off <= from || (uint64_t)hole_off > size
			  ? size
			  : (uint64_t)hole_off;
	uint64_t len = to - from < chunk ? to - from : chunk;
	return (struct blk_span){from, len};
}

/* Keep the first failure, with what failed. */
static int fail(struct blk_mirror *m, int e, const char *what, uint64_t off)
{
	if (!m->err) {
		m->err = e;
		snprintf(m->why, sizeof(m->why), "%s at offset %llu: %s", what,
			 (unsigned long long)off, strerror(-e));
	}
	return e;
}

int blk_mirror_init(struct blk_mirror *m, int src_fd, int dst_fd, uint64_t size)
{
	memset(m, 0, sizeof(*m));
	pthread_mutex_init(&m->lock, NULL);
	m->src_fd = src_fd;
	m->dst_fd = dst_fd;
	m->size = size;
	if (ftruncate(dst_fd, 0) < 0 || ftruncate(dst_fd, (off_t)size) < 0)
		return fail(m, -errno, "sizing the destination", size);
	return 0;
}

/* Whole transfers on one of the mirror's fds, as the backend makes them. */
static int xfer(int fd, bool write, void *p, size_t len, uint64_t off)
{
	struct blk_backend b = {.fd = fd};
	return write ? blk_write(&b, off, p, len) : blk_read(&b, off, p, len);
}

static bool all_zero(const uint8_t *p, size_t len)
{
	for (; len && ((uintptr_t)p & 7); len--)
		if (*p++)
			return false;
	const uint64_t *w = (const uint64_t *)(const void *)p;
	for (; len >= 8; len -= 8)
		if (*w++)
			return false;
	for (p = (const uint8_t *)w; len; len--)
		if (*p++)
			return false;
	return true;
}

/* SEEK_DATA / SEEK_HOLE from pos: -1 for "no more data" (ENXIO). */
static int64_t seek(int fd, uint64_t pos, int whence, int *err)
{
	off_t r = lseek(fd, (off_t)pos, whence);
	if (r >= 0)
		return r;
	if (errno != ENXIO)
		*err = -errno;
	return -1;
}

/* Under the lock: the next data from the watermark read into buf (at
 * most chunk bytes); *s is it (len 0 with *done: the end).  0 or -errno
 * (kept). */
static int next_data(struct blk_mirror *m, uint8_t *buf, size_t chunk, struct blk_span *s,
		     bool *done)
{
	int e = 0;
	*done = false;
	if (m->err)
		return m->err;
	uint64_t pos = m->copied;
	int64_t data = pos < m->size ? seek(m->src_fd, pos, SEEK_DATA, &e) : -1;
	int64_t hole = data >= 0 && !e ? seek(m->src_fd, (uint64_t)data, SEEK_HOLE, &e) : -1;
	if (e == -EINVAL) /* a file system without SEEK_DATA: all of it is data */
		e = 0, data = (int64_t)pos, hole = -1;
	if (e)
		return fail(m, e, "finding data in the source", pos);
	*s = blk_mirror_plan(pos, m->size, data, hole, chunk);
	if (s->len == 0) {
		m->copied = m->size;
		*done = true;
		return 0;
	}
	e = xfer(m->src_fd, false, buf, (size_t)s->len, s->off);
	return e ? fail(m, e, "reading the source", s->off) : 0;
}

int64_t blk_mirror_step(struct blk_mirror *m, uint8_t *buf, size_t chunk, bool *done)
{
	struct blk_span s = {0, 0};
	pthread_mutex_lock(&m->lock);
	int e = next_data(m, buf, chunk, &s, done);
	if (e || s.len == 0)
		goto out;
	/* The destination is one hole from blk_mirror_init: zeroes need no
	 * write. */
	if (!all_zero(buf, (size_t)s.len)) {
		e = xfer(m->dst_fd, true, buf, (size_t)s.len, s.off);
		if (e) {
			fail(m, e, "writing the destination", s.off);
			goto out;
		}
		(void)sync_file_range(m->dst_fd, (off_t)s.off, (off_t)s.len, SYNC_FILE_RANGE_WRITE);
		if (s.off > WRITEBACK_LAG)
			(void)sync_file_range(m->dst_fd, 0, (off_t)(s.off - WRITEBACK_LAG),
					      SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE |
						  SYNC_FILE_RANGE_WAIT_AFTER);
	}
	m->copied = s.off + s.len;
	m->data_bytes += s.len;
	*done = m->copied >= m->size;
out:
	pthread_mutex_unlock(&m->lock);
	return e ? e : (int64_t)s.len;
}

int blk_mirror_init_track(struct blk_mirror *m, int src_fd, uint64_t size)
{
	memset(m, 0, sizeof(*m));
	uint64_t blocks = (size + BLK_TRACK_BLOCK - 1) / BLK_TRACK_BLOCK;
	m->dirty = calloc((blocks + 63) / 64 + 1, 8);
	if (!m->dirty)
		return -ENOMEM;
	pthread_mutex_init(&m->lock, NULL);
	m->src_fd = src_fd;
	m->dst_fd = -1;
	m->size = size;
	return 0;
}

int blk_mirror_read_step(struct blk_mirror *m, uint8_t *buf, size_t chunk, struct blk_span *span,
			 bool *zero, bool *done)
{
	*span = (struct blk_span){0, 0};
	pthread_mutex_lock(&m->lock);
	int e = next_data(m, buf, chunk, span, done);
	if (!e && span->len) {
		m->copied = span->off + span->len;
		m->data_bytes += span->len;
		*done = m->copied >= m->size;
	}
	pthread_mutex_unlock(&m->lock);
	*zero = !e && span->len && all_zero(buf, (size_t)span->len);
	return e;
}

static bool dirty_bit(const uint64_t *d, uint64_t i)
{
	return d[i / 64] >> (i % 64) & 1;
}

/* Mark the blocks of [off, off+len) below the watermark. */
static void mark(struct blk_mirror *m, uint64_t off, uint64_t len)
{
	struct blk_span s = blk_mirror_clip(m->copied, off, len);
	if (!s.len || m->err || !m->dirty)
		return;
	for (uint64_t b = s.off / BLK_TRACK_BLOCK; b <= (s.off + s.len - 1) / BLK_TRACK_BLOCK; b++)
		m->dirty[b / 64] |= 1ULL << (b % 64);
}

int blk_mirror_take_dirty(struct blk_mirror *m, uint8_t *buf, size_t max, struct blk_span *span,
			  bool *zero)
{
	int e = 0;
	*span = (struct blk_span){0, 0};
	*zero = false;
	pthread_mutex_lock(&m->lock);
	uint64_t blocks = (m->size + BLK_TRACK_BLOCK - 1) / BLK_TRACK_BLOCK;
	uint64_t at = m->dirty_next < blocks ? m->dirty_next : 0, found = blocks;
	for (uint64_t n = 0; m->dirty && !m->err && n < blocks;) {
		uint64_t i = (at + n) % blocks;
		if (!m->dirty[i / 64] && i % 64 == 0 && i + 64 <= blocks) {
			n += 64;
			continue;
		}
		if (dirty_bit(m->dirty, i)) {
			found = i;
			break;
		}
		n++;
	}
	if (m->err) {
		e = m->err;
	} else if (found < blocks) {
		uint64_t end = found, most = max / BLK_TRACK_BLOCK ? max / BLK_TRACK_BLOCK : 1;
		while (end < blocks && end - found < most && dirty_bit(m->dirty, end)) {
			m->dirty[end / 64] &= ~(1ULL << (end % 64));
			end++;
		}
		m->dirty_next = end;
		uint64_t off = found * BLK_TRACK_BLOCK, len = end * BLK_TRACK_BLOCK - off;
		if (off + len > m->size)
			len = m->size - off;
		*span = (struct blk_span){off, len};
		e = xfer(m->src_fd, false, buf, (size_t)len, off);
		if (e)
			fail(m, e, "reading the source", off);
	}
	pthread_mutex_unlock(&m->lock);
	*zero = !e && span->len && all_zero(buf, (size_t)span->len);
	return e;
}

uint64_t blk_mirror_dirty_bytes(struct blk_mirror *m)
{
	uint64_t n = 0;
	pthread_mutex_lock(&m->lock);
	uint64_t blocks = (m->size + BLK_TRACK_BLOCK - 1) / BLK_TRACK_BLOCK;
	for (uint64_t i = 0; m->dirty && i < (blocks + 63) / 64; i++)
		n += (uint64_t)__builtin_popcountll(m->dirty[i]);
	pthread_mutex_unlock(&m->lock);
	return n * BLK_TRACK_BLOCK;
}

void blk_mirror_stop(struct blk_mirror *m)
{
	pthread_mutex_lock(&m->lock);
	if (!m->err)
		m->err = -ECANCELED;
	free(m->dirty);
	m->dirty = NULL;
	pthread_mutex_unlock(&m->lock);
}

void blk_mirror_wrote(struct blk_mirror *m, uint64_t off, const struct iovec *iov, int n)
{
	pthread_mutex_lock(&m->lock);
	if (m->dst_fd < 0) { /* tracking mode */
		uint64_t len = 0;
		for (int i = 0; i < n; i++)
			len += iov[i].iov_len;
		mark(m, off, len);
		pthread_mutex_unlock(&m->lock);
		return;
	}
	struct blk_span s = blk_mirror_clip(m->copied, off, UINT64_MAX - off);
	uint64_t left = s.len;
	for (int i = 0; i < n && left && !m->err; i++) {
		size_t take = iov[i].iov_len < left ? iov[i].iov_len : (size_t)left;
		int e = xfer(m->dst_fd, true, iov[i].iov_base, take, off);
		if (e)
			fail(m, e, "mirroring a guest write to the destination", off);
		off += take, left -= take;
		m->mirrored += take;
	}
	pthread_mutex_unlock(&m->lock);
}

void blk_mirror_fallocated(struct blk_mirror *m, int mode, uint64_t off, uint64_t len)
{
	pthread_mutex_lock(&m->lock);
	struct blk_span s = blk_mirror_clip(m->copied, off, len);
	if (m->dst_fd < 0) /* tracking mode */
		mark(m, off, len);
	else if (s.len && !m->err && fallocate(m->dst_fd, mode, (off_t)s.off, (off_t)s.len) < 0) {
		/* A file system without ZERO_RANGE: a hole is zeroes too. */
		int e = -errno;
		if (e != -EOPNOTSUPP || !(mode & FALLOC_FL_ZERO_RANGE) ||
		    fallocate(m->dst_fd, FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE, (off_t)s.off,
			      (off_t)s.len) < 0)
			fail(m, e, "mirroring a discard to the destination", s.off);
	}
	pthread_mutex_unlock(&m->lock);
}

void blk_mirror_flush(struct blk_mirror *m)
{
	pthread_mutex_lock(&m->lock);
	if (!m->err && m->dst_fd >= 0 && fdatasync(m->dst_fd) < 0)
		fail(m, -errno, "flushing the destination", 0);
	pthread_mutex_unlock(&m->lock);
}

int blk_mirror_error(struct blk_mirror *m, char *why, size_t len)
{
	pthread_mutex_lock(&m->lock);
	int e = m->err;
	snprintf(why, len, "%s", e ? m->why : "");
	pthread_mutex_unlock(&m->lock);
	return e;
}

void blk_mirror_fini(struct blk_mirror *m)
{
	free(m->dirty);
	m->dirty = NULL;
	pthread_mutex_destroy(&m->lock);
}
