/* virtio-net (virtio 1.2 §5.1): queue 0 receives, queue 1 transmits.
 * Every buffer starts with the 12-byte struct virtio_net_hdr; with no
 * offloads negotiated ember writes it zeroed on receive and ignores it on
 * transmit (§5.1.6.2). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>

#include "base/backend.h"
#include "base/evloop.h"
#include "virtio/limiter.h"
#include "virtio/net.h"

#define VIRTIO_NET_F_MAC 5
#define Q_RX 0
#define Q_TX 1
#define VNET_HDR 12		    /* struct virtio_net_hdr with VERSION_1 (§5.1.6) */
#define VNET_FRAME_MAX (65535 + 14) /* the largest frame a tap hands over */

struct net_stats {
	uint64_t rx_frames, rx_bytes, tx_frames, tx_bytes;
	uint64_t rx_too_big, tx_malformed, tx_errors;
};

struct virtio_net {
	struct tap_backend tap;
	uint8_t mac[6];
	struct vlimit rx_limit, tx_limit;
	struct ev_source tap_src;
	uint32_t tap_events; /* what tap_src watches now */
	/* A frame read from the tap that has no rx buffer (or budget) yet. */
	uint8_t *frame;
	uint32_t frame_len;
	bool have_frame;
	bool tx_blocked; /* the tap said EAGAIN: wait for EPOLLOUT */
	struct net_stats stats;
	struct virtio_dev *dev;
};

static void net_free(struct virtio_net *n)
{
	if (n->dev)
		ev_del(n->dev->ev, &n->tap_src);
	vlimit_fini(&n->rx_limit);
	vlimit_fini(&n->tx_limit);
	tap_close(&n->tap);
	free(n->frame);
	free(n);
}

/* §5.1.4: mac[6] (the only field without STATUS/MQ/MTU features). */
static void config_read(struct virtio_dev *d, uint32_t off, uint8_t *data, uint32_t len)
{
	const struct virtio_net *n = d->priv;
	for (uint32_t i = 0; i < len && off + i < 6; i++)
		data[i] = n->mac[off + i];
}

static void watch(struct virtio_net *n, uint32_t events)
{
	if (n->tap_events == events || !n->tap_src.added)
		return;
	if (ev_mod(n->dev->ev, &n->tap_src, events) == 0)
		n->tap_events = events;
}

static uint32_t wanted_events(const struct virtio_net *n, bool rx_ok)
{
	return (rx_ok ? EPOLLIN : 0) | (n->tx_blocked ? EPOLLOUT : 0);
}

/* Move frames from the tap to the rx queue until either runs dry.  A
 * frame with nowhere to go stays in n->frame and the tap is not read
 * again until rx buffers (or tokens) come back. */
static void rx(struct virtio_dev *d)
{
	struct virtio_net *n = d->priv;
	struct vq *q = &d->vq[Q_RX];
	static struct vq_chain c;
	char why[VQ_ERR_MAX];
	bool pushed = false, rx_ok = true;

	while (virtio_live(d) && q->s.ready) {
		if (!n->have_frame) {
			ssize_t len = tap_read(&n->tap, n->frame + VNET_HDR, VNET_FRAME_MAX);
			if (len < 0)
				break; /* -EAGAIN: the tap is empty; else retry on the next event */
			n->frame_len = (uint32_t)len;
			n->have_frame = true;
		}
		int r = vq_pop(q, &c, why, sizeof(why));
		if (r < 0) {
			virtio_fail(d, "rx queue: %s", why);
			break;
		}
		if (r == 0) {
			rx_ok = false; /* no buffers: wait for the driver */
			break;
		}
		if (!vlimit_admit(&n->rx_limit, n->frame_len)) {
			vq_unpop(q);
			rx_ok = false; /* the limiter's timer comes back */
			break;
		}
		if (c.nr_out) {
			vq_unpop(q);
			virtio_fail(d, "rx queue: request %u has driver-readable buffers "
				       "(§5.1.6.3: all are device-writable)", c.head);
			break;
		}
		uint32_t total = VNET_HDR + n->frame_len;
		if (c.in_len < total) {
			/* §5.1.6.3.1: buffers must hold a whole frame (no
			 * MRG_RXBUF).  Give it back empty, drop this frame. */
			n->stats.rx_too_big++;
			vq_push(q, &c, 0);
			pushed = true;
			n->have_frame = false;
			continue;
		}
		memset(n->frame, 0, VNET_HDR);
		/* num_buffers = 1 (§5.1.6.4): offset 10, le16 */
		n->frame[10] = 1;
		vq_write(&c, 0, n->frame, total);
		vq_push(q, &c, total);
		pushed = true;
		n->have_frame = false;
		n->stats.rx_frames++;
		n->stats.rx_bytes += n->frame_len;
	}
	watch(n, wanted_events(n, rx_ok));
	if (pushed)
		virtio_queue_done(d, Q_RX);
}

static void tx(struct virtio_dev *d)
{
	struct virtio_net *n = d->priv;
	struct vq *q = &d->vq[Q_TX];
	static struct vq_chain c;
	static uint8_t buf[VNET_HDR + VNET_FRAME_MAX];
	char why[VQ_ERR_MAX];
	bool pushed = false;

	while (virtio_live(d) && !n->tx_blocked) {
		int r = vq_pop(q, &c, why, sizeof(why));
		if (r < 0) {
			virtio_fail(d, "tx queue: %s", why);
			break;
		}
		if (r == 0)
			break;
		if (c.nr_in) {
			virtio_fail(d, "tx queue: request %u has device-writable buffers "
				       "(§5.1.6.2: all are driver-readable)", c.head);
			break;
		}
		if (c.out_len <= VNET_HDR || c.out_len > sizeof(buf)) {
			/* Not a frame: returned unsent, counted. */
			n->stats.tx_malformed++;
			vq_push(q, &c, 0);
			pushed = true;
			continue;
		}
		uint32_t len = c.out_len - VNET_HDR;
		if (!vlimit_admit(&n->tx_limit, len)) {
			vq_unpop(q);
			break;
		}
		vq_read(&c, 0, buf, c.out_len);
		r = tap_write(&n->tap, buf + VNET_HDR, len);
		if (r == -EAGAIN) {
			/* The host's queue is full: keep the frame in the ring
			 * and wait until the tap takes writes again. */
			vq_unpop(q);
			n->tx_blocked = true;
			break;
		}
		if (r) {
			n->stats.tx_errors++;
		} else {
			n->stats.tx_frames++;
			n->stats.tx_bytes += len;
		}
		vq_push(q, &c, 0);
		pushed = true;
	}
	watch(n, (n->tap_events & EPOLLIN) | (n->tx_blocked ? EPOLLOUT : 0));
	if (pushed)
		virtio_queue_done(d, Q_TX);
}

static void on_tap(struct ev_source *src, uint32_t events)
{
	struct virtio_dev *d = src->opaque;
	struct virtio_net *n = d->priv;
	pthread_mutex_lock(&d->lock);
	if (virtio_live(d)) {
		if (events & EPOLLOUT) {
			n->tx_blocked = false;
			tx(d);
		}
		if (events & (EPOLLIN | EPOLLERR | EPOLLHUP))
			rx(d);
	}
	pthread_mutex_unlock(&d->lock);
}

/* The limiters' timers, made before the drop phase. */
static int realize(struct virtio_dev *d)
{
	struct virtio_net *n = d->priv;
	n->dev = d;
	int r = vlimit_start(&n->rx_limit, d, Q_RX);
	return r ? r : vlimit_start(&n->tx_limit, d, Q_TX);
}

static int activate(struct virtio_dev *d)
{
	struct virtio_net *n = d->priv;
	int r = 0;
	if (!n->tap_src.added) {
		r = ev_add(d->ev, &n->tap_src, n->tap.fd, EPOLLIN, on_tap, d);
		n->tap_events = EPOLLIN;
	}
	return r;
}

static void notify(struct virtio_dev *d, unsigned q)
{
	if (q == Q_RX)
		rx(d); /* buffers are back: take what waits in the tap */
	else
		tx(d);
}

/* Stop reading the tap until the driver is back; a held frame is
 * dropped with the rings it was meant for. */
static void reset(struct virtio_dev *d)
{
	struct virtio_net *n = d->priv;
	vlimit_cancel(&n->rx_limit);
	vlimit_cancel(&n->tx_limit);
	n->have_frame = false;
	n->tx_blocked = false;
	watch(n, 0);
}

/* The snapshot record: both limiters and the MAC the guest was given
 * (the tap is re-opened by name, perhaps another one). */
struct net_record {
	struct ratelimit rx, tx;
	uint8_t mac[6];
	uint8_t pad[2];
};
_Static_assert(sizeof(struct net_record) == 264, "a snapshot record");

static int save(struct virtio_dev *d, void *buf, size_t max)
{
	struct virtio_net *n = d->priv;
	struct net_record rec;
	if (max < sizeof(rec))
		return -ENOSPC;
	memset(&rec, 0, sizeof(rec));
	vlimit_save(&n->rx_limit, &rec.rx, sizeof(rec.rx));
	vlimit_save(&n->tx_limit, &rec.tx, sizeof(rec.tx));
	memcpy(rec.mac, n->mac, 6);
	memcpy(buf, &rec, sizeof(rec));
	return sizeof(rec);
}

static int restore(struct virtio_dev *d, const void *buf, size_t len)
{
	struct virtio_net *n = d->priv;
	struct net_record rec;
	if (len != sizeof(rec))
		return -EINVAL;
	memcpy(&rec, buf, sizeof(rec));
	memcpy(n->mac, rec.mac, 6);
	int r = vlimit_restore(&n->rx_limit, &rec.rx, sizeof(rec.rx));
	return r ? r : vlimit_restore(&n->tx_limit, &rec.tx, sizeof(rec.tx));
}

static void destroy(struct virtio_dev *d)
{
	net_free(d->priv);
	d->priv = NULL;
}

/* Firecracker's net metrics (names and order are the API's). */
static void counters(struct virtio_dev *d, virtio_counter_fn *fn, void *opaque)
{
	const struct virtio_net *n = d->priv;
	fn(opaque, "rx_packets_count", n->stats.rx_frames);
	fn(opaque, "rx_bytes_count", n->stats.rx_bytes);
	fn(opaque, "tx_packets_count", n->stats.tx_frames);
	fn(opaque, "tx_bytes_count", n->stats.tx_bytes);
	fn(opaque, "rx_fails", n->stats.rx_too_big);
	fn(opaque, "tx_fails", n->stats.tx_malformed + n->stats.tx_errors);
	fn(opaque, "rx_rate_limiter_throttled", n->rx_limit.throttled);
	fn(opaque, "tx_rate_limiter_throttled", n->tx_limit.throttled);
}

static int set_limits(struct virtio_dev *d, const struct rl_cfg *a, const struct rl_cfg *b)
{
	struct virtio_net *n = d->priv;
	if (!a || !b)
		return -EINVAL;
	vlimit_update(&n->rx_limit, a);
	vlimit_update(&n->tx_limit, b);
	/* What the old limits held back, both ways. */
	if (virtio_live(d)) {
		rx(d);
		tx(d);
	}
	return 0;
}

/* A gratuitous RARP (RFC 903: ethertype 0x8035, op 3 "request
 * reverse", sender and target the guest's MAC, no IP), broadcast, padded
 * to Ethernet's 60-byte minimum: what QEMU's announce sends after a
 * migration. */
static void announce(struct virtio_dev *d)
{
	struct virtio_net *n = d->priv;
	uint8_t f[60] = {0};
	memset(f, 0xff, 6);
	memcpy(f + 6, n->mac, 6);
	f[12] = 0x80, f[13] = 0x35;		/* RARP */
	f[14] = 0, f[15] = 1;			/* hardware: Ethernet */
	f[16] = 0x08, f[17] = 0x00;		/* protocol: IPv4 */
	f[18] = 6, f[19] = 4;			/* their lengths */
	f[20] = 0, f[21] = 3;			/* reverse request */
	memcpy(f + 22, n->mac, 6);		/* sender: the guest, IP 0 */
	memcpy(f + 32, n->mac, 6);		/* target: the guest, IP 0 */
	if (n->tap.fd >= 0)
		(void)!tap_write(&n->tap, f, sizeof(f));
}

static const struct virtio_dev_ops vnet_ops = {
    .kind = "net",
    .metrics = "net",
    .device_id = VIRTIO_ID_NET,
    .nr_queues = 2,
    .config_read = config_read,
    .realize = realize,
    .activate = activate,
    .notify = notify,
    .reset = reset,
    .save = save,
    .restore = restore,
    .destroy = destroy,
    .counters = counters,
    .set_limits = set_limits,
    .announce = announce,
};

int vnet_create(const struct vnet_params *p, struct virtio_impl *out, char *err, size_t errlen)
{
	char why[512];
	snprintf(out->name, sizeof(out->name), "virtio-net %s", p->id);
	struct virtio_net *n = calloc(1, sizeof(*n));
	if (n) {
		n->tap.fd = -1;
		vlimit_init(&n->rx_limit, p->rx);
		vlimit_init(&n->tx_limit, p->tx);
		n->frame = malloc(VNET_HDR + VNET_FRAME_MAX);
	}
	if (!n || !n->frame) {
		snprintf(err, errlen, "%s: tap %s: out of memory", out->name, p->tap);
		if (n)
			net_free(n);
		return -ENOMEM;
	}
	int r = tap_open(&n->tap, p->tap, why, sizeof(why));
	if (r) {
		snprintf(err, errlen, "%s: %s", out->name, why);
		net_free(n);
		return r;
	}
	if (p->mac)
		memcpy(n->mac, p->mac, 6);
	else
		tap_random_mac(n->mac);
	out->ops = &vnet_ops;
	out->priv = n;
	out->features = 1ULL << VIRTIO_NET_F_MAC;
	return 0;
}
