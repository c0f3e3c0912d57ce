/* The local supervisor: the VMs of one host, their life cycle (start,
 * exit, restart by policy, stop), host shutdown and start.  Everything
 * here runs on the loop but ed_host_fence(). */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ha/emberd/local.h"

/* a VM whose API has not answered this long after its launch is killed */
#define ED_READY_TIMEOUT_MS 60000

static const char *const state_names[] = {"stopped", "starting",  "running", "backoff",
					  "failed",  "suspended", "remote",  "unplaced"};

const char *ed_state_name(enum ed_state s)
{
	return (unsigned)s < sizeof(state_names) / sizeof(state_names[0]) ? state_names[s] : "?";
}

const char *ed_vm_name(const struct ed_vm *vm)
{
	return vm->f.name;
}
enum ed_state ed_vm_state(const struct ed_vm *vm)
{
	return vm->state;
}
uint64_t ed_vm_mem_bytes(const struct ed_vm *vm)
{
	return vm->f.mem_bytes;
}
unsigned ed_vm_vcpus(const struct ed_vm *vm)
{
	return vm->f.vcpus;
}
const char *const *ed_vm_hosts_must(const struct ed_vm *vm)
{
	return (const char *const *)vm->f.hosts;
}
const char *const *ed_vm_hosts_avoid(const struct ed_vm *vm)
{
	return (const char *const *)vm->f.avoid;
}
const char *const *ed_vm_hosts_prefer(const struct ed_vm *vm)
{
	return (const char *const *)vm->f.prefer;
}
const char *const *ed_vm_hosts_prefer_avoid(const struct ed_vm *vm)
{
	return (const char *const *)vm->f.prefer_avoid;
}
const char *ed_vm_affinity(const struct ed_vm *vm)
{
	return vm->f.affinity;
}
const char *ed_vm_anti_affinity(const struct ed_vm *vm)
{
	return vm->f.anti_affinity;
}
struct ed_vm *ed_host_first(struct ed_host *h)
{
	return h->vms;
}
struct ed_vm *ed_host_next(struct ed_host *h, struct ed_vm *vm)
{
	(void)h;
	return vm->next;
}
struct ed_loop *ed_host_loop(struct ed_host *h)
{
	return h->l;
}
const char *ed_host_name(const struct ed_host *h)
{
	return h->name;
}
struct ed_events *ed_host_events(struct ed_host *h)
{
	return h->ev;
}
const struct ed_host_opts *ed_host_opts(const struct ed_host *h)
{
	return &h->o;
}
bool ed_host_fenced(const struct ed_host *h)
{
	return atomic_load(&h->fenced);
}

const struct ed_cluster_hooks *ed_host_hooks(const struct ed_host *h)
{
	return h->have_hooks ? &h->hooks : NULL;
}

void ed_host_set_cluster(struct ed_host *h, const struct ed_cluster_hooks *hooks)
{
	h->have_hooks = hooks != NULL;
	if (hooks)
		h->hooks = *hooks;
}

struct ed_vm *ed_host_find(struct ed_host *h, const char *name)
{
	for (struct ed_vm *vm = h->vms; vm; vm = vm->next)
		if (!strcmp(vm->f.name, name))
			return vm;
	return NULL;
}

void ed_vm_set_state(struct ed_vm *vm, enum ed_state s, const char *reason)
{
	vm->state = s;
	snprintf(vm->reason, sizeof(vm->reason), "%s", reason ? reason : "");
}

void ed_vm_set_remote(struct ed_vm *vm, const char *host)
{
	snprintf(vm->remote_host, sizeof(vm->remote_host), "%s", host ? host : "");
	char why[ED_NAME_MAX + 32];
	snprintf(why, sizeof(why), "runs on %s", host ? host : "another host");
	ed_vm_set_state(vm, ED_REMOTE, why);
}

void ed_vm_set_unplaced(struct ed_vm *vm, const char *why)
{
	ed_vm_set_state(vm, ED_UNPLACED, why);
}

int ed_host_vm_state_dir(struct ed_host *h, const char *name, char *buf, size_t len)
{
	if (snprintf(buf, len, "%s/vms/%s", h->o.state_dir, name) >= (int)len)
		return -ENAMETOOLONG;
	if (mkdir(buf, 0750) < 0 && errno != EEXIST)
		return -errno;
	return 0;
}

static void marker_path(struct ed_vm *vm, char *buf, size_t len)
{
	snprintf(buf, len, "%s/vms/%s/suspended", vm->h->o.state_dir, vm->f.name);
}

/* The suspend marker's snapshot folder into buf: true when there is one. */
static bool suspended_snap(struct ed_vm *vm, char *buf, size_t len)
{
	char p[PATH_MAX];
	marker_path(vm, p, sizeof(p));
	FILE *f = fopen(p, "re");
	if (!f)
		return false;
	bool ok = fgets(buf, (int)len, f) != NULL;
	fclose(f);
	buf[strcspn(buf, "\n")] = '\0';
	return ok && buf[0] == '/';
}

/* ---- start, readiness ---- */

static void ready_poll(void *arg);

static void cancel_timers(struct ed_vm *vm)
{
	uint64_t *ts[] = {&vm->ready_timer, &vm->restart_timer, &vm->snap_timer, &vm->kill_timer};
	for (size_t i = 0; i < 4; i++)
		if (*ts[i]) {
			ed_loop_cancel(vm->h->l, *ts[i]);
			*ts[i] = 0;
		}
}

int ed_vm_start(struct ed_host *h, struct ed_vm *vm, enum ed_how how, const char *cause, char *why,
		size_t whylen)
{
	char snap[PATH_MAX], dwhy[ED_ERR_MAX];
	if (vm->pid > 0) {
		snprintf(why, whylen, "%s is %s", vm->f.name, ed_state_name(vm->state));
		return -EALREADY;
	}
	if (ed_host_fenced(h)) {
		snprintf(why, whylen, "this host is fenced");
		return -EPERM;
	}
	if (h->have_hooks && h->hooks.may_run && !h->hooks.may_run(h->hooks.arg, vm, why, whylen))
		return -EPERM;
	if (vm->restart_timer) {
		ed_loop_cancel(h->l, vm->restart_timer);
		vm->restart_timer = 0;
	}
	if (vm->changed) { /* the file changed while it ran: now it counts */
		struct ed_vmfile f;
		char err[ED_ERR_MAX];
		if (!ed_host_load_file(h, vm->f.file, &f, err, sizeof(err))) {
			ed_vmfile_free(&vm->f);
			vm->f = f;
		} else {
			ed_event(h, vm->f.name, "config-error", "%s (the old file's settings stay)",
				 err);
		}
		vm->changed = false;
	}
	struct ed_snapinfo si = {0};
	enum ed_way way;
	/* (a suspend snapshot that would not load is not tried again) */
	bool from_marker = how != ED_HOW_BOOT && !vm->resume_failed_boot &&
			   suspended_snap(vm, snap, sizeof(snap));
	if (from_marker) {
		si.exists = si.suspend = true;
		way = ED_WAY_RESUME;
		snprintf(dwhy, sizeof(dwhy), "suspended at host shutdown");
	} else {
		int r = ed_snap_latest(vm, snap, sizeof(snap), &si);
		if (r && r != -ENOENT) /* as none: boot only if that loses nothing */
			ed_event(h, vm->f.name, "snapshot-failed", "latest snapshot unreadable: %s",
				 strerror(-r));
		way = ed_decide_start(how, vm->f.pol.resume, ed_vmfile_all_ro(&vm->f), &si, dwhy,
				      sizeof(dwhy));
		if (vm->resume_failed_boot)
			way = ED_WAY_BOOT;
	}
	vm->resume_failed_boot = false;
	if (way == ED_WAY_FAIL) {
		snprintf(why, whylen, "cannot resume %s: %s", vm->f.name, dwhy);
		return -ENOENT;
	}
	if (way == ED_WAY_ROLLBACK) {
		int r = ed_snap_rollback(vm, snap, why, whylen);
		if (r)
			return r;
	}
	bool resume = way != ED_WAY_BOOT;
	int r = ed_proc_launch(vm, resume ? snap : NULL, why, whylen);
	if (r)
		return r;
	vm->loaded = resume;
	vm->stopping = false;
	vm->started_ms = ed_now_ms();
	vm->running_ms = 0;
	vm->up_kind = from_marker		  ? "resumed"
		      : resume			  ? "restored"
		      : !strcmp(cause, "restart") ? "restarted"
						  : "started";
	ed_fmt(vm->up_detail, sizeof(vm->up_detail), "%s%s%s (%s; pid %d)",
	       resume ? "from " : "booted", resume ? snap : "", "", dwhy, (int)vm->pid);
	ed_vm_set_state(vm, ED_STARTING, NULL);
	vm->ready_deadline_ms = ed_now_ms() + ED_READY_TIMEOUT_MS;
	vm->ready_timer = ed_loop_timer(h->l, 1, ready_poll, vm);
	return 0;
}

static void ready_poll(void *arg)
{
	struct ed_vm *vm = arg;
	vm->ready_timer = 0;
	if (vm->state != ED_STARTING || vm->pid <= 0)
		return;
	if (!ed_proc_answers(vm)) {
		if (ed_now_ms() < vm->ready_deadline_ms) {
			vm->ready_timer = ed_loop_timer(vm->h->l, 1, ready_poll, vm);
		} else { /* stuck: its exit then goes through the policy */
			ed_event(vm->h, vm->f.name, "start-timeout",
				 "its API did not answer in %d s: killed",
				 ED_READY_TIMEOUT_MS / 1000);
			syscall(SYS_pidfd_send_signal, vm->pidfd, SIGKILL, NULL, 0);
		}
		return;
	}
	vm->running_ms = ed_now_ms();
	/* From now on its API is reached through its own root: a link the
	 * jailed uid puts at api.sock then resolves inside the jail, never
	 * to a socket of the host. */
	snprintf(vm->api_sock, sizeof(vm->api_sock), "/proc/%d/root/api.sock", (int)vm->pid);
	ed_vm_set_state(vm, ED_RUNNING, NULL);
	ed_event(vm->h, vm->f.name, vm->up_kind, "%s", vm->up_detail);
	/* it has run since (resumed or booted): the suspend snapshot is an
	 * old moment now */
	char p[PATH_MAX];
	marker_path(vm, p, sizeof(p));
	unlink(p);
	ed_snap_arm(vm);
}

static void restart_due(void *arg)
{
	struct ed_vm *vm = arg;
	char why[ED_ERR_MAX];
	vm->restart_timer = 0;
	if (vm->state != ED_BACKOFF)
		return;
	vm->restarts++;
	int r = ed_vm_start(vm->h, vm, ED_HOW_POLICY, "restart", why, sizeof(why));
	if (r == -EPERM) {
		ed_vm_set_state(vm, ED_STOPPED, why);
	} else if (r) {
		ed_vm_set_state(vm, ED_FAILED, why);
		ed_event(vm->h, vm->f.name, "failed", "restart: %s", why);
		if (vm->h->have_hooks && vm->h->hooks.vm_stopped)
			vm->h->hooks.vm_stopped(vm->h->hooks.arg, vm);
	}
}

/* ---- exit ---- */

static void drop_if_removed(struct ed_host *h, struct ed_vm *vm)
{
	if (!vm->remove || vm->snap_job) /* a snapshot thread holds it: at its end */
		return;
	for (struct ed_vm **p = &h->vms; *p; p = &(*p)->next)
		if (*p == vm) {
			pthread_mutex_lock(&h->mu);
			*p = vm->next;
			pthread_mutex_unlock(&h->mu);
			cancel_timers(vm);
			ed_vmfile_free(&vm->f);
			free(vm);
			return;
		}
}

void ed_host_vm_idle(struct ed_vm *vm)
{
	if (vm->pid <= 0)
		drop_if_removed(vm->h, vm);
}

void ed_host_vm_exited(struct ed_vm *vm)
{
	struct ed_host *h = vm->h;
	int code, sig;
	uint64_t now = ed_now_ms();
	bool was_starting = vm->state == ED_STARTING;
	ed_proc_reap(vm, false, &code, &sig);
	cancel_timers(vm);
	vm->have_exit = true;
	vm->exit_code = code;
	vm->exit_signal = sig;
	vm->exit_at_ms = now;
	if (sig)
		ed_event(h, vm->f.name, "exited", "killed by signal %d", sig);
	else
		ed_event(h, vm->f.name, "exited", "exit code %d", code);
	if (vm->moving) { /* a live migration's: move_vm.c decides */
		ed_vm_move_exited(vm);
		drop_if_removed(h, vm);
		return;
	}
	if (vm->stopping) {
		vm->stopping = false;
		ed_vm_set_state(vm, ED_STOPPED, "stopped");
		ed_event(h, vm->f.name, "stopped", "as asked");
		if (h->have_hooks && h->hooks.vm_stopped)
			h->hooks.vm_stopped(h->hooks.arg, vm);
		if (vm->restart_after_stop) {
			char why[ED_ERR_MAX];
			vm->restart_after_stop = false;
			if (ed_vm_start(h, vm, ED_HOW_POLICY, "restart", why, sizeof(why)))
				ed_event(h, vm->f.name, "failed", "restart: %s", why);
		}
		drop_if_removed(h, vm);
		return;
	}
	/* a snapshot that would not load: ember ends at once, 121/122 */
	if (was_starting && vm->loaded && (code == 121 || code == 122)) {
		if (ed_vmfile_all_ro(&vm->f)) {
			ed_event(
			    h, vm->f.name, "snapshot-failed",
			    "the snapshot did not load (exit %d): booting, which loses nothing "
			    "(read-only drives)",
			    code);
			vm->resume_failed_boot = true;
		} else {
			ed_vm_set_state(vm, ED_FAILED,
					"the snapshot did not load, and a boot would "
					"lose the memory that matches its drives");
			ed_event(h, vm->f.name, "failed", "%s (exit %d)", vm->reason, code);
			if (h->have_hooks && h->hooks.vm_stopped)
				h->hooks.vm_stopped(h->hooks.arg, vm);
			drop_if_removed(h, vm);
			return;
		}
	}
	uint64_t ran = vm->running_ms ? now - vm->running_ms : 0, delay;
	char why[ED_ERR_MAX];
	enum ed_verdict v = ed_policy_on_exit(&vm->f.pol, &vm->win, now, ran, !sig && code == 0,
					      false, &delay, why, sizeof(why));
	if (vm->resume_failed_boot && v != ED_V_RESTART) {
		v = ED_V_RESTART; /* the boot the failed load owes */
		delay = 0;
	}
	if (v == ED_V_RESTART) {
		ed_vm_set_state(vm, ED_BACKOFF, why);
		ed_event(h, vm->f.name, "backoff", "%s", why);
		vm->restart_timer = ed_loop_timer(h->l, delay, restart_due, vm);
		if (!vm->restart_timer)
			restart_due(vm);
	} else if (v == ED_V_STOP) {
		ed_vm_set_state(vm, ED_STOPPED, why);
		ed_event(h, vm->f.name, "stopped", "%s", why);
		/* its policy ended it: a survivor must not start it after a failover */
		if (h->have_hooks && h->hooks.vm_stopped)
			h->hooks.vm_stopped(h->hooks.arg, vm);
	} else {
		ed_vm_set_state(vm, ED_FAILED, why);
		ed_event(h, vm->f.name, "failed", "%s", why);
		if (h->have_hooks && h->hooks.vm_stopped)
			h->hooks.vm_stopped(h->hooks.arg, vm);
	}
	drop_if_removed(h, vm);
}

/* ---- stop, restart, snapshot ---- */

static void kill_due(void *arg)
{
	struct ed_vm *vm = arg;
	vm->kill_timer = 0;
	if (vm->pidfd >= 0)
		syscall(SYS_pidfd_send_signal, vm->pidfd, SIGKILL, NULL, 0);
}

int ed_vm_stop(struct ed_host *h, struct ed_vm *vm, uint64_t grace_ms, const char *cause, char *why,
	       size_t whylen)
{
	(void)why;
	(void)whylen;
	if (vm->pid <= 0) {
		cancel_timers(vm);
		char r[64];
		snprintf(r, sizeof(r), "stopped (%s)", cause);
		if (vm->state != ED_STOPPED)
			ed_event(h, vm->f.name, "stopped", "%s", cause);
		ed_vm_set_state(vm, ED_STOPPED, r);
		return 0;
	}
	vm->stopping = true;
	/* ember has no SIGTERM handler: SIGTERM ends it at once; the grace
	 * covers a jailer still setting up */
	syscall(SYS_pidfd_send_signal, vm->pidfd, grace_ms ? SIGTERM : SIGKILL, NULL, 0);
	if (grace_ms && !vm->kill_timer)
		vm->kill_timer = ed_loop_timer(h->l, grace_ms, kill_due, vm);
	return 0;
}

int ed_vm_restart(struct ed_host *h, struct ed_vm *vm, uint64_t grace_ms, const char *cause,
		  char *why, size_t whylen)
{
	if (vm->pid <= 0)
		return ed_vm_start(h, vm, ED_HOW_POLICY, cause, why, whylen);
	vm->restart_after_stop = true;
	return ed_vm_stop(h, vm, grace_ms, cause, why, whylen);
}

int ed_vm_snapshot(struct ed_host *h, struct ed_vm *vm, char *dir, size_t dirlen, uint64_t *ms,
		   char *why, size_t whylen)
{
	uint64_t t0 = ed_now_ms();
	int r = ed_snap_take(vm, false, dir, dirlen, why, whylen);
	*ms = ed_now_ms() - t0;
	if (r)
		ed_event(h, vm->f.name, "snapshot-failed", "%s", why);
	else
		ed_event(h, vm->f.name, "snapshot", "%s (%llu ms, asked)", dir,
			 (unsigned long long)*ms);
	return r;
}

const char *ed_vm_console_path(const struct ed_vm *vm)
{
	static char p[PATH_MAX];
	snprintf(p, sizeof(p), "%s/vms/%s/console.log", vm->h->o.state_dir, vm->f.name);
	return p;
}

/* ---- host start and shutdown ---- */

/* Start vm by its policy at emberd's start or after a reload; a start
 * that fails makes it ED_FAILED with an event.  Running already, or the
 * cluster's to start (may_run said no: another host owns it, or not yet
 * claimed) is not a failure. */
static void autostart(struct ed_host *h, struct ed_vm *vm, const char *cause)
{
	char why[ED_ERR_MAX];
	int r = ed_vm_start(h, vm, ED_HOW_POLICY, cause, why, sizeof(why));
	if (r && r != -EALREADY && r != -EPERM && vm->state != ED_STOPPED) {
		ed_vm_set_state(vm, ED_FAILED, why);
		ed_event(h, vm->f.name, "failed", "start: %s", why);
	}
}

void ed_host_start_fresh(struct ed_host *h)
{
	for (struct ed_vm *vm = h->vms; vm; vm = vm->next) {
		if (!vm->fresh)
			continue;
		vm->fresh = false;
		if (vm->f.pol.autostart)
			autostart(h, vm, "autostart");
	}
}

void ed_host_start_all(struct ed_host *h)
{
	for (struct ed_vm *vm = h->vms; vm; vm = vm->next) {
		char snap[PATH_MAX];
		vm->fresh = false;
		bool susp = suspended_snap(vm, snap, sizeof(snap));
		if (susp || vm->f.pol.autostart)
			autostart(h, vm, susp ? "resume" : "autostart");
	}
}

void ed_host_suspend_all(struct ed_host *h)
{
	/* every VM's snapshot written at once (each on a thread: the host's
	 * stop timeout covers the slowest, not the sum), then each committed */
	for (struct ed_vm *vm = h->vms; vm; vm = vm->next) {
		ed_snap_wait(vm);
		if (vm->pid > 0 && vm->state == ED_RUNNING)
			ed_snap_suspend_begin(vm);
	}
	for (struct ed_vm *vm = h->vms; vm; vm = vm->next) {
		char dir[PATH_MAX], why[ED_ERR_MAX], p[PATH_MAX];
		if (vm->pid <= 0)
			continue;
		bool ok = vm->state == ED_RUNNING &&
			  !ed_snap_suspend_end(vm, dir, sizeof(dir), why, sizeof(why));
		if (!ok && vm->state != ED_RUNNING)
			snprintf(why, sizeof(why), "it was %s", ed_state_name(vm->state));
		syscall(SYS_pidfd_send_signal, vm->pidfd, SIGKILL, NULL, 0);
		int code, sig;
		ed_proc_reap(vm, true, &code, &sig); /* waitid blocks: SIGKILL ends it */
		cancel_timers(vm);
		marker_path(vm, p, sizeof(p));
		if (ok) {
			char line[PATH_MAX + 2];
			int n = snprintf(line, sizeof(line), "%s\n", dir);
			if (ed_write_atomic(p, line, (size_t)n))
				ok = false;
		}
		if (ok) {
			ed_vm_set_state(vm, ED_SUSPENDED, "suspended at host shutdown");
			ed_event(h, vm->f.name, "suspended", "%s", dir);
		} else {
			ed_vm_set_state(vm, ED_STOPPED, why);
			ed_event(h, vm->f.name, "failed", "suspend: %s; it boots at the next start",
				 why);
		}
	}
}

/* ---- fencing ---- */

static void fenced_events(void *arg)
{
	struct ed_host *h = arg;
	for (struct ed_vm *vm = h->vms; vm; vm = vm->next)
		if (vm->pid > 0 || vm->state == ED_BACKOFF) {
			vm->stopping = true;
			if (vm->restart_timer) {
				ed_loop_cancel(h->l, vm->restart_timer);
				vm->restart_timer = 0;
			}
			ed_event(h, vm->f.name, "fenced", "killed: this host lost its lease");
		}
}

void ed_host_fence(struct ed_host *h, const char *reason)
{
	atomic_store(&h->fenced, true);
	fprintf(stderr, "<3>emberd: FENCED: %s: killing every VM\n", reason);
	/* another thread: the list and the pidfds under mu (a launch that
	 * passed the fenced check before the store kills its own, proc.c) */
	pthread_mutex_lock(&h->mu);
	for (struct ed_vm *vm = h->vms; vm; vm = vm->next)
		if (vm->pidfd >= 0)
			syscall(SYS_pidfd_send_signal, vm->pidfd, SIGKILL, NULL, 0);
	pthread_mutex_unlock(&h->mu);
	if (ed_loop_post(h->l, fenced_events, h)) {
	}
}

void ed_host_unfence(struct ed_host *h)
{
	atomic_store(&h->fenced, false);
	ed_event(h, NULL, "unfenced", "VMs may start again");
}
