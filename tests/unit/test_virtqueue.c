/* virtio/virtqueue: the split-ring walker over a fake guest memory (no
 * KVM).  A good chain, the used ring, an empty ring, and every way a
 * driver can break the queue, each refused with a message naming it. */
#include <setjmp.h> /* cmocka needs these first */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "base/guest_mem.h"
#include "virtio/virtqueue.h"

#define MiB (1024ULL * 1024)
#define DESC 0x1000ULL
#define AVAIL 0x2000ULL
#define USED 0x3000ULL
#define BUF 0x10000ULL

struct fx {
	struct gmem mem;
	struct vq q;
	struct vq_chain c;
	char err[VQ_ERR_MAX];
};

static void assert_contains(const char *haystack, const char *needle)
{
	if (!strstr(haystack, needle))
		fail_msg("\"%s\" does not contain \"%s\"", haystack, needle);
}

static uint8_t *at(struct fx *f, uint64_t gpa)
{
	return f->mem.base + gpa; /* below 3 GiB: gpa is the offset */
}

static void set_desc(struct fx *f, uint16_t i, uint64_t addr, uint32_t len, uint16_t flags,
		     uint16_t next)
{
	uint8_t *d = at(f, DESC + 16 * (uint64_t)i);
	memcpy(d, &addr, 8);
	memcpy(d + 8, &len, 4);
	memcpy(d + 12, &flags, 2);
	memcpy(d + 14, &next, 2);
}

static uint16_t get16(struct fx *f, uint64_t gpa)
{
	uint16_t v;
	memcpy(&v, at(f, gpa), 2);
	return v;
}

static uint32_t get32(struct fx *f, uint64_t gpa)
{
	uint32_t v;
	memcpy(&v, at(f, gpa), 4);
	return v;
}

static void set16(struct fx *f, uint64_t gpa, uint16_t v)
{
	memcpy(at(f, gpa), &v, 2);
}

/* The driver makes `head` available (§2.7.13). */
static void offer(struct fx *f, uint16_t head)
{
	uint16_t idx = get16(f, AVAIL + 2);
	set16(f, AVAIL + 4 + 2 * (uint64_t)(idx % f->q.s.num), head);
	set16(f, AVAIL + 2, (uint16_t)(idx + 1));
}

static int setup_mem(void **state, uint64_t ram, uint16_t num)
{
	struct fx *f = calloc(1, sizeof(*f));
	if (!f || gmem_init(&f->mem, ram))
		return -1;
	f->q.s.desc = DESC;
	f->q.s.avail = AVAIL;
	f->q.s.used = USED;
	f->q.s.num = num;
	if (vq_enable(&f->q, &f->mem, f->err, sizeof(f->err)))
		return -1;
	*state = f;
	return 0;
}

static int setup(void **state)
{
	return setup_mem(state, 1 * MiB, 8);
}

/* 64 MiB and 256 entries: room for a chain of more than 4 GiB. */
static int setup_big(void **state)
{
	return setup_mem(state, 64 * MiB, VQ_MAX_SIZE);
}

static int teardown(void **state)
{
	struct fx *f = *state;
	gmem_free(&f->mem);
	free(f);
	return 0;
}

/* vq_pop must refuse with -EINVAL and a message containing `why`. */
static void assert_broken(struct fx *f, const char *why)
{
	f->err[0] = '\0';
	assert_int_equal(vq_pop(&f->q, &f->c, f->err, sizeof(f->err)), -EINVAL);
	assert_contains(f->err, why);
}

static void test_good_chain(void **state)
{
	struct fx *f = *state;

	set_desc(f, 5, BUF, 100, VIRTQ_DESC_F_NEXT, 2);
	set_desc(f, 2, BUF + 0x1000, 200, VIRTQ_DESC_F_NEXT, 7);
	set_desc(f, 7, BUF + 0x2000, 300, VIRTQ_DESC_F_WRITE, 0);
	memset(at(f, BUF), 'a', 100);
	memset(at(f, BUF + 0x1000), 'b', 200);
	offer(f, 5);
	assert_true(vq_has_avail(&f->q));
	assert_int_equal(vq_pop(&f->q, &f->c, f->err, sizeof(f->err)), 1);
	assert_false(vq_has_avail(&f->q));

	struct vq_chain *c = &f->c;
	assert_int_equal(c->head, 5);
	assert_int_equal(c->nr_out, 2);
	assert_int_equal(c->nr_in, 1);
	assert_int_equal(c->out_len, 300);
	assert_int_equal(c->in_len, 300);
	assert_ptr_equal(c->seg[0].p, at(f, BUF));
	assert_int_equal(c->seg[0].len, 100);
	assert_ptr_equal(c->seg[1].p, at(f, BUF + 0x1000));
	assert_int_equal(c->seg[1].len, 200);
	assert_ptr_equal(c->seg[2].p, at(f, BUF + 0x2000));
	assert_int_equal(c->seg[2].len, 300);

	/* reads cross the segment boundary and stop at the readable part */
	uint8_t buf[400];
	assert_int_equal(vq_read(c, 98, buf, 4), 4);
	assert_memory_equal(buf, "aabb", 4);
	assert_int_equal(vq_read(c, 0, buf, sizeof(buf)), 300);
	assert_int_equal(vq_read(c, 300, buf, 1), 0);
	/* writes only reach the writable part */
	memset(buf, 'w', sizeof(buf));
	assert_int_equal(vq_write(c, 0, buf, sizeof(buf)), 300);
	assert_int_equal(vq_write(c, 299, buf, 5), 1);
	assert_int_equal(at(f, BUF + 0x2000)[299], 'w');
	assert_int_equal(at(f, BUF + 0x2000)[300], 0);
	assert_int_equal(at(f, BUF)[0], 'a');
}

static void test_push(void **state)
{
	struct fx *f = *state;

	set_desc(f, 3, BUF, 64, VIRTQ_DESC_F_WRITE, 0);
	set_desc(f, 4, BUF + 64, 64, VIRTQ_DESC_F_WRITE, 0);
	offer(f, 3);
	offer(f, 4);
	assert_int_equal(vq_pop(&f->q, &f->c, f->err, sizeof(f->err)), 1);
	assert_int_equal(f->c.head, 3);
	vq_push(&f->q, &f->c, 17);
	assert_int_equal(get16(f, USED + 2), 1);
	assert_int_equal(get32(f, USED + 4), 3);
	assert_int_equal(get32(f, USED + 8), 17);
	assert_int_equal(vq_pop(&f->q, &f->c, f->err, sizeof(f->err)), 1);
	assert_int_equal(f->c.head, 4);
	vq_push(&f->q, &f->c, 64);
	assert_int_equal(get16(f, USED + 2), 2);
	assert_int_equal(get32(f, USED + 12), 4);
	assert_int_equal(get32(f, USED + 16), 64);
	assert_int_equal(f->q.s.next_used, 2);
	assert_int_equal(f->q.s.next_avail, 2);
}

static bool page_dirty(const uint64_t *bm, uint64_t gpa)
{
	return bm[gpa / 4096 / 64] >> (gpa / 4096 % 64) & 1;
}

/* A dirty set fetched between vq_pop and vq_push (a migration round on
 * another thread) must not lose what the device wrote after it: push
 * marks the chain's writable buffers and the used ring again; the
 * driver-readable buffer is never marked. */
static void test_push_marks_after_fetch(void **state)
{
	struct fx *f = *state;
	uint64_t words = gmem_dirty_words(&f->mem);
	uint64_t *bm = calloc(words, 8);
	assert_int_equal(gmem_log_dirty(&f->mem, true), 0);
	assert_int_equal(gmem_dirty_fetch(&f->mem, bm), 0); /* the first: every page */

	set_desc(f, 0, BUF, 16, VIRTQ_DESC_F_NEXT, 1);
	set_desc(f, 1, BUF + 0x4000, 0x2000, VIRTQ_DESC_F_WRITE, 0);
	offer(f, 0);
	assert_int_equal(vq_pop(&f->q, &f->c, f->err, sizeof(f->err)), 1);
	assert_int_equal(gmem_dirty_fetch(&f->mem, bm), 0);
	assert_true(page_dirty(bm, BUF + 0x4000)); /* marked at pop */
	assert_int_equal(gmem_dirty_fetch(&f->mem, bm), 0);
	assert_false(page_dirty(bm, BUF + 0x4000)); /* cleared by the fetch */

	assert_int_equal(vq_write(&f->c, 0x1000, "x", 1), 1);
	vq_push(&f->q, &f->c, 0x1001);
	assert_int_equal(gmem_dirty_fetch(&f->mem, bm), 0);
	assert_true(page_dirty(bm, BUF + 0x4000));
	assert_true(page_dirty(bm, BUF + 0x5000));
	assert_true(page_dirty(bm, USED));
	assert_false(page_dirty(bm, BUF));
	free(bm);
}

/* The indices are free-running u16s: the ring wraps, 65535 -> 0 too. */
static void test_wrap(void **state)
{
	struct fx *f = *state;

	set_desc(f, 0, BUF, 8, 0, 0);
	f->q.s.next_avail = f->q.s.next_used = 65533;
	set16(f, AVAIL + 2, 65533);
	for (int k = 0; k < 6; k++) {
		offer(f, 0);
		assert_int_equal(vq_pop(&f->q, &f->c, f->err, sizeof(f->err)), 1);
		vq_push(&f->q, &f->c, 0);
	}
	assert_int_equal(f->q.s.next_avail, 3);
	assert_int_equal(get16(f, USED + 2), 3);
	assert_int_equal(vq_pop(&f->q, &f->c, f->err, sizeof(f->err)), 0);
}

static void test_empty(void **state)
{
	struct fx *f = *state;

	assert_false(vq_has_avail(&f->q));
	assert_int_equal(vq_pop(&f->q, &f->c, f->err, sizeof(f->err)), 0);
	set_desc(f, 0, BUF, 8, 0, 0);
	offer(f, 0);
	assert_int_equal(vq_pop(&f->q, &f->c, f->err, sizeof(f->err)), 1);
	assert_int_equal(vq_pop(&f->q, &f->c, f->err, sizeof(f->err)), 0);
	assert_int_equal(f->q.s.next_avail, 1);
}

static void test_unpop(void **state)
{
	struct fx *f = *state;

	set_desc(f, 6, BUF, 8, 0, 0);
	offer(f, 6);
	assert_int_equal(vq_pop(&f->q, &f->c, f->err, sizeof(f->err)), 1);
	vq_unpop(&f->q);
	assert_true(vq_has_avail(&f->q));
	memset(&f->c, 0, sizeof(f->c));
	assert_int_equal(vq_pop(&f->q, &f->c, f->err, sizeof(f->err)), 1);
	assert_int_equal(f->c.head, 6);
	assert_int_equal(f->c.out_len, 8);
}

static void test_no_interrupt(void **state)
{
	struct fx *f = *state;

	assert_false(vq_no_interrupt(&f->q));
	set16(f, AVAIL, VIRTQ_AVAIL_F_NO_INTERRUPT);
	assert_true(vq_no_interrupt(&f->q));
}

static void test_loop(void **state)
{
	struct fx *f = *state;

	set_desc(f, 0, BUF, 8, VIRTQ_DESC_F_NEXT, 1);
	set_desc(f, 1, BUF, 8, VIRTQ_DESC_F_NEXT, 0);
	offer(f, 0);
	assert_broken(f, "loops");
	/* a descriptor naming itself */
	vq_reset(&f->q);
	memset(at(f, 0), 0, 0x4000);
	f->q.s = (struct vq_state){.desc = DESC, .avail = AVAIL, .used = USED, .num = 8};
	assert_int_equal(vq_enable(&f->q, &f->mem, f->err, sizeof(f->err)), 0);
	set_desc(f, 3, BUF, 8, VIRTQ_DESC_F_NEXT, 3);
	offer(f, 3);
	assert_broken(f, "from descriptor 3 loops");
}

static void test_next_out_of_range(void **state)
{
	struct fx *f = *state;

	set_desc(f, 0, BUF, 8, VIRTQ_DESC_F_NEXT, 8);
	offer(f, 0);
	assert_broken(f, "next 8 is out of range");
}

static void test_head_out_of_range(void **state)
{
	struct fx *f = *state;

	offer(f, 8);
	assert_broken(f, "names descriptor 8");
	set16(f, AVAIL + 4, 0xffff);
	assert_broken(f, "names descriptor 65535");
}

static void test_avail_jump(void **state)
{
	struct fx *f = *state;

	set_desc(f, 0, BUF, 8, 0, 0);
	set16(f, AVAIL + 2, 8); /* exactly num ahead: fine */
	assert_int_equal(vq_pop(&f->q, &f->c, f->err, sizeof(f->err)), 1);
	set16(f, AVAIL + 2, 1 + 8 + 1); /* 9 ahead of next_avail 1 */
	assert_broken(f, "is 9 ahead");
	/* an index behind the device is a huge jump forward */
	set16(f, AVAIL + 2, 0);
	assert_broken(f, "ahead");
}

static void test_indirect(void **state)
{
	struct fx *f = *state;

	set_desc(f, 0, BUF, 16, VIRTQ_DESC_F_INDIRECT, 0);
	offer(f, 0);
	assert_broken(f, "descriptor 0 is indirect");
}

static void test_zero_length(void **state)
{
	struct fx *f = *state;

	set_desc(f, 0, BUF, 8, VIRTQ_DESC_F_NEXT, 1);
	set_desc(f, 1, BUF, 0, VIRTQ_DESC_F_WRITE, 0);
	offer(f, 0);
	assert_broken(f, "descriptor 1 has length 0");
}

static void test_outside_ram(void **state)
{
	struct fx *f = *state;
	static const struct {
		uint64_t addr;
		uint32_t len;
	} bad[] = {
	    {1 * MiB, 1},	  /* just past the end */
	    {1 * MiB - 8, 9},	  /* runs past the end */
	    {UINT64_MAX - 3, 8},  /* wraps around */
	    {GMEM_HOLE_START, 4}, /* the MMIO hole */
	    {0, UINT32_MAX},	  /* longer than RAM */
	};

	for (size_t k = 0; k < sizeof(bad) / sizeof(bad[0]); k++) {
		f->q.s.next_avail = 0;
		set16(f, AVAIL + 2, 0);
		set_desc(f, 0, bad[k].addr, bad[k].len, 0, 0);
		offer(f, 0);
		assert_broken(f, "is not in guest RAM");
		assert_contains(f->err, "descriptor 0");
	}
	/* the last byte of RAM is fine */
	f->q.s.next_avail = 0;
	set16(f, AVAIL + 2, 0);
	set_desc(f, 0, 1 * MiB - 1, 1, 0, 0);
	offer(f, 0);
	assert_int_equal(vq_pop(&f->q, &f->c, f->err, sizeof(f->err)), 1);
}

static void test_readable_after_writable(void **state)
{
	struct fx *f = *state;

	set_desc(f, 0, BUF, 8, VIRTQ_DESC_F_NEXT, 1);
	set_desc(f, 1, BUF, 8, VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE, 2);
	set_desc(f, 2, BUF, 8, VIRTQ_DESC_F_NEXT, 3);
	set_desc(f, 3, BUF, 8, VIRTQ_DESC_F_WRITE, 0);
	offer(f, 0);
	assert_broken(f, "descriptor 2 is driver-readable after a device-writable");
}

/* 128 readable descriptors of 32 MiB: 4 GiB, one past what u32 out_len
 * holds. */
static void test_length_overflow(void **state)
{
	struct fx *f = *state;

	for (uint16_t i = 0; i < 128; i++)
		set_desc(f, i, 16 * MiB, 32 * MiB, i < 127 ? VIRTQ_DESC_F_NEXT : 0,
			 (uint16_t)(i + 1));
	offer(f, 0);
	assert_broken(f, "longer than 4 GiB");
	/* one descriptor less is fine */
	f->q.s.next_avail = 0;
	set_desc(f, 126, 16 * MiB, 32 * MiB, 0, 0);
	set_desc(f, 127, 16 * MiB, 32 * MiB - 1, 0, 0);
	assert_int_equal(vq_pop(&f->q, &f->c, f->err, sizeof(f->err)), 1);
	assert_int_equal(f->c.nr_out, 127);
	assert_int_equal(f->c.out_len, 127 * 32 * MiB);
	/* a chain of exactly num descriptors is not a loop */
	f->q.s.next_avail = 0;
	for (uint16_t i = 0; i < VQ_MAX_SIZE; i++)
		set_desc(f, i, BUF, 1, i < VQ_MAX_SIZE - 1 ? VIRTQ_DESC_F_NEXT : 0,
			 (uint16_t)(i + 1));
	assert_int_equal(vq_pop(&f->q, &f->c, f->err, sizeof(f->err)), 1);
	assert_int_equal(f->c.nr_out, VQ_MAX_SIZE);
}

static void test_enable_errors(void **state)
{
	struct fx *f = *state;
	static const struct {
		struct vq_state s;
		const char *why;
	} bad[] = {
	    {{.desc = DESC, .avail = AVAIL, .used = USED, .num = 0}, "queue size 0"},
	    {{.desc = DESC, .avail = AVAIL, .used = USED, .num = 6}, "queue size 6"},
	    {{.desc = DESC, .avail = AVAIL, .used = USED, .num = 512}, "queue size 512"},
	    {{.desc = DESC + 8, .avail = AVAIL, .used = USED, .num = 8}, "descriptor table"},
	    {{.desc = DESC, .avail = AVAIL + 1, .used = USED, .num = 8}, "available ring"},
	    {{.desc = DESC, .avail = AVAIL, .used = USED + 2, .num = 8}, "used ring"},
	    {{.desc = 1 * MiB - 16, .avail = AVAIL, .used = USED, .num = 8}, "not in guest RAM"},
	    {{.desc = DESC, .avail = UINT64_MAX - 1, .used = USED, .num = 8}, "not in guest RAM"},
	    {{.desc = DESC, .avail = AVAIL, .used = 1 * MiB - 4 - 64, .num = 8},
	     "used ring at 0xfffbc"},
	};
	struct vq q;

	for (size_t k = 0; k < sizeof(bad) / sizeof(bad[0]); k++) {
		memset(&q, 0, sizeof(q));
		q.s = bad[k].s;
		f->err[0] = '\0';
		assert_int_equal(vq_enable(&q, &f->mem, f->err, sizeof(f->err)), -EINVAL);
		assert_contains(f->err, bad[k].why);
	}
	/* a queue that is not enabled pops nothing */
	memset(&q, 0, sizeof(q));
	assert_int_equal(vq_pop(&q, &f->c, f->err, sizeof(f->err)), -EINVAL);
	assert_false(vq_has_avail(&q));
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
	    T(test_good_chain),
	    T(test_push),
	    T(test_wrap),
	    T(test_push_marks_after_fetch),
	    T(test_empty),
	    T(test_unpop),
	    T(test_no_interrupt),
	    T(test_loop),
	    T(test_next_out_of_range),
	    T(test_head_out_of_range),
	    T(test_avail_jump),
	    T(test_indirect),
	    T(test_zero_length),
	    T(test_outside_ram),
	    T(test_readable_after_writable),
	    cmocka_unit_test_setup_teardown(test_length_overflow, setup_big, teardown),
	    T(test_enable_errors),
	};
	return cmocka_run_group_tests_name("virtqueue", tests, NULL, NULL);
}
