/* virtio-rng (virtio 1.2 §5.4): the driver's writable buffers filled from
 * getrandom(2), behind an optional rate limiter. */
#ifndef EMBER_VIRTIO_RNG_H
#define EMBER_VIRTIO_RNG_H

#include <stddef.h>

#include "virtio/ratelimit.h"
#include "virtio/virtio.h"

struct vrng_params {
	const struct rl_cfg *rate; /* NULL or all zero: no limit */
};

/* Hand the device out ("virtio-rng").  Its counters are Firecracker's
 * entropy metrics; its limits are fixed (no set_limits).  0 or -ENOMEM
 * with the reason in err. */
__attribute__((warn_unused_result)) int vrng_create(const struct vrng_params *p,
						    struct virtio_impl *out, char *err,
						    size_t errlen);

#endif
