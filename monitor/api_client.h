/* A small HTTP/1.1 client of ember's API over its unix socket, one request
 * per connection: what the command line's subcommands that drive a running
 * ember use (`ember snapshot create`, `ember drive move`). */
#ifndef EMBER_API_CLIENT_H
#define EMBER_API_CLIENT_H

#include <jansson.h>
#include <stddef.h>

/* METHOD path with body (NULL: none) to the socket, send_fd (-1: none)
 * riding on the request's first bytes (SCM_RIGHTS); the reply waited for
 * timeout_s seconds at most (0: as long as it takes).  0 with the status
 * and the reply's JSON (NULL when it has no body), or -1 with the reason
 * in err ("cannot reach ember at S: ...", "ember closed the connection"). */
__attribute__((warn_unused_result)) int api_client_call(const char *sock, const char *method,
							const char *path, const char *body,
							int send_fd, int timeout_s, int *status,
							json_t **reply, char *err, size_t len);

/* The same with a JSON body (consumed; NULL: none) that must succeed:
 * 0 with the reply (2xx; NULL when it has no body) in *reply (NULL: not
 * wanted); 1 when ember refused, with its fault_message in err and the
 * status in *status; -1 when ember could not be reached or did not answer,
 * with the reason in err. */
__attribute__((warn_unused_result)) int api_client_json(const char *sock, const char *method,
							const char *path, json_t *body, int send_fd,
							int timeout_s, int *status, json_t **reply,
							char *err, size_t len);

#endif
