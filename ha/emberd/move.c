/* The mover (move.h): one thread per host that reads moves/, maint/,
 * hosts/ and owner/ every MOVER_MS and starts a source worker for each
 * request that names a VM this host owns (at most MV_MAX_ACTIVE at once);
 * while this host is in maintenance it writes those requests itself for
 * its own VMs.  Also the migrate listener (its threads hand each
 * connection to move_in.c) and the two control requests. */
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "ha/emberd/move.h"

#define MOVER_MS 100

struct ed_mover {
	pthread_t thread, listener;
	bool started, listening;
	int lfd, stop_fd;
	pthread_mutex_t mu;
	pthread_t workers[64];
	char busy[64][ED_NAME_MAX]; /* the VM each worker serves ("": done) */
	bool joinable[64];
	bool out[64]; /* a source worker (counted in nout) */
	size_t nout; /* source workers running */
	char told[64][ED_NAME_MAX]; /* maintenance: VMs that cannot move, said once */
	size_t ntold;
};

void mv_crash_point(const char *phase)
{
	const char *want = getenv("EMBERD_TEST_CRASH");
	if (want && !strcmp(want, phase)) {
		fprintf(stderr, "<2>emberd: EMBERD_TEST_CRASH=%s: aborting here (test only)\n",
			phase);
		abort();
	}
}

/* ---- mv_on_loop ---- */

struct call {
	void (*fn)(void *);
	void *arg;
	bool done;
	pthread_mutex_t mu;
	pthread_cond_t cv;
};

static void call_on_loop(void *arg)
{
	struct call *k = arg;
	k->fn(k->arg);
	pthread_mutex_lock(&k->mu);
	k->done = true;
	pthread_cond_signal(&k->cv);
	pthread_mutex_unlock(&k->mu);
}

int mv_on_loop(struct ed_cluster *c, void (*fn)(void *), void *arg)
{
	struct call *k = calloc(1, sizeof(*k));
	if (!k)
		return -ENOMEM;
	*k = (struct call){.fn = fn, .arg = arg};
	pthread_mutex_init(&k->mu, NULL);
	pthread_cond_init(&k->cv, NULL);
	if (ed_loop_post(c->loop, call_on_loop, k)) {
		free(k);
		return -ENOMEM;
	}
	pthread_mutex_lock(&k->mu);
	while (!k->done && !atomic_load(&c->stop)) {
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_nsec += 100000000;
		if (ts.tv_nsec >= 1000000000) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000;
		}
		pthread_cond_timedwait(&k->cv, &k->mu, &ts);
	}
	bool done = k->done;
	pthread_mutex_unlock(&k->mu);
	if (!done)
		return -ECANCELED; /* k leaks: the loop may still run it (we are exiting) */
	pthread_mutex_destroy(&k->mu);
	pthread_cond_destroy(&k->cv);
	free(k);
	return 0;
}

/* ---- workers ---- */

static bool busy(struct ed_mover *m, const char *vm)
{
	for (size_t i = 0; i < 64; i++)
		if (!strcmp(m->busy[i], vm))
			return true;
	return false;
}

/* A worker thread for vm: fn(arg).  0, or -EBUSY / -EAGAIN. */
static int spawn(struct ed_cluster *c, const char *vm, bool out, void *(*fn)(void *), void *arg)
{
	struct ed_mover *m = c->mover;
	pthread_mutex_lock(&m->mu);
	int r = -EAGAIN;
	if (busy(m, vm))
		r = -EBUSY;
	for (size_t i = 0; r == -EAGAIN && i < 64; i++) {
		if (m->busy[i][0])
			continue;
		if (m->joinable[i]) {
			pthread_join(m->workers[i], NULL);
			m->joinable[i] = false;
		}
		snprintf(m->busy[i], sizeof(m->busy[i]), "%s", vm);
		if (pthread_create(&m->workers[i], NULL, fn, arg)) {
			m->busy[i][0] = '\0';
			break;
		}
		m->joinable[i] = true;
		m->out[i] = out;
		m->nout += out;
		r = 0;
	}
	pthread_mutex_unlock(&m->mu);
	return r;
}

void mv_worker_done(struct ed_cluster *c, const char *vm)
{
	struct ed_mover *m = c->mover;
	pthread_mutex_lock(&m->mu);
	for (size_t i = 0; i < 64; i++)
		if (!strcmp(m->busy[i], vm)) {
			m->busy[i][0] = '\0';
			m->nout -= m->out[i];
			m->out[i] = false;
			break;
		}
	pthread_mutex_unlock(&m->mu);
}

void mv_delete_request(struct ha_etcd *e, const char *vm, int64_t move_rev)
{
	char key[128], err[ED_ERR_MAX];
	cl_key(key, sizeof(key), "moves", vm);
	struct ha_etcd_cmp cmp = {key, HA_ETCD_CREATE, HA_ETCD_EQ, move_rev, NULL};
	struct ha_etcd_op del = {HA_ETCD_DELETE, key, NULL, 0, false};
	struct ha_etcd_txn t = {&cmp, 1, &del, 1, NULL, 0};
	struct ha_etcd_txn_result res;
	if (!ha_etcd_txn_run(e, &t, &res, err, sizeof(err)))
		ha_etcd_txn_result_free(&res);
}

/* ---- the VMs' rules, from the loop ---- */

static void rules_on_loop(void *arg)
{
	struct mv_rules *r = arg;
	struct ed_vm *vm = ed_host_find(r->c->h, r->vm);
	if (!vm)
		return;
	r->found = true;
	r->state = ed_vm_state(vm);
	snprintf(r->s.name, sizeof(r->s.name), "%s", r->vm);
	r->s.mem = ed_vm_mem_bytes(vm);
	r->s.vcpus = ed_vm_vcpus(vm);
	r->s.must = cl_copy_list(ed_vm_hosts_must(vm));
	r->s.avoid = cl_copy_list(ed_vm_hosts_avoid(vm));
}

void mv_rules_free(struct mv_rules *r)
{
	for (char **p = r->s.must; p && *p; p++)
		free(*p);
	for (char **p = r->s.avoid; p && *p; p++)
		free(*p);
	free(r->s.must);
	free(r->s.avoid);
}

static bool listed(char **l, const char *name)
{
	for (; l && *l; l++)
		if (!strcmp(*l, name))
			return true;
	return false;
}

/* Why vm may not run on host (a must rule), or NULL. */
const char *mv_rule_refuses(const struct cl_spec *s, const char *host, char *why, size_t len)
{
	if (s->must && s->must[0] && !listed(s->must, host)) {
		snprintf(why, len, "must rule: %s has hosts = ", s->name);
		for (char **p = s->must; *p; p++)
			snprintf(why + strlen(why), len - strlen(why), "%s%s", p == s->must ? "" : ",",
				 *p);
		return why;
	}
	if (listed(s->avoid, host)) {
		snprintf(why, len, "must rule: %s has avoid_hosts = %s", s->name, host);
		return why;
	}
	return NULL;
}

/* Why host cannot take a move now (not alive, no listener, in
 * maintenance), or NULL; *addr its listener. */
const char *mv_target_refuses(const struct ha_etcd_range *hosts,
				  const struct ha_etcd_range *maint, const char *host, char *addr,
				  size_t addrlen, char *why, size_t len)
{
	char key[128];
	cl_key(key, sizeof(key), "hosts", host);
	const struct ha_etcd_kv *kv = ha_etcd_range_find(hosts, key);
	if (!kv)
		return snprintf(why, len, "host %s is not alive (no hosts/%s)", host, host), why;
	cl_key(key, sizeof(key), "maint", host);
	if (ha_etcd_range_find(maint, key))
		return snprintf(why, len, "host %s is in maintenance", host), why;
	json_t *j = json_loads(kv->value, 0, NULL);
	const char *a = json_string_value(json_object_get(j, "migrate"));
	if (a)
		snprintf(addr, addrlen, "%s", a);
	json_decref(j);
	if (!a)
		return snprintf(why, len, "host %s takes no migrations (no --migrate-listen)",
				host),
		       why;
	return NULL;
}

/* ---- requests: moves/<vm> ---- */

/* Write moves/<vm> = {to, reason, by, token} if owner/<vm> still has
 * token: 0, -EEXIST (a move is pending), -ESTALE (owner changed), -errno. */
int mv_put_request(struct ha_etcd *e, const char *by, const char *vm, const char *to,
		       const char *reason, int64_t token, char *err, size_t errlen)
{
	char mkey[128], okey[128], val[512];
	cl_key(mkey, sizeof(mkey), "moves", vm);
	cl_key(okey, sizeof(okey), "owner", vm);
	snprintf(val, sizeof(val),
		 "{\"to\": \"%s\", \"reason\": \"%s\", \"by\": \"%s\", \"token\": %" PRId64 "}", to,
		 reason, by, token);
	struct ha_etcd_cmp cmp[2] = {{okey, HA_ETCD_MOD, HA_ETCD_EQ, token, NULL},
				     {mkey, HA_ETCD_CREATE, HA_ETCD_EQ, 0, NULL}};
	struct ha_etcd_op put = {HA_ETCD_PUT, mkey, val, 0, false};
	struct ha_etcd_txn t = {cmp, 2, &put, 1, NULL, 0};
	struct ha_etcd_txn_result res;
	int r = ha_etcd_txn_run(e, &t, &res, err, errlen);
	if (r)
		return r;
	bool ok = res.succeeded;
	ha_etcd_txn_result_free(&res);
	if (!ok)
		snprintf(err, errlen, "a move of %s is pending, or its owner changed meanwhile", vm);
	return ok ? 0 : -EEXIST;
}

int mv_read_view(struct ha_etcd *e, struct mv_view *v, char *err, size_t errlen)
{
	char kh[64], ko[64], kmv[64], kmt[64];
	cl_key(kh, sizeof(kh), "hosts", "");
	cl_key(ko, sizeof(ko), "owner", "");
	cl_key(kmv, sizeof(kmv), "moves", "");
	cl_key(kmt, sizeof(kmt), "maint", "");
	const struct ha_etcd_op reads[] = {{HA_ETCD_RANGE, kh, NULL, 0, true},
					   {HA_ETCD_RANGE, ko, NULL, 0, true},
					   {HA_ETCD_RANGE, kmv, NULL, 0, true},
					   {HA_ETCD_RANGE, kmt, NULL, 0, true}};
	const struct ha_etcd_txn t = {NULL, 0, reads, 4, NULL, 0};
	int r = ha_etcd_txn_run(e, &t, &v->res, err, errlen);
	if (!r && v->res.n != 4) {
		ha_etcd_txn_result_free(&v->res);
		snprintf(err, errlen, "etcd: a short reply");
		return -EPROTO;
	}
	return r;
}

int mv_rules_get(struct ed_cluster *c, const char *vm, struct mv_rules *r)
{
	memset(r, 0, sizeof(*r));
	r->c = c;
	r->vm = vm;
	int ret = mv_on_loop(c, rules_on_loop, r);
	if (ret)
		return ret;
	return r->found ? 0 : -ENOENT;
}

/* ---- the mover thread ---- */

static bool owner_is_us(const struct ha_etcd_kv *o, const char *me, int64_t lease)
{
	return o && lease && o->lease == lease && !strcmp(o->value, me);
}

/* A request that cannot run: deleted, with an event. */
static void refuse_request(struct ed_cluster *c, struct ha_etcd *e, const char *vm,
			   int64_t move_rev, const char *to, const char *why)
{
	mv_delete_request(e, vm, move_rev);
	cl_event(c, vm, "move-failed", "move to %s refused: %s", to, why);
}

static void one_request(struct ed_cluster *c, struct ha_etcd *e, const struct mv_view *v,
			const struct ha_etcd_kv *kv, int64_t lease)
{
	const struct ha_etcd_range *hosts = &v->res.ranges[0], *owners = &v->res.ranges[1],
				   *maint = &v->res.ranges[3];
	const char *vm = kv->key + strlen(CL_PREFIX "moves/");
	char okey[128], why[ED_ERR_MAX], addr[128] = "";
	cl_key(okey, sizeof(okey), "owner", vm);
	const struct ha_etcd_kv *o = ha_etcd_range_find(owners, okey);
	json_t *j = json_loads(kv->value, 0, NULL);
	const char *to = json_string_value(json_object_get(j, "to"));
	const char *reason = json_string_value(json_object_get(j, "reason"));
	json_int_t token = json_integer_value(json_object_get(j, "token"));
	char tob[ED_NAME_MAX];
	snprintf(tob, sizeof(tob), "%s", to ? to : "?");
	if (!o) {
		/* nobody owns it (a failover is due): the request is void */
		mv_delete_request(e, vm, kv->create_revision);
		goto out;
	}
	if (!owner_is_us(o, c->name, lease) || busy(c->mover, vm))
		goto out;
	pthread_mutex_lock(&c->mover->mu);
	size_t nout = c->mover->nout;
	pthread_mutex_unlock(&c->mover->mu);
	pthread_mutex_lock(&c->mu);
	struct cl_claim *cl = cl_claim_find(c, vm);
	int64_t ours = cl ? cl->token : 0;
	pthread_mutex_unlock(&c->mu);
	if (ours != o->mod_revision || nout >= MV_MAX_ACTIVE)
		goto out; /* the poller adopts our claim first; or later */
	if (!to || (token != o->create_revision && token != o->mod_revision)) {
		refuse_request(c, e, vm, kv->create_revision, tob,
			       !to ? "no \"to\" in the request"
				   : "stale: owner/<vm> changed since it was written");
		goto out;
	}
	struct mv_rules r;
	if (mv_rules_get(c, vm, &r))
		goto out;
	const char *no = NULL;
	if (r.state != ED_RUNNING)
		snprintf(why, sizeof(why), "%s is %s here: only a running VM moves live", vm,
			 ed_state_name(r.state)),
		    no = why;
	else if (!strcmp(to, c->name))
		no = "it already runs there";
	if (!no)
		no = mv_target_refuses(hosts, maint, to, addr, sizeof(addr), why, sizeof(why));
	if (!no)
		no = mv_rule_refuses(&r.s, to, why, sizeof(why));
	mv_rules_free(&r);
	if (no) {
		refuse_request(c, e, vm, kv->create_revision, to, no);
		goto out;
	}
	struct mv_req *q = calloc(1, sizeof(*q));
	if (!q)
		goto out;
	q->c = c;
	snprintf(q->vm, sizeof(q->vm), "%s", vm);
	snprintf(q->to, sizeof(q->to), "%s", to);
	snprintf(q->addr, sizeof(q->addr), "%s", addr);
	snprintf(q->reason, sizeof(q->reason), "%s", reason ? reason : "user");
	q->token = o->mod_revision;
	q->move_rev = kv->create_revision;
	if (spawn(c, vm, true, mv_out_main, q))
		free(q);
out:
	json_decref(j);
}

static void *mover(void *arg)
{
	struct ed_cluster *c = arg;
	struct ha_etcd *e;
	char err[ED_ERR_MAX];
	if (ha_etcd_new(&e, c->endpoints, 1000, err, sizeof(err)))
		return NULL;
	while (cl_sleep(c, MOVER_MS)) {
		pthread_mutex_lock(&c->mu);
		int64_t lease = c->fenced ? 0 : c->lease;
		pthread_mutex_unlock(&c->mu);
		struct mv_view v;
		if (mv_read_view(e, &v, err, sizeof(err)))
			continue;
		json_t *mj = json_object();
		const struct ha_etcd_range *maint = &v.res.ranges[3];
		for (size_t i = 0; i < maint->n; i++)
			json_object_set_new(mj, maint->kvs[i].key + strlen(CL_PREFIX "maint/"),
					    json_string(maint->kvs[i].value));
		pthread_mutex_lock(&c->mu);
		json_decref(c->maint);
		c->maint = mj;
		pthread_mutex_unlock(&c->mu);
		const struct ha_etcd_range *moves = &v.res.ranges[2];
		for (size_t i = 0; lease && i < moves->n; i++)
			one_request(c, e, &v, &moves->kvs[i], lease);
		char mk[128];
		cl_key(mk, sizeof(mk), "maint", c->name);
		if (lease && ha_etcd_range_find(maint, mk)) {
			pthread_mutex_lock(&c->mover->mu);
			size_t nout = c->mover->nout;
			pthread_mutex_unlock(&c->mover->mu);
			size_t pending = 0; /* our requests not yet running */
			for (size_t i = 0; i < moves->n; i++) {
				const char *vm = moves->kvs[i].key + strlen(CL_PREFIX "moves/");
				char okey[128];
				cl_key(okey, sizeof(okey), "owner", vm);
				pending += owner_is_us(ha_etcd_range_find(&v.res.ranges[1], okey),
						       c->name, lease) &&
					   !busy(c->mover, vm);
			}
			if (nout + pending < MV_MAX_ACTIVE)
				mv_maintenance_round(c, e, lease, MV_MAX_ACTIVE - nout - pending);
		} else {
			if (c->mover->ntold) /* out of maintenance: the stays' reasons go */
				mv_maintenance_over(c);
			c->mover->ntold = 0; /* ...and are said again next time */
		}
		ha_etcd_txn_result_free(&v.res);
	}
	ha_etcd_free(e);
	return NULL;
}

/* ---- the listener ---- */

static void *listener(void *arg)
{
	struct ed_cluster *c = arg;
	struct ed_mover *m = c->mover;
	unsigned seq = 0;
	for (;;) {
		struct pollfd p[2] = {{m->lfd, POLLIN, 0}, {m->stop_fd, POLLIN, 0}};
		if (poll(p, 2, -1) < 0 && errno != EINTR)
			break;
		if (p[1].revents || atomic_load(&c->stop))
			break;
		if (!p[0].revents)
			continue;
		struct mv_conn *k = calloc(1, sizeof(*k));
		char err[ED_ERR_MAX];
		if (!k)
			continue;
		k->c = c;
		k->fd = ha_tcp_accept(m->lfd, 1000, k->peer, sizeof(k->peer), err, sizeof(err));
		snprintf(k->key, sizeof(k->key), " in %u", seq++); /* no VM name has a space */
		if (k->fd < 0 || spawn(c, k->key, false, mv_in_main, k)) {
			if (k->fd >= 0)
				close(k->fd);
			free(k);
		}
	}
	return NULL;
}

int ed_mover_start(struct ed_cluster *c, const struct ed_cluster_opts *o, char *err,
		   size_t errlen)
{
	struct ed_mover *m = calloc(1, sizeof(*m));
	if (!m)
		return -ENOMEM;
	pthread_mutex_init(&m->mu, NULL);
	m->lfd = -1;
	m->stop_fd = eventfd(0, EFD_CLOEXEC);
	c->mover = m;
	if (m->stop_fd < 0) {
		snprintf(err, errlen, "eventfd: %s", strerror(errno));
		return -errno;
	}
	if (o->migrate_listen) {
		const char *no = ha_tls_opts_refusal(&o->migrate_tls);
		struct ha_tls *t;
		if (no) {
			snprintf(err, errlen, "--migrate-listen %s: %s", o->migrate_listen, no);
			return -EINVAL;
		}
		if (ha_tls_new(&t, &o->migrate_tls, true, err, errlen))
			return -EINVAL;
		ha_tls_free(t); /* checked now; each connection makes its own */
		unsigned port;
		m->lfd = ha_tcp_listen(o->migrate_listen, &port, err, errlen);
		if (m->lfd < 0)
			return m->lfd;
		char host[100], ps[8];
		if (ha_split_hostport(o->migrate_listen, host, sizeof(host), ps, sizeof(ps)))
			host[0] = '\0';
		snprintf(c->migrate_addr, sizeof(c->migrate_addr), "%s%s%s:%u",
			 strchr(host, ':') ? "[" : "", host, strchr(host, ':') ? "]" : "", port);
		c->migrate_tls = o->migrate_tls;
		if (pthread_create(&m->listener, NULL, listener, c) == 0)
			m->listening = true;
	}
	if (pthread_create(&m->thread, NULL, mover, c) == 0)
		m->started = true;
	if (!m->started || (o->migrate_listen && !m->listening)) {
		snprintf(err, errlen, "cannot start the mover's threads");
		return -EAGAIN;
	}
	return 0;
}

void ed_mover_stop(struct ed_cluster *c)
{
	struct ed_mover *m = c->mover;
	if (!m)
		return;
	uint64_t one = 1;
	if (m->stop_fd >= 0 && write(m->stop_fd, &one, sizeof(one)) < 0) {
		/* the threads also see c->stop */
	}
	if (m->started)
		pthread_join(m->thread, NULL);
	if (m->listening)
		pthread_join(m->listener, NULL);
	for (size_t i = 0; i < 64; i++)
		if (m->joinable[i])
			pthread_join(m->workers[i], NULL);
	if (m->lfd >= 0)
		close(m->lfd);
	if (m->stop_fd >= 0)
		close(m->stop_fd);
	pthread_mutex_destroy(&m->mu);
	free(m);
	c->mover = NULL;
}

bool mv_tell_once(struct ed_cluster *c, const char *vm)
{
	struct ed_mover *m = c->mover;
	for (size_t i = 0; i < m->ntold; i++)
		if (!strcmp(m->told[i], vm))
			return false;
	if (m->ntold < 64)
		snprintf(m->told[m->ntold++], sizeof(m->told[0]), "%s", vm);
	return true;
}

int mv_stop_fd(struct ed_cluster *c)
{
	return c->mover->stop_fd;
}
