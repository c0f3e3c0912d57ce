/* ha/: a client of etcd 3.4's v3 API through its JSON gateway (/v3/...),
 * with libcurl and jansson: leases, get, range by prefix, put, delete and
 * transactions — what emberd's cluster mode needs (docs/ha.md "Cluster").
 *
 * Gateway pitfalls it hides: keys and values travel base64; int64 fields
 * arrive as strings; proto3 omits zero and default fields (a missing
 * count, create_revision or succeeded is 0 or false); a keepalive reply
 * without a TTL means the lease is gone.
 *
 * Threads: a struct ha_etcd holds one CURL handle (and its connection), so
 * it belongs to one thread at a time; give each thread its own client.
 * The pure encoders and decoders (ha_etcd_b64 ... ha_etcd_error) have no
 * state and may be called from anywhere.
 *
 * Errors: transport (etcd unreachable: connection refused, timed out, no
 * route, or a member with no leader) is -ECONNREFUSED, -ETIMEDOUT or
 * -EHOSTUNREACH, after every endpoint was tried once; a reply that is not
 * what the API promises is -EPROTO; etcd's own refusals map to -ENOENT
 * (lease not found), -EINVAL, -EPERM, -EIO.  err names the endpoint. */
#ifndef EMBER_HA_ETCD_H
#define EMBER_HA_ETCD_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- values ---- */

struct ha_etcd_kv {
	char *key;   /* NUL-terminated (keys here are text) */
	char *value; /* NUL-terminated; value_len bytes before the NUL */
	size_t value_len;
	int64_t create_revision; /* 0: absent in the reply */
	int64_t mod_revision;
	int64_t version;
	int64_t lease; /* 0: not bound to a lease */
};

/* A range's answer: kvs in key order, the total count etcd reports, and
 * the store's revision at which it was read (the response header's). */
struct ha_etcd_range {
	struct ha_etcd_kv *kvs;
	size_t n;
	int64_t count;
	int64_t revision;
};
void ha_etcd_range_free(struct ha_etcd_range *r); /* frees the contents; r may be zeroed again */
/* The kv with this exact key in r, or NULL. */
const struct ha_etcd_kv *ha_etcd_range_find(const struct ha_etcd_range *r, const char *key);

/* ---- transactions (etcd's Txn: if every compare holds, success ops,
 * else failure ops, atomically at one revision) ---- */

enum ha_etcd_target { HA_ETCD_CREATE, HA_ETCD_MOD, HA_ETCD_VERSION, HA_ETCD_VALUE };
enum ha_etcd_result { HA_ETCD_EQ, HA_ETCD_NE, HA_ETCD_LT, HA_ETCD_GT };

struct ha_etcd_cmp {
	const char *key;
	enum ha_etcd_target target;
	enum ha_etcd_result result;
	int64_t num;	   /* create/mod revision or version to compare with */
	const char *value; /* HA_ETCD_VALUE: the value to compare with */
};

enum ha_etcd_op_kind { HA_ETCD_PUT, HA_ETCD_DELETE, HA_ETCD_RANGE };

struct ha_etcd_op {
	enum ha_etcd_op_kind kind;
	const char *key;
	const char *value; /* PUT */
	int64_t lease;	   /* PUT: bind to this lease (0: none) */
	bool prefix;	   /* RANGE/DELETE: every key that starts with key */
};

struct ha_etcd_txn {
	const struct ha_etcd_cmp *cmp;
	size_t ncmp;
	const struct ha_etcd_op *success;
	size_t nsuccess;
	const struct ha_etcd_op *failure;
	size_t nfailure;
};

/* What a txn did: which branch ran, the revision after it, and one range
 * per op of that branch (empty for PUT/DELETE), in op order. */
struct ha_etcd_txn_result {
	bool succeeded;
	int64_t revision;
	struct ha_etcd_range *ranges;
	size_t n;
};
void ha_etcd_txn_result_free(struct ha_etcd_txn_result *t);

/* ---- the pure part (etcd_json.c): encoders and decoders ---- */

/* base64 of len bytes (malloc'd, NUL-terminated), or NULL when out of memory. */
char *ha_etcd_b64(const void *data, size_t len);
/* Decode base64 s: 0 with *out (malloc'd, NUL-terminated, *len bytes
 * before the NUL), -EINVAL when s is not base64, -ENOMEM. */
__attribute__((warn_unused_result)) int ha_etcd_unb64(const char *s, char **out, size_t *len);
/* The range end that makes [prefix, end) every key starting with prefix
 * (malloc'd; "\0" — all keys — when prefix is empty or all 0xff). */
char *ha_etcd_prefix_end(const char *prefix);
/* An int64 field of o that the gateway writes as a string (or a number):
 * 0 with *v (a missing field: 0, as proto3 omits defaults); -EPROTO when
 * present but not an integer. */
__attribute__((warn_unused_result)) int ha_etcd_int64(const json_t *o, const char *field,
						      int64_t *v);

/* Request bodies (new references, NULL when out of memory). */
json_t *ha_etcd_range_req(const char *key, bool prefix);
json_t *ha_etcd_put_req(const char *key, const char *value, int64_t lease);
json_t *ha_etcd_delete_req(const char *key, bool prefix);
json_t *ha_etcd_txn_req(const struct ha_etcd_txn *t);

/* Reply decoders: 0 with the result filled (the caller frees it), or
 * -EPROTO with what is wrong in err.  keepalive: -ENOENT when the reply
 * has no TTL (or TTL 0): the lease is gone. */
__attribute__((warn_unused_result)) int
ha_etcd_range_parse(const json_t *reply, struct ha_etcd_range *r, char *err, size_t errlen);
__attribute__((warn_unused_result)) int
ha_etcd_txn_parse(const json_t *reply, struct ha_etcd_txn_result *t, char *err, size_t errlen);
__attribute__((warn_unused_result)) int ha_etcd_keepalive_parse(const json_t *reply, int64_t *ttl,
								char *err, size_t errlen);
/* The -errno for an error reply (HTTP status and the gateway's {"error",
 * "code", "message"} body, which may be NULL), its message in err.
 * -ETIMEDOUT for etcd's own "unavailable / no leader / timed out" (the
 * member cannot serve: try another), -ENOENT for "lease not found". */
int ha_etcd_error(long http_status, const json_t *body, char *err, size_t errlen);

/* ---- the client (etcd.c) ---- */

struct ha_etcd;

/* A client for endpoints "http://a:2379,http://b:2379" (tried in order;
 * a transport error moves to the next, which is then kept); each request
 * bounded by timeout_ms.  Connects lazily.  0 or -EINVAL/-ENOMEM with err. */
__attribute__((warn_unused_result)) int ha_etcd_new(struct ha_etcd **e, const char *endpoints,
						    int timeout_ms, char *err, size_t errlen);
void ha_etcd_free(struct ha_etcd *e);
/* The endpoint the last request went to (or will go to first). */
const char *ha_etcd_endpoint(const struct ha_etcd *e);

/* Leases: grant one of ttl_s seconds (0 with *id); keep it alive once (0
 * with the TTL etcd now gives it, -ENOENT when it is gone); revoke it (its
 * keys are deleted with it). */
__attribute__((warn_unused_result)) int ha_etcd_lease_grant(struct ha_etcd *e, int64_t ttl_s,
							    int64_t *id, char *err, size_t errlen);
__attribute__((warn_unused_result)) int
ha_etcd_lease_keepalive(struct ha_etcd *e, int64_t id, int64_t *ttl, char *err, size_t errlen);
__attribute__((warn_unused_result)) int ha_etcd_lease_revoke(struct ha_etcd *e, int64_t id,
							     char *err, size_t errlen);

/* Get key, or with prefix every key that starts with key: 0 with *r
 * (r->n 0 when none; the caller frees it). */
__attribute__((warn_unused_result)) int ha_etcd_get(struct ha_etcd *e, const char *key, bool prefix,
						    struct ha_etcd_range *r, char *err,
						    size_t errlen);
/* Put key = value (bound to lease unless 0): 0 with *revision (may be NULL). */
__attribute__((warn_unused_result)) int ha_etcd_put(struct ha_etcd *e, const char *key,
						    const char *value, int64_t lease,
						    int64_t *revision, char *err, size_t errlen);
/* Delete key (or every key under it): 0 with *deleted (may be NULL). */
__attribute__((warn_unused_result)) int ha_etcd_delete(struct ha_etcd *e, const char *key,
						       bool prefix, int64_t *deleted, char *err,
						       size_t errlen);
/* Run t: 0 with *res (the caller frees it) whichever branch ran. */
__attribute__((warn_unused_result)) int ha_etcd_txn_run(struct ha_etcd *e,
							const struct ha_etcd_txn *t,
							struct ha_etcd_txn_result *res, char *err,
							size_t errlen);

/* True for the errors that mean "etcd unreachable" (retry later). */
bool ha_etcd_unreachable(int err);

#endif
