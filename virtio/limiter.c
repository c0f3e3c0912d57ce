/* See virtio/limiter.h. */
#include <errno.h>
#include <string.h>
#include <time.h>

#include "virtio/limiter.h"
#include "virtio/virtio.h"

void vlimit_init(struct vlimit *l, const struct rl_cfg *rate)
{
	memset(l, 0, sizeof(*l));
	rl_init(&l->rl, rate, ev_now_ns());
}

static void retry(struct ev_timer *t)
{
	struct vlimit *l = t->opaque;
	struct virtio_dev *d = l->dev;
	pthread_mutex_lock(&d->lock);
	if (virtio_live(d))
		d->ops->notify(d, l->queue);
	pthread_mutex_unlock(&d->lock);
}

int vlimit_start(struct vlimit *l, struct virtio_dev *d, unsigned queue)
{
	/* Made even without a limit: one may be set on the running device
	 * (the API's PATCH), when timerfd_create is no longer allowed. */
	if (l->ev || !d->ev)
		return 0; /* no loop (tests): the next notification retries */
	l->dev = d;
	l->queue = queue;
	int r = ev_timer_init(d->ev, &l->timer, retry, l);
	if (!r)
		l->ev = d->ev;
	return r;
}

bool vlimit_waiting(const struct vlimit *l)
{
	return l->ev && l->timer.armed;
}

bool vlimit_admit(struct vlimit *l, uint64_t bytes)
{
	if (!rl_active(&l->rl))
		return true;
	if (vlimit_waiting(l))
		return false;
	uint64_t now = ev_now_ns();
	if (rl_consume(&l->rl, bytes, now))
		return true;
	l->throttled++;
	/* No timer (activate failed): the next notification retries. */
	if (l->ev && ev_timer_arm(&l->timer, rl_wait_ns(&l->rl, bytes, now)) == 0)
		return false;
	return false;
}

void vlimit_cancel(struct vlimit *l)
{
	if (l->ev)
		ev_timer_cancel(&l->timer);
}

void vlimit_fini(struct vlimit *l)
{
	if (l->ev)
		ev_timer_fini(l->ev, &l->timer);
	l->ev = NULL;
}

void vlimit_update(struct vlimit *l, const struct rl_cfg *cfg)
{
	rl_update(&l->rl, cfg, ev_now_ns());
	vlimit_cancel(l);
}

int vlimit_save(const struct vlimit *l, void *buf, size_t max)
{
	if (max < sizeof(l->rl))
		return -ENOSPC;
	memcpy(buf, &l->rl, sizeof(l->rl));
	return sizeof(l->rl);
}

int vlimit_restore(struct vlimit *l, const void *buf, size_t len)
{
	struct ratelimit rl;
	if (len != sizeof(rl))
		return -EINVAL;
	memcpy(&rl, buf, sizeof(rl));
	if (rl_check(&rl))
		return -EINVAL;
	l->rl = rl;
	rl_rebase(&l->rl, ev_now_ns());
	return 0;
}
