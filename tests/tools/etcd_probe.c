/* Test-only: drives ha/etcd.h against a real etcd, one call per run, and
 * prints its result as one JSON line (tests/integration/test_etcd_client.py).
 *
 *   etcd_probe ENDPOINTS TIMEOUT_MS grant TTL
 *   etcd_probe ENDPOINTS TIMEOUT_MS keepalive ID | revoke ID
 *   etcd_probe ENDPOINTS TIMEOUT_MS get KEY | prefix KEY
 *   etcd_probe ENDPOINTS TIMEOUT_MS put KEY VALUE [LEASE]
 *   etcd_probe ENDPOINTS TIMEOUT_MS del KEY | delprefix KEY
 *   etcd_probe ENDPOINTS TIMEOUT_MS claim KEY VALUE LEASE
 *       (txn: create_revision(KEY) == 0 -> put; else range KEY)
 *   etcd_probe ENDPOINTS TIMEOUT_MS cas KEY TARGET OP NUM|VALUE NEWVALUE
 *       (txn: TARGET create|mod|version|value, OP = != < >)
 *
 * Exit 0 with {"ok": ...}; 1 with {"errno": "ECONNREFUSED", "error": "..."}. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ha/etcd.h"

static json_t *range_json(const struct ha_etcd_range *r)
{
	json_t *kvs = json_array();
	for (size_t i = 0; i < r->n; i++)
		json_array_append_new(kvs,
				      json_pack("{s:s,s:s,s:I,s:I,s:I,s:I}", "key", r->kvs[i].key,
						"value", r->kvs[i].value, "create_revision",
						(json_int_t)r->kvs[i].create_revision,
						"mod_revision", (json_int_t)r->kvs[i].mod_revision,
						"version", (json_int_t)r->kvs[i].version, "lease",
						(json_int_t)r->kvs[i].lease));
	return json_pack("{s:o,s:I,s:I}", "kvs", kvs, "count", (json_int_t)r->count, "revision",
			 (json_int_t)r->revision);
}

static json_t *txn_json(const struct ha_etcd_txn_result *t)
{
	json_t *rs = json_array();
	for (size_t i = 0; i < t->n; i++)
		json_array_append_new(rs, range_json(&t->ranges[i]));
	return json_pack("{s:b,s:I,s:o}", "succeeded", t->succeeded, "revision",
			 (json_int_t)t->revision, "ranges", rs);
}

static int usage(void)
{
	fprintf(stderr, "usage: etcd_probe ENDPOINTS TIMEOUT_MS CMD ARGS... (see the source)\n");
	return 2;
}

static int run(struct ha_etcd *e, int argc, char **argv, json_t **out, char *err, size_t errlen)
{
	const char *cmd = argv[0];
	int64_t v = 0;
	int r;
	if (!strcmp(cmd, "grant") && argc == 2) {
		r = ha_etcd_lease_grant(e, atoll(argv[1]), &v, err, errlen);
		*out = json_pack("{s:I}", "id", (json_int_t)v);
	} else if (!strcmp(cmd, "keepalive") && argc == 2) {
		r = ha_etcd_lease_keepalive(e, atoll(argv[1]), &v, err, errlen);
		*out = json_pack("{s:I}", "ttl", (json_int_t)v);
	} else if (!strcmp(cmd, "revoke") && argc == 2) {
		r = ha_etcd_lease_revoke(e, atoll(argv[1]), err, errlen);
		*out = json_true();
	} else if ((!strcmp(cmd, "get") || !strcmp(cmd, "prefix")) && argc == 2) {
		struct ha_etcd_range rg;
		r = ha_etcd_get(e, argv[1], !strcmp(cmd, "prefix"), &rg, err, errlen);
		*out = r ? NULL : range_json(&rg);
		if (!r)
			ha_etcd_range_free(&rg);
	} else if (!strcmp(cmd, "put") && (argc == 3 || argc == 4)) {
		r = ha_etcd_put(e, argv[1], argv[2], argc == 4 ? atoll(argv[3]) : 0, &v, err,
				errlen);
		*out = json_pack("{s:I}", "revision", (json_int_t)v);
	} else if ((!strcmp(cmd, "del") || !strcmp(cmd, "delprefix")) && argc == 2) {
		r = ha_etcd_delete(e, argv[1], !strcmp(cmd, "delprefix"), &v, err, errlen);
		*out = json_pack("{s:I}", "deleted", (json_int_t)v);
	} else if ((!strcmp(cmd, "claim") && argc == 4) || (!strcmp(cmd, "cas") && argc == 6)) {
		struct ha_etcd_cmp c = {
		    .key = argv[1], .target = HA_ETCD_CREATE, .result = HA_ETCD_EQ};
		struct ha_etcd_op put = {.kind = HA_ETCD_PUT, .key = argv[1], .value = argv[2]};
		struct ha_etcd_op get = {.kind = HA_ETCD_RANGE, .key = argv[1]};
		if (!strcmp(cmd, "claim")) {
			put.lease = atoll(argv[3]);
		} else {
			static const char *const t[] = {"create", "mod", "version", "value"};
			static const char *const o[] = {"=", "!=", "<", ">"};
			for (unsigned i = 0; i < 4; i++) {
				if (!strcmp(argv[2], t[i]))
					c.target = i;
				if (!strcmp(argv[3], o[i]))
					c.result = i;
			}
			c.num = atoll(argv[4]);
			c.value = argv[4];
			put.value = argv[5];
		}
		struct ha_etcd_txn t = {&c, 1, &put, 1, &get, 1};
		struct ha_etcd_txn_result res;
		r = ha_etcd_txn_run(e, &t, &res, err, errlen);
		*out = r ? NULL : txn_json(&res);
		if (!r)
			ha_etcd_txn_result_free(&res);
	} else {
		return usage();
	}
	return r;
}

int main(int argc, char **argv)
{
	if (argc < 4)
		return usage();
	char err[512] = "";
	struct ha_etcd *e = NULL;
	int r = ha_etcd_new(&e, argv[1], atoi(argv[2]), err, sizeof(err));
	json_t *out = NULL;
	if (!r)
		r = run(e, argc - 3, argv + 3, &out, err, sizeof(err));
	if (r == 2) {
		ha_etcd_free(e);
		return 2;
	}
	json_t *line = r ? json_pack("{s:s,s:s}", "errno", strerrorname_np(-r), "error", err)
			 : json_pack("{s:o}", "ok", out ? out : json_null());
	char *s = json_dumps(line, JSON_COMPACT);
	printf("%s\n", s);
	free(s);
	json_decref(line);
	ha_etcd_free(e);
	return r ? 1 : 0;
}
