/* Move requests from the control API (PUT /vms/NAME/migrate, PUT
 * /hosts/H/maintenance; docs/ha.md) and maintenance mode's evacuation
 * round (move.h).  The requests run on the loop with the loop's etcd
 * client, as the cluster hooks do. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ha/emberd/cluster_place.h"
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

/* ---- maintenance: this host's evacuation ---- */

struct all_specs {
	struct ed_cluster *c;
	struct mv_rules *r;
	size_t n;
};

static void all_on_loop(void *arg)
{
	struct all_specs *a = arg;
	size_t n = 0;
	for (struct ed_vm *vm = ed_host_first(a->c->h); vm; vm = ed_host_next(a->c->h, vm))
		n++;
	a->r = calloc(n + 1, sizeof(*a->r));
	if (!a->r)
		return;
	for (struct ed_vm *vm = ed_host_first(a->c->h); vm; vm = ed_host_next(a->c->h, vm)) {
		struct mv_rules *r = &a->r[a->n++];
		snprintf(r->s.name, sizeof(r->s.name), "%s", ed_vm_name(vm));
		r->found = true;
		r->state = ed_vm_state(vm);
		r->s.mem = ed_vm_mem_bytes(vm);
		r->s.vcpus = ed_vm_vcpus(vm);
	}
}

void mv_maintenance_round(struct ed_cluster *c, struct ha_etcd *e, const struct mv_view *v,
			  int64_t lease, size_t room)
{
	const struct ha_etcd_range *hosts = &v->res.ranges[0], *owners = &v->res.ranges[1],
				   *moves = &v->res.ranges[2], *maint = &v->res.ranges[3];
	struct all_specs a = {.c = c};
	if (mv_on_loop(c, all_on_loop, &a) || !a.r)
		return;
	/* the rules lists belong to the loop: take copies of what we need now */
	struct ed_place_host *ph = calloc(hosts->n + 1, sizeof(*ph));
	struct mv_rules mine[64];
	int64_t token[64];
	size_t nmine = 0;
	for (size_t i = 0; ph && i < a.n; i++) {
		char okey[128], mkey[128];
		cl_key(okey, sizeof(okey), "owner", a.r[i].s.name);
		cl_key(mkey, sizeof(mkey), "moves", a.r[i].s.name);
		const struct ha_etcd_kv *o = ha_etcd_range_find(owners, okey);
		if (!o || strcmp(o->value, c->name) || o->lease != lease ||
		    ha_etcd_range_find(moves, mkey) || a.r[i].state != ED_RUNNING || nmine == 64)
			continue;
		struct mv_rules r = {0};
		if (mv_rules_get(c, a.r[i].s.name, &r))
			continue;
		token[nmine] = o->mod_revision;
		mine[nmine++] = r;
	}
	size_t nh = 0;
	for (size_t i = 0; ph && i < hosts->n; i++) {
		const char *name = hosts->kvs[i].key + strlen(CL_PREFIX "hosts/");
		char addr[128], why[256];
		if (!strcmp(name, c->name) ||
		    mv_target_refuses(hosts, maint, name, addr, sizeof(addr), why, sizeof(why)))
			continue;
		json_t *info = json_loads(hosts->kvs[i].value, 0, NULL);
		ph[nh] = (struct ed_place_host){
		    .name = name,
		    .mem_cap = (uint64_t)json_integer_value(json_object_get(info, "mem_capacity")),
		    .vcpus_cap =
			(unsigned)json_integer_value(json_object_get(info, "vcpus_capacity"))};
		json_decref(info);
		for (size_t k = 0; k < owners->n; k++) /* what it runs */
			for (size_t s = 0; !strcmp(owners->kvs[k].value, name) && s < a.n; s++)
				if (!strcmp(owners->kvs[k].key + strlen(CL_PREFIX "owner/"),
					    a.r[s].s.name)) {
					ph[nh].mem_used += a.r[s].s.mem;
					ph[nh].vcpus_used += a.r[s].s.vcpus;
				}
		nh++;
	}
	for (size_t i = 0; i < nmine && room; i++) {
		struct mv_rules *r = &mine[i];
		uint64_t mem = 0;
		unsigned vcpus = 0;
		for (size_t s = 0; s < a.n; s++)
			if (!strcmp(a.r[s].s.name, r->s.name))
				mem = a.r[s].s.mem, vcpus = a.r[s].s.vcpus;
		struct ed_place_vm pv = {r->s.name, mem, vcpus, (const char *const *)r->s.must,
					 (const char *const *)r->s.avoid};
		char why[256] = "", err[ED_ERR_MAX];
		int best = ph ? ed_place(ph, nh, &pv, why, sizeof(why)) : -1;
		if (best < 0 && r->s.must && r->s.must[0]) {
			snprintf(why, sizeof(why), "its must rule hosts = ");
			for (char **m = r->s.must; *m; m++)
				snprintf(why + strlen(why), sizeof(why) - strlen(why), "%s%s",
					 m == r->s.must ? "" : ",", *m);
			snprintf(why + strlen(why), sizeof(why) - strlen(why),
				 " leaves no other live host out of maintenance with room");
		}
		if (best < 0) {
			if (mv_tell_once(c, r->s.name))
				cl_event(c, r->s.name, "maintenance-stays",
					 "cannot leave %s (in maintenance): %s", c->name, why);
			continue;
		}
		if (mv_put_request(e, c->name, r->s.name, ph[best].name, "maintenance",
				   token[i], err, sizeof(err)))
			continue;
		ph[best].mem_used += mem;
		ph[best].vcpus_used += vcpus;
		room--;
	}
	for (size_t i = 0; i < nmine; i++)
		mv_rules_free(&mine[i]);
	free(ph);
	free(a.r);
}
