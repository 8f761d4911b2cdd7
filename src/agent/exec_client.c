/*
 * exec_client.c: the host's side of an exec session: stdin to the agent, stdout and stderr
 * from it, signals passed on, until the command's end.
 *
 * The socket is written without blocking from a buffer of its own and read whenever the agent
 * sends: the agent blocks while sending output, so a client blocked in a write of stdin would
 * never read that output, and both would wait for ever.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <signal.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "agent/client.h"
#include "io/fd_io.h"

struct exec_state {
    struct agent_client *c;
    const struct agent_exec_io *io;
    uint8_t pend[AGENT_BUF_SIZE]; /* a message on its way to the agent */
    size_t plen, poff;
    int sigs[8];                  /* signals waiting for the buffer to empty */
    int nsigs;
    int term_signal;              /* the first ending signal passed on, 0 before one */
    bool stdin_open;
    int status;                   /* -1 until EXIT */
    uint64_t written[3];          /* bytes of output per stream (AGENT_STDOUT, AGENT_STDERR) */
    struct timespec deadline;     /* with io->timeout_ms */
    uint8_t buf[AGENT_CHUNK];     /* stdin read; not static: the API runs sessions at once */
};

/* Queues a message built in c->out; there is room only when pend is empty. */
static void queue(struct exec_state *s, size_t len)
{
    memcpy(s->pend, s->c->out, len);
    s->plen = len;
    s->poff = 0;
}

static int flush(struct exec_state *s)
{
    while (s->poff < s->plen) {
        ssize_t n = send(s->c->fd, s->pend + s->poff, s->plen - s->poff,
                         MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN)
            return 0;
        if (n < 0) {
            /* The agent closed its side: after the command's end, which is still to be
             * read, or not; the read says which. Nothing more goes to it. */
            s->plen = s->poff = 0;
            s->nsigs = 0;
            s->stdin_open = false;
            return 0;
        }
        s->poff += (size_t)n;
    }
    s->plen = s->poff = 0;
    if (s->nsigs) {
        struct agent_builder b;
        struct winsize ws;
        if (s->sigs[0] == SIGWINCH && ioctl(s->io->out, TIOCGWINSZ, &ws) == 0) {
            /* The terminal's new size, for the command's terminal. */
            agent_build_start(&b, s->c->out, AGENT_RESIZE, 0, s->c->next_id++);
            agent_put_u32(&b, AGENT_T_ROWS, ws.ws_row);
            agent_put_u32(&b, AGENT_T_COLS, ws.ws_col);
        } else {
            agent_build_start(&b, s->c->out, AGENT_SIGNAL, 0, s->c->next_id++);
            agent_put_u32(&b, AGENT_T_SIGNAL, (uint32_t)s->sigs[0]);
        }
        memmove(s->sigs, s->sigs + 1, (size_t)--s->nsigs * sizeof(int));
        queue(s, agent_build_end(&b));
        return flush(s);
    }
    return 0;
}

static int read_stdin(struct exec_state *s)
{
    ssize_t n = read(s->io->in, s->buf, sizeof(s->buf));
    if (n < 0 && (errno == EINTR || errno == EAGAIN))
        return 0;
    struct agent_builder b;
    agent_build_start(&b, s->c->out, AGENT_STDIN, n > 0 ? 0 : AGENT_FLAG_EOF, s->c->next_id++);
    if (n > 0)
        agent_put_bytes(&b, AGENT_T_DATA, s->buf, (size_t)n);
    else
        s->stdin_open = false; /* end of file, or an error: the command's stdin ends */
    queue(s, agent_build_end(&b));
    return flush(s);
}

/*
 * A signal to pass on. The first that ends a command (all but SIGWINCH) goes to it; a second
 * ends the session here instead, status 128 + its number: the command did not end on the
 * first (it may not: a trap), or its agent no longer answers, and whoever sent both wants
 * this program gone (a user pressing Ctrl-C twice, `timeout` or systemd after a first
 * SIGTERM). -ECANCELED, the command perhaps still running in the guest.
 */
static int on_signal(struct exec_state *s, int sfd)
{
    struct signalfd_siginfo si;
    if (read(sfd, &si, sizeof(si)) != (ssize_t)sizeof(si))
        return 0;
    int sig = (int)si.ssi_signo;
    if (sig != SIGWINCH && s->term_signal) {
        snprintf(s->c->error, sizeof(s->c->error),
                 "exec: a second signal (%s) after %s: not waiting for the command any more; it "
                 "may still run in the guest", strsignal(sig), strsignal(s->term_signal));
        s->status = 128 + sig;
        return -ECANCELED;
    }
    if (sig != SIGWINCH)
        s->term_signal = sig;
    if (s->nsigs < (int)(sizeof(s->sigs) / sizeof(s->sigs[0])))
        s->sigs[s->nsigs++] = sig;
    return s->plen ? 0 : flush(s);
}

/* A message from the agent: output, the end, or an error. */
static int on_agent(struct exec_state *s)
{
    struct agent_msg m;
    struct agent_field f;
    uint32_t v;
    int ret = agent_client_recv(s->c, &m);
    if (ret < 0)
        return ret;
    switch (m.h.type) {
    case AGENT_OUTPUT:
        agent_get_u32(&m, AGENT_T_STREAM, &v);
        agent_find(&m, AGENT_T_DATA, &f);
        s->written[v == AGENT_STDERR ? AGENT_STDERR : AGENT_STDOUT] += f.len;
        if (s->io->max_output && s->written[v == AGENT_STDERR ? AGENT_STDERR : AGENT_STDOUT] >
                                     s->io->max_output) {
            snprintf(s->c->error, sizeof(s->c->error), "exec: the command's %s passed %llu bytes",
                     v == AGENT_STDERR ? "stderr" : "stdout",
                     (unsigned long long)s->io->max_output);
            return -EFBIG;
        }
        ret = fd_write_all(v == AGENT_STDERR ? s->io->err : s->io->out, f.value, f.len);
        return ret == -EPIPE ? 0 : ret; /* our reader went away: the command runs on */
    case AGENT_EXIT:
        if (agent_get_u32(&m, AGENT_T_SIGNAL, &v))
            s->status = 128 + (int)(v & 0x7f);
        else if (agent_get_u32(&m, AGENT_T_EXIT_CODE, &v))
            s->status = (int)(v & 0xff);
        return 0;
    default:
        return 0;
    }
}

/* What is left of the session's time, for poll: -1 without a limit, 0 once it passed. */
static int ms_left(const struct exec_state *s)
{
    struct timespec now;
    if (!s->io->timeout_ms)
        return -1;
    clock_gettime(CLOCK_MONOTONIC, &now);
    int64_t ms = (int64_t)(s->deadline.tv_sec - now.tv_sec) * 1000 +
                 (s->deadline.tv_nsec - now.tv_nsec) / 1000000;
    return ms <= 0 ? 0 : (int)ms;
}

static int loop(struct exec_state *s)
{
    while (s->status < 0) {
        struct pollfd p[3] = {
            { .fd = s->c->fd, .events = POLLIN | (s->plen ? POLLOUT : 0) },
            { .fd = s->stdin_open && !s->plen ? s->io->in : -1, .events = POLLIN },
            { .fd = s->io->sig, .events = POLLIN },
        };
        int left = ms_left(s), n = left == 0 ? 0 : poll(p, 3, left);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -errno;
        if (n == 0) {
            snprintf(s->c->error, sizeof(s->c->error), "exec: the command ran past %u ms",
                     s->io->timeout_ms);
            return -ETIMEDOUT;
        }
        int ret = 0;
        if (p[0].revents & POLLIN)
            ret = on_agent(s);
        else if (p[0].revents & (POLLHUP | POLLERR))
            ret = on_agent(s); /* reads the end: a lost connection */
        if (s->status >= 0)
            break; /* the command ended: what stdin still has is not for it */
        if (ret == 0 && (p[0].revents & POLLOUT))
            ret = flush(s);
        if (ret == 0 && p[1].revents)
            ret = read_stdin(s);
        if (ret == 0 && p[2].revents)
            ret = on_signal(s, s->io->sig);
        if (ret < 0)
            return ret;
    }
    return 0;
}

/* The command did not start: the agent, still serving the connection, answers the end of
 * stdin that went with the request (an error: no command runs). Read past, so that the next
 * request on the connection gets its own answer; the first error's words are kept. */
static void skip_stdin_answer(struct agent_client *c)
{
    struct agent_msg m;
    char why[sizeof(c->error)];
    memcpy(why, c->error, sizeof(why));
    agent_client_recv(c, &m);
    memcpy(c->error, why, sizeof(why));
    c->stdin_ended = false;
}

/* Appends a STDIN message with the end of file to the `len` bytes in c->out; the new length,
 * or len when there is no room. */
static size_t append_stdin_end(struct agent_client *c, size_t len)
{
    struct agent_builder b;
    if (len + AGENT_HEADER_SIZE > sizeof(c->out))
        return len;
    agent_build_start(&b, c->out + len, AGENT_STDIN, AGENT_FLAG_EOF, c->next_id++);
    return len + agent_build_end(&b);
}

int agent_client_exec_start(struct agent_client *c, const char *const *cmd, const char *user,
                            bool tty, unsigned rows, unsigned cols, bool no_stdin)
{
    struct agent_builder b;
    struct agent_msg m = { 0 };
    agent_build_start(&b, c->out, AGENT_EXEC, tty ? AGENT_FLAG_TTY : 0, c->next_id++);
    for (; *cmd; cmd++)
        agent_put_str(&b, AGENT_T_ARG, *cmd);
    if (user)
        agent_put_str(&b, AGENT_T_USER, user);
    if (tty && rows && cols && rows <= 0xffff && cols <= 0xffff) {
        agent_put_u32(&b, AGENT_T_ROWS, rows);
        agent_put_u32(&b, AGENT_T_COLS, cols);
    }
    size_t len = agent_build_end(&b);
    if (len == 0) {
        snprintf(c->error, sizeof(c->error), "the command line is too long (%u bytes at most)",
                 AGENT_MAX_PAYLOAD);
        return -E2BIG;
    }
    /* The agent reads the end of stdin once the command runs: no need to wait for its OK. */
    size_t sent = no_stdin ? append_stdin_end(c, len) : len;
    c->stdin_ended = sent > len;
    int ret = agent_client_send(c, sent);
    if (ret == 0)
        ret = agent_client_recv(c, &m);
    if (ret == 0 && m.h.type != AGENT_OK)
        ret = -EPROTO;
    if (ret < 0 && c->stdin_ended && m.h.type == AGENT_ERROR)
        skip_stdin_answer(c);
    return ret;
}

int agent_client_exec_run(struct agent_client *c, const struct agent_exec_io *io, int *status)
{
    struct exec_state *s = calloc(1, sizeof(*s));
    if (!s)
        return -ENOMEM;
    s->c = c;
    s->io = io;
    s->stdin_open = io->in >= 0;
    s->status = -1;
    clock_gettime(CLOCK_MONOTONIC, &s->deadline);
    s->deadline.tv_sec += io->timeout_ms / 1000;
    s->deadline.tv_nsec += (long)(io->timeout_ms % 1000) * 1000000;
    if (s->deadline.tv_nsec >= 1000000000) {
        s->deadline.tv_sec++;
        s->deadline.tv_nsec -= 1000000000;
    }
    if (io->in < 0 && !c->stdin_ended)
        queue(s, append_stdin_end(c, 0)); /* no stdin: the command's ends at once */
    int ret = loop(s);
    *status = s->status;
    if (ret == 0 && s->status < 0)
        ret = -ECONNRESET;
    if (ret < 0 && !c->error[0])
        snprintf(c->error, sizeof(c->error), "exec: %s", strerror(-ret));
    free(s);
    return ret;
}
