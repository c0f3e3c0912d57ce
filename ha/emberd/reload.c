/* The VM folder: its files read and checked (ours, then `ember run FILE
 * --dry-run` for the rest), reloaded (added, removed, changed), and the
 * host made from it. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ha/emberd/local.h"

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
	for (ssize_t k;
	     n + 1 < sizeof(out) && (k = read(pfd[0], out + n, sizeof(out) - 1 - n)) > 0;)
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
int ed_host_load_file(struct ed_host *h, const char *path, struct ed_vmfile *f, char *err,
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
		if (ed_host_load_file(h, path, f, err, sizeof(err))) {
			ed_event(h, NULL, "config-error", "%s", err);
			json_array_append_new(errors,
					      json_pack("{s:s, s:s}", "file", path, "error", err));
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
			json_array_append_new(errors,
					      json_pack("{s:s, s:s}", "file", path, "error", err));
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
		pthread_mutex_lock(&h->mu);
		int dup = vm_cmp_insert(h, vm);
		pthread_mutex_unlock(&h->mu);
		if (dup) {
			ed_vmfile_free(&vm->f);
			free(vm);
			continue;
		}
		vm->fresh = true;
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
		if (vm->pid > 0 || vm->snap_job) { /* dropped once down, or idle */
			char w[64];
			if (ed_vm_stop(h, vm, 5000, "removed", w, sizeof(w))) {
			}
			p = &vm->next;
			continue;
		}
		pthread_mutex_lock(&h->mu);
		*p = vm->next;
		pthread_mutex_unlock(&h->mu);
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
	pthread_mutex_init(&h->mu, NULL);
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
	pthread_mutex_destroy(&h->mu);
	free(h);
}
