/* emberctl's pure parts (ha/ctl/): the command line and its refusals
 * (--grace durations, --tail sizes), the aligned tables, the human
 * durations and sizes, the VM table from GET /vms's JSON. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "ha/ctl/ctl.h"

static int parse(const char *line, const char *env, struct ctl_args *a, char *err)
{
	static char buf[1024];
	static char *argv[64];
	int argc = 0;
	strcpy(buf, line);
	for (char *t = strtok(buf, " "); t && argc < 63; t = strtok(NULL, " "))
		argv[argc++] = t;
	return ctl_parse_args(argc, argv, env, a, err, 512);
}

static struct ctl_args ok(const char *line)
{
	struct ctl_args a;
	char err[512] = "";
	if (parse(line, NULL, &a, err))
		fail_msg("%s: %s", line, err);
	return a;
}

static void refused(const char *line, const char *why)
{
	struct ctl_args a;
	char err[512] = "";
	assert_int_equal(parse(line, NULL, &a, err), -EINVAL);
	if (!strstr(err, why))
		fail_msg("%s: \"%s\" (wanted \"%s\")", line, err, why);
}

static void test_commands(void **state)
{
	struct ctl_args a = ok("list");
	assert_int_equal(a.cmd, CTL_LIST);
	assert_string_equal(a.sock, CTL_SOCK_DEFAULT);
	assert_false(a.json);
	a = ok("--json --sock /tmp/s list");
	assert_true(a.json);
	assert_string_equal(a.sock, "/tmp/s");
	a = ok("list --sock=/tmp/t --json");
	assert_string_equal(a.sock, "/tmp/t");
	assert_true(a.json);
	struct ctl_args b;
	char err[512];
	assert_int_equal(parse("list", "/run/x.sock", &b, err), 0);
	assert_string_equal(b.sock, "/run/x.sock");
	assert_int_equal(parse("--sock /y list", "/run/x.sock", &b, err), 0);
	assert_string_equal(b.sock, "/y");

	a = ok("status");
	assert_int_equal(a.cmd, CTL_STATUS);
	assert_null(a.vm);
	a = ok("status web");
	assert_string_equal(a.vm, "web");
	a = ok("start web --boot");
	assert_int_equal(a.cmd, CTL_START);
	assert_string_equal(a.how, "boot");
	a = ok("start --resume web");
	assert_string_equal(a.how, "resume");
	assert_string_equal(a.vm, "web");
	a = ok("start web");
	assert_null(a.how);
	a = ok("stop web");
	assert_false(a.has_grace);
	a = ok("restart web --grace 2.5");
	assert_true(a.has_grace);
	assert_int_equal(a.grace_ms, 2500);
	a = ok("snapshot web");
	assert_int_equal(a.cmd, CTL_SNAPSHOT);
	a = ok("logs web");
	assert_int_equal(a.tail, 65536);
	assert_false(a.follow);
	a = ok("logs web --tail 1M --follow");
	assert_int_equal(a.tail, 1 << 20);
	assert_true(a.follow);
	a = ok("events --since 17 --follow");
	assert_true(a.has_since);
	assert_int_equal(a.since, 17);
	a = ok("events");
	assert_false(a.has_since);
	assert_int_equal(ok("hosts").cmd, CTL_HOSTS);
	assert_int_equal(ok("reload").cmd, CTL_RELOAD);
	assert_int_equal(ok("help").cmd, CTL_HELP);
	assert_int_equal(ok("stop --help").cmd, CTL_HELP);
}

static void test_durations_sizes(void **state)
{
	static const struct {
		const char *arg;
		uint64_t ms;
	} grace[] = {{"5s", 5000}, {"500ms", 500}, {"2m", 120000},
		     {"0", 0},	   {"1.5", 1500},  {"60m", 3600000}};
	for (unsigned i = 0; i < sizeof(grace) / sizeof(grace[0]); i++) {
		char line[64];
		snprintf(line, sizeof(line), "stop a --grace %s", grace[i].arg);
		assert_int_equal(ok(line).grace_ms, grace[i].ms);
		snprintf(line, sizeof(line), "stop a --grace=%s", grace[i].arg);
		assert_int_equal(ok(line).grace_ms, grace[i].ms);
	}
	static const struct {
		const char *arg;
		uint64_t bytes;
	} tail[] = {{"4096", 4096}, {"64K", 65536}, {"1M", 1 << 20}, {"0", 0}, {"1.5K", 1536}};
	for (unsigned i = 0; i < sizeof(tail) / sizeof(tail[0]); i++) {
		char line[64];
		snprintf(line, sizeof(line), "logs a --tail %s", tail[i].arg);
		assert_int_equal(ok(line).tail, tail[i].bytes);
	}
	refused("stop a --grace soon", "--grace soon: give a duration up to 1h");
	refused("stop a --grace -1", "--grace -1");
	refused("stop a --grace 61m", "--grace 61m");
	refused("stop a --grace", "--grace: give a value");
	refused("logs a --tail lots", "--tail lots: give a size in bytes");
	refused("logs a --tail -5", "--tail -5");
	refused("events --since x", "--since x: give an event's sequence number");
	refused("events --since -1", "--since -1");
}

static void test_refusals(void **state)
{
	refused("", "give a command");
	refused("--json", "give a command");
	refused("lst", "unknown command \"lst\" (list, status");
	refused("stop", "stop: give a VM's name");
	refused("logs", "logs: give a VM's name");
	refused("list web", "list: takes no VM (\"web\")");
	refused("status a b", "status: unexpected \"b\"");
	refused("stop a --boot", "--boot: unknown option for stop (it takes --grace)");
	refused("list --follow", "--follow: unknown option for list (it takes --sock, --json)");
	refused("--grace 5s stop a", "--grace: unknown option (before the command");
	refused("start a --boot --resume", "--boot and --resume exclude each other");
	refused("logs a --follow=yes", "--follow takes no value");
	refused("--sock", "--sock: give a value");
	refused("--sock= list", "--sock: give the path");
}

static char *printed(const struct ctl_table *t)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);
	ctl_table_print(t, f);
	fclose(f);
	return buf;
}

/* migrate and host maintenance: the move commands (docs/ha.md "Moving a VM") */
static void test_move_commands(void **state)
{
	(void)state;
	struct ctl_args a = ok("migrate c0 h1 --wait");
	assert_int_equal(a.cmd, CTL_MIGRATE);
	assert_string_equal(a.vm, "c0");
	assert_string_equal(a.host, "h1");
	assert_true(a.wait);
	a = ok("host maintenance enter h0");
	assert_int_equal(a.cmd, CTL_MAINT);
	assert_string_equal(a.maint, "enter");
	assert_string_equal(a.host, "h0");
	assert_false(a.wait);
	a = ok("--json host maintenance status h2 --wait");
	assert_string_equal(a.maint, "status");
	refused("migrate c0", "give a VM and a host");
	refused("migrate c0 h1 h2", "give a VM and a host");
	refused("host maintenance leave h0", "enter|exit|status");
	refused("host upkeep enter h0", "enter|exit|status");
	refused("migrate c0 h1 --wait=1", "takes no value");
	refused("migrate c0 h1 --grace 1s", "unknown option for migrate");
}

static void test_table(void **state)
{
	struct ctl_table t;
	static const char *const head[] = {"NAME", "STATE", "REASON"};
	assert_int_equal(ctl_table_init(&t, head, 3), 0);
	assert_int_equal(ctl_table_add(&t, (const char *const[]){"web-frontend", "running", NULL}),
			 0);
	assert_int_equal(ctl_table_add(&t, (const char *const[]){"db", "failed", "exited 3"}), 0);
	/* width counts characters: é is one */
	assert_int_equal(ctl_table_add(&t, (const char *const[]){"caf\xc3\xa9", "x", "y"}), 0);
	char *s = printed(&t);
	assert_string_equal(s, "NAME          STATE    REASON\n"
			       "web-frontend  running  -\n"
			       "db            failed   exited 3\n"
			       "caf\xc3\xa9          x        y\n");
	free(s);
	ctl_table_free(&t);
}

static void test_human(void **state)
{
	static const struct {
		uint64_t ms;
		const char *s;
	} d[] = {{0, "0s"},	     {999, "0s"},	 {45000, "45s"},      {192000, "3m12s"},
		 {3600000, "1h00m"}, {7500000, "2h05m"}, {273600000, "3d04h"}};
	char buf[32];
	for (unsigned i = 0; i < sizeof(d) / sizeof(d[0]); i++) {
		ctl_fmt_duration(d[i].ms, buf, sizeof(buf));
		assert_string_equal(buf, d[i].s);
	}
	static const struct {
		uint64_t b;
		const char *s;
	} b[] = {
	    {0, "0B"},		 {1023, "1023B"},    {1024, "1K"},	   {1536, "1.5K"},
	    {512 << 20, "512M"}, {3ULL << 30, "3G"}, {1610612736, "1.5G"}, {150ULL << 30, "150G"}};
	for (unsigned i = 0; i < sizeof(b) / sizeof(b[0]); i++) {
		ctl_fmt_bytes(b[i].b, buf, sizeof(buf));
		assert_string_equal(buf, b[i].s);
	}
}

static void test_vms_table(void **state)
{
	json_error_t je;
	json_t *vms =
	    json_loads("[{\"name\": \"a\", \"state\": \"running\", \"host\": \"h1\", \"pid\": 4242,"
		       "  \"restarts\": 2, \"uptime_ms\": 65000, \"snapshot\": {\"dir\": \"/s\","
		       "  \"at_ms\": 1000000}, \"reason\": null},"
		       " {\"name\": \"bb\", \"state\": \"failed\", \"host\": \"h1\", \"pid\": null,"
		       "  \"restarts\": 5, \"uptime_ms\": 0, \"snapshot\": null,"
		       "  \"reason\": \"exited with status 3, 5 restarts in 60s\"}]",
		       0, &je);
	assert_non_null(vms);
	struct ctl_table t;
	assert_int_equal(ctl_vms_table(vms, 1030000, &t), 0);
	char *s = printed(&t);
	assert_string_equal(
	    s, "NAME  STATE    HOST  PID   RESTARTS  UPTIME  SNAPSHOT  REASON\n"
	       "a     running  h1    4242  2         1m05s   30s ago   -\n"
	       "bb    failed   h1    -     5         -       -         exited with status 3, 5 "
	       "restarts in 60s\n");
	free(s);
	ctl_table_free(&t);
	json_decref(vms);
}

static void test_event_line(void **state)
{
	json_t *ev = json_pack("{s:i, s:s, s:s, s:s, s:s, s:s}", "seq", 3, "time",
			       "2026-12-02T10:00:00.123Z", "host", "h1", "vm", "web", "kind",
			       "restarted", "detail", "after exit status 1");
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);
	ctl_print_event(ev, f);
	json_object_set_new(ev, "vm", json_null());
	ctl_print_event(ev, f);
	fclose(f);
	assert_string_equal(buf, "2026-12-02T10:00:00.123Z  web           restarted   after exit "
				 "status 1\n"
				 "2026-12-02T10:00:00.123Z  (host)        restarted   after exit "
				 "status 1\n");
	free(buf);
	json_decref(ev);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_commands),   cmocka_unit_test(test_durations_sizes),
	    cmocka_unit_test(test_refusals),   cmocka_unit_test(test_table),
	    cmocka_unit_test(test_human),      cmocka_unit_test(test_vms_table),
	    cmocka_unit_test(test_event_line), cmocka_unit_test(test_move_commands),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
