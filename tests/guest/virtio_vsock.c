/* test=vsock: the guest side of a virtio-vsock stream (virtio 1.2
 * §5.10), both guest- and host-initiated.  See virtio.c for the lines. */
#include "virtio_test.h"

/* ---- vsock (§5.10) ---- */

#define VSOCK_TYPE_STREAM 1
#define VSOCK_OP_REQUEST 1
#define VSOCK_OP_RESPONSE 2
#define VSOCK_OP_RST 3
#define VSOCK_OP_SHUTDOWN 4
#define VSOCK_OP_RW 5
#define VSOCK_OP_CREDIT_UPDATE 6
#define VSOCK_OP_CREDIT_REQUEST 7
#define VSOCK_SHUTDOWN_BOTH 3 /* RCV | SEND */
#define VSOCK_HOST_CID 2
#define VSOCK_BUF_ALLOC 65536
#define VSOCK_RX_BUFS 8
#define VSOCK_RX_DATA 4096
#define VSOCK_EVT_BUFS 4
#define VSOCK_LOCAL_PORT 50000

struct vsock_hdr {
	u64 src_cid;
	u64 dst_cid;
	u32 src_port;
	u32 dst_port;
	u32 len;
	u16 type;
	u16 op;
	u32 flags;
	u32 buf_alloc;
	u32 fwd_cnt;
} __attribute__((packed));
_Static_assert(sizeof(struct vsock_hdr) == 44, "virtio 1.2 §5.10.6");

/* One stream; pport 0 while listening. */
struct vconn {
	u32 lport, pport;
	u32 peer_buf_alloc, peer_fwd_cnt;
	u32 tx_cnt, fwd_cnt; /* bytes sent; bytes received and consumed */
};

static u8 vs_rx[VSOCK_RX_BUFS][sizeof(struct vsock_hdr) + VSOCK_RX_DATA]
	__attribute__((aligned(64)));
static u32 vs_evt[VSOCK_EVT_BUFS];
static struct vsock_hdr vs_txhdr;
static u8 vs_data[VSOCK_RX_DATA + 1]; /* the last packet's payload, NUL-ended */
static u64 vs_cid;

static void vs_post_rx(struct vq *rx, unsigned i)
{
	struct vbuf b = {(u64)vs_rx[i], sizeof(vs_rx[i]), 1};
	vq_add(rx, i, &b, 1);
}

static int vs_send(struct vdev *d, struct vconn *c, u16 op, u32 flags, const void *data, u32 len)
{
	struct vbuf b[2] = {{(u64)&vs_txhdr, sizeof(vs_txhdr), 0}, {(u64)data, len, 0}};

	if (op == VSOCK_OP_RW && len > c->peer_buf_alloc - (c->tx_cnt - c->peer_fwd_cnt)) {
		kprintf("vsock: no credit for %u bytes (peer buf_alloc %u fwd_cnt %u, sent %u)\n",
			len, c->peer_buf_alloc, c->peer_fwd_cnt, c->tx_cnt);
		return -1;
	}
	vs_txhdr = (struct vsock_hdr){
	    .src_cid = vs_cid,
	    .dst_cid = VSOCK_HOST_CID,
	    .src_port = c->lport,
	    .dst_port = c->pport,
	    .len = len,
	    .type = VSOCK_TYPE_STREAM,
	    .op = op,
	    .flags = flags,
	    .buf_alloc = VSOCK_BUF_ALLOC,
	    .fwd_cnt = c->fwd_cnt,
	};
	if (vq_request(d, &d->vq[1], b, len ? 2 : 1, "vsock") < 0)
		return -1;
	if (op == VSOCK_OP_RW)
		c->tx_cnt += len;
	return 0;
}

/* The next packet of connection c (or, while c listens, a REQUEST to its
 * port) into *h and vs_data, answering credit requests on the way and
 * resetting strays.  -1 (line printed) after ms milliseconds. */
static int vs_next(struct vdev *d, struct vconn *c, struct vsock_hdr *h, unsigned ms)
{
	struct vq *rx = &d->vq[0];
	u64 end = tsc_deadline(ms);
	u32 id, len;

	for (;;) {
		while (!vq_poll(rx, &id, &len)) {
			if (tsc_passed(end)) {
				kprintf("vsock: timeout waiting on port %u\n", c->lport);
				return -1;
			}
			cpu_relax();
		}
		u32 isr = vdev_read(d, VIRTIO_MMIO_INTERRUPT_STATUS);
		if (isr)
			vdev_write(d, VIRTIO_MMIO_INTERRUPT_ACK, isr);
		if (id >= VSOCK_RX_BUFS || len < sizeof(*h) || len > sizeof(vs_rx[0])) {
			kprintf("vsock: bad rx used element id %u len %u\n", id, len);
			return -1;
		}
		memcpy(h, vs_rx[id], sizeof(*h));
		u32 n = h->len <= len - sizeof(*h) ? h->len : len - (u32)sizeof(*h);
		memcpy(vs_data, vs_rx[id] + sizeof(*h), n);
		vs_data[n] = 0;
		vs_post_rx(rx, id);
		vq_publish(rx);
		vq_notify(d, rx);

		int ours = h->dst_cid == vs_cid && h->type == VSOCK_TYPE_STREAM &&
			   h->dst_port == c->lport;
		if (ours && !c->pport && h->op == VSOCK_OP_REQUEST)
			return 0;
		if (!ours || h->src_port != c->pport) {
			kprintf("vsock: stray op %u from %lu:%u to port %u\n", h->op, h->src_cid,
				h->src_port, h->dst_port);
			if (h->op != VSOCK_OP_RST && h->type == VSOCK_TYPE_STREAM) {
				struct vconn stray = {.lport = h->dst_port, .pport = h->src_port};
				if (vs_send(d, &stray, VSOCK_OP_RST, 0, NULL, 0))
					return -1;
			}
			continue;
		}
		c->peer_buf_alloc = h->buf_alloc; /* every header carries credit */
		c->peer_fwd_cnt = h->fwd_cnt;
		if (h->op == VSOCK_OP_CREDIT_UPDATE)
			continue;
		if (h->op == VSOCK_OP_CREDIT_REQUEST) {
			if (vs_send(d, c, VSOCK_OP_CREDIT_UPDATE, 0, NULL, 0))
				return -1;
			continue;
		}
		if (h->op == VSOCK_OP_RW)
			c->fwd_cnt += h->len; /* consumed at once */
		return 0;
	}
}

/* After our SHUTDOWN, or waiting for the peer's: its RST, or its SHUTDOWN
 * which we answer with RST (§5.10.6.6).  0 when the stream is closed. */
static int vs_close(struct vdev *d, struct vconn *c)
{
	struct vsock_hdr h;

	for (;;) {
		if (vs_next(d, c, &h, 3000))
			return -1;
		if (h.op == VSOCK_OP_RST)
			return 0;
		if (h.op == VSOCK_OP_SHUTDOWN)
			return vs_send(d, c, VSOCK_OP_RST, 0, NULL, 0);
		kprintf("vsock: op %u while closing, ignored\n", h.op);
	}
}

/* Strips one trailing newline for printing. */
static const char *vs_text(void)
{
	size_t n = strlen((char *)vs_data);
	if (n && vs_data[n - 1] == '\n')
		vs_data[n - 1] = 0;
	return (const char *)vs_data;
}

static int vs_guest_initiated(struct vdev *d)
{
	static const char ping[] = "ping from guest\n";
	struct vconn c = {.lport = VSOCK_LOCAL_PORT, .pport = (u32)arg_u64("port", 1234)};
	struct vsock_hdr h;

	if (vs_send(d, &c, VSOCK_OP_REQUEST, 0, NULL, 0) || vs_next(d, &c, &h, 5000))
		return -1;
	if (h.op != VSOCK_OP_RESPONSE) {
		kprintf("vsock: connect to port %u: op %u, not RESPONSE%s\n", c.pport, h.op,
			h.op == VSOCK_OP_RST ? " (refused)" : "");
		return -1;
	}
	if (vs_send(d, &c, VSOCK_OP_RW, 0, ping, sizeof(ping) - 1) || vs_next(d, &c, &h, 5000))
		return -1;
	if (h.op != VSOCK_OP_RW) {
		kprintf("vsock: op %u instead of data\n", h.op);
		return -1;
	}
	kprintf("vsock: got %s\n", vs_text());
	if (vs_send(d, &c, VSOCK_OP_SHUTDOWN, VSOCK_SHUTDOWN_BOTH, NULL, 0) || vs_close(d, &c))
		return -1;
	print("vsock: guest-initiated ok\n");
	return 0;
}

static int vs_host_initiated(struct vdev *d, u32 port)
{
	struct vconn c = {.lport = port};
	struct vsock_hdr h;

	kprintf("vsock: listening on port %u\n", port);
	if (vs_next(d, &c, &h, 10000))
		return -1;
	c.pport = h.src_port;
	c.peer_buf_alloc = h.buf_alloc;
	c.peer_fwd_cnt = h.fwd_cnt;
	if (vs_send(d, &c, VSOCK_OP_RESPONSE, 0, NULL, 0) || vs_next(d, &c, &h, 5000))
		return -1;
	if (h.op != VSOCK_OP_RW) {
		kprintf("vsock: op %u instead of data\n", h.op);
		return -1;
	}
	u32 n = (u32)strlen((char *)vs_data);
	for (u32 i = 0; i < n; i++)
		if (vs_data[i] >= 'a' && vs_data[i] <= 'z')
			vs_data[i] = (u8)(vs_data[i] - 'a' + 'A');
	if (vs_send(d, &c, VSOCK_OP_RW, 0, vs_data, n))
		return -1;
	kprintf("vsock: sent back %s\n", vs_text());
	if (vs_close(d, &c))
		print("vsock: host did not close the stream\n");
	print("vsock: host-initiated ok\n");
	return 0;
}

int do_vsock(void)
{
	struct vdev *d = find_dev(VIRTIO_ID_VSOCK);
	u64 listen = arg_u64("listen", 0);

	if (!d || vdev_init(d, 0, 3))
		return 1;
	vs_cid = vdev_config64(d, 0);
	kprintf("vsock: cid %lu\n", vs_cid);
	struct vq *rx = &d->vq[0], *evt = &d->vq[2];
	for (unsigned i = 0; i < VSOCK_RX_BUFS; i++)
		vs_post_rx(rx, i);
	vq_publish(rx);
	vq_notify(d, rx);
	for (unsigned i = 0; i < VSOCK_EVT_BUFS; i++) {
		struct vbuf b = {(u64)&vs_evt[i], sizeof(vs_evt[i]), 1};
		vq_add(evt, i, &b, 1);
	}
	vq_publish(evt);
	vq_notify(d, evt);

	if (vs_guest_initiated(d))
		return 1;
	if (listen && vs_host_initiated(d, (u32)listen))
		return 1;
	return 0;
}
