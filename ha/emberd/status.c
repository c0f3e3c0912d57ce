/* The status objects of the control API (docs/ha.md, "Control API"):
 * a VM's, the host's, and GET /hosts for a single host. */
#include <unistd.h>

#include "ha/emberd/local.h"

/* ---- status ---- */

json_t *ed_vm_status_json(const struct ed_vm *vm)
{
	const struct ed_policy *p = &vm->f.pol;
	uint64_t now = ed_now_ms();
	json_t *last = vm->have_exit
			   ? json_pack("{s:i, s:i, s:I}", "code", vm->exit_code, "signal",
				       vm->exit_signal, "at_ms", (json_int_t)vm->exit_at_ms)
			   : json_null();
	json_t *snap = vm->snap_dir[0] ? json_pack("{s:s, s:I}", "dir", vm->snap_dir, "at_ms",
						   (json_int_t)vm->snap_at_ms)
				       : json_null();
	json_t *pol = json_pack(
	    "{s:s, s:i, s:I, s:I, s:I, s:I, s:s, s:b}", "restart", ed_restart_name(p->restart),
	    "restart_attempts", (int)p->attempts, "restart_interval_ms", (json_int_t)p->interval_ms,
	    "restart_delay_ms", (json_int_t)p->delay_ms, "restart_max_delay_ms",
	    (json_int_t)p->max_delay_ms, "snapshot_interval_ms", (json_int_t)p->snapshot_ms,
	    "resume", ed_resume_name(p->resume), "autostart", p->autostart);
	json_t *j = json_pack("{s:s, s:s, s:s, s:o, s:i, s:o, s:I, s:o, s:o, s:o, s:s}", "name",
			 vm->f.name, "state", ed_state_name(vm->state), "host",
			 vm->state == ED_REMOTE ? vm->remote_host : vm->h->name, "pid",
			 vm->pid > 0 ? json_integer(vm->pid) : json_null(), "restarts",
			 (int)vm->restarts, "last_exit", last, "uptime_ms",
			 (json_int_t)(vm->state == ED_RUNNING ? now - vm->running_ms : 0),
			 "snapshot", snap, "policy", pol, "reason",
			 vm->reason[0] ? json_string(vm->reason) : json_null(), "file", vm->f.file);
	if (j && vm->moving && vm->move_phase[0]) /* docs/ha.md "Moving a VM" */
		json_object_set_new(j, "move",
				    json_pack("{s:s, s:s, s:I, s:I}", "to", vm->move_to, "phase",
					      vm->move_phase, "bytes", (json_int_t)vm->move_bytes,
					      "since_ms", (json_int_t)(now - vm->move_since_ms)));
	return j;
}

json_t *ed_host_status_json(struct ed_host *h)
{
	int n = 0, running = 0;
	for (struct ed_vm *vm = h->vms; vm; vm = vm->next) {
		n++;
		running += vm->state == ED_RUNNING;
	}
	const char *etcd =
	    h->have_hooks && h->hooks.etcd_health ? h->hooks.etcd_health(h->hooks.arg) : NULL;
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
	return json_pack("[{s:s, s:b, s:i, s:I, s:I, s:i, s:i}]", "name", h->name, "alive", 1,
			 "vms", vms, "mem_used", (json_int_t)mem, "mem_capacity",
			 (json_int_t)((uint64_t)pages * (uint64_t)psize / 10 * 8), "vcpus_used",
			 (int)vcpus, "vcpus_capacity", (int)(cpus * 4));
}
