/* Post-copy, the source (docs/migration.md, "Post-copy"): from GOGO on
 * the VM is paused here for good (and the vmm thread held, so no device
 * writes RAM behind the state the target runs from) and runs on the
 * target; this thread
 * sends the pages the target still lacks, a page a fault waits for
 * (PREQ) before the rest, the rest in order, until the target says
 * every page is in (PFIN).  Then this process ends.  If the target or
 * the stream fails meanwhile the guest is lost (the target ran on,
 * this RAM is behind it): this process ends too, non-zero. */
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "monitor/exitcodes.h"
#include "monitor/migrate/migrate.h"
#include "monitor/vm.h"
#include "snapshot/snapshot.h"

#define PAGE SNAP_PAGE
/* Pages in one record of the background push: small, so a PREQ waits
 * behind at most this much. */
#define PUSH_RUN 16u

struct pusher {
	struct mig *m;
	struct snap_stream *s;
	const uint8_t *ram;
	uint64_t pages, left, next; /* next: the push's position */
	uint64_t *bits;		    /* still to send */
	bool fin;		    /* PFIN read */
	uint64_t t0, bytes;	    /* max_bandwidth's pace */
	char err[MIG_ERR_MAX];
};

static bool bit(const uint64_t *b, uint64_t i)
{
	return b[i / 64] >> (i % 64) & 1;
}

static bool all_zero(const uint8_t *p, uint64_t n)
{
	const uint64_t *w = (const uint64_t *)p;
	for (uint64_t i = 0; i < n / 8; i++)
		if (w[i])
			return false;
	return true;
}

/* Pages [first, first+n), all still to send: one DATA or ZERO each run
 * of like pages.  The VM is paused: RAM does not change under it. */
static int send_run(struct pusher *x, uint64_t first, uint64_t n)
{
	for (uint64_t i = first; i < first + n;) {
		bool z = all_zero(x->ram + i * PAGE, PAGE);
		uint64_t e = i + 1;
		while (e < first + n && all_zero(x->ram + e * PAGE, PAGE) == z)
			e++;
		uint32_t len = z ? 0 : (uint32_t)((e - i) * PAGE);
		int r = snap_mig_put(x->s, z ? SNAP_MIG_ZERO : SNAP_MIG_DATA, i, e - i,
				     z ? NULL : x->ram + i * PAGE, len, x->err, sizeof(x->err));
		if (r)
			return r;
		atomic_fetch_add(&x->m->bytes_sent, SNAP_MIG_HDR + len);
		x->bytes += SNAP_MIG_HDR + len;
		mig_pace(x->t0, x->bytes, x->m->p.max_bandwidth);
		atomic_fetch_add(&x->m->pages_sent, e - i);
		for (uint64_t k = i; k < e; k++)
			x->bits[k / 64] &= ~(1ULL << (k % 64));
		x->left -= e - i;
		atomic_store(&x->m->pages_missing, x->left);
		atomic_store(&x->m->bytes_remaining, x->left * PAGE);
		i = e;
	}
	return 0;
}

/* The target's records waiting (wait: block for one): PREQ answered at
 * once, PFIN noted, a NACK or anything else fails. */
static int requests(struct pusher *x, bool wait)
{
	for (;;) {
		struct pollfd pf = {.fd = x->s->fd, .events = POLLIN};
		int n = ppoll(&pf, 1, wait ? NULL : &(struct timespec){0, 0}, NULL);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return n < 0 ? -errno : 0;
		wait = false;
		struct snap_mig_rec rec;
		char nm[12], reason[SNAP_MIG_NACK_MAX + 1];
		int r = snap_mig_get_hdr(x->s, &rec, x->err, sizeof(x->err));
		if (r)
			return r;
		switch (rec.type) {
		case SNAP_MIG_PREQ:
			if ((r = snap_mig_get_body(x->s, &rec, NULL, x->err, sizeof(x->err))))
				return r;
			if (rec.a < x->pages && bit(x->bits, rec.a) && (r = send_run(x, rec.a, 1)))
				return r;
			break; /* sent already: on its way */
		case SNAP_MIG_PFIN:
			if ((r = snap_mig_get_body(x->s, &rec, NULL, x->err, sizeof(x->err))))
				return r;
			x->fin = true;
			return 0;
		case SNAP_MIG_NACK:
			if (!(r = snap_mig_get_body(x->s, &rec, reason, x->err, sizeof(x->err)))) {
				reason[rec.len] = '\0';
				snprintf(x->err, sizeof(x->err), "the target failed: %.600s",
					 reason);
			}
			return -EPROTO;
		default:
			snprintf(x->err, sizeof(x->err),
				 "stream: byte %" PRIu64 ": the target sent %s", rec.off,
				 snap_mig_name(rec.type, nm));
			return -EPROTO;
		}
	}
}

/* The next run of the background push, in page order. */
static int push(struct pusher *x)
{
	while (x->next < x->pages && !bit(x->bits, x->next))
		x->next = x->bits[x->next / 64] ? x->next + 1 : (x->next / 64 + 1) * 64;
	if (x->next >= x->pages)
		return 0;
	uint64_t e = x->next + 1;
	while (e < x->pages && e - x->next < PUSH_RUN && bit(x->bits, e))
		e++;
	return send_run(x, x->next, e - x->next);
}

void mig_post_send(struct mig *m, struct snap_stream *s, struct vm *vm, uint64_t *bits)
{
	struct pusher x = {.m = m, .s = s, .ram = vm->mem.base, .bits = bits};
	x.pages = vm->mem.ram_size / PAGE;
	x.t0 = mig_now_ns();
	for (uint64_t w = 0; w < (x.pages + 63) / 64; w++)
		x.left += (uint64_t)__builtin_popcountll(bits[w]);
	mig_set_phase(m, MIG_POSTCOPY);
	int r = 0;
	while (!r && x.left)
		if (!(r = requests(&x, false)))
			r = push(&x);
	/* Everything is out: the target's PFIN says it is in. */
	while (!r && !x.fin)
		r = requests(&x, true);
	if (r == -EPIPE)
		snprintf(x.err, sizeof(x.err), "the target closed the stream");
	atomic_store(&m->t_end_ns, mig_now_ns());
	(void)mig_vmm_request(m, MIG_REQ_THAW); /* held since the freeze; it stops the VM */
	if (r) {
		mig_set_error(m, MIG_FAILED,
			      "post-copy failed after the hand-over (%s): the guest is lost; this "
			      "VM never resumes",
			      x.err);
		fprintf(stderr, "ember: migration failed in post-copy: %s: the guest is lost\n",
			x.err);
		m->stop_why = "post-copy failed after the hand-over: the guest is lost";
		m->stop_code = EXIT_HOST;
		(void)mig_vmm_request(m, MIG_REQ_STOP);
		return;
	}
	mig_completed(m, " (post-copy)");
}
