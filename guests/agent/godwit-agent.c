/*
 * godwit-agent.c: the guest agent's main program: listens on vsock port 1024 (or a UNIX
 * socket, for tests), serves each host connection in a process of its own, and dispatches
 * its requests (guests/agent/README.md).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>
#include <linux/vm_sockets.h>

#include "agent.h"
#include "io/fd_io.h"

#define VMADDR_CID_HOST_ 2 /* the only peer served on vsock: local users never reach root */

void agent_log(const char *fmt, ...)
{
    va_list ap;
    char line[512];
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    fprintf(stderr, "godwit-agent: %s\n", line);
}

int send_msg(struct conn *c, size_t len)
{
    if (len == 0)
        return -EMSGSIZE; /* a builder overflowed: our bug, but never a malformed message */
    return fd_write_all(c->fd, c->out, len);
}

int reply_ok(struct conn *c, uint32_t id)
{
    struct agent_builder b;
    agent_build_start(&b, c->out, AGENT_OK, 0, id);
    return send_msg(c, agent_build_end(&b));
}

int reply_error(struct conn *c, uint32_t id, int err, const char *fmt, ...)
{
    char text[AGENT_MAX_STRING];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof(text), fmt, ap);
    va_end(ap);
    struct agent_builder b;
    agent_build_start(&b, c->out, AGENT_ERROR, 0, id);
    agent_put_u32(&b, AGENT_T_ERRNO, (uint32_t)(err < 0 ? -err : err));
    agent_put_str(&b, AGENT_T_MESSAGE, text);
    return send_msg(c, agent_build_end(&b));
}

int next_msg(struct conn *c, struct agent_msg *m)
{
    for (;;) {
        int ret = agent_read_msg(c->fd, c->in, m);
        if (ret == -EPROTO || ret == -EMSGSIZE) {
            /* No sound frame to read past: say why, then end the connection. */
            reply_error(c, 0, ret, "malformed message header (magic, version, flags or size)");
            return ret;
        }
        if (ret < 0)
            return ret;
        if (!agent_type_name(m->h.type)) {
            ret = reply_error(c, m->h.id, ENOSYS, "unknown request type %u", m->h.type);
        } else if (agent_msg_check(m) < 0) {
            ret = reply_error(c, m->h.id, EINVAL, "malformed %s message",
                              agent_type_name(m->h.type));
        } else {
            return 0;
        }
        if (ret < 0)
            return ret;
    }
}

static int handle_ping(struct conn *c, const struct agent_msg *m)
{
    return reply_ok(c, m->h.id);
}

static int dispatch(struct conn *c, const struct agent_msg *m)
{
    static int (*const handlers[])(struct conn *, const struct agent_msg *) = {
        [AGENT_EXEC] = handle_exec,           [AGENT_FILE_WRITE] = handle_file_write,
        [AGENT_FILE_READ] = handle_file_read, [AGENT_KVP_GET] = handle_kvp,
        [AGENT_KVP_SET] = handle_kvp,         [AGENT_KVP_DELETE] = handle_kvp,
        [AGENT_KVP_LIST] = handle_kvp,        [AGENT_INFO] = handle_info,
        [AGENT_FREEZE] = handle_freeze,       [AGENT_THAW] = handle_thaw,
        [AGENT_SHUTDOWN] = handle_shutdown,   [AGENT_PING] = handle_ping,
        [AGENT_SET_TIME] = handle_set_time,
    };
    if (m->h.type < sizeof(handlers) / sizeof(handlers[0]) && handlers[m->h.type])
        return handlers[m->h.type](c, m);
    /* A reply type, or stdin and signals with no command running. */
    return reply_error(c, m->h.id, EINVAL, "%s is not a request here", agent_type_name(m->h.type));
}

/* A connection's process: requests one after another until the host closes. */
static void serve(int fd, const struct agent_config *cfg)
{
    struct conn *c = malloc(sizeof(*c));
    struct agent_msg m;
    if (!c)
        _exit(1);
    c->fd = fd;
    c->cfg = cfg;
    signal(SIGCHLD, SIG_DFL);
    while (next_msg(c, &m) == 0)
        if (dispatch(c, &m) < 0)
            break;
    _exit(0);
}

static int listen_unix(const char *path)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    if (strlen(path) >= sizeof(sa.sun_path))
        return -ENAMETOOLONG;
    strcpy(sa.sun_path, path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    unlink(path);
    mode_t old = umask(077); /* the socket is root's alone: it runs anything as anyone */
    int ret = bind(fd, (struct sockaddr *)&sa, sizeof(sa));
    umask(old);
    if (ret < 0 || listen(fd, 16) < 0) {
        ret = -errno;
        close(fd);
        return ret;
    }
    return fd;
}

static int listen_vsock(unsigned port)
{
    struct sockaddr_vm sa = { .svm_family = AF_VSOCK, .svm_port = port, .svm_cid = VMADDR_CID_ANY };
    int fd = socket(AF_VSOCK, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, 16) < 0) {
        int ret = -errno;
        close(fd);
        return ret;
    }
    return fd;
}

/* The vsock transport may load after the agent starts: wait for it, saying so once. */
static int listen_vsock_wait(unsigned port)
{
    for (int tries = 0;; tries++) {
        int fd = listen_vsock(port);
        if (fd >= 0 || (fd != -EAFNOSUPPORT && fd != -ENODEV && fd != -EADDRNOTAVAIL))
            return fd;
        if (tries == 0)
            agent_log("no vsock transport yet (%s); waiting for it", strerror(-fd));
        sleep(1);
    }
}

static bool peer_allowed(int fd, bool vsock)
{
    struct sockaddr_vm peer;
    socklen_t len = sizeof(peer);
    if (!vsock)
        return true; /* the UNIX socket's mode decides */
    return getpeername(fd, (struct sockaddr *)&peer, &len) == 0 &&
           peer.svm_family == AF_VSOCK && peer.svm_cid == VMADDR_CID_HOST_;
}

static void accept_loop(int lfd, bool vsock, const struct agent_config *cfg)
{
    for (;;) {
        int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno != EINTR && errno != ECONNABORTED)
                agent_log("accept: %s", strerror(errno));
            if (errno == EMFILE || errno == ENFILE || errno == ENOMEM)
                sleep(1);
            continue;
        }
        if (!peer_allowed(fd, vsock)) {
            agent_log("refused a connection from a peer other than the host");
            close(fd);
            continue;
        }
        pid_t pid = fork();
        if (pid == 0) {
            close(lfd);
            serve(fd, cfg);
        }
        if (pid < 0)
            agent_log("fork: %s", strerror(errno));
        close(fd);
    }
}

static void usage(FILE *f)
{
    fprintf(f, "usage: godwit-agent [--listen vsock[:PORT]|unix:PATH] [--state-dir DIR]\n"
               "                    [--run-dir DIR] [--max-file-size BYTES] [-v]\n");
}

/* A directory for the agent's state: the first of `dirs` that exists or can be made. */
static const char *pick_dir(const char *given, const char *const *dirs)
{
    if (given)
        return mkdir(given, 0700) == 0 || errno == EEXIST ? given : NULL;
    for (; *dirs; dirs++) {
        char parent[256];
        snprintf(parent, sizeof(parent), "%s", *dirs);
        *strrchr(parent, '/') = 0;
        mkdir(parent, 0755); /* /var/lib in a bare initramfs */
        if (mkdir(*dirs, 0700) == 0 || errno == EEXIST)
            return *dirs;
    }
    return NULL;
}

int main(int argc, char **argv)
{
    static const char *const state_dirs[] = { "/var/lib/godwit-agent", "/run/godwit-agent", NULL };
    static const char *const run_dirs[] = { "/run/godwit-agent", "/tmp/godwit-agent", NULL };
    struct agent_config cfg = { .max_file_size = 4ull << 30 };
    const char *listen_at = "vsock", *state = NULL, *run = NULL;

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "-v") == 0) {
            cfg.verbose = true;
            continue;
        }
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            usage(stdout);
            return 0;
        }
        if (!v) {
            usage(stderr);
            return 2;
        }
        i++;
        if (strcmp(a, "--listen") == 0)
            listen_at = v;
        else if (strcmp(a, "--state-dir") == 0)
            state = v;
        else if (strcmp(a, "--run-dir") == 0)
            run = v;
        else if (strcmp(a, "--max-file-size") == 0) {
            char *end;
            errno = 0;
            cfg.max_file_size = strtoull(v, &end, 10);
            if (errno || *end || v[0] == '-') {
                agent_log("--max-file-size: '%s' is not a number of bytes", v);
                return 2;
            }
        } else {
            usage(stderr);
            return 2;
        }
    }
    cfg.state_dir = pick_dir(state, state_dirs);
    cfg.run_dir = pick_dir(run, run_dirs);
    if (!cfg.state_dir || !cfg.run_dir) {
        agent_log("no directory for the agent's state or run files: %s", strerror(errno));
        return 1;
    }

    /* The pools exist from the start: guest programs write the guest's into it. */
    char pool[600];
    snprintf(pool, sizeof(pool), "%s/host", cfg.state_dir);
    mkdir(pool, 0755);
    snprintf(pool, sizeof(pool), "%s/guest", cfg.state_dir);
    mkdir(pool, 0755);

    int lfd;
    bool vsock = strncmp(listen_at, "vsock", 5) == 0;
    if (vsock && (listen_at[5] == 0 || listen_at[5] == ':')) {
        unsigned port = listen_at[5] ? (unsigned)strtoul(listen_at + 6, NULL, 10) : AGENT_VSOCK_PORT;
        lfd = listen_vsock_wait(port);
    } else if (strncmp(listen_at, "unix:", 5) == 0) {
        vsock = false;
        lfd = listen_unix(listen_at + 5);
    } else {
        agent_log("--listen: '%s' is neither vsock[:PORT] nor unix:PATH", listen_at);
        return 2;
    }
    if (lfd < 0) {
        agent_log("cannot listen on %s: %s", listen_at, strerror(-lfd));
        return 1;
    }
    signal(SIGPIPE, SIG_IGN);
    signal(SIGCHLD, SIG_IGN); /* connection processes reaped by the kernel */
    exec_init();
    if (cfg.verbose)
        agent_log("version %s listening on %s", AGENT_VERSION, listen_at);
    accept_loop(lfd, vsock, &cfg);
}
