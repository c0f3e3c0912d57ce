/* `ember drive move|status|cancel`: a client of a running ember's API
 * (PUT/GET /drives/{id}/move, PUT /drives/{id}/move/cancel).  move opens
 * (creates) the destination itself and sends its fd with the request, so
 * the jailed ember opens nothing; see docs/storage-migration.md. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "monitor/api/api.h"
#include "monitor/api_client.h"
#include "monitor/drive_move.h"
#include "monitor/exitcodes.h"

#define POLL_MS 100
#define CALL_TIMEOUT_S 30

const char drive_cli_usage[] =
    "usage: ember drive move --api-sock PATH --drive ID --to FILE\n"
    "                        [--max-bandwidth BYTES_PER_S] [--wait] [--force]\n"
    "       ember drive status --api-sock PATH --drive ID\n"
    "       ember drive cancel --api-sock PATH --drive ID\n"
    "\n"
    "move    move drive ID of a running ember to FILE while the guest runs: the\n"
    "        disk is copied in the background (holes stay holes), the guest's\n"
    "        writes are mirrored to both copies, then the drive switches to FILE.\n"
    "        FILE is created here (mode 0600; an existing file is refused unless\n"
    "        --force) and its descriptor sent to ember.  --wait: print the\n"
    "        progress until the move ends; a move that fails or is cancelled\n"
    "        leaves the drive on its old file, and FILE, if this command made it,\n"
    "        is removed.  --max-bandwidth: bytes of data per second (0: no limit).\n"
    "status  the last move's progress, as JSON\n"
    "cancel  stop the running move: the drive stays on its old file\n"
    "\n"
    "Exit codes: 0 done (moved, with --wait); 1 refused, failed or cancelled\n"
    "(the reason is printed); 121 bad arguments.\n";

struct args {
	const char *sock, *drive, *to;
	uint64_t bw;
	bool wait, force;
};

static int bad_args(const char *fmt, const char *arg)
{
	fprintf(stderr, "ember drive: ");
	fprintf(stderr, fmt, arg);
	fprintf(stderr, " (see ember help drive)\n");
	return EXIT_CONFIG;
}

/* One call; 0 with the reply (2xx), or 1 with the reason on stderr
 * (fault_message, naming what refused). */
static int call(const struct args *a, const char *method, const char *suffix, json_t *body, int fd,
		json_t **reply)
{
	char path[CFG_NAME_MAX + 32], err[512];
	int status = 0;
	snprintf(path, sizeof(path), "/drives/%s/move%s", a->drive, suffix);
	int rc = api_client_json(a->sock, method, path, body, fd, CALL_TIMEOUT_S, &status, reply,
				 err, sizeof(err));
	if (rc)
		fprintf(stderr, "ember drive: %s\n", err); /* ember's faults name the drive */
	return rc;
}

static uint64_t num(json_t *o, const char *k)
{
	json_int_t v = json_integer_value(json_object_get(o, k));
	return v > 0 ? (uint64_t)v : 0;
}

static void progress(const struct args *a, json_t *r)
{
	uint64_t done = num(r, "bytes_copied"), total = num(r, "bytes_total");
	printf("drive %s: %s %.1f of %.1f MiB (%u%%), %.1f MiB/s\n", a->drive,
	       json_string_value(json_object_get(r, "phase")), (double)done / 1048576,
	       (double)total / 1048576, total ? (unsigned)(done * 100 / total) : 100,
	       (double)num(r, "rate_bps") / 1048576);
	fflush(stdout);
}

/* Poll until the move ends.  0 completed, 1 failed or cancelled, -1 when
 * ember went away (how the move ended is unknown). */
static int wait_end(const struct args *a, char *last, size_t lastlen)
{
	const struct timespec nap = {0, POLL_MS * 1000000L};
	char seen[32] = "";
	for (;;) {
		json_t *r = NULL;
		int rc = call(a, "GET", "", NULL, -1, &r);
		if (rc)
			return rc < 0 ? -1 : 1;
		const char *ph = json_string_value(json_object_get(r, "phase"));
		ph = ph ? ph : "?";
		snprintf(last, lastlen, "%s", ph);
		if (strcmp(seen, ph) || !strcmp(ph, "copying"))
			progress(a, r);
		snprintf(seen, sizeof(seen), "%s", ph);
		if (!strcmp(ph, "completed")) {
			printf("drive %s: moved to %s (pivot pause %" PRIu64 " us)\n", a->drive,
			       json_string_value(json_object_get(r, "path")),
			       num(r, "pivot_pause_us"));
			json_decref(r);
			return 0;
		}
		if (!strcmp(ph, "failed") || !strcmp(ph, "cancelled")) {
			const char *e = json_string_value(json_object_get(r, "error"));
			fprintf(stderr, "ember drive: %s\n", e ? e : ph);
			json_decref(r);
			return 1;
		}
		json_decref(r);
		nanosleep(&nap, NULL);
	}
}

/* Whether nothing listens on the API socket any more (ember exited), as
 * opposed to a slow answer. */
static bool ember_gone(const char *sock)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", sock);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	bool gone = fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 &&
		    (errno == ECONNREFUSED || errno == ENOENT);
	if (fd >= 0)
		close(fd);
	return gone;
}

static int cmd_move(const struct args *a)
{
	char abs[PATH_MAX * 2], cwd[PATH_MAX];
	const char *path = a->to;
	if (a->to[0] != '/' && getcwd(cwd, sizeof(cwd))) {
		snprintf(abs, sizeof(abs), "%s/%s", cwd, a->to);
		path = abs;
	}
	/* ember is there (a refusal is fine: no move yet) before a file is
	 * made for it. */
	char err[512];
	int status;
	if (api_client_json(a->sock, "GET", "/", NULL, -1, CALL_TIMEOUT_S, &status, NULL, err,
			    sizeof(err)) < 0) {
		fprintf(stderr, "ember drive: drive \"%s\": %s\n", a->drive, err);
		return 1;
	}
	int fd =
	    open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW | (a->force ? 0 : O_EXCL), 0600);
	bool created = fd >= 0 && !a->force;
	/* Marked until ember is about to pivot (DMOVE_XATTR); a file system
	 * without user xattrs: no mark, and a lost ember leaves the file. */
	bool marked = created && !fsetxattr(fd, DMOVE_XATTR, "1", 1, 0);
	if (fd < 0) {
		fprintf(stderr, "ember drive: drive \"%s\": cannot create %s: %s%s\n", a->drive,
			path, strerror(errno),
			errno == EEXIST ? " (give --force to overwrite it)" : "");
		return 1;
	}
	json_t *body = json_pack("{s:s,s:I}", "path", path, "max_bandwidth", (json_int_t)a->bw);
	int rc = call(a, "PUT", "", body, fd, NULL);
	close(fd); /* ember holds its own */
	char last[32] = "copying";
	if (!rc && a->wait)
		rc = wait_end(a, last, sizeof(last));
	else if (!rc)
		printf("drive %s: moving to %s in the background (ember drive status)\n", a->drive,
		       path);
	if (rc < 0 && marked && ember_gone(a->sock) && getxattr(path, DMOVE_XATTR, NULL, 0) >= 0) {
		/* ember is gone and never took the mark off: the file never
		 * became the drive, the old file is whole. */
		fprintf(stderr,
			"ember drive: drive \"%s\": ember went away during the move (last seen: "
			"%s), before the pivot: the drive's old file is whole\n",
			a->drive, last);
		rc = 1;
	} else if (rc < 0) {
		/* ember is gone: the move may have pivoted before it went (then
		 * this file is the drive's only up-to-date copy), so it stays. */
		fprintf(stderr,
			"ember drive: drive \"%s\": ember went away during the move (last seen: "
			"%s); %s is left in place: unless the move had completed, the drive's "
			"old file is whole and this one is not\n",
			a->drive, last, path);
		return 1;
	}
	if (rc && created) {
		if (unlink(path) == 0)
			fprintf(stderr, "ember drive: removed %s\n", path);
		else
			fprintf(stderr, "ember drive: cannot remove %s: %s\n", path,
				strerror(errno));
	}
	return rc;
}

int drive_cli_main(int argc, char **argv)
{
	struct args a = {0};
	if (argc < 1 || !strcmp(argv[0], "-h") || !strcmp(argv[0], "--help")) {
		fputs(drive_cli_usage, argc < 1 ? stderr : stdout);
		return argc < 1 ? EXIT_CONFIG : 0;
	}
	const char *cmd = argv[0];
	for (int i = 1; i < argc; i++) {
		const char *o = argv[i];
		const char **dst = !strcmp(o, "--api-sock") ? &a.sock
				   : !strcmp(o, "--drive")  ? &a.drive
				   : !strcmp(o, "--to")	    ? &a.to
							    : NULL;
		if (dst || !strcmp(o, "--max-bandwidth")) {
			if (i + 1 >= argc || !argv[i + 1][0])
				return bad_args("%s needs a value", o);
			const char *v = argv[++i];
			if (dst) {
				*dst = v;
				continue;
			}
			char *end;
			errno = 0;
			unsigned long long x = strtoull(v, &end, 10);
			if (*end || errno || v[0] == '-')
				return bad_args(
				    "--max-bandwidth: \"%s\" is not a number of bytes/s", v);
			a.bw = x;
		} else if (!strcmp(o, "--wait") || !strcmp(o, "--force")) {
			*(o[2] == 'w' ? &a.wait : &a.force) = true;
		} else {
			return bad_args("unknown argument %s", o);
		}
	}
	if (!a.sock || !a.drive)
		return bad_args("%s needs --api-sock PATH and --drive ID", cmd);
	if (strlen(a.drive) > CFG_NAME_MAX || strchr(a.drive, '/'))
		return bad_args("--drive: \"%s\" is not a drive id", a.drive);
	if (!strcmp(cmd, "move")) {
		if (!a.to)
			return bad_args("move needs %s", "--to FILE");
		return cmd_move(&a);
	}
	if (a.to || a.bw || a.wait || a.force)
		return bad_args("%s takes only --api-sock and --drive", cmd);
	if (!strcmp(cmd, "cancel"))
		return call(&a, "PUT", "/cancel", json_object(), -1, NULL) ? 1 : 0;
	if (!strcmp(cmd, "status")) {
		json_t *r = NULL;
		if (call(&a, "GET", "", NULL, -1, &r))
			return 1;
		char *t = json_dumps(r, JSON_COMPACT);
		printf("%s\n", t ? t : "{}");
		free(t);
		json_decref(r);
		return 0;
	}
	return bad_args("unknown subcommand %s (move, status, cancel)", cmd);
}
