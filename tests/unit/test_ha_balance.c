/* The balancer's pure core (ha/balance/balance.h), rule by rule: each
 * rule kind kept by plan and place, must rules never broken (not even to
 * balance), maintenance evacuating what can go and saying why the rest
 * stays, affinity moved whole, a dead host's VMs left to failover
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

/* An anti-affinity rule over many VMs (counted per host, not scanned):
 * the one VM doubled up moves to a free host, and a new member is placed
 * on a free one; members with an affinity partner move with it. */
static void test_big_anti_affinity(void **state)
{
	struct fx *f = fx_new(24);
	struct ha_bal_rule *x = &f->rules[rule(f, "spread-20", HA_BAL_ANTI_AFFINITY, -1)];
	for (uint32_t i = 0; i < 20; i++)
		f->rvms[0][x->nr_vms++] = vm(f, i < 19 ? i : 0, 500, 2);
	uint32_t partner = vm(f, 5, 500, 2); /* with member vm5, not in the rule */
	rule(f, "with-5", HA_BAL_AFFINITY, 5, (int)partner, -1);
	uint32_t must, should;
	ha_bal_check(&f->c, NULL, 0, &must, &should);
	assert_int_equal(must, 1);
	plan(f);
	const struct ha_bal_move *m = move_of(f, 19);
	const struct ha_bal_move *m0 = move_of(f, 0);
	assert_true(m != NULL || m0 != NULL);
	ha_bal_apply(&f->c, &f->p);
	no_must_broken(f);
	uint32_t v = vm(f, HA_BAL_NONE, 10, 1), h;
	f->rvms[0][x->nr_vms++] = v;
	char why[256];
	assert_int_equal(ha_bal_place(&f->c, &f->o, v, &h, why, sizeof(why)), 0);
	for (uint32_t i = 0; i < 20; i++)
		assert_int_not_equal(f->vms[i].host, h);
	/* vm5 and its partner may move together: the partner is no clash */
	f->hosts[5].maintenance = true;
	f->vms[v].host = h;
	plan(f);
	const struct ha_bal_move *a = move_of(f, 5), *b = move_of(f, partner);
	assert_non_null(a);
	assert_non_null(b);
	assert_int_equal(a->to, b->to);
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
	    cmocka_unit_test(test_dead_host_and_failover),
	    cmocka_unit_test(test_big_anti_affinity),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
