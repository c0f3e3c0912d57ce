/* An event loop on epoll: the vmm thread's (virtio notifications, device
 * backends, rate-limit timers) and the API thread's (its socket).  A
 * source is owned by its caller and embedded where it is needed, so the
 * loop allocates nothing.  Each loop belongs to one thread: ev_add/ev_mod/
 * ev_del and the callbacks run there; ev_wake() is for any thread. */
#ifndef EMBER_EVLOOP_H
#define EMBER_EVLOOP_H

#include <stdbool.h>
#include <stdint.h>

struct ev_source;

/* events: EPOLLIN/EPOLLOUT/EPOLLERR/EPOLLHUP as epoll reported them. */
typedef void (*ev_fn)(struct ev_source *src, uint32_t events);

struct ev_source {
	int fd;
	ev_fn fn;
	void *opaque;
	bool added;
};

struct evloop {
	int epfd;
	int wake_fd; /* eventfd: ev_wake() makes ev_run() look at its stop test */
	struct ev_source wake;
	unsigned nr_sources; /* besides wake */
};

/* epoll instance and wake eventfd (both close-on-exec).  0 or -errno. */
__attribute__((warn_unused_result)) int ev_init(struct evloop *ev);

/* Close both; sources are the callers' to close.  Safe twice. */
void ev_fini(struct evloop *ev);

/* Watch src->fd for events (EPOLLIN, EPOLLOUT; level-triggered).  src
 * must stay valid until ev_del().  0 or -errno. */
__attribute__((warn_unused_result)) int ev_add(struct evloop *ev, struct ev_source *src,
					       int fd, uint32_t events, ev_fn fn, void *opaque);

/* Change the events of a watched source (0: watch nothing for now). */
__attribute__((warn_unused_result)) int ev_mod(struct evloop *ev, struct ev_source *src,
					       uint32_t events);

/* Stop watching; the fd stays open.  Safe on a source never added. */
void ev_del(struct evloop *ev, struct ev_source *src);

/* Run callbacks until stop(opaque) is true: it is asked at start and
 * after every wake-up.  Returns 0, or -errno if epoll_wait fails for a
 * reason other than EINTR. */
int ev_run(struct evloop *ev, bool (*stop)(void *opaque), void *opaque);

/* Make ev_run() return to its stop test soon.  Any thread, signal-safe. */
void ev_wake(struct evloop *ev);

/* CLOCK_MONOTONIC in nanoseconds: the clock of the loop's timers (and of
 * every deadline and rate limiter ember keeps). */
uint64_t ev_now_ns(void);

/* One-shot timer: a timerfd (CLOCK_MONOTONIC) watched by ev. */
struct ev_timer {
	struct ev_source src;
	void (*fn)(struct ev_timer *t);
	void *opaque;
	bool armed;
};

__attribute__((warn_unused_result)) int ev_timer_init(struct evloop *ev, struct ev_timer *t,
						      void (*fn)(struct ev_timer *t),
						      void *opaque);
/* Fire once, ns from now (ns >= 1); re-arming replaces the old time. */
__attribute__((warn_unused_result)) int ev_timer_arm(struct ev_timer *t, uint64_t ns);
void ev_timer_cancel(struct ev_timer *t);
void ev_timer_fini(struct evloop *ev, struct ev_timer *t);

#endif
