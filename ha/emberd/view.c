/* The cluster as the dashboard and the metrics see it (obs.h): a worker
 * thread with its own etcd client that, every interval, puts this host's
 * load/<h> under its lease, carries out maintenance requests, then reads
 * hosts/ load/ maint/ moves/ rules/ owner/ and keeps the result for the
 * loop.  The loop never waits on etcd: it hands documents over and reads
 * the last result under a mutex. */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ha/emberd/obs.h"
#include "ha/etcd.h"

#define PREFIX "ember/"

struct maint_req {
	char host[ED_NAME_MAX + 1];
	bool enter;
	char by[ED_NAME_MAX + 16];
	struct maint_req *next;
};

struct ed_view {
	struct ed_host *h;
	struct ed_cluster *c;
	struct ed_loop *loop;
	char host[ED_NAME_MAX + 1];
	uint64_t interval_ms;
	struct ha_etcd *e;
	pthread_t thread;
	bool started;
	atomic_bool stop;
	pthread_mutex_t mu; /* below */
	pthread_cond_t cv;
	char *load;		/* the next load/<h> value to put, NULL: none new */
	struct maint_req *reqs; /* maintenance requests, newest first */
	json_t *last;		/* the last read */
};

struct vev {
	struct ed_host *h;
	char kind[32];
	char detail[ED_ERR_MAX];
};

static void vev_on_loop(void *arg)
{
	struct vev *e = arg;
	ed_event(e->h, NULL, e->kind, "%s", e->detail);
	free(e);
}

__attribute__((format(printf, 3, 4))) static void post_event(struct ed_view *v, const char *kind,
							     const char *fmt, ...)
{
	struct vev *e = calloc(1, sizeof(*e));
	if (!e)
		return;
	e->h = v->h;
	snprintf(e->kind, sizeof(e->kind), "%s", kind);
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(e->detail, sizeof(e->detail), fmt, ap);
	va_end(ap);
	if (ed_loop_post(v->loop, vev_on_loop, e))
		free(e);
}

/* kind/ -> {name: value}: JSON objects kept as such, anything else as a
 * string (owner/ holds a plain host name, which may look like a number). */
static int read_kind(struct ed_view *v, const char *kind, json_t *into, char *err, size_t errlen)
{
	char key[64];
	snprintf(key, sizeof(key), PREFIX "%s/", kind);
	struct ha_etcd_range r;
	int ret = ha_etcd_get(v->e, key, true, &r, err, errlen);
	if (ret)
		return ret;
	json_t *o = json_object();
	for (size_t i = 0; o && i < r.n; i++) {
		const char *name = r.kvs[i].key + strlen(key);
		json_t *val = strcmp(kind, "owner") ? json_loads(r.kvs[i].value, 0, NULL) : NULL;
		json_object_set_new(o, name, val ? val : json_string(r.kvs[i].value));
	}
	ha_etcd_range_free(&r);
	json_object_set_new(into, kind, o ? o : json_object());
	return 0;
}

static void do_maint(struct ed_view *v, struct maint_req *q)
{
	char key[128], err[ED_ERR_MAX], val[256];
	snprintf(key, sizeof(key), PREFIX "maint/%s", q->host);
	struct timespec rt;
	clock_gettime(CLOCK_REALTIME, &rt);
	snprintf(val, sizeof(val), "{\"since\": %" PRIu64 ", \"by\": \"%s\"}",
		 (uint64_t)rt.tv_sec * 1000 + (uint64_t)rt.tv_nsec / 1000000, q->by);
	int r = q->enter ? ha_etcd_put(v->e, key, val, 0, NULL, err, sizeof(err))
			 : ha_etcd_delete(v->e, key, false, NULL, err, sizeof(err));
	if (r)
		post_event(v, "maintenance-failed", "host %s: %s maintenance: %s", q->host,
			   q->enter ? "enter" : "exit", err);
	else
		post_event(v, "maintenance", "host %s %s maintenance (by %s)", q->host,
			   q->enter ? "enters" : "leaves", q->by);
}

static void round_(struct ed_view *v)
{
	char err[ED_ERR_MAX] = "";
	pthread_mutex_lock(&v->mu);
	char *load = v->load;
	v->load = NULL;
	struct maint_req *reqs = v->reqs;
	v->reqs = NULL;
	pthread_mutex_unlock(&v->mu);
	int64_t lease = ed_cluster_lease(v->c);
	if (load && lease) {
		char key[128];
		snprintf(key, sizeof(key), PREFIX "load/%s", v->host);
		if (ha_etcd_put(v->e, key, load, lease, NULL, err, sizeof(err))) {
			/* the next sample tries again; the read below reports it */
		}
	}
	free(load);
	/* oldest first: requests were pushed newest first */
	struct maint_req *rev = NULL;
	while (reqs) {
		struct maint_req *n = reqs->next;
		reqs->next = rev;
		rev = reqs;
		reqs = n;
	}
	while (rev) {
		struct maint_req *n = rev->next;
		do_maint(v, rev);
		free(rev);
		rev = n;
	}
	static const char *const kinds[] = {"hosts", "load", "maint", "moves", "rules", "owner"};
	json_t *o = json_object();
	int r = 0;
	for (size_t i = 0; o && !r && i < sizeof(kinds) / sizeof(kinds[0]); i++)
		r = read_kind(v, kinds[i], o, err, sizeof(err));
	if (!o)
		return;
	json_object_set_new(o, "ok", json_boolean(!r));
	if (r)
		json_object_set_new(o, "error", json_string(err));
	pthread_mutex_lock(&v->mu);
	if (r && v->last) {
		/* keep the last good view, marked stale */
		json_object_set_new(v->last, "ok", json_false());
		json_object_set_new(v->last, "error", json_string(err));
		json_decref(o);
	} else {
		json_decref(v->last);
		v->last = o;
	}
	pthread_mutex_unlock(&v->mu);
}

static void *worker(void *arg)
{
	struct ed_view *v = arg;
	while (!atomic_load(&v->stop)) {
		round_(v);
		struct timespec ts;
		clock_gettime(CLOCK_MONOTONIC, &ts);
		ts.tv_sec += (time_t)(v->interval_ms / 1000);
		ts.tv_nsec += (long)(v->interval_ms % 1000) * 1000000;
		if (ts.tv_nsec >= 1000000000) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000;
		}
		pthread_mutex_lock(&v->mu);
		while (!atomic_load(&v->stop) && !v->reqs)
			if (pthread_cond_timedwait(&v->cv, &v->mu, &ts) == ETIMEDOUT)
				break;
		pthread_mutex_unlock(&v->mu);
	}
	return NULL;
}

int ed_view_start(struct ed_view **out, struct ed_host *h, struct ed_cluster *c,
		  const char *endpoints, uint64_t interval_ms, char *err, size_t errlen)
{
	struct ed_view *v = calloc(1, sizeof(*v));
	if (!v)
		return -ENOMEM;
	v->h = h;
	v->c = c;
	v->loop = ed_host_loop(h);
	snprintf(v->host, sizeof(v->host), "%s", ed_host_name(h));
	/* at most a second between reads: the dashboard polls every 2 s */
	v->interval_ms = interval_ms && interval_ms < 1000 ? interval_ms : 1000;
	pthread_mutex_init(&v->mu, NULL);
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&v->cv, &ca);
	pthread_condattr_destroy(&ca);
	int r = ha_etcd_new(&v->e, endpoints, 1000, err, errlen);
	if (!r && pthread_create(&v->thread, NULL, worker, v)) {
		snprintf(err, errlen, "metrics: cannot start its etcd thread");
		r = -EAGAIN;
	}
	if (r) {
		ha_etcd_free(v->e);
		free(v);
		return r;
	}
	v->started = true;
	*out = v;
	return 0;
}

void ed_view_stop(struct ed_view *v)
{
	if (!v)
		return;
	pthread_mutex_lock(&v->mu);
	atomic_store(&v->stop, true);
	pthread_cond_broadcast(&v->cv);
	pthread_mutex_unlock(&v->mu);
	if (v->started)
		pthread_join(v->thread, NULL);
	ha_etcd_free(v->e);
	free(v->load);
	while (v->reqs) {
		struct maint_req *n = v->reqs->next;
		free(v->reqs);
		v->reqs = n;
	}
	json_decref(v->last);
	pthread_mutex_destroy(&v->mu);
	pthread_cond_destroy(&v->cv);
	free(v);
}

void ed_view_put_load(struct ed_view *v, json_t *doc)
{
	char *s = json_dumps(doc, JSON_COMPACT);
	if (!s)
		return;
	pthread_mutex_lock(&v->mu);
	free(v->load);
	v->load = s;
	pthread_mutex_unlock(&v->mu);
}

json_t *ed_view_json(struct ed_view *v)
{
	pthread_mutex_lock(&v->mu);
	json_t *j = v->last ? json_deep_copy(v->last) : NULL;
	pthread_mutex_unlock(&v->mu);
	return j ? j
		 : json_pack("{s:{}, s:{}, s:{}, s:{}, s:{}, s:{}, s:b, s:s}", "hosts", "load",
			     "maint", "moves", "rules", "owner", "ok", 0, "error",
			     "not read from etcd yet");
}

int ed_view_maint(struct ed_view *v, const char *host, bool enter, const char *by)
{
	struct maint_req *q = calloc(1, sizeof(*q));
	if (!q)
		return -ENOMEM;
	snprintf(q->host, sizeof(q->host), "%s", host);
	snprintf(q->by, sizeof(q->by), "%s", by);
	q->enter = enter;
	pthread_mutex_lock(&v->mu);
	q->next = v->reqs;
	v->reqs = q;
	pthread_cond_broadcast(&v->cv);
	pthread_mutex_unlock(&v->mu);
	return 0;
}
