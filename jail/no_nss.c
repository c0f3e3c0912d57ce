/* libcap-ng's capng_change_id() refers to getpwuid() and initgroups();
 * ember never calls it, but in a static link those references pull in
 * glibc's NSS, which would need shared libraries at run time (and warns
 * at link time).  ember resolves no user names (inside a jail there is no
 * /etc/passwd to read), so these stand-ins simply fail. */
#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <stddef.h>

struct passwd *getpwuid(uid_t uid)
{
	(void)uid;
	errno = ENOSYS;
	return NULL;
}

int initgroups(const char *user, gid_t group)
{
	(void)user;
	(void)group;
	errno = ENOSYS;
	return -1;
}
