/* ember's control API, compatible with Firecracker's: `ember --api-sock
 * PATH` serves HTTP/1.1 on a unix socket, `ember --config-file FILE.json`
 * boots from Firecracker's JSON configuration (both may be combined).
 * See docs/api.md.
 *
 * Threads (Firecracker's model): the main thread is the vmm thread; one
 * API thread serves the socket under its own seccomp role
 * (JAIL_ROLE_API).  Pre-boot configuration is pure data held by the API
 * under a mutex and checked through cfg_set(); what needs the vmm thread
 * (opening files, InstanceStart, pause/resume, metrics) goes through a
 * mailbox: a request struct under a mutex, an eventfd the vmm thread's
 * event loop watches, and a condvar for the reply.  Long jobs (InstanceStart,
 * snapshot create and load) are not waited for: their reply comes back
 * through a second eventfd the API thread's loop watches, so GETs go on
 * being answered meanwhile (and other changes are refused as busy).
 *
 * The first part is what main.c needs; the rest is private to
 * monitor/api/api*.c. */
#ifndef EMBER_API_H
#define EMBER_API_H

#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "config/config.h"
#include "snapshot/snapshot.h"
#include "jail/jail.h"
#include "base/evloop.h"
#include "monitor/migrate/migrate.h"
#include "monitor/drive_move.h"

/* Whether argv[1] starts API mode (--api-sock, --config-file, ...). */
bool api_is_api_mode(const char *arg1);

/* `ember --api-sock PATH | --config-file FILE [options]`: serve, boot,
 * run until the guest stops.  Returns ember's exit code (the same as
 * `ember run` for the same guest; EXIT_CONFIG for bad options or a bad
 * configuration file). */
int api_main(int argc, char **argv, const char *version);

struct vm;
struct vm_build_opts;
struct vm_restore_paths;

/* `ember run --api-sock PATH`: serve the API for vm (made by vm_build()
 * from the command line: cfg is vm->cfg) while it runs: vm_start(), then
 * vm_wait() with the API's mailbox on vm->ev.  GET / says Running from
 * the first request (Paused for a restore built with paused);
 * pre-boot calls get Firecracker's post-boot fault.  Returns vm_wait()'s
 * exit code; a failure to serve stops the VM with the reason in
 * vm->stop_reason and returns its EXIT_* code. */
int api_run(struct vm *vm, struct vm_config *cfg, const char *sock, const char *version);

/* `ember snapshot create|merge ...` (monitor/snap_cli.c): create is a
 * client of a running ember's API (PATCH /vm, PUT /snapshot/create).
 * argv[0] is the subcommand.  Returns 0, 1 when ember refused or could
 * not be reached, or EXIT_CONFIG for bad arguments. */
int snap_cli_main(int argc, char **argv);
extern const char snap_cli_usage[];

/* `ember drive move|status|cancel ...` (monitor/drive_cli.c): a client of
 * a running ember's /drives/{id}/move; move creates the destination and
 * sends its fd.  argv[0] is the subcommand.  Returns 0, 1 when ember
 * refused, the move failed or was cancelled (or ember could not be
 * reached), EXIT_CONFIG for bad arguments. */
int drive_cli_main(int argc, char **argv);
extern const char drive_cli_usage[];

/* `ember run --restore`: the configuration c is the snapshot's, and the
 * command line may only point its devices at other host files, taps and
 * sockets (--drive ID,path=, --net ID,tap=, --vsock uds=), rename it, or
 * change its timeout and serial output.  NULL when the option that sets
 * key in section may (and the host resource it names is then confirmed
 * in ok: see struct vm_restore_paths), else why not. */
const char *snap_cli_restore_refusal(const struct vm_config *c, const char *section,
				     const char *key, struct vm_restore_paths *ok);

/* 0 when every host path or tap the restored configuration c names was
 * given on the command line or confirmed by --use-saved-paths (ok); else
 * EXIT_CONFIG with a message for the user in err. */
int snap_cli_check_paths(const struct vm_config *c, const struct vm_restore_paths *ok,
			 const char *state_path, char *err, size_t errlen);

/* ---- private to monitor/api/api*.c ---------------------------------------- */

#define API_MAX_BODY 51200	     /* Firecracker's default payload limit */
#define API_IDLE_MS_DEFAULT 60000    /* a connection silent this long is closed */
#define API_REQUEST_MS_DEFAULT 10000 /* a request (or its reply) must move in full within */
#define API_FAULT_MAX 640

/* The HTTP server (api_http.c): one request at a time per connection,
 * handled on the API thread as it completes.  Connections are bounded
 * (256), and so is the time a request may take to arrive in full and its
 * reply to be taken (request_ms), and the silence of a connection
 * (idle_ms); when every slot is taken, a new client takes the slot of a
 * connection idle between requests, else of the one whose request (or
 * reply) has been on its way longest, never of one being answered.  See
 * docs/api.md, "Limits". */
struct http_req {
	int method; /* enum http_method (http_parser.h) */
	const char *method_name;
	const char *path; /* without the query string */
	const char *body;
	size_t body_len;
	uint64_t ticket; /* names this request to http_server_complete() */
	/* A file descriptor that came with the request (SCM_RIGHTS), or -1.
	 * A handler that keeps it sets *fd to -1; else it is closed once the
	 * handler returns.  At most one per request (more are refused). */
	int *fd;
};
/* A handler that sets status HTTP_DEFERRED answers later, through
 * http_server_complete(); the connection reads nothing more meanwhile and
 * is never timed out or evicted. */
#define HTTP_DEFERRED (-1)
struct http_resp {
	int status;
	char *body; /* malloc'd JSON, or NULL for none (204) */
};
typedef void (*http_handler_fn)(void *opaque, const struct http_req *rq, struct http_resp *rs);

struct http_server;
struct http_limits {
	size_t max_body;     /* request body, bytes */
	unsigned idle_ms;    /* a connection that sends and takes nothing this long is closed */
	unsigned request_ms; /* from a request's first byte (or the accept) to its last, and
				from a reply's first byte to its last */
};

/* Everything the server needs, made before the API thread's filter is
 * loaded (epoll, timer, connection table).  listen_fd is listening and
 * non-blocking.  0 or -errno. */
__attribute__((warn_unused_result)) int http_server_new(struct http_server **out, int listen_fd,
							const struct http_limits *lim,
							http_handler_fn fn, void *opaque);
/* Watch fd on the server's loop too (fn runs on the API thread); before
 * http_server_run.  0 or -errno. */
__attribute__((warn_unused_result)) int
http_server_watch(struct http_server *s, struct ev_source *src, int fd, ev_fn fn, void *opaque);
/* Serve forever on the calling thread.  Returns only on an epoll
 * failure (-errno). */
int http_server_run(struct http_server *s);
/* The reply to a deferred request (API thread).  Dropped when its client
 * has gone meanwhile. */
void http_server_complete(struct http_server *s, uint64_t ticket, const struct http_resp *rs);

/* A JSON reply: status and body (json_dumps of obj, which is released). */
void http_reply_json(struct http_resp *rs, int status, json_t *obj);
/* 400 (or status) with {"fault_message": "..."}. */
__attribute__((format(printf, 3, 4))) void http_fault(struct http_resp *rs, int status,
						      const char *fmt, ...);

/* The VM's state as GET / reports it. */
enum api_state { API_NOT_STARTED, API_RUNNING, API_PAUSED, API_STOPPED };

/* Work only the vmm thread may do. */
enum api_op {
	API_OP_OPEN,	    /* open path with flags; fd in .fd (pre-boot: files to check or keep) */
	API_OP_START,	    /* InstanceStart with api->cfg */
	API_OP_PAUSE,	    /* PATCH /vm Paused */
	API_OP_RESUME,	    /* PATCH /vm Resumed */
	API_OP_FLUSH,	    /* FlushMetrics */
	API_OP_CTRLALTDEL,  /* SendCtrlAltDel */
	API_OP_SNAP_CREATE, /* PUT /snapshot/create: path, mem_path, diff; or stream */
	API_OP_SNAP_LOAD,   /* PUT /snapshot/load: path, mem_path, body (the overrides) */
	API_OP_FATAL,	    /* the API thread cannot go on: ember stops (EXIT_HOST) */
	API_OP_LIMITS,	    /* PATCH of a running drive's or net's rate limiters */
	API_OP_TRACK_DIRTY, /* PATCH /machine-config track_dirty_pages after boot: on */
	API_OP_MIG_SETUP,   /* a migration target's setup check and RAM: data, len, mem */
	API_OP_MIG_BUILD,   /* a migration target's build from its state: data, len, mem */
	API_OP_MOVE,	    /* PUT /drives/{id}/move: drive, stream_fd, path, max_bw */
	API_OP_MOVE_CANCEL, /* PUT /drives/{id}/move/cancel: drive */
	API_OP_MIG_MEMFD,   /* a same-host target's RAM: the memfd fd (taken) over mem */
	API_OP_MIG_DISK,    /* a copied disk's destination: drive, max_bw its size; fd, path out */
};

struct api_call {
	enum api_op op;
	const char *path;
	int flags;
	const char *mem_path; /* snapshots' memory file */
	bool diff;	      /* SNAP_CREATE: "Diff" */
	bool stream;	      /* SNAP_CREATE: "stream": write it to stream_fd (then closed) */
	int stream_fd;	      /* SNAP_CREATE with stream, MOVE: the fd the request carried */
	const char *drive;    /* MOVE, MOVE_CANCEL, MIG_DISK: the drive's id */
	uint64_t max_bw;      /* MOVE: bytes/s, 0: no limit */
	const json_t *body;   /* SNAP_LOAD: its request (a->job holds it) */
	int fd;		      /* API_OP_OPEN's result */
	bool net;	      /* LIMITS: a net device (else a drive) */
	unsigned index;	      /* LIMITS: its place among the drives or nets */
	const struct cfg_rate *rate_a, *rate_b; /* LIMITS: drive or rx, tx */
	bool on; /* TRACK_DIRTY: logging on (else off); MIG_BUILD: RAM partial (post-copy) */
	const void *data;			/* MIG_*: the record's state file */
	size_t len;
	struct gmem *mem; /* MIG_SETUP: RAM to map; MIG_BUILD: the RAM received */
	int status;	      /* 0 or an HTTP status with the reason in fault */
	char fault[API_FAULT_MAX];
};

struct api_mbox {
	pthread_mutex_t lock;
	pthread_cond_t done_cv;
	int efd;	       /* eventfd: a call is waiting (the vmm thread's loop) */
	int done_efd;	       /* eventfd: a posted call is done (the API thread's loop) */
	struct api_call *call; /* the call in flight, NULL when none */
	bool done;
	bool posted; /* call came from api_vmm_post: its reply goes to done_efd */
	bool unsent; /* a collected posted call whose reply is not written yet */
};

/* The long job in flight (API thread only): its call, the request it
 * answers, and the body its strings point into. */
struct api_job {
	const char *name; /* "InstanceStart", "snapshot create", ...; NULL: none */
	struct api_call call;
	json_t *body;
	uint64_t ticket;
	int method;
	char path[32];
	struct ev_source done_src; /* mbox.done_efd on the API thread's loop */
};

struct api {
	pthread_mutex_t lock; /* held for a whole change, or the boot from the config file
				 or the command line; never by GETs */
	/* Held briefly by whoever changes the objects below (and by the GETs
	 * that read them), never across a call to the vmm thread: what
	 * keeps reads of state from waiting behind anything long. */
	pthread_mutex_t view_lock;
	/* Accepted configuration objects, as Firecracker's JSON (after
	 * checking): rebuilt into a struct vm_config by api_build_config. */
	json_t *boot_source, *machine, *vsock, *entropy, *logger, *metrics;
	json_t *drives, *nets; /* arrays, in the order they were added */
	json_t *options;       /* ember: timeout, irqchip, name */
	bool configured;       /* a boot-specific object was PUT: no /snapshot/load */
	int log_fd, metrics_fd;
	bool log_show_level;
	int log_level; /* 0 off .. 5 trace */

	const char *id, *version;
	pthread_t vmm_tid; /* calls made on the vmm thread itself run in place */
	struct api_mbox mbox;
	struct api_job job;
	/* The long job's progress, written by the vmm thread (vm->progress
	 * points here), read by GET / on the API thread. */
	struct snap_progress progress;
	struct timespec t_job; /* when the job began (CLOCK_MONOTONIC) */
	struct http_server *srv;
	atomic_int state; /* enum api_state */

	/* The fd that came with the request being handled (API thread;
	 * NULL outside api_handle): a handler that keeps it sets it to -1. */
	int *req_fd;

	/* Drive moves (the vmm thread's; reports read by GETs on the API
	 * thread under its own lock): made with the VM's loop (watch_api). */
	struct dmove move;

	struct vm *vm;	       /* the vmm thread's */
	struct vm_config *cfg; /* built at InstanceStart; vm->cfg */
	enum jail_seccomp_mode seccomp;
	bool no_cpuid_cache;
	bool started;	/* the vmm thread: vm_start succeeded */
	int start_code; /* vm_start's failure code (the process exits with it) */

	/* Live migration (api_migration.c, monitor/migrate/): its thread,
	 * made before any sandbox, and a target's overrides (the request's
	 * body, kept until the build). */
	struct mig mig;
	json_t *mig_body;

	/* counters for metrics (API thread writes, vmm thread reads) */
	atomic_ullong n_get, n_put, n_patch, n_bad;
	unsigned long long last_get, last_put, last_patch, last_bad, last_exits[3];
	struct timespec t_main, t_listening, t_start_req;
};

/* api.c: Firecracker's fault messages for calls in the wrong state. */
extern const char api_post_boot[], api_pre_boot[];
/* The string member k of o, NULL when absent or not a string. */
const char *api_str(const json_t *o, const char *k);
/* Check a body that is not a configuration object against its swagger
 * definition.  0, or 400 with the field at fault in fault. */
enum api_body {
	API_BODY_ACTION,
	API_BODY_VM,
	API_BODY_MACHINE_PATCH,
	API_BODY_SNAP_CREATE,
	API_BODY_SNAP_LOAD
};
int api_check_body(const json_t *body, enum api_body kind, char *fault, size_t len);

/* api.c: Firecracker's PATCH /drives/{id} and /network-interfaces/{id}
 * after boot: the rate limiters of the running device (bandwidth and ops
 * buckets; a bucket given replaces the old one, size 0 turns it off).
 * path_on_host cannot change: ember opens no new file once its sandbox
 * is closed.  0, or 400 with the reason in fault. */
int api_patch_limits(struct api *a, bool net, const char *id, json_t *body, char *fault,
		     size_t len);

/* api.c: ember's PATCH /machine-config after boot, a body with
 * track_dirty_pages (and nothing else): dirty page tracking switched on
 * or off in the running VM (vm_track_dirty).  0, or 400 with the reason
 * in fault. */
int api_patch_machine(struct api *a, json_t *body, char *fault, size_t len);

/* api.c: empty configuration (Firecracker's defaults: 1 vCPU, 128 MiB). */
__attribute__((warn_unused_result)) int api_init(struct api *a);
/* api_routes.c: the HTTP handler: routes, JSON, pre-/post-boot rules
 * (API thread). */
void api_handle(void *opaque, const struct http_req *rq, struct http_resp *rs);
/* Apply one configuration object as its PUT would (the config file uses
 * this): what is "boot-source", "machine-config", "drives", ...; id for
 * drives and network interfaces.  0, or an HTTP status with the reason in
 * fault. */
int api_put_object(struct api *a, const char *what, const char *id, json_t *body, char *fault,
		   size_t len);
/* Rebuild the vm_config from the accepted objects (root drive first,
 * root=/dev/vda appended).  0 or -EINVAL with the reason in err. */
int api_build_config(struct api *a, struct vm_config *c, char *err, size_t len);
/* api_routes.c: InstanceStart on the vmm thread itself (--config-file),
 * in place.  0 or an HTTP status with the reason in fault. */
int api_instance_start(struct api *a, char *fault, size_t len);
/* api_routes.c (API thread, under a->lock): answer the request later: c
 * (a->job.call, filled in) goes to the vmm thread as the long job name,
 * body (its strings) is kept until the reply; rs says HTTP_DEFERRED.
 * Until then GETs are answered and every other change gets a "busy"
 * 400.  api_job_done() sends the reply when the vmm thread is done. */
void api_job_start(struct api *a, const char *name, json_t *body, struct http_resp *rs);
void api_job_done(struct ev_source *src, uint32_t events);

/* api_main.c (vmm thread): build and start the VM from a->cfg and o
 * (the caller's track_dirty, and for a snapshot's load its snapshot,
 * memory file and paused; this adds the process's seccomp mode and CPUID
 * cache), for InstanceStart or a load; what names the request in faults.
 * Sets c->status and c->fault; after a failed build the VM is destroyed
 * and ember stays unstarted (the next start or load may succeed). */
void api_start_vm(struct api *a, struct api_call *c, struct vm_build_opts *o, const char *what);

/* api_snapshot.c: PUT /snapshot/create and /snapshot/load on the API
 * thread (body checked against its swagger definition), and their work
 * on the vmm thread (API_OP_SNAP_CREATE, API_OP_SNAP_LOAD). */
void api_put_snapshot_create(struct api *a, json_t *body, struct http_resp *rs);
/* A fresh ember only (nothing started, nothing boot-specific configured):
 * else a 400 in rs (what names the request in Firecracker's sentence) and
 * true. */
bool api_refuse_unless_fresh(struct api *a, const char *what, struct http_resp *rs);
void api_put_snapshot_load(struct api *a, json_t *body, struct http_resp *rs);
void api_snapshot_create(struct api *a, struct api_call *c);
void api_snapshot_load(struct api *a, struct api_call *c);

/* api_snapshot.c (vmm thread): a restore's overrides from body
 * (network_overrides, drive_overrides, vsock_override, use_saved_paths)
 * and PUT /ember/options' name and timeout onto cfg, and the host
 * resources it names confirmed.  0 or -errno with the reason in err. */
int api_load_overrides(struct api *a, struct vm_config *cfg, const json_t *body, char *err,
		       size_t len);

/* api_migration.c: PUT /migration/{send,receive,cancel,resolve} (API
 * thread; what is the path's last part) and GET /migration's body; the
 * target's work on the vmm thread (API_OP_MIG_SETUP, API_OP_MIG_BUILD);
 * and the ops the migration thread calls (mig_init's). */
void api_put_migration(struct api *a, const char *what, json_t *body, struct http_resp *rs);
json_t *api_migration_json(struct api *a);
void api_mig_setup(struct api *a, struct api_call *c);
void api_mig_build(struct api *a, struct api_call *c);
/* API_OP_MIG_MEMFD: a same-host target's RAM becomes the source's memfd
 * (c->fd, taken), checked by gmem_adopt_memfd; 400 with why. */
void api_mig_memfd(struct api *a, struct api_call *c);
/* API_OP_MIG_DISK: the destination of a disk copied with the VM (c->drive,
 * c->max_bw bytes): the receive must have named it in "copy_storage" and
 * "drive_overrides"; that path opened for writing and sized, its fd in
 * c->fd, the path in c->path (a->cfg's); 400 with why. */
void api_mig_disk(struct api *a, struct api_call *c);
extern const struct mig_source_ops api_mig_source_ops;
extern const struct mig_target_ops api_mig_target_ops;
/* api_drive.c: ember's /drives/{id}/move, /drives/{id}/move/cancel:
 * whether path is one of them (then api_drive_move answers it, on the API
 * thread; GETs from the mover's report, without the vmm thread). */
bool api_drive_move_path(const char *path);
void api_drive_move(struct api *a, const struct http_req *rq, struct http_resp *rs);
/* Their work on the vmm thread (API_OP_MOVE, API_OP_MOVE_CANCEL). */
void api_drive_move_do(struct api *a, struct api_call *c);
/* dmove_init's callback: the accepted drive object names the new path. */
void api_drive_moved(void *opaque, unsigned index, const char *path);
/* The busy 400 while a long job runs: true when rs holds it. */
bool api_busy(struct api *a, struct http_resp *rs);

/* api_main.c: run a call on the vmm thread (in place when made there) and
 * wait for its reply.  The caller holds a->lock: one configurer at a
 * time; the vmm thread never takes it, so waiting under it is safe.  For
 * short calls only (a file's open, pause, resume, metrics, limits): the
 * API thread makes none while a posted call is in flight. */
void api_vmm_call(struct api *a, struct api_call *c);
/* api_main.c (API thread): hand c to the vmm thread without waiting; it
 * writes mbox.done_efd when done.  One at a time. */
void api_vmm_post(struct api *a, struct api_call *c);
/* Whether posted call c is done (then the mailbox is free again, and
 * its reply counts as unsent until api_vmm_replied()). */
bool api_vmm_collect(struct api *a, struct api_call *c);
/* api_main.c (API thread): the collected call's reply is written (or its
 * connection is gone). */
void api_vmm_replied(struct api *a);
/* Write one metrics line now (vmm thread). */
void api_metrics_flush(struct api *a);

/* api_json_config.c: apply a Firecracker JSON configuration file.  0 or
 * -EINVAL with "FILE: why" in err. */
__attribute__((warn_unused_result)) int api_load_config_file(struct api *a, const char *path,
							     char *err, size_t len);

#endif
