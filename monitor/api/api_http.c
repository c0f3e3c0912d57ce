/* The API's HTTP/1.1 server on a unix socket: Debian's http-parser reads
 * requests, the API thread's event loop (base/evloop.h) multiplexes
 * the connections.  Every socket is non-blocking and every connection
 * has a clock (docs/api.md, "Limits"):
 *   - a request must arrive in full (headers and body) within request_ns
 *     of its first byte, or of the accept for a connection's first (as
 *     HAProxy's `timeout http-request`): else 408 and close, so a client
 *     that trickles a byte a second holds its slot seconds, not a day;
 *   - a reply must be taken in full within request_ns of being queued;
 *     one reply at a time is queued (the next request is not parsed
 *     before), so a client that does not read costs one reply's bytes
 *     and is closed at that deadline;
 *   - any connection that sends and takes nothing for idle_ns is closed
 *     (keep-alive ones between requests, too: nginx's keepalive_timeout);
 *   - with all MAX_CONNS slots taken, a new client takes the slot of an
 *     idle keep-alive connection (the longest idle), else of the one
 *     whose request or reply has been on its way longest (as nginx
 *     reuses keep-alive connections; the slowest go first).  A request
 *     being answered (deferred) is never cut.
 * Bodies over the limit are refused before they are read.  Everything is
 * allocated before the thread's seccomp filter is loaded except request
 * bodies and replies (malloc). */
#include <errno.h>
#include <http_parser.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "monitor/api/api.h"
#include "base/evloop.h"

enum {
	MAX_CONNS = 256,
	URL_MAX = 1024,
	IN_MAX = 4096,	   /* bytes read at a time, kept until parsed */
	PUMP_READS = 16,   /* reads per connection per wake-up: then the others' turn */
	DRAIN_MAX = 65536, /* what a close reads of what the client still sent */
	SWEEP_MS = 250,	   /* how often the clocks are looked at */
	FDS_MAX = 8,	   /* room for this many passed fds: more is refused, not truncated */
};
#define NS_PER_MS (1000000ULL)

struct conn {
	struct ev_source src;
	struct http_server *srv;
	int fd;		 /* -1: free slot */
	uint32_t events; /* what epoll watches for it now */
	uint64_t serial; /* tickets: serial * MAX_CONNS + slot */
	http_parser parser;
	uint64_t last_ns; /* last byte in or out */
	uint64_t req_ns;  /* the request on its way began (its first byte, or the accept) */
	uint64_t out_ns;  /* the reply being written was queued */
	bool reading;	  /* a request is on its way (from its first byte to its last) */
	bool pending;	  /* its handler answers later (HTTP_DEFERRED) */
	int fd_in;	  /* a file descriptor that came with the request (SCM_RIGHTS), or -1 */

	char in[IN_MAX]; /* read, not yet parsed: pipelined requests wait here */
	size_t in_off, in_len;

	char url[URL_MAX + 1];
	size_t url_len;
	char *body;
	size_t body_len, body_cap;
	char hdr[16];	/* the header field being read, lower-cased prefix */
	size_t hdr_len; /* its whole length */
	bool in_value, expect_continue;
	int error; /* a request to refuse (status) once its headers are read */
	char fault[160];

	char *out;
	size_t out_len, out_off;
	bool close_after;
};

struct http_server {
	struct evloop ev;
	struct ev_source listen_src;
	struct ev_timer sweep;
	http_parser_settings settings;
	size_t max_body;
	uint64_t idle_ns, request_ns;
	http_handler_fn fn;
	void *opaque;
	uint64_t serial;
	unsigned nr_conns;
	struct conn conns[MAX_CONNS];
};

/* ---- replies ---- */

void http_reply_json(struct http_resp *rs, int status, json_t *obj)
{
	rs->status = status;
	free(rs->body);
	rs->body = obj ? json_dumps(obj, JSON_COMPACT) : NULL;
	json_decref(obj);
}

void http_fault(struct http_resp *rs, int status, const char *fmt, ...)
{
	char msg[API_FAULT_MAX];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	http_reply_json(rs, status, json_pack("{s:s}", "fault_message", msg));
}

static const char *reason(int status)
{
	switch (status) {
	case 100:
		return "Continue";
	case 200:
		return "OK";
	case 204:
		return "No Content";
	case 400:
		return "Bad Request";
	case 404:
		return "Not Found";
	case 405:
		return "Method Not Allowed";
	case 408:
		return "Request Timeout";
	case 413:
		return "Payload Too Large";
	case 500:
		return "Internal Server Error";
	case 503:
		return "Service Unavailable";
	default:
		return "Unknown";
	}
}

static int out_append(struct conn *c, const char *data, size_t n)
{
	if (c->out_len + n > SIZE_MAX / 2)
		return -ENOMEM;
	char *p = realloc(c->out, c->out_len + n);
	if (!p)
		return -ENOMEM;
	if (!c->out_len)
		c->out_ns = ev_now_ns(); /* the reply's clock starts */
	memcpy(p + c->out_len, data, n);
	c->out = p;
	c->out_len += n;
	return 0;
}

static void queue_response(struct conn *c, const struct http_resp *rs)
{
	char head[256];
	size_t blen = rs->body ? strlen(rs->body) : 0;
	int n;
	if (rs->status == 204)
		n = snprintf(head, sizeof(head),
			     "HTTP/1.1 204 No Content\r\nServer: ember\r\n%s\r\n",
			     c->close_after ? "Connection: close\r\n" : "");
	else
		n = snprintf(head, sizeof(head),
			     "HTTP/1.1 %d %s\r\nServer: ember\r\nContent-Type: application/json\r\n"
			     "Content-Length: %zu\r\n%s\r\n",
			     rs->status, reason(rs->status), blen,
			     c->close_after ? "Connection: close\r\n" : "");
	if (out_append(c, head, (size_t)n) || (blen && out_append(c, rs->body, blen)))
		c->close_after = true; /* out of memory: drop the client */
}

/* A fault reply, and nothing more on this connection. */
static void refuse(struct conn *c, int status, const char *msg)
{
	struct http_resp rs = {0, NULL};
	c->close_after = true;
	http_fault(&rs, status, "%s", msg);
	queue_response(c, &rs);
	free(rs.body);
}

static void conn_close(struct conn *c)
{
	struct http_server *s = c->srv;
	char drain[512];
	/* Take what the client still sent (a bounded amount: a client that
	 * keeps sending must not keep us here), so the kernel does not report
	 * our close to it as a reset before it reads the reply. */
	for (size_t n = 0; n < DRAIN_MAX; n += sizeof(drain))
		if (read(c->fd, drain, sizeof(drain)) <= 0)
			break;
	ev_del(&s->ev, &c->src);
	close(c->fd);
	c->fd = -1;
	if (c->fd_in >= 0)
		close(c->fd_in);
	c->fd_in = -1;
	free(c->body);
	free(c->out);
	c->body = c->out = NULL;
	s->nr_conns--;
}

/* Write what is queued: 1 all of it, 0 the socket is full, -1 failed. */
static int conn_write(struct conn *c)
{
	while (c->out_off < c->out_len) {
		ssize_t n = write(c->fd, c->out + c->out_off, c->out_len - c->out_off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			return 0;
		if (n <= 0)
			return -1;
		c->out_off += (size_t)n;
		c->last_ns = ev_now_ns();
	}
	free(c->out);
	c->out = NULL;
	c->out_len = c->out_off = 0;
	return 1;
}

/* Cut a connection whose clock ran out (or whose slot a new client
 * needs): a fault reply when nothing was being written (one try, without
 * waiting), then close. */
static void give_up(struct conn *c, int status, const char *msg)
{
	if (!c->out_len) {
		refuse(c, status, msg);
		(void)conn_write(c);
	}
	conn_close(c);
}

/* ---- http-parser callbacks ---- */

static int on_message_begin(http_parser *p)
{
	struct conn *c = p->data;
	c->url_len = 0;
	c->body_len = 0;
	c->hdr_len = 0;
	c->in_value = c->expect_continue = false;
	c->error = 0;
	return 0;
}

static int on_url(http_parser *p, const char *at, size_t n)
{
	struct conn *c = p->data;
	if (c->url_len + n > URL_MAX) {
		c->error = 400;
		snprintf(c->fault, sizeof(c->fault), "request path longer than %d bytes", URL_MAX);
		c->url_len = URL_MAX;
		return 0;
	}
	memcpy(c->url + c->url_len, at, n);
	c->url_len += n;
	return 0;
}

static int on_header_field(http_parser *p, const char *at, size_t n)
{
	struct conn *c = p->data;
	if (c->in_value) { /* a new field */
		c->hdr_len = 0;
		c->in_value = false;
	}
	for (size_t i = 0; i < n; i++, c->hdr_len++)
		if (c->hdr_len < sizeof(c->hdr))
			c->hdr[c->hdr_len] = (char)(at[i] | 0x20);
	return 0;
}

/* Only Expect matters (curl sends "Expect: 100-continue" before a large
 * body and waits for the 100); the rest are http-parser's business. */
static int on_header_value(http_parser *p, const char *at, size_t n)
{
	struct conn *c = p->data;
	if (!c->in_value && c->hdr_len == 6 && memcmp(c->hdr, "expect", 6) == 0 && n >= 12 &&
	    strncasecmp(at, "100-continue", 12) == 0)
		c->expect_continue = true;
	c->in_value = true;
	return 0;
}

static int on_headers_complete(http_parser *p)
{
	struct conn *c = p->data;
	struct http_server *s = c->srv;
	if (!c->error && p->content_length != ULLONG_MAX && p->content_length > s->max_body) {
		c->error = 400;
		snprintf(c->fault, sizeof(c->fault),
			 "Request payload with size %llu is larger than the limit of %zu allowed "
			 "by server.",
			 (unsigned long long)p->content_length, s->max_body);
	}
	if (c->error) {
		/* Answer now and read no further: the body may never come.  (1
		 * would mean "no body" to http-parser; other values fail.) */
		return -1;
	}
	if (c->expect_continue && p->content_length && p->content_length != ULLONG_MAX &&
	    out_append(c, "HTTP/1.1 100 Continue\r\n\r\n", 25))
		c->close_after = true;
	return 0;
}

static int on_body(http_parser *p, const char *at, size_t n)
{
	struct conn *c = p->data;
	struct http_server *s = c->srv;
	if (c->body_len + n > s->max_body) {
		c->error = 400;
		snprintf(c->fault, sizeof(c->fault),
			 "Request payload is larger than the limit of %zu allowed by server.",
			 s->max_body);
		return 1;
	}
	if (c->body_len + n + 1 > c->body_cap) {
		size_t cap = c->body_cap ? c->body_cap : 1024;
		while (cap < c->body_len + n + 1)
			cap *= 2;
		if (cap > s->max_body + 1)
			cap = s->max_body + 1;
		char *b = realloc(c->body, cap);
		if (!b) {
			c->error = 500;
			snprintf(c->fault, sizeof(c->fault), "out of memory");
			return 1;
		}
		c->body = b;
		c->body_cap = cap;
	}
	memcpy(c->body + c->body_len, at, n);
	c->body_len += n;
	return 0;
}

static int on_message_complete(http_parser *p)
{
	struct conn *c = p->data;
	struct http_server *s = c->srv;
	struct http_resp rs = {500, NULL};

	c->reading = false;
	c->url[c->url_len] = '\0';
	char *q = strchr(c->url, '?');
	if (q)
		*q = '\0';
	if (c->body)
		c->body[c->body_len] = '\0';
	if (!http_should_keep_alive(p))
		c->close_after = true;
	struct http_req rq = {
	    .method = (int)p->method,
	    .method_name = http_method_str((enum http_method)p->method),
	    .path = c->url,
	    .body = c->body ? c->body : "",
	    .body_len = c->body_len,
	    .ticket = c->serial * MAX_CONNS + (uint64_t)(c - s->conns),
	    .fd = &c->fd_in,
	};
	s->fn(s->opaque, &rq, &rs);
	/* An fd the handler did not take is closed: one that came with a
	 * request it was not for must not stay open in ember. */
	if (c->fd_in >= 0)
		close(c->fd_in);
	c->fd_in = -1;
	if (rs.status == HTTP_DEFERRED)
		c->pending = true;
	else
		queue_response(c, &rs);
	free(rs.body);
	/* One request at a time: the rest waits in c->in until this one's
	 * reply is written. */
	http_parser_pause(p, 1);
	return 0;
}

/* ---- moving a connection on ---- */

/* Parse what c->in holds, up to the end of a request (the parser pauses
 * there) or of the bytes. */
static void conn_parse(struct conn *c)
{
	size_t left = c->in_len - c->in_off;
	size_t n = http_parser_execute(&c->parser, &c->srv->settings, c->in + c->in_off, left);
	enum http_errno e = HTTP_PARSER_ERRNO(&c->parser);
	c->in_off += n;
	if (e == HPE_PAUSED) {
		http_parser_pause(&c->parser, 0);
	} else if (e == HPE_CB_headers_complete || e == HPE_CB_body) {
		refuse(c, c->error ? c->error : 400, c->fault);
	} else if (e != HPE_OK || (n == 0 && left)) {
		char msg[160];
		snprintf(msg, sizeof(msg), "malformed HTTP request: %s",
			 http_errno_description(e == HPE_OK ? HPE_UNKNOWN : e));
		refuse(c, 400, msg);
	}
	if (c->close_after || c->in_off >= c->in_len)
		c->in_off = c->in_len = 0;
}

/* read(2) of the connection, taking what came with the bytes: one file
 * descriptor (SCM_RIGHTS, unix(7)) is kept in c->fd_in for the request
 * being read (a client sends it with the request's bytes, one request at
 * a time).  A second one before that request is answered, more than
 * FDS_MAX in one message (MSG_CTRUNC: the kernel dropped the rest) or
 * ancillary data of another kind refuses the request: every fd that
 * came is closed at once, the client gets a 400 and the connection
 * closes.  MSG_CMSG_CLOEXEC: nothing passed reaches a child. */
static ssize_t conn_read(struct conn *c)
{
	union {
		struct cmsghdr h;
		char buf[CMSG_SPACE(sizeof(int) * FDS_MAX)];
	} u;
	struct iovec iov = {c->in, sizeof(c->in)};
	struct msghdr mh = {.msg_iov = &iov,
			    .msg_iovlen = 1,
			    .msg_control = u.buf,
			    .msg_controllen = sizeof(u.buf)};
	ssize_t n = recvmsg(c->fd, &mh, MSG_CMSG_CLOEXEC);
	if (n < 0 || !mh.msg_controllen)
		return n;
	const char *why = mh.msg_flags & MSG_CTRUNC ? "more file descriptors than one" : NULL;
	for (struct cmsghdr *h = CMSG_FIRSTHDR(&mh); h; h = CMSG_NXTHDR(&mh, h)) {
		if (h->cmsg_level != SOL_SOCKET || h->cmsg_type != SCM_RIGHTS) {
			why = "ancillary data other than a file descriptor (SCM_RIGHTS)";
			continue;
		}
		for (size_t i = 0; i < (h->cmsg_len - CMSG_LEN(0)) / sizeof(int); i++) {
			int fd;
			memcpy(&fd, CMSG_DATA(h) + i * sizeof(int), sizeof(fd));
			if (c->fd_in < 0 && !why)
				c->fd_in = fd;
			else
				close(fd), why = why ? why : "more file descriptors than one";
		}
	}
	if (why) {
		char msg[160];
		if (c->fd_in >= 0)
			close(c->fd_in);
		c->fd_in = -1;
		snprintf(msg, sizeof(msg),
			 "a request carries at most one file descriptor; this one "
			 "came with %s",
			 why);
		refuse(c, 400, msg);
	}
	return n;
}

/* Watch events for c (0: nothing but hang-ups).  False once closed. */
static bool conn_watch(struct conn *c, uint32_t events)
{
	if (c->events != events) {
		if (ev_mod(&c->srv->ev, &c->src, events)) {
			conn_close(c);
			return false;
		}
		c->events = events;
	}
	return true;
}

/* Move c on as far as it goes without blocking: write the queued reply,
 * parse what was read, read more.  False once closed. */
static bool conn_pump(struct conn *c)
{
	struct http_server *s = c->srv;
	for (unsigned reads = 0;;) {
		if (c->pending)
			return conn_watch(c, 0);
		if (c->out_len) {
			int r = conn_write(c);
			if (r == 0)
				return conn_watch(c, EPOLLOUT);
			if (r < 0)
				break;
			continue;
		}
		if (c->close_after)
			break;
		if (c->in_off < c->in_len) {
			if (!c->reading) { /* the next request's first bytes: its clock starts */
				c->reading = true;
				c->req_ns = ev_now_ns();
			}
			conn_parse(c);
			continue;
		}
		if (reads++ == PUMP_READS)
			return conn_watch(c, EPOLLIN);
		ssize_t n = conn_read(c);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			return conn_watch(c, EPOLLIN);
		if (n < 0)
			break;
		if (n == 0) {
			/* EOF: let http-parser finish a body read to close; what
			 * it completes is answered, then the connection closes. */
			http_parser_execute(&c->parser, &s->settings, c->in, 0);
			c->close_after = true;
			continue;
		}
		c->last_ns = ev_now_ns();
		c->in_off = 0;
		c->in_len = (size_t)n;
	}
	conn_close(c);
	return false;
}

static void on_conn(struct ev_source *src, uint32_t events)
{
	struct conn *c = src->opaque;
	/* A client gone while its request is answered: nobody to tell. */
	if (c->pending && (events & (EPOLLHUP | EPOLLERR))) {
		conn_close(c);
		return;
	}
	conn_pump(c);
}

void http_server_complete(struct http_server *s, uint64_t ticket, const struct http_resp *rs)
{
	struct conn *c = &s->conns[ticket % MAX_CONNS];
	if (c->fd < 0 || !c->pending || c->serial != ticket / MAX_CONNS)
		return;
	c->pending = false;
	queue_response(c, rs);
	conn_pump(c);
}

/* The slot a new client takes when all are in use: an idle keep-alive
 * connection (the longest idle) if there is one, else the one whose
 * request (or reply) has been on its way longest.  NULL when every
 * connection's request is being answered. */
static struct conn *victim(struct http_server *s)
{
	struct conn *best = NULL;
	uint64_t best_t = 0;
	bool best_idle = false;
	for (unsigned i = 0; i < MAX_CONNS; i++) {
		struct conn *c = &s->conns[i];
		if (c->fd < 0 || c->pending)
			continue;
		bool idle = !c->reading && !c->out_len;
		uint64_t t = idle ? c->last_ns : c->out_len ? c->out_ns : c->req_ns;
		if (!best || idle > best_idle || (idle == best_idle && t < best_t)) {
			best = c;
			best_t = t;
			best_idle = idle;
		}
	}
	return best;
}

static void on_listen(struct ev_source *src, uint32_t events)
{
	struct http_server *s = src->opaque;
	for (;;) {
		int fd = accept4(src->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0)
			return; /* EAGAIN, or a client that left already */
		struct conn *c = NULL;
		for (unsigned i = 0; i < MAX_CONNS && !c; i++)
			if (s->conns[i].fd < 0)
				c = &s->conns[i];
		if (!c && (c = victim(s)) != NULL) {
			if (c->reading && !c->out_len)
				give_up(c, 503,
					"all API connections are in use: this one, whose request "
					"had been on its way longest, gave its place to a new "
					"client");
			else
				conn_close(c);
		}
		if (!c) {
			static const char busy[] =
			    "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
			    "Content-Length: 51\r\nConnection: close\r\n\r\n"
			    "{\"fault_message\":\"too many open API connections\"}\n";
			(void)!write(fd, busy, sizeof(busy) - 1);
			close(fd);
			continue;
		}
		memset(c, 0, sizeof(*c));
		c->srv = s;
		c->fd = fd;
		c->fd_in = -1;
		c->serial = ++s->serial;
		http_parser_init(&c->parser, HTTP_REQUEST);
		c->parser.data = c;
		/* The first request's clock runs from the accept: a client
		 * that connects and sends nothing holds its slot no longer. */
		c->last_ns = c->req_ns = ev_now_ns();
		c->reading = true;
		c->events = EPOLLIN;
		if (ev_add(&s->ev, &c->src, fd, EPOLLIN, on_conn, c)) {
			close(fd);
			c->fd = -1;
			continue;
		}
		s->nr_conns++;
	}
}

/* The clocks (see the top of this file). */
static void on_sweep(struct ev_timer *t)
{
	struct http_server *s = t->opaque;
	uint64_t now = ev_now_ns();
	for (unsigned i = 0; i < MAX_CONNS; i++) {
		struct conn *c = &s->conns[i];
		if (c->fd < 0 || c->pending)
			continue;
		bool silent = now - c->last_ns >= s->idle_ns;
		if (c->out_len) {
			if (silent || now - c->out_ns >= s->request_ns)
				conn_close(c); /* a client that does not take its reply */
		} else if (c->reading) {
			if (silent || now - c->req_ns >= s->request_ns) {
				char msg[128];
				snprintf(
				    msg, sizeof(msg),
				    "the request did not arrive in full within %llu ms",
				    (unsigned long long)((silent ? s->idle_ns : s->request_ns) /
							 NS_PER_MS));
				give_up(c, 408, msg);
			}
		} else if (silent) {
			conn_close(c); /* keep-alive, idle too long */
		}
	}
	(void)!ev_timer_arm(&s->sweep, SWEEP_MS * NS_PER_MS);
}

int http_server_new(struct http_server **out, int listen_fd, const struct http_limits *lim,
		    http_handler_fn fn, void *opaque)
{
	struct http_server *s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	int r = ev_init(&s->ev);
	if (r) {
		free(s);
		return r;
	}
	for (unsigned i = 0; i < MAX_CONNS; i++)
		s->conns[i].fd = s->conns[i].fd_in = -1;
	s->max_body = lim->max_body;
	s->idle_ns = (uint64_t)lim->idle_ms * NS_PER_MS;
	s->request_ns = (uint64_t)lim->request_ms * NS_PER_MS;
	s->fn = fn;
	s->opaque = opaque;
	s->settings.on_message_begin = on_message_begin;
	s->settings.on_url = on_url;
	s->settings.on_header_field = on_header_field;
	s->settings.on_header_value = on_header_value;
	s->settings.on_headers_complete = on_headers_complete;
	s->settings.on_body = on_body;
	s->settings.on_message_complete = on_message_complete;
	r = ev_add(&s->ev, &s->listen_src, listen_fd, EPOLLIN, on_listen, s);
	if (!r)
		r = ev_timer_init(&s->ev, &s->sweep, on_sweep, s);
	if (r) {
		ev_fini(&s->ev);
		free(s);
		return r;
	}
	*out = s;
	return 0;
}

int http_server_watch(struct http_server *s, struct ev_source *src, int fd, ev_fn fn, void *opaque)
{
	return ev_add(&s->ev, src, fd, EPOLLIN, fn, opaque);
}

static bool never(void *opaque)
{
	return false;
}

int http_server_run(struct http_server *s)
{
	int r = ev_timer_arm(&s->sweep, SWEEP_MS * NS_PER_MS);
	return r ? r : ev_run(&s->ev, never, s);
}
