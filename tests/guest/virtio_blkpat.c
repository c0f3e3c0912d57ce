/* test=blkpattern: a guest that writes a checksummed pattern across its
 * first drive over and over, reading each pass back, while the host moves
 * that drive (tests/integration/test_drive_move.py).
 *
 * Pass p (1, 2, ...) writes every sector s in 64 KiB requests: 63 words
 * word(p, s) + j and a 64th, their sum (the checksum); flushes; reads the
 * second drive's sector 0 (the host's control: "STOP"); reads every
 * sector back and checks it, printing "blkpattern: pass P ok" or the first
 * difference ("blkpattern: pass P sector S word J: got X want Y", exit 1).
 * After the pass that saw STOP, "blkpattern: final pass P ok", exit 0: the
 * disk then holds pass P's pattern, which the test recomputes. */
#include "virtio_test.h"

#define WORDS (SECTOR / 8)
#define PER_REQ (BIG_READ / SECTOR)

static u64 pat[BIG_READ / 8] __attribute__((aligned(4096)));
static u8 ctl[SECTOR] __attribute__((aligned(512)));

/* Cheap on purpose: guest ring-0 code is emulated on some hosts. */
static u64 word(u64 pass, u64 sector)
{
	return (pass << 40) ^ (sector << 8) ^ 0x5bd1e9955bd1e995ULL;
}

static void fill(u64 pass, u64 first, u64 n)
{
	for (u64 s = 0; s < n; s++) {
		u64 *w = pat + s * WORDS, sum = 0, base = word(pass, first + s);
		for (u64 j = 0; j < WORDS - 1; j++)
			sum += w[j] = base + j;
		w[WORDS - 1] = sum;
	}
}

/* 0, or -1 after printing the first difference. */
static int check(u64 pass, u64 first, u64 n)
{
	for (u64 s = 0; s < n; s++) {
		const u64 *w = pat + s * WORDS;
		u64 sum = 0, base = word(pass, first + s);
		for (u64 j = 0; j < WORDS; j++) {
			u64 want = j < WORDS - 1 ? base + j : sum;
			if (w[j] != want) {
				kprintf("blkpattern: pass %lu sector %lu word %lu: got 0x%lx want "
					"0x%lx\n",
					pass, first + s, j, w[j], want);
				return -1;
			}
			sum += w[j];
		}
	}
	return 0;
}

static int io(struct vdev *d, u32 type, u64 sector, void *buf, u32 len, const char *what)
{
	int st = blk_req(d, type, sector, buf, len);
	if (st == VIRTIO_BLK_S_OK)
		return 0;
	kprintf("blkpattern: %s at sector %lu: status %d\n", what, sector, st);
	return -1;
}

int do_blkpattern(void)
{
	struct vdev *d = find_dev_nth(VIRTIO_ID_BLOCK, 0), *c = find_dev_nth(VIRTIO_ID_BLOCK, 1);
	if (!d || !c || vdev_init(d, BLK_WANTED, 1))
		return 1;
	u64 cap = vdev_config64(d, 0);
	if (cap % PER_REQ) {
		print("blkpattern: the disk must be a multiple of 64 KiB\n");
		return 1;
	}
	kprintf("blkpattern: %lu sectors\n", cap);
	for (u64 pass = 1;; pass++) {
		for (u64 s = 0; s < cap; s += PER_REQ) {
			fill(pass, s, PER_REQ);
			if (io(d, VIRTIO_BLK_T_OUT, s, pat, BIG_READ, "write"))
				return 1;
		}
		/* The driver's queue memory is one device's: the control drive
		 * is set up, read, and the data drive set up again (a reset
		 * between two passes, nothing in flight). */
		if (io(d, VIRTIO_BLK_T_FLUSH, 0, NULL, 0, "flush") || vdev_init(c, BLK_WANTED, 1) ||
		    io(c, VIRTIO_BLK_T_IN, 0, ctl, SECTOR, "control read") ||
		    vdev_init(d, BLK_WANTED, 1))
			return 1;
		int stop = !memcmp(ctl, "STOP", 4);
		for (u64 s = 0; s < cap; s += PER_REQ) {
			memset(pat, 0, sizeof(pat));
			if (io(d, VIRTIO_BLK_T_IN, s, pat, BIG_READ, "read") ||
			    check(pass, s, PER_REQ))
				return 1;
		}
		kprintf("blkpattern: %spass %lu ok\n", stop ? "final " : "", pass);
		if (stop)
			return 0;
	}
}
