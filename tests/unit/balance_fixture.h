/* The balancer tests' fixture (test_ha_balance.c, test_ha_balance_rounds.c):
 * a small cluster built VM by VM and rule by rule, and the checks both
 * make.  Included by each test program (the Makefile builds every
 * tests/unit/test_*.c alone), so all is static.  Include after cmocka.h. */
#ifndef EMBER_TEST_BALANCE_FIXTURE_H
#define EMBER_TEST_BALANCE_FIXTURE_H

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
	uint32_t rvms[MAXR][32], rhosts[MAXR][16];
	struct ha_bal_move moves[MAXV];
	struct ha_bal_note notes[64];
	struct ha_bal_plan p;
	struct ha_bal_opts o;
	char names[MAXH + MAXV][16];
};

__attribute__((unused)) static struct fx *fx_new(uint32_t nh)
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
__attribute__((unused)) static uint32_t vm(struct fx *f, uint32_t h, uint64_t cpu, uint64_t mem_gib)
{
	uint32_t v = f->c.nr_vms++;
	snprintf(f->names[MAXH + v], 16, "vm%u", v);
	f->vms[v] =
	    (struct ha_bal_vm){f->names[MAXH + v], h, cpu, mem_gib * GIB, 0, HA_BAL_NONE, NULL};
	return v;
}

/* A rule over n VMs (then the host group: -1 ends the VMs). */
__attribute__((unused)) static uint32_t rule(struct fx *f, const char *name, enum ha_bal_kind k,
					     ...)
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

__attribute__((unused)) static void plan(struct fx *f)
{
	char err[256] = "";
	int rc = ha_bal_plan(&f->c, &f->o, &f->p, err, sizeof(err));
	if (rc)
		fail_msg("plan: %d %s", rc, err);
}

__attribute__((unused)) static void no_must_broken(struct fx *f)
{
	uint32_t must, should;
	ha_bal_check(&f->c, NULL, 0, &must, &should);
	assert_int_equal(must, 0);
}

__attribute__((unused)) static const struct ha_bal_move *move_of(const struct fx *f, uint32_t v)
{
	for (uint32_t i = 0; i < f->p.nr_moves; i++)
		if (f->p.moves[i].vm == v)
			return &f->p.moves[i];
	return NULL;
}

__attribute__((unused)) static bool noted(const struct fx *f, uint32_t v, const char *what)
{
	for (uint32_t i = 0; i < f->p.nr_notes; i++)
		if (f->p.notes[i].vm == v && strstr(f->p.notes[i].why, what))
			return true;
	return false;
}

/* h0 loaded (8 VMs of 1500), h1..: empty. */
__attribute__((unused)) static struct fx *skewed(uint32_t nh)
{
	struct fx *f = fx_new(nh);
	for (int i = 0; i < 8; i++)
		vm(f, 0, 1500, 4);
	return f;
}

#endif
