/* What ember-jailer makes on the host, and taking it back.  Each made
 * thing is a directory fd plus a name, so it can still be removed after
 * pivot_root has hidden the host's paths. */
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

int jailer_mkdir_at(struct jailer *j, int dirfd, const char *name, enum undo_kind kind,
		    int procs_fd, int *out_fd, bool *made_it)
{
	bool made = mkdirat(dirfd, name, 0755) == 0;
	if (!made && errno != EEXIST)
		return jailer_fail(j, JAILER_EXIT_HOST, "mkdir %s: %s", name, strerror(errno));
	int r = made ? jailer_undo_push(j, dirfd, name, kind, procs_fd) : 0;
	if (r)
		return r;
	if (made_it)
		*made_it = made;
	/* never through a symlink: the jail's root belongs to its tenant */
	*out_fd = openat(dirfd, name, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (*out_fd < 0)
		return jailer_fail(j, JAILER_EXIT_HOST, "%s: %s", name,
				   errno == ENOTDIR || errno == ELOOP ? "not a directory"
								      : strerror(errno));
	return 0;
}

int jailer_mkdirs(struct jailer *j, int start_fd, const char *path, enum undo_kind kind,
		  int *out_fd)
{
	/* Symlinks are followed: the chroot base is the operator's, and
	 * inside the jail (after pivot_root) one resolves within it. */
	int fd = path[0] == '/' ? open("/", O_PATH | O_DIRECTORY | O_CLOEXEC)
				: fcntl(start_fd, F_DUPFD_CLOEXEC, 3);
	if (fd < 0)
		return jailer_fail(j, JAILER_EXIT_HOST, "%s: %s", path, strerror(errno));
	char name[256];
	for (const char *p = path; *p;) {
		while (*p == '/')
			p++;
		size_t n = strcspn(p, "/");
		if (n == 0)
			break;
		if (n >= sizeof(name)) {
			close(fd);
			return jailer_fail(j, JAILER_EXIT_HOST, "%s: name too long", path);
		}
		memcpy(name, p, n);
		name[n] = '\0';
		p += n;
		int next = -1, r = 0;
		if (mkdirat(fd, name, 0755) == 0)
			r = jailer_undo_push(j, fd, name, kind, -1);
		else if (errno != EEXIST)
			r = jailer_fail(j, JAILER_EXIT_HOST, "mkdir %s: %s", path, strerror(errno));
		if (!r && (next = openat(fd, name, O_PATH | O_DIRECTORY | O_CLOEXEC)) < 0)
			r = jailer_fail(j, JAILER_EXIT_HOST, "%s: %s", path, strerror(errno));
		close(fd);
		if (r)
			return r;
		fd = next;
	}
	*out_fd = fd;
	return 0;
}
