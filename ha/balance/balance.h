/* ha/balance/: automatic balancing and placement ("DRS for microVMs"),
 * docs/balancing.md.  Pure functions: a cluster's state in (hosts, VMs,
 * rules, recent moves), moves / a host / violations out.  No I/O, no
 * global state, no clock: the same input gives the same answer, so the
 * balancer runs in emberd (one elected host) and in the simulator
 * (build/tools/ember-balance-sim) at scales no test machine holds.
 *
 * Every array is the caller's.  Hosts and VMs are named by their index
 * in the cluster's arrays; names are only for messages. */
#ifndef EMBER_HA_BALANCE_H
#define EMBER_HA_BALANCE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define HA_BAL_NONE UINT32_MAX /* no host / no rule */
#define HA_BAL_WHY_MAX 200     /* a note's text, NUL included */

struct ha_bal_host {
	const char *name;
	uint64_t cpu_cap; /* CPU it offers, in the unit of ha_bal_vm.cpu (e.g. millicores) */
	uint64_t mem_cap; /* bytes of guest RAM it offers */
	bool alive;	  /* its lease is held: dead hosts are failover's, not ours */
	bool maintenance; /* evacuate it; nothing new goes there */
};

struct ha_bal_vm {
	const char *name;
	uint32_t host;	     /* where it runs (HA_BAL_NONE: not placed) */
	uint64_t cpu;	     /* CPU demand, in the hosts' unit */
	uint64_t mem;	     /* guest RAM, bytes */
	uint64_t dirty_rate; /* bytes/s it dirties (what a live migration re-sends) */
	/* A migration in flight to this host (HA_BAL_NONE: none): the VM
	 * stays put, its memory and CPU are reserved on both hosts, and it
	 * counts against max_concurrent. */
	uint32_t migrating_to;
	const char *pinned; /* non-NULL: never moved, the text says why */
};

enum ha_bal_kind {
	HA_BAL_AFFINITY,	  /* VMs on one host (moved together or not at all) */
	HA_BAL_ANTI_AFFINITY,	  /* VMs on distinct hosts */
	HA_BAL_MUST_RUN_ON,	  /* VMs only on the host group: never broken */
	HA_BAL_MUST_NOT_RUN_ON,	  /* VMs never on the host group: never broken */
	HA_BAL_SHOULD_RUN_ON,	  /* preferred; broken only when nothing else fits */
	HA_BAL_SHOULD_NOT_RUN_ON, /* preferred; broken only when nothing else fits */
};

/* VM-VM rules (affinity, anti-affinity) are hard, as DRS treats them: no
 * move or placement breaks one; a violation found is fixed when it can be. */
struct ha_bal_rule {
	const char *name; /* for messages: "rule NAME" */
	enum ha_bal_kind kind;
	const uint32_t *vms; /* VM indices */
	uint32_t nr_vms;
	const uint32_t *hosts; /* the host group (VM-host kinds only) */
	uint32_t nr_hosts;
};

/* vm left host lately: balancing never moves it back (anti-oscillation). */
struct ha_bal_recent {
	uint32_t vm, host;
};

struct ha_bal_cluster {
	struct ha_bal_host *hosts;
	uint32_t nr_hosts;
	struct ha_bal_vm *vms;
	uint32_t nr_vms;
	const struct ha_bal_rule *rules;
	uint32_t nr_rules;
	const struct ha_bal_recent *recent;
	uint32_t nr_recent;
};

struct ha_bal_opts {
	unsigned level;		 /* 1 (mandatory moves only) .. 5 (most aggressive) */
	double target;		 /* balance when the imbalance exceeds this (stddev) */
	double stop;		 /* ...and then down to this (<= target): the hysteresis band */
	double min_benefit;	 /* a balancing move must cut n * variance by this much */
	uint32_t max_moves;	 /* VM migrations proposed per round (0: no cap) */
	uint32_t max_concurrent; /* migrations at once, those in flight included (0: no cap) */
	uint64_t link_bps;	 /* migration bandwidth, bytes/s, for the cost */
	uint64_t move_overhead;	 /* fixed cost of any migration, in bytes */
	/* Hosts examined per balancing step: the most loaded donors and, per
	 * VM, the least loaded receivers (speed against finesse). */
	uint32_t donors, receivers;
	/* The previous round stopped at a cap with the imbalance still above
	 * stop: keep going even if it is now under target. */
	bool resume;
};

enum ha_bal_reason {
	HA_BAL_R_MAINTENANCE, /* its host is in maintenance */
	HA_BAL_R_RULE,	      /* a rule is violated where it runs (move.rule) */
	HA_BAL_R_BALANCE,     /* imbalance above target */
};

struct ha_bal_move {
	uint32_t vm, from, to;
	enum ha_bal_reason reason;
	uint32_t rule;		/* HA_BAL_R_RULE: the rule it fixes */
	double imbalance_after; /* stddev once this and the moves before it are done */
	uint64_t cost;		/* bytes the migration is expected to send */
};

/* A VM that should move but stays (or a rule that stays broken), and why. */
struct ha_bal_note {
	uint32_t vm;
	uint32_t rule; /* the rule concerned, or HA_BAL_NONE */
	char why[HA_BAL_WHY_MAX];
};

struct ha_bal_plan {
	struct ha_bal_move *moves; /* caller's array of cap_moves */
	uint32_t cap_moves, nr_moves;
	struct ha_bal_note *notes; /* caller's array of cap_notes */
	uint32_t cap_notes, nr_notes;
	uint32_t notes_dropped; /* notes beyond cap_notes */
	double imbalance_before, imbalance_after;
	bool capped; /* stopped at max_moves / max_concurrent / cap_moves: more to do */
};

/* A violation the checker found. */
struct ha_bal_violation {
	uint32_t vm, host;
	uint32_t rule; /* HA_BAL_NONE: memory overcommitted on host */
	bool must;     /* false: a should rule (soft) */
};

/* Options for level 1..5 (docs/balancing.md, "Threshold levels"), with
 * the defaults for everything else; 0 or -EINVAL (level out of range). */
__attribute__((warn_unused_result)) int ha_bal_opts_init(struct ha_bal_opts *o, unsigned level);

/* Is c well formed: indices in range, capacities non-zero, names set, no
 * VM twice in a rule, no empty group in a run-on rule?  0, -EINVAL with
 * err naming the host, VM or rule at fault, or -ENOMEM.  ha_bal_plan and
 * ha_bal_place validate first; the other functions expect a valid c. */
__attribute__((warn_unused_result)) int ha_bal_validate(const struct ha_bal_cluster *c, char *err,
							size_t errlen);

/* The imbalance: the standard deviation over alive, non-maintenance
 * hosts of load = max(cpu used / cpu cap, mem used / mem cap).  0 for
 * fewer than two hosts, NAN when out of memory.  c must be valid. */
double ha_bal_imbalance(const struct ha_bal_cluster *c);

/* One round: mandatory moves (maintenance, then must rules, then should
 * rules), then balancing while the imbalance is above o->target (down to
 * o->stop), best benefit per cost first.  Moves into p->moves in the
 * order to carry them out; a unit of affinity moves as consecutive
 * moves.  Never proposes a move that breaks a must or VM-VM rule or
 * overcommits memory.  c is not changed.  0, -EINVAL (c or o bad, err
 * says why), -ENOMEM. */
__attribute__((warn_unused_result)) int ha_bal_plan(const struct ha_bal_cluster *c,
						    const struct ha_bal_opts *o,
						    struct ha_bal_plan *p, char *err,
						    size_t errlen);

/* Initial placement (or failover) of c->vms[vm], whose host field is
 * ignored: the alive, non-maintenance host that obeys every hard rule,
 * has the memory, prefers hosts that keep the should rules, and is
 * least loaded after.  0 with *host; -ENOSPC with why (what excluded
 * the hosts); -EINVAL (bad c or vm). */
__attribute__((warn_unused_result)) int ha_bal_place(const struct ha_bal_cluster *c,
						     const struct ha_bal_opts *o, uint32_t vm,
						     uint32_t *host, char *why, size_t whylen);

/* The checker: every must / VM-VM rule broken and every host whose
 * memory is overcommitted (must = true), then should rules broken
 * (must = false), in c as it stands.  Up to cap into v; *nr_must and
 * *nr_should count all (beyond cap too).  Unplaced VMs and VMs on
 * dead hosts break nothing.  Independent of ha_bal_plan's code. */
void ha_bal_check(const struct ha_bal_cluster *c, struct ha_bal_violation *v, uint32_t cap,
		  uint32_t *nr_must, uint32_t *nr_should);

/* Carry p's moves out in c (vms[].host = to): for the simulator and tests. */
void ha_bal_apply(struct ha_bal_cluster *c, const struct ha_bal_plan *p);

/* "maintenance", "rule", "balance". */
const char *ha_bal_reason_name(enum ha_bal_reason r);
/* The expected bytes a migration of vm sends under o (docs/balancing.md, "Cost"). */
uint64_t ha_bal_cost(const struct ha_bal_vm *vm, const struct ha_bal_opts *o);

#endif
