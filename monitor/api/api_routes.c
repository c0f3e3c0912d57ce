/* The API's actions, GETs and routing (the configuration objects and
 * their checks are api.c's): Firecracker's paths, methods, status codes
 * and pre-/post-boot rules. */
#include <errno.h>
#include <http_parser.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "monitor/api/api.h"
#include "monitor/vm.h"

/* ---- actions ---- */

/* InstanceStart's checks and configuration: 0 or 400 with the reason. */
static int start_check(struct api *a, char *fault, size_t len)
{
	char err[CFG_ERR_MAX];
	if (atomic_load(&a->state) != API_NOT_STARTED) {
		snprintf(fault, len, "%s", api_post_boot);
		return 400;
	}
	if (!a->boot_source) {
		snprintf(fault, len, "Cannot start microvm without kernel configuration.");
		return 400;
	}
	int r = api_build_config(a, a->cfg, err, sizeof(err));
	if (!r)
		r = cfg_validate(a->cfg, err, sizeof(err));
	if (r) {
		snprintf(fault, len, "%s", err);
		return 400;
	}
	return 0;
}

int api_instance_start(struct api *a, char *fault, size_t len)
{
	int r = start_check(a, fault, len);
	if (r)
		return r;
	struct api_call call = {.op = API_OP_START};
	api_vmm_call(a, &call);
	if (call.status)
		snprintf(fault, len, "%s", call.fault);
	return call.status;
}

/* ---- long jobs: answered when the vmm thread is done ---- */

void api_job_start(struct api *a, const char *name, json_t *body, struct http_resp *rs)
{
	a->job.name = name;
	a->job.body = json_incref(body);
	snap_progress_phase(&a->progress, NULL, 0);
	clock_gettime(CLOCK_MONOTONIC, &a->t_job);
	rs->status = HTTP_DEFERRED; /* api_handle posts the call */
}

static void log_request(struct api *a, int method, const char *path, int status)
{
	if (a->log_fd < 0 || a->log_level < (status >= 400 ? 2 : 3))
		return;
	char line[512];
	int n = snprintf(line, sizeof(line), "[%s:api%s] %s %.200s: %d\n", a->id,
			 a->log_show_level ? (status >= 400 ? ":WARN" : ":INFO") : "",
			 http_method_str((enum http_method)method), path, status);
	(void)!write(a->log_fd, line, (size_t)n < sizeof(line) ? (size_t)n : sizeof(line) - 1);
}

void api_job_done(struct ev_source *src, uint32_t events)
{
	struct api *a = src->opaque;
	struct api_job *j = &a->job;
	uint64_t v;
	(void)!read(src->fd, &v, sizeof(v));
	if (!j->name || !api_vmm_collect(a, &j->call))
		return;
	/* Done with the job before the reply goes: writing it lets the
	 * connection's next (pipelined) request in, which may start another. */
	struct http_resp rs = {204, NULL};
	if (j->call.status)
		http_fault(&rs, j->call.status, "%s", j->call.fault);
	int method = j->method;
	char path[sizeof(j->path)];
	memcpy(path, j->path, sizeof(path));
	json_t *body = j->body;
	j->body = NULL;
	j->name = NULL;
	http_server_complete(a->srv, j->ticket, &rs);
	api_vmm_replied(a);
	if (rs.status >= 400)
		atomic_fetch_add(&a->n_bad, 1);
	log_request(a, method, path, rs.status);
	free(rs.body);
	json_decref(body);
}

static void do_action(struct api *a, json_t *body, struct http_resp *rs)
{
	char fault[API_FAULT_MAX];
	const char *t = api_str(body, "action_type");
	enum api_state st = (enum api_state)atomic_load(&a->state);
	struct api_call call = {.op = API_OP_FLUSH};

	if (!strcmp(t, "InstanceStart")) {
		int r = start_check(a, fault, sizeof(fault));
		if (r)
			return http_fault(rs, r, "%s", fault);
		a->job.call = (struct api_call){.op = API_OP_START};
		return api_job_start(a, "InstanceStart", body, rs);
	}
	if (!strcmp(t, "FlushMetrics")) {
		if (a->metrics_fd < 0)
			return http_fault(rs, 400,
					  "FlushMetrics: metrics are not configured "
					  "(PUT /metrics first)");
	} else if (!strcmp(t, "SendCtrlAltDel")) {
		if (st == API_NOT_STARTED)
			return http_fault(rs, 400, "%s", api_pre_boot);
		call.op = API_OP_CTRLALTDEL;
	} else {
		return http_fault(rs, 400,
				  "action_type: \"%.32s\" is not one of InstanceStart, "
				  "SendCtrlAltDel, FlushMetrics",
				  t);
	}
	api_vmm_call(a, &call);
	if (call.status)
		return http_fault(rs, call.status, "%s", call.fault);
	rs->status = 204;
}

static void patch_vm(struct api *a, json_t *body, struct http_resp *rs)
{
	const char *s = api_str(body, "state");
	struct api_call call;
	memset(&call, 0, sizeof(call));
	if (!strcmp(s, "Paused"))
		call.op = API_OP_PAUSE;
	else if (!strcmp(s, "Resumed"))
		call.op = API_OP_RESUME;
	else
		return http_fault(rs, 400, "state: \"%.32s\" is not Paused or Resumed", s);
	if (atomic_load(&a->state) == API_NOT_STARTED)
		return http_fault(rs, 400, "%s", api_pre_boot);
	api_vmm_call(a, &call);
	if (call.status)
		return http_fault(rs, call.status, "%s", call.fault);
	rs->status = 204;
}

/* ---- GETs ---- */

static const char *state_name(struct api *a)
{
	switch (atomic_load(&a->state)) {
	case API_RUNNING:
		return "Running";
	case API_PAUSED:
		return "Paused";
	case API_STOPPED:
		return "Stopped";
	default:
		return "Not started";
	}
}

/* Copies: GET replies are written after view_lock is let go. */
static json_t *copy_or_null(const json_t *o)
{
	return o ? json_deep_copy(o) : json_null();
}

static json_t *vm_config_json(struct api *a)
{
	return json_pack("{s:n,s:o,s:o,s:n,s:o,s:o,s:o,s:n,s:o,s:o,s:o,s:{s:o}}", "balloon",
			 "drives", json_deep_copy(a->drives), "boot-source",
			 copy_or_null(a->boot_source), "cpu-config", "logger",
			 copy_or_null(a->logger), "machine-config", json_deep_copy(a->machine),
			 "metrics", copy_or_null(a->metrics), "mmds-config", "network-interfaces",
			 json_deep_copy(a->nets), "vsock", copy_or_null(a->vsock), "entropy",
			 copy_or_null(a->entropy), "ember", "options", copy_or_null(a->options));
}

static long long us_between(const struct timespec *x, const struct timespec *y)
{
	return (long long)(y->tv_sec - x->tv_sec) * 1000000LL + (y->tv_nsec - x->tv_nsec) / 1000;
}

/* How far the long job is: its phase (null before the first), the bytes
 * done of the phase's total (0: not known), the time since it began. */
static json_t *progress_json(struct api *a)
{
	struct timespec now;
	clock_gettime(CLOCK_MONOTONIC, &now);
	const char *phase = atomic_load(&a->progress.phase);
	return json_pack("{s:o,s:I,s:I,s:I}", "phase", phase ? json_string(phase) : json_null(),
			 "bytes_done", (json_int_t)atomic_load(&a->progress.done), "bytes_total",
			 (json_int_t)atomic_load(&a->progress.total), "elapsed_ms",
			 (json_int_t)(us_between(&a->t_job, &now) / 1000));
}

static json_t *status_json(struct api *a)
{
	json_t *o = json_pack("{s:s,s:s}", "id", a->id, "state", state_name(a));
	if (a->job.name) { /* the long job the vmm thread is doing for a request */
		json_object_set_new(o, "job", json_string(a->job.name));
		json_object_set_new(o, "progress", progress_json(a));
	}
	if (atomic_load(&a->state) == API_NOT_STARTED)
		return o;
	struct vm *vm = a->vm;
	json_object_set_new(o, "vcpus", json_integer(vm->nr_vcpus));
	json_object_set_new(o, "boot_time_us",
			    json_integer(us_between(&vm->stats.t_start, &vm->stats.t_running)));
	if (atomic_load(&vm->stats.have_first_output))
		json_object_set_new(
		    o, "first_output_us",
		    json_integer(us_between(&vm->stats.t_start, &vm->stats.t_first_output)));
	json_object_set_new(o, "stopping", json_boolean(atomic_load(&vm->stopping)));
	if (atomic_load(&a->state) == API_STOPPED) {
		json_object_set_new(o, "exit_code", json_integer(vm->exit_code));
		json_object_set_new(o, "stop_reason", json_string(vm->stop_reason));
	}
	return o;
}

/* ---- routing ---- */

enum route_kind {
	R_INFO,
	R_VERSION,
	R_BOOT,
	R_MACHINE,
	R_DRIVE,
	R_NET,
	R_VSOCK,
	R_ENTROPY,
	R_ACTIONS,
	R_VM,
	R_LOGGER,
	R_METRICS,
	R_VMCONFIG,
	R_STATUS,
	R_OPTIONS,
	R_SNAP_CREATE,
	R_SNAP_LOAD,
	R_MIG,	   /* GET /migration */
	R_MIG_PUT, /* PUT /migration/{send,receive,cancel,resolve} */
};

static const struct {
	const char *path; /* a trailing '/' takes an id */
	enum route_kind kind;
	const char *object; /* for PUTs of configuration objects */
} routes[] = {
    {"/", R_INFO, NULL},
    {"/version", R_VERSION, NULL},
    {"/boot-source", R_BOOT, "boot-source"},
    {"/machine-config", R_MACHINE, "machine-config"},
    {"/drives/", R_DRIVE, "drives"},
    {"/network-interfaces/", R_NET, "network-interfaces"},
    {"/vsock", R_VSOCK, "vsock"},
    {"/entropy", R_ENTROPY, "entropy"},
    {"/actions", R_ACTIONS, NULL},
    {"/vm", R_VM, NULL},
    {"/logger", R_LOGGER, "logger"},
    {"/metrics", R_METRICS, "metrics"},
    {"/vm/config", R_VMCONFIG, NULL},
    {"/ember/status", R_STATUS, NULL},
    {"/ember/options", R_OPTIONS, "ember-options"},
    {"/snapshot/create", R_SNAP_CREATE, NULL},
    {"/snapshot/load", R_SNAP_LOAD, NULL},
    {"/migration", R_MIG, NULL},
    {"/migration/", R_MIG_PUT, NULL},
};

bool api_busy(struct api *a, struct http_resp *rs)
{
	static const char *const doing[] = {
	    [API_OP_START] = "the microVM is starting (InstanceStart)",
	    [API_OP_SNAP_CREATE] = "a snapshot is being written (PUT /snapshot/create)",
	    [API_OP_SNAP_LOAD] = "a snapshot is being loaded (PUT /snapshot/load)",
	};
	unsigned op = (unsigned)a->job.call.op;
	if (!a->job.name)
		return false;
	http_fault(rs, 400,
		   "Operation not allowed now: %s; GETs are answered, changes wait until it "
		   "completes.",
		   op < sizeof(doing) / sizeof(doing[0]) && doing[op] ? doing[op] : a->job.name);
	return true;
}

static void route(struct api *a, const struct http_req *rq, struct http_resp *rs)
{
	unsigned k;
	if (api_drive_move_path(rq->path))
		return api_drive_move(a, rq, rs);
	const char *id = NULL;
	for (k = 0; k < sizeof(routes) / sizeof(routes[0]); k++) {
		const char *p = routes[k].path;
		size_t n = strlen(p);
		if (n > 1 && p[n - 1] == '/') {
			if (!strncmp(rq->path, p, n) && rq->path[n] && !strchr(rq->path + n, '/')) {
				id = rq->path + n;
				break;
			}
		} else if (!strcmp(rq->path, p)) {
			break;
		}
	}
	enum http_method m = (enum http_method)rq->method;
	bool known = k < sizeof(routes) / sizeof(routes[0]);
	enum route_kind rk = known ? routes[k].kind : R_INFO;
	bool get = m == HTTP_GET, put = m == HTTP_PUT, patch = m == HTTP_PATCH;
	bool allowed =
	    known && (get     ? (rk == R_INFO || rk == R_VERSION || rk == R_MACHINE ||
				 rk == R_VMCONFIG || rk == R_STATUS || rk == R_MIG)
		      : put   ? (rk != R_INFO && rk != R_VERSION && rk != R_VMCONFIG &&
				 rk != R_STATUS && rk != R_VM && rk != R_MIG &&
				 (rk != R_MIG_PUT || !strcmp(id, "send") ||
				  !strcmp(id, "receive") || !strcmp(id, "cancel") ||
				  !strcmp(id, "resolve")))
		      : patch ? (rk == R_MACHINE || rk == R_VM || rk == R_DRIVE || rk == R_NET)
			      : false);
	if (!allowed)
		return http_fault(rs, 400, "Invalid request method and/or path: %s %.200s.",
				  rq->method_name, rq->path);

	if (get) {
		/* Answered here, never behind the vmm thread: the state is an
		 * atomic, the objects are read under view_lock. */
		json_t *o = NULL;
		pthread_mutex_lock(&a->view_lock);
		switch (rk) {
		case R_INFO:
			o = json_pack("{s:s,s:s,s:s,s:s}", "id", a->id, "state", state_name(a),
				      "vmm_version", a->version, "app_name", "ember");
			break;
		case R_VERSION:
			o = json_pack("{s:s}", "firecracker_version", a->version);
			break;
		case R_MACHINE:
			o = json_deep_copy(a->machine);
			break;
		case R_VMCONFIG:
			o = vm_config_json(a);
			break;
		case R_MIG:
			o = api_migration_json(a);
			break;
		default:
			o = status_json(a);
			break;
		}
		pthread_mutex_unlock(&a->view_lock);
		return http_reply_json(rs, 200, o);
	}
	if (api_busy(a, rs))
		return;

	/* A migration holds the VM: changes wait, but for its own calls. */
	if (mig_busy(&a->mig) && !(rk == R_MIG_PUT && (!strcmp(id, "cancel") ||
							 !strcmp(id, "resolve"))))
		return http_fault(rs, 400,
				  "Operation not allowed now: a migration is in progress (phase "
				  "%s); GETs are answered, changes wait until it completes.",
				  mig_phase_name((enum mig_phase)atomic_load(&a->mig.phase)));
	if (!rq->body_len)
		return http_fault(rs, 400, "Empty %s request.", put ? "PUT" : "PATCH");
	json_error_t jerr;
	json_t *body = json_loadb(rq->body, rq->body_len, JSON_REJECT_DUPLICATES, &jerr);
	if (!body)
		return http_fault(rs, 400, "invalid JSON: %s (line %d, column %d)", jerr.text,
				  jerr.line, jerr.column);
	char fault[API_FAULT_MAX];
	int r = 0;
	if (rk == R_MIG_PUT) {
		api_put_migration(a, id, body, rs);
		json_decref(body);
		return;
	}
	if (rk == R_ACTIONS || rk == R_VM || rk == R_SNAP_CREATE || rk == R_SNAP_LOAD) {
		static const struct {
			enum api_body kind;
			void (*fn)(struct api *a, json_t *body, struct http_resp *rs);
		} acts[] = {{API_BODY_ACTION, do_action},
			    {API_BODY_VM, patch_vm},
			    {API_BODY_SNAP_CREATE, api_put_snapshot_create},
			    {API_BODY_SNAP_LOAD, api_put_snapshot_load}};
		unsigned i = rk == R_ACTIONS ? 0 : rk == R_VM ? 1 : rk == R_SNAP_CREATE ? 2 : 3;
		r = api_check_body(body, acts[i].kind, fault, sizeof(fault));
		if (!r) {
			acts[i].fn(a, body, rs);
			json_decref(body);
			return;
		}
	} else if (patch && (rk == R_DRIVE || rk == R_NET)) {
		/* Firecracker: post-boot rate limiter (and path) updates */
		if (atomic_load(&a->state) == API_NOT_STARTED) {
			r = 400;
			snprintf(fault, sizeof(fault), "%s", api_pre_boot);
		} else {
			r = api_patch_limits(a, rk == R_NET, id, body, fault, sizeof(fault));
		}
	} else if (patch && rk == R_MACHINE && atomic_load(&a->state) != API_NOT_STARTED &&
		   json_object_get(body, "track_dirty_pages")) {
		/* ember: dirty page tracking on or off in the running VM (any
		 * other field keeps Firecracker's post-boot fault) */
		r = api_patch_machine(a, body, fault, sizeof(fault));
	} else if (atomic_load(&a->state) != API_NOT_STARTED) {
		r = 400;
		snprintf(fault, sizeof(fault), "%s", api_post_boot);
	} else {
		if (patch) { /* PATCH /machine-config: merge into what is there */
			json_t *mc = json_deep_copy(a->machine);
			r = api_check_body(body, API_BODY_MACHINE_PATCH, fault, sizeof(fault));
			if (!r && (!mc || json_object_update(mc, body))) {
				r = 500;
				snprintf(fault, sizeof(fault), "out of memory");
			}
			json_decref(body);
			body = mc;
		}
		if (!r)
			r = api_put_object(a, routes[k].object, id, body, fault, sizeof(fault));
	}
	json_decref(body);
	if (r)
		return http_fault(rs, r, "%s", fault);
	rs->status = 204;
}

void api_handle(void *opaque, const struct http_req *rq, struct http_resp *rs)
{
	struct api *a = opaque;
	bool get = rq->method == HTTP_GET;
	rs->status = 500;
	rs->body = NULL;
	/* Changes take a->lock (one at a time, and none while ember boots
	 * from its config file); reads do not. */
	if (!get)
		pthread_mutex_lock(&a->lock);
	a->req_fd = rq->fd;
	route(a, rq, rs);
	a->req_fd = NULL;
	if (rs->status == HTTP_DEFERRED) {
		a->job.ticket = rq->ticket;
		a->job.method = rq->method;
		snprintf(a->job.path, sizeof(a->job.path), "%s", rq->path);
		api_vmm_post(a, &a->job.call);
	}
	if (!get)
		pthread_mutex_unlock(&a->lock);
	atomic_fetch_add(get ? &a->n_get : rq->method == HTTP_PUT ? &a->n_put : &a->n_patch, 1);
	if (rs->status == HTTP_DEFERRED)
		return; /* counted and logged when done (api_job_done) */
	if (rs->status >= 400)
		atomic_fetch_add(&a->n_bad, 1);
	log_request(a, rq->method, rq->path, rs->status);
}
