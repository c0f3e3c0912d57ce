/* emberctl: emberd's control CLI (docs/ha.md, "emberctl").  One request
 * per command through ha_api_call() (logs and events page and follow by
 * polling; events long-poll); human tables, or emberd's JSON with --json. */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "ha/api_client.h"
#include "ha/ctl/ctl.h"

#define TIMEOUT_MS 60000
#define FOLLOW_POLL_MS 250
#define EVENTS_WAIT_MS 25000
#define LIST_PAGE 64 /* VMs or hosts a request: well under 64 KiB */

struct call {
	const struct ctl_args *a;
	int status;
	json_t *body;
};

/* One request: 0 with c->body (2xx), or the exit status, said on stderr. */
static int request(struct call *c, const char *method, const char *path, json_t *req,
		   int timeout_ms)
{
	char err[512];
	struct ha_api_reply rep;
	int r = ha_api_call(c->a->sock, method, path, req, -1, timeout_ms, &rep, err, sizeof(err));
	json_decref(req);
	if (r == -EACCES) {
		fprintf(stderr,
			"emberctl: cannot reach emberd at %s: permission denied (the socket is "
			"root's: run emberctl as root)\n",
			c->a->sock);
		return CTL_EXIT_UNREACHABLE;
	}
	if (r) {
		fprintf(stderr,
			"emberctl: cannot reach emberd at %s: %s (check that emberd runs: "
			"systemctl status emberd; or give --sock / $EMBERD_SOCK)\n",
			c->a->sock, r == -EPROTO ? "not emberd's reply" : strerror(-r));
		return CTL_EXIT_UNREACHABLE;
	}
	c->status = rep.status;
	c->body = rep.body;
	if (rep.status / 100 == 2)
		return 0;
	const char *f = ha_api_fault(rep.body);
	fprintf(stderr, "emberctl: %s\n", f ? f : "emberd refused the request (no reason given)");
	if (!f)
		fprintf(stderr, "emberctl: %s %s: HTTP %d\n", method, path, rep.status);
	json_decref(rep.body);
	c->body = NULL;
	return CTL_EXIT_REFUSED;
}

/* GET /vms or /hosts whole, page by page (a reply stays under
 * ha_api_call's 64 KiB however many there are): c->body the array. */
static int get_all(struct call *c, const char *path)
{
	json_t *all = json_array();
	char q[256];
	const char *after = "";
	for (;;) {
		snprintf(q, sizeof(q), "%s?limit=%d&after=%s", path, LIST_PAGE, after);
		int r = request(c, "GET", q, NULL, TIMEOUT_MS);
		if (r) {
			json_decref(all);
			return r;
		}
		size_t n = json_array_size(c->body);
		json_array_extend(all, c->body);
		json_decref(c->body);
		c->body = NULL;
		json_t *last = json_array_get(all, json_array_size(all) - 1);
		after = json_string_value(json_object_get(last, "name"));
		if (n < LIST_PAGE || !after)
			break;
	}
	c->body = all;
	return 0;
}

static void print_json(const json_t *v, bool one_line)
{
	char *s = json_dumps(v, (one_line ? JSON_COMPACT : JSON_INDENT(2)) | JSON_ENCODE_ANY);
	if (s)
		printf("%s\n", s);
	free(s);
	fflush(stdout);
}

/* emberd's at_ms are CLOCK_MONOTONIC ms: the same clock here, on its host. */
static uint64_t mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static int vms_table(const json_t *vms)
{
	struct ctl_table t;
	if (ctl_vms_table(vms, mono_ms(), &t))
		return CTL_EXIT_REFUSED;
	ctl_table_print(&t, stdout);
	ctl_table_free(&t);
	return 0;
}

/* status VM: one STATUS, key by key. */
static void vm_detail(const json_t *vm)
{
	const char *key;
	json_t *v;
	json_object_foreach((json_t *)vm, key, v)
	{
		char *s = json_is_string(v) ? NULL : json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
		printf("%-10s %s\n", key, json_is_string(v) ? json_string_value(v) : s ? s : "?");
		free(s);
	}
}

static int status(struct call *c)
{
	char path[128];
	if (c->a->vm) {
		snprintf(path, sizeof(path), "/vms/%s", c->a->vm);
		int r = request(c, "GET", path, NULL, TIMEOUT_MS);
		if (!r)
			c->a->json ? print_json(c->body, false) : vm_detail(c->body);
		return r;
	}
	int r = request(c, "GET", "/status", NULL, TIMEOUT_MS);
	if (r || c->a->json) {
		if (!r)
			print_json(c->body, false);
		return r;
	}
	json_t *st = c->body;
	json_t *etcd = json_object_get(st, "etcd");
	printf("host %s, %s mode%s: %" JSON_INTEGER_FORMAT " VMs, %" JSON_INTEGER_FORMAT
	       " running%s%s\n",
	       json_string_value(json_object_get(st, "host")) ?: "?",
	       json_string_value(json_object_get(st, "mode")) ?: "?",
	       json_is_true(json_object_get(st, "fenced")) ? ", FENCED" : "",
	       json_integer_value(json_object_get(st, "vms")),
	       json_integer_value(json_object_get(st, "running")),
	       json_is_string(etcd) ? ", etcd " : "",
	       json_is_string(etcd) ? json_string_value(etcd) : "");
	json_decref(st);
	c->body = NULL;
	r = get_all(c, "/vms");
	return r ? r : vms_table(c->body);
}

static int action(struct call *c)
{
	static const char *const verbs[] = {[CTL_START] = "start",
					    [CTL_STOP] = "stop",
					    [CTL_RESTART] = "restart",
					    [CTL_SNAPSHOT] = "snapshot"};
	static const char *const done[] = {[CTL_START] = "started",
					   [CTL_STOP] = "stopped",
					   [CTL_RESTART] = "restarted",
					   [CTL_SNAPSHOT] = "snapshot of"};
	const struct ctl_args *a = c->a;
	char path[128];
	snprintf(path, sizeof(path), "/vms/%s/%s", a->vm, verbs[a->cmd]);
	json_t *req = NULL;
	/* a snapshot writes all of guest RAM: minutes for a big VM on a slow disk */
	int timeout = a->cmd == CTL_SNAPSHOT ? 10 * TIMEOUT_MS : TIMEOUT_MS;
	if (a->how)
		req = json_pack("{s:s}", "how", a->how);
	if (a->has_grace) {
		req = json_pack("{s:I}", "grace_ms", (json_int_t)a->grace_ms);
		timeout += (int)a->grace_ms;
	} else if (a->cmd == CTL_STOP || a->cmd == CTL_RESTART) {
		timeout += 5000;
	}
	int r = request(c, "PUT", path, req, timeout);
	if (r)
		return r;
	if (a->json && !c->body) {
		printf("{}\n"); /* 204: no body, still one document */
	} else if (a->json) {
		print_json(c->body, false);
	} else if (a->cmd == CTL_SNAPSHOT) {
		printf("snapshot of %s: %s (%" JSON_INTEGER_FORMAT " ms)\n", a->vm,
		       json_string_value(json_object_get(c->body, "dir")) ?: "?",
		       json_integer_value(json_object_get(c->body, "ms")));
	} else {
		printf("%s %s\n", done[a->cmd], a->vm);
	}
	return 0;
}

/* logs: pages of GET /vms/VM/logs?format=json from the tail, then (with
 * --follow) from where the last one ended, every FOLLOW_POLL_MS. */
static int logs(struct call *c)
{
	const struct ctl_args *a = c->a;
	char path[256];
	uint64_t from = 0;
	bool first = true;
	for (;;) {
		if (first)
			snprintf(path, sizeof(path), "/vms/%s/logs?format=json&tail=%" PRIu64,
				 a->vm, a->tail);
		else
			snprintf(path, sizeof(path), "/vms/%s/logs?format=json&from=%" PRIu64,
				 a->vm, from);
		int r = request(c, "GET", path, NULL, TIMEOUT_MS);
		if (r)
			return r;
		json_t *d = json_object_get(c->body, "data");
		uint64_t to = (uint64_t)json_integer_value(json_object_get(c->body, "to"));
		uint64_t size = (uint64_t)json_integer_value(json_object_get(c->body, "size"));
		if (a->json && (json_string_length(d) || first))
			print_json(c->body, true);
		else if (!a->json)
			fwrite(json_string_value(d) ?: "", 1, json_string_length(d), stdout);
		fflush(stdout);
		json_decref(c->body);
		c->body = NULL;
		first = false;
		from = to;
		if (to < size)
			continue; /* more pages now */
		if (!a->follow)
			break;
		usleep(FOLLOW_POLL_MS * 1000);
	}
	return 0;
}

static int events(struct call *c)
{
	const struct ctl_args *a = c->a;
	uint64_t since = a->since;
	char path[128];
	json_t *all = a->json && !a->follow ? json_array() : NULL;
	for (;;) {
		snprintf(path, sizeof(path), "/events?since=%" PRIu64 "&wait_ms=%d", since,
			 a->follow ? EVENTS_WAIT_MS : 0);
		int r = request(c, "GET", path, NULL, EVENTS_WAIT_MS + TIMEOUT_MS);
		if (r) {
			json_decref(all);
			return r;
		}
		json_t *evs = json_object_get(c->body, "events");
		uint64_t next = (uint64_t)json_integer_value(json_object_get(c->body, "next"));
		size_t i;
		json_t *ev;
		json_array_foreach(evs, i, ev)
		{
			if (all)
				json_array_append(all, ev);
			else if (a->json)
				print_json(ev, true);
			else
				ctl_print_event(ev, stdout);
		}
		fflush(stdout);
		/* emberd's next, even below since: its cursor after a restart */
		bool more = json_array_size(evs);
		json_decref(c->body);
		c->body = NULL;
		since = next;
		if (!more && !a->follow)
			break;
	}
	if (all) {
		json_t *doc = json_pack("{s:I, s:o}", "next", (json_int_t)since, "events", all);
		print_json(doc, false);
		json_decref(doc);
	}
	return 0;
}

static int hosts(struct call *c)
{
	static const char *const head[] = {"NAME", "ALIVE", "VMS", "MEMORY", "VCPUS"};
	int r = get_all(c, "/hosts");
	if (r || c->a->json) {
		if (!r)
			print_json(c->body, false);
		return r;
	}
	struct ctl_table t;
	if (ctl_table_init(&t, head, 5))
		return CTL_EXIT_REFUSED;
	size_t i;
	json_t *h;
	json_array_foreach(c->body, i, h)
	{
		char vms[24], mu[16], mc[16], mem[40], vcpus[48];
		snprintf(vms, sizeof(vms), "%" JSON_INTEGER_FORMAT,
			 json_integer_value(json_object_get(h, "vms")));
		ctl_fmt_bytes((uint64_t)json_integer_value(json_object_get(h, "mem_used")), mu,
			      sizeof(mu));
		ctl_fmt_bytes((uint64_t)json_integer_value(json_object_get(h, "mem_capacity")), mc,
			      sizeof(mc));
		snprintf(mem, sizeof(mem), "%s/%s", mu, mc);
		snprintf(vcpus, sizeof(vcpus), "%" JSON_INTEGER_FORMAT "/%" JSON_INTEGER_FORMAT,
			 json_integer_value(json_object_get(h, "vcpus_used")),
			 json_integer_value(json_object_get(h, "vcpus_capacity")));
		const char *row[] = {json_string_value(json_object_get(h, "name")),
				     json_is_true(json_object_get(h, "alive")) ? "yes" : "no", vms,
				     mem, vcpus};
		if (ctl_table_add(&t, row))
			break;
	}
	ctl_table_print(&t, stdout);
	ctl_table_free(&t);
	return 0;
}

static void name_list(const char *label, const json_t *a)
{
	if (!json_array_size(a))
		return;
	printf("%s:", label);
	size_t i;
	json_t *v;
	json_array_foreach(a, i, v) printf(" %s", json_string_value(v) ?: "?");
	printf("\n");
}

/* reload: exit 1 when a VM file was refused, so scripts see it. */
static int reload(struct call *c)
{
	int r = request(c, "PUT", "/reload", NULL, TIMEOUT_MS);
	if (r)
		return r;
	json_t *errs = json_object_get(c->body, "errors");
	if (c->a->json) {
		print_json(c->body, false);
	} else {
		name_list("added", json_object_get(c->body, "added"));
		name_list("removed", json_object_get(c->body, "removed"));
		name_list("changed", json_object_get(c->body, "changed"));
		if (!json_array_size(errs) && !json_array_size(json_object_get(c->body, "added")) &&
		    !json_array_size(json_object_get(c->body, "removed")) &&
		    !json_array_size(json_object_get(c->body, "changed")))
			printf("no change\n");
	}
	size_t i;
	json_t *e;
	json_array_foreach(errs, i, e) fprintf(
	    stderr, "emberctl: %s: %s\n", json_string_value(json_object_get(e, "file")) ?: "?",
	    json_string_value(json_object_get(e, "error")) ?: "?");
	return json_array_size(errs) ? CTL_EXIT_REFUSED : 0;
}

static void sleep_ms(int ms)
{
	struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000};
	nanosleep(&ts, NULL);
}

/* migrate VM HOST [--wait]: the request, then (waiting) its status's
 * "move" until the VM shows on HOST or the request is gone. */
static int migrate(struct call *c)
{
	const struct ctl_args *a = c->a;
	char path[128];
	snprintf(path, sizeof(path), "/vms/%s/migrate", a->vm);
	int r = request(c, "PUT", path, json_pack("{s:s}", "to", a->host), TIMEOUT_MS);
	if (r)
		return r;
	printf("%s: move to %s requested\n", a->vm, a->host);
	fflush(stdout);
	snprintf(path, sizeof(path), "/vms/%s", a->vm);
	for (uint64_t t0 = mono_ms(); a->wait && mono_ms() - t0 < 300000; sleep_ms(200)) {
		json_decref(c->body);
		c->body = NULL;
		if ((r = request(c, "GET", path, NULL, TIMEOUT_MS)))
			return r;
		const char *host = json_string_value(json_object_get(c->body, "host"));
		const char *state = json_string_value(json_object_get(c->body, "state"));
		json_t *mv = json_object_get(c->body, "move");
		if (mv)
			printf("%s: %s, %" JSON_INTEGER_FORMAT " bytes\n", a->vm,
			       json_string_value(json_object_get(mv, "phase")) ?: "?",
			       json_integer_value(json_object_get(mv, "bytes")));
		if (host && !strcmp(host, a->host) && state &&
		    (!strcmp(state, "remote") || !strcmp(state, "running"))) {
			printf("%s runs on %s\n", a->vm, a->host);
			return 0;
		}
	}
	if (a->wait) {
		fprintf(stderr, "emberctl: %s: not on %s within 5 minutes (see emberctl events)\n",
			a->vm, a->host);
		return CTL_EXIT_REFUSED;
	}
	return 0;
}

/* host maintenance enter|exit|status HOST [--wait] */
static int maintenance(struct call *c)
{
	const struct ctl_args *a = c->a;
	char path[128];
	int r;
	if (strcmp(a->maint, "status")) {
		snprintf(path, sizeof(path), "/hosts/%s/maintenance", a->host);
		r = request(c, "PUT", path,
			    json_pack("{s:b}", "enter", !strcmp(a->maint, "enter")), TIMEOUT_MS);
		if (r)
			return r;
		printf("%s: %s maintenance\n", a->host,
		       !strcmp(a->maint, "enter") ? "in" : "out of");
		fflush(stdout);
		if (!a->wait || strcmp(a->maint, "enter"))
			return 0;
	}
	json_int_t last = -1;
	uint64_t since = mono_ms();
	for (;; sleep_ms(500)) {
		json_decref(c->body);
		c->body = NULL;
		if ((r = get_all(c, "/hosts")))
			return r;
		size_t i;
		json_t *h, *me = NULL;
		json_array_foreach(c->body, i, h) if (!strcmp(
		    json_string_value(json_object_get(h, "name")) ?: "", a->host)) me = h;
		if (!me) {
			fprintf(stderr, "emberctl: no host %s\n", a->host);
			return CTL_EXIT_REFUSED;
		}
		bool in = json_is_true(json_object_get(me, "maintenance"));
		json_int_t left = json_integer_value(json_object_get(me, "vms"));
		printf("%s: %s, %" JSON_INTEGER_FORMAT " VMs left\n", a->host,
		       in ? "in maintenance" : "not in maintenance", left);
		const char *vm;
		json_t *why;
		json_object_foreach(json_object_get(me, "stays"), vm, why)
		    printf("  %s stays: %s\n", vm, json_string_value(why) ?: "?");
		fflush(stdout);
		if (!a->wait || left == 0)
			return 0;
		if (left != last) {
			last = left;
			since = mono_ms();
		}
		/* the rest stay (must rules, no room): said in the events */
		if (in && mono_ms() - since > 30000) {
			fprintf(stderr,
				"emberctl: %s: %" JSON_INTEGER_FORMAT " VMs stay (emberctl events "
				"says why: maintenance-stays, move-failed)\n",
				a->host, left);
			return CTL_EXIT_REFUSED;
		}
	}
}

int main(int argc, char **argv)
{
	struct ctl_args a;
	char err[512];
	signal(SIGPIPE, SIG_IGN);
	if (ctl_is_rule(argc - 1, argv + 1))
		return ctl_rule_main(argc - 1, argv + 1, getenv("EMBERD_SOCK"));
	if (ctl_parse_args(argc - 1, argv + 1, getenv("EMBERD_SOCK"), &a, err, sizeof(err))) {
		fprintf(stderr, "emberctl: %s\n", err);
		return CTL_EXIT_USAGE;
	}
	struct call c = {.a = &a};
	int r = 0;
	switch (a.cmd) {
	case CTL_HELP:
		fputs(ctl_usage, stdout);
		return 0;
	case CTL_LIST:
		r = get_all(&c, "/vms");
		if (!r)
			r = a.json ? (print_json(c.body, false), 0) : vms_table(c.body);
		break;
	case CTL_STATUS:
		r = status(&c);
		break;
	case CTL_START:
	case CTL_STOP:
	case CTL_RESTART:
	case CTL_SNAPSHOT:
		r = action(&c);
		break;
	case CTL_LOGS:
		r = logs(&c);
		break;
	case CTL_EVENTS:
		r = events(&c);
		break;
	case CTL_HOSTS:
		r = hosts(&c);
		break;
	case CTL_RELOAD:
		r = reload(&c);
		break;
	case CTL_MIGRATE:
		r = migrate(&c);
		break;
	case CTL_MAINT:
		r = maintenance(&c);
		break;
	}
	json_decref(c.body);
	return r;
}
