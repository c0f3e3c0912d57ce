/* emberctl rule (docs/balancing.md "Rules"): the cluster's placement
 * rules through emberd's control API (GET/PUT/DELETE /rules).
 *   emberctl rule add NAME KIND --vms a,b [--hosts x,y]
 *   emberctl rule rm NAME
 *   emberctl rule list
 * Parsed apart from the other commands (ctl_rule_parse, pure); emberd
 * checks the rule itself (kinds, names) and says what is wrong. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ha/api_client.h"
#include "ha/ctl/ctl.h"

#define BAD(...) (snprintf(err, len, __VA_ARGS__), -EINVAL)

bool ctl_is_rule(int argc, char *const *argv)
{
	for (int i = 0; i < argc; i++) {
		if (!strcmp(argv[i], "--sock")) {
			i++;
			continue;
		}
		if (argv[i][0] == '-')
			continue;
		return !strcmp(argv[i], "rule");
	}
	return false;
}

int ctl_rule_parse(int argc, char *const *argv, const char *env_sock, struct ctl_rule_args *a,
		   char *err, size_t len)
{
	memset(a, 0, sizeof(*a));
	a->sock = env_sock && *env_sock ? env_sock : CTL_SOCK_DEFAULT;
	const char *pos[4];
	int npos = 0;
	for (int i = 0; i < argc; i++) {
		const char *w = argv[i];
		const char **slot = !strcmp(w, "--sock")    ? &a->sock
				    : !strcmp(w, "--vms")   ? &a->vms
				    : !strcmp(w, "--hosts") ? &a->hosts
							    : NULL;
		if (slot) {
			if (i + 1 >= argc || !*argv[i + 1])
				return BAD("%s: give a value", w);
			*slot = argv[++i];
		} else if (!strcmp(w, "--json")) {
			a->json = true;
		} else if (w[0] == '-') {
			return BAD("rule: unknown option %s (--vms, --hosts, --sock, --json)", w);
		} else if (npos < 4) {
			pos[npos++] = w;
		} else {
			return BAD("rule: unexpected \"%s\"", w);
		}
	}
	/* pos[0] is "rule" */
	const char *op = npos > 1 ? pos[1] : "";
	if (!strcmp(op, "add")) {
		a->op = CTL_RULE_ADD;
		if (npos != 4)
			return BAD("rule add: give NAME KIND --vms a,b [--hosts x,y]");
		a->name = pos[2];
		a->kind = pos[3];
		if (!a->vms)
			return BAD("rule add %s: give --vms a,b", a->name);
		return 0;
	}
	if (a->vms || a->hosts)
		return BAD("rule %s: --vms and --hosts are add's", op);
	if (!strcmp(op, "rm")) {
		a->op = CTL_RULE_RM;
		if (npos != 3)
			return BAD("rule rm: give the rule's NAME");
		a->name = pos[2];
		return 0;
	}
	if (!strcmp(op, "list")) {
		a->op = CTL_RULE_LIST;
		if (npos != 2)
			return BAD("rule list: takes no argument (\"%s\")", pos[2]);
		return 0;
	}
	return BAD("rule: give add, rm or list (\"%s\")", op);
}

/* "a,b" -> ["a", "b"] */
json_t *ctl_name_list(const char *s)
{
	json_t *a = json_array();
	char buf[4096];
	snprintf(buf, sizeof(buf), "%s", s ? s : "");
	for (char *save, *t = strtok_r(buf, ", ", &save); a && t; t = strtok_r(NULL, ", ", &save))
		json_array_append_new(a, json_string(t));
	return a;
}

static void join(const json_t *a, char *buf, size_t len)
{
	buf[0] = 0;
	size_t i;
	json_t *v;
	json_array_foreach(a, i, v)
	{
		size_t l = strlen(buf);
		snprintf(buf + l, len - l, "%s%s", i ? "," : "", json_string_value(v) ?: "?");
	}
}

int ctl_rule_main(int argc, char *const *argv, const char *env_sock)
{
	struct ctl_rule_args a;
	char err[512], path[128];
	if (ctl_rule_parse(argc, argv, env_sock, &a, err, sizeof(err))) {
		fprintf(stderr, "emberctl: %s\n", err);
		return CTL_EXIT_USAGE;
	}
	snprintf(path, sizeof(path), "/rules%s%s", a.name ? "/" : "", a.name ? a.name : "");
	json_t *req = NULL;
	if (a.op == CTL_RULE_ADD)
		req = json_pack("{s:s, s:o, s:o}", "kind", a.kind, "vms", ctl_name_list(a.vms),
				"hosts", ctl_name_list(a.hosts));
	const char *method = a.op == CTL_RULE_ADD ? "PUT" : a.op == CTL_RULE_RM ? "DELETE" : "GET";
	struct ha_api_reply rep;
	int r = ha_api_call(a.sock, method, path, req, -1, 60000, &rep, err, sizeof(err));
	json_decref(req);
	if (r) {
		fprintf(stderr, "emberctl: cannot reach emberd at %s: %s\n", a.sock, strerror(-r));
		return CTL_EXIT_UNREACHABLE;
	}
	int rc = 0;
	if (rep.status / 100 != 2) {
		const char *f = ha_api_fault(rep.body);
		fprintf(stderr, "emberctl: %s\n", f ? f : "emberd refused the request");
		rc = CTL_EXIT_REFUSED;
	} else if (a.op == CTL_RULE_LIST && a.json) {
		char *s = json_dumps(rep.body, JSON_INDENT(2));
		printf("%s\n", s ? s : "[]");
		free(s);
	} else if (a.op == CTL_RULE_LIST) {
		static const char *const head[] = {"NAME", "KIND", "VMS", "HOSTS"};
		struct ctl_table t;
		if (ctl_table_init(&t, head, 4)) {
			json_decref(rep.body);
			return CTL_EXIT_REFUSED;
		}
		size_t i;
		json_t *x;
		json_array_foreach(rep.body, i, x)
		{
			char vms[1024], hosts[1024];
			join(json_object_get(x, "vms"), vms, sizeof(vms));
			join(json_object_get(x, "hosts"), hosts, sizeof(hosts));
			const char *row[] = {json_string_value(json_object_get(x, "name")),
					     json_string_value(json_object_get(x, "kind")), vms,
					     hosts[0] ? hosts : NULL};
			if (ctl_table_add(&t, row))
				break;
		}
		ctl_table_print(&t, stdout);
		ctl_table_free(&t);
	}
	json_decref(rep.body);
	return rc;
}
