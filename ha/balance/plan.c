/* One balancing round (balance.h, ha_bal_plan): mandatory moves first
 * (maintenance, must and VM-VM rules, should rules), then greedy
 * balancing by benefit per cost.  docs/balancing.md explains the
 * choices; the model (model.c) makes each candidate O(1). */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ha/balance/bal_priv.h"

struct round {
	struct bal_model m;
	struct ha_bal_plan *p;
	uint32_t budget; /* VM migrations still allowed */
};

static void note(struct round *r, uint32_t vm, uint32_t rule, const char *fmt, ...)
{
	struct ha_bal_plan *p = r->p;
	if (p->nr_notes >= p->cap_notes || !p->notes) {
		p->notes_dropped++;
		return;
	}
	struct ha_bal_note *n = &p->notes[p->nr_notes++];
	n->vm = vm, n->rule = rule;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(n->why, sizeof(n->why), fmt, ap);
	va_end(ap);
}

static uint32_t to_move(const struct round *r, uint32_t u, uint32_t h)
{
	const struct bal_unit *x = &r->m.units[u];
	uint32_t n = 0;
	for (uint32_t i = 0; i < x->n; i++)
		n += r->m.vm_host[r->m.members[x->first + i]] != h;
	return n;
}

/* Emit u's moves to h (the budget was checked). */
static void emit(struct round *r, uint32_t u, uint32_t h, enum ha_bal_reason why, uint32_t rule)
{
	struct bal_model *m = &r->m;
	const struct bal_unit *x = &m->units[u];
	uint32_t start = r->p->nr_moves;
	for (uint32_t i = 0; i < x->n; i++) {
		uint32_t v = m->members[x->first + i];
		if (m->vm_host[v] == h)
			continue;
		r->p->moves[r->p->nr_moves++] = (struct ha_bal_move){
		    .vm = v,
		    .from = m->vm_host[v],
		    .to = h,
		    .reason = why,
		    .rule = rule,
		    .cost = ha_bal_cost(&m->c->vms[v], m->o),
		};
	}
	r->budget -= r->p->nr_moves - start;
	bal_move_unit(m, u, h);
	double s = bal_sigma(m);
	for (uint32_t i = start; i < r->p->nr_moves; i++)
		r->p->moves[i].imbalance_after = s;
}

struct pick {
	uint32_t host; /* HA_BAL_NONE: none yet */
	double load;   /* h's load after the move */
	bool soft;     /* a should rule broken there */
};

/* Is h better for u than p's pick so far?  (Takes it if so.) */
static void consider(const struct bal_model *m, uint32_t u, uint32_t h, bool strict, struct pick *p)
{
	const struct bal_unit *x = &m->units[u];
	uint32_t rule;
	if (x->host == h)
		return;
	enum bal_block b = bal_allowed(m, u, h, &rule);
	if (b != BB_OK && (b != BB_SHOULD || strict))
		return;
	uint64_t cpu = 0, mem = 0; /* what arrives on h */
	for (uint32_t k = 0; k < x->n; k++) {
		uint32_t v = m->members[x->first + k];
		if (m->vm_host[v] != h)
			cpu += m->c->vms[v].cpu, mem += m->c->vms[v].mem;
	}
	double l = bal_host_load(m, h, (int64_t)cpu, (int64_t)mem);
	bool soft = b == BB_SHOULD;
	if (p->host == HA_BAL_NONE || (p->soft && !soft) || (p->soft == soft && l < p->load))
		*p = (struct pick){h, l, soft};
}

/* The best host for a unit that must move: hard rules and memory kept,
 * should rules kept when some host allows (strict: only such hosts),
 * least loaded after the move.  A split affinity group gathers on one of
 * its members' hosts when one is legal (the least to migrate).
 * HA_BAL_NONE: none. */
static uint32_t best_host(const struct round *r, uint32_t u, bool strict)
{
	const struct bal_model *m = &r->m;
	const struct bal_unit *x = &m->units[u];
	struct pick p = {HA_BAL_NONE, 0, false};
	if (x->host == HA_BAL_NONE) {
		for (uint32_t k = 0; k < x->n; k++)
			consider(m, u, m->vm_host[m->members[x->first + k]], strict, &p);
		if (p.host != HA_BAL_NONE)
			return p.host;
	}
	/* Least loaded first: once a host's load before the move is no less
	 * than the best load after, no later host can do better. */
	for (uint32_t i = m->n_elig; i-- > 0;) {
		uint32_t h = m->order[i];
		if (p.host != HA_BAL_NONE && !p.soft && m->load[h] >= p.load)
			break;
		consider(m, u, h, strict, &p);
	}
	return p.host;
}

static const char *host_name(const struct round *r, uint32_t h)
{
	return h == HA_BAL_NONE ? "nowhere" : r->m.c->hosts[h].name;
}

/* Move u off where it is for why/rule; false when the budget ran out. */
static bool mandatory(struct round *r, uint32_t u, enum ha_bal_reason why, uint32_t rule,
		      bool strict)
{
	struct bal_model *m = &r->m;
	struct bal_unit *x = &m->units[u];
	uint32_t v0 = m->members[x->first];
	const char *what = why == HA_BAL_R_MAINTENANCE ? "host in maintenance" : "rule";
	char text[HA_BAL_WHY_MAX];
	if (x->fixed) {
		note(r, v0, rule, "stays on %s (%s%s%s): %s", host_name(r, m->vm_host[v0]), what,
		     rule != HA_BAL_NONE ? " " : "",
		     rule != HA_BAL_NONE ? bal_rule_name(m, rule) : "", x->fixed);
		return true;
	}
	uint32_t h = best_host(r, u, strict);
	if (h == HA_BAL_NONE) {
		bal_why_none(m, u, HA_BAL_NONE, text, sizeof(text));
		note(r, v0, rule, "stays on %s (%s%s%s): %s", host_name(r, m->vm_host[v0]), what,
		     rule != HA_BAL_NONE ? " " : "",
		     rule != HA_BAL_NONE ? bal_rule_name(m, rule) : "", text);
		return true;
	}
	if (to_move(r, u, h) > r->budget) {
		r->p->capped = true;
		return false;
	}
	emit(r, u, h, why, rule);
	return true;
}

static int by_mem_desc(const void *a, const void *b, void *arg)
{
	const struct bal_unit *us = arg;
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
	if (us[x].mem != us[y].mem)
		return us[x].mem > us[y].mem ? -1 : 1;
	return x < y ? -1 : x > y;
}

/* Units with a member on an alive host in maintenance, biggest first
 * (the big ones are the hard ones to fit). */
static int evacuate(struct round *r)
{
	struct bal_model *m = &r->m;
	uint32_t *list = malloc(((size_t)m->nu + 1) * sizeof(*list)), n = 0;
	if (!list)
		return -ENOMEM;
	for (uint32_t u = 0; u < m->nu; u++) {
		const struct bal_unit *x = &m->units[u];
		if (x->lost)
			continue;
		for (uint32_t i = 0; i < x->n; i++) {
			uint32_t h = m->vm_host[m->members[x->first + i]];
			if (m->c->hosts[h].maintenance) {
				list[n++] = u;
				break;
			}
		}
	}
	qsort_r(list, n, sizeof(*list), by_mem_desc, m->units);
	for (uint32_t i = 0; i < n; i++)
		if (!mandatory(r, list[i], HA_BAL_R_MAINTENANCE, HA_BAL_NONE, false))
			break;
	free(list);
	return 0;
}

/* Units breaking a hard rule (soft: a should rule) where they stand. */
static void fix_rules(struct round *r, bool soft)
{
	struct bal_model *m = &r->m;
	for (uint32_t u = 0; u < m->nu && !r->p->capped; u++) {
		const struct bal_unit *x = &m->units[u];
		if (x->lost)
			continue;
		uint32_t rule = HA_BAL_NONE, vm = HA_BAL_NONE;
		enum bal_block b = bal_broken(m, u, &rule, &vm);
		if (b == BB_OK || (b == BB_SHOULD) != soft)
			continue;
		if (soft) {
			/* only to a host that keeps every rule; else it stays, said once */
			uint32_t h = best_host(r, u, true);
			if (h == HA_BAL_NONE || x->fixed) {
				note(r, vm, rule, "stays on %s (should rule %s broken): %s",
				     host_name(r, m->vm_host[vm]), bal_rule_name(m, rule),
				     x->fixed ? x->fixed : "no host keeps every rule");
				continue;
			}
		}
		if (!mandatory(r, u, HA_BAL_R_RULE, rule, soft))
			return;
	}
}

/* One greedy step: the move with the best benefit per cost among the
 * units of the most loaded donors and, for each, the least loaded
 * receivers that take it.  false: no move is worth it. */
static bool balance_step(struct round *r)
{
	struct bal_model *m = &r->m;
	const struct ha_bal_opts *o = m->o;
	double nvar = m->s2 - m->s1 * m->s1 / m->n_elig;
	double best_score = 0;
	uint32_t best_u = HA_BAL_NONE, best_h = HA_BAL_NONE, donors = 0;
	uint32_t scan_max = o->receivers * 8;
	for (uint32_t i = 0; i < m->n_elig && donors < o->donors; i++) {
		uint32_t a = m->order[i];
		bool any = false;
		for (uint32_t u = m->head[a]; u != HA_BAL_NONE; u = m->units[u].next) {
			const struct bal_unit *x = &m->units[u];
			if (x->fixed || x->moved || x->n > r->budget)
				continue;
			uint32_t legal = 0, scanned = 0;
			/* a's side of the sums is the same for every receiver */
			double la = bal_host_load(m, a, -(int64_t)x->cpu, -(int64_t)x->mem);
			double s1a = m->s1 + la - m->load[a];
			double s2a = m->s2 + la * la - m->load[a] * m->load[a];
			for (uint32_t j = m->n_elig - 1;
			     j > i && legal < o->receivers && scanned < scan_max; j--, scanned++) {
				uint32_t b = m->order[j], rule;
				if (m->load[b] >= m->load[a])
					break;
				if (x->plain ? m->mem_used[b] + x->mem > m->c->hosts[b].mem_cap
					     : bal_allowed(m, u, b, &rule) != BB_OK ||
						   bal_recent(m, u, b))
					continue;
				legal++;
				double lb = bal_host_load(m, b, (int64_t)x->cpu, (int64_t)x->mem);
				double s1 = s1a + lb - m->load[b];
				double s2 = s2a + lb * lb - m->load[b] * m->load[b];
				double benefit = nvar - (s2 - s1 * s1 / m->n_elig);
				if (benefit < o->min_benefit)
					continue;
				any = true;
				double score = benefit / (double)x->cost;
				if (score > best_score)
					best_score = score, best_u = u, best_h = b;
			}
		}
		donors += any;
	}
	if (best_u == HA_BAL_NONE)
		return false;
	emit(r, best_u, best_h, HA_BAL_R_BALANCE, HA_BAL_NONE);
	return true;
}

static int check_opts(const struct ha_bal_opts *o, char *err, size_t errlen)
{
	if (!o || o->level < 1 || o->level > 5)
		return snprintf(err, errlen, "options: level must be 1..5"), -EINVAL;
	if (!(o->stop <= o->target) || o->stop < 0 || isnan(o->min_benefit) || o->min_benefit < 0)
		return snprintf(err, errlen, "options: need 0 <= stop <= target, min_benefit >= 0"),
		       -EINVAL;
	if (!o->donors || !o->receivers)
		return snprintf(err, errlen, "options: donors and receivers must be > 0"), -EINVAL;
	return 0;
}

int ha_bal_plan(const struct ha_bal_cluster *c, const struct ha_bal_opts *o, struct ha_bal_plan *p,
		char *err, size_t errlen)
{
	int rc = ha_bal_validate(c, err, errlen);
	if (rc || (rc = check_opts(o, err, errlen)))
		return rc;
	if (!p || (p->cap_moves && !p->moves))
		return snprintf(err, errlen, "plan: no moves array"), -EINVAL;
	p->nr_moves = p->nr_notes = p->notes_dropped = 0;
	p->capped = false;
	struct round r = {.p = p};
	if (bal_model_init(&r.m, c, o, HA_BAL_NONE))
		return snprintf(err, errlen, "plan: out of memory"), -ENOMEM;
	p->imbalance_before = bal_sigma(&r.m);
	uint32_t in_flight = 0;
	for (uint32_t v = 0; v < c->nr_vms; v++)
		in_flight += c->vms[v].migrating_to != HA_BAL_NONE;
	r.budget = p->cap_moves;
	if (o->max_moves && o->max_moves < r.budget)
		r.budget = o->max_moves;
	if (o->max_concurrent)
		r.budget = in_flight >= o->max_concurrent ? 0
			   : o->max_concurrent - in_flight < r.budget
			       ? o->max_concurrent - in_flight
			       : r.budget;
	rc = evacuate(&r);
	if (!rc && !p->capped)
		fix_rules(&r, false);
	if (!rc && !p->capped)
		fix_rules(&r, true);
	double s = bal_sigma(&r.m);
	if (!rc && !p->capped && r.m.n_elig >= 2 && (s > o->target || (o->resume && s > o->stop))) {
		while (s > o->stop) {
			if (!r.budget) {
				p->capped = true;
				break;
			}
			if (!balance_step(&r))
				break;
			s = bal_sigma(&r.m);
		}
	}
	p->imbalance_after = bal_sigma(&r.m);
	bal_model_free(&r.m);
	if (rc)
		snprintf(err, errlen, "plan: out of memory");
	return rc;
}
