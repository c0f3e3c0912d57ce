/* The live migration stream's records (snapshot.h, "the live migration
 * stream"): encode, decode, CRC, and reading and writing one record over
 * a snap_stream.  Which record follows which is monitor/migrate/'s. */
#include "snapshot/snap_priv.h"
#include "snapshot/snapshot.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

static const uint32_t known[] = {SNAP_MIG_MIGR, SNAP_MIG_SETU, SNAP_MIG_DATA, SNAP_MIG_ZERO,
				 SNAP_MIG_ROUN, SNAP_MIG_STAT, SNAP_MIG_DONE, SNAP_MIG_GOGO,
				 SNAP_MIG_OKAY, SNAP_MIG_NACK, SNAP_MIG_REDY, SNAP_MIG_MEMF,
				 SNAP_MIG_PCPY, SNAP_MIG_PREQ, SNAP_MIG_PFIN, SNAP_MIG_DSKB,
				 SNAP_MIG_DSKD, SNAP_MIG_DSKZ, SNAP_MIG_DSKE, SNAP_MIG_DSKS};

const char *snap_mig_name(uint32_t type, char buf[12])
{
	for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++)
		if (known[i] == type) {
			for (int k = 0; k < 4; k++)
				buf[k] = (char)(type >> (8 * k));
			buf[4] = '\0';
			return buf;
		}
	snprintf(buf, 12, "0x%08x", type);
	return buf;
}

void snap_mig_encode(uint8_t hdr[SNAP_MIG_HDR], uint32_t type, uint64_t a, uint64_t b,
		     const void *payload, uint32_t len)
{
	put32(hdr, type);
	put32(hdr + 4, len);
	put64(hdr + 8, a);
	put64(hdr + 16, b);
	put32(hdr + 24, 0);
	put32(hdr + 28, 0);
	uint32_t crc = snap_crc32(0, hdr, SNAP_MIG_HDR);
	if (len)
		crc = snap_crc32(crc, payload, len);
	put32(hdr + 24, crc);
}

/* Which lengths type may have: exactly len, or up to max. */
static bool len_ok(const struct snap_mig_rec *r)
{
	switch (r->type) {
	case SNAP_MIG_MIGR:
		return r->len == 8;
	case SNAP_MIG_SETU:
	case SNAP_MIG_STAT:
		return r->len >= sizeof(struct snap_header) && r->len <= SNAP_STREAM_STATE_MAX;
	case SNAP_MIG_DATA:
		return r->b && r->b <= SNAP_MIG_RUN_MAX && r->len == r->b * SNAP_PAGE;
	case SNAP_MIG_NACK:
		return r->len <= SNAP_MIG_NACK_MAX;
	case SNAP_MIG_DSKB:
		return r->a < SNAP_MIG_DISKS_MAX && r->b && r->b % 512 == 0 && r->len &&
		       r->len <= SNAP_MIG_DISK_ID_MAX;
	case SNAP_MIG_DSKD:
	case SNAP_MIG_DSKZ:
		return SNAP_MIG_DISK_N(r->a) < SNAP_MIG_DISKS_MAX &&
		       SNAP_MIG_DISK_OFF(r->a) % 512 == 0 && r->b && r->b % 512 == 0 &&
		       r->b <= (1ULL << SNAP_MIG_DISK_SHIFT) - SNAP_MIG_DISK_OFF(r->a) &&
		       (r->type == SNAP_MIG_DSKZ ? r->len == 0
						 : r->b <= SNAP_MIG_DISK_RUN_MAX && r->len == r->b);
	case SNAP_MIG_DSKE:
		return r->a < SNAP_MIG_DISKS_MAX && r->len == 0;
	case SNAP_MIG_PCPY: /* whole 64-bit words of bitmap */
		return r->len && r->len <= SNAP_MIG_BITMAP_MAX && r->len % 8 == 0;
	default: /* ZERO, ROUN, DONE, GOGO, OKAY, REDY, PREQ, PFIN: header only */
		return r->len == 0;
	}
}

int snap_mig_decode(const uint8_t hdr[SNAP_MIG_HDR], uint64_t off, struct snap_mig_rec *r,
		    char *err, size_t errlen)
{
	char n[12];
	memcpy(r->raw, hdr, SNAP_MIG_HDR);
	r->type = get32(hdr);
	r->len = get32(hdr + 4);
	r->a = get64(hdr + 8);
	r->b = get64(hdr + 16);
	r->crc = get32(hdr + 24);
	r->off = off;
	bool is_known = false;
	for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++)
		is_known |= known[i] == r->type;
	if (!is_known || get32(hdr + 28)) {
		snap_fail(err, errlen,
			  "stream: byte %" PRIu64 ": not a migration record (type %s, reserved "
			  "0x%08x): corrupt, or not an ember migration stream",
			  off, snap_mig_name(r->type, n), get32(hdr + 28));
		return -EINVAL;
	}
	if (!len_ok(r)) {
		snap_fail(err, errlen,
			  "stream: byte %" PRIu64 ": record %s (a 0x%" PRIx64 ", b 0x%" PRIx64
			  ") has a length of %u bytes, which it cannot have: corrupt",
			  off, snap_mig_name(r->type, n), r->a, r->b, r->len);
		return -EINVAL;
	}
	return 0;
}

int snap_mig_crc_check(const struct snap_mig_rec *r, const void *payload, char *err,
		       size_t errlen)
{
	uint8_t h[SNAP_MIG_HDR];
	char n[12];
	memcpy(h, r->raw, SNAP_MIG_HDR);
	memset(h + 24, 0, 4);
	uint32_t crc = snap_crc32(0, h, SNAP_MIG_HDR);
	if (r->len)
		crc = snap_crc32(crc, payload, r->len);
	if (crc == r->crc)
		return 0;
	snap_fail(err, errlen,
		  "stream: byte %" PRIu64 ": record %s (a 0x%" PRIx64 ", b 0x%" PRIx64
		  ", %u bytes): CRC mismatch (stored 0x%08x, computed 0x%08x): corrupt",
		  r->off, snap_mig_name(r->type, n), r->a, r->b, r->len, r->crc, crc);
	return -EINVAL;
}

int snap_mig_put(struct snap_stream *s, uint32_t type, uint64_t a, uint64_t b, const void *payload,
		 uint32_t len, char *err, size_t errlen)
{
	uint8_t hdr[SNAP_MIG_HDR];
	char n[12], part[32];
	snap_mig_encode(hdr, type, a, b, payload, len);
	snprintf(part, sizeof(part), "record %s", snap_mig_name(type, n));
	int e = snap_stream_write(s, hdr, sizeof(hdr), part, err, errlen);
	if (!e && len)
		e = snap_stream_write(s, payload, len, part, err, errlen);
	return e;
}

int snap_mig_get_hdr(struct snap_stream *s, struct snap_mig_rec *r, char *err, size_t errlen)
{
	uint8_t hdr[SNAP_MIG_HDR];
	uint64_t at = s->off, got = 0;
	int e = snap_stream_read(s, hdr, sizeof(hdr), &got, "a record header", err, errlen);
	if (e == -EINVAL && !got) {
		snap_fail(err, errlen, "stream: byte %" PRIu64 ": the peer closed the stream", at);
		return -EPIPE;
	}
	return e ? e : snap_mig_decode(hdr, at, r, err, errlen);
}

int snap_mig_get_body(struct snap_stream *s, const struct snap_mig_rec *r, void *buf, char *err,
		      size_t errlen)
{
	char n[12], part[48];
	uint64_t got = 0;
	snprintf(part, sizeof(part), "record %s's payload (%u bytes)",
		 snap_mig_name(r->type, n), r->len);
	int e = r->len ? snap_stream_read(s, buf, r->len, &got, part, err, errlen) : 0;
	if (e == -EINVAL)
		snap_fail(err, errlen,
			  "stream: byte %" PRIu64 ": truncated in record %s begun at byte %" PRIu64
			  " (%" PRIu64 " of its %u bytes of payload)",
			  s->off, n, r->off, got, r->len);
	return e ? e : snap_mig_crc_check(r, buf, err, errlen);
}
