/* unix_socket.h: a listening UNIX stream socket at a path nothing else owns. */
#ifndef GODWIT_UNIX_SOCKET_H
#define GODWIT_UNIX_SOCKET_H

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

/* Unlinks `path` if it is still the socket file that unix_socket_listen() made (`bound`), not
 * one another process put there since. */
void unix_socket_unlink(const char *path, const struct stat *bound);

#endif
