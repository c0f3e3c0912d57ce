/* virtio-net (virtio 1.2 §5.1) over a host tap (monitor/backend.h): one
 * rx and one tx queue, no offloads, a MAC in config space.  Frames pass
 * through the vmm thread; a full rx ring stops reading the tap (frames
 * wait in the host's tap queue, none dropped by ember) until the driver
 * returns buffers. */
#ifndef EMBER_VIRTIO_NET_H
#define EMBER_VIRTIO_NET_H

#include <stdbool.h>
#include <stdint.h>

#include "monitor/backend.h"
#include "monitor/evloop.h"
#include "virtio/limiter.h"
#include "virtio/virtio.h"

#define VNET_HDR 12		 /* struct virtio_net_hdr with VERSION_1 (§5.1.6) */
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

/* Attach to tap `tap_name`; mac NULL: a random one.  0 or -errno with
 * the reason in err. */
__attribute__((warn_unused_result)) int vnet_open(struct virtio_net *n, const char *tap_name,
						  const uint8_t *mac, const struct rl_cfg *rx,
						  const struct rl_cfg *tx, char *err,
						  size_t errlen);
uint64_t vnet_features(const struct virtio_net *n);
void vnet_close(struct virtio_net *n);

extern const struct virtio_dev_ops vnet_ops; /* priv: struct virtio_net */

#endif
