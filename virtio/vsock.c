/* virtio-vsock (virtio 1.2 §5.10): queue 0 carries packets to the guest,
 * queue 1 from it, queue 2 (events) only holds the driver's buffers.
 * Each connection pairs a guest (cid, port) with a host unix socket; see
 * virtio/vsock.h for the host-side convention.
 *
 * Flow control, both ways (§5.10.6.3).  Guest to host: we advertise
 * VSOCK_BUF_ALLOC per connection and keep what the host socket does not
 * take yet in that connection's ring, so a guest within its credit is
 * never refused and never loses a byte; one that overruns it is reset.
 * Host to guest: a host socket is read only when the guest has credit
 * for it and rx buffers to take it; otherwise it is left unwatched and
 * its bytes wait in the kernel.
 *
 * Runs on the vmm thread after the drop phase: every socket call here is
 * in jail/seccomp_rules.c (accept4, socket(AF_UNIX), connect, read,
 * write, shutdown, close, epoll_ctl, timerfd_settime).  Nothing is
 * allocated after vsock_create(): the rings are one MAP_NORESERVE
 * mapping whose pages are touched only by connections that buffer. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "virtio/vsock.h"

#define Q_RX 0
#define Q_TX 1

#define CONNECT_LINE_MAX 32
#define MS 1000000ULL
#define CMD_TIMEOUT_NS (5000 * MS)     /* for the "CONNECT <port>\n" line */
#define REQUEST_TIMEOUT_NS (2000 * MS) /* for the guest's RESPONSE (as Firecracker) */
#define SWEEP_NS (100 * MS)
#define HASH_SIZE 2048 /* a power of 2 */
#define ORPHANS_MAX 2048
#define NONE 0xffff
#define ACCEPT_BATCH 64

/* ---- pure helpers (tested in tests/unit/test_vsock.c) ---- */

static uint64_t get_le(const uint8_t *p, unsigned n)
{
	uint64_t v = 0;
	for (unsigned i = n; i-- > 0;)
		v = v << 8 | p[i];
	return v;
}

static void put_le(uint8_t *p, uint64_t v, unsigned n)
{
	for (unsigned i = 0; i < n; i++, v >>= 8)
		p[i] = (uint8_t)v;
}

void vsock_hdr_decode(const uint8_t raw[VSOCK_HDR_LEN], struct vsock_hdr *h)
{
	h->src_cid = get_le(raw, 8);
	h->dst_cid = get_le(raw + 8, 8);
	h->src_port = (uint32_t)get_le(raw + 16, 4);
	h->dst_port = (uint32_t)get_le(raw + 20, 4);
	h->len = (uint32_t)get_le(raw + 24, 4);
	h->type = (uint16_t)get_le(raw + 28, 2);
	h->op = (uint16_t)get_le(raw + 30, 2);
	h->flags = (uint32_t)get_le(raw + 32, 4);
	h->buf_alloc = (uint32_t)get_le(raw + 36, 4);
	h->fwd_cnt = (uint32_t)get_le(raw + 40, 4);
}

void vsock_hdr_encode(const struct vsock_hdr *h, uint8_t raw[VSOCK_HDR_LEN])
{
	put_le(raw, h->src_cid, 8);
	put_le(raw + 8, h->dst_cid, 8);
	put_le(raw + 16, h->src_port, 4);
	put_le(raw + 20, h->dst_port, 4);
	put_le(raw + 24, h->len, 4);
	put_le(raw + 28, h->type, 2);
	put_le(raw + 30, h->op, 2);
	put_le(raw + 32, h->flags, 4);
	put_le(raw + 36, h->buf_alloc, 4);
	put_le(raw + 40, h->fwd_cnt, 4);
}

const char *vsock_hdr_check(const struct vsock_hdr *h, uint64_t guest_cid, uint32_t avail)
{
	if (h->src_cid != guest_cid)
		return "source CID is not the guest's";
	if (h->dst_cid != VSOCK_HOST_CID)
		return "destination is not the host (CID 2)";
	if (h->type != VSOCK_TYPE_STREAM)
		return "type is not STREAM (SEQPACKET is not offered)";
	if (h->op < VSOCK_OP_REQUEST || h->op > VSOCK_OP_CREDIT_REQUEST)
		return "unknown op";
	if (h->len > avail)
		return "len runs past the buffer";
	if (h->len > VSOCK_MAX_PAYLOAD)
		return "payload larger than 64 KiB";
	if (h->len && h->op != VSOCK_OP_RW)
		return "payload on a control packet";
	return NULL;
}

int vsock_parse_connect(const char *s, size_t len, uint32_t *port)
{
	static const char kw[] = "CONNECT";
	size_t i = 0;
	for (; i < len && i < sizeof(kw) - 1; i++)
		if (s[i] != kw[i])
			return -EINVAL;
	size_t sp = i;
	while (i < len && s[i] == ' ')
		i++;
	if (i < len && i == sp)
		return -EINVAL; /* "CONNECTx" */
	uint64_t val = 0;
	size_t digits = 0;
	for (; i < len && s[i] >= '0' && s[i] <= '9'; i++) {
		val = val * 10 + (uint64_t)(s[i] - '0');
		if (++digits > 10 || val > UINT32_MAX)
			return -EINVAL;
	}
	if (i < len && !digits)
		return -EINVAL;
	if (i < len && s[i] == '\r')
		i++;
	if (i == len) /* not complete yet */
		return len >= CONNECT_LINE_MAX ? -EINVAL : 0;
	if (s[i] != '\n' || i + 1 != len)
		return -EINVAL;
	*port = (uint32_t)val;
	return 1;
}

uint32_t vsock_peer_credit(uint32_t buf_alloc, uint32_t fwd_cnt, uint32_t tx_cnt)
{
	uint32_t in_flight = tx_cnt - fwd_cnt; /* modulo 2^32: wraps cleanly */
	return in_flight >= buf_alloc ? 0 : buf_alloc - in_flight;
}

/* ---- the device ---- */

enum cstate {
	C_FREE,
	C_CMD, /* host-initiated: reading "CONNECT <port>\n" */
	C_REQ, /* host-initiated: REQUEST to the guest, waiting for RESPONSE */
	C_EST, /* established */
};

/* Control packets owed to the guest. */
#define W_REQUEST 1
#define W_RESPONSE 2
#define W_CREDIT 4

struct conn {
	struct ev_source src;
	struct virtio_vsock *v;
	int fd; /* host socket, non-blocking */
	uint8_t state, want;
	bool req_sent; /* the guest has seen our REQUEST */
	bool readable; /* the host socket may have bytes: read until EAGAIN */
	bool hup;      /* the host peer is gone (no longer watched) */
	bool host_eof; /* read() said 0: SHUTDOWN(SEND) went to the guest */
	bool wr_shut;  /* shutdown(SHUT_WR) done after the guest's SHUTDOWN(SEND) */
	bool hashed;
	uint32_t events;			       /* what src watches now */
	uint32_t peer_shut;			       /* the guest's SHUTDOWN flags so far */
	uint32_t local_port;			       /* host side */
	uint32_t peer_port;			       /* guest side */
	uint32_t peer_buf_alloc, peer_fwd_cnt, tx_cnt; /* host to guest */
	uint32_t rx_cnt, fwd_cnt, fwd_sent;	       /* guest to host */
	int ring;	    /* index into v->rings while bytes wait; -1: none */
	uint32_t ring_head; /* oldest byte not yet written to the host */
	uint64_t deadline;  /* CLOCK_MONOTONIC ns; 0: none */
	uint16_t next;	    /* hash chain */
	uint8_t line_len;
	char line[CONNECT_LINE_MAX];
};

/* An RST owed to the guest for a connection that no longer exists here. */
struct orphan {
	uint32_t src_port, dst_port;
	uint64_t src_cid;
};

struct virtio_vsock {
	struct vsock_state st; /* first: the snapshot record */
	char uds[sizeof(((struct sockaddr_un *)0)->sun_path)];
	bool uds_made;
	int listen_fd, timer_fd;
	struct ev_source listen_src, timer_src;
	bool accepting, timer_armed, rx_starved;
	struct virtio_dev *dev; /* set on first activate */

	/* Slots are taken round robin (cursor): an event epoll reported for
	 * a connection closed meanwhile in the same batch then finds its
	 * slot free, not reused. */
	struct conn *conns;		   /* VSOCK_MAX_CONNS */
	unsigned nr_conns, hi, rr, cursor; /* conns[hi..] are free; rr: rx round robin */
	uint16_t hash[HASH_SIZE];
	/* VSOCK_MAX_CONNS rings of VSOCK_BUF_ALLOC bytes, lent lowest first
	 * to connections with bytes waiting: the pages touched stay few. */
	uint8_t *rings;
	uint64_t ring_used[VSOCK_MAX_CONNS / 64];
	uint32_t next_port; /* the next local port to try */

	struct orphan orphans[ORPHANS_MAX];
	unsigned orphan_head, nr_orphans;
	uint64_t guest_errors, dropped_rsts, refused;
};

static void guest_error(struct virtio_vsock *v, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void guest_error(struct virtio_vsock *v, const char *fmt, ...)
{
	if (v->guest_errors++ && !(v->dev && v->dev->verbose))
		return;
	char msg[200];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	fprintf(stderr, "ember: virtio-vsock: %s; connection reset%s\n", msg,
		v->guest_errors == 1 ? " (further ones are counted, not logged)" : "");
}

static uint64_t now_ns(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (uint64_t)t.tv_sec * 1000000000ULL + (uint64_t)t.tv_nsec;
}

static unsigned hash_of(uint32_t local, uint32_t peer)
{
	return ((local * 0x9e3779b1u) ^ (peer * 0x85ebca6bu)) >> 21 & (HASH_SIZE - 1);
}

static struct conn *find(struct virtio_vsock *v, uint32_t local, uint32_t peer)
{
	for (uint16_t i = v->hash[hash_of(local, peer)]; i != NONE; i = v->conns[i].next)
		if (v->conns[i].local_port == local && v->conns[i].peer_port == peer)
			return &v->conns[i];
	return NULL;
}

static void hash_add(struct virtio_vsock *v, struct conn *c)
{
	uint16_t *head = &v->hash[hash_of(c->local_port, c->peer_port)];
	c->next = *head;
	*head = (uint16_t)(c - v->conns);
	c->hashed = true;
}

static void hash_del(struct virtio_vsock *v, struct conn *c)
{
	uint16_t me = (uint16_t)(c - v->conns);
	for (uint16_t *p = &v->hash[hash_of(c->local_port, c->peer_port)]; *p != NONE;
	     p = &v->conns[*p].next)
		if (*p == me) {
			*p = c->next;
			break;
		}
	c->hashed = false;
}

static uint8_t *ring(struct conn *c)
{
	return c->v->rings + (size_t)c->ring * VSOCK_BUF_ALLOC;
}

/* There is always one: a ring per connection at most. */
static void ring_take(struct virtio_vsock *v, struct conn *c)
{
	for (unsigned w = 0; w < VSOCK_MAX_CONNS / 64 && c->ring < 0; w++)
		if (~v->ring_used[w]) {
			unsigned b = (unsigned)__builtin_ctzll(~v->ring_used[w]);
			v->ring_used[w] |= 1ULL << b;
			c->ring = (int)(w * 64 + b);
		}
	c->ring_head = 0;
}

static void ring_give(struct virtio_vsock *v, struct conn *c)
{
	if (c->ring >= 0)
		v->ring_used[c->ring / 64] &= ~(1ULL << (c->ring % 64));
	c->ring = -1;
	c->ring_head = 0;
}

static uint32_t buffered(const struct conn *c)
{
	return c->rx_cnt - c->fwd_cnt;
}

static bool can_send_data(const struct conn *c)
{
	return c->state == C_EST && !c->host_eof && !(c->peer_shut & VSOCK_SHUTDOWN_RCV) &&
	       vsock_peer_credit(c->peer_buf_alloc, c->peer_fwd_cnt, c->tx_cnt) > 0;
}

static void arm_sweep(struct virtio_vsock *v)
{
	if (v->timer_armed)
		return;
	struct itimerspec its = {.it_value = {.tv_nsec = SWEEP_NS},
				 .it_interval = {.tv_nsec = SWEEP_NS}};
	if (timerfd_settime(v->timer_fd, 0, &its, NULL) == 0)
		v->timer_armed = true;
}

static void watch_listen(struct virtio_vsock *v, bool on)
{
	if (v->accepting == on || !v->listen_src.added)
		return;
	if (ev_mod(v->dev->ev, &v->listen_src, on ? EPOLLIN : 0) == 0)
		v->accepting = on;
}

/* What c's host socket should be watched for, now. */
static void watch(struct conn *c)
{
	if (c->state == C_FREE || !c->src.added)
		return;
	uint32_t e = 0;
	if (c->state == C_CMD)
		e = EPOLLIN;
	else if (can_send_data(c) && !c->readable && !c->v->rx_starved)
		e = EPOLLIN;
	if (buffered(c))
		e |= EPOLLOUT;
	if (e != c->events && ev_mod(c->v->dev->ev, &c->src, e) == 0)
		c->events = e;
}

static void watch_all(struct virtio_vsock *v)
{
	for (unsigned i = 0; i < v->hi; i++)
		watch(&v->conns[i]);
}

static void orphan_rst(struct virtio_vsock *v, uint64_t src_cid, uint32_t src_port,
		       uint32_t dst_port)
{
	if (v->nr_orphans == ORPHANS_MAX) {
		if (!v->dropped_rsts++)
			fprintf(stderr,
				"ember: virtio-vsock: %u resets wait for rx buffers; "
				"further ones are dropped\n",
				ORPHANS_MAX);
		return;
	}
	v->orphans[(v->orphan_head + v->nr_orphans++) % ORPHANS_MAX] =
	    (struct orphan){src_port, dst_port, src_cid};
}

/* Close c's host socket and forget it; rst: tell the guest (when it knows
 * the connection). */
static void conn_close(struct virtio_vsock *v, struct conn *c, bool rst)
{
	if (c->state == C_FREE)
		return;
	if (rst && (c->state == C_EST || (c->state == C_REQ && c->req_sent)))
		orphan_rst(v, VSOCK_HOST_CID, c->local_port, c->peer_port);
	if (c->src.added)
		ev_del(v->dev->ev, &c->src);
	close(c->fd);
	if (c->hashed)
		hash_del(v, c);
	ring_give(v, c);
	c->state = C_FREE;
	c->fd = -1;
	v->nr_conns--;
	while (v->hi && v->conns[v->hi - 1].state == C_FREE)
		v->hi--;
	watch_listen(v, v->dev && virtio_live(v->dev)); /* a slot (or an fd) is free */
}

/* Every connection closed, no packet owed: after a reset, or when the
 * driver broke the device (nothing may be served until it resets). */
static void drop_all(struct virtio_vsock *v)
{
	for (unsigned i = 0; i < v->hi; i++)
		conn_close(v, &v->conns[i], false);
	v->nr_orphans = 0;
	v->rx_starved = false;
	watch_listen(v, false);
	if (v->timer_armed) {
		struct itimerspec off;
		memset(&off, 0, sizeof(off));
		timerfd_settime(v->timer_fd, 0, &off, NULL);
		v->timer_armed = false;
	}
}

static void on_conn(struct ev_source *src, uint32_t events);

/* A free slot with fd, watched for EPOLLIN; NULL (fd closed) if none. */
static struct conn *conn_new(struct virtio_vsock *v, int fd, enum cstate state)
{
	struct conn *c = NULL;
	for (unsigned k = 0; k < VSOCK_MAX_CONNS && !c; k++) {
		unsigned i = (v->cursor + k) % VSOCK_MAX_CONNS;
		if (v->conns[i].state == C_FREE) {
			c = &v->conns[i];
			v->cursor = i + 1;
		}
	}
	if (!c) {
		close(fd);
		return NULL;
	}
	memset(c, 0, sizeof(*c));
	c->v = v;
	c->fd = fd;
	c->state = (uint8_t)state;
	c->next = NONE;
	c->ring = -1;
	c->events = EPOLLIN;
	if (ev_add(v->dev->ev, &c->src, fd, EPOLLIN, on_conn, c)) {
		close(fd);
		c->state = C_FREE;
		return NULL;
	}
	v->nr_conns++;
	if ((unsigned)(c - v->conns) >= v->hi)
		v->hi = (unsigned)(c - v->conns) + 1;
	return c;
}

/* The guest may be waiting for credit: tell it what we forwarded once a
 * half of its window is unacknowledged. */
static void credit_check(struct conn *c)
{
	if (c->fwd_cnt != c->fwd_sent && c->rx_cnt - c->fwd_sent >= VSOCK_BUF_ALLOC / 2)
		c->want |= W_CREDIT;
}

/* Both directions are done (or the guest closed): close, RST. */
static void maybe_finish(struct virtio_vsock *v, struct conn *c)
{
	if (c->state != C_EST || buffered(c))
		return;
	if ((c->peer_shut & VSOCK_SHUTDOWN_SEND) && !c->wr_shut && !c->hup) {
		shutdown(c->fd, SHUT_WR); /* the host reader sees EOF */
		c->wr_shut = true;
	}
	bool guest_closed = (c->peer_shut & (VSOCK_SHUTDOWN_RCV | VSOCK_SHUTDOWN_SEND)) ==
			    (VSOCK_SHUTDOWN_RCV | VSOCK_SHUTDOWN_SEND);
	if (guest_closed || (c->host_eof && (c->peer_shut & VSOCK_SHUTDOWN_SEND)))
		conn_close(v, c, true);
}

/* Write what c's ring holds to the host socket. */
static void flush(struct virtio_vsock *v, struct conn *c)
{
	while (buffered(c)) {
		uint32_t n = buffered(c);
		if (n > VSOCK_BUF_ALLOC - c->ring_head)
			n = VSOCK_BUF_ALLOC - c->ring_head;
		ssize_t w = write(c->fd, ring(c) + c->ring_head, n);
		if (w < 0 && (errno == EAGAIN || errno == EINTR))
			break;
		if (w <= 0) {
			conn_close(v, c, true); /* the host reader is gone */
			return;
		}
		c->ring_head = (c->ring_head + (uint32_t)w) % VSOCK_BUF_ALLOC;
		c->fwd_cnt += (uint32_t)w;
	}
	if (!buffered(c))
		ring_give(v, c);
	credit_check(c);
	maybe_finish(v, c);
	watch(c);
}

/* An RW packet's payload (len bytes after the header): straight to the
 * host socket when nothing waits before it, the rest into the ring. */
static void deliver(struct virtio_vsock *v, struct conn *c, const struct vq_chain *ch, uint32_t len)
{
	static __thread uint8_t buf[VSOCK_MAX_PAYLOAD];
	if (c->hup || c->wr_shut) {
		conn_close(v, c, true);
		return;
	}
	vq_read(ch, VSOCK_HDR_LEN, buf, len);
	uint32_t done = 0;
	if (!buffered(c) && len) {
		ssize_t w = write(c->fd, buf, len);
		if (w < 0 && errno != EAGAIN && errno != EINTR) {
			conn_close(v, c, true);
			return;
		}
		done = w > 0 ? (uint32_t)w : 0;
	}
	uint32_t rest = len - done;
	if (rest) {
		if (c->ring < 0)
			ring_take(v, c);
		uint32_t tail = (c->ring_head + buffered(c)) % VSOCK_BUF_ALLOC;
		uint32_t first = VSOCK_BUF_ALLOC - tail < rest ? VSOCK_BUF_ALLOC - tail : rest;
		memcpy(ring(c) + tail, buf + done, first);
		memcpy(ring(c), buf + done + first, rest - first);
	}
	c->rx_cnt += len;
	c->fwd_cnt += done;
	credit_check(c);
}

/* A guest REQUEST to host port h->dst_port: connect to "<uds>_<port>". */
static void guest_connect(struct virtio_vsock *v, const struct vsock_hdr *h)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	int n = snprintf(sa.sun_path, sizeof(sa.sun_path), "%s_%u", v->uds, h->dst_port);
	int fd = -1;
	if (v->nr_conns < VSOCK_MAX_CONNS && n > 0 && (size_t)n < sizeof(sa.sun_path))
		fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	/* A unix stream connect completes at once or fails (a full backlog
	 * says EAGAIN): no EINPROGRESS to wait for. */
	if (fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		close(fd);
		fd = -1;
	}
	struct conn *c = fd >= 0 ? conn_new(v, fd, C_EST) : NULL;
	if (!c) {
		v->refused++;
		orphan_rst(v, VSOCK_HOST_CID, h->dst_port, h->src_port);
		return;
	}
	c->local_port = h->dst_port;
	c->peer_port = h->src_port;
	c->peer_buf_alloc = h->buf_alloc;
	c->peer_fwd_cnt = h->fwd_cnt;
	c->want = W_RESPONSE;
	hash_add(v, c);
	watch(c);
}

/* One packet from the guest (its chain ch, header h already decoded). */
static void handle(struct virtio_vsock *v, const struct vsock_hdr *h, const struct vq_chain *ch)
{
	const char *bad = vsock_hdr_check(h, v->st.guest_cid, ch->out_len - VSOCK_HDR_LEN);
	bool addressed = h->src_cid == v->st.guest_cid && h->dst_cid == VSOCK_HOST_CID;
	struct conn *c = addressed ? find(v, h->dst_port, h->src_port) : NULL;
	if (bad) {
		/* Another CID or type is a refused connection, not a fault. */
		if (addressed && h->type == VSOCK_TYPE_STREAM)
			guest_error(v, "packet %u:%u -> %u (op %u, len %u): %s",
				    (unsigned)h->src_cid, h->src_port, h->dst_port, h->op, h->len,
				    bad);
		if (c)
			conn_close(v, c, true);
		else if (h->op != VSOCK_OP_RST)
			orphan_rst(v, h->dst_cid, h->dst_port, h->src_port);
		return;
	}
	if (h->op == VSOCK_OP_REQUEST) {
		if (c) /* a second REQUEST on a live connection: both are wrong */
			conn_close(v, c, true);
		else
			guest_connect(v, h);
		return;
	}
	if (!c) {
		if (h->op != VSOCK_OP_RST)
			orphan_rst(v, VSOCK_HOST_CID, h->dst_port, h->src_port);
		return;
	}
	c->peer_buf_alloc = h->buf_alloc;
	c->peer_fwd_cnt = h->fwd_cnt;
	switch (h->op) {
	case VSOCK_OP_RESPONSE: {
		if (c->state != C_REQ || !c->req_sent) {
			conn_close(v, c, true);
			return;
		}
		char ok[24];
		int n = snprintf(ok, sizeof(ok), "OK %u\n", c->local_port);
		/* A fresh socket's send buffer is empty: a short write means
		 * the host is gone. */
		if (write(c->fd, ok, (size_t)n) != n) {
			conn_close(v, c, true);
			return;
		}
		c->state = C_EST;
		c->deadline = 0;
		break;
	}
	case VSOCK_OP_RST:
		conn_close(v, c, false);
		return;
	case VSOCK_OP_SHUTDOWN:
		c->peer_shut |= h->flags & (VSOCK_SHUTDOWN_RCV | VSOCK_SHUTDOWN_SEND);
		maybe_finish(v, c);
		if (c->state == C_FREE)
			return;
		break;
	case VSOCK_OP_RW:
		if (c->state != C_EST || (c->peer_shut & VSOCK_SHUTDOWN_SEND)) {
			conn_close(v, c, true);
			return;
		}
		if (buffered(c) + (uint64_t)h->len > VSOCK_BUF_ALLOC) {
			guest_error(v, "port %u -> %u: %u bytes beyond the credit of %u",
				    h->src_port, h->dst_port,
				    (unsigned)(buffered(c) + h->len - VSOCK_BUF_ALLOC),
				    VSOCK_BUF_ALLOC);
			conn_close(v, c, true);
			return;
		}
		deliver(v, c, ch, h->len);
		if (c->state == C_FREE)
			return;
		break;
	case VSOCK_OP_CREDIT_REQUEST:
		c->want |= W_CREDIT;
		break;
	}
	watch(c);
}

/* Fill the chain with c's next packet; returns its length, 0 for none
 * (the socket had nothing after all, or the connection ended). */
static uint32_t next_packet(struct virtio_vsock *v, struct conn *c, const struct vq_chain *ch)
{
	static __thread uint8_t buf[VSOCK_MAX_PAYLOAD];
	struct vsock_hdr h = {
	    .src_cid = VSOCK_HOST_CID,
	    .dst_cid = v->st.guest_cid,
	    .src_port = c->local_port,
	    .dst_port = c->peer_port,
	    .type = VSOCK_TYPE_STREAM,
	    .buf_alloc = VSOCK_BUF_ALLOC,
	    .fwd_cnt = c->fwd_cnt,
	};
	if (c->want & W_REQUEST) {
		h.op = VSOCK_OP_REQUEST;
		c->req_sent = true;
	} else if (c->want & W_RESPONSE) {
		h.op = VSOCK_OP_RESPONSE;
	} else if (c->readable && can_send_data(c)) {
		uint32_t max = vsock_peer_credit(c->peer_buf_alloc, c->peer_fwd_cnt, c->tx_cnt);
		if (max > ch->in_len - VSOCK_HDR_LEN)
			max = ch->in_len - VSOCK_HDR_LEN;
		if (max > sizeof(buf))
			max = sizeof(buf);
		ssize_t n = read(c->fd, buf, max);
		if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
			c->readable = false;
			watch(c);
			return 0;
		}
		if (n < 0 || (n == 0 && c->hup)) {
			/* The host side is gone entirely: what it sent has been
			 * passed on, RST ends it (Linux still lets the guest read
			 * what it has). */
			conn_close(v, c, true);
			return 0;
		}
		if (n == 0) {
			/* Half-closed by the host: it sends nothing more. */
			c->host_eof = true;
			c->readable = false;
			h.op = VSOCK_OP_SHUTDOWN;
			h.flags = VSOCK_SHUTDOWN_SEND;
		} else {
			h.op = VSOCK_OP_RW;
			h.len = (uint32_t)n;
			vq_write(ch, VSOCK_HDR_LEN, buf, (size_t)n);
			c->tx_cnt += (uint32_t)n;
		}
	} else if (c->want & W_CREDIT) {
		h.op = VSOCK_OP_CREDIT_UPDATE;
	} else {
		return 0;
	}
	uint8_t raw[VSOCK_HDR_LEN];
	vsock_hdr_encode(&h, raw);
	vq_write(ch, 0, raw, sizeof(raw));
	if (h.op == VSOCK_OP_REQUEST)
		c->want &= (uint8_t)~W_REQUEST;
	if (h.op == VSOCK_OP_RESPONSE)
		c->want &= (uint8_t)~W_RESPONSE;
	c->want &= (uint8_t)~W_CREDIT; /* every header carries the credit */
	c->fwd_sent = c->fwd_cnt;
	if (h.op == VSOCK_OP_SHUTDOWN)
		maybe_finish(v, c);
	watch(c);
	return VSOCK_HDR_LEN + h.len;
}

static bool has_packet(const struct conn *c)
{
	return c->state != C_FREE && c->state != C_CMD &&
	       (c->want || (c->readable && can_send_data(c)));
}

/* The next connection with something for the guest, round robin. */
static struct conn *next_ready(struct virtio_vsock *v)
{
	for (unsigned k = 0; k < v->hi; k++) {
		unsigned i = (v->rr + k) % v->hi;
		if (has_packet(&v->conns[i])) {
			v->rr = i + 1;
			return &v->conns[i];
		}
	}
	return NULL;
}

static void check_broken(struct virtio_vsock *v)
{
	if (v->dev->broken)
		drop_all(v);
}

/* Move packets to the guest until it has no buffers or we have nothing. */
static void rx(struct virtio_vsock *v)
{
	struct virtio_dev *d = v->dev;
	struct vq *q = &d->vq[Q_RX];
	static __thread struct vq_chain ch;
	char why[VQ_ERR_MAX];
	bool pushed = false;

	while (virtio_live(d) && q->s.ready) {
		struct conn *c = v->nr_orphans ? NULL : next_ready(v);
		if (!v->nr_orphans && !c)
			break;
		int r = vq_pop(q, &ch, why, sizeof(why));
		if (r < 0) {
			virtio_fail(d, "rx queue: %s", why);
			break;
		}
		if (r == 0) {
			if (!v->rx_starved) {
				v->rx_starved = true; /* until the driver notifies queue 0 */
				watch_all(v);
			}
			break;
		}
		/* A header and at least one byte: Linux posts 44 + 4096. */
		if (ch.nr_out || ch.in_len <= VSOCK_HDR_LEN) {
			virtio_fail(d,
				    "rx queue: buffer %u has %u writable bytes%s (a packet "
				    "needs more than %u)",
				    ch.head, ch.in_len, ch.nr_out ? " and readable ones" : "",
				    VSOCK_HDR_LEN);
			break;
		}
		uint32_t len;
		if (v->nr_orphans) {
			const struct orphan *o = &v->orphans[v->orphan_head];
			struct vsock_hdr h = {
			    .src_cid = o->src_cid,
			    .dst_cid = v->st.guest_cid,
			    .src_port = o->src_port,
			    .dst_port = o->dst_port,
			    .type = VSOCK_TYPE_STREAM,
			    .op = VSOCK_OP_RST,
			};
			uint8_t raw[VSOCK_HDR_LEN];
			vsock_hdr_encode(&h, raw);
			vq_write(&ch, 0, raw, sizeof(raw));
			v->orphan_head = (v->orphan_head + 1) % ORPHANS_MAX;
			v->nr_orphans--;
			len = VSOCK_HDR_LEN;
		} else {
			len = next_packet(v, c, &ch);
		}
		if (!len) {
			vq_unpop(q);
			continue;
		}
		vq_push(q, ch.head, len);
		pushed = true;
	}
	if (pushed)
		virtio_queue_done(d, Q_RX);
	check_broken(v);
}

static void tx(struct virtio_vsock *v)
{
	struct virtio_dev *d = v->dev;
	struct vq *q = &d->vq[Q_TX];
	static __thread struct vq_chain ch;
	char why[VQ_ERR_MAX];
	bool pushed = false;

	while (virtio_live(d)) {
		int r = vq_pop(q, &ch, why, sizeof(why));
		if (r < 0) {
			virtio_fail(d, "tx queue: %s", why);
			break;
		}
		if (r == 0)
			break;
		if (ch.out_len < VSOCK_HDR_LEN) {
			virtio_fail(d,
				    "tx queue: packet %u has %u readable bytes, less than "
				    "its %u-byte header",
				    ch.head, ch.out_len, VSOCK_HDR_LEN);
			break;
		}
		uint8_t raw[VSOCK_HDR_LEN];
		struct vsock_hdr h;
		vq_read(&ch, 0, raw, sizeof(raw));
		vsock_hdr_decode(raw, &h);
		handle(v, &h, &ch);
		vq_push(q, ch.head, 0);
		pushed = true;
	}
	if (pushed)
		virtio_queue_done(d, Q_TX);
	rx(v); /* replies, credit, data the new credit lets through */
}

/* A host-initiated connection's line, read a byte at a time so that
 * nothing after it is taken from the stream. */
static void read_line(struct virtio_vsock *v, struct conn *c)
{
	for (;;) {
		char ch;
		ssize_t n = read(c->fd, &ch, 1);
		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			return;
		if (n <= 0) {
			conn_close(v, c, false);
			return;
		}
		c->line[c->line_len++] = ch;
		uint32_t port;
		int r = vsock_parse_connect(c->line, c->line_len, &port);
		if (r < 0) {
			conn_close(v, c, false); /* Firecracker's answer: none */
			return;
		}
		if (r == 1) {
			c->peer_port = port;
			do {
				c->local_port = v->next_port++;
				if (v->next_port < VSOCK_LOCAL_PORT_BASE)
					v->next_port = VSOCK_LOCAL_PORT_BASE;
			} while (find(v, c->local_port, port));
			hash_add(v, c);
			c->state = C_REQ;
			c->want = W_REQUEST;
			c->deadline = now_ns() + REQUEST_TIMEOUT_NS;
			arm_sweep(v);
			watch(c);
			return;
		}
	}
}

static void on_conn(struct ev_source *src, uint32_t events)
{
	struct conn *c = src->opaque;
	struct virtio_vsock *v = c->v;
	pthread_mutex_lock(&v->dev->lock);
	if (!virtio_live(v->dev)) {
		drop_all(v);
	} else if (c->state != C_FREE) {
		if (events & EPOLLERR) {
			conn_close(v, c, true);
		} else {
			if (events & EPOLLHUP) {
				/* Reported whatever we watch: stop watching, read
				 * what is left until EOF. */
				c->hup = true;
				c->readable = true;
				ev_del(v->dev->ev, &c->src);
				if (c->state != C_EST || buffered(c) || c->host_eof ||
				    (c->peer_shut & VSOCK_SHUTDOWN_RCV))
					conn_close(v, c, true);
			}
			if (c->state == C_CMD && (events & EPOLLIN))
				read_line(v, c);
			else if (c->state == C_EST && (events & EPOLLIN))
				c->readable = true;
			if (c->state == C_EST && (events & EPOLLOUT))
				flush(v, c);
			watch(c);
		}
		rx(v);
	}
	pthread_mutex_unlock(&v->dev->lock);
}

static void on_listen(struct ev_source *src, uint32_t events)
{
	struct virtio_vsock *v = src->opaque;
	pthread_mutex_lock(&v->dev->lock);
	for (unsigned i = 0; i < ACCEPT_BATCH && virtio_live(v->dev); i++) {
		int fd = accept4(v->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS ||
			    errno == ENOMEM)
				watch_listen(v, false); /* back when a connection closes */
			if (errno != EINTR && errno != ECONNABORTED)
				break;
			continue;
		}
		if (v->nr_conns >= VSOCK_MAX_CONNS) {
			v->refused++;
			close(fd);
			continue;
		}
		struct conn *c = conn_new(v, fd, C_CMD);
		if (c) {
			c->deadline = now_ns() + CMD_TIMEOUT_NS;
			arm_sweep(v);
		}
	}
	if (!virtio_live(v->dev))
		drop_all(v);
	pthread_mutex_unlock(&v->dev->lock);
}

/* Deadlines: a CONNECT line that does not come, a RESPONSE that does
 * not: the host socket is closed (the guest gets RST if it saw REQUEST). */
static void on_timer(struct ev_source *src, uint32_t events)
{
	struct virtio_vsock *v = src->opaque;
	uint64_t ticks;
	if (read(v->timer_fd, &ticks, sizeof(ticks)) != sizeof(ticks))
		return;
	pthread_mutex_lock(&v->dev->lock);
	uint64_t now = now_ns();
	bool more = false;
	for (unsigned i = 0; i < v->hi; i++) {
		struct conn *c = &v->conns[i];
		if (c->state == C_FREE || c->state == C_EST || !c->deadline)
			continue;
		if (now >= c->deadline)
			conn_close(v, c, true);
		else
			more = true;
	}
	if (!more) {
		struct itimerspec off;
		memset(&off, 0, sizeof(off));
		timerfd_settime(v->timer_fd, 0, &off, NULL);
		v->timer_armed = false;
	}
	if (virtio_live(v->dev))
		rx(v);
	pthread_mutex_unlock(&v->dev->lock);
}

/* §5.10.4: le64 guest_cid. */
static void config_read(struct virtio_dev *d, uint32_t off, uint8_t *data, uint32_t len)
{
	const struct virtio_vsock *v = d->priv;
	uint8_t cfg[8];
	put_le(cfg, v->st.guest_cid, 8);
	for (uint32_t i = 0; i < len && off + i < sizeof(cfg); i++)
		data[i] = cfg[off + i];
}

static int activate(struct virtio_dev *d)
{
	struct virtio_vsock *v = d->priv;
	v->dev = d;
	v->rx_starved = false;
	int r = 0;
	if (!v->timer_src.added)
		r = ev_add(d->ev, &v->timer_src, v->timer_fd, EPOLLIN, on_timer, v);
	if (!r && !v->listen_src.added) {
		r = ev_add(d->ev, &v->listen_src, v->listen_fd, EPOLLIN, on_listen, v);
		v->accepting = r == 0;
	}
	watch_listen(v, true);
	return r;
}

static void notify(struct virtio_dev *d, unsigned q)
{
	struct virtio_vsock *v = d->priv;
	if (q == Q_TX) {
		tx(v);
	} else if (q == Q_RX) {
		if (v->rx_starved) {
			v->rx_starved = false;
			watch_all(v);
		}
		rx(v);
	}
	/* Queue 2 (events): its buffers wait for a TRANSPORT_RESET. */
}

/* The rings are gone: so are the connections (the host sockets close;
 * a host peer sees EOF). */
static void reset(struct virtio_dev *d)
{
	struct virtio_vsock *v = d->priv;
	if (v->dev)
		drop_all(v);
}

const struct virtio_dev_ops vsock_ops = {
    .kind = "vsock",
    .device_id = VIRTIO_ID_VSOCK,
    .nr_queues = 3,
    .config_read = config_read,
    .activate = activate,
    .notify = notify,
    .reset = reset,
};

int vsock_create(struct virtio_vsock **out, uint64_t guest_cid, const char *uds_path, char *err,
		 size_t errlen)
{
	*out = NULL;
	/* 0, 1 and 2 are the hypervisor, local and host; -1U is "any". */
	if (guest_cid < 3 || guest_cid >= UINT32_MAX) {
		snprintf(err, errlen, "guest CID %llu: must be 3 .. 4294967294",
			 (unsigned long long)guest_cid);
		return -EINVAL;
	}
	struct virtio_vsock *v = calloc(1, sizeof(*v));
	/* Room for "_4294967295" after the path (guest-initiated sockets). */
	if (!v || strlen(uds_path) + 11 >= sizeof(v->uds) || !uds_path[0]) {
		int e = v ? -ENAMETOOLONG : -ENOMEM;
		snprintf(err, errlen, "uds %s: %s", uds_path,
			 v ? "too long for a unix socket path (at most 96 bytes)"
			   : "out of memory");
		free(v);
		return e;
	}
	v->st.guest_cid = guest_cid;
	v->listen_fd = v->timer_fd = -1;
	v->next_port = VSOCK_LOCAL_PORT_BASE;
	snprintf(v->uds, sizeof(v->uds), "%s", uds_path);
	memset(v->hash, 0xff, sizeof(v->hash));
	v->conns = calloc(VSOCK_MAX_CONNS, sizeof(*v->conns));
	v->rings = mmap(NULL, (size_t)VSOCK_MAX_CONNS * VSOCK_BUF_ALLOC, PROT_READ | PROT_WRITE,
			MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (v->rings == MAP_FAILED)
		v->rings = NULL;
	if (!v->conns || !v->rings) {
		snprintf(err, errlen, "out of memory for %u connections", VSOCK_MAX_CONNS);
		vsock_destroy(v);
		return -ENOMEM;
	}
	for (unsigned i = 0; i < VSOCK_MAX_CONNS; i++)
		v->conns[i].fd = -1;

	/* A socket left by an earlier run is replaced; anything else there
	 * is somebody's file. */
	struct stat s;
	if (lstat(uds_path, &s) == 0) {
		if (!S_ISSOCK(s.st_mode)) {
			snprintf(err, errlen,
				 "uds %s: exists and is not a socket; not replacing it", uds_path);
			vsock_destroy(v);
			return -EEXIST;
		}
		unlink(uds_path);
	}
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	memcpy(sa.sun_path, uds_path, strlen(uds_path));
	v->listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	int r = v->listen_fd < 0 ? -errno : 0;
	if (!r && bind(v->listen_fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
		r = -errno;
	if (!r) {
		v->uds_made = true;
		if (listen(v->listen_fd, 128) < 0)
			r = -errno;
	}
	if (!r) {
		v->timer_fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
		if (v->timer_fd < 0)
			r = -errno;
	}
	if (r) {
		snprintf(err, errlen, "uds %s: %s", uds_path, strerror(-r));
		vsock_destroy(v);
		return r;
	}
	*out = v;
	return 0;
}

void vsock_destroy(struct virtio_vsock *v)
{
	if (!v)
		return;
	if (v->dev) {
		for (unsigned i = 0; i < v->hi; i++)
			conn_close(v, &v->conns[i], false);
		ev_del(v->dev->ev, &v->listen_src);
		ev_del(v->dev->ev, &v->timer_src);
	}
	if (v->listen_fd >= 0)
		close(v->listen_fd);
	if (v->timer_fd >= 0)
		close(v->timer_fd);
	if (v->uds_made)
		unlink(v->uds);
	if (v->rings)
		munmap(v->rings, (size_t)VSOCK_MAX_CONNS * VSOCK_BUF_ALLOC);
	free(v->conns);
	free(v);
}

const struct vsock_state *vsock_state(const struct virtio_vsock *v)
{
	return &v->st;
}
