/* ember-jailer's chroot: <base>/<exec name>/<id>/root and what goes in
 * it.  A jail that ran before is reused (as Firecracker's jailer does),
 * and it belongs to its last tenant: below the chroot base every path is
 * walked without following a symlink (jailer_fs.c), every file the
 * jailer puts there is made anew, and a jail that holds something else
 * where a directory must be is refused before anything is made. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "jail/jailer.h"
#include "vcpu/vcpu.h"

static const struct {
	const char *dir, *name;
	unsigned major, minor;
} devices[] = {
    {"dev", "kvm", 10, 232},	 /* the VM */
    {"dev/net", "tun", 10, 200}, /* tap devices (virtio-net, hvt net) */
    {"dev", "urandom", 1, 9},	 /* entropy for what cannot use getrandom */
};

/* What the steps touch below <id>/root, besides the root itself: the
 * directories they walk into, and the files they put there (each made
 * anew: what was there is unlinked, never opened).  The device nodes
 * follow from devices[]. */
static const char *const jail_dirs[] = {"run", "run/ember", "dev", "dev/net"};
static const char *const jail_files[] = {"run/ember/supported-cpuid"};

/* name below <id>/root must be a directory (a real one, or none yet). */
static int check_dir(struct jailer *j, int root_fd, const char *name)
{
	int fd;
	int r = jailer_walk(j, root_fd, j->root_dir, name, 0, UNDO_DIR, &fd);
	if (fd >= 0)
		close(fd);
	return r;
}

/* dir/name below <id>/root must not be a directory: the jailer replaces it. */
static int check_file(struct jailer *j, int root_fd, const char *dir, const char *name)
{
	char shown[sizeof(j->root_dir) + NAME_MAX + 2];
	struct stat st;
	int fd = root_fd, r = 0;
	if (dir && (r = jailer_walk(j, root_fd, j->root_dir, dir, 0, UNDO_DIR, &fd)) != 0)
		return r;
	if (fd < 0)
		return 0;
	snprintf(shown, sizeof(shown), "%s%s%s/%s", j->root_dir, dir ? "/" : "", dir ? dir : "",
		 name);
	if (fstatat(fd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISDIR(st.st_mode))
		r = jailer_fail(j, JAILER_EXIT_USAGE,
				"%s: is a directory, where the jail needs a file of its own",
				shown);
	if (fd != root_fd)
		close(fd);
	return r;
}

/* A jail that ran before belongs to its last tenant, who may have left a
 * symlink (to anywhere on the host), a FIFO or a file wherever the steps
 * go: refuse that now, before anything is made.  (The steps walk the same
 * way and would refuse it too, just later.) */
static int check_reused(struct jailer *j, int id_fd)
{
	int root_fd;
	int r = jailer_walk(j, id_fd, j->id_dir, "root", 0, UNDO_DIR, &root_fd);
	if (r || root_fd < 0)
		return r;
	char pidfile[NAME_MAX + 8];
	snprintf(pidfile, sizeof(pidfile), "%s.pid", j->exec_name);
	for (size_t i = 0; !r && i < sizeof(jail_dirs) / sizeof(jail_dirs[0]); i++)
		r = check_dir(j, root_fd, jail_dirs[i]);
	for (size_t i = 0; !r && i < sizeof(jail_files) / sizeof(jail_files[0]); i++) {
		char dir[64];
		snprintf(dir, sizeof(dir), "%s", jail_files[i]);
		*strrchr(dir, '/') = '\0';
		r = check_file(j, root_fd, dir, strrchr(jail_files[i], '/') + 1);
	}
	for (size_t i = 0; !r && i < sizeof(devices) / sizeof(devices[0]); i++)
		r = check_file(j, root_fd, devices[i].dir, devices[i].name);
	if (!r)
		r = check_file(j, root_fd, NULL, j->exec_name);
	if (!r)
		r = check_file(j, root_fd, NULL, pidfile);
	close(root_fd);
	return r;
}

/* A jail whose lock is held is live: refuse before making anything.  The
 * chroot base is the operator's (symlinks in it are followed); from there
 * on nothing is, and a reused jail is checked (check_reused). */
int jailer_check_jail(struct jailer *j)
{
	char lock[sizeof(j->id_dir) + 16], rel[NAME_MAX + JAILER_ID_MAX + 2];
	snprintf(lock, sizeof(lock), "%s/jail.lock", j->id_dir);
	snprintf(rel, sizeof(rel), "%s/%s", j->exec_name, j->a.id);
	int base, id_fd = -1;
	int r = jailer_walk(j, AT_FDCWD, "", j->a.chroot_base, JAILER_WALK_FOLLOW, UNDO_DIR, &base);
	if (!r && base >= 0) {
		r = jailer_walk(j, base, j->a.chroot_base, rel, 0, UNDO_DIR, &id_fd);
		close(base);
	}
	if (r || id_fd < 0)
		return r; /* a new jail */
	/* kept across exec on purpose: no O_CLOEXEC */
	r = jailer_open_file(j, id_fd, "jail.lock", lock,
			     JAILER_OPEN_MISSING_OK | JAILER_OPEN_HOST_ERRORS, O_RDWR,
			     "a regular file", &j->lock_fd);
	if (!r && j->lock_fd >= 0 && flock(j->lock_fd, LOCK_EX | LOCK_NB) < 0) {
		char pid[24] = "?";
		ssize_t n = pread(j->lock_fd, pid, sizeof(pid) - 1, 0);
		pid[n > 0 ? n : 1] = '\0';
		pid[strcspn(pid, "\n")] = '\0';
		close(j->lock_fd);
		j->lock_fd = -1;
		r = jailer_fail(j, JAILER_EXIT_USAGE,
				"--id %s: a jail with this id is running (pid %s; %s is locked)",
				j->a.id, pid, lock);
	}
	/* a dead jail's leftovers are reused, as Firecracker does: checked */
	if (!r)
		r = check_reused(j, id_fd);
	close(id_fd);
	return r;
}

int jailer_write_pid(struct jailer *j, int fd, pid_t pid)
{
	char s[24];
	int n = snprintf(s, sizeof(s), "%d\n", (int)pid);
	if (ftruncate(fd, 0) < 0 || pwrite(fd, s, (size_t)n, 0) != n)
		return jailer_fail(j, JAILER_EXIT_HOST, "cannot record pid %d: %s", (int)pid,
				   strerror(errno));
	return 0;
}

/* ember's supported-CPUID cache, if it is valid for this host, copied to
 * root/run/ember/: inside the jail ember cannot check it (no /proc, no
 * /sys), and without it each jailed start pays ~0.4 ms for
 * KVM_GET_SUPPORTED_CPUID.  Reading the host's is best effort (any
 * failure only costs that); a jail that holds something else where the
 * copy goes is refused. */
static int copy_cpuid_cache(struct jailer *j)
{
	static const char src[] = VCPU_CPUID_CACHE_DEFAULT;
	static char buf[64 * 1024];
	const char *name = strrchr(src, '/') + 1;
	char shown[sizeof(j->root_dir) + 16];
	int in, dir, out;
	/* looked at before it is read: a FIFO there must not block the jailer */
	if (jailer_open_file(j, AT_FDCWD, src, src, JAILER_WALK_FOLLOW | JAILER_OPEN_MISSING_OK,
			     O_RDONLY | O_CLOEXEC, "a regular file", &in) ||
	    in < 0) {
		j->err[0] = '\0';
		return 0;
	}
	ssize_t n = read(in, buf, sizeof(buf));
	close(in);
	if (n <= 0 || vcpu_cpuid_cache_valid(src))
		return 0;
	int r = jailer_walk(j, j->root_fd, j->root_dir, "run/ember", JAILER_WALK_CREATE, UNDO_DIR,
			    &dir);
	if (r)
		return r;
	snprintf(shown, sizeof(shown), "%s/run/ember", j->root_dir);
	r = jailer_replace_file(j, dir, shown, name, 0444, &out);
	if (!r) {
		if (write(out, buf, (size_t)n) != n)
			unlinkat(dir, name, 0); /* a cache: ember asks KVM instead */
		close(out);
	}
	close(dir);
	return r;
}

/* <base>/<exec name>/<id>/root, its lock, and the copy of the program.
 * The chroot base is the operator's: made as given, symlinks followed.
 * Below it nothing is followed (jailer_walk): the jail's folders may have
 * been its last tenant's. */
int jailer_make_chroot(struct jailer *j)
{
	char rel[NAME_MAX + JAILER_ID_MAX + 2];
	snprintf(rel, sizeof(rel), "%s/%s", j->exec_name, j->a.id);
	int base;
	int r = jailer_walk(j, AT_FDCWD, "", j->a.chroot_base,
			    JAILER_WALK_CREATE | JAILER_WALK_FOLLOW, UNDO_DIR, &base);
	if (r)
		return r;
	r = jailer_walk(j, base, j->a.chroot_base, rel, JAILER_WALK_CREATE, UNDO_DIR, &j->id_fd);
	close(base);
	if (r)
		return r;
	if (j->lock_fd < 0) {
		/* kept across exec on purpose: no O_CLOEXEC */
		j->lock_fd =
		    jailer_open_beneath(j->id_fd, "jail.lock", O_RDWR | O_CREAT | O_EXCL, 0644);
		if (j->lock_fd >= 0 &&
		    (r = jailer_undo_push(j, j->id_fd, "jail.lock", UNDO_FILE, -1)))
			return r;
		if (j->lock_fd == -EEXIST) {
			char lock[sizeof(j->id_dir) + 16];
			snprintf(lock, sizeof(lock), "%s/jail.lock", j->id_dir);
			r = jailer_open_file(j, j->id_fd, "jail.lock", lock,
					     JAILER_OPEN_HOST_ERRORS, O_RDWR, "a regular file",
					     &j->lock_fd);
			if (r)
				return r;
		}
		if (j->lock_fd < 0)
			return jailer_fail(j, JAILER_EXIT_HOST, "%s/jail.lock: %s", j->id_dir,
					   strerror(-j->lock_fd));
		if (flock(j->lock_fd, LOCK_EX | LOCK_NB) < 0)
			return jailer_fail(
			    j, JAILER_EXIT_USAGE,
			    "--id %s: a jail with this id is starting (%s/jail.lock)", j->a.id,
			    j->id_dir);
	}
	r = jailer_write_pid(j, j->lock_fd, getpid());
	if (!r)
		r = jailer_walk(j, j->id_fd, j->id_dir, "root", JAILER_WALK_CREATE, UNDO_DIR,
				&j->root_fd);
	if (r)
		return r;

	/* The root becomes the jailed uid's (below): whatever its last
	 * tenant left at the copy's name goes, unfollowed. */
	int out;
	r = jailer_replace_file(j, j->root_fd, j->root_dir, j->exec_name, 0755, &out);
	if (r)
		return r;
	/* A copy, never a hard link (Firecracker's jailer, env.rs, says why:
	 * two jails sharing one inode share its page cache, every ember's
	 * code, and its threat model allows no memory shared between VMMs).
	 * copy_file_range still makes a copy, in the kernel: a new inode with
	 * its own pages (a reflink on btrfs or XFS shares disk blocks, never
	 * page cache), without bouncing 3 MiB through this buffer on each
	 * start.  What it cannot copy (across file systems on an old kernel,
	 * a special file system) the loop below does. */
	off_t off = 0;
	ssize_t n;
	while ((n = copy_file_range(j->exec_fd, &off, out, NULL, 1 << 30, 0)) > 0) {
	}
	bool slow = n < 0 && (errno == EXDEV || errno == EINVAL || errno == ENOSYS ||
			      errno == EOPNOTSUPP);
	/* a file system that answers 0 (end) early, as some did: the loop
	 * goes on from there, so the copy is never cut short */
	struct stat st;
	if (n == 0 && fstat(j->exec_fd, &st) == 0 && off < st.st_size)
		slow = true;
	if (n < 0 && !slow)
		r = jailer_fail(j, JAILER_EXIT_HOST, "copying %s into the jail: %s",
				j->a.exec_file, strerror(errno));
	static char buf[256 * 1024];
	while (slow && !r && (n = pread(j->exec_fd, buf, sizeof(buf), off)) != 0) {
		if (n < 0 || write(out, buf, (size_t)n) != n)
			r = jailer_fail(j, JAILER_EXIT_HOST, "copying %s into the jail: %s",
					j->a.exec_file, strerror(errno ? errno : EIO));
		off += n > 0 ? n : 0;
	}
	if (!r && fchmod(out, 0755) < 0)
		r = jailer_fail(j, JAILER_EXIT_HOST, "chmod the copy: %s", strerror(errno));
	close(out);
	close(j->exec_fd);
	j->exec_fd = -1;
	if (!r)
		r = copy_cpuid_cache(j);
	return r;
}

/* One device node, made anew (what was there goes, never followed), and
 * chowned through its own fd. */
static int make_device(struct jailer *j, int top, unsigned i)
{
	char shown[sizeof(j->root_dir) + 16];
	const char *name = devices[i].name;
	dev_t dev = makedev(devices[i].major, devices[i].minor);
	snprintf(shown, sizeof(shown), "%s/%s", j->root_dir, devices[i].dir);
	int dir, node = -1;
	int r =
	    jailer_walk(j, top, j->root_dir, devices[i].dir, JAILER_WALK_CREATE, UNDO_DIR, &dir);
	if (r)
		return r;
	r = jailer_unlink_leaf(j, dir, shown, name);
	if (!r && mknodat(dir, name, S_IFCHR | 0600, dev) < 0)
		r = jailer_fail(j, JAILER_EXIT_HOST, "mknod %s/%s: %s", shown, name,
				strerror(errno));
	if (!r)
		r = jailer_undo_push(j, dir, name, UNDO_FILE, -1);
	struct stat st;
	if (!r && ((node = jailer_open_beneath(dir, name, O_PATH | O_CLOEXEC, 0)) < 0 ||
		   fstat(node, &st) < 0 || !S_ISCHR(st.st_mode) || st.st_rdev != dev))
		r = jailer_fail(j, JAILER_EXIT_HOST, "%s/%s: changed after mknod", shown, name);
	if (!r && fchownat(node, "", j->uid, j->gid, AT_EMPTY_PATH) < 0)
		r = jailer_fail(j, JAILER_EXIT_HOST, "chown %s/%s: %s", shown, name,
				strerror(errno));
	if (node >= 0)
		close(node);
	close(dir);
	return r;
}

int jailer_make_devices(struct jailer *j)
{
	int top = open("/", O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (top < 0)
		return jailer_fail(j, JAILER_EXIT_HOST, "/: %s", strerror(errno));
	int r = 0;
	for (unsigned i = 0; i < sizeof(devices) / sizeof(devices[0]) && !r; i++)
		r = make_device(j, top, i);
	if (!r && fchownat(top, "", j->uid, j->gid, AT_EMPTY_PATH) < 0)
		r = jailer_fail(j, JAILER_EXIT_HOST, "chown the jail's root: %s", strerror(errno));
	close(top);
	return r;
}
