/* PUT /migration/{send,receive,cancel,resolve} and GET /migration
 * (docs/migration.md): the API thread's checks, the target's work on the
 * vmm thread (its setup check and its build), and the ops the migration
 * thread (monitor/migrate/) calls back.  The stream's fd comes with the
 * request (SCM_RIGHTS), as a snapshot stream's does. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/hostfile.h"
#include "monitor/api/api.h"
#include "monitor/exitcodes.h"
#include "monitor/snap_records.h"
#include "monitor/vdevs.h"
#include "monitor/vm.h"
#include "vcpu/vcpu.h"

/* ---- the migration thread's calls: each done on the vmm thread ---- */

static int vmm(struct api *a, struct api_call *c, char *err, size_t errlen)
{
	pthread_mutex_lock(&a->lock);
	api_vmm_call(a, c);
	pthread_mutex_unlock(&a->lock);
	if (c->status)
		snprintf(err, errlen, "%s", c->fault);
	return c->status ? -EINVAL : 0;
}

static int t_setup(void *opaque, const void *setu, size_t len, struct gmem *mem, char *err,
		   size_t errlen)
{
	struct api_call c = {.op = API_OP_MIG_SETUP, .data = setu, .len = len, .mem = mem};
	return vmm(opaque, &c, err, errlen);
}

static int t_build(void *opaque, const void *state, size_t len, struct gmem *mem, bool partial,
		   char *err, size_t errlen)
{
	struct api_call c = {
	    .op = API_OP_MIG_BUILD, .data = state, .len = len, .mem = mem, .on = partial};
	return vmm(opaque, &c, err, errlen);
}

/* DSKB: drive id's destination, which the receive named (drive_overrides)
 * and asked to be copied into (copy_storage): opened for writing (this
 * process has not dropped yet, as for the build, which opens it again),
 * emptied and sized: all one hole. */
static int t_disk(void *opaque, const char *id, uint64_t size, int *fd, char *path,
		  size_t pathlen, char *err, size_t errlen)
{
	struct api *a = opaque;
	struct api_call c = {.op = API_OP_MIG_DISK, .drive = id, .max_bw = size, .fd = -1};
	int r = vmm(a, &c, err, errlen);
	if (!r) {
		*fd = c.fd;
		snprintf(path, pathlen, "%s", c.path); /* a->cfg's */
	}
	return r;
}

static int t_memfd(void *opaque, int fd, struct gmem *mem, char *err, size_t errlen)
{
	struct api_call c = {.op = API_OP_MIG_MEMFD, .fd = fd, .mem = mem};
	return vmm(opaque, &c, err, errlen);
}

static int t_go(void *opaque, char *err, size_t errlen)
{
	struct api *a = opaque;
	struct api_call c = {.op = API_OP_RESUME};
	/* Post-copy: announce while paused: once the guest runs the vmm
	 * thread may hold a device's lock waiting on a missing page, which
	 * only this (the migration) thread installs, after this returns. */
	bool post = a->vm->mem.partial;
	if (post)
		vdevs_announce(a->vm);
	int r = vmm(a, &c, err, errlen);
	if (!r && post) /* the restore's sweep, left for now */
		vdevs_kick(a->vm);
	else if (!r) /* switches learn the guest's MAC is here now */
		vdevs_announce(a->vm);
	return r;
}

static void t_fail(void *opaque, const char *why)
{
	struct api *a = opaque;
	struct api_call c = {.op = API_OP_FATAL};
	char ignore[API_FAULT_MAX];
	snprintf(c.fault, sizeof(c.fault), "migration failed: %.600s", why);
	(void)vmm(a, &c, ignore, sizeof(ignore));
}

static void s_state(void *opaque, bool paused)
{
	struct api *a = opaque;
	atomic_store(&a->state, paused ? API_PAUSED : API_RUNNING);
}

const struct mig_source_ops api_mig_source_ops = {.state = s_state};
const struct mig_target_ops api_mig_target_ops = {
    .setup = t_setup, .build = t_build, .disk = t_disk, .memfd = t_memfd, .go = t_go, .fail = t_fail};

/* ---- the vmm thread: the target's setup check and build ---- */

/* The guest's CPUID (SETU's CPID) against what KVM supports here. */
static int check_cpuid(struct api *a, const struct snap_reader *rd, char *err, size_t len)
{
	uint64_t n;
	const struct kvm_cpuid2 *guest = snap_r_find(rd, TAG_CPID, 0, &n);
	int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (kvm < 0)
		return snprintf(err, len, "/dev/kvm: %s", strerror(errno)), -errno;
	struct kvm_cpuid2 *host = NULL;
	bool hit;
	const char *cache = NULL;
	if (!a->no_cpuid_cache) {
		const char *env = getenv("EMBER_CPUID_CACHE");
		cache = env ? env : VCPU_CPUID_CACHE_DEFAULT;
	}
	int r = vcpu_supported_cpuid_cached(kvm, cache, &host, &hit);
	close(kvm);
	if (r)
		return snprintf(err, len, "KVM_GET_SUPPORTED_CPUID: %s", strerror(-r)), r;
	char missing[384];
	r = vcpu_cpuid_compatible(guest, host, missing, sizeof(missing));
	free(host);
	if (r)
		return snprintf(err, len, "target host lacks CPU features the guest was given: %s",
				missing),
		       -EINVAL;
	return 0;
}

void api_mig_setup(struct api *a, struct api_call *c)
{
	struct snap_reader rd;
	char err[CFG_ERR_MAX + VM_ERR_MAX];
	c->status = 400;
	int r = snap_r_open_mem(&rd, c->data, c->len, "SETU", err, sizeof(err));
	if (!r) {
		r = snap_check_setup(&rd, "SETU", a->cfg, err, sizeof(err));
		if (!r)
			r = api_load_overrides(a, a->cfg, a->mig_body, err, sizeof(err));
		if (!r)
			r = check_cpuid(a, &rd, err, sizeof(err));
		snap_r_close(&rd);
	}
	if (!r && (r = gmem_init(c->mem, a->cfg->mem_size)))
		snprintf(err, sizeof(err), "memory: cannot map %llu MiB: %s",
			 (unsigned long long)(a->cfg->mem_size >> 20), strerror(-r));
	if (r)
		snprintf(c->fault, sizeof(c->fault), "%.600s", err);
	else
		c->status = 0;
}

/* Whether the receive's copy_storage names drive id ("all": any). */
static bool copy_asked(json_t *body, const char *id)
{
	json_t *v = json_object_get(body, "copy_storage"), *e;
	size_t i;
	if (json_is_string(v))
		return !strcmp(json_string_value(v), "all");
	json_array_foreach(v, i, e) if (json_is_string(e) && !strcmp(json_string_value(e), id))
	    return true;
	return false;
}

static bool overridden(json_t *body, const char *id)
{
	json_t *arr = json_object_get(body, "drive_overrides"), *o;
	size_t i;
	json_array_foreach(arr, i, o)
	{
		const char *d = api_str(o, "drive_id");
		if (d && !strcmp(d, id))
			return true;
	}
	return false;
}

void api_mig_disk(struct api *a, struct api_call *c)
{
	const struct vm_config *cfg = a->cfg;
	unsigned i = 0;
	char why[CFG_PATH_MAX + 128];
	c->status = 400;
	while (i < cfg->nr_blocks && strcmp(cfg->blocks[i].name, c->drive))
		i++;
	if (i == cfg->nr_blocks) {
		snprintf(c->fault, sizeof(c->fault),
			 "drive \"%.64s\": the source copies it, its configuration has no such drive",
			 c->drive);
		return;
	}
	if (!copy_asked(a->mig_body, c->drive) || !overridden(a->mig_body, c->drive)) {
		snprintf(c->fault, sizeof(c->fault),
			 "drive \"%.64s\": the source copies it, and this receive did not ask for "
			 "its copy (\"copy_storage\" with a \"drive_overrides\" path for it): "
			 "refused, so that no file is written that was not meant to be",
			 c->drive);
		return;
	}
	const char *path = cfg->blocks[i].path;
	int fd = host_open(path, O_RDWR | O_CLOEXEC, HOST_REG, why, sizeof(why));
	if (fd < 0) {
		snprintf(c->fault, sizeof(c->fault), "drive \"%.64s\": %.500s", c->drive, why);
		return;
	}
	if (ftruncate(fd, 0) < 0 || ftruncate(fd, (off_t)c->max_bw) < 0) {
		snprintf(c->fault, sizeof(c->fault), "drive \"%.64s\": sizing %.400s to %llu bytes: %s",
			 c->drive, path, (unsigned long long)c->max_bw, strerror(errno));
		close(fd);
		return;
	}
	c->fd = fd;
	c->path = path;
	c->status = 0;
}

/* Same host: the source's memfd (c->fd, taken) over the RAM setup mapped. */
void api_mig_memfd(struct api *a, struct api_call *c)
{
	c->status = 0;
	if (gmem_adopt_memfd(c->mem, c->fd, c->fault, sizeof(c->fault))) {
		close(c->fd);
		c->status = 400;
	}
}

void api_mig_build(struct api *a, struct api_call *c)
{
	char err[CFG_ERR_MAX + VM_ERR_MAX];
	struct vm_snapshot *snap = NULL;
	c->status = 400;
	/* The state's configuration (checked again, whole), the request's
	 * overrides on it again, then the build over the RAM received. */
	if (vm_snapshot_open_mem(c->data, c->len, "migration state", a->cfg, &snap, err,
				 sizeof(err)) ||
	    api_load_overrides(a, a->cfg, a->mig_body, err, sizeof(err))) {
		snprintf(c->fault, sizeof(c->fault), "%.600s", err);
	} else {
		struct vm_build_opts o = {.snapshot = snap, .mem = c->mem, .paused = true};
		snap->mem_partial = c->on; /* MIG_BUILD: post-copy's RAM */
		c->status = 0;
		api_start_vm(a, c, &o, "migration");
	}
	vm_snapshot_close(snap);
}

/* ---- the API thread ---- */

static int take_fd(struct api *a, struct http_resp *rs)
{
	int *fd = a->req_fd;
	if (!fd || *fd < 0) {
		http_fault(rs, 400,
			   "the request carries no file descriptor for the migration stream (send "
			   "one with SCM_RIGHTS on the API socket)");
		return -1;
	}
	int r = *fd;
	*fd = -1;
	return r;
}

/* A non-negative integer field (absent: def). */
static int uint_field(json_t *body, const char *k, uint64_t def, uint64_t *out,
		      struct http_resp *rs)
{
	json_t *v = json_object_get(body, k);
	*out = def;
	if (!v)
		return 0;
	if (!json_is_integer(v) || json_integer_value(v) < 0) {
		http_fault(rs, 400, "%s: must be a non-negative integer", k);
		return -1;
	}
	*out = (uint64_t)json_integer_value(v);
	return 0;
}

/* Only the fields in known (NULL-terminated). */
static int only(json_t *body, const char *const *known, struct http_resp *rs)
{
	const char *k;
	json_t *v;
	if (!json_is_object(body))
		return http_fault(rs, 400, "the body must be a JSON object"), -1;
	json_object_foreach(body, k, v)
	{
		bool ok = false;
		for (unsigned i = 0; known[i]; i++)
			ok |= !strcmp(k, known[i]);
		if (!ok)
			return http_fault(rs, 400, "unknown field \"%.64s\"", k), -1;
	}
	return 0;
}

/* The overrides' shapes, as /snapshot/load takes them. */
static int check_overrides(json_t *body, struct http_resp *rs)
{
	static const char *const arrays[][3] = {{"drive_overrides", "drive_id", "path_on_host"},
						 {"network_overrides", "iface_id", "host_dev_name"}};
	for (unsigned i = 0; i < 2; i++) {
		json_t *arr = json_object_get(body, arrays[i][0]), *o;
		size_t k;
		if (arr && !json_is_array(arr))
			return http_fault(rs, 400, "%s: must be an array", arrays[i][0]), -1;
		json_array_foreach(arr, k, o)
		{
			if (!api_str(o, arrays[i][1]) || !api_str(o, arrays[i][2]))
				return http_fault(rs, 400, "%s: each needs \"%s\" and \"%s\"",
						  arrays[i][0], arrays[i][1], arrays[i][2]),
				       -1;
		}
	}
	json_t *v = json_object_get(body, "vsock_override");
	if (v && !json_is_null(v) && !api_str(v, "uds_path"))
		return http_fault(rs, 400, "vsock_override: needs \"uds_path\""), -1;
	v = json_object_get(body, "use_saved_paths");
	if (v && !json_is_boolean(v))
		return http_fault(rs, 400, "use_saved_paths: must be true or false"), -1;
	return 0;
}

/* "copy_storage": "all" or an array of drive ids (at most
 * SNAP_MIG_DISKS_MAX); into p when p is not NULL. */
static int copy_field(json_t *body, struct mig_params *p, struct http_resp *rs)
{
	json_t *v = json_object_get(body, "copy_storage"), *e;
	size_t i;
	if (p)
		p->nr_copy = 0, p->copy_all = false;
	if (!v)
		return 0;
	if (json_is_string(v) && !strcmp(json_string_value(v), "all")) {
		if (p)
			p->copy_all = true;
		return 0;
	}
	if (!json_is_array(v) || json_array_size(v) > SNAP_MIG_DISKS_MAX)
		return http_fault(rs, 400,
				  "copy_storage: must be \"all\" or an array of at most %u drive ids",
				  SNAP_MIG_DISKS_MAX),
		       -1;
	json_array_foreach(v, i, e)
	{
		const char *id = json_string_value(e);
		if (!id || !*id || strlen(id) > CFG_NAME_MAX)
			return http_fault(rs, 400, "copy_storage: each must be a drive id"), -1;
		for (size_t k = 0; k < i; k++)
			if (!strcmp(id, json_string_value(json_array_get(v, k))))
				return http_fault(rs, 400, "copy_storage: drive \"%s\" named twice",
						  id),
				       -1;
		if (p)
			snprintf(p->copy[p->nr_copy++], sizeof(p->copy[0]), "%s", id);
	}
	return 0;
}

/* body's string field name as an index into choices (NULL-ended; absent:
 * dflt, which must not be -1), or -1 with a 400 naming the choices in rs. */
static int choice_field(const json_t *body, const char *name, const char *const *choices,
			int dflt, struct http_resp *rs)
{
	const char *v = api_str(body, name);
	if (!json_object_get(body, name))
		return dflt;
	for (int i = 0; v && choices[i]; i++)
		if (!strcmp(v, choices[i]))
			return i;
	char list[160];
	size_t n = 0;
	for (int i = 0; choices[i] && n < sizeof(list); i++)
		n += (size_t)snprintf(list + n, sizeof(list) - n, "%s\"%s\"",
				      !i ? "" : choices[i + 1] ? ", " : " or ", choices[i]);
	http_fault(rs, 400, "%s: must be %s", name, list);
	return -1;
}

static void put_send(struct api *a, json_t *body, struct http_resp *rs)
{
	static const char *const known[] = {"downtime_ms", "max_bandwidth", "timeout_ms",
					    "converge", "verify", "mode", "copy_storage", NULL};
	struct mig_params p;
	char err[MIG_ERR_MAX];
	if (only(body, known, rs) || uint_field(body, "downtime_ms", 5, &p.downtime_ms, rs) ||
	    uint_field(body, "max_bandwidth", 0, &p.max_bandwidth, rs) ||
	    uint_field(body, "timeout_ms", 60000, &p.timeout_ms, rs))
		return;
	static const char *const converges[] = {"throttle", "postcopy", "none", NULL};
	static const char *const verifies[] = {"all", "dirty", NULL};
	/* "local": same host, RAM handed over as its memfd (mig_local.c);
	 * post-copy (docs/migration.md, "Post-copy"); "copy" is "precopy" */
	static const char *const modes[] = {"precopy", "local", "postcopy", "postcopy-now",
					    "copy", NULL};
	int conv = choice_field(body, "converge", converges, 0, rs);
	int verify = conv < 0 ? -1 : choice_field(body, "verify", verifies, 0, rs);
	int mode = verify < 0 ? -1 : choice_field(body, "mode", modes, 0, rs);
	if (mode < 0)
		return;
	p.throttle = conv == 0;
	p.converge_postcopy = conv == 1;
	p.verify_all = verify == 0;
	p.local = mode == 1;
	p.postcopy = mode == 2;
	p.postcopy_now = mode == 3;
	if (copy_field(body, &p, rs))
		return;
	if ((p.copy_all || p.nr_copy) && (p.local || p.postcopy || p.postcopy_now ||
					  p.converge_postcopy))
		return http_fault(rs, 400,
				  "copy_storage: disks are copied with pre-copy only (not with mode "
				  "\"local\", post-copy, or converge \"postcopy\")");
	enum api_state st = (enum api_state)atomic_load(&a->state);
	if (st != API_RUNNING && st != API_PAUSED)
		return http_fault(rs, 400, "migration/send: there is no running or paused VM here");
	if (p.local && mig_local_check(a->vm, err, sizeof(err)))
		return http_fault(rs, 400, "%s", err);
	int fd = take_fd(a, rs);
	if (fd < 0)
		return;
	if (mig_send(&a->mig, a->vm, fd, &p, err, sizeof(err))) {
		close(fd);
		return http_fault(rs, 400, "%s", err);
	}
	rs->status = 204;
}

static void put_receive(struct api *a, json_t *body, struct http_resp *rs)
{
	static const char *const known[] = {"drive_overrides", "network_overrides",
					    "vsock_override", "use_saved_paths", "copy_storage",
					    NULL};
	char err[MIG_ERR_MAX];
	if (only(body, known, rs) || check_overrides(body, rs) || copy_field(body, NULL, rs))
		return;
	if (api_refuse_unless_fresh(a, "Receiving a migration", rs))
		return;
	int fd = take_fd(a, rs);
	if (fd < 0)
		return;
	json_decref(a->mig_body);
	a->mig_body = json_incref(body);
	if (mig_receive(&a->mig, fd, err, sizeof(err))) {
		close(fd);
		return http_fault(rs, 400, "%s", err);
	}
	rs->status = 204;
}

void api_put_migration(struct api *a, const char *what, json_t *body, struct http_resp *rs)
{
	char err[MIG_ERR_MAX];
	if (!strcmp(what, "send"))
		return put_send(a, body, rs);
	if (!strcmp(what, "receive"))
		return put_receive(a, body, rs);
	if (!strcmp(what, "cancel")) {
		static const char *const none[] = {NULL};
		if (only(body, none, rs))
			return;
		if (mig_cancel(&a->mig, err, sizeof(err)))
			return http_fault(rs, 400, "%s", err);
		rs->status = 204;
		return;
	}
	/* resolve */
	static const char *const known[] = {"outcome", NULL};
	static const char *const outcomes[] = {"resume", "stop", NULL};
	if (only(body, known, rs))
		return;
	int o = choice_field(body, "outcome", outcomes, -2, rs); /* -2: missing */
	if (o == -2)
		return http_fault(rs, 400, "outcome: must be \"resume\" or \"stop\"");
	if (o < 0)
		return;
	if (mig_resolve(&a->mig, o == 0, err, sizeof(err)))
		return http_fault(rs, 400, "%s", err);
	rs->status = 204;
}

json_t *api_migration_json(struct api *a)
{
	struct mig_status st;
	mig_get_status(&a->mig, &st);
	static const char *const roles[] = {"none", "source", "target"};
	json_t *j = json_pack("{s:s,s:s,s:I,s:I,s:I,s:I,s:I,s:I,s:f,s:i,s:I,s:o,s:o,s:I,s:I}", "role",
			 roles[st.role], "phase", mig_phase_name(st.phase), "round",
			 (json_int_t)st.round, "bytes_sent", (json_int_t)st.bytes_sent,
			 "bytes_remaining", (json_int_t)st.bytes_remaining, "pages_sent",
			 (json_int_t)st.pages_sent, "dirty_rate_bps", (json_int_t)st.dirty_rate_bps,
			 "bandwidth_bps", (json_int_t)st.bandwidth_bps, "expected_downtime_ms",
			 (double)st.expected_downtime_us / 1000.0, "throttle_pct",
			 (int)st.throttle_pct, "total_ms", (json_int_t)st.total_ms, "downtime_ms",
			 st.downtime_us < 0 ? json_null() : json_real((double)st.downtime_us / 1000.0),
			 "error", st.error[0] ? json_string(st.error) : json_null(), "pages_missing",
			 (json_int_t)st.pages_missing, "faults_served", (json_int_t)st.faults_served);
	if (j && st.disk_total) /* disks copied with the VM */
		json_object_set_new(j, "disks",
				    json_pack("{s:I,s:I,s:I}", "bytes_total",
					      (json_int_t)st.disk_total, "bytes_copied",
					      (json_int_t)st.disk_sent, "bytes_dirty",
					      (json_int_t)st.disk_remaining));
	return j;
}
