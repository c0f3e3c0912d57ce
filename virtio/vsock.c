/* virtio-vsock (virtio 1.2 §5.10): queue 0 carries packets to the guest,
 * queue 1 from it, queue 2 carries events (TRANSPORT_RESET after a
 * restore).  This file is the device side: the wire format, the queues,
 * the ops table, create/destroy; the host side (the connections and their
 * sockets) is virtio/vsock_conn.c, the contract between them
 * virtio/vsock_priv.h.  See virtio/vsock.h for the host-side convention.
 *
 * Flow control, both ways (§5.10.6.3).  Guest to host: we advertise
 * VSOCK_BUF_ALLOC per connection and keep what the host socket does not
 * take yet in that connection's ring, so a guest within its credit is
 * never refused and never loses a byte; one that overruns it is reset.
 * Host to guest: a host socket is read only when the guest has credit
 * for it and rx buffers to take it; otherwise it is left unwatched and
 * its bytes wait in the kernel.
 *
 * Nothing is allocated after vsock_create(): the rings are one
 * MAP_NORESERVE mapping whose pages are touched only by connections that
 * buffer. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "virtio/vsock_priv.h"

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

uint32_t vsock_peer_credit(uint32_t buf_alloc, uint32_t fwd_cnt, uint32_t tx_cnt)
{
	uint32_t in_flight = tx_cnt - fwd_cnt; /* modulo 2^32: wraps cleanly */
	return in_flight >= buf_alloc ? 0 : buf_alloc - in_flight;
}

/* ---- guest to host ---- */

static void guest_error(struct virtio_vsock *v, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void guest_error(struct virtio_vsock *v, const char *fmt, ...)
{
	if (v->stats.guest_errors++ && !(v->dev && v->dev->verbose))
		return;
	char msg[200];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	fprintf(stderr, "ember: virtio-vsock: %s; connection reset%s\n", msg,
		v->stats.guest_errors == 1 ? " (further ones are counted, not logged)" : "");
}

/* One packet from the guest (its chain ch, header h already decoded). */
static void handle(struct virtio_vsock *v, const struct vsock_hdr *h, const struct vq_chain *ch)
{
	const char *bad = vsock_hdr_check(h, v->st.guest_cid, ch->out_len - VSOCK_HDR_LEN);
	bool addressed = h->src_cid == v->st.guest_cid && h->dst_cid == VSOCK_HOST_CID;
	struct conn *c = addressed ? vsock_find(v, h->dst_port, h->src_port) : NULL;
	if (bad) {
		/* Another CID or type is a refused connection, not a fault. */
		if (addressed && h->type == VSOCK_TYPE_STREAM)
			guest_error(v, "packet %u:%u -> %u (op %u, len %u): %s",
				    (unsigned)h->src_cid, h->src_port, h->dst_port, h->op, h->len,
				    bad);
		if (c)
			vsock_conn_close(v, c, true);
		else if (h->op != VSOCK_OP_RST)
			vsock_orphan_rst(v, h->dst_cid, h->dst_port, h->src_port);
		return;
	}
	if (h->op == VSOCK_OP_REQUEST) {
		if (c) /* a second REQUEST on a live connection: both are wrong */
			vsock_conn_close(v, c, true);
		else
			vsock_guest_connect(v, h);
		return;
	}
	if (!c) {
		if (h->op != VSOCK_OP_RST)
			vsock_orphan_rst(v, VSOCK_HOST_CID, h->dst_port, h->src_port);
		return;
	}
	c->peer_buf_alloc = h->buf_alloc;
	c->peer_fwd_cnt = h->fwd_cnt;
	switch (h->op) {
	case VSOCK_OP_RESPONSE: {
		if (c->state != C_REQ || !c->req_sent) {
			vsock_conn_close(v, c, true);
			return;
		}
		char ok[24];
		int n = snprintf(ok, sizeof(ok), "OK %u\n", c->local_port);
		/* A fresh socket's send buffer is empty: a short write means
		 * the host is gone. */
		if (write(c->fd, ok, (size_t)n) != n) {
			v->stats.tx_write_fails++;
			vsock_conn_close(v, c, true);
			return;
		}
		c->state = C_EST;
		c->deadline = 0;
		break;
	}
	case VSOCK_OP_RST:
		vsock_conn_close(v, c, false);
		return;
	case VSOCK_OP_SHUTDOWN:
		c->peer_shut |= h->flags & (VSOCK_SHUTDOWN_RCV | VSOCK_SHUTDOWN_SEND);
		vsock_maybe_finish(v, c);
		if (c->state == C_FREE)
			return;
		break;
	case VSOCK_OP_RW:
		if (c->state != C_EST || (c->peer_shut & VSOCK_SHUTDOWN_SEND)) {
			vsock_conn_close(v, c, true);
			return;
		}
		if (buffered(c) + (uint64_t)h->len > VSOCK_BUF_ALLOC) {
			guest_error(v, "port %u -> %u: %u bytes beyond the credit of %u",
				    h->src_port, h->dst_port,
				    (unsigned)(buffered(c) + h->len - VSOCK_BUF_ALLOC),
				    VSOCK_BUF_ALLOC);
			vsock_conn_close(v, c, true);
			return;
		}
		vsock_deliver(v, c, ch, h->len);
		if (c->state == C_FREE)
			return;
		break;
	case VSOCK_OP_CREDIT_REQUEST:
		c->want |= W_CREDIT;
		break;
	}
	vsock_watch(c);
}

/* ---- host to guest ---- */

/* Fill the chain with c's next packet; returns its length, 0 for none
 * (the socket had nothing after all, or the connection ended). */
static uint32_t next_packet(struct virtio_vsock *v, struct conn *c, const struct vq_chain *ch)
{
	static uint8_t buf[VSOCK_MAX_PAYLOAD];
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
			vsock_watch(c);
			return 0;
		}
		if (n < 0)
			v->stats.rx_read_fails++;
		if (n < 0 || (n == 0 && c->hup)) {
			/* The host side is gone entirely: what it sent has been
			 * passed on, RST ends it (Linux still lets the guest read
			 * what it has). */
			vsock_conn_close(v, c, true);
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
			v->stats.rx_bytes_count += (uint64_t)n;
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
		vsock_maybe_finish(v, c);
	vsock_watch(c);
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
	if (v->dev && v->dev->broken)
		vsock_drop_all(v);
}

/* Move packets to the guest until it has no buffers or we have nothing. */
void vsock_rx(struct virtio_vsock *v)
{
	struct virtio_dev *d = v->dev;
	struct vq *q = &d->vq[Q_RX];
	static struct vq_chain ch;
	char why[VQ_ERR_MAX];
	bool pushed = false;

	while (virtio_live(d) && q->s.ready) {
		struct conn *c = v->nr_orphans ? NULL : next_ready(v);
		if (!v->nr_orphans && !c)
			break;
		int r = vq_pop(q, &ch, why, sizeof(why));
		if (r < 0) {
			v->stats.rx_queue_event_fails++;
			virtio_fail(d, "rx queue: %s", why);
			break;
		}
		if (r == 0) {
			if (!v->rx_starved) {
				v->rx_starved = true; /* until the driver notifies queue 0 */
				vsock_watch_all(v);
			}
			break;
		}
		/* A header and at least one byte: Linux posts 44 + 4096. */
		if (ch.nr_out || ch.in_len <= VSOCK_HDR_LEN) {
			v->stats.rx_queue_event_fails++;
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
		vq_push(q, &ch, len);
		v->stats.rx_packets_count++;
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
	static struct vq_chain ch;
	char why[VQ_ERR_MAX];
	bool pushed = false;

	while (virtio_live(d)) {
		int r = vq_pop(q, &ch, why, sizeof(why));
		if (r < 0) {
			v->stats.tx_queue_event_fails++;
			virtio_fail(d, "tx queue: %s", why);
			break;
		}
		if (r == 0)
			break;
		if (ch.out_len < VSOCK_HDR_LEN) {
			v->stats.tx_queue_event_fails++;
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
		v->stats.tx_packets_count++;
		handle(v, &h, &ch);
		vq_push(q, &ch, 0);
		pushed = true;
	}
	if (pushed)
		virtio_queue_done(d, Q_TX);
	vsock_rx(v); /* replies, credit, data the new credit lets through */
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

/* ---- events (§5.10.6.8) ---- */

/* The TRANSPORT_RESET a restore owes, into the event queue's next buffer
 * (a le32 id); without one yet, it waits for the driver to post one. */
static void send_reset_event(struct virtio_vsock *v, struct virtio_dev *d)
{
	struct vq *q = &d->vq[Q_EV];
	static struct vq_chain ch;
	char why[VQ_ERR_MAX];

	if (!v->reset_owed || !virtio_live(d) || !q->s.ready)
		return;
	int r = vq_pop(q, &ch, why, sizeof(why));
	if (r == 0)
		return; /* notify(2) brings us back */
	if (r > 0 && (ch.nr_out || ch.in_len < VSOCK_EVENT_LEN)) {
		snprintf(why, sizeof(why), "buffer %u has %u writable bytes%s (an event needs %u)",
			 ch.head, ch.in_len, ch.nr_out ? " and readable ones" : "",
			 VSOCK_EVENT_LEN);
		r = -EINVAL;
	}
	if (r < 0) {
		v->stats.ev_queue_event_fails++;
		virtio_fail(d, "event queue: %s", why);
		check_broken(v);
		return;
	}
	uint8_t ev[VSOCK_EVENT_LEN];
	put_le(ev, VSOCK_EVENT_TRANSPORT_RESET, VSOCK_EVENT_LEN);
	vq_write(&ch, 0, ev, sizeof(ev));
	vq_push(q, &ch, sizeof(ev));
	virtio_queue_done(d, Q_EV);
	v->reset_owed = false;
	v->stats.transport_resets++;
}

/* ---- the ops ---- */

static int activate(struct virtio_dev *d)
{
	struct virtio_vsock *v = d->priv;
	v->dev = d;
	v->rx_starved = false;
	int r = vsock_host_start(v, d);
	if (r)
		v->stats.activate_fails++;
	vsock_watch_listen(v, true);
	return r;
}

static void notify(struct virtio_dev *d, unsigned q)
{
	struct virtio_vsock *v = d->priv;
	if (q == Q_TX) {
		v->stats.tx_queue_event_count++;
		tx(v);
	} else if (q == Q_RX) {
		v->stats.rx_queue_event_count++;
		if (v->rx_starved) {
			v->rx_starved = false;
			vsock_watch_all(v);
		}
		vsock_rx(v);
	} else if (q == Q_EV) {
		send_reset_event(v, d);
	}
}

/* The rings are gone: so are the connections (the host sockets close;
 * a host peer sees EOF).  A reset driver has no connection left to be
 * told about: no TRANSPORT_RESET is owed any more. */
static void reset(struct virtio_dev *d)
{
	struct virtio_vsock *v = d->priv;
	if (v->dev)
		vsock_drop_all(v);
	v->reset_owed = false;
}

/* The snapshot record: the guest CID alone.  Connections are not saved:
 * their host sockets cannot be (Firecracker's rule too). */
static int save(struct virtio_dev *d, void *buf, size_t max)
{
	const struct virtio_vsock *v = d->priv;
	if (max < sizeof(v->st))
		return -ENOSPC;
	memcpy(buf, &v->st, sizeof(v->st));
	return (int)sizeof(v->st);
}

/* Every connection the guest had is gone here: tell it with a
 * TRANSPORT_RESET (§5.10.6.8), now if the driver is live and has posted
 * an event buffer, else when it does.  (Firecracker sends it when the
 * snapshot is taken and kicks the queue on resume; sending it on the
 * restored side alone leaves the snapshotted VM's connections alone.) */
static int restore(struct virtio_dev *d, const void *buf, size_t len)
{
	struct virtio_vsock *v = d->priv;
	struct vsock_state s;
	if (len != sizeof(s))
		return -EINVAL;
	memcpy(&s, buf, sizeof(s));
	if (s.guest_cid != v->st.guest_cid) {
		fprintf(stderr,
			"ember: virtio-vsock: the snapshot's guest CID %llu is not this "
			"device's %llu\n",
			(unsigned long long)s.guest_cid, (unsigned long long)v->st.guest_cid);
		return -EINVAL;
	}
	v->reset_owed = true;
	send_reset_event(v, d);
	return 0;
}

/* Close every socket, unlink uds, free v (NULL is fine). */
static void vsock_free(struct virtio_vsock *v)
{
	if (!v)
		return;
	vsock_host_close(v);
	if (v->rings)
		munmap(v->rings, (size_t)VSOCK_MAX_CONNS * VSOCK_BUF_ALLOC);
	free(v->conns);
	free(v);
}

static void destroy(struct virtio_dev *d)
{
	vsock_free(d->priv);
	d->priv = NULL;
}

/* Firecracker's vsock metrics, then ember's own (names and order are the
 * API's). */
static void counters(struct virtio_dev *d, virtio_counter_fn *fn, void *opaque)
{
	const struct vsock_stats *s = &((const struct virtio_vsock *)d->priv)->stats;
	fn(opaque, "activate_fails", s->activate_fails);
	fn(opaque, "rx_queue_event_fails", s->rx_queue_event_fails);
	fn(opaque, "tx_queue_event_fails", s->tx_queue_event_fails);
	fn(opaque, "ev_queue_event_fails", s->ev_queue_event_fails);
	fn(opaque, "muxer_event_fails", s->muxer_event_fails);
	fn(opaque, "conn_event_fails", s->conn_event_fails);
	fn(opaque, "rx_queue_event_count", s->rx_queue_event_count);
	fn(opaque, "tx_queue_event_count", s->tx_queue_event_count);
	fn(opaque, "rx_bytes_count", s->rx_bytes_count);
	fn(opaque, "tx_bytes_count", s->tx_bytes_count);
	fn(opaque, "rx_packets_count", s->rx_packets_count);
	fn(opaque, "tx_packets_count", s->tx_packets_count);
	fn(opaque, "conns_added", s->conns_added);
	fn(opaque, "conns_killed", s->conns_killed);
	fn(opaque, "conns_removed", s->conns_removed);
	fn(opaque, "tx_flush_fails", s->tx_flush_fails);
	fn(opaque, "tx_write_fails", s->tx_write_fails);
	fn(opaque, "rx_read_fails", s->rx_read_fails);
	fn(opaque, "conns_refused", s->conns_refused);
	fn(opaque, "guest_errors", s->guest_errors);
	fn(opaque, "rst_dropped", s->rst_dropped);
	fn(opaque, "transport_resets", s->transport_resets);
}

static const struct virtio_dev_ops vsock_ops = {
    .kind = "vsock",
    .metrics = "vsock",
    .device_id = VIRTIO_ID_VSOCK,
    .nr_queues = 3,
    .config_read = config_read,
    .activate = activate,
    .notify = notify,
    .reset = reset,
    .save = save,
    .restore = restore,
    .destroy = destroy,
    .counters = counters,
};

/* The device's state, listening on uds.  0 or -errno with the reason in
 * err. */
static int make(struct virtio_vsock **out, uint64_t guest_cid, const char *uds_path, char *err,
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
		vsock_free(v);
		return -ENOMEM;
	}
	for (unsigned i = 0; i < VSOCK_MAX_CONNS; i++)
		v->conns[i].fd = -1;

	int r = vsock_host_open(v, err, errlen);
	if (r) {
		vsock_free(v);
		return r;
	}
	*out = v;
	return 0;
}

int vsock_create(const struct vsock_params *p, struct virtio_impl *out, char *err, size_t errlen)
{
	char why[512];
	struct virtio_vsock *v;
	snprintf(out->name, sizeof(out->name), "virtio-vsock");
	int r = make(&v, p->guest_cid, p->uds, why, sizeof(why));
	if (r) {
		snprintf(err, errlen, "%s: %s", out->name, why);
		return r;
	}
	out->ops = &vsock_ops;
	out->priv = v;
	out->features = 0;
	return 0;
}
