/* Rules against the model (bal_priv.h): may a unit or a VM run on a
 * host, which rule does a unit break where it stands, and why no host
 * takes it.  Hard rules (must, affinity, anti-affinity) are checked
 * before should rules, so BB_SHOULD means "legal, but not preferred". */
#include <stdio.h>
#include <string.h>

#include "ha/balance/bal_priv.h"

const char *bal_rule_name(const struct bal_model *m, uint32_t rule)
{
	return rule == HA_BAL_NONE ? "?" : m->c->rules[rule].name;
}

bool bal_recent(const struct bal_model *m, uint32_t u, uint32_t h)
{
	const struct bal_unit *x = &m->units[u];
	for (uint32_t i = 0; i < x->n; i++) {
		uint32_t v = m->members[x->first + i];
		for (uint32_t k = m->rc_off[v]; k < m->rc_off[v + 1]; k++)
			if (m->rc[k] == h)
				return true;
	}
	return false;
}

/* Is vm in rule r? */
static bool in_rule(const struct bal_model *m, uint32_t vm, uint32_t r)
{
	for (uint32_t k = m->vr_off[vm]; k < m->vr_off[vm + 1]; k++)
		if (m->vr[k] == r)
			return true;
	return false;
}

/* Another VM of anti-affinity rule r, not of unit u, on h?  Big rules by
 * their per-host counts, less u's own members there. */
static bool anti_clash(const struct bal_model *m, uint32_t r, uint32_t u, uint32_t h)
{
	const struct ha_bal_rule *x = &m->c->rules[r];
	if (m->anti_row[r] != HA_BAL_NONE) {
		uint32_t n = m->anti_cnt[(size_t)m->anti_row[r] * m->nh + h];
		const struct bal_unit *un = &m->units[u];
		for (uint32_t i = 0; i < un->n && n; i++) {
			uint32_t w = m->members[un->first + i];
			n -= m->vm_host[w] == h && in_rule(m, w, r);
		}
		return n > 0;
	}
	for (uint32_t i = 0; i < x->nr_vms; i++) {
		uint32_t w = x->vms[i];
		if (m->vm_unit[w] != u && m->vm_host[w] == h)
			return true;
	}
	return false;
}

/* Two members of u in one anti-affinity rule: u can run nowhere. */
static bool self_clash(const struct bal_model *m, uint32_t r, uint32_t u)
{
	const struct ha_bal_rule *x = &m->c->rules[r];
	uint32_t n = 0;
	for (uint32_t i = 0; i < x->nr_vms; i++)
		n += m->vm_unit[x->vms[i]] == u;
	return n > 1;
}

/* The rules of vm at h; u: the unit moving with it (its members never
 * clash with each other by anti-affinity here, see self_clash). */
static enum bal_block vm_rules(const struct bal_model *m, uint32_t vm, uint32_t u, uint32_t h,
			       uint32_t *rule)
{
	uint32_t soft = HA_BAL_NONE;
	for (uint32_t k = m->vr_off[vm]; k < m->vr_off[vm + 1]; k++) {
		uint32_t r = m->vr[k];
		*rule = r;
		switch (m->c->rules[r].kind) {
		case HA_BAL_AFFINITY:
			break; /* units move whole: see bal_allowed, place.c */
		case HA_BAL_ANTI_AFFINITY:
			if (self_clash(m, r, u) || anti_clash(m, r, u, h))
				return BB_ANTI;
			break;
		case HA_BAL_MUST_RUN_ON:
			if (!bal_in_group(m, r, h))
				return BB_MUST;
			break;
		case HA_BAL_MUST_NOT_RUN_ON:
			if (bal_in_group(m, r, h))
				return BB_MUST;
			break;
		case HA_BAL_SHOULD_RUN_ON:
			if (!bal_in_group(m, r, h) && soft == HA_BAL_NONE)
				soft = r;
			break;
		case HA_BAL_SHOULD_NOT_RUN_ON:
			if (bal_in_group(m, r, h) && soft == HA_BAL_NONE)
				soft = r;
			break;
		}
	}
	*rule = soft;
	return soft == HA_BAL_NONE ? BB_OK : BB_SHOULD;
}

enum bal_block bal_vm_allowed(const struct bal_model *m, uint32_t vm, uint32_t h, uint32_t *rule)
{
	return vm_rules(m, vm, m->vm_unit[vm], h, rule);
}

enum bal_block bal_allowed(const struct bal_model *m, uint32_t u, uint32_t h, uint32_t *rule)
{
	const struct bal_unit *x = &m->units[u];
	*rule = HA_BAL_NONE;
	if (!m->elig[h])
		return BB_HOST;
	enum bal_block worst = BB_OK;
	uint32_t soft = HA_BAL_NONE;
	uint64_t there = 0; /* members already on h need no room */
	for (uint32_t i = 0; i < x->n; i++) {
		uint32_t v = m->members[x->first + i], r;
		enum bal_block b = vm_rules(m, v, u, h, &r);
		if (b == BB_SHOULD && soft == HA_BAL_NONE)
			soft = r, worst = BB_SHOULD;
		else if (b != BB_OK && b != BB_SHOULD) {
			*rule = r;
			return b;
		}
		if (m->vm_host[v] == h)
			there += m->c->vms[v].mem;
	}
	if (m->mem_used[h] + x->mem - there > m->c->hosts[h].mem_cap)
		return BB_MEM;
	*rule = soft;
	return worst;
}

enum bal_block bal_broken(const struct bal_model *m, uint32_t u, uint32_t *rule, uint32_t *vm)
{
	const struct bal_unit *x = &m->units[u];
	enum bal_block soft = BB_OK;
	uint32_t soft_rule = HA_BAL_NONE, soft_vm = HA_BAL_NONE;
	for (uint32_t i = 0; i < x->n; i++) {
		uint32_t v = m->members[x->first + i], r;
		*vm = v;
		for (uint32_t k = m->vr_off[v]; k < m->vr_off[v + 1]; k++) {
			r = m->vr[k];
			if (m->c->rules[r].kind == HA_BAL_AFFINITY && x->host == HA_BAL_NONE) {
				*rule = r;
				return BB_AFFINITY;
			}
		}
		enum bal_block b = vm_rules(m, v, u, m->vm_host[v], &r);
		if (b == BB_SHOULD && soft == BB_OK)
			soft = b, soft_rule = r, soft_vm = v;
		else if (b != BB_OK && b != BB_SHOULD) {
			*rule = r;
			return b;
		}
	}
	*rule = soft_rule, *vm = soft_vm;
	return soft;
}

static const char *const block_words[] = {
    [BB_OK] = "free",
    [BB_SHOULD] = "",
    [BB_HOST] = "down or in maintenance",
    [BB_MUST] = "excluded by rule",
    [BB_ANTI] = "excluded by anti-affinity rule",
    [BB_AFFINITY] = "away from its affinity group",
    [BB_MEM] = "without the memory",
};

void bal_why_none(const struct bal_model *m, uint32_t u, uint32_t vm, char *why, size_t len)
{
	uint32_t count[BB_MEM + 1] = {0}, first[BB_MEM + 1];
	for (int i = 0; i <= BB_MEM; i++)
		first[i] = HA_BAL_NONE;
	uint64_t need = vm == HA_BAL_NONE ? m->units[u].mem : m->c->vms[vm].mem;
	for (uint32_t h = 0; h < m->nh; h++) {
		uint32_t r = HA_BAL_NONE;
		enum bal_block b;
		if (vm == HA_BAL_NONE) {
			b = bal_allowed(m, u, h, &r);
		} else {
			b = m->elig[h] ? bal_vm_allowed(m, vm, h, &r) : BB_HOST;
			if ((b == BB_OK || b == BB_SHOULD) &&
			    m->mem_used[h] + need > m->c->hosts[h].mem_cap)
				b = BB_MEM;
		}
		if (b == BB_SHOULD)
			b = BB_OK;
		if (!count[b]++)
			first[b] = r;
	}
	size_t at = (size_t)snprintf(why, len, "no host fits:");
	bool any = false;
	for (int b = BB_HOST; b <= BB_MEM && at < len; b++) {
		if (!count[b])
			continue;
		if (b == BB_MUST || b == BB_ANTI)
			at +=
			    (size_t)snprintf(why + at, len - at, "%s %u %s '%s'", any ? "," : "",
					     count[b], block_words[b], bal_rule_name(m, first[b]));
		else if (b == BB_MEM)
			at += (size_t)snprintf(why + at, len - at, "%s %u %s (%llu MiB)",
					       any ? "," : "", count[b], block_words[b],
					       (unsigned long long)(need >> 20));
		else
			at += (size_t)snprintf(why + at, len - at, "%s %u %s", any ? "," : "",
					       count[b], block_words[b]);
		any = true;
	}
	if (!any && at < len)
		snprintf(why + at, len - at, " no hosts");
}
