/* emberd's loop: one epoll set, one timerfd armed for the earliest of a
 * sorted list of timers, one eventfd that wakes it for ed_loop_post()'s
 * mutex-protected queue.  Single-threaded but for ed_loop_post(). */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include "ha/emberd/emberd.h"

struct fd_watch {
	int fd;
	ed_fd_fn fn;
	void *arg;
	struct fd_watch *next;
};

struct timer {
	uint64_t id, at_ms;
	ed_timer_fn fn;
	void *arg;
	struct timer *next; /* sorted by at_ms */
};

struct post {
	ed_post_fn fn;
	void *arg;
	struct post *next;
};

struct ed_loop {
	int ep, tfd, efd;
	bool stop;
	struct fd_watch *fds;
	struct timer *timers;
	uint64_t next_id;
	pthread_mutex_t mu;
	struct post *posts, **posts_tail;
};

uint64_t ed_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

int ed_loop_new(struct ed_loop **lp)
{
	struct ed_loop *l = calloc(1, sizeof(*l));
	if (!l)
		return -ENOMEM;
	l->ep = epoll_create1(EPOLL_CLOEXEC);
	l->tfd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
	l->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	pthread_mutex_init(&l->mu, NULL);
	l->posts_tail = &l->posts;
	struct epoll_event ev = {.events = EPOLLIN};
	int r = 0;
	if (l->ep < 0 || l->tfd < 0 || l->efd < 0)
		r = -errno;
	ev.data.ptr = &l->tfd;
	if (!r && epoll_ctl(l->ep, EPOLL_CTL_ADD, l->tfd, &ev) < 0)
		r = -errno;
	ev.data.ptr = &l->efd;
	if (!r && epoll_ctl(l->ep, EPOLL_CTL_ADD, l->efd, &ev) < 0)
		r = -errno;
	if (r) {
		ed_loop_free(l);
		return r;
	}
	*lp = l;
	return 0;
}

void ed_loop_free(struct ed_loop *l)
{
	if (!l)
		return;
	while (l->fds) {
		struct fd_watch *w = l->fds;
		l->fds = w->next;
		free(w);
	}
	while (l->timers) {
		struct timer *t = l->timers;
		l->timers = t->next;
		free(t);
	}
	while (l->posts) {
		struct post *p = l->posts;
		l->posts = p->next;
		free(p);
	}
	for (int *fd = &l->ep; fd <= &l->efd; fd++)
		if (*fd >= 0)
			close(*fd);
	pthread_mutex_destroy(&l->mu);
	free(l);
}

int ed_loop_add_fd(struct ed_loop *l, int fd, uint32_t events, ed_fd_fn fn, void *arg)
{
	struct fd_watch *w = calloc(1, sizeof(*w));
	if (!w)
		return -ENOMEM;
	*w = (struct fd_watch){.fd = fd, .fn = fn, .arg = arg, .next = l->fds};
	struct epoll_event ev = {.events = events, .data.ptr = w};
	if (epoll_ctl(l->ep, EPOLL_CTL_ADD, fd, &ev) < 0) {
		int r = -errno;
		free(w);
		return r;
	}
	l->fds = w;
	return 0;
}

void ed_loop_del_fd(struct ed_loop *l, int fd)
{
	for (struct fd_watch **p = &l->fds; *p; p = &(*p)->next)
		if ((*p)->fd == fd) {
			struct fd_watch *w = *p;
			epoll_ctl(l->ep, EPOLL_CTL_DEL, fd, NULL);
			*p = w->next;
			/* a watch removed while its batch is being handled: its
			 * epoll_event still points here, so mark it, free later */
			w->fn = NULL;
			w->next = NULL;
			free(w);
			return;
		}
}

static void arm(struct ed_loop *l)
{
	struct itimerspec its = {0};
	if (l->timers) {
		uint64_t at = l->timers->at_ms;
		its.it_value.tv_sec = (time_t)(at / 1000);
		its.it_value.tv_nsec = (long)(at % 1000) * 1000000;
		if (!its.it_value.tv_sec && !its.it_value.tv_nsec)
			its.it_value.tv_nsec = 1;
	}
	timerfd_settime(l->tfd, TFD_TIMER_ABSTIME, &its, NULL);
}

uint64_t ed_loop_timer(struct ed_loop *l, uint64_t ms, ed_timer_fn fn, void *arg)
{
	struct timer *t = calloc(1, sizeof(*t));
	if (!t)
		return 0;
	*t = (struct timer){.id = ++l->next_id, .at_ms = ed_now_ms() + ms, .fn = fn, .arg = arg};
	struct timer **p = &l->timers;
	while (*p && (*p)->at_ms <= t->at_ms)
		p = &(*p)->next;
	t->next = *p;
	*p = t;
	if (l->timers == t)
		arm(l);
	return t->id;
}

void ed_loop_cancel(struct ed_loop *l, uint64_t id)
{
	for (struct timer **p = &l->timers; *p; p = &(*p)->next)
		if ((*p)->id == id) {
			struct timer *t = *p;
			*p = t->next;
			free(t);
			arm(l);
			return;
		}
}

int ed_loop_post(struct ed_loop *l, ed_post_fn fn, void *arg)
{
	struct post *p = calloc(1, sizeof(*p));
	if (!p)
		return -ENOMEM;
	p->fn = fn;
	p->arg = arg;
	pthread_mutex_lock(&l->mu);
	*l->posts_tail = p;
	l->posts_tail = &p->next;
	pthread_mutex_unlock(&l->mu);
	uint64_t one = 1;
	if (write(l->efd, &one, sizeof(one)) < 0) {
		/* the counter is full: the loop is awake anyway */
	}
	return 0;
}

static void run_timers(struct ed_loop *l)
{
	uint64_t n;
	if (read(l->tfd, &n, sizeof(n)) < 0) {
		/* EAGAIN: a timer cancelled or re-armed since */
	}
	uint64_t now = ed_now_ms();
	/* one at a time: a callback may add or cancel timers */
	while (l->timers && l->timers->at_ms <= now) {
		struct timer *t = l->timers;
		l->timers = t->next;
		ed_timer_fn fn = t->fn;
		void *arg = t->arg;
		free(t);
		fn(arg);
	}
	arm(l);
}

static void run_posts(struct ed_loop *l)
{
	uint64_t n;
	if (read(l->efd, &n, sizeof(n)) < 0) {
		/* EAGAIN: drained by an earlier round */
	}
	pthread_mutex_lock(&l->mu);
	struct post *p = l->posts;
	l->posts = NULL;
	l->posts_tail = &l->posts;
	pthread_mutex_unlock(&l->mu);
	while (p) {
		struct post *next = p->next;
		p->fn(p->arg);
		free(p);
		p = next;
	}
}

static bool watched(struct ed_loop *l, void *w)
{
	for (struct fd_watch *x = l->fds; x; x = x->next)
		if (x == w)
			return true;
	return false;
}

int ed_loop_run(struct ed_loop *l)
{
	l->stop = false;
	while (!l->stop) {
		struct epoll_event evs[16];
		int n = epoll_wait(l->ep, evs, 16, -1);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		for (int i = 0; i < n && !l->stop; i++) {
			void *p = evs[i].data.ptr;
			if (p == &l->tfd)
				run_timers(l);
			else if (p == &l->efd)
				run_posts(l);
			else if (watched(l, p)) /* not removed by an earlier handler */
				((struct fd_watch *)p)
				    ->fn(((struct fd_watch *)p)->arg, evs[i].events);
		}
	}
	return 0;
}

void ed_loop_stop(struct ed_loop *l)
{
	l->stop = true;
}
