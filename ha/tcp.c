/* TCP for migration streams (ha/tls_relay.h): listen, accept one, dial.
 * Numeric addresses or names (getaddrinfo); keepalive and a user timeout
 * on every connection, so a peer that vanishes without a reset ends the
 * relay within a minute instead of never. */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "ha/tls_relay.h"

int ha_split_hostport(const char *s, char *host, size_t hostlen, char *port, size_t portlen)
{
	const char *h = s, *colon;
	size_t hl;
	if (*s == '[') { /* [v6]:port */
		const char *close = strchr(s, ']');
		if (!close || close[1] != ':')
			return -EINVAL;
		h = s + 1;
		hl = (size_t)(close - h);
		colon = close + 1;
	} else {
		colon = strrchr(s, ':');
		if (!colon || memchr(s, ':', (size_t)(colon - s)))
			return -EINVAL; /* a bare v6 address needs brackets */
		hl = (size_t)(colon - s);
	}
	const char *p = colon + 1;
	size_t pl = strlen(p);
	if (!hl || hl >= hostlen || !pl || pl >= portlen || pl > 5 || strspn(p, "0123456789") != pl)
		return -EINVAL;
	unsigned long v = 0;
	for (size_t i = 0; i < pl; i++)
		v = v * 10 + (unsigned long)(p[i] - '0');
	if (v > 65535)
		return -EINVAL;
	memcpy(host, h, hl);
	host[hl] = '\0';
	memcpy(port, p, pl + 1);
	return 0;
}

static int resolve(const char *hostport, bool passive, struct addrinfo **res, char *err, size_t len)
{
	char host[256], port[8];
	if (ha_split_hostport(hostport, host, sizeof(host), port, sizeof(port)))
		return snprintf(err, len, "%s: not ADDR:PORT (an IPv6 address in brackets)",
				hostport),
		       -EINVAL;
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM,
				 .ai_flags = passive ? AI_PASSIVE : AI_ADDRCONFIG};
	int g = getaddrinfo(host, port, &hints, res);
	if (g)
		return snprintf(err, len, "%s: %s", hostport, gai_strerror(g)), -EHOSTUNREACH;
	return 0;
}

static void tune(int fd)
{
	int on = 1, idle = 10, intvl = 5, cnt = 4;
	unsigned user_timeout_ms = 60000;
	setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof(on));
	setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof(idle));
	setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof(intvl));
	setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof(cnt));
	setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &user_timeout_ms, sizeof(user_timeout_ms));
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on,
		   sizeof(on)); /* the hand-over's small records */
}

int ha_tcp_listen(const char *hostport, unsigned *bound_port, char *err, size_t len)
{
	struct addrinfo *res;
	int r = resolve(hostport, true, &res, err, len), fd = -1, on = 1;
	if (r)
		return r;
	r = -EADDRNOTAVAIL;
	for (struct addrinfo *a = res; a && fd < 0; a = a->ai_next) {
		fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
		if (fd < 0)
			continue;
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on));
		if (bind(fd, a->ai_addr, a->ai_addrlen) || listen(fd, 4)) {
			r = -errno;
			close(fd);
			fd = -1;
		}
	}
	freeaddrinfo(res);
	if (fd < 0)
		return snprintf(err, len, "listen on %s: %s", hostport, strerror(-r)), r;
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	*bound_port = 0;
	if (!getsockname(fd, (struct sockaddr *)&ss, &sl))
		*bound_port =
		    ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
						   : ((struct sockaddr_in *)&ss)->sin_port);
	return fd;
}

int ha_tcp_accept(int lfd, int timeout_ms, char *peer, size_t peerlen, char *err, size_t len)
{
	struct pollfd p = {.fd = lfd, .events = POLLIN};
	int n;
	while ((n = poll(&p, 1, timeout_ms > 0 ? timeout_ms : -1)) < 0 && errno == EINTR)
		;
	if (n == 0)
		return snprintf(err, len, "no connection came in %d s", timeout_ms / 1000),
		       -ETIMEDOUT;
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	int fd = n < 0 ? -1 : accept4(lfd, (struct sockaddr *)&ss, &sl, SOCK_CLOEXEC);
	if (fd < 0)
		return snprintf(err, len, "accept: %s", strerror(errno)), -errno;
	char h[NI_MAXHOST] = "?", s[NI_MAXSERV] = "?";
	getnameinfo((struct sockaddr *)&ss, sl, h, sizeof(h), s, sizeof(s),
		    NI_NUMERICHOST | NI_NUMERICSERV);
	snprintf(peer, peerlen, ss.ss_family == AF_INET6 ? "[%s]:%s" : "%s:%s", h, s);
	tune(fd);
	return fd;
}

/* One address within timeout_ms: fd, or -errno. */
static int dial(const struct addrinfo *a, int timeout_ms)
{
	int fd =
	    socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, a->ai_protocol);
	if (fd < 0)
		return -errno;
	int r = connect(fd, a->ai_addr, a->ai_addrlen) ? -errno : 0;
	if (r == -EINPROGRESS) {
		struct pollfd p = {.fd = fd, .events = POLLOUT};
		int n, e = 0;
		socklen_t el = sizeof(e);
		while ((n = poll(&p, 1, timeout_ms)) < 0 && errno == EINTR)
			;
		r = n == 0						     ? -ETIMEDOUT
		    : n < 0 || getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &el) ? -errno
									     : -e;
	}
	if (!r && fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK))
		r = -errno;
	if (r) {
		close(fd);
		return r;
	}
	tune(fd);
	return fd;
}

int ha_tcp_connect(const char *hostport, int timeout_ms, char *err, size_t len)
{
	struct addrinfo *res;
	int r = resolve(hostport, false, &res, err, len);
	if (r)
		return r;
	int fd = -EHOSTUNREACH;
	for (struct addrinfo *a = res; a && fd < 0; a = a->ai_next)
		fd = dial(a, timeout_ms);
	freeaddrinfo(res);
	if (fd < 0)
		snprintf(err, len, "connect to %s: %s", hostport, strerror(-fd));
	return fd;
}
