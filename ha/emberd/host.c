/* The local supervisor: the VMs of one host, their life cycle (start,
 * exit, restart by policy, stop), host shutdown and start.  Everything
 * here runs on the loop but ed_host_fence(). */
#include <dirent.h>
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

#ifndef P_PIDFD
#define P_PIDFD 3
#endif

struct ed_host {
	struct ed_loop *l;
	struct ed_host_opts o;
	char name[ED_NAME_MAX + 1];
	struct ed_events *ev;
	struct ed_cluster_hooks hooks;
	bool have_hooks;
	atomic_bool fenced;
	struct ed_vm *vms; /* name order */
};

static const char *const state_names[] = {"stopped", "starting", "running",   "backoff",
					  "failed",  "suspended", "remote", "unplaced"};

const char *ed_state_name(enum ed_state s)
{
	return (unsigned)s < sizeof(state_names) / sizeof(state_names[0]) ? state_names[s] : "?";
}

const char *ed_vm_name(const struct ed_vm *vm) { return vm->f.name; }
enum ed_state ed_vm_state(const struct ed_vm *vm) { return vm->state; }
uint64_t ed_vm_mem_bytes(const struct ed_vm *vm) { return vm->f.mem_bytes; }
unsigned ed_vm_vcpus(const struct ed_vm *vm) { return vm->f.vcpus; }
const char *const *ed_vm_hosts_must(const struct ed_vm *vm) { return (const char *const *)vm->f.hosts; }
const char *const *ed_vm_hosts_avoid(const struct ed_vm *vm) { return (const char *const *)vm->f.avoid; }
struct ed_vm *ed_host_first(struct ed_host *h) { return h->vms; }
struct ed_vm *ed_host_next(struct ed_host *h, struct ed_vm *vm) { (void)h; return vm->next; }
struct ed_loop *ed_host_loop(struct ed_host *h) { return h->l; }
const char *ed_host_name(const struct ed_host *h) { return h->name; }
struct ed_events *ed_host_events(struct ed_host *h) { return h->ev; }
const struct ed_host_opts *ed_host_opts(const struct ed_host *h) { return &h->o; }
bool ed_host_fenced(const struct ed_host *h) { return atomic_load(&h->fenced); }

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

/* `ember run FILE --dry-run`: ember's own check of every key, its
 * message (naming the file and line) into err.  0 or -EINVAL. */
static int dry_run(struct ed_host *h, const char *file, char *err, size_t errlen)
{
	int pfd[2];
	if (pipe2(pfd, O_CLOEXEC) < 0) {
		snprintf(err, errlen, "pipe: %s", strerror(errno));
		return -errno;
	}
	pid_t pid = fork();
	if (pid == 0) {
		sigset_t none;
		sigemptyset(&none);
		sigprocmask(SIG_SETMASK, &none, NULL);
		int null = open("/dev/null", O_RDWR);
		dup2(null, 0);
		dup2(null, 1);
		dup2(pfd[1], 2);
		execl(h->o.ember, "ember", "run", file, "--dry-run", (char *)NULL);
		_exit(127);
	}
	close(pfd[1]);
	char out[2048] = "";
	size_t n = 0;
	for (ssize_t k; n + 1 < sizeof(out) && (k = read(pfd[0], out + n, sizeof(out) - 1 - n)) > 0;)
		n += (size_t)k;
	out[n] = '\0';
	close(pfd[0]);
	int st = 0;
	if (pid < 0 || waitpid(pid, &st, 0) < 0) {
		snprintf(err, errlen, "run %s --dry-run: %s", h->o.ember, strerror(errno));
		return -EINVAL;
	}
	if (WIFEXITED(st) && WEXITSTATUS(st) == 0)
		return 0;
	/* ember's first line says it: "ember: FILE:LINE: ..." */
	out[strcspn(out, "\n")] = '\0';
	const char *m = strncmp(out, "ember: ", 7) ? out : out + 7;
	ed_fmt(err, errlen, "%s", *m ? m : "ember --dry-run refused it");
	return -EINVAL;
}

static int vm_cmp_insert(struct ed_host *h, struct ed_vm *vm)
{
	struct ed_vm **p = &h->vms;
	while (*p && strcmp((*p)->f.name, vm->f.name) < 0)
		p = &(*p)->next;
	if (*p && !strcmp((*p)->f.name, vm->f.name))
		return -EEXIST;
	vm->next = *p;
	*p = vm;
	return 0;
}

/* Read and check one VM file: 0 with *f, or -EINVAL with err. */
static int load_file(struct ed_host *h, const char *path, struct ed_vmfile *f, char *err,
		     size_t errlen)
{
	int r = ed_vmfile_parse(path, f, err, errlen);
	if (!r && (r = dry_run(h, path, err, errlen)))
		ed_vmfile_free(f);
	return r;
}

static bool is_vm_file(const char *name)
{
	size_t n = strlen(name);
	return name[0] != '.' && n > 4 && !strcmp(name + n - 4, ".ini");
}

static int name_sort(const struct dirent **a, const struct dirent **b)
{
	return strcmp((*a)->d_name, (*b)->d_name);
}

int ed_host_reload(struct ed_host *h, json_t **report, char *why, size_t whylen)
{
	struct dirent **ents;
	int n = scandir(h->o.vm_dir, &ents, NULL, name_sort);
	if (n < 0) {
		snprintf(why, whylen, "%s: %s", h->o.vm_dir, strerror(errno));
		return -errno;
	}
	json_t *added = json_array(), *removed = json_array(), *changed = json_array(),
	       *errors = json_array();
	for (struct ed_vm *vm = h->vms; vm; vm = vm->next)
		vm->remove = true;
	for (int i = 0; i < n; i++) {
		char path[PATH_MAX], err[ED_ERR_MAX];
		struct ed_vmfile *f = calloc(1, sizeof(*f));
		snprintf(path, sizeof(path), "%s/%s", h->o.vm_dir, ents[i]->d_name);
		bool want = is_vm_file(ents[i]->d_name);
		free(ents[i]);
		if (!want || !f) {
			free(f);
			continue;
		}
		if (load_file(h, path, f, err, sizeof(err))) {
			ed_event(h, NULL, "config-error", "%s", err);
			json_array_append_new(errors, json_pack("{s:s, s:s}", "file", path, "error", err));
			/* a VM whose file is now bad keeps running; it is not dropped */
			for (struct ed_vm *vm = h->vms; vm; vm = vm->next)
				if (!strcmp(vm->f.file, path))
					vm->remove = false;
			free(f);
			continue;
		}
		struct ed_vm *vm = ed_host_find(h, f->name);
		if (vm && strcmp(vm->f.file, path) && !vm->remove) {
			ed_fmt(err, sizeof(err), "%s: VM name \"%s\" is taken by %s", path, f->name,
				 vm->f.file);
			ed_event(h, NULL, "config-error", "%s", err);
			json_array_append_new(errors, json_pack("{s:s, s:s}", "file", path, "error", err));
			ed_vmfile_free(f);
			free(f);
			continue;
		}
		if (vm) {
			vm->remove = false;
			if (vm->f.mtime_ns != f->mtime_ns || vm->f.size != f->size ||
			    strcmp(vm->f.file, path)) {
				/* takes effect at its next start; a stopped VM's at once */
				bool live = vm->pid > 0;
				if (!live) {
					ed_vmfile_free(&vm->f);
					vm->f = *f;
				} else {
					vm->changed = true;
				}
				json_array_append_new(changed, json_string(f->name));
				if (live)
					ed_vmfile_free(f);
			} else {
				ed_vmfile_free(f);
			}
			free(f);
			continue;
		}
		vm = calloc(1, sizeof(*vm));
		if (!vm) {
			ed_vmfile_free(f);
			free(f);
			continue;
		}
		vm->h = h;
		vm->f = *f;
		vm->pidfd = -1;
		free(f);
		ed_proc_jail_path(vm);
		if (vm_cmp_insert(h, vm)) {
			ed_vmfile_free(&vm->f);
			free(vm);
			continue;
		}
		json_array_append_new(added, json_string(vm->f.name));
	}
	free(ents);
	for (struct ed_vm **p = &h->vms; *p;) {
		struct ed_vm *vm = *p;
		if (!vm->remove) {
			p = &vm->next;
			continue;
		}
		json_array_append_new(removed, json_string(vm->f.name));
		if (vm->pid > 0) { /* dropped once down */
			char w[64];
			if (ed_vm_stop(h, vm, 5000, "removed", w, sizeof(w))) {
			}
			p = &vm->next;
			continue;
		}
		*p = vm->next;
		if (vm->restart_timer)
			ed_loop_cancel(h->l, vm->restart_timer);
		ed_vmfile_free(&vm->f);
		free(vm);
	}
	*report = json_pack("{s:o, s:o, s:o, s:o}", "added", added, "removed", removed, "changed",
			    changed, "errors", errors);
	return 0;
}

int ed_host_new(struct ed_host **hp, struct ed_loop *l, const struct ed_host_opts *o, char *err,
		size_t errlen)
{
	struct ed_host *h = calloc(1, sizeof(*h));
	char p[PATH_MAX + 32];
	if (!h)
		return -ENOMEM;
	h->l = l;
	h->o = *o;
	snprintf(h->name, sizeof(h->name), "%s", o->host);
	int r = 0;
	const char *dirs[] = {o->state_dir, NULL, o->snap_dir};
	snprintf(p, sizeof(p), "%s/vms", o->state_dir);
	dirs[1] = p;
	for (int i = 0; i < 3 && !r; i++)
		if (mkdir(dirs[i], 0750) < 0 && errno != EEXIST) {
			r = -errno;
			snprintf(err, errlen, "%s: %s", dirs[i], strerror(errno));
		}
	snprintf(p, sizeof(p), "%s/events.log", o->state_dir);
	if (!r && (r = ed_events_new(&h->ev, p, h->name)))
		snprintf(err, errlen, "%s: %s", p, strerror(-r));
	if (r) {
		free(h);
		return r;
	}
	*hp = h;
	json_t *rep = NULL;
	r = ed_host_reload(h, &rep, err, errlen);
	json_decref(rep);
	if (r) {
		ed_host_free(h);
		return r;
	}
	return 0;
}

void ed_host_free(struct ed_host *h)
{
	if (!h)
		return;
	while (h->vms) {
		struct ed_vm *vm = h->vms;
		h->vms = vm->next;
		if (vm->pidfd >= 0)
			close(vm->pidfd);
		ed_vmfile_free(&vm->f);
		free(vm);
	}
	ed_events_free(h->ev);
	free(h);
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
		if (!load_file(h, vm->f.file, &f, err, sizeof(err))) {
			ed_vmfile_free(&vm->f);
			vm->f = f;
		} else {
			ed_event(h, vm->f.name, "config-error", "%s (the old file's settings stay)", err);
		}
		vm->changed = false;
	}
	struct ed_snapinfo si = {0};
	enum ed_way way;
	bool from_marker = how != ED_HOW_BOOT && suspended_snap(vm, snap, sizeof(snap));
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
	vm->up_kind = from_marker ? "resumed" : resume ? "restored" : !strcmp(cause, "restart") ? "restarted" : "started";
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
				 "its API did not answer in %d s: killed", ED_READY_TIMEOUT_MS / 1000);
			syscall(SYS_pidfd_send_signal, vm->pidfd, SIGKILL, NULL, 0);
		}
		return;
	}
	vm->running_ms = ed_now_ms();
	ed_vm_set_state(vm, ED_RUNNING, NULL);
	ed_event(vm->h, vm->f.name, vm->up_kind, "%s", vm->up_detail);
	if (!strcmp(vm->up_kind, "resumed")) {
		char p[PATH_MAX];
		marker_path(vm, p, sizeof(p));
		unlink(p); /* it has run since: that snapshot is an old moment now */
	}
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
	if (!vm->remove)
		return;
	for (struct ed_vm **p = &h->vms; *p; p = &(*p)->next)
		if (*p == vm) {
			*p = vm->next;
			cancel_timers(vm);
			ed_vmfile_free(&vm->f);
			free(vm);
			return;
		}
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
			ed_event(h, vm->f.name, "snapshot-failed",
				 "the snapshot did not load (exit %d): booting, which loses nothing "
				 "(read-only drives)",
				 code);
			vm->resume_failed_boot = true;
		} else {
			ed_vm_set_state(vm, ED_FAILED, "the snapshot did not load, and a boot would "
							"lose the memory that matches its drives");
			ed_event(h, vm->f.name, "failed", "%s (exit %d)", vm->reason, code);
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

int ed_vm_stop(struct ed_host *h, struct ed_vm *vm, uint64_t grace_ms, const char *cause,
	       char *why, size_t whylen)
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
		ed_event(h, vm->f.name, "snapshot", "%s (%llu ms, asked)", dir, (unsigned long long)*ms);
	return r;
}

const char *ed_vm_console_path(const struct ed_vm *vm)
{
	static char p[PATH_MAX];
	snprintf(p, sizeof(p), "%s/vms/%s/console.log", vm->h->o.state_dir, vm->f.name);
	return p;
}

/* ---- host start and shutdown ---- */

void ed_host_start_all(struct ed_host *h)
{
	for (struct ed_vm *vm = h->vms; vm; vm = vm->next) {
		char snap[PATH_MAX], why[ED_ERR_MAX];
		bool susp = suspended_snap(vm, snap, sizeof(snap));
		if (!susp && !vm->f.pol.autostart)
			continue;
		if (ed_vm_start(h, vm, ED_HOW_POLICY, susp ? "resume" : "autostart", why, sizeof(why)) &&
		    vm->state != ED_STOPPED) {
			ed_vm_set_state(vm, ED_FAILED, why);
			ed_event(h, vm->f.name, "failed", "start: %s", why);
		}
	}
}

void ed_host_suspend_all(struct ed_host *h)
{
	for (struct ed_vm *vm = h->vms; vm; vm = vm->next) {
		char dir[PATH_MAX], why[ED_ERR_MAX], p[PATH_MAX];
		if (vm->pid <= 0)
			continue;
		bool ok = vm->state == ED_RUNNING &&
			  !ed_snap_take(vm, true, dir, sizeof(dir), why, sizeof(why));
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
	/* another thread: read pidfds only (an exiting VM's may be closed
	 * under us; the kill then misses a process that is gone anyway) */
	for (struct ed_vm *vm = h->vms; vm; vm = vm->next) {
		int fd = vm->pidfd;
		if (fd >= 0)
			syscall(SYS_pidfd_send_signal, fd, SIGKILL, NULL, 0);
	}
	if (ed_loop_post(h->l, fenced_events, h)) {
	}
}

void ed_host_unfence(struct ed_host *h)
{
	atomic_store(&h->fenced, false);
	ed_event(h, NULL, "unfenced", "VMs may start again");
}

/* ---- status ---- */

json_t *ed_vm_status_json(const struct ed_vm *vm)
{
	const struct ed_policy *p = &vm->f.pol;
	uint64_t now = ed_now_ms();
	json_t *last = vm->have_exit ? json_pack("{s:i, s:i, s:I}", "code", vm->exit_code, "signal",
						 vm->exit_signal, "at_ms", (json_int_t)vm->exit_at_ms)
				     : json_null();
	json_t *snap = vm->snap_dir[0] ? json_pack("{s:s, s:I}", "dir", vm->snap_dir, "at_ms",
						   (json_int_t)vm->snap_at_ms)
				       : json_null();
	json_t *pol = json_pack("{s:s, s:i, s:I, s:I, s:I, s:I, s:s, s:b}", "restart",
				ed_restart_name(p->restart), "restart_attempts", (int)p->attempts,
				"restart_interval_ms", (json_int_t)p->interval_ms, "restart_delay_ms",
				(json_int_t)p->delay_ms, "restart_max_delay_ms",
				(json_int_t)p->max_delay_ms, "snapshot_interval_ms",
				(json_int_t)p->snapshot_ms, "resume", ed_resume_name(p->resume),
				"autostart", p->autostart);
	return json_pack("{s:s, s:s, s:s, s:o, s:i, s:o, s:I, s:o, s:o, s:o, s:s}", "name",
			 vm->f.name, "state", ed_state_name(vm->state), "host",
			 vm->state == ED_REMOTE ? vm->remote_host : vm->h->name, "pid",
			 vm->pid > 0 ? json_integer(vm->pid) : json_null(), "restarts",
			 (int)vm->restarts, "last_exit", last, "uptime_ms",
			 (json_int_t)(vm->state == ED_RUNNING ? now - vm->running_ms : 0), "snapshot",
			 snap, "policy", pol, "reason",
			 vm->reason[0] ? json_string(vm->reason) : json_null(), "file", vm->f.file);
}

json_t *ed_host_status_json(struct ed_host *h)
{
	int n = 0, running = 0;
	for (struct ed_vm *vm = h->vms; vm; vm = vm->next) {
		n++;
		running += vm->state == ED_RUNNING;
	}
	const char *etcd = h->have_hooks && h->hooks.etcd_health ? h->hooks.etcd_health(h->hooks.arg)
								  : NULL;
	return json_pack("{s:s, s:s, s:b, s:i, s:i, s:o}", "host", h->name, "mode",
			 h->have_hooks ? "cluster" : "local", "fenced", ed_host_fenced(h), "vms", n,
			 "running", running, "etcd", etcd ? json_string(etcd) : json_null());
}

json_t *ed_host_hosts_json(struct ed_host *h)
{
	if (h->have_hooks && h->hooks.hosts_json)
		return h->hooks.hosts_json(h->hooks.arg);
	int vms = 0;
	uint64_t mem = 0;
	unsigned vcpus = 0;
	for (struct ed_vm *vm = h->vms; vm; vm = vm->next)
		if (vm->pid > 0) {
			vms++;
			mem += vm->f.mem_bytes;
			vcpus += vm->f.vcpus;
		}
	long pages = sysconf(_SC_PHYS_PAGES), psize = sysconf(_SC_PAGESIZE);
	long cpus = sysconf(_SC_NPROCESSORS_ONLN);
	return json_pack("[{s:s, s:b, s:i, s:I, s:I, s:i, s:i}]", "name", h->name, "alive", 1, "vms",
			 vms, "mem_used", (json_int_t)mem, "mem_capacity",
			 (json_int_t)((uint64_t)pages * (uint64_t)psize / 10 * 8), "vcpus_used",
			 (int)vcpus, "vcpus_capacity", (int)(cpus * 4));
}
