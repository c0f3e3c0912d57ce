/* net.hvt: net device "service" on a tap where tests/tools/tap_echo.py
 * sends every frame of EtherType 0x88b5 back with the MACs swapped.
 *
 * Prints the MAC and MTU the monitor filled in, checks that NET_READ says
 * AGAIN when nothing is queued and that a frame longer than MTU + 14 is
 * refused (EINVAL), sends count=N frames (default 4; lengths 60, 260, 460,
 * ...; to 02:00:00:00:00:fe; payload "EMBERHVT", index, count, a byte
 * pattern) and waits up to wait_ms (default 5000) with POLL for them to
 * come back intact: "net: K of N echoed".  Halts 0 when all came back.
 * Other frames (a host's own traffic) are counted and ignored. */
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

int main(const struct hvt_boot_info *bi)
{
	const struct hvt_mft_entry *e;
	int h = hvt_mft_find("service", HVT_MFT_NET_BASIC, &e);
	u64 n = 4, wait_ms = 5000;
	const char *s;

	(void)bi;
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
	u8 *tx = hvt_alloc(size + 1), *rx = hvt_alloc(size);
	if (!tx || !rx)
		return 3;

	int ok = 1, r;
	u64 stray = 0, len;
	/* Nothing is queued yet (or only a host's stray frames): AGAIN. */
	for (;;) {
		len = size;
		r = hvt_net_read((u64)h, rx, &len);
		if (r != SOLO5_R_OK)
			break;
		stray++;
	}
	kprintf("net: empty read: %s\n", hvt_result_name(r));
	ok &= r == SOLO5_R_AGAIN;

	build(tx, 0, (u32)n, mac, size + 1);
	r = hvt_net_write((u64)h, tx, size + 1);
	kprintf("net: oversized write (MTU + 15): %s\n", hvt_result_name(r));
	ok &= r == SOLO5_R_EINVAL;

	u64 t0 = hvt_walltime();
	for (u32 i = 0; i < n; i++) {
		len = frame_len(i, mtu);
		build(tx, i, (u32)n, mac, len);
		r = hvt_net_write((u64)h, tx, len);
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
			if (hvt_net_read((u64)h, rx, &len) != SOLO5_R_OK)
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
