/* Solo5 hvt ring I/O (include/hvt_ring.h, tenders/hvt/hvt_module_net.c):
 * one shared ring of net requests at the top of guest RAM, served on the
 * vmm thread's event loop when the guest kicks port 0x600 (a KVM ioeventfd:
 * no exit to ember).  The ring lives in guest RAM, indices included, so a
 * snapshot carries it whole; a restore only registers the kick again.
 *
 * The ring is the guest's memory and the guest may write any of it at any
 * time: every entry is copied out before it is looked at, every index is
 * masked, every buffer goes through gmem_ptr(), and a bad entry fails
 * alone.  Every byte written into guest RAM is marked dirty before and
 * after the write (snapshots, migration: base/guest_mem.h). */
#include <errno.h>
#include <linux/kvm.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "monitor/hvt/hvt.h"

#define MASK (HVT_RING_SIZE - 1)
/* Entries served per turn of the event loop: the rest waits for the next
 * turn (a kick to ourselves), so a guest that never stops submitting
 * cannot keep the loop from its other sources (the API). */
#define SERVE_BUDGET (4 * HVT_RING_SIZE)
/* Looks at an empty ring before going idle (solo5-hvt's
 * HVT_RING_POLL_ITERS; ~120 us of `pause` here): a guest that submits
 * again within that needs no kick. */
#define SPIN 4096

static inline uint32_t load_acq(const uint32_t *p)
{
	return __atomic_load_n(p, __ATOMIC_ACQUIRE);
}

static inline void store_rel(uint32_t *p, uint32_t v)
{
	__atomic_store_n(p, v, __ATOMIC_RELEASE);
}

static bool has_net(const struct hvt_guest *g)
{
	for (unsigned i = 1; i < g->mft.nr; i++)
		if (g->mft.e[i].type == HVT_MFT_NET && g->mft.e[i].attached)
			return true;
	return false;
}

uint64_t hvt_ring_place(const struct hvt_guest *g)
{
	if (!has_net(g) || g->mem_size < sizeof(struct hvt_ring))
		return 0;
	uint64_t gpa = (g->mem_size - sizeof(struct hvt_ring)) & ~0xfffULL;
	if (gpa < HVT_RING_MIN_GPA || gpa < g->kernel_end + 4096)
		return 0;
	return gpa;
}

uint64_t hvt_ram_top(const struct hvt_guest *g)
{
	return g->ring_gpa ? g->ring_gpa : g->mem_size;
}

/* The monitor's cache line of the ring (ent_head, com_tail, needs_kick). */
static void mark_host_line(const struct hvt_guest *g, struct hvt_ring *r)
{
	gmem_mark(g->mem, &r->ent_head, 64);
}

static bool ring_write(struct hvt_guest *g, const struct hvt_ring_entry *e)
{
	if (!hvt_net_ok(g, e->handle, true, e->len))
		return false;
	const void *buf = gmem_ptr(g->mem, e->data, e->len);
	if (!buf)
		return false;
	/* A tap that refuses a frame (full, down) drops it, as a wire would:
	 * the guest asked for no answer. */
	(void)!tap_write(&g->tap[e->handle], buf, e->len);
	return true;
}

/* A NET_READ: one frame into the guest's buffer, and its commit. */
static void ring_read(struct hvt_guest *g, struct hvt_ring *r, const struct hvt_ring_entry *e)
{
	struct hvt_ring_commit c = {.id = e->id, .ret = SOLO5_R_EINVAL};
	void *buf =
	    hvt_net_ok(g, e->handle, false, e->len) ? gmem_ptr(g->mem, e->data, e->len) : NULL;
	if (buf) {
		/* No frame is longer than 64 KiB: a huge buffer costs no more
		 * marks than that. */
		uint32_t len = e->len < 65536 ? e->len : 65536;
		gmem_mark(g->mem, buf, len);
		ssize_t n = tap_read(&g->tap[e->handle], buf, len);
		gmem_mark(g->mem, buf, len);
		c.ret = n >= 0 ? SOLO5_R_OK : n == -EAGAIN ? SOLO5_R_AGAIN : SOLO5_R_EUNSPEC;
		c.len = n >= 0 ? (uint32_t)n : 0;
	} else {
		g->ring_failed++;
	}
	/* Commits are not flow-controlled, as in solo5-hvt: Solo5's guest
	 * waits for each read's commit before the next, so one is pending at
	 * most; a guest that does otherwise overwrites only its own. */
	uint32_t t = r->com_tail;
	struct hvt_ring_commit *slot = &r->commits[t & MASK];
	gmem_mark(g->mem, slot, sizeof(*slot));
	memcpy(slot, &c, sizeof(c));
	gmem_mark(g->mem, slot, sizeof(*slot));
	store_rel(&r->com_tail, t + 1); /* the commit before its index */
}

unsigned hvt_ring_process(struct hvt_guest *g, struct hvt_ring *r, unsigned budget)
{
	unsigned n = 0;
	uint32_t head = r->ent_head;
	/* Acquire: the entries up to tail are the guest's finished ones. */
	uint32_t tail = load_acq(&r->ent_tail);
	mark_host_line(g, r);
	while (head != tail && n < budget) {
		struct hvt_ring_entry e;
		memcpy(&e, &r->entries[head & MASK], sizeof(e));
		switch (e.operation) {
		case HVT_RING_NET_WRITE:
			if (!ring_write(g, &e))
				g->ring_failed++;
			g->ring_done[HVT_RING_NET_WRITE]++;
			break;
		case HVT_RING_NET_READ:
			ring_read(g, r, &e);
			g->ring_done[HVT_RING_NET_READ]++;
			break;
		default: /* skipped, as solo5-hvt does */
			g->ring_done[0]++;
			break;
		}
		store_rel(&r->ent_head, ++head); /* the slot is the guest's again */
		n++;
		if (head == tail)
			tail = load_acq(&r->ent_tail);
	}
	mark_host_line(g, r);
	return n;
}

static void kick_self(struct hvt_guest *g)
{
	uint64_t one = 1;
	(void)!write(g->kick_fd, &one, sizeof(one));
}

void hvt_ring_serve(struct hvt_guest *g)
{
	struct hvt_ring *r = g->ring;
	unsigned done = 0;
	mark_host_line(g, r);
	__atomic_store_n(&r->needs_kick, 0, __ATOMIC_RELAXED);
	for (;;) {
		done += hvt_ring_process(g, r, SERVE_BUDGET - done);
		if (done >= SERVE_BUDGET) {
			/* needs_kick stays 0: this kick brings the loop back. */
			kick_self(g);
			break;
		}
		bool more = false;
		for (unsigned i = 0; i < SPIN && !more; i++) {
			more = load_acq(&r->ent_tail) != r->ent_head;
			__builtin_ia32_pause();
		}
		if (more)
			continue;
		/* Going idle: "store needs_kick, full barrier, load ent_tail"
		 * against the guest's "store ent_tail, full barrier, load
		 * needs_kick" (hvt_ring.h): either it sees our flag and kicks,
		 * or we see its entry here. */
		__atomic_store_n(&r->needs_kick, 1, __ATOMIC_RELAXED);
		__atomic_thread_fence(__ATOMIC_SEQ_CST);
		if (load_acq(&r->ent_tail) == r->ent_head)
			break;
		__atomic_store_n(&r->needs_kick, 0, __ATOMIC_RELAXED);
	}
	mark_host_line(g, r);
}

static void on_kick(struct ev_source *src, uint32_t events)
{
	struct hvt_guest *g = src->opaque;
	uint64_t n;
	(void)!read(g->kick_fd, &n, sizeof(n)); /* non-blocking: a spurious wake reads nothing */
	hvt_ring_serve(g);
}

#define ERR(r, ...) (snprintf(err, errlen, __VA_ARGS__), (r))

int hvt_ring_attach(struct hvt_guest *g, int vm_fd, struct evloop *ev, bool restored, char *err,
		    size_t errlen)
{
	uint64_t gpa = hvt_ring_place(g);
	if (gpa && restored) {
		/* What the saved guest was offered: a snapshot of a guest
		 * booted without a ring has its stack where the ring would be. */
		const struct hvt_boot_info *bi = gmem_ptr(g->mem, HVT_BOOT_INFO, sizeof(*bi));
		if (!bi || !(bi->host_features & HVT_FEATURE_RING_IO) || bi->net_ring != gpa)
			gpa = 0;
	}
	g->ring_gpa = gpa;
	if (!gpa)
		return 0;
	struct hvt_ring *r = gmem_ptr(g->mem, gpa, sizeof(*r));
	if (!r)
		return ERR(-EFAULT, "ring I/O: the ring at 0x%llx is outside RAM",
			   (unsigned long long)gpa);
	int fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (fd < 0)
		return ERR(-errno, "ring I/O: eventfd: %s", strerror(errno));
	struct kvm_ioeventfd io = {
	    .addr = HVT_RING_KICK_PORT, .len = 4, .fd = fd, .flags = KVM_IOEVENTFD_FLAG_PIO};
	int e = ioctl(vm_fd, KVM_IOEVENTFD, &io) ? -errno : 0;
	if (!e)
		e = ev_add(ev, &g->kick_src, fd, EPOLLIN, on_kick, g);
	if (e) {
		close(fd);
		return ERR(e, "ring I/O: cannot watch port 0x%x: %s", HVT_RING_KICK_PORT,
			   strerror(-e));
	}
	g->kick_fd = fd;
	g->ev = ev;
	g->ring = r;
	/* Idle until kicked; and one turn now, for entries a snapshot caught
	 * before they were served. */
	mark_host_line(g, r);
	__atomic_store_n(&r->needs_kick, 1, __ATOMIC_SEQ_CST);
	mark_host_line(g, r);
	kick_self(g);
	return 0;
}

void hvt_ring_detach(struct hvt_guest *g)
{
	if (!g->ring)
		return;
	ev_del(g->ev, &g->kick_src);
	close(g->kick_fd);
	g->kick_fd = -1;
	g->ring = NULL;
}
