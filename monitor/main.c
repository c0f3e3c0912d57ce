/* ember: command line.  `ember run` boots one microVM and exits with the
 * guest's verdict (see README.md, "Exit codes"). */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "config/config.h"
#include "monitor/api/api.h"
#include "monitor/exitcodes.h"
#include "monitor/hvt/hvt.h"
#include "monitor/hvt/hvt_args.h"
#include "monitor/startup.h"
#include "monitor/vm.h"
#include "snapshot/snapshot.h"

#define EMBER_VERSION "0.1.0"

static const char usage_main[] =
    "usage: ember <command> [options]\n"
    "\n"
    "commands:\n"
    "  run       boot one microVM (ember run --help)\n"
    "  snapshot  create, load and merge snapshots (ember help snapshot)\n"
    "  migrate   live-migrate a running microVM into another ember, here or on\n"
    "            another host (ember migrate --help; runs ember-migrate, found\n"
    "            beside this binary)\n"
    "  drive     move a running VM's drive to another file (ember help drive)\n"
    "  ctl       drive emberd, the VM supervisor: list, status, start, stop,\n"
    "            logs, events... (ember ctl help; runs emberctl, found beside\n"
    "            this binary)\n"
    "  version   print the version\n"
    "  help      this text, or help on a command (ember help run)\n"
    "\n"
    "ember --api-sock PATH [--config-file FILE.json]: Firecracker's API\n"
    "(ember --api-sock x --help)\n";

static const char usage_run[] =
    "usage: ember run [FILE.ini] [options] [[--] KERNEL [ARGS...]]\n"
    "\n"
    "Boot one microVM: a PVH ELF (unikernels, ember's test guests), a Linux\n"
    "bzImage, a vmlinux ELF, or a Solo5 hvt unikernel (found by its notes).\n"
    "Options override the INI file's values.\n"
    "\n"
    "  --kernel PATH      kernel image (required unless the INI file gives it)\n"
    "  --memory SIZE      guest RAM: 64M, 1G, 512K; bare number = MiB (default 64M)\n"
    "  --vcpus N          vCPUs, 1..32 (default 1)\n"
    "  --cmdline STR      kernel command line\n"
    "  --initrd PATH      initial ramdisk\n"
    "  --timeout SECS     end the whole run after SECS (2.5, 500ms, 1m), start-up\n"
    "                     included; exit 124\n"
    "  --serial OUT       guest serial output: stdout (default), none, or a file\n"
    "  --irqchip MODE     auto (default: on for SMP and Linux), on, off\n"
    "  --name NAME        VM name for messages\n"
    "  --drive ID,path=FILE[,read_only=on][,direct=on][,LIMITS]\n"
    "                     a virtio-blk drive (the first is /dev/vda)\n"
    "  --net ID,tap=TAP[,mac=MAC][,rx_LIMITS][,tx_LIMITS]\n"
    "                     a virtio-net device on a host tap\n"
    "  --vsock cid=N,uds=PATH\n"
    "                     a virtio-vsock device; host side is the unix socket\n"
    "  --rng[=LIMITS]     a virtio-rng device\n"
    "     LIMITS: bandwidth_size=BYTES, bandwidth_refill=TIME, bandwidth_burst=BYTES,\n"
    "             ops_size=N, ops_refill=TIME, ops_burst=N (see README)\n"
    "  --api-sock PATH    serve Firecracker's API on this unix socket while the\n"
    "                     guest runs: pause/resume, snapshots (docs/api.md)\n"
    "  --track-dirty      log dirtied guest pages (diff snapshots)\n"
    "  --memory-shared    guest RAM in a memfd, so it can be handed to a new ember\n"
    "                     on this host (migration/send \"mode\": \"local\")\n"
    "  --restore STATE    restore a snapshot instead of booting: the configuration\n"
    "                     is the snapshot's; --drive ID,path=, --net ID,tap=,\n"
    "                     --vsock uds=, --name, --timeout, --serial override it\n"
    "  --restore -        restore a snapshot stream (state and memory) from stdin:\n"
    "                     ember snapshot create --api-sock A --to - | ember run\n"
    "                     --restore - --use-saved-paths (docs/snapshots.md)\n"
    "  --memory-file MEM  the snapshot's memory file (needed with --restore STATE)\n"
    "  --memory-copy      read the memory in rather than map it (MEM may go)\n"
    "  --paused           restore with every vCPU paused (needs --api-sock:\n"
    "                     PATCH /vm Resumed)\n"
    "  --use-saved-paths  open the drive files, taps, vsock socket and serial\n"
    "                     file the snapshot names as they are (else each must be\n"
    "                     given again: a snapshot is not trusted to choose them)\n"
    "  --dry-run          validate the configuration and load the kernel, run nothing\n"
    "  --stats            print boot timings on stderr when the guest stops\n"
    "  --verbose          log unhandled port and MMIO accesses on stderr\n"
    "  --no-cpuid-cache   always ask KVM for the supported CPUID (see README;\n"
    "                     EMBER_CPUID_CACHE=PATH moves the cache file)\n"
    "  --seccomp MODE     enforce (default): a syscall outside the allowlist\n"
    "                     kills ember; log: allow it and log it (kernel audit\n"
    "                     log); off: no filter (see docs/jail.md)\n"
    "  --no-seccomp       the same as --seccomp off: debugging only\n"
    "  -h, --help         this text\n"
    "\n"
    "Solo5 hvt spellings (solo5-hvt launch scripts only change the binary;\n"
    "docs/solo5.md):\n"
    "  --mem=MIB                 guest RAM in MiB (hvt: at most 4096)\n"
    "  --block:NAME=PATH         attach manifest block device NAME to a disk image\n"
    "  --block-sector-size:NAME=N  its sector size: a power of two, 512..32768\n"
    "  --net:NAME=TAP            attach manifest net device NAME to a host tap\n"
    "  --net-mac:NAME=MAC        its MAC (default: random, locally administered)\n"
    "  --dumpcore=DIR            a core file in DIR when the guest aborts\n"
    "  [--] KERNEL ARGS...       the kernel (an ELF) and its command line: all\n"
    "                            that follows the kernel is the guest's\n"
    "\n"
    "Guest serial output goes to stdout; ember's messages go to stderr.\n"
    "Exit codes: the guest's status through the exit port (0xf4); 0 on guest\n"
    "reset (i8042); 121 bad configuration or kernel; 122 host/KVM failure;\n"
    "123 triple fault; 124 timeout; 125 KVM internal error (registers on\n"
    "stderr); 126 guest halted with no interrupt source; 120 a guest's\n"
    "hypercall with a bad pointer.  hvt: the halt status (255 = abort).\n";

/* Options that are config keys: the command line and the INI file share
 * cfg_set(), so both are validated alike. */
static const struct {
	const char *opt, *section, *key;
} cfg_opts[] = {
    {"kernel", "vm", "kernel"},	  {"memory", "vm", "memory"}, {"vcpus", "vm", "vcpus"},
    {"cmdline", "vm", "cmdline"}, {"initrd", "vm", "initrd"}, {"timeout", "vm", "timeout"},
    {"irqchip", "vm", "irqchip"}, {"name", "vm", "name"},     {"serial", "serial", "output"},
};

struct run_opts {
	const char *ini;
	bool dry_run, stats, verbose, no_cpuid_cache;
	const char *api_sock, *restore, *memory_file;
	bool track_dirty, memory_copy, paused, use_saved_paths, memory_shared;
	enum jail_seccomp_mode seccomp;
	/* cfg_set() calls deferred until the INI file is read */
	struct {
		char section[CFG_NAME_MAX + 8];
		const char *key, *value, *opt;
	} sets[96];
	unsigned nr_sets;
	bool rng; /* --rng */
	/* Copies the device options are split in (no heap: nothing to free) */
	char text[16384];
	size_t text_used;
	/* Solo5-style "[--] KERNEL ARGS...": ARGS become the command line */
	char *cmdline;
	bool solo5;	  /* run as solo5-hvt (argv[0]): its options and exit statuses */
	bool halted;	  /* an hvt guest halted: the exit code is its status */
	char cmdline_buf[CFG_CMDLINE_MAX + 2];
};

static int add_set(struct run_opts *o, const char *section, const char *key, const char *value,
		   const char *opt)
{
	if (o->nr_sets == sizeof(o->sets) / sizeof(o->sets[0])) {
		fprintf(stderr, "ember run: too many options\n");
		return EXIT_CONFIG;
	}
	if (snprintf(o->sets[o->nr_sets].section, sizeof(o->sets[0].section), "%s", section) >=
	    (int)sizeof(o->sets[0].section)) {
		fprintf(stderr, "ember run: %s: device name too long (at most %d characters)\n",
			opt, CFG_NAME_MAX);
		return EXIT_CONFIG;
	}
	o->sets[o->nr_sets].key = key;
	o->sets[o->nr_sets].opt = opt;
	o->sets[o->nr_sets++].value = value;
	return 0;
}

/* The virtio device options: --drive ID,key=value,..., --net ID,...,
 * --vsock key=value,..., --rng[=key=value,...]: each key=value is the
 * INI key of the device's section, set through cfg_set() as the file's
 * are.  A named device's ID comes first (or as id=ID). */
/* A copy of s in o->text, or NULL when the options are too long. */
static char *keep(struct run_opts *o, const char *s)
{
	size_t n = strlen(s) + 1;
	if (n > sizeof(o->text) - o->text_used)
		return NULL;
	char *p = memcpy(o->text + o->text_used, s, n);
	o->text_used += n;
	return p;
}

static int device_option(struct run_opts *o, const char *opt, const char *spec)
{
	bool named = strcmp(opt, "drive") == 0 || strcmp(opt, "net") == 0;
	char *copy = keep(o, spec), *save = NULL, *id = NULL;
	char section[CFG_NAME_MAX + 8];
	if (!copy) {
		fprintf(stderr, "ember run: --%s: the device options are too long\n", opt);
		return EXIT_CONFIG;
	}
	/* Find the ID first: sets name their section. */
	if (named) {
		char *first_eq = strchr(copy, '='), *first_comma = strchr(copy, ',');
		if (copy[0] && (!first_eq || (first_comma && first_comma < first_eq))) {
			id = copy;
			if (first_comma)
				*first_comma = '\0';
			save = first_comma ? first_comma + 1 : NULL;
		} else {
			const char *p = strstr(copy, "id=");
			if (p && (p == copy || p[-1] == ','))
				id = (char *)p + 3;
			save = copy;
		}
		if (!id || !*id || *id == ',') {
			fprintf(stderr,
				"ember run: --%s %s: no device ID (--%s ID,key=value,...)\n", opt,
				spec, opt);
			return EXIT_CONFIG;
		}
		size_t n = strcspn(id, ",");
		snprintf(section, sizeof(section), "%s.%.*s", opt, (int)n, id);
		if (n > CFG_NAME_MAX) {
			fprintf(stderr,
				"ember run: --%s: device ID too long (at most %d characters)\n",
				opt, CFG_NAME_MAX);
			return EXIT_CONFIG;
		}
	} else {
		snprintf(section, sizeof(section), "%s", opt);
		save = copy;
	}
	for (char *item = save; item && *item;) {
		char *next = strchr(item, ',');
		if (next)
			*next++ = '\0';
		char *eq = strchr(item, '=');
		if (!eq || eq == item) {
			fprintf(stderr, "ember run: --%s: \"%s\" is not key=value\n", opt, item);
			return EXIT_CONFIG;
		}
		*eq = '\0';
		if (!(named && strcmp(item, "id") == 0)) {
			/* Messages name the option and key: "--drive root: path: ..." */
			char optname[CFG_NAME_MAX + 80];
			snprintf(optname, sizeof(optname), "%s%s%s: %.40s", opt, named ? " " : "",
				 named ? section + strlen(opt) + 1 : "", item);
			const char *name = keep(o, optname);
			int r = name ? add_set(o, section, item, eq + 1, name) : EXIT_CONFIG;
			if (!name)
				fprintf(stderr,
					"ember run: --%s: the device options are too long\n", opt);
			if (r)
				return r;
		}
		item = next;
	}
	return 0;
}

/* Join argv into one space-separated command line, in buf.  A line that
 * does not fit is cut to one byte over CFG_CMDLINE_MAX, so cfg_set()
 * refuses it as too long. */
static char *join_args(int argc, char **argv, char *buf, size_t len)
{
	size_t o = 0;
	buf[0] = '\0';
	for (int i = 0; i < argc && o + 1 < len; i++)
		o += (size_t)snprintf(buf + o, len - o, "%s%s", i ? " " : "", argv[i]);
	return buf;
}
static double ms_between(const struct timespec *a, const struct timespec *b)
{
	return (double)(b->tv_sec - a->tv_sec) * 1e3 + (double)(b->tv_nsec - a->tv_nsec) / 1e6;
}

static int parse_run_args(int argc, char **argv, struct run_opts *o)
{
	for (int i = 0; i < argc; i++) {
		const char *a = argv[i];
		if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
			if (o->solo5)
				hvt_args_usage("solo5-hvt");
			else
				fputs(usage_run, stdout);
			return o->solo5 ? 1 : -1;
		}
		/* Solo5's spellings (monitor/hvt/hvt_args.c): a solo5-hvt launch
		 * script only changes the binary's name. */
		struct hvt_opt so;
		char why[200];
		int sr = a[0] == '-' ? hvt_args_option(a, &so, why, sizeof(why)) : 0;
		if (sr < 0) {
			fprintf(stderr, "%s: %s\n", o->solo5 ? "solo5-hvt" : "ember run", why);
			return EXIT_CONFIG;
		}
		if (sr > 0) {
			int r = add_set(o, so.section, so.key, so.value, a);
			if (r)
				return r;
			continue;
		}
		/* "[--] KERNEL ARGS...": everything after the kernel is the
		 * unikernel's, even what looks like an option. */
		bool dashes = strcmp(a, "--") == 0;
		if (dashes || (a[0] != '-' && (o->solo5 || hvt_args_is_kernel(a)))) {
			int k = dashes ? i + 1 : i;
			if (k >= argc) {
				fprintf(stderr, o->solo5 ? "solo5-hvt: Missing KERNEL operand\n"
							 : "ember run: -- must be followed by a kernel\n");
				return EXIT_CONFIG;
			}
			int r = add_set(o, "vm", "kernel", argv[k], "--");
			if (r)
				return r;
			o->cmdline = join_args(argc - k - 1, argv + k + 1, o->cmdline_buf,
					       sizeof(o->cmdline_buf));
			return add_set(o, "vm", "cmdline", o->cmdline, "-- ARGS");
		}
		if (o->solo5) {
			fprintf(stderr, "solo5-hvt: Invalid option: `%s'\n", a);
			hvt_args_usage("solo5-hvt");
			return EXIT_CONFIG;
		}
		if (strcmp(a, "--dry-run") == 0) {
			o->dry_run = true;
			continue;
		}
		if (strcmp(a, "--stats") == 0) {
			o->stats = true;
			continue;
		}
		if (strcmp(a, "--verbose") == 0) {
			o->verbose = true;
			continue;
		}
		if (strcmp(a, "--no-cpuid-cache") == 0) {
			o->no_cpuid_cache = true;
			continue;
		}
		bool *flag = !strcmp(a, "--track-dirty")   ? &o->track_dirty
			     : !strcmp(a, "--memory-copy") ? &o->memory_copy
			     : !strcmp(a, "--paused")	   ? &o->paused
			     : !strcmp(a, "--use-saved-paths") ? &o->use_saved_paths
			     : !strcmp(a, "--memory-shared")   ? &o->memory_shared
							   : NULL;
		if (flag) {
			*flag = true;
			continue;
		}
		static const char *const paths[] = {"--api-sock", "--restore", "--memory-file"};
		const char **dst[] = {&o->api_sock, &o->restore, &o->memory_file};
		unsigned p = 0;
		for (size_t n; p < 3; p++)
			if (!strncmp(a, paths[p], n = strlen(paths[p])) &&
			    (a[n] == '=' || a[n] == '\0'))
				break;
		if (p < 3) {
			size_t n = strlen(paths[p]);
			*dst[p] = a[n] == '=' ? a + n + 1 : i + 1 < argc ? argv[++i] : NULL;
			if (!*dst[p] || !**dst[p]) {
				fprintf(stderr, "ember run: %s needs a value\n", paths[p]);
				return EXIT_CONFIG;
			}
			continue;
		}
		if (strcmp(a, "--no-seccomp") == 0) {
			o->seccomp = JAIL_SECCOMP_OFF;
			continue;
		}
		if (strncmp(a, "--seccomp", 9) == 0 && (a[9] == '=' || a[9] == '\0')) {
			const char *mode = a[9] == '=' ? a + 10 : i + 1 < argc ? argv[++i] : "";
			if (jail_seccomp_mode_parse(mode, &o->seccomp)) {
				fprintf(stderr,
					"ember run: --seccomp: \"%s\" is not enforce, log or off\n",
					mode);
				return EXIT_CONFIG;
			}
			continue;
		}
		if (strncmp(a, "--", 2) != 0 || a[2] == '\0') {
			if (a[0] == '-' && a[1] != '\0') {
				fprintf(stderr,
					"ember run: unknown option %s (see ember run --help)\n", a);
				return EXIT_CONFIG;
			}
			if (o->ini) {
				fprintf(stderr, "ember run: one INI file only (got %s and %s)\n",
					o->ini, a);
				return EXIT_CONFIG;
			}
			o->ini = a;
			continue;
		}
		/* --opt=value or --opt value */
		const char *name = a + 2, *eq = strchr(name, '=');
		size_t nlen = eq ? (size_t)(eq - name) : strlen(name);
		if (strcmp(a, "--rng") == 0 || strncmp(a, "--rng=", 6) == 0) {
			o->rng = true;
			int r = eq ? device_option(o, "rng", eq + 1) : 0;
			if (r)
				return r;
			continue;
		}
		static const char *const devs[] = {"drive", "net", "vsock"};
		bool dev = false;
		for (unsigned d = 0; d < 3 && !dev; d++) {
			if (strlen(devs[d]) != nlen || strncmp(devs[d], name, nlen))
				continue;
			dev = true;
			const char *spec = eq ? eq + 1 : i + 1 < argc ? argv[++i] : NULL;
			if (!spec) {
				fprintf(stderr, "ember run: --%s needs a value\n", devs[d]);
				return EXIT_CONFIG;
			}
			int r = device_option(o, devs[d], spec);
			if (r)
				return r;
		}
		if (dev)
			continue;
		unsigned k;
		for (k = 0; k < sizeof(cfg_opts) / sizeof(cfg_opts[0]); k++)
			if (strlen(cfg_opts[k].opt) == nlen &&
			    strncmp(cfg_opts[k].opt, name, nlen) == 0)
				break;
		if (k == sizeof(cfg_opts) / sizeof(cfg_opts[0])) {
			fprintf(stderr, "ember run: unknown option --%.*s (see ember run --help)\n",
				(int)nlen, name);
			return EXIT_CONFIG;
		}
		const char *value = eq ? eq + 1 : NULL;
		if (!value) {
			if (i + 1 >= argc) {
				fprintf(stderr, "ember run: --%s needs a value\n", cfg_opts[k].opt);
				return EXIT_CONFIG;
			}
			value = argv[++i];
		}
		int r = add_set(o, cfg_opts[k].section, cfg_opts[k].key, value, cfg_opts[k].opt);
		if (r)
			return r;
	}
	return 0;
}

/* The options that only go together. */
static int check_run_opts(const struct run_opts *o)
{
	const char *why = NULL;
	if (o->paused && !o->api_sock)
		why = "--paused needs --api-sock (PATCH /vm Resumed resumes the guest)";
	else if ((o->memory_file || o->memory_copy || o->paused || o->use_saved_paths) &&
		 !o->restore)
		why = "--memory-file, --memory-copy, --paused and --use-saved-paths go with "
		      "--restore STATE";
	else if (o->restore && !strcmp(o->restore, "-") && (o->memory_file || o->memory_copy))
		why = "--restore - reads the memory from the stream too: no --memory-file or "
		      "--memory-copy";
	else if (o->restore && strcmp(o->restore, "-") && !o->memory_file)
		why = "--restore needs --memory-file MEM (the snapshot's memory), or --restore - "
		      "for a stream on stdin";
	else if (o->restore && o->memory_shared)
		/* a restore maps its memory file MAP_PRIVATE: nothing to hand over */
		why = "--memory-shared is for a boot: a restore's RAM is its memory file's, mapped "
		      "privately";
	else if (o->restore && o->ini)
		why = "--restore takes no INI file (the configuration is the snapshot's)";
	else if (o->restore && o->rng)
		why = "--rng: not with --restore: the snapshot's configuration holds it";
	if (why)
		fprintf(stderr, "ember run: %s\n", why);
	return why ? EXIT_CONFIG : 0;
}

/* cmd_run()'s second half, once the configuration is read (with a
 * restore, from *snap): overrides, checks, the build and the run.  *snap
 * is closed once the build has taken what it needs. */
static int configure_and_run(struct run_opts *o, struct vm_config *cfg, struct vm_snapshot **snap,
			     const char *name, uint64_t t0, uint64_t timeout_ms)
{
	static struct vm vm;
	char err[CFG_ERR_MAX + VM_ERR_MAX];
	int r;
	struct vm_restore_paths confirmed = {.all = o->use_saved_paths};
	for (unsigned i = 0; i < o->nr_sets; i++) {
		const char *why = o->restore ? snap_cli_restore_refusal(cfg, o->sets[i].section,
									o->sets[i].key, &confirmed)
					     : NULL;
		if (why)
			snprintf(err, sizeof(err), "%s", why);
		if (why || cfg_set(cfg, o->sets[i].section, o->sets[i].key, o->sets[i].value, err,
				   sizeof(err))) {
			fprintf(stderr, "ember: %s%s: %s\n", o->sets[i].opt[0] == '-' ? "" : "--",
				o->sets[i].opt, err);
			return EXIT_CONFIG;
		}
	}
	if (o->rng)
		cfg->rng.enabled = true;
	/* A restore reads no kernel: the snapshot's may be gone. */
	if ((!o->restore || cfg->kernel[0]) && cfg_validate(cfg, err, sizeof(err))) {
		fprintf(stderr, "ember: %s\n", err);
		return EXIT_CONFIG;
	}
	if (o->restore && snap_cli_check_paths(cfg, &confirmed, name, err, sizeof(err))) {
		fprintf(stderr, "ember: %s\n", err);
		return EXIT_CONFIG;
	}
	if (cfg->timeout_ms != timeout_ms) { /* the INI file's or the snapshot's */
		if (!cfg->timeout_ms)
			startup_timeout_disarm();
		else if ((r = startup_timeout_arm(t0 + cfg->timeout_ms * 1000000ULL,
						  cfg->timeout_ms))) {
			fprintf(stderr, "ember: cannot arm the timeout: %s\n", strerror(-r));
			return EXIT_HOST;
		}
	}
	if (o->restore && o->dry_run) {
		fprintf(stderr, "ember: snapshot %s: configuration ok: %u vCPU(s), %llu MiB\n",
			name, cfg->vcpus, (unsigned long long)(cfg->mem_size >> 20));
		return 0;
	}
	const char *env = getenv("EMBER_CPUID_CACHE");
	struct vm_build_opts bo = {
	    .dry_run = o->dry_run,
	    .verbose = o->verbose,
	    .track_dirty = o->track_dirty,
	    .mem_shared = o->memory_shared,
	    .seccomp = o->seccomp,
	    .cpuid_cache = o->no_cpuid_cache ? NULL : env ? env : VCPU_CPUID_CACHE_DEFAULT,
	    .snapshot = *snap,
	    .mem_path = o->memory_file,
	    .copy_mem = o->memory_copy,
	    .paused = o->paused,
	};
	r = vm_build(&vm, cfg, &bo, err, sizeof(err));
	vm_snapshot_close(*snap);
	*snap = NULL;
	if (r) {
		startup_timeout_disarm();
		fprintf(stderr, "ember: %s\n", err);
		vm_destroy(&vm);
		return exit_code_of(r);
	}
	startup_phase("starting the guest");
	if (cfg->timeout_ms) /* the guest's timer takes over this deadline */
		vm.deadline_ns = t0 + cfg->timeout_ms * 1000000ULL;
	if (o->dry_run) {
		startup_timeout_disarm();
		fprintf(stderr,
			"ember: %s%sconfiguration ok: %s kernel, entry 0x%llx, %u vCPU(s), %llu "
			"MiB%s\n",
			strcmp(cfg->name, "ember") ? cfg->name : "",
			strcmp(cfg->name, "ember") ? ": " : "",
			vm.boot.proto == BOOT_PVH   ? "PVH"
			: vm.boot.proto == BOOT_HVT ? "Solo5 hvt"
						    : "Linux 64-bit",
			(unsigned long long)vm.boot.entry, cfg->vcpus,
			(unsigned long long)(cfg->mem_size >> 20),
			vm.has_irqchip ? ", irqchip" : "");
		vm_destroy(&vm);
		return 0;
	}

	if (o->api_sock)
		r = api_run(&vm, cfg, o->api_sock, EMBER_VERSION);
	else
		r = vm_run(&vm) ? (vm.exit_code ? vm.exit_code : EXIT_HOST) : vm.exit_code;
	startup_timeout_disarm(); /* when the run never began */
	/* A normal end (reset, exit status 0) is silent; anything else says
	 * why on stderr, so a script's log explains the exit code. */
	if (r != 0 || o->stats) {
		if (strcmp(cfg->name, "ember") == 0)
			fprintf(stderr, "ember: %s\n", vm.stop_reason);
		else
			fprintf(stderr, "ember: %s: %s\n", cfg->name, vm.stop_reason);
	}
	if (o->stats) {
		struct vm_stats *s = &vm.stats;
		fprintf(stderr, "ember: stats: vcpus started %.3f ms",
			ms_between(&s->t_start, &s->t_running));
		if (atomic_load(&s->have_first_output))
			fprintf(stderr, ", first output %.3f ms",
				ms_between(&s->t_start, &s->t_first_output));
		fprintf(stderr, ", stop %.3f ms, exits %llu (pio %llu, mmio %llu), cpuid %s\n",
			ms_between(&s->t_start, &s->t_stop),
			(unsigned long long)vm.vcpus[0].nr_exits,
			(unsigned long long)vm.vcpus[0].nr_pio_exits,
			(unsigned long long)vm.vcpus[0].nr_mmio_exits,
			vm.cpuid_cache_hit ? "cached" : "from KVM");
	}
	if (vm.hvt) { /* solo5-hvt's --dumpcore: a core file at an abort */
		o->halted = vm.hvt->halted;
		(void)hvt_dumpcore(vm.hvt, vm.vcpus[0].fd);
		if (o->solo5)
			r = hvt_args_exit_code(vm.hvt, r);
	}
	/* Teardown is the kernel's job at exit, and it is slow: let a child
	 * do it after our parent has the exit code. */
	vm_detach_teardown(&vm);
	return r;
}

/* *halted: an hvt guest halted (its status is the exit code) */
static int run_with(bool *halted, int argc, char **argv, bool solo5)
{
	static struct vm_config cfg; /* large (paths); keep it off the stack */
	struct run_opts o;
	char err[CFG_ERR_MAX + VM_ERR_MAX];
	uint64_t t0 = ev_now_ns();

	memset(&o, 0, sizeof(o));
	o.solo5 = solo5;
	/* solo5-hvt's default memory (hvt_main.c): 512 MiB */
	int r = solo5 ? add_set(&o, "vm", "memory", "512", "--mem") : 0;
	if (!r)
		r = parse_run_args(argc, argv, &o);
	if (!r && solo5 && !o.cmdline) {
		fprintf(stderr, "solo5-hvt: Missing KERNEL operand\n");
		hvt_args_usage("solo5-hvt");
		r = EXIT_CONFIG;
	}
	if (r)
		return r < 0 ? 0 : r;
	r = check_run_opts(&o);
	if (r)
		return r;

	/* --timeout bounds start-up too (startup.h), counted from here: the
	 * command line's value at once, as reading the INI file or snapshot
	 * may block; the final value once the configuration is whole.  A bad
	 * value is cfg_set()'s to report. */
	uint64_t timeout_ms = 0;
	for (unsigned i = 0; i < o.nr_sets; i++)
		if (!strcmp(o.sets[i].section, "vm") && !strcmp(o.sets[i].key, "timeout") &&
		    cfg_parse_duration(o.sets[i].value, &timeout_ms))
			timeout_ms = 0;
	startup_phase("reading the configuration");
	if (timeout_ms && (r = startup_timeout_arm(t0 + timeout_ms * 1000000ULL, timeout_ms))) {
		fprintf(stderr, "ember: cannot arm the timeout: %s\n", strerror(-r));
		return EXIT_HOST;
	}

	/* --restore -: state and memory from one stream on stdin, read in
	 * order (its state now, its memory in vm_build). */
	static struct snap_stream in = {.fd = STDIN_FILENO};
	bool stream = o.restore && !strcmp(o.restore, "-");
	const char *name = stream ? VM_STREAM_NAME : o.restore;
	/* A pipe moves a stream in fewer, larger steps with more room than
	 * its default 64 KiB (fcntl(2), F_SETPIPE_SZ: 1 MiB is an
	 * unprivileged user's limit); refused or not a pipe: as it is. */
	struct stat in_st;
	if (stream && !fstat(STDIN_FILENO, &in_st) && S_ISFIFO(in_st.st_mode))
		(void)fcntl(STDIN_FILENO, F_SETPIPE_SZ, 1 << 20);
	cfg_defaults(&cfg);
	/* A restore: the snapshot, opened once, gives the configuration and
	 * then (in the build) everything else. */
	struct vm_snapshot *snap = NULL;
	if ((o.ini && cfg_parse_ini(o.ini, &cfg, err, sizeof(err))) ||
	    (stream && vm_snapshot_open_stream(&in, &cfg, &snap, err, sizeof(err))) ||
	    (o.restore && !stream && vm_snapshot_open(o.restore, &cfg, &snap, err, sizeof(err)))) {
		fprintf(stderr, "ember: %s\n", err);
		return EXIT_CONFIG;
	}
	r = configure_and_run(&o, &cfg, &snap, name, t0, timeout_ms);
	vm_snapshot_close(snap);
	*halted = o.halted;
	return r;
}

static int cmd_run(int argc, char **argv, bool solo5)
{
	bool halted = false;
	int r = run_with(&halted, argc, argv, solo5);
	/* solo5-hvt: the guest's status, or 1 for any error of the tender */
	return solo5 && !halted && r ? 1 : r;
}

/* `ember snapshot load ARGS` is `ember run --restore ARGS`; create and
 * merge are monitor/snap_cli.c's. */
static int cmd_snapshot(int argc, char **argv)
{
	if (argc < 1 || strcmp(argv[0], "load"))
		return snap_cli_main(argc, argv);
	if (argc < 2 || (argv[1][0] == '-' && argv[1][1])) { /* "-": a stream on stdin */
		if (argc >= 2 && (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help"))) {
			fputs(snap_cli_usage, stdout);
			return 0;
		}
		fprintf(stderr, "ember snapshot load: give the state file first "
				"(ember snapshot load STATE --memory-file MEM [options], or "
				"ember snapshot load - for a stream on stdin)\n");
		return EXIT_CONFIG;
	}
	argv[0] = "--restore"; /* argv[0] was "load": run sees --restore STATE ... */
	return cmd_run(argc, argv, false);
}

/* `ember migrate ARGS` and `ember ctl ARGS`: exec the controller tool
 * (ember-migrate, emberctl) from the folder this binary is in, as argv[0]
 * with argv's words after it.  The controllers link OpenSSL, jansson and
 * libsystemd; ember stays static and lean. */
static int exec_beside(const char *cmd, const char *tool, char **argv)
{
	char path[4096];
	ssize_t n = readlink("/proc/self/exe", path, sizeof(path) - strlen(tool) - 1);
	char *slash = n > 0 ? memrchr(path, '/', (size_t)n) : NULL;
	if (!slash) {
		fprintf(stderr, "ember %s: cannot find this binary's folder: %s\n", cmd,
			n < 0 ? strerror(errno) : "no / in /proc/self/exe");
		return EXIT_CONFIG;
	}
	strcpy(slash + 1, tool);
	argv[0] = (char *)tool;
	execv(path, argv);
	fprintf(stderr, "ember %s: cannot run %s: %s (make builds it beside ember)\n", cmd, path,
		strerror(errno));
	return EXIT_CONFIG;
}

int main(int argc, char **argv)
{
	/* A reader of the guest's output that goes away (ember | head) must
	 * not kill the VM: writes then fail with EPIPE and output is dropped. */
	signal(SIGPIPE, SIG_IGN);
	/* Under the name solo5-hvt (a symlink): solo5-hvt's command line
	 * and exit statuses (README, "Solo5"). */
	if (argc >= 1 && hvt_args_is_solo5_name(argv[0])) {
		return cmd_run(argc - 1, argv + 1, true);
	}
	if (argc < 2) {
		fputs(usage_main, stderr);
		return EXIT_CONFIG;
	}
	const char *cmd = argv[1];
	/* Firecracker's spelling: ember --api-sock PATH / --config-file FILE */
	if (api_is_api_mode(cmd))
		return api_main(argc - 1, argv + 1, EMBER_VERSION);
	if (strcmp(cmd, "run") == 0)
		return cmd_run(argc - 2, argv + 2, false);
	if (strcmp(cmd, "snapshot") == 0)
		return cmd_snapshot(argc - 2, argv + 2);
	if (strcmp(cmd, "migrate") == 0)
		return exec_beside("migrate", "ember-migrate", argv + 1);
	if (strcmp(cmd, "ctl") == 0)
		return exec_beside("ctl", "emberctl", argv + 1);
	if (strcmp(cmd, "drive") == 0)
		return drive_cli_main(argc - 2, argv + 2);
	if (strcmp(cmd, "version") == 0 || strcmp(cmd, "--version") == 0) {
		printf("ember %s\n", EMBER_VERSION);
		return 0;
	}
	if (strcmp(cmd, "help") == 0 || strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0) {
		if (argc > 2 && strcmp(argv[2], "run") == 0)
			fputs(usage_run, stdout);
		else if (argc > 2 && strcmp(argv[2], "snapshot") == 0)
			fputs(snap_cli_usage, stdout);
		else if (argc > 2 && strcmp(argv[2], "migrate") == 0)
			return exec_beside("migrate", "ember-migrate",
					   (char *[]){"migrate", "--help", NULL});
		else if (argc > 2 && strcmp(argv[2], "ctl") == 0)
			return exec_beside("ctl", "emberctl", (char *[]){"ctl", "help", NULL});
		else if (argc > 2 && strcmp(argv[2], "drive") == 0)
			fputs(drive_cli_usage, stdout);
		else
			fputs(usage_main, stdout);
		return 0;
	}
	fprintf(stderr, "ember: unknown command '%s'\n%s", cmd, usage_main);
	return EXIT_CONFIG;
}
