/* agent_cmds.h: the CLI commands served by the guest agent (exec, cp, kvp, freeze, thaw). */
#ifndef GODWIT_AGENT_CMDS_H
#define GODWIT_AGENT_CMDS_H

#include <stdbool.h>

#include "agent/client.h"

/* Handles `godwit exec|cp|kvp|freeze|thaw|agent-info|agent-shutdown|sync-time ...` and
 * `resume` (ctl's, then the guest's clock stepped); returns the exit status, or -1 when `cmd`
 * is not one of them. */
int agent_cmds_main(const char *cmd, int argc, char **argv);

/*
 * The agent of VM `name`: GODWIT_AGENT_SOCKET=PATH (an agent's own UNIX socket, for tests)
 * wins; otherwise the VM's vsock socket from its configuration (GET /vm, "vsock"), or
 * RUNTIME/NAME.vsock. One line logged on failure; NULL then.
 */
struct agent_client *agent_open(const char *name);
/* The same, saying nothing when `quiet`. */
struct agent_client *agent_open_quiet(const char *name, bool quiet);

/* `SRC DST` of godwit cp: which one is NAME:PATH. Returns 1 (to the guest), 2 (from it) or
 * -EINVAL; name and path point into the argument. */
int agent_cp_parse(char *src, char *dst, char **name, char **guest_path, char **local);

#endif
