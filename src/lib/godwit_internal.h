/* godwit_internal.h: what the CLI and the API server use of libgodwit beyond godwit.h. */
#ifndef GODWIT_INTERNAL_H
#define GODWIT_INTERNAL_H

#include "godwit/godwit.h"
#include "io/loop.h"
#include "vm/vm.h"

/* Called on godwit's main-loop thread (before_start on the caller's, inside godwit_start). */
struct godwit_hooks {
    int (*before_start)(void *opaque); /* e.g. open the API socket on the loop */
    void (*started)(void *opaque);     /* the vCPUs run: READY=1 for systemd */
    void (*ended)(void *opaque);
    void *opaque;
};

void godwit_set_hooks(struct godwit_vm *vm, const struct godwit_hooks *hooks);
/* The main loop, for services that run on it (the API server). */
struct event_loop *godwit_loop(struct godwit_vm *vm);
const struct vm_config *godwit_config(struct godwit_vm *vm);

/* Hands a connected client's socket to the serial console (input and output), after sending
 * it `greeting` (before any console output). Call on the main loop's thread. Returns 0, or
 * -EBUSY when another client is attached. */
int godwit_console_attach(struct godwit_vm *vm, int fd, const char *greeting);

struct json_object;
/* Exits by reason (all vCPUs and each) and per-device traffic, or NULL when no VM runs. */
struct json_object *godwit_counters_json(struct godwit_vm *vm);
/* Each vCPU's registers, run state, local APIC and timer MSRs (vcpu/inspect.c), read with the
 * vCPUs stopped for a moment (a paused VM stays paused). NULL when no VM runs. */
struct json_object *godwit_vcpus_json(struct godwit_vm *vm);
/* The guest agent's heartbeat and what it said of the guest (GET /vm's "agent"), or NULL for
 * a VM without a vsock device. */
struct json_object *godwit_agent_json(struct godwit_vm *vm);
/* The clock step a resume left to the agent's monitor, taken over by a caller that steps the
 * clock itself now (agent_monitor_take_resumed): true when it is the caller's to make. A failed
 * step is given back (godwit_agent_give_back_resume), for the monitor to retry. False when none
 * is owed; when the monitor was making it, only once that step ended, so this may wait (for
 * seconds at most): never on the VM's loop thread. */
bool godwit_agent_take_resume(struct godwit_vm *vm);
void godwit_agent_give_back_resume(struct godwit_vm *vm);

/* The agent connection's client (agent/client.h), for what godwit.h does not offer: the
 * API's copies, streamed to and from its connections. */
struct agent_client;
struct agent_client *godwit_agent_client(struct godwit_agent *agent);

#endif
