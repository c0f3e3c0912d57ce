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

#define ERR(...) (snprintf(err, errlen, __VA_ARGS__), -EINVAL)

int hvt_init(struct hvt_guest *g, const struct hvt_notes *n, char *err, size_t errlen)
{
	memset(g, 0, sizeof(*g));
	g->out_fd = -1;
	for (unsigned i = 0; i < HVT_MFT_MAX_ENTRIES; i++)
		g->blk[i].fd = g->tap[i].fd = -1;
	int r = hvt_check_abi(n, err, errlen);
	return r ? r : hvt_parse_manifest(n->mft, n->mft_len, &g->mft, err, errlen);
}

static int find_entry(const struct hvt_guest *g, const char *name, uint32_t type)
{
	for (unsigned i = 1; i < g->mft.nr; i++)
		if (g->mft.e[i].type == type && strcmp(g->mft.e[i].name, name) == 0)
			return (int)i;
	return -1;
}

/* "storage (block), service (net)" for messages */
static void list_devices(const struct hvt_guest *g, char *buf, size_t len)
{
	size_t o = 0;
	buf[0] = '\0';
	for (unsigned i = 1; i < g->mft.nr && o < len; i++)
		o += (size_t)snprintf(buf + o, len - o, "%s%s (%s)", i > 1 ? ", " : "",
				      g->mft.e[i].name,
				      g->mft.e[i].type == HVT_MFT_BLOCK ? "block" : "net");
	if (g->mft.nr <= 1)
		snprintf(buf, len, "no devices");
}

int hvt_attach(struct hvt_guest *g, const struct vm_config *cfg, char *err, size_t errlen)
{
	char have[512], why[512];
	list_devices(g, have, sizeof(have));
	for (unsigned i = 0; i < cfg->nr_blocks; i++) {
		const struct cfg_block *b = &cfg->blocks[i];
		int k = find_entry(g, b->name, HVT_MFT_BLOCK);
		if (k < 0)
			return ERR("--block:%s: the unikernel's manifest has no block device '%s' "
				   "(it has: %s)",
				   b->name, b->name, have);
		int r = blk_open(&g->blk[k], b->path, b->read_only, why, sizeof(why));
		if (r) {
			snprintf(err, errlen, "--block:%s: %s", b->name, why);
			return r;
		}
		struct hvt_mft_entry *e = &g->mft.e[k];
		e->u.block.capacity = g->blk[k].capacity;
		e->u.block.block_size = BLK_SECTOR;
		e->attached = 1;
	}
	for (unsigned i = 0; i < cfg->nr_nets; i++) {
		const struct cfg_net *n = &cfg->nets[i];
		int k = find_entry(g, n->name, HVT_MFT_NET);
		if (k < 0)
			return ERR("--net:%s: the unikernel's manifest has no net device '%s' "
				   "(it has: %s)",
				   n->name, n->name, have);
		int r = tap_open(&g->tap[k], n->tap, why, sizeof(why));
		if (r) {
			snprintf(err, errlen, "--net:%s: %s", n->name, why);
			return r;
		}
		struct hvt_mft_entry *e = &g->mft.e[k];
		if (n->has_mac)
			memcpy(e->u.net.mac, n->mac, 6);
		else
			tap_random_mac(e->u.net.mac);
		e->u.net.mtu = TAP_MTU;
		e->attached = 1;
	}
	for (unsigned i = 1; i < g->mft.nr; i++) {
		const struct hvt_mft_entry *e = &g->mft.e[i];
		if (!e->attached)
			return ERR(
			    "the unikernel's %s device '%s' is not attached: give --%s:%s=%s",
			    e->type == HVT_MFT_BLOCK ? "block" : "net", e->name,
			    e->type == HVT_MFT_BLOCK ? "block" : "net", e->name,
			    e->type == HVT_MFT_BLOCK ? "PATH" : "TAP");
	}
	return 0;
}

int hvt_setup(struct hvt_guest *g, const struct gmem *m, uint64_t ram, uint64_t kernel_end,
	      const char *cmdline, size_t cmdline_len, char *err, size_t errlen)
{
	g->mem = m;
	if (ram > HVT_MAX_MEM)
		return ERR("memory: hvt unikernels get at most %llu MiB (asked for %llu MiB)",
			   (unsigned long long)(HVT_MAX_MEM >> 20),
			   (unsigned long long)(ram >> 20));
	g->mem_size = ram & ~(HVT_PAGE - 1);
	kernel_end = (kernel_end + 4095) & ~4095ULL; /* page-aligned, as solo5-hvt's */
	g->kernel_end = kernel_end;
	/* room for the kernel and at least a page of stack above it */
	if (g->mem_size < HVT_PAGE || kernel_end + 4096 > g->mem_size)
		return ERR("memory: %llu MiB (rounded down to 2 MiB) does not hold the unikernel, "
			   "which ends at 0x%llx: give more memory",
			   (unsigned long long)(ram >> 20), (unsigned long long)kernel_end);
	if (cmdline_len + 1 > HVT_CMDLINE_SIZE)
		return ERR("cmdline: %zu bytes is too long for an hvt unikernel (at most %d)",
			   cmdline_len, HVT_CMDLINE_SIZE - 1);
	if (hvt_page_tables(m, g->mem_size))
		return ERR("memory: cannot write page tables");

	size_t mft_len = sizeof(struct hvt_mft) + g->mft.nr * sizeof(g->mft.e[0]);
	struct hvt_mft hdr = {.version = HVT_MFT_VERSION, .entries = g->mft.nr};
	struct hvt_boot_info bi = {
	    .mem_size = g->mem_size,
	    .kernel_end = kernel_end,
	    .cmdline = HVT_CMDLINE,
	    .mft = HVT_MFT,
	};
	uint64_t gdt[VCPU_GDT_ENTRIES];
	vcpu_gdt_build(gdt, VCPU_MODE_HVT64);
	char *cl = gmem_ptr(m, HVT_CMDLINE, cmdline_len + 1);
	if (!cl || gmem_write(m, HVT_BOOT_INFO, &bi, sizeof(bi)) ||
	    gmem_write(m, HVT_GDT, gdt, sizeof(gdt)) || gmem_write(m, HVT_MFT, &hdr, sizeof(hdr)) ||
	    gmem_write(m, HVT_MFT + sizeof(hdr), g->mft.e, mft_len - sizeof(hdr)))
		return ERR("memory: cannot write boot structures");
	memcpy(cl, cmdline, cmdline_len);
	cl[cmdline_len] = '\0';
	return 0;
}

void hvt_set_tsc(struct hvt_guest *g, uint64_t hz)
{
	struct hvt_boot_info *bi = gmem_ptr(g->mem, HVT_BOOT_INFO, sizeof(*bi));
	if (bi)
		bi->cpu_cycle_freq = hz;
}

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
	    !blk_range_ok(&g->blk[a->handle], a->offset, a->len, BLK_SECTOR)) {
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

static void do_net(struct hvt_guest *g, unsigned nr, struct hc_net *a, int *stop)
{
	if (!is_dev(g, a->handle, HVT_MFT_NET)) {
		a->ret = SOLO5_R_EINVAL;
		return;
	}
	uint16_t mtu = g->mft.e[a->handle].u.net.mtu;
	if (nr == HVT_NET_WRITE && (a->len == 0 || a->len > (uint64_t)mtu + TAP_HLEN)) {
		a->ret = SOLO5_R_EINVAL;
		return;
	}
	if (nr == HVT_NET_READ && a->len < (uint64_t)mtu + TAP_HLEN) {
		a->ret = SOLO5_R_EINVAL; /* a frame might not fit */
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
	for (unsigned i = 0; i < HVT_MFT_MAX_ENTRIES; i++) {
		blk_close(&g->blk[i]);
		tap_close(&g->tap[i]);
	}
}
