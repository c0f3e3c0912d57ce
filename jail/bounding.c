/* The bounding set, emptied: shared by ember (jail_drop_caps) and
 * ember-jailer (before it changes uid), in a file of its own so the
 * jailer needs no libcap-ng. */
#include <errno.h>
#include <linux/capability.h>
#include <sys/prctl.h>

#include "jail/jail.h"

/* Drop each capability up to the kernel's last one (EINVAL past it), so
 * when this returns 0 the set is empty.  Done here rather than by
 * libcap-ng, whose bounding-set path reads /proc/PID/status twice: 35 us
 * on these hosts, and a jail has no /proc. */
int jail_drop_bounding(void)
{
	for (unsigned long cap = 0;; cap++)
		if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) < 0)
			return errno == EINVAL && cap > CAP_SETPCAP ? 0 : -errno;
}
