/* virtio-vsock's host side: the connection table (a slot array hashed by
 * port pair), the rings that hold what a host socket has not taken yet,
 * the listening socket and its "CONNECT <port>\n" line, the handshake
 * deadlines, and the host sockets' events.  The queues are
 * virtio/vsock.c's; the contract between the two is virtio/vsock_priv.h.
 *
 * Runs on the vmm thread after the drop phase: every socket call here is
 * in jail/seccomp_rules.c (accept4, socket(AF_UNIX), connect, read,
 * write, shutdown, close, epoll_ctl, timerfd_settime). */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include "virtio/vsock_priv.h"

#define MS 1000000ULL
#define CMD_TIMEOUT_NS (5000 * MS)     /* for the "CONNECT <port>\n" line */
#define REQUEST_TIMEOUT_NS (2000 * MS) /* for the guest's RESPONSE (as Firecracker) */
#define SWEEP_NS (100 * MS)
#define ACCEPT_BATCH 64

/* ---- the CONNECT line (pure; tested in tests/unit/test_vsock.c) ---- */

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

/* ---- the connection table ---- */

static unsigned hash_of(uint32_t local, uint32_t peer)
{
	return ((local * 0x9e3779b1u) ^ (peer * 0x85ebca6bu)) >> 21 & (HASH_SIZE - 1);
}

struct conn *vsock_find(struct virtio_vsock *v, uint32_t local, uint32_t peer)
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

/* ---- the rings ---- */

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

/* ---- watching ---- */

static void arm_sweep(struct virtio_vsock *v)
{
	if (v->timer_armed)
		return;
	struct itimerspec its = {.it_value = {.tv_nsec = SWEEP_NS},
				 .it_interval = {.tv_nsec = SWEEP_NS}};
	if (timerfd_settime(v->timer_fd, 0, &its, NULL) == 0)
		v->timer_armed = true;
}

static void disarm_sweep(struct virtio_vsock *v)
{
	struct itimerspec off;
	memset(&off, 0, sizeof(off));
	timerfd_settime(v->timer_fd, 0, &off, NULL);
	v->timer_armed = false;
}

void vsock_watch_listen(struct virtio_vsock *v, bool on)
{
	if (v->accepting == on || !v->listen_src.added)
		return;
	if (ev_mod(v->dev->ev, &v->listen_src, on ? EPOLLIN : 0) == 0)
		v->accepting = on;
}

void vsock_watch(struct conn *c)
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

void vsock_watch_all(struct virtio_vsock *v)
{
	for (unsigned i = 0; i < v->hi; i++)
		vsock_watch(&v->conns[i]);
}

/* ---- opening and closing ---- */

void vsock_orphan_rst(struct virtio_vsock *v, uint64_t src_cid, uint32_t src_port,
		      uint32_t dst_port)
{
	if (v->nr_orphans == ORPHANS_MAX) {
		if (!v->stats.rst_dropped++)
			fprintf(stderr,
				"ember: virtio-vsock: %u resets wait for rx buffers; "
				"further ones are dropped\n",
				ORPHANS_MAX);
		return;
	}
	v->orphans[(v->orphan_head + v->nr_orphans++) % ORPHANS_MAX] =
	    (struct orphan){src_port, dst_port, src_cid};
}

void vsock_conn_close(struct virtio_vsock *v, struct conn *c, bool rst)
{
	if (c->state == C_FREE)
		return;
	if (rst && (c->state == C_EST || (c->state == C_REQ && c->req_sent)))
		vsock_orphan_rst(v, VSOCK_HOST_CID, c->local_port, c->peer_port);
	if (c->src.added)
		ev_del(v->dev->ev, &c->src);
	close(c->fd);
	if (c->hashed)
		hash_del(v, c);
	ring_give(v, c);
	c->state = C_FREE;
	c->fd = -1;
	v->nr_conns--;
	v->stats.conns_removed++;
	while (v->hi && v->conns[v->hi - 1].state == C_FREE)
		v->hi--;
	vsock_watch_listen(v, v->dev && virtio_live(v->dev)); /* a slot (or an fd) is free */
}

void vsock_drop_all(struct virtio_vsock *v)
{
	for (unsigned i = 0; i < v->hi; i++)
		vsock_conn_close(v, &v->conns[i], false);
	v->nr_orphans = 0;
	v->rx_starved = false;
	vsock_watch_listen(v, false);
	if (v->timer_armed)
		disarm_sweep(v);
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
	v->stats.conns_added++;
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

void vsock_maybe_finish(struct virtio_vsock *v, struct conn *c)
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
		vsock_conn_close(v, c, true);
}

/* ---- guest to host bytes ---- */

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
			v->stats.tx_write_fails++;
			v->stats.tx_flush_fails++;
			vsock_conn_close(v, c, true); /* the host reader is gone */
			return;
		}
		c->ring_head = (c->ring_head + (uint32_t)w) % VSOCK_BUF_ALLOC;
		c->fwd_cnt += (uint32_t)w;
	}
	if (!buffered(c))
		ring_give(v, c);
	credit_check(c);
	vsock_maybe_finish(v, c);
	vsock_watch(c);
}

/* Straight to the host socket when nothing waits before it, the rest
 * into the ring. */
void vsock_deliver(struct virtio_vsock *v, struct conn *c, const struct vq_chain *ch, uint32_t len)
{
	static uint8_t buf[VSOCK_MAX_PAYLOAD];
	if (c->hup || c->wr_shut) {
		vsock_conn_close(v, c, true);
		return;
	}
	vq_read(ch, VSOCK_HDR_LEN, buf, len);
	uint32_t done = 0;
	if (!buffered(c) && len) {
		ssize_t w = write(c->fd, buf, len);
		if (w < 0 && errno != EAGAIN && errno != EINTR) {
			v->stats.tx_write_fails++;
			vsock_conn_close(v, c, true);
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
	v->stats.tx_bytes_count += len;
	credit_check(c);
}

void vsock_guest_connect(struct virtio_vsock *v, const struct vsock_hdr *h)
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
		v->stats.conns_refused++;
		vsock_orphan_rst(v, VSOCK_HOST_CID, h->dst_port, h->src_port);
		return;
	}
	c->local_port = h->dst_port;
	c->peer_port = h->src_port;
	c->peer_buf_alloc = h->buf_alloc;
	c->peer_fwd_cnt = h->fwd_cnt;
	c->want = W_RESPONSE;
	hash_add(v, c);
	vsock_watch(c);
}

/* ---- host-initiated connections ---- */

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
			vsock_conn_close(v, c, false);
			return;
		}
		c->line[c->line_len++] = ch;
		uint32_t port;
		int r = vsock_parse_connect(c->line, c->line_len, &port);
		if (r < 0) {
			vsock_conn_close(v, c, false); /* Firecracker's answer: none */
			return;
		}
		if (r == 1) {
			c->peer_port = port;
			do {
				c->local_port = v->next_port++;
				if (v->next_port < VSOCK_LOCAL_PORT_BASE)
					v->next_port = VSOCK_LOCAL_PORT_BASE;
			} while (vsock_find(v, c->local_port, port));
			hash_add(v, c);
			c->state = C_REQ;
			c->want = W_REQUEST;
			c->deadline = ev_now_ns() + REQUEST_TIMEOUT_NS;
			arm_sweep(v);
			vsock_watch(c);
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
		vsock_drop_all(v);
	} else if (c->state != C_FREE) {
		if (events & EPOLLERR) {
			v->stats.conn_event_fails++;
			vsock_conn_close(v, c, true);
		} else {
			if (events & EPOLLHUP) {
				/* Reported whatever we watch: stop watching, read
				 * what is left until EOF. */
				c->hup = true;
				c->readable = true;
				ev_del(v->dev->ev, &c->src);
				if (c->state != C_EST || buffered(c) || c->host_eof ||
				    (c->peer_shut & VSOCK_SHUTDOWN_RCV))
					vsock_conn_close(v, c, true);
			}
			if (c->state == C_CMD && (events & EPOLLIN))
				read_line(v, c);
			else if (c->state == C_EST && (events & EPOLLIN))
				c->readable = true;
			if (c->state == C_EST && (events & EPOLLOUT))
				flush(v, c);
			vsock_watch(c);
		}
		vsock_rx(v);
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
			int e = errno;
			if (e == EMFILE || e == ENFILE || e == ENOBUFS || e == ENOMEM)
				vsock_watch_listen(v, false); /* back when a connection closes */
			if (e != EAGAIN && e != EINTR && e != ECONNABORTED)
				v->stats.muxer_event_fails++;
			if (e != EINTR && e != ECONNABORTED)
				break;
			continue;
		}
		if (v->nr_conns >= VSOCK_MAX_CONNS) {
			v->stats.conns_refused++;
			close(fd);
			continue;
		}
		struct conn *c = conn_new(v, fd, C_CMD);
		if (c) {
			c->deadline = ev_now_ns() + CMD_TIMEOUT_NS;
			arm_sweep(v);
		}
	}
	if (!virtio_live(v->dev))
		vsock_drop_all(v);
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
	uint64_t now = ev_now_ns();
	bool more = false;
	for (unsigned i = 0; i < v->hi; i++) {
		struct conn *c = &v->conns[i];
		if (c->state == C_FREE || c->state == C_EST || !c->deadline)
			continue;
		if (now >= c->deadline) {
			v->stats.conns_killed++;
			vsock_conn_close(v, c, true);
		} else {
			more = true;
		}
	}
	if (!more)
		disarm_sweep(v);
	if (virtio_live(v->dev))
		vsock_rx(v);
	pthread_mutex_unlock(&v->dev->lock);
}

int vsock_host_start(struct virtio_vsock *v, struct virtio_dev *d)
{
	int r = 0;
	if (!v->timer_src.added)
		r = ev_add(d->ev, &v->timer_src, v->timer_fd, EPOLLIN, on_timer, v);
	if (!r && !v->listen_src.added) {
		r = ev_add(d->ev, &v->listen_src, v->listen_fd, EPOLLIN, on_listen, v);
		v->accepting = r == 0;
	}
	return r;
}

/* ---- the listening socket ---- */

int vsock_host_open(struct virtio_vsock *v, char *err, size_t errlen)
{
	/* A socket left by an earlier run is replaced; anything else there
	 * is somebody's file. */
	struct stat s;
	if (lstat(v->uds, &s) == 0) {
		if (!S_ISSOCK(s.st_mode)) {
			snprintf(err, errlen,
				 "uds %s: exists and is not a socket; not replacing it", v->uds);
			return -EEXIST;
		}
		unlink(v->uds);
	}
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	memcpy(sa.sun_path, v->uds, strlen(v->uds));
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
	if (r)
		snprintf(err, errlen, "uds %s: %s", v->uds, strerror(-r));
	return r;
}

void vsock_host_close(struct virtio_vsock *v)
{
	if (v->dev) {
		for (unsigned i = 0; i < v->hi; i++)
			vsock_conn_close(v, &v->conns[i], false);
		ev_del(v->dev->ev, &v->listen_src);
		ev_del(v->dev->ev, &v->timer_src);
	}
	if (v->listen_fd >= 0)
		close(v->listen_fd);
	if (v->timer_fd >= 0)
		close(v->timer_fd);
	if (v->uds_made)
		unlink(v->uds);
}
