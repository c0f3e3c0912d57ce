/* An HTTP/1.1 client for ember's API socket (ha/api_client.h).  The socket
 * is non-blocking and every wait is a poll() against one deadline, so a
 * stuck ember costs the caller timeout_ms, never more. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "ha/api_client.h"

struct call {
	int fd;
	int64_t deadline_ms; /* CLOCK_MONOTONIC; 0: none */
};

static int64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Wait for events on c->fd until the deadline: 0 or -ETIMEDOUT. */
static int wait_for(const struct call *c, short events)
{
	for (;;) {
		int left = -1;
		if (c->deadline_ms) {
			int64_t d = c->deadline_ms - now_ms();
			if (d <= 0)
				return -ETIMEDOUT;
			left = d > INT32_MAX ? INT32_MAX : (int)d;
		}
		struct pollfd p = {.fd = c->fd, .events = events};
		int n = poll(&p, 1, left);
		if (n > 0)
			return 0;
		if (n < 0 && errno != EINTR)
			return -errno;
	}
}

/* After a send or recv that returned n: 0 when bytes moved, 1 to try
 * again (once the socket is ready for ev, if it was not), or -errno. */
static int again(const struct call *c, ssize_t n, short ev)
{
	if (n >= 0 || errno == EINTR)
		return n < 0;
	if (errno != EAGAIN)
		return -errno;
	int r = wait_for(c, ev);
	return r ? r : 1;
}

/* Send n bytes; the first sendmsg carries send_fd when it is >= 0. */
static int send_bytes(const struct call *c, const char *p, size_t n, int send_fd)
{
	union {
		struct cmsghdr align;
		char buf[CMSG_SPACE(sizeof(int))];
	} ctl;
	while (n) {
		struct iovec iov = {.iov_base = (void *)p, .iov_len = n};
		struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};
		if (send_fd >= 0) {
			memset(&ctl, 0, sizeof(ctl));
			mh.msg_control = ctl.buf;
			mh.msg_controllen = sizeof(ctl.buf);
			struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
			cm->cmsg_level = SOL_SOCKET;
			cm->cmsg_type = SCM_RIGHTS;
			cm->cmsg_len = CMSG_LEN(sizeof(int));
			memcpy(CMSG_DATA(cm), &send_fd, sizeof(int));
		}
		ssize_t w = sendmsg(c->fd, &mh, MSG_NOSIGNAL);
		int a = again(c, w, POLLOUT);
		if (a < 0)
			return a;
		if (a)
			continue;
		send_fd = -1; /* the fd went with the first bytes that left */
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

/* Where the body starts (just past "\r\n\r\n") and its length, once the
 * headers are whole: 1; 0 while they are not; -EPROTO / -EMSGSIZE. */
static int parse_head(const char *buf, size_t got, int *status, size_t *body_at, size_t *clen)
{
	const char *end = memmem(buf, got, "\r\n\r\n", 4);
	if (!end)
		return got >= HA_API_REPLY_MAX ? -EMSGSIZE : 0;
	if (sscanf(buf, "HTTP/1.%*d %d", status) != 1)
		return -EPROTO;
	*body_at = (size_t)(end - buf) + 4;
	*clen = 0;
	for (const char *l = strstr(buf, "\r\n"); l && l < end; l = strstr(l + 2, "\r\n")) {
		if (strncasecmp(l + 2, "Content-Length:", 15))
			continue;
		char *stop;
		unsigned long long v = strtoull(l + 17, &stop, 10);
		if (stop == l + 17 || v > HA_API_REPLY_MAX)
			return -EMSGSIZE;
		*clen = (size_t)v;
	}
	return *body_at + *clen > HA_API_REPLY_MAX ? -EMSGSIZE : 1;
}

/* Read the reply into buf (HA_API_REPLY_MAX + 1 bytes). */
static int read_reply(const struct call *c, char *buf, struct ha_api_reply *reply)
{
	size_t got = 0, body_at = 0, clen = 0;
	int head = 0;
	for (;;) {
		if (!head) {
			head = parse_head(buf, got, &reply->status, &body_at, &clen);
			if (head < 0)
				return head;
		}
		if (head && got >= body_at + clen)
			break;
		ssize_t r = recv(c->fd, buf + got, HA_API_REPLY_MAX - got, 0);
		int a = again(c, r, POLLIN);
		if (a < 0)
			return a;
		if (a)
			continue;
		if (r == 0)
			return -ECONNRESET; /* closed before the reply was whole */
		got += (size_t)r;
		buf[got] = '\0';
	}
	reply->body = clen ? json_loadb(buf + body_at, clen, 0, NULL) : NULL;
	return 0;
}

static int connect_to(struct call *c, const char *sock)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	if (strlen(sock) >= sizeof(sa.sun_path))
		return -ENAMETOOLONG;
	memcpy(sa.sun_path, sock, strlen(sock) + 1);
	c->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (c->fd < 0)
		return -errno;
	/* A unix connect waits for room in a full backlog (a non-blocking
	 * one fails with EAGAIN instead), bounded by SO_SNDTIMEO (unix(7)). */
	if (c->deadline_ms) {
		int64_t left = c->deadline_ms - now_ms();
		struct timeval tv = {.tv_sec = left > 0 ? left / 1000 : 0,
				     .tv_usec = left > 0 ? (left % 1000) * 1000 : 1};
		setsockopt(c->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	}
	while (connect(c->fd, (struct sockaddr *)&sa, sizeof(sa)))
		if (errno != EINTR)
			return errno == EAGAIN || errno == EINPROGRESS ? -ETIMEDOUT : -errno;
	return fcntl(c->fd, F_SETFL, O_NONBLOCK) ? -errno : 0;
}

int ha_api_call(const char *sock, const char *method, const char *path, const json_t *body,
		int send_fd, int timeout_ms, struct ha_api_reply *reply, char *err, size_t errlen)
{
	struct call c = {.fd = -1, .deadline_ms = timeout_ms > 0 ? now_ms() + timeout_ms : 0};
	char head[512], *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
	char *buf = malloc(HA_API_REPLY_MAX + 1);
	const char *stage = "cannot reach ember";
	reply->status = 0;
	reply->body = NULL;
	int r = (body && !text) || !buf ? -ENOMEM : connect_to(&c, sock);
	if (!r) {
		stage = "cannot send";
		size_t blen = text ? strlen(text) : 0;
		int n = snprintf(head, sizeof(head),
				 "%s %s HTTP/1.1\r\nHost: localhost\r\nAccept: application/json\r\n"
				 "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n",
				 method, path, blen);
		r = n < 0 || (size_t)n >= sizeof(head) ? -ENAMETOOLONG
						       : send_bytes(&c, head, (size_t)n, send_fd);
		if (!r && blen)
			r = send_bytes(&c, text, blen, -1);
	}
	if (!r) {
		stage = "no reply";
		buf[0] = '\0';
		r = read_reply(&c, buf, reply);
	}
	if (r)
		snprintf(err, errlen, "%s %s at %s: %s: %s", method, path, sock, stage,
			 r == -EPROTO ? "not an HTTP reply" : strerror(-r));
	if (c.fd >= 0)
		close(c.fd);
	free(buf);
	free(text);
	return r;
}

int ha_api_ok(const char *sock, const char *method, const char *path, const json_t *req,
	      int send_fd, int timeout_ms, json_t **body, char *err, size_t errlen)
{
	struct ha_api_reply rep;
	int r = ha_api_call(sock, method, path, req, send_fd, timeout_ms, &rep, err, errlen);
	if (r)
		return r;
	if (rep.status / 100 != 2) {
		const char *f = ha_api_fault(rep.body);
		snprintf(err, errlen, "%s %s: %d: %s", method, path, rep.status,
			 f ? f : "(no fault_message)");
		json_decref(rep.body);
		return -EPROTO;
	}
	if (body)
		*body = rep.body;
	else
		json_decref(rep.body);
	return 0;
}

bool ha_api_gone(int err)
{
	return err == -ECONNREFUSED || err == -ENOENT;
}

const char *ha_api_fault(const json_t *body)
{
	return json_string_value(json_object_get(body, "fault_message"));
}
