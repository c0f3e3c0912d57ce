/* Initial placement (balance.h, ha_bal_place): one VM onto the host that
 * keeps every hard rule, has its memory, keeps the should rules when any
 * such host exists, and is least loaded after.  HA failover places a
 * dead host's VMs through the same function, one at a time. */
#include <errno.h>
#include <stdio.h>

#include "ha/balance/bal_priv.h"

int ha_bal_place(const struct ha_bal_cluster *c, const struct ha_bal_opts *o, uint32_t vm,
		 uint32_t *host, char *why, size_t whylen)
{
	int rc = ha_bal_validate(c, why, whylen);
	if (rc)
		return rc;
	if (!o || !host)
		return snprintf(why, whylen, "place: no options or no host pointer"), -EINVAL;
	if (vm >= c->nr_vms)
		return snprintf(why, whylen, "place: vm %u out of range", vm), -EINVAL;
	struct bal_model m;
	if (bal_model_init(&m, c, o, vm))
		return snprintf(why, whylen, "place: out of memory"), -ENOMEM;
	const struct ha_bal_vm *x = &c->vms[vm];
	/* Affinity: the host of its group's placed members (on an alive
	 * host), the first one's if the group is split. */
	const struct bal_unit *un = &m.units[m.vm_unit[vm]];
	uint32_t with = HA_BAL_NONE, with_vm = HA_BAL_NONE;
	for (uint32_t i = 0; i < un->n && with == HA_BAL_NONE; i++) {
		uint32_t w = m.members[un->first + i], h = m.vm_host[w];
		if (h != HA_BAL_NONE && c->hosts[h].alive)
			with = h, with_vm = w;
	}
	uint32_t best = HA_BAL_NONE;
	double best_load = 0;
	bool best_soft = false;
	for (uint32_t h = 0; h < m.nh; h++) {
		uint32_t rule;
		if (!m.elig[h] || (with != HA_BAL_NONE && h != with))
			continue;
		enum bal_block b = bal_vm_allowed(&m, vm, h, &rule);
		if (b != BB_OK && b != BB_SHOULD)
			continue;
		if (m.mem_used[h] + x->mem > c->hosts[h].mem_cap)
			continue;
		double l = bal_host_load(&m, h, (int64_t)x->cpu, (int64_t)x->mem);
		bool soft = b == BB_SHOULD;
		if (best == HA_BAL_NONE || (best_soft && !soft) ||
		    (best_soft == soft && l < best_load))
			best = h, best_load = l, best_soft = soft;
	}
	if (best != HA_BAL_NONE) {
		*host = best;
		rc = 0;
	} else if (with != HA_BAL_NONE) {
		snprintf(why, whylen, "%s must join %s on %s (affinity), which %s", x->name,
			 c->vms[with_vm].name, c->hosts[with].name,
			 !m.elig[with] ? "is in maintenance"
				       : "breaks another rule or lacks the memory");
		rc = -ENOSPC;
	} else {
		bal_why_none(&m, m.vm_unit[vm], vm, why, whylen);
		rc = -ENOSPC;
	}
	bal_model_free(&m);
	return rc;
}
