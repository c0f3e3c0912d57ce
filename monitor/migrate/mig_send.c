/* The source (docs/migration.md): setup, pre-copy rounds until the rest
 * fits the downtime budget at the measured bandwidth (throttling the
 * vCPUs when rounds stop shrinking), stop-and-copy with the vmm thread
 * holding the VM frozen, then the hand-over: REDY from the target, and
 * from then on this VM never resumes by itself. */
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "monitor/exitcodes.h"
#include "monitor/migrate/migrate.h"
#include "monitor/snap_records.h"
#include "monitor/vm.h"
#include "snapshot/snapshot.h"

#define PAGE SNAP_PAGE
/* Rounds that do not shrink the dirty set by a tenth before the throttle
 * takes its next step. */
#define STALLED_ROUNDS 2

struct sender {
	struct mig *m;
	struct vm *vm;
	struct snap_stream s;
	uint64_t pages, words;
	uint64_t *bits;
	uint8_t *buf; /* SNAP_MIG_RUN_MAX pages: a copy is what the CRC covers */
	uint64_t *terms; /* each page's hash term as last sent (0: zero, as the target's) */
	uint64_t *touched; /* gmem_populated()'s answer for the hash pass (may be NULL) */
	uint64_t deadline_ns, pace_t0, pace_bytes;
	char err[MIG_ERR_MAX];
};

static bool page_zero(const uint8_t *p)
{
	const uint64_t *w = (const uint64_t *)p;
	for (size_t i = 0; i < PAGE / 8; i++)
		if (w[i])
			return false;
	return true;
}

/* Cancelled, or past the timeout: -ECANCELED / -ETIMEDOUT with why. */
static int check_stop(struct sender *x)
{
	if (atomic_load(&x->m->cancel)) {
		snprintf(x->err, sizeof(x->err), "cancelled (PUT /migration/cancel)");
		return -ECANCELED;
	}
	if (x->deadline_ns && mig_now_ns() > x->deadline_ns) {
		snprintf(x->err, sizeof(x->err), "timed out after %" PRIu64 " ms (timeout_ms)",
			 x->m->p.timeout_ms);
		return -ETIMEDOUT;
	}
	return 0;
}

/* max_bandwidth: sleep until the bytes sent so far are due. */
static void pace(struct sender *x, uint64_t n)
{
	x->pace_bytes += n;
	mig_pace(x->pace_t0, x->pace_bytes, x->m->p.max_bandwidth);
}

/* A write to the stream failed: the target may have said why before it
 * closed (a NACK: a disk it cannot write, say).  Its reason replaces the
 * write's error when one is there within a second. */
static void peer_reason(struct sender *x)
{
	struct pollfd pf = {.fd = x->s.fd, .events = POLLIN};
	struct timespec wait = {1, 0};
	struct snap_mig_rec rec;
	char e[SNAP_ERR_MAX], reason[SNAP_MIG_NACK_MAX + 1];
	if (ppoll(&pf, 1, &wait, NULL) <= 0 || snap_mig_get_hdr(&x->s, &rec, e, sizeof(e)) ||
	    rec.type != SNAP_MIG_NACK || snap_mig_get_body(&x->s, &rec, reason, e, sizeof(e)))
		return;
	reason[rec.len] = '\0';
	snprintf(x->err, sizeof(x->err), "the target refused: %.600s", reason);
}

static int put(struct sender *x, uint32_t type, uint64_t a, uint64_t b, const void *payload,
	       uint32_t len)
{
	int r = snap_mig_put(&x->s, type, a, b, payload, len, x->err, sizeof(x->err));
	if (r && type != SNAP_MIG_GOGO)
		peer_reason(x);
	if (!r) {
		atomic_fetch_add(&x->m->bytes_sent, SNAP_MIG_HDR + len);
		pace(x, SNAP_MIG_HDR + len);
	}
	return r;
}

static int io_put(void *x, uint32_t type, uint64_t a, uint64_t b, const void *payload,
		  uint32_t len)
{
	return put(x, type, a, b, payload, len);
}

static int io_check(void *x)
{
	return check_stop(x);
}

static struct mig_disk_io disk_io(struct sender *x)
{
	return (struct mig_disk_io){
	    .put = io_put, .check = io_check, .x = x, .err = x->err, .errlen = sizeof(x->err)};
}

/* Pages [first, first+n) (n <= SNAP_MIG_RUN_MAX), copied first so the
 * CRC covers what is sent while the guest writes on: runs of non-zero
 * pages as DATA, of zero pages as ZERO markers (skipped when zeros is
 * false: round 0 onto the target's zeroed RAM). */
static int send_chunk(struct sender *x, uint64_t first, uint64_t n, bool zeros)
{
	memcpy(x->buf, x->vm->mem.base + first * PAGE, n * PAGE);
	for (uint64_t i = 0; i < n;) {
		bool z = page_zero(x->buf + i * PAGE);
		uint64_t end = i + 1;
		while (end < n && page_zero(x->buf + end * PAGE) == z)
			end++;
		int r = 0;
		for (uint64_t k = i; k < end; k++)
			x->terms[first + k] = z ? 0 : snap_mem_page_term(x->buf + k * PAGE, first + k);
		if (!z)
			r = put(x, SNAP_MIG_DATA, first + i, end - i, x->buf + i * PAGE,
				(uint32_t)((end - i) * PAGE));
		else if (zeros)
			r = put(x, SNAP_MIG_ZERO, first + i, end - i, NULL, 0);
		if (r)
			return r;
		if (!z || zeros)
			atomic_fetch_add(&x->m->pages_sent, end - i);
		i = end;
	}
	return 0;
}

static bool bit(const uint64_t *b, uint64_t i)
{
	return b[i / 64] >> (i % 64) & 1;
}

/* Every page whose bit is set in x->bits, in runs; checks for a cancel
 * or the timeout between records unless final.  *n: the pages. */
static int send_set(struct sender *x, bool zeros, bool final, uint64_t *n)
{
	*n = 0;
	for (uint64_t i = 0; i < x->pages;) {
		if (!x->bits[i / 64]) {
			i = (i / 64 + 1) * 64;
			continue;
		}
		if (!bit(x->bits, i)) {
			i++;
			continue;
		}
		uint64_t end = i + 1;
		while (end < x->pages && end - i < SNAP_MIG_RUN_MAX && bit(x->bits, end))
			end++;
		int r = final ? 0 : check_stop(x);
		if (!r)
			r = send_chunk(x, i, end - i, zeros);
		if (r)
			return r;
		*n += end - i;
		uint64_t left = atomic_load(&x->m->bytes_remaining);
		atomic_store(&x->m->bytes_remaining,
			     left > (end - i) * PAGE ? left - (end - i) * PAGE : 0);
		i = end;
	}
	return 0;
}

static uint64_t count_bits(const uint64_t *b, uint64_t words)
{
	uint64_t n = 0;
	for (uint64_t i = 0; i < words; i++)
		n += (uint64_t)__builtin_popcountll(b[i]);
	return n;
}

static int fetch(struct sender *x)
{
	int r = gmem_dirty_fetch(&x->vm->mem, x->bits);
	if (r)
		snprintf(x->err, sizeof(x->err), "fetching the dirty pages: %s", strerror(-r));
	return r;
}

/* Wait for the target's next record (checking for a cancel and the
 * timeout unless final) and read it; a NACK's reason goes into err. */
static int reply(struct sender *x, struct snap_mig_rec *rec, bool final)
{
	for (;;) {
		int r = final ? 0 : check_stop(x);
		if (r)
			return r;
		struct pollfd pf = {.fd = x->s.fd, .events = POLLIN};
		struct timespec tick = {0, 50000000};
		if (ppoll(&pf, 1, &tick, NULL) > 0)
			break;
	}
	char reason[SNAP_MIG_NACK_MAX + 1];
	int r = snap_mig_get_hdr(&x->s, rec, x->err, sizeof(x->err));
	if (!r && rec->type != SNAP_MIG_OKAY && rec->type != SNAP_MIG_NACK &&
	    rec->type != SNAP_MIG_REDY && rec->type != SNAP_MIG_DSKS) {
		char n[12];
		snprintf(x->err, sizeof(x->err), "stream: byte %" PRIu64 ": the target sent %s",
			 rec->off, snap_mig_name(rec->type, n));
		return -EPROTO;
	}
	if (!r && rec->type == SNAP_MIG_NACK) {
		r = snap_mig_get_body(&x->s, rec, reason, x->err, sizeof(x->err));
		if (!r) {
			reason[rec->len] = '\0';
			snprintf(x->err, sizeof(x->err), "the target refused: %.600s", reason);
			return -EPROTO;
		}
	}
	if (r == -EPIPE)
		snprintf(x->err, sizeof(x->err), "the target closed the stream (it failed or was "
						 "killed; see its own error)");
	return r;
}

/* The state file w holds (made when r is 0) as one record of type; w
 * freed either way. */
static int put_state(struct sender *x, int r, struct snap_writer *w, uint32_t type)
{
	uint8_t *bytes = NULL;
	size_t len = 0;
	if (!r)
		r = snap_w_bytes(w, &bytes, &len, x->err, sizeof(x->err));
	snap_w_free(w);
	if (!r)
		r = put(x, type, 0, 0, bytes, (uint32_t)len);
	free(bytes);
	return r;
}

static int setup(struct sender *x)
{
	struct snap_writer w;
	const struct mig_params *p = &x->m->p;
	uint64_t flags = p->local ? SNAP_MIG_F_MEMFD : 0;
	if (p->postcopy || p->postcopy_now || p->converge_postcopy)
		flags |= SNAP_MIG_FLAG_POSTCOPY;
	int r = put(x, SNAP_MIG_MIGR, SNAP_MIG_VERSION, flags, SNAP_MIG_MAGIC, 8);
	if (!r)
		r = put_state(x, vm_setup_records(x->vm, &w, x->err, sizeof(x->err)), &w,
			      SNAP_MIG_SETU);
	struct snap_mig_rec rec;
	if (!r)
		r = reply(x, &rec, false);
	if (!r && rec.type != SNAP_MIG_OKAY) {
		snprintf(x->err, sizeof(x->err), "the target answered the setup with no OKAY");
		r = -EPROTO;
	}
	return r;
}

/* With disks: the target's DSKS for round, once what it wrote of them
 * is on its disk, so the round's time includes the target's writeback
 * and the stop-and-copy never starts with the target behind (its sync
 * would be in the downtime). */
static int disks_synced(struct sender *x, uint64_t round)
{
	struct snap_mig_rec rec;
	int r = reply(x, &rec, false);
	if (!r && (rec.type != SNAP_MIG_DSKS || rec.a != round)) {
		char n[12];
		snprintf(x->err, sizeof(x->err),
			 "stream: byte %" PRIu64 ": the target sent %s where DSKS for round %" PRIu64
			 " belongs",
			 rec.off, snap_mig_name(rec.type, n), round);
		r = -EPROTO;
	}
	return r;
}

/* Pre-copy: round 0 takes every non-zero page, each later round the
 * pages dirtied during the one before, until what is left fits the
 * downtime budget at the bandwidth measured (0), or post-copy takes
 * over (1: after round 0 for "mode": "postcopy", or when rounds stop
 * shrinking under "converge": "postcopy").  x->bits then holds it. */
static int precopy(struct sender *x)
{
	struct mig *m = x->m;
	uint64_t prev = UINT64_MAX, stalled = 0;
	/* Clears the log (KVM's and ember's): what round 0 sends is RAM as
	 * it is from here on. */
	int r = fetch(x);
	if (r)
		return r;
	if (m->p.postcopy_now) /* every non-zero page: the hash pass finds them */
		return 1;
	/* Round 0: every page, but those never touched (zero, no memory:
	 * the target's fresh RAM is zero too) are skipped without reading
	 * them, which would fault each one in (≈1 ms per MiB here). */
	if (gmem_populated(&x->vm->mem, m->pagemap_fd, x->bits)) {
		memset(x->bits, 0xff, x->words * 8);
		if (x->pages % 64)
			x->bits[x->words - 1] = (1ULL << (x->pages % 64)) - 1;
	}
	atomic_store(&m->bytes_remaining, x->pages * PAGE);
	mig_set_phase(m, MIG_PRECOPY);
	struct mig_disk_io io = disk_io(x);
	for (uint64_t round = 0;; round++) {
		atomic_store(&m->round, round);
		uint64_t t0 = mig_now_ns(), b0 = atomic_load(&m->bytes_sent), n;
		/* Disks first (round 0: their whole data, the tracker marking
		 * what the guest writes meanwhile; then what it wrote). */
		r = round ? mig_disk_send_dirty(m, &io, false) : mig_disk_send_bulk(m, &io);
		if (!r)
			r = send_set(x, round > 0, false, &n);
		if (!r)
			r = put(x, SNAP_MIG_ROUN, round, n, NULL, 0);
		if (!r && m->nr_disks)
			r = disks_synced(x, round);
		if (!r)
			r = fetch(x);
		if (r)
			return r;
		uint64_t dt = mig_now_ns() - t0 + 1;
		uint64_t bytes = atomic_load(&m->bytes_sent) - b0;
		uint64_t left = count_bits(x->bits, x->words) * PAGE + mig_disk_dirty(m);
		double bw = (double)bytes * 1e9 / (double)dt;
		atomic_store(&m->bandwidth_bps, (uint64_t)bw);
		atomic_store(&m->dirty_rate_bps, (uint64_t)((double)left * 1e9 / (double)dt));
		atomic_store(&m->bytes_remaining, left);
		double down_us = bw > 0 ? (double)left * 1e6 / bw : 0;
		atomic_store(&m->expected_downtime_us, (uint64_t)down_us);
		if (m->p.postcopy)
			return 1;
		if (down_us <= (double)m->p.downtime_ms * 1000.0)
			return 0;
		if ((r = check_stop(x)))
			return r;
		/* Not shrinking: take vCPU time away, a step at a time. */
		stalled = left * 10 >= prev * 9 ? stalled + 1 : 0;
		prev = left;
		if (stalled >= STALLED_ROUNDS && m->p.converge_postcopy)
			return 1;
		if (stalled >= STALLED_ROUNDS && m->p.throttle) {
			unsigned pct = atomic_load(&m->throttle_pct);
			pct = pct ? (pct + 10 > 99 ? 99 : pct + 10) : 20;
			atomic_store(&m->throttle_pct, pct);
			mig_vmm_request(m, MIG_REQ_THROTTLE);
			stalled = 0;
		}
	}
}

/* One pass over RAM: its hash (*sum, which DONE carries) and, page by
 * page, each page whose content is not what was last sent, set in
 * x->bits (the count returned).  On these nested hosts 1-2 pages of
 * nearly every migration: the guest's ring-0 writes, which the hosts
 * emulate, never reach KVM's log. */
static uint64_t mark_unsent(struct sender *x, uint64_t *sum)
{
	uint64_t missed = 0;
	bool verify = x->m->p.verify_all;
	/* Pages never touched are zero, as sent (term 0): not read (reading
	 * would fault each in).  "verify": "dirty": the log is trusted,
	 * RAM is what was sent. */
	bool skip = verify && x->touched &&
		    !gmem_populated(&x->vm->mem, x->m->pagemap_fd, x->touched);
	*sum = 0;
	for (uint64_t i = 0; i < x->pages; i++) {
		if (!verify || (skip && !bit(x->touched, i))) {
			*sum += x->terms[i];
			continue;
		}
		uint64_t t = snap_mem_page_term(x->vm->mem.base + i * PAGE, i);
		*sum += t;
		if (t != x->terms[i] && !bit(x->bits, i)) {
			x->bits[i / 64] |= 1ULL << (i % 64);
			missed++;
		}
	}
	return missed;
}

/* STAT: a whole state file with RAM's hash (sum). */
static int put_stat(struct sender *x, uint64_t sum)
{
	struct snap_writer w;
	int r = vm_snapshot_records(x->vm, &w, false, x->err, sizeof(x->err));
	if (!r && (r = snap_w_add(&w, TAG_MEMH, 0, &sum, sizeof(sum))))
		snprintf(x->err, sizeof(x->err), "cannot build the state: %s", strerror(-r));
	return put_state(x, r, &w, SNAP_MIG_STAT);
}

/* The VM frozen: the last dirty pages, the state (a whole state file
 * with the memory's hash), DONE. */
static int stop_and_copy(struct sender *x)
{
	uint64_t n;
	struct mig_disk_io io = disk_io(x);
	/* the disks' last blocks (the VM frozen: nothing writes), DSKE, before
	 * the pages: after DSKE the target answers no ROUN with DSKS */
	int r = mig_disk_send_dirty(x->m, &io, true);
	if (!r)
		r = fetch(x);
	if (!r)
		r = send_set(x, true, true, &n);
	if (!r)
		r = put(x, SNAP_MIG_ROUN, atomic_load(&x->m->round) + 1, n, NULL, 0);
	if (r)
		return r;
	/* RAM's hash, which DONE carries, takes a pass over every page:
	 * the same pass finds each page whose content is not what was last
	 * sent, which goes again.  So the target's RAM is the source's even
	 * where the dirty log missed a write. */
	memset(x->bits, 0, x->words * 8);
	uint64_t sum, missed = mark_unsent(x, &sum);
	if (missed && (r = send_set(x, true, true, &n)) == 0)
		r = put(x, SNAP_MIG_ROUN, atomic_load(&x->m->round) + 2, n, NULL, 0);
	if (r)
		return r;
	if (missed)
		fprintf(stderr,
			"ember: migration: %" PRIu64 " pages differed from what was sent though "
			"the dirty log did not name them; sent again\n",
			missed);
	atomic_store(&x->m->bytes_remaining, 0);
	r = put_stat(x, sum);
	if (!r)
		r = put(x, SNAP_MIG_DONE, x->pages, sum, NULL, 0);
	return r;
}

/* Post-copy's stop: the state first, then PCPY naming every page the
 * target lacks as it is now (x->bits, kept for the push): the dirty
 * set and what the hash pass finds. */
static int stop_for_postcopy(struct sender *x)
{
	int r = fetch(x);
	if (r)
		return r;
	uint64_t sum;
	mark_unsent(x, &sum);
	uint64_t n = count_bits(x->bits, x->words);
	atomic_store(&x->m->pages_missing, n);
	atomic_store(&x->m->bytes_remaining, n * PAGE);
	r = put_stat(x, sum);
	if (!r)
		r = put(x, SNAP_MIG_PCPY, n, 0, x->bits, (uint32_t)(x->words * 8));
	return r;
}

/* Same host, the VM frozen: its state and DONE with the page count.
 * MEMH and DONE's hash are 0: the target maps these very pages, and a
 * pass over RAM to hash them would cost the downtime what copying
 * does. */
static int stop_local(struct sender *x)
{
	struct snap_writer w;
	uint64_t none = 0;
	int r = vm_snapshot_records(x->vm, &w, false, x->err, sizeof(x->err));
	if (!r && (r = snap_w_add(&w, TAG_MEMH, 0, &none, sizeof(none))))
		snprintf(x->err, sizeof(x->err), "cannot build the state: %s", strerror(-r));
	r = put_state(x, r, &w, SNAP_MIG_STAT);
	if (!r)
		r = put(x, SNAP_MIG_DONE, x->pages, 0, NULL, 0);
	return r;
}

/* Stop this VM for good: a same-host source's vmm thread, still frozen,
 * stops it before serving a device again (its RAM is the target's now). */
static void stop_here(struct mig *m)
{
	if (m->p.local)
		mig_thaw_stop(m);
	else
		(void)mig_vmm_request(m, MIG_REQ_STOP);
}

/* After REDY: GOGO, and this process is done.  A GOGO that cannot be
 * written leaves the outcome unknown: paused until resolved. */
static void hand_over(struct sender *x, bool post, uint64_t t_pause)
{
	struct mig *m = x->m;
	mig_set_phase(m, MIG_HANDOVER);
	/* GOGO carries this end's figures so far (a: µs since the pause, b:
	 * µs since the start): the target adds its resume and reports them,
	 * since this process is gone by the time a controller asks. */
	uint64_t now = mig_now_ns();
	if (!put(x, SNAP_MIG_GOGO, (now - t_pause) / 1000,
		 (now - atomic_load(&m->t_start_ns)) / 1000, NULL, 0)) {
		if (post) /* the VM runs there; the pages it lacks go now */
			return mig_post_send(m, &x->s, x->vm, x->bits);
		mig_completed(m, "");
		return;
	}
	if (!m->p.local) /* post-copy held it; same host, it stays held */
		(void)mig_vmm_request(m, MIG_REQ_THAW);
	mig_set_error(m, MIG_UNKNOWN,
		      "the target said it is ready, but GOGO could not be sent (%s): whether it "
		      "took over is unknown; this VM stays paused until PUT /migration/resolve",
		      x->err);
	pthread_mutex_lock(&m->lock);
	while (!m->resolve)
		pthread_cond_wait(&m->cv, &m->lock);
	int how = m->resolve;
	pthread_mutex_unlock(&m->lock);
	if (how == 2) {
		mig_set_phase(m, MIG_COMPLETED);
		mig_reply_grace();
		m->stop_why = "migration resolved: stop here (the VM runs on the target)";
		stop_here(m);
		return;
	}
	if (m->p.local)
		(void)mig_vmm_request(m, MIG_REQ_THAW);
	(void)mig_vmm_request(m, MIG_REQ_RESUME);
	if (!m->p.local)
		(void)mig_vmm_request(m, MIG_REQ_LOG_OFF);
	if (m->nr_disks)
		(void)mig_vmm_request(m, MIG_REQ_DISK_OFF);
	mig_set_error(m, MIG_FAILED, "hand-over unknown, resolved: the VM runs here");
}

void mig_run_send(struct mig *m)
{
	struct sender x = {.m = m, .vm = m->vm, .s = {.fd = m->fd}};
	x.pages = x.vm->mem.ram_size / PAGE;
	x.words = gmem_dirty_words(&x.vm->mem);
	x.bits = calloc(x.words, 8);
	x.buf = malloc(SNAP_MIG_RUN_MAX * PAGE);
	x.terms = calloc(x.pages, sizeof(*x.terms));
	x.touched = calloc(x.words, 8); /* NULL: every page is read */
	x.pace_t0 = mig_now_ns();
	x.deadline_ns = m->p.timeout_ms ? x.pace_t0 + m->p.timeout_ms * 1000000ULL : 0;
	int r = x.bits && x.buf && x.terms ? 0 : -ENOMEM;
	if (r)
		snprintf(x.err, sizeof(x.err), "out of memory");
	/* Same host: no pages move, so no dirty log */
	bool local = m->p.local, froze = false;
	if (!r && local)
		r = mig_local_check(x.vm, x.err, sizeof(x.err));
	if (!r && !local && (r = mig_vmm_request(m, MIG_REQ_LOG_ON)))
		snprintf(x.err, sizeof(x.err), "cannot turn dirty page logging on: %s",
			 strerror(-r));
	bool disks = m->p.copy_all || m->p.nr_copy;
	if (!r && disks && (r = mig_vmm_request(m, MIG_REQ_DISK_ON)))
		snprintf(x.err, sizeof(x.err), "%s", m->disk_err);
	if (!r)
		r = setup(&x);
	bool post = false;
	if (!r)
		r = local ? mig_local_send_memf(m, &x.s, x.err, sizeof(x.err)) : precopy(&x);
	if (r == 1) { /* post-copy takes over */
		post = true;
		r = 0;
	}
	if (!r && !(r = check_stop(&x))) {
		mig_set_phase(m, MIG_STOPCOPY);
		uint64_t t_pause = mig_now_ns();
		r = mig_vmm_request(m, MIG_REQ_FREEZE);
		froze = !r;
		if (r)
			snprintf(x.err, sizeof(x.err), "cannot pause the VM: %s", strerror(-r));
		if (!r)
			r = local  ? stop_local(&x)
			    : post ? stop_for_postcopy(&x)
				   : stop_and_copy(&x);
		/* The state is out: the vmm thread serves again (the VM
		 * stays paused).  Same host, it stays held until the outcome:
		 * a device of this VM must not write the RAM the target maps
		 * (virtio-net fills RX buffers while the vCPUs are parked).
		 * Post-copy: held until the last page is out (mig_post_send),
		 * so that no device writes RAM the target has not got yet. */
		if (!local && (!post || r))
			(void)mig_vmm_request(m, MIG_REQ_THAW);
		struct snap_mig_rec rec;
		if (!r)
			r = reply(&x, &rec, false);
		if (!r && rec.type != SNAP_MIG_REDY) {
			snprintf(x.err, sizeof(x.err), "the target answered DONE with no REDY");
			r = -EPROTO;
		}
		if (!r) {
			/* The hand-over point: from here this VM never resumes
			 * by itself. */
			atomic_store(&m->downtime_us, (int64_t)((mig_now_ns() - t_pause) / 1000));
			hand_over(&x, post, t_pause);
		}
	}
	if (r) {
		/* Before the hand-over point: the VM runs on here. */
		(void)mig_vmm_request(m, MIG_REQ_THAW); /* same host or post-copy held it */
		/* (same host, nothing was paused before the freeze: no
		 * LOG_ON recorded whether the VM was paused then) */
		if (!local || froze)
			(void)mig_vmm_request(m, MIG_REQ_RESUME); /* and the throttle off */
		if (!local)
			(void)mig_vmm_request(m, MIG_REQ_LOG_OFF);
		if (disks && m->nr_disks) /* the source's files were never anything but the VM's */
			(void)mig_vmm_request(m, MIG_REQ_DISK_OFF);
		mig_set_error(m, r == -ECANCELED ? MIG_CANCELLED : MIG_FAILED, "%s", x.err);
	}
	free(x.bits);
	free(x.buf);
	free(x.terms);
	free(x.touched);
}
