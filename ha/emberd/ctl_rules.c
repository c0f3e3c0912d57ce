/* The control API's rules (docs/ha.md "Control API", docs/balancing.md):
 * GET /rules, GET /rules/NAME, PUT /rules/NAME (the rule's JSON),
 * DELETE /rules/NAME, through cluster mode's rules hook.  Routed here
 * before ctl_route.c's table (ed_ctl_rules_url). */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "ha/emberd/ctl_priv.h"
#include "ha/emberd/local.h"

bool ed_ctl_rules_url(const char *url)
{
	return !strncmp(url, "/rules", 6) && (!url[6] || url[6] == '/' || url[6] == '?');
}

int ed_ctl_rules(struct ed_host *h, const char *method, const char *url, const char *body,
		 size_t len, struct ed_ctl_reply *rp)
{
	const char *name = url[6] == '/' ? url + 7 : NULL;
	size_t n = name ? strlen(name) : 0;
	if (url[6] == '?' || (name && (!n || n > ED_NAME_MAX ||
				       strspn(name, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopq"
						    "rstuvwxyz0123456789-") != n))) {
		ed_ctl_fault(rp, 400,
			     "%s: a rule's name is 1..%d of A-Z a-z 0-9 - (and /rules takes no "
			     "query)",
			     url, ED_NAME_MAX);
		return 0;
	}
	bool get = !strcmp(method, "GET"), put = !strcmp(method, "PUT"),
	     del = !strcmp(method, "DELETE");
	if (!(get || (name && (put || del)))) {
		ed_ctl_fault(rp, 405, "%s %s: /rules takes GET; /rules/NAME GET, PUT, DELETE",
			     method, url);
		rp->allow = name ? "GET, PUT, DELETE" : "GET";
		return 0;
	}
	const struct ed_cluster_hooks *hk = ed_host_hooks(h);
	if (!hk || !hk->rules) {
		ed_ctl_fault(rp, 409,
			     "rules are cluster mode's (emberd --etcd): none on a single host");
		return 0;
	}
	char buf[ED_CTL_REQ_MAX + 1];
	snprintf(buf, sizeof(buf), "%.*s", (int)len, body ? body : "");
	json_t *out = NULL;
	char err[ED_ERR_MAX] = "";
	int r = hk->rules(hk->arg, method, name, buf, &out, err, sizeof(err));
	if (r == -EINVAL)
		ed_ctl_fault(rp, 400, "%s", err);
	else if (r == -ENOENT)
		ed_ctl_fault(rp, 404, "%s", err);
	else if (r)
		ed_ctl_fault(rp, 503, "rules: etcd: %s", *err ? err : strerror(-r));
	else if (get)
		ed_ctl_reply_json(rp, 200, out);
	else
		ed_ctl_reply_json(rp, 204, NULL);
	return 0;
}
