/* The byte relay between an authenticated connection and ember's stream
 * socket (ha/tls_relay.h): one poll() loop, two bounded buffers, each
 * direction ending on its own (half-close).  TLS reads and writes are
 * non-blocking; OpenSSL may need to write to read or read to write
 * (SSL_ERROR_WANT_*), and may hold decrypted bytes the socket no longer
 * shows (SSL_pending): both are tracked so poll() never sleeps on them. */
#include <errno.h>
#include <fcntl.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "ha/tls_priv.h"
#include "ha/tls_relay.h"

#define BUF 65536

struct dir {
	unsigned char buf[BUF];
	size_t off, len; /* pending bytes: buf[off, off + len) */
	bool eof;	 /* the reading side ended: no more bytes come */
	bool shut;	 /* the end was passed on (SHUT_WR / close_notify sent) */
};

struct relay {
	unsigned char tail[HA_RELAY_TAIL]; /* the last bytes sent to the network */
	size_t tail_len;
	struct ha_conn *c;
	int local;
	struct dir to_net, to_local;
	short net_ev, local_ev; /* what poll() should wait for */
	struct ha_relay_stats *st;
	char *err;
	size_t errlen;
};

static int fail(struct relay *r, int e, const char *what)
{
	unsigned long ssl = ERR_get_error();
	char buf[256] = "";
	if (ssl)
		ERR_error_string_n(ssl, buf, sizeof(buf));
	snprintf(r->err, r->errlen, "relay: %s: %s", what, ssl ? buf : strerror(e));
	ERR_clear_error();
	return -e;
}

/* An OpenSSL call's "not now": which way the socket must go before the
 * call is tried again.  0 for WANT_*, else -errno. */
static int tls_wait(struct relay *r, int ret, const char *what)
{
	int e = SSL_get_error(r->c->ssl, ret);
	if (e == SSL_ERROR_WANT_READ)
		return r->net_ev |= POLLIN, 0;
	if (e == SSL_ERROR_WANT_WRITE)
		return r->net_ev |= POLLOUT, 0;
	/* A fatal error: no close_notify may follow (SSL_shutdown(3)). */
	SSL_set_quiet_shutdown(r->c->ssl, 1);
	if (e == SSL_ERROR_SYSCALL && !ERR_peek_error())
		return fail(r, errno ? errno : ECONNRESET, what);
	return fail(r, EPROTO, what);
}

/* Network -> to_local.buf.  1 when bytes came (or the end), 0, -errno. */
static int net_read(struct relay *r)
{
	struct dir *d = &r->to_local;
	if (d->eof || d->len)
		return 0; /* only into an empty buffer: it is linear */
	d->off = 0;
	if (!r->c->ssl) {
		ssize_t n = recv(r->c->fd, d->buf, BUF, 0);
		if (n < 0)
			return errno == EAGAIN || errno == EINTR ? (r->net_ev |= POLLIN, 0)
								 : fail(r, errno, "network read");
		d->eof = n == 0;
		d->len = (size_t)n;
		return 1;
	}
	size_t n = 0;
	ERR_clear_error();
	errno = 0;
	int ret = SSL_read_ex(r->c->ssl, d->buf, BUF, &n);
	if (ret == 1) {
		d->len = n;
		return 1;
	}
	if (SSL_get_error(r->c->ssl, ret) == SSL_ERROR_ZERO_RETURN) {
		d->eof = true; /* close_notify: the peer's clean end */
		return 1;
	}
	/* A TCP end without close_notify is a truncation (RFC 8446 §6.1),
	 * an error here, never a clean end. */
	return tls_wait(r, ret, "TLS read");
}

static void keep_tail(struct relay *r, const unsigned char *p, size_t n)
{
	if (n >= HA_RELAY_TAIL) {
		memcpy(r->tail, p + n - HA_RELAY_TAIL, HA_RELAY_TAIL);
		r->tail_len = HA_RELAY_TAIL;
		return;
	}
	size_t keep = r->tail_len + n > HA_RELAY_TAIL ? HA_RELAY_TAIL - n : r->tail_len;
	memmove(r->tail, r->tail + r->tail_len - keep, keep);
	memcpy(r->tail + keep, p, n);
	r->tail_len = keep + n;
}

/* to_net.buf -> network, or its end once empty.  1, 0, -errno. */
static int net_write(struct relay *r)
{
	struct dir *d = &r->to_net;
	if (!d->len) {
		if (!d->eof || d->shut)
			return 0;
		if (!r->c->ssl) {
			if (shutdown(r->c->fd, SHUT_WR))
				return fail(r, errno, "network shutdown");
		} else {
			ERR_clear_error();
			int ret = SSL_shutdown(r->c->ssl); /* 0: sent, the peer's not seen yet */
			if (ret < 0)
				return tls_wait(r, ret, "TLS close_notify");
		}
		d->shut = true;
		if (r->st) {
			memcpy(r->st->tail, r->tail, r->tail_len);
			r->st->tail_len = r->tail_len;
			atomic_store(&r->st->to_net_done, true);
		}
		return 1;
	}
	size_t n = 0;
	if (!r->c->ssl) {
		ssize_t w = send(r->c->fd, d->buf + d->off, d->len, MSG_NOSIGNAL);
		if (w < 0)
			return errno == EAGAIN || errno == EINTR ? (r->net_ev |= POLLOUT, 0)
								 : fail(r, errno, "network write");
		n = (size_t)w;
	} else {
		ERR_clear_error();
		errno = 0;
		int ret = SSL_write_ex(r->c->ssl, d->buf + d->off, d->len, &n);
		if (ret != 1)
			return tls_wait(r, ret, "TLS write");
	}
	keep_tail(r, d->buf + d->off, n);
	d->off += n;
	d->len -= n;
	if (r->st)
		r->st->to_net += n;
	return 1;
}

/* ember's socket -> to_net.buf.  1, 0, -errno. */
static int local_read(struct relay *r)
{
	struct dir *d = &r->to_net;
	if (d->eof || d->len)
		return 0;
	d->off = 0;
	ssize_t n = recv(r->local, d->buf, BUF, 0);
	if (n < 0)
		return errno == EAGAIN || errno == EINTR ? (r->local_ev |= POLLIN, 0)
							 : fail(r, errno, "read from ember");
	d->eof = n == 0;
	d->len = (size_t)n;
	if (d->eof && r->st)
		r->st->local_eof = true;
	return 1;
}

/* to_local.buf -> ember's socket, or its end.  1, 0, -errno. */
static int local_write(struct relay *r)
{
	struct dir *d = &r->to_local;
	if (!d->len) {
		if (!d->eof || d->shut)
			return 0;
		if (shutdown(r->local, SHUT_WR) && errno != ENOTCONN)
			return fail(r, errno, "shutdown toward ember");
		if (r->st)
			r->st->net_eof = true;
		d->shut = true;
		return 1;
	}
	ssize_t w = send(r->local, d->buf + d->off, d->len, MSG_NOSIGNAL);
	if (w < 0 && (errno == EPIPE || errno == ECONNRESET)) {
		/* ember closed its end (it exited): nothing more can reach it,
		 * but what it wrote last (a NACK) must still go out. */
		d->len = 0;
		d->eof = d->shut = true;
		return 1;
	}
	if (w < 0)
		return errno == EAGAIN || errno == EINTR ? (r->local_ev |= POLLOUT, 0)
							 : fail(r, errno, "write to ember");
	d->off += (size_t)w;
	d->len -= (size_t)w;
	if (r->st)
		r->st->to_local += (size_t)w;
	return 1;
}

/* Move what can move without waiting; 0 when nothing more can. */
static int pump(struct relay *r)
{
	int moved;
	do {
		int a = net_read(r), b = local_write(r), c = local_read(r), d = net_write(r);
		if (a < 0 || b < 0 || c < 0 || d < 0)
			return a < 0 ? a : b < 0 ? b : c < 0 ? c : d;
		moved = a | b | c | d;
	} while (moved);
	return 0;
}

static int set_nonblocking(int fd)
{
	int fl = fcntl(fd, F_GETFL);
	return fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) ? -errno : 0;
}

int ha_relay(struct ha_conn *c, int local, int stop_fd, struct ha_relay_stats *st, char *err,
	     size_t errlen)
{
	struct relay *r = calloc(1, sizeof(*r)); /* 128 KiB of buffers: not on a stack */
	if (!r)
		return snprintf(err, errlen, "relay: out of memory"), -ENOMEM;
	r->c = c, r->local = local, r->st = st, r->err = err, r->errlen = errlen;
	int ret = set_nonblocking(local);
	if (ret)
		snprintf(err, errlen, "relay: %s", strerror(-ret));
	while (!ret) {
		r->net_ev = r->local_ev = 0;
		if ((ret = pump(r)))
			break;
		if (r->to_net.shut && r->to_local.shut)
			break; /* both ways ended */
		/* Bytes OpenSSL already decrypted wait in it, not in the
		 * socket: with room for them, go round again at once. */
		bool pending =
		    c->ssl && !r->to_local.len && !r->to_local.eof && SSL_pending(c->ssl);
		/* A side nothing is asked of stays out (-1): its hang-up
		 * would wake poll() for nothing, again and again. */
		struct pollfd p[3] = {{.fd = r->net_ev ? c->fd : -1, .events = r->net_ev},
				      {.fd = r->local_ev ? local : -1, .events = r->local_ev},
				      {.fd = stop_fd, .events = POLLIN}};
		int n = poll(p, stop_fd >= 0 ? 3 : 2, pending ? 0 : -1);
		if (n < 0 && errno != EINTR)
			ret = fail(r, errno, "poll");
		else if (n > 0 && stop_fd >= 0 && p[2].revents)
			ret = (snprintf(err, errlen, "relay: stopped"), -ECANCELED);
		else if (n > 0 && ((p[0].revents | p[1].revents) & POLLNVAL))
			ret = fail(r, EBADF, "poll");
	}
	free(r);
	return ret;
}
