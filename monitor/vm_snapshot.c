/* Snapshots of a running VM and restores into a fresh process: see
 * monitor/vm.h.  (Being written: the KVM state and file format parts are
 * vcpu/state.c and snapshot/.) */
#include <errno.h>
#include <stdio.h>

#include "monitor/vm.h"

int vm_snapshot_create(struct vm *vm, const char *state_path, const char *mem_path, bool diff,
		       char *err, size_t errlen)
{
	snprintf(err, errlen, "snapshots are not built yet");
	return -ENOSYS;
}

int vm_snapshot_config(const char *state_path, struct vm_config *cfg, char *err, size_t errlen)
{
	snprintf(err, errlen, "%s: snapshots are not built yet", state_path);
	return -ENOSYS;
}
