/* etcd's JSON gateway without etcd (ha/etcd.h, the pure part): base64
 * both ways, prefix range ends, request bodies as the gateway reads them,
 * and replies as it writes them — int64 as strings, fields proto3 left
 * out, a keepalive without a TTL, error bodies. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "ha/etcd.h"

static json_t *parse(const char *s)
{
	json_error_t e;
	json_t *j = json_loads(s, 0, &e);
	if (!j)
		fail_msg("bad test JSON: %s: %s", s, e.text);
	return j;
}

static void test_b64(void **state)
{
	const char *cases[][2] = {{"", ""},
				  {"f", "Zg=="},
				  {"fo", "Zm8="},
				  {"foo", "Zm9v"},
				  {"ember/owner/vm-1", "ZW1iZXIvb3duZXIvdm0tMQ=="}};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char *b = ha_etcd_b64(cases[i][0], strlen(cases[i][0]));
		assert_string_equal(b, cases[i][1]);
		free(b);
		char *d;
		size_t n;
		assert_int_equal(ha_etcd_unb64(cases[i][1], &d, &n), 0);
		assert_int_equal(n, strlen(cases[i][0]));
		assert_string_equal(d, cases[i][0]);
		free(d);
	}
	char *d;
	size_t n;
	assert_int_equal(ha_etcd_unb64("Zm9", &d, &n), -EINVAL);  /* not a multiple of 4 */
	assert_int_equal(ha_etcd_unb64("Zm9!", &d, &n), -EINVAL); /* not the alphabet */
}

static void test_prefix_end(void **state)
{
	char *e = ha_etcd_prefix_end("ember/");
	assert_string_equal(e, "ember0");
	free(e);
	e = ha_etcd_prefix_end("a\xff");
	assert_string_equal(e, "b");
	free(e);
	e = ha_etcd_prefix_end("");
	assert_string_equal(e, "");
	free(e);
}

static void test_int64(void **state)
{
	json_t *o = parse("{\"s\": \"9223372036854775807\", \"n\": 5, \"neg\": \"-3\", "
			  "\"bad\": \"12x\", \"obj\": {}}");
	int64_t v = 1;
	assert_int_equal(ha_etcd_int64(o, "s", &v), 0);
	assert_true(v == INT64_MAX);
	assert_int_equal(ha_etcd_int64(o, "n", &v), 0);
	assert_int_equal(v, 5);
	assert_int_equal(ha_etcd_int64(o, "neg", &v), 0);
	assert_int_equal(v, -3);
	assert_int_equal(ha_etcd_int64(o, "missing", &v), 0);
	assert_int_equal(v, 0);
	assert_int_equal(ha_etcd_int64(o, "bad", &v), -EPROTO);
	assert_int_equal(ha_etcd_int64(o, "obj", &v), -EPROTO);
	json_decref(o);
}

static void expect_json(json_t *got, const char *want)
{
	json_t *w = parse(want);
	if (!json_equal(got, w)) {
		char *s = json_dumps(got, JSON_SORT_KEYS);
		fail_msg("got %s, want %s", s, want);
	}
	json_decref(w);
	json_decref(got);
}

static void test_requests(void **state)
{
	/* "ember/" = ZW1iZXIv, its end "ember0" = ZW1iZXIw */
	expect_json(ha_etcd_range_req("ember/", true),
		    "{\"key\":\"ZW1iZXIv\",\"range_end\":\"ZW1iZXIw\"}");
	expect_json(ha_etcd_range_req("", true), "{\"key\":\"\",\"range_end\":\"AA==\"}");
	expect_json(ha_etcd_put_req("k", "v", 0), "{\"key\":\"aw==\",\"value\":\"dg==\"}");
	expect_json(ha_etcd_put_req("k", "v", 7587899301065180423),
		    "{\"key\":\"aw==\",\"value\":\"dg==\",\"lease\":\"7587899301065180423\"}");
	struct ha_etcd_cmp c[] = {{"k", HA_ETCD_CREATE, HA_ETCD_EQ, 0, NULL},
				  {"k", HA_ETCD_VALUE, HA_ETCD_NE, 0, "v"},
				  {"k", HA_ETCD_MOD, HA_ETCD_GT, 12, NULL}};
	struct ha_etcd_op ok[] = {{HA_ETCD_PUT, "k", "v", 5, false},
				  {HA_ETCD_DELETE, "k", NULL, 0, true}};
	struct ha_etcd_op no[] = {{HA_ETCD_RANGE, "k", NULL, 0, false}};
	struct ha_etcd_txn t = {c, 3, ok, 2, no, 1};
	expect_json(
	    ha_etcd_txn_req(&t),
	    "{\"compare\":["
	    "{\"key\":\"aw==\",\"target\":\"CREATE\",\"result\":\"EQUAL\",\"create_revision\":"
	    "\"0\"},"
	    "{\"key\":\"aw==\",\"target\":\"VALUE\",\"result\":\"NOT_EQUAL\",\"value\":\"dg==\"},"
	    "{\"key\":\"aw==\",\"target\":\"MOD\",\"result\":\"GREATER\",\"mod_revision\":\"12\"}],"
	    "\"success\":[{\"request_put\":{\"key\":\"aw==\",\"value\":\"dg==\",\"lease\":\"5\"}},"
	    "{\"request_delete_range\":{\"key\":\"aw==\",\"range_end\":\"bA==\"}}],"
	    "\"failure\":[{\"request_range\":{\"key\":\"aw==\"}}]}");
}

static void test_range_reply(void **state)
{
	char err[256] = "";
	struct ha_etcd_range r;
	/* an empty range: no kvs, no count (proto3 left them out) */
	json_t *j =
	    parse("{\"header\":{\"cluster_id\":\"1\",\"revision\":\"6\",\"raft_term\":\"2\"}}");
	assert_int_equal(ha_etcd_range_parse(j, &r, err, sizeof(err)), 0);
	assert_int_equal(r.n, 0);
	assert_int_equal(r.count, 0);
	assert_int_equal(r.revision, 6);
	ha_etcd_range_free(&r);
	json_decref(j);
	/* a value "" and a version left out */
	j = parse(
	    "{\"header\":{\"revision\":\"9\"},\"count\":\"2\",\"kvs\":["
	    "{\"key\":\"aw==\",\"create_revision\":\"3\",\"mod_revision\":\"4\","
	    "\"lease\":\"7587899301065180423\"},"
	    "{\"key\":\"bA==\",\"value\":\"aDE=\",\"create_revision\":\"5\",\"mod_revision\":\"5\","
	    "\"version\":\"1\"}]}");
	assert_int_equal(ha_etcd_range_parse(j, &r, err, sizeof(err)), 0);
	assert_int_equal(r.n, 2);
	assert_int_equal(r.count, 2);
	assert_string_equal(r.kvs[0].key, "k");
	assert_string_equal(r.kvs[0].value, "");
	assert_int_equal(r.kvs[0].version, 0);
	assert_true(r.kvs[0].lease == 7587899301065180423);
	assert_string_equal(ha_etcd_range_find(&r, "l")->value, "h1");
	assert_int_equal(ha_etcd_range_find(&r, "l")->create_revision, 5);
	assert_null(ha_etcd_range_find(&r, "m"));
	ha_etcd_range_free(&r);
	json_decref(j);
	const char *bad[] = {"[]",
			     "{\"header\":{\"revision\":true}}",
			     "{\"kvs\":{}}",
			     "{\"kvs\":[{\"key\":\"!!!!\"}]}",
			     "{\"kvs\":[{\"value\":\"aw==\"}]}",
			     "{\"kvs\":[{\"key\":\"aw==\",\"create_revision\":\"x\"}]}"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		j = parse(bad[i]);
		assert_int_equal(ha_etcd_range_parse(j, &r, err, sizeof(err)), -EPROTO);
		assert_true(strlen(err) > 0);
		json_decref(j);
	}
}

static void test_txn_reply(void **state)
{
	char err[256] = "";
	struct ha_etcd_txn_result t;
	/* failed: "succeeded" left out; a put's response, then a range's */
	json_t *j =
	    parse("{\"header\":{\"revision\":\"3\"},\"responses\":["
		  "{\"response_put\":{\"header\":{\"revision\":\"3\"}}},"
		  "{\"response_range\":{\"header\":{\"revision\":\"3\"},\"count\":\"1\","
		  "\"kvs\":[{\"key\":\"aw==\",\"value\":\"aDE=\",\"create_revision\":\"3\"}]}}]}");
	assert_int_equal(ha_etcd_txn_parse(j, &t, err, sizeof(err)), 0);
	assert_false(t.succeeded);
	assert_int_equal(t.revision, 3);
	assert_int_equal(t.n, 2);
	assert_int_equal(t.ranges[0].n, 0);
	assert_string_equal(t.ranges[1].kvs[0].value, "h1");
	ha_etcd_txn_result_free(&t);
	json_decref(j);
	j = parse("{\"header\":{\"revision\":\"4\"},\"succeeded\":true}");
	assert_int_equal(ha_etcd_txn_parse(j, &t, err, sizeof(err)), 0);
	assert_true(t.succeeded);
	assert_int_equal(t.n, 0);
	ha_etcd_txn_result_free(&t);
	json_decref(j);
	j = parse("{\"succeeded\":\"yes\"}");
	assert_int_equal(ha_etcd_txn_parse(j, &t, err, sizeof(err)), -EPROTO);
	json_decref(j);
}

static void test_keepalive_reply(void **state)
{
	char err[256] = "";
	int64_t ttl = 0;
	json_t *j =
	    parse("{\"result\":{\"header\":{\"revision\":\"6\"},\"ID\":\"5\",\"TTL\":\"2\"}}");
	assert_int_equal(ha_etcd_keepalive_parse(j, &ttl, err, sizeof(err)), 0);
	assert_int_equal(ttl, 2);
	json_decref(j);
	/* the lease is gone: the reply has no TTL */
	j = parse("{\"result\":{\"header\":{\"revision\":\"6\"},\"ID\":\"5\"}}");
	assert_int_equal(ha_etcd_keepalive_parse(j, &ttl, err, sizeof(err)), -ENOENT);
	json_decref(j);
	j = parse("{\"result\":{\"ID\":\"5\",\"TTL\":\"0\"}}");
	assert_int_equal(ha_etcd_keepalive_parse(j, &ttl, err, sizeof(err)), -ENOENT);
	json_decref(j);
}

static void test_errors(void **state)
{
	char err[256] = "";
	json_t *j = parse("{\"error\":\"etcdserver: requested lease not found\",\"code\":5,"
			  "\"message\":\"etcdserver: requested lease not found\"}");
	assert_int_equal(ha_etcd_error(404, j, err, sizeof(err)), -ENOENT);
	assert_non_null(strstr(err, "lease not found"));
	json_decref(j);
	j = parse("{\"error\":{\"grpc_code\":14,\"http_code\":503,\"message\":\"etcdserver: no "
		  "leader\"}}");
	assert_int_equal(ha_etcd_error(200, j, err, sizeof(err)), -ETIMEDOUT);
	json_decref(j);
	j = parse("{\"code\":3,\"message\":\"bad\"}");
	assert_int_equal(ha_etcd_error(400, j, err, sizeof(err)), -EINVAL);
	json_decref(j);
	assert_int_equal(ha_etcd_error(500, NULL, err, sizeof(err)), -EIO);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_b64),
	    cmocka_unit_test(test_prefix_end),
	    cmocka_unit_test(test_int64),
	    cmocka_unit_test(test_requests),
	    cmocka_unit_test(test_range_reply),
	    cmocka_unit_test(test_txn_reply),
	    cmocka_unit_test(test_keepalive_reply),
	    cmocka_unit_test(test_errors),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
