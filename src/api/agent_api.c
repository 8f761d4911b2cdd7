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

#include "api/bodies.h"
#include "lib/godwit_internal.h"
#include "log.h"

/* How long a client that does not read may hold its answer back. */
#define SEND_TIMEOUT_S 5
#define KVP_VALUE_BUF (API_KVP_VALUE_MAX + 1)
#define ERROR_MAX 4224 /* the agent's message (godwit_agent_error) and a prefix */

enum job_kind { JOB_EXEC, JOB_KVP_GET, JOB_KVP_SET, JOB_KVP_DELETE, JOB_FREEZE, JOB_THAW, JOB_TIME };

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
    struct job *next;
};

struct api_agent_jobs {
    pthread_mutex_t lock;
    pthread_cond_t done; /* a job ended */
    struct job *running;
    unsigned count;
    bool stopping;
};

/* A job's answer: a status with a JSON object, an error message, or nothing (204). */
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
    case EINVAL: case E2BIG: case EMSGSIZE: case ENAMETOOLONG: case ESRCH: return 400;
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
    struct timeval tv = { .tv_sec = SEND_TIMEOUT_S };
    const char *body = a->obj ? json_object_to_json_string_ext(a->obj, JSON_C_TO_STRING_PLAIN) : NULL;
    /* An error's message grows in JSON by 6 bytes a character at most (\u00XX). */
    size_t len = (body ? strlen(body) : sizeof(a->error) * 6) + 1024;
    char *buf = malloc(len);
    int n = !buf ? -ENOMEM
            : body ? http_format_response(buf, len, a->status, "application/json", body,
                                          strlen(body), true)
            : a->status == 204 ? http_format_response(buf, len, 204, NULL, NULL, 0, true)
                               : http_format_error(buf, len, a->status, a->error, NULL, true);
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    for (int off = 0; n > 0 && off < n;) {
        ssize_t w = send(fd, buf + off, (size_t)(n - off), MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            log_debug("api: an agent request's client went away: %s", strerror(errno));
            break;
        }
        off += (int)w;
    }
    free(buf);
}

static void job_free(struct job *job)
{
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
    int err;
    struct godwit_agent *agent = godwit_agent_connect(job->vsock, &err);
    if (!agent && err == -ECONNREFUSED)
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
    send_answer(job->fd, &a);
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

void api_agent_sync_time(void *opaque, const struct http_request *req,
                         struct http_response *resp)
{
    struct job *job = job_new(opaque, JOB_TIME, resp);
    (void)req;
    if (job)
        job_start(opaque, job, resp);
}
