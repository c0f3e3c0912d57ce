/* virtio-rng (virtio 1.2 §5.4): the driver's writable buffers filled from
 * getrandom(2), behind an optional rate limiter. */
#ifndef EMBER_VIRTIO_RNG_H
#define EMBER_VIRTIO_RNG_H

#include "monitor/evloop.h"
#include "virtio/limiter.h"
#include "virtio/virtio.h"

struct virtio_rng {
	struct vlimit limit;
	uint64_t bytes, requests, errors;
	struct virtio_dev *dev;
};

void vrng_init(struct virtio_rng *r, const struct rl_cfg *rate);
void vrng_close(struct virtio_rng *r);

extern const struct virtio_dev_ops vrng_ops; /* priv: struct virtio_rng */

#endif
