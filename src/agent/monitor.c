/* monitor.c: the guest agent's heartbeat, as the VMM sees it (monitor.h). */
#define _GNU_SOURCE
#include "agent/monitor.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "agent/client.h"
#include "log.h"

/* How long one request may take before the agent counts as not answering. */
#define AGENT_ANSWER_TIMEOUT_MS 2000

struct agent_monitor {
    char *vsock_path;
    agent_monitor_fn fn;
    void *opaque;
    int wake[2]; /* a byte on wake[1] wakes the thread: to stop, or to ask for a power-off */
    pthread_t thread;

    pthread_mutex_t lock; /* guards st, last_answer, fd, resumed, stopping, poweroff, waiters */
    pthread_cond_t stepped; /* resumed.stepping ended, or a waiter left */
    struct agent_status st;
    struct timespec last_answer;
    int fd; /* the connection to the agent, -1: none; stop shuts it down to end a wait */
    struct {
        const char *why; /* NULL: nothing to do */
        bool thaw;
        struct timespec since;
        bool stepping; /* the thread makes the step now (why taken, outcome not yet known) */
    } resumed; /* agent_monitor_resumed()'s work, until done or given up */
    unsigned waiters; /* in agent_monitor_wait_step(): stop frees the monitor only after them */
    bool stopping;
    bool poweroff; /* asked for, not yet sent */
};

static unsigned resumed_wait_ms = AGENT_RESUMED_WAIT_MS; /* agent_monitor_test_set_wait() */

void agent_monitor_test_set_wait(unsigned ms)
{
    resumed_wait_ms = ms;
}

static double ms_since(const struct timespec *t)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)(now.tv_sec - t->tv_sec) * 1e3 + (double)(now.tv_nsec - t->tv_nsec) / 1e6;
}

static void set_timeouts(int fd)
{
    struct timeval tv = { .tv_sec = AGENT_ANSWER_TIMEOUT_MS / 1000,
                          .tv_usec = (AGENT_ANSWER_TIMEOUT_MS % 1000) * 1000 };
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
}

/* The agent's INFO reply into the status (under the lock). */
static void take_info(struct agent_monitor *m, const struct agent_msg *reply)
{
    struct agent_status *st = &m->st;
    agent_get_str(reply, AGENT_T_VERSION, st->version, sizeof(st->version));
    agent_get_str(reply, AGENT_T_OS, st->os, sizeof(st->os));
    agent_get_str(reply, AGENT_T_KERNEL, st->kernel, sizeof(st->kernel));
    agent_get_str(reply, AGENT_T_HOSTNAME, st->hostname, sizeof(st->hostname));
    st->addresses[0] = '\0';
    size_t pos = 0, used = 0;
    struct agent_field f;
    while (agent_field_next(reply, &pos, &f)) {
        if (f.tag != AGENT_T_ADDRESS || used + f.len + 2 > sizeof(st->addresses))
            continue;
        if (used)
            st->addresses[used++] = ' ';
        memcpy(st->addresses + used, f.value, f.len);
        used += f.len;
        st->addresses[used] = '\0';
    }
}

static void disconnect(struct agent_monitor *m, struct agent_client *c)
{
    pthread_mutex_lock(&m->lock);
    m->fd = -1;
    pthread_mutex_unlock(&m->lock);
    agent_client_close(c);
}

/* A new connection: the agent's INFO first. NULL when the agent does not answer. */
static struct agent_client *connect_agent(struct agent_monitor *m)
{
    struct agent_msg reply;
    int err;
    struct agent_client *c = agent_client_open(m->vsock_path, &err);
    if (!c)
        return NULL;
    set_timeouts(c->fd);
    pthread_mutex_lock(&m->lock);
    m->fd = c->fd; /* from here stop can end a wait for the guest */
    pthread_mutex_unlock(&m->lock);
    if (agent_vsock_handshake(c->fd, AGENT_VSOCK_PORT, AGENT_ANSWER_TIMEOUT_MS) < 0 ||
        agent_client_simple(c, AGENT_INFO, &reply) < 0 || reply.h.type != AGENT_INFO_REPLY) {
        disconnect(m, c);
        return NULL;
    }
    pthread_mutex_lock(&m->lock);
    take_info(m, &reply);
    pthread_mutex_unlock(&m->lock);
    return c;
}

/* One heartbeat: 0 when the agent answered PING. */
static int ping(struct agent_client *c)
{
    struct agent_msg reply;
    int ret = agent_client_simple(c, AGENT_PING, &reply);
    return ret < 0 ? ret : reply.h.type == AGENT_OK ? 0 : -EPROTO;
}

/* Marks an answer now, or none, and tells of a change of state. */
static void record(struct agent_monitor *m, bool answered)
{
    struct agent_status st;
    pthread_mutex_lock(&m->lock);
    if (answered) {
        clock_gettime(CLOCK_MONOTONIC, &m->last_answer);
        m->st.seen = true;
    }
    bool was = m->st.alive;
    m->st.alive = m->st.seen && ms_since(&m->last_answer) < AGENT_LOST_MS;
    st = m->st;
    pthread_mutex_unlock(&m->lock);
    if (st.alive == was)
        return;
    /* Quietly: the serial console may be the user's terminal. */
    if (st.alive)
        log_debug("agent: answering (%s, %s, kernel %s)", st.version, st.os, st.kernel);
    else
        log_debug("agent: no answer for %d s", AGENT_LOST_MS / 1000);
    if (m->fn)
        m->fn(m->opaque, st.alive, &st);
}

/* Waits `ms` or until woken: true when stopped. */
static bool wait_or_stop(struct agent_monitor *m, int ms)
{
    struct pollfd p = { .fd = m->wake[0], .events = POLLIN };
    char byte;
    if (poll(&p, 1, ms) > 0 && read(m->wake[0], &byte, 1) < 0)
        log_debug("agent: reading the monitor's wake-up: %s", strerror(errno));
    pthread_mutex_lock(&m->lock);
    bool stopping = m->stopping;
    pthread_mutex_unlock(&m->lock);
    return stopping;
}

/* A power-off asked for by agent_monitor_request_poweroff(), sent on this connection. */
static void send_poweroff(struct agent_monitor *m, struct agent_client *c)
{
    pthread_mutex_lock(&m->lock);
    bool wanted = m->poweroff;
    m->poweroff = false;
    pthread_mutex_unlock(&m->lock);
    int ret = wanted ? agent_client_shutdown(c, false) : 0;
    if (ret < 0)
        log_warn("agent: asking it to power the guest off failed: %s",
                 c->error[0] ? c->error : strerror(-ret));
}

/* The host's CLOCK_REALTIME to the guest; with `thaw`, its filesystems thawed. 0 or -errno. */
static int step_clock(struct agent_client *c, bool thaw, uint32_t *thawed)
{
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    uint64_t ns = (uint64_t)now.tv_sec * 1000000000ull + (uint64_t)now.tv_nsec;
    int ret = agent_client_set_time(c, ns);
    *thawed = 0;
    return ret < 0 || !thaw ? ret : agent_client_freeze(c, false, 0, thawed);
}

/*
 * agent_monitor_resumed()'s work, on a connection whose agent just answered. Returns -errno when
 * that connection failed (the next turn tries again on a new one), else 0: done, or given up.
 */
static int after_resume(struct agent_monitor *m, struct agent_client *c)
{
    pthread_mutex_lock(&m->lock);
    const char *why = m->resumed.why;
    bool thaw = m->resumed.thaw, seen = m->st.seen;
    double waited = why ? ms_since(&m->resumed.since) : 0;
    m->resumed.why = NULL;
    m->resumed.stepping = why != NULL;
    pthread_mutex_unlock(&m->lock);
    if (!why)
        return 0;
    uint32_t thawed;
    int ret = c ? step_clock(c, thaw, &thawed) : -ENOTCONN;
    bool again = false;
    if (ret == 0) {
        /* The step itself only the guest knows: its agent logs it when over a second. */
        log_info("agent: guest clock stepped to the host's after the %s (%.1f s after the guest "
                 "ran again)%s", why, waited / 1e3, thaw && thawed ? ", filesystems thawed" : "");
    } else if (waited >= resumed_wait_ms) {
        /* A guest that never ran an agent (a vsock device for something else) has no clock to
         * step here: only an agent that answered once and no longer does is worth a warning. */
        if (seen || c)
            log_warn("agent: no answer within %u s of the %s: the guest's clock was not stepped "
                     "(%s)", resumed_wait_ms / 1000, why,
                     c && c->error[0] ? c->error : strerror(-ret));
        else
            log_debug("agent: none answered within %u s of the %s: no clock to step",
                      resumed_wait_ms / 1000, why);
        ret = c ? ret : 0;
    } else {
        again = true; /* not yet: again on the next turn */
    }
    pthread_mutex_lock(&m->lock);
    if (again && !m->resumed.why)
        m->resumed.why = why;
    m->resumed.stepping = false;
    pthread_cond_broadcast(&m->stepped);
    pthread_mutex_unlock(&m->lock);
    return ret;
}

static void *monitor_thread(void *arg)
{
    struct agent_monitor *m = arg;
    struct agent_client *c = NULL;
    do {
        if (!c)
            c = connect_agent(m);
        if (c)
            send_poweroff(m, c);
        bool answered = c && ping(c) == 0;
        if (after_resume(m, answered ? c : NULL) < 0 && c)
            answered = false;
        if (c && !answered) {
            disconnect(m, c); /* the next turn connects again */
            c = NULL;
        }
        record(m, answered);
    } while (!wait_or_stop(m, AGENT_PING_INTERVAL_MS));
    if (c)
        disconnect(m, c);
    return NULL;
}

int agent_monitor_start(struct agent_monitor **out, const char *vsock_path, agent_monitor_fn fn,
                        void *opaque)
{
    struct agent_monitor *m = calloc(1, sizeof(*m));
    *out = NULL;
    if (!m || !(m->vsock_path = strdup(vsock_path))) {
        free(m);
        return -ENOMEM;
    }
    m->fn = fn;
    m->opaque = opaque;
    m->fd = -1;
    pthread_mutex_init(&m->lock, NULL);
    pthread_cond_init(&m->stepped, NULL);
    int ret = pipe2(m->wake, O_CLOEXEC) < 0 ? -errno : 0;
    if (ret == 0 && (ret = -pthread_create(&m->thread, NULL, monitor_thread, m)) < 0) {
        close(m->wake[0]);
        close(m->wake[1]);
    }
    if (ret < 0) {
        log_error("agent: cannot start its heartbeat: %s", strerror(-ret));
        pthread_cond_destroy(&m->stepped);
        pthread_mutex_destroy(&m->lock);
        free(m->vsock_path);
        free(m);
        return ret;
    }
    pthread_setname_np(m->thread, "godwit-agent");
    *out = m;
    return 0;
}

void agent_monitor_stop(struct agent_monitor *m)
{
    if (!m)
        return;
    pthread_mutex_lock(&m->lock);
    m->stopping = true;
    pthread_mutex_unlock(&m->lock);
    if (write(m->wake[1], "", 1) < 0)
        log_warn("agent: cannot stop its heartbeat: %s", strerror(errno));
    pthread_mutex_lock(&m->lock);
    if (m->fd >= 0)
        shutdown(m->fd, SHUT_RDWR); /* a request waiting for the agent ends now */
    pthread_mutex_unlock(&m->lock);
    pthread_join(m->thread, NULL);
    pthread_mutex_lock(&m->lock); /* the thread is gone, so no step is under way: */
    while (m->waiters)            /* the waiters are on their way out */
        pthread_cond_wait(&m->stepped, &m->lock);
    pthread_mutex_unlock(&m->lock);
    close(m->wake[0]);
    close(m->wake[1]);
    pthread_cond_destroy(&m->stepped);
    pthread_mutex_destroy(&m->lock);
    free(m->vsock_path);
    free(m);
}

void agent_monitor_resumed(struct agent_monitor *m, const char *why, bool thaw)
{
    pthread_mutex_lock(&m->lock);
    m->resumed.why = why;
    m->resumed.thaw = thaw;
    clock_gettime(CLOCK_MONOTONIC, &m->resumed.since);
    pthread_mutex_unlock(&m->lock);
}

enum agent_resumed_claim agent_monitor_take_resumed(struct agent_monitor *m, const char *why)
{
    enum agent_resumed_claim claim = AGENT_RESUMED_NONE;
    pthread_mutex_lock(&m->lock);
    /* An agent that answered before: after a pause longer than AGENT_LOST_MS it is not alive
     * until its next answer (its pings went unanswered meanwhile), and the caller, asking just
     * after the resume, would otherwise return before the monitor's step. The caller's step
     * waits for the agent, bounded by its requests' timeouts, and gives it back on failure. */
    if (m->resumed.why && strcmp(m->resumed.why, why) == 0 && !m->resumed.thaw && m->st.seen) {
        m->resumed.why = NULL;
        claim = AGENT_RESUMED_TAKEN;
    } else if (m->resumed.stepping) {
        m->waiters++; /* released by agent_monitor_wait_step() */
        claim = AGENT_RESUMED_STEPPING;
    }
    pthread_mutex_unlock(&m->lock);
    return claim;
}

void agent_monitor_wait_step(struct agent_monitor *m)
{
    pthread_mutex_lock(&m->lock);
    while (m->resumed.stepping) /* bounded: the step's requests time out, and stop ends them */
        pthread_cond_wait(&m->stepped, &m->lock);
    m->waiters--;
    pthread_cond_broadcast(&m->stepped); /* for a stop waiting on the waiters */
    pthread_mutex_unlock(&m->lock);
}

void agent_monitor_status(struct agent_monitor *m, struct agent_status *st)
{
    pthread_mutex_lock(&m->lock);
    *st = m->st;
    st->age_ms = m->st.seen ? ms_since(&m->last_answer) : 0;
    pthread_mutex_unlock(&m->lock);
}

bool agent_monitor_request_poweroff(struct agent_monitor *m)
{
    pthread_mutex_lock(&m->lock);
    bool alive = m->st.alive;
    if (alive)
        m->poweroff = true;
    pthread_mutex_unlock(&m->lock);
    if (alive && write(m->wake[1], "p", 1) < 0)
        log_warn("agent: cannot wake its monitor: %s", strerror(errno));
    return alive;
}
