/* unix_socket.h: a listening UNIX stream socket at a path nothing else owns. */
#ifndef GODWIT_UNIX_SOCKET_H
#define GODWIT_UNIX_SOCKET_H

#include <stdbool.h>
#include <sys/stat.h>

/*
 * Listens on `path`. A stale socket file there (nobody accepts on it any more: a dead
 * process's) is replaced; a live one is refused with -EADDRINUSE, anything else there (a
 * regular file, a directory, a symlink) with -EEXIST, and neither is touched. The socket
 * file is mode 0600 from the start. `bound`, if not NULL, receives the socket file's identity
 * for unix_socket_unlink(). Returns the fd (close-on-exec, non-blocking) or -errno; logs
 * nothing.
 */
int unix_socket_listen(const char *path, int backlog, struct stat *bound);

/* A duplicate of `fd`, a listening socket that someone else bound to `path` (a live upgrade's
 * source), close-on-exec and non-blocking (the open file's flag, which the source set too:
 * another process may take the connection a poll announced). `bound`, if not NULL, receives
 * the file at `path` now (zeroed if there is none), for unix_socket_unlink(). The fd or
 * -errno; logs nothing. */
int unix_socket_adopt(int fd, const char *path, struct stat *bound);

/* Whether `fd` is a UNIX socket bound to `path` (the name it was bound with, as given). */
bool unix_socket_bound_to(int fd, const char *path);

/* Unlinks `path` if it is still the socket file that unix_socket_listen() made (`bound`), not
 * one another process put there since. */
void unix_socket_unlink(const char *path, const struct stat *bound);

#endif
