/* ha/emberd/: the control server's parts (docs/ha.md, "Control API"):
 * ctl_route.c (method + URL -> what is asked: pure, unit-tested),
 * ctl_http.c (the socket, HTTP/1.1 connections on the loop), ctl.c (the
 * handlers: requests into the supervisor's calls).  Private to them. */
#ifndef EMBER_HA_EMBERD_CTL_PRIV_H
#define EMBER_HA_EMBERD_CTL_PRIV_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ha/emberd/emberd.h"

#define ED_CTL_REQ_MAX 65536 /* a whole request: head and body */
#define ED_CTL_URL_MAX 2048
#define ED_CTL_WAIT_MAX 30000 /* GET /events?wait_ms= ceiling */
#define ED_CTL_LOG_DEFAULT 65536
#define ED_CTL_LOG_TEXT_MAX (4u << 20) /* ?tail= ceiling of a text/plain reply */
#define ED_CTL_FAULT_MAX 600

enum ed_route {
	ED_R_VMS,	  /* GET /vms */
	ED_R_VM,	  /* GET /vms/NAME */
	ED_R_VM_START,	  /* PUT /vms/NAME/start */
	ED_R_VM_STOP,	  /* PUT /vms/NAME/stop */
	ED_R_VM_RESTART,  /* PUT /vms/NAME/restart */
	ED_R_VM_SNAPSHOT, /* PUT /vms/NAME/snapshot */
	ED_R_VM_LOGS,	  /* GET /vms/NAME/logs */
	ED_R_EVENTS,	  /* GET /events */
	ED_R_RELOAD,	  /* PUT /reload */
	ED_R_HOSTS,	  /* GET /hosts */
	ED_R_STATUS,	  /* GET /status */
};

/* What one request asks, once routed. */
struct ed_ctl_req {
	enum ed_route route;
	char vm[ED_NAME_MAX + 1]; /* the routes under /vms/NAME; "" otherwise */
	/* the query: GET /events */
	uint64_t since, wait_ms;
	/* GET /vms/NAME/logs: the last tail bytes, or from byte offset from
	 * (has_from); json: the paged JSON form instead of text/plain */
	uint64_t tail, from;
	bool has_from, json;
	/* GET /vms, GET /hosts: the page after this name, at most limit (0:
	 * all) entries */
	char after[ED_NAME_MAX + 1];
	uint64_t limit;
	/* a 405: the method the path takes ("GET" or "PUT") */
	const char *allow;
};

/* method ("GET", "PUT"...) and the request's URL (path and query) into
 * *r.  Pure.  0, or the HTTP status to refuse with (400 malformed: a bad
 * VM name, an unknown or malformed query parameter; 404 unknown path;
 * 405 with r->allow set) and a fault message naming what was wrong. */
__attribute__((warn_unused_result)) int ed_ctl_route(const char *method, const char *url,
						     struct ed_ctl_req *r, char *fault,
						     size_t faultlen);

/* A request body (may be NULL or empty: {}) for route, checked: 0 with
 * the fields read into *how / *grace_ms (defaults: policy, 5000), or 400
 * with a fault naming the line and column of bad JSON, the unknown
 * field, or the field of the wrong type.  Pure. */
__attribute__((warn_unused_result)) int ed_ctl_body(enum ed_route route, const char *body,
						    size_t len, enum ed_how *how,
						    uint64_t *grace_ms, char *fault,
						    size_t faultlen);

/* A reply: status, content type, body (owned, malloc'd; NULL: none), and
 * Allow: for a 405. */
struct ed_ctl_reply {
	int status;
	const char *type; /* "application/json", "text/plain; charset=utf-8" */
	char *body;
	size_t len;
	const char *allow;
	const char *headers; /* more header lines, each ending "\r\n" (NULL: none) */
};

void ed_ctl_reply_json(struct ed_ctl_reply *rp, int status, json_t *v); /* steals v */
__attribute__((format(printf, 3, 4))) void ed_ctl_fault(struct ed_ctl_reply *rp, int status,
							const char *fmt, ...);

struct ed_ctl_conn; /* one connection */

/* Another server on the same HTTP code (web.c's TCP listener for metrics
 * and the dashboard): fd is a listening socket the caller bound (made
 * non-blocking here); each whole request goes to fn(arg, ...) instead of
 * ed_ctl_handle (same contract).  0 with *s (ed_ctl_close closes fd), or
 * -errno (fd left to the caller). */
typedef int (*ed_ctl_handler)(void *arg, struct ed_ctl_conn *c, const char *method, const char *url,
			      const char *body, size_t len, struct ed_ctl_reply *rp);
__attribute__((warn_unused_result)) int ed_ctl_serve(struct ed_ctl **s, struct ed_host *h, int fd,
						     ed_ctl_handler fn, void *arg);

/* Handle one whole request (ctl.c): 0 with *rp filled, or 1 when the
 * reply comes later (a long poll), through ed_ctl_conn_reply(). */
int ed_ctl_handle(struct ed_host *h, struct ed_ctl_conn *c, const char *method, const char *url,
		  const char *body, size_t len, struct ed_ctl_reply *rp);
/* The cluster rules' routes (ctl_rules.c): does url belong to them, and
 * handle it (0 with *rp filled). */
bool ed_ctl_rules_url(const char *url);
int ed_ctl_rules(struct ed_host *h, const char *method, const char *url, const char *body,
		 size_t len, struct ed_ctl_reply *rp);
/* A deferred reply for c (takes rp's body).  c is gone after. */
void ed_ctl_conn_reply(struct ed_ctl_conn *c, struct ed_ctl_reply *rp);
/* The handler's slot in c for its deferred state, and its cleanup when
 * the client goes away first (then the handler's state must let go of c). */
void **ed_ctl_conn_slot(struct ed_ctl_conn *c);
void ed_ctl_conn_on_close(struct ed_ctl_conn *c, void (*fn)(struct ed_ctl_conn *c));
struct ed_host *ed_ctl_conn_host(struct ed_ctl_conn *c);
/* The request's Content-Type or Host header ("" when absent or too long;
 * only these two are kept). */
const char *ed_ctl_conn_header(struct ed_ctl_conn *c, const char *name);

/* Valid UTF-8 from bytes p[0..n) (invalid bytes become '?'): a new JSON
 * string, and *used: how many bytes of p it covers (short of n when p
 * ends inside a character and more may follow: more is true). */
json_t *ed_ctl_text_json(const char *p, size_t n, bool more, size_t *used);

#endif
