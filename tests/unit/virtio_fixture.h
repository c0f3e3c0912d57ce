/* Shared by the virtio device unit tests: a tiny guest driver that talks
 * to a struct virtio_dev only through virtio_mmio_access(), as a guest's
 * MMIO accesses would (virtio 1.2 §4.2.2 registers, §3.1.1 init), with
 * its split rings (§2.7) in a fake guest memory.  The device runs with
 * vm_fd = -1: no ioeventfd, so a QueueNotify write is served before the
 * write returns, and DRIVER_OK / reset run synchronously too. */
#ifndef EMBER_TEST_VIRTIO_FIXTURE_H
#define EMBER_TEST_VIRTIO_FIXTURE_H

#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "base/guest_mem.h"
#include "virtio/virtio.h"

#define VF_MiB (1024ULL * 1024)
#define VF_RAM (4 * VF_MiB)
/* Queue 0's rings at 256 entries (desc 4 KiB, avail 518 B, used 2 KiB);
 * a second queue's just above; buffers from VF_BUF on. */
#define VF_DESC 0x1000ULL
#define VF_AVAIL 0x2000ULL
#define VF_USED 0x3000ULL
#define VF_DESC1 0x5000ULL
#define VF_AVAIL1 0x6000ULL
#define VF_USED1 0x7000ULL
#define VF_BUF 0x10000ULL

/* §4.2.2 register offsets (virtio/mmio.c keeps its own private). */
enum {
	VM_MAGIC = 0x000,
	VM_VERSION = 0x004,
	VM_DEVICE_ID = 0x008,
	VM_VENDOR_ID = 0x00c,
	VM_DEVICE_FEATURES = 0x010,
	VM_DEVICE_FEATURES_SEL = 0x014,
	VM_DRIVER_FEATURES = 0x020,
	VM_DRIVER_FEATURES_SEL = 0x024,
	VM_QUEUE_SEL = 0x030,
	VM_QUEUE_NUM_MAX = 0x034,
	VM_QUEUE_NUM = 0x038,
	VM_QUEUE_READY = 0x044,
	VM_QUEUE_NOTIFY = 0x050,
	VM_INTERRUPT_STATUS = 0x060,
	VM_INTERRUPT_ACK = 0x064,
	VM_STATUS = 0x070,
	VM_QUEUE_DESC_LOW = 0x080,
	VM_QUEUE_DESC_HIGH = 0x084,
	VM_QUEUE_DRIVER_LOW = 0x090,
	VM_QUEUE_DRIVER_HIGH = 0x094,
	VM_QUEUE_DEVICE_LOW = 0x0a0,
	VM_QUEUE_DEVICE_HIGH = 0x0a4,
	VM_CONFIG_GENERATION = 0x0fc,
	VM_CONFIG = 0x100,
};

#define VF_STATUS_OK                                                                               \
	(VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER | VIRTIO_STATUS_FEATURES_OK |            \
	 VIRTIO_STATUS_DRIVER_OK)

/* The driver's side of one queue. */
struct vf_queue {
	uint64_t desc, avail, used;
	uint16_t num;
	uint16_t next_desc; /* next descriptor to fill (wraps at num) */
	uint16_t avail_idx; /* the driver's copy of avail->idx */
	uint16_t used_seen; /* used entries consumed */
};

struct vf {
	struct gmem mem;
	struct virtio_dev dev;
	struct vf_queue q[VIRTIO_MAX_QUEUES];
};

/* One buffer of a chain: readable (driver-written) or device-writable. */
struct vf_seg {
	uint64_t gpa;
	uint32_t len;
	bool write;
};

static inline uint8_t *vf_at(struct vf *f, uint64_t gpa)
{
	return f->mem.base + gpa; /* below 3 GiB: gpa is the offset */
}

static inline uint32_t vf_rd(struct vf *f, uint64_t off)
{
	uint32_t v = 0;
	virtio_mmio_access(&f->dev, off, (uint8_t *)&v, 4, false);
	return v;
}

static inline void vf_wr(struct vf *f, uint64_t off, uint32_t v)
{
	virtio_mmio_access(&f->dev, off, (uint8_t *)&v, 4, true);
}

static inline uint64_t vf_device_features(struct vf *f)
{
	vf_wr(f, VM_DEVICE_FEATURES_SEL, 0);
	uint64_t lo = vf_rd(f, VM_DEVICE_FEATURES);
	vf_wr(f, VM_DEVICE_FEATURES_SEL, 1);
	return lo | (uint64_t)vf_rd(f, VM_DEVICE_FEATURES) << 32;
}

/* §3.1.1 steps 1-6: reset, ACKNOWLEDGE, DRIVER, write `features`,
 * FEATURES_OK; returns Status as read back (FEATURES_OK set if taken). */
static inline uint32_t vf_negotiate(struct vf *f, uint64_t features)
{
	vf_wr(f, VM_STATUS, 0);
	memset(f->q, 0, sizeof(f->q));
	vf_wr(f, VM_STATUS, VIRTIO_STATUS_ACKNOWLEDGE);
	vf_wr(f, VM_STATUS, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER);
	vf_wr(f, VM_DRIVER_FEATURES_SEL, 0);
	vf_wr(f, VM_DRIVER_FEATURES, (uint32_t)features);
	vf_wr(f, VM_DRIVER_FEATURES_SEL, 1);
	vf_wr(f, VM_DRIVER_FEATURES, (uint32_t)(features >> 32));
	vf_wr(f, VM_STATUS,
	      VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER | VIRTIO_STATUS_FEATURES_OK);
	return vf_rd(f, VM_STATUS);
}

/* Write queue qi's registers (size and ring addresses), then QueueReady. */
static inline void vf_queue_regs(struct vf *f, unsigned qi, uint32_t num, uint64_t desc,
				 uint64_t avail, uint64_t used)
{
	vf_wr(f, VM_QUEUE_SEL, qi);
	vf_wr(f, VM_QUEUE_NUM, num);
	vf_wr(f, VM_QUEUE_DESC_LOW, (uint32_t)desc);
	vf_wr(f, VM_QUEUE_DESC_HIGH, (uint32_t)(desc >> 32));
	vf_wr(f, VM_QUEUE_DRIVER_LOW, (uint32_t)avail);
	vf_wr(f, VM_QUEUE_DRIVER_HIGH, (uint32_t)(avail >> 32));
	vf_wr(f, VM_QUEUE_DEVICE_LOW, (uint32_t)used);
	vf_wr(f, VM_QUEUE_DEVICE_HIGH, (uint32_t)(used >> 32));
	vf_wr(f, VM_QUEUE_READY, 1);
}

/* Set queue qi up at the fixture's addresses with `num` entries: rings
 * zeroed, the driver's cursors at 0. */
static inline void vf_queue(struct vf *f, unsigned qi, uint16_t num)
{
	struct vf_queue *q = &f->q[qi];
	*q = (struct vf_queue){.desc = qi ? VF_DESC1 : VF_DESC,
			       .avail = qi ? VF_AVAIL1 : VF_AVAIL,
			       .used = qi ? VF_USED1 : VF_USED,
			       .num = num};
	memset(vf_at(f, q->desc), 0, 16 * (size_t)num);
	memset(vf_at(f, q->avail), 0, 6 + 2 * (size_t)num);
	memset(vf_at(f, q->used), 0, 6 + 8 * (size_t)num);
	vf_queue_regs(f, qi, num, q->desc, q->avail, q->used);
}

/* The whole §3.1.1 sequence: every offered feature taken, queues
 * 0..nr_queues-1 at 256 entries, DRIVER_OK.  Returns Status. */
static inline uint32_t vf_start(struct vf *f)
{
	uint32_t s = vf_negotiate(f, vf_device_features(f));
	for (unsigned qi = 0; qi < f->dev.ops->nr_queues && qi < 2; qi++)
		vf_queue(f, qi, 256);
	vf_wr(f, VM_STATUS, s | VIRTIO_STATUS_DRIVER_OK);
	return vf_rd(f, VM_STATUS);
}

static inline void vf_desc(struct vf *f, unsigned qi, uint16_t i, uint64_t addr, uint32_t len,
			   uint16_t flags, uint16_t next)
{
	uint8_t *d = vf_at(f, f->q[qi].desc + 16 * (uint64_t)i);
	memcpy(d, &addr, 8);
	memcpy(d + 8, &len, 4);
	memcpy(d + 12, &flags, 2);
	memcpy(d + 14, &next, 2);
}

/* Make chain `head` available on queue qi (§2.7.13), without notifying. */
static inline void vf_offer(struct vf *f, unsigned qi, uint16_t head)
{
	struct vf_queue *q = &f->q[qi];
	uint8_t *avail = vf_at(f, q->avail);
	memcpy(avail + 4 + 2 * (size_t)(q->avail_idx % q->num), &head, 2);
	q->avail_idx++;
	memcpy(avail + 2, &q->avail_idx, 2);
}

static inline void vf_notify(struct vf *f, unsigned qi)
{
	vf_wr(f, VM_QUEUE_NOTIFY, qi);
}

/* Lay the segments out as one chain from the queue's next free
 * descriptor on; returns its head. */
static inline uint16_t vf_chain(struct vf *f, unsigned qi, const struct vf_seg *s, unsigned n)
{
	struct vf_queue *q = &f->q[qi];
	uint16_t head = q->next_desc;
	for (unsigned k = 0; k < n; k++) {
		uint16_t i = q->next_desc, next = (uint16_t)((i + 1) % q->num);
		uint16_t flags = (uint16_t)((s[k].write ? VIRTQ_DESC_F_WRITE : 0) |
					    (k + 1 < n ? VIRTQ_DESC_F_NEXT : 0));
		vf_desc(f, qi, i, s[k].gpa, s[k].len, flags, next);
		q->next_desc = next;
	}
	return head;
}

/* Used entries the driver has not consumed yet. */
static inline uint16_t vf_used_pending(struct vf *f, unsigned qi)
{
	uint16_t idx;
	memcpy(&idx, vf_at(f, f->q[qi].used + 2), 2);
	return (uint16_t)(idx - f->q[qi].used_seen);
}

/* Take the next used entry: true with its id and len, false if none. */
static inline bool vf_take_used(struct vf *f, unsigned qi, uint32_t *id, uint32_t *len)
{
	struct vf_queue *q = &f->q[qi];
	if (!vf_used_pending(f, qi))
		return false;
	const uint8_t *e = vf_at(f, q->used + 4 + 8 * (uint64_t)(q->used_seen % q->num));
	memcpy(id, e, 4);
	memcpy(len, e + 4, 4);
	q->used_seen++;
	return true;
}

/* Submit one chain on queue qi and notify.  true when the device
 * returned exactly that chain, with *len its used length. */
static inline bool vf_submit(struct vf *f, unsigned qi, const struct vf_seg *s, unsigned n,
			     uint32_t *len)
{
	uint16_t head = vf_chain(f, qi, s, n);
	vf_offer(f, qi, head);
	vf_notify(f, qi);
	uint32_t id = UINT32_MAX, l = 0;
	if (!vf_take_used(f, qi, &id, &l))
		return false;
	if (len)
		*len = l;
	return id == head && !vf_used_pending(f, qi);
}

static inline bool vf_needs_reset(struct vf *f)
{
	return vf_rd(f, VM_STATUS) & VIRTIO_STATUS_NEEDS_RESET;
}

/* A device's counters as the metrics see them (virtio_dev_counters). */
struct vf_counters {
	const char *names[32];
	uint64_t values[32];
	unsigned n;
};

static inline void vf_counters_add(void *opaque, const char *name, uint64_t value)
{
	struct vf_counters *c = opaque;
	if (c->n < 32) {
		c->names[c->n] = name;
		c->values[c->n++] = value;
	}
}

static inline void vf_counters(struct virtio_dev *d, struct vf_counters *c)
{
	c->n = 0;
	virtio_dev_counters(d, vf_counters_add, c);
}

/* Counter `name` of d; UINT64_MAX when d has none by that name. */
static inline uint64_t vf_counter(struct virtio_dev *d, const char *name)
{
	struct vf_counters c;
	vf_counters(d, &c);
	for (unsigned i = 0; i < c.n; i++)
		if (strcmp(c.names[i], name) == 0)
			return c.values[i];
	return UINT64_MAX;
}

#endif
