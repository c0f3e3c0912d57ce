/* The migration's thread, its job, its status, and the vmm thread's side:
 * requests posted through an eventfd on the VM's loop (freeze, thaw,
 * resume, throttle) and the throttle's duty cycle (a timer). */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "monitor/migrate/migrate.h"
#include "monitor/vdevs.h"
#include "monitor/vm.h"

/* The throttle's period: the vCPUs are held throttle_pct of each. */
#define THROTTLE_PERIOD_NS 10000000ULL

uint64_t mig_now_ns(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (uint64_t)t.tv_sec * 1000000000ULL + (uint64_t)t.tv_nsec;
}

void mig_completed(struct mig *m, const char *how)
{
	struct mig_status st;
	atomic_store(&m->t_end_ns, mig_now_ns());
	mig_set_phase(m, MIG_COMPLETED);
	mig_get_status(m, &st);
	fprintf(stderr,
		"ember: migration completed%s: the VM runs on the target now; this process exits "
		"(total %" PRIu64 " ms, downtime %.3f ms, %" PRIu64 " rounds, %" PRIu64
		" bytes, %" PRIu64 " pages)\n",
		how, st.total_ms, (double)st.downtime_us / 1000.0, st.round + 1, st.bytes_sent,
		st.pages_sent);
	m->stop_why = "migrated: the VM runs on the target";
	/* A same-host source's vmm thread, still frozen, stops the VM before
	 * serving a device again (its RAM is the target's now). */
	if (m->p.local)
		mig_thaw_stop(m);
	else
		(void)mig_vmm_request(m, MIG_REQ_STOP);
}

void mig_pace(uint64_t t0, uint64_t bytes, uint64_t bw)
{
	if (!bw)
		return;
	uint64_t due = t0 + (uint64_t)((double)bytes * 1e9 / (double)bw);
	uint64_t now = mig_now_ns();
	if (due > now) {
		struct timespec ts = {.tv_sec = (time_t)((due - now) / 1000000000ULL),
				      .tv_nsec = (long)((due - now) % 1000000000ULL)};
		clock_nanosleep(CLOCK_MONOTONIC, 0, &ts, NULL);
	}
}

const char *mig_phase_name(enum mig_phase p)
{
	static const char *const names[] = {
	    [MIG_NONE] = "none",	 [MIG_SETUP] = "setup",
	    [MIG_PRECOPY] = "precopy",	 [MIG_STOPCOPY] = "stop-and-copy",
	    [MIG_HANDOVER] = "handover", [MIG_COMPLETED] = "completed",
	    [MIG_CANCELLED] = "cancelled", [MIG_FAILED] = "failed",
	    [MIG_UNKNOWN] = "handover-unknown", [MIG_RECEIVING] = "receiving",
	    [MIG_READY] = "ready",	 [MIG_RUNNING] = "running",
	    [MIG_POSTCOPY] = "postcopy",
	};
	return (unsigned)p < sizeof(names) / sizeof(names[0]) ? names[p] : "none";
}

void mig_set_phase(struct mig *m, enum mig_phase p)
{
	atomic_store(&m->phase, (int)p);
}

void mig_set_error(struct mig *m, enum mig_phase p, const char *fmt, ...)
{
	va_list ap;
	pthread_mutex_lock(&m->lock);
	va_start(ap, fmt);
	vsnprintf(m->error, sizeof(m->error), fmt, ap);
	va_end(ap);
	pthread_mutex_unlock(&m->lock);
	atomic_store(&m->t_end_ns, mig_now_ns());
	mig_set_phase(m, p);
}

/* ---- the thread ---- */

static void *mig_thread(void *arg)
{
	struct mig *m = arg;
	/* Capabilities are per thread: this one drops its own, then loads
	 * the mig role for good (it was made before any sandbox). */
	if (jail_drop_caps() || jail_filter_apply(&m->filter)) {
		pthread_mutex_lock(&m->lock);
		m->dead = true; /* start() refuses every job */
		pthread_mutex_unlock(&m->lock);
		return NULL;
	}
	for (;;) {
		pthread_mutex_lock(&m->lock);
		while (m->job != 1 && m->job != 2)
			pthread_cond_wait(&m->cv, &m->lock);
		int job = m->job;
		pthread_mutex_unlock(&m->lock);
		if (job == 1)
			mig_run_send(m);
		else
			mig_run_receive(m);
		pthread_mutex_lock(&m->lock);
		close(m->fd);
		m->fd = -1;
		m->job = 0; /* done: a failed source may try again, a target that
			     * runs may be sent on */
		pthread_mutex_unlock(&m->lock);
	}
	return NULL;
}

int mig_init(struct mig *m, enum jail_seccomp_mode mode, const struct mig_source_ops *sops,
	     const struct mig_target_ops *tops, void *opaque)
{
	memset(m, 0, sizeof(*m));
	pthread_mutex_init(&m->lock, NULL);
	pthread_cond_init(&m->cv, NULL);
	m->fd = -1;
	m->sops = sops;
	m->tops = tops;
	m->opaque = opaque;
	atomic_store(&m->downtime_us, -1);
	/* Opened now, before any sandbox: the sender asks it which pages of
	 * RAM were never touched.  Without /proc (a jail) every page is
	 * looked at, as before. */
	m->pagemap_fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	m->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (m->efd < 0)
		return -errno;
	m->uffd = mig_uffd_open();
	m->pid = getpid();
	int r = jail_filter_build(&m->filter, JAIL_ROLE_MIG, mode);
	if (r)
		return r;
	pthread_attr_t attr;
	pthread_attr_init(&attr);
	pthread_attr_setstacksize(&attr, 256 * 1024);
	r = -pthread_create(&m->thread, &attr, mig_thread, m);
	pthread_attr_destroy(&attr);
	return r;
}

/* ---- the vmm thread's side ---- */

static void hold_vcpus(struct vm *vm, bool hold)
{
	for (unsigned i = 0; i < vm->nr_vcpus; i++)
		hold ? vcpu_pause(&vm->vcpus[i]) : vcpu_resume(&vm->vcpus[i]);
}

/* One edge of the duty cycle: hold the vCPUs for pct of the period, let
 * them go for the rest.  A VM paused otherwise is left alone. */
static void on_throttle(struct ev_timer *t)
{
	struct mig *m = t->opaque;
	struct vm *vm = m->vm;
	unsigned pct = atomic_load(&m->throttle_pct);
	if (m->throttle_on) {
		hold_vcpus(vm, false);
		m->throttle_on = false;
		if (pct)
			(void)!ev_timer_arm(t, THROTTLE_PERIOD_NS * (100 - pct) / 100);
		return;
	}
	if (!pct || vm->paused || atomic_load(&vm->stopping))
		return;
	hold_vcpus(vm, true);
	m->throttle_on = true;
	(void)!ev_timer_arm(t, THROTTLE_PERIOD_NS * pct / 100);
}

static int do_request(struct mig *m, int req)
{
	struct vm *vm = m->vm;
	int r = 0;
	switch (req) {
	case MIG_REQ_FREEZE:
		atomic_store(&m->throttle_pct, 0);
		ev_timer_cancel(&m->throttle);
		m->was_paused = vm->paused;
		/* vm_pause parks every vCPU, throttled ones included */
		m->throttle_on = false;
		r = vm_pause(vm);
		if (r == -EALREADY)
			r = 0;
		/* shared storage: the target reads what was written here */
		if (!r && (r = vdevs_flush(vm)) && !m->was_paused)
			(void)!vm_resume(vm);
		if (!r && m->sops)
			m->sops->state(m->opaque, true);
		return r;
	case MIG_REQ_RESUME:
		atomic_store(&m->throttle_pct, 0);
		ev_timer_cancel(&m->throttle);
		if (m->throttle_on)
			hold_vcpus(vm, false);
		m->throttle_on = false;
		if (!m->was_paused && vm->paused) {
			r = vm_resume(vm);
			if (!r && m->sops)
				m->sops->state(m->opaque, false);
		}
		return r;
	case MIG_REQ_LOG_ON: /* the first request: the VM as it was before */
		m->was_paused = vm->paused;
		m->had_log = vm->track_dirty;
		return m->had_log ? 0 : vm_track_dirty(vm, true);
	case MIG_REQ_LOG_OFF:
		return m->had_log || !vm->track_dirty ? 0 : vm_track_dirty(vm, false);
	case MIG_REQ_STOP:
		vm_stop(vm, m->stop_code, m->stop_why);
		return 0;
	case MIG_REQ_DISK_ON: /* the guest's writes are served on this thread */
		return mig_disk_attach(m, vm);
	case MIG_REQ_DISK_OFF:
		mig_disk_detach(m);
		return 0;
	case MIG_REQ_THROTTLE:
		if (!m->throttle_on)
			return ev_timer_arm(&m->throttle, 1);
		return 0;
	}
	return 0;
}

static void on_request(struct ev_source *src, uint32_t events)
{
	struct mig *m = src->opaque;
	uint64_t v;
	(void)!read(m->efd, &v, sizeof(v));
	pthread_mutex_lock(&m->lock);
	int req = m->req_done ? 0 : m->req;
	pthread_mutex_unlock(&m->lock);
	if (!req)
		return;
	int r = do_request(m, req);
	pthread_mutex_lock(&m->lock);
	m->req_r = r;
	m->req_done = true;
	pthread_cond_broadcast(&m->cv);
	/* Frozen: this thread stays here until the migration thread lets
	 * it go (MIG_REQ_THAW), so no device writes guest RAM or changes
	 * its state between the state's capture and the last pages. */
	m->frozen = req == MIG_REQ_FREEZE && !r;
	while (m->frozen)
		pthread_cond_wait(&m->cv, &m->lock);
	bool stop = m->stop_on_thaw;
	m->stop_on_thaw = false;
	pthread_mutex_unlock(&m->lock);
	if (stop) /* before this thread serves any device again */
		vm_stop(m->vm, 0, m->stop_why);
}

void mig_thaw_stop(struct mig *m)
{
	pthread_mutex_lock(&m->lock);
	m->stop_on_thaw = true;
	pthread_mutex_unlock(&m->lock);
	(void)mig_vmm_request(m, MIG_REQ_THAW);
}

int mig_vmm_request(struct mig *m, int req)
{
	uint64_t one = 1;
	pthread_mutex_lock(&m->lock);
	if (req == MIG_REQ_THAW) {
		m->frozen = false;
		pthread_cond_broadcast(&m->cv);
		pthread_mutex_unlock(&m->lock);
		return 0;
	}
	m->req = req;
	m->req_done = false;
	(void)!write(m->efd, &one, sizeof(one));
	while (!m->req_done && !atomic_load(&m->vm->stopping))
		pthread_cond_wait(&m->cv, &m->lock);
	int r = m->req_done ? m->req_r : -ESHUTDOWN;
	m->req = 0;
	pthread_mutex_unlock(&m->lock);
	return r;
}

int mig_watch(struct mig *m, struct vm *vm)
{
	if (!m->sops && !m->tops)
		return 0; /* no mig_init: no API, no migrations */
	if (m->ev) {
		ev_del(m->ev, &m->src);
		ev_timer_fini(m->ev, &m->throttle);
		m->ev = NULL;
	}
	m->vm = vm;
	int r = ev_add(&vm->ev, &m->src, m->efd, EPOLLIN, on_request, m);
	if (r)
		return r;
	r = ev_timer_init(&vm->ev, &m->throttle, on_throttle, m);
	if (r) {
		ev_del(&vm->ev, &m->src);
		return r;
	}
	m->ev = &vm->ev;
	return 0;
}

/* ---- the owner's calls (the API thread) ---- */

static int start(struct mig *m, int job, struct vm *vm, int fd, const struct mig_params *p,
		 char *err, size_t errlen)
{
	pthread_mutex_lock(&m->lock);
	if (m->dead) {
		pthread_mutex_unlock(&m->lock);
		snprintf(err, errlen, "the migration thread could not load its sandbox");
		return -ENOSYS;
	}
	if (m->job || mig_busy(m)) {
		pthread_mutex_unlock(&m->lock);
		snprintf(err, errlen, "a migration is in progress (phase %s)",
			 mig_phase_name((enum mig_phase)atomic_load(&m->phase)));
		return -EBUSY;
	}
	m->job = job;
	m->fd = fd;
	m->vm = vm;
	if (p)
		m->p = *p;
	m->error[0] = '\0';
	m->resolve = 0;
	m->stop_code = 0;
	atomic_store(&m->cancel, false);
	atomic_store(&m->round, 0);
	atomic_store(&m->bytes_sent, 0);
	atomic_store(&m->bytes_remaining, 0);
	atomic_store(&m->pages_sent, 0);
	atomic_store(&m->dirty_rate_bps, 0);
	atomic_store(&m->bandwidth_bps, 0);
	atomic_store(&m->expected_downtime_us, 0);
	atomic_store(&m->throttle_pct, 0);
	atomic_store(&m->t_end_ns, 0);
	atomic_store(&m->downtime_us, -1);
	atomic_store(&m->pages_missing, 0);
	atomic_store(&m->faults_served, 0);
	atomic_store(&m->role, job == 1 ? MIG_ROLE_SOURCE : MIG_ROLE_TARGET);
	atomic_store(&m->phase, job == 1 ? MIG_SETUP : MIG_RECEIVING);
	atomic_store(&m->t_start_ns, mig_now_ns());
	pthread_cond_broadcast(&m->cv);
	pthread_mutex_unlock(&m->lock);
	return 0;
}

int mig_send(struct mig *m, struct vm *vm, int fd, const struct mig_params *p, char *err,
	     size_t errlen)
{
	return start(m, 1, vm, fd, p, err, errlen);
}

int mig_receive(struct mig *m, int fd, char *err, size_t errlen)
{
	return start(m, 2, NULL, fd, NULL, err, errlen);
}

int mig_cancel(struct mig *m, char *err, size_t errlen)
{
	int ph = atomic_load(&m->phase);
	if (atomic_load(&m->role) != MIG_ROLE_SOURCE || ph == MIG_NONE) {
		snprintf(err, errlen, "no migration is being sent from here");
		return -ENOENT;
	}
	if (ph != MIG_SETUP && ph != MIG_PRECOPY && ph != MIG_STOPCOPY) {
		snprintf(err, errlen,
			 "the migration is past the point where it can be cancelled (phase %s)",
			 mig_phase_name((enum mig_phase)ph));
		return -EBUSY;
	}
	atomic_store(&m->cancel, true);
	return 0;
}

int mig_resolve(struct mig *m, bool resume, char *err, size_t errlen)
{
	int ph = atomic_load(&m->phase);
	if (ph != MIG_UNKNOWN && ph != MIG_READY) {
		snprintf(err, errlen,
			 "resolve is for phase handover-unknown (source) or ready (target), not %s",
			 mig_phase_name((enum mig_phase)ph));
		return -EBUSY;
	}
	pthread_mutex_lock(&m->lock);
	m->resolve = resume ? 1 : 2;
	pthread_cond_broadcast(&m->cv);
	pthread_mutex_unlock(&m->lock);
	return 0;
}

void mig_reply_grace(void)
{
	/* The API writes the request's 204 once its handler returns: give it
	 * that long before the process ends. */
	struct timespec t = {0, 100000000};
	clock_nanosleep(CLOCK_MONOTONIC, 0, &t, NULL);
}

bool mig_busy(struct mig *m)
{
	int ph = atomic_load(&m->phase);
	return ph != MIG_NONE && ph != MIG_CANCELLED && ph != MIG_FAILED && ph != MIG_RUNNING;
	/* MIG_POSTCOPY is busy: the target's own accesses to RAM wait for
	 * the source until the last page is in */
}

void mig_get_status(struct mig *m, struct mig_status *st)
{
	memset(st, 0, sizeof(*st));
	st->role = (enum mig_role)atomic_load(&m->role);
	st->phase = (enum mig_phase)atomic_load(&m->phase);
	st->round = atomic_load(&m->round);
	st->bytes_sent = atomic_load(&m->bytes_sent);
	st->bytes_remaining = atomic_load(&m->bytes_remaining);
	st->pages_sent = atomic_load(&m->pages_sent);
	st->dirty_rate_bps = atomic_load(&m->dirty_rate_bps);
	st->bandwidth_bps = atomic_load(&m->bandwidth_bps);
	st->expected_downtime_us = atomic_load(&m->expected_downtime_us);
	st->throttle_pct = atomic_load(&m->throttle_pct);
	st->disk_total = atomic_load(&m->disk_total);
	st->disk_sent = atomic_load(&m->disk_sent);
	st->disk_remaining = atomic_load(&m->disk_remaining);
	uint64_t t0 = atomic_load(&m->t_start_ns), t1 = atomic_load(&m->t_end_ns);
	if (t0)
		st->total_ms = ((t1 ? t1 : mig_now_ns()) - t0) / 1000000;
	st->downtime_us = atomic_load(&m->downtime_us);
	st->pages_missing = atomic_load(&m->pages_missing);
	st->faults_served = atomic_load(&m->faults_served);
	pthread_mutex_lock(&m->lock);
	snprintf(st->error, sizeof(st->error), "%s", m->error);
	pthread_mutex_unlock(&m->lock);
}
