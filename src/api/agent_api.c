/* agent_api.c: the API's routes to the guest agent, each request on a thread (agent_api.h). */
#define _GNU_SOURCE
#include "api/agent_api.h"

#include <errno.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "agent/client.h"
#include "api/bodies.h"
#include "lib/godwit_internal.h"
#include "log.h"

/* How long a client that does not read may hold its answer back. */
#define SEND_TIMEOUT_S 5
/* How long a file's client may stall its body, or its download, before the copy ends. */
#define FILE_STALL_S 30
/* How long a refused upload's body is read on (and thrown away), so that the client, still
 * sending, reads the answer before the connection closes. */
#define DRAIN_S 5
#define KVP_VALUE_BUF (API_KVP_VALUE_MAX + 1)
#define ERROR_MAX 4224 /* the agent's message (godwit_agent_error) and a prefix */

enum job_kind {
    JOB_EXEC, JOB_KVP_GET, JOB_KVP_SET, JOB_KVP_DELETE, JOB_FREEZE, JOB_THAW, JOB_TIME,
    JOB_FILE_PUT, JOB_FILE_GET
};

struct job {
    struct api_agent_jobs *jobs;
    enum job_kind kind;
    int fd;                      /* the client's connection, owned */
    char *vsock;                 /* the VM's vsock socket */
    struct godwit_agent *agent;  /* while connected; under jobs->lock */
    struct api_exec_body exec;   /* JOB_EXEC */
    struct api_kvp_body kvp;     /* JOB_KVP_SET */
    struct api_kvp_query query;  /* JOB_KVP_GET, JOB_KVP_DELETE */
    unsigned timeout_s;          /* JOB_FREEZE */
    struct godwit_vm *resumed;   /* JOB_TIME: the VM whose resume's step this is, to take over */
    struct api_file_query *file; /* JOB_FILE_PUT, JOB_FILE_GET */
    char *held;                  /* JOB_FILE_PUT: the body's bytes the server read, ... */
    size_t held_len;
    uint64_t body_left;          /* ... and how many more the client is to send on fd */
    bool send_continue;          /* it waits for "100 Continue" before sending them */
    struct job *next;
};

struct api_agent_jobs {
    pthread_mutex_t lock;
    pthread_cond_t done; /* a job ended */
    struct job *running;
    unsigned count;
    bool stopping;
};

/* A job's answer: a status with a JSON object, an error message, or nothing (204); status 0:
 * the job answered itself (a file's download). */
struct answer {
    int status;
    struct json_object *obj;
    char error[ERROR_MAX];
};

int api_agent_jobs_create(struct api_agent_jobs **out)
{
    struct api_agent_jobs *j = calloc(1, sizeof(*j));
    if (!j)
        return -ENOMEM;
    pthread_mutex_init(&j->lock, NULL);
    pthread_cond_init(&j->done, NULL);
    *out = j;
    return 0;
}

void api_agent_jobs_destroy(struct api_agent_jobs *j)
{
    if (!j)
        return;
    pthread_mutex_lock(&j->lock);
    j->stopping = true;
    for (struct job *job = j->running; job; job = job->next) {
        if (job->agent)
            godwit_agent_interrupt(job->agent);
        shutdown(job->fd, SHUT_RDWR);
    }
    while (j->count)
        pthread_cond_wait(&j->done, &j->lock);
    pthread_mutex_unlock(&j->lock);
    pthread_cond_destroy(&j->done);
    pthread_mutex_destroy(&j->lock);
    free(j);
}

static void fail(struct answer *a, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void fail(struct answer *a, int status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(a->error, sizeof(a->error), fmt, ap);
    va_end(ap);
    a->status = status;
}

/* The HTTP status for an agent's -errno: the request's fault (4xx), time (504), the agent's. */
static int status_for(int err)
{
    switch (-err) {
    case EINVAL: case E2BIG: case EMSGSIZE: case ENAMETOOLONG: case ESRCH: case EISDIR:
    case ENOTDIR: return 400;
    case EPERM: case EACCES: return 403;
    case ENOENT: return 404;
    case EFBIG: return 413;
    case ETIMEDOUT: case EAGAIN: return 504;
    default: return 502;
    }
}

/* A failed request: its status, and the agent's words when it said why. */
static void fail_agent(struct answer *a, struct godwit_agent *agent, const char *what, int err)
{
    const char *why = godwit_agent_error(agent);
    if (err == -ETIMEDOUT || err == -EAGAIN)
        fail(a, 504, "%s: the agent did not answer in time", what);
    else
        fail(a, status_for(err), "%s: %s", what, why[0] ? why : strerror(-err));
}

/* Guest bytes as a JSON string (valid UTF-8: anything else becomes U+FFFD). */
static struct json_object *guest_string(const char *buf, size_t len)
{
    size_t n;
    char *clean = api_utf8_clean(buf, len, &n);
    struct json_object *s = clean ? json_object_new_string_len(clean, (int)n) : NULL;
    free(clean);
    return s;
}

static void run_exec(struct job *job, struct godwit_agent *agent, struct answer *a)
{
    struct godwit_agent_result r;
    const struct api_exec_body *e = &job->exec;
    int ret = godwit_agent_run(agent, e->argv, e->user, e->stdin_data, e->stdin_len,
                               API_AGENT_OUTPUT_MAX, e->timeout_s * 1000u, &r);
    if (ret == -ENOENT || ret == -EACCES) {
        /* The command could not start: as godwit exec and a shell answer it. */
        char msg[ERROR_MAX + 2], none[1] = "";
        snprintf(msg, sizeof(msg), "%s\n", godwit_agent_error(agent));
        r = (struct godwit_agent_result){ .status = ret == -ENOENT ? 127 : 126, .out = none,
                                          .err = msg, .err_len = strlen(msg) };
    } else if (ret == -ETIMEDOUT) {
        fail(a, 504, "exec: the command ran past %u s: it was killed", e->timeout_s);
        return;
    } else if (ret == -EFBIG) {
        fail(a, 413, "%s: it was killed (at most %d bytes each of stdout and stderr come back "
                     "through the API; godwit exec has no limit)",
             godwit_agent_error(agent), API_AGENT_OUTPUT_MAX);
        return;
    } else if (ret < 0) {
        fail_agent(a, agent, "exec", ret);
        return;
    }
    a->status = 200;
    a->obj = json_object_new_object();
    json_object_object_add(a->obj, "exit_status", json_object_new_int(r.status));
    json_object_object_add(a->obj, "stdout", guest_string(r.out, r.out_len));
    json_object_object_add(a->obj, "stderr", guest_string(r.err, r.err_len));
    if (ret == 0)
        godwit_agent_result_free(&r);
}

static void add_entry(const char *key, const char *value, void *opaque)
{
    json_object_object_add(opaque, key, guest_string(value, strlen(value)));
}

static void run_kvp_get(struct job *job, struct godwit_agent *agent, struct answer *a)
{
    const struct api_kvp_query *q = &job->query;
    char *value = q->has_key ? malloc(KVP_VALUE_BUF) : NULL;
    struct json_object *entries = q->has_key ? NULL : json_object_new_object();
    int ret = q->has_key ? (value ? godwit_agent_kvp_get(agent, q->guest_pool, q->key, value,
                                                         KVP_VALUE_BUF) : -ENOMEM)
                         : godwit_agent_kvp_list(agent, q->guest_pool, add_entry, entries);
    if (ret < 0) {
        fail_agent(a, agent, "kvp", ret);
    } else {
        a->status = 200;
        a->obj = json_object_new_object();
        json_object_object_add(a->obj, "pool", json_object_new_string(q->guest_pool ? "guest" : "host"));
        if (q->has_key) {
            json_object_object_add(a->obj, "key", json_object_new_string(q->key));
            json_object_object_add(a->obj, "value", guest_string(value, strlen(value)));
        } else {
            json_object_object_add(a->obj, "entries", entries);
            entries = NULL;
        }
    }
    json_object_put(entries);
    free(value);
}

/* The client's connection, blocking from now on: each send and receive waits at most
 * timeout_s for it. */
static void conn_blocking(int fd, unsigned timeout_s)
{
    struct timeval tv = { .tv_sec = timeout_s };
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
}

/* PUT /vm/agent/file's body as the agent's source: what the server read first, then the
 * rest from the connection. */
struct upload {
    struct job *job;
    size_t held_off;
    int client_err; /* the client's connection failed (-errno), or its body ended early */
};

static ssize_t upload_read(void *opaque, void *buf, size_t len)
{
    struct upload *up = opaque;
    struct job *job = up->job;
    if (up->held_off < job->held_len) {
        size_t n = job->held_len - up->held_off < len ? job->held_len - up->held_off : len;
        memcpy(buf, job->held + up->held_off, n);
        up->held_off += n;
        return (ssize_t)n;
    }
    ssize_t n;
    do
        n = recv(job->fd, buf, job->body_left < len ? (size_t)job->body_left : len, 0);
    while (n < 0 && errno == EINTR);
    if (n <= 0) {
        up->client_err = n < 0 ? -errno : -EPIPE;
        return n < 0 ? -errno : 0;
    }
    job->body_left -= (uint64_t)n;
    return n;
}

/* The agent took the request: now the client, if it waits for it, may send its body. */
static int upload_accepted(void *opaque)
{
    struct upload *up = opaque;
    static const char go_on[] = "HTTP/1.1 100 Continue\r\n\r\n";
    int ret = up->job->send_continue ? agent_send_all(up->job->fd, go_on, sizeof(go_on) - 1) : 0;
    if (ret < 0)
        up->client_err = ret;
    return ret;
}

static void run_file_put(struct job *job, struct godwit_agent *agent, struct answer *a)
{
    struct upload up = { .job = job };
    struct agent_source src = { .read = upload_read, .accepted = upload_accepted, .opaque = &up };
    uint64_t size = job->held_len + job->body_left;
    conn_blocking(job->fd, FILE_STALL_S);
    int ret = agent_client_put_from(godwit_agent_client(agent), &src, job->file->path,
                                    job->file->mode, size);
    if (ret == 0)
        a->status = 204;
    else if (up.client_err == -EAGAIN)
        fail(a, 408, "file: the body stalled for %d s (%llu of %llu bytes came)", FILE_STALL_S,
             (unsigned long long)(size - job->body_left), (unsigned long long)size);
    else if (up.client_err)
        fail(a, 400, "file: the body ended after %llu of %llu bytes",
             (unsigned long long)(size - job->body_left), (unsigned long long)size);
    else
        fail_agent(a, agent, "file", ret);
}

/*
 * GET /vm/agent/file's answer, sent as the agent sends the file: the head once its size is
 * known, then each chunk. The last chunk is held back until the agent's checksum agrees: a
 * copy that fails after the head ends the connection short of Content-Length, which a client
 * sees as an error (curl: exit 18), never as a whole file.
 */
struct download {
    int fd;
    uint64_t size, got;
    bool head_sent; /* info came: the head went out (or the client is gone) */
    uint8_t *held;
    size_t held_len;
};

static int download_info(void *opaque, uint32_t mode, uint64_t size)
{
    struct download *d = opaque;
    char head[256];
    int n = snprintf(head, sizeof(head),
                     "HTTP/1.1 200 %s\r\nContent-Type: application/octet-stream\r\n"
                     "Content-Length: %llu\r\nX-Godwit-Mode: %04o\r\nConnection: close\r\n\r\n",
                     http_reason(200), (unsigned long long)size, (unsigned)mode);
    d->size = size;
    d->head_sent = true;
    return agent_send_all(d->fd, head, (size_t)n);
}

static int download_data(void *opaque, const void *data, size_t len)
{
    struct download *d = opaque;
    if (len == 0)
        return 0;
    if (len > d->size - d->got)
        return -EFBIG; /* the guest's file grew while it was read */
    int ret = d->held_len ? agent_send_all(d->fd, d->held, d->held_len) : 0;
    memcpy(d->held, data, len);
    d->held_len = len;
    d->got += len;
    return ret;
}

static void run_file_get(struct job *job, struct godwit_agent *agent, struct answer *a)
{
    struct download d = { .fd = job->fd, .held = malloc(AGENT_CHUNK) };
    struct agent_sink sink = { .info = download_info, .data = download_data, .opaque = &d };
    if (!d.held) {
        fail(a, 500, "out of memory");
        return;
    }
    conn_blocking(job->fd, FILE_STALL_S);
    int ret = agent_client_get_to(godwit_agent_client(agent), job->file->path, &sink);
    if (ret == 0 && d.held_len)
        ret = agent_send_all(job->fd, d.held, d.held_len);
    if (ret < 0 && !d.head_sent)
        fail_agent(a, agent, "file", ret);
    else
        a->status = 0; /* answered: whole, or cut short */
    if (ret < 0 && d.head_sent)
        log_warn("api: GET /vm/agent/file %s: cut short after %llu of %llu bytes: %s",
                 job->file->path, (unsigned long long)d.got, (unsigned long long)d.size,
                 godwit_agent_error(agent)[0] ? godwit_agent_error(agent) : strerror(-ret));
    free(d.held);
}

static void run_job(struct job *job, struct godwit_agent *agent, struct answer *a)
{
    unsigned n = 0;
    int ret = 0;
    switch (job->kind) {
    case JOB_EXEC: run_exec(job, agent, a); return;
    case JOB_KVP_GET: run_kvp_get(job, agent, a); return;
    case JOB_KVP_SET: ret = godwit_agent_kvp_set(agent, job->kvp.key, job->kvp.value); break;
    case JOB_KVP_DELETE: ret = godwit_agent_kvp_delete(agent, job->query.key); break;
    case JOB_FREEZE: ret = godwit_agent_freeze(agent, job->timeout_s, &n); break;
    case JOB_THAW: ret = godwit_agent_thaw(agent, &n); break;
    case JOB_TIME: ret = godwit_agent_sync_time(agent); break;
    case JOB_FILE_PUT: run_file_put(job, agent, a); return;
    case JOB_FILE_GET: run_file_get(job, agent, a); return;
    }
    if (ret < 0) {
        fail_agent(a, agent, job->kind == JOB_FREEZE ? "freeze" : job->kind == JOB_THAW ? "thaw"
                             : job->kind == JOB_TIME ? "sync-time" : "kvp", ret);
        return;
    }
    a->status = 204;
    if (job->kind == JOB_FREEZE || job->kind == JOB_THAW) {
        a->status = 200;
        a->obj = json_object_new_object();
        json_object_object_add(a->obj, "filesystems", json_object_new_int((int)n));
    }
}

/* Writes the whole answer, waiting at most SEND_TIMEOUT_S for a client that does not read. */
static void send_answer(int fd, struct answer *a)
{
    const char *body = a->obj ? json_object_to_json_string_ext(a->obj, JSON_C_TO_STRING_PLAIN) : NULL;
    /* An error's message grows in JSON by 6 bytes a character at most (\u00XX). */
    size_t len = (body ? strlen(body) : sizeof(a->error) * 6) + 1024;
    char *buf = malloc(len);
    int n = !buf ? -ENOMEM
            : body ? http_format_response(buf, len, a->status, "application/json", body,
                                          strlen(body), true)
            : a->status == 204 ? http_format_response(buf, len, 204, NULL, NULL, 0, true)
                               : http_format_error(buf, len, a->status, a->error, NULL, true);
    conn_blocking(fd, SEND_TIMEOUT_S);
    int ret = n > 0 ? agent_send_all(fd, buf, (size_t)n) : 0;
    if (ret < 0)
        log_debug("api: an agent request's client went away: %s", strerror(-ret));
    free(buf);
}

/* The rest of a refused upload's body, thrown away: for DRAIN_S at most. */
static void drain_body(struct job *job)
{
    char buf[4096];
    struct timespec start, now;
    shutdown(job->fd, SHUT_WR);
    conn_blocking(job->fd, 1);
    clock_gettime(CLOCK_MONOTONIC, &start);
    for (now = start; job->body_left && now.tv_sec - start.tv_sec < DRAIN_S;) {
        ssize_t n = recv(job->fd, buf, job->body_left < sizeof(buf) ? (size_t)job->body_left
                                                                    : sizeof(buf), 0);
        if (n == 0 || (n < 0 && errno != EINTR && errno != EAGAIN))
            break;
        if (n > 0)
            job->body_left -= (uint64_t)n;
        clock_gettime(CLOCK_MONOTONIC, &now);
    }
}

static void job_free(struct job *job)
{
    free(job->file);
    free(job->held);
    api_body_free(job->exec.root);
    api_body_free(job->kvp.root);
    free(job->vsock);
    free(job);
}

/* Publishes (or withdraws) the job's agent, for api_agent_jobs_destroy to interrupt. */
static bool set_agent(struct job *job, struct godwit_agent *agent)
{
    struct api_agent_jobs *j = job->jobs;
    pthread_mutex_lock(&j->lock);
    job->agent = agent;
    bool stopping = j->stopping;
    pthread_mutex_unlock(&j->lock);
    return !stopping;
}

static void *job_thread(void *arg)
{
    struct job *job = arg;
    struct api_agent_jobs *j = job->jobs;
    struct answer a = { .status = 500 };
    int err = 0;
    /* After a resume: the step is this job's only if the monitor has not made it (it may be
     * making it now: then this waits for it, so that the answer comes after the step). */
    bool owed = !job->resumed || godwit_agent_take_resume(job->resumed);
    struct godwit_agent *agent = owed ? godwit_agent_connect(job->vsock, &err) : NULL;
    if (!owed)
        a.status = 204; /* made already, or the monitor's to make: nothing to do */
    else if (!agent && err == -ECONNREFUSED)
        fail(&a, 503, "no agent answers on vsock port 1024 (is godwit-agent running in the guest?)");
    else if (!agent)
        fail(&a, 503, "cannot reach the agent through %s: %s", job->vsock, strerror(-err));
    if (agent && !set_agent(job, agent))
        fail(&a, 503, "the VM is ending");
    else if (agent && (err = godwit_agent_set_timeout(agent, API_AGENT_TIMEOUT_MS)) < 0)
        fail(&a, 500, "cannot bound the wait for the agent: %s", strerror(-err));
    else if (agent)
        run_job(job, agent, &a);
    if (agent) {
        set_agent(job, NULL);
        godwit_agent_close(agent);
    }
    if (owed && job->resumed && a.status != 204)
        godwit_agent_give_back_resume(job->resumed); /* the monitor tries again */
    else if (owed && job->resumed)
        log_info("agent: guest clock stepped to the host's after the resume (asked through the API)");
    if (a.status)
        send_answer(job->fd, &a);
    if (job->body_left)
        drain_body(job);
    json_object_put(a.obj);
    close(job->fd);

    pthread_mutex_lock(&j->lock);
    for (struct job **p = &j->running; *p; p = &(*p)->next) {
        if (*p == job) {
            *p = job->next;
            break;
        }
    }
    job_free(job);
    j->count--;
    pthread_cond_broadcast(&j->done);
    pthread_mutex_unlock(&j->lock);
    return NULL;
}

static void early_error(struct api_agent_ctx *ctx, struct http_response *resp, int status,
                        const char *message)
{
    http_error_response(resp, ctx->body, sizeof(ctx->body), status, message);
}

/* Hands a checked request to a thread of its own, or answers why not. Frees job if not. */
static void job_start(struct api_agent_ctx *ctx, struct job *job, struct http_response *resp)
{
    const struct vm_config *cfg = godwit_config(ctx->vm);
    enum godwit_state state = godwit_get_state(ctx->vm);
    struct api_agent_jobs *j = ctx->jobs;
    char msg[96];
    pthread_t t;
    pthread_attr_t attr;
    if (!cfg->vsock_cid || !cfg->vsock_path) {
        early_error(ctx, resp, 409, "the VM has no vsock device (godwit run --vsock cid=N)");
    } else if (state != GODWIT_STATE_RUNNING) {
        snprintf(msg, sizeof(msg), "the VM is %s: its agent cannot answer", godwit_state_name(state));
        early_error(ctx, resp, 409, msg);
    } else if (!(job->vsock = strdup(cfg->vsock_path))) {
        early_error(ctx, resp, 500, "out of memory");
    } else {
        job->jobs = j;
        job->fd = ctx->fd;
        pthread_mutex_lock(&j->lock);
        bool room = j->count < API_AGENT_JOBS_MAX;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        int ret = room ? -pthread_create(&t, &attr, job_thread, job) : 0;
        pthread_attr_destroy(&attr);
        if (room && ret == 0) {
            job->next = j->running;
            j->running = job;
            j->count++;
            ctx->taken = true;
        }
        pthread_mutex_unlock(&j->lock);
        if (ctx->taken)
            return;
        if (!room)
            early_error(ctx, resp, 503, "too many agent requests under way (8 at most): retry later");
        else
            early_error(ctx, resp, 500, "cannot start the agent request's thread");
    }
    job_free(job);
}

/* A new job of `kind`, or NULL after answering 500. */
static struct job *job_new(struct api_agent_ctx *ctx, enum job_kind kind, struct http_response *resp)
{
    struct job *job = calloc(1, sizeof(*job));
    if (!job)
        early_error(ctx, resp, 500, "out of memory");
    else
        job->kind = kind;
    return job;
}

/* A job whose request was parsed (`parsed` 0) is started; else 400 with the usage line. */
static void start_parsed(struct api_agent_ctx *ctx, struct job *job, int parsed,
                         const char *usage, struct http_response *resp)
{
    if (parsed < 0) {
        early_error(ctx, resp, 400, usage);
        job_free(job);
        return;
    }
    job_start(ctx, job, resp);
}

void api_agent_exec(void *opaque, const struct http_request *req, struct http_response *resp)
{
    struct api_agent_ctx *ctx = opaque;
    struct job *job = job_new(ctx, JOB_EXEC, resp);
    if (!job)
        return;
    start_parsed(ctx, job, api_parse_exec_body(req->body, req->body_len, &job->exec),
                 API_EXEC_BODY_USAGE, resp);
}

/* A KVP job parsed as `parsed`; a write to the guest pool (`writes_guest_pool`) is 403. */
static void start_kvp(struct api_agent_ctx *ctx, struct job *job, int parsed, const char *usage,
                      bool writes_guest_pool, struct http_response *resp)
{
    if (parsed == 0 && writes_guest_pool) {
        early_error(ctx, resp, 403, "the guest pool is written by the guest only");
        job_free(job);
        return;
    }
    start_parsed(ctx, job, parsed, usage, resp);
}

/* GET and DELETE: the key (and pool) in the query. */
static void kvp_query_job(struct api_agent_ctx *ctx, const struct http_request *req,
                          struct http_response *resp, enum job_kind kind)
{
    struct job *job = job_new(ctx, kind, resp);
    if (!job)
        return;
    bool deletes = kind == JOB_KVP_DELETE;
    int parsed = api_parse_kvp_query(req->query, deletes, &job->query);
    start_kvp(ctx, job, parsed, API_KVP_QUERY_USAGE, deletes && job->query.guest_pool, resp);
}

void api_agent_kvp_get(void *opaque, const struct http_request *req, struct http_response *resp)
{
    kvp_query_job(opaque, req, resp, JOB_KVP_GET);
}

void api_agent_kvp_delete(void *opaque, const struct http_request *req,
                          struct http_response *resp)
{
    kvp_query_job(opaque, req, resp, JOB_KVP_DELETE);
}

void api_agent_kvp_put(void *opaque, const struct http_request *req, struct http_response *resp)
{
    struct api_agent_ctx *ctx = opaque;
    struct job *job = job_new(ctx, JOB_KVP_SET, resp);
    if (!job)
        return;
    int parsed = api_parse_kvp_body(req->body, req->body_len, &job->kvp);
    start_kvp(ctx, job, parsed, API_KVP_BODY_USAGE, job->kvp.guest_pool, resp);
}

void api_agent_freeze(void *opaque, const struct http_request *req, struct http_response *resp)
{
    struct api_agent_ctx *ctx = opaque;
    struct job *job = job_new(ctx, JOB_FREEZE, resp);
    if (!job)
        return;
    start_parsed(ctx, job, api_parse_freeze_body(req->body, req->body_len, &job->timeout_s),
                 API_FREEZE_BODY_USAGE, resp);
}

void api_agent_thaw(void *opaque, const struct http_request *req, struct http_response *resp)
{
    struct job *job = job_new(opaque, JOB_THAW, resp);
    (void)req;
    if (job)
        job_start(opaque, job, resp);
}

/*
 * With "?after=resume" (godwit resume's, after its PUT /vm/resume): the step the resume left to
 * the agent's monitor is made here, before the answer, and not again by the monitor; when the
 * monitor made it already, or waits for an agent that is not alive, nothing is stepped (204).
 * When the monitor is making it right now (its heartbeat's answer came first), the answer waits
 * for that step, on the job's thread: the step goes through the vsock device this thread serves.
 */
void api_agent_sync_time(void *opaque, const struct http_request *req,
                         struct http_response *resp)
{
    struct api_agent_ctx *ctx = opaque;
    bool after_resume = req->query && strcmp(req->query, "after=resume") == 0;
    if (req->query && req->query[0] && !after_resume) {
        early_error(ctx, resp, 400, "usage: PUT /vm/agent/sync-time[?after=resume]");
        return;
    }
    const struct vm_config *cfg = godwit_config(ctx->vm);
    if (after_resume && (!cfg->vsock_cid || godwit_get_state(ctx->vm) != GODWIT_STATE_RUNNING)) {
        resp->status = 204; /* no agent's monitor, or no guest running: no step owed */
        return;
    }
    struct job *job = job_new(ctx, JOB_TIME, resp);
    if (job) {
        job->resumed = after_resume ? ctx->vm : NULL;
        job_start(ctx, job, resp);
    }
}

/* A file job's query into job->file: 0, or -EINVAL / -ENOMEM. */
static int parse_file_query(struct job *job, const struct http_request *req, bool with_mode)
{
    if (!(job->file = malloc(sizeof(*job->file))))
        return -ENOMEM;
    return api_parse_file_query(req->query, with_mode, job->file);
}

void api_agent_file_get(void *opaque, const struct http_request *req, struct http_response *resp)
{
    struct api_agent_ctx *ctx = opaque;
    struct job *job = job_new(ctx, JOB_FILE_GET, resp);
    if (!job)
        return;
    start_parsed(ctx, job, parse_file_query(job, req, false), API_FILE_QUERY_USAGE, resp);
}

/* The body may be larger than the server holds (http_route.large_body): the job reads the
 * rest of it from the connection, as the agent takes it. */
void api_agent_file_put(void *opaque, const struct http_request *req, struct http_response *resp)
{
    struct api_agent_ctx *ctx = opaque;
    struct job *job = job_new(ctx, JOB_FILE_PUT, resp);
    if (!job)
        return;
    int parsed = parse_file_query(job, req, true);
    if (parsed == 0 && req->body_len && !(job->held = malloc(req->body_len))) {
        early_error(ctx, resp, 500, "out of memory");
        job_free(job);
        return;
    }
    if (job->held)
        memcpy(job->held, req->body, req->body_len);
    job->held_len = req->body_len;
    job->body_left = req->body_pending;
    job->send_continue = ctx->send_continue;
    start_parsed(ctx, job, parsed, API_FILE_PUT_QUERY_USAGE, resp);
}
