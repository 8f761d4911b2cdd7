/* console.h: the host side of the serial console: terminal or plain stdin/stdout. */
#ifndef GODWIT_CONSOLE_H
#define GODWIT_CONSOLE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <termios.h>

#include "io/loop.h"

/* Ctrl-A, then 'x' quits; Ctrl-A twice sends one Ctrl-A to the guest. */
#define CONSOLE_ESCAPE_CHAR 0x01
#define CONSOLE_PENDING_MAX 256

/* Where console input goes; returns how many bytes the device accepted (0 when full). */
typedef size_t (*console_sink)(void *opaque, const uint8_t *buf, size_t len);

struct console {
    int in_fd;
    bool is_tty;
    bool raw_mode_on;
    struct termios saved;
    bool escape_seen;
    bool quit_requested; /* the user typed the escape sequence */
    bool input_closed;   /* stdin reached end of file */
    console_sink sink;
    void *sink_opaque;
    uint8_t pending[CONSOLE_PENDING_MAX];
    size_t pending_off, pending_len;
    struct loop_watch in_watch;
    struct loop_watch retry_watch;
    void (*on_closed)(void *opaque); /* optional: input reached its end */
};

/* Puts a terminal into raw mode (restored by console_restore and on fatal signals). */
int console_init(struct console *con, int in_fd, console_sink sink, void *sink_opaque);
int console_attach(struct console *con, struct event_loop *loop);
void console_restore(struct console *con);
/* Copies bytes to fd in full unless it fails or would block; for console output. */
void console_write_all(int fd, const uint8_t *buf, size_t len, bool nonblocking);

#endif
