/* The epoll loop behind base/evloop.h. */
#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include "base/evloop.h"

static void drain(struct ev_source *src, uint32_t events)
{
	uint64_t v;
	while (read(src->fd, &v, sizeof(v)) < 0 && errno == EINTR)
		;
}

int ev_init(struct evloop *ev)
{
	memset(ev, 0, sizeof(*ev));
	ev->wake_fd = -1;
	ev->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (ev->epfd < 0)
		return -errno;
	ev->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	int r = ev->wake_fd < 0 ? -errno : ev_add(ev, &ev->wake, ev->wake_fd, EPOLLIN, drain, ev);
	if (r) {
		ev_fini(ev);
		return r;
	}
	ev->nr_sources = 0;
	return 0;
}

void ev_fini(struct evloop *ev)
{
	if (ev->wake_fd >= 0)
		close(ev->wake_fd);
	if (ev->epfd >= 0)
		close(ev->epfd);
	ev->wake_fd = ev->epfd = -1;
}

int ev_add(struct evloop *ev, struct ev_source *src, int fd, uint32_t events, ev_fn fn,
	   void *opaque)
{
	src->fd = fd;
	src->fn = fn;
	src->opaque = opaque;
	struct epoll_event e = {.events = events, .data.ptr = src};
	if (epoll_ctl(ev->epfd, EPOLL_CTL_ADD, fd, &e) < 0)
		return -errno;
	src->added = true;
	ev->nr_sources++;
	return 0;
}

int ev_mod(struct evloop *ev, struct ev_source *src, uint32_t events)
{
	struct epoll_event e = {.events = events, .data.ptr = src};
	return epoll_ctl(ev->epfd, EPOLL_CTL_MOD, src->fd, &e) < 0 ? -errno : 0;
}

void ev_del(struct evloop *ev, struct ev_source *src)
{
	if (!src->added)
		return;
	epoll_ctl(ev->epfd, EPOLL_CTL_DEL, src->fd, NULL);
	src->added = false;
	ev->nr_sources--;
}

enum { EV_BATCH = 16 };

int ev_run(struct evloop *ev, bool (*stop)(void *opaque), void *opaque)
{
	struct epoll_event e[EV_BATCH];
	while (!stop(opaque)) {
		int n = epoll_wait(ev->epfd, e, EV_BATCH, -1);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		/* stop is checked between sources too: a source may stop the
		 * loop, and those after it in the batch are not served */
		for (int i = 0; i < n && !stop(opaque); i++) {
			struct ev_source *src = e[i].data.ptr;
			src->fn(src, e[i].events);
		}
	}
	return 0;
}

void ev_wake(struct evloop *ev)
{
	uint64_t one = 1;
	if (ev->wake_fd >= 0)
		(void)!write(ev->wake_fd, &one, sizeof(one));
}

uint64_t ev_now_ns(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (uint64_t)t.tv_sec * 1000000000ULL + (uint64_t)t.tv_nsec;
}

static void timer_fired(struct ev_source *src, uint32_t events)
{
	struct ev_timer *t = src->opaque;
	uint64_t n;
	if (read(src->fd, &n, sizeof(n)) != sizeof(n))
		return; /* spurious (re-armed meanwhile) */
	t->armed = false;
	t->fn(t);
}

int ev_timer_init(struct evloop *ev, struct ev_timer *t, void (*fn)(struct ev_timer *t),
		  void *opaque)
{
	memset(t, 0, sizeof(*t));
	t->fn = fn;
	t->opaque = opaque;
	int fd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
	if (fd < 0)
		return -errno;
	int r = ev_add(ev, &t->src, fd, EPOLLIN, timer_fired, t);
	if (r)
		close(fd);
	return r;
}

int ev_timer_arm(struct ev_timer *t, uint64_t ns)
{
	if (!ns)
		ns = 1;
	struct itimerspec its = {.it_value = {.tv_sec = (time_t)(ns / 1000000000ULL),
					      .tv_nsec = (long)(ns % 1000000000ULL)}};
	if (timerfd_settime(t->src.fd, 0, &its, NULL) < 0)
		return -errno;
	t->armed = true;
	return 0;
}

void ev_timer_cancel(struct ev_timer *t)
{
	struct itimerspec its;
	memset(&its, 0, sizeof(its));
	timerfd_settime(t->src.fd, 0, &its, NULL);
	t->armed = false;
}

void ev_timer_fini(struct evloop *ev, struct ev_timer *t)
{
	if (!t->src.added)
		return;
	ev_del(ev, &t->src);
	close(t->src.fd);
}
