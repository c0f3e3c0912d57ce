/* Prometheus metrics (obs.h; docs/ha.md "Metrics and dashboard").  The
 * counters that other parts cause (failovers, migrations, snapshots,
 * events by kind) are counted here from the events stream, so no other
 * file carries a counter; restarts are the VMs' own count.  Everything
 * runs on the loop. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ha/emberd/local.h"
#include "ha/emberd/obs.h"

#define RECENT 50

struct kindcount {
	char kind[32];
	uint64_t n;
};

struct ed_metrics {
	struct ed_host *h;
	uint64_t seen; /* the last event counted */
	struct kindcount *kinds;
	size_t nkinds;
	uint64_t failovers, snapshots, mig_ok, mig_failed;
};

static bool is(const char *kind, const char *const *set)
{
	for (; *set; set++)
		if (!strcmp(kind, *set))
			return true;
	return false;
}

/* A live move's end (move.c): "moved" on the target once it owns and
 * runs the VM, "move-failed" on the side that saw it fail. */
static const char *const mig_ok[] = {"moved", NULL};
static const char *const mig_failed[] = {"move-failed", NULL};

static void count(struct ed_metrics *m, const char *kind, const char *detail)
{
	size_t i = 0;
	while (i < m->nkinds && strcmp(m->kinds[i].kind, kind))
		i++;
	if (i == m->nkinds) {
		struct kindcount *k = realloc(m->kinds, (m->nkinds + 1) * sizeof(*k));
		if (!k)
			return;
		m->kinds = k;
		memset(&k[i], 0, sizeof(k[i]));
		snprintf(k[i].kind, sizeof(k[i].kind), "%s", kind);
		m->nkinds++;
	}
	m->kinds[i].n++;
	/* a failover: a VM claimed from another host (not a first placement,
	 * "claimed from nobody", nor a claim back from ourselves) */
	char self[ED_NAME_MAX + 16];
	snprintf(self, sizeof(self), "claimed from %s ", ed_host_name(m->h));
	if (!strcmp(kind, "claimed") && strncmp(detail, "claimed from nobody", 19) &&
	    strncmp(detail, self, strlen(self)))
		m->failovers++;
	if (!strcmp(kind, "snapshot"))
		m->snapshots++;
	if (is(kind, mig_ok))
		m->mig_ok++;
	if (is(kind, mig_failed))
		m->mig_failed++;
}

static void on_event(void *arg)
{
	struct ed_metrics *m = arg;
	uint64_t next = m->seen;
	json_t *evs = ed_events_since(m->h, m->seen, &next);
	size_t i;
	json_t *ev;
	json_array_foreach(evs, i, ev)
	{
		const char *kind = json_string_value(json_object_get(ev, "kind"));
		const char *detail = json_string_value(json_object_get(ev, "detail"));
		count(m, kind ? kind : "?", detail ? detail : "");
	}
	json_decref(evs);
	m->seen = next;
}

int ed_metrics_new(struct ed_metrics **out, struct ed_host *h)
{
	struct ed_metrics *m = calloc(1, sizeof(*m));
	if (!m)
		return -ENOMEM;
	m->h = h;
	on_event(m); /* what happened before we watched (the start's events) */
	int r = ed_events_watch(h, on_event, m);
	if (r) {
		free(m->kinds);
		free(m);
		return r;
	}
	*out = m;
	return 0;
}

void ed_metrics_free(struct ed_metrics *m)
{
	if (!m)
		return;
	ed_events_unwatch(m->h, on_event, m);
	free(m->kinds);
	free(m);
}

json_t *ed_metrics_recent(struct ed_metrics *m)
{
	uint64_t next;
	return ed_events_since(m->h, m->seen > RECENT ? m->seen - RECENT : 0, &next);
}

static bool here(enum ed_state st)
{
	return st == ED_RUNNING || st == ED_STARTING || st == ED_BACKOFF;
}

static void host_gauges(struct ed_prom *p, struct ed_host *h, struct ed_load *l)
{
	const char *host = ed_host_name(h);
	const char *const lh[][2] = {{"host", host}};
	json_t *doc = ed_load_json(l);
	unsigned vms = 0;
	for (struct ed_vm *vm = ed_host_first(h); vm; vm = ed_host_next(h, vm))
		vms += here(ed_vm_state(vm));
	static const struct {
		const char *name, *help, *field;
		double scale;
	} g[] = {
	    {"ember_host_cpu_capacity_cores", "CPU this host offers, in cores", "cpu_capacity_m",
	     1e-3},
	    {"ember_host_cpu_used_cores", "CPU its VMs use (EWMA over ~5 s), in cores",
	     "cpu_used_m", 1e-3},
	    {"ember_host_memory_capacity_bytes", "Guest RAM this host offers", "mem_capacity", 1},
	    {"ember_host_memory_used_bytes", "Guest RAM of the VMs it runs", "mem_used", 1},
	};
	ed_prom_family(p, "ember_host_vms", "gauge",
		       "VMs this host runs (running, starting, backoff)");
	ed_prom_sample(p, "ember_host_vms", lh, 1, vms);
	for (size_t i = 0; i < sizeof(g) / sizeof(g[0]); i++) {
		ed_prom_family(p, g[i].name, "gauge", g[i].help);
		ed_prom_sample(p, g[i].name, lh, 1,
			       (double)json_integer_value(json_object_get(doc, g[i].field)) *
				   g[i].scale);
	}
	ed_prom_family(p, "ember_host_fenced", "gauge",
		       "1 while this host is self-fenced (its lease lapsed)");
	ed_prom_sample(p, "ember_host_fenced", lh, 1, ed_host_fenced(h));
	json_decref(doc);
}

static void vm_metrics(struct ed_prom *p, struct ed_host *h, struct ed_load *l)
{
	const char *host = ed_host_name(h);
	json_t *doc = ed_load_json(l);
	json_t *lv = json_object_get(doc, "vms");
	static const char *const fams[][3] = {
	    {"ember_vm_up", "gauge", "1 when the VM's ember runs on this host, else 0"},
	    {"ember_vm_cpu_seconds_total", "counter", "CPU time of the VM's embers, summed"},
	    {"ember_vm_cpu_used_cores", "gauge", "CPU the VM uses (EWMA over ~5 s), in cores"},
	    {"ember_vm_memory_rss_bytes", "gauge", "Resident memory of the VM's ember"},
	    {"ember_vm_memory_bytes", "gauge", "Guest RAM of the VM (its file)"},
	    {"ember_vm_restarts_total", "counter", "Restarts of the VM by its policy here"},
	};
	for (size_t f = 0; f < sizeof(fams) / sizeof(fams[0]); f++) {
		ed_prom_family(p, fams[f][0], fams[f][1], fams[f][2]);
		for (struct ed_vm *vm = ed_host_first(h); vm; vm = ed_host_next(h, vm)) {
			enum ed_state st = ed_vm_state(vm);
			if (st == ED_REMOTE)
				continue; /* its owner reports it */
			const char *name = ed_vm_name(vm);
			json_t *one = json_object_get(lv, name);
			const char *const lab[][2] = {{"vm", name}, {"host", host}};
			double val =
			    f == 0   ? (double)(st == ED_RUNNING)
			    : f == 1 ? ed_load_vm_cpu_seconds(l, name)
			    : f == 2
				? (double)json_integer_value(json_object_get(one, "cpu_m")) / 1000.0
			    : f == 3 ? (double)json_integer_value(json_object_get(one, "rss"))
			    : f == 4 ? (double)ed_vm_mem_bytes(vm)
				     : (double)vm->restarts;
			ed_prom_sample(p, fams[f][0], lab, f == 0 ? 2 : 1, val);
		}
	}
	json_decref(doc);
}

char *ed_metrics_text(struct ed_metrics *m, struct ed_load *l, json_t *cluster, size_t *len)
{
	struct ed_prom p = {0};
	host_gauges(&p, m->h, l);
	vm_metrics(&p, m->h, l);
	ed_prom_family(&p, "ember_failovers_total", "counter",
		       "VMs this host claimed from a host that failed (or left)");
	ed_prom_sample(&p, "ember_failovers_total", NULL, 0, (double)m->failovers);
	ed_prom_family(&p, "ember_migrations_total", "counter",
		       "Live moves into this host (ok), or failed as seen here");
	const char *const ok[][2] = {{"result", "ok"}}, *const bad[][2] = {{"result", "failed"}};
	ed_prom_sample(&p, "ember_migrations_total", ok, 1, (double)m->mig_ok);
	ed_prom_sample(&p, "ember_migrations_total", bad, 1, (double)m->mig_failed);
	ed_prom_family(&p, "ember_migrations_in_progress", "gauge",
		       "Moves requested in the cluster and not done yet (moves/ keys)");
	ed_prom_sample(&p, "ember_migrations_in_progress", NULL, 0,
		       (double)json_array_size(json_object_get(cluster, "moves")));
	ed_prom_family(&p, "ember_cluster_imbalance", "gauge",
		       "Standard deviation of host load over alive, non-maintenance hosts "
		       "(docs/balancing.md)");
	json_t *imb = json_object_get(cluster, "imbalance");
	ed_prom_sample(&p, "ember_cluster_imbalance", NULL, 0,
		       json_is_number(imb) ? json_number_value(imb) : 0.0 / 0.0);
	ed_prom_family(&p, "ember_cluster_hosts", "gauge",
		       "Hosts of the cluster as this host sees them, by state");
	size_t alive = 0, maint = 0, i;
	json_t *hj;
	json_array_foreach(json_object_get(cluster, "hosts"), i, hj)
	{
		alive += json_is_true(json_object_get(hj, "alive"));
		maint += !json_is_null(json_object_get(hj, "maintenance")) &&
			 json_object_get(hj, "maintenance");
	}
	const char *const la[][2] = {{"state", "alive"}}, *const lm[][2] = {
							      {"state", "maintenance"}};
	ed_prom_sample(&p, "ember_cluster_hosts", la, 1, (double)alive);
	ed_prom_sample(&p, "ember_cluster_hosts", lm, 1, (double)maint);
	ed_prom_family(&p, "ember_snapshots_total", "counter", "Snapshots this host committed");
	ed_prom_sample(&p, "ember_snapshots_total", NULL, 0, (double)m->snapshots);
	ed_prom_family(&p, "ember_events_total", "counter", "Events this host recorded, by kind");
	for (size_t k = 0; k < m->nkinds; k++) {
		const char *const lk[][2] = {{"kind", m->kinds[k].kind}};
		ed_prom_sample(&p, "ember_events_total", lk, 1, (double)m->kinds[k].n);
	}
	if (p.oom) {
		ed_prom_free(&p);
		return NULL;
	}
	*len = p.len;
	return p.buf;
}
