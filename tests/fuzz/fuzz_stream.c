/* libFuzzer harness for a snapshot stream's memory records
 * (snapshot/stream.c's snap_stream_get_mem): a stream reaches ember from
 * a pipe or another host, so every record is untrusted.  The first byte
 * picks the reader's case (zeroed RAM; RAM holding a previous round with
 * its page terms kept; the same with the terms computed), the rest is
 * the records.  What must hold: a refusal says why; an accepted stream
 * leaves RAM whose content hash is the end record's (and every kept term
 * that page's), and the reader never reads past what it was given. */
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "snapshot/snapshot.h"
#include "tests/fuzz/fuzz.h"

#define PAGES 64ULL
#define RAM (PAGES * SNAP_PAGE)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static uint8_t *ram;
	static uint64_t terms[PAGES];
	static int fd = -1;
	char err[SNAP_ERR_MAX];
	if (!ram) {
		ram = mmap(NULL, RAM, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		fd = memfd_create("fuzz-stream", 0);
		CHECK(ram != MAP_FAILED && fd >= 0);
	}
	if (size < 1 || size > (1 << 20))
		return 0;
	unsigned mode = data[0] % 3;
	CHECK(ftruncate(fd, 0) == 0 && pwrite(fd, data + 1, size - 1, 0) == (ssize_t)(size - 1));
	CHECK(lseek(fd, 0, SEEK_SET) == 0);
	/* the previous round: a few pages of a pattern, or nothing */
	memset(ram, 0, RAM);
	struct snap_mem_hash h = {0, mode == 1 ? terms : NULL};
	if (mode) {
		for (uint64_t p = 0; p < PAGES; p += 5)
			memset(ram + p * SNAP_PAGE, (int)(p + 1), SNAP_PAGE);
		snap_mem_hash_ram(ram, RAM, &h);
	}
	struct snap_stream s = {.fd = fd};
	err[0] = '\0';
	int r = snap_stream_get_mem(&s, ram, RAM, mode == 0, &h, err, sizeof(err));
	CHECK(s.off <= size - 1);
	if (r) {
		CHECK(err[0] != '\0' && memchr(err, '\0', sizeof(err)) != NULL);
		return 0;
	}
	struct snap_mem_hash now = {0, NULL};
	snap_mem_hash_ram(ram, RAM, &now);
	CHECK(now.sum == h.sum);
	for (uint64_t p = 0; mode == 1 && p < PAGES; p++)
		CHECK(terms[p] == snap_mem_page_term(ram + p * SNAP_PAGE, p));
	return 0;
}
