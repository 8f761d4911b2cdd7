/* ctl.h: the CLI commands that control running VMs through their API sockets. */
#ifndef GODWIT_CTL_H
#define GODWIT_CTL_H

#include <stdbool.h>
#include <stddef.h>

/* Handles `godwit ps|info|pause|resume|shutdown|reboot|stop|console ...`; returns the exit
 * status, or -1 when `cmd` is not one of them. */
int ctl_main(const char *cmd, int argc, char **argv);
/* The API socket of VM `name` (a path, containing '/', is used as it is). 0 or -errno; an
 * invalid name is logged. */
int ctl_socket_for(const char *name, char *path, size_t len);

#endif
