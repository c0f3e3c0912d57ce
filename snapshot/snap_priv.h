/* snapshot's private helpers, shared by snapshot/format.c and
 * snapshot/memfile.c.  Nothing outside snapshot/ includes it. */
#ifndef EMBER_SNAPSHOT_SNAP_PRIV_H
#define EMBER_SNAPSHOT_SNAP_PRIV_H

#include <stdbool.h>
#include <endian.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <stdint.h>

/* Formats the reason a call failed into err (errlen bytes, truncated,
 * NUL-terminated); does nothing when err is NULL or errlen 0.  The error
 * convention of snapshot/snapshot.h. */
__attribute__((format(printf, 3, 4))) void snap_fail(char *err, size_t errlen, const char *fmt,
						     ...);

/* Little-endian fields of the state file and the stream, at any
 * alignment. */
static inline void put32(uint8_t *p, uint32_t v)
{
	v = htole32(v);
	memcpy(p, &v, 4);
}

static inline void put64(uint8_t *p, uint64_t v)
{
	v = htole64(v);
	memcpy(p, &v, 8);
}

static inline uint32_t get32(const uint8_t *p)
{
	uint32_t v;
	memcpy(&v, p, 4);
	return le32toh(v);
}

static inline uint64_t get64(const uint8_t *p)
{
	uint64_t v;
	memcpy(&v, p, 8);
	return le64toh(v);
}

/* What a file of mode m is, for messages: "a FIFO", "a directory"... */
const char *snap_file_kind(unsigned m);

/* Whether the SNAP_PAGE bytes at page are all zero (memfile.c). */
bool snap_page_is_zero(const uint8_t *page);

/* XXH3_64bits_withSeed(page, SNAP_PAGE, index): a non-zero page's term of
 * the content hash (snap_mem_page_term() without its zero check). */
uint64_t snap_page_hash(const uint8_t *page, uint64_t index);

/* stream.c's writer and reader, for migstream.c: all of len bytes (short
 * writes, EINTR and a full non-blocking fd handled), or exactly len
 * bytes (-EINVAL "stream: byte N: truncated in PART" at the end of the
 * stream; *got, may be NULL, says how many came).  s->off counts. */
struct snap_stream;
__attribute__((warn_unused_result)) int snap_stream_write(struct snap_stream *s, const void *buf,
							  uint64_t len, const char *part,
							  char *err, size_t errlen);
__attribute__((warn_unused_result)) int snap_stream_read(struct snap_stream *s, void *buf,
							 uint64_t len, uint64_t *got,
							 const char *part, char *err,
							 size_t errlen);

#endif
