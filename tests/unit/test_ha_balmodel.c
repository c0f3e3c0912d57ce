/* The balancer's model (ha/emberd/balancer_model.c): the cluster that
 * ha/balance/ sees, built from etcd ranges written here by hand (the
 * JSON the hosts, the load reporter and emberctl put) and the VM files'
 * rules; and the rules/ keys' checks. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "ha/ctl/ctl.h"
#include "ha/emberd/balancer.h"

#define KV(k, v, rev)                                                                              \
	{                                                                                          \
		(char *)(k), (char *)(v), sizeof(v) - 1, rev, rev, 1, 0                            \
	}

static struct ha_etcd_kv hosts[] = {
    KV("ember/hosts/h0", "{\"mem_capacity\": 1073741824, \"vcpus_capacity\": 4}", 2),
    KV("ember/hosts/h1", "{\"mem_capacity\": 1073741824, \"vcpus_capacity\": 4}", 3),
};
static struct ha_etcd_kv load[] = {
    KV("ember/load/h0",
       "{\"cpu_capacity_m\": 2000, \"vms\": {\"a\": {\"cpu_m\": 700, "
       "\"dirty_bps\": 4096}}}",
       9),
};
static struct ha_etcd_kv owner[] = {
    KV("ember/owner/a", "h0", 5), KV("ember/owner/b", "h1", 6),
    KV("ember/owner/c", "h7", 7), /* a host no longer alive */
};
static struct ha_etcd_kv maint[] = {KV("ember/maint/h1", "{\"since\": 1, \"by\": \"h0\"}", 10)};
static struct ha_etcd_kv rules[] = {
    KV("ember/rules/apart", "{\"kind\": \"anti-affinity\", \"vms\": [\"a\", \"b\", \"zz\"]}", 11),
    KV("ember/rules/bad", "{\"kind\": \"sideways\", \"vms\": [\"a\"]}", 12),
    KV("ember/rules/on",
       "{\"kind\": \"should-run-on\", \"vms\": [\"c\"], \"hosts\": "
       "[\"h1\", \"h5\"]}",
       13),
};
static struct ha_etcd_kv moves[] = {KV("ember/moves/b", "{\"to\": \"h0\"}", 14)};
static struct ha_etcd_kv state[] = {KV("ember/state/d", "stopped", 15)};

static char *must_a[] = {"h0", "h9", NULL}, *none[] = {NULL};

static void test_build(void **st)
{
	(void)st;
	struct ha_etcd_range r[BM_NR] = {
	    [BM_HOSTS] = {hosts, 2, 2, 20}, [BM_LOAD] = {load, 1, 1, 20},
	    [BM_OWNER] = {owner, 3, 3, 20}, [BM_MAINT] = {maint, 1, 1, 20},
	    [BM_RULES] = {rules, 3, 3, 20}, [BM_MOVES] = {moves, 1, 1, 20},
	    [BM_STATE] = {state, 1, 1, 20},
	};
	struct cl_spec specs[4] = {
	    {"a", 64 << 20, 1, must_a, none, none, none, "g", ""},
	    {"b", 32 << 20, 1, none, none, none, none, "g", ""},
	    {"c", 16 << 20, 1, none, none, none, none, "", ""},
	    {"d", 16 << 20, 1, none, none, none, none, "", ""},
	};
	struct bm_recent rec[] = {{"a", "h1"}, {"nope", "h0"}};
	struct bm_model m;
	assert_int_equal(bm_build(&m, r, specs, 4, rec, 2), 0);
	char err[256];
	assert_int_equal(ha_bal_validate(&m.c, err, sizeof(err)), 0);
	/* hosts: h0, h1 alive (h1 in maintenance), then h9 and h5 dead */
	assert_int_equal(m.c.nr_hosts, 4);
	assert_string_equal(m.c.hosts[0].name, "h0");
	assert_int_equal(m.c.hosts[0].cpu_cap, 2000); /* from load/ */
	assert_int_equal(m.c.hosts[1].cpu_cap, 4000); /* 1000 per vCPU */
	assert_false(m.c.hosts[0].maintenance);
	assert_true(m.c.hosts[1].maintenance);
	assert_string_equal(m.c.hosts[2].name, "h9");
	assert_false(m.c.hosts[2].alive);
	assert_string_equal(m.c.hosts[3].name, "h5");
	/* VMs: a on h0 with its load, b on h1 moving to h0, c's owner dead,
	 * d stopped */
	assert_int_equal(m.c.nr_vms, 4);
	assert_int_equal(m.c.vms[0].host, 0);
	assert_int_equal(m.c.vms[0].cpu, 700);
	assert_int_equal(m.c.vms[0].dirty_rate, 4096);
	assert_int_equal(m.token[0], 5);
	assert_int_equal(m.c.vms[1].host, 1);
	assert_int_equal(m.c.vms[1].migrating_to, 0);
	assert_true(m.in_flight[1]);
	assert_int_equal(m.c.vms[1].cpu, 0); /* h1 reports no load */
	assert_int_equal(m.c.vms[2].host, HA_BAL_NONE);
	assert_int_equal(m.token[2], 0);
	assert_int_equal(m.c.vms[3].host, HA_BAL_NONE);
	assert_int_equal(m.c.vms[3].mem, 0);
	/* rules: a's hosts, the affinity group g, rules/apart (zz left out),
	 * rules/on; rules/bad skipped and named */
	assert_int_equal(m.c.nr_rules, 4);
	assert_string_equal(m.c.rules[0].name, "a hosts");
	assert_int_equal(m.c.rules[0].kind, HA_BAL_MUST_RUN_ON);
	assert_int_equal(m.c.rules[0].nr_hosts, 2);
	assert_int_equal(m.c.rules[0].hosts[1], 2);
	assert_string_equal(m.c.rules[1].name, "affinity g");
	assert_int_equal(m.c.rules[1].nr_vms, 2);
	assert_string_equal(m.c.rules[2].name, "rule apart");
	assert_int_equal(m.c.rules[2].kind, HA_BAL_ANTI_AFFINITY);
	assert_int_equal(m.c.rules[2].nr_vms, 2);
	assert_string_equal(m.c.rules[3].name, "rule on");
	assert_int_equal(m.c.rules[3].nr_hosts, 2);
	assert_non_null(strstr(m.warn, "rules/bad: \"kind\""));
	/* the recent move whose VM is unknown is left out */
	assert_int_equal(m.c.nr_recent, 1);
	assert_int_equal(m.c.recent[0].host, 1);
	bm_free(&m);
}

static void test_place_and_check(void **st)
{
	(void)st;
	/* two live hosts, anti-affinity a/b through rules/: b, unplaced,
	 * must go where a is not; with a must rule to a dead host, nowhere */
	static struct ha_etcd_kv own[] = {KV("ember/owner/a", "h0", 5)};
	static struct ha_etcd_kv rl[] = {
	    KV("ember/rules/apart", "{\"kind\": \"anti-affinity\", \"vms\": [\"a\", \"b\"]}", 11),
	};
	struct ha_etcd_range r[BM_NR] = {[BM_HOSTS] = {hosts, 2, 2, 20},
					 [BM_OWNER] = {own, 1, 1, 20},
					 [BM_RULES] = {rl, 1, 1, 20}};
	static char *dead[] = {"h9", NULL};
	struct cl_spec specs[2] = {{"a", 64 << 20, 1, none, none, none, none, "", ""},
				   {"b", 64 << 20, 1, none, none, none, none, "", ""}};
	struct bm_model m;
	struct ha_bal_opts o;
	assert_int_equal(ha_bal_opts_init(&o, 3), 0);
	assert_int_equal(bm_build(&m, r, specs, 2, NULL, 0), 0);
	uint32_t h;
	char why[256];
	assert_int_equal(ha_bal_place(&m.c, &o, 1, &h, why, sizeof(why)), 0);
	assert_int_equal(h, 1);
	bm_free(&m);
	/* a move of b to h1 failed lately: h1 is avoided, and a is on h0 */
	assert_int_equal(bm_build(&m, r, specs, 2, NULL, 0), 0);
	assert_int_equal(bm_avoid(&m, "b", "h1"), 0);
	assert_int_equal(bm_avoid(&m, "nope", "h1"), 0); /* ignored */
	assert_int_equal(m.c.nr_rules, 2);
	assert_string_equal(m.c.rules[1].name, "b: a move to h1 failed");
	assert_int_equal(ha_bal_place(&m.c, &o, 1, &h, why, sizeof(why)), -ENOSPC);
	bm_free(&m);
	specs[1].must = dead;
	assert_int_equal(bm_build(&m, r, specs, 2, NULL, 0), 0);
	assert_int_equal(ha_bal_place(&m.c, &o, 1, &h, why, sizeof(why)), -ENOSPC);
	bm_free(&m);
}

static void test_rule_check(void **st)
{
	(void)st;
	enum ha_bal_kind k;
	char err[256];
	assert_int_equal(bm_rule_check("{\"kind\": \"must-not-run-on\", \"vms\": [\"a\"], "
				       "\"hosts\": [\"h1\"]}",
				       &k, err, sizeof(err)),
			 0);
	assert_int_equal(k, HA_BAL_MUST_NOT_RUN_ON);
	static const struct {
		const char *json, *msg;
	} bad[] = {
	    {"[1]", "not a JSON object"},
	    {"{", "not a JSON object"},
	    {"{\"kind\": \"near\", \"vms\": [\"a\"]}", "\"kind\": expected affinity"},
	    {"{\"kind\": \"affinity\"}", "\"vms\": expected a non-empty list"},
	    {"{\"kind\": \"affinity\", \"vms\": [\"a_b\"]}", "\"vms\"[0]: not a name"},
	    {"{\"kind\": \"must-run-on\", \"vms\": [\"a\"]}", "\"hosts\": expected a non-empty"},
	    {"{\"kind\": \"affinity\", \"vms\": [\"a\"], \"hosts\": [\"h\"]}",
	     "affinity rules name VMs only"},
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		err[0] = 0;
		assert_int_equal(bm_rule_check(bad[i].json, &k, err, sizeof(err)), -EINVAL);
		if (!strstr(err, bad[i].msg))
			fail_msg("%s: \"%s\" lacks \"%s\"", bad[i].json, err, bad[i].msg);
	}
	assert_string_equal(bm_kind_name(HA_BAL_SHOULD_NOT_RUN_ON), "should-not-run-on");
	assert_null(bm_kind_name((enum ha_bal_kind)9));
}

static void test_rule_cli(void **st)
{
	(void)st;
	struct ctl_rule_args a;
	char err[256];
	char *add[] = {"--sock", "/s", "rule", "add", "web", "anti-affinity", "--vms", "a,b"};
	assert_true(ctl_is_rule(8, add));
	assert_int_equal(ctl_rule_parse(8, add, NULL, &a, err, sizeof(err)), 0);
	assert_int_equal(a.op, CTL_RULE_ADD);
	assert_string_equal(a.sock, "/s");
	assert_string_equal(a.name, "web");
	assert_string_equal(a.kind, "anti-affinity");
	assert_string_equal(a.vms, "a,b");
	assert_null(a.hosts);
	json_t *l = ctl_name_list("a, b,c");
	assert_int_equal(json_array_size(l), 3);
	assert_string_equal(json_string_value(json_array_get(l, 2)), "c");
	json_decref(l);
	char *rm[] = {"rule", "rm", "web"};
	assert_int_equal(ctl_rule_parse(3, rm, "/env", &a, err, sizeof(err)), 0);
	assert_int_equal(a.op, CTL_RULE_RM);
	assert_string_equal(a.sock, "/env");
	char *list[] = {"--json", "rule", "list"};
	assert_int_equal(ctl_rule_parse(3, list, NULL, &a, err, sizeof(err)), 0);
	assert_true(a.json);
	char *other[] = {"hosts"};
	assert_false(ctl_is_rule(1, other));
	static const struct {
		int argc;
		char *argv[6];
		const char *msg;
	} bad[] = {
	    {2, {"rule", "add"}, "rule add: give NAME KIND"},
	    {4, {"rule", "add", "x", "affinity"}, "give --vms"},
	    {4, {"rule", "rm", "--vms", "a"}, "--vms and --hosts are add's"},
	    {2, {"rule", "rm"}, "give the rule's NAME"},
	    {3, {"rule", "list", "x"}, "takes no argument"},
	    {2, {"rule", "move"}, "give add, rm or list"},
	    {3, {"rule", "list", "--colour"}, "unknown option --colour"},
	    {3, {"rule", "add", "--vms"}, "--vms: give a value"},
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		err[0] = 0;
		assert_int_equal(
		    ctl_rule_parse(bad[i].argc, bad[i].argv, NULL, &a, err, sizeof(err)), -EINVAL);
		if (!strstr(err, bad[i].msg))
			fail_msg("case %zu: \"%s\" lacks \"%s\"", i, err, bad[i].msg);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_build),
	    cmocka_unit_test(test_place_and_check),
	    cmocka_unit_test(test_rule_check),
	    cmocka_unit_test(test_rule_cli),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
