/* Split virtqueues, device side (virtio 1.2 §2.7).  Layout in guest RAM:
 *   descriptor table  num x {u64 addr, u32 len, u16 flags, u16 next}
 *   available ring    u16 flags, u16 idx, u16 ring[num] (, u16 used_event)
 *   used ring         u16 flags, u16 idx, {u32 id, u32 len}[num] (, u16 avail_event)
 * Everything read from guest RAM is read once into a local and checked
 * there, so a driver changing it underneath cannot slip a value past a
 * check (no double fetch). */
#include <errno.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "virtio/virtqueue.h"

struct desc {
	uint64_t addr;
	uint32_t len;
	uint16_t flags;
	uint16_t next;
};
_Static_assert(sizeof(struct desc) == 16, "§2.7.5");

static size_t avail_size(uint16_t num)
{
	return 4 + 2 * (size_t)num + 2;
}

static size_t used_size(uint16_t num)
{
	return 4 + 8 * (size_t)num + 2;
}

/* Guest-shared 16-bit fields: one plain load each, never torn. */
static uint16_t load16(const void *p)
{
	return atomic_load_explicit((const _Atomic uint16_t *)p, memory_order_relaxed);
}

int vq_enable(struct vq *q, const struct gmem *mem, char *err, size_t errlen)
{
	int r = vq_map(q, mem, err, errlen);
	if (r)
		return r;
	/* A fresh queue starts at index 0 on both sides (§2.7.13). */
	q->s.next_avail = q->s.next_used = 0;
	memset(q->used_host, 0, 4);
	return 0;
}

int vq_map(struct vq *q, const struct gmem *mem, char *err, size_t errlen)
{
	uint16_t n = q->s.num;
	q->mem = mem;
	if (n == 0 || n > VQ_MAX_SIZE || (n & (n - 1))) {
		snprintf(err, errlen, "queue size %u is not a power of 2 in 1..%u", n, VQ_MAX_SIZE);
		return -EINVAL;
	}
	static const char *const what[] = {"descriptor table", "available ring", "used ring"};
	const uint64_t gpa[] = {q->s.desc, q->s.avail, q->s.used};
	const uint64_t align[] = {16, 2, 4};
	const size_t size[] = {16 * (size_t)n, avail_size(n), used_size(n)};
	void *host[3];
	for (int i = 0; i < 3; i++) {
		if (gpa[i] % align[i]) {
			snprintf(err, errlen, "%s at 0x%llx is not %llu-byte aligned", what[i],
				 (unsigned long long)gpa[i], (unsigned long long)align[i]);
			return -EINVAL;
		}
		host[i] = gmem_ptr(mem, gpa[i], size[i]);
		if (!host[i]) {
			snprintf(err, errlen, "%s at 0x%llx (%zu bytes) is not in guest RAM",
				 what[i], (unsigned long long)gpa[i], size[i]);
			return -EINVAL;
		}
	}
	q->desc_host = host[0];
	q->avail_host = host[1];
	q->used_host = host[2];
	return 0;
}

void vq_reset(struct vq *q)
{
	const struct gmem *mem = q->mem;
	memset(q, 0, sizeof(*q));
	q->mem = mem;
}

static uint16_t avail_idx(const struct vq *q)
{
	uint16_t idx = load16((const uint8_t *)q->avail_host + 2);
	/* Ring entries are read after the index (§2.7.13.4's barrier). */
	atomic_thread_fence(memory_order_acquire);
	return idx;
}

bool vq_has_avail(const struct vq *q)
{
	return q->avail_host && avail_idx(q) != q->s.next_avail;
}

bool vq_no_interrupt(const struct vq *q)
{
	/* The used index stored by vq_push() must be visible before the
	 * flags are read, or device and driver can each see the other's old
	 * value and the wake-up is lost (Linux vhost: smp_mb in
	 * vhost_notify). */
	atomic_thread_fence(memory_order_seq_cst);
	return load16(q->avail_host) & VIRTQ_AVAIL_F_NO_INTERRUPT;
}

static int bad(char *err, size_t errlen, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static int bad(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
	return -EINVAL;
}

int vq_pop(struct vq *q, struct vq_chain *c, char *err, size_t errlen)
{
	if (!q->avail_host)
		return bad(err, errlen, "queue is not enabled");
	uint16_t num = q->s.num;
	uint16_t idx = avail_idx(q);
	uint16_t pending = (uint16_t)(idx - q->s.next_avail);
	if (pending == 0)
		return 0;
	if (pending > num)
		return bad(err, errlen, "available index %u is %u ahead of the device (queue size %u)",
			   idx, pending, num);

	const uint16_t *ring = (const uint16_t *)((const uint8_t *)q->avail_host + 4);
	uint16_t head = load16(&ring[q->s.next_avail % num]);
	if (head >= num)
		return bad(err, errlen, "available ring slot %u names descriptor %u (queue size %u)",
			   q->s.next_avail % num, head, num);

	const struct desc *table = q->desc_host;
	uint16_t i = head;
	unsigned count = 0;
	uint64_t out = 0, in = 0;
	c->head = head;
	c->nr_out = c->nr_in = 0;
	for (;;) {
		struct desc d;
		memcpy(&d, &table[i], sizeof(d)); /* one fetch; checks use the copy */
		if (++count > num)
			return bad(err, errlen, "chain from descriptor %u loops or is longer than the "
						"queue (%u)", head, num);
		if (d.flags & VIRTQ_DESC_F_INDIRECT)
			return bad(err, errlen, "descriptor %u is indirect (not negotiated)", i);
		if (d.len == 0)
			return bad(err, errlen, "descriptor %u has length 0", i);
		uint8_t *p = gmem_ptr(q->mem, d.addr, d.len);
		if (!p)
			return bad(err, errlen, "descriptor %u: buffer 0x%llx+%u is not in guest RAM",
				   i, (unsigned long long)d.addr, d.len);
		struct vq_seg *s = &c->seg[c->nr_out + c->nr_in];
		s->p = p;
		s->len = d.len;
		if (d.flags & VIRTQ_DESC_F_WRITE) {
			/* The device may write it from now on: dirty (a snapshot
			 * or a migration round after this sees it). */
			gmem_mark(q->mem, p, d.len);
			c->nr_in++;
			in += d.len;
		} else {
			if (c->nr_in)
				return bad(err, errlen, "descriptor %u is driver-readable after a "
							"device-writable one", i);
			c->nr_out++;
			out += d.len;
		}
		if (out > UINT32_MAX || in > UINT32_MAX)
			return bad(err, errlen, "chain from descriptor %u is longer than 4 GiB", head);
		if (!(d.flags & VIRTQ_DESC_F_NEXT))
			break;
		if (d.next >= num)
			return bad(err, errlen, "descriptor %u: next %u is out of range (queue size %u)",
				   i, d.next, num);
		i = d.next;
	}
	c->out_len = (uint32_t)out;
	c->in_len = (uint32_t)in;
	q->s.next_avail++;
	return 1;
}

void vq_unpop(struct vq *q)
{
	q->s.next_avail--;
}

void vq_push(struct vq *q, const struct vq_chain *c, uint32_t written)
{
	uint8_t *used = q->used_host;
	uint16_t head = c->head;
	/* Marked at vq_pop and again now that the device is done: a dirty
	 * set fetched in between (a migration round on another thread) must
	 * not lose what the device wrote after it. */
	for (unsigned i = c->nr_out; i < c->nr_out + c->nr_in; i++)
		gmem_mark(q->mem, c->seg[i].p, c->seg[i].len);
	uint16_t slot = q->s.next_used % q->s.num;
	uint8_t *elem = used + 4 + 8 * (size_t)slot;
	uint32_t id = head;
	memcpy(elem, &id, 4);
	memcpy(elem + 4, &written, 4);
	gmem_mark(q->mem, elem, 8);
	gmem_mark(q->mem, used + 2, 2);
	q->s.next_used++;
	/* The element before the index (§2.7.8.2). */
	atomic_thread_fence(memory_order_release);
	atomic_store_explicit((_Atomic uint16_t *)(used + 2), q->s.next_used,
			      memory_order_relaxed);
}

/* Copy between buf and the chain's segments [first, first+n), from byte
 * off of that part: into the chain (to_chain) or out of it. */
static size_t copy(const struct vq_chain *c, unsigned first, unsigned n, size_t off,
		   uint8_t *buf, size_t len, bool to_chain)
{
	size_t done = 0;
	for (unsigned i = first; i < first + n && done < len; i++) {
		const struct vq_seg *s = &c->seg[i];
		if (off >= s->len) {
			off -= s->len;
			continue;
		}
		size_t k = s->len - off < len - done ? s->len - off : len - done;
		if (to_chain)
			memcpy(s->p + off, buf + done, k);
		else
			memcpy(buf + done, s->p + off, k);
		done += k;
		off = 0;
	}
	return done;
}

size_t vq_read(const struct vq_chain *c, size_t off, void *dst, size_t len)
{
	return copy(c, 0, c->nr_out, off, dst, len, false);
}

size_t vq_write(const struct vq_chain *c, size_t off, const void *src, size_t len)
{
	return copy(c, c->nr_out, c->nr_in, off, (uint8_t *)src, len, true);
}
