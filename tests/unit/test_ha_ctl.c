/* emberd's control API, its pure parts (ha/emberd/ctl_route.c): method +
 * URL -> route, VM name and query; request bodies; the refusals and what
 * they name; console bytes into JSON strings. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "ha/emberd/ctl_priv.h"

static struct ed_ctl_req routed(const char *method, const char *url)
{
	struct ed_ctl_req r;
	char fault[ED_CTL_FAULT_MAX] = "";
	int st = ed_ctl_route(method, url, &r, fault, sizeof(fault));
	if (st)
		fail_msg("%s %s: %d %s", method, url, st, fault);
	return r;
}

static void refused(const char *method, const char *url, int status, const char *why)
{
	struct ed_ctl_req r;
	char fault[ED_CTL_FAULT_MAX] = "";
	int st = ed_ctl_route(method, url, &r, fault, sizeof(fault));
	if (st != status || !strstr(fault, why))
		fail_msg("%s %s: %d \"%s\" (wanted %d \"%s\")", method, url, st, fault, status,
			 why);
}

static void test_routes(void **state)
{
	static const struct {
		const char *method, *url;
		enum ed_route route;
		const char *vm;
	} ok[] = {
	    {"GET", "/vms", ED_R_VMS, ""},
	    {"GET", "/vms/", ED_R_VMS, ""},
	    {"GET", "/vms/web-1", ED_R_VM, "web-1"},
	    {"GET", "/vms/web-1/", ED_R_VM, "web-1"},
	    {"PUT", "/vms/a/start", ED_R_VM_START, "a"},
	    {"PUT", "/vms/a/stop", ED_R_VM_STOP, "a"},
	    {"PUT", "/vms/a/restart", ED_R_VM_RESTART, "a"},
	    {"PUT", "/vms/a/snapshot", ED_R_VM_SNAPSHOT, "a"},
	    {"GET", "/vms/A-9/logs", ED_R_VM_LOGS, "A-9"},
	    {"GET", "/events", ED_R_EVENTS, ""},
	    {"PUT", "/reload", ED_R_RELOAD, ""},
	    {"GET", "/hosts", ED_R_HOSTS, ""},
	    {"GET", "/status", ED_R_STATUS, ""},
	    {"GET", "/status?", ED_R_STATUS, ""},
	};
	for (unsigned i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		struct ed_ctl_req r = routed(ok[i].method, ok[i].url);
		assert_int_equal(r.route, ok[i].route);
		assert_string_equal(r.vm, ok[i].vm);
	}
}

static void test_refusals(void **state)
{
	refused("GET", "/nope", 404, "no such path: /nope");
	refused("GET", "/vms/a/explode", 404, "no such path: /vms/a/explode");
	refused("GET", "/", 404, "no such path");
	refused("GET", "/vms/a/b/start", 404, "no such path");
	refused("POST", "/vms/a/start", 405, "POST /vms/a/start: method not allowed (use PUT)");
	refused("DELETE", "/vms", 405, "use GET");
	refused("GET", "/reload", 405, "use PUT");
	refused("GET", "/vms/a%20b", 400, "VM name \"a%20b\": only letters, digits and '-'");
	refused("GET", "/vms/a_b/logs", 400, "VM name \"a_b\"");
	refused("GET", "/vms//start", 400, "VM name: 1 to 64 characters, not 0");
	char url[200] = "/vms/";
	memset(url + 5, 'x', 65);
	refused("GET", url, 400, "not 65");
	memset(url + 5, 'x', 64);
	url[69] = '\0';
	assert_int_equal(strlen(routed("GET", url).vm), 64);
	char *longurl = malloc(ED_CTL_URL_MAX + 10);
	memset(longurl, 'a', ED_CTL_URL_MAX + 9);
	longurl[0] = '/';
	longurl[ED_CTL_URL_MAX + 9] = '\0';
	refused("GET", longurl, 400, "URL longer than");
	free(longurl);
	/* 405 says what the path takes, for the Allow: header */
	struct ed_ctl_req r;
	char fault[ED_CTL_FAULT_MAX];
	assert_int_equal(ed_ctl_route("GET", "/vms/a/stop", &r, fault, sizeof(fault)), 405);
	assert_string_equal(r.allow, "PUT");
}

static void test_query(void **state)
{
	struct ed_ctl_req r = routed("GET", "/events?since=42&wait_ms=30000");
	assert_int_equal(r.since, 42);
	assert_int_equal(r.wait_ms, 30000);
	r = routed("GET", "/events");
	assert_int_equal(r.since, 0);
	assert_int_equal(r.wait_ms, 0);
	r = routed("GET", "/events?&since=7&");
	assert_int_equal(r.since, 7);
	r = routed("GET", "/vms/a/logs");
	assert_int_equal(r.tail, ED_CTL_LOG_DEFAULT);
	assert_false(r.has_from);
	assert_false(r.json);
	r = routed("GET", "/vms/a/logs?tail=100&format=json");
	assert_int_equal(r.tail, 100);
	assert_true(r.json);
	r = routed("GET", "/vms/a/logs?from=0&format=text");
	assert_true(r.has_from);
	assert_int_equal(r.from, 0);
	assert_false(r.json);

	r = routed("GET", "/vms?after=web-1&limit=64");
	assert_string_equal(r.after, "web-1");
	assert_int_equal(r.limit, 64);
	r = routed("GET", "/hosts?limit=2&after=");
	assert_string_equal(r.after, "");
	assert_int_equal(r.limit, 2);
	refused("GET", "/vms?after=a_b", 400, "after=: give a name");
	refused("GET", "/vms?limit=x", 400, "limit=x: give a non-negative whole number");
	refused("GET", "/events?wait_ms=30001", 400, "wait_ms=30001: at most 30000");
	refused("GET", "/events?since=-1", 400, "since=-1: give a non-negative whole number");
	refused("GET", "/events?since=", 400, "since=: give");
	refused("GET", "/events?since", 400, "since=: give");
	refused("GET", "/events?since=1x", 400, "since=1x");
	refused("GET", "/events?since=99999999999999999999", 400, "since=9999");
	refused("GET", "/events?tail=1", 400,
		"unknown query parameter \"tail\" (/events takes since wait_ms)");
	refused("GET", "/vms?x=1", 400, "unknown query parameter \"x\" (/vms takes after limit)");
	refused("GET", "/status?x=1", 400, "unknown query parameter \"x\" (/status takes none)");
	refused("GET", "/vms/a/logs?since=1", 400, "(this path takes tail from format)");
	refused("GET", "/vms/a/logs?format=xml", 400, "format=xml: give json or text");
	/* the query is checked after the route: a bad path says so first */
	refused("GET", "/nope?x=1", 404, "no such path: /nope");
}

static int body(enum ed_route route, const char *text, enum ed_how *how, uint64_t *grace,
		char *fault)
{
	return ed_ctl_body(route, text, text ? strlen(text) : 0, how, grace, fault,
			   ED_CTL_FAULT_MAX);
}

static void body_refused(enum ed_route route, const char *text, const char *why)
{
	enum ed_how how;
	uint64_t grace;
	char fault[ED_CTL_FAULT_MAX] = "";
	int st = body(route, text, &how, &grace, fault);
	if (st != 400 || !strstr(fault, why))
		fail_msg("%s: %d \"%s\" (wanted 400 \"%s\")", text, st, fault, why);
}

static void test_bodies(void **state)
{
	enum ed_how how;
	uint64_t grace;
	char fault[ED_CTL_FAULT_MAX];
	assert_int_equal(body(ED_R_VM_START, NULL, &how, &grace, fault), 0);
	assert_int_equal(how, ED_HOW_POLICY);
	assert_int_equal(grace, 5000);
	assert_int_equal(body(ED_R_VM_START, " \r\n", &how, &grace, fault), 0);
	assert_int_equal(body(ED_R_VM_START, "{}", &how, &grace, fault), 0);
	assert_int_equal(body(ED_R_VM_START, "{\"how\": \"boot\"}", &how, &grace, fault), 0);
	assert_int_equal(how, ED_HOW_BOOT);
	assert_int_equal(body(ED_R_VM_START, "{\"how\": \"resume\"}", &how, &grace, fault), 0);
	assert_int_equal(how, ED_HOW_RESUME);
	assert_int_equal(body(ED_R_VM_STOP, "{\"grace_ms\": 0}", &how, &grace, fault), 0);
	assert_int_equal(grace, 0);
	assert_int_equal(body(ED_R_VM_RESTART, "{\"grace_ms\": 1500}", &how, &grace, fault), 0);
	assert_int_equal(grace, 1500);

	body_refused(ED_R_VM_START, "{\"how\": \"boot\"", "bad JSON at line 1, column 14");
	body_refused(ED_R_VM_START, "{\n  \"how\": boot}", "bad JSON at line 2, column");
	body_refused(ED_R_VM_START, "[1]", "the body: expected a JSON object, got an array");
	body_refused(ED_R_VM_START, "{\"how\": 1}", "\"how\": expected a string, got an integer");
	body_refused(ED_R_VM_START, "{\"how\": \"fly\"}",
		     "\"how\": \"fly\": give \"policy\", \"boot\" or \"resume\"");
	body_refused(ED_R_VM_START, "{\"grace_ms\": 1}",
		     "unknown field \"grace_ms\" (this request takes \"how\")");
	body_refused(ED_R_VM_STOP, "{\"grace_ms\": \"5s\"}",
		     "\"grace_ms\": expected a non-negative integer, got a string");
	body_refused(ED_R_VM_STOP, "{\"grace_ms\": -1}", "got a negative one");
	body_refused(ED_R_VM_STOP, "{\"grace_ms\": 1.5}", "got a number");
	body_refused(ED_R_VM_SNAPSHOT, "{\"x\": 1}", "(this request takes no fields)");
}

static void text(const char *in, size_t n, bool more, const char *want, size_t want_used)
{
	size_t used = 99;
	json_t *s = ed_ctl_text_json(in, n, more, &used);
	assert_non_null(s);
	assert_int_equal(json_string_length(s), strlen(want));
	assert_memory_equal(json_string_value(s), want, strlen(want));
	assert_int_equal(used, want_used);
	json_decref(s);
}

static void test_text(void **state)
{
	text("hello\r\n", 7, false, "hello\r\n", 7);
	text("caf\xc3\xa9", 5, false, "caf\xc3\xa9", 5);
	/* a character cut by the read: kept for the next page, or '?' at the end */
	text("caf\xc3", 4, true, "caf", 3);
	text("caf\xc3", 4, false, "caf?", 4);
	text("\xe2\x82", 2, true, "", 0);
	/* invalid bytes, overlong forms, surrogates: '?' each */
	text("a\xff"
	     "b",
	     3, false, "a?b", 3);
	text("\xc0\xaf", 2, false, "??", 2);
	text("\xed\xa0\x80", 3, true, "???", 3);
	text("\xf4\x90\x80\x80", 4, false, "????", 4);
	text("\xf0\x9f\x98\x80", 4, false, "\xf0\x9f\x98\x80", 4);
	text("", 0, false, "", 0);
}

static void test_reply_json(void **state)
{
	struct ed_ctl_reply rp = {0};
	ed_ctl_fault(&rp, 404, "VM \"%s\": no such VM", "nope");
	assert_int_equal(rp.status, 404);
	assert_string_equal(rp.type, "application/json");
	assert_string_equal(rp.body, "{\"fault_message\":\"VM \\\"nope\\\": no such VM\"}");
	assert_int_equal(rp.len, strlen(rp.body));
	ed_ctl_reply_json(&rp, 204, NULL);
	assert_null(rp.body);
	assert_int_equal(rp.len, 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_routes), cmocka_unit_test(test_refusals),
	    cmocka_unit_test(test_query),  cmocka_unit_test(test_bodies),
	    cmocka_unit_test(test_text),   cmocka_unit_test(test_reply_json),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
