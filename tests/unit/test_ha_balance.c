/* The balancer's pure core (ha/balance/balance.h): each rule kind kept
 * by plan and place, must rules never broken, maintenance, affinity
 * moved whole, caps, hysteresis, determinism, and the checker watching
 * random clusters (docs/balancing.md). */
#include <errno.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "ha/balance/balance.h"

#define GIB (1ULL << 30)
#define MAXH 64
#define MAXV 512
#define MAXR 16

/* A small cluster: hosts of 16 cores (16000) and 64 GiB. */
struct fx {
	struct ha_bal_cluster c;
	struct ha_bal_host hosts[MAXH];
	struct ha_bal_vm vms[MAXV];
	struct ha_bal_rule rules[MAXR];
	uint32_t rvms[MAXR][16], rhosts[MAXR][16];
	struct ha_bal_move moves[MAXV];
	struct ha_bal_note notes[64];
	struct ha_bal_plan p;
	struct ha_bal_opts o;
	char names[MAXH + MAXV][16];
};

static struct fx *fx_new(uint32_t nh)
{
	struct fx *f = calloc(1, sizeof(*f));
	assert_non_null(f);
	f->c.hosts = f->hosts, f->c.vms = f->vms, f->c.rules = f->rules;
	for (uint32_t h = 0; h < nh; h++) {
		snprintf(f->names[h], 16, "h%u", h);
		f->hosts[h] = (struct ha_bal_host){f->names[h], 16000, 64 * GIB, true, false};
	}
	f->c.nr_hosts = nh;
	assert_int_equal(ha_bal_opts_init(&f->o, 3), 0);
	f->p = (struct ha_bal_plan){
	    .moves = f->moves, .cap_moves = MAXV, .notes = f->notes, .cap_notes = 64};
	return f;
}

/* A VM of cpu millicores and mem GiB on host h; its index. */
static uint32_t vm(struct fx *f, uint32_t h, uint64_t cpu, uint64_t mem_gib)
{
	uint32_t v = f->c.nr_vms++;
	snprintf(f->names[MAXH + v], 16, "vm%u", v);
	f->vms[v] =
	    (struct ha_bal_vm){f->names[MAXH + v], h, cpu, mem_gib * GIB, 0, HA_BAL_NONE, NULL};
	return v;
}

/* A rule over n VMs (then the host group: -1 ends the VMs). */
static uint32_t rule(struct fx *f, const char *name, enum ha_bal_kind k, ...)
{
	uint32_t r = f->c.nr_rules++;
	struct ha_bal_rule *x = &f->rules[r];
	*x = (struct ha_bal_rule){name, k, f->rvms[r], 0, f->rhosts[r], 0};
	va_list ap;
	va_start(ap, k);
	for (int v; (v = va_arg(ap, int)) >= 0;)
		f->rvms[r][x->nr_vms++] = (uint32_t)v;
	if (k >= HA_BAL_MUST_RUN_ON)
		for (int h; (h = va_arg(ap, int)) >= 0;)
			f->rhosts[r][x->nr_hosts++] = (uint32_t)h;
	va_end(ap);
	return r;
}

static void plan(struct fx *f)
{
	char err[256] = "";
	int rc = ha_bal_plan(&f->c, &f->o, &f->p, err, sizeof(err));
	if (rc)
		fail_msg("plan: %d %s", rc, err);
}

static void no_must_broken(struct fx *f)
{
	uint32_t must, should;
	ha_bal_check(&f->c, NULL, 0, &must, &should);
	assert_int_equal(must, 0);
}

static const struct ha_bal_move *move_of(const struct fx *f, uint32_t v)
{
	for (uint32_t i = 0; i < f->p.nr_moves; i++)
		if (f->p.moves[i].vm == v)
			return &f->p.moves[i];
	return NULL;
}

static bool noted(const struct fx *f, uint32_t v, const char *what)
{
	for (uint32_t i = 0; i < f->p.nr_notes; i++)
		if (f->p.notes[i].vm == v && strstr(f->p.notes[i].why, what))
			return true;
	return false;
}

/* h0 loaded (8 VMs of 1500), h1..: empty. */
static struct fx *skewed(uint32_t nh)
{
	struct fx *f = fx_new(nh);
	for (int i = 0; i < 8; i++)
		vm(f, 0, 1500, 4);
	return f;
}

static void test_opts_and_validate(void **state)
{
	struct ha_bal_opts o;
	assert_int_equal(ha_bal_opts_init(&o, 0), -EINVAL);
	assert_int_equal(ha_bal_opts_init(&o, 6), -EINVAL);
	for (unsigned l = 1; l <= 5; l++) {
		assert_int_equal(ha_bal_opts_init(&o, l), 0);
		assert_true(o.stop <= o.target);
	}
	assert_true(isinf(o.target) == 0);
	assert_int_equal(ha_bal_opts_init(&o, 1), 0);
	assert_true(isinf(o.target));

	struct fx *f = skewed(2);
	char err[256] = "";
	f->vms[3].host = 7;
	assert_int_equal(ha_bal_plan(&f->c, &f->o, &f->p, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "vm3"));
	f->vms[3].host = 0;
	rule(f, "bad", HA_BAL_MUST_RUN_ON, 0, -1, 9, -1);
	assert_int_equal(ha_bal_plan(&f->c, &f->o, &f->p, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "rule bad"));
	f->rhosts[0][0] = 1;
	rule(f, "twice", HA_BAL_ANTI_AFFINITY, 2, 3, 2, -1);
	assert_int_equal(ha_bal_plan(&f->c, &f->o, &f->p, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "rule twice: vm vm2 listed twice"));
	uint32_t h;
	assert_int_equal(ha_bal_place(&f->c, &f->o, 0, &h, err, sizeof(err)), -EINVAL);
	free(f);
}

static void test_balances_and_stops(void **state)
{
	struct fx *f = skewed(4);
	plan(f);
	assert_true(f->p.imbalance_before > f->o.target);
	assert_true(f->p.nr_moves > 0);
	assert_true(f->p.imbalance_after <= f->o.stop);
	for (uint32_t i = 0; i < f->p.nr_moves; i++) {
		assert_int_equal(f->p.moves[i].reason, HA_BAL_R_BALANCE);
		assert_int_equal(f->p.moves[i].from, 0);
	}
	assert_true(fabs(f->p.moves[f->p.nr_moves - 1].imbalance_after - f->p.imbalance_after) <
		    1e-9);
	ha_bal_apply(&f->c, &f->p);
	assert_true(fabs(ha_bal_imbalance(&f->c) - f->p.imbalance_after) < 1e-9);
	plan(f); /* balanced: nothing more */
	assert_int_equal(f->p.nr_moves, 0);
	/* level 1: mandatory moves only */
	struct fx *g = skewed(4);
	assert_int_equal(ha_bal_opts_init(&g->o, 1), 0);
	plan(g);
	assert_int_equal(g->p.nr_moves, 0);
	free(f), free(g);
}

static void test_must_run_on(void **state)
{
	struct fx *f = skewed(4);
	/* vm0..3 must stay on h0 (and h3): balancing moves them only to h3 */
	uint32_t r = rule(f, "db-on-0-3", HA_BAL_MUST_RUN_ON, 0, 1, 2, 3, -1, 0, 3, -1);
	plan(f);
	for (uint32_t v = 0; v < 4; v++) {
		const struct ha_bal_move *m = move_of(f, v);
		assert_true(!m || m->to == 3);
	}
	ha_bal_apply(&f->c, &f->p);
	no_must_broken(f);
	/* a VM found breaking it is moved back into the group */
	f->vms[1].host = 2;
	plan(f);
	const struct ha_bal_move *m = move_of(f, 1);
	assert_non_null(m);
	assert_int_equal(m->reason, HA_BAL_R_RULE);
	assert_int_equal(m->rule, r);
	assert_true(m->to == 0 || m->to == 3);
	/* place obeys it too */
	uint32_t v = vm(f, HA_BAL_NONE, 100, 1), h;
	f->rvms[r][f->rules[r].nr_vms++] = v;
	char why[256];
	assert_int_equal(ha_bal_place(&f->c, &f->o, v, &h, why, sizeof(why)), 0);
	assert_true(h == 0 || h == 3);
	free(f);
}

static void test_must_not_and_never_broken_for_balance(void **state)
{
	struct fx *f = skewed(3);
	/* every VM of h0 must not run on h1 or h2: balancing would love to */
	rule(f, "not-1-2", HA_BAL_MUST_NOT_RUN_ON, 0, 1, 2, 3, 4, 5, 6, 7, -1, 1, 2, -1);
	plan(f);
	assert_int_equal(f->p.nr_moves, 0);
	assert_true(f->p.imbalance_after > f->o.target);
	/* placement avoids the group */
	uint32_t v = vm(f, HA_BAL_NONE, 100, 1), h;
	f->rvms[0][f->rules[0].nr_vms++] = v;
	char why[256];
	assert_int_equal(ha_bal_place(&f->c, &f->o, v, &h, why, sizeof(why)), 0);
	assert_int_equal(h, 0);
	/* and says why when nothing is left */
	f->hosts[0].maintenance = true;
	assert_int_equal(ha_bal_place(&f->c, &f->o, v, &h, why, sizeof(why)), -ENOSPC);
	assert_non_null(strstr(why, "not-1-2"));
	assert_non_null(strstr(why, "maintenance"));
	free(f);
}

static void test_should_rules(void **state)
{
	struct fx *f = fx_new(3);
	uint32_t a = vm(f, 0, 1000, 4), b = vm(f, 1, 1000, 4);
	rule(f, "prefer-2", HA_BAL_SHOULD_RUN_ON, (int)a, -1, 2, -1);
	rule(f, "avoid-1", HA_BAL_SHOULD_NOT_RUN_ON, (int)b, -1, 1, -1);
	plan(f);
	const struct ha_bal_move *ma = move_of(f, a), *mb = move_of(f, b);
	assert_non_null(ma);
	assert_int_equal(ma->to, 2);
	assert_int_equal(ma->reason, HA_BAL_R_RULE);
	assert_non_null(mb);
	assert_int_not_equal(mb->to, 1);
	ha_bal_apply(&f->c, &f->p);
	uint32_t must, should;
	ha_bal_check(&f->c, NULL, 0, &must, &should);
	assert_int_equal(must + should, 0);
	/* placement prefers the group, but uses another host when it is full */
	uint32_t c = vm(f, HA_BAL_NONE, 100, 8), h;
	rule(f, "prefer-2-c", HA_BAL_SHOULD_RUN_ON, (int)c, -1, 2, -1);
	char why[256];
	assert_int_equal(ha_bal_place(&f->c, &f->o, c, &h, why, sizeof(why)), 0);
	assert_int_equal(h, 2);
	vm(f, 2, 100, 56); /* h2 now full */
	assert_int_equal(ha_bal_place(&f->c, &f->o, c, &h, why, sizeof(why)), 0);
	assert_int_not_equal(h, 2);
	free(f);
}

static void test_maintenance(void **state)
{
	struct fx *f = fx_new(4);
	for (int i = 0; i < 6; i++)
		vm(f, 0, 1000, 4);
	for (uint32_t h = 1; h < 4; h++)
		vm(f, h, 100, 2);
	f->hosts[0].mem_cap = 128 * GIB; /* a bigger host */
	uint32_t stuck = vm(f, 0, 1000, 4), pinned = vm(f, 0, 1000, 4);
	uint32_t big = vm(f, 0, 1000, 63); /* fits nowhere else */
	rule(f, "only-h0", HA_BAL_MUST_RUN_ON, (int)stuck, -1, 0, -1);
	f->vms[pinned].pinned = "local disk";
	f->hosts[0].maintenance = true;
	plan(f);
	for (uint32_t v = 0; v < 6; v++) {
		const struct ha_bal_move *m = move_of(f, v); /* vm0..5 */
		assert_non_null(m);
		assert_int_equal(m->reason, HA_BAL_R_MAINTENANCE);
		assert_int_not_equal(m->to, 0);
	}
	assert_null(move_of(f, stuck));
	assert_null(move_of(f, pinned));
	assert_null(move_of(f, big));
	assert_true(noted(f, stuck, "only-h0"));
	assert_true(noted(f, pinned, "local disk"));
	assert_true(noted(f, big, "memory"));
	ha_bal_apply(&f->c, &f->p);
	no_must_broken(f);
	/* new VMs avoid it */
	uint32_t v = vm(f, HA_BAL_NONE, 10, 1), h;
	char why[256];
	assert_int_equal(ha_bal_place(&f->c, &f->o, v, &h, why, sizeof(why)), 0);
	assert_int_not_equal(h, 0);
	free(f);
}

static void test_anti_affinity(void **state)
{
	struct fx *f = fx_new(3);
	uint32_t a = vm(f, 0, 1000, 4), b = vm(f, 0, 1000, 4), c = vm(f, 1, 1000, 4);
	rule(f, "spread", HA_BAL_ANTI_AFFINITY, (int)a, (int)b, (int)c, -1);
	plan(f);
	assert_int_equal(f->p.nr_moves, 1);
	assert_int_equal(f->p.moves[0].to, 2);
	assert_int_equal(f->p.moves[0].reason, HA_BAL_R_RULE);
	ha_bal_apply(&f->c, &f->p);
	no_must_broken(f);
	/* balancing never puts two together: h2 is empty but holds a partner */
	struct fx *g = fx_new(2);
	for (int i = 0; i < 8; i++)
		vm(g, 0, 1500, 4);
	uint32_t p = vm(g, 1, 100, 1);
	rule(g, "apart", HA_BAL_ANTI_AFFINITY, 0, 1, 2, 3, 4, 5, 6, 7, (int)p, -1);
	uint32_t must, should;
	ha_bal_check(&g->c, NULL, 0, &must, &should);
	assert_true(must > 0); /* h0 holds eight of them: can't be fixed with two hosts */
	plan(g);
	assert_int_equal(g->p.nr_moves, 0);
	assert_true(g->p.nr_notes > 0);
	/* placement: a third member goes where none is */
	uint32_t d = vm(f, HA_BAL_NONE, 10, 1), h;
	f->rvms[0][f->rules[0].nr_vms++] = d;
	char why[256];
	assert_int_equal(ha_bal_place(&f->c, &f->o, d, &h, why, sizeof(why)), -ENOSPC);
	assert_non_null(strstr(why, "spread"));
	free(f), free(g);
}

static void test_affinity_together_or_not(void **state)
{
	struct fx *f = skewed(3);
	rule(f, "pair", HA_BAL_AFFINITY, 0, 1, -1);
	plan(f);
	const struct ha_bal_move *m0 = move_of(f, 0), *m1 = move_of(f, 1);
	assert_true((m0 == NULL) == (m1 == NULL));
	if (m0) {
		assert_int_equal(m0->to, m1->to);
		assert_int_equal(m1 - m0 == 1 || m0 - m1 == 1, 1); /* consecutive */
	}
	ha_bal_apply(&f->c, &f->p);
	no_must_broken(f);
	/* not at all: a group of 3 x 24 GiB fits no other host (64 GiB) */
	struct fx *g = fx_new(2);
	uint32_t a = vm(g, 0, 5000, 20), b = vm(g, 0, 5000, 20), c = vm(g, 0, 5000, 20);
	rule(g, "trio", HA_BAL_AFFINITY, (int)a, (int)b, (int)c, -1);
	vm(g, 1, 0, 10);
	g->hosts[0].maintenance = true;
	plan(g);
	assert_int_equal(g->p.nr_moves, 0);
	assert_true(noted(g, a, "memory"));
	/* a split group is gathered on one host */
	struct fx *k = fx_new(3);
	a = vm(k, 0, 1000, 4), b = vm(k, 1, 1000, 4);
	rule(k, "pair", HA_BAL_AFFINITY, (int)a, (int)b, -1);
	plan(k);
	assert_int_equal(k->p.nr_moves, 1);
	assert_int_equal(k->p.moves[0].reason, HA_BAL_R_RULE);
	ha_bal_apply(&k->c, &k->p);
	assert_int_equal(k->vms[a].host, k->vms[b].host);
	/* placement joins the group */
	uint32_t d = vm(k, HA_BAL_NONE, 10, 1), h;
	k->rvms[0][k->rules[0].nr_vms++] = d;
	char why[256];
	assert_int_equal(ha_bal_place(&k->c, &k->o, d, &h, why, sizeof(why)), 0);
	assert_int_equal(h, k->vms[a].host);
	free(f), free(g), free(k);
}

static void test_caps(void **state)
{
	struct fx *f = skewed(4);
	f->o.max_moves = 2;
	plan(f);
	assert_int_equal(f->p.nr_moves, 2);
	assert_true(f->p.capped);
	f->o.max_moves = 0;
	f->o.max_concurrent = 3;
	f->vms[7].migrating_to = 3; /* one in flight: two more at most */
	plan(f);
	assert_int_equal(f->p.nr_moves, 2);
	assert_null(move_of(f, 7));
	f->p.cap_moves = 1;
	plan(f);
	assert_int_equal(f->p.nr_moves, 1);
	assert_true(f->p.capped);
	f->p.cap_moves = MAXV;
	f->vms[6].migrating_to = 2, f->vms[5].migrating_to = 1; /* all three slots taken */
	plan(f);
	assert_int_equal(f->p.nr_moves, 0);
	assert_true(f->p.capped);
	/* mandatory moves go first under a cap */
	struct fx *g = skewed(4);
	uint32_t m = vm(g, 3, 100, 1);
	rule(g, "not-3", HA_BAL_MUST_NOT_RUN_ON, (int)m, -1, 3, -1);
	g->o.max_moves = 1;
	plan(g);
	assert_int_equal(g->p.nr_moves, 1);
	assert_int_equal(g->p.moves[0].vm, m);
	assert_int_equal(g->p.moves[0].reason, HA_BAL_R_RULE);
	assert_true(g->p.capped);
	free(f), free(g);
}

/* Rounds of a steady load with +-3% noise, no recent list: the balancer
 * converges and then stays still; no VM ever goes back where it was. */
static void test_no_oscillation(void **state)
{
	struct fx *f = fx_new(8);
	uint64_t seed = 7, base[MAXV];
	for (uint32_t i = 0; i < 160; i++) {
		seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
		uint32_t v = vm(f, (uint32_t)(seed >> 33) % 3, 200 + (seed >> 40) % 400, 1);
		base[v] = f->vms[v].cpu;
	}
	uint32_t left[MAXV], moves_late = 0;
	for (uint32_t v = 0; v < f->c.nr_vms; v++)
		left[v] = HA_BAL_NONE;
	for (int round = 0; round < 100; round++) {
		for (uint32_t v = 0; v < f->c.nr_vms; v++) {
			seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
			double n = ((double)(seed >> 11) / 9007199254740992.0) * 0.06 - 0.03;
			f->vms[v].cpu = (uint64_t)(base[v] * (1 + n));
		}
		f->o.resume = f->p.capped;
		plan(f);
		for (uint32_t i = 0; i < f->p.nr_moves; i++) {
			const struct ha_bal_move *m = &f->p.moves[i];
			assert_int_not_equal(left[m->vm], m->to);
			left[m->vm] = m->from;
		}
		if (round >= 2)
			moves_late += f->p.nr_moves;
		ha_bal_apply(&f->c, &f->p);
		no_must_broken(f);
	}
	assert_int_equal(moves_late, 0);
	assert_true(ha_bal_imbalance(&f->c) <= f->o.target);
	free(f);
}

static void test_recent_blocks_return(void **state)
{
	struct fx *f = skewed(2);
	struct ha_bal_recent rec[8];
	for (uint32_t v = 0; v < 8; v++)
		rec[v] = (struct ha_bal_recent){v, 1};
	f->c.recent = rec, f->c.nr_recent = 8;
	plan(f);
	assert_int_equal(f->p.nr_moves, 0);
	free(f);
}

static void test_deterministic(void **state)
{
	struct fx *f = fx_new(16);
	uint64_t seed = 3;
	for (uint32_t i = 0; i < 300; i++) {
		seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
		vm(f, (uint32_t)(seed >> 33) % 5, 100 + (seed >> 40) % 900, 1 + (seed >> 50) % 3);
	}
	rule(f, "apart", HA_BAL_ANTI_AFFINITY, 1, 2, 3, -1);
	rule(f, "pair", HA_BAL_AFFINITY, 4, 5, -1);
	plan(f);
	assert_true(f->p.nr_moves > 0);
	struct ha_bal_move first[MAXV];
	uint32_t n = f->p.nr_moves;
	memcpy(first, f->moves, n * sizeof(*first));
	plan(f);
	assert_int_equal(f->p.nr_moves, n);
	for (uint32_t i = 0; i < n; i++) {
		assert_int_equal(first[i].vm, f->moves[i].vm);
		assert_int_equal(first[i].to, f->moves[i].to);
		assert_true(first[i].imbalance_after == f->moves[i].imbalance_after);
	}
	free(f);
}

static void test_checker(void **state)
{
	struct fx *f = fx_new(3);
	uint32_t a = vm(f, 0, 10, 40), b = vm(f, 0, 10, 40); /* 80 GiB on a 64 GiB host */
	uint32_t c = vm(f, 1, 10, 1), d = vm(f, 2, 10, 1);
	rule(f, "pair", HA_BAL_AFFINITY, (int)c, (int)d, -1);
	rule(f, "apart", HA_BAL_ANTI_AFFINITY, (int)a, (int)b, -1);
	rule(f, "on-2", HA_BAL_MUST_RUN_ON, (int)c, -1, 2, -1);
	rule(f, "not-2", HA_BAL_MUST_NOT_RUN_ON, (int)d, -1, 2, -1);
	rule(f, "pref-2", HA_BAL_SHOULD_RUN_ON, (int)a, -1, 2, -1);
	rule(f, "avoid-2", HA_BAL_SHOULD_NOT_RUN_ON, (int)d, -1, 2, -1);
	struct ha_bal_violation v[16];
	uint32_t must, should;
	ha_bal_check(&f->c, v, 16, &must, &should);
	assert_int_equal(must, 5); /* memory, pair, apart, on-2, not-2 */
	assert_int_equal(should, 2);
	assert_int_equal(v[0].rule, HA_BAL_NONE);
	assert_int_equal(v[0].host, 0);
	assert_false(v[must].must);
	/* a dead host's VMs break nothing */
	f->hosts[0].alive = f->hosts[1].alive = f->hosts[2].alive = false;
	ha_bal_check(&f->c, v, 16, &must, &should);
	assert_int_equal(must + should, 0);
	free(f);
}

/* Random clusters with random rules: whatever plan proposes, the checker
 * finds no must rule broken that was not broken before, and memory never
 * overcommitted; repeated rounds reach a fixed point. */
static void test_random_checker(void **state)
{
	uint64_t seed = 11;
#define RND() (seed = seed * 6364136223846793005ULL + 1442695040888963407ULL, seed >> 33)
	for (int trial = 0; trial < 200; trial++) {
		uint32_t nh = 2 + RND() % 10;
		struct fx *f = fx_new(nh);
		assert_int_equal(ha_bal_opts_init(&f->o, 1 + RND() % 5), 0);
		for (uint32_t h = 0; h < nh; h++)
			f->hosts[h].maintenance = RND() % 8 == 0;
		uint32_t nv = 5 + RND() % 60;
		uint64_t mem[MAXH] = {0};
		for (uint32_t i = 0; i < nv; i++) {
			uint32_t h = RND() % nh, g = 1 + RND() % 8;
			if (mem[h] + g > 64)
				continue;
			mem[h] += g;
			vm(f, h, RND() % 3000, g);
		}
		if (!f->c.nr_vms)
			vm(f, 0, 1, 1);
		for (uint32_t r = 0; r < 6; r++) {
			uint32_t k = RND() % 6, n = 1 + RND() % 3;
			struct ha_bal_rule *x = &f->rules[f->c.nr_rules];
			*x = (struct ha_bal_rule){
			    "r", (enum ha_bal_kind)k,	   f->rvms[f->c.nr_rules],
			    0,	 f->rhosts[f->c.nr_rules], 0};
			for (uint32_t i = 0, v0 = RND() % f->c.nr_vms; i < n && i < f->c.nr_vms;
			     i++)
				f->rvms[f->c.nr_rules][x->nr_vms++] = (v0 + i * 7) % f->c.nr_vms;
			for (uint32_t i = 1; i < x->nr_vms; i++) /* distinct VMs only */
				if (f->rvms[f->c.nr_rules][i] == f->rvms[f->c.nr_rules][0])
					x->nr_vms = i;
			if (k >= HA_BAL_MUST_RUN_ON)
				for (uint32_t i = 0; i < 1 + RND() % 3; i++)
					f->rhosts[f->c.nr_rules][x->nr_hosts++] = RND() % nh;
			f->c.nr_rules++;
		}
		uint32_t must0, should0, must, should, last = 1;
		ha_bal_check(&f->c, NULL, 0, &must0, &should0);
		for (int round = 0; round < 20 && last; round++) {
			plan(f);
			ha_bal_apply(&f->c, &f->p);
			ha_bal_check(&f->c, NULL, 0, &must, &should);
			assert_true(must <= must0);
			must0 = must;
			last = f->p.nr_moves;
		}
		assert_int_equal(last, 0);
		free(f);
	}
#undef RND
}

/* A dead host's VMs are failover's: plan leaves them be; place puts
 * them on alive hosts, keeping must rules (failover breaks none). */
static void test_dead_host_and_failover(void **state)
{
	struct fx *f = fx_new(3);
	uint32_t a = vm(f, 0, 1000, 4), b = vm(f, 0, 1000, 4);
	vm(f, 1, 100, 1);
	rule(f, "b-not-on-1", HA_BAL_MUST_NOT_RUN_ON, (int)b, -1, 1, -1);
	f->hosts[0].alive = false;
	plan(f);
	assert_null(move_of(f, a));
	assert_null(move_of(f, b));
	uint32_t h;
	char why[256];
	assert_int_equal(ha_bal_place(&f->c, &f->o, a, &h, why, sizeof(why)), 0);
	assert_int_not_equal(h, 0);
	f->vms[a].host = h;
	assert_int_equal(ha_bal_place(&f->c, &f->o, b, &h, why, sizeof(why)), 0);
	assert_int_equal(h, 2);
	f->vms[b].host = h;
	no_must_broken(f);
	free(f);
}

/* A migration in flight holds memory on its target: nothing else is
 * planned into that room. */
static void test_in_flight_reserves(void **state)
{
	struct fx *f = fx_new(3);
	uint32_t big = vm(f, 0, 1000, 30);
	uint32_t moving = vm(f, 2, 1000, 40);
	f->vms[moving].migrating_to = 1; /* h1: 40 of 64 GiB taken */
	vm(f, 2, 100, 30);		 /* h2: 70 GiB with the reservation... */
	f->hosts[2].mem_cap = 128 * GIB;
	f->hosts[0].maintenance = true;
	plan(f);
	const struct ha_bal_move *m = move_of(f, big);
	assert_non_null(m);
	assert_int_equal(m->to, 2); /* not h1, though its CPU is idle */
	ha_bal_apply(&f->c, &f->p);
	no_must_broken(f);
	free(f);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_opts_and_validate),
	    cmocka_unit_test(test_balances_and_stops),
	    cmocka_unit_test(test_must_run_on),
	    cmocka_unit_test(test_must_not_and_never_broken_for_balance),
	    cmocka_unit_test(test_should_rules),
	    cmocka_unit_test(test_maintenance),
	    cmocka_unit_test(test_anti_affinity),
	    cmocka_unit_test(test_affinity_together_or_not),
	    cmocka_unit_test(test_caps),
	    cmocka_unit_test(test_no_oscillation),
	    cmocka_unit_test(test_recent_blocks_return),
	    cmocka_unit_test(test_deterministic),
	    cmocka_unit_test(test_checker),
	    cmocka_unit_test(test_random_checker),
	    cmocka_unit_test(test_dead_host_and_failover),
	    cmocka_unit_test(test_in_flight_reserves),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
