/* Moving a running VM's drive (monitor/drive_move.h): the copy runs in
 * steps on the vmm thread's event loop, driven by one timer: a step every
 * turn of the loop (the guest's requests and the API's calls are served
 * between two), or, with a bandwidth limit, when the data copied so far is
 * due.  A virtio drive is served on this same thread, so between two steps
 * no request of it is in flight; an hvt guest's block hypercalls run on
 * its vCPU thread, which the mirror's lock orders against the steps and
 * which is paused for the pivot's switch of the fd. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "base/backend.h"
#include "monitor/drive_move.h"
#include "monitor/hvt/hvt.h"
#include "monitor/vdevs.h"
#include "monitor/vm.h"
#include "virtio/blk.h"

#define CHUNK (1u << 20)      /* one step's data: large sequential I/O */
#define MIN_CHUNK (64u << 10) /* with a low bandwidth limit: smoother pacing */
#define TURN_NS 1000000ull    /* steps per loop turn stop after this long */

const char *dmove_phase_name(enum dmove_phase p)
{
	static const char *const names[] = {"none",	 "copying",   "mirroring", "pivoting",
					    "completed", "cancelled", "failed"};
	return (unsigned)p < sizeof(names) / sizeof(names[0]) ? names[p] : "?";
}

static void on_timer(struct ev_timer *t);

int dmove_init(struct dmove *m, struct vm *vm, struct vm_config *cfg, dmove_pivoted_fn fn,
	       void *opaque)
{
	*m = (struct dmove){.vm = vm, .cfg = cfg, .pivoted = fn, .opaque = opaque, .dst_fd = -1};
	pthread_mutex_init(&m->lock, NULL);
	int r = ev_timer_init(&vm->ev, &m->timer, on_timer, m);
	m->ready = !r;
	return r;
}

void dmove_report(struct dmove *m, struct dmove_report *out)
{
	pthread_mutex_lock(&m->lock);
	*out = m->rep;
	if (m->active)
		out->elapsed_ns = ev_now_ns() - m->t0;
	pthread_mutex_unlock(&m->lock);
}

/* The report's counters from the mirror (the vmm thread). */
static void publish(struct dmove *m, enum dmove_phase phase)
{
	pthread_mutex_lock(&m->mirror.lock);
	uint64_t copied = m->mirror.copied, data = m->mirror.data_bytes,
		 mirrored = m->mirror.mirrored;
	pthread_mutex_unlock(&m->mirror.lock);
	pthread_mutex_lock(&m->lock);
	m->rep.phase = phase;
	m->rep.copied = copied;
	m->rep.data_bytes = data;
	m->rep.mirrored = mirrored;
	m->rep.elapsed_ns = ev_now_ns() - m->t0;
	pthread_mutex_unlock(&m->lock);
}

/* The drive's backend: a virtio-blk device's or an hvt manifest device's.
 * NULL with the reason in err. */
struct blk_backend *dmove_backend(struct vm *vm, const struct vm_config *c, const char *drive,
				  unsigned *index, bool *hvt, char *err, size_t errlen)
{
	unsigned i;
	for (i = 0; i < c->nr_blocks && strcmp(c->blocks[i].name, drive); i++)
		;
	if (i == c->nr_blocks) {
		snprintf(err, errlen, "drive \"%s\": no such drive", drive);
		return NULL;
	}
	*index = i;
	*hvt = vm->hvt != NULL;
	if (*hvt) {
		struct hvt_guest *g = vm->hvt;
		for (unsigned e = 1; e < g->mft.nr; e++)
			if (g->mft.e[e].type == HVT_MFT_BLOCK && !strcmp(g->mft.e[e].name, drive))
				return &g->blk[e];
		snprintf(err, errlen, "drive \"%s\": not among the guest's block devices", drive);
		return NULL;
	}
	bool direct = false;
	struct virtio_dev *d = vdevs_get(vm, i); /* drives come first */
	struct blk_backend *be = d ? vblk_backend(d, &direct) : NULL;
	if (!be)
		snprintf(err, errlen, "drive \"%s\": no virtio-blk device", drive);
	else if (direct)
		snprintf(err, errlen,
			 "drive \"%s\": an O_DIRECT drive (direct=on) cannot be moved yet", drive);
	return be && !direct ? be : NULL;
}

static struct blk_backend *find_drive(struct dmove *m, const char *drive, unsigned *index,
				      bool *hvt, char *err, size_t errlen)
{
	return dmove_backend(m->vm, m->cfg, drive, index, hvt, err, errlen);
}

/* The move is over (not completed): the mirror stops before its
 * destination closes, so a write racing on an hvt vCPU sees the stop
 * under the mirror's lock and never touches the closed fd. */
static void end(struct dmove *m, enum dmove_phase phase, const char *why)
{
	pthread_mutex_lock(&m->mirror.lock);
	if (!m->mirror.err)
		m->mirror.err = -ECANCELED;
	pthread_mutex_unlock(&m->mirror.lock);
	__atomic_store_n(&m->be->mirror, NULL, __ATOMIC_RELEASE);
	ev_timer_cancel(&m->timer);
	close(m->dst_fd);
	m->dst_fd = -1;
	free(m->buf);
	m->buf = NULL;
	m->active = false;
	publish(m, phase);
	pthread_mutex_lock(&m->lock);
	if (why)
		snprintf(m->rep.error, sizeof(m->rep.error),
			 "drive \"%.64s\": moving to %.250s: %.200s; the drive stays on %.250s",
			 m->rep.drive, m->rep.path, why, m->cfg->blocks[m->index].path);
	pthread_mutex_unlock(&m->lock);
}

/* The pivot: no request of the drive in flight (the vmm thread's; an hvt
 * vCPU paused), the destination synced, the backend's fd switched.  The
 * rate limiter and the read-only flag are the device's and stay. */
static void pivot(struct dmove *m)
{
	char why[BLK_MIRROR_ERR_MAX + 64];
	uint64_t t = ev_now_ns();
	publish(m, DMOVE_PIVOTING);
	int r = m->hvt ? vm_pause(m->vm) : 0;
	bool resume = r == 0 && m->hvt;
	if (r && r != -EALREADY)
		return end(m, DMOVE_FAILED,
			   r == -ESHUTDOWN ? "the microVM is stopping" : strerror(-r));
	if (blk_mirror_error(&m->mirror, why, sizeof(why))) {
		r = -EIO;
	} else if (fdatasync(m->dst_fd) < 0) {
		r = -errno;
		snprintf(why, sizeof(why), "syncing the destination: %s", strerror(-r));
	}
	int src = m->be->fd;
	if (!r) {
		m->be->mirror = NULL;
		m->be->fd = m->dst_fd;
		m->dst_fd = -1;
	}
	if (resume)
		(void)!vm_resume(m->vm);
	uint64_t pause = ev_now_ns() - t;
	if (r)
		return end(m, DMOVE_FAILED, why);
	close(src);
	struct cfg_block *b = &m->cfg->blocks[m->index];
	snprintf(b->path, sizeof(b->path), "%s", m->rep.path);
	if (m->pivoted)
		m->pivoted(m->opaque, m->index, b->path);
	free(m->buf);
	m->buf = NULL;
	m->active = false;
	ev_timer_cancel(&m->timer);
	pthread_mutex_lock(&m->lock);
	m->rep.pivot_ns = pause; /* before a reader can see "completed" */
	pthread_mutex_unlock(&m->lock);
	publish(m, DMOVE_COMPLETED);
}

/* When the data copied so far is due at the bandwidth limit: 0 now. */
static uint64_t wait_ns(const struct dmove *m, uint64_t now)
{
	uint64_t bw = m->rep.max_bandwidth;
	if (!bw)
		return 0;
	unsigned __int128 due = (unsigned __int128)m->mirror.data_bytes * 1000000000u / bw;
	uint64_t at = m->t0 + (due > UINT64_MAX - m->t0 ? UINT64_MAX - m->t0 : (uint64_t)due);
	return at > now ? at - now : 0;
}

static void on_timer(struct ev_timer *t)
{
	struct dmove *m = t->opaque;
	char why[BLK_MIRROR_ERR_MAX];
	if (!m->active)
		return;
	if (m->rep.phase == DMOVE_MIRRORING)
		return pivot(m);
	uint64_t start = ev_now_ns(), now = start, w = 0;
	bool done = false;
	while (!done && now - start < TURN_NS && !(w = wait_ns(m, now))) {
		int64_t r = blk_mirror_step(&m->mirror, m->buf, m->chunk, &done);
		if (r < 0 || blk_mirror_error(&m->mirror, why, sizeof(why))) {
			(void)blk_mirror_error(&m->mirror, why, sizeof(why));
			return end(m, DMOVE_FAILED, why);
		}
		now = ev_now_ns();
	}
	if (done) {
		/* The bulk of the destination's writeback, before the pivot's
		 * pause; the pivot syncs what the mirror wrote since. */
		publish(m, DMOVE_MIRRORING);
		if (fdatasync(m->dst_fd) < 0) {
			snprintf(why, sizeof(why), "syncing the destination: %s", strerror(errno));
			return end(m, DMOVE_FAILED, why);
		}
		/* From here the file may become the drive: unmarked first. */
		if (fremovexattr(m->dst_fd, DMOVE_XATTR) < 0 && errno != ENODATA &&
		    errno != ENOTSUP) {
			snprintf(why, sizeof(why), "removing its %s mark: %s", DMOVE_XATTR,
				 strerror(errno));
			return end(m, DMOVE_FAILED, why);
		}
	} else {
		publish(m, DMOVE_COPYING);
	}
	if (ev_timer_arm(&m->timer, w ? w : 1))
		end(m, DMOVE_FAILED, "cannot arm the copy's timer");
}

int dmove_start(struct dmove *m, const char *drive, int fd, const char *path,
		uint64_t max_bandwidth, char *err, size_t errlen)
{
	char why[BLK_MIRROR_ERR_MAX];
	struct stat sd, ss;
	unsigned index = 0;
	bool hvt = false;
	int r = 0;
	struct blk_backend *be = NULL;

	if (!m->ready)
		r = -ENOSYS, snprintf(err, errlen, "drive moves are not available in this mode");
	else if (m->active)
		r = -EBUSY, snprintf(err, errlen,
				     "drive \"%s\": a move of drive \"%s\" to %s is running; "
				     "one move at a time",
				     drive, m->rep.drive, m->rep.path);
	else if (!(be = find_drive(m, drive, &index, &hvt, err, errlen)))
		r = strstr(err, "no such") ? -ENOENT : -EINVAL;
	else if (fstat(fd, &sd) < 0 || fstat(be->fd, &ss) < 0)
		r = -errno,
		snprintf(err, errlen, "drive \"%s\": %s: %s", drive, path, strerror(errno));
	else if (!S_ISREG(sd.st_mode))
		r = -EINVAL,
		snprintf(err, errlen, "drive \"%s\": %s: not a regular file", drive, path);
	else if (sd.st_dev == ss.st_dev && sd.st_ino == ss.st_ino)
		r = -EINVAL,
		snprintf(err, errlen, "drive \"%s\": %s is the drive's own file", drive, path);
	else if (!(m->buf = malloc(CHUNK)))
		r = -ENOMEM, snprintf(err, errlen, "drive \"%s\": out of memory", drive);
	else if ((r = blk_mirror_init(&m->mirror, be->fd, fd, be->capacity))) {
		(void)blk_mirror_error(&m->mirror, why, sizeof(why));
		snprintf(err, errlen, "drive \"%s\": %s: %s", drive, path, why);
		blk_mirror_fini(&m->mirror);
	}
	if (r) {
		free(m->buf);
		m->buf = NULL;
		close(fd);
		return r;
	}
	m->be = be;
	m->hvt = hvt;
	m->index = index;
	m->dst_fd = fd;
	m->chunk = CHUNK;
	if (max_bandwidth && max_bandwidth / 8 < CHUNK)
		m->chunk = max_bandwidth / 8 < MIN_CHUNK ? MIN_CHUNK : max_bandwidth / 8;
	m->t0 = ev_now_ns();
	m->active = true;
	pthread_mutex_lock(&m->lock);
	memset(&m->rep, 0, sizeof(m->rep));
	m->rep.phase = DMOVE_COPYING;
	snprintf(m->rep.drive, sizeof(m->rep.drive), "%s", drive);
	snprintf(m->rep.path, sizeof(m->rep.path), "%s", path);
	m->rep.size = be->capacity;
	m->rep.max_bandwidth = max_bandwidth;
	pthread_mutex_unlock(&m->lock);
	/* Published last: a write that sees the mirror finds it whole. */
	__atomic_store_n(&be->mirror, &m->mirror, __ATOMIC_RELEASE);
	if (ev_timer_arm(&m->timer, 1)) {
		end(m, DMOVE_FAILED, "cannot arm the copy's timer");
		snprintf(err, errlen, "%s", m->rep.error);
		return -EIO;
	}
	return 0;
}

int dmove_cancel(struct dmove *m, const char *drive, char *err, size_t errlen)
{
	if (!m->active || strcmp(m->rep.drive, drive)) {
		if (m->rep.phase != DMOVE_NONE && !strcmp(m->rep.drive, drive))
			snprintf(err, errlen, "drive \"%s\": no move is running (the last one %s)",
				 drive, dmove_phase_name(m->rep.phase));
		else
			snprintf(err, errlen, "drive \"%s\": no move is running", drive);
		return -ENOENT;
	}
	end(m, DMOVE_CANCELLED, "cancelled");
	return 0;
}

void dmove_fini(struct dmove *m)
{
	if (m->active)
		end(m, DMOVE_CANCELLED, "ember is stopping");
	if (m->ready)
		ev_timer_fini(&m->vm->ev, &m->timer);
	m->ready = false;
	pthread_mutex_destroy(&m->lock);
}
