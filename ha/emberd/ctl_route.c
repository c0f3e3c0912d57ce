/* The control API's pure parts (ha/emberd/ctl_priv.h): which route a
 * request takes, its query and body, checked with errors that name what
 * was wrong; and the replies' shapes.  No sockets, no supervisor: the
 * unit tests drive them directly (tests/unit/test_ha_ctl.c). */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ha/emberd/ctl_priv.h"

static int refuse(char *fault, size_t len, int status, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int refuse(char *fault, size_t len, int status, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(fault, len, fmt, ap);
	va_end(ap);
	return status;
}

static const struct {
	const char *path; /* after /vms/NAME, or the whole path */
	bool per_vm;
	const char *method;
	enum ed_route route;
	const char *params; /* the query parameters it takes, space-separated */
} routes[] = {
    {"/vms", false, "GET", ED_R_VMS, "after limit"},
    {"", true, "GET", ED_R_VM, ""},
    {"/start", true, "PUT", ED_R_VM_START, ""},
    {"/stop", true, "PUT", ED_R_VM_STOP, ""},
    {"/restart", true, "PUT", ED_R_VM_RESTART, ""},
    {"/snapshot", true, "PUT", ED_R_VM_SNAPSHOT, ""},
    {"/logs", true, "GET", ED_R_VM_LOGS, "tail from format"},
    {"/events", false, "GET", ED_R_EVENTS, "since wait_ms"},
    {"/reload", false, "PUT", ED_R_RELOAD, ""},
    {"/hosts", false, "GET", ED_R_HOSTS, "after limit"},
    {"/status", false, "GET", ED_R_STATUS, ""},
};

static bool takes(const char *params, const char *key, size_t klen)
{
	for (const char *p = params; *p;) {
		size_t n = strcspn(p, " ");
		if (n == klen && !memcmp(p, key, n))
			return true;
		p += n + (p[n] == ' ');
	}
	return false;
}

/* A decimal number, the whole value: 0 or -EINVAL. */
static int number(const char *v, size_t n, uint64_t *out)
{
	if (!n || n > 19)
		return -EINVAL;
	uint64_t x = 0;
	for (size_t i = 0; i < n; i++) {
		if (v[i] < '0' || v[i] > '9')
			return -EINVAL;
		x = x * 10 + (uint64_t)(v[i] - '0');
	}
	*out = x;
	return 0;
}

static bool name_char(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       c == '-';
}

static int query(const char *q, unsigned i, struct ed_ctl_req *r, char *fault, size_t len)
{
	while (*q) {
		size_t n = strcspn(q, "&");
		const char *eq = memchr(q, '=', n);
		size_t klen = eq ? (size_t)(eq - q) : n;
		const char *v = eq ? eq + 1 : q + n;
		size_t vlen = eq ? n - klen - 1 : 0;
		if (!n) {
			q++;
			continue;
		}
		if (!takes(routes[i].params, q, klen))
			return refuse(fault, len, 400,
				      "unknown query parameter \"%.*s\" (%s takes %s)", (int)klen,
				      q, routes[i].per_vm ? "this path" : routes[i].path,
				      *routes[i].params ? routes[i].params : "none");
		uint64_t x = 0;
		bool is_format = klen == 6 && !memcmp(q, "format", 6);
		if (klen == 5 && !memcmp(q, "after", 5)) {
			/* a name: the page starts after it (names sort as strcmp) */
			size_t ok = 0;
			while (ok < vlen && name_char(v[ok]))
				ok++;
			if (ok < vlen || vlen > ED_NAME_MAX)
				return refuse(fault, len, 400,
					      "after=: give a name (letters, digits, '-')");
			memcpy(r->after, v, vlen);
			r->after[vlen] = '\0';
		} else if (is_format) {
			if (vlen == 4 && !memcmp(v, "json", 4))
				r->json = true;
			else if (vlen == 4 && !memcmp(v, "text", 4))
				r->json = false;
			else
				return refuse(fault, len, 400, "format=%.*s: give json or text",
					      (int)vlen, v);
		} else if (number(v, vlen, &x)) {
			return refuse(fault, len, 400,
				      "%.*s=%.*s: give a non-negative whole number", (int)klen, q,
				      (int)vlen, v);
		} else if (!strncmp(q, "since=", 6)) {
			r->since = x;
		} else if (!strncmp(q, "wait_ms=", 8)) {
			if (x > ED_CTL_WAIT_MAX)
				return refuse(fault, len, 400, "wait_ms=%.*s: at most %d",
					      (int)vlen, v, ED_CTL_WAIT_MAX);
			r->wait_ms = x;
		} else if (!strncmp(q, "tail=", 5)) {
			r->tail = x;
		} else if (!strncmp(q, "from=", 5)) {
			r->from = x;
			r->has_from = true;
		} else if (!strncmp(q, "limit=", 6)) {
			r->limit = x;
		}
		q += n + (q[n] == '&');
	}
	return 0;
}

int ed_ctl_route(const char *method, const char *url, struct ed_ctl_req *r, char *fault, size_t len)
{
	memset(r, 0, sizeof(*r));
	r->tail = ED_CTL_LOG_DEFAULT;
	size_t plen = strcspn(url, "?#");
	const char *q = url[plen] == '?' ? url + plen + 1 : "";
	char path[ED_CTL_URL_MAX + 1];
	if (plen > ED_CTL_URL_MAX)
		return refuse(fault, len, 400, "URL longer than %d bytes", ED_CTL_URL_MAX);
	memcpy(path, url, plen);
	path[plen] = '\0';
	if (plen > 1 && path[plen - 1] == '/')
		path[--plen] = '\0';
	if (strchr(q, '#'))
		return refuse(fault, len, 400, "a fragment (#) in the URL");

	/* /vms/NAME[/ACTION]: the name, then the rest to match */
	const char *rest = path;
	bool per_vm = false;
	if (!strncmp(path, "/vms/", 5)) {
		const char *name = path + 5;
		size_t n = strcspn(name, "/");
		for (size_t i = 0; i < n; i++)
			if (!name_char(name[i]))
				return refuse(fault, len, 400,
					      "VM name \"%.*s\": only letters, digits and '-'",
					      (int)(n > 80 ? 80 : n), name);
		if (!n || n > ED_NAME_MAX)
			return refuse(fault, len, 400, "VM name: 1 to %d characters, not %zu",
				      ED_NAME_MAX, n);
		memcpy(r->vm, name, n);
		r->vm[n] = '\0';
		rest = name + n;
		per_vm = true;
	}
	for (unsigned i = 0; i < sizeof(routes) / sizeof(routes[0]); i++) {
		if (routes[i].per_vm != per_vm || strcmp(routes[i].path, rest))
			continue;
		if (strcmp(method, routes[i].method)) {
			r->allow = routes[i].method;
			return refuse(fault, len, 405, "%s %s: method not allowed (use %s)", method,
				      path, routes[i].method);
		}
		r->route = routes[i].route;
		return query(q, i, r, fault, len);
	}
	return refuse(fault, len, 404,
		      "no such path: %.200s (paths: /vms, /vms/NAME, /vms/NAME/{start,stop,restart,"
		      "snapshot,logs}, /events, /reload, /hosts, /status)",
		      path);
}

static const char *type_name(const json_t *v)
{
	switch (json_typeof(v)) {
	case JSON_OBJECT:
		return "an object";
	case JSON_ARRAY:
		return "an array";
	case JSON_STRING:
		return "a string";
	case JSON_INTEGER:
		return "an integer";
	case JSON_REAL:
		return "a number";
	case JSON_TRUE:
	case JSON_FALSE:
		return "a boolean";
	default:
		return "null";
	}
}

static int body_field(enum ed_route route, const char *key, json_t *v, enum ed_how *how,
		      uint64_t *grace_ms, char *fault, size_t len)
{
	bool start = route == ED_R_VM_START;
	bool stop = route == ED_R_VM_STOP || route == ED_R_VM_RESTART;
	if (start && !strcmp(key, "how")) {
		const char *s = json_string_value(v);
		if (!s)
			return refuse(fault, len, 400, "\"how\": expected a string, got %s",
				      type_name(v));
		if (!strcmp(s, "policy"))
			*how = ED_HOW_POLICY;
		else if (!strcmp(s, "boot"))
			*how = ED_HOW_BOOT;
		else if (!strcmp(s, "resume"))
			*how = ED_HOW_RESUME;
		else
			return refuse(fault, len, 400,
				      "\"how\": \"%.64s\": give \"policy\", \"boot\" or \"resume\"",
				      s);
		return 0;
	}
	if (stop && !strcmp(key, "grace_ms")) {
		if (!json_is_integer(v) || json_integer_value(v) < 0)
			return refuse(fault, len, 400,
				      "\"grace_ms\": expected a non-negative integer, got %s",
				      json_is_integer(v) ? "a negative one" : type_name(v));
		*grace_ms = (uint64_t)json_integer_value(v);
		return 0;
	}
	return refuse(fault, len, 400, "unknown field \"%.64s\" (this request takes %s)", key,
		      start  ? "\"how\""
		      : stop ? "\"grace_ms\""
			     : "no fields");
}

int ed_ctl_body(enum ed_route route, const char *body, size_t n, enum ed_how *how,
		uint64_t *grace_ms, char *fault, size_t len)
{
	*how = ED_HOW_POLICY;
	*grace_ms = 5000;
	size_t i = 0;
	while (body && i < n && strchr(" \t\r\n", body[i]))
		i++;
	if (!body || i == n)
		return 0;
	json_error_t je;
	json_t *v = json_loadb(body, n, 0, &je);
	if (!v)
		return refuse(fault, len, 400, "bad JSON at line %d, column %d: %s", je.line,
			      je.column, je.text);
	int r = 0;
	if (!json_is_object(v)) {
		r = refuse(fault, len, 400, "the body: expected a JSON object, got %s",
			   type_name(v));
	} else {
		const char *key;
		json_t *val;
		json_object_foreach(v, key, val)
		{
			r = body_field(route, key, val, how, grace_ms, fault, len);
			if (r)
				break;
		}
	}
	json_decref(v);
	return r;
}

/* The length of the UTF-8 character p starts (RFC 3629), given n bytes:
 * >0 valid, 0 when p ends inside it, -1 invalid. */
static int utf8_len(const unsigned char *p, size_t n)
{
	unsigned c = p[0];
	int len = c < 0x80	       ? 1
		  : (c & 0xe0) == 0xc0 ? 2
		  : (c & 0xf0) == 0xe0 ? 3
		  : (c & 0xf8) == 0xf0 ? 4
				       : -1;
	if (len < 0 || c == 0xc0 || c == 0xc1 || c > 0xf4)
		return -1;
	for (int i = 1; i < len; i++) {
		if ((size_t)i >= n)
			return 0;
		if ((p[i] & 0xc0) != 0x80)
			return -1;
	}
	/* overlong, surrogates, above U+10FFFF */
	if ((c == 0xe0 && p[1] < 0xa0) || (c == 0xed && p[1] >= 0xa0) ||
	    (c == 0xf0 && p[1] < 0x90) || (c == 0xf4 && p[1] >= 0x90))
		return -1;
	return len;
}

json_t *ed_ctl_text_json(const char *p, size_t n, bool more, size_t *used)
{
	char *out = malloc(n ? n : 1);
	size_t o = 0, i = 0;
	if (!out)
		return NULL;
	while (i < n) {
		int l = utf8_len((const unsigned char *)p + i, n - i);
		if (l == 0 && more)
			break; /* the rest of this character comes in the next read */
		if (l <= 0) {
			out[o++] = '?';
			i++;
			continue;
		}
		memcpy(out + o, p + i, (size_t)l);
		o += (size_t)l;
		i += (size_t)l;
	}
	*used = i;
	json_t *s = json_stringn(out, o);
	free(out);
	return s;
}

void ed_ctl_reply_json(struct ed_ctl_reply *rp, int status, json_t *v)
{
	free(rp->body);
	rp->status = status;
	rp->type = "application/json";
	rp->body = v ? json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
	rp->len = rp->body ? strlen(rp->body) : 0;
	if (v && !rp->body) {
		rp->status = 500; /* out of memory: a reply without a body still says so */
		rp->type = NULL;
	}
	json_decref(v);
}

void ed_ctl_fault(struct ed_ctl_reply *rp, int status, const char *fmt, ...)
{
	char msg[ED_CTL_FAULT_MAX];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	ed_ctl_reply_json(rp, status, json_pack("{s:s}", "fault_message", msg));
}
