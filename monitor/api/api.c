/* The API's routes: Firecracker's endpoints, bodies, status codes and
 * pre-/post-boot rules (src/firecracker/swagger/firecracker.yaml), on top
 * of ember's one validator.  An accepted object is kept as its JSON; the
 * whole vm_config is rebuilt from those objects through cfg_set() on
 * every change, so a refused value changes nothing and its message is
 * cfg_set's, prefixed with the JSON field's name. */
#include <errno.h>
#include <fcntl.h>
#include <http_parser.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "monitor/api/api.h"
#include "monitor/vm.h"

const char api_post_boot[] = "The requested operation is not supported after starting the microVM.";
const char api_pre_boot[] = "The requested operation is not supported before starting the microVM.";

/* ---- checking a JSON object against its swagger definition ---- */

/* T_OBJ, T_OBJS: an object, an array of objects, whose fields sub_fields()
 * names by the key. */
enum ftype { T_STR, T_BOOL, T_UINT, T_LIMITER, T_BUCKET, T_OBJ, T_OBJS };

struct field {
	const char *name;
	enum ftype type;
	bool required;
};

static const struct field f_boot[] = {{"kernel_image_path", T_STR, true},
				      {"boot_args", T_STR, false},
				      {"initrd_path", T_STR, false},
				      {NULL, 0, 0}};
static const struct field f_machine[] = {{"vcpu_count", T_UINT, true},
					 {"mem_size_mib", T_UINT, true},
					 {"smt", T_BOOL, false},
					 {"track_dirty_pages", T_BOOL, false},
					 {"cpu_template", T_STR, false},
					 {"huge_pages", T_STR, false},
					 /* ember's: "anonymous" (default) or "memfd" */
					 {"mem_backend", T_STR, false},
					 {NULL, 0, 0}};
/* PATCH /machine-config: the same fields, none required */
static const struct field f_machine_patch[] = {{"vcpu_count", T_UINT, false},
					       {"mem_size_mib", T_UINT, false},
					       {"smt", T_BOOL, false},
					       {"track_dirty_pages", T_BOOL, false},
					       {"cpu_template", T_STR, false},
					       {"huge_pages", T_STR, false},
					       {"mem_backend", T_STR, false},
					       {NULL, 0, 0}};
static const struct field f_drive[] = {
    {"drive_id", T_STR, true},		{"is_root_device", T_BOOL, true},
    {"path_on_host", T_STR, false},	{"is_read_only", T_BOOL, false},
    {"partuuid", T_STR, false},		{"cache_type", T_STR, false},
    {"rate_limiter", T_LIMITER, false}, {"io_engine", T_STR, false},
    {"socket", T_STR, false},		{NULL, 0, 0}};
static const struct field f_net[] = {{"iface_id", T_STR, true},
				     {"host_dev_name", T_STR, true},
				     {"guest_mac", T_STR, false},
				     {"mtu", T_UINT, false},
				     {"rx_rate_limiter", T_LIMITER, false},
				     {"tx_rate_limiter", T_LIMITER, false},
				     {NULL, 0, 0}};
static const struct field f_vsock[] = {{"guest_cid", T_UINT, true},
				       {"uds_path", T_STR, true},
				       {"vsock_id", T_STR, false},
				       {NULL, 0, 0}};
static const struct field f_entropy[] = {{"rate_limiter", T_LIMITER, false}, {NULL, 0, 0}};
static const struct field f_logger[] = {
    {"log_path", T_STR, false},		{"level", T_STR, false},  {"show_level", T_BOOL, false},
    {"show_log_origin", T_BOOL, false}, {"module", T_STR, false}, {NULL, 0, 0}};
static const struct field f_metrics[] = {{"metrics_path", T_STR, true}, {NULL, 0, 0}};
static const struct field f_action[] = {{"action_type", T_STR, true}, {NULL, 0, 0}};
static const struct field f_vm[] = {{"state", T_STR, true}, {NULL, 0, 0}};
static const struct field f_limiter[] = {
    {"bandwidth", T_BUCKET, false}, {"ops", T_BUCKET, false}, {NULL, 0, 0}};
static const struct field f_bucket[] = {{"size", T_UINT, true},
					{"one_time_burst", T_UINT, false},
					{"refill_time", T_UINT, true},
					{NULL, 0, 0}};
/* The paths are required unless "stream" (ember's): api_snapshot.c says so. */
static const struct field f_snap_create[] = {{"snapshot_path", T_STR, false},
					     {"mem_file_path", T_STR, false},
					     {"snapshot_type", T_STR, false},
					     {"version", T_STR, false},
					     {"stream", T_BOOL, false},
					     {NULL, 0, 0}};
static const struct field f_snap_load[] = {
    {"snapshot_path", T_STR, true},	  {"mem_backend", T_OBJ, false},
    {"mem_file_path", T_STR, false},	  {"enable_diff_snapshots", T_BOOL, false},
    {"track_dirty_pages", T_BOOL, false}, {"resume_vm", T_BOOL, false},
    {"network_overrides", T_OBJS, false}, {"vsock_override", T_OBJ, false},
    {"clock_realtime", T_BOOL, false},
    /* ember's: a snapshot's host paths are confirmed by its loader */
    {"drive_overrides", T_OBJS, false},	  {"use_saved_paths", T_BOOL, false},
    {NULL, 0, 0}};
static const struct field f_mem_backend[] = {
    {"backend_type", T_STR, true}, {"backend_path", T_STR, true}, {NULL, 0, 0}};
static const struct field f_net_override[] = {
    {"iface_id", T_STR, true}, {"host_dev_name", T_STR, true}, {NULL, 0, 0}};
static const struct field f_vsock_override[] = {{"uds_path", T_STR, true}, {NULL, 0, 0}};
static const struct field f_drive_override[] = {
    {"drive_id", T_STR, true}, {"path_on_host", T_STR, true}, {NULL, 0, 0}};
static const struct field f_options[] = {
    {"name", T_STR, false}, {"timeout", T_STR, false}, {"irqchip", T_STR, false}, {NULL, 0, 0}};

static const struct field *sub_fields(const char *key)
{
	return !strcmp(key, "mem_backend")	   ? f_mem_backend
	       : !strcmp(key, "network_overrides") ? f_net_override
	       : !strcmp(key, "drive_overrides")   ? f_drive_override
						   : f_vsock_override;
}

static const char *type_name(const json_t *v)
{
	switch (json_typeof(v)) {
	case JSON_OBJECT:
		return "an object";
	case JSON_ARRAY:
		return "an array";
	case JSON_STRING:
		return "a string";
	case JSON_INTEGER:
		return "an integer";
	case JSON_REAL:
		return "a number with a fraction";
	case JSON_TRUE:
	case JSON_FALSE:
		return "a boolean";
	default:
		return "null";
	}
}

/* o must be an object whose keys are all in f, of the right types, with
 * every required one present (null counts as absent).  where: the path
 * of o for messages ("" at the top, else "rate_limiter."). */
static int check(const json_t *o, const struct field *f, const char *where, char *fault, size_t len)
{
	const char *key;
	json_t *v;
	if (!json_is_object(o)) {
		snprintf(fault, len, "%s%sexpected a JSON object, not %s", where,
			 *where ? ": " : "", type_name(o));
		return 400;
	}
	json_object_foreach((json_t *)o, key, v)
	{
		const struct field *k = f;
		while (k->name && strcmp(k->name, key))
			k++;
		if (!k->name) {
			char known[256];
			size_t n = 0;
			known[0] = '\0';
			for (k = f; k->name && n < sizeof(known); k++)
				n += (size_t)snprintf(known + n, sizeof(known) - n, "%s%s",
						      k == f ? "" : ", ", k->name);
			snprintf(fault, len, "unknown field \"%s%.64s\" (known: %s)", where, key,
				 known);
			return 400;
		}
		if (json_is_null(v))
			continue;
		const char *want = NULL;
		switch (k->type) {
		case T_STR:
			want = json_is_string(v) ? NULL : "a string";
			break;
		case T_BOOL:
			want = json_is_boolean(v) ? NULL : "a boolean";
			break;
		case T_UINT:
			want = json_is_integer(v) && json_integer_value(v) >= 0
				   ? NULL
				   : "a non-negative integer";
			break;
		case T_LIMITER:
		case T_BUCKET:
		case T_OBJ: {
			char sub[96];
			snprintf(sub, sizeof(sub), "%s%s.", where, key);
			int r = check(v,
				      k->type == T_LIMITER  ? f_limiter
				      : k->type == T_BUCKET ? f_bucket
							    : sub_fields(key),
				      sub, fault, len);
			if (r)
				return r;
			break;
		}
		case T_OBJS: {
			size_t i;
			json_t *e;
			if (!json_is_array(v)) {
				want = "an array";
				break;
			}
			json_array_foreach(v, i, e)
			{
				char sub[96];
				snprintf(sub, sizeof(sub), "%s%s[%zu].", where, key, i);
				int r = check(e, sub_fields(key), sub, fault, len);
				if (r)
					return r;
			}
			break;
		}
		}
		if (want) {
			snprintf(fault, len, "%s%s: must be %s, not %s", where, key, want,
				 type_name(v));
			return 400;
		}
	}
	for (const struct field *k = f; k->name; k++) {
		const json_t *got = json_object_get(o, k->name);
		if (k->required && (!got || json_is_null(got))) {
			snprintf(fault, len, "missing field \"%s%s\"", where, k->name);
			return 400;
		}
	}
	return 0;
}

/* ---- from the accepted objects to a vm_config, through cfg_set ---- */

static const char *str(const json_t *o, const char *k)
{
	return json_string_value(json_object_get(o, k));
}

static bool has(const json_t *o, const char *k)
{
	const json_t *v = json_object_get(o, k);
	return v && !json_is_null(v);
}

static int set(struct vm_config *c, const char *sec, const char *key, const char *val,
	       const char *field, char *err, size_t len)
{
	char e[CFG_ERR_MAX];
	if (cfg_set(c, sec, key, val, e, sizeof(e))) {
		snprintf(err, len, "%s: %s", field, e);
		return -EINVAL;
	}
	return 0;
}

static int set_u(struct vm_config *c, const char *sec, const char *key, const char *fmt,
		 json_int_t v, const char *field, char *err, size_t len)
{
	char buf[32];
	snprintf(buf, sizeof(buf), fmt, (long long)v);
	return set(c, sec, key, buf, field, err, len);
}

/* A RateLimiter onto the limiter keys (prefix "", "rx_" or "tx_"):
 * sizes in bytes or operations, refill as a duration in ms. */
static int set_limiter(struct vm_config *c, const char *sec, const char *prefix, const json_t *rl,
		       const char *field, char *err, size_t len)
{
	static const char *const buckets[] = {"bandwidth", "ops"};
	if (!rl || json_is_null(rl))
		return 0;
	for (int i = 0; i < 2; i++) {
		const json_t *b = json_object_get(rl, buckets[i]);
		if (!b || json_is_null(b))
			continue;
		static const struct {
			const char *json, *key, *fmt;
		} m[] = {{"size", "size", "%lld"},
			 {"one_time_burst", "burst", "%lld"},
			 {"refill_time", "refill", "%lldms"}};
		for (int j = 0; j < 3; j++) {
			const json_t *v = json_object_get(b, m[j].json);
			if (!v || json_is_null(v))
				continue;
			char key[48], what[96];
			snprintf(key, sizeof(key), "%s%s_%s", prefix, buckets[i], m[j].key);
			snprintf(what, sizeof(what), "%s.%s.%s", field, buckets[i], m[j].json);
			if (set_u(c, sec, key, m[j].fmt, json_integer_value(v), what, err, len))
				return -EINVAL;
		}
	}
	return 0;
}

static int apply_drive(struct vm_config *c, const json_t *d, char *err, size_t len)
{
	char sec[CFG_NAME_MAX + 8];
	const char *id = str(d, "drive_id");
	snprintf(sec, sizeof(sec), "drive.%s", id);
	if (has(d, "partuuid"))
		return snprintf(err, len,
				"partuuid: not supported by ember (the root drive is "
				"/dev/vda)"),
		       -EINVAL;
	if (has(d, "socket"))
		return snprintf(err, len, "socket: vhost-user drives are not supported by ember"),
		       -EINVAL;
	if (has(d, "io_engine") && strcmp(str(d, "io_engine"), "Sync"))
		return snprintf(err, len, "io_engine: \"%.32s\" is not supported (only \"Sync\")",
				str(d, "io_engine")),
		       -EINVAL;
	if (has(d, "cache_type") && strcmp(str(d, "cache_type"), "Unsafe") &&
	    strcmp(str(d, "cache_type"), "Writeback"))
		return snprintf(err, len, "cache_type: \"%.32s\" is not Unsafe or Writeback",
				str(d, "cache_type")),
		       -EINVAL;
	if (!has(d, "path_on_host"))
		return snprintf(err, len, "missing field \"path_on_host\""), -EINVAL;
	if (set(c, sec, "path", str(d, "path_on_host"), "path_on_host", err, len) ||
	    set(c, sec, "read_only",
		json_is_true(json_object_get(d, "is_read_only")) ? "true" : "false", "is_read_only",
		err, len))
		return -EINVAL;
	return set_limiter(c, sec, "", json_object_get(d, "rate_limiter"), "rate_limiter", err,
			   len);
}

static int apply_net(struct vm_config *c, const json_t *n, char *err, size_t len)
{
	char sec[CFG_NAME_MAX + 8];
	snprintf(sec, sizeof(sec), "net.%s", str(n, "iface_id"));
	if (has(n, "mtu"))
		return snprintf(err, len, "mtu: not supported by ember (the MTU is 1500)"), -EINVAL;
	if (set(c, sec, "tap", str(n, "host_dev_name"), "host_dev_name", err, len) ||
	    (has(n, "guest_mac") && set(c, sec, "mac", str(n, "guest_mac"), "guest_mac", err, len)))
		return -EINVAL;
	return set_limiter(c, sec, "rx_", json_object_get(n, "rx_rate_limiter"), "rx_rate_limiter",
			   err, len) ||
		       set_limiter(c, sec, "tx_", json_object_get(n, "tx_rate_limiter"),
				   "tx_rate_limiter", err, len)
		   ? -EINVAL
		   : 0;
}

static int apply_machine(struct vm_config *c, const json_t *m, char *err, size_t len)
{
	if (json_is_true(json_object_get(m, "smt")))
		return snprintf(err, len, "smt: ember does not support SMT (only false)"), -EINVAL;
	if (has(m, "cpu_template") && strcmp(str(m, "cpu_template"), "None"))
		return snprintf(err, len,
				"cpu_template: \"%.32s\" is not supported (only \"None\")",
				str(m, "cpu_template")),
		       -EINVAL;
	if (has(m, "huge_pages") && strcmp(str(m, "huge_pages"), "None"))
		return snprintf(err, len, "huge_pages: \"%.32s\" is not supported (only \"None\")",
				str(m, "huge_pages")),
		       -EINVAL;
	if (has(m, "mem_backend") && strcmp(str(m, "mem_backend"), "anonymous") &&
	    strcmp(str(m, "mem_backend"), "memfd"))
		return snprintf(err, len,
				"mem_backend: \"%.32s\" is not supported (\"anonymous\" or \"memfd\")",
				str(m, "mem_backend")),
		       -EINVAL;
	if (set_u(c, "vm", "vcpus", "%lld", json_integer_value(json_object_get(m, "vcpu_count")),
		  "vcpu_count", err, len))
		return -EINVAL;
	json_int_t mib = json_integer_value(json_object_get(m, "mem_size_mib"));
	if (mib > (json_int_t)(CFG_MAX_MEM >> 20))
		return snprintf(err, len, "mem_size_mib: %lld is above the maximum %llu",
				(long long)mib, (unsigned long long)(CFG_MAX_MEM >> 20)),
		       -EINVAL;
	return set_u(c, "vm", "memory", "%lldM", mib, "mem_size_mib", err, len);
}

int api_build_config(struct api *a, struct vm_config *c, char *err, size_t len)
{
	const json_t *o = a->boot_source;
	bool root_ro = false, root = false;
	size_t i;
	json_t *d;

	cfg_defaults(c);
	if (set(c, "vm", "memory", "128M", "mem_size_mib", err, len)) /* Firecracker's default */
		return -EINVAL;
	const char *opt_keys[] = {"name", "timeout", "irqchip"};
	for (int k = 0; k < 3; k++)
		if (a->options && has(a->options, opt_keys[k]) &&
		    set(c, "vm", opt_keys[k], str(a->options, opt_keys[k]), opt_keys[k], err, len))
			return -EINVAL;
	if (o &&
	    (set(c, "vm", "kernel", str(o, "kernel_image_path"), "kernel_image_path", err, len) ||
	     (has(o, "initrd_path") &&
	      set(c, "vm", "initrd", str(o, "initrd_path"), "initrd_path", err, len)) ||
	     (has(o, "boot_args") &&
	      set(c, "vm", "cmdline", str(o, "boot_args"), "boot_args", err, len))))
		return -EINVAL;
	if (apply_machine(c, a->machine, err, len))
		return -EINVAL;
	/* The root drive first (/dev/vda), then the others in order. */
	for (int pass = 0; pass < 2; pass++)
		json_array_foreach(a->drives, i, d)
		{
			bool is_root = json_is_true(json_object_get(d, "is_root_device"));
			if (is_root != (pass == 0))
				continue;
			if (apply_drive(c, d, err, len))
				return -EINVAL;
			if (is_root) {
				root = true;
				root_ro = json_is_true(json_object_get(d, "is_read_only"));
			}
		}
	if (root) {
		char line[CFG_CMDLINE_MAX + 32];
		snprintf(line, sizeof(line), "%s%sroot=/dev/vda%s", c->cmdline,
			 c->cmdline_len ? " " : "", root_ro ? " ro" : "");
		if (set(c, "vm", "cmdline", line, "boot_args", err, len))
			return -EINVAL;
	}
	json_array_foreach(a->nets, i, d) if (apply_net(c, d, err, len)) return -EINVAL;
	if (a->vsock && (set_u(c, "vsock", "cid", "%lld",
			       json_integer_value(json_object_get(a->vsock, "guest_cid")),
			       "guest_cid", err, len) ||
			 set(c, "vsock", "uds", str(a->vsock, "uds_path"), "uds_path", err, len)))
		return -EINVAL;
	if (a->entropy && (set(c, "rng", "bandwidth_size", "0", "entropy", err, len) ||
			   set_limiter(c, "rng", "", json_object_get(a->entropy, "rate_limiter"),
				       "rate_limiter", err, len)))
		return -EINVAL;
	return 0;
}

/* ---- PUT of a configuration object ---- */

/* Whether the vmm thread can open path (as the VM will): Firecracker
 * refuses a missing file at PUT time, not at InstanceStart. */
static int check_file(struct api *a, const char *field, const char *path, int flags, int *keep,
		      char *fault, size_t len)
{
	struct api_call call = {.op = API_OP_OPEN, .path = path, .flags = flags | O_CLOEXEC};
	api_vmm_call(a, &call);
	if (call.status) {
		snprintf(fault, len, "%s: %s", field, call.fault);
		return 400;
	}
	if (keep)
		*keep = call.fd;
	else
		close(call.fd);
	return 0;
}

static json_t *machine_defaults(void)
{
	return json_pack("{s:i,s:i,s:b,s:b,s:s}", "vcpu_count", 1, "mem_size_mib", 128, "smt", 0,
			 "track_dirty_pages", 0, "huge_pages", "None");
}

static const struct {
	const char *what;
	const struct field *fields;
	const char *id_field; /* drives and network interfaces */
} objects[] = {
    {"boot-source", f_boot, NULL},	{"machine-config", f_machine, NULL},
    {"drives", f_drive, "drive_id"},	{"network-interfaces", f_net, "iface_id"},
    {"vsock", f_vsock, NULL},		{"entropy", f_entropy, NULL},
    {"logger", f_logger, NULL},		{"metrics", f_metrics, NULL},
    {"ember-options", f_options, NULL},
};

/* Replace (or add) the object with this id in an array of objects. */
static json_t *array_put(json_t *arr, const char *id_field, const char *id, json_t *o, size_t *at)
{
	size_t i;
	json_t *d;
	json_array_foreach(arr, i, d) if (!strcmp(str(d, id_field), id))
	{
		json_t *old = json_incref(d);
		*at = i;
		json_array_set(arr, i, o);
		return old;
	}
	*at = json_array_size(arr);
	json_array_append(arr, o);
	return NULL;
}

static int put_logger_metrics(struct api *a, bool logger, json_t *body, char *fault, size_t len)
{
	if (logger ? a->logger != NULL : a->metrics != NULL) {
		snprintf(fault, len, "Reinitialization of %s not allowed.",
			 logger ? "logger" : "metrics");
		return 400;
	}
	static const char *const levels[] = {"off", "error", "warning", "info", "debug", "trace"};
	int level = 3;
	if (logger && has(body, "level")) {
		const char *l = str(body, "level");
		for (level = 0; level < 6 && strcasecmp(l, levels[level]); level++)
			;
		if (level == 6) {
			snprintf(fault, len,
				 "level: \"%.32s\" is not one of Error, Warning, Info, Debug, "
				 "Trace, Off",
				 l);
			return 400;
		}
	}
	const char *field = logger ? "log_path" : "metrics_path";
	int fd = -1;
	/* Firecracker's contract: the file or named pipe exists already. */
	if (has(body, field) && check_file(a, field, str(body, field),
					   O_WRONLY | O_APPEND | O_NONBLOCK, &fd, fault, len))
		return 400;
	pthread_mutex_lock(&a->view_lock);
	if (logger) {
		a->logger = json_incref(body);
		a->log_fd = fd;
		a->log_level = level;
		a->log_show_level = json_is_true(json_object_get(body, "show_level"));
	} else {
		a->metrics = json_incref(body);
		a->metrics_fd = fd;
	}
	pthread_mutex_unlock(&a->view_lock);
	return 0;
}

int api_put_object(struct api *a, const char *what, const char *id, json_t *body, char *fault,
		   size_t len)
{
	unsigned k;
	for (k = 0; k < sizeof(objects) / sizeof(objects[0]); k++)
		if (!strcmp(objects[k].what, what))
			break;
	if (k == sizeof(objects) / sizeof(objects[0])) {
		snprintf(fault, len, "unknown configuration object \"%.64s\"", what);
		return 400;
	}
	int r = check(body, objects[k].fields, "", fault, len);
	if (r)
		return r;
	if (objects[k].id_field && id && strcmp(id, str(body, objects[k].id_field))) {
		snprintf(fault, len, "The id from the path does not match the id from the body!");
		return 400;
	}
	if (!strcmp(what, "logger") || !strcmp(what, "metrics"))
		return put_logger_metrics(a, !strcmp(what, "logger"), body, fault, len);

	/* Files must open now, as the VM will open them. */
	if (!strcmp(what, "boot-source") &&
	    (check_file(a, "kernel_image_path", str(body, "kernel_image_path"), O_RDONLY, NULL,
			fault, len) ||
	     (has(body, "initrd_path") &&
	      check_file(a, "initrd_path", str(body, "initrd_path"), O_RDONLY, NULL, fault, len))))
		return 400;
	if (!strcmp(what, "drives") && has(body, "path_on_host") &&
	    check_file(a, "path_on_host", str(body, "path_on_host"),
		       json_is_true(json_object_get(body, "is_read_only")) ? O_RDONLY : O_RDWR,
		       NULL, fault, len))
		return 400;

	json_t **slot = NULL, *old = NULL, *o = json_incref(body);
	size_t at = 0;
	bool added = false;
	/* From here to the end the objects change: GETs wait (briefly). */
	pthread_mutex_lock(&a->view_lock);
	if (!strcmp(what, "drives") || !strcmp(what, "network-interfaces")) {
		json_t *arr = what[0] == 'd' ? a->drives : a->nets;
		const char *idf = objects[k].id_field;
		if (what[0] == 'd' && json_is_true(json_object_get(body, "is_root_device"))) {
			size_t i;
			json_t *d;
			json_array_foreach(
			    arr, i, d) if (strcmp(str(d, idf), str(body, idf)) &&
					   json_is_true(json_object_get(d, "is_root_device")))
			{
				json_decref(o);
				pthread_mutex_unlock(&a->view_lock);
				snprintf(fault, len, "A root block device already exists!");
				return 400;
			}
		}
		old = array_put(arr, idf, str(body, idf), o, &at);
		added = !old;
		json_decref(o);
	} else {
		if (!strcmp(what, "boot-source"))
			slot = &a->boot_source;
		else if (!strcmp(what, "machine-config"))
			slot = &a->machine;
		else if (!strcmp(what, "vsock"))
			slot = &a->vsock;
		else if (!strcmp(what, "entropy"))
			slot = &a->entropy;
		else
			slot = &a->options;
		if (slot == &a->machine) { /* PUT: absent optional fields go back to defaults */
			json_t *m = machine_defaults();
			json_object_update(m, body);
			json_decref(o);
			o = m;
		}
		old = *slot;
		*slot = o;
	}

	char err[API_FAULT_MAX];
	if (api_build_config(a, a->cfg, err, sizeof(err)) == 0) {
		json_decref(old);
		/* Firecracker: a snapshot loads only into an unconfigured VM */
		if (strcmp(what, "ember-options"))
			a->configured = true;
		pthread_mutex_unlock(&a->view_lock);
		return 0;
	}
	/* Refused: put back what was there. */
	if (!strcmp(what, "drives") || !strcmp(what, "network-interfaces")) {
		json_t *arr = what[0] == 'd' ? a->drives : a->nets;
		if (added)
			json_array_remove(arr, at);
		else
			json_array_set_new(arr, at, old);
	} else {
		json_decref(*slot);
		*slot = old;
	}
	pthread_mutex_unlock(&a->view_lock);
	snprintf(fault, len, "%s", err);
	return 400;
}

int api_init(struct api *a)
{
	memset(a, 0, sizeof(*a));
	pthread_mutex_init(&a->lock, NULL);
	pthread_mutex_init(&a->view_lock, NULL);
	a->log_fd = a->metrics_fd = -1;
	a->id = "anonymous-instance";
	a->machine = machine_defaults();
	a->drives = json_array();
	a->nets = json_array();
	a->cfg = malloc(sizeof(*a->cfg));
	if (!a->machine || !a->drives || !a->nets || !a->cfg)
		return -ENOMEM;
	cfg_defaults(a->cfg);
	return 0;
}

const char *api_str(const json_t *o, const char *k)
{
	return str(o, k);
}

int api_check_body(const json_t *body, enum api_body kind, char *fault, size_t len)
{
	static const struct field *const defs[] = {[API_BODY_ACTION] = f_action,
						   [API_BODY_VM] = f_vm,
						   [API_BODY_MACHINE_PATCH] = f_machine_patch,
						   [API_BODY_SNAP_CREATE] = f_snap_create,
						   [API_BODY_SNAP_LOAD] = f_snap_load};
	return check(body, defs[kind], "", fault, len);
}

/* ---- PATCH of a running device's rate limiters ---- */

static const struct field f_drive_patch[] = {{"drive_id", T_STR, true},
					     {"path_on_host", T_STR, false},
					     {"rate_limiter", T_LIMITER, false},
					     {NULL, 0, 0}};
static const struct field f_net_patch[] = {{"iface_id", T_STR, true},
					   {"rx_rate_limiter", T_LIMITER, false},
					   {"tx_rate_limiter", T_LIMITER, false},
					   {NULL, 0, 0}};

/* A given bucket replaces the old one whole: its unspecified fields are 0. */
static void clear_given(struct cfg_rate *r, const json_t *rl)
{
	if (!rl || json_is_null(rl))
		return;
	const json_t *b = json_object_get(rl, "bandwidth");
	if (b && !json_is_null(b))
		r->bw_size = r->bw_burst = r->bw_refill_ms = 0;
	b = json_object_get(rl, "ops");
	if (b && !json_is_null(b))
		r->ops_size = r->ops_burst = r->ops_refill_ms = 0;
}

int api_patch_limits(struct api *a, bool net, const char *id, json_t *body, char *fault,
		     size_t len)
{
	static struct vm_config tmp; /* API thread, under a->lock */
	int r = check(body, net ? f_net_patch : f_drive_patch, "", fault, len);
	if (r)
		return r;
	const char *idf = net ? "iface_id" : "drive_id";
	if (strcmp(str(body, idf), id)) {
		snprintf(fault, len, "%s: \"%s\" is not the path's \"%s\"", idf, str(body, idf), id);
		return 400;
	}
	if (has(body, "path_on_host")) {
		snprintf(fault, len, "path_on_host: ember cannot open a new file once its sandbox is "
				     "closed; snapshot and restore with --drive %s,path=... instead", id);
		return 400;
	}
	tmp = *a->cfg;
	unsigned n = net ? tmp.nr_nets : tmp.nr_blocks, i;
	for (i = 0; i < n; i++)
		if (!strcmp(net ? tmp.nets[i].name : tmp.blocks[i].name, id))
			break;
	if (i == n) {
		snprintf(fault, len, "%s: no %s \"%s\" in this microVM", idf,
			 net ? "network interface" : "drive", id);
		return 400;
	}
	char sec[CFG_NAME_MAX + 8], err[CFG_ERR_MAX];
	snprintf(sec, sizeof(sec), "%s.%s", net ? "net" : "drive", id);
	const char *fields[2] = {net ? "rx_rate_limiter" : "rate_limiter", "tx_rate_limiter"};
	struct cfg_rate *rates[2] = {net ? &tmp.nets[i].rx_rate : &tmp.blocks[i].rate,
				     net ? &tmp.nets[i].tx_rate : NULL};
	for (int k = 0; k < (net ? 2 : 1); k++) {
		const json_t *rl = json_object_get(body, fields[k]);
		clear_given(rates[k], rl);
		if (set_limiter(&tmp, sec, net ? (k ? "tx_" : "rx_") : "", rl, fields[k], err,
				sizeof(err))) {
			snprintf(fault, len, "%s", err);
			return 400;
		}
	}
	struct api_call call = {.op = API_OP_LIMITS,
				.net = net,
				.index = i,
				.rate_a = rates[0],
				.rate_b = rates[1]};
	api_vmm_call(a, &call);
	if (call.status) {
		snprintf(fault, len, "%s", call.fault);
		return call.status;
	}
	*a->cfg = tmp;
	return 0;
}

/* ---- PATCH /machine-config after boot (ember's extension) ---- */

int api_patch_machine(struct api *a, json_t *body, char *fault, size_t len)
{
	int r = check(body, f_machine_patch, "", fault, len);
	if (r)
		return r;
	const char *k;
	json_t *v;
	json_object_foreach(body, k, v)
	{
		if (strcmp(k, "track_dirty_pages")) {
			snprintf(fault, len, "%s: only track_dirty_pages may change after boot", k);
			return 400;
		}
	}
	struct api_call call = {.op = API_OP_TRACK_DIRTY,
				.on = json_is_true(json_object_get(body, "track_dirty_pages"))};
	api_vmm_call(a, &call);
	if (call.status) {
		snprintf(fault, len, "%s", call.fault);
		return call.status;
	}
	pthread_mutex_lock(&a->view_lock);
	if (json_is_object(a->machine))
		json_object_set_new(a->machine, "track_dirty_pages", json_boolean(call.on));
	pthread_mutex_unlock(&a->view_lock);
	return 0;
}
