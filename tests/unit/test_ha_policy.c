/* emberd's pure decisions (ha/emberd/policy.c): durations, the restart
 * policy (always / on-failure / never, attempts within an interval,
 * doubling delays up to a ceiling, the window reset after a long run),
 * and the start decision that never pairs a memory image with a disk
 * from another moment. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "ha/emberd/local.h"

static void test_durations(void **state)
{
	(void)state;
	static const struct {
		const char *s;
		uint64_t ms;
	} good[] = {{"0", 0},	   {"100ms", 100},  {"2s", 2000},
		    {"1m", 60000}, {"1h", 3600000}, {"0s", 0}};
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		uint64_t ms = 1;
		assert_int_equal(ed_parse_duration(good[i].s, &ms), 0);
		assert_int_equal(ms, good[i].ms);
	}
	static const char *const bad[] = {
	    "", "5", "-1s", "1x", "s", "1.5s", " 1s", "1s ", "99999999999999999999h"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		uint64_t ms;
		assert_int_equal(ed_parse_duration(bad[i], &ms), -EINVAL);
	}
}

static struct ed_policy pol(enum ed_restart r)
{
	struct ed_policy p;
	ed_policy_defaults(&p);
	p.restart = r;
	p.attempts = 3;
	p.interval_ms = 10000;
	p.delay_ms = 100;
	p.max_delay_ms = 300;
	return p;
}

static void test_backoff_and_limit(void **state)
{
	(void)state;
	struct ed_policy p = pol(ED_RESTART_ON_FAILURE);
	struct ed_window w = {0};
	char why[256];
	uint64_t d, now = 1000;
	const uint64_t want[] = {100, 200, 300}; /* doubling, capped */
	for (int i = 0; i < 3; i++) {
		assert_int_equal(
		    ed_policy_on_exit(&p, &w, now, 50, false, false, &d, why, sizeof(why)),
		    ED_V_RESTART);
		assert_int_equal(d, want[i]);
		now += 500;
	}
	/* a fourth failure inside the window: the policy gives up */
	assert_int_equal(ed_policy_on_exit(&p, &w, now, 50, false, false, &d, why, sizeof(why)),
			 ED_V_FAIL);
	assert_non_null(strstr(why, "3 restarts within 10000 ms"));
}

static void test_window_resets(void **state)
{
	(void)state;
	struct ed_policy p = pol(ED_RESTART_ALWAYS);
	struct ed_window w = {0};
	char why[256];
	uint64_t d;
	for (int i = 0; i < 3; i++)
		assert_int_equal(
		    ed_policy_on_exit(&p, &w, 1000 + i, 1, false, false, &d, why, sizeof(why)),
		    ED_V_RESTART);
	/* it then ran a whole interval: counted afresh, the first delay again */
	assert_int_equal(
	    ed_policy_on_exit(&p, &w, 20000, 10000, false, false, &d, why, sizeof(why)),
	    ED_V_RESTART);
	assert_int_equal(d, 100);
	/* or the window passed, however short the runs */
	for (int i = 0; i < 2; i++)
		assert_int_equal(
		    ed_policy_on_exit(&p, &w, 20001 + i, 1, false, false, &d, why, sizeof(why)),
		    ED_V_RESTART);
	assert_int_equal(ed_policy_on_exit(&p, &w, 30001, 1, false, false, &d, why, sizeof(why)),
			 ED_V_RESTART);
	assert_int_equal(d, 100);
}

static void test_kinds(void **state)
{
	(void)state;
	struct ed_window w = {0};
	char why[256];
	uint64_t d;
	struct ed_policy always = pol(ED_RESTART_ALWAYS), onf = pol(ED_RESTART_ON_FAILURE),
			 never = pol(ED_RESTART_NEVER);
	/* a clean exit (code 0): the guest's end; always restarts it anyway */
	assert_int_equal(ed_policy_on_exit(&always, &w, 1, 1, true, false, &d, why, sizeof(why)),
			 ED_V_RESTART);
	w = (struct ed_window){0};
	assert_int_equal(ed_policy_on_exit(&onf, &w, 1, 1, true, false, &d, why, sizeof(why)),
			 ED_V_STOP);
	assert_int_equal(ed_policy_on_exit(&never, &w, 1, 1, false, false, &d, why, sizeof(why)),
			 ED_V_FAIL);
	assert_non_null(strstr(why, "restart=never"));
	assert_int_equal(ed_policy_on_exit(&never, &w, 1, 1, true, false, &d, why, sizeof(why)),
			 ED_V_STOP);
	/* an exit we asked for is never a failure, whatever the code */
	assert_int_equal(ed_policy_on_exit(&always, &w, 1, 1, false, true, &d, why, sizeof(why)),
			 ED_V_STOP);
	assert_int_equal(w.count, 0);
	/* no delay at all: restart_delay = 0 stays 0 */
	struct ed_policy z = pol(ED_RESTART_ALWAYS);
	z.delay_ms = 0;
	for (int i = 0; i < 3; i++) {
		assert_int_equal(
		    ed_policy_on_exit(&z, &w, 1, 1, false, false, &d, why, sizeof(why)),
		    ED_V_RESTART);
		assert_int_equal(d, 0);
	}
}

static enum ed_way way(enum ed_how how, enum ed_resume r, bool all_ro, bool exists, bool suspend,
		       bool drives)
{
	struct ed_snapinfo s = {.exists = exists, .suspend = suspend, .has_drives = drives};
	char why[256];
	return ed_decide_start(how, r, all_ro, &s, why, sizeof(why));
}

static void test_start_decision(void **state)
{
	(void)state;
	const enum ed_how P = ED_HOW_POLICY;
	/* no snapshot: boot (or fail, when a resume was asked for) */
	assert_int_equal(way(P, ED_RESUME_AUTO, true, false, false, false), ED_WAY_BOOT);
	assert_int_equal(way(ED_HOW_RESUME, ED_RESUME_AUTO, true, false, false, false),
			 ED_WAY_FAIL);
	/* auto: read-only drives resume, a writable one boots */
	assert_int_equal(way(P, ED_RESUME_AUTO, true, true, false, false), ED_WAY_RESUME);
	assert_int_equal(way(P, ED_RESUME_AUTO, false, true, false, false), ED_WAY_BOOT);
	/* ...and a resume asked for on a writable drive is refused, never paired */
	assert_int_equal(way(ED_HOW_RESUME, ED_RESUME_AUTO, false, true, false, false),
			 ED_WAY_FAIL);
	/* the suspend snapshot: nothing ran since, so it resumes whatever the drives */
	assert_int_equal(way(P, ED_RESUME_AUTO, false, true, true, false), ED_WAY_RESUME);
	assert_int_equal(way(P, ED_RESUME_NEVER, false, true, true, false), ED_WAY_RESUME);
	/* rollback: only with the drives in the snapshot */
	assert_int_equal(way(P, ED_RESUME_ROLLBACK, false, true, false, true), ED_WAY_ROLLBACK);
	assert_int_equal(way(P, ED_RESUME_ROLLBACK, false, true, false, false), ED_WAY_BOOT);
	/* never: boots */
	assert_int_equal(way(P, ED_RESUME_NEVER, true, true, false, false), ED_WAY_BOOT);
	/* a boot asked for boots */
	assert_int_equal(way(ED_HOW_BOOT, ED_RESUME_AUTO, true, true, true, true), ED_WAY_BOOT);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_durations),	   cmocka_unit_test(test_backoff_and_limit),
	    cmocka_unit_test(test_window_resets),  cmocka_unit_test(test_kinds),
	    cmocka_unit_test(test_start_decision),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
