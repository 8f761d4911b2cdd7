/* client.h: a minimal HTTP/1.1 client for godwit's API on a UNIX socket (the CLI's side). */
#ifndef GODWIT_CLIENT_H
#define GODWIT_CLIENT_H

#include <stddef.h>

#define API_CLIENT_TIMEOUT_MS 10000
#define API_CLIENT_MAX_RESPONSE (1 << 20)

struct api_response {
    int status;  /* HTTP status code */
    char *body;  /* NUL-terminated, malloc'ed (may be empty) */
};

/* Sends one request (Connection: close) and reads the whole response. Returns 0, or -errno
 * when the socket cannot be reached or the response is malformed or too large. */
int api_request(const char *socket_path, const char *method, const char *target,
                const char *body, struct api_response *resp);
/* The same with its own timeout, for requests that take long (a snapshot of a large VM). */
int api_request_timeout(const char *socket_path, const char *method, const char *target,
                        const char *body, unsigned timeout_ms, struct api_response *resp);
void api_response_free(struct api_response *resp);

/* Connects to a VM's API socket; returns the fd or -errno. */
int api_connect(const char *socket_path);

#endif
