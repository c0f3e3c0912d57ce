/* Maintenance mode's evacuation (move.h, docs/ha.md "Maintenance mode"):
 * each round reads the balancer's ranges at one revision, builds its
 * model (balancer.h) from them and this host's VM files, and places
 * this host's running VMs, biggest first, with ha_bal_place, each placed
 * VM counted before the next: the same model and the same function as
 * initial placement, failover and the balancer, so no move breaks a must
 * or VM-VM rule.  A VM no host may take stays, and says why: an event
 * (once), its STATUS reason, and maint/<h>'s "stays" (GET /hosts). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ha/emberd/balancer.h"
#include "ha/emberd/move.h"

#define STAYS_ON "stays on " /* the STATUS reason's prefix: ours to clear */

/* This host's VM files and their states, copied on the loop. */
struct loop_specs {
	struct ed_cluster *c;
	struct cl_spec *specs;
	enum ed_state *state;
	size_t n;
};

static void specs_on_loop(void *arg)
{
	struct loop_specs *a = arg;
	a->specs = cl_specs_copy(a->c->h, &a->n);
	a->state = calloc(a->n + 1, sizeof(*a->state));
	for (size_t i = 0; a->specs && a->state && i < a->n; i++) {
		struct ed_vm *vm = ed_host_find(a->c->h, a->specs[i].name);
		a->state[i] = vm ? ed_vm_state(vm) : ED_STOPPED;
	}
}

/* STATUS reasons for the loop: why[0] set: vm stays; "": clear ours. */
struct stay {
	char vm[ED_NAME_MAX];
	char why[ED_ERR_MAX];
};
struct stays {
	struct ed_cluster *c;
	struct stay *s;
	size_t n;
	bool all; /* maintenance is over: clear every reason of ours */
};

static void stays_on_loop(void *arg)
{
	struct stays *a = arg;
	struct ed_host *h = a->c->h;
	for (struct ed_vm *vm = ed_host_first(h); a->all && vm; vm = ed_host_next(h, vm))
		if (!strncmp(vm->reason, STAYS_ON, strlen(STAYS_ON)))
			ed_vm_set_state(vm, ed_vm_state(vm), NULL);
	for (size_t i = 0; i < a->n; i++) {
		struct ed_vm *vm = ed_host_find(h, a->s[i].vm);
		if (!vm || ed_vm_state(vm) != ED_RUNNING)
			continue; /* stopped, gone, or moved meanwhile: its own reason */
		if (a->s[i].why[0])
			ed_vm_set_state(vm, ED_RUNNING, a->s[i].why);
		else if (!strncmp(vm->reason, STAYS_ON, strlen(STAYS_ON)))
			ed_vm_set_state(vm, ED_RUNNING, NULL);
	}
	free(a->s);
	free(a);
}

static void post_stays(struct ed_cluster *c, struct stays *a)
{
	if (a && ed_loop_post(c->loop, stays_on_loop, a)) {
		free(a->s);
		free(a);
	}
}

void mv_maintenance_over(struct ed_cluster *c)
{
	struct stays *a = calloc(1, sizeof(*a));
	if (a)
		*a = (struct stays){.c = c, .all = true};
	post_stays(c, a);
}

/* maint/<me> gets "stays": {vm: why} when that changed; the txn compares
 * the key's mod revision, so an exit (its delete) is never undone. */
static void publish(struct ha_etcd *e, const struct ha_etcd_range *maint, const char *me,
		    json_t *stays)
{
	char key[128], err[ED_ERR_MAX];
	cl_key(key, sizeof(key), "maint", me);
	const struct ha_etcd_kv *kv = ha_etcd_range_find(maint, key);
	json_t *j = kv ? json_loads(kv->value, 0, NULL) : NULL;
	json_t *old = json_object_get(j, "stays");
	if (!json_is_object(j) || (old ? json_equal(old, stays) : !json_object_size(stays))) {
		json_decref(j);
		return;
	}
	json_object_set(j, "stays", stays);
	char *val = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS);
	json_decref(j);
	if (!val)
		return;
	struct ha_etcd_cmp cmp = {key, HA_ETCD_MOD, HA_ETCD_EQ, kv->mod_revision, NULL};
	struct ha_etcd_op put = {HA_ETCD_PUT, key, val, 0, false};
	struct ha_etcd_txn t = {&cmp, 1, &put, 1, NULL, 0};
	struct ha_etcd_txn_result res;
	if (!ha_etcd_txn_run(e, &t, &res, err, sizeof(err)))
		ha_etcd_txn_result_free(&res); /* lost a race: the next round writes it */
	free(val);
}

/* This host's VMs to evacuate (running here under our lease, no move
 * pending) into go[], biggest first (then by name): returns how many. */
static size_t candidates(const struct bm_model *m, const struct ha_etcd_range *r,
			 const struct loop_specs *a, uint32_t me, int64_t lease, uint32_t *go)
{
	size_t n = 0;
	for (uint32_t v = 0; v < m->c.nr_vms && v < a->n; v++) {
		char okey[128];
		cl_key(okey, sizeof(okey), "owner", m->c.vms[v].name);
		const struct ha_etcd_kv *o = ha_etcd_range_find(&r[BM_OWNER], okey);
		if (m->c.vms[v].host != me || !o || o->lease != lease || m->in_flight[v] ||
		    a->state[v] != ED_RUNNING)
			continue;
		size_t i = n++;
		for (; i > 0; i--) { /* insertion: a host runs few VMs */
			const struct ha_bal_vm *p = &m->c.vms[go[i - 1]], *x = &m->c.vms[v];
			if (p->mem > x->mem || (p->mem == x->mem && strcmp(p->name, x->name) < 0))
				break;
			go[i] = go[i - 1];
		}
		go[i] = v;
	}
	return n;
}

static void evacuate(struct ed_cluster *c, struct ha_etcd *e, const struct ha_etcd_range *r,
		     const struct loop_specs *a, int64_t lease, size_t room)
{
	struct bm_model m;
	struct ha_bal_opts o;
	if (ha_bal_opts_init(&o, 3) || bm_build(&m, r, a->specs, a->n, NULL, 0))
		return;
	uint32_t me = bm_host(&m, c->name);
	uint32_t *go = calloc(m.c.nr_vms + 1, sizeof(*go));
	struct stays *st = calloc(1, sizeof(*st));
	struct stay *s = calloc(m.c.nr_vms + 1, sizeof(*s));
	json_t *stays = json_object();
	if (me == HA_BAL_NONE || !go || !st || !s || !stays)
		goto out;
	/* a host that takes no migration now is no target (as one in maintenance) */
	for (uint32_t h = 0; h < m.c.nr_hosts; h++) {
		char addr[128], why[ED_ERR_MAX];
		if (m.c.hosts[h].alive && mv_target_refuses(&r[BM_HOSTS], &r[BM_MAINT],
							    m.c.hosts[h].name, addr, sizeof(addr),
							    why, sizeof(why)))
			m.c.hosts[h].maintenance = true;
	}
	size_t n = candidates(&m, r, a, me, lease, go);
	/* they all leave: unplaced until placed, so an affinity group's
	 * first member leads and the rest join it */
	for (size_t i = 0; i < n; i++)
		m.c.vms[go[i]].host = HA_BAL_NONE;
	for (size_t i = 0; i < n; i++) {
		uint32_t v = go[i], h;
		const char *name = m.c.vms[v].name;
		char why[256] = "", err[ED_ERR_MAX];
		snprintf(s[i].vm, sizeof(s[i].vm), "%s", name);
		if (ha_bal_place(&m.c, &o, v, &h, why, sizeof(why))) {
			m.c.vms[v].host = me; /* it stays, and counts here */
			snprintf(s[i].why, sizeof(s[i].why), STAYS_ON "%s (in maintenance): %s",
				 c->name, why);
			json_object_set_new(stays, name, json_string(why));
			if (mv_tell_once(c, name))
				cl_event(c, name, "maintenance-stays",
					 "cannot leave %s (in maintenance): %s", c->name, why);
			continue;
		}
		m.c.vms[v].host = h; /* counted before the next is placed */
		if (room && !mv_put_request(e, c->name, name, m.c.hosts[h].name, "maintenance",
					    m.token[v], err, sizeof(err)))
			room--;
	}
	publish(e, &r[BM_MAINT], c->name, stays);
	*st = (struct stays){.c = c, .s = s, .n = n};
	post_stays(c, st);
	st = NULL;
	s = NULL;
out:
	json_decref(stays);
	free(st);
	free(s);
	free(go);
	bm_free(&m);
}

void mv_maintenance_round(struct ed_cluster *c, struct ha_etcd *e, int64_t lease, size_t room)
{
	char keys[BM_NR][64], err[ED_ERR_MAX];
	struct ha_etcd_op reads[BM_NR];
	bm_reads(keys, reads);
	const struct ha_etcd_txn t = {NULL, 0, reads, BM_NR, NULL, 0};
	struct ha_etcd_txn_result res;
	if (ha_etcd_txn_run(e, &t, &res, err, sizeof(err)))
		return;
	struct loop_specs a = {.c = c};
	if (res.n == BM_NR && mv_on_loop(c, specs_on_loop, &a) == 0) {
		if (a.specs && a.state)
			evacuate(c, e, res.ranges, &a, lease, room);
		cl_specs_free(a.specs, a.n);
		free(a.state);
	}
	ha_etcd_txn_result_free(&res);
}
