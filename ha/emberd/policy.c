/* Restart policies (systemd's Restart= with StartLimitBurst/Interval,
 * Nomad's restart block: attempts within an interval, delay with
 * exponential backoff up to a ceiling) and the start decision.  Pure:
 * tests/unit/test_ha_policy.c drives them. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ha/emberd/local.h"

void ed_policy_defaults(struct ed_policy *p)
{
	*p = (struct ed_policy){.restart = ED_RESTART_ON_FAILURE,
				.attempts = 5,
				.interval_ms = 60000,
				.delay_ms = 100,
				.max_delay_ms = 30000,
				.snapshot_ms = 0,
				.resume = ED_RESUME_AUTO,
				.autostart = true};
}

const char *ed_restart_name(enum ed_restart r)
{
	return r == ED_RESTART_ALWAYS ? "always" : r == ED_RESTART_NEVER ? "never" : "on-failure";
}

const char *ed_resume_name(enum ed_resume r)
{
	return r == ED_RESUME_NEVER ? "never" : r == ED_RESUME_ROLLBACK ? "rollback" : "auto";
}

int ed_parse_duration(const char *s, uint64_t *ms)
{
	char *end;
	if (!s || !*s || *s == '-' || *s == '+' || *s == ' ')
		return -EINVAL;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno || end == s)
		return -EINVAL;
	static const struct {
		const char *unit;
		uint64_t mul;
	} units[] = {{"ms", 1}, {"s", 1000}, {"m", 60000}, {"h", 3600000}};
	uint64_t mul = 0;
	if (!*end && v == 0)
		mul = 1; /* a bare 0 needs no unit */
	for (size_t i = 0; i < sizeof(units) / sizeof(units[0]) && !mul; i++)
		if (!strcmp(end, units[i].unit))
			mul = units[i].mul;
	if (!mul || v > UINT64_MAX / mul)
		return -EINVAL;
	*ms = v * mul;
	return 0;
}

enum ed_verdict ed_policy_on_exit(const struct ed_policy *p, struct ed_window *w, uint64_t now_ms,
				  uint64_t ran_ms, bool clean, bool asked, uint64_t *delay_ms,
				  char *why, size_t whylen)
{
	*delay_ms = 0;
	if (asked) {
		snprintf(why, whylen, "stopped as asked");
		return ED_V_STOP;
	}
	if (p->restart == ED_RESTART_NEVER || (clean && p->restart == ED_RESTART_ON_FAILURE)) {
		snprintf(why, whylen, "restart=%s, and it exited %s", ed_restart_name(p->restart),
			 clean ? "cleanly (code 0)" : "with a failure");
		return clean ? ED_V_STOP : ED_V_FAIL;
	}
	/* a run as long as the window, or a window over: count afresh */
	if (ran_ms >= p->interval_ms || now_ms - w->start_ms >= p->interval_ms || !w->count) {
		w->start_ms = now_ms;
		w->count = 0;
	}
	if (w->count >= p->attempts) {
		snprintf(why, whylen,
			 "%u restarts within %llu ms (restart_attempts, restart_interval)",
			 w->count, (unsigned long long)p->interval_ms);
		return ED_V_FAIL;
	}
	uint64_t d = p->delay_ms;
	for (unsigned k = 0; k < w->count && d < p->max_delay_ms; k++)
		d *= 2;
	*delay_ms = d < p->max_delay_ms ? d : p->max_delay_ms;
	w->count++;
	snprintf(why, whylen, "restart %u of %u in %llu ms", w->count, p->attempts,
		 (unsigned long long)*delay_ms);
	return ED_V_RESTART;
}

enum ed_way ed_decide_start(enum ed_how how, enum ed_resume resume, bool all_ro,
			    const struct ed_snapinfo *s, char *why, size_t whylen)
{
	if (how == ED_HOW_BOOT) {
		snprintf(why, whylen, "a boot was asked for");
		return ED_WAY_BOOT;
	}
	if (!s->exists) {
		snprintf(why, whylen, "no snapshot");
		return how == ED_HOW_RESUME ? ED_WAY_FAIL : ED_WAY_BOOT;
	}
	/* the suspend snapshot: memory and disks stopped together, nothing ran since */
	if (s->suspend) {
		snprintf(why, whylen, "suspended at host shutdown");
		return ED_WAY_RESUME;
	}
	if (resume == ED_RESUME_ROLLBACK && s->has_drives) {
		snprintf(why, whylen, "resume=rollback: memory and drives from one moment");
		return ED_WAY_ROLLBACK;
	}
	if (all_ro) {
		snprintf(why, whylen, "every drive is read-only: resuming loses nothing");
		return resume == ED_RESUME_NEVER && how != ED_HOW_RESUME ? ED_WAY_BOOT
									 : ED_WAY_RESUME;
	}
	snprintf(why, whylen,
		 "a writable drive changed since the snapshot (resume=%s): its memory would not "
		 "match the disk",
		 ed_resume_name(resume));
	return how == ED_HOW_RESUME ? ED_WAY_FAIL : ED_WAY_BOOT;
}
