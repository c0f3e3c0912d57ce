/* ha/: a client of ember's API socket, for the controllers (ember-migrate,
 * emberd).  HTTP/1.1 over a unix socket, one request per connection, JSON
 * bodies (jansson), and optionally one file descriptor riding on the
 * request's first bytes (SCM_RIGHTS, unix(7)): that is how a jailed ember
 * that never opens a socket gets its migration stream (docs/migration.md).
 * Thread-safe: no state outside the call. */
#ifndef EMBER_HA_API_CLIENT_H
#define EMBER_HA_API_CLIENT_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

/* The largest reply read (status line, headers and body). */
#define HA_API_REPLY_MAX 65536

struct ha_api_reply {
	int status;   /* the HTTP status: 200, 204, 400... */
	json_t *body; /* the reply's JSON (NULL: no body, or not JSON); the caller's */
};

/* METHOD path with body (NULL: none) to ember's API socket at sock, with
 * send_fd (-1: none) passed along; the whole call bounded by timeout_ms
 * (0: no bound).  body is only read.  0 with *reply filled (any status:
 * a 400 is a reply too), or a negative errno with the reason in err:
 * -ECONNREFUSED / -ENOENT when nothing listens at sock (see
 * ha_api_gone()), -ETIMEDOUT, -EPROTO (not an HTTP reply), -EMSGSIZE,
 * or what connect/send/recv said.  send_fd stays the caller's. */
__attribute__((warn_unused_result)) int
ha_api_call(const char *sock, const char *method, const char *path, const json_t *body, int send_fd,
	    int timeout_ms, struct ha_api_reply *reply, char *err, size_t errlen);

/* ha_api_call() that must get a 2xx: 0 (with *body, if body is not NULL,
 * the reply's JSON or NULL, the caller's), -EPROTO with "METHOD path: 400:
 * fault_message" in err for another status, or ha_api_call()'s errors. */
__attribute__((warn_unused_result)) int ha_api_ok(const char *sock, const char *method,
						  const char *path, const json_t *req, int send_fd,
						  int timeout_ms, json_t **body, char *err,
						  size_t errlen);

/* True when ha_api_call()'s error says that no process serves the socket
 * any more: its file is gone or connecting is refused (the ember behind
 * it has exited).  A timeout is not "gone": a stuck process still is. */
bool ha_api_gone(int err);

/* The fault_message of an error reply, or NULL. */
const char *ha_api_fault(const json_t *body);

#endif
