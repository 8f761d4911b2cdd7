/* console.c: feeds terminal (or pipe) input to the guest's console, with an escape to quit. */
#define _GNU_SOURCE
#include "io/console.h"

#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "log.h"

#define CONSOLE_RETRY_MS 2

/*
 * A fatal signal must not leave the user's terminal raw. The handler can only reach the
 * saved settings through a static: the one piece of process-wide state here, set once.
 */
static struct termios fatal_restore_termios;
static int fatal_restore_fd = -1;

static void console_fatal_signal(int sig)
{
    if (fatal_restore_fd >= 0)
        tcsetattr(fatal_restore_fd, TCSANOW, &fatal_restore_termios);
    signal(sig, SIG_DFL);
    raise(sig);
}

static void console_install_fatal_handlers(void)
{
    static const int fatal[] = { SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT };
    struct sigaction sa = { .sa_handler = console_fatal_signal, .sa_flags = SA_RESETHAND };
    sigemptyset(&sa.sa_mask);
    for (size_t i = 0; i < sizeof(fatal) / sizeof(fatal[0]); i++)
        sigaction(fatal[i], &sa, NULL);
}

int console_init(struct console *con, int in_fd, console_sink sink, void *sink_opaque)
{
    memset(con, 0, sizeof(*con));
    con->in_fd = in_fd;
    con->sink = sink;
    con->sink_opaque = sink_opaque;
    con->is_tty = isatty(in_fd);
    if (!con->is_tty)
        return 0;
    if (tcgetattr(in_fd, &con->saved) < 0) {
        log_error("console: cannot read terminal settings: %s", strerror(errno));
        return -errno;
    }
    struct termios raw = con->saved;
    cfmakeraw(&raw);
    /* Keep output post-processing so that the VMM's own messages stay readable. */
    raw.c_oflag |= OPOST | ONLCR;
    fatal_restore_termios = con->saved;
    fatal_restore_fd = in_fd;
    console_install_fatal_handlers();
    if (tcsetattr(in_fd, TCSANOW, &raw) < 0) {
        log_error("console: cannot put the terminal in raw mode: %s", strerror(errno));
        return -errno;
    }
    con->raw_mode_on = true;
    return 0;
}

void console_restore(struct console *con)
{
    if (con->raw_mode_on)
        tcsetattr(con->in_fd, TCSANOW, &con->saved);
    con->raw_mode_on = false;
    fatal_restore_fd = -1;
}

/* Applies the escape sequence in place; returns the number of bytes left for the guest. */
static size_t console_filter_escape(struct console *con, uint8_t *buf, size_t len)
{
    size_t out = 0;
    if (!con->is_tty)
        return len; /* pipes and files carry data, not keystrokes */
    for (size_t i = 0; i < len; i++) {
        uint8_t c = buf[i];
        if (con->escape_seen) {
            con->escape_seen = false;
            if (c == 'x' || c == 'X') {
                con->quit_requested = true;
                return out;
            }
            if (c != CONSOLE_ESCAPE_CHAR)
                continue; /* unknown escape: dropped, as terminal programs do */
        } else if (c == CONSOLE_ESCAPE_CHAR) {
            con->escape_seen = true;
            continue;
        }
        buf[out++] = c;
    }
    return out;
}

static bool console_on_input(struct event_loop *loop, void *opaque, int res);

/* Hands pending bytes to the device; true when all are delivered. */
static bool console_flush(struct console *con)
{
    while (con->pending_off < con->pending_len) {
        size_t n = con->sink(con->sink_opaque, con->pending + con->pending_off,
                             con->pending_len - con->pending_off);
        if (n == 0)
            return false;
        con->pending_off += n;
    }
    con->pending_off = con->pending_len = 0;
    return true;
}

static bool console_on_retry(struct event_loop *loop, void *opaque, int res)
{
    struct console *con = opaque;
    (void)res;
    if (console_flush(con))
        loop_watch_readable(loop, &con->in_watch, con->in_fd, console_on_input, con);
    else
        loop_after(loop, &con->retry_watch, CONSOLE_RETRY_MS, console_on_retry, con);
    return false;
}

static bool console_on_input(struct event_loop *loop, void *opaque, int res)
{
    struct console *con = opaque;
    ssize_t n = -1;

    if (res >= 0) {
        n = read(con->in_fd, con->pending, sizeof(con->pending));
        if (n < 0 && (errno == EINTR || errno == EAGAIN))
            return true;
    }
    if (n <= 0) {
        /* End of input (or an error on it): the guest keeps running without a keyboard. */
        con->input_closed = true;
        if (con->on_closed)
            con->on_closed(con->sink_opaque);
        return false;
    }
    con->pending_off = 0;
    con->pending_len = console_filter_escape(con, con->pending, (size_t)n);
    if (con->quit_requested) {
        loop->stop = true;
        return true;
    }
    if (!console_flush(con)) {
        /* The device's FIFO is full: stop reading until the guest drains it. */
        loop_after(loop, &con->retry_watch, CONSOLE_RETRY_MS, console_on_retry, con);
        return false;
    }
    return true;
}

void console_write_all(int fd, const uint8_t *buf, size_t len, bool nonblocking)
{
    while (len > 0) {
        ssize_t n = nonblocking ? send(fd, buf, len, MSG_DONTWAIT | MSG_NOSIGNAL)
                                : write(fd, buf, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return; /* the reader is gone or too slow: the guest must not stall on it */
        buf += n;
        len -= (size_t)n;
    }
}

int console_attach(struct console *con, struct event_loop *loop)
{
    return loop_watch_readable(loop, &con->in_watch, con->in_fd, console_on_input, con);
}
