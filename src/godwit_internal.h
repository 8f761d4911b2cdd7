/* godwit_internal.h: what the CLI and the API server use of libgodwit beyond godwit.h. */
#ifndef GODWIT_INTERNAL_H
#define GODWIT_INTERNAL_H

#include "godwit/godwit.h"
#include "io/loop.h"
#include "vm.h"

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

#endif
