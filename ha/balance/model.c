/* The cluster indexed for one round (bal_priv.h): units of affinity by
 * union-find, per-host usage and load, running sums for an O(1) variance
 * after a move, hosts kept sorted by load.  Also the public helpers that
 * need nothing else: options by level, validation, imbalance, cost. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ha/balance/bal_priv.h"

/* Threshold levels (docs/balancing.md): imbalance that starts balancing,
 * the level balancing goes down to, and the least benefit of one move
 * (in n * variance: independent of the number of hosts). */
static const struct {
	double target, stop, min_benefit;
} levels[6] = {
    [1] = {INFINITY, INFINITY, INFINITY}, [2] = {0.20, 0.15, 0.004},   [3] = {0.10, 0.075, 0.002},
    [4] = {0.05, 0.0375, 0.001},	  [5] = {0.02, 0.015, 0.0005},
};

int ha_bal_opts_init(struct ha_bal_opts *o, unsigned level)
{
	if (level < 1 || level > 5)
		return -EINVAL;
	*o = (struct ha_bal_opts){
	    .level = level,
	    .target = levels[level].target,
	    .stop = levels[level].stop,
	    .min_benefit = levels[level].min_benefit,
	    .max_moves = 0,
	    .max_concurrent = 0,
	    .link_bps = 1250000000ULL,	   /* 10 Gbit/s */
	    .move_overhead = 256ULL << 20, /* set-up, downtime, risk: as 256 MiB sent */
	    .donors = 1,
	    .receivers = 4,
	};
	return 0;
}

uint64_t ha_bal_cost(const struct ha_bal_vm *vm, const struct ha_bal_opts *o)
{
	/* Pre-copy sends the RAM, then what was dirtied meanwhile, and so on:
	 * mem * (1 + r + r^2 ...) = mem / (1 - r), r = dirty rate / link.  A
	 * VM dirtying near the link's speed only converges by throttling or
	 * post-copy: r is capped at 0.9 (10x its RAM). */
	double r = o->link_bps ? (double)vm->dirty_rate / (double)o->link_bps : 0;
	if (r > 0.9)
		r = 0.9;
	return (uint64_t)((double)vm->mem / (1.0 - r)) + o->move_overhead;
}

const char *ha_bal_reason_name(enum ha_bal_reason r)
{
	switch (r) {
	case HA_BAL_R_MAINTENANCE:
		return "maintenance";
	case HA_BAL_R_RULE:
		return "rule";
	case HA_BAL_R_BALANCE:
		return "balance";
	}
	return "?";
}

#define BAD(...) (snprintf(err, errlen, __VA_ARGS__), -EINVAL)

static int check_rule(const struct ha_bal_cluster *c, uint32_t r, uint32_t *seen, char *err,
		      size_t errlen)
{
	const struct ha_bal_rule *x = &c->rules[r];
	if (!x->name)
		return BAD("rule %u: no name", r);
	if ((unsigned)x->kind > HA_BAL_SHOULD_NOT_RUN_ON)
		return BAD("rule %s: unknown kind %d", x->name, (int)x->kind);
	if (x->nr_vms && !x->vms)
		return BAD("rule %s: no VM array", x->name);
	if (x->nr_hosts && !x->hosts)
		return BAD("rule %s: no host array", x->name);
	if ((x->kind == HA_BAL_MUST_RUN_ON || x->kind == HA_BAL_SHOULD_RUN_ON) && !x->nr_hosts)
		return BAD("rule %s: an empty host group", x->name);
	for (uint32_t i = 0; i < x->nr_vms; i++) {
		if (x->vms[i] >= c->nr_vms)
			return BAD("rule %s: vm index %u out of range", x->name, x->vms[i]);
		if (seen[x->vms[i]] == r + 1)
			return BAD("rule %s: vm %s listed twice", x->name, c->vms[x->vms[i]].name);
		seen[x->vms[i]] = r + 1;
	}
	for (uint32_t i = 0; i < x->nr_hosts; i++)
		if (x->hosts[i] >= c->nr_hosts)
			return BAD("rule %s: host index %u out of range", x->name, x->hosts[i]);
	return 0;
}

int ha_bal_validate(const struct ha_bal_cluster *c, char *err, size_t errlen)
{
	if (!c || (c->nr_hosts && !c->hosts) || (c->nr_vms && !c->vms) ||
	    (c->nr_rules && !c->rules) || (c->nr_recent && !c->recent))
		return BAD("cluster: an array is missing");
	if (c->nr_hosts >= HA_BAL_NONE || c->nr_vms >= HA_BAL_NONE)
		return BAD("cluster: too many hosts or VMs");
	for (uint32_t h = 0; h < c->nr_hosts; h++) {
		const struct ha_bal_host *x = &c->hosts[h];
		if (!x->name)
			return BAD("host %u: no name", h);
		if (!x->cpu_cap || !x->mem_cap)
			return BAD("host %s: zero cpu or memory capacity", x->name);
	}
	for (uint32_t v = 0; v < c->nr_vms; v++) {
		const struct ha_bal_vm *x = &c->vms[v];
		if (!x->name)
			return BAD("vm %u: no name", v);
		if (x->host != HA_BAL_NONE && x->host >= c->nr_hosts)
			return BAD("vm %s: host %u out of range", x->name, x->host);
		if (x->migrating_to != HA_BAL_NONE &&
		    (x->migrating_to >= c->nr_hosts || x->migrating_to == x->host))
			return BAD("vm %s: migrating_to %u is not another host", x->name,
				   x->migrating_to);
	}
	/* seen[v] = 1 + the last rule that listed v: a VM twice in one rule is
	 * a mistake (and would make an anti-affinity rule clash with itself) */
	uint32_t *seen = calloc((size_t)c->nr_vms + 1, sizeof(*seen));
	if (!seen)
		return snprintf(err, errlen, "cluster: out of memory"), -ENOMEM;
	int rc = 0;
	for (uint32_t r = 0; r < c->nr_rules && !rc; r++)
		rc = check_rule(c, r, seen, err, errlen);
	free(seen);
	if (rc)
		return rc;
	for (uint32_t i = 0; i < c->nr_recent; i++)
		if (c->recent[i].vm >= c->nr_vms || c->recent[i].host >= c->nr_hosts)
			return BAD("recent move %u: vm %u or host %u out of range", i,
				   c->recent[i].vm, c->recent[i].host);
	return 0;
}
#undef BAD

static double load_of(const struct ha_bal_host *h, uint64_t cpu, uint64_t mem)
{
	double a = (double)cpu / (double)h->cpu_cap, b = (double)mem / (double)h->mem_cap;
	return a > b ? a : b;
}

double ha_bal_imbalance(const struct ha_bal_cluster *c)
{
	uint64_t *use = calloc(2 * (size_t)c->nr_hosts + 1, sizeof(*use));
	if (!use)
		return NAN;
	for (uint32_t v = 0; v < c->nr_vms; v++) {
		const struct ha_bal_vm *x = &c->vms[v];
		uint32_t hs[2] = {x->host, x->migrating_to};
		for (int k = 0; k < 2; k++)
			if (hs[k] != HA_BAL_NONE) {
				use[2 * hs[k]] += x->cpu;
				use[2 * hs[k] + 1] += x->mem;
			}
	}
	double s1 = 0, s2 = 0;
	uint32_t n = 0;
	for (uint32_t h = 0; h < c->nr_hosts; h++)
		if (c->hosts[h].alive && !c->hosts[h].maintenance) {
			double l = load_of(&c->hosts[h], use[2 * h], use[2 * h + 1]);
			s1 += l, s2 += l * l, n++;
		}
	free(use);
	if (n < 2)
		return 0;
	double var = s2 / n - (s1 / n) * (s1 / n);
	return var > 0 ? sqrt(var) : 0;
}

/* ---- the model ---- */

static uint32_t find(uint32_t *parent, uint32_t x)
{
	while (parent[x] != x)
		x = parent[x] = parent[parent[x]];
	return x;
}

void bal_model_free(struct bal_model *m)
{
	void *ps[] = {m->cpu_used, m->mem_used, m->load,  m->elig,   m->vm_host,  m->vm_unit,
		      m->members,  m->units,	m->head,  m->vr_off, m->vr,	  m->rc_off,
		      m->rc,	   m->bits,	m->order, m->pos,    m->anti_row, m->anti_cnt};
	for (size_t i = 0; i < sizeof(ps) / sizeof(ps[0]); i++)
		free(ps[i]);
	memset(m, 0, sizeof(*m));
}

double bal_host_load(const struct bal_model *m, uint32_t h, int64_t dcpu, int64_t dmem)
{
	return load_of(&m->c->hosts[h], m->cpu_used[h] + (uint64_t)dcpu,
		       m->mem_used[h] + (uint64_t)dmem);
}

double bal_sigma(const struct bal_model *m)
{
	if (m->n_elig < 2)
		return 0;
	double var = m->s2 / m->n_elig - (m->s1 / m->n_elig) * (m->s1 / m->n_elig);
	return var > 0 ? sqrt(var) : 0;
}

bool bal_in_group(const struct bal_model *m, uint32_t rule, uint32_t h)
{
	return m->bits[rule * m->stride + h / 8] & (1u << (h % 8));
}

/* Keep order[] sorted (load descending, index ascending) after h's load changed. */
static bool before(const struct bal_model *m, uint32_t a, uint32_t b)
{
	return m->load[a] > m->load[b] || (m->load[a] == m->load[b] && a < b);
}

static void reposition(struct bal_model *m, uint32_t h)
{
	uint32_t i = m->pos[h];
	while (i > 0 && before(m, h, m->order[i - 1])) {
		m->order[i] = m->order[i - 1];
		m->pos[m->order[i]] = i;
		i--;
	}
	while (i + 1 < m->n_elig && before(m, m->order[i + 1], h)) {
		m->order[i] = m->order[i + 1];
		m->pos[m->order[i]] = i;
		i++;
	}
	m->order[i] = h;
	m->pos[h] = i;
}

static void set_usage(struct bal_model *m, uint32_t h, int64_t dcpu, int64_t dmem)
{
	m->cpu_used[h] += (uint64_t)dcpu;
	m->mem_used[h] += (uint64_t)dmem;
	double l = bal_host_load(m, h, 0, 0);
	if (m->elig[h]) {
		m->s1 += l - m->load[h];
		m->s2 += l * l - m->load[h] * m->load[h];
		m->load[h] = l;
		reposition(m, h);
	} else {
		m->load[h] = l;
	}
}

static void unlink_unit(struct bal_model *m, uint32_t u)
{
	struct bal_unit *x = &m->units[u];
	if (x->host == HA_BAL_NONE)
		return;
	if (x->prev != HA_BAL_NONE)
		m->units[x->prev].next = x->next;
	else
		m->head[x->host] = x->next;
	if (x->next != HA_BAL_NONE)
		m->units[x->next].prev = x->prev;
	x->next = x->prev = HA_BAL_NONE;
}

static void link_unit(struct bal_model *m, uint32_t u, uint32_t h)
{
	struct bal_unit *x = &m->units[u];
	x->host = h;
	x->prev = HA_BAL_NONE;
	x->next = m->head[h];
	if (x->next != HA_BAL_NONE)
		m->units[x->next].prev = u;
	m->head[h] = u;
}

void bal_move_unit(struct bal_model *m, uint32_t u, uint32_t h)
{
	struct bal_unit *x = &m->units[u];
	unlink_unit(m, u);
	for (uint32_t i = 0; i < x->n; i++) {
		uint32_t v = m->members[x->first + i];
		const struct ha_bal_vm *vm = &m->c->vms[v];
		if (m->vm_host[v] == h)
			continue;
		set_usage(m, m->vm_host[v], -(int64_t)vm->cpu, -(int64_t)vm->mem);
		set_usage(m, h, (int64_t)vm->cpu, (int64_t)vm->mem);
		for (uint32_t k = m->vr_off[v]; k < m->vr_off[v + 1]; k++) {
			uint32_t row = m->anti_row[m->vr[k]];
			if (row != HA_BAL_NONE) {
				m->anti_cnt[(size_t)row * m->nh + m->vm_host[v]]--;
				m->anti_cnt[(size_t)row * m->nh + h]++;
			}
		}
		m->vm_host[v] = h;
	}
	link_unit(m, u, h);
	x->moved = true;
}

/* CSR of pairs (key, value) with keys < nkeys: off[nkeys + 1], val[n]. */
static int csr(uint32_t nkeys, size_t n, const uint32_t *keys, const uint32_t *vals, uint32_t **off,
	       uint32_t **val)
{
	*off = calloc((size_t)nkeys + 1, sizeof(**off));
	*val = malloc((n ? n : 1) * sizeof(**val));
	if (!*off || !*val)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++)
		(*off)[keys[i] + 1]++;
	for (uint32_t k = 0; k < nkeys; k++)
		(*off)[k + 1] += (*off)[k];
	uint32_t *fill = malloc(((size_t)nkeys + 1) * sizeof(*fill));
	if (!fill)
		return -ENOMEM;
	memcpy(fill, *off, ((size_t)nkeys + 1) * sizeof(*fill));
	for (size_t i = 0; i < n; i++) /* in input order: deterministic */
		(*val)[fill[keys[i]]++] = vals[i];
	free(fill);
	return 0;
}

static int index_rules(struct bal_model *m)
{
	const struct ha_bal_cluster *c = m->c;
	size_t n = 0;
	for (uint32_t r = 0; r < c->nr_rules; r++)
		n += c->rules[r].nr_vms;
	uint32_t *keys = malloc((n ? n : 1) * sizeof(*keys)),
		 *vals = malloc((n ? n : 1) * sizeof(*vals));
	int rc = -ENOMEM;
	if (keys && vals) {
		size_t k = 0;
		for (uint32_t r = 0; r < c->nr_rules; r++)
			for (uint32_t i = 0; i < c->rules[r].nr_vms; i++)
				keys[k] = c->rules[r].vms[i], vals[k++] = r;
		rc = csr(m->nv, n, keys, vals, &m->vr_off, &m->vr);
	}
	free(keys), free(vals);
	if (rc)
		return rc;
	uint32_t *hk = malloc((c->nr_recent + 1) * sizeof(*hk));
	uint32_t *hv = malloc((c->nr_recent + 1) * sizeof(*hv));
	rc = -ENOMEM;
	if (hk && hv) {
		for (uint32_t i = 0; i < c->nr_recent; i++)
			hk[i] = c->recent[i].vm, hv[i] = c->recent[i].host;
		rc = csr(m->nv, c->nr_recent, hk, hv, &m->rc_off, &m->rc);
	}
	free(hk), free(hv);
	if (rc)
		return rc;
	m->stride = (m->nh + 7) / 8;
	m->bits = calloc((size_t)(c->nr_rules ? c->nr_rules : 1) * m->stride + 1, 1);
	if (!m->bits)
		return -ENOMEM;
	/* per-host member counts for the big anti-affinity rules */
	uint32_t rows = 0;
	m->anti_row = malloc(((size_t)c->nr_rules + 1) * sizeof(*m->anti_row));
	if (!m->anti_row)
		return -ENOMEM;
	for (uint32_t r = 0; r < c->nr_rules; r++)
		m->anti_row[r] =
		    c->rules[r].kind == HA_BAL_ANTI_AFFINITY && c->rules[r].nr_vms > BAL_ANTI_SCAN
			? rows++
			: HA_BAL_NONE;
	m->anti_cnt = calloc((size_t)rows * m->nh + 1, sizeof(*m->anti_cnt));
	if (!m->anti_cnt)
		return -ENOMEM;
	for (uint32_t r = 0; r < c->nr_rules; r++)
		for (uint32_t i = 0; m->anti_row[r] != HA_BAL_NONE && i < c->rules[r].nr_vms; i++) {
			uint32_t h = m->vm_host[c->rules[r].vms[i]];
			if (h != HA_BAL_NONE)
				m->anti_cnt[(size_t)m->anti_row[r] * m->nh + h]++;
		}
	for (uint32_t r = 0; r < c->nr_rules; r++)
		for (uint32_t i = 0; i < c->rules[r].nr_hosts; i++) {
			uint32_t h = c->rules[r].hosts[i];
			m->bits[r * m->stride + h / 8] |= (uint8_t)(1u << (h % 8));
		}
	return 0;
}

/* Units: union-find over affinity rules, members grouped per unit. */
static int build_units(struct bal_model *m)
{
	const struct ha_bal_cluster *c = m->c;
	uint32_t *parent = malloc(((size_t)m->nv + 1) * sizeof(*parent));
	if (!parent)
		return -ENOMEM;
	for (uint32_t v = 0; v < m->nv; v++)
		parent[v] = v;
	for (uint32_t r = 0; r < c->nr_rules; r++) {
		const struct ha_bal_rule *x = &c->rules[r];
		if (x->kind != HA_BAL_AFFINITY)
			continue;
		for (uint32_t i = 1; i < x->nr_vms; i++) {
			uint32_t a = find(parent, x->vms[0]), b = find(parent, x->vms[i]);
			if (a != b) /* the lower index is the root: deterministic */
				parent[a > b ? a : b] = a > b ? b : a;
		}
	}
	m->vm_unit = malloc(((size_t)m->nv + 1) * sizeof(*m->vm_unit));
	m->members = malloc(((size_t)m->nv + 1) * sizeof(*m->members));
	m->units = calloc((size_t)m->nv + 1, sizeof(*m->units));
	uint32_t *root_unit = malloc(((size_t)m->nv + 1) * sizeof(*root_unit));
	if (!m->vm_unit || !m->members || !m->units || !root_unit) {
		free(parent), free(root_unit);
		return -ENOMEM;
	}
	m->nu = 0;
	for (uint32_t v = 0; v < m->nv; v++)
		if (find(parent, v) == v)
			root_unit[v] = m->nu++;
	for (uint32_t v = 0; v < m->nv; v++)
		m->vm_unit[v] = root_unit[find(parent, v)];
	free(parent), free(root_unit);
	for (uint32_t v = 0; v < m->nv; v++)
		m->units[m->vm_unit[v]].n++;
	for (uint32_t u = 0, at = 0; u < m->nu; u++) {
		m->units[u].first = at;
		at += m->units[u].n;
		m->units[u].n = 0;
		m->units[u].host = m->units[u].next = m->units[u].prev = HA_BAL_NONE;
	}
	for (uint32_t v = 0; v < m->nv; v++) {
		struct bal_unit *x = &m->units[m->vm_unit[v]];
		const struct ha_bal_vm *vm = &c->vms[v];
		uint32_t h = m->vm_host[v];
		if (x->n == 0)
			x->host = h;
		else if (x->host != h)
			x->host = HA_BAL_NONE;
		m->members[x->first + x->n++] = v;
		x->cpu += vm->cpu, x->mem += vm->mem, x->cost += ha_bal_cost(vm, m->o);
		if (h == HA_BAL_NONE || !c->hosts[h].alive)
			x->lost = true;
		if (vm->pinned && !x->fixed)
			x->fixed = vm->pinned;
		if (vm->migrating_to != HA_BAL_NONE && !x->fixed)
			x->fixed = "a migration is in flight";
	}
	for (uint32_t u = 0; u < m->nu; u++) {
		struct bal_unit *x = &m->units[u];
		uint32_t v = m->members[x->first];
		x->plain = x->n == 1 && m->vr_off[v] == m->vr_off[v + 1] &&
			   m->rc_off[v] == m->rc_off[v + 1];
	}
	for (uint32_t u = m->nu; u-- > 0;) /* lists in index order */
		if (m->units[u].lost)
			m->units[u].host = HA_BAL_NONE;
		else if (m->units[u].host != HA_BAL_NONE)
			link_unit(m, u, m->units[u].host);
	return 0;
}

int bal_model_init(struct bal_model *m, const struct ha_bal_cluster *c, const struct ha_bal_opts *o,
		   uint32_t skip_vm)
{
	memset(m, 0, sizeof(*m));
	m->c = c, m->o = o, m->nh = c->nr_hosts, m->nv = c->nr_vms;
	size_t nh = (size_t)m->nh + 1, nv = (size_t)m->nv + 1;
	m->cpu_used = calloc(nh, sizeof(*m->cpu_used));
	m->mem_used = calloc(nh, sizeof(*m->mem_used));
	m->load = calloc(nh, sizeof(*m->load));
	m->elig = calloc(nh, 1);
	m->head = malloc(nh * sizeof(*m->head));
	m->order = malloc(nh * sizeof(*m->order));
	m->pos = malloc(nh * sizeof(*m->pos));
	m->vm_host = malloc(nv * sizeof(*m->vm_host));
	if (!m->cpu_used || !m->mem_used || !m->load || !m->elig || !m->head || !m->order ||
	    !m->pos || !m->vm_host)
		goto oom;
	for (uint32_t h = 0; h < m->nh; h++) {
		m->head[h] = HA_BAL_NONE;
		m->elig[h] = c->hosts[h].alive && !c->hosts[h].maintenance;
	}
	for (uint32_t v = 0; v < m->nv; v++) {
		const struct ha_bal_vm *x = &c->vms[v];
		m->vm_host[v] = v == skip_vm ? HA_BAL_NONE : x->host;
		uint32_t hs[2] = {m->vm_host[v], v == skip_vm ? HA_BAL_NONE : x->migrating_to};
		for (int k = 0; k < 2; k++)
			if (hs[k] != HA_BAL_NONE)
				m->cpu_used[hs[k]] += x->cpu, m->mem_used[hs[k]] += x->mem;
	}
	for (uint32_t h = 0; h < m->nh; h++) {
		m->load[h] = bal_host_load(m, h, 0, 0);
		if (m->elig[h]) {
			m->order[m->n_elig++] = h;
			m->s1 += m->load[h], m->s2 += m->load[h] * m->load[h];
		}
	}
	/* insertion sort: O(n^2) moves at worst, ~1 ms at 1000 hosts */
	for (uint32_t i = 1; i < m->n_elig; i++) {
		uint32_t h = m->order[i], j = i;
		for (; j > 0 && before(m, h, m->order[j - 1]); j--)
			m->order[j] = m->order[j - 1];
		m->order[j] = h;
	}
	for (uint32_t i = 0; i < m->n_elig; i++)
		m->pos[m->order[i]] = i;
	if (index_rules(m) || build_units(m))
		goto oom;
	return 0;
oom:
	bal_model_free(m);
	return -ENOMEM;
}
