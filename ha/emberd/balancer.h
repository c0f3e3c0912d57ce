/* ha/emberd/: the balancer's side of cluster mode (docs/balancing.md,
 * "Wiring"): the model of the cluster built from one etcd revision
 * (balancer_model.c, pure, unit-tested) that placement and the elected
 * balancer (balancer.c) hand to ha/balance/.  Private to ha/emberd/. */
#ifndef EMBER_HA_EMBERD_BALANCER_H
#define EMBER_HA_EMBERD_BALANCER_H

#include <stddef.h>
#include <stdint.h>

#include "ha/balance/balance.h"
#include "ha/emberd/cluster_priv.h"

/* The etcd ranges the model reads, all from one revision (each may be
 * an empty range): hosts/, load/, owner/, maint/, rules/, moves/, state/. */
enum { BM_HOSTS, BM_LOAD, BM_OWNER, BM_MAINT, BM_RULES, BM_MOVES, BM_STATE, BM_NR };

/* The transaction's reads of those ranges, in that order, into
 * keys/reads (the caller's). */
void bm_reads(char keys[BM_NR][64], struct ha_etcd_op reads[BM_NR]);

/* A recent move, by name: vm left host (balancing never moves it back). */
struct bm_recent {
	char vm[ED_NAME_MAX], host[ED_NAME_MAX];
};

/* The cluster as ha/balance/ sees it; its names point into the ranges
 * and specs it was built from, which must outlive it. */
struct bm_model {
	struct ha_bal_cluster c;
	int64_t *token;	 /* per VM: owner/<vm>'s mod revision, what a move compares (0: none) */
	bool *in_flight; /* per VM: a moves/<vm> key exists */
	char warn[ED_ERR_MAX]; /* the first rule that was skipped, and why ("": none) */
	void **allocs;	       /* what bm_free frees */
	size_t nallocs;
};

/* Build m from the ranges r[BM_NR] (keys under CL_PREFIX), the VM files'
 * specs[0..n) (their rules), and the recent moves.  Hosts: hosts/ (alive;
 * maint/<h> -> maintenance; CPU capacity from load/<h>, else 1000 per
 * vCPU), then hosts a rule names that are not alive (dead, so a must
 * rule's group is never empty).  VMs: the specs, placed where owner/ says
 * (a VM stopped by the user is unplaced and weighs nothing), CPU and
 * dirty rate from the owner's load/ entry (0 when absent), migrating_to
 * from moves/<vm>.  Rules: per VM file (hosts, avoid_hosts, prefer_hosts,
 * prefer_avoid_hosts; one rule per affinity / anti-affinity group), then
 * rules/<name> (unknown VMs left out; a malformed rule is skipped and
 * named in m->warn).  0, or -ENOMEM. */
__attribute__((warn_unused_result)) int bm_build(struct bm_model *m, const struct ha_etcd_range *r,
						 const struct cl_spec *specs, size_t n,
						 const struct bm_recent *recent, size_t nrecent);
/* Keep vm off host for this model (a move there failed lately): a
 * must-not-run-on rule named "VM: a move to HOST failed".  0 or -ENOMEM;
 * unknown names are ignored. */
__attribute__((warn_unused_result)) int bm_avoid(struct bm_model *m, const char *vm,
						 const char *host);
void bm_free(struct bm_model *m);
/* The index of host name in m (HA_BAL_NONE: none). */
uint32_t bm_host(const struct bm_model *m, const char *name);

/* A cluster rule's JSON value ({"kind", "vms", "hosts"}) checked: 0, or
 * -EINVAL with err saying what is wrong.  *kind set when 0. */
__attribute__((warn_unused_result)) int bm_rule_check(const char *json, enum ha_bal_kind *kind,
						      char *err, size_t errlen);
/* "affinity", "anti-affinity", "must-run-on"... (the rules/ keys' kinds);
 * NULL when out of range. */
const char *bm_kind_name(enum ha_bal_kind k);

/* The elected balancer (balancer.c): a thread started with cluster mode
 * when level > 0. */
struct bm_opts {
	unsigned level;		 /* 1..5 as DRS; 0: off */
	uint64_t interval_ms;	 /* between rounds */
	uint32_t max_moves;	 /* moves requested per round (the rate limit) */
	uint32_t max_concurrent; /* moves/ keys at once */
	uint32_t recent_rounds;	 /* a VM moved is not moved back for this many rounds */
};
struct bm_balancer;
__attribute__((warn_unused_result)) int bm_start(struct bm_balancer **b, struct ed_cluster *c,
						 const struct bm_opts *o, char *err, size_t errlen);
void bm_stop(struct bm_balancer *b);

/* The ed_cluster_hooks.rules hook (cluster_rules.c): on the loop, with
 * the loop's etcd client; arg is the struct ed_cluster. */
int cl_rules_hook(void *arg, const char *method, const char *name, const char *body, json_t **out,
		  char *err, size_t errlen);

/* The specs of h's VMs, copied (on the loop): cl_specs_free frees them. */
struct cl_spec *cl_specs_copy(struct ed_host *h, size_t *n);

#endif
