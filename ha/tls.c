/* Authentication for migration streams (ha/tls_relay.h): TLS 1.3 only,
 * through OpenSSL 3.  Certificates: both sides present one and verify the
 * other's against --tls-ca (mutual TLS); the client also checks that the
 * server's names the host it dialled (RFC 6125).  A pre-shared key: TLS
 * 1.3 external PSK (RFC 8446 §2.2, §4.2.11) with PSK-DHE key exchange, in
 * an OpenSSL session whose master key is the PSK and whose cipher is
 * TLS_AES_128_GCM_SHA256 (the suite the PSK is bound to); a handshake
 * that did not use the PSK is refused. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "ha/tls_priv.h"
#include "ha/tls_relay.h"

struct ha_tls {
	SSL_CTX *ctx; /* NULL: plain */
	bool server, psk_mode;
	struct ha_psk psk;
	const char *peer_name;
};

static const unsigned char tls_aes_128_gcm_sha256[2] = {0x13, 0x01}; /* RFC 8446 §B.4 */
/* The PSK's session is "resumed": its context and the SSL's must match. */
static const unsigned char sid_ctx[] = "ember-migrate";

const char *ha_tls_opts_refusal(const struct ha_tls_opts *o)
{
	bool certs = o->cert || o->key || o->ca, psk = o->psk_file != NULL;
	if (!certs && !psk && !o->insecure_plain)
		return "no authentication chosen: give certificates (--tls-cert, --tls-key, "
		       "--tls-ca), a pre-shared key (--psk-file FILE), or --insecure-plain for "
		       "plain TCP on a trusted network";
	if (o->insecure_plain && (certs || psk))
		return "--insecure-plain goes without --tls-* and --psk-file";
	if (certs && psk)
		return "choose one: certificates (--tls-*) or a pre-shared key (--psk-file)";
	if (certs && !(o->cert && o->key && o->ca))
		return "certificates need all three of --tls-cert, --tls-key and --tls-ca "
		       "(both sides verify the other)";
	if (o->peer_name && !certs)
		return "--tls-peer-name goes with certificates";
	return NULL;
}

/* OpenSSL's error queue (or what = "" if empty) in err, queue cleared. */
static void ssl_err(char *err, size_t len, const char *what)
{
	unsigned long e = ERR_get_error();
	char buf[256] = "";
	if (e)
		ERR_error_string_n(e, buf, sizeof(buf));
	snprintf(err, len, "%s%s%s", what, e ? ": " : "", buf);
	ERR_clear_error();
}

/* The PSK as an OpenSSL session bound to TLS_AES_128_GCM_SHA256. */
static SSL_SESSION *psk_session(SSL *ssl, const struct ha_psk *psk)
{
	const SSL_CIPHER *c = SSL_CIPHER_find(ssl, tls_aes_128_gcm_sha256);
	SSL_SESSION *s = c ? SSL_SESSION_new() : NULL;
	if (s && SSL_SESSION_set1_master_key(s, psk->key, psk->key_len) &&
	    SSL_SESSION_set1_id_context(s, sid_ctx, sizeof(sid_ctx) - 1) &&
	    SSL_SESSION_set_cipher(s, c) && SSL_SESSION_set_protocol_version(s, TLS1_3_VERSION))
		return s;
	SSL_SESSION_free(s);
	return NULL;
}

static const struct ha_tls *tls_of(SSL *ssl)
{
	return SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl));
}

/* Client: offer our PSK (SSL_CTX_set_psk_use_session_callback(3)). */
static int psk_use(SSL *ssl, const EVP_MD *md, const unsigned char **id, size_t *idlen,
		   SSL_SESSION **sess)
{
	const struct ha_tls *t = tls_of(ssl);
	SSL_SESSION *s = psk_session(ssl, &t->psk);
	if (!s)
		return 0;
	/* A second call (after a HelloRetryRequest) names the digest the
	 * server chose: ours must be it, else offer nothing. */
	if (md && md != SSL_CIPHER_get_handshake_digest(SSL_SESSION_get0_cipher(s))) {
		SSL_SESSION_free(s);
		*sess = NULL;
		return 1;
	}
	*id = (const unsigned char *)t->psk.identity;
	*idlen = strlen(t->psk.identity);
	*sess = s;
	return 1;
}

/* Server: the client's identity must be ours; an unknown one gets no
 * session, and with no certificate to fall back on the handshake fails. */
static int psk_find(SSL *ssl, const unsigned char *id, size_t idlen, SSL_SESSION **sess)
{
	const struct ha_tls *t = tls_of(ssl);
	*sess = NULL;
	if (idlen != strlen(t->psk.identity) || memcmp(id, t->psk.identity, idlen))
		return 1;
	*sess = psk_session(ssl, &t->psk);
	return *sess ? 1 : 0;
}

static int load_certs(struct ha_tls *t, const struct ha_tls_opts *o, char *err, size_t len)
{
	char what[600];
	snprintf(what, sizeof(what), "--tls-cert %s", o->cert);
	if (SSL_CTX_use_certificate_chain_file(t->ctx, o->cert) != 1)
		return ssl_err(err, len, what), -EINVAL;
	snprintf(what, sizeof(what), "--tls-key %s", o->key);
	if (SSL_CTX_use_PrivateKey_file(t->ctx, o->key, SSL_FILETYPE_PEM) != 1)
		return ssl_err(err, len, what), -EINVAL;
	if (SSL_CTX_check_private_key(t->ctx) != 1)
		return ssl_err(err, len, "--tls-key does not match --tls-cert"), -EINVAL;
	snprintf(what, sizeof(what), "--tls-ca %s", o->ca);
	if (SSL_CTX_load_verify_locations(t->ctx, o->ca, NULL) != 1)
		return ssl_err(err, len, what), -EINVAL;
	SSL_CTX_set_verify(t->ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
	return 0;
}

int ha_tls_new(struct ha_tls **out, const struct ha_tls_opts *o, bool server, char *err, size_t len)
{
	const char *why = ha_tls_opts_refusal(o);
	*out = NULL;
	if (why)
		return snprintf(err, len, "%s", why), -EINVAL;
	struct ha_tls *t = calloc(1, sizeof(*t));
	if (!t)
		return snprintf(err, len, "out of memory"), -ENOMEM;
	t->server = server;
	t->peer_name = o->peer_name;
	if (o->insecure_plain) {
		*out = t;
		return 0;
	}
	int r = 0;
	t->psk_mode = o->psk_file != NULL;
	if (t->psk_mode && (r = ha_psk_load(o->psk_file, &t->psk, err, len)))
		goto fail;
	t->ctx = SSL_CTX_new(server ? TLS_server_method() : TLS_client_method());
	if (!t->ctx || !SSL_CTX_set_min_proto_version(t->ctx, TLS1_3_VERSION) ||
	    !SSL_CTX_set_max_proto_version(t->ctx, TLS1_3_VERSION)) {
		ssl_err(err, len, "OpenSSL: cannot set up TLS 1.3");
		r = -ENOMEM;
		goto fail;
	}
	SSL_CTX_set_app_data(t->ctx, t);
	SSL_CTX_set_mode(t->ctx,
			 SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
	SSL_CTX_set_num_tickets(t->ctx, 0); /* one connection: nothing to resume */
	SSL_CTX_set_session_cache_mode(t->ctx, SSL_SESS_CACHE_OFF);
	SSL_CTX_set_session_id_context(t->ctx, sid_ctx, sizeof(sid_ctx) - 1);
	if (t->psk_mode) {
		if (SSL_CTX_set_ciphersuites(t->ctx, "TLS_AES_128_GCM_SHA256") != 1) {
			ssl_err(err, len, "OpenSSL: no TLS_AES_128_GCM_SHA256");
			r = -EINVAL;
			goto fail;
		}
		/* No trust anchors: a server that answers with a certificate
		 * instead of the PSK fails verification. */
		if (server) {
			SSL_CTX_set_psk_find_session_callback(t->ctx, psk_find);
		} else {
			SSL_CTX_set_verify(t->ctx, SSL_VERIFY_PEER, NULL);
			SSL_CTX_set_psk_use_session_callback(t->ctx, psk_use);
		}
	} else if ((r = load_certs(t, o, err, len))) {
		goto fail;
	}
	*out = t;
	return 0;
fail:
	ha_tls_free(t);
	return r;
}

void ha_tls_free(struct ha_tls *t)
{
	if (!t)
		return;
	SSL_CTX_free(t->ctx);
	OPENSSL_cleanse(&t->psk, sizeof(t->psk));
	free(t);
}

/* Who the server's certificate must name: an address or a DNS name. */
static int set_peer_check(SSL *ssl, const char *name)
{
	unsigned char ip[16];
	if (inet_pton(AF_INET, name, ip) == 1 || inet_pton(AF_INET6, name, ip) == 1)
		return X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), name) == 1 ? 0 : -EINVAL;
	return SSL_set_tlsext_host_name(ssl, name) == 1 && SSL_set1_host(ssl, name) == 1 ? 0
											 : -EINVAL;
}

/* Why a handshake failed, in words. */
static void handshake_err(SSL *ssl, bool certs, int e, char *err, size_t len)
{
	long v = certs ? SSL_get_verify_result(ssl) : X509_V_OK;
	if (v != X509_V_OK) {
		snprintf(err, len, "the peer's certificate: %s", X509_verify_cert_error_string(v));
		ERR_clear_error();
	} else if (e == SSL_ERROR_SYSCALL && !ERR_peek_error()) {
		snprintf(err, len, "the peer closed the connection during the handshake%s",
			 errno ? " (a reset)" : "");
	} else {
		ssl_err(err, len, "TLS handshake");
	}
}

static int64_t mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int do_handshake(struct ha_tls *t, struct ha_conn *c, const char *host, int timeout_ms,
			char *err, size_t len)
{
	const char *name = t->peer_name ? t->peer_name : host;
	c->ssl = SSL_new(t->ctx);
	if (!c->ssl || SSL_set_fd(c->ssl, c->fd) != 1)
		return ssl_err(err, len, "OpenSSL"), -ENOMEM;
	if (!t->server && !t->psk_mode && name && set_peer_check(c->ssl, name))
		return snprintf(err, len, "bad peer name %s", name), -EINVAL;
	int64_t deadline = mono_ms() + timeout_ms;
	for (;;) {
		ERR_clear_error();
		errno = 0;
		int r = t->server ? SSL_accept(c->ssl) : SSL_connect(c->ssl);
		if (r == 1)
			break;
		int e = SSL_get_error(c->ssl, r);
		int64_t left = deadline - mono_ms();
		if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) {
			handshake_err(c->ssl, !t->psk_mode, e, err, len);
			return -EACCES;
		}
		struct pollfd p = {.fd = c->fd,
				   .events = e == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT};
		if (left <= 0 || (poll(&p, 1, (int)left) == 0 && mono_ms() >= deadline))
			return snprintf(err, len, "TLS handshake: no answer in %d ms", timeout_ms),
			       -ETIMEDOUT;
	}
	/* A PSK connection must have used the PSK (a certificate would have
	 * failed verification without trust anchors; this says it plainly). */
	if (t->psk_mode && !SSL_session_reused(c->ssl))
		return snprintf(err, len, "TLS handshake: the peer did not use the pre-shared key"),
		       -EACCES;
	c->psk = t->psk_mode;
	return 0;
}

int ha_conn_handshake(struct ha_tls *t, int fd, const char *host, int timeout_ms,
		      struct ha_conn **out, char *err, size_t len)
{
	struct ha_conn *c = calloc(1, sizeof(*c));
	*out = NULL;
	if (!c) {
		close(fd);
		return snprintf(err, len, "out of memory"), -ENOMEM;
	}
	c->fd = fd;
	int fl = fcntl(fd, F_GETFL);
	int r = fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) ? -errno : 0;
	if (r)
		snprintf(err, len, "fcntl: %s", strerror(-r));
	else if (t->ctx)
		r = do_handshake(t, c, host, timeout_ms, err, len);
	if (r) {
		ha_conn_free(c);
		return r;
	}
	*out = c;
	return 0;
}

/* One SSL_read/SSL_write or recv/send of up to n bytes at p: bytes
 * moved, 0 to wait for *ev, or -errno (-ECONNRESET for an end). */
static ssize_t conn_io(struct ha_conn *c, bool wr, char *p, size_t n, short *ev)
{
	if (!c->ssl) {
		ssize_t r = wr ? send(c->fd, p, n, MSG_NOSIGNAL) : recv(c->fd, p, n, 0);
		if (r < 0 && (errno == EAGAIN || errno == EINTR))
			return *ev = wr ? POLLOUT : POLLIN, 0;
		return r < 0 ? -errno : r == 0 ? -ECONNRESET : r;
	}
	size_t done = 0;
	ERR_clear_error();
	if ((wr ? SSL_write_ex(c->ssl, p, n, &done) : SSL_read_ex(c->ssl, p, n, &done)) == 1)
		return (ssize_t)done;
	int e = SSL_get_error(c->ssl, 0);
	if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
		return *ev = e == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT, 0;
	SSL_set_quiet_shutdown(c->ssl, 1);
	return e == SSL_ERROR_ZERO_RETURN || (e == SSL_ERROR_SYSCALL && !ERR_peek_error())
		   ? -ECONNRESET
		   : -EACCES;
}

int ha_conn_xfer(struct ha_conn *c, bool send_it, void *buf, size_t n, int timeout_ms, char *err,
		 size_t len)
{
	size_t off = 0;
	int64_t deadline = mono_ms() + timeout_ms;
	while (off < n) {
		short ev = 0;
		ssize_t r = conn_io(c, send_it, (char *)buf + off, n - off, &ev);
		if (r < 0) {
			char why[256] = "";
			if (r == -EACCES)
				ERR_error_string_n(ERR_peek_error(), why, sizeof(why));
			ERR_clear_error();
			return snprintf(err, len, "%s",
					r == -EACCES ? why
					: send_it    ? "the peer went away"
						     : "the peer closed the connection (its side "
						       "refused: see its messages)"),
			       (int)r;
		}
		off += (size_t)r;
		int64_t left = deadline - mono_ms();
		struct pollfd p = {.fd = c->fd, .events = ev};
		if (!r && (left <= 0 || poll(&p, 1, (int)left) == 0))
			return snprintf(err, len, "no word from the peer in %d ms", timeout_ms),
			       -ETIMEDOUT;
	}
	return 0;
}

int ha_conn_hello(struct ha_conn *c, bool send_it, int timeout_ms, char *err, size_t len)
{
	char buf[sizeof(HA_HELLO)] = HA_HELLO;
	size_t n = sizeof(HA_HELLO) - 1;
	if (!send_it)
		memset(buf, 0, sizeof(buf));
	int r = ha_conn_xfer(c, send_it, buf, n, timeout_ms, err, len);
	if (r)
		return r;
	if (!send_it && memcmp(buf, HA_HELLO, n))
		return snprintf(err, len, "the peer is not ember migrate (protocol 1)"), -EPROTO;
	return 0;
}

const char *ha_conn_describe(const struct ha_conn *c, char *buf, size_t len)
{
	if (!c->ssl)
		snprintf(buf, len,
			 "plain TCP (--insecure-plain: not authenticated, not encrypted)");
	else
		snprintf(buf, len, "%s %s, %s", SSL_get_version(c->ssl),
			 SSL_CIPHER_get_name(SSL_get_current_cipher(c->ssl)),
			 c->psk ? "pre-shared key" : "certificates verified both ways");
	return buf;
}

void ha_conn_free(struct ha_conn *c)
{
	if (!c)
		return;
	if (c->ssl) {
		if (!(SSL_get_shutdown(c->ssl) & SSL_SENT_SHUTDOWN) && SSL_is_init_finished(c->ssl))
			(void)SSL_shutdown(c->ssl); /* best effort: the fd is non-blocking */
		SSL_free(c->ssl);
	}
	if (c->fd >= 0)
		close(c->fd);
	free(c);
}
