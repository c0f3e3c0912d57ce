/* virtio-vsock's private contract between its two halves:
 * virtio/vsock.c (the queues, the ops table, create/destroy) and
 * virtio/vsock_conn.c (the host side: the connection table, the rings,
 * accept, the CONNECT line, the handshake timer, writing to host
 * sockets).  Nothing outside virtio/vsock*.c includes it.
 *
 * Every function here runs on the vmm thread under dev->lock. */
#ifndef EMBER_VIRTIO_VSOCK_PRIV_H
#define EMBER_VIRTIO_VSOCK_PRIV_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/un.h>

#include "virtio/vsock.h"

#define Q_RX 0
#define Q_TX 1
#define Q_EV 2

#define CONNECT_LINE_MAX 32
#define HASH_SIZE 2048 /* a power of 2 */
#define ORPHANS_MAX 2048
#define NONE 0xffff

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

/* Counters since vsock_create(), reported by the counters op. */
struct vsock_stats {
	uint64_t conns_added;	    /* connections made, either side's */
	uint64_t conns_removed;	    /* connections closed */
	uint64_t conns_killed;	    /* of those, by a handshake deadline */
	uint64_t conns_refused;	    /* not made: no listener, the limit */
	uint64_t conn_event_fails;  /* host sockets reporting an error */
	uint64_t muxer_event_fails; /* accept4() failures */
	uint64_t activate_fails;
	uint64_t rx_queue_event_count; /* notifications of queue 0 */
	uint64_t tx_queue_event_count; /* notifications of queue 1 */
	uint64_t rx_queue_event_fails; /* queue 0 broken by the driver */
	uint64_t tx_queue_event_fails; /* queue 1 */
	uint64_t ev_queue_event_fails; /* queue 2 */
	uint64_t rx_packets_count;     /* packets to the guest */
	uint64_t rx_bytes_count;       /* their payload */
	uint64_t tx_packets_count;     /* packets from the guest */
	uint64_t tx_bytes_count;       /* their payload (RW taken) */
	uint64_t rx_read_fails;	       /* host socket reads that failed */
	uint64_t tx_write_fails;       /* host socket writes that failed */
	uint64_t tx_flush_fails;       /* of those, draining a ring */
	uint64_t guest_errors;	       /* malformed packets, credit overruns */
	uint64_t rst_dropped;	       /* RSTs lost: too many were waiting */
	uint64_t transport_resets;     /* TRANSPORT_RESET events delivered */
};

struct virtio_vsock {
	struct vsock_state st; /* first: the snapshot record */
	char uds[sizeof(((struct sockaddr_un *)0)->sun_path)];
	bool uds_made;
	int listen_fd, timer_fd;
	struct ev_source listen_src, timer_src;
	bool accepting, timer_armed, rx_starved;
	/* A restore dropped every connection: VIRTIO_VSOCK_EVENT_TRANSPORT_RESET
	 * is owed on the event queue (§5.10.6.8). */
	bool reset_owed;
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
	struct vsock_stats stats;
};

/* Bytes of the guest's that wait in c's ring for the host socket. */
static inline uint32_t buffered(const struct conn *c)
{
	return c->rx_cnt - c->fwd_cnt;
}

static inline bool can_send_data(const struct conn *c)
{
	return c->state == C_EST && !c->host_eof && !(c->peer_shut & VSOCK_SHUTDOWN_RCV) &&
	       vsock_peer_credit(c->peer_buf_alloc, c->peer_fwd_cnt, c->tx_cnt) > 0;
}

/* ---- virtio/vsock.c ---- */

/* Move packets to the guest until it has no rx buffers or we have
 * nothing; drops every connection if the driver broke the device. */
void vsock_rx(struct virtio_vsock *v);

/* ---- virtio/vsock_conn.c ---- */

/* The connection guest port peer has with host port local, or NULL. */
struct conn *vsock_find(struct virtio_vsock *v, uint32_t local, uint32_t peer);

/* Watch c's host socket for what it should be watched for now; every
 * connection's (after rx_starved changed); the listening socket, on or
 * off. */
void vsock_watch(struct conn *c);
void vsock_watch_all(struct virtio_vsock *v);
void vsock_watch_listen(struct virtio_vsock *v, bool on);

/* Queue an RST for the guest, from (src_cid, src_port) to its dst_port. */
void vsock_orphan_rst(struct virtio_vsock *v, uint64_t src_cid, uint32_t src_port,
		      uint32_t dst_port);

/* Close c's host socket and forget it; rst: tell the guest (when it
 * knows the connection). */
void vsock_conn_close(struct virtio_vsock *v, struct conn *c, bool rst);

/* Every connection closed, no packet owed, the listener and the timer
 * unwatched: after a reset, or when the driver broke the device. */
void vsock_drop_all(struct virtio_vsock *v);

/* Both directions are done (or the guest closed): shut the host socket's
 * writing side, close with RST when nothing is left. */
void vsock_maybe_finish(struct virtio_vsock *v, struct conn *c);

/* A guest REQUEST to host port h->dst_port: connect to "<uds>_<port>";
 * RESPONSE owed, or RST when it cannot be. */
void vsock_guest_connect(struct virtio_vsock *v, const struct vsock_hdr *h);

/* An RW packet's payload (len bytes after the header in ch) to c's host
 * socket, what it does not take yet into c's ring (within the credit,
 * checked by the caller). */
void vsock_deliver(struct virtio_vsock *v, struct conn *c, const struct vq_chain *ch, uint32_t len);

/* Listen on v->uds (a stale socket file there removed first; any other
 * file refused: -EEXIST) and make the handshake timer; before the drop
 * phase.  0 or -errno, the reason in err. */
int vsock_host_open(struct virtio_vsock *v, char *err, size_t errlen);

/* Close every connection, the listener (its file unlinked) and the
 * timer; what vsock_host_open() left half made too. */
void vsock_host_close(struct virtio_vsock *v);

/* Watch the timer and the listening socket on d's event loop (on the
 * first activation).  0 or -errno. */
int vsock_host_start(struct virtio_vsock *v, struct virtio_dev *d);

#endif
