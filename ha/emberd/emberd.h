/* ha/emberd/: emberd, the supervisor (docs/ha.md).  This header is the
 * contract between emberd's parts: the local supervisor (host.c and the
 * files it uses: VM files, processes, policies, snapshots), its control
 * server (ctl.c, docs/ha.md "Control API"), and cluster mode (cluster.c,
 * through ha/etcd.h).  Private to ha/emberd/.
 *
 * Threads: everything that reads or writes a struct ed_vm runs on the
 * main thread's loop (struct ed_loop).  Another thread (cluster mode's
 * lease keeper, its etcd poller) hands work to the loop with
 * ed_loop_post(); the one thing it may do directly is ed_host_fence(). */
#ifndef EMBER_HA_EMBERD_H
#define EMBER_HA_EMBERD_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define ED_NAME_MAX 64 /* VM and host names: [A-Za-z0-9-], as the jailer's --id */
#define ED_ERR_MAX 512

/* ---- the loop (loop.c) ---- */

struct ed_loop;
typedef void (*ed_fd_fn)(void *arg, uint32_t events);
typedef void (*ed_timer_fn)(void *arg);
typedef void (*ed_post_fn)(void *arg);

__attribute__((warn_unused_result)) int ed_loop_new(struct ed_loop **l);
void ed_loop_free(struct ed_loop *l);
/* Watch fd for events (EPOLLIN...); fn runs on the loop.  0 or -errno. */
__attribute__((warn_unused_result)) int ed_loop_add_fd(struct ed_loop *l, int fd, uint32_t events,
						       ed_fd_fn fn, void *arg);
void ed_loop_del_fd(struct ed_loop *l, int fd);
/* fn(arg) once, after ms milliseconds (CLOCK_MONOTONIC); returns an id
 * for ed_loop_cancel (never 0), or 0 when out of memory. */
uint64_t ed_loop_timer(struct ed_loop *l, uint64_t ms, ed_timer_fn fn, void *arg);
void ed_loop_cancel(struct ed_loop *l, uint64_t id);
/* From any thread: fn(arg) runs on the loop soon.  0 or -ENOMEM. */
__attribute__((warn_unused_result)) int ed_loop_post(struct ed_loop *l, ed_post_fn fn, void *arg);
/* Runs until ed_loop_stop(); 0 or -errno. */
__attribute__((warn_unused_result)) int ed_loop_run(struct ed_loop *l);
void ed_loop_stop(struct ed_loop *l);
uint64_t ed_now_ms(void); /* CLOCK_MONOTONIC in ms */

/* ---- what a VM's state is, as the control API and events name it ---- */

enum ed_state {
	ED_STOPPED,    /* not running here, and not to be (stopped by the user, never started) */
	ED_STARTING,   /* jailer/ember launched, not yet seen running */
	ED_RUNNING,    /* its ember runs */
	ED_BACKOFF,    /* exited; restarts after a delay */
	ED_FAILED,     /* exited, and the policy gives up (or never restarts) */
	ED_SUSPENDED,  /* saved to a snapshot at host shutdown; resumes at next start */
	ED_REMOTE,     /* cluster: another host owns it */
	ED_UNPLACED,   /* cluster: no host may run it now (rules, capacity); the reason is kept */
};
const char *ed_state_name(enum ed_state s); /* "stopped", "running"... */

/* ---- the supervisor (host.c) ---- */

struct ed_host;
struct ed_vm;

/* Cluster mode's say in the local supervisor.  Every call runs on the
 * loop.  NULL hooks: single-host mode (every VM is ours; the snapshot
 * pointer is a local file, written by temp + fsync + rename). */
struct ed_cluster_hooks {
	void *arg;
	/* May this host start (or restart) vm now?  Only its owner may: false
	 * with a reason (shown in the VM's status) when another host owns it
	 * or our claim was lost.  Called before every start. */
	bool (*may_run)(void *arg, struct ed_vm *vm, char *why, size_t whylen);
	/* The fencing token of our ownership (its owner key's create
	 * revision), named in snapshot directories; 0 in single-host mode. */
	int64_t (*token)(void *arg, struct ed_vm *vm);
	/* A snapshot was written whole (state and memory fsync'ed) in dir:
	 * make it the VM's latest, by a transaction that compares our token.
	 * 0, or -ESTALE when our token is no longer the owner's (the snapshot
	 * is then deleted, never used), or -errno (etcd unreachable: keep the
	 * old pointer; retried at the next snapshot). */
	int (*snapshot_commit)(void *arg, struct ed_vm *vm, const char *dir);
	/* The VM's latest committed snapshot directory into buf, 0; -ENOENT
	 * when it has none; -errno on failure (then the VM boots only if its
	 * policy says a boot loses nothing). */
	int (*snapshot_latest)(void *arg, struct ed_vm *vm, char *buf, size_t len);
	/* The user stopped vm (emberctl stop) or the policy gave up: release
	 * or keep ownership as the cluster sees fit. */
	void (*vm_stopped)(void *arg, struct ed_vm *vm);
	/* GET /hosts and GET /status's "etcd" (new references / a word). */
	json_t *(*hosts_json)(void *arg);
	const char *(*etcd_health)(void *arg); /* "ok" or "unreachable" */
};

/* Start: how a VM comes up. */
enum ed_how {
	ED_HOW_POLICY,	/* resume from the latest snapshot when that loses nothing, else boot */
	ED_HOW_BOOT,	/* boot fresh on its current disks */
	ED_HOW_RESUME,	/* resume from the latest snapshot, or fail */
};

const char *ed_vm_name(const struct ed_vm *vm);
enum ed_state ed_vm_state(const struct ed_vm *vm);
uint64_t ed_vm_mem_bytes(const struct ed_vm *vm); /* guest RAM, for placement */
unsigned ed_vm_vcpus(const struct ed_vm *vm);
/* The VM's file's [emberd] placement keys, for cluster mode: each NULL-
 * terminated list of host names (may be empty, never NULL). */
const char *const *ed_vm_hosts_must(const struct ed_vm *vm);  /* run only on one of these */
const char *const *ed_vm_hosts_avoid(const struct ed_vm *vm); /* never run on these */
/* Mark a VM as owned elsewhere (ED_REMOTE, with the host named) or
 * unplaced (with why), for status and events. */
void ed_vm_set_remote(struct ed_vm *vm, const char *host);
void ed_vm_set_unplaced(struct ed_vm *vm, const char *why);

/* Iterate: the VMs in name order; NULL at the end. */
struct ed_vm *ed_host_first(struct ed_host *h);
struct ed_vm *ed_host_next(struct ed_host *h, struct ed_vm *vm);
struct ed_vm *ed_host_find(struct ed_host *h, const char *name);
struct ed_loop *ed_host_loop(struct ed_host *h);
const char *ed_host_name(const struct ed_host *h);

void ed_host_set_cluster(struct ed_host *h, const struct ed_cluster_hooks *hooks);

/* Start vm (checks may_run first).  0 when launched (it is then
 * ED_STARTING/ED_RUNNING), -EALREADY when it runs, -EPERM when may_run
 * said no (why filled), -errno with why otherwise. */
__attribute__((warn_unused_result)) int ed_vm_start(struct ed_host *h, struct ed_vm *vm,
						    enum ed_how how, const char *cause, char *why,
						    size_t whylen);
/* Stop vm: graceful (the VMM asked to stop through its API, SIGKILL after
 * grace_ms) or at once (grace_ms 0).  The VM is then ED_STOPPED and is
 * not restarted; cause goes into the event ("user", "fenced",
 * "claimed-elsewhere").  0 or -errno with why. */
__attribute__((warn_unused_result)) int ed_vm_stop(struct ed_host *h, struct ed_vm *vm,
						   uint64_t grace_ms, const char *cause, char *why,
						   size_t whylen);

/* Restart: stop (grace_ms as ed_vm_stop), then start by policy. */
__attribute__((warn_unused_result)) int ed_vm_restart(struct ed_host *h, struct ed_vm *vm,
						      uint64_t grace_ms, const char *cause,
						      char *why, size_t whylen);
/* A full snapshot of a running vm now (paused while it is written),
 * committed as its latest.  0 with the directory in dir and the time it
 * took in *ms, or -errno with why (-EINVAL: not running). */
__attribute__((warn_unused_result)) int ed_vm_snapshot(struct ed_host *h, struct ed_vm *vm,
						     char *dir, size_t dirlen, uint64_t *ms,
						     char *why, size_t whylen);
/* The VM's console log file (guest serial output, ember's stderr). */
const char *ed_vm_console_path(const struct ed_vm *vm);

/* Rescan the VM folder: new files are added (autostarted by the caller's
 * ed_host_start_fresh()), removed
 * ones stopped and dropped, changed ones take effect at their next start;
 * a malformed file is reported and skipped while the others run.  0 with
 * *report {"added", "removed", "changed", "errors": [{"file", "error"}]}
 * (new reference), or -errno with why. */
__attribute__((warn_unused_result)) int ed_host_reload(struct ed_host *h, json_t **report,
						     char *why, size_t whylen);
/* After ed_host_reload(): start the VMs it added whose policy says
 * autostart (never one the user stopped). */
void ed_host_start_fresh(struct ed_host *h);
/* GET /status and GET /hosts (new references): see docs/ha.md. */
json_t *ed_host_status_json(struct ed_host *h);
json_t *ed_host_hosts_json(struct ed_host *h);

/* Self-fencing: SIGKILL every VM's ember now (pidfd_send_signal) and keep
 * every VM from starting until ed_host_unfence().  Thread-safe and
 * non-blocking: the lease keeper calls it from its own thread.  reason is
 * logged loudly (and becomes a "fenced" event per VM on the loop). */
void ed_host_fence(struct ed_host *h, const char *reason);
void ed_host_unfence(struct ed_host *h);
bool ed_host_fenced(const struct ed_host *h);

/* ---- events (events.c) ---- */

/* Record an event: kind "started", "exited", "restarted", "restored",
 * "stopped", "failed", "fenced", "claimed", "moved", "snapshot",
 * "suspended", "resumed", "config-error"...; vm may be NULL (host
 * events).  detail: a short human sentence.  Goes to the in-memory ring
 * the control API serves (GET /events), to the events file, and to
 * stderr in journald's conventions ("<N>" priority prefixes). */
__attribute__((format(printf, 4, 5))) void ed_event(struct ed_host *h, const char *vm,
						    const char *kind, const char *fmt, ...);

/* The events newer than since, oldest first, as a JSON array of EVENT
 * objects (docs/ha.md; new reference); *next: what to pass as since next
 * time.  The ring keeps the last 4096. */
json_t *ed_events_since(struct ed_host *h, uint64_t since, uint64_t *next);
/* fn(arg) runs on the loop after each new event (long polls of GET
 * /events); ed_events_unwatch removes it.  0 or -ENOMEM. */
__attribute__((warn_unused_result)) int ed_events_watch(struct ed_host *h, void (*fn)(void *),
						      void *arg);
void ed_events_unwatch(struct ed_host *h, void (*fn)(void *), void *arg);

/* ---- the control API (ctl.c; docs/ha.md "Control API") ---- */

/* Serve HTTP/1.1 on the unix socket sock (made 0600, replacing a stale
 * one, refusing one another emberd serves): one request per connection,
 * JSON replies, errors as {"fault_message": "..."} (ember's own API's
 * shape, so ha_api_fault() reads them).  0 with *s (for ed_ctl_close),
 * or -errno with err. */
struct ed_ctl;
__attribute__((warn_unused_result)) int ed_ctl_open(struct ed_ctl **s, struct ed_host *h,
						    const char *sock, char *err, size_t errlen);
/* Stop serving: every connection closed (long polls unwatch their
 * events), the socket closed and its file unlinked if it is still ours.
 * Before ed_host_free(). */
void ed_ctl_close(struct ed_ctl *s);

/* A VM's status object, as GET /vms and GET /vms/NAME return it (new
 * reference). */
json_t *ed_vm_status_json(const struct ed_vm *vm);

/* ---- systemd (notify.c; libsystemd's sd_notify) ---- */

/* READY=1 with a STATUS= line; starts WATCHDOG=1 keep-alives on l at
 * half of $WATCHDOG_USEC when systemd asked for them.  Not under
 * systemd ($NOTIFY_SOCKET unset): does nothing. */
void ed_notify_ready(struct ed_loop *l, const char *status);
void ed_notify_stopping(const char *status); /* STOPPING=1 */

/* ---- cluster mode (cluster.c) ---- */

struct ed_cluster_opts {
	const char *endpoints; /* etcd: "http://10.0.0.1:2379,http://..." */
	unsigned ttl_s;	       /* the host lease's TTL (default 2) */
	uint64_t fence_margin_ms; /* self-fence at last renewal + TTL - margin */
	uint64_t grace_ms;	  /* survivors wait this after a lease's expiry */
	uint64_t capacity_mem;	  /* bytes of guest RAM this host offers (0: 80% of RAM) */
	unsigned capacity_vcpus;  /* vCPUs it offers (0: 4 x its CPUs) */
};

struct ed_cluster;
/* Join the cluster as h's host name: grant and keep the lease, register
 * hosts/<name>, take over VM placement through h's hooks.  etcd
 * unreachable: reported and retried; VMs start only once owned.  0 or
 * -errno with err (bad options). */
__attribute__((warn_unused_result)) int ed_cluster_start(struct ed_cluster **c, struct ed_host *h,
							 const struct ed_cluster_opts *o, char *err,
							 size_t errlen);
/* Leave: stop the threads; release_vms: our VMs were suspended or stopped
 * cleanly, so give up their owner keys and revoke the lease. */
void ed_cluster_stop(struct ed_cluster *c, bool release_vms);
/* GET /hosts: the cluster's hosts (new reference). */
json_t *ed_cluster_hosts_json(struct ed_cluster *c);
/* Our current host lease (0: none, or fenced), for keys bound to it
 * (load/<h>); thread-safe. */
int64_t ed_cluster_lease(struct ed_cluster *c);

/* ---- observability (web.c, load.c, metrics.c, view.c; docs/ha.md
 * "Metrics and dashboard") ---- */

struct ed_obs_opts {
	const char *http;	   /* "ADDR:PORT": serve /metrics and the dashboard; NULL: none */
	bool allow_actions;	   /* POST /api/hosts/H/maintenance on it */
	uint64_t load_interval_ms; /* load sampling (default 2000) */
	uint64_t cpu_cap_m;	   /* CPU offered, millicores (0: CPUs x 1000) */
	uint64_t mem_cap;	   /* guest RAM offered (0: 80% of RAM) */
	const char *endpoints;	   /* cluster mode: etcd (load/<h>, the dashboard's view) */
};
struct ed_obs;
/* Sample the VMs' load every interval (cluster mode c: put as load/<h>
 * under c's lease by a worker thread), count events for the metrics, and
 * with o->http serve them on TCP.  0 or -errno with err (a bad or busy
 * address).  Stop it before ed_cluster_stop() and ed_host_free(). */
__attribute__((warn_unused_result)) int ed_obs_start(struct ed_obs **obs, struct ed_host *h,
						     struct ed_cluster *c,
						     const struct ed_obs_opts *o, char *err,
						     size_t errlen);
void ed_obs_stop(struct ed_obs *obs);

#endif
