/* etcd's JSON gateway, the pure part (ha/etcd.h): base64, request bodies
 * and reply decoding.  The gateway is grpc-gateway over etcd's protobufs,
 * so bytes are base64, int64 are strings, and proto3 leaves out every
 * field that holds its default (0, false, empty). */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "ha/etcd.h"

char *ha_etcd_b64(const void *data, size_t len)
{
	if (len > (INT_MAX / 4) * 3 - 3)
		return NULL;
	char *out = malloc(4 * ((len + 2) / 3) + 1);
	if (!out)
		return NULL;
	EVP_EncodeBlock((unsigned char *)out, data, (int)len);
	return out;
}

int ha_etcd_unb64(const char *s, char **out, size_t *len)
{
	size_t n = strlen(s);
	if (n % 4 || n > INT_MAX)
		return -EINVAL;
	char *buf = malloc(n / 4 * 3 + 1);
	if (!buf)
		return -ENOMEM;
	/* EVP_DecodeBlock counts '=' padding as zero bytes: take them off. */
	int r = n ? EVP_DecodeBlock((unsigned char *)buf, (const unsigned char *)s, (int)n) : 0;
	if (r < 0) {
		free(buf);
		return -EINVAL;
	}
	size_t pad = 0;
	if (n && s[n - 1] == '=')
		pad++;
	if (n > 1 && s[n - 2] == '=')
		pad++;
	*len = (size_t)r - pad;
	buf[*len] = 0;
	*out = buf;
	return 0;
}

char *ha_etcd_prefix_end(const char *prefix)
{
	size_t n = strlen(prefix);
	char *end = malloc(n + 1);
	if (!end)
		return NULL;
	memcpy(end, prefix, n + 1);
	/* etcd's clientv3.GetPrefixRangeEnd: bump the last byte below 0xff. */
	while (n > 0) {
		unsigned char c = (unsigned char)end[n - 1];
		if (c < 0xff) {
			end[n - 1] = (char)(c + 1);
			end[n] = 0;
			return end;
		}
		n--;
	}
	end[0] = 0; /* "\0": every key */
	return end;
}

int ha_etcd_int64(const json_t *o, const char *field, int64_t *v)
{
	const json_t *j = json_object_get(o, field);
	*v = 0;
	if (!j || json_is_null(j))
		return 0;
	if (json_is_integer(j)) {
		*v = json_integer_value(j);
		return 0;
	}
	if (!json_is_string(j))
		return -EPROTO;
	const char *s = json_string_value(j);
	char *end;
	errno = 0;
	long long x = strtoll(s, &end, 10);
	if (!*s || *end || errno)
		return -EPROTO;
	*v = x;
	return 0;
}

/* Set field to base64(s); 0 or -ENOMEM. */
static int set_b64(json_t *o, const char *field, const char *s)
{
	char *b = ha_etcd_b64(s, strlen(s));
	if (!b || json_object_set_new(o, field, json_string(b))) {
		free(b);
		return -ENOMEM;
	}
	free(b);
	return 0;
}

static int set_int64(json_t *o, const char *field, int64_t v)
{
	char s[24];
	snprintf(s, sizeof(s), "%" PRId64, v);
	return json_object_set_new(o, field, json_string(s)) ? -ENOMEM : 0;
}

/* key (and range_end when prefix) into o. */
static int set_key(json_t *o, const char *key, bool prefix)
{
	if (set_b64(o, "key", key))
		return -ENOMEM;
	if (!prefix)
		return 0;
	char *end = ha_etcd_prefix_end(key);
	if (!end)
		return -ENOMEM;
	/* all keys: range_end is the single byte "\0" */
	char *b = *end ? ha_etcd_b64(end, strlen(end)) : ha_etcd_b64("", 1);
	free(end);
	if (!b || json_object_set_new(o, "range_end", json_string(b))) {
		free(b);
		return -ENOMEM;
	}
	free(b);
	return 0;
}

json_t *ha_etcd_range_req(const char *key, bool prefix)
{
	json_t *o = json_object();
	if (o && !set_key(o, key, prefix))
		return o;
	json_decref(o);
	return NULL;
}

json_t *ha_etcd_put_req(const char *key, const char *value, int64_t lease)
{
	json_t *o = json_object();
	if (o && !set_b64(o, "key", key) && !set_b64(o, "value", value) &&
	    (!lease || !set_int64(o, "lease", lease)))
		return o;
	json_decref(o);
	return NULL;
}

json_t *ha_etcd_delete_req(const char *key, bool prefix)
{
	return ha_etcd_range_req(key, prefix);
}

static json_t *cmp_json(const struct ha_etcd_cmp *c)
{
	static const char *const targets[] = {"CREATE", "MOD", "VERSION", "VALUE"};
	static const char *const results[] = {"EQUAL", "NOT_EQUAL", "LESS", "GREATER"};
	static const char *const fields[] = {"create_revision", "mod_revision", "version", NULL};
	json_t *o = json_object();
	if (!o || set_b64(o, "key", c->key) ||
	    json_object_set_new(o, "target", json_string(targets[c->target])) ||
	    json_object_set_new(o, "result", json_string(results[c->result])))
		goto fail;
	if (c->target == HA_ETCD_VALUE) {
		if (set_b64(o, "value", c->value ? c->value : ""))
			goto fail;
	} else if (set_int64(o, fields[c->target], c->num)) {
		goto fail;
	}
	return o;
fail:
	json_decref(o);
	return NULL;
}

static json_t *op_json(const struct ha_etcd_op *op)
{
	json_t *req = NULL;
	const char *name = NULL;
	switch (op->kind) {
	case HA_ETCD_PUT:
		req = ha_etcd_put_req(op->key, op->value ? op->value : "", op->lease);
		name = "request_put";
		break;
	case HA_ETCD_DELETE:
		req = ha_etcd_delete_req(op->key, op->prefix);
		name = "request_delete_range";
		break;
	case HA_ETCD_RANGE:
		req = ha_etcd_range_req(op->key, op->prefix);
		name = "request_range";
		break;
	}
	if (!req)
		return NULL;
	json_t *o = json_object();
	if (!o || json_object_set_new(o, name, req)) {
		json_decref(o);
		return NULL;
	}
	return o;
}

static int add_ops(json_t *txn, const char *field, const struct ha_etcd_op *ops, size_t n)
{
	json_t *a = json_array();
	if (!a || json_object_set_new(txn, field, a))
		return -ENOMEM;
	for (size_t i = 0; i < n; i++)
		if (json_array_append_new(a, op_json(&ops[i])))
			return -ENOMEM;
	return 0;
}

json_t *ha_etcd_txn_req(const struct ha_etcd_txn *t)
{
	json_t *o = json_object(), *cmp = json_array();
	if (!o || !cmp || json_object_set_new(o, "compare", cmp))
		goto fail;
	for (size_t i = 0; i < t->ncmp; i++)
		if (json_array_append_new(cmp, cmp_json(&t->cmp[i])))
			goto fail;
	if (add_ops(o, "success", t->success, t->nsuccess) ||
	    add_ops(o, "failure", t->failure, t->nfailure))
		goto fail;
	return o;
fail:
	json_decref(o);
	return NULL;
}

/* ---- replies ---- */

void ha_etcd_range_free(struct ha_etcd_range *r)
{
	for (size_t i = 0; i < r->n; i++) {
		free(r->kvs[i].key);
		free(r->kvs[i].value);
	}
	free(r->kvs);
	memset(r, 0, sizeof(*r));
}

const struct ha_etcd_kv *ha_etcd_range_find(const struct ha_etcd_range *r, const char *key)
{
	for (size_t i = 0; i < r->n; i++)
		if (!strcmp(r->kvs[i].key, key))
			return &r->kvs[i];
	return NULL;
}

void ha_etcd_txn_result_free(struct ha_etcd_txn_result *t)
{
	for (size_t i = 0; i < t->n; i++)
		ha_etcd_range_free(&t->ranges[i]);
	free(t->ranges);
	memset(t, 0, sizeof(*t));
}

static int header_revision(const json_t *reply, int64_t *rev, char *err, size_t errlen)
{
	if (ha_etcd_int64(json_object_get(reply, "header"), "revision", rev)) {
		snprintf(err, errlen, "etcd reply: header.revision is not an integer");
		return -EPROTO;
	}
	return 0;
}

static int kv_parse(const json_t *j, struct ha_etcd_kv *kv, char *err, size_t errlen)
{
	const char *k = json_string_value(json_object_get(j, "key"));
	const json_t *jv = json_object_get(j, "value");
	const char *v = jv ? json_string_value(jv) : "";
	size_t klen;
	if (!k || !v) {
		snprintf(err, errlen, "etcd reply: a kv without a string key or value");
		return -EPROTO;
	}
	if (ha_etcd_unb64(k, &kv->key, &klen) || ha_etcd_unb64(v, &kv->value, &kv->value_len)) {
		snprintf(err, errlen, "etcd reply: a kv's key or value is not base64");
		return -EPROTO;
	}
	if (strlen(kv->key) != klen) {
		snprintf(err, errlen, "etcd reply: a key holds a NUL byte");
		return -EPROTO;
	}
	if (ha_etcd_int64(j, "create_revision", &kv->create_revision) ||
	    ha_etcd_int64(j, "mod_revision", &kv->mod_revision) ||
	    ha_etcd_int64(j, "version", &kv->version) || ha_etcd_int64(j, "lease", &kv->lease)) {
		snprintf(err, errlen,
			 "etcd reply: kv %s: a revision, version or lease is not an integer",
			 kv->key);
		return -EPROTO;
	}
	return 0;
}

int ha_etcd_range_parse(const json_t *reply, struct ha_etcd_range *r, char *err, size_t errlen)
{
	memset(r, 0, sizeof(*r));
	if (!json_is_object(reply)) {
		snprintf(err, errlen, "etcd reply: not a JSON object");
		return -EPROTO;
	}
	int ret = header_revision(reply, &r->revision, err, errlen);
	if (ret)
		return ret;
	if (ha_etcd_int64(reply, "count", &r->count)) {
		snprintf(err, errlen, "etcd reply: count is not an integer");
		return -EPROTO;
	}
	const json_t *kvs = json_object_get(reply, "kvs");
	if (!kvs)
		return 0; /* none: proto3 left the empty list out */
	if (!json_is_array(kvs)) {
		snprintf(err, errlen, "etcd reply: kvs is not an array");
		return -EPROTO;
	}
	size_t n = json_array_size(kvs);
	r->kvs = calloc(n ? n : 1, sizeof(*r->kvs));
	if (!r->kvs)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++) {
		r->n = i + 1; /* so that free sees what was filled */
		ret = kv_parse(json_array_get(kvs, i), &r->kvs[i], err, errlen);
		if (ret) {
			ha_etcd_range_free(r);
			return ret;
		}
	}
	return 0;
}

int ha_etcd_txn_parse(const json_t *reply, struct ha_etcd_txn_result *t, char *err, size_t errlen)
{
	memset(t, 0, sizeof(*t));
	if (!json_is_object(reply)) {
		snprintf(err, errlen, "etcd reply: not a JSON object");
		return -EPROTO;
	}
	int ret = header_revision(reply, &t->revision, err, errlen);
	if (ret)
		return ret;
	const json_t *ok = json_object_get(reply, "succeeded");
	if (ok && !json_is_boolean(ok)) {
		snprintf(err, errlen, "etcd reply: succeeded is not a boolean");
		return -EPROTO;
	}
	t->succeeded = ok && json_is_true(ok);
	const json_t *rs = json_object_get(reply, "responses");
	if (!rs)
		return 0;
	if (!json_is_array(rs)) {
		snprintf(err, errlen, "etcd reply: responses is not an array");
		return -EPROTO;
	}
	size_t n = json_array_size(rs);
	t->ranges = calloc(n ? n : 1, sizeof(*t->ranges));
	if (!t->ranges)
		return -ENOMEM;
	t->n = n;
	for (size_t i = 0; i < n; i++) {
		const json_t *rr = json_object_get(json_array_get(rs, i), "response_range");
		if (!rr)
			continue; /* a put or a delete: an empty range */
		ret = ha_etcd_range_parse(rr, &t->ranges[i], err, errlen);
		if (ret) {
			ha_etcd_txn_result_free(t);
			return ret;
		}
		/* an op's own header is the txn's */
		if (!t->ranges[i].revision)
			t->ranges[i].revision = t->revision;
	}
	return 0;
}

int ha_etcd_keepalive_parse(const json_t *reply, int64_t *ttl, char *err, size_t errlen)
{
	/* A streaming call: the gateway wraps each message as {"result": ...}. */
	const json_t *res = json_object_get(reply, "result");
	if (!res)
		res = reply;
	if (!json_is_object(res)) {
		snprintf(err, errlen, "etcd keepalive reply: not a JSON object");
		return -EPROTO;
	}
	if (ha_etcd_int64(res, "TTL", ttl)) {
		snprintf(err, errlen, "etcd keepalive reply: TTL is not an integer");
		return -EPROTO;
	}
	if (*ttl <= 0) {
		snprintf(err, errlen, "etcd keepalive reply without a TTL: the lease is gone");
		return -ENOENT;
	}
	return 0;
}

int ha_etcd_error(long http_status, const json_t *body, char *err, size_t errlen)
{
	/* A streaming call's error rides in {"error": {...}}. */
	const json_t *e = json_object_get(body, "error");
	if (json_is_object(e))
		body = e;
	const char *msg = json_string_value(json_object_get(body, "message"));
	if (!msg)
		msg = json_string_value(json_object_get(body, "error"));
	if (!msg)
		msg = "(no message)";
	int64_t code = 0;
	if (ha_etcd_int64(body, "code", &code) ||
	    (!code && ha_etcd_int64(body, "grpc_code", &code)))
		code = 0;
	snprintf(err, errlen, "HTTP %ld: %s", http_status, msg);
	/* gRPC codes: 3 invalid argument, 4 deadline, 5 not found, 7 permission
	 * denied, 9 failed precondition, 14 unavailable. */
	if (strstr(msg, "lease not found") || code == 5)
		return -ENOENT;
	if (code == 4 || code == 14 || strstr(msg, "leader") || strstr(msg, "timed out") ||
	    http_status == 503)
		return -ETIMEDOUT;
	if (code == 3 || http_status == 400)
		return -EINVAL;
	if (code == 7 || code == 16)
		return -EPERM;
	return -EIO;
}
