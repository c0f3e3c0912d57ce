/* The target side of a move (move.h): one connection from a source
 * emberd.  Check in etcd that moves/<vm> names us and that the source
 * owns the VM with the token it says; launch a receiving ember staged as
 * a start is (move_vm.c); relay the stream to it through a filter that
 * withholds the source's GOGO record; then GOGO goes on only once
 * owner/<vm> names us under a new token (the source's transaction).
 * Anything else, and the receiving ember is killed and its jail removed:
 * before that transaction the target never runs. */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "ha/api_client.h"
#include "ha/emberd/move.h"
#include "ha/migrate/watch.h"

#define HDR 32 /* a stream record's header (docs/migration.md) */
#define DECIDE_MS 120000

struct in {
	struct ed_cluster *c;
	char vm[ED_NAME_MAX], from[ED_NAME_MAX];
	int64_t token, move_rev;
	pid_t pid;
	char sock[PATH_MAX], why[ED_ERR_MAX];
	int r;
	bool ok;
};

static void sleep_ms(int ms)
{
	struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000};
	nanosleep(&ts, NULL);
}

static void begin_on_loop(void *arg)
{
	struct in *m = arg;
	struct ed_vm *vm = ed_host_find(m->c->h, m->vm);
	m->r = vm ? ed_vm_move_in_begin(vm, m->from, &m->pid, m->why, sizeof(m->why))
		  : (snprintf(m->why, sizeof(m->why), "no VM file for %s on the target", m->vm),
		     -ENOENT);
}

static void end_on_loop(void *arg)
{
	struct in *m = arg;
	struct ed_vm *vm = ed_host_find(m->c->h, m->vm);
	if (vm)
		ed_vm_move_in_end(vm, m->ok);
}

/* Does etcd say the source may send vm here?  NULL, or why not. */
static const char *check(struct in *m, struct ha_etcd *e, char *why, size_t len)
{
	struct ed_cluster *c = m->c;
	char okey[128], mkey[128], err[ED_ERR_MAX];
	cl_key(okey, sizeof(okey), "owner", m->vm);
	cl_key(mkey, sizeof(mkey), "moves", m->vm);
	pthread_mutex_lock(&c->mu);
	bool joined = c->lease && !c->fenced;
	pthread_mutex_unlock(&c->mu);
	if (!joined)
		return snprintf(why, len, "%s has no lease (fenced, or etcd unreachable)", c->name),
		       why;
	struct ha_etcd_range o = {0}, mv = {0};
	if (ha_etcd_get(e, okey, false, &o, err, sizeof(err)) ||
	    ha_etcd_get(e, mkey, false, &mv, err, sizeof(err))) {
		ha_etcd_range_free(&o);
		return ed_fmt(why, len, "etcd: %s", err), why;
	}
	json_t *j = mv.n ? json_loads(mv.kvs[0].value, 0, NULL) : NULL;
	const char *to = json_string_value(json_object_get(j, "to"));
	const char *no = NULL;
	if (!mv.n || mv.kvs[0].create_revision != m->move_rev || !to || strcmp(to, c->name))
		no = "moves/<vm> does not ask for this move to this host";
	else if (!o.n || strcmp(o.kvs[0].value, m->from) || o.kvs[0].mod_revision != m->token)
		no = "the sending host does not own the VM with that token";
	if (no)
		snprintf(why, len, "%s", no);
	json_decref(j);
	ha_etcd_range_free(&o);
	ha_etcd_range_free(&mv);
	return no ? why : NULL;
}

static int write_all(int fd, const unsigned char *p, size_t n)
{
	while (n) {
		ssize_t w = write(fd, p, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return -EPIPE;
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

/* Pass records from net (the relay's side) to vmm, and anything back,
 * withholding a GOGO record into gogo.  1: the stream ended with GOGO
 * held; 0: it ended without; -1: the VMM's side ended first (it failed). */
static int filter(struct in *m, int net, int vmm, unsigned char gogo[HDR])
{
	unsigned char buf[65536], hdr[HDR];
	size_t hlen = 0;
	uint64_t left = 0, bytes = 0, said = 0;
	bool held = false;
	for (;;) {
		struct pollfd p[2] = {{net, POLLIN, 0}, {vmm, POLLIN, 0}};
		if (poll(p, 2, 200) < 0 && errno != EINTR)
			return -1;
		if (atomic_load(&m->c->stop))
			return -1;
		if (p[1].revents) {
			ssize_t n = read(vmm, buf, sizeof(buf));
			if (n <= 0 || write_all(net, buf, (size_t)n))
				return -1;
		}
		if (!p[0].revents)
			continue;
		ssize_t n = read(net, buf, sizeof(buf));
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return held ? 1 : 0;
		bytes += (uint64_t)n;
		if (bytes - said >= (1u << 20)) {
			said = bytes;
			mv_progress(m->c, m->vm, "receiving", bytes);
		}
		for (size_t i = 0; i < (size_t)n;) {
			if (held)
				return -1; /* bytes after GOGO: not a stream we know (post-copy) */
			if (left) {
				size_t k = (size_t)n - i < left ? (size_t)n - i : (size_t)left;
				if (write_all(vmm, buf + i, k))
					return -1;
				i += k;
				left -= k;
				continue;
			}
			size_t k = HDR - hlen < (size_t)n - i ? HDR - hlen : (size_t)n - i;
			memcpy(hdr + hlen, buf + i, k);
			hlen += k;
			i += k;
			if (hlen < HDR)
				continue;
			hlen = 0;
			if (!memcmp(hdr, "GOGO", 4)) {
				memcpy(gogo, hdr, HDR);
				held = true;
				continue;
			}
			left = (uint64_t)hdr[4] | (uint64_t)hdr[5] << 8 | (uint64_t)hdr[6] << 16 |
			       (uint64_t)hdr[7] << 24;
			if (write_all(vmm, hdr, HDR))
				return -1;
		}
	}
}

/* After GOGO: does owner/<vm> name us under a new token?  1 yes (the
 * token in *token), 0 no (never will: stop). */
static int decide(struct in *m, struct ha_etcd *e, int64_t *token)
{
	struct ed_cluster *c = m->c;
	char okey[128], mkey[128], err[ED_ERR_MAX];
	cl_key(okey, sizeof(okey), "owner", m->vm);
	cl_key(mkey, sizeof(mkey), "moves", m->vm);
	for (uint64_t end = ed_now_ms() + DECIDE_MS; ed_now_ms() < end; sleep_ms(5)) {
		if (atomic_load(&c->stop))
			return 0;
		pthread_mutex_lock(&c->mu);
		int64_t lease = c->fenced ? 0 : c->lease;
		pthread_mutex_unlock(&c->mu);
		if (!lease)
			return 0;
		/* both keys at one revision: the source's txn changes them together */
		const struct ha_etcd_op reads[] = {{HA_ETCD_RANGE, okey, NULL, 0, false},
						   {HA_ETCD_RANGE, mkey, NULL, 0, false}};
		const struct ha_etcd_txn t = {NULL, 0, reads, 2, NULL, 0};
		struct ha_etcd_txn_result res;
		if (ha_etcd_txn_run(e, &t, &res, err, sizeof(err)))
			continue;
		if (res.n != 2) {
			ha_etcd_txn_result_free(&res);
			continue;
		}
		const struct ha_etcd_range o = res.ranges[0], mv = res.ranges[1];
		int v = -1;
		if (!o.n)
			v = 0; /* the source's lease ended before its transaction */
		else if (!strcmp(o.kvs[0].value, c->name) && o.kvs[0].lease == lease &&
			 o.kvs[0].mod_revision > m->token)
			v = 1, *token = o.kvs[0].mod_revision;
		else if (strcmp(o.kvs[0].value, m->from) || o.kvs[0].mod_revision != m->token)
			v = 0; /* another claim */
		else if (!mv.n || mv.kvs[0].create_revision != m->move_rev)
			v = 0; /* the source gave the move up */
		ha_etcd_txn_result_free(&res);
		if (v >= 0)
			return v;
	}
	return 0;
}

/* The target VMM's migration phase now (MIG_PH_NOANSWER: no answer). */
static enum mig_phase phase_of(struct in *m)
{
	struct ha_api_reply rep = {0};
	char err[ED_ERR_MAX];
	struct mig_status st;
	if (ha_api_call(m->sock, "GET", "/migration", NULL, -1, 1000, &rep, err, sizeof(err)))
		return MIG_PH_NOANSWER;
	bool have = rep.status == 200 && !mig_status_parse(rep.body, &st);
	json_decref(rep.body);
	return have ? st.phase : MIG_PH_NOANSWER;
}

/* The target VMM runs after GOGO: wait for it, resolve if it stays
 * ready.  The figures for the event. */
static void run_it(struct in *m, bool resolve_now, double *down, uint64_t *total)
{
	*down = -1;
	*total = 0;
	for (int i = 0; i < 250; i++, sleep_ms(20)) {
		struct ha_api_reply rep = {0};
		char err[ED_ERR_MAX];
		struct mig_status st;
		if (ha_api_call(m->sock, "GET", "/migration", NULL, -1, 1000, &rep, err,
				sizeof(err)))
			continue;
		bool have = rep.status == 200 && !mig_status_parse(rep.body, &st);
		json_decref(rep.body);
		if (have && st.phase == MIG_PH_RUNNING) {
			*down = st.downtime_ms;
			*total = st.total_ms;
			return;
		}
		if (have && st.phase == MIG_PH_READY && i == (resolve_now ? 0 : 100)) {
			json_t *b = json_pack("{s:s}", "outcome", "resume");
			if (ha_api_ok(m->sock, "PUT", "/migration/resolve", b, -1, 5000, NULL, err,
				      sizeof(err)))
				cl_event(m->c, m->vm, "move-error", "resolve resume: %s", err);
			json_decref(b);
		}
	}
}

static void receive(struct in *m, struct ha_conn *k, struct ha_etcd *e)
{
	struct ed_cluster *c = m->c;
	char why[ED_ERR_MAX];
	int v[2] = {-1, -1}, a[2] = {-1, -1};
	struct mig_relay rl;
	bool relaying = false;
	if (mv_on_loop(c, begin_on_loop, m) || m->r) {
		cl_event(c, m->vm, "move-refused", "from %s: %s", m->from, m->why);
		if (mv_send_json(k, json_pack("{s:b, s:s}", "ok", 0, "error", m->why), why,
				 sizeof(why))) {
			/* it sees the end */
		}
		ha_conn_free(k);
		return;
	}
	snprintf(m->sock, sizeof(m->sock), "/proc/%d/root/api.sock", (int)m->pid);
	const char *no = "the receiving ember's API never answered";
	for (int i = 0; i < 500; i++, sleep_ms(20)) {
		struct ha_api_reply rep = {0};
		if (!ha_api_call(m->sock, "GET", "/migration", NULL, -1, 1000, &rep, why,
				 sizeof(why))) {
			json_decref(rep.body);
			no = NULL;
			break;
		}
	}
	if (!no && (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, v) ||
		    socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, a)))
		no = "socketpair failed";
	if (!no) {
		json_t *b = json_pack("{s:b}", "use_saved_paths", 1);
		if (ha_api_ok(m->sock, "PUT", "/migration/receive", b, v[0], 10000, NULL, why,
			      sizeof(why)))
			no = why;
		json_decref(b);
		close(v[0]);
		v[0] = -1;
	}
	pthread_mutex_lock(&c->mu);
	int64_t lease = c->lease;
	pthread_mutex_unlock(&c->mu);
	char ls[32];
	snprintf(ls, sizeof(ls), "%" PRId64, lease);
	if (no) {
		if (mv_send_json(k, json_pack("{s:b, s:s}", "ok", 0, "error", no), why,
				 sizeof(why))) {
			/* it sees the connection end */
		}
		ha_conn_free(k);
		goto stop;
	}
	if (mv_send_json(k, json_pack("{s:b, s:s}", "ok", 1, "lease", ls), why, sizeof(why))) {
		ha_conn_free(k);
		no = "the sending host went away";
		goto stop;
	}
	mv_crash_point("dst-receiving");
	if (mig_relay_start(&rl, k, a[0])) {
		a[0] = -1;
		no = "cannot start the relay";
		goto stop;
	}
	a[0] = -1;
	relaying = true;
	unsigned char gogo[HDR];
	int f = filter(m, a[1], v[1], gogo);
	bool have_gogo = f == 1;
	/* The stream cut after REDY, GOGO lost on the way: the source may
	 * still have handed over (its GOGO left it whole), so etcd decides
	 * as with GOGO held; a resume then needs no GOGO (resolve). */
	if (f == 0 && phase_of(m) == MIG_PH_READY)
		f = 1;
	if (f != 1) {
		no = f == 0 ? "the source never handed over (no GOGO): removed here"
			    : "the receiving ember failed";
		goto stop;
	}
	mv_crash_point("dst-ready");
	uint64_t held = ed_now_ms(); /* GOGO waits: part of the downtime ember cannot see */
	int64_t token = 0;
	if (!decide(m, e, &token)) {
		no = "the ownership never moved here: removed here";
		goto stop;
	}
	pthread_mutex_lock(&c->mu);
	cl_claim_set(c, m->vm, token);
	pthread_mutex_unlock(&c->mu);
	mv_crash_point("dst-owned");
	held = ed_now_ms() - held;
	if (have_gogo && write_all(v[1], gogo, HDR))
		have_gogo = false; /* it waits in ready: resolved */
	double down;
	uint64_t total;
	run_it(m, !have_gogo, &down, &total);
	m->ok = true;
	if (mv_on_loop(c, end_on_loop, m)) {
		/* stopping */
	}
	/* ember's figures count from the source's pause to GOGO and the
	 * resume; GOGO's wait for the ownership transaction is added */
	cl_event(c, m->vm, "moved",
		 "from %s: downtime %.1f ms, total %" PRIu64 " ms (ember's %.1f ms + %" PRIu64
		 " ms until owner/%s was ours; token %" PRId64 ")",
		 m->from, down < 0 ? -1 : down + (double)held, total + held, down, held, m->vm,
		 token);
stop:
	if (no) {
		m->ok = false;
		if (mv_on_loop(c, end_on_loop, m)) {
			/* stopping */
		}
		cl_event(c, m->vm, "move-failed", "from %s: %s", m->from, no);
	}
	if (relaying)
		mig_relay_finish(&rl, 0);
	for (int i = 0; i < 2; i++) {
		if (v[i] >= 0)
			close(v[i]);
		if (a[i] >= 0)
			close(a[i]);
	}
}

void *mv_in_main(void *arg)
{
	struct mv_conn *kc = arg;
	struct ed_cluster *c = kc->c;
	struct ha_conn *k = NULL;
	struct ha_tls *t = NULL;
	struct ha_etcd *e = NULL;
	json_t *j = NULL;
	char why[ED_ERR_MAX];
	struct in *m = calloc(1, sizeof(*m));
	if (!m || ha_tls_new(&t, &c->migrate_tls, true, why, sizeof(why))) {
		close(kc->fd);
		goto out;
	}
	int r = ha_conn_handshake(t, kc->fd, NULL, 5000, &k, why, sizeof(why));
	ha_tls_free(t);
	if (r) {
		cl_event(c, NULL, "move-refused", "%s failed authentication: %s", kc->peer, why);
		goto out;
	}
	if (mv_recv_json(k, &j, 5000, why, sizeof(why))) {
		cl_event(c, NULL, "move-refused", "%s: %s", kc->peer, why);
		goto out;
	}
	m->c = c;
	const char *vm = json_string_value(json_object_get(j, "vm"));
	const char *from = json_string_value(json_object_get(j, "from"));
	snprintf(m->vm, sizeof(m->vm), "%s", vm ? vm : "");
	snprintf(m->from, sizeof(m->from), "%s", from ? from : "");
	m->token = json_integer_value(json_object_get(j, "token"));
	m->move_rev = json_integer_value(json_object_get(j, "move"));
	const char *no = !vm || !from ? "a hello without vm or from" : NULL;
	if (!no && ha_etcd_new(&e, c->endpoints, 2000, why, sizeof(why)))
		no = why;
	char cwhy[ED_ERR_MAX];
	if (!no)
		no = check(m, e, cwhy, sizeof(cwhy));
	if (no) {
		cl_event(c, vm, "move-refused", "from %s (%s): %s", from ? from : "?", kc->peer,
			 no);
		if (mv_send_json(k, json_pack("{s:b, s:s}", "ok", 0, "error", no), why,
				 sizeof(why))) {
			/* it sees the end */
		}
		goto out;
	}
	receive(m, k, e);
	k = NULL;
out:
	ha_conn_free(k);
	json_decref(j);
	ha_etcd_free(e);
	free(m);
	mv_worker_done(c, kc->key);
	free(kc);
	return NULL;
}
