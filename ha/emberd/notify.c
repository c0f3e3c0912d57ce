/* emberd under systemd (Type=notify, WatchdogSec=): READY=1 once it
 * serves, WATCHDOG=1 keep-alives from the loop, STOPPING=1 at shutdown
 * (sd_notify(3), sd_watchdog_enabled(3)).  The keep-alives ride on the
 * loop on purpose: a loop that hangs stops them, and systemd restarts
 * emberd.  Not under systemd ($NOTIFY_SOCKET unset): nothing happens. */
#include <stdint.h>
#include <stdlib.h>
#include <systemd/sd-daemon.h>

#include "ha/emberd/emberd.h"

/* The keep-alives' state: one per process, as $NOTIFY_SOCKET and the
 * watchdog systemd keeps for it are (static: nothing to free at exit). */
static struct keepalive {
	struct ed_loop *l;
	uint64_t period_ms;
} keep;

static void keepalive(void *arg)
{
	struct keepalive *k = arg;
	sd_notify(0, "WATCHDOG=1");
	/* Out of memory: no more keep-alives, and systemd's watchdog says so. */
	(void)!ed_loop_timer(k->l, k->period_ms, keepalive, k);
}

void ed_notify_ready(struct ed_loop *l, const char *status)
{
	if (!getenv("NOTIFY_SOCKET"))
		return;
	sd_notifyf(0, "READY=1\nSTATUS=%s", status ? status : "running");
	uint64_t usec = 0;
	/* > 0: WATCHDOG_USEC is set (and WATCHDOG_PID, if set, is ours) */
	if (sd_watchdog_enabled(0, &usec) <= 0 || !usec)
		return;
	if (keep.l)
		return; /* already sending */
	keep.l = l;
	keep.period_ms = usec / 2000 ? usec / 2000 : 1; /* half the watchdog's period */
	keepalive(&keep);
}

void ed_notify_stopping(const char *status)
{
	if (!getenv("NOTIFY_SOCKET"))
		return;
	sd_notifyf(0, "STOPPING=1\nSTATUS=%s", status ? status : "stopping");
}
