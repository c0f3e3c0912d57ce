/* Cluster mode's poller (cluster_priv.h): every POLL_MS it reads hosts/,
 * owner/ and state/ in one transaction (one revision), decides per VM,
 * claims what placement gives this host, and hands the loop an immutable
 * list of what to do.  It never touches a struct ed_vm: the loop hands it
 * copies of the VMs' specs, and applies its decisions itself.
 *
 * Per VM: owned by us under our lease -> keep (a claim we held whose key
 * vanished or changed -> stop at once, "claim lost"); owned by another ->
 * remote; unowned -> after grace_ms (at once if it was unowned when we
 * first looked), placed over the live hosts, and claimed by the host
 * placement names: txn create_revision(owner/<vm>) == 0 -> put under our
 * lease; the put's revision is the fencing token. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ha/emberd/cluster_place.h"
#include "ha/emberd/cluster_priv.h"

#define POLL_MS 50
#define ENSURE_MS 500  /* how often an owned VM that is down is started again */
#define RECLAIM_MS 500 /* after a claim lost here, before it may be claimed again */
#define CLAIM_BATCH 50 /* VMs per claim transaction (etcd's --max-txn-ops is 128) */

/* START: just claimed, start unless it runs; ENSURE: ours, start it if
 * it still shows what the cluster set (remote, unplaced); STOPPED: just
 * claimed, and its desired state is stopped: show it so. */
enum act_kind { A_START, A_ENSURE, A_STOP, A_REMOTE, A_UNPLACED, A_STOPPED };

struct act {
	char vm[ED_NAME_MAX];
	enum act_kind kind;
	char arg[256];
};

struct batch {
	struct ed_cluster *c;
	size_t n, cap;
	struct act *a;
};

/* What the poller remembers per VM between polls (its own, unshared). */
struct pvm {
	char name[ED_NAME_MAX];
	uint64_t unowned_since; /* 0: owned */
	uint64_t lost_at;	/* when a claim of ours was lost (0: never) */
	bool ready_now;		/* unowned when first seen: no grace */
	char last_owner[ED_NAME_MAX];
	char posted[300]; /* the last remote/unplaced told to the loop */
	uint64_t ensured; /* when an ENSURE was last posted */
};

struct poller {
	struct ed_cluster *c;
	struct ha_etcd *e;
	struct cl_spec *specs;
	size_t nspecs;
	struct pvm *vms;
	size_t nvms;
};

/* One owner key as read. */
struct owner {
	const char *vm, *host;
	int64_t rev, lease;
};

void cl_specs_free(struct cl_spec *s, size_t n)
{
	for (size_t i = 0; s && i < n; i++) {
		for (char **p = s[i].must; p && *p; p++)
			free(*p);
		for (char **p = s[i].avoid; p && *p; p++)
			free(*p);
		free(s[i].must);
		free(s[i].avoid);
	}
	free(s);
}

/* ---- on the loop ---- */

static char **copy_list(const char *const *l)
{
	size_t n = 0;
	while (l && l[n])
		n++;
	char **o = calloc(n + 1, sizeof(*o));
	for (size_t i = 0; o && i < n; i++)
		o[i] = strdup(l[i]);
	return o;
}

/* The loop's VMs, copied for the poller. */
static void refresh_specs(void *arg)
{
	struct ed_cluster *c = arg;
	size_t n = 0;
	for (struct ed_vm *vm = ed_host_first(c->h); vm; vm = ed_host_next(c->h, vm))
		n++;
	struct cl_spec *s = calloc(n ? n : 1, sizeof(*s));
	size_t i = 0;
	for (struct ed_vm *vm = ed_host_first(c->h); s && vm && i < n;
	     vm = ed_host_next(c->h, vm), i++) {
		snprintf(s[i].name, sizeof(s[i].name), "%s", ed_vm_name(vm));
		s[i].mem = ed_vm_mem_bytes(vm);
		s[i].vcpus = ed_vm_vcpus(vm);
		s[i].must = copy_list(ed_vm_hosts_must(vm));
		s[i].avoid = copy_list(ed_vm_hosts_avoid(vm));
	}
	pthread_mutex_lock(&c->mu);
	cl_specs_free(c->specs, c->nspecs);
	c->specs = s;
	c->nspecs = s ? i : 0;
	c->specs_asked = false;
	pthread_mutex_unlock(&c->mu);
}

static bool running_here(enum ed_state st)
{
	return st == ED_RUNNING || st == ED_STARTING || st == ED_BACKOFF;
}

static void apply(void *arg)
{
	struct batch *b = arg;
	struct ed_host *h = b->c->h;
	char why[ED_ERR_MAX];
	for (size_t i = 0; i < b->n; i++) {
		const struct act *a = &b->a[i];
		struct ed_vm *vm = ed_host_find(h, a->vm);
		if (!vm)
			continue;
		enum ed_state st = ed_vm_state(vm);
		switch (a->kind) {
		case A_ENSURE:
			if (st != ED_REMOTE && st != ED_UNPLACED)
				break; /* stopped or failed here: its policy's word stands */
				       /* fall through */
		case A_START:
			if (running_here(st))
				break;
			if (ed_vm_start(h, vm, ED_HOW_POLICY, a->arg, why, sizeof(why)) &&
			    !ed_host_fenced(h))
				ed_event(h, a->vm, "start-failed", "%s: %s", a->arg, why);
			break;
		case A_STOP:
		case A_REMOTE:
			if (running_here(st)) {
				cl_self_stop(b->c, a->vm);
				if (ed_vm_stop(h, vm, 0,
					       a->kind == A_STOP ? "claim-lost"
								 : "claimed-elsewhere",
					       why, sizeof(why)))
					ed_event(h, a->vm, "stop-failed", "%s", why);
			}
			if (a->kind == A_STOP)
				ed_event(h, a->vm, "claim-lost", "%s", a->arg);
			else
				ed_vm_set_remote(vm, a->arg);
			break;
		case A_UNPLACED:
			if (!running_here(st))
				ed_vm_set_unplaced(vm, a->arg);
			break;
		case A_STOPPED:
			if (!running_here(st) && ed_vm_stop(h, vm, 0, a->arg, why, sizeof(why)))
				ed_event(h, a->vm, "stop-failed", "%s", why);
			break;
		}
	}
	free(b->a);
	free(b);
}

/* ---- on the poller ---- */

static void add(struct batch *b, const char *vm, enum act_kind k, const char *arg)
{
	if (b->n == b->cap) {
		size_t cap = b->cap ? b->cap * 2 : 16;
		struct act *a = realloc(b->a, cap * sizeof(*a));
		if (!a)
			return; /* dropped: the next poll decides again */
		b->a = a;
		b->cap = cap;
	}
	struct act *a = &b->a[b->n++];
	snprintf(a->vm, sizeof(a->vm), "%s", vm);
	a->kind = k;
	snprintf(a->arg, sizeof(a->arg), "%s", arg);
}

/* Tell the loop vm is remote/unplaced, once per change. */
static void tell(struct batch *b, struct pvm *p, enum act_kind k, const char *arg)
{
	char key[sizeof(p->posted)];
	snprintf(key, sizeof(key), "%d:%s", (int)k, arg);
	if (!strcmp(key, p->posted))
		return;
	snprintf(p->posted, sizeof(p->posted), "%s", key);
	add(b, p->name, k, arg);
}

static struct pvm *pvm_get(struct poller *p, const char *name, bool unowned)
{
	for (size_t i = 0; i < p->nvms; i++)
		if (!strcmp(p->vms[i].name, name))
			return &p->vms[i];
	struct pvm *n = realloc(p->vms, (p->nvms + 1) * sizeof(*n));
	if (!n)
		return NULL;
	p->vms = n;
	struct pvm *v = &p->vms[p->nvms++];
	memset(v, 0, sizeof(*v));
	snprintf(v->name, sizeof(v->name), "%s", name);
	v->ready_now = unowned; /* unowned at our first look: nobody ran it */
	return v;
}

static const struct owner *owner_of(const struct owner *o, size_t n, const char *vm)
{
	for (size_t i = 0; i < n; i++)
		if (!strcmp(o[i].vm, vm))
			return &o[i];
	return NULL;
}

static const struct cl_spec *spec_of(const struct poller *p, const char *vm)
{
	for (size_t i = 0; i < p->nspecs; i++)
		if (!strcmp(p->specs[i].name, vm))
			return &p->specs[i];
	return NULL;
}

static bool is_stopped(const struct ha_etcd_range *state, const char *vm)
{
	char key[128];
	cl_key(key, sizeof(key), "state", vm);
	const struct ha_etcd_kv *kv = ha_etcd_range_find(state, key);
	return kv && !strcmp(kv->value, "stopped");
}

/* Claim vms[0..n) in one txn (every owner key still absent), else one
 * by one.  Each claimed VM: recorded under lease, started unless stopped. */
static void claim(struct poller *p, struct batch *b, const struct ha_etcd_range *state,
		  int64_t lease, const char **vms, size_t n)
{
	struct ed_cluster *c = p->c;
	struct ha_etcd_cmp cmp[CLAIM_BATCH];
	struct ha_etcd_op put[CLAIM_BATCH];
	char keys[CLAIM_BATCH][128];
	char err[ED_ERR_MAX];
	for (size_t i = 0; i < n; i++) {
		cl_key(keys[i], sizeof(keys[i]), "owner", vms[i]);
		cmp[i] = (struct ha_etcd_cmp){keys[i], HA_ETCD_CREATE, HA_ETCD_EQ, 0, NULL};
		put[i] = (struct ha_etcd_op){HA_ETCD_PUT, keys[i], c->name, lease, false};
	}
	struct ha_etcd_txn t = {cmp, n, put, n, NULL, 0};
	struct ha_etcd_txn_result res;
	int r = ha_etcd_txn_run(p->e, &t, &res, err, sizeof(err));
	if (r) {
		cl_event(c, NULL, "etcd-error", "claiming %zu VMs: %s", n, err);
		return;
	}
	bool ok = res.succeeded;
	int64_t token = res.revision;
	ha_etcd_txn_result_free(&res);
	if (!ok) {
		if (n > 1) /* another host took some: try each alone */
			for (size_t i = 0; i < n; i++)
				claim(p, b, state, lease, &vms[i], 1);
		return;
	}
	for (size_t i = 0; i < n; i++) {
		pthread_mutex_lock(&c->mu);
		bool still = c->lease == lease && !c->fenced;
		if (still)
			cl_claim_set(c, vms[i], token);
		pthread_mutex_unlock(&c->mu);
		if (!still)
			return; /* fenced meanwhile: the key dies with the old lease */
		struct pvm *v = pvm_get(p, vms[i], true);
		const char *from = v && v->last_owner[0] ? v->last_owner : "nobody";
		char cause[200];
		snprintf(cause, sizeof(cause), "claimed from %s (token %" PRId64 ")", from, token);
		cl_event(c, vms[i], "claimed", "%s", cause);
		if (v) {
			v->posted[0] = 0;
			v->ensured = ed_now_ms();
		}
		if (!is_stopped(state, vms[i]))
			add(b, vms[i], A_START, cause);
		else
			add(b, vms[i], A_STOPPED, "user (stopped before it was claimed here)");
	}
}

/* GET /hosts's view and the owner map, for the hooks. */
static void publish(struct ed_cluster *c, const struct ed_place_host *ph, size_t nh,
		    const struct owner *ow, size_t nown, const struct ha_etcd_range *state)
{
	json_t *hj = json_array(), *oj = json_object();
	for (size_t i = 0; i < nh; i++) {
		size_t vms = 0;
		for (size_t k = 0; k < nown; k++)
			vms += !strcmp(ow[k].host, ph[i].name);
		json_array_append_new(hj, json_pack("{s:s,s:b,s:I,s:I,s:I,s:I,s:I}", "name",
						    ph[i].name, "alive", 1, "vms", (json_int_t)vms,
						    "mem_used", (json_int_t)ph[i].mem_used,
						    "mem_capacity", (json_int_t)ph[i].mem_cap,
						    "vcpus_used", (json_int_t)ph[i].vcpus_used,
						    "vcpus_capacity", (json_int_t)ph[i].vcpus_cap));
	}
	for (size_t k = 0; k < nown; k++)
		json_object_set_new(oj, ow[k].vm, json_string(ow[k].host));
	/* hosts we saw before and see no more: dead */
	pthread_mutex_lock(&c->mu);
	size_t ih;
	json_t *old;
	json_array_foreach(c->hosts, ih, old)
	{
		const char *name = json_string_value(json_object_get(old, "name"));
		bool live = false;
		for (size_t i = 0; name && i < nh; i++)
			live |= !strcmp(ph[i].name, name);
		if (!name || live)
			continue;
		json_t *d = json_deep_copy(old);
		json_object_set_new(d, "alive", json_false());
		json_object_set_new(d, "vms", json_integer(0));
		json_object_set_new(d, "mem_used", json_integer(0));
		json_object_set_new(d, "vcpus_used", json_integer(0));
		json_array_append_new(hj, d);
	}
	json_decref(c->hosts);
	json_decref(c->owners);
	c->hosts = hj;
	c->owners = oj;
	for (size_t i = 0; i < c->nstopped; i++)
		free(c->stopped[i]);
	c->nstopped = 0;
	char **st = realloc(c->stopped, (state->n + 1) * sizeof(*st));
	if (st) {
		c->stopped = st;
		for (size_t i = 0; i < state->n; i++)
			if (!strcmp(state->kvs[i].value, "stopped") &&
			    (st[c->nstopped] =
				 strdup(state->kvs[i].key + strlen(CL_PREFIX "state/"))))
				c->nstopped++;
	}
	pthread_mutex_unlock(&c->mu);
}

/* One poll: read, decide, claim, hand the loop its list. */
static void poll_once(struct poller *p, const struct ha_etcd_range *r3)
{
	struct ed_cluster *c = p->c;
	const struct ha_etcd_range *hosts = &r3[0], *owners = &r3[1], *state = &r3[2];
	uint64_t now = ed_now_ms();
	pthread_mutex_lock(&c->mu);
	int64_t lease = c->fenced ? 0 : c->lease;
	bool settled = lease && now >= c->lease_at + c->settle_ms;
	pthread_mutex_unlock(&c->mu);

	size_t nh = hosts->n, nown = owners->n;
	struct ed_place_host *ph = calloc(nh + 1, sizeof(*ph));
	struct owner *ow = calloc(nown + 1, sizeof(*ow));
	struct batch *b = calloc(1, sizeof(*b));
	const char **ready = calloc(p->nspecs + 1, sizeof(*ready));
	struct ed_place_vm *pv = calloc(p->nspecs + 1, sizeof(*pv));
	int *choice = calloc(p->nspecs + 1, sizeof(*choice));
	char(*whys)[256] = calloc(p->nspecs + 1, sizeof(*whys));
	if (!ph || !ow || !b || !ready || !pv || !choice || !whys)
		goto out;
	b->c = c;
	int me = -1;
	for (size_t i = 0; i < nh; i++) {
		const struct ha_etcd_kv *kv = &hosts->kvs[i];
		ph[i].name = kv->key + strlen(CL_PREFIX "hosts/");
		json_t *info = json_loads(kv->value, 0, NULL);
		ph[i].mem_cap = (uint64_t)json_integer_value(json_object_get(info, "mem_capacity"));
		ph[i].vcpus_cap =
		    (unsigned)json_integer_value(json_object_get(info, "vcpus_capacity"));
		json_decref(info);
		if (!strcmp(ph[i].name, c->name) && kv->lease == lease && lease)
			me = (int)i;
	}
	for (size_t k = 0; k < nown; k++) {
		const struct ha_etcd_kv *kv = &owners->kvs[k];
		ow[k] = (struct owner){kv->key + strlen(CL_PREFIX "owner/"), kv->value,
				       kv->create_revision, kv->lease};
		const struct cl_spec *s = spec_of(p, ow[k].vm);
		for (size_t i = 0; s && !is_stopped(state, s->name) && i < nh; i++)
			if (!strcmp(ph[i].name, ow[k].host)) {
				ph[i].mem_used += s->mem;
				ph[i].vcpus_used += s->vcpus;
			}
	}
	publish(c, ph, nh, ow, nown, state);

	size_t nready = 0;
	for (size_t i = 0; i < p->nspecs; i++) {
		const struct cl_spec *s = &p->specs[i];
		const struct owner *o = owner_of(ow, nown, s->name);
		struct pvm *v = pvm_get(p, s->name, !o);
		if (!v)
			continue;
		pthread_mutex_lock(&c->mu);
		struct cl_claim *cl = cl_claim_find(c, s->name);
		int64_t had = cl ? cl->token : 0;
		bool mine = o && lease && o->lease == lease && !strcmp(o->host, c->name);
		if (mine && !had)
			cl_claim_set(c, s->name, o->rev); /* our txn's reply was lost: adopt */
		if (had && (!mine || o->rev != had))
			cl_claim_drop(c, s->name);
		pthread_mutex_unlock(&c->mu);
		char msg[300];
		if (had && (!mine || o->rev != had)) {
			snprintf(msg, sizeof(msg),
				 "owner/%s %s (our token was %" PRId64 "): stopping it here",
				 s->name, o ? "now belongs to another claim" : "vanished", had);
			add(b, s->name, A_STOP, msg);
			v->posted[0] = 0;
			v->lost_at = now;
			v->ready_now = false;
		}
		if (o) {
			v->unowned_since = 0;
			v->ready_now = false;
			snprintf(v->last_owner, sizeof(v->last_owner), "%s", o->host);
			if (mine && !is_stopped(state, s->name) && now - v->ensured >= ENSURE_MS) {
				v->ensured = now;
				snprintf(msg, sizeof(msg), "%s (token %" PRId64 ")",
					 had ? "owned here" : "adopted our claim", o->rev);
				add(b, s->name, had ? A_ENSURE : A_START, msg);
			} else if (!mine) {
				tell(b, v, A_REMOTE,
				     lease && !strcmp(o->host, c->name) ? "(our previous lease)"
									: o->host);
			}
			continue;
		}
		if (!v->unowned_since)
			v->unowned_since = now;
		/* A claim lost here: its stop must land before anyone (us too)
		 * claims and starts it again. */
		if (v->lost_at && now - v->lost_at < RECLAIM_MS)
			continue;
		if (!v->ready_now && now - v->unowned_since < c->grace_ms)
			continue;
		bool stopped = is_stopped(state, s->name);
		/* a VM left stopped by the user takes no room */
		pv[nready] = (struct ed_place_vm){
		    s->name, stopped ? 0 : s->mem, stopped ? 0 : s->vcpus,
		    (const char *const *)s->must, (const char *const *)s->avoid};
		nready++;
	}
	ed_place_all(ph, nh, pv, nready, choice, whys);
	size_t nclaim = 0;
	for (size_t i = 0; i < nready; i++) {
		struct pvm *v = pvm_get(p, pv[i].name, true);
		if (choice[i] < 0 && v)
			tell(b, v, A_UNPLACED, whys[i]);
		else if (choice[i] == me && me >= 0 && settled)
			ready[nclaim++] = pv[i].name;
	}
	for (size_t i = 0; i < nclaim; i += CLAIM_BATCH)
		claim(p, b, state, lease, &ready[i],
		      nclaim - i < CLAIM_BATCH ? nclaim - i : CLAIM_BATCH);
	if (b->n && !ed_loop_post(c->loop, apply, b))
		b = NULL;
out:
	if (b)
		free(b->a);
	free(b);
	free(ph);
	free(ow);
	free(ready);
	free(pv);
	free(choice);
	free(whys);
}

void *cl_poller(void *arg)
{
	struct poller p = {.c = arg};
	struct ed_cluster *c = p.c;
	char err[ED_ERR_MAX];
	if (ha_etcd_new(&p.e, c->endpoints, (int)(c->ttl_ms / 2), err, sizeof(err))) {
		cl_event(c, NULL, "etcd-unreachable", "%s", err);
		return NULL;
	}
	char kh[64], ko[64], ks[64];
	snprintf(kh, sizeof(kh), CL_PREFIX "hosts/");
	snprintf(ko, sizeof(ko), CL_PREFIX "owner/");
	snprintf(ks, sizeof(ks), CL_PREFIX "state/");
	const struct ha_etcd_op reads[] = {{HA_ETCD_RANGE, kh, NULL, 0, true},
					   {HA_ETCD_RANGE, ko, NULL, 0, true},
					   {HA_ETCD_RANGE, ks, NULL, 0, true}};
	const struct ha_etcd_txn t = {NULL, 0, reads, 3, NULL, 0};
	do {
		pthread_mutex_lock(&c->mu);
		if (c->specs) { /* take the loop's fresh copy */
			cl_specs_free(p.specs, p.nspecs);
			p.specs = c->specs;
			p.nspecs = c->nspecs;
			c->specs = NULL;
			c->nspecs = 0;
		}
		bool ask = !c->specs_asked;
		c->specs_asked = true;
		pthread_mutex_unlock(&c->mu);
		if (ask && ed_loop_post(c->loop, refresh_specs, c)) {
			pthread_mutex_lock(&c->mu);
			c->specs_asked = false;
			pthread_mutex_unlock(&c->mu);
		}
		if (!p.specs)
			continue; /* the loop has not answered yet */
		struct ha_etcd_txn_result res;
		int r = ha_etcd_txn_run(p.e, &t, &res, err, sizeof(err));
		cl_set_reachable(c, !r || !ha_etcd_unreachable(r), err);
		if (r)
			continue; /* never stop a VM on a guess: only fencing does */
		if (res.n == 3)
			poll_once(&p, res.ranges);
		ha_etcd_txn_result_free(&res);
	} while (cl_sleep(c, POLL_MS));
	cl_specs_free(p.specs, p.nspecs);
	free(p.vms);
	ha_etcd_free(p.e);
	return NULL;
}
