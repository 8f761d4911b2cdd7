/*
 * exec.c: running a command for the host: as a user, on pipes or a terminal; its stdin fed from
 * STDIN messages, its stdout and stderr sent back as OUTPUT chunks, signals passed to its
 * process group, and its end reported as EXIT.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include "agent.h"

#define DEFAULT_PATH "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

struct session {
    pid_t pid;
    int pidfd;
    int in, out, err;        /* our ends; -1 once closed (out is the terminal with a pty) */
    bool tty, eof_pending;   /* the host ended stdin: close once pending is written */
    uint8_t pending[AGENT_CHUNK];
    size_t pending_len, pending_off;
};

struct exec_request {
    char *argv[AGENT_MAX_ARGS + 1];
    char user[257];
    bool tty;
    struct winsize ws;
};

static int parse_request(const struct agent_msg *m, struct exec_request *r, char *strings)
{
    struct agent_field f;
    size_t pos = 0;
    int argc = 0;
    while (agent_field_next(m, &pos, &f)) {
        if (f.tag != AGENT_T_ARG)
            continue;
        /* The payload is at most AGENT_MAX_PAYLOAD: the copies, NUL-ended, fit in twice that. */
        memcpy(strings, f.value, f.len);
        strings[f.len] = 0;
        r->argv[argc++] = strings;
        strings += f.len + 1;
    }
    r->argv[argc] = NULL;
    agent_get_str(m, AGENT_T_USER, r->user, sizeof(r->user));
    r->tty = m->h.flags & AGENT_FLAG_TTY;
    uint32_t v;
    r->ws.ws_row = agent_get_u32(m, AGENT_T_ROWS, &v) && v ? (unsigned short)v : 24;
    r->ws.ws_col = agent_get_u32(m, AGENT_T_COLS, &v) && v ? (unsigned short)v : 80;
    return r->argv[0][0] ? 0 : -EINVAL;
}

/* The command's environment, built before the child starts: the agent's own with HOME, USER,
 * LOGNAME, SHELL (for a user), PATH and TERM (for a terminal) set. `strings` holds the
 * "KEY=VALUE" strings made here. NULL when there are more variables than room. */
static char **child_env(const struct agent_user *u, bool tty, char **env, size_t max,
                        char *strings, size_t len)
{
    const char *keys[7] = { "PATH" }, *values[7] = { DEFAULT_PATH };
    size_t nk = 1, n = 0, used = 0;
    if (tty)
        keys[nk] = "TERM", values[nk++] = "xterm-256color";
    if (u) {
        keys[nk] = "HOME", values[nk++] = u->home;
        keys[nk] = "USER", values[nk++] = u->name;
        keys[nk] = "LOGNAME", values[nk++] = u->name;
        keys[nk] = "SHELL", values[nk++] = u->shell[0] ? u->shell : "/bin/sh";
    }
    for (char **e = environ; *e; e++) {
        size_t k = 0;
        while (k < nk && !(strncmp(*e, keys[k], strlen(keys[k])) == 0 &&
                           (*e)[strlen(keys[k])] == '='))
            k++;
        if (k == nk && n + nk < max)
            env[n++] = *e;
    }
    for (size_t k = 0; k < nk; k++) {
        int w = snprintf(strings + used, len - used, "%s=%s", keys[k], values[k]);
        if (w < 0 || (size_t)w >= len - used || n + 1 >= max)
            return NULL;
        env[n++] = strings + used;
        used += (size_t)w + 1;
    }
    env[n] = NULL;
    return env;
}

/* The signals the agent ignores (exec_init): an ignored signal stays ignored across exec, where
 * a shell may not even trap it (an init script's "&" ignores SIGINT and SIGQUIT). */
static sigset_t ignored;

void exec_init(void)
{
    sigemptyset(&ignored);
    for (int sig = 1; sig < NSIG; sig++) {
        struct sigaction sa;
        if (sig != SIGKILL && sig != SIGSTOP && sigaction(sig, NULL, &sa) == 0 &&
            sa.sa_handler == SIG_IGN)
            sigaddset(&ignored, sig);
    }
}

/*
 * In the child, which shares the agent's memory until it execs (vfork): system calls only,
 * nothing that allocates. Becomes the user, in a session of its own. False when it cannot.
 */
static bool child_setup(const struct exec_request *r, const struct agent_user *u,
                        const char *tty_name, const int child_fds[3])
{
    if (!r->tty)
        for (int i = 0; i < 3; i++)
            dup2(child_fds[i], i); /* dup2 clears close-on-exec on the copies */
    setsid();
    if (r->tty) {
        int t = open(tty_name, O_RDWR);
        if (t < 0 || ioctl(t, TIOCSCTTY, 0) < 0)
            return false;
        dup2(t, 0);
        dup2(t, 1);
        dup2(t, 2);
        if (t > 2)
            close(t);
    }
    /* Handlers are reset by exec itself: only what is ignored is set back, rather than
     * every signal (a system call each). */
    for (int sig = 1; sig < NSIG; sig++)
        if (sigismember(&ignored, sig) == 1)
            signal(sig, SIG_DFL);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    /* Raw system calls: glibc's wrappers would coordinate with threads (there are none). */
    if (u && (syscall(SYS_setgroups, (size_t)u->nr_groups, u->groups) < 0 ||
              syscall(SYS_setgid, u->gid) < 0 || syscall(SYS_setuid, u->uid) < 0))
        return false;
    return chdir(u ? u->home : "/") == 0 || chdir("/") == 0;
}

/* Pipes for stdin, stdout and stderr, or a pseudo-terminal. ends[] are the parent's. */
static int make_channels(struct session *s, const struct exec_request *r, int child_fds[3],
                         char *tty_name, size_t len)
{
    if (r->tty) {
        int m = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
        if (m < 0 || grantpt(m) < 0 || unlockpt(m) < 0 || ptsname_r(m, tty_name, len) != 0) {
            int ret = -errno;
            if (m >= 0)
                close(m);
            return ret;
        }
        ioctl(m, TIOCSWINSZ, &r->ws);
        s->in = m;
        s->out = m;
        s->err = -1;
        return 0;
    }
    int p[3][2];
    for (int i = 0; i < 3; i++)
        if (pipe2(p[i], O_CLOEXEC) < 0) {
            int ret = -errno;
            while (i--) {
                close(p[i][0]);
                close(p[i][1]);
            }
            return ret;
        }
    child_fds[0] = p[0][0], s->in = p[0][1];
    child_fds[1] = p[1][1], s->out = p[1][0];
    child_fds[2] = p[2][1], s->err = p[2][0];
    return 0;
}

/*
 * Starts the command with vfork: the agent waits, without copying its page tables, until the
 * child has exec'd or failed; a failure's errno comes back in exec_errno (the memory is
 * shared), so the host hears "no such command" rather than an exit status.
 */
static int start(struct session *s, const struct exec_request *r, const struct agent_user *u)
{
    static char env_strings[4 * 1024 + 3 * 1024];
    static char *env[1024];
    static volatile int exec_errno;
    int child_fds[3] = { -1, -1, -1 };
    char tty_name[128];
    char **envp = child_env(u, r->tty, env, sizeof(env) / sizeof(env[0]), env_strings,
                            sizeof(env_strings));
    if (!envp)
        return -E2BIG;
    int ret = make_channels(s, r, child_fds, tty_name, sizeof(tty_name));
    if (ret < 0)
        return ret;
    exec_errno = 0;
    s->pid = vfork();
    if (s->pid == 0) {
        if (!child_setup(r, u, tty_name, child_fds))
            _exit(126);
        /* execvpe searches the caller's PATH: the agent's own is DEFAULT_PATH (handle_exec). */
        execvpe(r->argv[0], r->argv, envp);
        exec_errno = errno;
        _exit(127);
    }
    ret = s->pid < 0 ? -errno : 0;
    for (int i = 0; i < 3; i++)
        if (child_fds[i] >= 0)
            close(child_fds[i]);
    if (ret == 0 && exec_errno) {
        waitpid(s->pid, NULL, 0);
        ret = -exec_errno;
    }
    return ret;
}

static int send_output(struct conn *c, int stream, const void *data, size_t len)
{
    struct agent_builder b;
    agent_build_start(&b, c->out, AGENT_OUTPUT, 0, 0);
    agent_put_u32(&b, AGENT_T_STREAM, (uint32_t)stream);
    agent_put_bytes(&b, AGENT_T_DATA, data, len);
    return send_msg(c, agent_build_end(&b));
}

/* One read of the command's output, sent on. Closes *fd at its end (EOF, or EIO on a pty). */
static int pump_output(struct conn *c, int *fd, int stream)
{
    static uint8_t buf[AGENT_CHUNK];
    ssize_t n = read(*fd, buf, sizeof(buf));
    if (n < 0 && (errno == EINTR || errno == EAGAIN))
        return 0;
    if (n <= 0) {
        close(*fd);
        *fd = -1;
        return 0;
    }
    return send_output(c, stream, buf, (size_t)n);
}

static void close_stdin(struct session *s)
{
    if (s->tty) {
        /* A terminal has no end of file of its own: its EOF character ends a read. */
        struct termios t;
        char eof = tcgetattr(s->in, &t) == 0 ? (char)t.c_cc[VEOF] : 4;
        if (write(s->in, &eof, 1) < 0)
            return;
        return;
    }
    if (s->in >= 0)
        close(s->in);
    s->in = -1;
}

/* Writes what is pending to the command's stdin; a command that closed it drops the rest. */
static void pump_stdin(struct session *s)
{
    ssize_t n = write(s->in, s->pending + s->pending_off, s->pending_len - s->pending_off);
    if (n < 0 && (errno == EINTR || errno == EAGAIN))
        return;
    if (n < 0) {
        s->pending_len = s->pending_off = 0;
        if (!s->tty) {
            close(s->in);
            s->in = -1;
        }
        return;
    }
    s->pending_off += (size_t)n;
    if (s->pending_off == s->pending_len) {
        s->pending_len = s->pending_off = 0;
        if (s->eof_pending) {
            s->eof_pending = false;
            close_stdin(s);
        }
    }
}

/* A message from the host while the command runs. -ECONNRESET when the host went away. */
static int host_message(struct conn *c, struct session *s)
{
    struct agent_msg m;
    int ret = next_msg(c, &m);
    if (ret < 0)
        return ret;
    if (m.h.type == AGENT_SIGNAL) {
        uint32_t sig;
        agent_get_u32(&m, AGENT_T_SIGNAL, &sig);
        kill(-s->pid, (int)sig);
        return 0;
    }
    if (m.h.type == AGENT_RESIZE) {
        uint32_t rows, cols;
        agent_get_u32(&m, AGENT_T_ROWS, &rows);
        agent_get_u32(&m, AGENT_T_COLS, &cols);
        struct winsize ws = { .ws_row = (unsigned short)rows, .ws_col = (unsigned short)cols };
        if (s->tty)
            ioctl(s->in, TIOCSWINSZ, &ws); /* the kernel sends the command SIGWINCH */
        return 0;
    }
    if (m.h.type != AGENT_STDIN)
        return reply_error(c, m.h.id, EBUSY, "a command is running: only stdin and signals");
    struct agent_field f;
    if (agent_find(&m, AGENT_T_DATA, &f) && f.len && s->in >= 0) {
        memcpy(s->pending, f.value, f.len); /* f.len <= AGENT_CHUNK, and pending was empty */
        s->pending_len = f.len;
    }
    if (m.h.flags & AGENT_FLAG_EOF) {
        if (s->pending_len)
            s->eof_pending = true;
        else
            close_stdin(s);
    }
    return 0;
}

static int send_exit(struct conn *c, int status)
{
    struct agent_builder b;
    agent_build_start(&b, c->out, AGENT_EXIT, 0, 0);
    if (WIFSIGNALED(status))
        agent_put_u32(&b, AGENT_T_SIGNAL, (uint32_t)WTERMSIG(status));
    else
        agent_put_u32(&b, AGENT_T_EXIT_CODE, (uint32_t)WEXITSTATUS(status));
    return send_msg(c, agent_build_end(&b));
}

/* The command ended: what it left in its pipes (or terminal) still goes to the host. */
static int drain(struct conn *c, struct session *s)
{
    int *fds[2] = { &s->out, &s->err };
    for (int i = 0; i < 2; i++) {
        if (*fds[i] < 0)
            continue;
        fcntl(*fds[i], F_SETFL, fcntl(*fds[i], F_GETFL) | O_NONBLOCK);
        while (*fds[i] >= 0) {
            /* A descendant may keep the pipe open: stop once nothing is left to read. */
            struct pollfd p = { .fd = *fds[i], .events = POLLIN };
            if (poll(&p, 1, 0) <= 0)
                break;
            int ret = pump_output(c, fds[i], i == 0 ? AGENT_STDOUT : AGENT_STDERR);
            if (ret < 0)
                return ret;
        }
    }
    return 0;
}

static void end_session(struct session *s)
{
    if (s->in >= 0 && s->in != s->out)
        close(s->in);
    if (s->out >= 0)
        close(s->out);
    if (s->err >= 0)
        close(s->err);
    if (s->pidfd >= 0)
        close(s->pidfd);
}

/* Polls the host, the command's output and its end until it has ended and all is sent. */
static int run_session(struct conn *c, struct session *s)
{
    bool exited = false;
    int status = 0;
    while (!exited || s->out >= 0 || s->err >= 0) {
        if (exited) {
            int ret = drain(c, s);
            if (ret < 0)
                return ret;
            break;
        }
        struct pollfd p[5] = {
            { .fd = s->pending_len ? -1 : c->fd, .events = POLLIN },
            { .fd = s->out, .events = POLLIN },
            { .fd = s->err, .events = POLLIN },
            { .fd = s->pending_len ? s->in : -1, .events = POLLOUT },
            { .fd = s->pidfd, .events = POLLIN },
        };
        if (poll(p, 5, -1) < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        int ret = 0;
        if (p[0].revents)
            ret = host_message(c, s);
        if (ret == 0 && p[1].revents)
            ret = pump_output(c, &s->out, AGENT_STDOUT);
        if (ret == 0 && p[2].revents)
            ret = pump_output(c, &s->err, AGENT_STDERR);
        if (ret == 0 && p[3].revents)
            pump_stdin(s);
        if (ret < 0)
            return ret;
        if (p[4].revents && waitpid(s->pid, &status, WNOHANG) == s->pid)
            exited = true;
    }
    if (!exited && waitpid(s->pid, &status, 0) < 0)
        return -errno;
    return send_exit(c, status);
}

int handle_exec(struct conn *c, const struct agent_msg *m)
{
    static char strings[2 * AGENT_MAX_PAYLOAD];
    struct exec_request r = { 0 };
    struct agent_user user, *u = NULL;
    struct session s = { .in = -1, .out = -1, .err = -1, .pidfd = -1 };

    if (parse_request(m, &r, strings) < 0)
        return reply_error(c, m->h.id, EINVAL, "exec: an empty command name");
    if (r.user[0]) {
        int ret = user_lookup("/etc/passwd", "/etc/group", r.user, &user);
        if (ret < 0)
            return reply_error(c, m->h.id, ret == -ENOENT ? ESRCH : ret,
                               "exec: no user '%s' in /etc/passwd", r.user);
        u = &user;
    }
    s.tty = r.tty;
    setenv("PATH", DEFAULT_PATH, 1); /* this connection's process ends with the command */
    int ret = start(&s, &r, u);
    if (ret < 0) {
        end_session(&s);
        return reply_error(c, m->h.id, ret, "exec: cannot run '%s': %s", r.argv[0], strerror(-ret));
    }
    s.pidfd = (int)syscall(SYS_pidfd_open, s.pid, 0);
    if (s.pidfd < 0) {
        ret = -errno;
        kill(-s.pid, SIGKILL);
        waitpid(s.pid, NULL, 0);
        end_session(&s);
        return reply_error(c, m->h.id, ret, "exec: pidfd_open: %s", strerror(-ret));
    }
    fcntl(s.in, F_SETFL, fcntl(s.in, F_GETFL) | O_NONBLOCK);
    ret = reply_ok(c, m->h.id);
    if (ret == 0)
        ret = run_session(c, &s);
    if (ret < 0) {
        /* The host went away: the command does not outlive its session. */
        kill(-s.pid, SIGKILL);
        waitpid(s.pid, NULL, 0);
    }
    end_session(&s);
    return ret < 0 ? ret : -ECONNRESET; /* one command per connection */
}
