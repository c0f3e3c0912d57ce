/* emberd: the supervisor (docs/ha.md).  Parses the command line, builds
 * the host (its VMs from --vm-dir), serves the control socket, joins the
 * cluster when --etcd is given, and runs the loop; SIGTERM/SIGINT suspend
 * every VM and exit, SIGHUP reloads the VM folder. */
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ha/emberd/local.h"

static const char usage[] =
    "usage: emberd --vm-dir DIR --state-dir DIR [options]\n"
    "\n"
    "Supervise the microVMs defined by DIR's *.ini files (docs/ha.md): start each\n"
    "through ember-jailer, restart by its policy, snapshot it, suspend it at\n"
    "shutdown (SIGTERM) and resume it at the next start.  SIGHUP reloads DIR.\n"
    "\n"
    "  --vm-dir DIR          the VM files\n"
    "  --state-dir DIR       events.log, vms/NAME/console.log, suspend markers\n"
    "  --snap-dir DIR        snapshots (default STATE/snapshots; cluster: shared)\n"
    "  --sock PATH           the control socket (default /run/emberd.sock)\n"
    "  --host NAME           this host's name (default: hostname)\n"
    "  --ember PATH          ember (default: beside emberd)\n"
    "  --jailer PATH         ember-jailer (default: beside emberd)\n"
    "  --jail-base DIR       the jails' base (default /srv/jailer)\n"
    "  --uid N, --gid N      the jailed VMs' identity, not 0 (default 65534)\n"
    "cluster mode (docs/ha.md):\n"
    "  --etcd URLS           etcd endpoints, comma-separated: join the cluster\n"
    "  --ttl SECS            the host lease's TTL (default 2)\n"
    "  --fence-margin DUR    self-fence this long before the lease would end (500ms)\n"
    "  --grace DUR           wait this after a host's lease ends (default 1s)\n"
    "  --capacity-mem SIZE   guest RAM offered, bytes or 512M/4G (default 80% of RAM)\n"
    "  --capacity-vcpus N    vCPUs offered (default 4 x CPUs)\n"
    "  --balance-level N     the balancer's threshold, 1..5 as DRS (default 3; 0 off)\n"
    "  --balance-interval DUR  between its rounds (default 10s)\n"
    "metrics and dashboard (docs/ha.md):\n"
    "  --http ADDR:PORT      serve /metrics, the dashboard and /api/cluster on TCP\n"
    "                        (read-mostly; off by default; e.g. 127.0.0.1:9120)\n"
    "  --http-allow-actions  allow the dashboard's maintenance enter/exit on it\n"
    "  --load-interval DUR   sample the VMs' load this often (default 2s)\n"
    "  --migrate-listen ADDR:PORT  take live migrations (moves) here\n"
    "  --migrate-psk FILE    moves authenticate with this pre-shared key (or:)\n"
    "  --migrate-cert F, --migrate-key F, --migrate-ca F  certificates, both ways\n"
    "  --migrate-insecure-plain  moves over plain TCP (trusted networks only)\n"
    "  -h, --help            this text\n";

struct opts {
	struct ed_host_opts h;
	const char *sock;
	struct ed_cluster_opts c;
	struct ed_obs_opts obs;
	bool cluster;
};

static char beside_buf[2][PATH_MAX];

static const char *beside(int i, const char *name)
{
	char *p = beside_buf[i];
	ssize_t n = readlink("/proc/self/exe", p, PATH_MAX - 32);
	if (n <= 0)
		return name;
	p[n] = '\0';
	char *slash = strrchr(p, '/');
	strcpy(slash ? slash + 1 : p, name);
	return p;
}

static int num(const char *v, unsigned long long max, unsigned long long *out)
{
	char *end;
	errno = 0;
	*out = strtoull(v, &end, 10);
	return errno || end == v || *end || *v == '-' || *out > max ? -EINVAL : 0;
}

static int size(const char *v, uint64_t *out)
{
	char *end;
	errno = 0;
	unsigned long long n = strtoull(v, &end, 10);
	uint64_t mul = !*end		   ? 1
		       : !strcmp(end, "K") ? 1ULL << 10
		       : !strcmp(end, "M") ? 1ULL << 20
		       : !strcmp(end, "G") ? 1ULL << 30
		       : !strcmp(end, "T") ? 1ULL << 40
					   : 0;
	if (errno || end == v || *v == '-' || !mul || n > UINT64_MAX / mul)
		return -EINVAL;
	*out = n * mul;
	return 0;
}

#define USAGE(...)                                                                                 \
	do {                                                                                       \
		fprintf(stderr, "emberd: " __VA_ARGS__);                                           \
		fputs(" (see --help)\n", stderr);                                                  \
		return 2;                                                                          \
	} while (0)

static int parse(int argc, char **argv, struct opts *o)
{
	static char host[ED_NAME_MAX + 1], snap[PATH_MAX];
	unsigned long long n;
	*o = (struct opts){.sock = "/run/emberd.sock",
			   .h = {.jail_base = "/srv/jailer", .uid = 65534, .gid = 65534},
			   .c = {.ttl_s = 2,
				 .fence_margin_ms = 500,
				 .grace_ms = 1000,
				 .balance_level = 3,
				 .balance_interval_ms = 10000}};
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
			fputs(usage, stdout);
			return 1;
		}
		if (!strcmp(a, "--http-allow-actions")) {
			o->obs.allow_actions = true;
			continue;
		}
		if (!strcmp(a, "--migrate-insecure-plain")) {
			o->c.migrate_tls.insecure_plain = true;
			continue;
		}
		if (i + 1 >= argc)
			USAGE("%s: unknown, or missing its value", a);
		const char *v = argv[++i];
		const char **s = !strcmp(a, "--vm-dir")	     ? &o->h.vm_dir
				 : !strcmp(a, "--state-dir") ? &o->h.state_dir
				 : !strcmp(a, "--snap-dir")  ? &o->h.snap_dir
				 : !strcmp(a, "--sock")	     ? &o->sock
				 : !strcmp(a, "--host")	     ? &o->h.host
				 : !strcmp(a, "--ember")     ? &o->h.ember
				 : !strcmp(a, "--jailer")    ? &o->h.jailer
				 : !strcmp(a, "--jail-base") ? &o->h.jail_base
				 : !strcmp(a, "--etcd")	     ? &o->c.endpoints
				 : !strcmp(a, "--http")	     ? &o->obs.http
				 : !strcmp(a, "--migrate-listen") ? &o->c.migrate_listen
				 : !strcmp(a, "--migrate-psk")	  ? &o->c.migrate_tls.psk_file
				 : !strcmp(a, "--migrate-cert")	  ? &o->c.migrate_tls.cert
				 : !strcmp(a, "--migrate-key")	  ? &o->c.migrate_tls.key
				 : !strcmp(a, "--migrate-ca")	  ? &o->c.migrate_tls.ca
							     : NULL;
		if (s) {
			*s = v;
			continue;
		}
		if (!strcmp(a, "--uid") || !strcmp(a, "--gid")) {
			if (num(v, UINT32_MAX - 1, &n) || n == 0)
				USAGE("%s %s: a number, not 0 (the jail needs an unprivileged id)",
				      a, v);
			if (a[2] == 'u')
				o->h.uid = (uid_t)n;
			else
				o->h.gid = (gid_t)n;
		} else if (!strcmp(a, "--ttl")) {
			if (num(v, 3600, &n) || n == 0)
				USAGE("--ttl %s: seconds, 1..3600", v);
			o->c.ttl_s = (unsigned)n;
		} else if (!strcmp(a, "--fence-margin") || !strcmp(a, "--grace")) {
			uint64_t ms;
			if (ed_parse_duration(v, &ms))
				USAGE("%s %s: a duration (500ms, 2s)", a, v);
			*(a[2] == 'f' ? &o->c.fence_margin_ms : &o->c.grace_ms) = ms;
		} else if (!strcmp(a, "--load-interval")) {
			if (ed_parse_duration(v, &o->obs.load_interval_ms) ||
			    o->obs.load_interval_ms < 100 || o->obs.load_interval_ms > 3600000)
				USAGE("--load-interval %s: a duration, 100ms..1h", v);
		} else if (!strcmp(a, "--capacity-mem")) {
			if (size(v, &o->c.capacity_mem))
				USAGE("--capacity-mem %s: bytes, or 512M, 4G", v);
		} else if (!strcmp(a, "--balance-level")) {
			if (num(v, 5, &n))
				USAGE("--balance-level %s: 0 (off) .. 5", v);
			o->c.balance_level = (unsigned)n;
		} else if (!strcmp(a, "--balance-interval")) {
			if (ed_parse_duration(v, &o->c.balance_interval_ms) ||
			    o->c.balance_interval_ms < 100)
				USAGE("--balance-interval %s: a duration, at least 100ms", v);
		} else if (!strcmp(a, "--capacity-vcpus")) {
			if (num(v, 1 << 20, &n))
				USAGE("--capacity-vcpus %s: a number", v);
			o->c.capacity_vcpus = (unsigned)n;
		} else {
			USAGE("unknown option %s", a);
		}
	}
	if (!o->h.vm_dir || !o->h.state_dir)
		USAGE("--vm-dir and --state-dir are required");
	if (!o->h.host) {
		if (gethostname(host, sizeof(host)) < 0)
			host[0] = '\0';
		host[strcspn(host, ".")] = '\0';
		o->h.host = host;
	}
	if (!*o->h.host || strlen(o->h.host) > ED_NAME_MAX ||
	    strspn(o->h.host, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-") !=
		strlen(o->h.host))
		USAGE("--host \"%s\": 1..%d of A-Z a-z 0-9 -", o->h.host, ED_NAME_MAX);
	if (!o->h.snap_dir) {
		snprintf(snap, sizeof(snap), "%s/snapshots", o->h.state_dir);
		o->h.snap_dir = snap;
	}
	if (!o->h.ember)
		o->h.ember = beside(0, "ember");
	if (!o->h.jailer)
		o->h.jailer = beside(1, "ember-jailer");
	o->cluster = o->c.endpoints != NULL;
	o->obs.endpoints = o->c.endpoints;
	o->obs.mem_cap = o->c.capacity_mem;
	if (o->c.migrate_listen && !o->cluster)
		USAGE("--migrate-listen needs cluster mode (--etcd)");
	return 0;
}

struct sigctx {
	struct ed_host *h;
	int fd;
	int code;
};

static void on_signal(void *arg, uint32_t events)
{
	(void)events;
	struct sigctx *c = arg;
	struct signalfd_siginfo si;
	while (read(c->fd, &si, sizeof(si)) == sizeof(si)) {
		if (si.ssi_signo == SIGTERM || si.ssi_signo == SIGINT) {
			ed_event(c->h, NULL, "shutdown", "signal %u: suspending every VM",
				 si.ssi_signo);
			ed_notify_stopping("suspending VMs");
			ed_loop_stop(ed_host_loop(c->h));
		} else if (si.ssi_signo == SIGHUP) {
			json_t *rep = NULL;
			char why[ED_ERR_MAX];
			if (ed_host_reload(c->h, &rep, why, sizeof(why)))
				ed_event(c->h, NULL, "reload-failed", "%s", why);
			else {
				char *s = json_dumps(rep, JSON_COMPACT);
				ed_event(c->h, NULL, "reloaded", "%s", s ? s : "");
				free(s);
				ed_host_start_fresh(c->h); /* new ones autostart */
			}
			json_decref(rep);
		}
		/* SIGCHLD: the VMs' pidfds tell their exits; nothing else forks */
	}
}

int main(int argc, char **argv)
{
	struct opts o;
	int r = parse(argc, argv, &o);
	if (r)
		return r == 1 ? 0 : r;
	if (geteuid() != 0) {
		fprintf(stderr, "emberd: needs root (the jailer, its mounts)\n");
		return 1;
	}
	char err[ED_ERR_MAX] = "";
	struct ed_loop *l = NULL;
	struct ed_host *h = NULL;
	struct ed_cluster *c = NULL;
	struct ed_ctl *ctl = NULL;
	struct ed_obs *obs = NULL;
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGHUP);
	sigaddset(&set, SIGCHLD);
	sigprocmask(SIG_BLOCK, &set, NULL);
	signal(SIGPIPE, SIG_IGN);
	struct sigctx sc = {.fd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK)};
	if (sc.fd < 0 || ed_loop_new(&l)) {
		fprintf(stderr, "emberd: signalfd/epoll: %s\n", strerror(errno));
		return 1;
	}
	r = ed_host_new(&h, l, &o.h, err, sizeof(err));
	if (r) {
		fprintf(stderr, "emberd: %s\n", err);
		return 1;
	}
	sc.h = h;
	if ((r = ed_loop_add_fd(l, sc.fd, EPOLLIN, on_signal, &sc)) ||
	    (r = ed_ctl_open(&ctl, h, o.sock, err, sizeof(err)))) {
		fprintf(stderr, "emberd: %s\n", err[0] ? err : strerror(-r));
		if (r != -ENOSYS)
			return 1;
		err[0] = '\0';
	}
	if (o.cluster && ed_cluster_start(&c, h, &o.c, err, sizeof(err))) {
		fprintf(stderr, "emberd: cluster: %s\n", err);
		return 1;
	}
	if (ed_obs_start(&obs, h, c, &o.obs, err, sizeof(err))) {
		fprintf(stderr, "emberd: %s\n", err);
		ed_cluster_stop(c, false); /* no VM started yet: the lease just lapses */
		return 1;
	}
	if (!o.cluster)
		ed_host_start_all(h);
	ed_event(h, NULL, "ready", "emberd on %s: %s mode", ed_host_name(h),
		 o.cluster ? "cluster" : "local");
	ed_notify_ready(l, "supervising");
	r = ed_loop_run(l);
	ed_host_suspend_all(h);
	ed_obs_stop(obs);
	if (c)
		ed_cluster_stop(c, true);
	ed_event(h, NULL, "stopped", "emberd exits");
	if (ctl)
		ed_ctl_close(ctl);
	ed_host_free(h);
	ed_loop_free(l);
	return r ? 1 : 0;
}
