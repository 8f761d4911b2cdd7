/* incoming.h: the destination of a live migration (the stream is described in channel.h). */
#ifndef GODWIT_MIGRATION_INCOMING_H
#define GODWIT_MIGRATION_INCOMING_H

#include <stdbool.h>

struct vm;

/*
 * Checks the guest's CPU model (CPU, answered READY or refused), then receives guest RAM and
 * the VM's state from `fd` (a connected stream whose HELLO was read, and whose configuration
 * built `vm`: vCPUs created, not started, RAM still zero), and answers ACK after DONE: from
 * then on the guest is this VM's. `handed_over`: the source handed its memory file over
 * (MEMFD), and vm's RAM is that file: no page may come. A broken or hostile stream, a page run
 * outside RAM, a state that does not load: refused with one line, and the source told with
 * ERROR. `extra`: the source's nr_extra other connections (JOIN read), on which pages come
 * too, each written by a thread of its own, pass by pass (channel.h); the caller closes them
 * after. Returns 0 once the source's GO came (the guest is this side's to run), or -errno.
 */
int migration_receive(struct vm *vm, int fd, bool handed_over, const int *extra,
                      unsigned nr_extra);
/* After migration_receive() returned 0 (the source's GO came) and the vCPUs were started:
 * RUNNING to the source, which then ends. Sent only then, so that the pause the source
 * reports ends where the guest runs again, the vCPU threads' start included. */
void migration_confirm_running(int fd);

#endif
