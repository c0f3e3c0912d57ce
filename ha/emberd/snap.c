/* Snapshots of a VM: <snap-dir>/<name>/<token>-<seq>/{state,mem[,drive-ID],
 * meta}, written by the jailed ember into its /snap (the VM's folder,
 * bound in), committed by a `latest` file (temp + fsync + rename + folder
 * fsync) or, in cluster mode, the cluster's transaction.  resume=rollback
 * copies each writable drive in while the VM is paused, so memory and
 * disks come from one moment. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <linux/fs.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ha/api_client.h"
#include "ha/emberd/local.h"

int ed_write_file(const char *path, const char *data, size_t len, bool durable)
{
	char tmp[PATH_MAX + 16], dir[PATH_MAX];
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	/* made anew, never through what is there (a snapshot folder was the
	 * jailed uid's for a while: it may have planted a link) */
	if (unlink(tmp) < 0 && errno != ENOENT)
		return -errno;
	int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
	if (fd < 0)
		return -errno;
	int r = 0;
	for (size_t off = 0; off < len && !r;) {
		ssize_t n = write(fd, data + off, len - off);
		if (n < 0 && errno != EINTR)
			r = -errno;
		else if (n > 0)
			off += (size_t)n;
	}
	if (!r && durable && fsync(fd) < 0)
		r = -errno;
	close(fd);
	if (!r && rename(tmp, path) < 0)
		r = -errno;
	if (r) {
		unlink(tmp);
		return r;
	}
	if (!durable)
		return 0;
	snprintf(dir, sizeof(dir), "%s", path);
	char *slash = strrchr(dir, '/');
	if (slash)
		*slash = '\0';
	int d = open(slash ? dir : ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (d >= 0) {
		fsync(d);
		close(d);
	}
	return 0;
}

int ed_snap_vm_dir(struct ed_vm *vm, char *buf, size_t len)
{
	const struct ed_host_opts *o = ed_host_opts(vm->h);
	if (snprintf(buf, len, "%s/%s", o->snap_dir, vm->f.name) >= (int)len)
		return -ENAMETOOLONG;
	if (mkdir(buf, 0755) < 0 && errno != EEXIST)
		return -errno;
	/* root's: the jailed ember (bound in on /snap) writes only into the
	 * snapshot folder being made, never next to `latest` */
	if (chown(buf, 0, 0) < 0 || chmod(buf, 0755) < 0)
		return -errno;
	return 0;
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)ftw;
	return (flag == FTW_DP ? rmdir(path) : unlink(path)) && errno != ENOENT ? -1 : 0;
}

void ed_rm_tree(const char *dir)
{
	if (nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS | FTW_MOUNT) && errno != ENOENT)
		fprintf(stderr, "<4>emberd: remove %s: %s\n", dir, strerror(errno));
}

/* Copy src to dst (made anew: a link there is removed, never followed):
 * a reflink where the file system can (FICLONE), else only the data
 * (SEEK_DATA/SEEK_HOLE + copy_file_range), holes kept; fsync'ed.  A src
 * in a snapshot folder (src_in_snap) must be a regular file, no link.
 * 0 or -errno. */
static int copy_file(const char *src, bool src_in_snap, const char *dst, uid_t uid, gid_t gid)
{
	int in = open(src, O_RDONLY | O_CLOEXEC | (src_in_snap ? O_NOFOLLOW : 0));
	if (in < 0)
		return -errno;
	struct stat st;
	int r = fstat(in, &st) < 0 ? -errno : !S_ISREG(st.st_mode) ? -EINVAL : 0;
	if (!r && unlink(dst) < 0 && errno != ENOENT)
		r = -errno;
	int out = r ? -1 : open(dst, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (!r && out < 0)
		r = -errno;
	if (!r && ioctl(out, FICLONE, in) < 0) {
		if (ftruncate(out, st.st_size) < 0)
			r = -errno;
		off_t pos = 0;
		while (!r && pos < st.st_size) {
			off_t data = lseek(in, pos, SEEK_DATA);
			if (data < 0) {
				if (errno != ENXIO)
					r = -errno;
				break;
			}
			off_t hole = lseek(in, data, SEEK_HOLE);
			if (hole < 0)
				hole = st.st_size;
			loff_t a = data, b = data;
			while (!r && a < hole) {
				ssize_t n = copy_file_range(in, &a, out, &b, (size_t)(hole - a), 0);
				if (n < 0)
					r = -errno;
				else if (n == 0)
					break;
			}
			pos = hole;
		}
	}
	if (!r && fchown(out, uid, gid) < 0)
		r = -errno;
	if (!r && fsync(out) < 0)
		r = -errno;
	if (out >= 0)
		close(out);
	close(in);
	return r;
}

/* Thread-safe (a snapshot thread's): only its arguments. */
static int api(const char *sock, const char *method, const char *path, json_t *body, int timeout_ms,
	       char *why, size_t whylen)
{
	int r = ha_api_ok(sock, method, path, body, -1, timeout_ms, NULL, why, whylen);
	json_decref(body);
	return r;
}

/* The newest seq among the VM's folders, so a new emberd never reuses a
 * name. */
static void note_seq(struct ed_vm *vm, const char *name)
{
	long long tok;
	unsigned long long seq;
	if (sscanf(name, "%lld-%llu", &tok, &seq) == 2 && seq > vm->snap_seq)
		vm->snap_seq = seq;
}

/* Note every folder's seq (a new emberd, a snapshot from the suspend
 * marker): a name is never reused. */
static void note_all(struct ed_vm *vm, const char *vmdir)
{
	DIR *d = opendir(vmdir);
	if (!d)
		return;
	for (struct dirent *e; (e = readdir(d));)
		note_seq(vm, e->d_name);
	closedir(d);
}

static void drop_others(const char *vmdir, const char *keep)
{
	DIR *d = opendir(vmdir);
	if (!d)
		return;
	for (struct dirent *e; (e = readdir(d));) {
		char p[PATH_MAX + 256];
		if (e->d_name[0] == '.' || !strcmp(e->d_name, keep) || e->d_type != DT_DIR)
			continue;
		snprintf(p, sizeof(p), "%s/%s", vmdir, e->d_name);
		ed_rm_tree(p);
	}
	closedir(d);
}

/* One snapshot, in three steps: made ready on the loop, written by the
 * VM's ember (any thread: only the job is touched), committed on the loop. */
struct snap_job {
	struct ed_vm *vm;
	pid_t pid; /* the ember it was taken of */
	bool suspend, rollback;
	char sock[PATH_MAX], vmdir[PATH_MAX], dir[PATH_MAX], name[64];
	unsigned nr;
	struct {
		char src[PATH_MAX], dst[PATH_MAX + 80];
	} drives[ED_MAX_DRIVES];
	uid_t uid;
	gid_t gid;
	uint64_t t0;
	int r;
	char why[ED_ERR_MAX];
	pthread_t th;
};

static int snap_prepare(struct ed_vm *vm, bool suspend, struct snap_job *j)
{
	const struct ed_host_opts *o = ed_host_opts(vm->h);
	const struct ed_cluster_hooks *hk = ed_host_hooks(vm->h);
	*j = (struct snap_job){.vm = vm,
			       .pid = vm->pid,
			       .suspend = suspend,
			       .uid = o->uid,
			       .gid = o->gid,
			       .t0 = ed_now_ms()};
	if (vm->state != ED_RUNNING) {
		snprintf(j->why, sizeof(j->why), "%s is not running", vm->f.name);
		return -EINVAL;
	}
	int r = ed_snap_vm_dir(vm, j->vmdir, sizeof(j->vmdir));
	if (r) {
		ed_fmt(j->why, sizeof(j->why), "%s: %s", j->vmdir, strerror(-r));
		return r;
	}
	note_all(vm, j->vmdir);
	long long token = hk && hk->token ? (long long)hk->token(hk->arg, vm) : 0;
	snprintf(j->name, sizeof(j->name), "%lld-%llu", token, (unsigned long long)++vm->snap_seq);
	if (snprintf(j->dir, sizeof(j->dir), "%s/%s", j->vmdir, j->name) >= (int)sizeof(j->dir))
		return -ENAMETOOLONG;
	if (mkdir(j->dir, 0700) < 0 || chown(j->dir, o->uid, o->gid) < 0) {
		r = -errno;
		ed_fmt(j->why, sizeof(j->why), "%s: %s", j->dir, strerror(errno));
		return r;
	}
	snprintf(j->sock, sizeof(j->sock), "%s", vm->api_sock);
	j->rollback = vm->f.pol.resume == ED_RESUME_ROLLBACK && !ed_vmfile_all_ro(&vm->f);
	for (unsigned i = 0; j->rollback && i < vm->f.nr_drives; i++)
		if (!vm->f.drives[i].ro) {
			snprintf(j->drives[j->nr].src, PATH_MAX, "%s", vm->f.drives[i].path);
			ed_fmt(j->drives[j->nr].dst, sizeof(j->drives[0].dst), "%s/drive-%s",
			       j->dir, vm->f.drives[i].id);
			j->nr++;
		}
	return 0;
}

static void snap_write(struct snap_job *j)
{
	char *why = j->why;
	size_t whylen = sizeof(j->why);
	int r =
	    api(j->sock, "PATCH", "/vm", json_pack("{s:s}", "state", "Paused"), 10000, why, whylen);
	if (!r) {
		char sp[128], mp[128];
		snprintf(sp, sizeof(sp), "/snap/%s/state", j->name);
		snprintf(mp, sizeof(mp), "/snap/%s/mem", j->name);
		r = api(j->sock, "PUT", "/snapshot/create",
			json_pack("{s:s, s:s, s:s}", "snapshot_type", "Full", "snapshot_path", sp,
				  "mem_file_path", mp),
			600000, why, whylen);
	}
	/* written: the folder becomes root's, so nothing more is planted in
	 * it (ember, restoring it, only reads its own files there) */
	if (!r && (chown(j->dir, 0, 0) < 0 || chmod(j->dir, 0755) < 0)) {
		r = -errno;
		ed_fmt(why, whylen, "%s: %s", j->dir, strerror(errno));
	}
	for (unsigned i = 0; !r && i < j->nr; i++) {
		r = copy_file(j->drives[i].src, false, j->drives[i].dst, j->uid, j->gid);
		if (r)
			ed_fmt(why, whylen, "copy %s: %s", j->drives[i].src, strerror(-r));
	}
	/* the VM runs on whatever happened to its snapshot */
	if (!j->suspend) {
		char w2[256];
		int rr = api(j->sock, "PATCH", "/vm", json_pack("{s:s}", "state", "Resumed"), 10000,
			     w2, sizeof(w2));
		if (rr && !r) {
			r = rr;
			snprintf(why, whylen, "%s", w2);
		}
	}
	j->r = r;
}

static int snap_commit(struct snap_job *j)
{
	struct ed_vm *vm = j->vm;
	const struct ed_cluster_hooks *hk = ed_host_hooks(vm->h);
	char p[PATH_MAX + 80], q[PATH_MAX + 80];
	int r = j->r;
	if (!r && vm->pid != j->pid) {
		r = -ESRCH;
		snprintf(j->why, sizeof(j->why), "the VM's ember exited while it was taken");
	}
	if (!r) {
		char meta[128];
		int n = snprintf(meta, sizeof(meta), "{\"drives\": %s, \"suspend\": %s}\n",
				 j->rollback ? "true" : "false", j->suspend ? "true" : "false");
		snprintf(p, sizeof(p), "%s/meta", j->dir);
		r = ed_write_atomic(p, meta, (size_t)n);
		if (r)
			ed_fmt(j->why, sizeof(j->why), "%s: %s", p, strerror(-r));
	}
	if (!r) {
		if (hk && hk->snapshot_commit) {
			r = hk->snapshot_commit(hk->arg, vm, j->dir);
			if (r)
				snprintf(j->why, sizeof(j->why), "commit: %s", strerror(-r));
		} else {
			snprintf(q, sizeof(q), "%s/latest", j->vmdir);
			snprintf(p, sizeof(p), "%s\n", j->name);
			r = ed_write_atomic(q, p, strlen(p));
			if (r)
				ed_fmt(j->why, sizeof(j->why), "%s: %s", q, strerror(-r));
		}
	}
	if (r) {
		ed_rm_tree(j->dir); /* never a half-written snapshot */
		return r;
	}
	snprintf(vm->snap_dir, sizeof(vm->snap_dir), "%s", j->dir);
	vm->snap_at_ms = ed_now_ms();
	drop_others(j->vmdir, j->name);
	return 0;
}

int ed_snap_take(struct ed_vm *vm, bool suspend, char *dir, size_t dirlen, char *why, size_t whylen)
{
	if (vm->snap_job) {
		snprintf(why, whylen, "a snapshot of %s is being taken", vm->f.name);
		return -EBUSY;
	}
	struct snap_job *j = malloc(sizeof(*j));
	if (!j)
		return -ENOMEM;
	int r = snap_prepare(vm, suspend, j);
	if (!r) {
		snap_write(j);
		r = snap_commit(j);
	}
	snprintf(why, whylen, "%s", j->why);
	snprintf(dir, dirlen, "%s", j->dir);
	free(j);
	return r;
}

int ed_snap_latest(struct ed_vm *vm, char *buf, size_t len, struct ed_snapinfo *info)
{
	const struct ed_cluster_hooks *hk = ed_host_hooks(vm->h);
	char vmdir[PATH_MAX], p[PATH_MAX + 80], name[256] = "";
	memset(info, 0, sizeof(*info));
	int r = ed_snap_vm_dir(vm, vmdir, sizeof(vmdir));
	if (r)
		return r;
	if (hk && hk->snapshot_latest) {
		r = hk->snapshot_latest(hk->arg, vm, buf, len);
		if (r)
			return r;
	} else {
		snprintf(p, sizeof(p), "%s/latest", vmdir);
		FILE *f = fopen(p, "re");
		if (!f)
			return errno == ENOENT ? -ENOENT : -errno;
		if (!fgets(name, sizeof(name), f))
			name[0] = '\0';
		fclose(f);
		name[strcspn(name, "\n")] = '\0';
		if (!name[0] || strchr(name, '/') || name[0] == '.')
			return -EINVAL;
		note_seq(vm, name);
		if (snprintf(buf, len, "%s/%s", vmdir, name) >= (int)len)
			return -ENAMETOOLONG;
	}
	snprintf(p, sizeof(p), "%s/state", buf);
	if (access(p, R_OK))
		return -ENOENT;
	const char *base = strrchr(buf, '/');
	note_seq(vm, base ? base + 1 : buf);
	info->exists = true;
	snprintf(p, sizeof(p), "%s/meta", buf);
	FILE *f = fopen(p, "re");
	if (f) {
		char m[256] = "";
		if (fgets(m, sizeof(m), f))
			info->has_drives = strstr(m, "\"drives\": true") != NULL;
		fclose(f);
	}
	return 0;
}

int ed_snap_rollback(struct ed_vm *vm, const char *dir, char *why, size_t whylen)
{
	const struct ed_host_opts *o = ed_host_opts(vm->h);
	for (unsigned i = 0; i < vm->f.nr_drives; i++) {
		const struct ed_drive *d = &vm->f.drives[i];
		char src[PATH_MAX + 80], tmp[PATH_MAX + 16];
		if (d->ro)
			continue;
		snprintf(src, sizeof(src), "%s/drive-%s", dir, d->id);
		snprintf(tmp, sizeof(tmp), "%s.rollback", d->path);
		int r = copy_file(src, true, tmp, o->uid, o->gid);
		if (!r && rename(tmp, d->path) < 0)
			r = -errno;
		if (r) {
			unlink(tmp);
			snprintf(why, whylen, "roll %s back to %s: %s", d->path, src, strerror(-r));
			return r;
		}
	}
	return 0;
}

/* The periodic snapshot is written on a thread of its own: a large VM's
 * takes seconds, and the loop (the control API, the other VMs, systemd's
 * watchdog) never waits for it. */
static void periodic_done(void *arg)
{
	struct snap_job *j = arg;
	struct ed_vm *vm = j->vm;
	pthread_join(j->th, NULL);
	vm->snap_job = NULL;
	bool gone = vm->pid != j->pid; /* it exited (or was stopped) meanwhile */
	if (snap_commit(j))
		ed_event(vm->h, vm->f.name, gone ? "snapshot-dropped" : "snapshot-failed",
			 "%s%s", gone ? "its ember exited while it was taken: " : "", j->why);
	else
		ed_event(vm->h, vm->f.name, "snapshot", "%s (%llu ms)", j->dir,
			 (unsigned long long)(ed_now_ms() - j->t0));
	free(j);
	ed_snap_arm(vm);
	ed_host_vm_idle(vm);
}

static void *periodic_thread(void *arg)
{
	struct snap_job *j = arg;
	snap_write(j);
	while (ed_loop_post(ed_host_loop(j->vm->h), periodic_done, j)) {
		struct timespec ms = {.tv_nsec = 1000000}; /* out of memory: a moment */
		nanosleep(&ms, NULL);
	}
	return NULL;
}

static void periodic(void *arg)
{
	struct ed_vm *vm = arg;
	vm->snap_timer = 0;
	if (vm->state != ED_RUNNING || vm->snap_job)
		return;
	struct snap_job *j = malloc(sizeof(*j));
	if (!j) {
		ed_snap_arm(vm);
		return;
	}
	int r = snap_prepare(vm, false, j);
	if (!r && (r = -pthread_create(&j->th, NULL, periodic_thread, j)))
		snprintf(j->why, sizeof(j->why), "pthread_create: %s", strerror(-r));
	if (r) {
		if (j->dir[0] && r != -EINVAL)
			ed_rm_tree(j->dir);
		ed_event(vm->h, vm->f.name, "snapshot-failed", "%s", j->why);
		free(j);
		ed_snap_arm(vm);
		return;
	}
	vm->snap_job = j;
}

static void *suspend_thread(void *arg)
{
	snap_write(arg);
	return NULL;
}

void ed_snap_suspend_begin(struct ed_vm *vm)
{
	struct snap_job *j = malloc(sizeof(*j));
	if (!j)
		return; /* ed_snap_suspend_end() takes it the slow way */
	j->r = snap_prepare(vm, true, j);
	j->th = pthread_self(); /* nothing to join unless a thread takes it */
	if (!j->r) {
		pthread_t t;
		if (pthread_create(&t, NULL, suspend_thread, j) == 0)
			j->th = t;
		else
			snap_write(j); /* no thread: here, now */
	}
	vm->snap_job = j;
}

int ed_snap_suspend_end(struct ed_vm *vm, char *dir, size_t dirlen, char *why, size_t whylen)
{
	struct snap_job *j = vm->snap_job;
	if (!j)
		return ed_snap_take(vm, true, dir, dirlen, why, whylen);
	if (!pthread_equal(j->th, pthread_self()))
		pthread_join(j->th, NULL);
	vm->snap_job = NULL;
	int r = j->r ? j->r : snap_commit(j);
	if (r && j->dir[0] && j->r != -EINVAL)
		ed_rm_tree(j->dir);
	snprintf(why, whylen, "%s", j->why);
	snprintf(dir, dirlen, "%s", j->dir);
	free(j);
	return r;
}

void ed_snap_wait(struct ed_vm *vm)
{
	struct snap_job *j = vm->snap_job;
	if (!j)
		return;
	/* its periodic_done() is posted and never runs: the loop has ended */
	pthread_join(j->th, NULL);
	vm->snap_job = NULL;
	ed_rm_tree(j->dir);
	free(j);
}

void ed_snap_arm(struct ed_vm *vm)
{
	struct ed_loop *l = ed_host_loop(vm->h);
	if (vm->snap_timer)
		ed_loop_cancel(l, vm->snap_timer);
	vm->snap_timer = 0;
	if (vm->f.pol.snapshot_ms && vm->state == ED_RUNNING)
		vm->snap_timer = ed_loop_timer(l, vm->f.pol.snapshot_ms, periodic, vm);
}
