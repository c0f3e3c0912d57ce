/* The test guests' polling virtio-mmio driver; see virtio_drv.h.  Ring-0
 * code is emulated on this host (~200 ns an instruction): loops stay short
 * and the rings small. */
#include "virtio_drv.h"

#define barrier() __asm__ volatile("" ::: "memory")

/* ---- time ---- */

/* TSC ticks per millisecond: CPUID 0x15 (crystal ratio) or 0x16 (base
 * MHz) where offered, else 3 GHz (deadlines then run 0.3-1.5x long at
 * 2-10 GHz, which is fine for "a few seconds"). */
static u64 tsc_per_ms(void)
{
	static u64 cached;
	u32 a, b, c, d, max;

	if (cached)
		return cached;
	cached = 3000000;
	cpuid(0, &max, &b, &c, &d);
	if (max >= 0x15) {
		cpuid(0x15, &a, &b, &c, &d);
		if (a && b && c) {
			cached = (u64)c * b / a / 1000;
			return cached;
		}
	}
	if (max >= 0x16) {
		cpuid(0x16, &a, &b, &c, &d);
		if (a & 0xffff)
			cached = (u64)(a & 0xffff) * 1000;
	}
	return cached;
}

u64 tsc_deadline(unsigned ms)
{
	return rdtsc() + tsc_per_ms() * ms;
}

int tsc_passed(u64 deadline)
{
	return (long long)(rdtsc() - deadline) >= 0;
}

/* ---- discovery ---- */

const char *vdev_name(u32 id)
{
	switch (id) {
	case VIRTIO_ID_NET:
		return "net";
	case VIRTIO_ID_BLOCK:
		return "block";
	case VIRTIO_ID_RNG:
		return "rng";
	case VIRTIO_ID_VSOCK:
		return "vsock";
	}
	return "unknown";
}

/* Number at *pp: 0x-hex or decimal, then an optional K or M (sizes).
 * Advances *pp; -1 when there are no digits. */
static int parse_num(const char **pp, u64 *out, int suffix)
{
	const char *p = *pp;
	u64 v = 0;
	int digits = 0;

	if (p[0] == '0' && (p[1] == 'x' || p[1] == 'X')) {
		for (p += 2;; p++, digits++) {
			char c = *p;
			unsigned x;
			if (c >= '0' && c <= '9')
				x = (unsigned)(c - '0');
			else if (c >= 'a' && c <= 'f')
				x = (unsigned)(c - 'a' + 10);
			else if (c >= 'A' && c <= 'F')
				x = (unsigned)(c - 'A' + 10);
			else
				break;
			v = v << 4 | x;
		}
	} else {
		for (; *p >= '0' && *p <= '9'; p++, digits++)
			v = v * 10 + (u64)(*p - '0');
	}
	if (!digits)
		return -1;
	if (suffix && (*p == 'K' || *p == 'k')) {
		v <<= 10;
		p++;
	} else if (suffix && (*p == 'M' || *p == 'm')) {
		v <<= 20;
		p++;
	}
	*pp = p;
	*out = v;
	return 0;
}

/* One `SIZE@ADDR:IRQ[:ID]` value (Linux's virtio_mmio.device= syntax). */
static int parse_device(const char *p, struct vdev *d)
{
	u64 size, addr, irq;

	if (parse_num(&p, &size, 1) || *p++ != '@' || parse_num(&p, &addr, 0) || *p++ != ':' ||
	    parse_num(&p, &irq, 0))
		return -1;
	if (*p == ':') { /* optional first platform device id: ignored */
		u64 ignored;
		p++;
		if (parse_num(&p, &ignored, 0))
			return -1;
	}
	if (*p && *p != ' ')
		return -1;
	if (size < VIRTIO_MMIO_CONFIG || addr >= (4ULL << 30) || (addr & 3))
		return -1; /* start.S maps 0-4 GiB only */
	memset(d, 0, sizeof(*d));
	d->base = addr;
	d->size = (u32)size;
	d->irq = (u32)irq;
	return 0;
}

unsigned vdev_discover(struct vdev *devs, unsigned max)
{
	static const char key[] = "virtio_mmio.device=";
	const size_t klen = sizeof(key) - 1;
	unsigned n = 0;

	for (const char *p = cmdline(); *p;) {
		while (*p == ' ')
			p++;
		size_t i = 0;
		while (i < klen && p[i] == key[i])
			i++;
		if (i == klen && n == max) {
			kprintf("virtio: more than %u devices, ignoring the rest\n", max);
		} else if (i == klen) {
			struct vdev *d = &devs[n];
			if (parse_device(p + klen, d)) {
				kprintf("virtio: cannot parse ");
				for (const char *q = p; *q && *q != ' '; q++)
					serial_putc(*q);
				serial_putc('\n');
			} else if (vdev_read(d, VIRTIO_MMIO_MAGIC) != VIRTIO_MMIO_MAGIC_VALUE) {
				kprintf("virtio: 0x%lx: bad magic 0x%x\n", d->base,
					vdev_read(d, VIRTIO_MMIO_MAGIC));
			} else {
				d->version = vdev_read(d, VIRTIO_MMIO_VERSION);
				d->id = vdev_read(d, VIRTIO_MMIO_DEVICE_ID);
				n++;
			}
		}
		while (*p && *p != ' ')
			p++;
	}
	return n;
}

/* ---- registers ---- */

u32 vdev_read(const struct vdev *d, u32 off)
{
	return *(volatile u32 *)(d->base + off);
}

void vdev_write(const struct vdev *d, u32 off, u32 v)
{
	*(volatile u32 *)(d->base + off) = v;
}

u8 vdev_config8(const struct vdev *d, u32 off)
{
	return *(volatile u8 *)(d->base + VIRTIO_MMIO_CONFIG + off);
}

u32 vdev_config32(const struct vdev *d, u32 off)
{
	return vdev_read(d, VIRTIO_MMIO_CONFIG + off);
}

/* §2.5.1: a field wider than 32 bits may change between its halves; the
 * generation counter says when to read again. */
u64 vdev_config64(const struct vdev *d, u32 off)
{
	u32 gen, lo, hi;
	int tries = 0;

	do {
		gen = vdev_read(d, VIRTIO_MMIO_CONFIG_GENERATION);
		lo = vdev_config32(d, off);
		hi = vdev_config32(d, off + 4);
	} while (gen != vdev_read(d, VIRTIO_MMIO_CONFIG_GENERATION) && ++tries < 10);
	return (u64)hi << 32 | lo;
}

/* ---- initialisation ---- */

void vdev_reset(struct vdev *d)
{
	vdev_write(d, VIRTIO_MMIO_STATUS, 0);
	u64 end = tsc_deadline(1000);
	while (vdev_read(d, VIRTIO_MMIO_STATUS) != 0 && !tsc_passed(end))
		cpu_relax();
	d->nqueues = 0;
}

static void set_status(struct vdev *d, u32 bits)
{
	vdev_write(d, VIRTIO_MMIO_STATUS, vdev_read(d, VIRTIO_MMIO_STATUS) | bits);
}

int vdev_begin(struct vdev *d, u64 wanted)
{
	if (d->version != 2) {
		kprintf("virtio: 0x%lx: version %u (legacy) not supported, need version 2\n",
			d->base, d->version);
		return -1;
	}
	vdev_reset(d);
	set_status(d, VIRTIO_STATUS_ACKNOWLEDGE);
	set_status(d, VIRTIO_STATUS_DRIVER);

	vdev_write(d, VIRTIO_MMIO_DEVICE_FEATURES_SEL, 0);
	u64 f = vdev_read(d, VIRTIO_MMIO_DEVICE_FEATURES);
	vdev_write(d, VIRTIO_MMIO_DEVICE_FEATURES_SEL, 1);
	f |= (u64)vdev_read(d, VIRTIO_MMIO_DEVICE_FEATURES) << 32;
	d->features = f;
	if (!(f & (1ULL << VIRTIO_F_VERSION_1))) {
		kprintf("virtio: 0x%lx: VIRTIO_F_VERSION_1 not offered (features 0x%lx)\n",
			d->base, f);
		set_status(d, VIRTIO_STATUS_FAILED);
		return -1;
	}
	d->accepted = f & (wanted | 1ULL << VIRTIO_F_VERSION_1);
	vdev_write(d, VIRTIO_MMIO_DRIVER_FEATURES_SEL, 0);
	vdev_write(d, VIRTIO_MMIO_DRIVER_FEATURES, (u32)d->accepted);
	vdev_write(d, VIRTIO_MMIO_DRIVER_FEATURES_SEL, 1);
	vdev_write(d, VIRTIO_MMIO_DRIVER_FEATURES, (u32)(d->accepted >> 32));

	set_status(d, VIRTIO_STATUS_FEATURES_OK);
	if (!(vdev_read(d, VIRTIO_MMIO_STATUS) & VIRTIO_STATUS_FEATURES_OK)) {
		kprintf("virtio: 0x%lx: device refused features 0x%lx\n", d->base, d->accepted);
		set_status(d, VIRTIO_STATUS_FAILED);
		return -1;
	}
	return 0;
}

/* The rings of one queue; the pool holds one device's queues. */
struct vq_mem {
	struct vring_desc desc[VQ_NUM];   /* 16-byte aligned (§2.7) */
	struct vring_avail avail;         /* 2-byte */
	u16 pad;
	struct vring_used used;           /* 4-byte */
} __attribute__((aligned(4096)));

static struct vq_mem vq_pool[VDEV_MAX_QUEUES];

static void write64(struct vdev *d, u32 lo_off, u64 v)
{
	vdev_write(d, lo_off, (u32)v);
	vdev_write(d, lo_off + 4, (u32)(v >> 32));
}

int vdev_setup_queue(struct vdev *d, unsigned slot, unsigned index, u64 desc_override)
{
	struct vq_mem *m = &vq_pool[slot];
	struct vq *q = &d->vq[slot];

	vdev_write(d, VIRTIO_MMIO_QUEUE_SEL, index);
	if (vdev_read(d, VIRTIO_MMIO_QUEUE_READY)) {
		kprintf("virtio: 0x%lx: queue %u already ready after reset\n", d->base, index);
		return -1;
	}
	u32 max = vdev_read(d, VIRTIO_MMIO_QUEUE_NUM_MAX);
	if (max < VQ_NUM) {
		kprintf("virtio: 0x%lx: queue %u: QueueNumMax %u < %u\n", d->base, index, max,
			VQ_NUM);
		return -1;
	}
	memset(m, 0, sizeof(*m)); /* ~0.5 KiB: fresh rings after a reset */
	*q = (struct vq){.index = index, .desc = m->desc, .avail = &m->avail, .used = &m->used};

	vdev_write(d, VIRTIO_MMIO_QUEUE_NUM, VQ_NUM);
	write64(d, VIRTIO_MMIO_QUEUE_DESC_LOW, desc_override ? desc_override : (u64)m->desc);
	write64(d, VIRTIO_MMIO_QUEUE_DRIVER_LOW, (u64)&m->avail);
	write64(d, VIRTIO_MMIO_QUEUE_DEVICE_LOW, (u64)&m->used);
	barrier();
	vdev_write(d, VIRTIO_MMIO_QUEUE_READY, 1);
	if (slot >= d->nqueues)
		d->nqueues = slot + 1;
	return desc_override ? (int)vdev_read(d, VIRTIO_MMIO_QUEUE_READY) : 0;
}

void vdev_driver_ok(struct vdev *d)
{
	set_status(d, VIRTIO_STATUS_DRIVER_OK);
}

int vdev_init(struct vdev *d, u64 wanted, unsigned nq)
{
	if (vdev_begin(d, wanted))
		return -1;
	for (unsigned i = 0; i < nq; i++)
		if (vdev_setup_queue(d, i, i, 0))
			return -1;
	vdev_driver_ok(d);
	u32 st = vdev_read(d, VIRTIO_MMIO_STATUS);
	if (st & (VIRTIO_STATUS_NEEDS_RESET | VIRTIO_STATUS_FAILED) ||
	    !(st & VIRTIO_STATUS_DRIVER_OK)) {
		kprintf("virtio: 0x%lx: status 0x%x after DRIVER_OK\n", d->base, st);
		return -1;
	}
	return 0;
}

/* ---- queues ---- */

void vq_add(struct vq *q, unsigned head, const struct vbuf *bufs, unsigned n)
{
	for (unsigned i = 0; i < n; i++) {
		unsigned k = (head + i) % VQ_NUM;
		q->desc[k].addr = bufs[i].addr;
		q->desc[k].len = bufs[i].len;
		q->desc[k].flags = (u16)((i + 1 < n ? VRING_DESC_F_NEXT : 0) |
					 (bufs[i].writable ? VRING_DESC_F_WRITE : 0));
		q->desc[k].next = (u16)((k + 1) % VQ_NUM);
	}
	q->avail->ring[q->avail_idx % VQ_NUM] = (u16)(head % VQ_NUM);
	q->avail_idx++;
}

void vq_publish(struct vq *q)
{
	barrier(); /* descriptors and ring entries before the index (x86: TSO) */
	q->avail->idx = q->avail_idx;
	barrier();
}

void vq_notify(struct vdev *d, struct vq *q)
{
	vdev_write(d, VIRTIO_MMIO_QUEUE_NOTIFY, q->index);
}

int vq_poll(struct vq *q, u32 *id, u32 *len)
{
	if (q->used->idx == q->last_used)
		return 0;
	barrier(); /* the index before the entry it covers */
	volatile struct vring_used_elem *e = &q->used->ring[q->last_used % VQ_NUM];
	*id = e->id;
	*len = e->len;
	q->last_used++;
	return 1;
}

int vq_wait(struct vq *q, u32 *id, u32 *len, unsigned ms)
{
	u64 end = tsc_deadline(ms);

	while (!vq_poll(q, id, len)) {
		if (tsc_passed(end))
			return -1;
		cpu_relax();
	}
	return 0;
}

u32 vdev_ack_interrupt(struct vdev *d, const char *who)
{
	/* The device may set the bit just after it updates the used ring. */
	u64 end = tsc_deadline(100);
	u32 isr;

	while (!((isr = vdev_read(d, VIRTIO_MMIO_INTERRUPT_STATUS)) & 1) && !tsc_passed(end))
		cpu_relax();
	if (!(isr & 1))
		kprintf("%s: InterruptStatus 0x%x: used-buffer bit not set\n", who, isr);
	if (isr)
		vdev_write(d, VIRTIO_MMIO_INTERRUPT_ACK, isr);
	return isr;
}

long vq_request(struct vdev *d, struct vq *q, const struct vbuf *bufs, unsigned n,
		const char *who)
{
	u32 id, len;

	vq_add(q, 0, bufs, n);
	vq_publish(q);
	vq_notify(d, q);
	if (vq_wait(q, &id, &len, 5000)) {
		kprintf("%s: timeout waiting for queue %u (status 0x%x)\n", who, q->index,
			vdev_read(d, VIRTIO_MMIO_STATUS));
		return -1;
	}
	if (id != 0)
		kprintf("%s: used id %u, expected 0\n", who, id);
	vdev_ack_interrupt(d, who);
	return len;
}
