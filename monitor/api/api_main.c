/* `ember --api-sock PATH` / `--config-file FILE`: the vmm thread (main's),
 * the API thread, and the mailbox between them.  The vmm thread serves
 * the mailbox from its own event loop before boot, and from the VM's
 * (vm->ev, inside vm_wait) after InstanceStart. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "monitor/api/api.h"
#include "base/hostfile.h"
#include "monitor/vdevs.h"
#include "monitor/exitcodes.h"
#include "monitor/vm.h"

#define METRICS_PERIOD_NS (60ULL * 1000000000ULL) /* as Firecracker's */

static const char usage[] =
    "usage: ember --api-sock PATH [--config-file FILE.json] [options]\n"
    "       ember --config-file FILE.json [options]\n"
    "\n"
    "Firecracker's command line: serve its HTTP API on a unix socket, and/or\n"
    "boot from its JSON configuration (docs/api.md).  Guest serial output goes\n"
    "to stdout; ember exits when the guest stops, with `ember run`'s exit codes.\n"
    "\n"
    "  --api-sock PATH                   the API's unix socket (a stale socket\n"
    "                                    there is replaced; any other file is not)\n"
    "  --config-file FILE                boot at once from this JSON configuration\n"
    "  --no-api                          no API (needs --config-file)\n"
    "  --id ID                           the instance id GET / reports\n"
    "  --http-api-max-payload-size BYTES request body limit (default 51200)\n"
    "  --api-idle-timeout SECS           close a connection silent this long (60)\n"
    "  --api-request-timeout SECS        a request must arrive in full, and its\n"
    "                                    reply be taken, within this long (10)\n"
    "  --seccomp MODE, --no-seccomp      as `ember run`\n"
    "  --no-cpuid-cache                  as `ember run`\n";

struct opts {
	const char *sock, *config_file, *id;
	bool no_api, no_cpuid_cache;
	enum jail_seccomp_mode seccomp;
	struct http_limits lim;
};

/* The vmm thread's side. */
static struct {
	struct api api;
	struct vm vm;
	struct evloop boot_ev; /* before InstanceStart */
	struct ev_source mbox_src;
	struct ev_timer metrics_timer;
	struct evloop *metrics_ev; /* the loop metrics_timer is on */
	bool fatal;
	char fatal_msg[API_FAULT_MAX];
	struct jail_filter api_filter;
	/* vCPU 0's thread, made while the API waits for InstanceStart (or a
	 * snapshot load): the start then wakes it rather than making one */
	struct vm_vcpu0_thread vcpu0;
	bool vcpu0_made;
	/* The KVM VM and vCPU 0, made while the API waits (vm.h) */
	struct vm_prebuilt pre;
} g = {.pre = {.kvm_fd = -1, .vm_fd = -1, .vcpu0_fd = -1}};

bool api_is_api_mode(const char *a)
{
	static const char *const opts[] = {"--api-sock", "--config-file", "--no-api", "--id",
					   "--http-api-max-payload-size"};
	for (unsigned i = 0; i < sizeof(opts) / sizeof(opts[0]); i++) {
		size_t n = strlen(opts[i]);
		if (!strncmp(a, opts[i], n) && (a[n] == '\0' || a[n] == '='))
			return true;
	}
	return false;
}

static void on_metrics_timer(struct ev_timer *t)
{
	api_metrics_flush(t->opaque);
	(void)!ev_timer_arm(t, METRICS_PERIOD_NS);
}

/* ---- the vmm thread's work ---- */

static void open_file(struct api_call *c)
{
	/* Kernels, initrds and drives are files (or block devices); metrics
	 * and logs (opened to append) may be named pipes or devices too.
	 * host_open() never blocks: a FIFO with no writer must not hold the
	 * vmm thread, and the API waiting on it, in open(). */
	unsigned kinds = c->flags & O_APPEND ? HOST_REG | HOST_FIFO | HOST_CHR : HOST_REG | HOST_BLK;
	char why[sizeof(c->fault) - 16];
	c->fd = host_open(c->path, c->flags & ~O_CLOEXEC, kinds, why, sizeof(why));
	if (c->fd < 0) {
		c->status = 400;
		c->fd = -1;
		snprintf(c->fault, sizeof(c->fault), "cannot open %s", why);
	}
}

static void on_mbox(struct ev_source *src, uint32_t events);

/* The mailbox and the metrics timer onto the VM's loop (vm_build makes
 * it only for virtio devices; the API needs it always, and vm_destroy
 * closes it either way). */
static int watch_api(struct api *a, struct vm *vm)
{
	int r = vm->ev.epfd < 0 ? ev_init(&vm->ev) : 0;
	if (!r)
		r = ev_add(&vm->ev, &g.mbox_src, a->mbox.efd, EPOLLIN, on_mbox, a);
	if (!r) /* a migration's requests and its throttle timer */
		r = mig_watch(&a->mig, vm);
	if (!r) /* its timer (a timerfd) exists before the drop */
		r = dmove_init(&a->move, vm, a->cfg, api_drive_moved, a);
	if (!r && g.metrics_ev) {
		ev_timer_fini(g.metrics_ev, &g.metrics_timer);
		g.metrics_ev = NULL;
	}
	if (!r && a->metrics_fd >= 0) {
		r = ev_timer_init(&vm->ev, &g.metrics_timer, on_metrics_timer, a);
		if (!r) {
			g.metrics_ev = &vm->ev;
			r = ev_timer_arm(&g.metrics_timer, METRICS_PERIOD_NS);
		}
	}
	return r;
}

static const char *cpuid_cache(const struct api *a)
{
	if (a->no_cpuid_cache)
		return NULL;
	const char *env = getenv("EMBER_CPUID_CACHE");
	return env ? env : VCPU_CPUID_CACHE_DEFAULT;
}

/* GET /vm/config's drives and network interfaces from cfg, for a VM whose
 * devices came from a command line, a snapshot or a migration rather than
 * from PUT requests (those keep the bodies the client sent). */
static void describe_devices(struct api *a, const struct vm_config *cfg)
{
	json_t *drives = json_array(), *nets = json_array();
	for (unsigned i = 0; i < cfg->nr_blocks; i++)
		json_array_append_new(drives,
				      json_pack("{s:s,s:s,s:b,s:b}", "drive_id", cfg->blocks[i].name,
						"path_on_host", cfg->blocks[i].path, "is_root_device",
						i == 0, "is_read_only", cfg->blocks[i].read_only));
	for (unsigned i = 0; i < cfg->nr_nets; i++) {
		const uint8_t *m = cfg->nets[i].mac;
		char mac[18];
		snprintf(mac, sizeof(mac), "%02x:%02x:%02x:%02x:%02x:%02x", m[0], m[1], m[2], m[3],
			 m[4], m[5]);
		json_t *n = json_pack("{s:s,s:s}", "iface_id", cfg->nets[i].name, "host_dev_name",
				      cfg->nets[i].tap);
		if (n && cfg->nets[i].has_mac)
			json_object_set_new(n, "guest_mac", json_string(mac));
		json_array_append_new(nets, n);
	}
	pthread_mutex_lock(&a->view_lock);
	json_decref(a->drives);
	json_decref(a->nets);
	a->drives = drives;
	a->nets = nets;
	pthread_mutex_unlock(&a->view_lock);
}

void api_start_vm(struct api *a, struct api_call *c, struct vm_build_opts *o, const char *what)
{
	struct vm *vm = a->vm;
	char err[CFG_ERR_MAX + VM_ERR_MAX];

	o->seccomp = a->seccomp;
	o->progress = &a->progress;
	o->cpuid_cache = cpuid_cache(a);
	o->pre = &g.pre;
	clock_gettime(CLOCK_MONOTONIC, &a->t_start_req);
	int r = vm_build(vm, a->cfg, o, err, sizeof(err));
	vm_prebuilt_free(&g.pre); /* what the build did not take */
	if (r) {
		vm_destroy(vm);
		c->status = 400;
		snprintf(c->fault, sizeof(c->fault), "%s: %.600s", what, err);
		return;
	}
	/* From now on the VM's loop serves the mailbox and the metrics timer;
	 * every fd is added before the drop (no epoll_ctl after it). */
	ev_del(&g.boot_ev, &g.mbox_src);
	r = watch_api(a, vm);
	if (r) {
		vm_destroy(vm);
		c->status = 500;
		snprintf(c->fault, sizeof(c->fault), "%s: cannot watch the API: %s", what,
			 strerror(-r));
		g.fatal = true;
		return;
	}
	r = vm_start_on(vm, g.vcpu0_made ? &g.vcpu0 : NULL);
	if (r) {
		c->status = 400;
		snprintf(c->fault, sizeof(c->fault), "%s: %.600s", what, vm->stop_reason);
		a->start_code = vm->exit_code ? vm->exit_code : EXIT_HOST;
		return;
	}
	a->started = true;
	atomic_store(&a->state, vm->paused ? API_PAUSED : API_RUNNING);
	if (o->snapshot) /* a load or a migration: the devices are the state's */
		describe_devices(a, a->cfg);
}

static void vmm_do(struct api *a, struct api_call *c)
{
	int r;
	c->status = 0;
	if (c->op != API_OP_FATAL) /* its fault is the message, not the reply */
		c->fault[0] = '\0';
	switch (c->op) {
	case API_OP_OPEN:
		open_file(c);
		return;
	case API_OP_START: {
		struct vm_build_opts o = {
		    .track_dirty = json_is_true(json_object_get(a->machine, "track_dirty_pages")),
		    .mem_shared = api_str(a->machine, "mem_backend") &&
				  !strcmp(api_str(a->machine, "mem_backend"), "memfd")};
		api_start_vm(a, c, &o, "InstanceStart");
		return;
	}
	case API_OP_SNAP_LOAD:
		api_snapshot_load(a, c);
		return;
	case API_OP_SNAP_CREATE:
		api_snapshot_create(a, c);
		return;
	case API_OP_PAUSE:
	case API_OP_RESUME:
		r = c->op == API_OP_PAUSE ? vm_pause(a->vm) : vm_resume(a->vm);
		if (r == 0 || r == -EALREADY) {
			atomic_store(&a->state, c->op == API_OP_PAUSE ? API_PAUSED : API_RUNNING);
			return;
		}
		c->status = 400;
		snprintf(c->fault, sizeof(c->fault), "%s",
			 r == -ESHUTDOWN ? "the microVM is stopping" : strerror(-r));
		return;
	case API_OP_FLUSH:
		api_metrics_flush(a);
		return;
	case API_OP_CTRLALTDEL:
		c->status = 400;
		snprintf(c->fault, sizeof(c->fault),
			 "SendCtrlAltDel: not supported: ember's i8042 has no keyboard to send it "
			 "through");
		return;
	case API_OP_LIMITS:
		if (vdevs_set_limits(a->vm, c->net, c->index, c->rate_a, c->rate_b)) {
			c->status = 400;
			snprintf(c->fault, sizeof(c->fault), "no such virtio device");
		}
		return;
	case API_OP_TRACK_DIRTY:
		r = vm_track_dirty(a->vm, c->on);
		if (r) {
			c->status = 400;
			snprintf(c->fault, sizeof(c->fault), "track_dirty_pages: %s", strerror(-r));
		}
		return;
	case API_OP_MIG_SETUP:
		api_mig_setup(a, c);
		return;
	case API_OP_MIG_MEMFD:
		api_mig_memfd(a, c);
		return;
	case API_OP_MIG_DISK:
		api_mig_disk(a, c);
		return;
	case API_OP_MIG_BUILD:
		api_mig_build(a, c);
		return;
	case API_OP_MOVE:
	case API_OP_MOVE_CANCEL:
		api_drive_move_do(a, c);
		return;
	case API_OP_FATAL:
		snprintf(g.fatal_msg, sizeof(g.fatal_msg), "%s", c->fault);
		g.fatal = true;
		if (a->started)
			vm_stop(a->vm, EXIT_HOST, g.fatal_msg);
		return;
	}
}

static void on_mbox(struct ev_source *src, uint32_t events)
{
	struct api *a = src->opaque;
	struct api_mbox *mb = &a->mbox;
	uint64_t v;
	(void)!read(mb->efd, &v, sizeof(v));
	pthread_mutex_lock(&mb->lock);
	struct api_call *c = mb->done ? NULL : mb->call;
	pthread_mutex_unlock(&mb->lock);
	if (!c)
		return;
	vmm_do(a, c);
	uint64_t one = 1;
	pthread_mutex_lock(&mb->lock);
	mb->done = true;
	if (mb->posted)
		(void)!write(mb->done_efd, &one, sizeof(one));
	pthread_cond_broadcast(&mb->done_cv);
	pthread_mutex_unlock(&mb->lock);
}

void api_vmm_call(struct api *a, struct api_call *c)
{
	struct api_mbox *mb = &a->mbox;
	if (pthread_equal(pthread_self(), a->vmm_tid)) {
		vmm_do(a, c);
		return;
	}
	uint64_t one = 1;
	pthread_mutex_lock(&mb->lock);
	/* Only the API thread's last call (API_OP_FATAL) can find a posted
	 * one here: it waits for it, and takes the slot of its reply (nobody
	 * is left to collect it). */
	while (mb->call && !(mb->posted && mb->done))
		pthread_cond_wait(&mb->done_cv, &mb->lock);
	mb->call = c;
	mb->posted = false;
	mb->done = false;
	(void)!write(mb->efd, &one, sizeof(one));
	while (!mb->done)
		pthread_cond_wait(&mb->done_cv, &mb->lock);
	mb->call = NULL;
	pthread_mutex_unlock(&mb->lock);
}

void api_vmm_post(struct api *a, struct api_call *c)
{
	struct api_mbox *mb = &a->mbox;
	uint64_t one = 1;
	pthread_mutex_lock(&mb->lock);
	mb->call = c;
	mb->posted = true;
	mb->done = false;
	(void)!write(mb->efd, &one, sizeof(one));
	pthread_mutex_unlock(&mb->lock);
}

bool api_vmm_collect(struct api *a, struct api_call *c)
{
	struct api_mbox *mb = &a->mbox;
	pthread_mutex_lock(&mb->lock);
	bool done = mb->call == c && mb->posted && mb->done;
	if (done) {
		mb->call = NULL;
		mb->unsent = true;
	}
	pthread_mutex_unlock(&mb->lock);
	return done;
}

void api_vmm_replied(struct api *a)
{
	struct api_mbox *mb = &a->mbox;
	pthread_mutex_lock(&mb->lock);
	mb->unsent = false;
	pthread_cond_broadcast(&mb->done_cv);
	pthread_mutex_unlock(&mb->lock);
}

/* Before ember exits (vmm thread): a long job the vmm thread finished
 * (InstanceStart, a snapshot load) still owes its client the reply, which
 * the API thread writes; a guest that stops within a millisecond of its
 * start would otherwise end the process first.  Bounded: an API thread
 * that cannot run (it failed) holds the exit up 0.5 s at most. */
static void wait_replies(struct api *a)
{
	struct api_mbox *mb = &a->mbox;
	struct timespec until;
	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_nsec += 500000000L;
	if (until.tv_nsec >= 1000000000L) {
		until.tv_sec++;
		until.tv_nsec -= 1000000000L;
	}
	pthread_mutex_lock(&mb->lock);
	while ((mb->unsent || (mb->call && mb->posted && mb->done)) &&
	       pthread_cond_timedwait(&mb->done_cv, &mb->lock, &until) == 0)
		;
	pthread_mutex_unlock(&mb->lock);
}

/* ---- the API thread ---- */

static void *api_thread(void *arg)
{
	struct api *a = arg;
	struct api_call c = {.op = API_OP_FATAL};
	/* Serve once a boot from the config file or the command line is done
	 * (milliseconds; clients wait in the listen backlog): GET / answers
	 * Running from the first request. */
	pthread_mutex_lock(&a->lock);
	pthread_mutex_unlock(&a->lock);
	/* Capabilities are per thread: this one drops its own (the vmm thread
	 * drops the process's at InstanceStart), then loads the API role. */
	int r = jail_drop_caps();
	if (!r)
		r = jail_filter_apply(&g.api_filter);
	if (r)
		snprintf(c.fault, sizeof(c.fault), "API thread: cannot load its sandbox: %s",
			 strerror(-r));
	else
		r = http_server_run(a->srv);
	if (!c.fault[0])
		snprintf(c.fault, sizeof(c.fault), "API thread: event loop failed: %s",
			 strerror(-r));
	pthread_mutex_lock(&a->lock);
	api_vmm_call(a, &c);
	pthread_mutex_unlock(&a->lock);
	return NULL;
}

/* Bind and listen.  A socket file left by a dead ember is replaced; a
 * live one (something accepts on it) or any other file is an error. */
static int make_socket(const char *path, char *err, size_t len)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	struct stat st;
	if (strlen(path) >= sizeof(sa.sun_path))
		return snprintf(err, len, "--api-sock %s: longer than %zu bytes", path,
				sizeof(sa.sun_path) - 1),
		       -1;
	strcpy(sa.sun_path, path);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return snprintf(err, len, "--api-sock: socket: %s", strerror(errno)), -1;
	if (lstat(path, &st) == 0) {
		if (!S_ISSOCK(st.st_mode)) {
			close(fd);
			return snprintf(err, len, "--api-sock %s: exists and is not a socket",
					path),
			       -1;
		}
		if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0 || errno == EAGAIN) {
			close(fd);
			return snprintf(err, len, "--api-sock %s: another process serves it", path),
			       -1;
		}
		unlink(path);
	}
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, 256) < 0) {
		snprintf(err, len, "--api-sock %s: %s", path, strerror(errno));
		close(fd);
		return -1;
	}
	return fd;
}

static int parse_args(int argc, char **argv, struct opts *o)
{
	o->lim = (struct http_limits){API_MAX_BODY, API_IDLE_MS_DEFAULT, API_REQUEST_MS_DEFAULT};
	for (int i = 0; i < argc; i++) {
		const char *a = argv[i], *eq = strchr(a, '=');
		size_t n = eq ? (size_t)(eq - a) : strlen(a);
		const char *v = eq ? eq + 1 : i + 1 < argc ? argv[i + 1] : NULL;
#define IS(s) (strlen(s) == n && !strncmp(a, s, n))
		if (IS("-h") || IS("--help")) {
			fputs(usage, stdout);
			return -1;
		}
		if (IS("--no-api") || IS("--no-cpuid-cache") || IS("--no-seccomp")) {
			if (IS("--no-api"))
				o->no_api = true;
			else if (IS("--no-seccomp"))
				o->seccomp = JAIL_SECCOMP_OFF;
			else
				o->no_cpuid_cache = true;
			continue;
		}
		if (!(IS("--api-sock") || IS("--config-file") || IS("--id") ||
		      IS("--http-api-max-payload-size") || IS("--api-idle-timeout") ||
		      IS("--api-request-timeout") || IS("--seccomp"))) {
			fprintf(stderr, "ember: unknown option %s (see ember --api-sock --help)\n",
				a);
			return EXIT_CONFIG;
		}
		if (!v) {
			fprintf(stderr, "ember: %.*s needs a value\n", (int)n, a);
			return EXIT_CONFIG;
		}
		if (!eq)
			i++;
		char *end;
		if (IS("--api-sock"))
			o->sock = v;
		else if (IS("--config-file"))
			o->config_file = v;
		else if (IS("--id"))
			o->id = v;
		else if (IS("--seccomp")) {
			if (jail_seccomp_mode_parse(v, &o->seccomp)) {
				fprintf(stderr,
					"ember: --seccomp: \"%s\" is not enforce, log or off\n", v);
				return EXIT_CONFIG;
			}
		} else {
			unsigned long long x = strtoull(v, &end, 10);
			if (*end || !*v || x == 0 || x > (1ULL << 30)) {
				fprintf(stderr, "ember: %.*s: \"%s\" is not a positive number\n",
					(int)n, a, v);
				return EXIT_CONFIG;
			}
			unsigned ms = (unsigned)(x * 1000 > 1u << 31 ? 1u << 31 : x * 1000);
			if (IS("--api-idle-timeout"))
				o->lim.idle_ms = ms;
			else if (IS("--api-request-timeout"))
				o->lim.request_ms = ms;
			else
				o->lim.max_body = (size_t)x;
		}
#undef IS
	}
	if (o->no_api && !o->config_file) {
		fprintf(stderr, "ember: --no-api needs --config-file\n");
		return EXIT_CONFIG;
	}
	if (!o->sock && !o->config_file) {
		fprintf(stderr, "ember: give --api-sock PATH or --config-file FILE\n");
		return EXIT_CONFIG;
	}
	if (o->no_api)
		o->sock = NULL;
	return 0;
}

static bool boot_done(void *opaque)
{
	return g.api.started || g.api.start_code || g.fatal;
}

/* What serving needs on both paths (api_main, api_run), after
 * api_init(a): the mailbox, and the API thread (when lfd >= 0), which
 * serves at once (api_run holds a->lock until the VM runs). */
static int serve(struct api *a, int lfd, const struct opts *o, const char *version)
{
	int r;
	a->version = version;
	if (o->id)
		a->id = o->id;
	a->seccomp = o->seccomp;
	a->no_cpuid_cache = o->no_cpuid_cache;
	a->vm = &g.vm;
	a->vmm_tid = pthread_self();
	pthread_mutex_init(&a->mbox.lock, NULL);
	pthread_cond_init(&a->mbox.done_cv, NULL);
	a->mbox.efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	a->mbox.done_efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (a->mbox.efd < 0 || a->mbox.done_efd < 0)
		return -errno;
	/* jansson seeds its hash function once, from /dev/urandom: here,
	 * before any thread is sandboxed. */
	json_object_seed(0);
	if (lfd < 0)
		return 0;
	pthread_t t;
	/* The migration thread too, now: made later, it could not be (the
	 * API thread's filter has no clone, and the vmm thread's only the
	 * teardown child's). */
	r = mig_init(&a->mig, o->seccomp, &api_mig_source_ops, &api_mig_target_ops, a);
	if (!r)
		r = jail_filter_build(&g.api_filter, JAIL_ROLE_API, o->seccomp);
	if (!r)
		r = http_server_new(&a->srv, lfd, &o->lim, api_handle, a);
	if (!r)
		r = http_server_watch(a->srv, &a->job.done_src, a->mbox.done_efd, api_job_done, a);
	if (!r)
		r = -pthread_create(&t, NULL, api_thread, a);
	return r;
}

int api_main(int argc, char **argv, const char *version)
{
	struct api *a = &g.api;
	struct opts o;
	char err[CFG_ERR_MAX + VM_ERR_MAX];
	struct timespec t_main;
	int lfd = -1;

	clock_gettime(CLOCK_MONOTONIC, &t_main);
	jail_malloc_on_brk(); /* the API thread mallocs after its filter */
	memset(&o, 0, sizeof(o));
	int r = parse_args(argc, argv, &o);
	if (r)
		return r < 0 ? 0 : r;
	if (o.sock) {
		lfd = make_socket(o.sock, err, sizeof(err));
		if (lfd < 0) {
			fprintf(stderr, "ember: %s\n", err);
			return EXIT_CONFIG;
		}
	}
	if (api_init(a) || ev_init(&g.boot_ev)) {
		fprintf(stderr, "ember: out of memory\n");
		return EXIT_HOST;
	}
	a->t_main = t_main;
	clock_gettime(CLOCK_MONOTONIC, &a->t_listening);
	if (o.config_file) /* the API serves once the boot is done */
		pthread_mutex_lock(&a->lock);
	r = serve(a, lfd, &o, version);
	if (!r)
		r = ev_add(&g.boot_ev, &g.mbox_src, a->mbox.efd, EPOLLIN, on_mbox, a);
	if (r) {
		fprintf(stderr, "ember: cannot start the API: %s\n", strerror(-r));
		return EXIT_HOST;
	}

	if (o.config_file) {
		char fault[API_FAULT_MAX];
		r = api_load_config_file(a, o.config_file, err, sizeof(err));
		if (r)
			fprintf(stderr, "ember: %s\n", err);
		else if ((r = api_instance_start(a, fault, sizeof(fault))))
			fprintf(stderr, "ember: %s: %s\n", o.config_file, fault);
		pthread_mutex_unlock(&a->lock);
		if (r)
			return a->start_code ? a->start_code : EXIT_CONFIG;
	} else {
		/* Best effort: without them the start makes vCPU 0's thread,
		 * the KVM VM and vCPU 0. */
		g.vcpu0_made = !vm_vcpu0_thread_make(&g.vcpu0, o.seccomp);
		(void)vm_prebuild(&g.pre, cpuid_cache(a));
		r = ev_run(&g.boot_ev, boot_done, a);
		if (r) {
			fprintf(stderr, "ember: vmm event loop: %s\n", strerror(-r));
			return EXIT_HOST;
		}
	}
	if (g.fatal && !a->started) {
		fprintf(stderr, "ember: %s\n", g.fatal_msg);
		return EXIT_HOST;
	}
	if (a->start_code) {
		fprintf(stderr, "ember: %s\n", g.vm.stop_reason);
		wait_replies(a); /* InstanceStart's 400 */
		return a->start_code;
	}

	(void)!vm_wait(&g.vm); /* a failure stopped the VM: its code says so */
	r = g.vm.exit_code;
	atomic_store(&a->state, API_STOPPED);
	api_metrics_flush(a);
	if (r != 0)
		fprintf(stderr, "ember: %s\n", g.vm.stop_reason);
	wait_replies(a);
	vm_detach_teardown(&g.vm);
	return r;
}

/* GET /machine-config and /vm/config describe what the command line gave. */
static void describe(struct api *a, const struct vm *vm, const struct vm_config *cfg)
{
	json_decref(a->machine);
	a->machine = json_pack("{s:i,s:I,s:b,s:b,s:s}", "vcpu_count", (int)cfg->vcpus,
			       "mem_size_mib", (json_int_t)(cfg->mem_size >> 20), "smt", 0,
			       "track_dirty_pages", vm->track_dirty, "huge_pages", "None");
	if (cfg->kernel[0] && !vm->restored)
		a->boot_source = json_pack("{s:s,s:s}", "kernel_image_path", cfg->kernel,
					   "boot_args", cfg->cmdline);
	describe_devices(a, cfg);
}

int api_run(struct vm *vm, struct vm_config *cfg, const char *sock, const char *version)
{
	struct api *a = &g.api;
	struct opts o = {.sock = sock,
			 .seccomp = vm->seccomp,
			 .no_cpuid_cache = !vm->cpuid_cache,
			 .lim = {API_MAX_BODY, API_IDLE_MS_DEFAULT, API_REQUEST_MS_DEFAULT}};
	char err[CFG_PATH_MAX + 96];

	clock_gettime(CLOCK_MONOTONIC, &a->t_main);
	jail_malloc_on_brk(); /* the API thread mallocs after its filter */
	int lfd = make_socket(sock, err, sizeof(err));
	if (lfd < 0) {
		vm_stop(vm, EXIT_CONFIG, err);
		return EXIT_CONFIG;
	}
	int r = api_init(a);
	if (r) {
		vm_stop(vm, EXIT_HOST, "cannot start the API: out of memory");
		return EXIT_HOST;
	}
	clock_gettime(CLOCK_MONOTONIC, &a->t_listening);
	free(a->cfg);
	a->cfg = cfg;
	describe(a, vm, cfg);
	/* Requests wait on the lock until the VM runs (or failed to start). */
	pthread_mutex_lock(&a->lock);
	r = serve(a, lfd, &o, version);
	a->vm = vm;
	vm->progress = &a->progress;
	if (!r)
		r = watch_api(a, vm);
	if (r) {
		snprintf(err, sizeof(err), "cannot start the API: %s", strerror(-r));
		vm_stop(vm, EXIT_HOST, err);
		pthread_mutex_unlock(&a->lock);
		return EXIT_HOST;
	}
	clock_gettime(CLOCK_MONOTONIC, &a->t_start_req);
	r = vm_start(vm);
	if (!r) {
		a->started = true;
		atomic_store(&a->state, vm->paused ? API_PAUSED : API_RUNNING);
	}
	pthread_mutex_unlock(&a->lock);
	if (!r)
		(void)!vm_wait(vm); /* a failure stopped the VM: its code says so */
	atomic_store(&a->state, API_STOPPED);
	wait_replies(a); /* a snapshot create done as the guest stopped */
	return vm->exit_code;
}
