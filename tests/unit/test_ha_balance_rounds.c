/* The balancer over rounds (ha/balance/balance.h): caps, hysteresis (no
 * oscillation under noise), the recent list, determinism, in-flight
 * reservations, and the checker against random clusters
 * (docs/balancing.md). */
#include <errno.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "tests/unit/balance_fixture.h"

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
		uint32_t nh = 2 + RND() % 30;
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
			/* now and then an anti-affinity rule big enough to be
			 * counted per host (BAL_ANTI_SCAN) rather than scanned */
			uint32_t k = RND() % 6, n = 1 + RND() % 3;
			if (k == HA_BAL_ANTI_AFFINITY && RND() % 3 == 0)
				n = 17 + RND() % 8;
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
	    cmocka_unit_test(test_caps),
	    cmocka_unit_test(test_no_oscillation),
	    cmocka_unit_test(test_recent_blocks_return),
	    cmocka_unit_test(test_deterministic),
	    cmocka_unit_test(test_checker),
	    cmocka_unit_test(test_random_checker),
	    cmocka_unit_test(test_in_flight_reserves),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
