/* Cluster placement (cluster_place.h): a pure function of the live hosts,
 * what they run, and the VM's rules — no etcd, no clock — so that every
 * host computes the same winner from the same revision, and so that it
 * can be tested (tests/unit/test_ha_place.c) and simulated at scale. */
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "ha/emberd/cluster_place.h"

static bool listed(const char *const *list, const char *name)
{
	for (; list && *list; list++)
		if (!strcmp(*list, name))
			return true;
	return false;
}

static bool empty(const char *const *list)
{
	return !list || !*list;
}

/* Append s to buf (truncating quietly). */
static void cat(char *buf, size_t len, const char *s)
{
	size_t l = strnlen(buf, len);
	if (l + 1 < len)
		snprintf(buf + l, len - l, "%s", s);
}

/* "hosts = a,b: a, b down" when no host of vm's must list is alive. */
static void why_must(const struct ed_place_vm *vm, char *why, size_t whylen)
{
	snprintf(why, whylen, "hosts = ");
	for (const char *const *m = vm->must; *m; m++) {
		cat(why, whylen, m == vm->must ? "" : ",");
		cat(why, whylen, *m);
	}
	cat(why, whylen, ": ");
	for (const char *const *m = vm->must; *m; m++) {
		cat(why, whylen, m == vm->must ? "" : ", ");
		cat(why, whylen, *m);
	}
	cat(why, whylen, vm->must[1] ? " are down" : " is down");
}

int ed_place(const struct ed_place_host *hosts, size_t n, const struct ed_place_vm *vm, char *why,
	     size_t whylen)
{
	int best = -1;
	size_t allowed = 0;
	uint64_t best_mem = 0;
	unsigned best_cpu = 0;
	for (size_t i = 0; i < n; i++) {
		const struct ed_place_host *h = &hosts[i];
		if ((!empty(vm->must) && !listed(vm->must, h->name)) || listed(vm->avoid, h->name))
			continue;
		allowed++;
		uint64_t mem_free = h->mem_cap > h->mem_used ? h->mem_cap - h->mem_used : 0;
		unsigned cpu_free = h->vcpus_cap > h->vcpus_used ? h->vcpus_cap - h->vcpus_used : 0;
		if (mem_free < vm->mem || cpu_free < vm->vcpus)
			continue;
		bool better = best < 0 || mem_free > best_mem ||
			      (mem_free == best_mem &&
			       (cpu_free > best_cpu ||
				(cpu_free == best_cpu && strcmp(h->name, hosts[best].name) < 0)));
		if (better) {
			best = (int)i;
			best_mem = mem_free;
			best_cpu = cpu_free;
		}
	}
	if (best >= 0)
		return best;
	if (allowed == 0 && !empty(vm->must))
		why_must(vm, why, whylen);
	else if (allowed == 0 && n > 0)
		snprintf(why, whylen, "avoid_hosts: every live host is avoided");
	else if (allowed == 0)
		snprintf(why, whylen, "no live host");
	else
		snprintf(why, whylen,
			 "no allowed host has room for %llu MiB and %u vCPUs (%zu allowed host%s)",
			 (unsigned long long)(vm->mem >> 20), vm->vcpus, allowed,
			 allowed == 1 ? "" : "s");
	return -1;
}

size_t ed_place_all(struct ed_place_host *hosts, size_t n, const struct ed_place_vm *vms,
		    size_t nvm, int *choice, char (*whys)[256])
{
	size_t placed = 0;
	for (size_t i = 0; i < nvm; i++) {
		char why[256] = "";
		choice[i] = ed_place(hosts, n, &vms[i], why, sizeof(why));
		if (whys)
			memcpy(whys[i], why, sizeof(why));
		if (choice[i] < 0)
			continue;
		hosts[choice[i]].mem_used += vms[i].mem;
		hosts[choice[i]].vcpus_used += vms[i].vcpus;
		placed++;
	}
	return placed;
}
