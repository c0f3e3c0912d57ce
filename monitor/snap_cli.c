/* The command line's side of snapshots.  `ember snapshot create|merge`:
 * create drives a running ember through its
 * API socket (PATCH /vm Paused, PUT /snapshot/create, PATCH /vm Resumed)
 * with a small HTTP/1.1 client of its own; with --to, the snapshot is a
 * stream into our stdout or a file, whose fd goes to ember with the
 * request (SCM_RIGHTS): ember opens nothing.  merge folds a diff memory
 * file into its base.  (`ember snapshot load` is main.c's: `ember run
 * --restore`, whose overrides snap_cli_restore_refusal() checks.) */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include "monitor/api/api.h"
#include "monitor/api_client.h"
#include "monitor/exitcodes.h"
#include "monitor/vm.h"
#include "snapshot/snapshot.h"

#define CALL_TIMEOUT_S 600 /* a full snapshot of a large guest takes a while */

const char snap_cli_usage[] =
    "usage: ember snapshot create --api-sock PATH --state FILE --memory FILE\n"
    "                             [--diff] [--resume]\n"
    "       ember snapshot create --api-sock PATH --to -|STREAM [--resume]\n"
    "       ember snapshot load STATE --memory-file MEM [ember run options]\n"
    "       ember snapshot load - [ember run options]\n"
    "       ember snapshot merge BASE_MEM DIFF_MEM\n"
    "\n"
    "create  snapshot the guest of a running ember (`ember run --api-sock PATH`\n"
    "        or `ember --api-sock PATH`): pause it (PATCH /vm), write the state\n"
    "        file and the memory file (PUT /snapshot/create), and leave it paused,\n"
    "        or with --resume let it go on.  --diff: only the pages dirtied since\n"
    "        the last snapshot (needs `ember run --track-dirty` or machine-config\n"
    "        track_dirty_pages).  If the snapshot fails, a guest this command\n"
    "        paused is resumed.\n"
    "        --to -: the whole snapshot as one stream on stdout (a pipe: to\n"
    "        `ember run --restore -`, here or over ssh); --to STREAM: into a\n"
    "        file (written whole or not at all).  A cold migration:\n"
    "          ember snapshot create --api-sock A --to - |\n"
    "              ember run --restore - --use-saved-paths\n"
    "load    the same as `ember run --restore STATE --memory-file MEM ...`:\n"
    "        --memory-copy, --paused (with --api-sock), and the overrides\n"
    "        --drive ID,path=, --net ID,tap=, --vsock uds=, --name, --timeout,\n"
    "        --serial (ember run --help).  `load -` reads a stream on stdin\n"
    "        (`ember run --restore - < STREAM` for a file).\n"
    "merge   apply a diff snapshot's memory file to the full one it was taken\n"
    "        after: BASE_MEM then holds the memory as of the diff.\n"
    "\n"
    "Exit codes: 0 done; 1 ember refused (its fault_message is printed) or\n"
    "could not be reached; 121 bad arguments.\n";

/* A call that must succeed (2xx), send_fd (-1: none) going with it.  0,
 * or 1 with the reason on stderr. */
static int call_fd(const char *sock, const char *method, const char *path, json_t *body,
		   int send_fd, json_t **reply)
{
	char err[512];
	int status = 0;
	/* A stream goes as fast as its reader takes it (a pipe to ssh, say):
	 * no deadline then. */
	int rc = api_client_json(sock, method, path, body, send_fd,
				 send_fd >= 0 ? 0 : CALL_TIMEOUT_S, &status, reply, err, sizeof(err));
	if (rc > 0)
		fprintf(stderr, "ember snapshot: %s %s: %d: %s\n", method, path, status, err);
	else if (rc < 0)
		fprintf(stderr, "ember snapshot: %s\n", err);
	return rc ? 1 : 0;
}

static int call_ok(const char *sock, const char *method, const char *path, json_t *body,
		   json_t **reply)
{
	return call_fd(sock, method, path, body, -1, reply);
}

/* ember resolves paths from its own working directory: send absolute ones. */
static const char *absolute(const char *p, char *buf, size_t len)
{
	char cwd[PATH_MAX];
	if (p[0] == '/' || !getcwd(cwd, sizeof(cwd)))
		return p;
	snprintf(buf, len, "%s/%s", cwd, p);
	return buf;
}

static int bad_args(const char *fmt, const char *arg)
{
	fprintf(stderr, "ember snapshot: ");
	fprintf(stderr, fmt, arg);
	fprintf(stderr, " (see ember help snapshot)\n");
	return EXIT_CONFIG;
}

/* Where --to sends the stream: stdout ("-"), or a new file at a temp
 * name (committed by finish_to() once ember says it is whole).  The fd,
 * or -1 with the reason on stderr. */
static int open_to(const char *to, char *tmp, size_t tmplen)
{
	if (strcmp(to, "-")) {
		char err[SNAP_ERR_MAX];
		int fd = snap_tmp_open(to, tmp, tmplen, err, sizeof(err));
		if (fd < 0)
			fprintf(stderr, "ember snapshot: %s\n", err);
		return fd < 0 ? -1 : fd;
	}
	if (isatty(STDOUT_FILENO)) {
		fprintf(stderr, "ember snapshot: --to -: stdout is a terminal; send the stream "
				"into a pipe or a file\n");
		return -1;
	}
	/* A pipe moves a stream faster with more room than its default
	 * 64 KiB (fcntl(2), F_SETPIPE_SZ; 1 MiB is an unprivileged user's
	 * limit); not a pipe, or refused: as it is. */
	struct stat st;
	if (!fstat(STDOUT_FILENO, &st) && S_ISFIFO(st.st_mode))
		(void)fcntl(STDOUT_FILENO, F_SETPIPE_SZ, 1 << 20);
	return STDOUT_FILENO;
}

static int finish_to(const char *to, int fd, const char *tmp, int rc)
{
	char err[SNAP_ERR_MAX];
	if (!strcmp(to, "-"))
		return rc;
	if (rc) {
		snap_tmp_abort(fd, tmp);
		return rc;
	}
	if (snap_tmp_commit(fd, tmp, to, err, sizeof(err))) {
		fprintf(stderr, "ember snapshot: %s\n", err);
		return 1;
	}
	return 0;
}

static int cmd_create(int argc, char **argv)
{
	const char *sock = NULL, *state = NULL, *mem = NULL, *to = NULL;
	bool diff = false, resume = false;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		const char **dst = !strcmp(a, "--api-sock") ? &sock
				   : !strcmp(a, "--state")  ? &state
				   : !strcmp(a, "--memory") ? &mem
				   : !strcmp(a, "--to")	    ? &to
							    : NULL;
		if (dst) {
			if (i + 1 >= argc || !argv[i + 1][0])
				return bad_args("%s needs a value", a);
			*dst = argv[++i];
		} else if (!strcmp(a, "--diff") || !strcmp(a, "--resume")) {
			*(a[2] == 'd' ? &diff : &resume) = true;
		} else {
			return bad_args("create: unknown argument %s", a);
		}
	}
	if (to && (state || mem || diff))
		return bad_args("create: %s", "--to (a stream) goes without --state, --memory and "
					      "--diff");
	if (!sock || (!to && (!state || !mem)))
		return bad_args("create needs %s",
				"--api-sock PATH, --state FILE and --memory FILE (or --to -|FILE "
				"for a stream)");

	char sbuf[PATH_MAX * 2], mbuf[PATH_MAX * 2];
	json_t *info = NULL;
	if (call_ok(sock, "GET", "/", NULL, &info))
		return 1;
	const char *st = json_string_value(json_object_get(info, "state"));
	bool running = st && !strcmp(st, "Running");
	if (!running && !(st && !strcmp(st, "Paused"))) {
		fprintf(stderr, "ember snapshot: the microVM is %s: nothing to snapshot\n",
			st ? st : "in an unknown state");
		json_decref(info);
		return 1;
	}
	json_decref(info);
	char tmp[PATH_MAX];
	int fd = to ? open_to(to, tmp, sizeof(tmp)) : -1;
	if (to && fd < 0)
		return 1;
	if (running && call_ok(sock, "PATCH", "/vm", json_pack("{s:s}", "state", "Paused"), NULL))
		return finish_to(to ? to : "-", fd, tmp, 1);
	int rc =
	    to ? call_fd(sock, "PUT", "/snapshot/create",
			 json_pack("{s:s,s:b}", "snapshot_type", "Full", "stream", 1), fd, NULL)
	       : call_ok(sock, "PUT", "/snapshot/create",
			 json_pack("{s:s,s:s,s:s}", "snapshot_type", diff ? "Diff" : "Full",
				   "snapshot_path", absolute(state, sbuf, sizeof(sbuf)),
				   "mem_file_path", absolute(mem, mbuf, sizeof(mbuf))),
			 NULL);
	if (to)
		rc = finish_to(to, fd, tmp, rc);
	/* Resumed when asked, and after a failure when we paused it. */
	if ((resume || (rc && running)) &&
	    call_ok(sock, "PATCH", "/vm", json_pack("{s:s}", "state", "Resumed"), NULL))
		rc = 1;
	return rc;
}

static int cmd_merge(int argc, char **argv)
{
	if (argc != 3 || argv[1][0] == '-' || argv[2][0] == '-')
		return bad_args("merge takes %s", "BASE_MEM DIFF_MEM");
	char err[SNAP_ERR_MAX];
	if (snap_mem_merge(argv[1], argv[2], err, sizeof(err))) {
		fprintf(stderr, "ember snapshot merge: %s\n", err);
		return 1;
	}
	return 0;
}

/* With --restore the configuration is the snapshot's: the command line
 * may point its devices at other host files, taps and sockets, rename it,
 * and change its timeout and serial output.  NULL, or why a set is
 * refused. */
const char *snap_cli_restore_refusal(const struct vm_config *c, const char *section,
				     const char *key, struct vm_restore_paths *ok)
{
	bool drive = !strncmp(section, "drive.", 6) || !strncmp(section, "block.", 6);
	bool net = !strncmp(section, "net.", 4);
	if (!strcmp(section, "serial")) {
		ok->serial = true;
		return NULL;
	}
	if (!strcmp(section, "vm"))
		return strcmp(key, "name") && strcmp(key, "timeout")
			   ? "not with --restore: the snapshot's configuration holds it"
			   : NULL;
	if (!strcmp(section, "vsock")) {
		const char *why = strcmp(key, "uds")	? "only uds= may change on a restore"
				  : !c->vsock.enabled ? "the snapshot has no vsock device"
						      : NULL;
		ok->vsock |= !why;
		return why;
	}
	if (!drive && !net)
		return "not with --restore: the snapshot's configuration holds it";
	if (strcmp(key, drive ? "path" : "tap"))
		return drive ? "only path= may change on a restore"
			     : "only tap= may change on a restore";
	const char *id = strchr(section, '.') + 1;
	for (unsigned i = 0; drive && i < c->nr_blocks; i++)
		if (!strcmp(c->blocks[i].name, id)) {
			ok->drive[i] = true;
			return NULL;
		}
	for (unsigned i = 0; net && i < c->nr_nets; i++)
		if (!strcmp(c->nets[i].name, id)) {
			ok->net[i] = true;
			return NULL;
		}
	return drive ? "the snapshot has no such drive" : "the snapshot has no such network device";
}

int snap_cli_check_paths(const struct vm_config *c, const struct vm_restore_paths *ok,
			 const char *state_path, char *err, size_t errlen)
{
	char list[VM_ERR_MAX];
	if (!vm_snapshot_check_paths(c, ok, list, sizeof(list)))
		return 0;
	snprintf(err, errlen,
		 "%s names host resources it would open: %s.  A snapshot is not trusted to "
		 "choose them: give each again (--drive ID,path=FILE, --net ID,tap=TAP, "
		 "--vsock uds=PATH, --serial OUT), or --use-saved-paths to open them as saved",
		 state_path, list);
	return EXIT_CONFIG;
}

int snap_cli_main(int argc, char **argv)
{
	if (argc < 1)
		return bad_args("%s", "give create, load or merge");
	if (!strcmp(argv[0], "-h") || !strcmp(argv[0], "--help") ||
	    (argc > 1 && (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")))) {
		fputs(snap_cli_usage, stdout);
		return 0;
	}
	if (!strcmp(argv[0], "create"))
		return cmd_create(argc, argv);
	if (!strcmp(argv[0], "merge"))
		return cmd_merge(argc, argv);
	return bad_args("unknown subcommand %s: give create, load or merge", argv[0]);
}
