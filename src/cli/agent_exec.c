/*
 * agent_exec.c: godwit exec NAME [-t] [-u USER] -- CMD ARGS...: the command's stdout and
 * stderr here, this stdin there, SIGINT, SIGTERM, SIGHUP and SIGQUIT passed on (a second one
 * ends godwit exec itself), and its exit status as godwit's (128 + N for a signal N, as shells
 * report it). The session itself is agent/exec_client.c's.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <termios.h>
#include <unistd.h>

#include "cli/agent_cmds.h"
#include "log.h"

int agent_exec_main(int argc, char **argv);

static void usage(void)
{
    log_error("usage: godwit exec NAME [-t] [-u USER] -- CMD [ARGS...]");
}

static int parse(int argc, char **argv, bool *tty, const char **user, char ***cmd)
{
    int i = 2;
    for (; i < argc; i++) {
        if (strcmp(argv[i], "-t") == 0) {
            *tty = true;
        } else if (strcmp(argv[i], "-u") == 0 && i + 1 < argc) {
            *user = argv[++i];
        } else if (strcmp(argv[i], "--") == 0) {
            i++;
            break;
        } else if (argv[i][0] == '-') {
            return -EINVAL;
        } else {
            break; /* the command, without a "--" */
        }
    }
    if (argc < 2 || i >= argc || argc - i > AGENT_MAX_ARGS)
        return -EINVAL;
    *cmd = argv + i;
    return 0;
}

int agent_exec_main(int argc, char **argv)
{
    bool tty = false;
    const char *user = NULL;
    char **cmd;
    struct termios saved;
    if (parse(argc, argv, &tty, &user, &cmd) < 0) {
        usage();
        return 2;
    }
    struct agent_client *c = agent_open(argv[1]);
    if (!c)
        return 255;
    struct winsize ws = { 0 };
    if (tty && ioctl(STDIN_FILENO, TIOCGWINSZ, &ws) < 0)
        ws.ws_row = ws.ws_col = 0;
    int ret = agent_client_exec_start(c, (const char *const *)cmd, user, tty, ws.ws_row, ws.ws_col,
                                      false);
    if (ret < 0) {
        if (c->error[0])
            log_error("%s", c->error);
        else
            log_error("exec: %s", strerror(-ret));
        agent_client_close(c);
        return ret == -ENOENT ? 127 : ret == -EACCES ? 126 : 255;
    }
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGINT);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGHUP);
    sigaddset(&mask, SIGQUIT);
    if (tty)
        sigaddset(&mask, SIGWINCH); /* a resize, not a signal, for the guest's terminal */
    sigprocmask(SIG_BLOCK, &mask, NULL);
    signal(SIGPIPE, SIG_IGN);
    int sfd = signalfd(-1, &mask, SFD_CLOEXEC);
    bool raw = tty && isatty(STDIN_FILENO) && tcgetattr(STDIN_FILENO, &saved) == 0;
    if (raw) {
        /* Every key goes to the guest's terminal, which echoes and edits itself. */
        struct termios t = saved;
        cfmakeraw(&t);
        tcsetattr(STDIN_FILENO, TCSANOW, &t);
    }
    int status = -1;
    struct agent_exec_io io = { .in = STDIN_FILENO, .out = STDOUT_FILENO, .err = STDERR_FILENO,
                                .sig = sfd };
    ret = sfd < 0 ? -errno : agent_client_exec_run(c, &io, &status);
    if (raw)
        tcsetattr(STDIN_FILENO, TCSANOW, &saved);
    if (ret < 0 || status < 0) {
        log_error("%s", c->error[0] ? c->error : strerror(ret < 0 ? -ret : EPIPE));
        if (ret != -ECANCELED || status < 0) /* a second signal: 128 + its number */
            status = 255;
    }
    if (sfd >= 0)
        close(sfd);
    agent_client_close(c);
    return status;
}
