/* ha/balance/'s private model: the cluster indexed for one round (units
 * of affinity, loads, a host order by load, rule lookups).  Built per
 * call, freed after: the public functions stay pure. */
#ifndef EMBER_HA_BALANCE_PRIV_H
#define EMBER_HA_BALANCE_PRIV_H

#include "ha/balance/balance.h"

/* VMs bound by affinity (transitively): they move as one. */
struct bal_unit {
	uint32_t first, n;	 /* members: m->members[first .. first + n) */
	uint64_t cpu, mem, cost; /* sums over the members */
	uint32_t host;		 /* where all members are; HA_BAL_NONE: split or not placed */
	uint32_t next, prev;	 /* on host's list (whole units on an alive host) */
	const char *fixed;	 /* non-NULL: may not move, why */
	bool moved;		 /* moved in this round: balancing leaves it be */
	bool lost;		 /* a member unplaced or on a dead host: failover's */
	bool plain;		 /* one VM, in no rule, no recent host: memory is all to check */
};

struct bal_model {
	const struct ha_bal_cluster *c;
	const struct ha_bal_opts *o;
	uint32_t nh, nv, nu;
	uint64_t *cpu_used, *mem_used;
	double *load;
	uint8_t *elig; /* alive and not in maintenance */
	uint32_t *vm_host, *vm_unit, *members;
	struct bal_unit *units;
	uint32_t *head;	       /* per host: first unit on it, HA_BAL_NONE at the end */
	uint32_t *vr_off, *vr; /* the rules of vm v: vr[vr_off[v] .. vr_off[v + 1]) */
	uint32_t *rc_off, *rc; /* the hosts vm v left lately, likewise */
	uint8_t *bits;	       /* host-group bitmaps, one row per rule */
	size_t stride;
	/* Anti-affinity rules of more than BAL_ANTI_SCAN VMs: members per
	 * host, row anti_row[r] of anti_cnt (HA_BAL_NONE: small, scanned). */
	uint32_t *anti_row, *anti_cnt;
	uint32_t *order, *pos; /* eligible hosts by load, highest first */
	uint32_t n_elig;
	double s1, s2; /* sums of load and load^2 over eligible hosts */
};

#define BAL_ANTI_SCAN 16

enum bal_block {
	BB_OK,
	BB_SHOULD, /* hard rules kept, a should rule broken (rule set) */
	BB_HOST,   /* down or in maintenance */
	BB_MUST,   /* rule set */
	BB_ANTI,   /* rule set */
	BB_AFFINITY,
	BB_MEM,
};

/* Build m from c (skip_vm, if not HA_BAL_NONE, counts as not placed:
 * placement).  0 or -ENOMEM (m freed). */
int bal_model_init(struct bal_model *m, const struct ha_bal_cluster *c, const struct ha_bal_opts *o,
		   uint32_t skip_vm);
void bal_model_free(struct bal_model *m);
double bal_host_load(const struct bal_model *m, uint32_t h, int64_t dcpu, int64_t dmem);
double bal_sigma(const struct bal_model *m);
/* Move every member of u to h in the model. */
void bal_move_unit(struct bal_model *m, uint32_t u, uint32_t h);
bool bal_in_group(const struct bal_model *m, uint32_t rule, uint32_t h);

/* rules.c: may unit u (all of it) run on h?  *rule names the rule at fault. */
enum bal_block bal_allowed(const struct bal_model *m, uint32_t u, uint32_t h, uint32_t *rule);
/* May vm alone run on h (placement): rules only, memory and host not checked. */
enum bal_block bal_vm_allowed(const struct bal_model *m, uint32_t vm, uint32_t h, uint32_t *rule);
/* The rule u breaks where it is (hard ones first): BB_OK, or BB_MUST /
 * BB_ANTI / BB_AFFINITY / BB_SHOULD with *rule and *vm (the member). */
enum bal_block bal_broken(const struct bal_model *m, uint32_t u, uint32_t *rule, uint32_t *vm);
/* Why no host takes u (or vm alone when vm != HA_BAL_NONE): counts per cause. */
void bal_why_none(const struct bal_model *m, uint32_t u, uint32_t vm, char *why, size_t len);
bool bal_recent(const struct bal_model *m, uint32_t u, uint32_t h);
const char *bal_rule_name(const struct bal_model *m, uint32_t rule);

#endif
