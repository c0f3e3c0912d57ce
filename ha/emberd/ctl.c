/* The control API's handlers (docs/ha.md, "Control API"): a routed
 * request (ctl_route.c) into the supervisor's calls (emberd.h), and its
 * reply.  Everything runs on the loop; the one reply that waits, a long
 * poll of GET /events, waits on ed_events_watch() and a timer, never by
 * blocking. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ha/emberd/ctl_priv.h"

/* A JSON page of a console log stays well under ha_api_call()'s 64 KiB
 * reply, even if every byte is escaped as \u00XX (6 bytes). */
#define LOG_PAGE 8192

/* 404 naming the VMs there are. */
static void no_such_vm(struct ed_host *h, const char *name, struct ed_ctl_reply *rp)
{
	char known[400] = "";
	size_t n = 0;
	for (struct ed_vm *vm = ed_host_first(h); vm && n < sizeof(known) - 8;
	     vm = ed_host_next(h, vm)) {
		int w =
		    snprintf(known + n, sizeof(known) - n, "%s%s", n ? ", " : "", ed_vm_name(vm));
		n += w > 0 ? (size_t)w : 0;
		if (n >= sizeof(known) - 8) {
			strcpy(known + sizeof(known) - 8, ", ...");
			break;
		}
	}
	ed_ctl_fault(rp, 404, "VM \"%s\": no such VM (known: %s)", name, n ? known : "none");
}

/* A refusal of the supervisor's: its status by errno, its words. */
static void failed(struct ed_ctl_reply *rp, const char *vm, const char *what, int r,
		   const char *why)
{
	int status = r == -EALREADY || r == -EPERM || r == -EBUSY || r == -EINVAL ? 409
		     : r == -ENOENT						  ? 404
		     : r == -EAGAIN || r == -ETIMEDOUT || r == -ECONNREFUSED || r == -EHOSTUNREACH
			 ? 503
			 : 500;
	ed_ctl_fault(rp, status, "VM \"%s\": %s: %s", vm, what, *why ? why : strerror(-r));
}

/* ---- GET /vms/NAME/logs ---- */

static void logs(const struct ed_vm *vm, const struct ed_ctl_req *q, struct ed_ctl_reply *rp)
{
	const char *path = ed_vm_console_path(vm);
	int fd = path ? open(path, O_RDONLY | O_CLOEXEC) : -1;
	struct stat st;
	uint64_t size = 0;
	if (fd >= 0 && !fstat(fd, &st))
		size = (uint64_t)st.st_size;
	else if (fd >= 0 || errno != ENOENT || !path) {
		ed_ctl_fault(rp, 500, "VM \"%s\": console log %s: %s", ed_vm_name(vm),
			     path ? path : "(none)", strerror(path ? errno : ENOENT));
		if (fd >= 0)
			close(fd);
		return;
	}
	/* [from, size): from the offset asked for (a log that shrank since,
	 * truncated or replaced, starts again at 0), or the last tail bytes */
	uint64_t from =
	    q->has_from ? (q->from <= size ? q->from : 0) : (q->tail < size ? size - q->tail : 0);
	uint64_t want = size - from;
	if (!q->json && want > ED_CTL_LOG_TEXT_MAX) {
		from = size - ED_CTL_LOG_TEXT_MAX;
		want = ED_CTL_LOG_TEXT_MAX;
	}
	if (q->json && want > LOG_PAGE)
		want = LOG_PAGE;
	char *buf = malloc(want ? want : 1);
	ssize_t got = 0;
	while (buf && fd >= 0 && (uint64_t)got < want) {
		ssize_t r = pread(fd, buf + got, want - (uint64_t)got, (off_t)(from + got));
		if (r <= 0)
			break;
		got += r;
	}
	if (fd >= 0)
		close(fd);
	if (!buf) {
		ed_ctl_fault(rp, 500, "out of memory");
		return;
	}
	if (!q->json) {
		rp->status = 200;
		rp->type = "text/plain; charset=utf-8";
		rp->body = buf;
		rp->len = (size_t)got;
		return;
	}
	size_t used = 0;
	json_t *data = ed_ctl_text_json(buf, (size_t)got, from + (uint64_t)got < size, &used);
	free(buf);
	ed_ctl_reply_json(rp, 200,
			  json_pack("{s:I, s:I, s:I, s:o?}", "from", (json_int_t)from, "to",
				    (json_int_t)(from + used), "size", (json_int_t)size, "data",
				    data));
}

/* ---- replies that wait: GET /events?wait_ms=, stop, restart ---- */

/* A deferred reply: check() runs after each event (and once more, last,
 * at the deadline) and fills rp when the answer is ready. */
struct poll {
	struct ed_ctl_conn *c;
	bool (*check)(struct poll *p, bool last, struct ed_ctl_reply *rp);
	uint64_t timer, wake;
	uint64_t since;		  /* GET /events */
	char vm[ED_NAME_MAX + 1]; /* stop, restart: the VM, its pid before, how long */
	json_int_t old_pid;
	enum ed_route route;
	uint64_t wait_ms;
};

static void poll_event(void *arg);

static void poll_end(struct ed_ctl_conn *c)
{
	struct poll *p = *ed_ctl_conn_slot(c);
	struct ed_host *h = ed_ctl_conn_host(c);
	ed_events_unwatch(h, poll_event, p);
	if (p->timer)
		ed_loop_cancel(ed_host_loop(h), p->timer);
	if (p->wake)
		ed_loop_cancel(ed_host_loop(h), p->wake);
	free(p);
}

static void poll_answer(struct poll *p, bool last)
{
	struct ed_ctl_conn *c = p->c;
	struct ed_ctl_reply rp = {0};
	if (!p->check(p, last, &rp))
		return;
	poll_end(c);
	ed_ctl_conn_reply(c, &rp);
}

static void poll_timeout(void *arg)
{
	struct poll *p = arg;
	p->timer = 0;
	poll_answer(p, true);
}

static void poll_wake(void *arg)
{
	struct poll *p = arg;
	p->wake = 0;
	poll_answer(p, false);
}

/* ed_events_watch's call, maybe from inside ed_event() in the middle of
 * another handler: the check waits for the loop's next turn. */
static void poll_event(void *arg)
{
	struct poll *p = arg;
	if (!p->wake)
		p->wake = ed_loop_timer(ed_host_loop(ed_ctl_conn_host(p->c)), 0, poll_wake, p);
}

/* Defer c's reply to *tmpl's check, at the latest after ms: 1, or 0 with
 * rp filled (out of memory). */
static int poll_start(struct ed_host *h, struct ed_ctl_conn *c, const struct poll *tmpl,
		      uint64_t ms, struct ed_ctl_reply *rp)
{
	struct poll *p = malloc(sizeof(*p));
	if (p) {
		*p = *tmpl;
		p->c = c;
		p->wake = 0;
		p->timer = ed_loop_timer(ed_host_loop(h), ms, poll_timeout, p);
	}
	if (!p || !p->timer || ed_events_watch(h, poll_event, p)) {
		if (p && p->timer)
			ed_loop_cancel(ed_host_loop(h), p->timer);
		free(p);
		ed_ctl_fault(rp, 500, "out of memory");
		return 0;
	}
	*ed_ctl_conn_slot(c) = p;
	ed_ctl_conn_on_close(c, poll_end);
	return 1;
}

/* {"next", "events"}, or NULL when there are none yet (and !give_empty). */
static json_t *events_page(struct ed_host *h, uint64_t since, bool give_empty)
{
	uint64_t next = since, probe_next = 0;
	json_t *evs = ed_events_since(h, since, &next);
	if (evs && !json_array_size(evs) && since) {
		/* since beyond the newest event: a cursor from an earlier emberd
		 * (seq starts again at 1 with each): start again at the oldest */
		json_t *probe = ed_events_since(h, since - 1, &probe_next);
		if (probe && !json_array_size(probe) && probe_next == since - 1) {
			json_decref(evs);
			evs = ed_events_since(h, 0, &next);
		}
		json_decref(probe);
	}
	if (!evs)
		return NULL;
	if (!json_array_size(evs) && !give_empty) {
		json_decref(evs);
		return NULL;
	}
	/* A reply stays under 48 KiB: the rest comes with the next since. */
	size_t total = 0, keep = 0;
	for (; keep < json_array_size(evs); keep++) {
		char *one = json_dumps(json_array_get(evs, keep), JSON_COMPACT);
		total += one ? strlen(one) + 1 : 0;
		free(one);
		if (total > 48 * 1024 && keep)
			break;
	}
	if (keep < json_array_size(evs)) {
		json_t *last = json_array_get(evs, keep - 1);
		next = (uint64_t)json_integer_value(json_object_get(last, "seq"));
		while (json_array_size(evs) > keep)
			json_array_remove(evs, keep);
	}
	return json_pack("{s:I, s:o}", "next", (json_int_t)next, "events", evs);
}

static bool events_check(struct poll *p, bool last, struct ed_ctl_reply *rp)
{
	json_t *page = events_page(ed_ctl_conn_host(p->c), p->since, last);
	if (page)
		ed_ctl_reply_json(rp, 200, page);
	else if (last)
		ed_ctl_fault(rp, 500, "out of memory");
	return page || last;
}

static int events(struct ed_host *h, struct ed_ctl_conn *c, const struct ed_ctl_req *q,
		  struct ed_ctl_reply *rp)
{
	json_t *page = events_page(h, q->since, !q->wait_ms);
	if (page) {
		ed_ctl_reply_json(rp, 200, page);
		return 0;
	}
	struct poll p = {.check = events_check, .since = q->since};
	return poll_start(h, c, &p, q->wait_ms, rp);
}

static json_int_t vm_pid(const struct ed_vm *vm)
{
	json_t *st = ed_vm_status_json(vm);
	json_int_t pid = json_integer_value(json_object_get(st, "pid"));
	json_decref(st);
	return pid;
}

/* Stop and restart answer once it is done, so that `emberctl stop a &&
 * emberctl start a` works: stopped (not running, not starting), or up
 * again with another pid.  Still not, at the deadline: 409 with its state. */
static bool vm_check(struct poll *p, bool last, struct ed_ctl_reply *rp)
{
	struct ed_host *h = ed_ctl_conn_host(p->c);
	struct ed_vm *vm = ed_host_find(h, p->vm); /* a reload may have dropped it */
	bool stop = p->route == ED_R_VM_STOP;
	const char *what = stop ? "stop" : "restart";
	if (!vm) {
		if (stop)
			ed_ctl_reply_json(rp, 204, NULL);
		else
			ed_ctl_fault(rp, 404, "VM \"%s\": %s: its file was removed meanwhile",
				     p->vm, what);
		return true;
	}
	enum ed_state st = ed_vm_state(vm);
	bool up = st == ED_RUNNING || st == ED_STARTING;
	json_int_t pid = up ? vm_pid(vm) : 0;
	if (stop ? !up : up && pid > 0 && pid != p->old_pid) {
		ed_ctl_reply_json(rp, 204, NULL);
		return true;
	}
	if (!stop &&
	    (st == ED_FAILED || st == ED_STOPPED || st == ED_UNPLACED || st == ED_REMOTE)) {
		json_t *j = ed_vm_status_json(vm);
		const char *why = json_string_value(json_object_get(j, "reason"));
		ed_ctl_fault(rp, 409, "VM \"%s\": restart: stopped, not started again: %s (%s)",
			     p->vm, ed_state_name(st), why ? why : "no reason given");
		json_decref(j);
		return true;
	}
	if (last)
		ed_ctl_fault(rp, 409, "VM \"%s\": %s: still %s after %llu ms", p->vm, what,
			     ed_state_name(st), (unsigned long long)p->wait_ms);
	return last;
}

/* ---- the routes ---- */

/* A page of arr (objects in "name" order): those after q->after, at most
 * q->limit.  Takes arr. */
static json_t *page(json_t *arr, const struct ed_ctl_req *q)
{
	size_t i = 0;
	while (q->after[0] && i < json_array_size(arr) &&
	       strcmp(json_string_value(json_object_get(json_array_get(arr, i), "name")) ?: "",
		      q->after) <= 0)
		i++;
	while (i--)
		json_array_remove(arr, 0);
	while (q->limit && json_array_size(arr) > q->limit)
		json_array_remove(arr, json_array_size(arr) - 1);
	return arr;
}

static int vm_action(struct ed_host *h, struct ed_ctl_conn *c, struct ed_vm *vm,
		     const struct ed_ctl_req *q, const char *body, size_t len,
		     struct ed_ctl_reply *rp)
{
	char why[ED_ERR_MAX] = "";
	enum ed_how how;
	uint64_t grace_ms, ms = 0;
	char fault[ED_CTL_FAULT_MAX];
	int st = ed_ctl_body(q->route, body, len, &how, &grace_ms, fault, sizeof(fault));
	if (st) {
		ed_ctl_fault(rp, st, "%s", fault);
		return 0;
	}
	int r = 0;
	const char *what = "";
	struct poll wait = {.check = vm_check,
			    .route = q->route,
			    .old_pid = vm_pid(vm),
			    .wait_ms = grace_ms + 30000};
	snprintf(wait.vm, sizeof(wait.vm), "%s", q->vm);
	switch (q->route) {
	case ED_R_VM_START:
		what = "start";
		r = ed_vm_start(h, vm, how, "user", why, sizeof(why));
		break;
	case ED_R_VM_STOP:
		what = "stop";
		r = ed_vm_stop(h, vm, grace_ms, "user", why, sizeof(why));
		break;
	case ED_R_VM_RESTART:
		what = "restart";
		r = ed_vm_restart(h, vm, grace_ms, "user", why, sizeof(why));
		break;
	default: {
		what = "snapshot";
		char dir[4096] = "";
		r = ed_vm_snapshot(h, vm, dir, sizeof(dir), &ms, why, sizeof(why));
		if (!r) {
			ed_ctl_reply_json(
			    rp, 200, json_pack("{s:s, s:I}", "dir", dir, "ms", (json_int_t)ms));
			return 0;
		}
	}
	}
	if (r) {
		failed(rp, q->vm, what, r, why);
		return 0;
	}
	if (q->route == ED_R_VM_STOP || q->route == ED_R_VM_RESTART) {
		wait.c = c;
		if (vm_check(&wait, false, rp))
			return 0;
		return poll_start(h, c, &wait, wait.wait_ms, rp);
	}
	ed_ctl_reply_json(rp, 204, NULL);
	return 0;
}

int ed_ctl_handle(struct ed_host *h, struct ed_ctl_conn *c, const char *method, const char *url,
		  const char *body, size_t len, struct ed_ctl_reply *rp)
{
	struct ed_ctl_req q;
	char fault[ED_CTL_FAULT_MAX];
	int st = ed_ctl_route(method, url, &q, fault, sizeof(fault));
	if (st) {
		ed_ctl_fault(rp, st, "%s", fault);
		rp->allow = q.allow;
		return 0;
	}
	struct ed_vm *vm = q.vm[0] ? ed_host_find(h, q.vm) : NULL;
	if (q.vm[0] && !vm) {
		no_such_vm(h, q.vm, rp);
		return 0;
	}
	if (q.route != ED_R_VM_START && q.route != ED_R_VM_STOP && q.route != ED_R_VM_RESTART &&
	    q.route != ED_R_VM_SNAPSHOT && q.route != ED_R_RELOAD && len &&
	    strspn(body, " \t\r\n") < len) {
		ed_ctl_fault(rp, 400, "%s %s takes no body", method, url);
		return 0;
	}
	switch (q.route) {
	case ED_R_VMS: {
		json_t *a = json_array();
		for (struct ed_vm *v = ed_host_first(h); a && v; v = ed_host_next(h, v))
			json_array_append_new(a, ed_vm_status_json(v));
		ed_ctl_reply_json(rp, 200, page(a, &q));
		return 0;
	}
	case ED_R_VM:
		ed_ctl_reply_json(rp, 200, ed_vm_status_json(vm));
		return 0;
	case ED_R_VM_LOGS:
		logs(vm, &q, rp);
		return 0;
	case ED_R_EVENTS:
		return events(h, c, &q, rp);
	case ED_R_RELOAD: {
		enum ed_how how;
		uint64_t grace;
		st = ed_ctl_body(q.route, body, len, &how, &grace, fault, sizeof(fault));
		if (st) {
			ed_ctl_fault(rp, st, "%s", fault);
			return 0;
		}
		json_t *report = NULL;
		char why[ED_ERR_MAX] = "";
		int r = ed_host_reload(h, &report, why, sizeof(why));
		if (r) {
			ed_ctl_fault(rp, 500, "reload: %s", *why ? why : strerror(-r));
		} else {
			ed_host_start_fresh(h); /* new ones autostart */
			ed_ctl_reply_json(rp, 200, report);
		}
		return 0;
	}
	case ED_R_HOSTS:
		ed_ctl_reply_json(rp, 200, page(ed_host_hosts_json(h), &q));
		return 0;
	case ED_R_STATUS:
		ed_ctl_reply_json(rp, 200, ed_host_status_json(h));
		return 0;
	default:
		return vm_action(h, c, vm, &q, body, len, rp);
	}
}
