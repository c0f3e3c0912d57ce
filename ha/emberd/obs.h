/* ha/emberd/: observability (docs/ha.md "Metrics and dashboard"): each
 * VM's load sampled from /proc (load.c), the cluster's keys read by a
 * worker thread (view.c, cluster mode: it also puts load/<h>), Prometheus
 * metrics (metrics.c) and the dashboard with its JSON (web.c) on a TCP
 * listener served by the control server's HTTP code (ctl_http.c).  The
 * pure parts (obs_pure.c) are unit-tested (tests/unit/test_ha_obs.c).
 * Private to those files and main.c. */
#ifndef EMBER_HA_EMBERD_OBS_H
#define EMBER_HA_EMBERD_OBS_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ha/emberd/emberd.h"

/* ---- pure (obs_pure.c) ---- */

/* /proc/PID/stat's text: utime + stime (clock ticks, every thread of the
 * process).  The command name (field 2) may hold spaces and parentheses:
 * the fields are counted after its LAST ')'.  0 or -EINVAL. */
__attribute__((warn_unused_result)) int ed_obs_stat_ticks(const char *stat, uint64_t *ticks);
/* /proc/PID/status's text: VmRSS in bytes (0 when absent: a zombie, a
 * kernel thread).  0 or -EINVAL (a VmRSS line that does not parse). */
__attribute__((warn_unused_result)) int ed_obs_status_rss(const char *status, uint64_t *bytes);
/* One EWMA step with time constant tau_ms: prev + a (sample - prev),
 * a = 1 - exp(-dt_ms / tau_ms), so the weight of a sample does not depend
 * on how often one is taken.  first: no history, the sample itself. */
double ed_obs_ewma(double prev, double sample, uint64_t dt_ms, uint64_t tau_ms, bool first);

/* Prometheus text exposition format 0.0.4, built in memory. */
struct ed_prom {
	char *buf;
	size_t len, cap;
	bool oom; /* an append failed: the text is incomplete */
};
/* A label value escaped (\\, \", \n as the format says) into out: 0, or
 * -ENOSPC when it does not fit (out then holds "" ). */
__attribute__((warn_unused_result)) int ed_prom_escape(const char *in, char *out, size_t outlen);
/* "# HELP name help\n# TYPE name type\n" (help's \\ and newlines escaped). */
void ed_prom_family(struct ed_prom *p, const char *name, const char *type, const char *help);
/* "name{k1="v1",k2="v2"} value\n": labels as nlabels pairs {key, value}
 * (values escaped here); value printed exactly for integers. */
void ed_prom_sample(struct ed_prom *p, const char *name, const char *const labels[][2],
		    size_t nlabels, double value);
void ed_prom_free(struct ed_prom *p);

/* ---- load (load.c; on the loop) ---- */

struct ed_load;
/* Sample every interval_ms.  cpu_cap_m: CPUs x 1000; mem_cap: bytes of
 * guest RAM offered.  0 or -ENOMEM. */
__attribute__((warn_unused_result)) int ed_load_new(struct ed_load **l, struct ed_host *h,
						    uint64_t interval_ms, uint64_t cpu_cap_m,
						    uint64_t mem_cap);
void ed_load_free(struct ed_load *l);
/* fn(arg, doc) after each sample, doc the load/<h> value (borrowed). */
void ed_load_on_sample(struct ed_load *l, void (*fn)(void *arg, json_t *doc), void *arg);
/* The last sample: the load/<h> document (docs/ha.md; new reference). */
json_t *ed_load_json(struct ed_load *l);
/* A VM's CPU time summed over its embers, in seconds (a counter that
 * survives restarts); 0 when never sampled. */
double ed_load_vm_cpu_seconds(struct ed_load *l, const char *vm);

/* ---- the cluster's keys (view.c: a worker thread with its own etcd client) ---- */

struct ed_view;
/* Every interval_ms: put load/<host> (the latest ed_view_put_load()) under
 * c's lease, then read hosts/ load/ maint/ moves/ rules/ owner/.  c
 * non-NULL (cluster mode only).  0 or -errno with err. */
__attribute__((warn_unused_result)) int ed_view_start(struct ed_view **v, struct ed_host *h,
						      struct ed_cluster *c, const char *endpoints,
						      uint64_t interval_ms, char *err,
						      size_t errlen);
void ed_view_stop(struct ed_view *v);
/* Hand the worker the newest load/<h> value (copied; never blocks on etcd). */
void ed_view_put_load(struct ed_view *v, json_t *doc);
/* The last read: {"hosts", "load", "maint", "moves", "rules": {name: value
 * JSON}, "owner": {vm: host}, "ok": bool, "error"} (new reference). */
json_t *ed_view_json(struct ed_view *v);
/* Enter (maint/<host> put) or exit (deleted) maintenance, done by the
 * worker; the outcome is an event "maintenance" or "maintenance-failed".
 * 0 or -ENOMEM. */
__attribute__((warn_unused_result)) int ed_view_maint(struct ed_view *v, const char *host,
						      bool enter, const char *by);

/* ---- metrics (metrics.c; on the loop) ---- */

struct ed_metrics;
/* Count events by kind (restarts, failovers, migrations, snapshots). */
__attribute__((warn_unused_result)) int ed_metrics_new(struct ed_metrics **m, struct ed_host *h);
void ed_metrics_free(struct ed_metrics *m);
/* The /metrics text (malloc'd, *len) or NULL when out of memory. */
char *ed_metrics_text(struct ed_metrics *m, struct ed_load *l, json_t *cluster, size_t *len);
/* The last 50 events (new reference). */
json_t *ed_metrics_recent(struct ed_metrics *m);

/* ---- the TCP listener (web.c) ---- */

/* The GET /api/cluster document (new reference): hosts with load,
 * maintenance and alive, their VMs, rules, moves, events, imbalance. */
json_t *ed_web_cluster(struct ed_host *h, struct ed_load *l, struct ed_view *v,
		       struct ed_metrics *m, bool actions);

#endif
