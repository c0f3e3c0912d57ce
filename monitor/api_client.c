/* The API's command-line client (monitor/api_client.h). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include "monitor/api_client.h"

#define REPLY_MAX 65536

static int write_all(int fd, const char *p, size_t n)
{
	while (n) {
		ssize_t w = write(fd, p, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return -1;
		p += w, n -= (size_t)w;
	}
	return 0;
}

/* The first n bytes at p with send_fd riding on them (SCM_RIGHTS,
 * unix(7)): ember takes the fd with the request whose bytes carry it. */
static int send_with_fd(int fd, const char *p, size_t n, int send_fd)
{
	union {
		struct cmsghdr h;
		char buf[CMSG_SPACE(sizeof(int))];
	} u;
	memset(&u, 0, sizeof(u));
	struct iovec iov = {(void *)p, n};
	struct msghdr mh = {.msg_iov = &iov,
			    .msg_iovlen = 1,
			    .msg_control = u.buf,
			    .msg_controllen = sizeof(u.buf)};
	struct cmsghdr *h = CMSG_FIRSTHDR(&mh);
	h->cmsg_level = SOL_SOCKET;
	h->cmsg_type = SCM_RIGHTS;
	h->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(h), &send_fd, sizeof(int));
	ssize_t w;
	while ((w = sendmsg(fd, &mh, MSG_NOSIGNAL)) < 0 && errno == EINTR)
		;
	if (w <= 0)
		return -1;
	return write_all(fd, p + w, n - (size_t)w); /* the rest, if the first send was short */
}

int api_client_call(const char *sock, const char *method, const char *path, const char *body,
		    int send_fd, int timeout_s, int *status, json_t **reply, char *err, size_t len)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	struct timeval tv = {.tv_sec = timeout_s};
	static char buf[REPLY_MAX + 1];
	char head[512];
	*reply = NULL;
	buf[0] = '\0';
	if (strlen(sock) >= sizeof(sa.sun_path))
		return snprintf(err, len, "%s: socket path too long", sock), -1;
	strcpy(sa.sun_path, sock);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		snprintf(err, len, "cannot reach ember at %s: %s", sock, strerror(errno));
		if (fd >= 0)
			close(fd);
		return -1;
	}
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	size_t blen = body ? strlen(body) : 0;
	int n = snprintf(head, sizeof(head),
			 "%s %s HTTP/1.1\r\nHost: localhost\r\nAccept: application/json\r\n"
			 "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n",
			 method, path, blen);
	size_t got = 0;
	char *end = NULL;
	long clen = 0;
	if ((send_fd >= 0 ? send_with_fd(fd, head, (size_t)n, send_fd)
			  : write_all(fd, head, (size_t)n)) ||
	    (blen && write_all(fd, body, blen))) {
		snprintf(err, len, "%s %s: cannot send: %s", method, path, strerror(errno));
		close(fd);
		return -1;
	}
	/* The status line and headers, then Content-Length bytes of body. */
	for (;;) {
		if (!end && (end = strstr(buf, "\r\n\r\n"))) {
			char *cl = NULL;
			for (char *l = strstr(buf, "\r\n"); l && l < end; l = strstr(l + 2, "\r\n"))
				if (!strncasecmp(l + 2, "Content-Length:", 15))
					cl = l + 17;
			clen = cl ? strtol(cl, NULL, 10) : 0;
			if (clen < 0 || clen > REPLY_MAX - (end + 4 - buf))
				break;
		}
		if (end && got >= (size_t)(end + 4 - buf) + (size_t)clen)
			break;
		ssize_t r = got < REPLY_MAX ? read(fd, buf + got, REPLY_MAX - got) : 0;
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0) {
			snprintf(err, len, "%s %s: %s", method, path,
				 r < 0 ? strerror(errno) : "ember closed the connection");
			close(fd);
			return -1;
		}
		got += (size_t)r;
		buf[got] = '\0';
	}
	close(fd);
	if (!end || sscanf(buf, "HTTP/1.%*d %d", status) != 1 || clen < 0 ||
	    clen > REPLY_MAX - (end + 4 - buf)) {
		snprintf(err, len, "%s %s: not an HTTP reply", method, path);
		return -1;
	}
	if (clen)
		*reply = json_loadb(end + 4, (size_t)clen, 0, NULL);
	return 0;
}

int api_client_json(const char *sock, const char *method, const char *path, json_t *body,
		    int send_fd, int timeout_s, int *status, json_t **reply, char *err, size_t len)
{
	char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
	json_t *r = NULL;
	json_decref(body);
	int rc =
	    api_client_call(sock, method, path, text, send_fd, timeout_s, status, &r, err, len);
	free(text);
	if (rc)
		return -1;
	if (*status / 100 != 2) {
		const char *fault = json_string_value(json_object_get(r, "fault_message"));
		snprintf(err, len, "%s", fault ? fault : "(no fault_message)");
		json_decref(r);
		return 1;
	}
	if (reply)
		*reply = r;
	else
		json_decref(r);
	return 0;
}
