/* etcd's JSON gateway, the transport (ha/etcd.h): one CURL handle per
 * client, POST JSON to /v3/..., failover across endpoints on transport
 * errors.  Every request is bounded by the client's timeout, so a caller
 * (the lease keeper) never waits on etcd longer than it chose. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

#include "ha/etcd.h"

#define REPLY_MAX (16u << 20) /* a range of every VM's keys fits many times over */

struct ha_etcd {
	char **eps;
	size_t n, cur;
	int timeout_ms;
	CURL *curl;
	struct curl_slist *hdrs;
	char *buf; /* the reply being read */
	size_t len, cap;
	bool too_big;
};

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_ret;

/* curl_global_init is not thread-safe: once, before any handle. */
static void curl_init(void)
{
	curl_init_ret = curl_global_init(CURL_GLOBAL_DEFAULT);
}

bool ha_etcd_unreachable(int err)
{
	return err == -ECONNREFUSED || err == -ETIMEDOUT || err == -EHOSTUNREACH;
}

const char *ha_etcd_endpoint(const struct ha_etcd *e)
{
	return e->eps[e->cur];
}

void ha_etcd_free(struct ha_etcd *e)
{
	if (!e)
		return;
	for (size_t i = 0; i < e->n; i++)
		free(e->eps[i]);
	free(e->eps);
	if (e->curl)
		curl_easy_cleanup(e->curl);
	curl_slist_free_all(e->hdrs);
	free(e->buf);
	free(e);
}

int ha_etcd_new(struct ha_etcd **out, const char *endpoints, int timeout_ms, char *err,
		size_t errlen)
{
	pthread_once(&curl_once, curl_init);
	if (curl_init_ret != CURLE_OK) {
		snprintf(err, errlen, "libcurl: %s", curl_easy_strerror(curl_init_ret));
		return -ENOMEM;
	}
	if (!endpoints || !*endpoints || timeout_ms <= 0) {
		snprintf(err, errlen, "etcd: no endpoints, or a timeout of %d ms", timeout_ms);
		return -EINVAL;
	}
	struct ha_etcd *e = calloc(1, sizeof(*e));
	char *copy = strdup(endpoints);
	if (!e || !copy)
		goto nomem;
	e->timeout_ms = timeout_ms;
	char *save = NULL;
	for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		while (*tok == ' ')
			tok++;
		size_t l = strlen(tok);
		while (l && (tok[l - 1] == ' ' || tok[l - 1] == '/'))
			tok[--l] = 0;
		if (strncmp(tok, "http://", 7) && strncmp(tok, "https://", 8)) {
			snprintf(err, errlen, "etcd endpoint '%s': not an http:// or https:// URL",
				 tok);
			free(copy);
			ha_etcd_free(e);
			return -EINVAL;
		}
		char **eps = realloc(e->eps, (e->n + 1) * sizeof(*eps));
		if (!eps)
			goto nomem;
		e->eps = eps;
		if (!(e->eps[e->n] = strdup(tok)))
			goto nomem;
		e->n++;
	}
	free(copy);
	copy = NULL;
	if (!e->n) {
		snprintf(err, errlen, "etcd: no endpoints in '%s'", endpoints);
		ha_etcd_free(e);
		return -EINVAL;
	}
	e->curl = curl_easy_init();
	e->hdrs = curl_slist_append(NULL, "Content-Type: application/json");
	if (!e->curl || !e->hdrs)
		goto nomem;
	*out = e;
	return 0;
nomem:
	free(copy);
	ha_etcd_free(e);
	snprintf(err, errlen, "etcd client: out of memory");
	return -ENOMEM;
}

static size_t on_data(char *p, size_t size, size_t nmemb, void *arg)
{
	struct ha_etcd *e = arg;
	size_t n = size * nmemb;
	if (e->len + n + 1 > REPLY_MAX) {
		e->too_big = true;
		return 0; /* curl fails the transfer */
	}
	if (e->len + n + 1 > e->cap) {
		size_t cap = e->cap ? e->cap : 4096;
		while (cap < e->len + n + 1)
			cap *= 2;
		char *b = realloc(e->buf, cap);
		if (!b)
			return 0;
		e->buf = b;
		e->cap = cap;
	}
	memcpy(e->buf + e->len, p, n);
	e->len += n;
	e->buf[e->len] = 0;
	return n;
}

static int curl_errno(CURLcode c)
{
	switch (c) {
	case CURLE_COULDNT_CONNECT:
		return -ECONNREFUSED;
	case CURLE_OPERATION_TIMEDOUT:
		return -ETIMEDOUT;
	case CURLE_COULDNT_RESOLVE_HOST:
	case CURLE_COULDNT_RESOLVE_PROXY:
	case CURLE_SEND_ERROR:
	case CURLE_RECV_ERROR:
	case CURLE_GOT_NOTHING:
		return -EHOSTUNREACH;
	case CURLE_OUT_OF_MEMORY:
		return -ENOMEM;
	default:
		return -EPROTO;
	}
}

/* One POST to one endpoint: 0 with the HTTP status in *http and the body
 * in e->buf, or a transport -errno with err. */
static int post_one(struct ha_etcd *e, size_t i, const char *path, const char *body, long *http,
		    char *err, size_t errlen)
{
	char url[512];
	snprintf(url, sizeof(url), "%s%s", e->eps[i], path);
	e->len = 0;
	e->too_big = false;
	if (e->buf)
		e->buf[0] = 0;
	CURL *c = e->curl;
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, e->hdrs);
	curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_data);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, e);
	curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)e->timeout_ms);
	curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, (long)e->timeout_ms);
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L); /* threads: no SIGALRM for timeouts */
	curl_easy_setopt(c, CURLOPT_TCP_NODELAY, 1L);
	char cerr[CURL_ERROR_SIZE] = "";
	curl_easy_setopt(c, CURLOPT_ERRORBUFFER, cerr);
	CURLcode rc = curl_easy_perform(c);
	curl_easy_setopt(c, CURLOPT_ERRORBUFFER, NULL);
	if (rc != CURLE_OK) {
		int r = e->too_big ? -EPROTO : curl_errno(rc);
		snprintf(err, errlen, "etcd %s%s: %s", e->eps[i], path,
			 e->too_big ? "reply too large" : (*cerr ? cerr : curl_easy_strerror(rc)));
		return r;
	}
	curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, http);
	return 0;
}

/* POST req to path on the current endpoint, then the others on transport
 * errors (and on a member that cannot serve: no leader): 0 with *reply
 * (the first JSON value of the body), or -errno with err. */
static int call(struct ha_etcd *e, const char *path, json_t *req, json_t **reply, char *err,
		size_t errlen)
{
	*reply = NULL;
	if (!req) {
		snprintf(err, errlen, "etcd %s: out of memory", path);
		return -ENOMEM;
	}
	char *body = json_dumps(req, JSON_COMPACT);
	json_decref(req);
	if (!body) {
		snprintf(err, errlen, "etcd %s: out of memory", path);
		return -ENOMEM;
	}
	int ret = -EHOSTUNREACH;
	for (size_t k = 0; k < e->n; k++) {
		size_t i = (e->cur + k) % e->n;
		long http = 0;
		ret = post_one(e, i, path, body, &http, err, errlen);
		if (ret == -ENOMEM || ret == -EPROTO)
			break;
		if (ret)
			continue;
		json_error_t jerr;
		/* streaming replies are one JSON value per line: take the first */
		json_t *j = json_loadb(e->buf ? e->buf : "", e->len, JSON_DISABLE_EOF_CHECK, &jerr);
		if (http != 200) {
			char msg[256];
			ret = ha_etcd_error(http, j, msg, sizeof(msg));
			snprintf(err, errlen, "etcd %s%s: %s", e->eps[i], path, msg);
			json_decref(j);
			if (ret == -ETIMEDOUT)
				continue; /* this member cannot serve: maybe another can */
			e->cur = i;
			break;
		}
		e->cur = i;
		if (!j) {
			snprintf(err, errlen, "etcd %s%s: reply is not JSON: %s", e->eps[i], path,
				 jerr.text);
			ret = -EPROTO;
			break;
		}
		if (json_is_object(json_object_get(j, "error"))) {
			char msg[256];
			ret = ha_etcd_error(http, j, msg, sizeof(msg));
			snprintf(err, errlen, "etcd %s%s: %s", e->eps[i], path, msg);
			json_decref(j);
			break;
		}
		*reply = j;
		ret = 0;
		break;
	}
	free(body);
	return ret;
}

/* Name the endpoint in a decoder's error. */
static int parsed(struct ha_etcd *e, const char *path, int r, char *err, size_t errlen)
{
	if (r && r != -ENOENT) {
		char msg[256];
		snprintf(msg, sizeof(msg), "%s", err);
		snprintf(err, errlen, "etcd %s%s: %s", ha_etcd_endpoint(e), path, msg);
	}
	return r;
}

int ha_etcd_lease_grant(struct ha_etcd *e, int64_t ttl_s, int64_t *id, char *err, size_t errlen)
{
	json_t *req = json_pack("{s:I}", "TTL", (json_int_t)ttl_s), *reply;
	int r = call(e, "/v3/lease/grant", req, &reply, err, errlen);
	if (r)
		return r;
	int64_t ttl = 0;
	if (ha_etcd_int64(reply, "ID", id) || ha_etcd_int64(reply, "TTL", &ttl) || !*id ||
	    ttl <= 0) {
		snprintf(err, errlen, "etcd %s/v3/lease/grant: a reply without an ID or TTL",
			 ha_etcd_endpoint(e));
		r = -EPROTO;
	}
	json_decref(reply);
	return r;
}

int ha_etcd_lease_keepalive(struct ha_etcd *e, int64_t id, int64_t *ttl, char *err, size_t errlen)
{
	char s[24];
	snprintf(s, sizeof(s), "%lld", (long long)id);
	json_t *reply;
	int r = call(e, "/v3/lease/keepalive", json_pack("{s:s}", "ID", s), &reply, err, errlen);
	if (r)
		return r;
	r = parsed(e, "/v3/lease/keepalive", ha_etcd_keepalive_parse(reply, ttl, err, errlen), err,
		   errlen);
	json_decref(reply);
	return r;
}

int ha_etcd_lease_revoke(struct ha_etcd *e, int64_t id, char *err, size_t errlen)
{
	char s[24];
	snprintf(s, sizeof(s), "%lld", (long long)id);
	json_t *reply;
	int r = call(e, "/v3/lease/revoke", json_pack("{s:s}", "ID", s), &reply, err, errlen);
	json_decref(reply);
	return r;
}

int ha_etcd_get(struct ha_etcd *e, const char *key, bool prefix, struct ha_etcd_range *res,
		char *err, size_t errlen)
{
	json_t *reply;
	memset(res, 0, sizeof(*res));
	int r = call(e, "/v3/kv/range", ha_etcd_range_req(key, prefix), &reply, err, errlen);
	if (r)
		return r;
	r = parsed(e, "/v3/kv/range", ha_etcd_range_parse(reply, res, err, errlen), err, errlen);
	json_decref(reply);
	return r;
}

/* POST req to path and read one int64 of the reply (in its sub-object
 * within, or at the top when within is NULL) into *out (may be NULL). */
static int call_int(struct ha_etcd *e, const char *path, json_t *req, const char *within,
		    const char *field, int64_t *out, char *err, size_t errlen)
{
	json_t *reply;
	int r = call(e, path, req, &reply, err, errlen);
	if (r)
		return r;
	int64_t v = 0;
	if (ha_etcd_int64(within ? json_object_get(reply, within) : reply, field, &v)) {
		snprintf(err, errlen, "etcd %s%s: %s%s%s is not an integer", ha_etcd_endpoint(e),
			 path, within ? within : "", within ? "." : "", field);
		r = -EPROTO;
	}
	if (out)
		*out = v;
	json_decref(reply);
	return r;
}

int ha_etcd_put(struct ha_etcd *e, const char *key, const char *value, int64_t lease,
		int64_t *revision, char *err, size_t errlen)
{
	return call_int(e, "/v3/kv/put", ha_etcd_put_req(key, value, lease), "header", "revision",
			revision, err, errlen);
}

int ha_etcd_delete(struct ha_etcd *e, const char *key, bool prefix, int64_t *deleted, char *err,
		   size_t errlen)
{
	return call_int(e, "/v3/kv/deleterange", ha_etcd_delete_req(key, prefix), NULL, "deleted",
			deleted, err, errlen);
}

int ha_etcd_txn_run(struct ha_etcd *e, const struct ha_etcd_txn *t, struct ha_etcd_txn_result *res,
		    char *err, size_t errlen)
{
	json_t *reply;
	memset(res, 0, sizeof(*res));
	int r = call(e, "/v3/kv/txn", ha_etcd_txn_req(t), &reply, err, errlen);
	if (r)
		return r;
	r = parsed(e, "/v3/kv/txn", ha_etcd_txn_parse(reply, res, err, errlen), err, errlen);
	json_decref(reply);
	return r;
}
