/* The checker (balance.h): rules and memory checked straight from the
 * cluster's arrays, sharing no code with the planner, so tests and the
 * simulator can hold the planner's output against it. */
#include <stdlib.h>

#include "ha/balance/balance.h"

struct acc {
	struct ha_bal_violation *v;
	uint32_t cap, nr_must, nr_should;
};

static void add(struct acc *a, uint32_t vm, uint32_t host, uint32_t rule, bool must)
{
	uint32_t n = a->nr_must + a->nr_should;
	if (n < a->cap)
		a->v[n] = (struct ha_bal_violation){vm, host, rule, must};
	if (must)
		a->nr_must++;
	else
		a->nr_should++;
}

static bool placed(const struct ha_bal_cluster *c, uint32_t v)
{
	uint32_t h = c->vms[v].host;
	return h != HA_BAL_NONE && h < c->nr_hosts && c->hosts[h].alive;
}

static bool in_group(const struct ha_bal_rule *r, uint32_t h)
{
	for (uint32_t i = 0; i < r->nr_hosts; i++)
		if (r->hosts[i] == h)
			return true;
	return false;
}

static void check_rule(const struct ha_bal_cluster *c, uint32_t r, bool must, struct acc *a)
{
	const struct ha_bal_rule *x = &c->rules[r];
	uint32_t first = HA_BAL_NONE; /* affinity: the first placed member's host */
	for (uint32_t i = 0; i < x->nr_vms; i++) {
		uint32_t v = x->vms[i];
		if (!placed(c, v))
			continue;
		uint32_t h = c->vms[v].host;
		switch (x->kind) {
		case HA_BAL_AFFINITY:
			if (!must)
				break;
			if (first == HA_BAL_NONE)
				first = h;
			else if (h != first)
				add(a, v, h, r, true);
			break;
		case HA_BAL_ANTI_AFFINITY:
			if (!must)
				break;
			for (uint32_t j = 0; j < i; j++)
				if (placed(c, x->vms[j]) && c->vms[x->vms[j]].host == h) {
					add(a, v, h, r, true);
					break;
				}
			break;
		case HA_BAL_MUST_RUN_ON:
			if (must && !in_group(x, h))
				add(a, v, h, r, true);
			break;
		case HA_BAL_MUST_NOT_RUN_ON:
			if (must && in_group(x, h))
				add(a, v, h, r, true);
			break;
		case HA_BAL_SHOULD_RUN_ON:
			if (!must && !in_group(x, h))
				add(a, v, h, r, false);
			break;
		case HA_BAL_SHOULD_NOT_RUN_ON:
			if (!must && in_group(x, h))
				add(a, v, h, r, false);
			break;
		}
	}
}

void ha_bal_check(const struct ha_bal_cluster *c, struct ha_bal_violation *v, uint32_t cap,
		  uint32_t *nr_must, uint32_t *nr_should)
{
	struct acc a = {v, v ? cap : 0, 0, 0};
	uint64_t *mem = calloc((size_t)c->nr_hosts + 1, sizeof(*mem));
	if (mem) {
		for (uint32_t i = 0; i < c->nr_vms; i++) {
			const struct ha_bal_vm *x = &c->vms[i];
			if (x->host < c->nr_hosts)
				mem[x->host] += x->mem;
			if (x->migrating_to < c->nr_hosts)
				mem[x->migrating_to] += x->mem;
		}
		for (uint32_t h = 0; h < c->nr_hosts; h++)
			if (c->hosts[h].alive && mem[h] > c->hosts[h].mem_cap)
				add(&a, HA_BAL_NONE, h, HA_BAL_NONE, true);
		free(mem);
	}
	for (int must = 1; must >= 0; must--)
		for (uint32_t r = 0; r < c->nr_rules; r++)
			check_rule(c, r, must, &a);
	*nr_must = a.nr_must;
	*nr_should = a.nr_should;
}

void ha_bal_apply(struct ha_bal_cluster *c, const struct ha_bal_plan *p)
{
	for (uint32_t i = 0; i < p->nr_moves; i++)
		if (p->moves[i].vm < c->nr_vms)
			c->vms[p->moves[i].vm].host = p->moves[i].to;
}
