/* virtio-rng (virtio 1.2 §5.4): one queue of device-writable buffers. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "virtio/limiter.h"
#include "virtio/rng.h"

#define RNG_CHUNK 4096 /* per getrandom call; a request may be larger */

struct virtio_rng {
	struct vlimit limit;
	uint64_t bytes, requests, errors;
	struct virtio_dev *dev;
};

/* Fill the chain's writable part; returns the bytes written. */
static uint32_t fill(struct virtio_rng *r, const struct vq_chain *c)
{
	uint8_t buf[RNG_CHUNK];
	uint32_t done = 0;
	while (done < c->in_len) {
		size_t n = c->in_len - done < sizeof(buf) ? c->in_len - done : sizeof(buf);
		ssize_t got = getrandom(buf, n, 0);
		if (got < 0 && errno == EINTR)
			continue;
		if (got <= 0) {
			r->errors++;
			break;
		}
		done += (uint32_t)vq_write(c, done, buf, (size_t)got);
	}
	return done;
}

static void process(struct virtio_dev *d)
{
	struct virtio_rng *r = d->priv;
	struct vq *q = &d->vq[0];
	static struct vq_chain c;
	char why[VQ_ERR_MAX];
	bool done = false;

	if (vlimit_waiting(&r->limit))
		return;
	for (;;) {
		int got = vq_pop(q, &c, why, sizeof(why));
		if (got < 0) {
			virtio_fail(d, "queue 0: %s", why);
			break;
		}
		if (got == 0)
			break;
		if (c.nr_out) {
			virtio_fail(d, "queue 0: request %u has driver-readable buffers "
				       "(§5.4.6: all are device-writable)", c.head);
			break;
		}
		if (!vlimit_admit(&r->limit, c.in_len)) {
			vq_unpop(q);
			break;
		}
		uint32_t n = fill(r, &c);
		r->bytes += n;
		r->requests++;
		vq_push(q, &c, n);
		done = true;
	}
	if (done)
		virtio_queue_done(d, 0);
}

/* The limiter's timer, made before the drop phase. */
static int realize(struct virtio_dev *d)
{
	struct virtio_rng *r = d->priv;
	r->dev = d;
	return vlimit_start(&r->limit, d, 0);
}

static void notify(struct virtio_dev *d, unsigned q)
{
	process(d);
}

static void reset(struct virtio_dev *d)
{
	struct virtio_rng *r = d->priv;
	vlimit_cancel(&r->limit);
}

/* The snapshot record: the limiter. */
static int save(struct virtio_dev *d, void *buf, size_t max)
{
	struct virtio_rng *r = d->priv;
	return vlimit_save(&r->limit, buf, max);
}

static int restore(struct virtio_dev *d, const void *buf, size_t len)
{
	struct virtio_rng *r = d->priv;
	return vlimit_restore(&r->limit, buf, len);
}

static void destroy(struct virtio_dev *d)
{
	struct virtio_rng *r = d->priv;
	vlimit_fini(&r->limit);
	free(r);
	d->priv = NULL;
}

/* Firecracker's entropy metrics (names and order are the API's). */
static void counters(struct virtio_dev *d, virtio_counter_fn *fn, void *opaque)
{
	const struct virtio_rng *r = d->priv;
	fn(opaque, "entropy_bytes", r->bytes);
	fn(opaque, "entropy_event_count", r->requests);
	fn(opaque, "entropy_rate_limiter_throttled", r->limit.throttled);
}

static const struct virtio_dev_ops vrng_ops = {
    .kind = "rng",
    .metrics = "entropy",
    .device_id = VIRTIO_ID_RNG,
    .nr_queues = 1,
    .realize = realize,
    .notify = notify,
    .reset = reset,
    .save = save,
    .restore = restore,
    .destroy = destroy,
    .counters = counters,
};

int vrng_create(const struct vrng_params *p, struct virtio_impl *out, char *err, size_t errlen)
{
	snprintf(out->name, sizeof(out->name), "virtio-rng");
	struct virtio_rng *r = calloc(1, sizeof(*r));
	if (!r) {
		snprintf(err, errlen, "%s: out of memory", out->name);
		return -ENOMEM;
	}
	vlimit_init(&r->limit, p->rate);
	out->ops = &vrng_ops;
	out->priv = r;
	out->features = 0;
	return 0;
}
