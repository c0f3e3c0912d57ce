/* Drives ember's virtio-mmio devices from the guest side (virtio 1.2, MMIO
 * register layout version 2), with the polling driver in virtio_drv.c.
 * Devices come from `virtio_mmio.device=SIZE@ADDR:IRQ` on the command
 * line; `test=` picks what to do:
 *   probe    one line per device
 *   blk      capacity, GET_ID, sector 0, write/flush/read back, read-only
 *            (`ro=1`), out-of-range read, `reads=N` x 64 KiB
 *   blkloop  `rounds=N`: round r reads sector 1 + (r-1) % (capacity-1)
 *            into one fixed buffer, after printing what that buffer
 *            holds (the previous round's sector), then spins `spin=`
 *            TSC ticks: a snapshot taken between rounds must bring the
 *            device's writes (buffer, used ring) back
 *   net      `count=N` broadcast frames echoed back by the host
 *   netloop  `rounds=N`: round r prints the payloads of the rx buffers
 *            the used entries of the last two echoes name (frames r-1
 *            and r-2), read from guest RAM then, not remembered; sends r,
 *            waits for its echo (sending again each `resend=` ms: one
 *            in flight is lost when a snapshot's ember dies), spins
 *            `spin=` TSC ticks: a snapshot taken anywhere in a round
 *            must bring the device's writes (rx buffers, used ring) back
 *   rng      two 64-byte draws, non-zero and different
 *   vsock    connect to host CID 2 `port=`; with `listen=P` also accept
 *   blkpattern  (virtio_blkpat.c) passes of a checksummed pattern over the
 *            first drive, each read back, until the second drive's sector 0
 *            says STOP
 *   bench    `kind=pio|rng n=N`: N exits or N rng round trips between
 *            "bench: start" and "bench: done N" (make bench times them);
 *            `kind=blkw`: N 4 KiB writes in the first MiB of the first
 *            drive, then "bench: done N", for ever (the drive move bench)
 *   hostile  `case=C` (`dev=block|net|rng`): a broken driver's request,
 *            then DEVICE_NEEDS_RESET expected, reset, one good request
 * Exit status 0 on success, 1 on failure (README.md lists the lines). */
#include "virtio_test.h"

static struct vdev devs[VDEV_MAX];
static unsigned ndevs;

u64 arg_u64(const char *key, u64 def)
{
	const char *v = cmdline_arg(key);
	u64 x;

	return v && !parse_u64(v, &x) ? x : def;
}

/* Does `key=` have exactly the value val? */
int arg_is(const char *key, const char *val, int def)
{
	const char *v = cmdline_arg(key);
	size_t n = strlen(val);

	if (!v)
		return def;
	return !memcmp(v, val, n) && (v[n] == ' ' || v[n] == 0);
}

struct vdev *find_dev_nth(u32 id, unsigned nth)
{
	for (unsigned i = 0; i < ndevs; i++)
		if (devs[i].id == id && !nth--)
			return &devs[i];
	kprintf("virtio: no %s device\n", vdev_name(id));
	return NULL;
}

struct vdev *find_dev(u32 id)
{
	return find_dev_nth(id, 0);
}

/* Printable bytes as they are, others as '.', up to n or a NUL. */
static void print_text(const u8 *s, size_t n)
{
	for (size_t i = 0; i < n && s[i]; i++)
		serial_putc(s[i] >= 0x20 && s[i] < 0x7f ? (char)s[i] : '.');
}

/* ---- probe ---- */

static int do_probe(void)
{
	int bad = 0;

	unsigned n = 0;

	for (unsigned i = 0; i < ndevs; i++) {
		struct vdev *d = &devs[i];
		if (!d->id)
			continue; /* an empty slot (QEMU has those) */
		n++;
		kprintf("virtio: 0x%lx irq %u id %u %s\n", d->base, d->irq, d->id, vdev_name(d->id));
		if (d->version != 2) {
			kprintf("virtio: 0x%lx: version %u (legacy) not supported, need version 2\n",
				d->base, d->version);
			bad = 1;
		}
	}
	if (!n)
		print("virtio: no devices\n");
	return bad || !n;
}

/* ---- block (§5.2) ---- */


static struct blk_hdr {
	u32 type;
	u32 reserved;
	u64 sector;
} blk_hdr;
static volatile u8 blk_status;
static u8 blk_data[BIG_READ] __attribute__((aligned(4096)));
static u8 blk_pattern[SECTOR];

/* One request: header, an optional data buffer, status.  The status byte,
 * or -1 on timeout. */
int blk_req(struct vdev *d, u32 type, u64 sector, void *buf, u32 len)
{
	struct vbuf b[3] = {{(u64)&blk_hdr, sizeof(blk_hdr), 0}};
	unsigned n = 1;

	blk_hdr = (struct blk_hdr){.type = type, .sector = sector};
	if (len)
		b[n++] = (struct vbuf){(u64)buf, len, type != VIRTIO_BLK_T_OUT};
	b[n++] = (struct vbuf){(u64)&blk_status, 1, 1};
	blk_status = 0xff;
	if (vq_request(d, &d->vq[0], b, n, "blk") < 0)
		return -1;
	return blk_status;
}

static int blk_check(int st, int want, const char *what)
{
	if (st == want)
		return 0;
	if (st >= 0)
		kprintf("blk: %s: status %d, expected %d\n", what, st, want);
	return -1;
}

static int do_blk(void)
{
	struct vdev *d = find_dev(VIRTIO_ID_BLOCK);
	int ro = (int)arg_u64("ro", 0);
	u64 sector = arg_u64("sector", 1), seed = arg_u64("seed", 1), reads = arg_u64("reads", 0);

	if (!d || vdev_init(d, BLK_WANTED, 1))
		return 1;
	u64 cap = vdev_config64(d, 0);
	kprintf("blk: capacity %lu sectors\n", cap);

	if (blk_check(blk_req(d, VIRTIO_BLK_T_GET_ID, 0, blk_data, 20), VIRTIO_BLK_S_OK, "get id"))
		return 1;
	print("blk: id ");
	print_text(blk_data, 20);
	print("\n");

	if (blk_check(blk_req(d, VIRTIO_BLK_T_IN, 0, blk_data, SECTOR), VIRTIO_BLK_S_OK,
		      "read sector 0"))
		return 1;
	print("blk: sector0 ");
	print_text(blk_data, 16);
	print("\n");

	if (sector >= cap) {
		kprintf("blk: sector %lu is beyond the disk\n", sector);
		return 1;
	}
	u32 x = (u32)(seed * 2654435761u + sector) | 1;
	for (unsigned i = 0; i < SECTOR; i++) { /* xorshift32 */
		x ^= x << 13;
		x ^= x >> 17;
		x ^= x << 5;
		blk_pattern[i] = (u8)x;
	}
	int st = blk_req(d, VIRTIO_BLK_T_OUT, sector, blk_pattern, SECTOR);
	if (ro) {
		if (blk_check(st, VIRTIO_BLK_S_IOERR, "write to a read-only disk"))
			return 1;
		print("blk: write refused (read-only)\n");
		if (!(d->features & 1ULL << VIRTIO_BLK_F_RO)) {
			print("blk: VIRTIO_BLK_F_RO not offered\n");
			return 1;
		}
		print("blk: read-only feature set\n");
	} else {
		if (blk_check(st, VIRTIO_BLK_S_OK, "write"))
			return 1;
		if (!(d->accepted & 1ULL << VIRTIO_BLK_F_FLUSH))
			print("blk: VIRTIO_BLK_F_FLUSH not offered, flushing anyway\n");
		if (blk_check(blk_req(d, VIRTIO_BLK_T_FLUSH, 0, NULL, 0), VIRTIO_BLK_S_OK, "flush"))
			return 1;
		memset(blk_data, 0, SECTOR);
		if (blk_check(blk_req(d, VIRTIO_BLK_T_IN, sector, blk_data, SECTOR),
			      VIRTIO_BLK_S_OK, "read back"))
			return 1;
		if (memcmp(blk_data, blk_pattern, SECTOR)) {
			kprintf("blk: sector %lu reads back different\n", sector);
			return 1;
		}
		print("blk: write/flush/read ok\n");
	}

	if (blk_check(blk_req(d, VIRTIO_BLK_T_IN, cap, blk_data, SECTOR), VIRTIO_BLK_S_IOERR,
		      "read at the capacity"))
		return 1;
	print("blk: out-of-range read refused\n");

	if (reads) {
		u64 per = BIG_READ / SECTOR, s = 0;
		if (cap < per) {
			print("blk: disk smaller than 64 KiB\n");
			return 1;
		}
		for (u64 i = 0; i < reads; i++, s += per) {
			if (s + per > cap)
				s = 0;
			if (blk_check(blk_req(d, VIRTIO_BLK_T_IN, s, blk_data, BIG_READ),
				      VIRTIO_BLK_S_OK, "64 KiB read"))
				return 1;
		}
		kprintf("blk: read %lu x 64 KiB\n", reads);
	}
	return 0;
}

static int do_blkloop(void)
{
	struct vdev *d = find_dev(VIRTIO_ID_BLOCK);
	u64 rounds = arg_u64("rounds", 1000000), spin = arg_u64("spin", 2000000);

	if (!d || vdev_init(d, BLK_WANTED, 1))
		return 1;
	u64 cap = vdev_config64(d, 0);
	if (cap < 2) {
		print("blkloop: the disk needs 2 sectors\n");
		return 1;
	}
	for (u64 r = 1; r <= rounds; r++) {
		kprintf("blkloop: round %lu buffer ", r);
		print_text(blk_data, 16);
		print("\n");
		if (blk_check(blk_req(d, VIRTIO_BLK_T_IN, 1 + (r - 1) % (cap - 1), blk_data, SECTOR),
			      VIRTIO_BLK_S_OK, "read"))
			return 1;
		for (u64 t = rdtsc(); rdtsc() - t < spin;)
			cpu_relax();
	}
	return 0;
}

/* ---- net (§5.1) ---- */

#define VIRTIO_NET_F_MAC 5
#define NET_HDR 12 /* struct virtio_net_hdr with num_buffers (VERSION_1) */
#define ETH_HLEN 14
#define ETH_MAX 1514
#define ETHERTYPE_TEST 0x88b5
#define NET_RX_BUFS 8
#define NET_RX_SIZE 1536 /* >= NET_HDR + ETH_MAX */

/* Page-aligned and 3 pages long: only the device writes these pages, so
 * KVM's dirty log never sees them (netloop relies on it). */
static u8 net_rx[NET_RX_BUFS][NET_RX_SIZE] __attribute__((aligned(4096)));
static u8 net_tx[NET_HDR + ETH_MAX] __attribute__((aligned(64)));
static u8 net_mac[6];

/* Makes rx buffer i (descriptor i) available again. */
static void net_post_rx(struct vq *rx, unsigned i)
{
	struct vbuf b = {(u64)net_rx[i], NET_RX_SIZE, 1};
	vq_add(rx, i, &b, 1);
}

/* "ember-net-test <seq>" in the frame's payload, not followed by a digit. */
static u32 net_payload(u8 *p, unsigned seq)
{
	char tmp[12];
	unsigned n = 0, len;
	static const char tag[] = "ember-net-test ";

	memcpy(p, tag, sizeof(tag) - 1);
	len = sizeof(tag) - 1;
	do
		tmp[n++] = (char)('0' + seq % 10);
	while ((seq /= 10));
	while (n)
		p[len++] = (u8)tmp[--n];
	return len;
}

static int net_match(const u8 *frame, u32 len, const u8 *text, u32 tlen)
{
	if (len < ETH_HLEN + tlen || frame[12] != (ETHERTYPE_TEST >> 8) ||
	    frame[13] != (ETHERTYPE_TEST & 0xff))
		return 0;
	for (u32 i = ETH_HLEN; i + tlen <= len; i++)
		if (!memcmp(frame + i, text, tlen) &&
		    (i + tlen == len || frame[i + tlen] < '0' || frame[i + tlen] > '9'))
			return 1;
	return 0;
}

/* Sends frame number seq on tx (slot 1): broadcast, ethertype 0x88b5. */
static int net_send(struct vdev *d, unsigned seq, const u8 **text, u32 *tlen)
{
	u8 *f = net_tx + NET_HDR;

	memset(net_tx, 0, NET_HDR + 60);
	memset(f, 0xff, 6);
	memcpy(f + 6, net_mac, 6);
	f[12] = ETHERTYPE_TEST >> 8;
	f[13] = ETHERTYPE_TEST & 0xff;
	u32 n = net_payload(f + ETH_HLEN, seq);
	*text = f + ETH_HLEN;
	*tlen = n;
	n += ETH_HLEN;
	if (n < 60)
		n = 60; /* the Ethernet minimum, zero-padded */
	struct vbuf b = {(u64)net_tx, NET_HDR + n, 0};
	return vq_request(d, &d->vq[1], &b, 1, "net") < 0 ? -1 : 0;
}

/* Brings d up with the MAC feature, prints the MAC and posts every rx
 * buffer; -1 (with a line) when it cannot. */
static int net_start(struct vdev *d, const char *who)
{
	if (!d || vdev_init(d, 1ULL << VIRTIO_NET_F_MAC, 2))
		return -1;
	if (!(d->accepted & 1ULL << VIRTIO_NET_F_MAC)) {
		kprintf("%s: VIRTIO_NET_F_MAC not offered\n", who);
		return -1;
	}
	for (unsigned i = 0; i < 6; i++)
		net_mac[i] = vdev_config8(d, i);
	kprintf("%s: mac %02x:%02x:%02x:%02x:%02x:%02x\n", who, net_mac[0], net_mac[1], net_mac[2],
		net_mac[3], net_mac[4], net_mac[5]);

	struct vq *rx = &d->vq[0];
	for (unsigned i = 0; i < NET_RX_BUFS; i++)
		net_post_rx(rx, i);
	vq_publish(rx);
	vq_notify(d, rx);
	return 0;
}

/* Takes rx frames for up to ms until one carries text (each goes back to
 * the device, others with a line): 0 when it came, 1 on timeout, -1 on a
 * broken used element. */
static int net_await(struct vdev *d, const u8 *text, u32 tlen, unsigned ms, const char *who)
{
	struct vq *rx = &d->vq[0];
	u32 id, len;

	for (;;) {
		if (vq_wait(rx, &id, &len, ms))
			return 1;
		if (id >= NET_RX_BUFS || len > NET_RX_SIZE) {
			kprintf("%s: bad rx used element id %u len %u\n", who, id, len);
			return -1;
		}
		int ok =
		    len > NET_HDR && net_match(net_rx[id] + NET_HDR, len - NET_HDR, text, tlen);
		net_post_rx(rx, id);
		vq_publish(rx);
		vq_notify(d, rx);
		if (ok)
			break;
		kprintf("%s: ignoring a %u-byte frame\n", who, len - NET_HDR);
	}
	/* rx and tx share InterruptStatus: ack without a check here. */
	u32 isr = vdev_read(d, VIRTIO_MMIO_INTERRUPT_STATUS);
	if (isr)
		vdev_write(d, VIRTIO_MMIO_INTERRUPT_ACK, isr);
	return 0;
}

static int do_net(void)
{
	struct vdev *d = find_dev(VIRTIO_ID_NET);
	unsigned count = (unsigned)arg_u64("count", 3);

	if (net_start(d, "net"))
		return 1;
	for (unsigned seq = 1; seq <= count; seq++) {
		const u8 *text;
		u32 tlen;
		if (net_send(d, seq, &text, &tlen))
			return 1;
		int r = net_await(d, text, tlen, 5000, "net");
		if (r > 0)
			kprintf("net: timeout waiting for echo %u\n", seq);
		if (r)
			return 1;
		kprintf("net: echo ok %u\n", seq);
	}
	return 0;
}

/* The payload of the rx buffer that used ring entry pos names, as guest
 * RAM holds both now. */
static void print_rx_at(struct vq *rx, u16 pos)
{
	volatile struct vring_used_elem *e = &rx->used->ring[pos % VQ_NUM];
	u32 id = e->id, len = e->len;

	if (id >= NET_RX_BUFS || len < NET_HDR + ETH_HLEN || len > NET_RX_SIZE) {
		kprintf("bad used element id %u len %u", id, len);
		return;
	}
	u32 n = len - NET_HDR - ETH_HLEN;
	print_text(net_rx[id] + NET_HDR + ETH_HLEN, n < 32 ? n : 32);
}

static int do_netloop(void)
{
	struct vdev *d = find_dev(VIRTIO_ID_NET);
	u64 rounds = arg_u64("rounds", 1000000), spin = arg_u64("spin", 2000000);
	unsigned resend = (unsigned)arg_u64("resend", 1000);
	/* Used ring positions of the last two echoes: a snapshot taken while
	 * echo r is awaited gets r live after the restore, but r-1 only from
	 * the snapshot. */
	u16 echo_at[2] = {0, 0};

	if (net_start(d, "netloop"))
		return 1;
	struct vq *rx = &d->vq[0];
	for (u64 r = 1; r <= rounds; r++) {
		const u8 *text;
		u32 tlen;
		int st;
		kprintf("netloop: round %lu last ", r);
		if (r > 1)
			print_rx_at(rx, echo_at[0]);
		else
			print("none");
		print(" before ");
		if (r > 2)
			print_rx_at(rx, echo_at[1]);
		else
			print("none");
		print("\n");
		do {
			if (net_send(d, (unsigned)r, &text, &tlen))
				return 1;
			st = net_await(d, text, tlen, resend, "netloop");
			if (st > 0)
				kprintf("netloop: no echo %lu yet, sending again\n", r);
		} while (st > 0);
		if (st)
			return 1;
		echo_at[1] = echo_at[0];
		echo_at[0] = (u16)(rx->last_used - 1); /* net_await stops at the echo */
		for (u64 t = rdtsc(); rdtsc() - t < spin;)
			cpu_relax();
	}
	return 0;
}

/* ---- rng (§5.4) ---- */

static u8 rng_buf[2][64];

static int rng_fill(struct vdev *d, u8 *out)
{
	static u8 tmp[64];
	u32 got = 0;

	for (int tries = 0; got < 64 && tries < 64; tries++) {
		struct vbuf b = {(u64)tmp, 64 - got, 1};
		long n = vq_request(d, &d->vq[0], &b, 1, "rng");
		if (n < 0)
			return -1;
		if (n > 64 - got) {
			kprintf("rng: device wrote %ld bytes into %u\n", n, 64 - got);
			return -1;
		}
		memcpy(out + got, tmp, (size_t)n);
		got += (u32)n;
	}
	if (got < 64) {
		print("rng: device keeps returning nothing\n");
		return -1;
	}
	print("rng: ");
	for (unsigned i = 0; i < 64; i++)
		kprintf("%02x", out[i]);
	print("\n");
	return 0;
}

static int do_rng(void)
{
	struct vdev *d = find_dev(VIRTIO_ID_RNG);

	if (!d || vdev_init(d, 0, 1) || rng_fill(d, rng_buf[0]) || rng_fill(d, rng_buf[1]))
		return 1;
	for (unsigned k = 0; k < 2; k++) {
		unsigned i = 0;
		while (i < 64 && !rng_buf[k][i])
			i++;
		if (i == 64) {
			print("rng: all zero\n");
			return 1;
		}
	}
	if (!memcmp(rng_buf[0], rng_buf[1], 64)) {
		print("rng: two draws are the same\n");
		return 1;
	}
	print("rng: ok\n");
	return 0;
}

/* ---- bench: round trips timed by the host from the two lines ---- */

/* kind=pio: n writes to an unclaimed port (a plain exit to the monitor
 * and back); kind=rng: n one-byte rng requests, each a whole round trip
 * (kick, the vmm thread fills it, used ring, interrupt status). */
static int do_bench(void)
{
	static u8 byte;
	u64 n = arg_u64("n", 1000);

	if (arg_is("kind", "pio", 0)) {
		print("bench: start\n");
		for (u64 i = 0; i < n; i++)
			outb(0x80, 0);
		kprintf("bench: done %lu\n", n);
		return 0;
	}
	if (arg_is("kind", "blkw", 0)) { /* n 4 KiB writes in the first MiB, a line; again */
		struct vdev *b = find_dev(VIRTIO_ID_BLOCK);
		if (!b || vdev_init(b, BLK_WANTED, 1))
			return 1;
		for (;;) {
			for (u64 i = 0; i < n; i++)
				if (blk_req(b, VIRTIO_BLK_T_OUT, (i % 256) * 8, blk_data, 4096))
					return 1;
			kprintf("bench: done %lu\n", n);
		}
	}
	struct vdev *d = find_dev(VIRTIO_ID_RNG);
	if (!d || vdev_init(d, 0, 1))
		return 1;
	print("bench: start\n");
	for (u64 i = 0; i < n; i++) {
		struct vbuf b = {(u64)&byte, 1, 1};
		if (vq_request(d, &d->vq[0], &b, 1, "rng") != 1)
			return 1;
	}
	kprintf("bench: done %lu\n", n);
	return 0;
}

/* ---- hostile: what a broken driver does; the device must survive ---- */

#define ADDR_BEYOND_RAM 0x300000000ULL /* 12 GiB */
#define ADDR_IN_HOLE 0xd0000000ULL     /* between 3 GiB and 4 GiB */

/* The device kinds a hostile case can target: queues to set up, features,
 * and the slot of the queue the requests go to. */
struct target {
	u32 id;
	unsigned nq, slot;
	u64 wanted;
};

static u8 hostile_rng[64];

/* A good request's chain for t into b; its length. */
static unsigned good_chain(const struct target *t, struct vbuf *b)
{
	if (t->id == VIRTIO_ID_BLOCK) {
		blk_hdr = (struct blk_hdr){.type = VIRTIO_BLK_T_IN};
		blk_status = 0xff;
		b[0] = (struct vbuf){(u64)&blk_hdr, sizeof(blk_hdr), 0};
		b[1] = (struct vbuf){(u64)blk_data, SECTOR, 1};
		b[2] = (struct vbuf){(u64)&blk_status, 1, 1};
		return 3;
	}
	if (t->id == VIRTIO_ID_RNG) {
		b[0] = (struct vbuf){(u64)hostile_rng, sizeof(hostile_rng), 1};
		return 1;
	}
	memset(net_tx, 0, NET_HDR + 60); /* net: a zero frame to 00:00:00:00:00:00 */
	net_tx[NET_HDR + 12] = ETHERTYPE_TEST >> 8;
	net_tx[NET_HDR + 13] = ETHERTYPE_TEST & 0xff;
	b[0] = (struct vbuf){(u64)net_tx, NET_HDR + 60, 0};
	return 1;
}

/* One good request after the recovery: it must complete (blk: status OK). */
static int good_request(struct vdev *d, const struct target *t)
{
	struct vbuf b[3];
	unsigned n = good_chain(t, b);
	long len = vq_request(d, &d->vq[t->slot], b, n, "hostile");

	if (len < 0)
		return -1;
	if (t->id == VIRTIO_ID_BLOCK && blk_status != VIRTIO_BLK_S_OK) {
		kprintf("hostile: read of sector 0: status %u\n", blk_status);
		return -1;
	}
	return 0;
}

enum reaction { NO_REACTION, NEEDS_RESET, COMPLETED };

/* Waits up to ms for DEVICE_NEEDS_RESET or a used element on q. */
static enum reaction watch(struct vdev *d, struct vq *q, unsigned ms)
{
	u64 end = tsc_deadline(ms);

	do {
		if (vdev_read(d, VIRTIO_MMIO_STATUS) & VIRTIO_STATUS_NEEDS_RESET)
			return NEEDS_RESET;
		if (q && q->used->idx != q->last_used)
			return COMPLETED;
		cpu_relax();
	} while (!tsc_passed(end));
	return NO_REACTION;
}

/* Queue 7 (none of ours) and a queue made not ready: both to be ignored. */
static int hostile_unconfigured(struct vdev *d, const struct target *t)
{
	vdev_write(d, VIRTIO_MMIO_QUEUE_NOTIFY, 7);
	vdev_write(d, VIRTIO_MMIO_QUEUE_SEL, d->vq[t->slot].index);
	vdev_write(d, VIRTIO_MMIO_QUEUE_READY, 0);
	vdev_write(d, VIRTIO_MMIO_QUEUE_NOTIFY, d->vq[t->slot].index);
	if (watch(d, NULL, 300) == NEEDS_RESET) {
		print("hostile: unconfigured: needs reset (expected: ignored)\n");
		return -1;
	}
	print("hostile: unconfigured: ignored\n");
	return 0;
}

/* The request queue's descriptor table beyond RAM, then QueueReady=1: the
 * device should refuse (QueueReady reads 0) or need a reset. */
static int hostile_ringoob(struct vdev *d, const struct target *t)
{
	int ready = 0;

	if (vdev_begin(d, t->wanted))
		return -1;
	for (unsigned i = 0; i < t->nq; i++) {
		int r = vdev_setup_queue(d, i, i, i == t->slot ? ADDR_BEYOND_RAM : 0);
		if (r < 0)
			return -1;
		if (i == t->slot)
			ready = r;
	}
	u32 st = vdev_read(d, VIRTIO_MMIO_STATUS);
	kprintf("hostile: ringoob: QueueReady %d, status 0x%x\n", ready, st);
	if (st & VIRTIO_STATUS_NEEDS_RESET) {
		print("hostile: ringoob: needs reset\n");
		return 0;
	}
	if (!ready) {
		print("hostile: ringoob: refused\n");
		return 0;
	}
	print("hostile: ringoob: accepted (neither refused nor needs reset)\n");
	return -1;
}

/* Cases that send one bad request on the request queue. */
static int hostile_request(struct vdev *d, const struct target *t, const char *c)
{
	struct vq *q = &d->vq[t->slot];
	volatile struct vring_desc *desc = q->desc;
	struct vbuf b[3];
	unsigned n = good_chain(t, b), data = n > 1 ? 1 : 0;

	vq_add(q, 0, b, n);
	if (!strcmp(c, "loop")) { /* 0 -> 1 -> 1 -> ... */
		if (n == 1)
			desc[1] = desc[0];
		desc[0].flags |= VRING_DESC_F_NEXT;
		desc[0].next = 1;
		desc[1].flags |= VRING_DESC_F_NEXT;
		desc[1].next = 1;
	} else if (!strcmp(c, "oob")) {
		desc[data].addr = ADDR_BEYOND_RAM;
	} else if (!strcmp(c, "hole")) {
		desc[data].addr = ADDR_IN_HOLE;
	} else if (!strcmp(c, "huge")) {
		desc[data].len = 0xfffffff0;
	} else if (!strcmp(c, "badnext")) {
		desc[0].flags |= VRING_DESC_F_NEXT;
		desc[0].next = VQ_NUM + 3;
	} else if (!strcmp(c, "wrongdir")) { /* blk: header writable, status readable */
		for (unsigned i = 0; i < n; i++)
			desc[i].flags ^= VRING_DESC_F_WRITE;
	} else if (!strcmp(c, "availjump")) {
		q->avail_idx += VQ_NUM + 4; /* VQ_NUM + 5 ahead of the device */
	} else if (!strcmp(c, "badhead")) {
		q->avail->ring[(u16)(q->avail_idx - 1) % VQ_NUM] = VQ_NUM + 2;
	} else {
		kprintf("hostile: unknown case %s (loop oob hole huge badnext wrongdir availjump "
			"badhead unconfigured ringoob)\n", c);
		return -1;
	}
	vq_publish(q);
	vq_notify(d, q);

	switch (watch(d, q, 2000)) {
	case NEEDS_RESET:
		kprintf("hostile: %s: needs reset\n", c);
		return 0;
	case COMPLETED:
		kprintf("hostile: %s: completed without needs-reset (used len %u", c,
			q->used->ring[q->last_used % VQ_NUM].len);
		if (t->id == VIRTIO_ID_BLOCK)
			kprintf(", blk status 0x%x", blk_status);
		print(")\n");
		return -1;
	default:
		kprintf("hostile: %s: no reaction in 2 s (status 0x%x)\n", c,
			vdev_read(d, VIRTIO_MMIO_STATUS));
		return -1;
	}
}

static int do_hostile(void)
{
	static const struct target targets[] = {
	    {VIRTIO_ID_BLOCK, 1, 0, BLK_WANTED},
	    {VIRTIO_ID_NET, 2, 1, 1ULL << VIRTIO_NET_F_MAC},
	    {VIRTIO_ID_RNG, 1, 0, 0},
	};
	const struct target *t = &targets[arg_is("dev", "net", 0) ? 1 : arg_is("dev", "rng", 0) ? 2 : 0];
	const char *arg = cmdline_arg("case");
	char c[16];
	unsigned n = 0;

	while (arg && arg[n] && arg[n] != ' ' && n < sizeof(c) - 1) {
		c[n] = arg[n];
		n++;
	}
	c[n] = 0;
	struct vdev *d = find_dev(t->id);
	if (!d)
		return 1;
	int bad;
	if (!strcmp(c, "ringoob")) {
		bad = hostile_ringoob(d, t);
	} else {
		if (vdev_init(d, t->wanted, t->nq))
			return 1;
		bad = !strcmp(c, "unconfigured") ? hostile_unconfigured(d, t)
						 : hostile_request(d, t, c);
	}
	/* Whatever happened: reset, start again, one good request. */
	if (vdev_init(d, t->wanted, t->nq) || good_request(d, t)) {
		kprintf("hostile: %s: not recovered\n", c);
		return 1;
	}
	kprintf("hostile: %s: recovered\n", c);
	return bad ? 1 : 0;
}

int main(void)
{
	ndevs = vdev_discover(devs, VDEV_MAX);
	if (arg_is("test", "probe", 1))
		return do_probe();
	if (arg_is("test", "blk", 0))
		return do_blk();
	if (arg_is("test", "blkloop", 0))
		return do_blkloop();
	if (arg_is("test", "net", 0))
		return do_net();
	if (arg_is("test", "netloop", 0))
		return do_netloop();
	if (arg_is("test", "rng", 0))
		return do_rng();
	if (arg_is("test", "vsock", 0))
		return do_vsock();
	if (arg_is("test", "bench", 0))
		return do_bench();
	if (arg_is("test", "blkpattern", 0))
		return do_blkpattern();
	if (arg_is("test", "hostile", 0))
		return do_hostile();
	print("virtio: unknown test= (probe, blk, blkloop, net, netloop, rng, vsock, bench, "
	      "blkpattern, hostile)\n");
	return 1;
}
