/* runtime.h: where a VM's API socket lives, and how its name is made unique on the host. */
#ifndef GODWIT_RUNTIME_H
#define GODWIT_RUNTIME_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#define RUNTIME_NAME_MAX 64
#define RUNTIME_PATH_MAX 108 /* sun_path */

/*
 * /run/godwit for root, $XDG_RUNTIME_DIR/godwit otherwise (or /tmp/godwit-UID), created 0700
 * if missing. Whatever is there must pass runtime_dir_check(). Returns 0 or -errno (-EPERM:
 * refused, after one log line).
 */
int runtime_dir(char *buf, size_t len);
/*
 * For clients (control commands): the same directory, never created. It must pass
 * runtime_dir_check(), except that root accepts one another user owns (a service's user).
 */
int runtime_client_dir(char *buf, size_t len);
/* 0 when `path` is a directory, not a symlink, owned by `euid`, that neither group nor others
 * may write to; -EPERM (or lstat's -errno) after one log line naming it otherwise. */
int runtime_dir_check(const char *path, uid_t euid);
/* For tests: the effective uid runtime_dir() works for, instead of geteuid(); -1 undoes it. */
void runtime_test_set_euid(uid_t euid);
/* 1-64 characters of [A-Za-z0-9._-], not starting with '.' or '-'. */
bool runtime_name_valid(const char *name);
/* A name no other VM on this host uses yet: "vm-" and 8 hex digits. */
void runtime_generate_name(char *buf, size_t len);
/* DIR/NAME.sock: in runtime_dir() for the VM that serves it, runtime_client_dir() for clients. */
int runtime_socket_path(const char *name, char *buf, size_t len);
int runtime_client_socket_path(const char *name, char *buf, size_t len);

/*
 * Claims `name` for this process: an exclusive lock on DIR/NAME.lock, held until exit (so a
 * crashed VM never keeps its name); a symlink there is not followed (-ELOOP). Returns the lock
 * fd, -EADDRINUSE when another live VM holds the name, or another -errno.
 */
int runtime_claim_name(const char *name);

#endif
