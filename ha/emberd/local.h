/* ha/emberd/: the local supervisor's own parts (host.c, vmfile.c,
 * policy.c, proc.c, snap.c, events.c), private to them and to the unit
 * tests of the pure ones (tests/unit/test_ha_policy.c, test_ha_vmfile.c).
 * emberd.h is the contract with the other parts (ctl.c, cluster.c). */
#ifndef EMBER_HA_EMBERD_LOCAL_H
#define EMBER_HA_EMBERD_LOCAL_H

#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "ha/emberd/emberd.h"

/* snprintf where a cut is acceptable: a message, or a path whose folder
 * was checked to fit (events.c). */
__attribute__((format(printf, 3, 4))) void ed_fmt(char *buf, size_t len, const char *fmt, ...);

#define ED_MAX_DRIVES 16
#define ED_MAX_HOSTS 16
#define ED_ID_MAX 32 /* ember's device names: [A-Za-z0-9_], CFG_NAME_MAX */

/* ---- policy.c: pure ---- */

enum ed_restart { ED_RESTART_ON_FAILURE, ED_RESTART_ALWAYS, ED_RESTART_NEVER };
enum ed_resume { ED_RESUME_AUTO, ED_RESUME_NEVER, ED_RESUME_ROLLBACK };

struct ed_policy {
	enum ed_restart restart;
	unsigned attempts;
	uint64_t interval_ms, delay_ms, max_delay_ms, snapshot_ms;
	enum ed_resume resume;
	bool autostart;
};

void ed_policy_defaults(struct ed_policy *p);
const char *ed_restart_name(enum ed_restart r);
const char *ed_resume_name(enum ed_resume r);

/* The restart window: restarts counted since window_ms. */
struct ed_window {
	uint64_t start_ms;
	unsigned count;
};

enum ed_verdict { ED_V_RESTART, ED_V_STOP, ED_V_FAIL };

/* A VM's ember exited at now_ms after running ran_ms; clean: its exit code
 * was 0; asked: we asked it to stop.  ED_V_RESTART with *delay_ms (and the
 * window counted), ED_V_STOP (not a failure: leave it stopped), or
 * ED_V_FAIL (the policy gives up); why says which rule decided. */
enum ed_verdict ed_policy_on_exit(const struct ed_policy *p, struct ed_window *w, uint64_t now_ms,
				  uint64_t ran_ms, bool clean, bool asked, uint64_t *delay_ms,
				  char *why, size_t whylen);

/* How a start comes up, decided from what the snapshot holds. */
enum ed_way { ED_WAY_BOOT, ED_WAY_RESUME, ED_WAY_ROLLBACK, ED_WAY_FAIL };

struct ed_snapinfo {
	bool exists;	 /* a committed snapshot */
	bool suspend;	 /* taken at host shutdown, and the VM has not run since */
	bool has_drives; /* the writable drives were captured with it */
};

/* The start decision (pure): never a memory image with a disk from
 * another moment.  how: the caller's wish; all_ro: every drive read-only. */
enum ed_way ed_decide_start(enum ed_how how, enum ed_resume resume, bool all_ro,
			    const struct ed_snapinfo *s, char *why, size_t whylen);

/* "100ms", "2s", "1m", "1h", "0" -> ms.  0 or -EINVAL. */
__attribute__((warn_unused_result)) int ed_parse_duration(const char *s, uint64_t *ms);

/* ---- vmfile.c ---- */

struct ed_drive {
	char id[ED_ID_MAX + 1];
	char section[ED_ID_MAX + 8]; /* "drive.ID" or "block.ID", as written */
	char path[PATH_MAX];	     /* absolute, on the host */
	bool ro;
};

struct ed_vmfile {
	char file[PATH_MAX]; /* the VM file */
	char name[ED_NAME_MAX + 1];
	uint64_t mem_bytes;
	unsigned vcpus;
	char kernel[PATH_MAX], initrd[PATH_MAX]; /* absolute; initrd "" when none */
	struct ed_drive drives[ED_MAX_DRIVES];
	unsigned nr_drives;
	struct ed_policy pol;
	char *hosts[ED_MAX_HOSTS + 1], *avoid[ED_MAX_HOSTS + 1]; /* NULL-terminated */
	uint64_t mtime_ns, size; /* to tell a changed file at reload */
};

/* Parse path's [emberd] keys and the ember keys emberd needs into *f
 * (its own: ed_vmfile_free).  0, or -EINVAL with "FILE:LINE: [section]
 * key: why" in err (-errno when unreadable). */
__attribute__((warn_unused_result)) int ed_vmfile_parse(const char *path, struct ed_vmfile *f,
							char *err, size_t errlen);
void ed_vmfile_free(struct ed_vmfile *f);
/* Write the jail's copy of f's file to out: [emberd] left out, paths
 * rewritten to their jail paths (/vm/kernel, /vm/initrd, /vm/drive-ID),
 * the serial on stdout (the console log).  0 or -errno with err. */
__attribute__((warn_unused_result)) int
ed_vmfile_write_jail(const struct ed_vmfile *f, const char *out, char *err, size_t errlen);
bool ed_vmfile_all_ro(const struct ed_vmfile *f);

/* ---- events.c ---- */

struct ed_events;
__attribute__((warn_unused_result)) int ed_events_new(struct ed_events **e, const char *log_path,
						      const char *host);
void ed_events_free(struct ed_events *e);
struct ed_events *ed_host_events(struct ed_host *h);

/* ---- a VM, as host.c, proc.c and snap.c share it ---- */

struct ed_vm {
	struct ed_host *h;
	struct ed_vmfile f;
	bool changed; /* the file changed: re-read before the next start */
	bool remove;  /* the file is gone: drop once it is down */
	bool fresh;   /* added by the last reload: autostarts at ed_host_start_fresh */
	enum ed_state state;
	char reason[ED_ERR_MAX];
	char remote_host[ED_NAME_MAX + 1];
	/* the running process */
	pid_t pid;
	int pidfd;
	char jail_id[ED_NAME_MAX + 1];
	char jail_dir[PATH_MAX]; /* <base>/<exec name>/<name> */
	char api_sock[PATH_MAX];
	uint64_t started_ms, running_ms;
	uint64_t ready_timer, restart_timer, snap_timer, kill_timer;
	const char *up_kind; /* event once running: "started", "restored"... */
	char up_detail[ED_ERR_MAX];
	bool stopping;		  /* we asked it to stop */
	enum ed_state stop_state; /* what it becomes once down */
	bool loaded;		  /* resumed from a snapshot */
	bool resume_failed_boot;  /* that resume failed at once: boot if lossless */
	/* history */
	unsigned restarts;
	struct ed_window win;
	bool have_exit;
	int exit_code, exit_signal;
	uint64_t exit_at_ms;
	char snap_dir[PATH_MAX]; /* committed latest, "" none */
	uint64_t snap_at_ms;
	uint64_t snap_seq;
	bool restart_after_stop;   /* ed_vm_restart: start again once down */
	struct snap_job *snap_job; /* a periodic snapshot being written (snap.c) */
	uint64_t ready_deadline_ms;
	struct ed_vm *next;
};

/* ---- host.c internals the others call ---- */

struct ed_host_opts {
	const char *vm_dir, *state_dir, *snap_dir, *host, *ember, *jailer, *jail_base;
	uid_t uid;
	gid_t gid;
};

struct ed_host {
	struct ed_loop *l;
	struct ed_host_opts o;
	char name[ED_NAME_MAX + 1];
	struct ed_events *ev;
	struct ed_cluster_hooks hooks;
	bool have_hooks;
	atomic_bool fenced;
	/* The loop alone writes the VM list and the VMs' pidfds; it takes mu
	 * for those writes, and ed_host_fence() (another thread) for reading
	 * them, so a fence never walks a freed VM or signals a reused fd. */
	pthread_mutex_t mu;
	struct ed_vm *vms; /* name order */
};

/* Read and check one VM file (ours, then ember's dry run): 0 with *f, or
 * -EINVAL with err (reload.c). */
__attribute__((warn_unused_result)) int ed_host_load_file(struct ed_host *h, const char *path,
							  struct ed_vmfile *f, char *err,
							  size_t errlen);

__attribute__((warn_unused_result)) int ed_host_new(struct ed_host **h, struct ed_loop *l,
						    const struct ed_host_opts *o, char *err,
						    size_t errlen);
/* Start every VM as emberd starts: suspended ones resume, the others
 * autostart by policy. */
void ed_host_start_all(struct ed_host *h);

/* Host shutdown: suspend every running VM to a snapshot. */
void ed_host_suspend_all(struct ed_host *h);
void ed_host_free(struct ed_host *h);
const struct ed_host_opts *ed_host_opts(const struct ed_host *h);
const struct ed_cluster_hooks *ed_host_hooks(const struct ed_host *h);
/* STATE/vms/NAME (made), into buf. */
__attribute__((warn_unused_result)) int ed_host_vm_state_dir(struct ed_host *h, const char *name,
							     char *buf, size_t len);
void ed_vm_set_state(struct ed_vm *vm, enum ed_state s, const char *reason);
/* vm's pidfd is readable: its ember exited (proc.c calls it). */
void ed_host_vm_exited(struct ed_vm *vm);
/* vm's snapshot job ended: a VM removed meanwhile is dropped now. */
void ed_host_vm_idle(struct ed_vm *vm);

/* ---- proc.c ---- */

/* Stage the jail and launch vm's ember through the jailer: a boot when
 * snap_dir is NULL, else a restore of that snapshot (its host folder).
 * 0 (pid, pidfd filled; the loop watches it) or -errno with why. */
__attribute__((warn_unused_result)) int ed_proc_launch(struct ed_vm *vm, const char *snap_dir,
						       char *why, size_t whylen);
/* Reap vm's exited ember (its pidfd readable): the exit code or signal,
 * then the jail's mounts detached and its folder removed (now: at once;
 * else renamed now, removed later on the loop). */
void ed_proc_reap(struct ed_vm *vm, bool now, int *code, int *sig);
/* Whether vm's API socket answers GET /ember/status now. */
bool ed_proc_answers(struct ed_vm *vm);
/* Remove a jail's mounts and folder (a stale one before a start): 0,
 * -EBUSY when its lock is held (a live jail: left alone), or -errno when
 * a mount would not go (the folder is then kept). */
__attribute__((warn_unused_result)) int ed_proc_clean_jail(const char *jail_dir);
/* The jail folder of vm (<base>/<exec name>/<name>) into vm->jail_dir. */
void ed_proc_jail_path(struct ed_vm *vm);

/* ---- snap.c ---- */

/* Snapshot a running vm: pause, write D, resume (unless suspend: then it
 * stays paused for the kill), commit.  0 with D's folder in dir, or
 * -errno with why (the half-written folder is gone). */
__attribute__((warn_unused_result)) int ed_snap_take(struct ed_vm *vm, bool suspend, char *dir,
						     size_t dirlen, char *why, size_t whylen);
/* The VM's latest committed snapshot folder into buf and what it holds:
 * 0, -ENOENT (none) or -errno. */
__attribute__((warn_unused_result)) int ed_snap_latest(struct ed_vm *vm, char *buf, size_t len,
						       struct ed_snapinfo *info);
/* Copy the drives captured in snapshot folder dir back over vm's drive
 * files (temp + rename).  0 or -errno with why. */
__attribute__((warn_unused_result)) int ed_snap_rollback(struct ed_vm *vm, const char *dir,
							 char *why, size_t whylen);
/* The VM's snapshot folder on the host: <snap-dir>/<name> (made). */
__attribute__((warn_unused_result)) int ed_snap_vm_dir(struct ed_vm *vm, char *buf, size_t len);
/* Arm (or re-arm) the periodic snapshot timer of a running vm.  Its
 * snapshots are written on a thread of their own (vm->snap_job while one
 * is); ed_snap_take() meanwhile is -EBUSY. */
void ed_snap_arm(struct ed_vm *vm);
/* After the loop has ended: wait for vm's periodic snapshot being written,
 * and drop it (it was never committed). */
void ed_snap_wait(struct ed_vm *vm);
/* Host shutdown: write a running vm's suspend snapshot on a thread (it
 * stays paused after), so that every VM's is written at once; then
 * ed_snap_suspend_end() waits for it and commits it: 0 with dir, or
 * -errno with why (nothing of it left). */
void ed_snap_suspend_begin(struct ed_vm *vm);
__attribute__((warn_unused_result)) int ed_snap_suspend_end(struct ed_vm *vm, char *dir,
							  size_t dirlen, char *why,
							  size_t whylen);
/* Remove dir and all below it, following no link and crossing no mount
 * (the caller has detached a jail's). */
void ed_rm_tree(const char *dir);
/* Write path with data: temp + fsync + rename + folder fsync (durable:
 * false skips the syncs, for files remade at every start).  0 or -errno. */
__attribute__((warn_unused_result)) int ed_write_file(const char *path, const char *data,
						      size_t len, bool durable);
#define ed_write_atomic(p, d, l) ed_write_file(p, d, l, true)

#endif
