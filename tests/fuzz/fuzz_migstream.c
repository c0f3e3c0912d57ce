/* libFuzzer harness for the live migration stream's records
 * (snapshot/migstream.c): a target reads them from a socket whose far end
 * is another host, so every byte is untrusted.  The input is a stream of
 * records read until the first refusal or its end.  What must hold: a
 * refusal says why and names a byte offset; an accepted record is of a
 * known type with a length it may have, its CRC the header's and
 * payload's, and re-encoding its fields gives the same header; the reader
 * never reads past what it was given. */
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "snapshot/snapshot.h"
#include "tests/fuzz/fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static int fd = -1;
	static uint8_t buf[SNAP_STREAM_STATE_MAX > (1 << 20) ? (1 << 20) : SNAP_STREAM_STATE_MAX];
	char err[SNAP_ERR_MAX];
	if (fd < 0) {
		fd = memfd_create("fuzz-migstream", 0);
		CHECK(fd >= 0);
	}
	if (size > (1 << 20))
		return 0;
	CHECK(ftruncate(fd, 0) == 0 && pwrite(fd, data, size, 0) == (ssize_t)size);
	CHECK(lseek(fd, 0, SEEK_SET) == 0);
	struct snap_stream s = {.fd = fd};
	for (;;) {
		struct snap_mig_rec r;
		err[0] = '\0';
		int e = snap_mig_get_hdr(&s, &r, err, sizeof(err));
		if (!e && r.len > sizeof(buf))
			return 0; /* a STAT larger than this harness holds: valid, skipped */
		if (!e)
			e = snap_mig_get_body(&s, &r, buf, err, sizeof(err));
		CHECK(s.off <= size);
		if (e) {
			CHECK(err[0] != '\0' && memchr(err, '\0', sizeof(err)) != NULL);
			CHECK(strstr(err, "stream: byte ") == err);
			return 0;
		}
		uint8_t again[SNAP_MIG_HDR];
		snap_mig_encode(again, r.type, r.a, r.b, buf, r.len);
		CHECK(memcmp(again, r.raw, SNAP_MIG_HDR) == 0);
		if (r.type == SNAP_MIG_DATA)
			CHECK(r.b && r.b <= SNAP_MIG_RUN_MAX && r.len == r.b * SNAP_PAGE);
		if (r.type == SNAP_MIG_DSKD) /* a run the target may pwrite as it is */
			CHECK(r.len == r.b && r.b % 512 == 0 && r.b <= SNAP_MIG_DISK_RUN_MAX &&
			      SNAP_MIG_DISK_N(r.a) < SNAP_MIG_DISKS_MAX &&
			      SNAP_MIG_DISK_OFF(r.a) + r.b <= 1ULL << SNAP_MIG_DISK_SHIFT);
	}
}
