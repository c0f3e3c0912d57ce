/* blk.hvt: block device "storage".
 *
 * Default: writes a pattern to sectors 0..7 in one request and to the last
 * sector, reads it all back (one request per sector, then sectors 0..7 in
 * one), then makes requests the monitor must refuse with EINVAL: offset =
 * capacity, unaligned offset, unaligned length, longer than the disk,
 * straddling its end, a handle that is the reserved entry 0, one past the
 * manifest, and a write at offset = capacity.  Halts 0 if all went as
 * expected, else 1.  (hvt ABI 2 has no flush call.)
 *
 * With "read" on the command line: reads sector 0 and prints its first 16
 * bytes ("sector0: <hex>"), so a test can check what an earlier run wrote.
 *
 * With "pause": writes the pattern to sectors 0..7, prints "blk: written",
 * waits in POLL for about 3 s (a snapshot test pauses, saves and kills it
 * there), then reads them back: "blk: read back ok" or a mismatch.
 *
 * With "loop": round r (1, 2, ...) prints what its one buffer holds (the
 * previous round's sector, as text: "blk: round R buffer TEXT"), reads
 * sector 1 + (r-1) % (capacity-1) into it, and waits 20 ms in POLL: a
 * snapshot between rounds must bring the monitor's write back.
 *
 * Pattern byte at disk offset o: (o & 0xff) ^ ((o >> 8) * 0x1d) ^ 0xa5,
 * low 8 bits (test_hvt.py computes the same). */
#include "hvt_guest.h"

HVT_MANIFEST(HVT_BLOCK("storage"));

#define NSECT 8

static u8 pattern(u64 off)
{
	return (u8)((off & 0xff) ^ ((off >> 8) * 0x1d) ^ 0xa5);
}

static void fill(u8 *buf, u64 off, u64 len)
{
	for (u64 i = 0; i < len; i++)
		buf[i] = pattern(off + i);
}

/* Offset of the first byte that differs from the pattern, or ~0. */
static u64 check(const u8 *buf, u64 off, u64 len)
{
	for (u64 i = 0; i < len; i++)
		if (buf[i] != pattern(off + i))
			return off + i;
	return ~0ULL;
}

static int expect(const char *what, int r, int want)
{
	if (r == want) {
		kprintf("blk: %s: %s\n", what, hvt_result_name(r));
		return 1;
	}
	kprintf("blk: %s: got %s (%d), want %s\n", what, hvt_result_name(r), r,
		hvt_result_name(want));
	return 0;
}

static int read_mode(int h, u64 bs)
{
	u8 *buf = hvt_alloc(bs);
	int r = hvt_block_read((u64)h, 0, buf, bs);

	if (r != SOLO5_R_OK) {
		kprintf("blk: read sector 0: %s\n", hvt_result_name(r));
		return 1;
	}
	char hex[33];
	for (int i = 0; i < 16; i++) {
		hex[2 * i] = "0123456789abcdef"[buf[i] >> 4];
		hex[2 * i + 1] = "0123456789abcdef"[buf[i] & 15];
	}
	hex[32] = 0;
	kprintf("sector0: %s\n", hex);
	return 0;
}

static int pause_mode(int h, u64 bs)
{
	u64 span = NSECT * bs, bad;
	u8 *buf = hvt_alloc(span);
	if (!buf)
		return 1;
	fill(buf, 0, span);
	if (hvt_block_write((u64)h, 0, buf, span) != SOLO5_R_OK) {
		kprintf("blk: write failed\n");
		return 1;
	}
	kprintf("blk: written\n");
	u64 ready, end = hvt_walltime() + 3000000000ULL;
	while (hvt_walltime() < end)
		hvt_poll(200000000ULL, &ready);
	memset(buf, 0, span);
	int r = hvt_block_read((u64)h, 0, buf, span);
	if (r != SOLO5_R_OK || (bad = check(buf, 0, span)) != ~0ULL) {
		kprintf("blk: read back: %s, mismatch\n", hvt_result_name(r));
		return 1;
	}
	kprintf("blk: read back ok\n");
	return 0;
}

static int loop_mode(int h, u64 cap, u64 bs)
{
	u8 *buf = hvt_alloc(bs);
	u64 ready, n = cap / bs;
	if (!buf || n < 2)
		return 1;
	memset(buf, 0, bs);
	for (u64 r = 1;; r++) {
		char text[17];
		int i = 0;
		for (; i < 16 && buf[i] >= 0x20 && buf[i] < 0x7f; i++)
			text[i] = (char)buf[i];
		text[i] = 0;
		kprintf("blk: round %lu buffer %s\n", r, text);
		if (hvt_block_read((u64)h, (1 + (r - 1) % (n - 1)) * bs, buf, bs) != SOLO5_R_OK) {
			kprintf("blk: round %lu: read failed\n", r);
			return 1;
		}
		hvt_poll(20000000ULL, &ready);
	}
}

int main(const struct hvt_boot_info *bi)
{
	const struct hvt_mft_entry *e;
	int h = hvt_mft_find("storage", HVT_MFT_BLOCK_BASIC, &e);

	(void)bi;
	if (h < 0 || !e->attached) {
		kprintf("blk: block device storage missing\n");
		return 1;
	}
	u64 cap = e->u.block.capacity, bs = e->u.block.block_size;
	kprintf("blk: handle=%d capacity=%lu block_size=%lu\n", h, cap, bs);
	if (bs < 512 || (bs & (bs - 1)) || cap % bs) {
		kprintf("blk: bad geometry\n");
		return 1;
	}
	if (cmdline_has("read"))
		return read_mode(h, bs);
	if (cmdline_has("pause"))
		return pause_mode(h, bs);
	if (cmdline_has("loop"))
		return loop_mode(h, cap, bs);
	if (cap < (NSECT + 1) * bs) {
		kprintf("blk: disk too small (need %lu bytes)\n", (NSECT + 1) * bs);
		return 1;
	}

	int ok = 1;
	u64 span = NSECT * bs, last = cap - bs, bad;
	u8 *wbuf = hvt_alloc(span), *one = hvt_alloc(bs), *rbuf = hvt_alloc(span);
	u8 *big = hvt_alloc(cap + bs);
	if (!wbuf || !one || !rbuf || !big) {
		kprintf("blk: out of memory\n");
		return 1;
	}

	fill(wbuf, 0, span);
	ok &= expect("write sectors 0-7", hvt_block_write((u64)h, 0, wbuf, span), SOLO5_R_OK);
	fill(one, last, bs);
	ok &= expect("write last sector", hvt_block_write((u64)h, last, one, bs), SOLO5_R_OK);

	for (u64 s = 0; s < NSECT; s++) {
		memset(one, 0, bs);
		int r = hvt_block_read((u64)h, s * bs, one, bs);
		if (r != SOLO5_R_OK || (bad = check(one, s * bs, bs)) != ~0ULL) {
			kprintf("blk: sector %lu: %s, mismatch at 0x%lx\n", s, hvt_result_name(r),
				r == SOLO5_R_OK ? bad : 0);
			ok = 0;
		}
	}
	memset(one, 0, bs);
	int r = hvt_block_read((u64)h, last, one, bs);
	if (r != SOLO5_R_OK || (bad = check(one, last, bs)) != ~0ULL) {
		kprintf("blk: last sector: %s\n", hvt_result_name(r));
		ok = 0;
	}
	r = hvt_block_read((u64)h, 0, rbuf, span);
	if (r != SOLO5_R_OK || (bad = check(rbuf, 0, span)) != ~0ULL) {
		kprintf("blk: sectors 0-7 in one read: %s\n", hvt_result_name(r));
		ok = 0;
	}
	if (ok)
		kprintf("blk: pattern ok (%d sectors + last)\n", NSECT);

	ok &=
	    expect("read at offset=capacity", hvt_block_read((u64)h, cap, one, bs), SOLO5_R_EINVAL);
	ok &= expect("read at unaligned offset 100", hvt_block_read((u64)h, 100, one, bs),
		     SOLO5_R_EINVAL);
	ok &= expect("read of unaligned length 100", hvt_block_read((u64)h, 0, one, 100),
		     SOLO5_R_EINVAL);
	ok &= expect("oversized read (capacity + 1 block)",
		     hvt_block_read((u64)h, 0, big, cap + bs), SOLO5_R_EINVAL);
	ok &= expect("read straddling the end", hvt_block_read((u64)h, last, rbuf, 2 * bs),
		     SOLO5_R_EINVAL);
	ok &= expect("read on handle 0 (reserved)", hvt_block_read(0, 0, one, bs), SOLO5_R_EINVAL);
	ok &= expect("read on handle 63 (no such entry)", hvt_block_read(63, 0, one, bs),
		     SOLO5_R_EINVAL);
	ok &= expect("write at offset=capacity", hvt_block_write((u64)h, cap, one, bs),
		     SOLO5_R_EINVAL);

	kprintf(ok ? "blk: all ok\n" : "blk: FAILED\n");
	return ok ? 0 : 1;
}
