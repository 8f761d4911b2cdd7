/* runtime.h: where a VM's API socket lives, and how its name is made unique on the host. */
#ifndef GODWIT_RUNTIME_H
#define GODWIT_RUNTIME_H

#include <stdbool.h>
#include <stddef.h>

#define RUNTIME_NAME_MAX 64
#define RUNTIME_PATH_MAX 108 /* sun_path */

/* /run/godwit for root, $XDG_RUNTIME_DIR/godwit otherwise (or /tmp/godwit-UID). */
int runtime_dir(char *buf, size_t len);
/* 1-64 characters of [A-Za-z0-9._-], not starting with '.' or '-'. */
bool runtime_name_valid(const char *name);
/* A name no other VM on this host uses yet: "vm-" and 8 hex digits. */
void runtime_generate_name(char *buf, size_t len);
int runtime_socket_path(const char *name, char *buf, size_t len);

/*
 * Claims `name` for this process: an exclusive lock on DIR/NAME.lock, held until exit (so a
 * crashed VM never keeps its name). Returns the lock fd, -EADDRINUSE when another live VM
 * holds the name, or another -errno.
 */
int runtime_claim_name(const char *name);

#endif
