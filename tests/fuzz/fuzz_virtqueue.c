/* libFuzzer target for the split-virtqueue walker (virtio/virtqueue.c).
 *
 * The input is a queue configuration and a guest RAM image: the driver's
 * whole side of the queue.  Guest RAM is two 32 KiB regions in separate
 * heap blocks (so ASan sees any access that leaves a region) at GPA 0 and
 * 4 GiB.  The target enables the queue, then pops chains until the ring is
 * empty or broken, and checks each result against a reference walker
 * written here from §2.7: same verdict, same segments.  It also checks the
 * invariants any caller relies on (segments inside one RAM region, at most
 * num of them, totals that match), reads and writes every chain and
 * returns it on the used ring.  Writes land in guest RAM, rings included,
 * so later pops see a driver that changed the queue underneath.
 *
 *   input: u16 num  u16 cursor  u16 desc  u16 avail  u16 used  u8 ops  u8 off
 *          RAM image (region 0, then region 1)
 *   num:   bit 15 clear: 1 << (num % 9); set: num & 0x1ff as is (mostly bad)
 *   rings: bit 15 picks the region, bits 0..14 the offset in it */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/guest_mem.h"
#include "virtio/virtqueue.h"
#include "tests/fuzz/fuzz.h"

#define REGION_SIZE 0x8000u
#define REGION1_GPA 0x100000000ULL
#define HDR 12
#define OP_UNPOP 1 /* pop, give back, pop again: the same chain */
#define OP_WRITE 2 /* fill the writable part */
#define MAX_POPS (4 * VQ_MAX_SIZE)


static struct gmem mem;
static uint8_t *bounce; /* VQ_MAX_SIZE * REGION_SIZE: the longest chain */

static void init_once(void)
{
	if (mem.nr)
		return;
	mem.nr = 2;
	mem.r[0] = (struct gmem_region){.gpa = 0, .size = REGION_SIZE, .host = malloc(REGION_SIZE)};
	mem.r[1] = (struct gmem_region){
	    .gpa = REGION1_GPA, .size = REGION_SIZE, .host = malloc(REGION_SIZE)};
	mem.ram_size = 2 * REGION_SIZE;
	mem.base = mem.r[0].host;
	bounce = malloc((size_t)VQ_MAX_SIZE * REGION_SIZE);
	if (!mem.r[0].host || !mem.r[1].host || !bounce)
		abort();
}

static uint16_t le16(const uint8_t *p)
{
	return (uint16_t)(p[0] | p[1] << 8);
}

static uint64_t ring_gpa(uint16_t sel)
{
	return (sel & 0x8000 ? REGION1_GPA : 0) + (sel & 0x7fff);
}

/* The harness's own translation: [gpa, gpa+len) in one region, else NULL. */
static uint8_t *ref_ptr(uint64_t gpa, uint64_t len)
{
	for (unsigned i = 0; i < mem.nr; i++) {
		const struct gmem_region *r = &mem.r[i];
		if (len && gpa >= r->gpa && gpa - r->gpa < r->size &&
		    len <= r->size - (gpa - r->gpa))
			return r->host + (gpa - r->gpa);
	}
	return NULL;
}

/* [p, p+len) lies inside one region's host block. */
static bool in_ram(const uint8_t *p, uint64_t len)
{
	for (unsigned i = 0; i < mem.nr; i++) {
		uintptr_t lo = (uintptr_t)mem.r[i].host, x = (uintptr_t)p;
		if (x >= lo && x - lo < mem.r[i].size && len <= mem.r[i].size - (x - lo))
			return true;
	}
	return false;
}

/* §2.7.6 and §2.7.5, walked independently of virtqueue.c (a visited set
 * rather than a count finds loops): 1 with the chain, 0 empty, -1 broken. */
static int ref_pop(const struct vq *q, struct vq_chain *c)
{
	uint16_t num = q->s.num;
	const uint8_t *avail = ref_ptr(q->s.avail, 6 + 2 * (uint64_t)num);
	const uint8_t *desc = ref_ptr(q->s.desc, 16 * (uint64_t)num);
	uint16_t pending = (uint16_t)(le16(avail + 2) - q->s.next_avail);

	if (pending == 0)
		return 0;
	if (pending > num)
		return -1;
	uint16_t i = le16(avail + 4 + 2 * (q->s.next_avail % num));
	if (i >= num)
		return -1;
	bool seen[VQ_MAX_SIZE] = {false};
	uint64_t out = 0, in = 0;
	c->head = i;
	c->nr_out = c->nr_in = 0;
	for (;;) {
		const uint8_t *d = desc + 16 * (size_t)i;
		uint64_t addr;
		uint32_t len;
		uint16_t flags, next;
		memcpy(&addr, d, 8);
		memcpy(&len, d + 8, 4);
		memcpy(&flags, d + 12, 2);
		memcpy(&next, d + 14, 2);
		if (seen[i] || (flags & VIRTQ_DESC_F_INDIRECT))
			return -1;
		seen[i] = true;
		uint8_t *p = ref_ptr(addr, len);
		if (!p)
			return -1;
		bool w = flags & VIRTQ_DESC_F_WRITE;
		if (!w && c->nr_in)
			return -1;
		c->seg[c->nr_out + c->nr_in] = (struct vq_seg){.p = p, .len = len};
		if (w) {
			c->nr_in++;
			in += len;
		} else {
			c->nr_out++;
			out += len;
		}
		if (out > UINT32_MAX || in > UINT32_MAX)
			return -1;
		if (!(flags & VIRTQ_DESC_F_NEXT))
			break;
		if (next >= num)
			return -1;
		i = next;
	}
	c->out_len = (uint32_t)out;
	c->in_len = (uint32_t)in;
	return 1;
}

static void check_chain(const struct vq *q, const struct vq_chain *c, const struct vq_chain *ref)
{
	unsigned n = (unsigned)c->nr_out + c->nr_in;
	uint64_t out = 0, in = 0;

	CHECK(n >= 1 && n <= q->s.num);
	CHECK(c->head < q->s.num);
	for (unsigned k = 0; k < n; k++) {
		CHECK(c->seg[k].len > 0);
		CHECK(in_ram(c->seg[k].p, c->seg[k].len));
		*(k < c->nr_out ? &out : &in) += c->seg[k].len;
	}
	CHECK(out == c->out_len && in == c->in_len);
	/* the same chain as the reference: out segments first, then in */
	CHECK(c->head == ref->head && c->nr_out == ref->nr_out && c->nr_in == ref->nr_in);
	for (unsigned k = 0; k < n; k++)
		CHECK(c->seg[k].p == ref->seg[k].p && c->seg[k].len == ref->seg[k].len);
}

/* Read the whole readable part, then a slice at off; write the writable
 * part.  Returns the bytes written. */
static uint32_t use_chain(const struct vq_chain *c, size_t off, bool write)
{
	size_t got = vq_read(c, 0, bounce, (size_t)c->out_len + 1);
	CHECK(got == c->out_len);
	size_t pos = 0;
	for (unsigned k = 0; k < c->nr_out; k++) {
		CHECK(memcmp(bounce + pos, c->seg[k].p, c->seg[k].len) == 0);
		pos += c->seg[k].len;
	}
	off %= (size_t)c->out_len + 2;
	size_t want = off <= c->out_len ? c->out_len - off : 0;
	CHECK(vq_read(c, off, bounce, 7) == (want < 7 ? want : 7));
	CHECK(vq_read(c, c->out_len, bounce, 1) == 0);
	CHECK(vq_write(c, c->in_len, bounce, 1) == 0);
	if (!write)
		return 0;
	memset(bounce, 0xa5, (size_t)c->in_len + 1);
	off %= (size_t)c->in_len + 2;
	want = off <= c->in_len ? c->in_len - off : 0;
	CHECK(vq_write(c, off, bounce, 7) == (want < 7 ? want : 7));
	size_t put = vq_write(c, 0, bounce, (size_t)c->in_len + 1);
	CHECK(put == c->in_len);
	return (uint32_t)put;
}

static void check_pushed(const struct vq *q, uint16_t head, uint32_t written)
{
	const uint8_t *used = ref_ptr(q->s.used, 6 + 8 * (uint64_t)q->s.num);
	uint16_t slot = (uint16_t)(q->s.next_used - 1) % q->s.num;
	uint32_t id, len;

	CHECK(le16(used + 2) == q->s.next_used);
	memcpy(&id, used + 4 + 8 * (size_t)slot, 4);
	memcpy(&len, used + 8 + 8 * (size_t)slot, 4);
	CHECK(id == head && len == written);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct vq_chain c, ref;
	char err[VQ_ERR_MAX];
	struct vq q;

	if (size < HDR)
		return 0;
	init_once();
	memset(&q, 0, sizeof(q));
	uint16_t num = le16(data);
	q.s.num = num & 0x8000 ? num & 0x1ff : (uint16_t)(1u << (num % 9));
	uint16_t cursor = le16(data + 2);
	q.s.desc = ring_gpa(le16(data + 4));
	q.s.avail = ring_gpa(le16(data + 6));
	q.s.used = ring_gpa(le16(data + 8));
	uint8_t ops = data[10];
	size_t off = data[11] * 131u;
	data += HDR;
	size -= HDR;
	for (unsigned i = 0; i < mem.nr; i++) {
		size_t n = size < REGION_SIZE ? size : REGION_SIZE;
		memset(mem.r[i].host, 0, REGION_SIZE);
		memcpy(mem.r[i].host, data, n);
		data += n;
		size -= n;
	}

	err[0] = '\0';
	if (vq_enable(&q, &mem, err, sizeof(err))) {
		CHECK(err[0] && strlen(err) < sizeof(err));
		return 0;
	}
	uint16_t n = q.s.num;
	CHECK(n && n <= VQ_MAX_SIZE && !(n & (n - 1)));
	CHECK(q.s.desc % 16 == 0 && q.s.avail % 2 == 0 && q.s.used % 4 == 0);
	CHECK(q.desc_host == ref_ptr(q.s.desc, 16 * (uint64_t)n));
	CHECK(q.avail_host == ref_ptr(q.s.avail, 6 + 2 * (uint64_t)n));
	CHECK(q.used_host == ref_ptr(q.s.used, 6 + 8 * (uint64_t)n));
	CHECK(q.desc_host && q.avail_host && q.used_host);
	/* resume where a restored queue would be */
	q.s.next_avail = q.s.next_used = cursor;

	for (int pops = 0; pops < MAX_POPS; pops++) {
		int want = ref_pop(&q, &ref);
		CHECK(vq_has_avail(&q) == (want != 0));
		err[0] = '\0';
		int r = vq_pop(&q, &c, err, sizeof(err));
		if (r < 0) {
			CHECK(want < 0);
			CHECK(err[0] && strlen(err) < sizeof(err));
			break;
		}
		CHECK(r == want);
		if (r == 0)
			break;
		check_chain(&q, &c, &ref);
		if (ops & OP_UNPOP) {
			uint16_t before = q.s.next_avail;
			vq_unpop(&q);
			CHECK(vq_pop(&q, &c, err, sizeof(err)) == 1);
			CHECK(q.s.next_avail == before);
			check_chain(&q, &c, &ref);
		}
		uint32_t written = use_chain(&c, off, ops & OP_WRITE);
		vq_push(&q, &c, written);
		check_pushed(&q, c.head, written);
		(void)vq_no_interrupt(&q); /* reads the flags in RAM: in bounds */
	}
	return 0;
}
