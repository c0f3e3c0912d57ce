/* The elected balancer (balancer.h, docs/balancing.md "Wiring"): one
 * thread per emberd; the one whose lease holds the key `balancer` runs a
 * round every interval: read hosts/ load/ owner/ maint/ rules/ moves/
 * state/ in one transaction (one revision), build the model, ha_bal_plan,
 * and request each move by putting moves/<vm> in a transaction that
 * compares the VM's owner token, that no request exists, and that we are
 * still the balancer.  The VM's owner carries the move out (the move
 * helper's code) and deletes the key; a balancer that dies mid-move
 * leaves the key, which its successor counts as in flight. */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ha/emberd/balancer.h"

#define BM_MAX_MOVES 2	    /* moves requested per round: the rate limit */
#define BM_MAX_CONCURRENT 2 /* moves/ keys at once */
#define BM_RECENT_ROUNDS 30 /* a VM moved is not moved back for this many rounds (>= 5 min) */
#define BM_NOTES 32
/* After a move, balancing (not the mandatory moves) waits this long: the
 * hosts' load is an EWMA (load.c) that takes seconds to show the move,
 * and a round that saw half of it would move another VM for nothing. */
#define BM_SETTLE_MS 10000
/* A failed move's target is avoided for that VM this long. */
#define BM_FAILED_MS 300000

struct recent {
	struct bm_recent r;
	uint64_t round;
};

/* A move we requested: once its key is gone, did the VM leave? */
struct pending {
	char vm[ED_NAME_MAX], from[ED_NAME_MAX], to[ED_NAME_MAX];
	uint64_t round; /* requested then; for `failed`: failed then */
};

struct bm_balancer {
	struct ed_cluster *c;
	struct bm_opts o;
	pthread_t th;
	struct ha_etcd *e;
	struct cl_spec *specs;
	size_t nspecs;
	int64_t elected; /* create revision of our `balancer` key (0: not the balancer) */
	uint64_t round;
	uint64_t quiet_until; /* the round balancing may resume (moves settling) */
	bool capped;	      /* the previous round stopped at a cap above stop */
	struct recent *recent;
	size_t nrecent;
	struct pending *pend, *failed; /* requests in flight; moves that failed lately */
	size_t npend, nfailed;
	char last_notes[1024], last_warn[ED_ERR_MAX];
};

static const char *bal_key(void)
{
	return CL_PREFIX "balancer";
}

/* Are we the balancer?  Take the key when free; else it is ours iff it
 * is bound to our lease. */
static void elect(struct bm_balancer *b, int64_t lease)
{
	struct ed_cluster *c = b->c;
	char val[256], err[ED_ERR_MAX];
	snprintf(val, sizeof(val), "{\"host\": \"%s\", \"since\": %" PRIu64 "}", c->name,
		 ed_now_ms());
	struct ha_etcd_cmp cmp = {bal_key(), HA_ETCD_CREATE, HA_ETCD_EQ, 0, NULL};
	struct ha_etcd_op put = {HA_ETCD_PUT, bal_key(), val, lease, false};
	struct ha_etcd_op get = {HA_ETCD_RANGE, bal_key(), NULL, 0, false};
	struct ha_etcd_txn t = {&cmp, 1, &put, 1, &get, 1};
	struct ha_etcd_txn_result res;
	int64_t was = b->elected;
	if (ha_etcd_txn_run(b->e, &t, &res, err, sizeof(err)))
		return; /* unreachable: keep what we were; the moves' txn checks */
	if (res.succeeded)
		b->elected = res.revision;
	else if (res.n == 1 && res.ranges[0].n == 1 && res.ranges[0].kvs[0].lease == lease)
		b->elected = res.ranges[0].kvs[0].create_revision;
	else
		b->elected = 0;
	ha_etcd_txn_result_free(&res);
	if (b->elected && !was) {
		b->capped = false;
		cl_event(c, NULL, "balancer",
			 "this host is the balancer (level %u, every %" PRIu64 " ms)", b->o.level,
			 b->o.interval_ms);
	} else if (!b->elected && was) {
		cl_event(c, NULL, "balancer", "this host is no longer the balancer");
	}
}

static void remember(struct bm_balancer *b, const char *vm, const char *from)
{
	struct recent *n = realloc(b->recent, (b->nrecent + 1) * sizeof(*n));
	if (!n)
		return;
	b->recent = n;
	struct recent *x = &n[b->nrecent++];
	snprintf(x->r.vm, sizeof(x->r.vm), "%s", vm);
	snprintf(x->r.host, sizeof(x->r.host), "%s", from);
	x->round = b->round;
}

/* Request one move: 0 when the key was put, 1 when a compare failed. */
static int request(struct bm_balancer *b, const struct bm_model *m, const struct ha_bal_move *mv,
		   uint32_t i)
{
	struct ed_cluster *c = b->c;
	const char *vm = m->c.vms[mv->vm].name;
	char ko[160], km[160], val[512], err[ED_ERR_MAX];
	cl_key(ko, sizeof(ko), "owner", vm);
	cl_key(km, sizeof(km), "moves", vm);
	int64_t token = m->token[mv->vm];
	snprintf(val, sizeof(val),
		 "{\"to\": \"%s\", \"reason\": \"%s\", \"by\": \"%s\", \"id\": \"%s-%" PRIu64
		 "-%u\", \"token\": %" PRId64 "}",
		 m->c.hosts[mv->to].name,
		 mv->reason == HA_BAL_R_BALANCE ? "balance" : ha_bal_reason_name(mv->reason),
		 c->name, c->name, b->round, i, token);
	struct ha_etcd_cmp cmp[3] = {
	    {ko, HA_ETCD_MOD, HA_ETCD_EQ, token, NULL},
	    {km, HA_ETCD_CREATE, HA_ETCD_EQ, 0, NULL},
	    {bal_key(), HA_ETCD_CREATE, HA_ETCD_EQ, b->elected, NULL},
	};
	struct ha_etcd_op put = {HA_ETCD_PUT, km, val, 0, false};
	struct ha_etcd_txn t = {cmp, 3, &put, 1, NULL, 0};
	struct ha_etcd_txn_result res;
	if (ha_etcd_txn_run(b->e, &t, &res, err, sizeof(err))) {
		cl_event(c, vm, "etcd-error", "requesting a move: %s", err);
		return 1;
	}
	bool ok = res.succeeded;
	ha_etcd_txn_result_free(&res);
	if (!ok)
		return 1;
	remember(b, vm, m->c.hosts[mv->from].name);
	struct pending *n = realloc(b->pend, (b->npend + 1) * sizeof(*n));
	if (n) {
		b->pend = n;
		struct pending *x = &n[b->npend++];
		snprintf(x->vm, sizeof(x->vm), "%s", vm);
		snprintf(x->from, sizeof(x->from), "%s", m->c.hosts[mv->from].name);
		snprintf(x->to, sizeof(x->to), "%s", m->c.hosts[mv->to].name);
		x->round = b->round;
	}
	cl_event(c, vm, "balance", "move requested: %s -> %s (%s, cost %" PRIu64 " MiB)",
		 m->c.hosts[mv->from].name, m->c.hosts[mv->to].name, ha_bal_reason_name(mv->reason),
		 mv->cost >> 20);
	return 0;
}

/* Our requests whose key is gone: the VM still on its old host means
 * the move failed or was refused; it goes elsewhere next (the failed
 * target is avoided for BM_FAILED_MS). */
static void settle(struct bm_balancer *b, const struct ha_etcd_range *r)
{
	size_t keep = 0;
	for (size_t i = 0; i < b->nfailed; i++)
		if (b->round - b->failed[i].round < BM_FAILED_MS / b->o.interval_ms + 1)
			b->failed[keep++] = b->failed[i];
	b->nfailed = keep;
	keep = 0;
	for (size_t i = 0; i < b->npend; i++) {
		struct pending *x = &b->pend[i];
		char km[160], ko[160];
		cl_key(km, sizeof(km), "moves", x->vm);
		cl_key(ko, sizeof(ko), "owner", x->vm);
		if (ha_etcd_range_find(&r[BM_MOVES], km)) {
			b->pend[keep++] = *x;
			continue;
		}
		const struct ha_etcd_kv *o = ha_etcd_range_find(&r[BM_OWNER], ko);
		if (!o || strcmp(o->value, x->from))
			continue; /* it left (or failed over): done */
		struct pending *f = realloc(b->failed, (b->nfailed + 1) * sizeof(*f));
		if (f) {
			b->failed = f;
			f[b->nfailed] = *x;
			f[b->nfailed++].round = b->round;
		}
		cl_event(b->c, x->vm, "balance",
			 "the move to %s failed or was refused: it stays on %s, and goes "
			 "elsewhere if it moves",
			 x->to, x->from);
	}
	b->npend = keep;
}

/* One round over ranges r[BM_NR]. */
static void round_once(struct bm_balancer *b, const struct ha_etcd_range *r)
{
	struct ed_cluster *c = b->c;
	settle(b, r);
	size_t keep = 0; /* forget moves older than recent_rounds */
	for (size_t i = 0; i < b->nrecent; i++)
		if (b->round - b->recent[i].round < b->o.recent_rounds)
			b->recent[keep++] = b->recent[i];
	b->nrecent = keep;
	struct bm_recent *rec = calloc(b->nrecent + 1, sizeof(*rec));
	struct bm_model m;
	if (!rec)
		return;
	for (size_t i = 0; i < b->nrecent; i++)
		rec[i] = b->recent[i].r;
	int rc = bm_build(&m, r, b->specs, b->nspecs, rec, b->nrecent);
	free(rec);
	for (size_t i = 0; !rc && i < b->nfailed; i++)
		rc = bm_avoid(&m, b->failed[i].vm, b->failed[i].to);
	if (rc) {
		bm_free(&m);
		return;
	}
	if (strcmp(m.warn, b->last_warn)) {
		snprintf(b->last_warn, sizeof(b->last_warn), "%s", m.warn);
		if (m.warn[0])
			cl_event(c, NULL, "balance", "%s", m.warn);
	}
	struct ha_bal_opts o;
	struct ha_bal_move moves[BM_MAX_MOVES * 4];
	struct ha_bal_note notes[BM_NOTES];
	struct ha_bal_plan p = {moves, BM_MAX_MOVES * 4, 0, notes, BM_NOTES, 0, 0, 0, 0, false};
	char err[ED_ERR_MAX];
	bool in_flight = false;
	for (uint32_t v = 0; v < m.c.nr_vms; v++)
		in_flight |= m.in_flight[v];
	uint64_t settle = BM_SETTLE_MS / b->o.interval_ms + 1;
	if (in_flight)
		b->quiet_until = b->round + settle;
	bool quiet = b->round < b->quiet_until; /* level 1: mandatory moves only */
	if (ha_bal_opts_init(&o, quiet ? 1 : b->o.level)) {
		bm_free(&m);
		return;
	}
	o.max_moves = b->o.max_moves;
	o.max_concurrent = b->o.max_concurrent;
	o.resume = b->capped;
	if (ha_bal_plan(&m.c, &o, &p, err, sizeof(err))) {
		cl_event(c, NULL, "balance", "no plan: %s", err);
		bm_free(&m);
		return;
	}
	if (!quiet)
		b->capped = p.capped && p.imbalance_after > o.stop;
	uint32_t done = 0;
	for (uint32_t i = 0; i < p.nr_moves; i++) {
		/* evacuation is the mover's (move.c); the rest of the plan
		 * assumes it done, so it waits for the next round */
		if (p.moves[i].reason == HA_BAL_R_MAINTENANCE)
			break;
		if (!m.in_flight[p.moves[i].vm] && m.token[p.moves[i].vm] &&
		    request(b, &m, &p.moves[i], i) == 0)
			done++;
	}
	if (done)
		b->quiet_until = b->round + settle;
	if (done)
		cl_event(c, NULL, "balance", "imbalance %.2f \u2192 %.2f: %u move%s",
			 p.imbalance_before, p.imbalance_after, done, done == 1 ? "" : "s");
	char all[1024] = "";
	for (uint32_t i = 0; i < p.nr_notes; i++) {
		size_t l = strlen(all);
		snprintf(all + l, sizeof(all) - l, "%s%s", l ? "; " : "", p.notes[i].why);
	}
	if (strcmp(all, b->last_notes)) { /* once per change, not every round */
		snprintf(b->last_notes, sizeof(b->last_notes), "%s", all);
		if (all[0])
			cl_event(c, NULL, "balance", "stays: %s", all);
	}
	bm_free(&m);
}

static void *bal_thread(void *arg)
{
	struct bm_balancer *b = arg;
	struct ed_cluster *c = b->c;
	char keys[BM_NR][64];
	struct ha_etcd_op reads[BM_NR];
	bm_reads(keys, reads);
	const struct ha_etcd_txn t = {NULL, 0, reads, BM_NR, NULL, 0};
	while (cl_sleep(c, b->o.interval_ms)) {
		pthread_mutex_lock(&c->mu);
		int64_t lease = c->fenced ? 0 : c->lease;
		if (c->bal_specs) {
			cl_specs_free(b->specs, b->nspecs);
			b->specs = c->bal_specs;
			b->nspecs = c->nbal_specs;
			c->bal_specs = NULL;
			c->nbal_specs = 0;
		}
		pthread_mutex_unlock(&c->mu);
		if (!lease) { /* fenced or not joined: the key dies with the old lease */
			if (b->elected)
				cl_event(c, NULL, "balancer",
					 "this host is no longer the balancer");
			b->elected = 0;
			continue;
		}
		elect(b, lease);
		if (!b->elected || !b->specs)
			continue;
		b->round++;
		struct ha_etcd_txn_result res;
		char err[ED_ERR_MAX];
		if (ha_etcd_txn_run(b->e, &t, &res, err, sizeof(err)))
			continue;
		if (res.n == BM_NR)
			round_once(b, res.ranges);
		ha_etcd_txn_result_free(&res);
	}
	return NULL;
}

int bm_start(struct bm_balancer **out, struct ed_cluster *c, const struct bm_opts *o, char *err,
	     size_t errlen)
{
	if (o->level > 5) {
		snprintf(err, errlen, "balancer: level %u: expected 0 (off) .. 5", o->level);
		return -EINVAL;
	}
	struct bm_balancer *b = calloc(1, sizeof(*b));
	if (!b)
		return -ENOMEM;
	b->c = c;
	b->o = *o;
	if (!b->o.interval_ms)
		b->o.interval_ms = 10000;
	if (!b->o.max_moves)
		b->o.max_moves = BM_MAX_MOVES;
	if (!b->o.max_concurrent)
		b->o.max_concurrent = BM_MAX_CONCURRENT;
	if (!b->o.recent_rounds) /* 30 rounds, and at least 5 minutes */
		b->o.recent_rounds = BM_RECENT_ROUNDS > 300000 / b->o.interval_ms + 1
					 ? BM_RECENT_ROUNDS
					 : (uint32_t)(300000 / b->o.interval_ms + 1);
	int r = ha_etcd_new(&b->e, c->endpoints, (int)(c->ttl_ms / 2), err, errlen);
	if (r) {
		free(b);
		return r;
	}
	if (pthread_create(&b->th, NULL, bal_thread, b)) {
		ha_etcd_free(b->e);
		free(b);
		snprintf(err, errlen, "balancer: cannot start its thread");
		return -EAGAIN;
	}
	*out = b;
	return 0;
}

void bm_stop(struct bm_balancer *b)
{
	if (!b)
		return;
	pthread_join(b->th, NULL); /* it stops with the cluster (c->stop) */
	ha_etcd_free(b->e);
	cl_specs_free(b->specs, b->nspecs);
	free(b->recent);
	free(b->pend);
	free(b->failed);
	free(b);
}
