/*
 * agent_api.h: the API's routes to the guest agent (docs/api.yaml: /vm/agent/...): exec, the
 * KVP pools, file copies, freeze, thaw and sync-time, through libgodwit's agent functions.
 *
 * The main loop serves the API and also moves the vsock device's bytes: it must never wait
 * for the agent. Each request, once checked, runs on a thread of its own that owns the
 * connection until it has answered; the loop goes on serving other requests meanwhile. At
 * most API_AGENT_JOBS_MAX run at once (503 beyond), each bounded in time.
 *
 * A file goes through in chunks, never whole in memory: an upload's body is read from the
 * connection by its thread as the agent takes it (the server hands it over after the head),
 * a download is answered as the agent sends it.
 */
#ifndef GODWIT_API_AGENT_H
#define GODWIT_API_AGENT_H

#include <stdbool.h>

#include "api/http.h"
#include "godwit/godwit.h"

#define API_AGENT_JOBS_MAX 8
#define API_AGENT_TIMEOUT_MS 30000          /* each wait for the agent (exec: its start) */
#define API_AGENT_OUTPUT_MAX (1024 * 1024)  /* exec's stdout, and its stderr: 413 beyond */

struct api_agent_jobs;

int api_agent_jobs_create(struct api_agent_jobs **out);
/* Ends the requests under way (their clients get no answer) and waits for their threads. */
void api_agent_jobs_destroy(struct api_agent_jobs *jobs);

/* An agent route's handler context: the first member of the server's own, so that the
 * routes' table holds these handlers as they are. */
struct api_agent_ctx {
    struct godwit_vm *vm;
    struct api_agent_jobs *jobs;
    int fd;         /* the client's connection */
    bool taken;     /* a job took fd over: the server neither answers on it nor closes it */
    bool send_continue; /* the client waits for "100 Continue" before its body */
    char body[640]; /* an early answer's error body */
};

void api_agent_exec(void *ctx, const struct http_request *req, struct http_response *resp);
void api_agent_kvp_get(void *ctx, const struct http_request *req, struct http_response *resp);
void api_agent_kvp_put(void *ctx, const struct http_request *req, struct http_response *resp);
void api_agent_kvp_delete(void *ctx, const struct http_request *req, struct http_response *resp);
void api_agent_file_get(void *ctx, const struct http_request *req, struct http_response *resp);
void api_agent_file_put(void *ctx, const struct http_request *req, struct http_response *resp);
void api_agent_freeze(void *ctx, const struct http_request *req, struct http_response *resp);
void api_agent_thaw(void *ctx, const struct http_request *req, struct http_response *resp);
void api_agent_sync_time(void *ctx, const struct http_request *req, struct http_response *resp);

#endif
