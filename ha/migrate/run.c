/* `ember migrate`'s four forms (ha/migrate/migrate.h): each sets up the
 * stream (a socketpair; between hosts a TCP connection authenticated
 * before anything else), hands the VMMs their ends with PUT
 * /migration/receive and /migration/send (SCM_RIGHTS), then watches. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ha/api_client.h"
#include "ha/migrate/watch.h"

#define PUT_MS 10000	   /* the PUTs answer at once: the work is in the background */
#define CONNECT_MS 10000   /* TCP connect */
#define HANDSHAKE_MS 10000 /* TLS handshake: a peer that stalls it is dropped */

/* PUT path at sock with body and fd; 0, or -errno (said, with what). */
static int put_fd(const char *sock, const char *path, json_t *body, int fd, const char *who)
{
	char err[HA_ERR_MAX];
	int r =
	    body ? ha_api_ok(sock, "PUT", path, body, fd, PUT_MS, NULL, err, sizeof(err)) : -ENOMEM;
	json_decref(body);
	if (r)
		mig_say("%s: %s", who, r == -ENOMEM ? "out of memory" : err);
	return r;
}

/* The destinations of the disks copied with the VM (--copy-storage on
 * the receiving side): each named drive's --drive FILE, created here
 * (O_EXCL: never one that exists, which may be someone's disk). */
struct dests {
	const char *path[MIG_OVERRIDES_MAX];
	unsigned n;
};

static bool copied(const char *spec, const char *id)
{
	if (!strcmp(spec, "all"))
		return true;
	size_t n = strlen(id);
	for (const char *p = spec; (p = strstr(p, id)); p += n)
		if ((p == spec || p[-1] == ',') && (p[n] == ',' || !p[n]))
			return true;
	return false;
}

static void remove_dests(struct dests *d, const char *why)
{
	for (unsigned i = 0; i < d->n; i++)
		if (!unlink(d->path[i]))
			mig_say("%s: removed %s", why, d->path[i]);
	d->n = 0;
}

static int create_dests(const struct mig_args *a, struct dests *d)
{
	d->n = 0;
	for (unsigned i = 0; a->copy_storage && i < a->nr_drives; i++) {
		if (!copied(a->copy_storage, a->drives[i].id))
			continue;
		int fd = open(a->drives[i].path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
		if (fd < 0) {
			mig_say("drive \"%s\": cannot create %s: %s%s", a->drives[i].id,
				a->drives[i].path, strerror(errno),
				errno == EEXIST ? " (a copied drive's file must not exist yet)" : "");
			remove_dests(d, "not started");
			return -1;
		}
		close(fd);
		d->path[d->n++] = a->drives[i].path;
	}
	return 0;
}

/* After the watch: a migration that did not complete leaves no copy
 * behind (the source's files are the disks); one whose outcome is
 * unknown leaves them for whoever resolves it. */
static int settle_dests(struct dests *d, int rc)
{
	if (rc == MIG_EXIT_FAILED)
		remove_dests(d, "the VM did not move (it runs on at the source)");
	else if (rc == MIG_EXIT_UNKNOWN)
		for (unsigned i = 0; i < d->n; i++)
			mig_say("left %s: the hand-over's outcome is unknown (remove it only if "
				"the VM runs at the source)",
				d->path[i]);
	return rc;
}

/* The summary of a migration that never started. */
static int not_started(const char *why)
{
	char *json = mig_summary_json(
	    &(struct mig_summary){.result = "failed", .downtime_ms = -1, .error = why});
	printf("%s\n", json ? json : "{\"result\": \"failed\"}");
	free(json);
	return MIG_EXIT_FAILED;
}

int mig_run_same_host(const struct mig_args *a)
{
	int sv[2];
	struct dests d;
	if (create_dests(a, &d))
		return not_started("cannot create a copied drive's file (see stderr)");
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv))
		return mig_say("socketpair: %s", strerror(errno)), remove_dests(&d, "not started"),
		       not_started("socketpair");
	/* The target first: a source with no reader would fail at once. */
	int r = put_fd(a->to, "/migration/receive", mig_receive_body(a), sv[1], "the target");
	close(sv[1]);
	if (!r)
		r = put_fd(a->from, "/migration/send", mig_send_body(a), sv[0], "the source");
	close(sv[0]); /* a refused source: the target reads the end and fails */
	if (r)
		return remove_dests(&d, "not started"),
		       not_started("a VMM refused to start (see stderr)");
	struct mig_watch w = {.src = a->from, .dst = a->to, .timeout_ms = a->timeout_ms};
	return settle_dests(&d, mig_watch_run(&w));
}

/* The peer authenticated on fd (taken over): 0 with *c, or -errno said. */
static int authenticate(const struct mig_args *a, bool server, int fd, const char *peer,
			struct ha_conn **c)
{
	char err[HA_ERR_MAX], desc[160];
	struct ha_tls *t;
	int r = ha_tls_new(&t, &a->tls, server, err, sizeof(err));
	if (r) {
		close(fd);
		return mig_say("%s", err), r;
	}
	char host[256] = "", port[8];
	if (!server && ha_split_hostport(a->to_host, host, sizeof(host), port, sizeof(port)))
		host[0] = '\0';
	r = ha_conn_handshake(t, fd, host[0] ? host : NULL, HANDSHAKE_MS, c, err, sizeof(err));
	ha_tls_free(t); /* the connection holds what it needs */
	if (r)
		return mig_say("%s failed authentication, dropped: %s", peer, err), r;
	mig_say("%s: %s", peer, ha_conn_describe(*c, desc, sizeof(desc)));
	return 0;
}

/* Our end of a new socketpair into *mine, the VMM's PUT with the other:
 * then the relay.  0 or -errno (c freed). */
static int hand_over_stream(const struct mig_args *a, struct ha_conn *c, struct mig_relay *rl)
{
	int sv[2], r;
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv)) {
		mig_say("socketpair: %s", strerror(errno));
		ha_conn_free(c);
		return -errno;
	}
	char err[HA_ERR_MAX];
	/* The receiving side's word comes once its target took the stream:
	 * only then may the source start (ha_conn_hello). */
	if (a->mode == MIG_SEND &&
	    (r = ha_conn_hello(c, false, PUT_MS + HANDSHAKE_MS, err, sizeof(err))))
		mig_say("%s: %s", a->to_host, err);
	else if (a->mode == MIG_SEND)
		r = put_fd(a->from, "/migration/send", mig_send_body(a), sv[0], "the source");
	else if (!(r = put_fd(a->to, "/migration/receive", mig_receive_body(a), sv[0],
			      "the target")) &&
		 (r = ha_conn_hello(c, true, HANDSHAKE_MS, err, sizeof(err))))
		mig_say("the sending side: %s", err);
	close(sv[0]);
	if (r) {
		ha_conn_free(c); /* the peer sees the end: its VMM fails, the source runs on */
		close(sv[1]);
		return r;
	}
	r = mig_relay_start(rl, c, sv[1]);
	if (r)
		mig_say("cannot start the relay: %s", strerror(-r));
	return r;
}

/* The key and certificate files checked before anything moves: 0, or
 * the exit code. */
static int check_tls(const struct mig_args *a, bool server)
{
	char err[HA_ERR_MAX];
	struct ha_tls *t;
	if (ha_tls_new(&t, &a->tls, server, err, sizeof(err)))
		return mig_say("%s", err), not_started(err);
	ha_tls_free(t);
	return 0;
}

/* fd connected (or -errno with err): authenticate, hand the VMM its end,
 * relay and watch.  The exit code. */
static int connected(const struct mig_args *a, int fd, const char *peer, const char *err)
{
	bool server = a->mode == MIG_RECEIVE;
	struct ha_conn *c;
	struct mig_relay rl;
	if (fd < 0)
		return mig_say("%s", err), not_started(err);
	if (authenticate(a, server, fd, peer, &c))
		return not_started(server ? "the sending host failed authentication"
					  : "the receiving host failed authentication");
	struct dests d = {.n = 0};
	if (server && create_dests(a, &d)) {
		ha_conn_free(c);
		return not_started("cannot create a copied drive's file (see stderr)");
	}
	if (hand_over_stream(a, c, &rl))
		return remove_dests(&d, "not started"),
		       not_started("a VMM or the other side refused (see stderr)");
	struct mig_watch w = {.src = server ? NULL : a->from,
			      .dst = server ? a->to : NULL,
			      .timeout_ms = a->timeout_ms,
			      .relay = &rl};
	return settle_dests(&d, mig_watch_run(&w));
}

int mig_run_send(const struct mig_args *a)
{
	char err[HA_ERR_MAX] = "";
	int r = check_tls(a, false);
	return r ? r
		 : connected(a, ha_tcp_connect(a->to_host, CONNECT_MS, err, sizeof(err)),
			     a->to_host, err);
}

int mig_run_receive(const struct mig_args *a)
{
	char err[HA_ERR_MAX] = "", peer[300] = "";
	struct stat st;
	/* Checked without a connection: a peer that fails authentication
	 * must leave no trace at the target, not even a GET. */
	if (stat(a->to, &st) || !S_ISSOCK(st.st_mode)) {
		snprintf(err, sizeof(err),
			 "--to %s: not a socket (start the target first: "
			 "ember --api-sock %s)",
			 a->to, a->to);
		return mig_say("%s", err), not_started(err);
	}
	int r = check_tls(a, true);
	if (r)
		return r;
	unsigned port;
	int lfd = ha_tcp_listen(a->listen, &port, err, sizeof(err));
	if (lfd < 0)
		return mig_say("%s", err), not_started(err);
	mig_say("listening on %s (port %u)", a->listen, port);
	int fd = ha_tcp_accept(lfd, (int)(a->timeout_ms > 0x7fffffff ? 0x7fffffff : a->timeout_ms),
			       peer, sizeof(peer), err, sizeof(err));
	close(lfd); /* one connection */
	return connected(a, fd, peer, err);
}

int mig_run_resolve(const struct mig_args *a)
{
	char err[HA_ERR_MAX];
	json_t *body = json_pack("{s:s}", "outcome", a->resolve);
	int r = ha_api_ok(a->api_sock, "PUT", "/migration/resolve", body, -1, PUT_MS, NULL, err,
			  sizeof(err));
	json_decref(body);
	if (r)
		return mig_say("%s", err), MIG_EXIT_FAILED;
	mig_say("%s: resolved (%s)", a->api_sock, a->resolve);
	return MIG_EXIT_OK;
}
