/* net.hvt: net device "service" on a tap where tests/tools/tap_echo.py
 * sends every frame of EtherType 0x88b5 back with the MACs swapped.
 *
 * Prints the MAC and MTU the monitor filled in, checks that NET_READ says
 * AGAIN when nothing is queued and that a frame longer than MTU + 14 is
 * refused (EINVAL), sends count=N frames (default 4; lengths 60, 260, 460,
 * ...; to 02:00:00:00:00:fe; payload "EMBERHVT", index, count, a byte
 * pattern) and waits up to wait_ms (default 5000) with POLL for them to
 * come back intact: "net: K of N echoed".  Halts 0 when all came back.
 * Other frames (a host's own traffic) are counted and ignored.
 *
 * Ring I/O (ring.c): "net: host_features= net_ring= mem_size=" first.  With
 * `ring` it accepts the ring the monitor offers (else halts 4) and moves
 * every frame by it: "net: by ring"; the oversized write is then left out
 * (a ring write has no answer).  `bad` (with `ring`) first submits entries
 * the monitor must fail one by one ("net: bad ring read (CASE): EINVAL")
 * and goes on.  `bench=N` sends N 60-byte frames instead of the echo test
 * and says "net: bench N frames in T us by ring|hypercalls" (nothing
 * waits for them to come back).  `pause`: "net: pausing" and 3 s in POLL
 * after the empty read (the snapshot tests save it there). */
#include "hvt_guest.h"

HVT_MANIFEST(HVT_NET("service"));

#define ETHERTYPE 0x88b5 /* IEEE local experimental */
#define HLEN 14
#define MAX_FRAMES 32
static const u8 peer[6] = {0x02, 0, 0, 0, 0, 0xfe};
static const char magic[8] = {'E', 'M', 'B', 'E', 'R', 'H', 'V', 'T'};

static u64 frame_len(u32 i, u64 mtu)
{
	u64 len = 60 + 200 * (u64)i;
	return len > mtu + HLEN ? mtu + HLEN : len;
}

static void put_be32(u8 *p, u32 v)
{
	p[0] = (u8)(v >> 24), p[1] = (u8)(v >> 16), p[2] = (u8)(v >> 8), p[3] = (u8)v;
}

static u32 get_be32(const u8 *p)
{
	return (u32)p[0] << 24 | (u32)p[1] << 16 | (u32)p[2] << 8 | p[3];
}

static void build(u8 *f, u32 i, u32 n, const u8 *mac, u64 len)
{
	memcpy(f, peer, 6);
	memcpy(f + 6, mac, 6);
	f[12] = ETHERTYPE >> 8, f[13] = ETHERTYPE & 0xff;
	memcpy(f + HLEN, magic, 8);
	put_be32(f + HLEN + 8, i);
	put_be32(f + HLEN + 12, n);
	for (u64 j = HLEN + 16; j < len; j++)
		f[j] = (u8)(i * 7 + j);
}

/* Index of the echoed frame f, or -1 if it is not one of ours, intact. */
static int echoed(const u8 *f, u64 len, u32 n, const u8 *mac, u64 mtu)
{
	if (len < HLEN + 16 || f[12] != ETHERTYPE >> 8 || f[13] != (ETHERTYPE & 0xff) ||
	    memcmp(f + HLEN, magic, 8) || memcmp(f, mac, 6) || memcmp(f + 6, peer, 6))
		return -1;
	u32 i = get_be32(f + HLEN + 8);
	if (i >= n || get_be32(f + HLEN + 12) != n || len != frame_len(i, mtu))
		return -1;
	for (u64 j = HLEN + 16; j < len; j++)
		if (f[j] != (u8)(i * 7 + j))
			return -1;
	return (int)i;
}

static int use_ring;

static int net_write(int h, const u8 *buf, u64 len)
{
	if (!use_ring)
		return hvt_net_write((u64)h, buf, len);
	ring_write((u32)h, (u64)(uintptr_t)buf, (u32)len);
	return SOLO5_R_OK;
}

static int net_read(int h, u8 *buf, u64 *len)
{
	return use_ring ? ring_read((u32)h, (u64)(uintptr_t)buf, len)
			: hvt_net_read((u64)h, buf, len);
}

/* Entries the monitor must fail alone; each read's commit says EINVAL. */
static int bad_entries(int h, u8 *rx, u64 size)
{
	u64 ram_end = (hvt_bi->mem_size + 0x1fffff) & ~0x1fffffULL, me = (u64)(uintptr_t)rx;
	const struct {
		const char *name;
		u32 handle;
		u64 data, len;
	} reads[] = {
	    {"GPA past RAM", (u32)h, 0xfff00000000ULL, size},
	    {"GPA across the end of RAM", (u32)h, ram_end - 16, size},
	    {"handle 0", 0, me, size},
	    {"handle 63", 63, me, size},
	    {"buffer under MTU + 14", (u32)h, me, 60},
	};
	int ok = 1;
	for (unsigned i = 0; i < sizeof(reads) / sizeof(reads[0]); i++) {
		u64 len = reads[i].len;
		int r = ring_read(reads[i].handle, reads[i].data, &len);
		kprintf("net: bad ring read (%s): %s\n", reads[i].name, hvt_result_name(r));
		ok &= r == SOLO5_R_EINVAL && len == 0;
	}
	/* Writes have no answer: these must just not reach the tap or stop us. */
	ring_write((u32)h, 0xfff00000000ULL, 60);
	ring_write(63, (u64)(uintptr_t)rx, 60);
	ring_write((u32)h, (u64)(uintptr_t)rx, 0);
	ring_submit(77, (u32)h, (u64)(uintptr_t)rx, 60);
	ok &= ring_drain() == 0;
	kprintf("net: bad ring writes and an unknown operation: %s\n",
		ok ? "passed over" : "stuck");
	return ok;
}

/* N frames of 60 bytes as fast as they go; the last one taken by the
 * monitor ends the clock. */
static void bench(int h, const u8 *mac, u64 n)
{
	u8 *f = hvt_alloc(60);
	build(f, 0, 1, mac, 60);
	u64 t0 = hvt_walltime();
	for (u64 i = 0; i < n; i++)
		(void)net_write(h, f, 60);
	if (use_ring && ring_drain())
		kprintf("net: bench: the ring did not drain\n");
	u64 us = (hvt_walltime() - t0) / 1000;
	kprintf("net: bench %lu frames in %lu us by %s\n", n, us ? us : 1,
		use_ring ? "ring" : "hypercalls");
}

int main(const struct hvt_boot_info *bi)
{
	const struct hvt_mft_entry *e;
	int h = hvt_mft_find("service", HVT_MFT_NET_BASIC, &e);
	u64 n = 4, wait_ms = 5000;
	const char *s;

	kprintf("net: host_features=0x%x net_ring=0x%lx mem_size=0x%lx\n", bi->host_features,
		bi->net_ring, bi->mem_size);
	if (cmdline_has("ring")) {
		if (ring_accept()) {
			kprintf("net: no ring offered\n");
			return 4;
		}
		use_ring = 1;
		kprintf("net: by ring\n");
	}
	if (h < 0 || !e->attached) {
		kprintf("net: net device service missing\n");
		return 1;
	}
	if (((s = cmdline_arg("count")) && (parse_u64(s, &n) || n < 1 || n > MAX_FRAMES)) ||
	    ((s = cmdline_arg("wait_ms")) && parse_u64(s, &wait_ms))) {
		kprintf("net: bad argument %s\n", s);
		return 2;
	}
	const u8 *mac = e->u.net.mac;
	u64 mtu = e->u.net.mtu, size = mtu + HLEN;
	kprintf("net: handle=%d mac=%02x:%02x:%02x:%02x:%02x:%02x mtu=%lu\n", h, mac[0], mac[1],
		mac[2], mac[3], mac[4], mac[5], mtu);
	if (mtu < 68) {
		kprintf("net: implausible mtu\n");
		return 1;
	}
	/* A frame each: a ring write is read by the monitor later. */
	u8 *tx = hvt_alloc((size + 1) * n), *rx = hvt_alloc(size);
	if (!tx || !rx)
		return 3;

	int ok = 1, r;
	u64 stray = 0, len;
	if ((s = cmdline_arg("bench"))) {
		if (parse_u64(s, &n))
			return 2;
		bench(h, mac, n);
		return 0;
	}
	if (use_ring && cmdline_has("bad"))
		ok &= bad_entries(h, rx, size);
	/* Nothing is queued yet (or only a host's stray frames): AGAIN. */
	for (;;) {
		len = size;
		r = net_read(h, rx, &len);
		if (r != SOLO5_R_OK)
			break;
		stray++;
	}
	kprintf("net: empty read: %s\n", hvt_result_name(r));
	ok &= r == SOLO5_R_AGAIN;

	if (cmdline_has("pause")) {
		/* where the snapshot tests pause, save and kill it */
		kprintf("net: pausing\n");
		for (u64 t = hvt_walltime(); hvt_walltime() - t < 3000000000ULL;)
			hvt_poll(500000000, NULL);
	}
	if (!use_ring) {
		build(tx, 0, (u32)n, mac, size + 1);
		r = hvt_net_write((u64)h, tx, size + 1);
		kprintf("net: oversized write (MTU + 15): %s\n", hvt_result_name(r));
		ok &= r == SOLO5_R_EINVAL;
	}

	u64 t0 = hvt_walltime();
	for (u32 i = 0; i < n; i++) {
		len = frame_len(i, mtu);
		u8 *f = tx + i * (size + 1);
		build(f, i, (u32)n, mac, len);
		r = net_write(h, f, len);
		if (r != SOLO5_R_OK) {
			kprintf("net: write %u: %s\n", i, hvt_result_name(r));
			ok = 0;
		}
	}
	kprintf("net: sent %lu frames\n", n);

	u32 seen = 0, got = 0;
	u64 deadline = t0 + wait_ms * 1000000, now;
	while (got < n && (now = hvt_walltime()) < deadline) {
		u64 ready = 0, left = deadline - now;
		hvt_poll(left < 500000000 ? left : 500000000, &ready);
		if (!(ready & (1ULL << h)))
			continue;
		for (;;) {
			len = size;
			if (net_read(h, rx, &len) != SOLO5_R_OK)
				break;
			int i = echoed(rx, len, (u32)n, mac, mtu);
			if (i < 0 || (seen & (1u << i))) {
				stray++;
				continue;
			}
			seen |= 1u << i;
			got++;
		}
	}
	kprintf("net: %u of %lu echoed in %lu ms\n", got, n, (hvt_walltime() - t0) / 1000000);
	if (stray)
		kprintf("net: ignored %lu other frames\n", stray);
	return ok && got == n ? 0 : 1;
}
