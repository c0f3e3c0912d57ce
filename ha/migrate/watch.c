/* Watching a migration to its end (ha/migrate/watch.h): GET /migration at
 * each watched end every few tens of milliseconds, the progress line, the
 * hand-over rules applied with PUT /migration/resolve, the summary. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "ha/api_client.h"
#include "ha/migrate/watch.h"

#define CALL_MS 2000	/* one GET /migration or resolve */
#define SETTLE_MS 1500	/* how long a state must hold before it counts */
#define LATE_MS 20000	/* past the migration's timeout, before giving up */
#define CANCEL_MS 15000 /* after a cancel at the deadline */
#define RESOLVE_TRIES 3

static volatile sig_atomic_t signals_seen;

static void on_signal(int sig)
{
	signals_seen++;
	if (signals_seen > 1)
		signal(sig, SIG_DFL);
}

/* SIGINT / SIGTERM: the first cancels (the source, if watched) or cuts
 * the stream; the second leaves at once. */
static void signals_install(void)
{
	struct sigaction sa = {.sa_handler = on_signal}; /* no SA_RESTART: sleeps end */
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
}

void mig_say(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fputs("ember migrate: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
}

static int64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(int ms)
{
	struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000};
	nanosleep(&ts, NULL); /* a signal ends it early: fine */
}

/* ---- the relay thread ---- */

static void *relay_main(void *arg)
{
	struct mig_relay *r = arg;
	r->rc = ha_relay(r->conn, r->local, r->stop[0], &r->st, r->err, sizeof(r->err));
	/* The VMM must see the end at once (not when we exit): both ways. */
	shutdown(r->local, SHUT_RDWR);
	ha_conn_free(r->conn);
	r->conn = NULL;
	atomic_store(&r->done, true);
	return NULL;
}

int mig_relay_start(struct mig_relay *r, struct ha_conn *c, int local)
{
	memset(r, 0, sizeof(*r));
	r->conn = c;
	r->local = local;
	int e = pipe2(r->stop, O_CLOEXEC) ? errno : pthread_create(&r->thread, NULL, relay_main, r);
	if (e) {
		ha_conn_free(c);
		close(local);
		return -e;
	}
	return 0;
}

void mig_relay_finish(struct mig_relay *r, int drain_ms)
{
	for (int64_t end = now_ms() + drain_ms; !atomic_load(&r->done) && now_ms() < end;)
		sleep_ms(10);
	if (!atomic_load(&r->done) && write(r->stop[1], "x", 1) != 1)
		mig_say("cannot stop the relay: %s", strerror(errno));
	pthread_join(r->thread, NULL);
	close(r->stop[0]);
	close(r->stop[1]);
	close(r->local);
}

/* ---- one end ---- */

struct end {
	const char *sock; /* NULL: not watched */
	struct mig_status st;
	enum mig_phase phase;
	bool committed; /* seen at stop-and-copy or later, or gogo */
	bool gogo;	/* its stream ended with GOGO, all of it relayed */
	char err[HA_ERR_MAX];
};

static void poll_end(struct end *e)
{
	struct ha_api_reply rep;
	if (!e->sock)
		return;
	int r = ha_api_call(e->sock, "GET", "/migration", NULL, -1, CALL_MS, &rep, e->err,
			    sizeof(e->err));
	struct mig_status st;
	if (r)
		e->phase = ha_api_gone(r) ? MIG_PH_GONE : MIG_PH_NOANSWER;
	else if (rep.status == 200 && !mig_status_parse(rep.body, &st))
		e->st = st, e->phase = st.phase;
	else
		e->phase = MIG_PH_NOANSWER;
	json_decref(r ? NULL : rep.body);
	if (e->phase >= MIG_PH_STOP_AND_COPY && e->phase <= MIG_PH_COMPLETED)
		e->committed = true;
}

/* PUT /migration/resolve {"outcome": outcome} at e: 0 or -errno (said). */
static int resolve(const struct end *e, const char *outcome)
{
	char err[HA_ERR_MAX];
	json_t *body = json_pack("{s:s}", "outcome", outcome);
	int r = ha_api_ok(e->sock, "PUT", "/migration/resolve", body, -1, CALL_MS, NULL, err,
			  sizeof(err));
	json_decref(body);
	if (r)
		mig_say("resolve %s at %s: %s", outcome, e->sock, err);
	else
		mig_say("resolved: %s at %s", outcome, e->sock);
	return r;
}

/* Carry out a hand-over decision: 0 once done, -errno to try again. */
static int act(enum mig_action a, struct end *s, struct end *t)
{
	switch (a) {
	case MIG_RESUME_TARGET_STOP_SOURCE:
		if (resolve(t, "resume"))
			return -EAGAIN;
		(void)resolve(s, "stop"); /* paused for good either way */
		return 0;
	case MIG_STOP_SOURCE:
		(void)resolve(s, "stop");
		return 0;
	case MIG_RESUME_SOURCE:
		return resolve(s, "resume") ? -EAGAIN : 0;
	case MIG_RESUME_TARGET:
		poll_end(s); /* gone still, right now? */
		if (s->phase != MIG_PH_GONE)
			return -EAGAIN;
		return resolve(t, "resume") ? -EAGAIN : 0;
	case MIG_STOP_TARGET:
		return resolve(t, "stop") ? -EAGAIN : 0;
	default:
		return 0;
	}
}

/* ---- output ---- */

struct view {
	bool tty;
	unsigned width;
	enum mig_phase phase;
	unsigned round;
	bool drawn;
};

static void show(struct view *v, const struct mig_status *st)
{
	char line[256];
	if (st->phase_text[0] == '\0')
		return;
	if (v->tty) {
		printf("\r%s\033[K", mig_progress_line(line, sizeof(line), st, true, v->width));
		v->drawn = true;
	} else if (st->phase != v->phase || st->round != v->round) {
		printf("%s\n", mig_progress_line(line, sizeof(line), st, false, 0));
	}
	v->phase = st->phase;
	v->round = st->round;
	fflush(stdout);
}

static int finish(const struct mig_watch *w, enum mig_action a, const struct end *s,
		  const struct end *t, int64_t start, const char *handover, struct view *v)
{
	/* What either end said last: a quick migration may leave one end
	 * unseen (a source that exited at once, a target that only ran). */
	struct mig_status best = s->st;
	const struct mig_status *o = &t->st, *st = &best;
	best.bytes_sent = best.bytes_sent > o->bytes_sent ? best.bytes_sent : o->bytes_sent;
	best.round = best.round > o->round ? best.round : o->round;
	best.total_ms = best.total_ms > o->total_ms ? best.total_ms : o->total_ms;
	if (best.downtime_ms < 0)
		best.downtime_ms = o->downtime_ms;
	bool cancelled = s->phase == MIG_PH_CANCELLED;
	bool ok = a == MIG_OK || a == MIG_RESUME_TARGET || a == MIG_RESUME_TARGET_STOP_SOURCE ||
		  a == MIG_STOP_SOURCE;
	bool failed = a == MIG_FAILED || a == MIG_RESUME_SOURCE || a == MIG_STOP_TARGET;
	char error[700] = "";
	if (!ok) {
		const char *why = s->st.error[0]   ? s->st.error
				  : t->st.error[0] ? t->st.error
						   : NULL;
		snprintf(error, sizeof(error), "%s%s%s", mig_action_text(a), why ? ": " : "",
			 why ? why : "");
	}
	if (w->relay) /* bytes the VMM wrote last (GOGO, NACK) must leave first */
		mig_relay_finish(w->relay, a == MIG_OK && !s->sock ? 0 : 5000);
	struct mig_summary sum = {
	    .result = ok       ? "completed"
		      : failed ? (cancelled ? "cancelled" : "failed")
			       : "unknown",
	    .total_ms = st->total_ms ? st->total_ms : (uint64_t)(now_ms() - start),
	    .bytes_sent = st->bytes_sent ? st->bytes_sent
			  : w->relay	 ? w->relay->st.to_local + w->relay->st.to_net
					 : 0,
	    .downtime_ms = st->downtime_ms,
	    .rounds = st->round,
	    .throttle_pct = st->throttle_pct,
	    .error = ok ? NULL : error,
	    .handover = handover,
	};
	if (v->drawn)
		putchar('\n');
	if (!ok)
		mig_say("%s: %s", sum.result, error);
	if (w->relay && w->relay->rc && w->relay->rc != -ECANCELED && !ok)
		mig_say("the stream: %s", w->relay->err);
	char *json = mig_summary_json(&sum);
	printf("%s\n", json ? json : "{\"result\": \"unknown\"}");
	fflush(stdout);
	free(json);
	return ok ? MIG_EXIT_OK : failed ? MIG_EXIT_FAILED : MIG_EXIT_UNKNOWN;
}

static const char *handover_word(enum mig_action a, const struct end *s, const struct end *t)
{
	switch (a) {
	case MIG_OK: /* sending host: a source that exited unseen is not proof */
		return !t->sock && s->phase == MIG_PH_GONE && s->st.phase != MIG_PH_COMPLETED &&
			       !s->gogo
			   ? "source-exited"
			   : "gogo";
	case MIG_RESUME_TARGET_STOP_SOURCE:
		return "resolved: target resumed, source stopped";
	case MIG_STOP_SOURCE:
		return "resolved: source stopped";
	case MIG_RESUME_SOURCE:
		return "resolved: source resumed";
	case MIG_RESUME_TARGET:
		return "resolved: target resumed";
	case MIG_STOP_TARGET:
		return "resolved: target stopped";
	default:
		return NULL;
	}
}

/* The first signal: cancel at the source (before the hand-over the VM
 * runs on there), or, with no source here, cut the stream. */
static void on_first_signal(const struct mig_watch *w, struct end *s)
{
	char err[HA_ERR_MAX];
	json_t *body = json_object();
	if (s->sock) {
		mig_say("cancelling (again to leave at once)");
		if (ha_api_ok(s->sock, "PUT", "/migration/cancel", body, -1, CALL_MS, NULL, err,
			      sizeof(err)))
			mig_say("%s", err);
	} else if (w->relay && !atomic_load(&w->relay->done)) {
		mig_say("cutting the stream (again to leave at once)");
		if (write(w->relay->stop[1], "x", 1) != 1)
			mig_say("cannot stop the relay: %s", strerror(errno));
	}
	json_decref(body);
}

/* What the operator sees when this side cannot end it. */
static void unresolved(const struct end *s, const struct end *t)
{
	mig_say("source %s: %s; target %s: %s", s->sock ? s->sock : "on the other host",
		s->sock ? mig_phase_name(s->phase) : "not watched here",
		t->sock ? t->sock : "on the other host",
		t->sock ? mig_phase_name(t->phase) : "not watched here");
	if (t->phase == MIG_PH_READY)
		mig_say("the target waits in ready: once the source is known to be stopped for "
			"good (handover-unknown or gone), `ember migrate --resolve resume "
			"--api-sock %s`; if the source runs on, `--resolve stop`",
			t->sock);
	if (s->phase == MIG_PH_HANDOVER_UNKNOWN)
		mig_say("the source is paused for good in handover-unknown: if the target runs "
			"or is ready, resume it there and then `ember migrate --resolve stop "
			"--api-sock %s`; if the target is gone, `--resolve resume` here",
			s->sock);
}

int mig_watch_run(const struct mig_watch *w)
{
	signals_install(); /* from here a signal cancels: before, it ends us */
	struct end s = {.sock = w->src, .phase = MIG_PH_NOANSWER, .st.downtime_ms = -1},
		   t = {.sock = w->dst, .phase = MIG_PH_NOANSWER, .st.downtime_ms = -1};
	struct winsize ws;
	struct view v = {.tty = isatty(STDOUT_FILENO), .width = 80, .phase = MIG_PH_NOANSWER};
	if (v.tty && !ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) && ws.ws_col)
		v.width = ws.ws_col > 200 ? 200 : ws.ws_col;
	int64_t start = now_ms(), deadline = start + (int64_t)w->timeout_ms + LATE_MS,
		since = start;
	enum mig_phase seen_s = MIG_PH_NOANSWER, seen_t = MIG_PH_NOANSWER;
	int handled_signals = 0, tries = 0;
	bool cancel_sent = false;
	for (;;) {
		poll_end(&s);
		poll_end(&t);
		show(&v, s.sock ? &s.st : &t.st);
		if (s.phase != seen_s || t.phase != seen_t)
			since = now_ms(), seen_s = s.phase, seen_t = t.phase;
		bool settled = now_ms() - since >= SETTLE_MS;
		struct ha_relay_stats *rs = w->relay ? &w->relay->st : NULL;
		if (s.sock && rs && atomic_load(&rs->to_net_done) &&
		    mig_stream_ends_with_gogo(rs->tail, rs->tail_len))
			s.committed = s.gogo = true;
		enum mig_action a =
		    mig_decide(s.phase, t.phase, s.sock, t.sock, s.committed, settled);
		if (a == MIG_WAIT && signals_seen > handled_signals) {
			if (handled_signals++ == 0)
				on_first_signal(w, &s);
			else
				a = MIG_UNRESOLVED;
		}
		if (a == MIG_WAIT && now_ms() > deadline) {
			bool early = s.phase <= MIG_PH_STOP_AND_COPY && s.phase != MIG_PH_GONE;
			if (s.sock && !cancel_sent && early) {
				mig_say("no end after the timeout: cancelling");
				signals_seen = handled_signals = 1;
				on_first_signal(w, &s);
				cancel_sent = true;
				deadline = now_ms() + CANCEL_MS;
			} else {
				a = MIG_UNRESOLVED;
			}
		}
		/* Receiving: once the stream is over no GOGO can come; a
		 * target still in ready then is for the operator. */
		if (a == MIG_WAIT && !s.sock && w->relay && atomic_load(&w->relay->done) &&
		    t.phase == MIG_PH_READY && settled)
			a = MIG_UNRESOLVED;
		if (a != MIG_WAIT && act(a, &s, &t) && ++tries < RESOLVE_TRIES)
			a = MIG_WAIT;
		else if (a != MIG_WAIT && tries >= RESOLVE_TRIES)
			a = MIG_UNRESOLVED;
		if (a != MIG_WAIT) {
			if (a == MIG_UNRESOLVED)
				unresolved(&s, &t);
			return finish(w, a, &s, &t, start, handover_word(a, &s, &t), &v);
		}
		bool quick = s.phase == MIG_PH_STOP_AND_COPY || s.phase == MIG_PH_HANDOVER ||
			     t.phase == MIG_PH_READY;
		sleep_ms(quick ? 10 : 50);
	}
}
