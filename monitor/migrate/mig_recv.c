/* The target (docs/migration.md): MIGR and its version, the setup check
 * before any memory moves (SETU -> OKAY or NACK), the rounds of pages
 * straight into fresh RAM, then the state (STAT) and the memory's hash
 * (DONE): the VM is built paused, REDY goes back, and only GOGO (or a
 * resolve) lets it run.  Any refusal goes back as NACK and ends this
 * process non-zero: nothing ran here. */
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "monitor/migrate/migrate.h"
#include "snapshot/snapshot.h"

#define PAGE SNAP_PAGE

struct receiver {
	struct mig *m;
	struct snap_stream s;
	/* RAM's content hash kept as pages arrive: each page's term and
	 * their sum.  Pages never written are zero (term 0) and never read:
	 * reading an untouched page of fresh RAM costs a page fault, 16-30 ms
	 * for 64 MiB here, all of it in the downtime. */
	uint64_t *terms, sum;
	bool local; /* MIGR's SNAP_MIG_F_MEMFD: RAM comes as a memfd (mig_local.c) */
	uint64_t go_us;	 /* GOGO's a: the source's part of the downtime */
	uint64_t go_total_us; /* GOGO's b: the source's time since the start */
	bool post;	 /* PCPY came: post-copy */
	char err[MIG_ERR_MAX];
};

/* Page i now holds what was written to it. */
static void rehash(struct receiver *x, uint64_t i)
{
	uint64_t t = snap_mem_page_term(x->m->mem.base + i * PAGE, i);
	x->sum += t - x->terms[i];
	x->terms[i] = t;
}

/* The next record, which must be of type want (0: any). */
static int next(struct receiver *x, struct snap_mig_rec *rec, uint32_t want)
{
	int r = snap_mig_get_hdr(&x->s, rec, x->err, sizeof(x->err));
	atomic_store(&x->m->bytes_sent, x->s.off);
	if (r == -EPIPE)
		snprintf(x->err, sizeof(x->err),
			 "stream: byte %" PRIu64 ": the source closed the stream before the "
			 "migration was complete",
			 x->s.off);
	if (!r && want && rec->type != want) {
		char a[12], b[12];
		snprintf(x->err, sizeof(x->err),
			 "stream: byte %" PRIu64 ": record %s where %s belongs: not a stream this "
			 "ember reads",
			 rec->off, snap_mig_name(rec->type, a), snap_mig_name(want, b));
		r = -EINVAL;
	}
	return r;
}

/* A payload into a fresh buffer (*out, malloc'd). */
static int body(struct receiver *x, const struct snap_mig_rec *rec, void **out)
{
	*out = malloc(rec->len ? rec->len : 1);
	if (!*out) {
		snprintf(x->err, sizeof(x->err), "out of memory for record of %u bytes", rec->len);
		return -ENOMEM;
	}
	int r = snap_mig_get_body(&x->s, rec, *out, x->err, sizeof(x->err));
	atomic_store(&x->m->bytes_sent, x->s.off);
	if (r) {
		free(*out);
		*out = NULL;
	}
	return r;
}

/* The next record, of type want, with its payload in *p (free it). */
static int expect(struct receiver *x, struct snap_mig_rec *rec, uint32_t want, void **p)
{
	*p = NULL;
	int r = next(x, rec, want);
	return r ? r : body(x, rec, p);
}

static int hello(struct receiver *x)
{
	struct snap_mig_rec rec;
	void *p;
	int r = expect(x, &rec, SNAP_MIG_MIGR, &p);
	if (!r && memcmp(p, SNAP_MIG_MAGIC, 8)) {
		snprintf(x->err, sizeof(x->err), "stream: byte 0: not an ember migration stream");
		r = -EINVAL;
	}
	if (!r && rec.a != SNAP_MIG_VERSION) {
		snprintf(x->err, sizeof(x->err),
			 "stream: byte 8: migration protocol version %" PRIu64
			 ", this ember speaks version %u",
			 rec.a, SNAP_MIG_VERSION);
		r = -EPROTONOSUPPORT;
	}
	x->local = !r && (rec.b & SNAP_MIG_F_MEMFD);
	if (!r && rec.b & ~(uint64_t)(SNAP_MIG_F_MEMFD | SNAP_MIG_FLAG_POSTCOPY)) {
		snprintf(x->err, sizeof(x->err), "stream: byte 16: unknown flags 0x%" PRIx64,
			 rec.b);
		r = -EINVAL;
	}
	if (!r && rec.b & SNAP_MIG_FLAG_POSTCOPY && x->m->uffd < 0) {
		snprintf(x->err, sizeof(x->err),
			 "the source may switch to post-copy, and this ember has no userfaultfd "
			 "(%s; it needs CAP_SYS_PTRACE at start-up or vm.unprivileged_userfaultfd=1)",
			 strerror(-x->m->uffd));
		r = -EPERM;
	}
	free(p);
	return r;
}

static int setup(struct receiver *x)
{
	struct snap_mig_rec rec;
	void *p;
	int r = expect(x, &rec, SNAP_MIG_SETU, &p);
	if (!r)
		r = x->m->tops->setup(x->m->opaque, p, rec.len, &x->m->mem, x->err,
				      sizeof(x->err));
	free(p);
	if (!r && !(x->terms = calloc(x->m->mem.ram_size / PAGE, sizeof(*x->terms)))) {
		snprintf(x->err, sizeof(x->err), "out of memory for the page hashes");
		r = -ENOMEM;
	}
	if (!r)
		r = snap_mig_put(&x->s, SNAP_MIG_OKAY, 0, 0, NULL, 0, x->err, sizeof(x->err));
	return r;
}

/* A run of pages inside RAM, or a refusal naming the record. */
static int in_ram(struct receiver *x, const struct snap_mig_rec *rec, uint64_t pages)
{
	if (rec->b && rec->a < pages && rec->b <= pages - rec->a)
		return 0;
	char n[12];
	snprintf(x->err, sizeof(x->err),
		 "stream: byte %" PRIu64 ": record %s at page 0x%" PRIx64 " (0x%" PRIx64
		 " pages) %s (RAM has 0x%" PRIx64 " pages)",
		 rec->off, snap_mig_name(rec->type, n), rec->a, rec->b,
		 rec->b ? "runs past the end of RAM" : "is empty", pages);
	return -EINVAL;
}

/* The rounds, up to STAT (returned in *state, *len). */
static int rounds(struct receiver *x, void **state, uint32_t *len)
{
	struct gmem *mem = &x->m->mem;
	uint64_t pages = mem->ram_size / PAGE;
	for (;;) {
		struct snap_mig_rec rec;
		int r = next(x, &rec, 0);
		if (r)
			return r;
		switch (rec.type) {
		case SNAP_MIG_DATA:
			if ((r = in_ram(x, &rec, pages)))
				return r;
			/* Straight into RAM: a corrupt run fails the whole
			 * migration, and nothing runs on this RAM then. */
			r = snap_mig_get_body(&x->s, &rec, mem->base + rec.a * PAGE, x->err,
					      sizeof(x->err));
			if (r)
				return r;
			for (uint64_t i = rec.a; i < rec.a + rec.b; i++)
				rehash(x, i); /* just written: in the cache */
			atomic_fetch_add(&x->m->pages_sent, rec.b);
			break;
		case SNAP_MIG_ZERO:
			if ((r = in_ram(x, &rec, pages)) ||
			    (r = snap_mig_get_body(&x->s, &rec, NULL, x->err, sizeof(x->err))))
				return r;
			for (uint64_t i = rec.a; i < rec.a + rec.b; i++)
				if (x->terms[i]) { /* not zero now: clear it */
					memset(mem->base + i * PAGE, 0, PAGE);
					x->sum -= x->terms[i];
					x->terms[i] = 0;
				}
			atomic_fetch_add(&x->m->pages_sent, rec.b);
			break;
		case SNAP_MIG_ROUN:
			if ((r = snap_mig_get_body(&x->s, &rec, NULL, x->err, sizeof(x->err))))
				return r;
			/* disks still coming: synced, and the source told */
			if (mig_disk_recv_open(x->m) &&
			    ((r = mig_disk_recv_sync(x->m, x->err, sizeof(x->err))) ||
			     (r = snap_mig_put(&x->s, SNAP_MIG_DSKS, rec.a, 0, NULL, 0, x->err,
					       sizeof(x->err)))))
				return r;
			atomic_store(&x->m->round, rec.a);
			break;
		case SNAP_MIG_DSKB:
		case SNAP_MIG_DSKD:
		case SNAP_MIG_DSKZ:
		case SNAP_MIG_DSKE:
			if ((r = mig_disk_recv(x->m, &x->s, &rec, x->err, sizeof(x->err))))
				return r;
			break;
		case SNAP_MIG_STAT:
			if ((r = mig_disk_recv_check(x->m, x->err, sizeof(x->err))))
				return r;
			*len = rec.len;
			return body(x, &rec, state);
		default: {
			char n[12];
			snprintf(x->err, sizeof(x->err),
				 "stream: byte %" PRIu64 ": record %s in the middle of the memory "
				 "rounds",
				 rec.off, snap_mig_name(rec.type, n));
			return -EINVAL;
		}
		}
		atomic_store(&x->m->bytes_sent, x->s.off);
	}
}

/* DONE: RAM's page count and its content hash, which RAM must have; or
 * PCPY (left in rec, x->post set): post-copy, RAM is not complete. */
static int done(struct receiver *x, struct snap_mig_rec *rec)
{
	struct gmem *mem = &x->m->mem;
	int r = next(x, rec, 0);
	if (!r && rec->type == SNAP_MIG_PCPY) {
		x->post = true; /* its bitmap is read once the VM is built */
		return 0;
	}
	if (!r && rec->type != SNAP_MIG_DONE) {
		char a[12];
		snprintf(x->err, sizeof(x->err),
			 "stream: byte %" PRIu64 ": record %s where DONE or PCPY belongs: not a "
			 "stream this ember reads",
			 rec->off, snap_mig_name(rec->type, a));
		r = -EINVAL;
	}
	if (!r)
		r = snap_mig_get_body(&x->s, rec, NULL, x->err, sizeof(x->err));
	if (r)
		return r;
	struct snap_mem_hash h = {x->sum, NULL};
	/* Same host: RAM is the source's own pages, not a copy to check */
	if (x->local && rec->a == mem->ram_size / PAGE && !rec->b)
		return 0;
	if (rec->a != mem->ram_size / PAGE || rec->b != h.sum) {
		snprintf(x->err, sizeof(x->err),
			 "stream: byte %" PRIu64 ": record DONE says 0x%" PRIx64
			 " pages hashing to 0x%016" PRIx64 ", RAM has 0x%" PRIx64
			 " pages hashing to 0x%016" PRIx64 ": the memory is corrupt",
			 rec->off, rec->a, rec->b, (uint64_t)(mem->ram_size / PAGE), h.sum);
		return -EINVAL;
	}
	return 0;
}

/* Ready: GOGO from the source, or the controller's resolve.  A stream
 * that ends or fails here leaves the VM paused in ready (the source may
 * have stopped for good): only resolve ends that.  1: go (x->go_us,
 * x->go_total_us: GOGO's a and b, the source's µs since its pause and
 * since its start; zero after a resolve), 0: stop. */
static int wait_go(struct receiver *x)
{
	struct mig *m = x->m;
	bool stream = true;
	for (;;) {
		pthread_mutex_lock(&m->lock);
		int how = m->resolve;
		pthread_mutex_unlock(&m->lock);
		if (how)
			return how == 1 && !x->post;
		if (!stream) {
			struct timespec t = {0, 50000000};
			clock_nanosleep(CLOCK_MONOTONIC, 0, &t, NULL);
			continue;
		}
		struct pollfd pf = {.fd = x->s.fd, .events = POLLIN};
		struct timespec tick = {0, 50000000};
		if (ppoll(&pf, 1, &tick, NULL) <= 0)
			continue;
		struct snap_mig_rec rec;
		if (!next(x, &rec, SNAP_MIG_GOGO) &&
		    !snap_mig_get_body(&x->s, &rec, NULL, x->err, sizeof(x->err))) {
			x->go_us = rec.a;
			x->go_total_us = rec.b;
			return 1;
		}
		if (x->post) /* RAM lacks pages only the source has: never run */
			return 0;
		stream = false;
		mig_set_error(m, MIG_READY,
			      "%s; the VM stays paused in ready: the source may have stopped for "
			      "good (PUT /migration/resolve decides)",
			      x->err);
	}
}

void mig_run_receive(struct mig *m)
{
	struct receiver x = {.m = m, .s = {.fd = m->fd}};
	void *state = NULL;
	uint32_t len = 0;
	int r = hello(&x);
	if (!r)
		r = setup(&x);
	if (!r && x.local) { /* the memfd, then straight to the state */
		struct snap_mig_rec rec;
		r = mig_local_recv_memf(m, &x.s, x.err, sizeof(x.err));
		if (!r && !(r = expect(&x, &rec, SNAP_MIG_STAT, &state)))
			len = rec.len;
	} else if (!r) {
		r = rounds(&x, &state, &len);
	}
	struct snap_mig_rec last;
	if (!r)
		r = done(&x, &last);
	uint8_t *base = m->mem.base; /* the build takes m->mem */
	uint64_t size = m->mem.ram_size;
	mig_disk_recv_close(m); /* synced at DSKE; the build opens its own */
	if (!r)
		r = m->tops->build(m->opaque, state, len, &m->mem, x.post, x.err, sizeof(x.err));
	if (!r && x.post)
		r = mig_post_arm(m, &x.s, &last, base, size, x.err, sizeof(x.err));
	free(state);
	free(x.terms);
	x.terms = NULL;
	if (!r) {
		mig_set_phase(m, MIG_READY);
		r = snap_mig_put(&x.s, SNAP_MIG_REDY, 0, 0, NULL, 0, x.err, sizeof(x.err));
		/* REDY may not reach the source; it decides either way */
		r = 0;
	}
	if (!r) {
		if (wait_go(&x)) {
			uint64_t t_go = mig_now_ns();
			r = m->tops->go(m->opaque, x.err, sizeof(x.err));
			if (!r) {
				/* The source's figures at GOGO plus this end's resume
				 * (the record's transit is not counted): what a
				 * controller reads here, the source being gone. */
				atomic_store(&m->downtime_us,
					     (int64_t)(x.go_us + (mig_now_ns() - t_go) / 1000));
				if (x.go_total_us)
					atomic_store(&m->t_start_ns, t_go - x.go_total_us * 1000);
				if (x.post) {
					mig_set_phase(m, MIG_POSTCOPY);
					mig_post_serve(m, &x.s);
				}
				atomic_store(&m->t_end_ns, mig_now_ns());
				mig_set_phase(m, MIG_RUNNING);
				return;
			}
		} else if (x.post && !x.err[0]) {
			snprintf(x.err, sizeof(x.err), "post-copy: stopped in ready (resolve): this "
						       "RAM lacks pages only the source has");
			r = -ECANCELED;
		} else if (x.post) {
			r = -EPIPE;
		} else {
			snprintf(x.err, sizeof(x.err), "migration resolved: stop (the VM runs on "
						       "the source)");
			mig_reply_grace();
			r = -ECANCELED;
		}
	}
	mig_disk_recv_close(m);
	/* Tell the source why (best effort), then this process ends. */
	size_t n = strnlen(x.err, SNAP_MIG_NACK_MAX);
	char ignore[SNAP_ERR_MAX];
	(void)!snap_mig_put(&x.s, SNAP_MIG_NACK, 0, 0, x.err, (uint32_t)n, ignore, sizeof(ignore));
	/* m->mem is left mapped: this thread may not munmap, and the
	 * process ends now. */
	mig_set_error(m, MIG_FAILED, "%s", x.err);
	m->tops->fail(m->opaque, x.err);
}
