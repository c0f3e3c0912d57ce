/* ember-jailer's directories and cgroups.  cgroup v1: one hierarchy per
 * controller (or a few sharing a mount), the jail's cgroup is
 * <mount>/<parent>/<id> in each hierarchy a --cgroup names.  cgroup v2:
 * one hierarchy; the controllers are enabled in cgroup.subtree_control
 * of every cgroup on the way down (Documentation/admin-guide/cgroup-v2.rst,
 * "Enabling and Disabling").  Either way the values are written before
 * this process moves in, so ember starts inside its limits. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "jail/jailer.h"

/* Read a small file (relative to dirfd) into buf, NUL-terminated.
 * Never through a symlink at the end (nor a FIFO: cgroupfs and /proc
 * hold neither, this only keeps the rule).  Returns the length or -errno. */
static ssize_t get(int dirfd, const char *name, char *buf, size_t len)
{
	int fd = openat(dirfd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	size_t got = 0;
	ssize_t n = 0;
	while (got + 1 < len && (n = read(fd, buf + got, len - 1 - got)) > 0)
		got += (size_t)n;
	int e = errno;
	close(fd);
	buf[got] = '\0';
	return n < 0 ? -e : (ssize_t)got;
}

/* Write a value to a cgroup file: one write, as the kernel wants it.
 * 0 or -errno. */
static int put(int dirfd, const char *name, const char *value)
{
	int fd = openat(dirfd, name, O_WRONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	size_t len = strlen(value);
	int r = write(fd, value, len) == (ssize_t)len ? 0 : -errno;
	close(fd);
	return r;
}

/* A new v1 cpuset cgroup starts with no CPUs and no memory nodes, and
 * refuses tasks until it has some: give it its parent's. */
static int inherit_cpuset(struct jailer *j, int parent, int dir)
{
	static const char *const files[] = {"cpuset.cpus", "cpuset.mems"};
	for (unsigned i = 0; i < 2; i++) {
		char mine[256], theirs[256];
		if (get(dir, files[i], mine, sizeof(mine)) < 0)
			return 0; /* not a cpuset hierarchy */
		if (mine[0] && mine[0] != '\n')
			continue;
		ssize_t n = get(parent, files[i], theirs, sizeof(theirs));
		int r = n < 0 ? (int)n : put(dir, files[i], theirs);
		if (r)
			return jailer_fail(j, JAILER_EXIT_HOST, "cgroup %s from the parent: %s",
					   files[i], strerror(-r));
	}
	return 0;
}

static const char *parent_cgroup(const struct jailer *j)
{
	return j->a.parent_cgroup ? j->a.parent_cgroup : j->exec_name;
}

int jailer_check_cgroups(struct jailer *j)
{
	static char mounts[64 * 1024], self[8 * 1024];
	const int v = j->a.cgroup_version;
	if (j->a.nr_cgroups == 0)
		return 0;
	ssize_t n = get(AT_FDCWD, "/proc/self/mounts", mounts, sizeof(mounts));
	ssize_t m = n < 0 ? n : get(AT_FDCWD, "/proc/self/cgroup", self, sizeof(self));
	if (m < 0)
		return jailer_fail(j, JAILER_EXIT_HOST, "cannot read /proc: %s", strerror((int)-m));
	for (unsigned i = 0; i < j->a.nr_cgroups; i++) {
		const struct jailer_cgroup *c = &j->a.cgroups[i];
		int r = jailer_cgroup_mount(mounts, v, c->controller, j->cg_mount[i],
					    sizeof(j->cg_mount[i]));
		if (r)
			return jailer_fail(
			    j, JAILER_EXIT_USAGE,
			    "--cgroup %s: no cgroup v%d hierarchy%s%s is mounted (see "
			    "/proc/mounts; --cgroup-version picks the other)",
			    c->file, v, v == 1 ? " with the controller " : "",
			    v == 1 ? c->controller : "");
		if (jailer_self_cgroup(self, v, c->controller, j->cg_self[i],
				       sizeof(j->cg_self[i])))
			return jailer_fail(j, JAILER_EXIT_HOST,
					   "--cgroup %s: this process has no "
					   "cgroup in %s (/proc/self/cgroup)",
					   c->file, j->cg_mount[i]);
		if (v == 2) {
			char ctls[512], path[512];
			int rr = jailer_path_join(path, sizeof(path), j->cg_mount[i],
						  "cgroup.controllers", NULL);
			if (rr || get(AT_FDCWD, path, ctls, sizeof(ctls)) < 0 ||
			    !jailer_has_word(ctls, c->controller))
				return jailer_fail(
				    j, JAILER_EXIT_USAGE,
				    "--cgroup %s: cgroup v2 at %s does not offer the %s "
				    "controller (a v1 hierarchy may hold it)",
				    c->file, j->cg_mount[i], c->controller);
		}
	}
	return 0;
}

/* Create <root>/<rel> one cgroup at a time.  v2: enable the controllers
 * in each cgroup on the way down first; v1: a new cpuset cgroup gets its
 * parent's cpus and mems. */
static int make_path(struct jailer *j, int root, const char *rel, int procs_fd, int *leaf)
{
	bool v2 = j->a.cgroup_version == 2;
	char line[128], name[256];
	if (v2 && jailer_subtree_line(&j->a, line, sizeof(line)))
		return jailer_fail(j, JAILER_EXIT_HOST, "too many controllers");
	int fd = fcntl(root, F_DUPFD_CLOEXEC, 3);
	if (fd < 0)
		return jailer_fail(j, JAILER_EXIT_HOST, "dup: %s", strerror(errno));
	for (const char *p = rel; *p;) {
		size_t n = strcspn(p, "/");
		int r = 0, next = -1;
		bool made = false;
		if (n >= sizeof(name))
			r = jailer_fail(j, JAILER_EXIT_HOST, "cgroup path too long");
		if (!r) {
			memcpy(name, p, n);
			name[n] = '\0';
			p += n + (p[n] == '/');
		}
		if (!r && v2 && (r = put(fd, "cgroup.subtree_control", line)) != 0)
			r = jailer_fail(j, JAILER_EXIT_HOST,
					"cgroup v2: enabling \"%s\" below %s: %s", line, rel,
					strerror(-r));
		if (!r)
			r = jailer_mkdir_at(j, fd, name, UNDO_CGROUP, procs_fd, &next, &made);
		if (!r && made && !v2)
			r = inherit_cpuset(j, fd, next);
		close(fd);
		if (r) {
			if (next >= 0)
				close(next);
			return r;
		}
		fd = next;
	}
	*leaf = fd;
	return 0;
}

int jailer_make_cgroups(struct jailer *j)
{
	char rel[512], pid[16];
	snprintf(pid, sizeof(pid), "%d", (int)getpid());
	if (jailer_path_join(rel, sizeof(rel), parent_cgroup(j), j->a.id, NULL))
		return jailer_fail(j, JAILER_EXIT_USAGE, "--parent-cgroup: path too long");
	for (unsigned i = 0; i < j->a.nr_cgroups; i++) {
		bool done = false;
		for (unsigned k = 0; k < i; k++)
			done |= strcmp(j->cg_mount[k], j->cg_mount[i]) == 0;
		if (done)
			continue; /* one cgroup per hierarchy */

		/* Where we started, to move back to if a later step fails. */
		char self[512];
		int r = jailer_path_join(self, sizeof(self), j->cg_mount[i],
					 j->cg_self[i][0] ? j->cg_self[i] : ".", "cgroup.procs");
		int procs = r ? -1 : open(self, O_WRONLY | O_CLOEXEC); /* kept until exit */
		if (procs >= 0)
			j->procs_fd[j->nr_procs++] = procs;
		int root = open(j->cg_mount[i], O_PATH | O_DIRECTORY | O_CLOEXEC), leaf = -1;
		if (procs < 0 || root < 0)
			r = jailer_fail(j, JAILER_EXIT_HOST, "cgroup %s: %s", j->cg_mount[i],
					strerror(errno));
		else
			r = make_path(j, root, rel, procs, &leaf);
		if (root >= 0)
			close(root);
		/* The values, then ourselves: ember starts inside its limits. */
		for (unsigned k = i; !r && k < j->a.nr_cgroups; k++) {
			const struct jailer_cgroup *c = &j->a.cgroups[k];
			if (strcmp(j->cg_mount[k], j->cg_mount[i]) != 0)
				continue;
			int e = put(leaf, c->file, c->value);
			if (e == -ENOENT)
				r = jailer_fail(j, JAILER_EXIT_USAGE,
						"--cgroup %s: no such file in %s/%s", c->file,
						j->cg_mount[i], rel);
			else if (e)
				r = jailer_fail(j, JAILER_EXIT_USAGE,
						"--cgroup %s=%s: the kernel refused the value (%s)",
						c->file, c->value, strerror(-e));
		}
		if (!r && (r = put(leaf, "cgroup.procs", pid)) != 0)
			r = jailer_fail(j, JAILER_EXIT_HOST, "joining cgroup %s/%s: %s",
					j->cg_mount[i], rel, strerror(-r));
		if (leaf >= 0)
			close(leaf);
		if (r)
			return r;
	}
	return 0;
}

void jailer_leave_cgroups(struct jailer *j)
{
	char pid[16];
	int n = snprintf(pid, sizeof(pid), "%d", (int)getpid());
	for (unsigned i = 0; i < j->nr_procs; i++)
		if (pwrite(j->procs_fd[i], pid, (size_t)n, 0) < 0) {
			/* the jail's limits then count this waiting process too */
		}
}
