/* The API's HTTP/1.1 server on a unix socket: Debian's http-parser reads
 * requests, the API thread's event loop (monitor/evloop.h) multiplexes
 * the connections.  Every socket is non-blocking, so a client that sends
 * half a request and stalls holds only its own connection, which the
 * idle sweep closes; bodies over the limit are refused before they are
 * read.  Everything is allocated before the thread's seccomp filter is
 * loaded except request bodies and replies (malloc). */
#include <errno.h>
#include <http_parser.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "monitor/api.h"
#include "monitor/evloop.h"

enum {
	MAX_CONNS = 256,
	URL_MAX = 1024,
	SWEEP_NS = 250 * 1000000ULL, /* how often idle connections are looked for */
};

struct conn {
	struct ev_source src;
	struct http_server *srv;
	int fd; /* -1: free slot */
	http_parser parser;
	uint64_t last_ns; /* last byte in or out */

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
	uint64_t idle_ns;
	http_handler_fn fn;
	void *opaque;
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

static void conn_close(struct conn *c)
{
	struct http_server *s = c->srv;
	char drain[512];
	/* Take what the client still sent, so the kernel does not report our
	 * close to it as a reset before it reads the reply. */
	while (read(c->fd, drain, sizeof(drain)) > 0)
		;
	ev_del(&s->ev, &c->src);
	close(c->fd);
	c->fd = -1;
	free(c->body);
	free(c->out);
	c->body = c->out = NULL;
	s->nr_conns--;
}

/* Write what is queued; watch EPOLLOUT while some is left.  Returns false
 * once the connection is closed. */
static bool conn_flush(struct conn *c)
{
	while (c->out_off < c->out_len) {
		ssize_t n = write(c->fd, c->out + c->out_off, c->out_len - c->out_off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN) {
			if (ev_mod(&c->srv->ev, &c->src, EPOLLOUT))
				break;
			return true;
		}
		if (n <= 0)
			break;
		c->out_off += (size_t)n;
		c->last_ns = ev_now_ns();
	}
	if (c->out_off < c->out_len || c->close_after) {
		conn_close(c);
		return false;
	}
	free(c->out);
	c->out = NULL;
	c->out_len = c->out_off = 0;
	if (ev_mod(&c->srv->ev, &c->src, EPOLLIN)) {
		conn_close(c);
		return false;
	}
	return true;
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
	if (c->expect_continue && p->content_length && p->content_length != ULLONG_MAX)
		out_append(c, "HTTP/1.1 100 Continue\r\n\r\n", 25);
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
	};
	s->fn(s->opaque, &rq, &rs);
	queue_response(c, &rs);
	free(rs.body);
	/* Pause: conn_feed looks at close_after before it parses on. */
	http_parser_pause(p, 1);
	return 0;
}

/* ---- the event loop's callbacks ---- */

static void refuse(struct conn *c, int status, const char *msg)
{
	struct http_resp rs = {0, NULL};
	c->close_after = true;
	http_fault(&rs, status, "%s", msg);
	queue_response(c, &rs);
	free(rs.body);
	conn_flush(c);
}

/* Feed data to the parser; a paused parser (a complete request) keeps the
 * rest in *off for after the reply. */
static bool conn_feed(struct conn *c, const char *buf, size_t len)
{
	size_t off = 0;
	while (off < len) {
		size_t n = http_parser_execute(&c->parser, &c->srv->settings, buf + off, len - off);
		off += n;
		enum http_errno e = HTTP_PARSER_ERRNO(&c->parser);
		if (e == HPE_PAUSED) {
			http_parser_pause(&c->parser, 0);
			if (c->close_after)
				break;
			continue;
		}
		if (e == HPE_CB_headers_complete || e == HPE_CB_body) {
			refuse(c, c->error ? c->error : 400, c->fault);
			return false;
		}
		if (e != HPE_OK) {
			char msg[160];
			snprintf(msg, sizeof(msg), "malformed HTTP request: %s",
				 http_errno_description(e));
			refuse(c, 400, msg);
			return false;
		}
		if (n == 0)
			break;
	}
	if (c->out_len)
		return conn_flush(c);
	if (c->close_after) {
		conn_close(c);
		return false;
	}
	return true;
}

static void on_conn(struct ev_source *src, uint32_t events)
{
	struct conn *c = src->opaque;
	char buf[4096];

	if (events & EPOLLOUT) {
		if (!conn_flush(c))
			return;
		if (!(events & EPOLLIN))
			return;
	}
	if (c->out_len) /* still writing: read later */
		return;
	for (;;) {
		ssize_t n = read(c->fd, buf, sizeof(buf));
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			return;
		if (n <= 0) {
			/* EOF: let http-parser finish a body read to close */
			if (n == 0)
				http_parser_execute(&c->parser, &c->srv->settings, buf, 0);
			conn_close(c);
			return;
		}
		c->last_ns = ev_now_ns();
		if (!conn_feed(c, buf, (size_t)n) || c->out_len)
			return;
	}
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
		http_parser_init(&c->parser, HTTP_REQUEST);
		c->parser.data = c;
		c->last_ns = ev_now_ns();
		if (ev_add(&s->ev, &c->src, fd, EPOLLIN, on_conn, c)) {
			close(fd);
			c->fd = -1;
			continue;
		}
		s->nr_conns++;
	}
}

/* Close connections that sent or took nothing for idle_ns: a client that
 * stalls mid-request must not hold a slot for ever. */
static void on_sweep(struct ev_timer *t)
{
	struct http_server *s = t->opaque;
	uint64_t now = ev_now_ns();
	for (unsigned i = 0; i < MAX_CONNS; i++)
		if (s->conns[i].fd >= 0 && now - s->conns[i].last_ns >= s->idle_ns)
			conn_close(&s->conns[i]);
	(void)!ev_timer_arm(&s->sweep, SWEEP_NS);
}

int http_server_new(struct http_server **out, int listen_fd, size_t max_body, unsigned idle_ms,
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
		s->conns[i].fd = -1;
	s->max_body = max_body;
	s->idle_ns = (uint64_t)idle_ms * 1000000ULL;
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

static bool never(void *opaque)
{
	return false;
}

int http_server_run(struct http_server *s)
{
	int r = ev_timer_arm(&s->sweep, SWEEP_NS);
	return r ? r : ev_run(&s->ev, never, s);
}
