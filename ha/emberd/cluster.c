/* Cluster mode (emberd.h "cluster mode", docs/ha.md "Cluster"): the host
 * lease, its keeper and watchdog, and the hooks through which the local
 * supervisor asks etcd.  The poller that claims and places VMs is in
 * cluster_poll.c.
 *
 * Threads: the keeper renews the lease (etcd calls bounded by TTL/4); the
 * watchdog never calls etcd, so nothing can keep it from self-fencing at
 * the last renewal + TTL - margin; the poller reads the cluster and
 * claims; the hooks run on the loop with the loop's own etcd client.
 * Each thread owns its client (one CURL handle each). */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ha/emberd/balancer.h"
#include "ha/emberd/cluster_priv.h"
#include "ha/emberd/move.h"

void cl_key(char *buf, size_t len, const char *kind, const char *name)
{
	snprintf(buf, len, CL_PREFIX "%s/%s", kind, name);
}

struct cl_claim *cl_claim_find(struct ed_cluster *c, const char *vm)
{
	for (size_t i = 0; i < c->nclaims; i++)
		if (!strcmp(c->claims[i].vm, vm))
			return &c->claims[i];
	return NULL;
}

void cl_claim_set(struct ed_cluster *c, const char *vm, int64_t token)
{
	struct cl_claim *cl = cl_claim_find(c, vm);
	if (!cl) {
		struct cl_claim *n = realloc(c->claims, (c->nclaims + 1) * sizeof(*n));
		if (!n)
			return; /* not recorded: the next poll adopts it */
		c->claims = n;
		cl = &c->claims[c->nclaims++];
		snprintf(cl->vm, sizeof(cl->vm), "%s", vm);
	}
	cl->token = token;
}

void cl_claim_drop(struct ed_cluster *c, const char *vm)
{
	struct cl_claim *cl = cl_claim_find(c, vm);
	if (cl)
		*cl = c->claims[--c->nclaims];
}

void cl_self_stop(struct ed_cluster *c, const char *vm)
{
	if (cl_self_stopped(c, vm)) {
		/* it was listed: drop the old entry, list it once */
	}
	char(*n)[ED_NAME_MAX] = realloc(c->self_stops, (c->nself_stops + 1) * sizeof(*n));
	if (!n)
		return; /* then vm_stopped's token check is what stands */
	c->self_stops = n;
	snprintf(n[c->nself_stops++], ED_NAME_MAX, "%s", vm);
}

bool cl_self_stopped(struct ed_cluster *c, const char *vm)
{
	for (size_t i = 0; i < c->nself_stops; i++)
		if (!strcmp(c->self_stops[i], vm)) {
			memcpy(c->self_stops[i], c->self_stops[--c->nself_stops], ED_NAME_MAX);
			return true;
		}
	return false;
}

/* ---- events, posted to the loop ---- */

struct cl_ev {
	struct ed_cluster *c;
	char vm[ED_NAME_MAX];
	char kind[32];
	char detail[ED_ERR_MAX];
};

static void ev_on_loop(void *arg)
{
	struct cl_ev *e = arg;
	ed_event(e->c->h, e->vm[0] ? e->vm : NULL, e->kind, "%s", e->detail);
	free(e);
}

void cl_event(struct ed_cluster *c, const char *vm, const char *kind, const char *fmt, ...)
{
	struct cl_ev *e = calloc(1, sizeof(*e));
	if (!e)
		return;
	e->c = c;
	snprintf(e->vm, sizeof(e->vm), "%s", vm ? vm : "");
	snprintf(e->kind, sizeof(e->kind), "%s", kind);
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(e->detail, sizeof(e->detail), fmt, ap);
	va_end(ap);
	if (ed_loop_post(c->loop, ev_on_loop, e))
		free(e);
}

bool cl_sleep(struct ed_cluster *c, uint64_t ms)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	ts.tv_sec += ms / 1000;
	ts.tv_nsec += (long)(ms % 1000) * 1000000;
	if (ts.tv_nsec >= 1000000000) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000;
	}
	pthread_mutex_lock(&c->mu);
	while (!atomic_load(&c->stop))
		if (pthread_cond_timedwait(&c->cv, &c->mu, &ts) == ETIMEDOUT)
			break;
	pthread_mutex_unlock(&c->mu);
	return !atomic_load(&c->stop);
}

void cl_set_reachable(struct ed_cluster *c, bool ok, const char *err)
{
	pthread_mutex_lock(&c->mu);
	bool was = c->reachable;
	c->reachable = ok;
	pthread_mutex_unlock(&c->mu);
	if (was && !ok)
		cl_event(c, NULL, "etcd-unreachable", "%s (retrying; running VMs keep running)",
			 err);
	else if (!was && ok)
		cl_event(c, NULL, "etcd-ok", "etcd answers again");
}

/* ---- the lease keeper ---- */

static void unfence_on_loop(void *arg)
{
	ed_host_unfence(arg);
}

/* Grant a lease and register hosts/<name> under it: 0, or -errno. */
static int join(struct ed_cluster *c, struct ha_etcd *e, char *err, size_t errlen)
{
	uint64_t sent = ed_now_ms();
	int64_t id;
	int r = ha_etcd_lease_grant(e, (int64_t)(c->ttl_ms / 1000), &id, err, errlen);
	if (r)
		return r;
	char key[128], info[512], mig[160] = "";
	cl_key(key, sizeof(key), "hosts", c->name);
	if (c->migrate_addr[0])
		snprintf(mig, sizeof(mig), ", \"migrate\": \"%s\"", c->migrate_addr);
	snprintf(info, sizeof(info),
		 "{\"mem_capacity\": %" PRIu64 ", \"vcpus_capacity\": %u, \"pid\": %d, "
		 "\"lease\": \"%" PRId64 "\"%s}",
		 c->mem_cap, c->vcpus_cap, (int)getpid(), id, mig);
	r = ha_etcd_put(e, key, info, id, NULL, err, errlen);
	if (r) {
		char ignored[64];
		if (ha_etcd_lease_revoke(e, id, ignored, sizeof(ignored))) {
			/* it expires by itself */
		}
		return r;
	}
	pthread_mutex_lock(&c->mu);
	bool was_fenced = c->fenced;
	pthread_mutex_unlock(&c->mu);
	/* Unfence on the loop before the poller can see the new lease: the
	 * loop runs posts in order, so no start it asks for meets a fence. */
	if (was_fenced && ed_loop_post(c->loop, unfence_on_loop, c->h))
		return -ENOMEM;
	pthread_mutex_lock(&c->mu);
	c->lease = id;
	c->lease_at = ed_now_ms();
	c->last_ok = sent;
	c->fenced = false;
	pthread_mutex_unlock(&c->mu);
	cl_event(c, NULL, "lease",
		 "joined the cluster as %s: lease %" PRIx64 " (TTL %" PRIu64 " ms) from %s%s",
		 c->name, (uint64_t)id, c->ttl_ms, ha_etcd_endpoint(e),
		 was_fenced ? "; unfenced" : "");
	return 0;
}

/* Our lease is gone (or we fenced): forget it and every claim under it. */
static void drop_lease(struct ed_cluster *c, struct ha_etcd *e)
{
	pthread_mutex_lock(&c->mu);
	int64_t id = c->lease;
	c->lease = 0;
	c->nclaims = 0;
	pthread_mutex_unlock(&c->mu);
	char err[ED_ERR_MAX];
	/* Revoking frees our owner keys for the survivors at once; when
	 * etcd cannot be reached the lease expires by itself. */
	if (id && ha_etcd_lease_revoke(e, id, err, sizeof(err))) {
		/* it expires by itself */
	}
}

static void fence(struct ed_cluster *c, const char *why)
{
	pthread_mutex_lock(&c->mu);
	bool already = c->fenced;
	c->fenced = true;
	c->nclaims = 0;
	pthread_mutex_unlock(&c->mu);
	if (!already)
		ed_host_fence(c->h, why);
}

static void *keeper(void *arg)
{
	struct ed_cluster *c = arg;
	struct ha_etcd *e = NULL;
	char err[ED_ERR_MAX];
	uint64_t every = c->ttl_ms / 5, timeout = c->ttl_ms / 4;
	if (ha_etcd_new(&e, c->endpoints, (int)timeout, err, sizeof(err))) {
		cl_event(c, NULL, "etcd-unreachable", "%s", err);
		return NULL;
	}
	bool said = false;
	while (!atomic_load(&c->stop)) {
		pthread_mutex_lock(&c->mu);
		int64_t id = c->lease;
		bool fenced = c->fenced;
		pthread_mutex_unlock(&c->mu);
		if (fenced && id) {
			drop_lease(c, e); /* the watchdog fenced: start over with a new lease */
			continue;
		}
		if (!id) {
			int r = join(c, e, err, sizeof(err));
			cl_set_reachable(c, !ha_etcd_unreachable(r), err);
			if (r && !said)
				cl_event(
				    c, NULL, "etcd-unreachable",
				    "cannot join the cluster: %s (retrying; no VM starts until "
				    "this host owns it)",
				    err);
			said = r != 0;
			if (r && !cl_sleep(c, 100))
				break;
			continue;
		}
		uint64_t sent = ed_now_ms();
		int64_t ttl;
		int r = ha_etcd_lease_keepalive(e, id, &ttl, err, sizeof(err));
		if (!r) {
			pthread_mutex_lock(&c->mu);
			if (c->lease == id && sent > c->last_ok)
				c->last_ok = sent;
			pthread_mutex_unlock(&c->mu);
			cl_set_reachable(c, true, "");
			uint64_t took = ed_now_ms() - sent;
			if (!cl_sleep(c, took < every ? every - took : 1))
				break;
		} else if (r == -ENOENT) {
			char why[ED_ERR_MAX + 128];
			snprintf(why, sizeof(why),
				 "lease %" PRIx64 " is gone (%s): stopping every VM "
				 "so none runs twice",
				 (uint64_t)id, err);
			fence(c, why);
			drop_lease(c, e);
		} else {
			cl_set_reachable(c, false, err);
			if (!cl_sleep(c, 50)) /* retry soon: the watchdog's deadline runs */
				break;
		}
	}
	ha_etcd_free(e);
	return NULL;
}

/* ---- the watchdog: no etcd calls, only the clock ---- */

static void *watchdog(void *arg)
{
	struct ed_cluster *c = arg;
	while (cl_sleep(c, 10)) {
		pthread_mutex_lock(&c->mu);
		bool due =
		    c->lease && !c->fenced && ed_now_ms() >= c->last_ok + c->ttl_ms - c->margin_ms;
		uint64_t since = ed_now_ms() - c->last_ok;
		pthread_mutex_unlock(&c->mu);
		if (!due)
			continue;
		char why[256];
		snprintf(why, sizeof(why),
			 "lease not renewed for %" PRIu64 " ms (TTL %" PRIu64 " ms, margin %" PRIu64
			 " ms): stopping every VM so none runs twice",
			 since, c->ttl_ms, c->margin_ms);
		fence(c, why);
		pthread_cond_broadcast(&c->cv); /* the keeper starts over */
	}
	return NULL;
}

/* ---- hooks (on the loop) ---- */

static bool hk_may_run(void *arg, struct ed_vm *vm, char *why, size_t whylen)
{
	struct ed_cluster *c = arg;
	const char *name = ed_vm_name(vm);
	pthread_mutex_lock(&c->mu);
	bool ok = false;
	if (c->fenced)
		snprintf(why, whylen, "host %s is fenced (its etcd lease lapsed)", c->name);
	else if (!c->lease)
		snprintf(why, whylen, "host %s has not joined the cluster (etcd unreachable?)",
			 c->name);
	else if (!cl_claim_find(c, name)) {
		const char *owner = json_string_value(json_object_get(c->owners, name));
		if (owner)
			snprintf(why, whylen, "owned by host %s", owner);
		else
			snprintf(why, whylen, "not claimed by this host yet");
	} else
		ok = true;
	bool was_stopped = false;
	for (size_t i = 0; ok && i < c->nstopped; i++)
		if (!strcmp(c->stopped[i], name)) {
			was_stopped = true;
			free(c->stopped[i]);
			c->stopped[i] = c->stopped[--c->nstopped];
		}
	int64_t token = ok ? cl_claim_find(c, name)->token : 0;
	pthread_mutex_unlock(&c->mu);
	if (was_stopped) {
		/* Started again by hand: a failover starts it again too. */
		char key[128], okey[128], err[ED_ERR_MAX];
		cl_key(key, sizeof(key), "state", name);
		cl_key(okey, sizeof(okey), "owner", name);
		struct ha_etcd_cmp cmp = {okey, HA_ETCD_MOD, HA_ETCD_EQ, token, NULL};
		struct ha_etcd_op del = {HA_ETCD_DELETE, key, NULL, 0, false};
		struct ha_etcd_txn t = {&cmp, 1, &del, 1, NULL, 0};
		struct ha_etcd_txn_result res;
		if (!ha_etcd_txn_run(c->lc, &t, &res, err, sizeof(err)))
			ha_etcd_txn_result_free(&res);
		else
			ed_event(c->h, name, "etcd-error", "clearing its stopped state: %s", err);
	}
	return ok;
}

static int64_t hk_token(void *arg, struct ed_vm *vm)
{
	struct ed_cluster *c = arg;
	pthread_mutex_lock(&c->mu);
	struct cl_claim *cl = c->fenced ? NULL : cl_claim_find(c, ed_vm_name(vm));
	int64_t t = cl ? cl->token : 0;
	pthread_mutex_unlock(&c->mu);
	return t;
}

/* Did the keeper's or poller's last call get an answer?  The hooks run on
 * the loop: while etcd is away they fail at once instead of waiting out
 * a timeout per endpoint. */
static bool etcd_answers(struct ed_cluster *c)
{
	pthread_mutex_lock(&c->mu);
	bool ok = c->reachable;
	pthread_mutex_unlock(&c->mu);
	return ok;
}

/* put key = value if owner/<vm>'s mod_revision is still our token:
 * 0, -ESTALE, or -errno. */
static int put_fenced(struct ed_cluster *c, struct ed_vm *vm, const char *kind, const char *value)
{
	const char *name = ed_vm_name(vm);
	int64_t token = hk_token(c, vm);
	if (!token)
		return -ESTALE;
	if (!etcd_answers(c))
		return -EHOSTUNREACH; /* keep the old pointer; the loop does not wait on etcd */
	char key[128], okey[128], err[ED_ERR_MAX];
	cl_key(key, sizeof(key), kind, name);
	cl_key(okey, sizeof(okey), "owner", name);
	struct ha_etcd_cmp cmp = {okey, HA_ETCD_MOD, HA_ETCD_EQ, token, NULL};
	struct ha_etcd_op put = {HA_ETCD_PUT, key, value, 0, false};
	struct ha_etcd_txn t = {&cmp, 1, &put, 1, NULL, 0};
	struct ha_etcd_txn_result res;
	int r = ha_etcd_txn_run(c->lc, &t, &res, err, sizeof(err));
	if (r) {
		ed_event(c->h, name, "etcd-error", "%s/%s: %s", kind, name, err);
		return r;
	}
	r = res.succeeded ? 0 : -ESTALE;
	ha_etcd_txn_result_free(&res);
	if (r)
		ed_event(c->h, name, "claim-lost",
			 "%s not written: owner/%s is no longer ours (token %" PRId64 ")", kind,
			 name, token);
	return r;
}

static int hk_snapshot_commit(void *arg, struct ed_vm *vm, const char *dir)
{
	return put_fenced(arg, vm, "snap", dir);
}

static int hk_snapshot_latest(void *arg, struct ed_vm *vm, char *buf, size_t len)
{
	struct ed_cluster *c = arg;
	char key[128], err[ED_ERR_MAX];
	cl_key(key, sizeof(key), "snap", ed_vm_name(vm));
	struct ha_etcd_range r;
	if (!etcd_answers(c)) {
		ed_event(c->h, ed_vm_name(vm), "etcd-error",
			 "its snapshot pointer cannot be read: etcd unreachable");
		return -EHOSTUNREACH;
	}
	int ret = ha_etcd_get(c->lc, key, false, &r, err, sizeof(err));
	if (ret) {
		ed_event(c->h, ed_vm_name(vm), "etcd-error", "reading its snapshot pointer: %s",
			 err);
		return ret;
	}
	ret = r.n ? 0 : -ENOENT;
	if (!ret && (size_t)snprintf(buf, len, "%s", r.kvs[0].value) >= len)
		ret = -ENAMETOOLONG;
	ha_etcd_range_free(&r);
	return ret;
}

static void hk_vm_stopped(void *arg, struct ed_vm *vm)
{
	/* Kept owned, marked stopped: a survivor claims it but leaves it down.
	 * A stop the cluster made itself (claim lost) is nobody's wish. */
	if (cl_self_stopped(arg, ed_vm_name(vm)))
		return;
	if (put_fenced(arg, vm, "state", "stopped")) {
		/* reported; a claim lost means another owner decides */
	}
}

static bool hk_move_ctl(void *arg, const char *method, const char *url, const char *body,
			size_t len, int *status, json_t **reply, char *fault, size_t faultlen)
{
	return ed_move_ctl(arg, method, url, body, len, status, reply, fault, faultlen);
}

static json_t *hk_hosts_json(void *arg)
{
	return ed_cluster_hosts_json(arg);
}

static const char *hk_etcd_health(void *arg)
{
	return etcd_answers(arg) ? "ok" : "unreachable";
}

json_t *ed_cluster_hosts_json(struct ed_cluster *c)
{
	pthread_mutex_lock(&c->mu);
	json_t *j = c->hosts ? json_deep_copy(c->hosts) : json_array();
	size_t i;
	json_t *h;
	json_array_foreach(j, i, h) /* maintenance mode: the mover's view */
	{
		const char *name = json_string_value(json_object_get(h, "name"));
		json_t *mv = name && c->maint ? json_object_get(c->maint, name) : NULL;
		json_object_set_new(h, "maintenance", json_boolean(mv));
		/* the VMs that stay, and why (move_maint.c writes them there) */
		json_t *mj = mv ? json_loads(json_string_value(mv), 0, NULL) : NULL;
		json_t *st = json_object_get(mj, "stays");
		json_object_set_new(h, "stays", json_is_object(st) ? json_incref(st) : json_object());
		json_decref(mj);
	}
	pthread_mutex_unlock(&c->mu);
	return j;
}

int64_t ed_cluster_lease(struct ed_cluster *c)
{
	pthread_mutex_lock(&c->mu);
	int64_t id = c->fenced ? 0 : c->lease;
	pthread_mutex_unlock(&c->mu);
	return id;
}

/* ---- start and stop ---- */

static void cluster_free(struct ed_cluster *c)
{
	ha_etcd_free(c->lc);
	free(c->endpoints);
	free(c->claims);
	free(c->self_stops);
	for (size_t i = 0; i < c->nstopped; i++)
		free(c->stopped[i]);
	free(c->stopped);
	cl_specs_free(c->specs, c->nspecs);
	cl_specs_free(c->bal_specs, c->nbal_specs);
	json_decref(c->hosts);
	json_decref(c->owners);
	json_decref(c->maint);
	pthread_mutex_destroy(&c->mu);
	pthread_cond_destroy(&c->cv);
	free(c);
}

int ed_cluster_start(struct ed_cluster **out, struct ed_host *h, const struct ed_cluster_opts *o,
		     char *err, size_t errlen)
{
	unsigned ttl = o->ttl_s ? o->ttl_s : 2;
	uint64_t margin = o->fence_margin_ms ? o->fence_margin_ms : ttl * 1000 / 4;
	if (ttl > 3600 || margin >= ttl * 1000ull) {
		snprintf(err, errlen,
			 "cluster: TTL %u s with a fence margin of %" PRIu64
			 " ms: the margin must be below the TTL",
			 ttl, margin);
		return -EINVAL;
	}
	struct ed_cluster *c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	pthread_mutex_init(&c->mu, NULL);
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&c->cv, &ca);
	pthread_condattr_destroy(&ca);
	c->h = h;
	c->loop = ed_host_loop(h);
	snprintf(c->name, sizeof(c->name), "%s", ed_host_name(h));
	c->ttl_ms = ttl * 1000ull;
	c->margin_ms = margin;
	c->grace_ms = o->grace_ms;
	c->settle_ms = c->ttl_ms / 2; /* hosts started together see each other first */
	long pages = sysconf(_SC_PHYS_PAGES), psz = sysconf(_SC_PAGESIZE);
	long cpus = sysconf(_SC_NPROCESSORS_ONLN);
	c->mem_cap = o->capacity_mem ? o->capacity_mem
				     : (uint64_t)(pages > 0 ? pages : 0) * (uint64_t)psz / 5 * 4;
	c->vcpus_cap = o->capacity_vcpus ? o->capacity_vcpus : 4 * (unsigned)(cpus > 0 ? cpus : 1);
	c->endpoints = strdup(o->endpoints ? o->endpoints : "");
	c->owners = json_object();
	c->reachable = true; /* the first failure is then an event */
	int r = c->endpoints && c->owners ? 0 : -ENOMEM;
	if (!r)
		r = ha_etcd_new(&c->lc, c->endpoints, 1000, err, errlen);
	if (r) {
		cluster_free(c);
		return r;
	}
	static const struct ed_cluster_hooks hooks = {
	    .may_run = hk_may_run,
	    .token = hk_token,
	    .snapshot_commit = hk_snapshot_commit,
	    .snapshot_latest = hk_snapshot_latest,
	    .vm_stopped = hk_vm_stopped,
	    .move_ctl = hk_move_ctl,
	    .hosts_json = hk_hosts_json,
	    .etcd_health = hk_etcd_health,
	    .rules = cl_rules_hook,
	};
	c->hooks = hooks;
	c->hooks.arg = c;
	if ((r = ed_mover_start(c, o, err, errlen))) {
		cluster_free(c);
		return r;
	}
	ed_host_set_cluster(h, &c->hooks);
	if (pthread_create(&c->keeper, NULL, keeper, c) == 0)
		c->started_keeper = true;
	if (pthread_create(&c->watchdog, NULL, watchdog, c) == 0)
		c->started_watchdog = true;
	if (pthread_create(&c->poller, NULL, cl_poller, c) == 0)
		c->started_poller = true;
	struct bm_opts bo = {o->balance_level, o->balance_interval_ms, 0, 0, 0};
	if (bo.level && bm_start(&c->bal, c, &bo, err, errlen)) {
		ed_cluster_stop(c, false);
		return -EINVAL;
	}
	if (!c->started_keeper || !c->started_watchdog || !c->started_poller) {
		snprintf(err, errlen, "cluster: cannot start its threads");
		ed_cluster_stop(c, false);
		return -EAGAIN;
	}
	*out = c;
	return 0;
}

void ed_cluster_stop(struct ed_cluster *c, bool release_vms)
{
	if (!c)
		return;
	pthread_mutex_lock(&c->mu);
	atomic_store(&c->stop, true);
	pthread_cond_broadcast(&c->cv);
	pthread_mutex_unlock(&c->mu);
	ed_mover_stop(c);
	if (c->started_keeper)
		pthread_join(c->keeper, NULL);
	if (c->started_watchdog)
		pthread_join(c->watchdog, NULL);
	if (c->started_poller)
		pthread_join(c->poller, NULL);
	bm_stop(c->bal);
	ed_host_set_cluster(c->h, NULL);
	char err[ED_ERR_MAX];
	if (release_vms && c->lease) {
		/* Our VMs were suspended or stopped: revoking the lease deletes
		 * hosts/<name> and every owner key under it, so the survivors
		 * take them over at once instead of after the TTL. */
		if (ha_etcd_lease_revoke(c->lc, c->lease, err, sizeof(err)))
			fprintf(stderr, "<4>emberd: cluster: revoking lease: %s\n", err);
	}
	cluster_free(c);
}
