/* emberctl's command line (ha/ctl/ctl.h): options may come before or
 * after the command; every refusal names the option or the word. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ha/ctl/ctl.h"
#include "ha/migrate/migrate.h"

const char ctl_usage[] =
    "usage: emberctl [--sock PATH] [--json] COMMAND [ARGS]\n"
    "\n"
    "Drive emberd, the VM supervisor, through its control socket (docs/ha.md).\n"
    "\n"
    "commands:\n"
    "  list                          the VMs: state, host, pid, restarts, uptime...\n"
    "  status [VM]                   emberd's state and its VMs, or one VM in full\n"
    "  start VM [--boot|--resume]    start (by its policy: resume when that loses\n"
    "                                nothing, else boot; or as told)\n"
    "  stop VM [--grace DURATION]    stop, and keep it stopped; SIGKILL after the\n"
    "                                grace (default 5s; 0: at once)\n"
    "  restart VM [--grace DURATION] stop, then start by its policy\n"
    "  snapshot VM                   a full snapshot now, its latest\n"
    "  logs VM [--tail BYTES] [--follow]\n"
    "                                its console (default: the last 64K)\n"
    "  events [--since SEQ] [--follow]\n"
    "                                what happened: started, exited, restarted,\n"
    "                                restored, fenced, moved...\n"
    "  hosts                         the cluster's hosts (one, on a single host)\n"
    "  reload                        rescan the VM folder\n"
    "  rule add NAME KIND --vms a,b [--hosts x,y]\n"
    "                                a cluster placement rule: KIND affinity,\n"
    "                                anti-affinity, must-run-on, must-not-run-on,\n"
    "                                should-run-on, should-not-run-on\n"
    "  rule rm NAME | rule list      remove one / list them\n"
    "  migrate VM HOST [--wait]      move VM live to HOST (cluster mode); --wait:\n"
    "                                until it runs there (or the move failed)\n"
    "  host maintenance enter|exit|status HOST [--wait]\n"
    "                                maintenance mode: its VMs move off live, new\n"
    "                                ones avoid it; --wait: until it is empty\n"
    "  help                          this text\n"
    "\n"
    "options:\n"
    "  --sock PATH   emberd's socket (default $EMBERD_SOCK, else /run/emberd.sock)\n"
    "  --json        emberd's JSON replies instead of tables (events --follow and\n"
    "                logs --follow: one JSON object per line)\n"
    "\n"
    "DURATION: 5s, 500ms, 2m, or seconds (2.5).  BYTES: 4096, 64K, 1M.\n"
    "exit: 0 done, 1 emberd refused or failed the request, 2 bad usage,\n"
    "3 emberd not reachable.\n";

static const struct {
	const char *name;
	enum ctl_cmd cmd;
	int vm;		  /* 0: none, 1: required, 2: optional */
	const char *opts; /* the command's own options */
} cmds[] = {
    {"help", CTL_HELP, 0, ""},
    {"list", CTL_LIST, 0, ""},
    {"status", CTL_STATUS, 2, ""},
    {"start", CTL_START, 1, "--boot --resume"},
    {"stop", CTL_STOP, 1, "--grace"},
    {"restart", CTL_RESTART, 1, "--grace"},
    {"snapshot", CTL_SNAPSHOT, 1, ""},
    {"logs", CTL_LOGS, 1, "--tail --follow"},
    {"events", CTL_EVENTS, 0, "--since --follow"},
    {"hosts", CTL_HOSTS, 0, ""},
    {"reload", CTL_RELOAD, 0, ""},
    {"migrate", CTL_MIGRATE, 3, "--wait"},
    {"host", CTL_MAINT, 3, "--wait"},
};
#define NCMDS (sizeof(cmds) / sizeof(cmds[0]))

static int bad(char *err, size_t len, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int bad(char *err, size_t len, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(err, len, fmt, ap);
	va_end(ap);
	return -EINVAL;
}

static bool word_in(const char *list, const char *w)
{
	size_t n = strlen(w);
	for (const char *p = list; *p;) {
		size_t l = strcspn(p, " ");
		if (l == n && !strncmp(p, w, n))
			return true;
		p += l + (p[l] == ' ');
	}
	return false;
}

/* The value of option opt: "--opt=V" or "--opt V". */
static int value(int argc, char *const *argv, int *i, const char *opt, const char **v, char *err,
		 size_t len)
{
	const char *eq = strchr(argv[*i], '=');
	if (eq) {
		*v = eq + 1;
		return 0;
	}
	if (*i + 1 >= argc)
		return bad(err, len, "%s: give a value", opt);
	*v = argv[++*i];
	return 0;
}

static int cmd_option(struct ctl_args *a, const char *opt, const char *v, char *err, size_t len)
{
	if (!strcmp(opt, "--boot") || !strcmp(opt, "--resume")) {
		const char *how = !strcmp(opt, "--boot") ? "boot" : "resume";
		if (a->how && strcmp(a->how, how))
			return bad(err, len, "start: --boot and --resume exclude each other");
		a->how = how;
	} else if (!strcmp(opt, "--follow")) {
		a->follow = true;
	} else if (!strcmp(opt, "--wait")) {
		a->wait = true;
	} else if (!strcmp(opt, "--grace")) {
		if (mig_parse_seconds(v, &a->grace_ms) || a->grace_ms > 3600 * 1000)
			return bad(err, len, "--grace %s: give a duration up to 1h (5s, 500ms, 0)",
				   v);
		a->has_grace = true;
	} else if (!strcmp(opt, "--tail")) {
		if (mig_parse_bytes(v, &a->tail))
			return bad(err, len, "--tail %s: give a size in bytes (4096, 64K, 1M)", v);
	} else if (!strcmp(opt, "--since")) {
		char *end;
		errno = 0;
		a->since = strtoull(v, &end, 10);
		if (!*v || *end || errno || *v == '-')
			return bad(err, len, "--since %s: give an event's sequence number", v);
		a->has_since = true;
	}
	return 0;
}

int ctl_parse_args(int argc, char *const *argv, const char *env_sock, struct ctl_args *a, char *err,
		   size_t len)
{
	memset(a, 0, sizeof(*a));
	a->sock = env_sock && *env_sock ? env_sock : CTL_SOCK_DEFAULT;
	a->tail = 65536;
	int ci = -1; /* the command's index in cmds */
	const char *pos[3] = {NULL, NULL, NULL};
	int npos = 0;
	for (int i = 0; i < argc; i++) {
		const char *w = argv[i];
		char opt[32]; /* the option's name, without "=VALUE" */
		size_t olen = strcspn(w, "=");
		olen = olen < sizeof(opt) - 1 ? olen : sizeof(opt) - 1;
		memcpy(opt, w, olen);
		opt[olen] = '\0';
		if (!strcmp(w, "--json")) {
			a->json = true;
		} else if (!strcmp(w, "-h") || !strcmp(w, "--help")) {
			a->cmd = CTL_HELP;
			return 0;
		} else if (!strcmp(opt, "--sock")) {
			if (value(argc, argv, &i, "--sock", &a->sock, err, len))
				return -EINVAL;
			if (!*a->sock)
				return bad(err, len, "--sock: give the path of emberd's socket");
		} else if (w[0] == '-' && w[1]) {
			if (ci < 0)
				return bad(err, len,
					   "%s: unknown option (before the command: "
					   "--sock, --json)",
					   opt);
			if (!word_in(cmds[ci].opts, opt))
				return bad(err, len, "%s: unknown option for %s (it takes %s)", opt,
					   cmds[ci].name,
					   *cmds[ci].opts ? cmds[ci].opts : "--sock, --json");
			const char *v = NULL;
			bool takes = strcmp(opt, "--boot") && strcmp(opt, "--resume") &&
				     strcmp(opt, "--follow") && strcmp(opt, "--wait");
			if (!takes && strchr(w, '='))
				return bad(err, len, "%s takes no value", opt);
			if (takes && value(argc, argv, &i, opt, &v, err, len))
				return -EINVAL;
			if (cmd_option(a, opt, v, err, len))
				return -EINVAL;
		} else if (ci < 0) {
			for (unsigned k = 0; k < NCMDS; k++)
				if (!strcmp(w, cmds[k].name))
					ci = (int)k;
			if (ci < 0)
				return bad(err, len,
					   "unknown command \"%s\" (list, status, start, stop, "
					   "restart, snapshot, logs, events, hosts, reload, migrate, host, "
					   "help)",
					   w);
			a->cmd = cmds[ci].cmd;
		} else if (npos < (cmds[ci].vm == 3 ? 3 : 1)) {
			pos[npos++] = w;
		} else {
			return bad(err, len, "%s: unexpected \"%s\"", cmds[ci].name, w);
		}
	}
	if (ci < 0)
		return bad(err, len, "give a command (emberctl help)");
	if (cmds[ci].cmd == CTL_MIGRATE) {
		if (npos != 2)
			return bad(err, len, "migrate: give a VM and a host (migrate VM HOST)");
		a->vm = pos[0];
		a->host = pos[1];
		return 0;
	}
	if (cmds[ci].cmd == CTL_MAINT) {
		if (npos != 3 || strcmp(pos[0], "maintenance") ||
		    (strcmp(pos[1], "enter") && strcmp(pos[1], "exit") && strcmp(pos[1], "status")))
			return bad(err, len, "host: give maintenance enter|exit|status HOST");
		a->maint = pos[1];
		a->host = pos[2];
		return 0;
	}
	if (npos && !cmds[ci].vm)
		return bad(err, len, "%s: takes no VM (\"%s\")", cmds[ci].name, pos[0]);
	if (!npos && cmds[ci].vm == 1)
		return bad(err, len, "%s: give a VM's name", cmds[ci].name);
	a->vm = npos ? pos[0] : NULL;
	return 0;
}
