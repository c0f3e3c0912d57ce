/* What ember-jailer makes on the host, and taking it back.  Each made
 * thing is a directory fd plus a name, so it can still be removed after
 * pivot_root has hidden the host's paths (and is never looked up again
 * through a path a tenant could have changed). */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "jail/jailer.h"

int jailer_fail(struct jailer *j, int code, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(j->err, sizeof(j->err), fmt, ap);
	va_end(ap);
	return code;
}

int jailer_undo_push(struct jailer *j, int dirfd, const char *name, enum undo_kind kind,
		     int procs_fd)
{
	if (j->nr_undo == JAILER_MAX_UNDO || strlen(name) >= sizeof(j->undo[0].name))
		return jailer_fail(j, JAILER_EXIT_HOST, "too many things to undo");
	struct undo *u = &j->undo[j->nr_undo];
	u->dirfd = fcntl(dirfd, F_DUPFD_CLOEXEC, 3);
	if (u->dirfd < 0)
		return jailer_fail(j, JAILER_EXIT_HOST, "dup: %s", strerror(errno));
	u->procs_fd = procs_fd;
	u->kind = kind;
	strcpy(u->name, name);
	j->nr_undo++;
	return 0;
}

/* Remove what the steps made, newest first.  A cgroup cannot be removed
 * while we are in it: move back to where we started first. */
void jailer_undo_all(struct jailer *j)
{
	while (j->nr_undo) {
		struct undo *u = &j->undo[--j->nr_undo];
		if (u->kind == UNDO_CGROUP && u->procs_fd >= 0) {
			char pid[16];
			int n = snprintf(pid, sizeof(pid), "%d", (int)getpid());
			if (pwrite(u->procs_fd, pid, (size_t)n, 0) < 0) {
				/* best effort: rmdir says EBUSY below */
			}
		}
		unlinkat(u->dirfd, u->name, u->kind == UNDO_FILE ? 0 : AT_REMOVEDIR);
		close(u->dirfd);
	}
}

/* Keep what was made: the jail is handed over. */
void jailer_undo_forget(struct jailer *j)
{
	while (j->nr_undo)
		close(j->undo[--j->nr_undo].dirfd);
}
