/* The control server's HTTP/1.1 side (docs/ha.md, "Control API"): a unix
 * socket (mode 0600) watched by emberd's loop, one request per
 * connection, parsed by Debian's http-parser.  Every socket is
 * non-blocking and every connection has a clock: a request must arrive
 * whole within REQUEST_MS of the accept, a reply must be taken within
 * REQUEST_MS of being queued, or the connection is dropped, so a client
 * that stalls costs one slot, never the loop or another client.  A long
 * poll (GET /events?wait_ms=) has no clock of its own here: its handler
 * answers by its own deadline. */
#include <errno.h>
#include <fcntl.h>
#include <http_parser.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "ha/emberd/ctl_priv.h"

enum {
	REQUEST_MS = 5000,
	MAX_CONNS = 128, /* more waiting clients: the newest are refused (503) */
	BODY_MAX = ED_CTL_REQ_MAX,
	DRAIN_MAX = 1 << 20,   /* what a lingering close reads of a refused request */
	ACCEPT_PAUSE_MS = 100, /* out of descriptors: accept again after this */
};

struct ed_ctl {
	struct ed_host *h;
	struct ed_loop *l;
	int fd;
	char path[108]; /* the socket's file, unlinked at close if still ours */
	dev_t dev;
	ino_t ino;
	unsigned nconns;
	struct ed_ctl_conn *conns; /* every open connection, for ed_ctl_close */
	uint64_t pause_timer;	   /* accepting paused (out of descriptors) */
	http_parser_settings settings;
	ed_ctl_handler handle; /* NULL: the control API (ed_ctl_handle) */
	void *harg;
};

struct ed_ctl_conn {
	struct ed_ctl *s;
	struct ed_ctl_conn *prev, *next;
	int fd;
	bool registered; /* on the loop, watched for: */
	uint32_t watching;
	uint64_t timer; /* the clock (request, then reply); 0: none */
	http_parser p;
	size_t got; /* bytes of the request read */
	char url[ED_CTL_URL_MAX + 1];
	/* two headers a handler may check (ed_ctl_conn_header): the rest are
	 * parsed and dropped */
	char hfield[16];
	size_t hfield_len;
	bool in_value;
	char *hval; /* NULL: not one we keep */
	char ctype[128], host[256];
	size_t url_len;
	bool url_long, too_big, complete, deferred;
	bool lingering; /* replied early: the rest of the request is read and dropped */
	char *body;
	size_t body_len;
	char *out;
	size_t out_len, out_off;
	void *slot; /* the handler's deferred state */
	void (*on_close)(struct ed_ctl_conn *c);
};

static const char *reason(int status)
{
	switch (status) {
	case 200:
		return "OK";
	case 202:
		return "Accepted";
	case 204:
		return "No Content";
	case 400:
		return "Bad Request";
	case 403:
		return "Forbidden";
	case 404:
		return "Not Found";
	case 405:
		return "Method Not Allowed";
	case 408:
		return "Request Timeout";
	case 409:
		return "Conflict";
	case 413:
		return "Payload Too Large";
	case 415:
		return "Unsupported Media Type";
	case 500:
		return "Internal Server Error";
	case 503:
		return "Service Unavailable";
	default:
		return "Unknown";
	}
}

static void watch(struct ed_ctl_conn *c, uint32_t ev);

static void conn_close(struct ed_ctl_conn *c)
{
	if (c->on_close)
		c->on_close(c);
	if (c->timer)
		ed_loop_cancel(c->s->l, c->timer);
	if (c->registered)
		ed_loop_del_fd(c->s->l, c->fd);
	close(c->fd);
	c->s->nconns--;
	if (c->prev)
		c->prev->next = c->next;
	else
		c->s->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	free(c->body);
	free(c->out);
	free(c);
}

static void on_clock(void *arg)
{
	struct ed_ctl_conn *c = arg;
	static const char late[] = "HTTP/1.1 408 Request Timeout\r\nConnection: close\r\n"
				   "Content-Type: application/json\r\nContent-Length: 58\r\n\r\n"
				   "{\"fault_message\": \"the request did not arrive within 5 s\"}";
	c->timer = 0;
	if (!c->out) /* a word to a client that stalled mid-request, if it listens */
		(void)!send(c->fd, late, sizeof(late) - 1, MSG_NOSIGNAL | MSG_DONTWAIT);
	conn_close(c);
}

static void clock_start(struct ed_ctl_conn *c)
{
	if (c->timer)
		ed_loop_cancel(c->s->l, c->timer);
	c->timer = ed_loop_timer(c->s->l, REQUEST_MS, on_clock, c);
}

/* The reply is out.  A refused request may still be on its way in: a
 * unix socket closed with unread bytes resets the peer, which then loses
 * the reply (unix(7)), so its rest is read and dropped first (bounded by
 * DRAIN_MAX and the clock), after a half-close that tells the client. */
static void done(struct ed_ctl_conn *c)
{
	if (!c->complete && !c->lingering && !shutdown(c->fd, SHUT_WR)) {
		c->lingering = true;
		watch(c, EPOLLIN);
		if (c->registered)
			return;
	}
	conn_close(c);
}

static void drain(struct ed_ctl_conn *c)
{
	char buf[4096];
	for (;;) {
		ssize_t n = recv(c->fd, buf, sizeof(buf), 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			return;
		c->got += n > 0 ? (size_t)n : 0;
		if (n <= 0 || c->got > DRAIN_MAX) {
			conn_close(c);
			return;
		}
	}
}

/* Write what is queued; done() when it is out, closes c when broken. */
static void flush(struct ed_ctl_conn *c)
{
	while (c->out_off < c->out_len) {
		ssize_t w = send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0 && errno == EAGAIN) {
			watch(c, EPOLLOUT);
			return;
		}
		if (w <= 0) {
			conn_close(c);
			return;
		}
		c->out_off += (size_t)w;
	}
	done(c);
}

static void queue_reply(struct ed_ctl_conn *c, struct ed_ctl_reply *rp)
{
	char head[1024];
	int status = rp->status ? rp->status : 500;
	int n = snprintf(head, sizeof(head),
			 "HTTP/1.1 %d %s\r\nServer: emberd\r\nConnection: close\r\n%s%s%s"
			 "%s%s%s%sContent-Length: %zu\r\n\r\n",
			 status, reason(status), rp->type ? "Content-Type: " : "",
			 rp->type ? rp->type : "", rp->type ? "\r\n" : "",
			 rp->allow ? "Allow: " : "", rp->allow ? rp->allow : "",
			 rp->allow ? "\r\n" : "", rp->headers ? rp->headers : "", rp->len);
	if (n < 0 || (size_t)n >= sizeof(head))
		n = snprintf(head, sizeof(head),
			     "HTTP/1.1 500 Internal Server Error\r\nConnection: close\r\n"
			     "Content-Length: %zu\r\n\r\n",
			     rp->len);
	c->out = malloc((size_t)n + rp->len);
	if (c->out) {
		memcpy(c->out, head, (size_t)n);
		if (rp->len)
			memcpy(c->out + n, rp->body, rp->len);
		c->out_len = (size_t)n + rp->len;
	}
	free(rp->body);
	rp->body = NULL;
	clock_start(c); /* the client has REQUEST_MS to take it */
	flush(c);
}

void ed_ctl_conn_reply(struct ed_ctl_conn *c, struct ed_ctl_reply *rp)
{
	c->deferred = false;
	c->on_close = NULL;
	c->slot = NULL;
	queue_reply(c, rp);
}

void **ed_ctl_conn_slot(struct ed_ctl_conn *c)
{
	return &c->slot;
}

void ed_ctl_conn_on_close(struct ed_ctl_conn *c, void (*fn)(struct ed_ctl_conn *c))
{
	c->on_close = fn;
}

struct ed_host *ed_ctl_conn_host(struct ed_ctl_conn *c)
{
	return c->s->h;
}

static void refuse(struct ed_ctl_conn *c, int status, const char *msg)
{
	struct ed_ctl_reply rp = {0};
	ed_ctl_fault(&rp, status, "%s", msg);
	queue_reply(c, &rp);
}

/* ---- http-parser callbacks: the URL and the body, bounded ---- */

static int on_url(http_parser *p, const char *at, size_t n)
{
	struct ed_ctl_conn *c = p->data;
	if (c->url_len + n > ED_CTL_URL_MAX) {
		c->url_long = true;
		return 0;
	}
	memcpy(c->url + c->url_len, at, n);
	c->url_len += n;
	c->url[c->url_len] = '\0';
	return 0;
}

static int on_hfield(http_parser *p, const char *at, size_t n)
{
	struct ed_ctl_conn *c = p->data;
	if (c->in_value) {
		c->in_value = false;
		c->hfield_len = 0;
	}
	size_t take = c->hfield_len + n < sizeof(c->hfield) ? n : 0;
	memcpy(c->hfield + c->hfield_len, at, take);
	/* a name longer than ours: never matches */
	c->hfield_len = take ? c->hfield_len + n : sizeof(c->hfield);
	return 0;
}

static int on_hvalue(http_parser *p, const char *at, size_t n)
{
	struct ed_ctl_conn *c = p->data;
	if (!c->in_value) {
		c->in_value = true;
		size_t l = c->hfield_len;
		c->hval = l == 12 && !strncasecmp(c->hfield, "content-type", 12) ? c->ctype
			  : l == 4 && !strncasecmp(c->hfield, "host", 4)	 ? c->host
										 : NULL;
		if (c->hval)
			c->hval[0] = '\0';
	}
	size_t cap = c->hval == c->ctype ? sizeof(c->ctype) : sizeof(c->host);
	if (c->hval && strlen(c->hval) + n < cap)
		strncat(c->hval, at, n);
	return 0;
}

const char *ed_ctl_conn_header(struct ed_ctl_conn *c, const char *name)
{
	return !strcasecmp(name, "content-type") ? c->ctype
	       : !strcasecmp(name, "host")	 ? c->host
						 : "";
}

static int on_body(http_parser *p, const char *at, size_t n)
{
	struct ed_ctl_conn *c = p->data;
	if (c->body_len + n > BODY_MAX)
		return 1; /* the request's bound (got) catches it first */
	char *b = realloc(c->body, c->body_len + n + 1);
	if (!b)
		return 1;
	c->body = b;
	memcpy(b + c->body_len, at, n);
	c->body_len += n;
	b[c->body_len] = '\0';
	return 0;
}

static int on_headers(http_parser *p)
{
	struct ed_ctl_conn *c = p->data;
	if (p->content_length != ULLONG_MAX && p->content_length > BODY_MAX) {
		c->too_big = true; /* refused before its body is waited for */
		http_parser_pause(p, 1);
	}
	return 0;
}

static int on_complete(http_parser *p)
{
	struct ed_ctl_conn *c = p->data;
	c->complete = true;
	http_parser_pause(p, 1); /* one request per connection: what follows is not read */
	return 0;
}

static void dispatch(struct ed_ctl_conn *c)
{
	if (c->timer)
		ed_loop_cancel(c->s->l, c->timer);
	c->timer = 0;
	if (c->url_long) {
		refuse(c, 400, "URL too long");
		return;
	}
	struct ed_ctl_reply rp = {0};
	const char *method = http_method_str((enum http_method)c->p.method);
	ed_ctl_handler fn = c->s->handle;
	int r = fn ? fn(c->s->harg, c, method, c->url, c->body, c->body_len, &rp)
		   : ed_ctl_handle(c->s->h, c, method, c->url, c->body, c->body_len, &rp);
	if (r == 1) {
		/* A long poll: keep reading, to see the client hang up. */
		c->deferred = true;
		watch(c, EPOLLIN);
		return;
	}
	queue_reply(c, &rp);
}

static void on_readable(struct ed_ctl_conn *c, uint32_t events)
{
	char buf[4096];
	for (int reads = 0; reads < 16; reads++) {
		ssize_t n = recv(c->fd, buf, sizeof(buf), 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			return;
		if (n == 0 && c->deferred && !(events & EPOLLHUP)) {
			/* a half-close (shutdown(SHUT_WR)) while its reply waits: the
			 * client still listens; only its hang-up (EPOLLHUP, which
			 * epoll reports unasked) ends the wait now */
			watch(c, 0);
			return;
		}
		if (n <= 0) { /* hung up (a long poll's client too) */
			conn_close(c);
			return;
		}
		c->got += (size_t)n;
		if (c->deferred) { /* talks past its one request while it waits */
			if (c->got > 2 * ED_CTL_REQ_MAX)
				conn_close(c);
			continue;
		}
		if (c->got > ED_CTL_REQ_MAX) {
			refuse(c, 413, "request larger than 64 KiB");
			return;
		}
		size_t used = http_parser_execute(&c->p, &c->s->settings, buf, (size_t)n);
		enum http_errno e = HTTP_PARSER_ERRNO(&c->p);
		if (c->too_big) {
			refuse(c, 413, "request body larger than 64 KiB");
			return;
		}
		if (c->complete) {
			dispatch(c);
			return;
		}
		if (e != HPE_OK || used != (size_t)n) {
			char msg[200];
			snprintf(msg, sizeof(msg), "malformed HTTP request: %s",
				 http_errno_description(e));
			refuse(c, 400, msg);
			return;
		}
	}
}

static void on_event(void *arg, uint32_t events)
{
	struct ed_ctl_conn *c = arg;
	if (c->lingering)
		drain(c);
	else if (c->out)
		flush(c);
	else if (events & (EPOLLIN | EPOLLHUP | EPOLLERR))
		on_readable(c, events);
}

/* Watch c for ev (0: only what epoll reports unasked, EPOLLHUP/EPOLLERR).
 * c->registered false after: the loop has no room (the caller closes). */
static void watch(struct ed_ctl_conn *c, uint32_t ev)
{
	if (c->registered && c->watching == ev)
		return;
	if (c->registered)
		ed_loop_del_fd(c->s->l, c->fd);
	c->registered = !ed_loop_add_fd(c->s->l, c->fd, ev, on_event, c);
	c->watching = ev;
}

static void on_accept(void *arg, uint32_t events);

static void accept_again(void *arg)
{
	struct ed_ctl *s = arg;
	s->pause_timer = 0;
	while (ed_loop_add_fd(s->l, s->fd, EPOLLIN, on_accept, s))
		if ((s->pause_timer = ed_loop_timer(s->l, ACCEPT_PAUSE_MS, accept_again, s)))
			return;
}

static void on_accept(void *arg, uint32_t events)
{
	struct ed_ctl *s = arg;
	for (;;) {
		int fd = accept4(s->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0 &&
		    (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM)) {
			/* out of descriptors: the socket stays readable, so stop
			 * watching it a while rather than spin on the loop */
			ed_loop_del_fd(s->l, s->fd);
			s->pause_timer = ed_loop_timer(s->l, ACCEPT_PAUSE_MS, accept_again, s);
			if (!s->pause_timer)
				accept_again(s); /* no memory for a timer: spinning beats deaf */
			return;
		}
		if (fd < 0)
			return; /* EAGAIN: all taken; a client gone already: the next */
		struct ed_ctl_conn *c = calloc(1, sizeof(*c));
		if (!c) {
			close(fd);
			continue;
		}
		c->s = s;
		c->fd = fd;
		c->next = s->conns;
		if (s->conns)
			s->conns->prev = c;
		s->conns = c;
		s->nconns++;
		http_parser_init(&c->p, HTTP_REQUEST);
		c->p.data = c;
		if (s->nconns > MAX_CONNS) {
			refuse(c, 503, "too many connections to emberd's control socket");
			continue;
		}
		clock_start(c);
		watch(c, EPOLLIN);
		if (!c->registered || !c->timer)
			conn_close(c);
	}
}

/* Is something serving path?  1 yes, 0 no (refused: a stale file),
 * -errno when it cannot be told. */
static int served(const char *path)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	memcpy(sa.sun_path, path, strlen(path) + 1);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	int r = connect(fd, (struct sockaddr *)&sa, sizeof(sa)) ? -errno : 1;
	close(fd);
	return r == -ECONNREFUSED ? 0 : r == -EAGAIN ? 1 : r;
}

static int bind_sock(const char *path, char *err, size_t errlen)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	if (strlen(path) >= sizeof(sa.sun_path)) {
		snprintf(err, errlen, "control socket %s: path longer than %zu bytes", path,
			 sizeof(sa.sun_path) - 1);
		return -ENAMETOOLONG;
	}
	memcpy(sa.sun_path, path, strlen(path) + 1);
	struct stat st;
	if (!lstat(path, &st)) {
		if (!S_ISSOCK(st.st_mode)) {
			snprintf(err, errlen, "control socket %s: exists and is not a socket",
				 path);
			return -EEXIST;
		}
		int r = served(path);
		if (r) {
			snprintf(err, errlen, "control socket %s: %s", path,
				 r > 0 ? "another emberd serves it (stop it first)" : strerror(-r));
			return r > 0 ? -EADDRINUSE : r;
		}
		if (unlink(path) && errno != ENOENT) {
			int e = errno;
			snprintf(err, errlen, "control socket %s: cannot remove the stale one: %s",
				 path, strerror(e));
			return -e;
		}
	}
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		snprintf(err, errlen, "control socket: %s", strerror(errno));
		return -errno;
	}
	/* Born 0600: only root (emberd's user) may drive the supervisor. */
	mode_t old = umask(0177);
	int r = bind(fd, (struct sockaddr *)&sa, sizeof(sa)) ? -errno : 0;
	umask(old);
	if (!r && listen(fd, 64))
		r = -errno;
	if (r) {
		snprintf(err, errlen, "control socket %s: %s", path, strerror(-r));
		close(fd);
		return r;
	}
	return fd;
}

/* A server on h's loop, its HTTP callbacks set; NULL when out of memory. */
static struct ed_ctl *server_new(struct ed_host *h)
{
	struct ed_ctl *s = calloc(1, sizeof(*s));
	if (!s)
		return NULL;
	s->h = h;
	s->l = ed_host_loop(h);
	s->settings.on_url = on_url;
	s->settings.on_header_field = on_hfield;
	s->settings.on_header_value = on_hvalue;
	s->settings.on_body = on_body;
	s->settings.on_headers_complete = on_headers;
	s->settings.on_message_complete = on_complete;
	return s;
}

int ed_ctl_open(struct ed_ctl **sp, struct ed_host *h, const char *sock, char *err, size_t errlen)
{
	struct ed_ctl *s = server_new(h);
	if (!s) {
		snprintf(err, errlen, "control socket: out of memory");
		return -ENOMEM;
	}
	s->fd = bind_sock(sock, err, errlen);
	if (s->fd < 0) {
		int r = s->fd;
		free(s);
		return r;
	}
	struct stat st;
	snprintf(s->path, sizeof(s->path), "%s", sock); /* bind_sock checked its length */
	if (!lstat(sock, &st)) {
		s->dev = st.st_dev;
		s->ino = st.st_ino;
	}
	int r = ed_loop_add_fd(s->l, s->fd, EPOLLIN, on_accept, s);
	if (r) {
		snprintf(err, errlen, "control socket %s: %s", sock, strerror(-r));
		close(s->fd);
		unlink(sock);
		free(s);
		return r;
	}
	*sp = s;
	return 0;
}

int ed_ctl_serve(struct ed_ctl **sp, struct ed_host *h, int fd, ed_ctl_handler fn, void *arg)
{
	struct ed_ctl *s = server_new(h);
	if (!s)
		return -ENOMEM;
	s->fd = fd;
	s->handle = fn;
	s->harg = arg;
	int fl = fcntl(fd, F_GETFL);
	int r = fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) ? -errno : 0;
	if (!r)
		r = ed_loop_add_fd(s->l, fd, EPOLLIN, on_accept, s);
	if (r) {
		free(s);
		return r;
	}
	*sp = s; /* path "": nothing to unlink at close */
	return 0;
}

void ed_ctl_close(struct ed_ctl *s)
{
	if (!s)
		return;
	while (s->conns)
		conn_close(s->conns); /* long polls let go of their event watches too */
	if (s->pause_timer)
		ed_loop_cancel(s->l, s->pause_timer);
	else
		ed_loop_del_fd(s->l, s->fd);
	close(s->fd);
	/* unlinked only if still ours: a newer emberd may have replaced it */
	struct stat st;
	if (!lstat(s->path, &st) && st.st_dev == s->dev && st.st_ino == s->ino)
		unlink(s->path);
	free(s);
}
