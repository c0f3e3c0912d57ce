/* Load (obs.h, docs/ha.md "Metrics and dashboard", docs/balancing.md
 * "Load"): every interval, per running VM, the CPU its ember used (utime
 * + stime of every thread, /proc/PID/stat) since the last sample, over
 * the wall time between them, in millicores, smoothed by an EWMA with a
 * time constant of TAU_MS; its RSS (/proc/PID/status VmRSS) and guest RAM
 * (its file).  Two small procfs reads per VM: on the loop, as they never
 * block on anything but the kernel.  The result is the load/<h> document;
 * cluster mode hands it to the view's worker (never etcd on the loop). */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ha/emberd/local.h"
#include "ha/emberd/obs.h"

#define TAU_MS 5000 /* a step in demand shows ~63% after 5 s, ~95% after 15 s */

struct vmload {
	char name[ED_NAME_MAX + 1];
	pid_t pid;	    /* the ember sampled last (0: none) */
	uint64_t ticks;	    /* its utime + stime then */
	uint64_t at_ms;	    /* when */
	double cpu_m;	    /* smoothed millicores */
	bool have;	    /* cpu_m has history */
	uint64_t rss;	    /* bytes */
	double cpu_seconds; /* every ember's CPU time, summed: a counter */
	bool seen;	    /* in this round */
	struct vmload *next;
};

struct ed_load {
	struct ed_host *h;
	uint64_t interval_ms, cpu_cap_m, mem_cap;
	uint64_t timer;
	long hz;
	struct vmload *vms;
	json_t *doc; /* the last sample */
	void (*fn)(void *arg, json_t *doc);
	void *arg;
};

static int read_small(const char *path, char *buf, size_t len)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	ssize_t n = read(fd, buf, len - 1);
	int r = n < 0 ? -errno : 0;
	close(fd);
	buf[n > 0 ? n : 0] = '\0';
	return r;
}

static struct vmload *find(struct ed_load *l, const char *name, bool make)
{
	for (struct vmload *v = l->vms; v; v = v->next)
		if (!strcmp(v->name, name))
			return v;
	if (!make)
		return NULL;
	struct vmload *v = calloc(1, sizeof(*v));
	if (!v)
		return NULL;
	snprintf(v->name, sizeof(v->name), "%s", name);
	v->next = l->vms;
	l->vms = v;
	return v;
}

/* One VM's ember: its CPU since the last sample, smoothed. */
static void sample_vm(struct ed_load *l, struct vmload *v, pid_t pid, uint64_t now)
{
	char path[64], buf[4096];
	uint64_t ticks, rss = 0;
	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	if (read_small(path, buf, sizeof(buf)) || ed_obs_stat_ticks(buf, &ticks))
		return; /* gone between the check and the read: next round */
	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	if (!read_small(path, buf, sizeof(buf)) && ed_obs_status_rss(buf, &rss))
		rss = 0;
	v->rss = rss;
	if (v->pid != pid) {
		/* a new ember: what it used since its start counts toward the
		 * counter; its rate needs a second sample */
		v->cpu_seconds += (double)ticks / (double)l->hz;
		v->pid = pid;
	} else if (now > v->at_ms && ticks >= v->ticks) {
		uint64_t dt = now - v->at_ms;
		double used = (double)(ticks - v->ticks) / (double)l->hz;
		v->cpu_seconds += used;
		v->cpu_m = ed_obs_ewma(v->cpu_m, used * 1000.0 * 1000.0 / (double)dt, dt, TAU_MS,
				       !v->have);
		v->have = true;
	}
	v->ticks = ticks;
	v->at_ms = now;
}

static void sample(void *arg)
{
	struct ed_load *l = arg;
	l->timer = 0;
	uint64_t now = ed_now_ms();
	struct timespec rt;
	clock_gettime(CLOCK_REALTIME, &rt);
	json_t *vms = json_object();
	uint64_t used_m = 0, mem = 0;
	for (struct vmload *v = l->vms; v; v = v->next)
		v->seen = false;
	for (struct ed_vm *vm = ed_host_first(l->h); vm; vm = ed_host_next(l->h, vm)) {
		enum ed_state st = ed_vm_state(vm);
		bool here = st == ED_RUNNING || st == ED_STARTING || st == ED_BACKOFF;
		struct vmload *v = find(l, ed_vm_name(vm), here);
		if (v)
			v->seen = true;
		if (!here || !v)
			continue;
		if (vm->pid > 0)
			sample_vm(l, v, vm->pid, now);
		if (st == ED_BACKOFF) { /* no process: no demand now */
			v->cpu_m = 0;
			v->have = false;
			v->rss = 0;
		}
		uint64_t cpu = (uint64_t)(v->cpu_m + 0.5);
		used_m += cpu;
		mem += ed_vm_mem_bytes(vm);
		json_object_set_new(vms, v->name,
				    json_pack("{s:I, s:I, s:I, s:I, s:s}", "cpu_m", (json_int_t)cpu,
					      "mem", (json_int_t)ed_vm_mem_bytes(vm), "rss",
					      (json_int_t)v->rss, "dirty_bps", (json_int_t)0,
					      "state", ed_state_name(st)));
	}
	/* VMs no longer here keep their counter (a restart here adds to it),
	 * but lose their rate */
	for (struct vmload *v = l->vms; v; v = v->next)
		if (!v->seen) {
			v->pid = 0;
			v->have = false;
			v->cpu_m = 0;
			v->rss = 0;
		}
	json_t *doc = json_pack(
	    "{s:I, s:I, s:I, s:I, s:I, s:o}", "at_ms",
	    (json_int_t)((uint64_t)rt.tv_sec * 1000 + (uint64_t)rt.tv_nsec / 1000000),
	    "cpu_capacity_m", (json_int_t)l->cpu_cap_m, "cpu_used_m", (json_int_t)used_m,
	    "mem_capacity", (json_int_t)l->mem_cap, "mem_used", (json_int_t)mem, "vms", vms);
	if (doc) {
		json_decref(l->doc);
		l->doc = doc;
		if (l->fn)
			l->fn(l->arg, doc);
	}
	l->timer = ed_loop_timer(ed_host_loop(l->h), l->interval_ms, sample, l);
}

int ed_load_new(struct ed_load **out, struct ed_host *h, uint64_t interval_ms, uint64_t cpu_cap_m,
		uint64_t mem_cap)
{
	struct ed_load *l = calloc(1, sizeof(*l));
	if (!l)
		return -ENOMEM;
	l->h = h;
	l->interval_ms = interval_ms ? interval_ms : 2000;
	l->cpu_cap_m = cpu_cap_m;
	l->mem_cap = mem_cap;
	l->hz = sysconf(_SC_CLK_TCK);
	if (l->hz <= 0)
		l->hz = 100;
	l->timer = ed_loop_timer(ed_host_loop(h), 0, sample, l);
	if (!l->timer) {
		free(l);
		return -ENOMEM;
	}
	*out = l;
	return 0;
}

void ed_load_free(struct ed_load *l)
{
	if (!l)
		return;
	if (l->timer)
		ed_loop_cancel(ed_host_loop(l->h), l->timer);
	while (l->vms) {
		struct vmload *v = l->vms;
		l->vms = v->next;
		free(v);
	}
	json_decref(l->doc);
	free(l);
}

void ed_load_on_sample(struct ed_load *l, void (*fn)(void *arg, json_t *doc), void *arg)
{
	l->fn = fn;
	l->arg = arg;
}

json_t *ed_load_json(struct ed_load *l)
{
	return l->doc ? json_deep_copy(l->doc)
		      : json_pack("{s:I, s:I, s:I, s:I, s:I, s:{}}", "at_ms", (json_int_t)0,
				  "cpu_capacity_m", (json_int_t)l->cpu_cap_m, "cpu_used_m",
				  (json_int_t)0, "mem_capacity", (json_int_t)l->mem_cap, "mem_used",
				  (json_int_t)0, "vms");
}

double ed_load_vm_cpu_seconds(struct ed_load *l, const char *vm)
{
	struct vmload *v = find(l, vm, false);
	return v ? v->cpu_seconds : 0;
}
