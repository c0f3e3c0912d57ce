/* The balancer's model (balancer.h): the cluster as ha/balance/ sees it,
 * built from one etcd revision and the VM files' rules.  Pure: no etcd
 * calls, no clock, so every host that builds it from the same revision
 * gets the same model (placement's determinism rests on that), and the
 * unit test (tests/unit/test_ha_balmodel.c) feeds it JSON by hand. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ha/emberd/balancer.h"

static const char *const kinds[] = {
    [HA_BAL_AFFINITY] = "affinity",	      [HA_BAL_ANTI_AFFINITY] = "anti-affinity",
    [HA_BAL_MUST_RUN_ON] = "must-run-on",     [HA_BAL_MUST_NOT_RUN_ON] = "must-not-run-on",
    [HA_BAL_SHOULD_RUN_ON] = "should-run-on", [HA_BAL_SHOULD_NOT_RUN_ON] = "should-not-run-on",
};

const char *bm_kind_name(enum ha_bal_kind k)
{
	return (unsigned)k < sizeof(kinds) / sizeof(kinds[0]) ? kinds[k] : NULL;
}

static bool is_name(const char *s)
{
	size_t n = strlen(s);
	return n && n < ED_NAME_MAX &&
	       strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-") == n;
}

/* A list of names: "what" for messages. */
static int check_names(json_t *a, const char *what, bool need, char *err, size_t errlen)
{
	if (!a && !need)
		return 0;
	if (!json_is_array(a) || (need && !json_array_size(a)))
		return snprintf(err, errlen, "\"%s\": expected a non-empty list of names", what),
		       -EINVAL;
	size_t i;
	json_t *x;
	json_array_foreach(a, i, x)
	{
		if (!json_is_string(x) || !is_name(json_string_value(x)))
			return snprintf(err, errlen, "\"%s\"[%zu]: not a name ([A-Za-z0-9-])", what,
					i),
			       -EINVAL;
	}
	return 0;
}

int bm_rule_check(const char *js, enum ha_bal_kind *kind, char *err, size_t errlen)
{
	json_error_t je;
	json_t *j = json_loads(js, 0, &je);
	int r = -EINVAL;
	if (!json_is_object(j)) {
		snprintf(err, errlen, "not a JSON object (%s)", j ? "wrong type" : je.text);
		goto out;
	}
	const char *k = json_string_value(json_object_get(j, "kind"));
	int ki = -1;
	for (size_t i = 0; k && i < sizeof(kinds) / sizeof(kinds[0]); i++)
		if (!strcmp(k, kinds[i]))
			ki = (int)i;
	if (ki < 0) {
		snprintf(err, errlen,
			 "\"kind\": expected affinity, anti-affinity, must-run-on, "
			 "must-not-run-on, should-run-on or should-not-run-on");
		goto out;
	}
	bool vm_host = ki >= HA_BAL_MUST_RUN_ON;
	if (check_names(json_object_get(j, "vms"), "vms", true, err, errlen) ||
	    check_names(json_object_get(j, "hosts"), "hosts", vm_host, err, errlen))
		goto out;
	if (!vm_host && json_array_size(json_object_get(j, "hosts"))) {
		snprintf(err, errlen, "\"hosts\": %s rules name VMs only", kinds[ki]);
		goto out;
	}
	*kind = (enum ha_bal_kind)ki;
	r = 0;
out:
	json_decref(j);
	return r;
}

void bm_reads(char keys[BM_NR][64], struct ha_etcd_op reads[BM_NR])
{
	static const char *const what[BM_NR] = {"hosts", "load",  "owner", "maint",
						"rules", "moves", "state"};
	for (int i = 0; i < BM_NR; i++) {
		snprintf(keys[i], 64, CL_PREFIX "%s/", what[i]);
		reads[i] = (struct ha_etcd_op){HA_ETCD_RANGE, keys[i], NULL, 0, true};
	}
}

/* ---- building ---- */

struct build {
	struct bm_model *m;
	const struct ha_etcd_range *r;
	uint32_t cap_hosts, cap_rules;
	struct ha_bal_rule *rules;
	bool oom;
};

static void *keep(struct bm_model *m, void *p)
{
	void **a = p ? realloc(m->allocs, (m->nallocs + 1) * sizeof(*a)) : NULL;
	if (!a) {
		free(p);
		return NULL;
	}
	m->allocs = a;
	a[m->nallocs++] = p;
	return p;
}

static const char *tail(const char *key, const char *kind)
{
	size_t n = strlen(CL_PREFIX) + strlen(kind) + 1;
	return strlen(key) > n ? key + n : "";
}

static const struct ha_etcd_kv *find(const struct ha_etcd_range *r, const char *kind,
				     const char *name)
{
	char key[160];
	cl_key(key, sizeof(key), kind, name);
	return ha_etcd_range_find(r, key);
}

uint32_t bm_host(const struct bm_model *m, const char *name)
{
	for (uint32_t i = 0; i < m->c.nr_hosts; i++)
		if (!strcmp(m->c.hosts[i].name, name))
			return i;
	return HA_BAL_NONE;
}

static uint32_t vm_index(const struct bm_model *m, const char *name)
{
	for (uint32_t i = 0; i < m->c.nr_vms; i++)
		if (!strcmp(m->c.vms[i].name, name))
			return i;
	return HA_BAL_NONE;
}

/* The host's index, added dead when a rule names a host not alive. */
static uint32_t host_or_dead(struct build *b, const char *name)
{
	struct bm_model *m = b->m;
	uint32_t h = bm_host(m, name);
	if (h != HA_BAL_NONE)
		return h;
	if (m->c.nr_hosts == b->cap_hosts) {
		b->oom = true; /* the caller sized cap_hosts for every name */
		return HA_BAL_NONE;
	}
	char *dup = keep(m, strdup(name));
	if (!dup) {
		b->oom = true;
		return HA_BAL_NONE;
	}
	m->c.hosts[m->c.nr_hosts] = (struct ha_bal_host){dup, 1, 1, false, false};
	return m->c.nr_hosts++;
}

static struct ha_bal_rule *new_rule(struct build *b, const char *name, enum ha_bal_kind k)
{
	if (b->m->c.nr_rules == b->cap_rules) {
		uint32_t cap = b->cap_rules ? b->cap_rules * 2 : 16;
		struct ha_bal_rule *n = realloc(b->rules, cap * sizeof(*n));
		if (!n) {
			b->oom = true;
			return NULL;
		}
		b->rules = n;
		b->cap_rules = cap;
		b->m->c.rules = n;
	}
	char *dup = keep(b->m, strdup(name));
	if (!dup) {
		b->oom = true;
		return NULL;
	}
	struct ha_bal_rule *x = &b->rules[b->m->c.nr_rules++];
	*x = (struct ha_bal_rule){.name = dup, .kind = k};
	return x;
}

/* A VM file's host list as a rule over vm. */
static void file_rule(struct build *b, uint32_t vm, const char *key, enum ha_bal_kind k,
		      char *const *list)
{
	size_t n = 0;
	while (list && list[n])
		n++;
	if (!n)
		return;
	char name[ED_NAME_MAX + 32];
	snprintf(name, sizeof(name), "%s %s", b->m->c.vms[vm].name, key);
	struct ha_bal_rule *x = new_rule(b, name, k);
	uint32_t *vms = x ? keep(b->m, malloc(sizeof(*vms))) : NULL;
	uint32_t *hosts = vms ? keep(b->m, calloc(n, sizeof(*hosts))) : NULL;
	if (!hosts) {
		b->oom = true;
		return;
	}
	vms[0] = vm;
	uint32_t nh = 0;
	for (size_t i = 0; i < n; i++) {
		uint32_t h = host_or_dead(b, list[i]);
		bool dup = false;
		for (uint32_t j = 0; j < nh; j++)
			dup |= hosts[j] == h;
		if (h != HA_BAL_NONE && !dup)
			hosts[nh++] = h;
	}
	x = &b->rules[b->m->c.nr_rules - 1];
	*x = (struct ha_bal_rule){x->name, k, vms, 1, hosts, nh};
}

/* One rule per affinity (anti) group name, in the order first seen. */
static void group_rules(struct build *b, const struct cl_spec *specs, bool anti)
{
	struct bm_model *m = b->m;
	for (uint32_t v = 0; v < m->c.nr_vms; v++) {
		const char *g = anti ? specs[v].anti_affinity : specs[v].affinity;
		bool first = *g;
		for (uint32_t u = 0; first && u < v; u++)
			first = strcmp(anti ? specs[u].anti_affinity : specs[u].affinity, g) != 0;
		if (!first)
			continue;
		uint32_t *vms = keep(m, calloc(m->c.nr_vms, sizeof(*vms)));
		char name[ED_NAME_MAX + 32];
		snprintf(name, sizeof(name), "%s %s", anti ? "anti_affinity" : "affinity", g);
		struct ha_bal_rule *x =
		    vms ? new_rule(b, name, anti ? HA_BAL_ANTI_AFFINITY : HA_BAL_AFFINITY) : NULL;
		if (!x) {
			b->oom = true;
			return;
		}
		for (uint32_t u = v; u < m->c.nr_vms; u++)
			if (!strcmp(anti ? specs[u].anti_affinity : specs[u].affinity, g))
				vms[x->nr_vms++] = u;
		x->vms = vms;
	}
}

/* rules/<name>: checked, then its VMs (unknown ones left out) and hosts. */
static void cluster_rule(struct build *b, const struct ha_etcd_kv *kv)
{
	struct bm_model *m = b->m;
	const char *name = tail(kv->key, "rules");
	enum ha_bal_kind k;
	char err[256];
	if (bm_rule_check(kv->value, &k, err, sizeof(err))) {
		if (!m->warn[0])
			snprintf(m->warn, sizeof(m->warn), "rules/%s: %s: skipped", name, err);
		return;
	}
	json_t *j = json_loads(kv->value, 0, NULL);
	json_t *jv = json_object_get(j, "vms"), *jh = json_object_get(j, "hosts");
	uint32_t *vms = keep(m, calloc(json_array_size(jv) + 1, sizeof(*vms)));
	uint32_t *hosts = keep(m, calloc(json_array_size(jh) + 1, sizeof(*hosts)));
	uint32_t nv = 0, nh = 0;
	size_t i;
	json_t *x;
	json_array_foreach(jv, i, x)
	{
		uint32_t v = vm_index(m, json_string_value(x));
		bool dup = false;
		for (uint32_t u = 0; vms && u < nv; u++)
			dup |= vms[u] == v;
		if (vms && v != HA_BAL_NONE && !dup)
			vms[nv++] = v;
	}
	json_array_foreach(jh, i, x)
	{
		uint32_t h = host_or_dead(b, json_string_value(x));
		bool dup = false;
		for (uint32_t u = 0; hosts && u < nh; u++)
			dup |= hosts[u] == h;
		if (hosts && h != HA_BAL_NONE && !dup)
			hosts[nh++] = h;
	}
	json_decref(j);
	if (!vms || !hosts) {
		b->oom = true;
		return;
	}
	char rn[ED_NAME_MAX + 16];
	snprintf(rn, sizeof(rn), "rule %s", name);
	struct ha_bal_rule *r = nv ? new_rule(b, rn, k) : NULL;
	if (r) {
		r->vms = vms;
		r->nr_vms = nv;
		r->hosts = hosts;
		r->nr_hosts = nh;
	}
}

static uint64_t jint(json_t *o, const char *k)
{
	json_int_t v = json_integer_value(json_object_get(o, k));
	return v > 0 ? (uint64_t)v : 0;
}

/* Hosts from hosts/, with maint/ and load/. */
static void add_hosts(struct build *b)
{
	struct bm_model *m = b->m;
	const struct ha_etcd_range *hr = &b->r[BM_HOSTS];
	for (size_t i = 0; i < hr->n; i++) {
		const char *name = tail(hr->kvs[i].key, "hosts");
		json_t *info = json_loads(hr->kvs[i].value, 0, NULL);
		const struct ha_etcd_kv *lk = find(&b->r[BM_LOAD], "load", name);
		json_t *load = lk ? json_loads(lk->value, 0, NULL) : NULL;
		uint64_t cpu = jint(load, "cpu_capacity_m");
		if (!cpu)
			cpu = 1000 * jint(info, "vcpus_capacity");
		uint64_t mem = jint(info, "mem_capacity");
		m->c.hosts[m->c.nr_hosts++] =
		    (struct ha_bal_host){name, cpu ? cpu : 1000, mem ? mem : 1, true,
					 find(&b->r[BM_MAINT], "maint", name) != NULL};
		json_decref(info);
		json_decref(load);
	}
}

/* VMs from the specs: where they run, their load, their move in flight. */
static void add_vms(struct build *b, const struct cl_spec *specs, size_t n)
{
	struct bm_model *m = b->m;
	for (size_t i = 0; i < n; i++) {
		struct ha_bal_vm *v = &m->c.vms[m->c.nr_vms++];
		*v = (struct ha_bal_vm){.name = specs[i].name,
					.host = HA_BAL_NONE,
					.mem = specs[i].mem,
					.migrating_to = HA_BAL_NONE};
		const struct ha_etcd_kv *st = find(&b->r[BM_STATE], "state", v->name);
		if (st && !strcmp(st->value, "stopped")) {
			v->mem = 0; /* stopped by the user: takes no room */
			continue;
		}
		const struct ha_etcd_kv *ow = find(&b->r[BM_OWNER], "owner", v->name);
		uint32_t h = ow ? bm_host(m, ow->value) : HA_BAL_NONE;
		if (h == HA_BAL_NONE)
			continue;
		v->host = h;
		m->token[i] = ow->mod_revision; /* changes with every write: a move re-puts it */
		const struct ha_etcd_kv *lk = find(&b->r[BM_LOAD], "load", ow->value);
		json_t *load = lk ? json_loads(lk->value, 0, NULL) : NULL;
		json_t *me = json_object_get(json_object_get(load, "vms"), v->name);
		v->cpu = jint(me, "cpu_m");
		v->dirty_rate = jint(me, "dirty_bps");
		json_decref(load);
		const struct ha_etcd_kv *mv = find(&b->r[BM_MOVES], "moves", v->name);
		if (mv) {
			m->in_flight[i] = true;
			json_t *j = json_loads(mv->value, 0, NULL);
			const char *to = json_string_value(json_object_get(j, "to"));
			uint32_t t = to ? bm_host(m, to) : HA_BAL_NONE;
			v->migrating_to = t != h ? t : HA_BAL_NONE;
			json_decref(j);
		}
	}
}

int bm_build(struct bm_model *m, const struct ha_etcd_range *r, const struct cl_spec *specs,
	     size_t n, const struct bm_recent *recent, size_t nrecent)
{
	memset(m, 0, sizeof(*m));
	struct build b = {.m = m, .r = r};
	/* every host a rule may name: the live ones, each spec's lists, the
	 * cluster rules' host lists (counted generously) */
	size_t cap = r[BM_HOSTS].n + 1;
	for (size_t i = 0; i < n; i++)
		for (char **const *l =
			 (char **const[]){specs[i].must, specs[i].avoid, specs[i].prefer,
					  specs[i].prefer_avoid, NULL};
		     *l; l++)
			for (char **p = *l; *p; p++)
				cap++;
	for (size_t i = 0; i < r[BM_RULES].n; i++)
		cap += r[BM_RULES].kvs[i].value_len / 2 + 1;
	b.cap_hosts = (uint32_t)cap;
	m->c.hosts = keep(m, calloc(cap, sizeof(*m->c.hosts)));
	m->c.vms = keep(m, calloc(n + 1, sizeof(*m->c.vms)));
	m->token = keep(m, calloc(n + 1, sizeof(*m->token)));
	m->in_flight = keep(m, calloc(n + 1, sizeof(*m->in_flight)));
	struct ha_bal_recent *rc = keep(m, calloc(nrecent + 1, sizeof(*rc)));
	if (!m->c.hosts || !m->c.vms || !m->token || !m->in_flight || !rc) {
		bm_free(m);
		return -ENOMEM;
	}
	add_hosts(&b);
	add_vms(&b, specs, n);
	for (uint32_t v = 0; v < m->c.nr_vms; v++) {
		file_rule(&b, v, "hosts", HA_BAL_MUST_RUN_ON, specs[v].must);
		file_rule(&b, v, "avoid_hosts", HA_BAL_MUST_NOT_RUN_ON, specs[v].avoid);
		file_rule(&b, v, "prefer_hosts", HA_BAL_SHOULD_RUN_ON, specs[v].prefer);
		file_rule(&b, v, "prefer_avoid_hosts", HA_BAL_SHOULD_NOT_RUN_ON,
			  specs[v].prefer_avoid);
	}
	group_rules(&b, specs, false);
	group_rules(&b, specs, true);
	for (size_t i = 0; i < r[BM_RULES].n; i++)
		cluster_rule(&b, &r[BM_RULES].kvs[i]);
	if (b.rules && !keep(m, b.rules))
		b.oom = true;
	for (size_t i = 0; i < nrecent; i++) {
		uint32_t v = vm_index(m, recent[i].vm), h = bm_host(m, recent[i].host);
		if (v != HA_BAL_NONE && h != HA_BAL_NONE)
			rc[m->c.nr_recent++] = (struct ha_bal_recent){v, h};
	}
	m->c.recent = rc;
	if (b.oom) {
		bm_free(m);
		return -ENOMEM;
	}
	return 0;
}

int bm_avoid(struct bm_model *m, const char *vm, const char *host)
{
	uint32_t v = vm_index(m, vm), h = bm_host(m, host);
	if (v == HA_BAL_NONE || h == HA_BAL_NONE)
		return 0;
	struct ha_bal_rule *rules = malloc((m->c.nr_rules + 1) * sizeof(*rules));
	uint32_t *idx = keep(m, malloc(2 * sizeof(*idx)));
	char name[2 * ED_NAME_MAX + 32];
	snprintf(name, sizeof(name), "%s: a move to %s failed", vm, host);
	char *dup = idx ? keep(m, strdup(name)) : NULL;
	if (!rules || !dup || !keep(m, rules)) {
		if (!dup)
			free(rules);
		return -ENOMEM;
	}
	/* the old array stays in allocs until bm_free: a copy, not a realloc */
	memcpy(rules, m->c.rules, m->c.nr_rules * sizeof(*rules));
	idx[0] = v;
	idx[1] = h;
	rules[m->c.nr_rules] =
	    (struct ha_bal_rule){dup, HA_BAL_MUST_NOT_RUN_ON, &idx[0], 1, &idx[1], 1};
	m->c.rules = rules;
	m->c.nr_rules++;
	return 0;
}

void bm_free(struct bm_model *m)
{
	for (size_t i = 0; i < m->nallocs; i++)
		free(m->allocs[i]);
	free(m->allocs);
	memset(m, 0, sizeof(*m));
}
