/* `ember migrate`'s command line (ha/migrate/migrate.h): pure parsing,
 * no file or socket touched, so every refusal is unit-tested. */
#include <errno.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ha/migrate/migrate.h"

const char mig_usage[] =
    "usage: ember migrate --from A.sock --to B.sock [options]          same host\n"
    "       ember migrate --listen ADDR:PORT --to B.sock AUTH [options]  receiving host\n"
    "       ember migrate --from A.sock --to-host ADDR:PORT AUTH [options] sending host\n"
    "       ember migrate --resolve resume|stop --api-sock S.sock\n"
    "\n"
    "Live-migrate the microVM of a running ember (`ember --api-sock A.sock`, or\n"
    "`ember run ... --api-sock A.sock`) into a fresh one (`ember --api-sock\n"
    "B.sock`, nothing configured): memory is copied while the guest runs, then\n"
    "the guest stops for the last pages and its state, and resumes on the\n"
    "target; it never runs in two places (docs/migration.md).  The VMMs open no\n"
    "socket: this command hands each one end of a unix socketpair over its API\n"
    "socket, and between hosts it makes the TCP connection, authenticates it\n"
    "(TLS 1.3) and relays the bytes.  (Runs build/ember-migrate, which `ember\n"
    "migrate` finds beside the ember binary.)\n"
    "\n"
    "Where:\n"
    "  --from SOCK            the source's API socket\n"
    "  --to SOCK              the target's API socket (a fresh ember)\n"
    "  --to-host ADDR:PORT    the receiving host's `ember migrate --listen`\n"
    "  --listen ADDR:PORT     accept one connection there (port 0: any; the port\n"
    "                         is printed on stderr), authenticate it, then hand\n"
    "                         the stream to --to\n"
    "Authentication between hosts (exactly one; none at all is refused):\n"
    "  --tls-cert PEM --tls-key PEM --tls-ca PEM\n"
    "                         mutual TLS: both sides present a certificate and\n"
    "                         verify the other's against the CA; the sender also\n"
    "                         checks that the receiver's names ADDR (an IP\n"
    "                         address SAN or a DNS name)\n"
    "  --tls-peer-name NAME   the sender checks NAME instead of ADDR\n"
    "  --psk-file FILE        a TLS 1.3 pre-shared key: one line [IDENTITY:]HEX,\n"
    "                         32 to 96 hex digits (`openssl rand -hex 32`); the\n"
    "                         file must be private (chmod 600)\n"
    "  --insecure-plain       plain TCP: no authentication, no encryption (a\n"
    "                         trusted network only)\n"
    "  A peer that fails authentication is dropped before one byte reaches or\n"
    "  leaves the VMM.\n"
    "The migration (source side):\n"
    "  --downtime-ms N        the budget of the stop-and-copy phase\n"
    "  --max-bandwidth BYTES  bytes per second (K, M, G suffixes: 1024-based);\n"
    "                         0: unlimited\n"
    "  --converge MODE        throttle (take vCPU time away when rounds stop\n"
    "                         shrinking), postcopy (switch to post-copy) or\n"
    "                         none (go on until the timeout)\n"
    "                         (unset: the VMM's defaults, docs/migration.md)\n"
    "  --mode MODE            precopy (default), postcopy (after the first round)\n"
    "                         or postcopy-now; --converge postcopy switches when\n"
    "                         rounds stop shrinking (same host only)\n"
    "  --local                same host: the VM's memory goes over as a file\n"
    "                         descriptor, not copied (its RAM must be shared:\n"
    "                         ember run --memory-shared; docs/migration.md)\n"
    "  --verify all|dirty     all (default): the last pass hashes every page and\n"
    "                         resends any the dirty log missed (O(RAM) of\n"
    "                         downtime); dirty: trust KVM's dirty log\n"
    "  --timeout SECONDS      bound the whole migration (default 60): a timeout\n"
    "                         fails it cleanly, the source runs on.  Receiving:\n"
    "                         also how long to wait for the connection\n"
    "The target (receiving side), as for a snapshot load:\n"
    "  --use-saved-paths      open the drives, taps and vsock socket the source\n"
    "                         used, as they are (shared storage, same host)\n"
    "  --drive ID,path=FILE   drive ID opens FILE       (repeatable)\n"
    "  --net ID,tap=TAP       interface ID attaches TAP (repeatable)\n"
    "  --vsock uds=PATH       the vsock device's host socket\n"
    "Disks copied with the VM (both sides; docs/storage-migration.md):\n"
    "  --copy-storage all|ID[,ID...]\n"
    "                         sending: copy these drives (all: every writable\n"
    "                         one) over the same stream, their writes tracked;\n"
    "                         receiving: each named drive's --drive FILE is\n"
    "                         created here (it must not exist), written, and\n"
    "                         removed again if the VM does not move\n"
    "Hand-over, by hand:\n"
    "  --resolve resume|stop --api-sock SOCK\n"
    "                         end a source's handover-unknown or a target's\n"
    "                         ready: resume = run the VM there, stop = not\n"
    "                         (look at BOTH ends first: the VM must run once)\n"
    "\n"
    "Progress: on a terminal one line redrawn in place (phase, round, percent,\n"
    "MB/s, expected downtime); otherwise one line per phase or round.  The last\n"
    "line on stdout is a JSON summary: result, total_ms, downtime_ms,\n"
    "bytes_sent, rounds, throttle_pct, handover, error.\n"
    "\n"
    "The hand-over is watched at both ends (same host): a source that says\n"
    "handover-unknown has the target resumed if it waits in ready (then the\n"
    "source is stopped), or is resumed itself if the target is gone; a target\n"
    "left in ready by a source that is gone (its API socket refuses\n"
    "connections) is resumed.  Between hosts each side sees only its own VMM:\n"
    "the receiving side waits until its target leaves receiving/ready and\n"
    "reports; a target still in ready at the end, or a source in\n"
    "handover-unknown, is reported (exit 2) for --resolve by hand.\n"
    "\n"
    "Exit codes: 0 moved; 1 not moved (the VM runs on at the source; the\n"
    "reason on stderr); 2 needs a look (the message says where the VM is);\n"
    "121 bad arguments.\n";

int mig_parse_bytes(const char *s, uint64_t *bytes)
{
	static const char units[] = "kmgt";
	char *end;
	if (!s || !(*s >= '0' && *s <= '9'))
		return -EINVAL;
	double v = strtod(s, &end);
	unsigned shift = 0;
	if (end != s + strspn(s, "0123456789."))
		return -EINVAL; /* no exponents, hex or "inf" */
	const char *u = *end ? strchr(units, *end | 0x20) : NULL;
	if (u && *u) {
		shift = 10 * (unsigned)(u - units + 1);
		end++;
		if ((*end | 0x20) == 'i' && (end[1] | 0x20) == 'b')
			end++;
	}
	if ((*end | 0x20) == 'b')
		end++;
	if (!strcmp(end, "/s"))
		end += 2;
	if (*end)
		return -EINVAL;
	v = ldexp(v, (int)shift);
	if (!(v >= 0) || v >= 18446744073709551616.0)
		return -ERANGE;
	if (v != floor(v))
		return -EINVAL; /* 1.3K is not a whole number of bytes */
	*bytes = (uint64_t)v;
	return 0;
}

int mig_parse_seconds(const char *s, uint64_t *ms)
{
	char *end;
	if (!s || !(*s >= '0' && *s <= '9'))
		return -EINVAL;
	double v = strtod(s, &end), scale = 1000;
	if (end != s + strspn(s, "0123456789."))
		return -EINVAL;
	if (!strcmp(end, "ms"))
		scale = 1;
	else if (!strcmp(end, "m"))
		scale = 60000;
	else if (*end && strcmp(end, "s"))
		return -EINVAL;
	v *= scale;
	if (!(v >= 0) || v > 1e15)
		return -ERANGE;
	*ms = (uint64_t)(v + 0.5);
	return 0;
}

/* "ID,key=VALUE" into o; 0 or -EINVAL. */
static int parse_override(char *spec, const char *key, struct mig_override *o)
{
	char *comma = strchr(spec, ',');
	size_t kl = strlen(key);
	if (!comma || comma == spec || strncmp(comma + 1, key, kl) || comma[1 + kl] != '=' ||
	    !comma[2 + kl])
		return -EINVAL;
	*comma = '\0';
	o->id = spec;
	o->path = comma + 2 + kl;
	return 0;
}

static int bad(char *err, size_t len, const char *fmt, const char *arg)
{
	snprintf(err, len, fmt, arg);
	return -EINVAL;
}

/* One option with its value (argv[*i + 1] or after "="). */
static int take(struct mig_args *a, const char *opt, char *val, char *err, size_t len)
{
	static const struct {
		const char *name;
		size_t off;
	} strs[] = {
	    {"from", offsetof(struct mig_args, from)},
	    {"to", offsetof(struct mig_args, to)},
	    {"to-host", offsetof(struct mig_args, to_host)},
	    {"listen", offsetof(struct mig_args, listen)},
	    {"api-sock", offsetof(struct mig_args, api_sock)},
	    {"resolve", offsetof(struct mig_args, resolve)},
	    {"converge", offsetof(struct mig_args, converge)},
	    {"verify", offsetof(struct mig_args, verify)},
	    {"mode", offsetof(struct mig_args, cmode)},
	    {"tls-cert", offsetof(struct mig_args, tls.cert)},
	    {"tls-key", offsetof(struct mig_args, tls.key)},
	    {"tls-ca", offsetof(struct mig_args, tls.ca)},
	    {"tls-peer-name", offsetof(struct mig_args, tls.peer_name)},
	    {"psk-file", offsetof(struct mig_args, tls.psk_file)},
	    {"copy-storage", offsetof(struct mig_args, copy_storage)},
	};
	for (size_t k = 0; k < sizeof(strs) / sizeof(strs[0]); k++)
		if (!strcmp(opt, strs[k].name)) {
			*(const char **)((char *)a + strs[k].off) = val;
			return 0;
		}
	uint64_t *num = !strcmp(opt, "downtime-ms")	? &a->downtime_ms
			: !strcmp(opt, "max-bandwidth") ? &a->max_bandwidth
			: !strcmp(opt, "timeout")	? &a->timeout_ms
							: NULL;
	if (num == &a->downtime_ms) {
		char *end;
		unsigned long long v = strtoull(val, &end, 10);
		if (*val < '0' || *val > '9' || *end || v > 3600000)
			return bad(err, len, "--downtime-ms %s: give milliseconds, 0 to 3600000",
				   val);
		*num = v;
		return 0;
	}
	if (num == &a->max_bandwidth)
		return mig_parse_bytes(val, num) ? bad(err, len,
						       "--max-bandwidth %s: give bytes per second, "
						       "e.g. 100M or 1G (0: unlimited)",
						       val)
						 : 0;
	if (num)
		return mig_parse_seconds(val, num) || !*num
			   ? bad(err, len, "--timeout %s: give seconds above 0 (2.5, 90, 500ms)",
				 val)
			   : 0;
	bool drive = !strcmp(opt, "drive");
	if (drive || !strcmp(opt, "net")) {
		unsigned *n = drive ? &a->nr_drives : &a->nr_nets;
		struct mig_override *o = drive ? a->drives : a->nets;
		if (*n == MIG_OVERRIDES_MAX)
			return bad(err, len, "--%s: too many (at most 16)", opt);
		if (parse_override(val, drive ? "path" : "tap", &o[*n]))
			return bad(err, len,
				   drive ? "--drive %s: give ID,path=FILE"
					 : "--net %s: give ID,tap=TAP",
				   val);
		(*n)++;
		return 0;
	}
	if (!strcmp(opt, "vsock")) {
		if (strncmp(val, "uds=", 4) || !val[4])
			return bad(err, len, "--vsock %s: give uds=PATH", val);
		a->vsock_uds = val + 4;
		return 0;
	}
	return bad(err, len, "unknown option --%s", opt);
}

/* Which of the four forms the options make; 0 or -EINVAL. */
static int choose_mode(struct mig_args *a, bool send_opts, bool recv_opts, char *err, size_t len)
{
	bool tls = a->tls.cert || a->tls.key || a->tls.ca || a->tls.psk_file ||
		   a->tls.insecure_plain || a->tls.peer_name;
	if (a->resolve || a->api_sock) {
		if (!a->resolve || !a->api_sock)
			return bad(err, len, "%s", "--resolve OUTCOME goes with --api-sock SOCK");
		if (strcmp(a->resolve, "resume") && strcmp(a->resolve, "stop"))
			return bad(err, len, "--resolve %s: resume or stop", a->resolve);
		if (a->from || a->to || a->to_host || a->listen || tls || send_opts || recv_opts)
			return bad(err, len, "%s", "--resolve takes only --api-sock");
		a->mode = MIG_RESOLVE;
		return 0;
	}
	/* The three forms: which of --from, --to, --to-host, --listen each
	 * takes, and what it must not be given. */
	static const struct {
		enum mig_mode mode;
		unsigned ends; /* 1 --from, 2 --to, 4 --to-host, 8 --listen */
		const char *refusal;
	} forms[] = {
	    {MIG_SAME_HOST, 1 | 2,
	     "--from and --to are on this host: the stream is a socketpair between them, no "
	     "TLS options apply"},
	    {MIG_SEND, 1 | 4,
	     "--use-saved-paths, --drive, --net and --vsock are the receiving side's (ember "
	     "migrate --listen ... --to B.sock)"},
	    {MIG_RECEIVE, 2 | 8,
	     "--downtime-ms, --max-bandwidth and --converge are the sending side's (ember "
	     "migrate --from A.sock --to-host ...)"},
	};
	unsigned ends =
	    (a->from ? 1u : 0) | (a->to ? 2u : 0) | (a->to_host ? 4u : 0) | (a->listen ? 8u : 0);
	size_t f = 0;
	while (f < 3 && forms[f].ends != ends)
		f++;
	if (f == 3)
		return bad(err, len, "%s",
			   "give --from A.sock --to B.sock (same host), --listen ADDR:PORT "
			   "--to B.sock (receiving host) or --from A.sock --to-host ADDR:PORT "
			   "(sending host)");
	bool extra[] = {tls, recv_opts, send_opts};
	if (extra[f])
		return bad(err, len, "%s", forms[f].refusal);
	a->mode = forms[f].mode;
	if (a->local && a->mode != MIG_SAME_HOST)
		return bad(err, len, "%s",
			   "--local hands the VM's memory over as a file descriptor: both ends on "
			   "this host (--from A.sock --to B.sock)");
	const char *why = a->mode != MIG_SAME_HOST ? ha_tls_opts_refusal(&a->tls) : NULL;
	if (why)
		return bad(err, len, "between hosts: %s", why);
	if (a->converge && strcmp(a->converge, "throttle") && strcmp(a->converge, "none") &&
	    strcmp(a->converge, "postcopy"))
		return bad(err, len, "--converge %s: throttle, postcopy or none", a->converge);
	if (a->cmode && strcmp(a->cmode, "precopy") && strcmp(a->cmode, "postcopy") &&
	    strcmp(a->cmode, "postcopy-now"))
		return bad(err, len, "--mode %s: precopy, postcopy or postcopy-now", a->cmode);
	bool post = (a->cmode && strcmp(a->cmode, "precopy")) ||
		    (a->converge && !strcmp(a->converge, "postcopy"));
	if (post && a->mode != MIG_SAME_HOST)
		return bad(err, len, "%s",
			   "post-copy through ember migrate is same-host only for now: between "
			   "hosts the relay would have to outlive the hand-over while the pages "
			   "still flow (docs/migrate-cli.md)");
	if (post && a->local)
		return bad(err, len, "%s", "--local moves no pages: no post-copy with it");
	if (a->verify && strcmp(a->verify, "all") && strcmp(a->verify, "dirty"))
		return bad(err, len, "--verify %s: all or dirty", a->verify);
	if (a->copy_storage && (post || a->local))
		return bad(err, len, "%s",
			   "--copy-storage copies disks with pre-copy only (not with --local or "
			   "post-copy)");
	/* The receiving side creates each copied drive's --drive FILE */
	if (a->copy_storage && a->mode != MIG_SEND && strcmp(a->copy_storage, "all")) {
		char ids[512];
		snprintf(ids, sizeof(ids), "%s", a->copy_storage);
		for (char *save, *id = strtok_r(ids, ",", &save); id;
		     id = strtok_r(NULL, ",", &save)) {
			unsigned k = 0;
			while (k < a->nr_drives && strcmp(a->drives[k].id, id))
				k++;
			if (k == a->nr_drives) {
				snprintf(err, len,
					 "--copy-storage: drive %s needs --drive %s,path=FILE (the file "
					 "its copy is written to)",
					 id, id);
				return -EINVAL;
			}
		}
	}
	if (a->copy_storage && a->mode != MIG_SEND && !a->nr_drives)
		return bad(err, len, "%s",
			   "--copy-storage all: give --drive ID,path=FILE for each drive copied");
	return 0;
}

int mig_parse_args(int argc, char *const *argv, struct mig_args *a, char *err, size_t len)
{
	static const struct mig_args zero;
	bool send_opts = false, recv_opts = false;
	*a = zero;
	a->timeout_ms = 60000;
	a->downtime_ms = a->max_bandwidth = UINT64_MAX; /* unset: the VMM's defaults */
	for (int i = 0; i < argc; i++) {
		char *arg = argv[i], *val = NULL, opt[32];
		if (!strcmp(arg, "-h") || !strcmp(arg, "--help")) {
			a->help = true;
			return 0;
		}
		if (strncmp(arg, "--", 2) || !arg[2])
			return bad(err, len, "unexpected argument %s", arg);
		size_t ol = strcspn(arg + 2, "=");
		if (ol >= sizeof(opt))
			return bad(err, len, "unknown option %s", arg);
		memcpy(opt, arg + 2, ol);
		opt[ol] = '\0';
		if (!strcmp(opt, "insecure-plain") || !strcmp(opt, "use-saved-paths") ||
		    !strcmp(opt, "local")) {
			if (arg[2 + ol])
				return bad(err, len, "--%s takes no value", opt);
			*(opt[0] == 'i'	  ? &a->tls.insecure_plain
			  : opt[0] == 'l' ? &a->local
					  : &a->use_saved_paths) = true;
			recv_opts |= opt[0] == 'u';
			continue;
		}
		if (arg[2 + ol])
			val = arg + 3 + ol;
		else if (i + 1 < argc)
			val = argv[++i];
		if (!val || !*val)
			return bad(err, len, "--%s needs a value", opt);
		int r = take(a, opt, val, err, len);
		if (r)
			return r;
		send_opts |= !strcmp(opt, "downtime-ms") || !strcmp(opt, "max-bandwidth") ||
			     !strcmp(opt, "converge") || !strcmp(opt, "verify") ||
			     !strcmp(opt, "mode");
		recv_opts |= !strcmp(opt, "drive") || !strcmp(opt, "net") || !strcmp(opt, "vsock");
	}
	return choose_mode(a, send_opts, recv_opts, err, len);
}

json_t *mig_copy_storage_json(const char *spec)
{
	if (!strcmp(spec, "all"))
		return json_string("all");
	json_t *arr = json_array();
	char ids[512];
	snprintf(ids, sizeof(ids), "%s", spec);
	for (char *save, *id = strtok_r(ids, ",", &save); arr && id;
	     id = strtok_r(NULL, ",", &save))
		json_array_append_new(arr, json_string(id));
	return arr;
}

json_t *mig_send_body(const struct mig_args *a)
{
	json_t *b = json_pack("{s:I}", "timeout_ms", (json_int_t)a->timeout_ms);
	if (b && a->downtime_ms != UINT64_MAX)
		json_object_set_new(b, "downtime_ms", json_integer((json_int_t)a->downtime_ms));
	if (b && a->max_bandwidth != UINT64_MAX)
		json_object_set_new(b, "max_bandwidth",
				    json_integer(a->max_bandwidth > INT64_MAX
						     ? INT64_MAX
						     : (json_int_t)a->max_bandwidth));
	if (b && a->converge)
		json_object_set_new(b, "converge", json_string(a->converge));
	if (b && a->verify)
		json_object_set_new(b, "verify", json_string(a->verify));
	if (b && a->copy_storage)
		json_object_set_new(b, "copy_storage", mig_copy_storage_json(a->copy_storage));
	if (b && a->local)
		json_object_set_new(b, "mode", json_string("local"));
	else if (b && a->cmode)
		json_object_set_new(b, "mode", json_string(a->cmode));
	return b;
}

json_t *mig_receive_body(const struct mig_args *a)
{
	json_t *b = json_object();
	if (b && a->use_saved_paths)
		json_object_set_new(b, "use_saved_paths", json_true());
	for (int drives = 1; b && drives >= 0; drives--) {
		unsigned n = drives ? a->nr_drives : a->nr_nets;
		const struct mig_override *o = drives ? a->drives : a->nets;
		json_t *arr = n ? json_array() : NULL;
		for (unsigned i = 0; arr && i < n; i++)
			json_array_append_new(
			    arr, json_pack("{s:s,s:s}", drives ? "drive_id" : "iface_id", o[i].id,
					   drives ? "path_on_host" : "host_dev_name", o[i].path));
		if (arr)
			json_object_set_new(b, drives ? "drive_overrides" : "network_overrides",
					    arr);
	}
	if (b && a->copy_storage)
		json_object_set_new(b, "copy_storage", mig_copy_storage_json(a->copy_storage));
	if (b && a->vsock_uds)
		json_object_set_new(b, "vsock_override",
				    json_pack("{s:s}", "uds_path", a->vsock_uds));
	return b;
}
