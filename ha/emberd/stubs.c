/* TEMPORARY (integrator: delete this file once branch emberd-cluster is
 * merged): cluster mode's entry points until ha/emberd/cluster.c lands. */
#include <errno.h>
#include <stdio.h>

#include "ha/emberd/emberd.h"

/* STUB: cluster.c */
int ed_cluster_start(struct ed_cluster **c, struct ed_host *h, const struct ed_cluster_opts *o,
		     char *err, size_t errlen)
{
	(void)c;
	(void)h;
	(void)o;
	snprintf(err, errlen, "cluster mode is not built in yet (branch emberd-cluster)");
	return -ENOSYS;
}

/* STUB: cluster.c */
void ed_cluster_stop(struct ed_cluster *c, bool release_vms)
{
	(void)c;
	(void)release_vms;
}

/* STUB: cluster.c */
json_t *ed_cluster_hosts_json(struct ed_cluster *c)
{
	(void)c;
	return NULL;
}
