/* ember-jailer: build a jail and exec ember inside it, with Firecracker's
 * jailer contract and order (docs/jail.md).  main() is the list of steps;
 * each step succeeds or says why.  Everything a step makes on the host is
 * put on the undo list (a directory fd plus a name, so it still works
 * after pivot_root has hidden the host), and a failure removes it all in
 * reverse: a refused or failed jail leaves nothing behind. */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <linux/magic.h>
#include <linux/nsfs.h>
#include <pwd.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "jail/jail.h"
#include "jail/jailer.h"

/* Resolve --uid/--gid: a number as is, a name through the host's
 * databases (before the jail hides them). */
static int resolve_ids(struct jailer *j)
{
	uint32_t n;
	int r = jailer_parse_id_number(j->a.uid, &n);
	if (r == 0) {
		j->uid = n;
	} else {
		struct passwd *pw = getpwnam(j->a.uid);
		if (!pw)
			return jailer_fail(j, JAILER_EXIT_USAGE, "--uid \"%s\": no such user",
					   j->a.uid);
		j->uid = pw->pw_uid;
	}
	if (j->uid == 0) /* "0" itself is refused by jailer_parse_args */
		return jailer_fail(j, JAILER_EXIT_USAGE,
				   "--uid \"%s\": resolves to uid 0 (root); the jail needs an "
				   "unprivileged uid",
				   j->a.uid);
	r = jailer_parse_id_number(j->a.gid, &n);
	if (r == 0) {
		j->gid = n;
	} else {
		struct group *gr = getgrnam(j->a.gid);
		if (!gr)
			return jailer_fail(j, JAILER_EXIT_USAGE, "--gid \"%s\": no such group",
					   j->a.gid);
		j->gid = gr->gr_gid;
	}
	if (j->gid == 0)
		return jailer_fail(j, JAILER_EXIT_USAGE,
				   "--gid \"%s\": resolves to gid 0 (root); the jail needs an "
				   "unprivileged gid",
				   j->a.gid);
	return 0;
}

/* The exec file: a regular, static x86-64 executable.  Opened once, so
 * what was checked is what gets copied. */
static int check_exec_file(struct jailer *j)
{
	const char *path = j->a.exec_file;
	char label[PATH_MAX + 16];
	snprintf(label, sizeof(label), "--exec-file %s", path);
	int r = jailer_open_file(j, AT_FDCWD, path, label, JAILER_WALK_FOLLOW, O_RDONLY | O_CLOEXEC,
				 "a regular file", &j->exec_fd);
	if (r)
		return r;
	static uint8_t head[64 * 1024];
	ssize_t n = pread(j->exec_fd, head, sizeof(head), 0);
	char why[160];
	if (n < 0 || jailer_check_static_elf(head, (size_t)n, why, sizeof(why)))
		return jailer_fail(j, JAILER_EXIT_USAGE, "--exec-file %s: %s", path,
				   n < 0 ? strerror(errno) : why);
	return 0;
}

/* Where the jail goes must allow exec and device nodes.  The closest
 * existing ancestor of the chroot base tells. */
static int check_base(struct jailer *j)
{
	char p[PATH_MAX];
	snprintf(p, sizeof(p), "%s", j->a.chroot_base);
	struct statvfs sv;
	while (statvfs(p, &sv) < 0) {
		char *slash = strrchr(p, '/');
		if (errno != ENOENT || !slash)
			return jailer_fail(j, JAILER_EXIT_USAGE, "--chroot-base-dir %s: %s",
					   j->a.chroot_base, strerror(errno));
		slash[slash == p] = '\0';
	}
	if (sv.f_flag & ST_NOEXEC)
		return jailer_fail(j, JAILER_EXIT_USAGE,
				   "--chroot-base-dir %s: its filesystem is mounted noexec",
				   j->a.chroot_base);
	if (sv.f_flag & ST_NODEV)
		return jailer_fail(
		    j, JAILER_EXIT_USAGE,
		    "--chroot-base-dir %s: its filesystem is mounted nodev (the jail's "
		    "/dev/kvm would not open)",
		    j->a.chroot_base);
	return 0;
}

static int open_netns(struct jailer *j)
{
	/* an nsfs file is a regular one to stat: the O_PATH look lets no
	 * FIFO block the open, then the magic tells */
	char label[PATH_MAX + 16];
	snprintf(label, sizeof(label), "--netns %s", j->a.netns);
	int r = jailer_open_file(j, AT_FDCWD, j->a.netns, label, JAILER_WALK_FOLLOW,
				 O_RDONLY | O_CLOEXEC, "a network namespace", &j->netns_fd);
	if (r)
		return r;
	struct statfs sf;
	if (fstatfs(j->netns_fd, &sf) < 0 || sf.f_type != NSFS_MAGIC ||
	    ioctl(j->netns_fd, NS_GET_NSTYPE) != CLONE_NEWNET)
		return jailer_fail(j, JAILER_EXIT_USAGE, "--netns %s: not a network namespace",
				   j->a.netns);
	return 0;
}

/* Every check that needs the host but changes nothing. */
static int validate(struct jailer *j)
{
	int r = resolve_ids(j);
	if (!r)
		r = check_exec_file(j);
	if (!r)
		r = check_base(j);
	if (!r && j->a.netns)
		r = open_netns(j);
	if (!r && j->a.daemonize) {
		/* opened now: the jail has no /dev/null */
		j->null_fd = open("/dev/null", O_RDWR | O_CLOEXEC);
		if (j->null_fd < 0)
			r = jailer_fail(j, JAILER_EXIT_HOST, "/dev/null: %s", strerror(errno));
	}
	if (!r)
		r = jailer_check_cgroups(j);
	if (!r)
		r = jailer_check_jail(j);
	return r;
}

static int set_rlimits(struct jailer *j)
{
	struct jailer_rlimit def = {RLIMIT_NOFILE, "no-file", JAILER_DEFAULT_NOFILE};
	const struct jailer_rlimit *l = j->a.nr_rlimits ? j->a.rlimits : &def;
	unsigned n = j->a.nr_rlimits ? j->a.nr_rlimits : 1;
	for (unsigned i = 0; i < n; i++) {
		struct rlimit rl = {l[i].value, l[i].value};
		if (setrlimit(l[i].resource, &rl) < 0)
			return jailer_fail(j, JAILER_EXIT_HOST, "--resource-limit %s=%llu: %s",
					   l[i].name, (unsigned long long)l[i].value,
					   strerror(errno));
	}
	return 0;
}

/* A new mount namespace whose root is the jail: bind it onto itself (a
 * mount point), pivot_root into it with the old root stacked on top, and
 * detach the old root.  Nothing of the host stays reachable by path.  No
 * path is looked up either: the root is entered through its fd (fchdir
 * before unshare, which carries the cwd into the new namespace), and
 * the bind is found again from its parent without symlinks and checked
 * to be the same directory. */
static int enter_jail(struct jailer *j)
{
	struct stat want, got;
	int up = -1, in = -1, r;
	if (fstat(j->root_fd, &want) < 0 || fchdir(j->root_fd) < 0)
		return jailer_fail(j, JAILER_EXIT_HOST, "%s: %s", j->root_dir, strerror(errno));
	if (unshare(CLONE_NEWNS) < 0)
		return jailer_fail(j, JAILER_EXIT_HOST, "unshare(CLONE_NEWNS): %s",
				   strerror(errno));
	if (mount(NULL, "/", NULL, MS_PRIVATE | MS_REC, NULL) < 0 ||
	    /* recursive, as Firecracker's: files a supervisor bind-mounted into
	     * the root before the jailer ran (emberd's kernel, drives and
	     * snapshot folder) come along into the jail */
	    mount(".", ".", NULL, MS_BIND | MS_REC, NULL) < 0)
		return jailer_fail(j, JAILER_EXIT_HOST, "bind-mount %s: %s", j->root_dir,
				   strerror(errno));
	/* the cwd is still the directory under the new mount: step onto it */
	up = open("..", O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (up < 0)
		return jailer_fail(j, JAILER_EXIT_HOST, "%s: %s", j->id_dir, strerror(errno));
	r = jailer_walk(j, up, j->id_dir, "root", 0, UNDO_DIR, &in);
	close(up);
	if (!r && in < 0)
		r = jailer_fail(j, JAILER_EXIT_HOST, "%s: gone", j->root_dir);
	if (!r && (fstat(in, &got) < 0 || got.st_dev != want.st_dev || got.st_ino != want.st_ino))
		r = jailer_fail(j, JAILER_EXIT_HOST, "%s: changed while the jail was built",
				j->root_dir);
	if (!r && fchdir(in) < 0)
		r = jailer_fail(j, JAILER_EXIT_HOST, "%s: %s", j->root_dir, strerror(errno));
	if (in >= 0)
		close(in);
	if (r)
		return r;
	if (syscall(SYS_pivot_root, ".", ".") < 0 || umount2(".", MNT_DETACH) < 0 ||
	    chdir("/") < 0 || chroot(".") < 0)
		return jailer_fail(j, JAILER_EXIT_HOST, "pivot_root into %s: %s", j->root_dir,
				   strerror(errno));
	return 0;
}

static int join_netns(struct jailer *j)
{
	if (setns(j->netns_fd, CLONE_NEWNET) < 0)
		return jailer_fail(j, JAILER_EXIT_HOST, "--netns %s: setns: %s", j->a.netns,
				   strerror(errno));
	close(j->netns_fd);
	j->netns_fd = -1;
	return 0;
}

/* The child the waiting jailer forwards a stop to: a signal handler's
 * only way to know it. */
static volatile sig_atomic_t child_pid;

/* Ctrl-C or a kill of the waiting jailer stops the VM: pid 1 of a pid
 * namespace ignores signals it has no handler for, so it gets SIGKILL. */
static void forward(int sig)
{
	(void)sig;
	if (child_pid > 0)
		kill(child_pid, SIGKILL);
}

/* --new-pid-ns: the program runs as pid 1 of a new pid namespace.  The
 * parent writes its host pid to /<exec name>.pid (in the jail's root)
 * and to the lock, then lets it go on.  *child: 0 in the child, which
 * goes on with the steps (and owns the undo list from then on); the pid
 * in the parent, whose part is done.  0 or an exit code. */
static int new_pid_ns(struct jailer *j, pid_t *child)
{
	int go[2];
	if (unshare(CLONE_NEWPID) < 0)
		return jailer_fail(j, JAILER_EXIT_HOST, "unshare(CLONE_NEWPID): %s",
				   strerror(errno));
	if (pipe2(go, O_CLOEXEC) < 0)
		return jailer_fail(j, JAILER_EXIT_HOST, "pipe: %s", strerror(errno));
	char pidfile[NAME_MAX + 8];
	snprintf(pidfile, sizeof(pidfile), "%s.pid", j->exec_name);
	pid_t pid = fork();
	if (pid < 0)
		return jailer_fail(j, JAILER_EXIT_HOST, "fork: %s", strerror(errno));
	*child = pid;
	if (pid == 0) {
		char c;
		close(go[1]);
		if (read(go[0], &c, 1) != 1) {
			/* the parent failed: it says why and cleans up */
			jailer_undo_forget(j);
			j->err[0] = '\0';
			return JAILER_EXIT_HOST;
		}
		close(go[0]);
		int top = open("/", O_PATH | O_DIRECTORY | O_CLOEXEC);
		int r = top < 0 ? jailer_fail(j, JAILER_EXIT_HOST, "/: %s", strerror(errno))
				: jailer_undo_push(j, top, pidfile, UNDO_FILE, -1);
		if (top >= 0)
			close(top);
		return r;
	}
	close(go[0]);
	int fd = -1, r = 0;
	if (unlinkat(AT_FDCWD, pidfile, 0) < 0 && errno != ENOENT)
		r = jailer_fail(j, JAILER_EXIT_HOST, "/%s: %s", pidfile, strerror(errno));
	if (!r &&
	    (fd = open(pidfile, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644)) < 0)
		r = jailer_fail(j, JAILER_EXIT_HOST, "/%s: %s", pidfile, strerror(errno));
	if (!r)
		r = jailer_write_pid(j, fd, pid);
	if (!r)
		r = jailer_write_pid(j, j->lock_fd, pid);
	if (fd >= 0)
		close(fd);
	if (r) {
		close(go[1]); /* the child returns at EOF */
		waitpid(pid, NULL, 0);
		unlinkat(AT_FDCWD, pidfile, 0);
		return r;
	}
	if (write(go[1], "g", 1) != 1) {
		/* the child is gone already; its status says why */
	}
	close(go[1]);
	jailer_undo_forget(j);
	return 0;
}

/* The parent of --new-pid-ns without --daemonize: out of the jail's
 * cgroups (it must not count against its limits), wait, and pass the
 * child's status on. */
static int wait_for(struct jailer *j, pid_t pid)
{
	jailer_leave_cgroups(j);
	child_pid = pid;
	struct sigaction sa = {.sa_handler = forward};
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);
	int status;
	while (waitpid(pid, &status, 0) < 0)
		if (errno != EINTR)
			return JAILER_EXIT_HOST;
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/* Firecracker's: setsid, and stdio onto /dev/null.  setsid fails for a
 * process group leader (a job started by a shell): start the jailer from
 * a fork, or use --new-pid-ns, whose child is never one. */
static int daemonize(struct jailer *j)
{
	if (setsid() < 0)
		return jailer_fail(j, JAILER_EXIT_HOST,
				   "--daemonize: setsid: %s (a process group leader cannot; start "
				   "ember-jailer from a fork, or add --new-pid-ns)",
				   strerror(errno));
	if (dup2(j->null_fd, STDIN_FILENO) < 0 || dup2(j->null_fd, STDOUT_FILENO) < 0 ||
	    dup2(j->null_fd, STDERR_FILENO) < 0)
		return jailer_fail(j, JAILER_EXIT_HOST, "--daemonize: dup2: %s", strerror(errno));
	close(j->null_fd);
	j->null_fd = -1;
	return 0;
}

/* uid:gid, no supplementary groups, and an empty bounding set first (the
 * program cannot empty it once it is not root); no exec may ever raise
 * privileges again. */
static int drop_privileges(struct jailer *j)
{
	int r = jail_drop_bounding();
	if (r)
		return jailer_fail(j, JAILER_EXIT_HOST, "PR_CAPBSET_DROP: %s", strerror(-r));
	if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) < 0 && errno != EINVAL)
		return jailer_fail(j, JAILER_EXIT_HOST, "PR_CAP_AMBIENT: %s", strerror(errno));
	if (setgroups(0, NULL) < 0 || setresgid(j->gid, j->gid, j->gid) < 0)
		return jailer_fail(j, JAILER_EXIT_HOST, "setgid %u: %s", (unsigned)j->gid,
				   strerror(errno));
	if (setresuid(j->uid, j->uid, j->uid) < 0)
		return jailer_fail(j, JAILER_EXIT_HOST, "setuid %u: %s", (unsigned)j->uid,
				   strerror(errno));
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
		return jailer_fail(j, JAILER_EXIT_HOST, "PR_SET_NO_NEW_PRIVS: %s", strerror(errno));
	return 0;
}

int main(int argc, char **argv)
{
	static struct jailer j = {.exec_fd = -1,
				  .netns_fd = -1,
				  .null_fd = -1,
				  .lock_fd = -1,
				  .id_fd = -1,
				  .root_fd = -1};
	pid_t parent = getppid(); /* --die-with-parent: whose death ends the program */
	int r = jailer_parse_args(argc - 1, argv + 1, &j.a, j.err, sizeof(j.err));
	if (r == 1) {
		fputs(jailer_usage(), stdout);
		return 0;
	}
	if (r) {
		fprintf(stderr, "ember-jailer: %s\n", j.err);
		return JAILER_EXIT_USAGE;
	}
	j.exec_name = jailer_exec_name(j.a.exec_file);
	if (snprintf(j.id_dir, sizeof(j.id_dir), "%s/%s/%s", j.a.chroot_base, j.exec_name,
		     j.a.id) >= (int)sizeof(j.id_dir) ||
	    snprintf(j.root_dir, sizeof(j.root_dir), "%s/root", j.id_dir) >=
		(int)sizeof(j.root_dir)) {
		fprintf(stderr, "ember-jailer: --chroot-base-dir: path too long\n");
		return JAILER_EXIT_USAGE;
	}
	umask(022);

	/* Nothing of the caller's reaches the jail: no fd but stdio, no
	 * environment.  (Firecracker's first steps.) */
	close_range(3, ~0U, 0);
	clearenv();

	r = validate(&j); /* changes nothing */
	if (!r)
		r = jailer_make_chroot(&j);
	if (!r)
		r = set_rlimits(&j);
	if (!r)
		r = jailer_make_cgroups(&j);
	if (!r)
		r = enter_jail(&j);
	if (!r)
		r = jailer_make_devices(&j);
	if (!r && j.a.netns)
		r = join_netns(&j);
	pid_t child = 0;
	if (!r && j.a.new_pid_ns)
		r = new_pid_ns(&j, &child);
	if (!r && child > 0) /* the parent's part is done */
		return j.a.daemonize ? 0 : wait_for(&j, child);
	if (!r && j.a.daemonize)
		r = daemonize(&j);
	if (!r)
		r = drop_privileges(&j);
	if (r) {
		jailer_undo_all(&j);
		if (j.err[0])
			fprintf(stderr, "ember-jailer: %s\n", j.err);
		return r;
	}

	/* exec: the undo list's fds are close-on-exec; the lock's is not. */
	char *args[j.a.exec_argc + 2];
	char path[NAME_MAX + 2];
	snprintf(path, sizeof(path), "/%s", j.exec_name);
	args[0] = (char *)j.exec_name;
	for (int i = 0; i < j.a.exec_argc; i++)
		args[i + 1] = j.a.exec_argv[i];
	args[j.a.exec_argc + 1] = NULL;
	char *env[] = {NULL};
	/* Last: setresuid() above clears the death signal.  If the parent
	 * died before it was set, nothing would ever deliver it: check. */
	if (j.a.die_with_parent &&
	    (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) < 0 || getppid() != parent)) {
		fprintf(stderr, "ember-jailer: --die-with-parent: %s\n",
			getppid() != parent ? "the caller is gone" : strerror(errno));
		return JAILER_EXIT_HOST;
	}
	execve(path, args, env);
	/* As uid:gid nothing can be removed any more; say what is left. */
	fprintf(stderr,
		"ember-jailer: exec %s in the jail: %s (remove %s and its cgroups: "
		"docs/jail.md, \"Cleanup\")\n",
		path, strerror(errno), j.id_dir);
	return JAILER_EXIT_HOST;
}
