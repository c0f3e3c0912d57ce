/* The cluster's rules in etcd (rules/<name>, docs/balancing.md): the
 * control API's GET/PUT/DELETE /rules (ctl_rules.c) through the
 * ed_cluster_hooks.rules hook.  A rule is checked (bm_rule_check) before
 * it is written, and written as {"kind", "vms", "hosts"} alone. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ha/emberd/balancer.h"

static json_t *rule_json(const char *name, const char *value)
{
	json_t *j = json_loads(value, 0, NULL);
	if (!json_is_object(j)) {
		json_decref(j);
		j = json_pack("{s:s}", "error", "not a JSON object");
	}
	json_object_set_new(j, "name", json_string(name));
	return j;
}

int cl_rules_hook(void *arg, const char *method, const char *name, const char *body, json_t **out,
		  char *err, size_t errlen)
{
	struct ed_cluster *c = arg;
	char key[160];
	cl_key(key, sizeof(key), "rules", name ? name : "");
	if (!strcmp(method, "GET")) {
		struct ha_etcd_range r;
		int rc = ha_etcd_get(c->lc, key, !name, &r, err, errlen);
		if (rc)
			return rc;
		if (name && !r.n) {
			ha_etcd_range_free(&r);
			snprintf(err, errlen, "no rule %s", name);
			return -ENOENT;
		}
		json_t *a = json_array();
		for (size_t i = 0; a && i < r.n; i++)
			json_array_append_new(
			    a,
			    rule_json(r.kvs[i].key + strlen(CL_PREFIX "rules/"), r.kvs[i].value));
		*out = name ? json_incref(json_array_get(a, 0)) : json_incref(a);
		json_decref(a);
		ha_etcd_range_free(&r);
		return *out ? 0 : -ENOMEM;
	}
	if (!strcmp(method, "DELETE")) {
		int64_t n = 0;
		int rc = ha_etcd_delete(c->lc, key, false, &n, err, errlen);
		if (!rc && !n) {
			snprintf(err, errlen, "no rule %s", name);
			return -ENOENT;
		}
		return rc;
	}
	enum ha_bal_kind k;
	char why[256];
	if (bm_rule_check(body ? body : "", &k, why, sizeof(why))) {
		snprintf(err, errlen, "rule %s: %s", name, why);
		return -EINVAL;
	}
	json_t *in = json_loads(body, 0, NULL);
	json_t *hosts = json_object_get(in, "hosts");
	json_t *v =
	    json_pack("{s:s, s:O, s:o}", "kind", bm_kind_name(k), "vms", json_object_get(in, "vms"),
		      "hosts", hosts ? json_incref(hosts) : json_array());
	char *val = v ? json_dumps(v, JSON_COMPACT) : NULL;
	json_decref(v);
	json_decref(in);
	if (!val)
		return -ENOMEM;
	int rc = ha_etcd_put(c->lc, key, val, 0, NULL, err, errlen);
	free(val);
	return rc;
}
