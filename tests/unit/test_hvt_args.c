/* solo5-hvt's options (monitor/hvt/hvt_args.c): what each sets, and the
 * refusals in solo5-hvt's words. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

#include "monitor/hvt/hvt.h"
#include "monitor/hvt/hvt_args.h"

static void opt_sets(const char *a, const char *section, const char *key, const char *value)
{
	struct hvt_opt o;
	char err[200];
	assert_int_equal(hvt_args_option(a, &o, err, sizeof(err)), 1);
	assert_string_equal(o.section, section);
	assert_string_equal(o.key, key);
	assert_string_equal(o.value, value);
}

static void opt_refused(const char *a, const char *why)
{
	struct hvt_opt o;
	char err[200] = "";
	assert_int_equal(hvt_args_option(a, &o, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, why));
}

static void test_options(void **state)
{
	opt_sets("--mem=4096", "vm", "memory", "4096");
	opt_sets("--block:storage=/a=b.img", "block.storage", "path", "/a=b.img");
	opt_sets("--block-sector-size:storage=4096", "block.storage", "sector_size", "4096");
	opt_sets("--net:service=tap0", "net.service", "tap", "tap0");
	opt_sets("--net-mac:service=02:00:00:00:00:01", "net.service", "mac",
		 "02:00:00:00:00:01");
	opt_sets("--dumpcore=/tmp", "vm", "dumpcore", "/tmp");
}

static void test_not_solo5s(void **state)
{
	struct hvt_opt o;
	char err[200];
	const char *other[] = {"--memory", "--net", "--drive", "--", "-h", "--blockx:a=b", "--mem"};
	for (unsigned i = 0; i < sizeof(other) / sizeof(other[0]); i++)
		assert_int_equal(hvt_args_option(other[i], &o, err, sizeof(err)), 0);
}

static void test_refusals(void **state)
{
	opt_refused("--mem=", "Malformed argument to --mem");
	opt_refused("--mem=0", "Malformed argument to --mem");
	opt_refused("--mem=12M", "Malformed argument to --mem");
	opt_refused("--mem=99999999999", "Malformed argument to --mem");
	opt_refused("--block:=x.img", "expected --block:NAME=VALUE");
	opt_refused("--block:storage", "expected --block:NAME=VALUE");
	opt_refused("--net:service=", "expected --net:NAME=VALUE");
	opt_refused("--gdb", "no gdb server");
	opt_refused("--gdb-port=1234", "no gdb server");
}

static void test_names_and_exit_codes(void **state)
{
	assert_true(hvt_args_is_solo5_name("solo5-hvt"));
	assert_true(hvt_args_is_solo5_name("/usr/local/bin/solo5-hvt"));
	assert_true(hvt_args_is_solo5_name("./solo5-hvt-debug"));
	assert_false(hvt_args_is_solo5_name("ember"));
	assert_false(hvt_args_is_solo5_name("solo5-hvt.sh"));
	static struct hvt_guest g;
	assert_int_equal(hvt_args_exit_code(NULL, 121), 1);
	assert_int_equal(hvt_args_exit_code(&g, 0), 0);
	assert_int_equal(hvt_args_exit_code(&g, 123), 1);
	g.halted = true;
	g.halt_status = 121; /* the guest's own status passes */
	assert_int_equal(hvt_args_exit_code(&g, 121), 121);
	assert_false(hvt_args_is_kernel("/nonexistent"));
	assert_false(hvt_args_is_kernel("/dev/null"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_options),
	    cmocka_unit_test(test_not_solo5s),
	    cmocka_unit_test(test_refusals),
	    cmocka_unit_test(test_names_and_exit_codes),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
