/* ember-migrate: the controller of a live migration (`ember migrate`
 * execs it; ember-migrate --help).  Dynamic: it links OpenSSL, which the
 * static, jailed ember must not carry. */
#include <signal.h>
#include <stdio.h>

#include "ha/migrate/migrate.h"
#include "ha/migrate/watch.h"

int main(int argc, char **argv)
{
	char err[600];
	struct mig_args a;
	if (mig_parse_args(argc - 1, argv + 1, &a, err, sizeof(err))) {
		mig_say("%s (ember migrate --help)", err);
		return MIG_EXIT_USAGE;
	}
	if (a.help) {
		fputs(mig_usage, stdout);
		return MIG_EXIT_OK;
	}
	signal(SIGPIPE, SIG_IGN); /* a peer gone: EPIPE, handled where it happens */
	switch (a.mode) {
	case MIG_SAME_HOST:
		return mig_run_same_host(&a);
	case MIG_SEND:
		return mig_run_send(&a);
	case MIG_RECEIVE:
		return mig_run_receive(&a);
	default:
		return mig_run_resolve(&a);
	}
}
