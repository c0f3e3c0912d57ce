/* Move requests from the control API (PUT /vms/NAME/migrate, PUT
 * /hosts/H/maintenance; docs/ha.md).  The requests run on the loop with the loop's etcd
 * client, as the cluster hooks do. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ha/emberd/balancer.h"
#include "ha/emberd/move.h"

static bool name_ok(const char *s, size_t n)
{
	if (!n || n > ED_NAME_MAX - 1)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') ||
		      (s[i] >= '0' && s[i] <= '9') || s[i] == '-'))
			return false;
	return true;
}

/* Must rules vm breaks where it stands in m: VM-host and VM-VM rules
 * naming it, and memory overcommitted on its host; the first one's name
 * into why. */
static uint32_t must_broken(const struct bm_model *m, uint32_t vm, char *why, size_t len)
{
	struct ha_bal_violation v[64];
	uint32_t nm = 0, ns = 0, mine = 0;
	ha_bal_check(&m->c, v, 64, &nm, &ns);
	for (uint32_t i = 0; i < nm && i < 64; i++) {
		if (!v[i].must || (v[i].vm != vm && v[i].host != m->c.vms[vm].host))
			continue;
		if (!mine++)
			snprintf(why, len, "%s",
				 v[i].rule == HA_BAL_NONE ? "the host's memory would be overcommitted"
							  : m->c.rules[v[i].rule].name);
	}
	return mine;
}

/* Would moving vm to host `to` break a must or VM-VM rule that holds now:
 * the cluster's rules/ keys and the VM files' affinity, anti_affinity,
 * hosts, avoid_hosts (the same model as placement, maintenance and the
 * balancer: balancer.h)?  The reason into why, or NULL.  On the loop. */
static const char *breaks_rule(struct ed_cluster *c, const char *vm, const char *to, char *why,
			       size_t len)
{
	char keys[BM_NR][64], err[ED_ERR_MAX], rule[ED_ERR_MAX] = "";
	struct ha_etcd_op reads[BM_NR];
	bm_reads(keys, reads);
	const struct ha_etcd_txn t = {NULL, 0, reads, BM_NR, NULL, 0};
	struct ha_etcd_txn_result res;
	if (ha_etcd_txn_run(c->lc, &t, &res, err, sizeof(err)))
		return snprintf(why, len, "etcd: %.400s", err), why;
	size_t n = 0;
	struct cl_spec *specs = cl_specs_copy(c->h, &n);
	struct bm_model m;
	const char *no = NULL;
	if (res.n != BM_NR || !specs || bm_build(&m, res.ranges, specs, n, NULL, 0)) {
		no = "out of memory";
		snprintf(why, len, "%s", no);
	} else {
		uint32_t h = bm_host(&m, to), i;
		for (i = 0; i < m.c.nr_vms && strcmp(m.c.vms[i].name, vm); i++)
			;
		if (h != HA_BAL_NONE && i < m.c.nr_vms) {
			uint32_t before = must_broken(&m, i, rule, sizeof(rule));
			m.c.vms[i].host = h;
			if (must_broken(&m, i, rule, sizeof(rule)) > before)
				no = why, snprintf(why, len, "must rule: %.400s", rule);
		}
		bm_free(&m);
	}
	cl_specs_free(specs, n);
	ha_etcd_txn_result_free(&res);
	return no;
}

#define FAULT(st, ...) (snprintf(fault, faultlen, __VA_ARGS__), *status = (st), true)

static bool migrate(struct ed_cluster *c, const char *vm, json_t *body, int *status,
		    json_t **reply, char *fault, size_t faultlen)
{
	const char *to = json_string_value(json_object_get(body, "to"));
	if (!to || json_object_size(body) != 1)
		return FAULT(400, "PUT /vms/%s/migrate: give {\"to\": \"HOST\"} and nothing else",
			     vm);
	struct ed_vm *v = ed_host_find(c->h, vm);
	if (!v)
		return FAULT(404, "no VM \"%s\"", vm);
	struct mv_view view;
	char err[ED_ERR_MAX], why[ED_ERR_MAX], addr[128];
	if (mv_read_view(c->lc, &view, err, sizeof(err)))
		return FAULT(503, "etcd: %s", err);
	char okey[128];
	cl_key(okey, sizeof(okey), "owner", vm);
	const struct ha_etcd_kv *o = ha_etcd_range_find(&view.res.ranges[1], okey);
	struct cl_spec s = {.mem = 0};
	snprintf(s.name, sizeof(s.name), "%s", vm);
	s.must = (char **)ed_vm_hosts_must(v);
	s.avoid = (char **)ed_vm_hosts_avoid(v);
	const char *no = NULL;
	if (!o)
		no = "it has no owner now (not placed, or a failover is due)";
	else if (!strcmp(o->value, to))
		no = "it already runs there";
	if (!no)
		no = mv_target_refuses(&view.res.ranges[0], &view.res.ranges[3], to, addr,
				       sizeof(addr), why, sizeof(why));
	if (!no)
		no = mv_rule_refuses(&s, to, why, sizeof(why));
	if (!no)
		no = breaks_rule(c, vm, to, why, sizeof(why));
	int r = 0;
	if (!no) {
		r = mv_put_request(c->lc, c->name, vm, to, "user", o->mod_revision, err,
				   sizeof(err));
		if (r)
			no = err;
	}
	if (no)
		(void)FAULT(r && r != -EEXIST ? 503 : 409, "VM \"%s\": move to %s refused: %s", vm, to,
		      no);
	else {
		*status = 202;
		*reply = json_pack("{s:s, s:s, s:s}", "vm", vm, "to", to, "from", o->value);
	}
	ha_etcd_txn_result_free(&view.res);
	return true;
}

static bool maintenance(struct ed_cluster *c, const char *host, json_t *body, int *status,
			json_t **reply, char *fault, size_t faultlen)
{
	json_t *en = json_object_get(body, "enter");
	if (!json_is_boolean(en) || json_object_size(body) != 1)
		return FAULT(400,
			     "PUT /hosts/%s/maintenance: give {\"enter\": true} or {\"enter\": "
			     "false} and nothing else",
			     host);
	char key[128], hkey[128], err[ED_ERR_MAX], val[256];
	cl_key(key, sizeof(key), "maint", host);
	cl_key(hkey, sizeof(hkey), "hosts", host);
	struct ha_etcd_range rh = {0}, rm = {0};
	if (ha_etcd_get(c->lc, hkey, false, &rh, err, sizeof(err)) ||
	    ha_etcd_get(c->lc, key, false, &rm, err, sizeof(err))) {
		ha_etcd_range_free(&rh);
		return FAULT(503, "etcd: %s", err);
	}
	bool known = rh.n || rm.n;
	ha_etcd_range_free(&rh);
	ha_etcd_range_free(&rm);
	if (!known)
		return FAULT(404, "no host \"%s\" (not alive, not in maintenance)", host);
	int r;
	if (json_is_true(en)) {
		snprintf(val, sizeof(val), "{\"since\": %lld, \"by\": \"%s\"}",
			 (long long)time(NULL), c->name);
		r = ha_etcd_put(c->lc, key, val, 0, NULL, err, sizeof(err));
	} else {
		r = ha_etcd_delete(c->lc, key, false, NULL, err, sizeof(err));
	}
	if (r)
		return FAULT(503, "etcd: %s", err);
	ed_event(c->h, NULL, "maintenance", "host %s %s maintenance (asked here)", host,
		 json_is_true(en) ? "enters" : "leaves");
	*status = 204;
	*reply = NULL;
	return true;
}

bool ed_move_ctl(struct ed_cluster *c, const char *method, const char *url, const char *body,
		 size_t len, int *status, json_t **reply, char *fault, size_t faultlen)
{
	const char *kind = !strncmp(url, "/vms/", 5) ? "/migrate" : "/maintenance";
	const char *name = url + (!strncmp(url, "/vms/", 5)    ? 5
				  : !strncmp(url, "/hosts/", 7) ? 7
								: strlen(url));
	size_t n = strcspn(name, "/?");
	if (!*name || strcmp(name + n, kind))
		return false;
	if (strcmp(method, "PUT"))
		return FAULT(405, "%s %s: method not allowed (use PUT)", method, url);
	if (!name_ok(name, n))
		return FAULT(400, "name \"%.*s\": 1 to %d of letters, digits and '-'",
			     (int)(n > 80 ? 80 : n), name, ED_NAME_MAX - 1);
	char nm[ED_NAME_MAX];
	snprintf(nm, sizeof(nm), "%.*s", (int)n, name);
	json_error_t je;
	json_t *j = body && len ? json_loadb(body, len, 0, &je) : NULL;
	if (!json_is_object(j)) {
		json_decref(j);
		return FAULT(400, "%s: the body must be a JSON object", url);
	}
	bool r = kind[1] == 'm' && kind[2] == 'i'
		     ? migrate(c, nm, j, status, reply, fault, faultlen)
		     : maintenance(c, nm, j, status, reply, fault, faultlen);
	json_decref(j);
	return r;
}
