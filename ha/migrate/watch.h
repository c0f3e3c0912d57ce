/* Private to ha/migrate/: the watch loop and the relay thread. */
#ifndef EMBER_HA_MIGRATE_WATCH_H
#define EMBER_HA_MIGRATE_WATCH_H

#include <pthread.h>
#include <stdatomic.h>

#include "ha/migrate/migrate.h"
#include "ha/tls_relay.h"

/* ha_relay() in a thread of its own, so that a slow API call never
 * stalls the stream (and a VMM that answers its API only between writes
 * never waits on us). */
struct mig_relay {
	pthread_t thread;
	struct ha_conn *conn; /* the thread's until it ends */
	int local;	      /* our end of the VMM's socketpair */
	int stop[2];	      /* a pipe: a byte ends the relay */
	struct ha_relay_stats st;
	int rc;
	char err[HA_ERR_MAX];
	atomic_bool done;
};

/* Starts relaying between c and local (both taken over).  0 or -errno
 * (then both are closed). */
__attribute__((warn_unused_result)) int mig_relay_start(struct mig_relay *r, struct ha_conn *c,
							int local);

/* Lets the relay end by itself for up to drain_ms (bytes the VMM wrote
 * last, GOGO or NACK, must reach the peer), then stops it and joins. */
void mig_relay_finish(struct mig_relay *r, int drain_ms);

struct mig_watch {
	const char *src, *dst;	 /* API sockets (NULL: the end is another host's) */
	uint64_t timeout_ms;	 /* the migration's: the watch allows a little more */
	struct mig_relay *relay; /* NULL: same host */
};

/* Polls GET /migration at the watched ends, shows progress, applies the
 * hand-over rules (mig_decide), prints the summary; the exit code. */
int mig_watch_run(const struct mig_watch *w);

/* A line on stderr: "ember migrate: ..." */
__attribute__((format(printf, 1, 2))) void mig_say(const char *fmt, ...);

#endif
