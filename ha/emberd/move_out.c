/* The source side of a move (move.h): connect to the target's emberd,
 * authenticate, hello; hand our VMM its end of the stream (PUT
 * /migration/send) and relay; once the stream ended with the VMM's GOGO
 * (it stopped for good), ONE transaction moves owner/<vm> to the target
 * under a new token.  Also the hello's framing, shared with move_in.c. */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "ha/api_client.h"
#include "ha/emberd/move.h"
#include "ha/migrate/watch.h"

#define CONNECT_MS 5000
#define HELLO_MS 20000 /* the target stages a jail and starts an ember first */
#define MOVE_TIMEOUT_MS 60000
#define DOWNTIME_MS 300

int mv_send_json(struct ha_conn *k, json_t *j, char *err, size_t errlen)
{
	char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;
	json_decref(j);
	if (!text)
		return snprintf(err, errlen, "out of memory"), -ENOMEM;
	size_t n = strlen(text);
	char hdr[24];
	snprintf(hdr, sizeof(hdr), "%08x", (unsigned)(n & 0xffffffffu));
	int r = n < 65536 ? ha_conn_xfer(k, true, hdr, 8, HELLO_MS, err, errlen) : -EMSGSIZE;
	if (!r)
		r = ha_conn_xfer(k, true, text, n, HELLO_MS, err, errlen);
	free(text);
	return r;
}

int mv_recv_json(struct ha_conn *k, json_t **j, int timeout_ms, char *err, size_t errlen)
{
	char hdr[9] = "", *end;
	int r = ha_conn_xfer(k, false, hdr, 8, timeout_ms, err, errlen);
	if (r)
		return r;
	unsigned long n = strtoul(hdr, &end, 16);
	if (*end || n == 0 || n >= 65536)
		return snprintf(err, errlen, "the peer is not an emberd (bad hello)"), -EPROTO;
	char *buf = calloc(1, n + 1);
	if (!buf)
		return -ENOMEM;
	r = ha_conn_xfer(k, false, buf, n, timeout_ms, err, errlen);
	json_error_t je;
	*j = r ? NULL : json_loads(buf, 0, &je);
	free(buf);
	if (!r && !json_is_object(*j)) {
		json_decref(*j);
		*j = NULL;
		return snprintf(err, errlen, "the peer's hello is not a JSON object"), -EPROTO;
	}
	return r;
}

/* ---- the loop's part ---- */

struct begin {
	struct mv_req *q;
	char sock[PATH_MAX], why[ED_ERR_MAX];
	int r;
};

static void begin_on_loop(void *arg)
{
	struct begin *b = arg;
	struct ed_vm *vm = ed_host_find(b->q->c->h, b->q->vm);
	b->r = vm ? ed_vm_move_out_begin(vm, b->q->to, b->sock, sizeof(b->sock), b->why,
					 sizeof(b->why))
		  : (snprintf(b->why, sizeof(b->why), "no such VM here"), -ENOENT);
}

struct end {
	struct mv_req *q;
	bool left;
	const char *cause;
};

static void end_on_loop(void *arg)
{
	struct end *e = arg;
	struct ed_vm *vm = ed_host_find(e->q->c->h, e->q->vm);
	if (vm)
		ed_vm_move_out_end(vm, e->left, e->cause);
}

struct prog {
	struct ed_cluster *c;
	char vm[ED_NAME_MAX], phase[24];
	uint64_t bytes;
};

static void prog_on_loop(void *arg)
{
	struct prog *p = arg;
	struct ed_vm *vm = ed_host_find(p->c->h, p->vm);
	if (vm)
		ed_vm_move_progress(vm, p->phase, p->bytes);
	free(p);
}

void mv_progress(struct ed_cluster *c, const char *vm, const char *phase, uint64_t bytes)
{
	struct prog *p = calloc(1, sizeof(*p));
	if (!p)
		return;
	p->c = c;
	snprintf(p->vm, sizeof(p->vm), "%s", vm);
	snprintf(p->phase, sizeof(p->phase), "%s", phase);
	p->bytes = bytes;
	if (ed_loop_post(c->loop, prog_on_loop, p))
		free(p);
}

/* ---- steps ---- */

static void sleep_ms(int ms)
{
	struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000};
	nanosleep(&ts, NULL);
}

/* Connect, authenticate, hello: 0 with *k and the target's lease. */
static int hello(struct mv_req *q, struct ha_conn **k, int64_t *lease, char *why, size_t len)
{
	struct ed_cluster *c = q->c;
	int fd = ha_tcp_connect(q->addr, CONNECT_MS, why, len);
	if (fd < 0)
		return fd;
	struct ha_tls *t;
	int r = ha_tls_new(&t, &c->migrate_tls, false, why, len);
	if (r) {
		close(fd);
		return r;
	}
	char host[256] = "", port[8];
	if (ha_split_hostport(q->addr, host, sizeof(host), port, sizeof(port)))
		host[0] = '\0';
	r = ha_conn_handshake(t, fd, host[0] ? host : NULL, CONNECT_MS, k, why, len);
	ha_tls_free(t);
	if (r)
		return r;
	json_t *j = NULL;
	r = mv_send_json(*k,
			 json_pack("{s:s, s:s, s:I, s:I}", "vm", q->vm, "from", c->name, "token",
				   (json_int_t)q->token, "move", (json_int_t)q->move_rev),
			 why, len);
	if (!r)
		r = mv_recv_json(*k, &j, HELLO_MS, why, len);
	if (!r && !json_is_true(json_object_get(j, "ok"))) {
		const char *e = json_string_value(json_object_get(j, "error"));
		snprintf(why, len, "%s refused: %s", q->to, e ? e : "no reason given");
		r = -EPERM;
	}
	const char *ls = json_string_value(json_object_get(j, "lease"));
	*lease = ls ? strtoll(ls, NULL, 10) : 0;
	json_decref(j);
	if (r) {
		ha_conn_free(*k);
		*k = NULL;
	}
	return r;
}

enum outcome { O_MOVED, O_NOT_APPLIED, O_LOST };

/* The hand-over's one transaction: owner/<vm> = target under its lease
 * (a new mod_revision: the new owner's token), moves/<vm> deleted, if
 * owner/<vm> still has our token and the request is still this one. */
static enum outcome commit(struct mv_req *q, struct ha_etcd *e, int64_t lease, char *why,
			   size_t len)
{
	char okey[128], mkey[128];
	cl_key(okey, sizeof(okey), "owner", q->vm);
	cl_key(mkey, sizeof(mkey), "moves", q->vm);
	struct ha_etcd_cmp cmp[2] = {{okey, HA_ETCD_MOD, HA_ETCD_EQ, q->token, NULL},
				     {mkey, HA_ETCD_CREATE, HA_ETCD_EQ, q->move_rev, NULL}};
	struct ha_etcd_op ops[2] = {{HA_ETCD_PUT, okey, q->to, lease, false},
				    {HA_ETCD_DELETE, mkey, NULL, 0, false}};
	struct ha_etcd_txn t = {cmp, 2, ops, 2, NULL, 0};
	struct ha_etcd_txn_result res;
	int r = ha_etcd_txn_run(e, &t, &res, why, len);
	if (!r) {
		bool ok = res.succeeded;
		ha_etcd_txn_result_free(&res);
		if (!ok)
			snprintf(why, len, "owner/%s is no longer ours (token %" PRId64 ")", q->vm,
				 q->token);
		return ok ? O_MOVED : O_LOST;
	}
	/* no answer, or refused (the target's lease gone): what does etcd hold? */
	for (int i = 0; i < 50 && !atomic_load(&q->c->stop); i++, sleep_ms(200)) {
		struct ha_etcd_range rg;
		char err[ED_ERR_MAX];
		if (ha_etcd_get(e, okey, false, &rg, err, sizeof(err)))
			continue;
		enum outcome o = O_LOST;
		if (rg.n && rg.kvs[0].mod_revision == q->token)
			o = O_NOT_APPLIED;
		else if (rg.n && !strcmp(rg.kvs[0].value, q->to) && rg.kvs[0].mod_revision > q->token)
			o = O_MOVED;
		ha_etcd_range_free(&rg);
		return o;
	}
	return O_LOST; /* unknown: never run it here on a guess */
}

static void fail(struct mv_req *q, struct ha_etcd *e, const char *why)
{
	mv_delete_request(e, q->vm, q->move_rev);
	cl_event(q->c, q->vm, "move-failed", "to %s: %s (it runs on here)", q->to, why);
	struct end en = {q, false, "move failed"};
	if (mv_on_loop(q->c, end_on_loop, &en)) {
		/* stopping */
	}
}

/* Watch our VMM until its stream ended with GOGO (true) or the move
 * failed (false, why). */
static bool watch(struct mv_req *q, const char *sock, struct mig_relay *rl, char *why, size_t len)
{
	uint64_t t0 = ed_now_ms(), said = 0;
	bool cancelled = false;
	for (;;) {
		if (atomic_load(&rl->st.to_net_done) &&
		    mig_stream_ends_with_gogo(rl->st.tail, rl->st.tail_len))
			return true;
		if (atomic_load(&q->c->stop))
			return snprintf(why, len, "emberd is stopping"), false;
		struct ha_api_reply rep = {0};
		char err[ED_ERR_MAX];
		int r = ha_api_call(sock, "GET", "/migration", NULL, -1, 1000, &rep, err,
				    sizeof(err));
		struct mig_status st = {0};
		bool have = !r && rep.status == 200 && !mig_status_parse(rep.body, &st);
		json_decref(r ? NULL : rep.body);
		if (r && ha_api_gone(r)) {
			/* exited: after GOGO, the relay may still be passing it on */
			for (int i = 0; i < 100 && !atomic_load(&rl->done) &&
					!atomic_load(&rl->st.to_net_done);
			     i++)
				sleep_ms(20);
			if (atomic_load(&rl->st.to_net_done) &&
			    mig_stream_ends_with_gogo(rl->st.tail, rl->st.tail_len))
				return true;
			return snprintf(why, len, "the source ember exited before its hand-over"),
			       false;
		}
		if (have && (st.phase == MIG_PH_FAILED || st.phase == MIG_PH_CANCELLED))
			return snprintf(why, len, "the source ember: %s",
					st.error[0] ? st.error : mig_phase_name(st.phase)),
			       false;
		if (have && st.phase == MIG_PH_HANDOVER_UNKNOWN) {
			/* GOGO never left: the target cannot run it (move_in.c) */
			json_t *b = json_pack("{s:s}", "outcome", "resume");
			if (ha_api_ok(sock, "PUT", "/migration/resolve", b, -1, 5000, NULL, err,
				      sizeof(err)))
				cl_event(q->c, q->vm, "move-failed", "resolve resume: %s", err);
			json_decref(b);
			return snprintf(why, len, "the stream was cut at the hand-over"), false;
		}
		if (have && ed_now_ms() - said >= 200) {
			said = ed_now_ms();
			mv_progress(q->c, q->vm, mig_phase_name(st.phase), st.bytes_sent);
		}
		if (!cancelled && ed_now_ms() - t0 > MOVE_TIMEOUT_MS + 10000) {
			cancelled = true; /* the VMM's own timeout should have ended it */
			json_t *b = json_object();
			if (ha_api_ok(sock, "PUT", "/migration/cancel", b, -1, 5000, NULL, err,
				      sizeof(err))) {
				/* past the hand-over point, or gone: the next look says */
			}
			json_decref(b);
		}
		/* the API every 20 ms; GOGO's passing every 1 ms (it starts the
		 * ownership transaction: GOGO waits for it at the target) */
		for (int i = 0; i < 20 && !atomic_load(&rl->st.to_net_done); i++)
			sleep_ms(1);
	}
}

void *mv_out_main(void *arg)
{
	struct mv_req *q = arg;
	struct ed_cluster *c = q->c;
	struct ha_etcd *e = NULL;
	char why[ED_ERR_MAX] = "";
	struct begin b = {.q = q};
	uint64_t t0 = ed_now_ms();
	if (ha_etcd_new(&e, c->endpoints, 2000, why, sizeof(why)))
		goto done;
	if (mv_on_loop(c, begin_on_loop, &b))
		goto done;
	if (b.r) {
		mv_delete_request(e, q->vm, q->move_rev);
		cl_event(c, q->vm, "move-failed", "to %s: %s", q->to, b.why);
		goto done;
	}
	cl_event(c, q->vm, "move", "to %s (%s, request %" PRId64 ", token %" PRId64 ")", q->to,
		 q->reason, q->move_rev, q->token);
	struct ha_conn *k = NULL;
	int64_t lease = 0;
	if (hello(q, &k, &lease, why, sizeof(why))) {
		fail(q, e, why);
		goto done;
	}
	mv_crash_point("src-hello");
	int sv[2];
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv)) {
		ha_conn_free(k);
		fail(q, e, "socketpair failed");
		goto done;
	}
	json_t *body = json_pack("{s:I, s:I, s:s}", "downtime_ms", (json_int_t)DOWNTIME_MS,
				 "timeout_ms", (json_int_t)MOVE_TIMEOUT_MS, "mode", "precopy");
	int r = ha_api_ok(b.sock, "PUT", "/migration/send", body, sv[0], 10000, NULL, why,
			  sizeof(why));
	json_decref(body);
	close(sv[0]);
	struct mig_relay rl;
	if (r || mig_relay_start(&rl, k, sv[1])) {
		if (!r)
			k = NULL; /* taken over and freed */
		ha_conn_free(k);
		if (r)
			close(sv[1]);
		fail(q, e, r ? why : "cannot start the relay");
		goto done;
	}
	mv_crash_point("src-sending"); /* its VMM sends, the relay runs */
	bool handed = watch(q, b.sock, &rl, why, sizeof(why));
	/* handed over: all of its stream went out already; the target keeps
	 * its side open until it owns the VM, so do not wait for the end */
	mig_relay_finish(&rl, handed ? 0 : 2000);
	if (!handed) {
		fail(q, e, why);
		goto done;
	}
	mv_crash_point("src-handover");
	enum outcome o = commit(q, e, lease, why, sizeof(why));
	if (o == O_MOVED) {
		pthread_mutex_lock(&c->mu);
		cl_claim_drop(c, q->vm);
		pthread_mutex_unlock(&c->mu);
		mv_crash_point("src-txn");
		cl_event(c, q->vm, "handed-over",
			 "to %s: owner/%s is %s's now (%" PRIu64 " ms since the request)", q->to,
			 q->vm, q->to, ed_now_ms() - t0);
	} else {
		mv_delete_request(e, q->vm, q->move_rev);
		cl_event(c, q->vm, "move-failed",
			 "to %s: its VMM handed over but the ownership did not move (%s): %s",
			 q->to, why,
			 o == O_NOT_APPLIED ? "still ours: it starts here again from its latest "
					      "snapshot"
					    : "another host owns it now");
	}
	/* left either way: its ember exits after GOGO; still ours (not
	 * applied): the poller's ensure starts it again */
	struct end en = {q, true, ""};
	if (mv_on_loop(c, end_on_loop, &en)) {
		/* stopping */
	}
done:
	ha_etcd_free(e);
	mv_worker_done(c, q->vm);
	free(q);
	return NULL;
}
