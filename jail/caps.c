/* Capabilities: all of them go, for good, and no exec can ever bring one
 * back (PR_SET_NO_NEW_PRIVS). */
#include <cap-ng.h>
#include <errno.h>
#include <linux/capability.h>
#include <stdbool.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "jail/jail.h"

/* The raw sets of the calling thread (capget(2)). */
static int caps_now(struct __user_cap_data_struct d[2])
{
	struct __user_cap_header_struct h = {.version = _LINUX_CAPABILITY_VERSION_3};
	return syscall(SYS_capget, &h, d) < 0 ? -errno : 0;
}

int jail_drop_caps(void)
{
	struct __user_cap_data_struct d[2];
	int r = caps_now(d);
	if (r)
		return r;
	/* Emptying the bounding set needs CAP_SETPCAP, so it goes first;
	 * without it (an unprivileged start) the set stays as ember-jailer
	 * or the caller left it, and no_new_privs still closes exec's door. */
	bool may_bound = d[CAP_TO_INDEX(CAP_SETPCAP)].effective & CAP_TO_MASK(CAP_SETPCAP);
	if (may_bound && (r = jail_drop_bounding()) != 0)
		return r;

	/* Permitted, effective, inheritable and ambient: all empty. */
	capng_clear(CAPNG_SELECT_ALL);
	if (capng_apply(CAPNG_SELECT_CAPS | CAPNG_SELECT_AMBIENT))
		return -EPERM;
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
		return -errno;

	/* Trust, then check: a library that quietly skipped a set would
	 * leave the monitor with privileges nobody sees.  (The ambient set
	 * is a subset of permitted and inheritable: both empty, it is too.) */
	r = caps_now(d);
	if (r)
		return r;
	if (d[0].effective | d[0].permitted | d[0].inheritable | d[1].effective | d[1].permitted |
	    d[1].inheritable)
		return -EPERM;
	return 0;
}
