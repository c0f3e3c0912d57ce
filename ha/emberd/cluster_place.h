/* ha/emberd/: cluster mode's placement, a pure function (cluster_place.c),
 * private to cluster.c and its unit test.  Every host runs it over the
 * same etcd revision and gets the same answer, so the host it names is
 * the one that claims; the claim's transaction keeps a VM to one owner
 * even when two hosts' views differ for a moment. */
#ifndef EMBER_HA_EMBERD_CLUSTER_PLACE_H
#define EMBER_HA_EMBERD_CLUSTER_PLACE_H

#include <stddef.h>
#include <stdint.h>

/* A live host as etcd shows it: what it offers and what its VMs use. */
struct ed_place_host {
	const char *name;
	uint64_t mem_cap, mem_used; /* bytes of guest RAM */
	unsigned vcpus_cap, vcpus_used;
};

/* A VM to place: its size and its rules (NULL-terminated host name
 * lists, each may be NULL or empty). */
struct ed_place_vm {
	const char *name;
	uint64_t mem;
	unsigned vcpus;
	const char *const *must;  /* run only on one of these */
	const char *const *avoid; /* never on these */
};

/* The host for vm among hosts[0..n): of those its rules allow and that
 * have room, the one with the most free memory (ties: most free vCPUs,
 * then the first name in strcmp order).  Its index, or -1 with why ("hosts
 * = a: a is down", "no allowed host has room: ..."). */
int ed_place(const struct ed_place_host *hosts, size_t n, const struct ed_place_vm *vm, char *why,
	     size_t whylen);

/* Place vms[0..nvm) in that order, each counted on its host before the
 * next is placed (so a batch spreads): choice[i] is vms[i]'s host index
 * or -1 (why in whys[i] when whys is not NULL).
 * hosts' used fields are updated.  Returns how many were placed. */
size_t ed_place_all(struct ed_place_host *hosts, size_t n, const struct ed_place_vm *vms,
		    size_t nvm, int *choice, char (*whys)[256]);

#endif
