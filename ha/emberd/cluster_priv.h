/* ha/emberd/: cluster mode's state, shared by its files (cluster.c: start,
 * stop, the lease keeper, its watchdog and the hooks; cluster_poll.c: the
 * poller that claims and places).  Private to those two. */
#ifndef EMBER_HA_EMBERD_CLUSTER_PRIV_H
#define EMBER_HA_EMBERD_CLUSTER_PRIV_H

#include <pthread.h>
#include <stdatomic.h>

#include "ha/emberd/emberd.h"
#include "ha/etcd.h"

/* A VM's spec as the poller needs it: copied from the loop (the poller
 * never touches a struct ed_vm). */
struct cl_spec {
	char name[ED_NAME_MAX];
	uint64_t mem;
	unsigned vcpus;
	char **must, **avoid; /* NULL-terminated copies */
};

/* A claim we hold: the VM's owner key under our lease, and its token. */
struct cl_claim {
	char vm[ED_NAME_MAX];
	int64_t token;
};

struct ed_cluster {
	struct ed_host *h;
	struct ed_loop *loop;
	char name[ED_NAME_MAX];
	char *endpoints;
	uint64_t ttl_ms, margin_ms, grace_ms, settle_ms;
	uint64_t mem_cap;
	unsigned vcpus_cap;
	struct ha_etcd *lc; /* the loop thread's own client (the hooks) */
	struct ed_cluster_hooks hooks;

	pthread_t keeper, watchdog, poller;
	bool started_keeper, started_watchdog, started_poller;
	atomic_bool stop;

	pthread_mutex_t mu; /* everything below */
	pthread_cond_t cv;  /* stop, and the keeper's wake-ups (CLOCK_MONOTONIC) */
	int64_t lease;	    /* 0: none */
	uint64_t lease_at;  /* when our lease was granted (ms) */
	uint64_t last_ok;   /* when the last successful renewal was SENT (ms) */
	bool fenced;
	bool reachable; /* the last etcd call of the keeper or poller got an answer */
	struct cl_claim *claims;
	size_t nclaims;
	char **stopped; /* VMs whose desired state is "stopped" (last poll) */
	size_t nstopped;
	struct cl_spec *specs; /* the loop's VMs, fresh from the loop; the poller takes them */
	size_t nspecs;
	bool specs_asked; /* a refresh is posted to the loop */
	json_t *hosts;	  /* GET /hosts: the last poll's view */
	json_t *owners;	  /* vm -> owner host name, the last poll's view */
	/* VMs the cluster itself is stopping (claim lost, owned elsewhere):
	 * their stop is not the user's, so vm_stopped records nothing.  On
	 * the loop only. */
	char (*self_stops)[ED_NAME_MAX];
	size_t nself_stops;
};

/* Keys: "ember/" + kind + "/" + name. */
#define CL_PREFIX "ember/"
void cl_key(char *buf, size_t len, const char *kind, const char *name);

/* Claims, under c->mu. */
struct cl_claim *cl_claim_find(struct ed_cluster *c, const char *vm);
void cl_claim_set(struct ed_cluster *c, const char *vm, int64_t token);
void cl_claim_drop(struct ed_cluster *c, const char *vm);

/* Post a host event (vm NULL) or a VM event to the loop; from any thread. */
void cl_event(struct ed_cluster *c, const char *vm, const char *kind, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Sleep up to ms, or less when c stops: false once it has stopped. */
bool cl_sleep(struct ed_cluster *c, uint64_t ms);

/* On the loop: vm is being stopped by the cluster, not by its user;
 * cl_self_stopped() tells (once) whether vm's stop was such a one. */
void cl_self_stop(struct ed_cluster *c, const char *vm);
bool cl_self_stopped(struct ed_cluster *c, const char *vm);

/* The poller thread (cluster_poll.c). */
void *cl_poller(void *arg);
void cl_specs_free(struct cl_spec *s, size_t n);
/* Record whether etcd answered (a change is an event). */
void cl_set_reachable(struct ed_cluster *c, bool ok, const char *err);

#endif
