/* Observability's TCP listener (--http ADDR:PORT; docs/ha.md "Metrics and
 * dashboard"): GET /metrics (Prometheus), GET / (the dashboard, built
 * into the binary from dashboard.html), GET /api/cluster (what the page
 * polls), and, only with --http-allow-actions, POST
 * /api/hosts/H/maintenance.  Read-mostly: nothing else changes anything.
 * Served by the control server's HTTP code (ed_ctl_serve): the same
 * limits per connection, one request each.  Also starts the load
 * sampler, and in cluster mode the view's etcd worker, with or without
 * --http. */
#include <errno.h>
#include <math.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "dashboard.h" /* build/gen: dashboard.html as ed_dashboard_html[] */
#include "ha/balance/balance.h"
#include "ha/emberd/ctl_priv.h"
#include "ha/emberd/local.h"
#include "ha/emberd/obs.h"

struct ed_obs {
	struct ed_host *h;
	struct ed_load *load;
	struct ed_view *view; /* cluster mode */
	struct ed_metrics *m;
	struct ed_ctl *srv; /* --http */
	char addr[300];	    /* its ADDR:PORT, as given */
	bool actions;
};

/* ---- GET /api/cluster ---- */

static double host_load(json_t *ld)
{
	double cap_c = (double)json_integer_value(json_object_get(ld, "cpu_capacity_m"));
	double cap_m = (double)json_integer_value(json_object_get(ld, "mem_capacity"));
	double c =
	    cap_c > 0 ? (double)json_integer_value(json_object_get(ld, "cpu_used_m")) / cap_c : 0;
	double m =
	    cap_m > 0 ? (double)json_integer_value(json_object_get(ld, "mem_used")) / cap_m : 0;
	return c > m ? c : m;
}

/* docs/balancing.md's imbalance over hosts[] (each with "alive",
 * "maintenance", "load_doc"), through ha_bal_imbalance.  Hosts with no
 * load reported yet (just joined, or gone) are left out: they are not
 * counted by it either way, and zero capacities would not validate. */
static json_t *imbalance(json_t *hosts)
{
	size_t nh = json_array_size(hosts), nv = 0, i;
	json_t *hj;
	json_array_foreach(hosts, i, hj) nv +=
	    json_object_size(json_object_get(json_object_get(hj, "load_doc"), "vms"));
	struct ha_bal_host *bh = calloc(nh ? nh : 1, sizeof(*bh));
	struct ha_bal_vm *bv = calloc(nv ? nv : 1, sizeof(*bv));
	json_t *out = json_null();
	uint32_t kh = 0, kv = 0;
	json_array_foreach(hosts, i, hj)
	{
		json_t *ld = json_object_get(hj, "load_doc");
		uint64_t cpu = (uint64_t)json_integer_value(json_object_get(ld, "cpu_capacity_m"));
		uint64_t mem = (uint64_t)json_integer_value(json_object_get(ld, "mem_capacity"));
		if (!bh || !bv || !cpu || !mem)
			continue;
		bh[kh] = (struct ha_bal_host){
		    .name = json_string_value(json_object_get(hj, "name")),
		    .cpu_cap = cpu,
		    .mem_cap = mem,
		    .alive = json_is_true(json_object_get(hj, "alive")),
		    .maintenance = !json_is_null(json_object_get(hj, "maintenance"))};
		const char *vn;
		json_t *vj;
		json_object_foreach(json_object_get(ld, "vms"), vn, vj)
		{
			bv[kv++] = (struct ha_bal_vm){
			    .name = vn,
			    .host = kh,
			    .cpu = (uint64_t)json_integer_value(json_object_get(vj, "cpu_m")),
			    .mem = (uint64_t)json_integer_value(json_object_get(vj, "mem")),
			    .migrating_to = HA_BAL_NONE};
		}
		kh++;
	}
	struct ha_bal_cluster c = {.hosts = bh, .nr_hosts = kh, .vms = bv, .nr_vms = kv};
	char err[200];
	if (bh && bv && !ha_bal_validate(&c, err, sizeof(err))) {
		double x = ha_bal_imbalance(&c);
		if (!isnan(x))
			out = json_real(x);
	}
	free(bh);
	free(bv);
	return out;
}

static int by_name(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static json_t *vm_entry(const char *name, const char *state, json_t *lv)
{
	return json_pack("{s:s, s:s, s:I, s:I, s:I}", "name", name, "state", state, "cpu_m",
			 json_integer_value(json_object_get(lv, "cpu_m")), "mem",
			 json_integer_value(json_object_get(lv, "mem")), "rss",
			 json_integer_value(json_object_get(lv, "rss")));
}

static json_t *host_entry(const char *name, bool alive, json_t *maint, json_t *ld)
{
	json_t *j =
	    json_pack("{s:s, s:b, s:O, s:f, s:[]}", "name", name, "alive", alive, "maintenance",
		      maint ? maint : json_null(), "load", ld ? host_load(ld) : 0.0, "vms");
	static const char *const f[] = {"cpu_capacity_m", "cpu_used_m", "mem_capacity", "mem_used"};
	for (size_t i = 0; j && i < 4; i++)
		json_object_set_new(j, f[i],
				    json_integer(json_integer_value(json_object_get(ld, f[i]))));
	if (j && ld)
		json_object_set(j, "load_doc", ld);
	return j;
}

static void add_list_rule(json_t *rules, struct ed_vm *vm, const char *kind,
			  const char *const *list)
{
	if (!list || !*list)
		return;
	json_t *hosts = json_array();
	for (; *list; list++)
		json_array_append_new(hosts, json_string(*list));
	json_array_append_new(rules, json_pack("{s:s+, s:s, s:[s], s:o, s:s}", "name", "file:",
					       ed_vm_name(vm), "kind", kind, "vms", ed_vm_name(vm),
					       "hosts", hosts, "source", vm->f.file));
}

json_t *ed_web_cluster(struct ed_host *h, struct ed_load *l, struct ed_view *v,
		       struct ed_metrics *m, bool actions)
{
	const char *self = ed_host_name(h);
	json_t *doc = json_pack("{s:s, s:s, s:b, s:[], s:[], s:[], s:[]}", "host", self, "mode",
				v ? "cluster" : "local", "actions", actions && v, "hosts",
				"unplaced", "rules", "moves");
	if (!doc)
		return NULL;
	json_t *hosts = json_object_get(doc, "hosts"), *rules = json_object_get(doc, "rules");
	json_t *mine = ed_load_json(l);
	json_t *view = v ? ed_view_json(v) : NULL;
	json_t *owner = json_object_get(view, "owner");
	if (!v) {
		json_t *he = host_entry(self, true, NULL, mine);
		for (struct ed_vm *vm = ed_host_first(h); he && vm; vm = ed_host_next(h, vm))
			json_array_append_new(json_object_get(he, "vms"),
					      vm_entry(ed_vm_name(vm),
						       ed_state_name(ed_vm_state(vm)),
						       json_object_get(json_object_get(mine, "vms"),
								       ed_vm_name(vm))));
		json_array_append_new(hosts, he);
	} else {
		/* every host any key names, in name order */
		json_t *names = json_object();
		static const char *const kinds[] = {"hosts", "load", "maint"};
		for (size_t k = 0; k < 3; k++) {
			const char *n;
			json_t *x;
			json_object_foreach(json_object_get(view, kinds[k]), n, x)
			    json_object_set_new(names, n, json_true());
		}
		const char *n;
		json_t *x;
		json_object_foreach(owner, n, x) if (json_is_string(x))
		    json_object_set_new(names, json_string_value(x), json_true());
		json_object_set_new(names, self, json_true());
		const char **sorted = calloc(json_object_size(names) + 1, sizeof(*sorted));
		size_t ns = 0;
		json_object_foreach(names, n, x) if (sorted) sorted[ns++] = n;
		qsort(sorted, ns, sizeof(*sorted), by_name);
		for (size_t i = 0; i < ns; i++) {
			const char *hn = sorted[i];
			bool is_self = !strcmp(hn, self);
			json_t *ld =
			    is_self ? mine : json_object_get(json_object_get(view, "load"), hn);
			bool alive = json_object_get(json_object_get(view, "hosts"), hn) != NULL;
			json_t *he = host_entry(
			    hn, alive, json_object_get(json_object_get(view, "maint"), hn), ld);
			const char *vn;
			json_t *oh;
			json_object_foreach(owner, vn, oh)
			{
				if (!he || !json_is_string(oh) || strcmp(json_string_value(oh), hn))
					continue;
				json_t *lv = json_object_get(json_object_get(ld, "vms"), vn);
				struct ed_vm *vm = is_self ? ed_host_find(h, vn) : NULL;
				const char *st =
				    vm ? ed_state_name(ed_vm_state(vm))
				       : json_string_value(json_object_get(lv, "state"));
				json_array_append_new(json_object_get(he, "vms"),
						      vm_entry(vn, st ? st : "owned", lv));
			}
			json_array_append_new(hosts, he);
		}
		free(sorted);
		json_decref(names);
		for (struct ed_vm *vm = ed_host_first(h); vm; vm = ed_host_next(h, vm)) {
			if (json_object_get(owner, ed_vm_name(vm)))
				continue;
			json_t *st = ed_vm_status_json(vm);
			json_array_append_new(json_object_get(doc, "unplaced"),
					      json_pack("{s:s, s:s, s:O?}", "name", ed_vm_name(vm),
							"state", ed_state_name(ed_vm_state(vm)),
							"reason", json_object_get(st, "reason")));
			json_decref(st);
		}
		json_object_foreach(json_object_get(view, "rules"), n, x) json_array_append_new(
		    rules, json_pack("{s:s, s:O?, s:O?, s:O?, s:s}", "name", n, "kind",
				     json_object_get(x, "kind"), "vms", json_object_get(x, "vms"),
				     "hosts", json_object_get(x, "hosts"), "source", "etcd"));
		json_object_foreach(json_object_get(view, "moves"), n, x)
		{
			json_t *mv = json_is_object(x) ? json_deep_copy(x) : json_object();
			json_object_set_new(mv, "vm", json_string(n));
			json_array_append_new(json_object_get(doc, "moves"), mv);
		}
		json_object_set_new(doc, "etcd",
				    json_pack("{s:O, s:O?}", "ok", json_object_get(view, "ok"),
					      "error", json_object_get(view, "error")));
	}
	for (struct ed_vm *vm = ed_host_first(h); vm; vm = ed_host_next(h, vm)) {
		add_list_rule(rules, vm, "must-run-on", ed_vm_hosts_must(vm));
		add_list_rule(rules, vm, "must-not-run-on", ed_vm_hosts_avoid(vm));
	}
	json_object_set_new(doc, "imbalance", imbalance(hosts));
	size_t i;
	json_t *he;
	json_array_foreach(hosts, i, he) json_object_del(he, "load_doc");
	json_object_set_new(doc, "events", ed_metrics_recent(m));
	json_decref(mine);
	json_decref(view);
	return doc;
}

/* ---- requests ---- */

/* A browser elsewhere must not be able to act through a page that can
 * reach this listener: a cross-site POST cannot carry application/json
 * without a CORS preflight (never answered here), and a DNS-rebound name
 * does not match the Host this listener was given. */
static bool same_origin(struct ed_obs *o, struct ed_ctl_conn *c, struct ed_ctl_reply *rp)
{
	const char *ct = ed_ctl_conn_header(c, "content-type");
	const char *host = ed_ctl_conn_header(c, "host");
	if (strncasecmp(ct, "application/json", 16) || (ct[16] && ct[16] != ';')) {
		ed_ctl_fault(rp, 415,
			     "send the body as Content-Type: application/json (got \"%.60s\")", ct);
		return false;
	}
	if (strcmp(host, o->addr)) {
		ed_ctl_fault(rp, 403,
			     "Host \"%.80s\" is not this listener's address %s: actions are "
			     "refused under any other name",
			     host, o->addr);
		return false;
	}
	return true;
}

static int maintenance(struct ed_obs *o, struct ed_ctl_conn *c, const char *host, const char *body,
		       size_t len, struct ed_ctl_reply *rp)
{
	if (!o->actions) {
		ed_ctl_fault(rp, 403,
			     "maintenance actions are off on this listener "
			     "(start emberd with --http-allow-actions)");
		return 0;
	}
	if (!same_origin(o, c, rp))
		return 0;
	if (!o->view) {
		ed_ctl_fault(rp, 409, "maintenance mode needs cluster mode (--etcd)");
		return 0;
	}
	/* the control API's PUT /hosts/H/maintenance body (MOVE's move_ctl) */
	json_error_t e;
	json_t *j = json_loadb(body ? body : "", len, 0, &e);
	json_t *en = json_object_get(j, "enter");
	bool enter = json_is_true(en);
	if (!json_is_boolean(en) || json_object_size(j) != 1) {
		ed_ctl_fault(rp, 400, "body: give {\"enter\": true} or {\"enter\": false}%s%s",
			     j ? "" : ": ", j ? "" : e.text);
		json_decref(j);
		return 0;
	}
	json_decref(j);
	if (strlen(host) > ED_NAME_MAX ||
	    strspn(host, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-") !=
		strlen(host) ||
	    !*host) {
		ed_ctl_fault(rp, 400, "host name \"%.80s\": only letters, digits and '-'", host);
		return 0;
	}
	char by[ED_NAME_MAX + 16];
	snprintf(by, sizeof(by), "http@%s", ed_host_name(o->h));
	if (ed_view_maint(o->view, host, enter, by)) {
		ed_ctl_fault(rp, 500, "out of memory");
		return 0;
	}
	/* carried out by the etcd worker: its outcome is an event */
	ed_ctl_reply_json(rp, 202, json_pack("{s:s, s:b}", "host", host, "enter", enter));
	return 0;
}

static int handle(void *arg, struct ed_ctl_conn *c, const char *method, const char *url,
		  const char *body, size_t len, struct ed_ctl_reply *rp)
{
	struct ed_obs *o = arg;
	char path[ED_CTL_URL_MAX + 1];
	snprintf(path, sizeof(path), "%.*s", (int)strcspn(url, "?#"), url);
	bool get = !strcmp(method, "GET");
	const char *pre = "/api/hosts/", *suf = "/maintenance";
	size_t pl = strlen(path), sl = strlen(suf);
	if (!strncmp(path, pre, strlen(pre)) && pl > strlen(pre) + sl &&
	    !strcmp(path + pl - sl, suf)) {
		if (strcmp(method, "POST")) {
			ed_ctl_fault(rp, 405, "%s %s: method not allowed (use POST)", method, path);
			rp->allow = "POST";
			return 0;
		}
		path[pl - sl] = '\0';
		return maintenance(o, c, path + strlen(pre), body, len, rp);
	}
	bool known = !strcmp(path, "/") || !strcmp(path, "/index.html") ||
		     !strcmp(path, "/metrics") || !strcmp(path, "/api/cluster");
	if (!known) {
		ed_ctl_fault(rp, 404,
			     "no such path: %s (paths: / /metrics /api/cluster "
			     "/api/hosts/H/maintenance)",
			     path);
		return 0;
	}
	if (!get) {
		ed_ctl_fault(rp, 405, "%s %s: method not allowed (use GET)", method, path);
		rp->allow = "GET";
		return 0;
	}
	if (!strcmp(path, "/metrics")) {
		json_t *cl = ed_web_cluster(o->h, o->load, o->view, o->m, o->actions);
		size_t n = 0;
		char *text = ed_metrics_text(o->m, o->load, cl, &n);
		json_decref(cl);
		if (!text) {
			ed_ctl_fault(rp, 500, "out of memory");
			return 0;
		}
		*rp = (struct ed_ctl_reply){.status = 200,
					    .type = "text/plain; version=0.0.4; charset=utf-8",
					    .body = text,
					    .len = n};
		return 0;
	}
	if (!strcmp(path, "/api/cluster")) {
		ed_ctl_reply_json(rp, 200,
				  ed_web_cluster(o->h, o->load, o->view, o->m, o->actions));
		return 0;
	}
	size_t n = sizeof(ed_dashboard_html) - 1;
	char *page = malloc(n);
	if (!page) {
		ed_ctl_fault(rp, 500, "out of memory");
		return 0;
	}
	memcpy(page, ed_dashboard_html, n);
	/* the page runs only its own inline style and script (their hashes,
	 * made at build time), needs nothing from elsewhere, and no one may
	 * frame it (its maintenance buttons) */
	static const char csp[] =
	    "Content-Security-Policy: default-src 'none'; " ED_DASHBOARD_HTML_CSP
	    "; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors "
	    "'none'\r\nX-Content-Type-Options: nosniff\r\nCache-Control: no-store\r\n";
	*rp = (struct ed_ctl_reply){.status = 200,
				    .type = "text/html; charset=utf-8",
				    .body = page,
				    .len = n,
				    .headers = csp};
	return 0;
}

/* ADDR:PORT ("127.0.0.1:9120", "[::1]:9120") -> a listening socket. */
static int listen_tcp(const char *spec, char *err, size_t errlen)
{
	char host[256];
	const char *colon = strrchr(spec, ':');
	if (!colon || colon == spec || !colon[1] || (size_t)(colon - spec) >= sizeof(host)) {
		snprintf(err, errlen, "--http %s: give ADDR:PORT (127.0.0.1:9120, [::1]:9120)",
			 spec);
		return -EINVAL;
	}
	char *end;
	unsigned long port = strtoul(colon + 1, &end, 10);
	if (*end || !port || port > 65535 || colon[1] == '+' || colon[1] == '-') {
		snprintf(err, errlen, "--http %s: the port must be 1..65535", spec);
		return -EINVAL;
	}
	const char *a = spec;
	size_t alen = (size_t)(colon - spec);
	if (*a == '[' && alen >= 2 && a[alen - 1] == ']') {
		a++;
		alen -= 2;
	}
	snprintf(host, sizeof(host), "%.*s", (int)alen, a);
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM,
				 .ai_flags = AI_NUMERICHOST | AI_NUMERICSERV | AI_PASSIVE},
			*ai;
	int g = getaddrinfo(host, colon + 1, &hints, &ai);
	if (g) {
		snprintf(err, errlen, "--http %s: %s", spec, gai_strerror(g));
		return -EINVAL;
	}
	int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	int one = 1, r = fd < 0 ? -errno : 0;
	if (!r && (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) ||
		   bind(fd, ai->ai_addr, ai->ai_addrlen) || listen(fd, 64)))
		r = -errno;
	freeaddrinfo(ai);
	if (r) {
		snprintf(err, errlen, "--http %s: %s", spec, strerror(-r));
		if (fd >= 0)
			close(fd);
		return r;
	}
	return fd;
}

static void on_sample(void *arg, json_t *doc)
{
	struct ed_obs *o = arg;
	if (o->view)
		ed_view_put_load(o->view, doc);
}

void ed_obs_stop(struct ed_obs *o)
{
	if (!o)
		return;
	ed_ctl_close(o->srv);
	ed_view_stop(o->view);
	ed_load_free(o->load);
	ed_metrics_free(o->m);
	free(o);
}

int ed_obs_start(struct ed_obs **out, struct ed_host *h, struct ed_cluster *c,
		 const struct ed_obs_opts *op, char *err, size_t errlen)
{
	struct ed_obs *o = calloc(1, sizeof(*o));
	if (!o)
		return -ENOMEM;
	o->h = h;
	o->actions = op->allow_actions;
	uint64_t mem = op->mem_cap;
	if (!mem) { /* as cluster mode's default: 80% of RAM */
		long pages = sysconf(_SC_PHYS_PAGES), psz = sysconf(_SC_PAGESIZE);
		mem = (uint64_t)(pages > 0 ? pages : 0) * (uint64_t)(psz > 0 ? psz : 4096) / 5 * 4;
	}
	long cpus = sysconf(_SC_NPROCESSORS_ONLN);
	uint64_t cpu_m = op->cpu_cap_m ? op->cpu_cap_m : 1000 * (uint64_t)(cpus > 0 ? cpus : 1);
	int r = ed_metrics_new(&o->m, h);
	if (!r)
		r = ed_load_new(&o->load, h, op->load_interval_ms, cpu_m, mem);
	if (r)
		snprintf(err, errlen, "metrics: %s", strerror(-r));
	if (!r && c)
		r = ed_view_start(&o->view, h, c, op->endpoints, op->load_interval_ms, err, errlen);
	if (!r)
		ed_load_on_sample(o->load, on_sample, o);
	if (!r && op->http) {
		snprintf(o->addr, sizeof(o->addr), "%s", op->http);
		int fd = listen_tcp(op->http, err, errlen);
		r = fd < 0 ? fd : ed_ctl_serve(&o->srv, h, fd, handle, o);
		if (fd >= 0 && r) {
			close(fd);
			snprintf(err, errlen, "--http %s: %s", op->http, strerror(-r));
		}
	}
	if (r) {
		ed_obs_stop(o);
		return r;
	}
	*out = o;
	return 0;
}
