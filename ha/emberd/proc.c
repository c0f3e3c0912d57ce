/* A VM's ember, through ember-jailer (docs/jail.md): the jail's root is
 * staged first, each file the VM needs bind-mounted onto an empty file
 * inside it (the jailer carries the mounts into its mount namespace: its
 * bind of the root is recursive), then the jailer is exec'd in a child
 * watched by a pidfd.  After the exit the mounts and the folder go. */
#include <errno.h>
#include <fcntl.h>
#include <glob.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/file.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ha/api_client.h"
#include "ha/emberd/local.h"

#ifndef P_PIDFD
#define P_PIDFD 3
#endif

void ed_proc_jail_path(struct ed_vm *vm)
{
	const struct ed_host_opts *o = ed_host_opts(vm->h);
	const char *exe = strrchr(o->ember, '/') ? strrchr(o->ember, '/') + 1 : o->ember;
	snprintf(vm->jail_id, sizeof(vm->jail_id), "%s", vm->f.name);
	snprintf(vm->jail_dir, sizeof(vm->jail_dir), "%s/%s/%s", o->jail_base, exe, vm->jail_id);
	ed_fmt(vm->api_sock, sizeof(vm->api_sock), "%s/root/api.sock", vm->jail_dir);
}

/* The mount points at or below dir, deepest first: 0 with *n, -errno. */
static int mounts_below(const char *dir, char (*out)[PATH_MAX], int max, int *n)
{
	FILE *f = fopen("/proc/self/mountinfo", "re");
	if (!f)
		return -errno;
	char line[4096];
	size_t dl = strlen(dir);
	*n = 0;
	while (fgets(line, sizeof(line), f) && *n < max) {
		char mp[PATH_MAX];
		/* id parent major:minor root MOUNTPOINT ... */
		if (sscanf(line, "%*s %*s %*s %*s %4095s", mp) != 1)
			continue;
		if (!strncmp(mp, dir, dl) && (mp[dl] == '/' || !mp[dl]))
			snprintf(out[(*n)++], PATH_MAX, "%s", mp);
	}
	fclose(f);
	/* deepest first: longer paths are below shorter ones */
	for (int i = 0; i < *n; i++)
		for (int k = i + 1; k < *n; k++)
			if (strlen(out[k]) > strlen(out[i])) {
				char t[PATH_MAX];
				memcpy(t, out[i], PATH_MAX);
				memcpy(out[i], out[k], PATH_MAX);
				memcpy(out[k], t, PATH_MAX);
			}
	return 0;
}

/* Detach every mount in a jail: 0 once none is left, else -EBUSY.
 * Never remove through a mount that stayed: the snapshot folder and the
 * drives are bound in, and a walk would delete them. */
static int unmount_jail(const char *jail_dir)
{
	static char mps[64][PATH_MAX];
	int n = 0;
	if (mounts_below(jail_dir, mps, 64, &n))
		return -EIO;
	for (int i = 0; i < n; i++)
		umount2(mps[i], MNT_DETACH);
	if (mounts_below(jail_dir, mps, 64, &n) || n) {
		fprintf(stderr, "<4>emberd: %s: %d mounts would not go; the folder is kept\n",
			jail_dir, n);
		return -EBUSY;
	}
	return 0;
}

/* Whether a jail's lock is held: its ember (or that ember's exit-time
 * child) still lives (docs/jail.md, "One live jail per id"). */
static bool jail_live(const char *jail_dir)
{
	char p[PATH_MAX + 16];
	ed_fmt(p, sizeof(p), "%s/jail.lock", jail_dir);
	int fd = open(p, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
	if (fd < 0)
		return false;
	bool live = flock(fd, LOCK_EX | LOCK_NB) < 0 && errno == EWOULDBLOCK;
	close(fd);
	return live;
}

int ed_proc_clean_jail(const char *jail_dir)
{
	if (jail_live(jail_dir))
		return -EBUSY;
	int r = unmount_jail(jail_dir);
	if (!r)
		ed_rm_tree(jail_dir);
	return r;
}

/* A thread of its own, a while after the exit and at a low priority:
 * removing a jail (the copy of ember, its device nodes) is file system
 * work that neither the loop nor the restart should wait behind. */
static void *remove_later(void *arg)
{
	struct timespec pause = {.tv_nsec = 500 * 1000 * 1000};
	nanosleep(&pause, NULL);
	if (setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), 10) < 0) {
		/* at the usual priority, then */
	}
	ed_rm_tree(arg);
	free(arg);
	return NULL;
}

/* After an exit: the jail's folder is renamed out of the way at once (a
 * restart stages a fresh one under the same id, and the old lock may
 * still be held for a moment by ember's exit-time child) and removed off
 * the restart's path. */
static void retire_jail(struct ed_vm *vm, bool now)
{
	static unsigned seq;
	char gone[PATH_MAX + 32];
	if (unmount_jail(vm->jail_dir))
		return;
	snprintf(gone, sizeof(gone), "%s.gone-%d-%u", vm->jail_dir, (int)getpid(), ++seq);
	char *copy = rename(vm->jail_dir, gone) == 0 ? strdup(gone) : NULL;
	pthread_attr_t at;
	pthread_t t;
	bool later = copy && !now && !pthread_attr_init(&at);
	if (later) {
		pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
		later = pthread_create(&t, &at, remove_later, copy) == 0;
		pthread_attr_destroy(&at);
	}
	if (!later) { /* (the next emberd sweeps what this one left: stage()) */
		ed_rm_tree(copy ? copy : vm->jail_dir);
		free(copy);
	}
}

static int mkdirs(const char *path, mode_t mode)
{
	char p[PATH_MAX];
	snprintf(p, sizeof(p), "%s", path);
	for (char *s = p + 1; *s; s++)
		if (*s == '/') {
			*s = '\0';
			if (mkdir(p, 0755) < 0 && errno != EEXIST)
				return -errno;
			*s = '/';
		}
	if (mkdir(p, mode) < 0 && errno != EEXIST)
		return -errno;
	return 0;
}

/* Bind src onto an empty file (or folder) at dst; read-only when ro. */
static int bind(const char *src, const char *dst, bool dir, bool ro, char *why, size_t whylen)
{
	int r = 0;
	if (dir)
		r = mkdir(dst, 0755) < 0 && errno != EEXIST ? -errno : 0;
	else {
		int fd = open(dst, O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0444);
		r = fd < 0 ? -errno : 0;
		if (fd >= 0)
			close(fd);
	}
	if (!r && mount(src, dst, NULL, MS_BIND, NULL) < 0)
		r = -errno;
	if (!r && ro && mount(NULL, dst, NULL, MS_BIND | MS_REMOUNT | MS_RDONLY, NULL) < 0)
		r = -errno;
	if (r)
		snprintf(why, whylen, "bind %s onto %s: %s", src, dst, strerror(-r));
	return r;
}

static int stage(struct ed_vm *vm, char *why, size_t whylen)
{
	const struct ed_host_opts *o = ed_host_opts(vm->h);
	char root[PATH_MAX], p[PATH_MAX + 64], snap[PATH_MAX];
	ed_fmt(root, sizeof(root), "%s/root", vm->jail_dir);
	int r = ed_proc_clean_jail(vm->jail_dir);
	if (r) {
		snprintf(why, whylen, "%s: %s", vm->jail_dir,
			 r == -EBUSY ? "a jail with this id is live (another emberd?)"
				     : "its mounts would not go");
		return r;
	}
	/* Retired jails an earlier emberd left (it exited before removing
	 * them).  Ours (.gone-<our pid>-N) are skipped: retire_jail's thread
	 * removes them off the restart's path, and sweeping the one the exit
	 * just made here put its removal (the copy of ember, the device nodes:
	 * a third of the restart) back on it.  Safe: nothing of a retired jail
	 * is used again, and one this emberd failed to remove is swept by the
	 * next emberd (another pid). */
	glob_t g;
	char mine[64];
	snprintf(mine, sizeof(mine), ".gone-%d-", (int)getpid());
	snprintf(p, sizeof(p), "%s.gone-*", vm->jail_dir);
	if (glob(p, GLOB_NOSORT, NULL, &g) == 0) {
		for (size_t i = 0; i < g.gl_pathc; i++)
			if (!strstr(g.gl_pathv[i] + strlen(vm->jail_dir), mine) &&
			    ed_proc_clean_jail(g.gl_pathv[i])) {
				/* still held a moment, or mounted: the next start tries again */
			}
		globfree(&g);
	}
	r = mkdirs(root, 0755);
	snprintf(p, sizeof(p), "%s/vm", root);
	if (!r)
		r = mkdirs(p, 0755);
	if (r) {
		snprintf(why, whylen, "make %s: %s", p, strerror(-r));
		return r;
	}
	snprintf(p, sizeof(p), "%s/vm/kernel", root);
	r = bind(vm->f.kernel, p, false, true, why, whylen);
	if (!r && vm->f.initrd[0]) {
		snprintf(p, sizeof(p), "%s/vm/initrd", root);
		r = bind(vm->f.initrd, p, false, true, why, whylen);
	}
	for (unsigned i = 0; !r && i < vm->f.nr_drives; i++) {
		const struct ed_drive *d = &vm->f.drives[i];
		snprintf(p, sizeof(p), "%s/vm/drive-%s", root, d->id);
		/* the jailed uid writes a writable drive: it must own it */
		if (!d->ro && chown(d->path, o->uid, o->gid) < 0) {
			r = -errno;
			snprintf(why, whylen, "chown %s to the jail's uid: %s", d->path,
				 strerror(errno));
		}
		if (!r)
			r = bind(d->path, p, false, d->ro, why, whylen);
	}
	if (!r && (r = ed_snap_vm_dir(vm, snap, sizeof(snap))))
		snprintf(why, whylen, "snapshot folder of %s: %s", vm->f.name, strerror(-r));
	snprintf(p, sizeof(p), "%s/snap", root);
	if (!r)
		r = bind(snap, p, true, false, why, whylen);
	snprintf(p, sizeof(p), "%s/vm.ini", root);
	if (!r)
		r = ed_vmfile_write_jail(&vm->f, p, why, whylen);
	if (r && ed_proc_clean_jail(vm->jail_dir)) {
		/* reported by the next start */
	}
	return r;
}

static void on_exit_fd(void *arg, uint32_t events)
{
	(void)events;
	struct ed_vm *vm = arg;
	ed_host_vm_exited(vm);
}

int ed_proc_launch(struct ed_vm *vm, const char *snap_dir, char *why, size_t whylen)
{
	const struct ed_host_opts *o = ed_host_opts(vm->h);
	char log[PATH_MAX], uid[16], gid[16], state[PATH_MAX], mem[PATH_MAX];
	ed_proc_jail_path(vm);
	int r = ed_host_vm_state_dir(vm->h, vm->f.name, log, sizeof(log) - 16);
	if (r) {
		snprintf(why, whylen, "state folder: %s", strerror(-r));
		return r;
	}
	strcat(log, "/console.log");
	r = stage(vm, why, whylen);
	if (r)
		return r;
	snprintf(uid, sizeof(uid), "%u", (unsigned)o->uid);
	snprintf(gid, sizeof(gid), "%u", (unsigned)o->gid);
	const char *base = strrchr(snap_dir ? snap_dir : "", '/');
	snprintf(state, sizeof(state), "/snap%s/state", base ? base : "");
	snprintf(mem, sizeof(mem), "/snap%s/mem", base ? base : "");
	const char *argv[32] = {
	    o->jailer, "--id",	vm->jail_id, "--exec-file",	  o->ember,	"--uid",
	    uid,       "--gid", gid,	     "--chroot-base-dir", o->jail_base, "--die-with-parent",
	    "--",      "run"};
	int n = 14;
	if (vm->moving == ED_MOVE_IN) {
		n = 13; /* a fresh ember, no VM: it waits for PUT /migration/receive */
	} else if (snap_dir) {
		const char *more[] = {"--restore", state, "--memory-file", mem,
				      "--use-saved-paths"};
		for (size_t i = 0; i < 5; i++)
			argv[n++] = more[i];
	} else {
		argv[n++] = "/vm.ini";
	}
	argv[n++] = "--api-sock";
	argv[n++] = "/api.sock";
	argv[n] = NULL;

	int logfd = open(log, O_RDWR | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
	int nullfd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	if (logfd < 0 || nullfd < 0) {
		r = -errno;
		snprintf(why, whylen, "%s: %s", logfd < 0 ? log : "/dev/null", strerror(errno));
		goto out;
	}
	/* a killed guest may have left half a line: ours starts a new one */
	struct stat st;
	char last = '\n';
	if (fstat(logfd, &st) == 0 && st.st_size > 0 && pread(logfd, &last, 1, st.st_size - 1) != 1)
		last = '\n';
	dprintf(logfd, "%s--- emberd: %s%s %s ---\n", last == '\n' ? "" : "\n",
		last == '\n' ? "" : "(the line above was cut) ",
		vm->moving == ED_MOVE_IN ? "live migration into" : snap_dir ? "restore from" : "boot",
		snap_dir ? snap_dir : vm->f.file);
	/* On the loop's thread, which lives as long as emberd: the jailer's
	 * --die-with-parent (PR_SET_PDEATHSIG) follows the forking thread. */
	pid_t pid = fork();
	if (pid < 0) {
		r = -errno;
		snprintf(why, whylen, "fork: %s", strerror(errno));
		goto out;
	}
	if (pid == 0) {
		/* emberd blocks the signals its signalfd reads: not ember */
		sigset_t none;
		sigemptyset(&none);
		sigprocmask(SIG_SETMASK, &none, NULL);
		setpgid(0, 0); /* a terminal's ^C is emberd's to handle, not the VMs' */
		if (dup2(nullfd, 0) < 0 || dup2(logfd, 1) < 0 || dup2(logfd, 2) < 0)
			_exit(127);
		execv(o->jailer, (char *const *)argv);
		dprintf(2, "emberd: exec %s: %s\n", o->jailer, strerror(errno));
		_exit(127);
	}
	vm->pid = pid;
	int pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
	pthread_mutex_lock(&vm->h->mu); /* ed_host_fence() reads it */
	vm->pidfd = pidfd;
	/* a fence since the start's check: its walk may have missed this one */
	if (pidfd >= 0 && ed_host_fenced(vm->h))
		syscall(SYS_pidfd_send_signal, pidfd, SIGKILL, NULL, 0);
	pthread_mutex_unlock(&vm->h->mu);
	if (vm->pidfd < 0) {
		r = -errno;
		snprintf(why, whylen, "pidfd_open: %s", strerror(errno));
		kill(pid, SIGKILL);
		waitpid(pid, NULL, 0);
		vm->pid = 0;
		goto out;
	}
	r = ed_loop_add_fd(ed_host_loop(vm->h), vm->pidfd, EPOLLIN, on_exit_fd, vm);
	if (r) {
		snprintf(why, whylen, "watch pidfd: %s", strerror(-r));
		kill(pid, SIGKILL);
		waitpid(pid, NULL, 0);
		pthread_mutex_lock(&vm->h->mu);
		close(vm->pidfd);
		vm->pidfd = -1;
		pthread_mutex_unlock(&vm->h->mu);
		vm->pid = 0;
	}
out:
	if (logfd >= 0)
		close(logfd);
	if (nullfd >= 0)
		close(nullfd);
	if (r && ed_proc_clean_jail(vm->jail_dir)) {
		/* reported by the next start */
	}
	return r;
}

void ed_proc_reap(struct ed_vm *vm, bool now, int *code, int *sig)
{
	siginfo_t si = {0};
	*code = -1;
	*sig = 0;
	if (vm->pidfd >= 0) {
		ed_loop_del_fd(ed_host_loop(vm->h), vm->pidfd);
		if (waitid((idtype_t)P_PIDFD, (id_t)vm->pidfd, &si, WEXITED) == 0) {
			if (si.si_code == CLD_EXITED)
				*code = si.si_status;
			else
				*sig = si.si_status;
		}
		pthread_mutex_lock(&vm->h->mu);
		close(vm->pidfd);
		vm->pidfd = -1;
		pthread_mutex_unlock(&vm->h->mu);
	}
	vm->pid = 0;
	retire_jail(vm, now);
}

/* ready polling: the API socket answers once ember runs. */
bool ed_proc_answers(struct ed_vm *vm)
{
	struct ha_api_reply rep = {0};
	char err[256];
	int r = ha_api_call(vm->api_sock, "GET", "/ember/status", NULL, -1, 1000, &rep, err,
			    sizeof(err));
	json_decref(rep.body);
	return r == 0 && rep.status == 200;
}
