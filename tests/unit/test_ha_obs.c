/* emberd's observability, its pure parts (ha/emberd/obs_pure.c):
 * /proc/PID/stat and status parsing (command names with spaces and
 * parentheses), the EWMA, and Prometheus' text format with its label
 * escaping. */
#include <errno.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "ha/emberd/obs.h"

/* fields 3..15 after "pid (comm)": state ppid pgrp session tty tpgid
 * flags minflt cminflt majflt cmajflt utime stime */
#define TAIL " S 1 2 3 0 -1 4194560 100 0 0 0 1234 567 8 9 20 0 3 0 100 200 300\n"

static void test_stat(void **state)
{
	(void)state;
	uint64_t t = 0;
	assert_int_equal(ed_obs_stat_ticks("42 (ember)" TAIL, &t), 0);
	assert_int_equal(t, 1234 + 567);
	/* a name with spaces and parentheses: counted after the last ')' */
	t = 0;
	assert_int_equal(ed_obs_stat_ticks("42 (a b) (c) d)" TAIL, &t), 0);
	assert_int_equal(t, 1801);
	t = 0;
	assert_int_equal(ed_obs_stat_ticks("7 ())))" TAIL, &t), 0);
	assert_int_equal(t, 1801);
	/* truncated, no name, negative, junk */
	assert_int_equal(ed_obs_stat_ticks("42 (ember) S 1 2 3", &t), -EINVAL);
	assert_int_equal(ed_obs_stat_ticks("42 ember S 1", &t), -EINVAL);
	assert_int_equal(ed_obs_stat_ticks("", &t), -EINVAL);
	assert_int_equal(ed_obs_stat_ticks(NULL, &t), -EINVAL);
	assert_int_equal(ed_obs_stat_ticks("1 (x) S 1 2 3 0 -1 4194560 100 0 0 0 -5 567 8\n", &t),
			 -EINVAL);
	assert_int_equal(ed_obs_stat_ticks("1 (x) S 1 2 3 0 -1 4194560 100 0 0 0 12x 567 8\n", &t),
			 -EINVAL);
}

static void test_status(void **state)
{
	(void)state;
	uint64_t b = 1;
	assert_int_equal(ed_obs_status_rss("Name:\tember\nVmPeak:\t 100 kB\nVmRSS:\t   2048 kB\n"
					   "Threads:\t3\n",
					   &b),
			 0);
	assert_int_equal(b, 2048 * 1024);
	assert_int_equal(ed_obs_status_rss("Name:\tzombie\nState:\tZ\n", &b), 0);
	assert_int_equal(b, 0);
	assert_int_equal(ed_obs_status_rss("VmRSS:\tlots\n", &b), -EINVAL);
	assert_int_equal(ed_obs_status_rss("VmRSS:\t12 MB\n", &b), -EINVAL);
}

static void test_ewma(void **state)
{
	(void)state;
	assert_true(ed_obs_ewma(0, 500, 2000, 5000, true) == 500);
	/* one time constant: 63.2% of the way */
	double x = ed_obs_ewma(0, 1000, 5000, 5000, false);
	assert_true(fabs(x - 1000 * (1 - exp(-1))) < 1e-9);
	/* two steps of dt equal one step of 2 dt: the sampling rate does not
	 * change the smoothing */
	double a = ed_obs_ewma(ed_obs_ewma(0, 1000, 1000, 5000, false), 1000, 1000, 5000, false);
	double b = ed_obs_ewma(0, 1000, 2000, 5000, false);
	assert_true(fabs(a - b) < 1e-9);
	/* a steady sample stays; dt 0 changes nothing */
	assert_true(ed_obs_ewma(300, 300, 2000, 5000, false) == 300);
	assert_true(ed_obs_ewma(300, 900, 0, 5000, false) == 300);
}

static void test_escape(void **state)
{
	(void)state;
	char out[64];
	assert_int_equal(ed_prom_escape("plain", out, sizeof(out)), 0);
	assert_string_equal(out, "plain");
	assert_int_equal(ed_prom_escape("a\\b\"c\nd", out, sizeof(out)), 0);
	assert_string_equal(out, "a\\\\b\\\"c\\nd");
	char small[4];
	assert_int_equal(ed_prom_escape("\"\"\"", small, sizeof(small)), -ENOSPC);
	assert_string_equal(small, "");
	assert_int_equal(ed_prom_escape("abc", small, sizeof(small)), 0);
	assert_int_equal(ed_prom_escape("abcd", small, sizeof(small)), -ENOSPC);
}

static void test_text(void **state)
{
	(void)state;
	struct ed_prom p = {0};
	ed_prom_family(&p, "ember_vm_up", "gauge", "1 when up\nsecond \\ line");
	const char *const l[][2] = {{"vm", "a\"b"}, {"host", "h\\1\n"}};
	ed_prom_sample(&p, "ember_vm_up", l, 2, 1);
	ed_prom_sample(&p, "ember_cluster_imbalance", NULL, 0, 0.125);
	ed_prom_sample(&p, "ember_x_bytes", NULL, 0, 21474836480.0);
	ed_prom_sample(&p, "ember_y", NULL, 0, NAN);
	assert_false(p.oom);
	assert_string_equal(p.buf, "# HELP ember_vm_up 1 when up\\nsecond \\\\ line\n"
				   "# TYPE ember_vm_up gauge\n"
				   "ember_vm_up{vm=\"a\\\"b\",host=\"h\\\\1\\n\"} 1\n"
				   "ember_cluster_imbalance 0.125\n"
				   "ember_x_bytes 21474836480\n"
				   "ember_y NaN\n");
	assert_int_equal(p.len, strlen(p.buf));
	ed_prom_free(&p);
	assert_null(p.buf);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_stat), cmocka_unit_test(test_status),
	    cmocka_unit_test(test_ewma), cmocka_unit_test(test_escape),
	    cmocka_unit_test(test_text),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
