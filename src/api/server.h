/* server.h: the VM's REST API (HTTP/1.1 + JSON) on a UNIX socket, served by the main loop. */
#ifndef GODWIT_SERVER_H
#define GODWIT_SERVER_H

#include "godwit/godwit.h"
#include "io/loop.h"

#define API_MAX_CONNECTIONS 16
#define API_REQUEST_TIMEOUT_MS 5000

struct api_server;

/* Binds `socket_path` (mode 0600; a stale socket left by a dead VM is replaced, a live one is
 * refused with -EADDRINUSE, any other file with -EEXIST: see unix_socket_listen()) and serves
 * it on `loop`. Returns 0 or -errno after one log line. */
int api_server_start(struct api_server **out, struct event_loop *loop, struct godwit_vm *vm,
                     const char *name, const char *socket_path);
/* Closes the socket and unlinks its path, unless another socket file replaced it meanwhile.
 * Call after the loop has stopped for good. */
void api_server_destroy(struct api_server *server);

#endif
