/* server.c: the VM's REST API (HTTP/1.1 + JSON) on a UNIX socket, served by the main loop. */
#define _GNU_SOURCE
#include "api/server.h"

#include <assert.h>
#include <errno.h>
#include <json-c/json.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "api/agent_api.h"
#include "api/bodies.h"
#include "api/http.h"
#include "io/unix_socket.h"
#include "lib/config.h"
#include "lib/godwit_internal.h"
#include "log.h"

#define API_TICK_MS 500
/* Responses up to this size are formatted on the stack; bigger ones get a buffer their size. */
#define API_RESPONSE_MAX 16384
#define API_HEAD_MAX 1024 /* status line and headers */
#define API_SHUTDOWN_TIMEOUT_MS 30000

struct api_conn {
    struct api_server *server;
    int fd;
    struct timespec deadline;
    bool draining; /* answered an error early: discard the rest of the request until EOF */
    struct loop_watch watch;
    struct api_conn *next;
    struct http_parser parser; /* large: last */
};

struct api_server {
    struct event_loop *loop;
    struct godwit_vm *vm;
    char name[64];
    char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
    int listen_fd;
    struct stat bound; /* the socket file made at path, unlinked at destroy if still there */
    struct timespec started;
    struct loop_watch accept_watch;
    struct loop_watch tick;
    struct api_conn *conns;
    unsigned nr_conns;
    /* A snapshot with "freeze" waits for the guest agent, which this loop serves: it runs on
     * a thread of its own, which answers on the connection it took (one at a time). */
    pthread_t freeze_thread;
    bool freeze_started;        /* freeze_thread is to be joined */
    atomic_bool freeze_running; /* ... and has not finished yet */
    struct api_agent_jobs *agent_jobs; /* requests to the guest agent, on threads */
};

static double seconds_since(const struct timespec *t)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)(now.tv_sec - t->tv_sec) + (double)(now.tv_nsec - t->tv_nsec) / 1e9;
}

/* Sends without waiting: the socket's buffer is made to hold the whole response, which the
 * client reads after. */
static void send_on(int fd, const char *buf, int len)
{
    int size = 0;
    socklen_t size_len = sizeof(size);
    if (len > API_RESPONSE_MAX &&
        (getsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, &size_len) < 0 || size / 2 < len) &&
        setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &len, sizeof(len)) < 0)
        log_debug("api: cannot grow the send buffer: %s", strerror(errno));
    ssize_t n = len > 0 ? send(fd, buf, (size_t)len, MSG_NOSIGNAL | MSG_DONTWAIT) : 0;
    if (n < 0)
        log_debug("api: client went away: %s", strerror(errno));
    else if (n < len)
        log_warn("api: a response of %d bytes was cut short after %zd", len, n);
}

static void conn_send(struct api_conn *c, const char *buf, int len)
{
    send_on(c->fd, buf, len);
}

static void conn_send_error(struct api_conn *c, int status, const char *message)
{
    char buf[1024];
    conn_send(c, buf, http_format_error(buf, sizeof(buf), status, message, NULL, true));
}

/* Closes and frees a connection; only ever called from its own poll callback. */
static void conn_close(struct api_conn *c)
{
    struct api_server *s = c->server;
    for (struct api_conn **p = &s->conns; *p; p = &(*p)->next) {
        if (*p == c) {
            *p = c->next;
            break;
        }
    }
    s->nr_conns--;
    if (c->fd >= 0)
        close(c->fd);
    free(c);
}

/* --- handlers ------------------------------------------------------------------------ */

/* What a handler sees: the server, and room for the body it answers with (`big` when that
 * is too small; freed after the response is sent). The agent's routes (agent_api.h) see only
 * `agent`: first, so that a pointer to this is one to it. */
struct handler_ctx {
    struct api_agent_ctx agent;
    struct api_server *server;
    char body[API_RESPONSE_MAX - API_HEAD_MAX];
    char *big;
};

static void reply_error(struct handler_ctx *h, struct http_response *resp, int status,
                        const char *message)
{
    http_error_response(resp, h->body, sizeof(h->body), status, message);
}

static void reply_json(struct handler_ctx *h, struct http_response *resp, struct json_object *obj)
{
    const char *text = json_object_to_json_string_ext(obj, JSON_C_TO_STRING_PLAIN);
    size_t len = strlen(text);
    char *body = len < sizeof(h->body) ? h->body : (h->big = malloc(len));
    if (body) {
        memcpy(body, text, len);
        resp->status = 200;
        resp->content_type = "application/json";
        resp->body = body;
        resp->body_len = len;
    } else {
        reply_error(h, resp, 500, "out of memory");
    }
    json_object_put(obj);
}

/* A view of the running VM: 200 with it, or 409 when no VM runs (`obj` is NULL). */
static void reply_view(struct handler_ctx *h, struct http_response *resp, struct json_object *obj,
                       const char *what)
{
    char msg[96];
    if (obj) {
        reply_json(h, resp, obj);
        return;
    }
    snprintf(msg, sizeof(msg), "no %s: the VM is not running", what);
    reply_error(h, resp, 409, msg);
}

/* The outcome of an action: 204 on success, 409 when the VM's state forbids it. */
static void reply_action(struct handler_ctx *h, struct http_response *resp, int ret,
                         const char *what)
{
    char msg[160];
    if (ret == 0) {
        resp->status = 204;
        return;
    }
    bool conflict = ret == -EALREADY || ret == -ESRCH;
    if (conflict)
        snprintf(msg, sizeof(msg), "cannot %s: the VM is %s", what,
                 godwit_state_name(godwit_get_state(h->server->vm)));
    else
        snprintf(msg, sizeof(msg), "cannot %s: %s", what, strerror(-ret));
    reply_error(h, resp, conflict ? 409 : 500, msg);
}

static void handle_get_vm(void *ctx, const struct http_request *req, struct http_response *resp)
{
    struct handler_ctx *h = ctx;
    struct api_server *s = h->server;
    const struct vm_config *cfg = godwit_config(s->vm);
    struct config_extra extra = { .name = s->name, .api_socket = s->path,
                                  .seccomp = cfg->seccomp, .io_poll_us = cfg->io_poll_us };
    (void)req;

    struct json_object *obj = json_object_new_object();
    json_object_object_add(obj, "name", json_object_new_string(s->name));
    json_object_object_add(obj, "pid", json_object_new_int(getpid()));
    json_object_object_add(obj, "state",
                           json_object_new_string(godwit_state_name(godwit_get_state(s->vm))));
    json_object_object_add(obj, "uptime_s", json_object_new_double(seconds_since(&s->started)));
    json_object_object_add(obj, "vcpus", json_object_new_int((int)cfg->nr_cpus));
    json_object_object_add(obj, "memory_mib", json_object_new_int64((int64_t)cfg->memory_mib));
    json_object_object_add(obj, "config", config_to_json_object(cfg, &extra));
    struct json_object *agent = godwit_agent_json(s->vm);
    if (agent)
        json_object_object_add(obj, "agent", agent);
    reply_json(h, resp, obj);
}

static void handle_get_counters(void *ctx, const struct http_request *req,
                                struct http_response *resp)
{
    struct handler_ctx *h = ctx;
    (void)req;
    reply_view(h, resp, godwit_counters_json(h->server->vm), "counters");
}

static void handle_get_vcpus(void *ctx, const struct http_request *req,
                             struct http_response *resp)
{
    struct handler_ctx *h = ctx;
    (void)req;
    reply_view(h, resp, godwit_vcpus_json(h->server->vm), "vCPUs");
}

static void handle_pause(void *ctx, const struct http_request *req, struct http_response *resp)
{
    struct handler_ctx *h = ctx;
    (void)req;
    reply_action(h, resp, godwit_pause(h->server->vm), "pause");
}

static void handle_resume(void *ctx, const struct http_request *req, struct http_response *resp)
{
    struct handler_ctx *h = ctx;
    (void)req;
    reply_action(h, resp, godwit_resume(h->server->vm), "resume");
}

static void handle_shutdown(void *ctx, const struct http_request *req, struct http_response *resp)
{
    struct handler_ctx *h = ctx;
    (void)req;
    reply_action(h, resp, godwit_shutdown(h->server->vm, API_SHUTDOWN_TIMEOUT_MS), "shut down");
}

static void handle_reboot(void *ctx, const struct http_request *req, struct http_response *resp)
{
    struct handler_ctx *h = ctx;
    (void)req;
    reply_action(h, resp, godwit_reboot(h->server->vm), "reboot");
}

static void handle_stop(void *ctx, const struct http_request *req, struct http_response *resp)
{
    struct handler_ctx *h = ctx;
    (void)req;
    reply_action(h, resp, godwit_stop(h->server->vm), "stop");
}

/* A snapshot, frozen or not, and its answer: 200 with what was written. */
static void answer_snapshot(struct handler_ctx *h, struct http_response *resp,
                            const struct api_snapshot_body *body)
{
    struct godwit_snapshot_info info;
    int ret = body->freeze ? godwit_snapshot_frozen(h->server->vm, body->dir, body->stop, &info)
                           : godwit_snapshot(h->server->vm, body->dir, body->stop, &info);
    if (ret < 0 && body->freeze && info.error[0]) {
        reply_error(h, resp, ret == -ENODEV || ret == -EBUSY ? 409 : 500, info.error);
        return;
    }
    if (ret < 0) {
        reply_action(h, resp, ret, "snapshot");
        return;
    }
    struct json_object *obj = json_object_new_object();
    json_object_object_add(obj, "memory_bytes", json_object_new_int64((int64_t)info.memory_bytes));
    json_object_object_add(obj, "memory_written", json_object_new_int64((int64_t)info.memory_written));
    json_object_object_add(obj, "state_bytes", json_object_new_int64((int64_t)info.state_bytes));
    json_object_object_add(obj, "paused_ms", json_object_new_double(info.paused_ms));
    reply_json(h, resp, obj);
}

/* PUT /vm/snapshot {"dir": "/abs/path", "stop": false}; with "freeze", conn_take_frozen()'s. */
static void handle_snapshot(void *ctx, const struct http_request *req, struct http_response *resp)
{
    struct handler_ctx *h = ctx;
    struct api_snapshot_body body;
    if (api_parse_snapshot_body(req->body, req->body_len, &body) < 0) {
        reply_error(h, resp, 400, API_SNAPSHOT_BODY_USAGE);
        return;
    }
    answer_snapshot(h, resp, &body);
    api_body_free(body.root);
}

/* PUT /vm/migrate (api/bodies.h): 202, started. */
static void handle_migrate(void *ctx, const struct http_request *req, struct http_response *resp)
{
    struct handler_ctx *h = ctx;
    struct api_migrate_body body;
    if (api_parse_migrate_body(req->body, req->body_len, &body) < 0) {
        reply_error(h, resp, 400, API_MIGRATE_BODY_USAGE);
        return;
    }
    if (body.opts.local && strncmp(body.opts.uri, "unix:", 5) != 0) {
        api_body_free(body.root);
        reply_error(h, resp, 400, "\"local\" hands the memory file over a UNIX socket: the uri "
                                  "must be unix:PATH");
        return;
    }
    if (body.opts.connections > 1 && (body.opts.local || strncmp(body.opts.uri, "tcp:", 4) != 0)) {
        api_body_free(body.root);
        reply_error(h, resp, 400, "\"connections\" above 1 spreads pages over TCP connections: "
                                  "the uri must be tcp:HOST:PORT, without \"local\"");
        return;
    }
    int ret = godwit_migrate(h->server->vm, &body.opts);
    api_body_free(body.root);
    if (ret == -EBUSY) {
        reply_error(h, resp, 409, "a migration is already running");
        return;
    }
    if (ret < 0) {
        reply_action(h, resp, ret, "migrate");
        return;
    }
    resp->status = 202;
}

static void handle_get_migration(void *ctx, const struct http_request *req,
                                 struct http_response *resp)
{
    struct handler_ctx *h = ctx;
    struct godwit_migration_status st;
    (void)req;
    if (godwit_migration_status(h->server->vm, &st) < 0) {
        reply_error(h, resp, 404, "no migration has run");
        return;
    }
    struct json_object *o = json_object_new_object();
    json_object_object_add(o, "state", json_object_new_string(st.state));
    json_object_object_add(o, "pass", json_object_new_int((int)st.pass));
    json_object_object_add(o, "bytes_sent", json_object_new_int64((int64_t)st.bytes_sent));
    json_object_object_add(o, "bytes_left", json_object_new_int64((int64_t)st.bytes_left));
    json_object_object_add(o, "bandwidth_bps", json_object_new_int64((int64_t)st.bandwidth_bps));
    json_object_object_add(o, "dirty_bytes_per_s",
                           json_object_new_int64((int64_t)st.dirty_bytes_per_s));
    json_object_object_add(o, "expected_downtime_ms",
                           json_object_new_double(st.expected_downtime_ms));
    json_object_object_add(o, "fixed_cost_ms", json_object_new_double(st.fixed_cost_ms));
    json_object_object_add(o, "downtime_ms", json_object_new_double(st.downtime_ms));
    json_object_object_add(o, "total_ms", json_object_new_double(st.total_ms));
    json_object_object_add(o, "forced", json_object_new_boolean(st.forced));
    json_object_object_add(o, "throttle_pct", json_object_new_int((int)st.throttle_pct));
    if (st.error[0])
        json_object_object_add(o, "error", json_object_new_string(st.error));
    reply_json(h, resp, o);
}

static void handle_cancel_migration(void *ctx, const struct http_request *req,
                                    struct http_response *resp)
{
    struct handler_ctx *h = ctx;
    (void)req;
    if (godwit_migrate_cancel(h->server->vm) < 0) {
        reply_error(h, resp, 409, "no migration is running");
        return;
    }
    resp->status = 204;
}

/* GET /vm/console is answered by conn_attach_console(): it takes the connection over. */
static void handle_console_busy(void *ctx, const struct http_request *req,
                                struct http_response *resp)
{
    (void)req;
    reply_error(ctx, resp, 409, "another client is attached to the console");
}

/* Keep in agreement with docs/api.yaml (tests/api checks both ways). */
static const struct http_route api_routes[] = {
    { "GET", "/vm", handle_get_vm },
    { "GET", "/vm/console", handle_console_busy },
    { "GET", "/vm/counters", handle_get_counters },
    { "GET", "/vm/vcpus", handle_get_vcpus },
    { "PUT", "/vm/pause", handle_pause },
    { "PUT", "/vm/resume", handle_resume },
    { "PUT", "/vm/shutdown", handle_shutdown },
    { "PUT", "/vm/reboot", handle_reboot },
    { "PUT", "/vm/stop", handle_stop },
    { "PUT", "/vm/snapshot", handle_snapshot },
    { "PUT", "/vm/migrate", handle_migrate },
    { "GET", "/vm/migration", handle_get_migration },
    { "DELETE", "/vm/migration", handle_cancel_migration },
    { "PUT", "/vm/agent/exec", api_agent_exec },
    { "GET", "/vm/agent/kvp", api_agent_kvp_get },
    { "PUT", "/vm/agent/kvp", api_agent_kvp_put },
    { "DELETE", "/vm/agent/kvp", api_agent_kvp_delete },
    { "GET", "/vm/agent/file", api_agent_file_get },
    { "PUT", "/vm/agent/file", api_agent_file_put, .large_body = true },
    { "PUT", "/vm/agent/freeze", api_agent_freeze },
    { "PUT", "/vm/agent/thaw", api_agent_thaw },
    { "PUT", "/vm/agent/sync-time", api_agent_sync_time },
};

/* --- connections --------------------------------------------------------------------- */

/* Formats and sends a response on `fd`: in `out` (API_RESPONSE_MAX bytes) when it fits,
 * else in a buffer of its size. */
static void send_response(int fd, const struct http_response *resp, char *out)
{
    size_t need = resp->body_len + API_HEAD_MAX;
    char *buf = need <= API_RESPONSE_MAX ? out : malloc(need);
    if (!buf) {
        char err[256];
        send_on(fd, err, http_format_error(err, sizeof(err), 500, "out of memory", NULL, true));
        return;
    }
    send_on(fd, buf, http_format(buf, buf == out ? API_RESPONSE_MAX : need, resp));
    if (buf != out)
        free(buf);
}

static void conn_answer(struct api_conn *c)
{
    const struct http_request *req = &c->parser.req;
    char allow[HTTP_ALLOW_MAX];
    int status;
    static_assert(sizeof(struct handler_ctx) < 32768, "handler context lives on the stack");
    struct handler_ctx h = { .server = c->server,
                             .agent = { .vm = c->server->vm, .jobs = c->server->agent_jobs,
                                        .fd = c->fd,
                                        .send_continue = http_parser_take_continue(&c->parser) } };
    char out[API_RESPONSE_MAX];

    const struct http_route *route =
        http_route_find(api_routes, sizeof(api_routes) / sizeof(api_routes[0]), req->method,
                        req->path, &status, allow, sizeof(allow));
    if (!route) {
        char msg[128];
        snprintf(msg, sizeof(msg), status == 404 ? "no such resource: %s" : "%s not allowed here",
                 status == 404 ? req->path : req->method);
        conn_send(c, out, http_format_error(out, sizeof(out), status, msg,
                                            status == 405 ? allow : NULL, true));
        return;
    }
    struct http_response resp = { .status = 500 };
    route->handler(&h, req, &resp);
    if (h.agent.taken) {
        c->fd = -1; /* a thread answers on it, and closes it */
        return;
    }
    resp.close = true;
    send_response(c->fd, &resp, out);
    free(h.big);
}

/*
 * GET /vm/console turns the connection into the serial console: after "101 Switching
 * Protocols" the bytes each way are the guest's console. Returns true when it took the
 * connection over (and freed c, whose socket the console now owns).
 */
static bool conn_attach_console(struct api_conn *c)
{
    static const char upgraded[] = "HTTP/1.1 101 Switching Protocols\r\n"
                                   "Connection: Upgrade\r\nUpgrade: godwit-console\r\n\r\n";
    struct api_server *s = c->server;
    if (strcmp(c->parser.req.method, "GET") != 0 || strcmp(c->parser.req.path, "/vm/console") != 0)
        return false;
    if (godwit_console_attach(s->vm, c->fd, upgraded) < 0)
        return false; /* busy: answered by its route with 409 */
    c->fd = -1;
    conn_close(c);
    return true;
}

struct frozen_snapshot {
    struct api_server *server;
    int fd;
    struct api_snapshot_body body;
};

static void *frozen_snapshot_thread(void *arg)
{
    struct frozen_snapshot *job = arg;
    struct handler_ctx *h = calloc(1, sizeof(*h));
    char *out = malloc(API_RESPONSE_MAX);
    struct http_response resp = { .status = 500, .close = true };
    if (h && out) {
        h->server = job->server;
        answer_snapshot(h, &resp, &job->body);
        resp.close = true;
        send_response(job->fd, &resp, out);
        free(h->big);
    }
    close(job->fd);
    api_body_free(job->body.root);
    atomic_store(&job->server->freeze_running, false);
    free(out);
    free(h);
    free(job);
    return NULL;
}

/*
 * PUT /vm/snapshot with "freeze": true takes the connection to a thread of its own (which
 * answers it), as the agent that freezes is served by this loop. Returns true when it took c
 * (freed now) or answered it (busy, no memory); false leaves it to its route.
 */
static bool conn_take_frozen(struct api_conn *c)
{
    struct api_server *s = c->server;
    const struct http_request *req = &c->parser.req;
    struct frozen_snapshot *job;
    if (strcmp(req->method, "PUT") != 0 || strcmp(req->path, "/vm/snapshot") != 0 ||
        !(job = calloc(1, sizeof(*job))))
        return false;
    if (api_parse_snapshot_body(req->body, req->body_len, &job->body) < 0 || !job->body.freeze) {
        api_body_free(job->body.root);
        free(job);
        return false;
    }
    int ret = atomic_load(&s->freeze_running) ? -EBUSY : 0;
    if (ret == 0 && s->freeze_started) { /* the last one, finished */
        pthread_join(s->freeze_thread, NULL);
        s->freeze_started = false;
    }
    job->server = s;
    job->fd = c->fd;
    if (ret == 0) {
        atomic_store(&s->freeze_running, true);
        ret = -pthread_create(&s->freeze_thread, NULL, frozen_snapshot_thread, job);
        if (ret < 0)
            atomic_store(&s->freeze_running, false);
    }
    if (ret < 0) {
        conn_send_error(c, ret == -EBUSY ? 409 : 500, ret == -EBUSY
                        ? "a snapshot with freeze is already running"
                        : "cannot start the snapshot's thread");
        api_body_free(job->body.root);
        free(job);
        conn_close(c);
        return true;
    }
    s->freeze_started = true;
    c->fd = -1; /* the thread's now */
    conn_close(c);
    return true;
}

/* After HTTP_HEAD: whether the request's route reads a large body itself. */
static bool conn_takes_large_body(struct api_conn *c)
{
    const struct http_request *req = &c->parser.req;
    int status;
    const struct http_route *route =
        http_route_find(api_routes, sizeof(api_routes) / sizeof(api_routes[0]), req->method,
                        req->path, &status, NULL, 0);
    return route && route->large_body;
}

/* One request per connection: the CLI and curl both open one per call. */
static bool on_conn_readable(struct event_loop *loop, void *opaque, int res)
{
    struct api_conn *c = opaque;
    (void)loop;
    size_t room = c->draining ? SIZE_MAX : http_parser_room(&c->parser);
    char chunk[4096];
    ssize_t n = res < 0 ? -1 : read(c->fd, chunk, room < sizeof(chunk) ? room : sizeof(chunk));
    if (n <= 0) {
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
            return true;
        conn_close(c); /* the client went away, or the deadline shut the socket */
        return false;
    }
    if (c->draining)
        return true;
    http_parser_feed(&c->parser, chunk, (size_t)n);
    switch (http_parse(&c->parser)) {
    case HTTP_NEED_MORE:
        if (http_parser_take_continue(&c->parser))
            conn_send(c, "HTTP/1.1 100 Continue\r\n\r\n", 25);
        return true;
    case HTTP_HEAD:
        if (conn_takes_large_body(c)) {
            conn_answer(c);
            if (c->fd < 0)
                break; /* a thread took it, with the body still to come */
            shutdown(c->fd, SHUT_WR); /* answered early: the body is drained, as below */
            c->draining = true;
            return true;
        }
        http_parser_refuse(&c->parser);
        /* fall through */
    case HTTP_ERROR:
        /* The client may still be sending (a body over the limit): closing now would reset
         * the connection before it reads our answer. Answer, stop writing, and read on until
         * it closes or the deadline passes. */
        conn_send_error(c, c->parser.error_status, c->parser.error);
        shutdown(c->fd, SHUT_WR);
        c->draining = true;
        return true;
    case HTTP_DONE:
        if (conn_attach_console(c) || conn_take_frozen(c))
            return false; /* c is gone: its socket now belongs to the console or a thread */
        conn_answer(c);
        break;
    }
    conn_close(c);
    return false;
}

static bool on_tick(struct event_loop *loop, void *opaque, int res);

static bool on_accept(struct event_loop *loop, void *opaque, int res)
{
    struct api_server *s = opaque;
    (void)res;
    int fd = accept4(s->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0)
        return true;
    struct api_conn *c = s->nr_conns < API_MAX_CONNECTIONS ? calloc(1, sizeof(*c)) : NULL;
    if (!c) {
        char buf[256];
        int len = http_format_error(buf, sizeof(buf), 503, "too many API connections", NULL, true);
        if (len > 0 && send(fd, buf, (size_t)len, MSG_NOSIGNAL | MSG_DONTWAIT) < 0)
            log_debug("api: cannot refuse a connection politely: %s", strerror(errno));
        close(fd);
        return true;
    }
    c->server = s;
    c->fd = fd;
    http_parser_init(&c->parser);
    c->parser.large_bodies = true; /* PUT /vm/agent/file's: its route reads them */
    clock_gettime(CLOCK_MONOTONIC, &c->deadline);
    c->deadline.tv_sec += API_REQUEST_TIMEOUT_MS / 1000;
    c->next = s->conns;
    s->conns = c;
    s->nr_conns++;
    if (loop_watch_readable(loop, &c->watch, fd, on_conn_readable, c) < 0) {
        s->conns = c->next;
        s->nr_conns--;
        close(fd);
        free(c);
        return true;
    }
    if (!s->tick.armed && loop_after(loop, &s->tick, API_TICK_MS, on_tick, s) < 0)
        log_warn("api: cannot arm the request timer: this client is not timed out");
    return true;
}

/*
 * A slow or silent client must not hold a connection slot forever. A connection is only
 * freed by its own callback, so the tick answers 408 and shuts the socket down, which wakes
 * that callback to close it. The tick runs only while there are connections: an idle VM's
 * loop is woken by nothing.
 */
static bool on_tick(struct event_loop *loop, void *opaque, int res)
{
    struct api_server *s = opaque;
    struct timespec now;
    (void)res;
    clock_gettime(CLOCK_MONOTONIC, &now);
    for (struct api_conn *c = s->conns; c; c = c->next) {
        if (now.tv_sec < c->deadline.tv_sec ||
            (now.tv_sec == c->deadline.tv_sec && now.tv_nsec < c->deadline.tv_nsec))
            continue;
        if (!c->draining && http_parser_pending(&c->parser))
            conn_send_error(c, 408, "request not received in time");
        shutdown(c->fd, SHUT_RDWR);
        c->deadline.tv_sec = now.tv_sec + 3600; /* once */
    }
    if (s->conns)
        loop_after(loop, &s->tick, API_TICK_MS, on_tick, s);
    return false;
}

/* Listens on the path: a dead VM's socket there is replaced, a live VM's or any other file
 * is left alone and refused. */
static int api_bind(struct api_server *s)
{
    int fd = unix_socket_listen(s->path, API_MAX_CONNECTIONS, &s->bound);
    if (fd == -EADDRINUSE)
        log_error("api: %s is in use by a running VM", s->path);
    else if (fd == -EEXIST)
        log_error("api: %s exists and is not a socket: not replacing it", s->path);
    else if (fd < 0)
        log_error("api: cannot serve %s: %s", s->path, strerror(-fd));
    if (fd < 0)
        return fd;
    s->listen_fd = fd;
    return 0;
}

int api_server_start(struct api_server **out, struct event_loop *loop, struct godwit_vm *vm,
                     const char *name, const char *socket_path)
{
    struct api_server *s = calloc(1, sizeof(*s));
    if (!s)
        return -ENOMEM;
    s->loop = loop;
    s->vm = vm;
    s->listen_fd = -1;
    snprintf(s->name, sizeof(s->name), "%s", name);
    snprintf(s->path, sizeof(s->path), "%s", socket_path);
    clock_gettime(CLOCK_MONOTONIC, &s->started);
    int ret = api_agent_jobs_create(&s->agent_jobs);
    if (ret == 0)
        ret = api_bind(s);
    if (ret < 0) {
        api_server_destroy(s);
        return ret;
    }
    ret = loop_watch_readable(loop, &s->accept_watch, s->listen_fd, on_accept, s);
    if (ret < 0) {
        log_error("api: cannot serve %s: %s", socket_path, strerror(-ret));
        api_server_destroy(s);
        return ret;
    }
    *out = s;
    return 0;
}

void api_server_destroy(struct api_server *s)
{
    if (!s)
        return;
    if (s->freeze_started)
        pthread_join(s->freeze_thread, NULL);
    api_agent_jobs_destroy(s->agent_jobs);
    while (s->conns) {
        struct api_conn *c = s->conns;
        s->conns = c->next;
        close(c->fd);
        free(c);
    }
    if (s->listen_fd >= 0) {
        close(s->listen_fd);
        unix_socket_unlink(s->path, &s->bound);
    }
    free(s);
}
