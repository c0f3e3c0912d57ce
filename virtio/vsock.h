/* virtio-vsock (virtio 1.2 §5.10) over host unix sockets, Firecracker's
 * convention: ember listens on `uds`; a host process connects there and
 * writes "CONNECT <port>\n" to reach the guest's port (ember answers
 * "OK <local port>\n" once the guest accepts); a guest connection to host
 * CID 2 port P becomes a connection to the unix socket "<uds>_P".
 * Stream sockets only.  Bytes pass through the vmm thread under credit
 * flow control (§5.10.6.3): what the guest may send is bounded by the
 * buffer ember advertises per connection, so nothing is ever dropped; a
 * full guest rx queue stops the reading of host sockets. */
#ifndef EMBER_VIRTIO_VSOCK_H
#define EMBER_VIRTIO_VSOCK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "virtio/virtio.h"

#define VSOCK_HOST_CID 2
#define VSOCK_HDR_LEN 44		 /* struct virtio_vsock_hdr (§5.10.6) */
#define VSOCK_BUF_ALLOC (256 * 1024)	 /* per connection, guest to host */
#define VSOCK_MAX_CONNS 1024		 /* beyond: RST / the host socket closed */
#define VSOCK_MAX_PAYLOAD (64 * 1024)	 /* Linux's largest packet */
#define VSOCK_LOCAL_PORT_BASE (1u << 30) /* host ports ember picks */

/* §5.10.6 type and op values */
#define VSOCK_TYPE_STREAM 1
#define VSOCK_TYPE_SEQPACKET 2
enum {
	VSOCK_OP_REQUEST = 1,
	VSOCK_OP_RESPONSE = 2,
	VSOCK_OP_RST = 3,
	VSOCK_OP_SHUTDOWN = 4,
	VSOCK_OP_RW = 5,
	VSOCK_OP_CREDIT_UPDATE = 6,
	VSOCK_OP_CREDIT_REQUEST = 7,
};
#define VSOCK_SHUTDOWN_RCV 1
#define VSOCK_SHUTDOWN_SEND 2
/* §5.10.6.8 struct virtio_vsock_event { le32 id; } */
#define VSOCK_EVENT_TRANSPORT_RESET 0
#define VSOCK_EVENT_LEN 4

/* The device's configuration, fixed-width: its snapshot record. */
struct vsock_state {
	uint64_t guest_cid;
};
_Static_assert(sizeof(struct vsock_state) == 8, "a snapshot record");

struct vsock_params {
	uint64_t guest_cid; /* 3 .. 2^32-2 */
	const char *uds;    /* the host side's unix socket */
};

/* Listen on p->uds (a stale socket file there is removed first; any
 * other kind of file is refused) for guest p->guest_cid and hand the
 * device out ("virtio-vsock").  Before the drop phase.  Its counters are
 * Firecracker's vsock metrics ("rx" toward the guest, "tx" from it, as
 * the queues), then ember's own; destroy closes every socket and unlinks
 * uds.  Snapshots (Firecracker's behaviour): save writes the struct
 * vsock_state, nothing else; connections are not saved (host sockets
 * cannot be), so restore refuses another guest CID (-EINVAL) and owes the
 * driver a VIRTIO_VSOCK_EVENT_TRANSPORT_RESET (§5.10.6.8): it goes into
 * the event queue's next buffer once the driver is live and has posted
 * one, and the guest drops every connection it had.  0, or -errno with
 * the reason in err, naming the device. */
__attribute__((warn_unused_result)) int vsock_create(const struct vsock_params *p,
						     struct virtio_impl *out, char *err,
						     size_t errlen);

/* ---- pure helpers (virtio/vsock.c), exposed for the unit tests ---- */

/* A packet header in host byte order. */
struct vsock_hdr {
	uint64_t src_cid, dst_cid;
	uint32_t src_port, dst_port;
	uint32_t len;
	uint16_t type, op;
	uint32_t flags, buf_alloc, fwd_cnt;
};

/* §5.10.6 little-endian wire format, 44 bytes. */
void vsock_hdr_decode(const uint8_t raw[VSOCK_HDR_LEN], struct vsock_hdr *h);
void vsock_hdr_encode(const struct vsock_hdr *h, uint8_t raw[VSOCK_HDR_LEN]);

/* Why a header the guest sent (with `avail` payload bytes after it in
 * its chain) cannot be served, or NULL when it is well-formed: source
 * not guest_cid, destination not the host, type not STREAM, an unknown
 * op, len beyond the chain or VSOCK_MAX_PAYLOAD, payload on a packet
 * that carries none. */
const char *vsock_hdr_check(const struct vsock_hdr *h, uint64_t guest_cid, uint32_t avail);

/* A host's request line: "CONNECT <port>\n" (decimal, 0..2^32-1, no
 * sign or spaces inside; "\r\n" accepted).  line holds len bytes read so
 * far.  1: complete, *port set; 0: no '\n' yet and still plausible;
 * -EINVAL: not a request (or longer than 32 bytes). */
int vsock_parse_connect(const char *line, size_t len, uint32_t *port);

/* §5.10.6.3: bytes we may still send to a peer that advertised
 * buf_alloc and fwd_cnt when we have sent tx_cnt (all modulo 2^32). */
uint32_t vsock_peer_credit(uint32_t buf_alloc, uint32_t fwd_cnt, uint32_t tx_cnt);

#endif
