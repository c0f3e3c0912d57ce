/* How ember-jailer touches files.  A jail that ran before belongs to its
 * last tenant, who may have left a symlink, a FIFO or a file wherever the
 * jailer goes next; the jailer runs as root and, before pivot_root, sees
 * the whole host.  So below the chroot base nothing is looked up by path:
 * each directory is entered one component at a time from the fd of its
 * parent with openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS), a file the
 * jailer puts there is unlinked (never opened) and made anew with O_EXCL,
 * and anything that is not what it must be is refused, naming it.  A file
 * the operator names (--exec-file, --netns) is looked at with O_PATH
 * before it is opened: a FIFO would block the open, a device may act on
 * it. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "jail/jailer.h"

const char *jailer_kind(mode_t mode)
{
	switch (mode & S_IFMT) {
	case S_IFREG:
		return "a regular file";
	case S_IFDIR:
		return "a directory";
	case S_IFLNK:
		return "a symbolic link";
	case S_IFIFO:
		return "a FIFO";
	case S_IFSOCK:
		return "a socket";
	case S_IFCHR:
		return "a character device";
	case S_IFBLK:
		return "a block device";
	}
	return "of an unknown kind";
}

int jailer_open_beneath(int dirfd, const char *name, int flags, mode_t mode)
{
	struct open_how how = {
	    .flags = (uint64_t)flags,
	    .mode = (flags & O_CREAT) ? mode : 0,
	    .resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS,
	};
	long fd = syscall(SYS_openat2, dirfd, name, &how, sizeof(how));
	if (fd >= 0)
		return (int)fd;
	if (errno != ENOSYS)
		return -errno;
	/* Before Linux 5.6 (or under a filter that hides openat2): for the
	 * one component this is called with, O_NOFOLLOW is the same rule. */
	if (strchr(name, '/') || strcmp(name, "..") == 0)
		return -EXDEV;
	fd = openat(dirfd, name, flags | O_NOFOLLOW, mode);
	return fd < 0 ? -errno : (int)fd;
}

/* openat: through symlinks (the operator's paths), or not (the jail's). */
static int open_at(int dirfd, const char *path, int flags, bool follow)
{
	if (!follow)
		return jailer_open_beneath(dirfd, path, flags, 0);
	int fd = openat(dirfd, path, flags);
	return fd < 0 ? -errno : fd;
}

/* "<shown>/<name>" for messages. */
static const char *at(char *buf, size_t len, const char *shown, const char *name)
{
	snprintf(buf, len, "%s%s%s", shown, shown[0] && name[0] ? "/" : "", name);
	return buf;
}

/* Why name in dirfd is refused where a directory must be. */
static int not_a_dir(struct jailer *j, int dirfd, const char *name, const char *path, int e)
{
	struct stat st;
	if (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0 || S_ISDIR(st.st_mode))
		return jailer_fail(j, JAILER_EXIT_HOST, "%s: %s", path, strerror(e));
	return jailer_fail(j, JAILER_EXIT_USAGE, "%s: is %s, not a directory%s", path,
			   jailer_kind(st.st_mode),
			   S_ISLNK(st.st_mode) ? " (ember-jailer follows no link in a jail)" : "");
}

/* One directory down: name in dirfd.  Missing, it is made (JAILER_WALK_CREATE,
 * on the undo list) or *out stays -1.  0 or an exit code. */
static int step(struct jailer *j, int dirfd, const char *name, const char *path, unsigned how,
		enum undo_kind kind, int procs_fd, int *out, bool *made)
{
	const int flags = O_PATH | O_DIRECTORY | O_CLOEXEC;
	*out = -1;
	for (int tries = 0; tries < 2; tries++) {
		int fd = open_at(dirfd, name, flags, how & JAILER_WALK_FOLLOW);
		if (fd >= 0) {
			*out = fd;
			return 0;
		}
		if (fd == -ELOOP || fd == -ENOTDIR)
			return not_a_dir(j, dirfd, name, path, -fd);
		if (fd != -ENOENT || tries)
			return jailer_fail(j, JAILER_EXIT_HOST, "%s: %s", path, strerror(-fd));
		if (!(how & JAILER_WALK_CREATE))
			return 0;
		if (mkdirat(dirfd, name, 0755) == 0) {
			int r = jailer_undo_push(j, dirfd, name, kind, procs_fd);
			if (r)
				return r;
			if (made)
				*made = true;
		} else if (errno != EEXIST) {
			return jailer_fail(j, JAILER_EXIT_HOST, "mkdir %s: %s", path,
					   strerror(errno));
		}
	}
	return jailer_fail(j, JAILER_EXIT_HOST, "%s: vanished while being made", path);
}

int jailer_walk(struct jailer *j, int dirfd, const char *shown, const char *path, unsigned how,
		enum undo_kind kind, int *out_fd)
{
	char walked[4096];
	snprintf(walked, sizeof(walked), "%s", shown);
	int fd = path[0] == '/' ? open("/", O_PATH | O_DIRECTORY | O_CLOEXEC)
				: fcntl(dirfd, F_DUPFD_CLOEXEC, 3);
	*out_fd = -1;
	if (fd < 0)
		return jailer_fail(j, JAILER_EXIT_HOST, "%s: %s", path, strerror(errno));
	for (const char *p = path; *p;) {
		while (*p == '/')
			p++;
		size_t n = strcspn(p, "/"), used = strlen(walked);
		if (n == 0)
			break;
		if (n > NAME_MAX || used + n + 2 > sizeof(walked)) {
			close(fd);
			return jailer_fail(j, JAILER_EXIT_USAGE, "%s: name too long", path);
		}
		char *name = walked + used;
		if (used || path[0] == '/')
			*name++ = '/';
		memcpy(name, p, n);
		name[n] = '\0';
		p += n;
		int next;
		int r = step(j, fd, name, walked, how, kind, -1, &next, NULL);
		close(fd);
		if (r || next < 0)
			return r;
		fd = next;
	}
	*out_fd = fd;
	return 0;
}

int jailer_mkdir_at(struct jailer *j, int dirfd, const char *name, enum undo_kind kind,
		    int procs_fd, int *out_fd, bool *made_it)
{
	bool made = false;
	int r = step(j, dirfd, name, name, JAILER_WALK_CREATE, kind, procs_fd, out_fd, &made);
	if (made_it)
		*made_it = made;
	return r;
}

int jailer_unlink_leaf(struct jailer *j, int dirfd, const char *shown, const char *name)
{
	char path[4096 + NAME_MAX + 2];
	if (unlinkat(dirfd, name, 0) == 0 || errno == ENOENT)
		return 0;
	int e = errno;
	struct stat st;
	if ((e == EISDIR || e == EPERM) && fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
	    S_ISDIR(st.st_mode))
		return jailer_fail(j, JAILER_EXIT_USAGE,
				   "%s: is a directory, where the jail needs a file of its own",
				   at(path, sizeof(path), shown, name));
	return jailer_fail(j, JAILER_EXIT_HOST, "%s: %s", at(path, sizeof(path), shown, name),
			   strerror(e));
}

int jailer_replace_file(struct jailer *j, int dirfd, const char *shown, const char *name,
			mode_t mode, int *out_fd)
{
	char path[4096 + NAME_MAX + 2];
	int r = jailer_unlink_leaf(j, dirfd, shown, name);
	if (r)
		return r;
	int fd = jailer_open_beneath(dirfd, name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
	if (fd < 0)
		return jailer_fail(j, JAILER_EXIT_HOST, "%s: %s",
				   at(path, sizeof(path), shown, name), strerror(-fd));
	r = jailer_undo_push(j, dirfd, name, UNDO_FILE, -1);
	if (r) {
		close(fd);
		unlinkat(dirfd, name, 0);
		return r;
	}
	*out_fd = fd;
	return 0;
}

int jailer_open_file(struct jailer *j, int dirfd, const char *path, const char *label, unsigned how,
		     int flags, const char *want, int *out_fd)
{
	int code = (how & JAILER_OPEN_HOST_ERRORS) ? JAILER_EXIT_HOST : JAILER_EXIT_USAGE;
	*out_fd = -1;
	bool follow = how & JAILER_WALK_FOLLOW;
	int look = open_at(dirfd, path, O_PATH | O_CLOEXEC, follow);
	if (look == -ENOENT && (how & JAILER_OPEN_MISSING_OK))
		return 0;
	if (look == -ELOOP && !follow)
		return jailer_fail(j, JAILER_EXIT_USAGE,
				   "%s: is a symbolic link, not %s (ember-jailer follows no "
				   "link in a jail)",
				   label, want);
	if (look < 0)
		return jailer_fail(j, code, "%s: %s", label, strerror(-look));
	struct stat st, st2;
	int r = fstat(look, &st) < 0 ? -errno : 0;
	if (!r && !S_ISREG(st.st_mode)) {
		close(look);
		return jailer_fail(j, JAILER_EXIT_USAGE, "%s: is %s, not %s", label,
				   jailer_kind(st.st_mode), want);
	}
	/* Now open it for real, never blocking, and make sure it is what was
	 * looked at (not something put there in between). */
	int fd = -1;
	if (!r && (fd = open_at(dirfd, path, flags | O_NONBLOCK, follow)) < 0)
		r = fd;
	close(look);
	if (!r && (fstat(fd, &st2) < 0 || st2.st_dev != st.st_dev || st2.st_ino != st.st_ino)) {
		close(fd);
		return jailer_fail(j, JAILER_EXIT_USAGE, "%s: changed while it was opened", label);
	}
	if (r)
		return jailer_fail(j, code, "%s: %s", label, strerror(-r));
	/* blocking again: O_NONBLOCK was for the open only */
	if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK) < 0) {
		r = errno;
		close(fd);
		return jailer_fail(j, JAILER_EXIT_HOST, "%s: %s", label, strerror(r));
	}
	*out_fd = fd;
	return 0;
}
