/* virtio-net (virtio 1.2 §5.1) over a host tap (base/backend.h): one
 * rx and one tx queue, no offloads, a MAC in config space.  Frames pass
 * through the vmm thread; a full rx ring stops reading the tap (frames
 * wait in the host's tap queue, none dropped by ember) until the driver
 * returns buffers. */
#ifndef EMBER_VIRTIO_NET_H
#define EMBER_VIRTIO_NET_H

#include <stddef.h>
#include <stdint.h>

#include "virtio/ratelimit.h"
#include "virtio/virtio.h"

struct vnet_params {
	const char *id;		      /* the interface's: its name */
	const char *tap;	      /* an existing, up host tap */
	const uint8_t *mac;	      /* 6 bytes; NULL: a random one */
	const struct rl_cfg *rx, *tx; /* NULL or all zero: no limit */
};

/* Attach to the tap and hand the device out ("virtio-net <id>"; offers
 * MAC).  Its counters are Firecracker's net metrics; set_limits takes
 * a (rx) and b (tx).  0 or -errno with the reason in err, naming the
 * device and the tap. */
__attribute__((warn_unused_result)) int vnet_create(const struct vnet_params *p,
						    struct virtio_impl *out, char *err,
						    size_t errlen);

#endif
