/* Firecracker's PUT /snapshot/create and /snapshot/load: the API
 * thread's checks of the request, then the vmm thread's work (the
 * snapshot core is monitor/vm_snapshot.c, vm_restore.c and vm_stream.c,
 * see monitor/vm.h).  A load takes the state file's configuration,
 * applies the request's overrides (network_overrides, vsock_override)
 * and PUT /ember/options' name and timeout through cfg_set, and starts
 * the VM with the snapshot in its build options.  A create with ember's "stream" writes
 * into the file descriptor its request carried. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "monitor/api/api.h"
#include "monitor/vm.h"

/* ---- the API thread: checks ---- */

void api_put_snapshot_create(struct api *a, json_t *body, struct http_resp *rs)
{
	const char *type = api_str(body, "snapshot_type");
	if (type && strcmp(type, "Full") && strcmp(type, "Diff"))
		return http_fault(rs, 400, "snapshot_type: \"%.32s\" is not Full or Diff", type);
	const char *path = api_str(body, "snapshot_path"), *mem = api_str(body, "mem_file_path");
	bool stream = json_is_true(json_object_get(body, "stream"));
	int *fd = a->req_fd;
	if (!stream && (!path || !mem))
		return http_fault(rs, 400, "missing field \"%s\"",
				  path ? "mem_file_path" : "snapshot_path");
	/* ember's stream: the snapshot goes into the file descriptor the
	 * request carries (SCM_RIGHTS): the controller owns the pipe or
	 * connection, ember opens nothing (docs/snapshots.md, "Streams"). */
	if (stream && (path || mem))
		return http_fault(rs, 400,
				  "stream: snapshot_path and mem_file_path are for files; a "
				  "stream goes to the file descriptor sent with the request");
	if (stream && type && strcmp(type, "Full"))
		return http_fault(rs, 400, "stream: only a Full snapshot is streamed");
	if (stream && (!fd || *fd < 0))
		return http_fault(rs, 400,
				  "stream: the request carries no file descriptor to write to "
				  "(send one with SCM_RIGHTS on the API socket, as `ember "
				  "snapshot create --to -` does)");
	if (atomic_load(&a->state) == API_NOT_STARTED)
		return http_fault(rs, 400, "%s", api_pre_boot);
	/* "version" (older Firecrackers' target version) is accepted and
	 * ignored: ember's snapshots are for the same ember. */
	/* Writing the memory takes as long as the guest is large: answered
	 * when done, GETs go on meanwhile. */
	a->job.call = (struct api_call){.op = API_OP_SNAP_CREATE,
					.path = path,
					.mem_path = mem,
					.diff = type && !strcmp(type, "Diff"),
					.stream = stream,
					.stream_fd = stream ? *fd : -1};
	if (stream)
		*fd = -1; /* the job's now: the vmm thread closes it */
	api_job_start(a, "snapshot create", body, rs);
}

bool api_refuse_unless_fresh(struct api *a, const char *what, struct http_resp *rs)
{
	if (atomic_load(&a->state) != API_NOT_STARTED)
		http_fault(rs, 400, "%s", api_post_boot);
	else if (a->configured)
		http_fault(rs, 400, "%s not allowed after configuring boot-specific resources.",
			   what);
	else
		return false;
	return true;
}

void api_put_snapshot_load(struct api *a, json_t *body, struct http_resp *rs)
{
	if (api_refuse_unless_fresh(a, "Loading a microVM snapshot", rs))
		return;
	const json_t *mb = json_object_get(body, "mem_backend");
	const char *mem = api_str(body, "mem_file_path");
	bool has_mb = mb && !json_is_null(mb);
	if (has_mb && mem)
		return http_fault(rs, 400,
				  "too many fields: either `mem_backend` or `mem_file_path` "
				  "exclusively is required.");
	if (!has_mb && !mem)
		return http_fault(rs, 400,
				  "missing field: either `mem_backend` or `mem_file_path` is "
				  "required.");
	if (has_mb) {
		const char *t = api_str(mb, "backend_type");
		if (strcmp(t, "File"))
			return http_fault(rs, 400,
					  "mem_backend.backend_type: \"%.32s\" is not supported by "
					  "ember (only \"File\")",
					  t);
		mem = api_str(mb, "backend_path");
	}
	if (json_is_true(json_object_get(body, "clock_realtime")))
		return http_fault(rs, 400, "clock_realtime: not supported by ember (only false)");
	a->job.call = (struct api_call){.op = API_OP_SNAP_LOAD,
					.path = api_str(body, "snapshot_path"),
					.mem_path = mem,
					.body = body};
	api_job_start(a, "snapshot load", body, rs);
}

/* ---- the vmm thread: the work ---- */

/* network_overrides (Firecracker's) and drive_overrides (ember's): point
 * the snapshot's device id at another tap or file, which confirms it. */
static int device_overrides(struct vm_config *cfg, const json_t *body, bool drives,
			    struct vm_restore_paths *ok, char *err, size_t len)
{
	const char *field = drives ? "drive_overrides" : "network_overrides";
	const char *idkey = drives ? "drive_id" : "iface_id";
	char e[CFG_ERR_MAX], sec[CFG_NAME_MAX + 8];
	size_t i;
	json_t *o;
	json_array_foreach(json_object_get(body, field), i, o)
	{
		const char *id = api_str(o, idkey);
		unsigned n = 0, nr = drives ? cfg->nr_blocks : cfg->nr_nets;
		while (n < nr && strcmp(drives ? cfg->blocks[n].name : cfg->nets[n].name, id))
			n++;
		if (n == nr)
			return snprintf(err, len, "%s: the snapshot has no %s \"%.64s\"", field,
					drives ? "drive" : "network interface", id),
			       -EINVAL;
		snprintf(sec, sizeof(sec), "%s.%s", drives ? "block" : "net", id);
		if (cfg_set(cfg, sec, drives ? "path" : "tap",
			    api_str(o, drives ? "path_on_host" : "host_dev_name"), e, sizeof(e)))
			return snprintf(err, len, "%s: %s", field, e), -EINVAL;
		if (drives)
			ok->drive[n] = true;
		else
			ok->net[n] = true;
	}
	return 0;
}

int api_load_overrides(struct api *a, struct vm_config *cfg, const json_t *body, char *err,
		       size_t len)
{
	char e[CFG_ERR_MAX];
	struct vm_restore_paths ok = {.all = json_is_true(json_object_get(body, "use_saved_paths"))};
	if (device_overrides(cfg, body, false, &ok, err, len) ||
	    device_overrides(cfg, body, true, &ok, err, len))
		return -EINVAL;
	json_t *o = json_object_get(body, "vsock_override");
	if (o && !json_is_null(o)) {
		if (!cfg->vsock.enabled)
			return snprintf(err, len,
					"vsock_override: the snapshot has no vsock device"),
			       -EINVAL;
		if (cfg_set(cfg, "vsock", "uds", api_str(o, "uds_path"), e, sizeof(e)))
			return snprintf(err, len, "vsock_override: %s", e), -EINVAL;
		ok.vsock = true;
	}
	char list[VM_ERR_MAX];
	if (vm_snapshot_check_paths(cfg, &ok, list, sizeof(list)))
		return snprintf(err, len,
				"the snapshot names host resources it would open: %s. A snapshot "
				"is not trusted to choose them: give each in drive_overrides "
				"([{\"drive_id\", \"path_on_host\"}]), network_overrides or "
				"vsock_override, or set \"use_saved_paths\": true to open them as "
				"saved",
				list),
		       -EPERM;
	/* PUT /ember/options before the load: its name and timeout apply */
	static const char *const keys[] = {"name", "timeout"};
	for (int k = 0; k < 2; k++)
		if (api_str(a->options, keys[k]) &&
		    cfg_set(cfg, "vm", keys[k], api_str(a->options, keys[k]), e, sizeof(e)))
			return snprintf(err, len, "%s: %s", keys[k], e), -EINVAL;
	/* A restore reads no kernel: the state's may be gone or empty. */
	if (cfg->kernel[0] && cfg_validate(cfg, e, sizeof(e)))
		return snprintf(err, len, "%s", e), -EINVAL;
	return 0;
}

void api_snapshot_load(struct api *a, struct api_call *c)
{
	char err[CFG_ERR_MAX + VM_ERR_MAX];
	const json_t *b = c->body;
	struct vm_snapshot *snap = NULL;
	c->status = 400;
	if (strlen(c->path) >= CFG_PATH_MAX || strlen(c->mem_path) >= CFG_PATH_MAX) {
		snprintf(c->fault, sizeof(c->fault), "snapshot paths: longer than %d bytes",
			 CFG_PATH_MAX - 1);
		return;
	}
	/* The state file's configuration, its overrides, then the build
	 * with the snapshot, which is closed once built. */
	if (vm_snapshot_open(c->path, a->cfg, &snap, err, sizeof(err)) ||
	    api_load_overrides(a, a->cfg, b, err, sizeof(err))) {
		snprintf(c->fault, sizeof(c->fault), "%.600s", err);
	} else {
		struct vm_build_opts o = {
		    .track_dirty = json_is_true(json_object_get(b, "enable_diff_snapshots")) ||
				   json_is_true(json_object_get(b, "track_dirty_pages")),
		    .snapshot = snap,
		    .mem_path = c->mem_path,
		    .paused = !json_is_true(json_object_get(b, "resume_vm")),
		};
		c->status = 0;
		api_start_vm(a, c, &o, "Load snapshot");
	}
	vm_snapshot_close(snap);
	/* A failed load leaves ember unconfigured, as it was. */
	if (c->status && !a->started)
		(void)!api_build_config(a, a->cfg, err, sizeof(err));
}

void api_snapshot_create(struct api *a, struct api_call *c)
{
	struct vm *vm = a->vm;
	c->status = 400;
	if (c->stream) {
		/* Closed before the reply: its reader sees the end as the
		 * client sees the 204. */
		if (!vm->paused)
			snprintf(c->fault, sizeof(c->fault),
				 "Create snapshot error: Cannot save the microVM state: Operation "
				 "not allowed: save/restore unavailable while running");
		else if (!vm_snapshot_stream(vm, c->stream_fd, c->fault, sizeof(c->fault)))
			c->status = 0;
		close(c->stream_fd);
		c->stream_fd = -1;
		return;
	}
	if (!vm->paused)
		snprintf(c->fault, sizeof(c->fault),
			 "Create snapshot error: Cannot save the microVM state: Operation not "
			 "allowed: save/restore unavailable while running");
	else if (c->diff && !vm->track_dirty)
		snprintf(c->fault, sizeof(c->fault),
			 "Diff snapshots are not allowed on uVMs with dirty page tracking "
			 "disabled.");
	else if (!vm_snapshot_create(vm, c->path, c->mem_path, c->diff, c->fault, sizeof(c->fault)))
		c->status = 0;
}
