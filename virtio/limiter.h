/* A device's rate limiter on the vmm thread: the token buckets of
 * virtio/ratelimit.h plus the timer that brings a throttled queue back.
 * Shared by block, net and rng. */
#ifndef EMBER_VIRTIO_LIMITER_H
#define EMBER_VIRTIO_LIMITER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/evloop.h"
#include "virtio/ratelimit.h"

struct virtio_dev;

struct vlimit {
	struct ratelimit rl;
	struct ev_timer timer;
	struct evloop *ev;	/* set by vlimit_start */
	struct virtio_dev *dev; /* whose queue the timer serves again */
	unsigned queue;
	uint64_t throttled; /* requests held back (metrics) */
};

/* Configure (rate NULL or all zero: no limit); no timer yet. */
void vlimit_init(struct vlimit *l, const struct rl_cfg *rate);

/* Make the retry timer on d's event loop (from the device's realize,
 * before the drop: timerfd_create is not allowed after it): when a
 * held-back request may go, d's queue `queue` is served again (its
 * notify op, under d->lock, if the device is live).  Made even without a
 * limit, which the API may set later.  No-op without a loop (unit tests)
 * or when already started.  0 or -errno. */
__attribute__((warn_unused_result)) int vlimit_start(struct vlimit *l, struct virtio_dev *d,
						     unsigned queue);

/* May a request of `bytes` go now?  true: its tokens are taken.  false:
 * the retry timer is armed (or already running); the caller gives the
 * request back (vq_unpop) and stops serving the queue. */
bool vlimit_admit(struct vlimit *l, uint64_t bytes);

/* The retry timer is armed: serve nothing until it fires. */
bool vlimit_waiting(const struct vlimit *l);

/* New limits on a running device (the API's PATCH), as rl_update() takes
 * them; a held-back request is retried on the next notification. */
void vlimit_update(struct vlimit *l, const struct rl_cfg *cfg);

/* Snapshots: the buckets' state is the record (a struct ratelimit).
 * vlimit_save: its length, or -ENOSPC when max is too small.
 * vlimit_restore checks it (length, rl_check) and moves its clock to
 * this host's now; a held-back request is retried on the next
 * notification.  0 or -EINVAL. */
int vlimit_save(const struct vlimit *l, void *buf, size_t max);
__attribute__((warn_unused_result)) int vlimit_restore(struct vlimit *l, const void *buf,
						       size_t len);

/* Disarm (device reset) / release (device gone). */
void vlimit_cancel(struct vlimit *l);
void vlimit_fini(struct vlimit *l);

#endif
