/* The hvt frontend: Solo5's hypercalls over the PIO bus, and the guest
 * layout solo5-hvt gives a unikernel.  Every guest pointer goes through
 * gmem_ptr(); a bad one stops the guest (EXIT_GUEST_FAULT) with a message
 * naming the hypercall and the address, and never reaches the host. */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "config/config.h"
#include "base/bus.h"
#include "monitor/exitcodes.h"
#include "monitor/hvt/hvt.h"
#include "monitor/legacy.h"
#include "vcpu/vcpu.h"

/* Hypercall arguments as the guest lays them out (x86_64 SysV: size_t
 * and pointers are 8 bytes, int is 4, structs padded to 8). */
struct hc_walltime {
	uint64_t nsecs;
};
struct hc_puts {
	uint64_t data, len;
};
struct hc_block {
	uint64_t handle, offset, data, len;
	int32_t ret;
};
struct hc_net {
	uint64_t handle, data, len;
	int32_t ret;
};
struct hc_poll {
	uint64_t timeout_nsecs, ready_set;
	int32_t ret;
};
struct hc_halt {
	uint64_t cookie;
	int32_t exit_status;
};
_Static_assert(sizeof(struct hc_block) == 40 && sizeof(struct hc_net) == 32 &&
		   sizeof(struct hc_poll) == 24 && sizeof(struct hc_halt) == 16,
	       "hvt hypercall argument layouts");

static const char *const call_names[HVT_NR_CALLS] = {
    "?", "WALLTIME", "PUTS", "POLL", "BLOCK_WRITE", "BLOCK_READ", "NET_WRITE", "NET_READ", "HALT",
};

/* A bad argument: stop the guest, say which call and which address. */
static int fault(struct hvt_guest *g, unsigned nr, const char *what, uint64_t gpa, uint64_t len)
{
	char msg[200];
	snprintf(msg, sizeof(msg),
		 "hvt: %s: %s [0x%llx, +0x%llx) is outside guest RAM; guest stopped",
		 call_names[nr], what, (unsigned long long)gpa, (unsigned long long)len);
	g->stop(g->opaque, EXIT_GUEST_FAULT, msg);
	return 1;
}

/* Host pointer to a guest buffer the call names, or NULL (and a fault). */
static void *guest_buf(struct hvt_guest *g, unsigned nr, const char *what, uint64_t gpa,
		       uint64_t len, int *stop)
{
	void *p = gmem_ptr(g->mem, gpa, len);
	if (!p) {
		*stop = fault(g, nr, what, gpa, len);
		return NULL;
	}
	/* Results and read buffers are written through it: dirty now (a
	 * snapshot taken meanwhile sees it) and again when the call is done
	 * (a migration round that fetched the dirty set in between must see
	 * it).  It may only be read: a page too many costs a page, no more. */
	gmem_mark(g->mem, p, len);
	if (g->nr_touched < HVT_TOUCHED_MAX)
		g->touched[g->nr_touched++] = (struct hvt_span){p, len};
	return p;
}

static bool is_dev(const struct hvt_guest *g, uint64_t handle, uint32_t type)
{
	return handle > 0 && handle < g->mft.nr && g->mft.e[handle].type == type &&
	       g->mft.e[handle].attached;
}

static uint64_t now_ns(clockid_t clk)
{
	struct timespec t;
	clock_gettime(clk, &t);
	return (uint64_t)t.tv_sec * 1000000000ULL + (uint64_t)t.tv_nsec;
}

static void do_block(struct hvt_guest *g, unsigned nr, struct hc_block *a, int *stop)
{
	bool write = nr == HVT_BLOCK_WRITE;
	if (!is_dev(g, a->handle, HVT_MFT_BLOCK) ||
	    !blk_range_ok(&g->blk[a->handle], a->offset, a->len,
			  g->mft.e[a->handle].u.block.block_size)) {
		a->ret = SOLO5_R_EINVAL;
		return;
	}
	if (a->len == 0) { /* nothing to move, as solo5-hvt */
		a->ret = SOLO5_R_OK;
		return;
	}
	void *buf = guest_buf(g, nr, "data buffer", a->data, a->len, stop);
	if (!buf)
		return;
	struct blk_backend *b = &g->blk[a->handle];
	int r = write ? blk_write(b, a->offset, buf, a->len) : blk_read(b, a->offset, buf, a->len);
	a->ret = r == 0 ? SOLO5_R_OK : r == -EROFS ? SOLO5_R_EINVAL : SOLO5_R_EUNSPEC;
}

bool hvt_net_ok(const struct hvt_guest *g, uint64_t handle, bool write, uint64_t len)
{
	if (!is_dev(g, handle, HVT_MFT_NET))
		return false;
	uint64_t max = (uint64_t)g->mft.e[handle].u.net.mtu + TAP_HLEN;
	/* a write: one frame; a read: room for any frame */
	return write ? len > 0 && len <= max : len >= max;
}

static void do_net(struct hvt_guest *g, unsigned nr, struct hc_net *a, int *stop)
{
	if (!hvt_net_ok(g, a->handle, nr == HVT_NET_WRITE, a->len)) {
		a->ret = SOLO5_R_EINVAL;
		return;
	}
	void *buf = guest_buf(g, nr, "frame buffer", a->data, a->len, stop);
	if (!buf)
		return;
	struct tap_backend *t = &g->tap[a->handle];
	if (nr == HVT_NET_WRITE) {
		a->ret = tap_write(t, buf, a->len) == 0 ? SOLO5_R_OK : SOLO5_R_EUNSPEC;
		return;
	}
	ssize_t n = tap_read(t, buf, a->len);
	if (n >= 0) {
		a->len = (uint64_t)n;
		a->ret = SOLO5_R_OK;
	} else {
		a->len = 0;
		a->ret = n == -EAGAIN ? SOLO5_R_AGAIN : SOLO5_R_EUNSPEC;
	}
}

/* Wait for any attached net device to be readable, up to the timeout.
 * The vCPU blocks here, in the monitor, as solo5-hvt's does; a kick or the
 * --timeout timer interrupts the wait. */
static int do_poll(struct hvt_guest *g, struct hc_poll *a)
{
	struct pollfd fds[HVT_MFT_MAX_ENTRIES];
	unsigned idx[HVT_MFT_MAX_ENTRIES], n = 0;
	for (unsigned i = 1; i < g->mft.nr; i++)
		if (g->mft.e[i].type == HVT_MFT_NET && g->mft.e[i].attached) {
			fds[n] = (struct pollfd){.fd = g->tap[i].fd, .events = POLLIN};
			idx[n++] = i;
		}
	uint64_t deadline = now_ns(CLOCK_MONOTONIC) + a->timeout_nsecs;
	if (deadline < a->timeout_nsecs)
		deadline = UINT64_MAX;
	a->ready_set = 0;
	for (;;) {
		uint64_t t = now_ns(CLOCK_MONOTONIC), left = deadline > t ? deadline - t : 0;
		struct timespec ts = {.tv_sec = (time_t)(left / 1000000000ULL),
				      .tv_nsec = (long)(left % 1000000000ULL)};
		if (left / 1000000000ULL > 86400ULL * 365)
			ts.tv_sec = 86400 * 365; /* far enough; avoids time_t overflow */
		int r = ppoll(fds, n, &ts, NULL);
		if (r < 0 && errno == EINTR) {
			int c = g->check(g->opaque);
			if (c > 0)
				return 1;
			if (c < 0)
				r = 0; /* back to the vCPU loop: nothing ready yet */
			else
				continue;
		}
		if (r > 0)
			for (unsigned k = 0; k < n; k++)
				if (fds[k].revents & POLLIN)
					a->ready_set |= 1ULL << idx[k];
		a->ret = r < 0 ? SOLO5_R_EUNSPEC : SOLO5_R_OK;
		return 0;
	}
}

static int call(struct hvt_guest *g, uint64_t off, uint8_t *data, uint32_t len, bool is_write)
{
	unsigned nr = (unsigned)off + 1;
	uint32_t gpa;
	int stop = 0;
	char msg[160];

	if (!is_write || len != 4 || nr >= HVT_NR_CALLS) {
		if (!is_write)
			memset(data, 0xff, len);
		snprintf(msg, sizeof(msg), "hvt: port 0x%x: a hypercall is a 32-bit OUT",
			 (unsigned)(HVT_PIO_BASE + nr));
		g->stop(g->opaque, EXIT_GUEST_FAULT, msg);
		return 1;
	}
	memcpy(&gpa, data, 4);
	g->nr_calls[nr]++;

	/* Sizes of the argument struct per call; the copy in and out keeps
	 * every later check on our own stable copy. */
	static const size_t arg_size[HVT_NR_CALLS] = {
	    0,
	    sizeof(struct hc_walltime),
	    sizeof(struct hc_puts),
	    sizeof(struct hc_poll),
	    sizeof(struct hc_block),
	    sizeof(struct hc_block),
	    sizeof(struct hc_net),
	    sizeof(struct hc_net),
	    sizeof(struct hc_halt),
	};
	void *arg = guest_buf(g, nr, "argument", gpa, arg_size[nr], &stop);
	if (!arg)
		return stop;

	switch (nr) {
	case HVT_WALLTIME: {
		struct hc_walltime a = {.nsecs = now_ns(CLOCK_REALTIME)};
		memcpy(arg, &a, sizeof(a));
		return 0;
	}
	case HVT_PUTS: {
		struct hc_puts a;
		memcpy(&a, arg, sizeof(a));
		if (a.len == 0)
			return 0;
		const char *s = guest_buf(g, nr, "string", a.data, a.len, &stop);
		if (s && !g->wrote) {
			g->wrote = true;
			if (g->first_output)
				g->first_output(g->opaque);
		}
		if (s)
			console_write(g->out_fd, s, a.len);
		return stop;
	}
	case HVT_POLL: {
		struct hc_poll a;
		memcpy(&a, arg, sizeof(a));
		stop = do_poll(g, &a);
		memcpy(arg, &a, sizeof(a));
		return stop;
	}
	case HVT_BLOCK_WRITE:
	case HVT_BLOCK_READ: {
		struct hc_block a;
		memcpy(&a, arg, sizeof(a));
		do_block(g, nr, &a, &stop);
		memcpy(arg, &a, sizeof(a));
		return stop;
	}
	case HVT_NET_WRITE:
	case HVT_NET_READ: {
		struct hc_net a;
		memcpy(&a, arg, sizeof(a));
		do_net(g, nr, &a, &stop);
		memcpy(arg, &a, sizeof(a));
		return stop;
	}
	case HVT_HALT: {
		struct hc_halt a;
		memcpy(&a, arg, sizeof(a));
		int status = a.exit_status & 0xff;
		/* The cookie is a guest pointer like any other (512 bytes). */
		if (a.cookie && !gmem_ptr(g->mem, a.cookie, HVT_HALT_COOKIE_MAX))
			return fault(g, nr, "cookie", a.cookie, HVT_HALT_COOKIE_MAX);
		g->halted = true;
		g->halt_status = status;
		g->halt_cookie = a.cookie;
		if (status == 255)
			snprintf(msg, sizeof(msg), "guest aborted (halt status 255)");
		else
			snprintf(msg, sizeof(msg), "guest halted with status %d", a.exit_status);
		g->stop(g->opaque, status, msg);
		return 1;
	}
	default:
		return 0;
	}
}

static int hvt_io(void *opaque, uint64_t off, uint8_t *data, uint32_t len, bool is_write)
{
	struct hvt_guest *g = opaque;
	g->nr_touched = 0;
	int stop = call(g, off, data, len, is_write);
	for (unsigned i = 0; i < g->nr_touched; i++)
		gmem_mark(g->mem, g->touched[i].p, g->touched[i].len);
	return stop;
}

int hvt_register(struct hvt_guest *g, struct bus *pio)
{
	/* ports 0x501..0x508 = calls 1..8 (offset 0 is call 1).  A 32-bit
	 * OUT to 0x508 spans ports 0x508-0x50b, so the range covers those
	 * too; an access that starts there is refused in hvt_io(). */
	return bus_register(pio, HVT_PIO_BASE + 1, HVT_NR_CALLS - 1 + 3, hvt_io, g, "hvt");
}

void hvt_close(struct hvt_guest *g)
{
	hvt_ring_detach(g);
	for (unsigned i = 0; i < HVT_MFT_MAX_ENTRIES; i++) {
		blk_close(&g->blk[i]);
		tap_close(&g->tap[i]);
	}
}
