/* Private to ha/tls.c and ha/relay.c: a connection's insides. */
#ifndef EMBER_HA_TLS_PRIV_H
#define EMBER_HA_TLS_PRIV_H

#include <openssl/ssl.h>
#include <stdbool.h>

struct ha_conn {
	int fd;	  /* the TCP socket, non-blocking */
	SSL *ssl; /* NULL: plain TCP */
	bool psk; /* authenticated by the pre-shared key */
};

#endif
