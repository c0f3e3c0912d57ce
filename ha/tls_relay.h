/* ha/: the controllers' network side of a migration stream.  The jailed
 * ember never opens a socket: a controller (ember-migrate, emberd) makes
 * the TCP connection, authenticates the peer with TLS 1.3 (OpenSSL:
 * mutual certificates or an external pre-shared key), and only then
 * relays bytes between that connection and the unix socketpair whose
 * other end ember holds (docs/migration.md, docs/migrate-cli.md).  Plain
 * TCP exists for trusted networks and only when asked for by name. */
#ifndef EMBER_HA_TLS_RELAY_H
#define EMBER_HA_TLS_RELAY_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define HA_ERR_MAX 512
#define HA_PSK_MIN 16 /* bytes: 128 bits at the least */
#define HA_PSK_MAX 48 /* an OpenSSL session's master key holds 48 */
#define HA_PSK_ID_MAX 128
#define HA_PSK_DEFAULT_ID "ember-migrate"

/* How the peer is authenticated: exactly one of certificates (cert, key
 * and ca together), psk_file, or insecure_plain. */
struct ha_tls_opts {
	const char *cert, *key,
	    *ca;	       /* PEM files: our chain, our key, the CA the peer's must chain to */
	const char *peer_name; /* client: the name or address the server's
				  certificate must carry (default: the host dialled) */
	const char *psk_file;  /* a key file: see ha_psk_parse() */
	bool insecure_plain;   /* plain TCP, no authentication at all */
};

struct ha_psk {
	char identity[HA_PSK_ID_MAX + 1];
	unsigned char key[HA_PSK_MAX];
	size_t key_len;
};

/* The text of a PSK file: one line "[IDENTITY:]HEX" (HEX: 32 to 96 hex
 * digits, the key's 16 to 48 bytes, e.g. `openssl rand -hex 32`;
 * IDENTITY: 1 to 128 printable characters without ':' or spaces, default
 * HA_PSK_DEFAULT_ID).  Blank lines and lines starting with '#' are
 * skipped; one key per file.  0, or -EINVAL with the reason in err. */
__attribute__((warn_unused_result)) int ha_psk_parse(const char *text, size_t len,
						     struct ha_psk *psk, char *err, size_t errlen);

/* Reads and parses a PSK file, refusing one that its group or others can
 * read or write (as ssh does a private key).  0 or -errno with err. */
__attribute__((warn_unused_result)) int ha_psk_load(const char *path, struct ha_psk *psk, char *err,
						    size_t errlen);

/* A checked set of options: NULL, or why they cannot be used ("no
 * authentication chosen: ...", both a PSK and certificates, a partial
 * certificate set...).  Pure: touches no file. */
const char *ha_tls_opts_refusal(const struct ha_tls_opts *o);

/* An authentication context: OpenSSL's SSL_CTX for TLS 1.3 only (or
 * nothing for insecure_plain), files loaded and checked.  server: the
 * accepting side.  0 or -errno with err; *t is the caller's
 * (ha_tls_free). */
struct ha_tls;
__attribute__((warn_unused_result)) int ha_tls_new(struct ha_tls **t, const struct ha_tls_opts *o,
						   bool server, char *err, size_t errlen);
void ha_tls_free(struct ha_tls *t);

/* An authenticated connection (or a plain one). */
struct ha_conn;

/* Handshake on a connected TCP socket fd (taken over: closed on failure
 * too) within timeout_ms; host: for a client, the name or address
 * dialled (checked against the server's certificate unless
 * o->peer_name says another).  0 with *c, or -errno with err (-EACCES:
 * the peer failed authentication). */
__attribute__((warn_unused_result)) int ha_conn_handshake(struct ha_tls *t, int fd,
							  const char *host, int timeout_ms,
							  struct ha_conn **c, char *err,
							  size_t errlen);

/* The controllers' word after authentication, before any stream byte:
 * the receiving side sends HA_HELLO once its VMM has taken the stream
 * (PUT /migration/receive), the sending side waits for it before its VMM
 * starts.  So a sender whose certificate the receiver refuses (in TLS 1.3
 * the client's handshake ends before the server has checked it) learns
 * it here, and a target that refused leaves the source untouched.
 * send_it: send, else wait for it; within timeout_ms.  0 or -errno with
 * err (-EACCES: a TLS alert, e.g. the certificate refused). */
#define HA_HELLO "ember-migrate 1\n"
__attribute__((warn_unused_result)) int ha_conn_hello(struct ha_conn *c, bool send_it,
						      int timeout_ms, char *err, size_t errlen);

/* Exactly n bytes of buf sent (send_it) or received over c within
 * timeout_ms, for a controller's own words before the stream (emberd's
 * move hello).  0 or -errno with err. */
__attribute__((warn_unused_result)) int ha_conn_xfer(struct ha_conn *c, bool send_it, void *buf,
						     size_t n, int timeout_ms, char *err,
						     size_t errlen);

/* "TLS 1.3 TLS_AES_128_GCM_SHA256, PSK" and the like, for messages. */
const char *ha_conn_describe(const struct ha_conn *c, char *buf, size_t len);

/* Closes the connection (a TLS close_notify if not yet sent) and frees it. */
void ha_conn_free(struct ha_conn *c);

#define HA_RELAY_TAIL 32 /* a migration record's header (docs/migration.md) */

struct ha_relay_stats {
	uint64_t to_net, to_local; /* bytes relayed each way */
	bool local_eof, net_eof;   /* each side ended its stream cleanly */
	/* Set once the local side's stream ended and all of it went to the
	 * network (its end passed on): from then tail holds its last
	 * tail_len bytes, and neither changes again.  Another thread may
	 * read them after seeing this true. */
	atomic_bool to_net_done;
	unsigned char tail[HA_RELAY_TAIL];
	size_t tail_len;
};

/* Relays bytes both ways between c and local (a stream socket: ember's
 * socketpair end) until both directions have ended: an EOF on one side
 * becomes a half-close on the other (shutdown(SHUT_WR), or TLS
 * close_notify).  Buffers are bounded (64 KiB each way): a slow side
 * slows the other.  stop_fd (-1: none) becoming readable ends it at
 * once (-ECANCELED).  0 once both ways are done, or -errno with err (a
 * reset, a TLS error, a truncated TLS stream).  local and stop_fd stay
 * the caller's; *st (may be NULL) is updated as bytes move. */
__attribute__((warn_unused_result)) int ha_relay(struct ha_conn *c, int local, int stop_fd,
						 struct ha_relay_stats *st, char *err,
						 size_t errlen);

/* TCP: "ADDR:PORT" or "[V6ADDR]:PORT" split; 0 or -EINVAL.  Pure. */
__attribute__((warn_unused_result)) int ha_split_hostport(const char *s, char *host, size_t hostlen,
							  char *port, size_t portlen);

/* A listening TCP socket on ADDR:PORT (SO_REUSEADDR); *bound_port: the
 * port bound (PORT 0: one the kernel chose).  fd or -errno with err. */
int ha_tcp_listen(const char *hostport, unsigned *bound_port, char *err, size_t errlen);

/* accept(2) of one connection within timeout_ms (0: no bound); fd or
 * -errno (-ETIMEDOUT) with err.  peer: "ADDR:PORT" for messages. */
int ha_tcp_accept(int lfd, int timeout_ms, char *peer, size_t peerlen, char *err, size_t errlen);

/* connect(2) to ADDR:PORT within timeout_ms; fd or -errno with err. */
int ha_tcp_connect(const char *hostport, int timeout_ms, char *err, size_t errlen);

#endif
