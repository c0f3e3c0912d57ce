/* Solo5 hvt ring I/O (monitor/hvt/hvt_ring.c): the ring's place, and the
 * processing of its entries against a guest memory without KVM, with a
 * socketpair standing in for the tap: writes reach it, reads commit,
 * every bad entry fails alone, indices wrap, and what ember writes into
 * guest RAM is marked dirty. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "monitor/hvt/hvt.h"

#define MIB (1ULL << 20)
#define RAM (64 * MIB)
#define RING_GPA 0x3ff3000ULL /* (64 MiB - 49280) rounded down to a page */
#define BUF 0x300000ULL	      /* a guest buffer */
#define MTU 1500

struct fix {
	struct gmem mem;
	struct hvt_guest g;
	struct hvt_ring *r;
	int peer; /* the host side of the "tap" */
};

static int setup(void **state)
{
	struct fix *f = calloc(1, sizeof(*f));
	int sv[2];
	if (!f || gmem_init(&f->mem, RAM) ||
	    socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK, 0, sv))
		return -1;
	struct hvt_guest *g = &f->g;
	g->mem = &f->mem;
	g->mem_size = RAM;
	g->kernel_end = 0x200000;
	g->mft.nr = 3;
	g->mft.e[1].type = HVT_MFT_NET;
	g->mft.e[1].attached = 1;
	g->mft.e[1].u.net.mtu = MTU;
	g->mft.e[2].type = HVT_MFT_BLOCK; /* a handle of the wrong kind */
	g->mft.e[2].attached = 1;
	g->tap[1].fd = sv[0];
	f->peer = sv[1];
	g->ring_gpa = hvt_ring_place(g);
	f->r = gmem_ptr(&f->mem, g->ring_gpa, sizeof(*f->r));
	*state = f;
	return f->r ? 0 : -1;
}

static int teardown(void **state)
{
	struct fix *f = *state;
	close(f->g.tap[1].fd);
	close(f->peer);
	gmem_free(&f->mem);
	free(f);
	return 0;
}

/* An entry as the guest submits it (the index after the entry). */
static void submit(struct fix *f, uint32_t op, uint32_t handle, uint64_t data, uint32_t len)
{
	struct hvt_ring_entry *e = &f->r->entries[f->r->ent_tail % HVT_RING_SIZE];
	*e = (struct hvt_ring_entry){op, handle, data, len, f->r->ent_tail + 100, 0};
	f->r->ent_tail++;
}

static struct hvt_ring_commit *commit(struct fix *f, uint32_t i)
{
	return &f->r->commits[i % HVT_RING_SIZE];
}

static void test_place(void **state)
{
	struct fix *f = *state;
	struct hvt_guest *g = &f->g;
	assert_int_equal(g->ring_gpa, RING_GPA);
	assert_int_equal(hvt_ram_top(g), RING_GPA);
	g->kernel_end = RING_GPA - 4096 + 1; /* no page of stack left under it */
	assert_int_equal(hvt_ring_place(g), 0);
	g->kernel_end = 0x200000;
	g->mem_size = 2 * MIB; /* the ring would sit under solo5-hvt's 2 MiB floor */
	assert_int_equal(hvt_ring_place(g), 0);
	g->mem_size = RAM;
	g->mft.e[1].attached = 0; /* no net device: no ring */
	assert_int_equal(hvt_ring_place(g), 0);
	g->ring_gpa = 0;
	assert_int_equal(hvt_ram_top(g), RAM);
}

static void test_writes_reach_the_tap(void **state)
{
	struct fix *f = *state;
	uint8_t *buf = gmem_ptr(&f->mem, BUF, 2 * MTU);
	memset(buf, 0xab, 60);
	memset(buf + MTU, 0xcd, MTU + 14);
	submit(f, HVT_RING_NET_WRITE, 1, BUF, 60);
	submit(f, HVT_RING_NET_WRITE, 1, BUF + MTU, MTU + 14);
	assert_int_equal(hvt_ring_process(&f->g, f->r, 100), 2);
	assert_int_equal(f->r->ent_head, 2);
	assert_int_equal(f->r->com_tail, 0); /* writes commit nothing */
	uint8_t got[2048];
	assert_int_equal(read(f->peer, got, sizeof(got)), 60);
	assert_int_equal(got[59], 0xab);
	assert_int_equal(read(f->peer, got, sizeof(got)), MTU + 14);
	assert_int_equal(got[MTU + 13], 0xcd);
	assert_int_equal(f->g.ring_done[HVT_RING_NET_WRITE], 2);
	assert_int_equal(f->g.ring_failed, 0);
}

static void test_reads_commit(void **state)
{
	struct fix *f = *state;
	uint8_t frame[100];
	memset(frame, 0x5a, sizeof(frame));
	assert_int_equal(write(f->peer, frame, sizeof(frame)), sizeof(frame));
	submit(f, HVT_RING_NET_READ, 1, BUF, MTU + 14);
	submit(f, HVT_RING_NET_READ, 1, BUF, MTU + 14); /* nothing queued */
	assert_int_equal(hvt_ring_process(&f->g, f->r, 100), 2);
	assert_int_equal(f->r->com_tail, 2);
	assert_int_equal(commit(f, 0)->id, 100);
	assert_int_equal(commit(f, 0)->ret, SOLO5_R_OK);
	assert_int_equal(commit(f, 0)->len, 100);
	assert_int_equal(*(uint8_t *)gmem_ptr(&f->mem, BUF + 99, 1), 0x5a);
	assert_int_equal(commit(f, 1)->id, 101);
	assert_int_equal(commit(f, 1)->ret, SOLO5_R_AGAIN);
	assert_int_equal(commit(f, 1)->len, 0);
}

static void test_bad_entries_fail_alone(void **state)
{
	struct fix *f = *state;
	struct {
		uint32_t op, handle;
		uint64_t data;
		uint32_t len;
	} bad[] = {
	    {HVT_RING_NET_READ, 1, 0xfff00000000ULL, MTU + 14}, /* past RAM */
	    {HVT_RING_NET_READ, 1, RAM - 16, MTU + 14},		/* across the end of RAM */
	    {HVT_RING_NET_READ, 1, UINT64_MAX - 8, MTU + 14},	/* wraps */
	    {HVT_RING_NET_READ, 0, BUF, MTU + 14},		/* handle 0 */
	    {HVT_RING_NET_READ, 2, BUF, MTU + 14},		/* a block device */
	    {HVT_RING_NET_READ, 0xffffffff, BUF, MTU + 14},	/* past the manifest */
	    {HVT_RING_NET_READ, 1, BUF, 60},			/* a frame may not fit */
	};
	unsigned n = sizeof(bad) / sizeof(bad[0]);
	uint8_t frame[60] = {1};
	assert_int_equal(write(f->peer, frame, sizeof(frame)), sizeof(frame));
	for (unsigned i = 0; i < n; i++)
		submit(f, bad[i].op, bad[i].handle, bad[i].data, bad[i].len);
	submit(f, HVT_RING_NET_WRITE, 1, 0xfff00000000ULL, 60); /* dropped */
	submit(f, HVT_RING_NET_WRITE, 3, BUF, 60);		/* not a device */
	submit(f, HVT_RING_NET_WRITE, 1, BUF, 0);		/* empty */
	submit(f, HVT_RING_NET_WRITE, 1, BUF, MTU + 15);	/* over MTU + 14 */
	submit(f, 77, 1, BUF, 60);				/* unknown: skipped */
	submit(f, HVT_RING_NET_READ, 1, BUF, MTU + 14);		/* and on we go */
	assert_int_equal(hvt_ring_process(&f->g, f->r, 100), n + 6);
	assert_int_equal(f->r->com_tail, n + 1);
	for (unsigned i = 0; i < n; i++) {
		assert_int_equal(commit(f, i)->ret, SOLO5_R_EINVAL);
		assert_int_equal(commit(f, i)->len, 0);
	}
	assert_int_equal(commit(f, n)->ret, SOLO5_R_OK);
	assert_int_equal(commit(f, n)->len, 60);
	assert_int_equal(f->g.ring_failed, n + 4);
	assert_int_equal(f->g.ring_done[0], 1);
	uint8_t got[64];
	assert_int_equal(read(f->peer, got, sizeof(got)), -1); /* no bad write got out */
	assert_int_equal(errno, EAGAIN);
}

static void test_budget_and_wrap(void **state)
{
	struct fix *f = *state;
	/* Indices are free-running u32s: start just below the wrap. */
	f->r->ent_head = f->r->ent_tail = f->r->com_tail = f->r->com_head = UINT32_MAX - 2;
	for (int i = 0; i < 6; i++)
		submit(f, HVT_RING_NET_READ, 1, BUF, MTU + 14);
	assert_int_equal(hvt_ring_process(&f->g, f->r, 4), 4);
	assert_int_equal(f->r->ent_head, 1);
	assert_int_equal(hvt_ring_process(&f->g, f->r, 100), 2);
	assert_int_equal(f->r->ent_head, 3);
	assert_int_equal(f->r->com_tail, 3);
	assert_int_equal(commit(f, 2)->ret, SOLO5_R_AGAIN);
	assert_int_equal(commit(f, 2)->id, (uint32_t)(UINT32_MAX - 2 + 5 + 100));
	assert_int_equal(hvt_ring_process(&f->g, f->r, 100), 0); /* empty */
}

static bool page_dirty(const uint64_t *bm, uint64_t gpa)
{
	return bm[gpa / 4096 / 64] >> (gpa / 4096 % 64) & 1;
}

static void test_writes_to_guest_ram_are_marked(void **state)
{
	struct fix *f = *state;
	uint64_t words = gmem_dirty_words(&f->mem);
	uint64_t *bm = malloc(words * 8);
	assert_int_equal(gmem_log_dirty(&f->mem, true), 0);
	assert_int_equal(gmem_dirty_fetch(&f->mem, bm), 0); /* the first: every page */
	assert_int_equal(gmem_dirty_fetch(&f->mem, bm), 0);
	assert_false(page_dirty(bm, BUF));
	uint8_t frame[60] = {7};
	assert_int_equal(write(f->peer, frame, sizeof(frame)), sizeof(frame));
	submit(f, HVT_RING_NET_READ, 1, BUF + 2 * 4096, MTU + 14);
	assert_int_equal(hvt_ring_process(&f->g, f->r, 100), 1);
	assert_int_equal(gmem_dirty_fetch(&f->mem, bm), 0);
	assert_true(page_dirty(bm, BUF + 2 * 4096)); /* the frame */
	assert_true(page_dirty(bm, RING_GPA));	     /* ent_head, com_tail */
	assert_true(page_dirty(bm, RING_GPA + offsetof(struct hvt_ring, commits))); /* commit */
	assert_false(page_dirty(bm, BUF));
	free(bm);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_place, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_writes_reach_the_tap, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_reads_commit, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_bad_entries_fail_alone, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_budget_and_wrap, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_writes_to_guest_ram_are_marked, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
