/* seccomp.h: per-thread system call filters, and the line that names a forbidden call. */
#ifndef GODWIT_SANDBOX_SECCOMP_H
#define GODWIT_SANDBOX_SECCOMP_H

#include <stdbool.h>

#include "godwit/godwit.h"

/* The kinds of godwit thread; each gets the filter that lists what it calls. */
enum sandbox_thread {
    SANDBOX_THREAD_MAIN_LOOP, /* the event loop: builds VMs (reboots too), snapshots, API */
    SANDBOX_THREAD_VCPU,      /* KVM_RUN and the exits answered at once */
    SANDBOX_THREAD_MIGRATION, /* the outgoing migration's page copier */
    SANDBOX_THREAD_CLI,       /* `godwit run`'s own thread once the VM runs: signals */
};

/* How a thread whose call is outside its filter ends: this exit status, after one line. */
#define SANDBOX_SECCOMP_EXIT_STATUS GODWIT_EXIT_VMM_ERROR

const char *sandbox_thread_name(enum sandbox_thread thread);

/*
 * Loads the calling thread's filter (and sets no_new_privs, which a filter needs). Filters
 * stack and threads inherit them: a thread created later runs under this one too, so a thread
 * must allow what the threads it creates do before their own filter is loaded.
 * GODWIT_SECCOMP_ON: a call outside the filter writes one line naming it and ends the process
 * (SANDBOX_SECCOMP_EXIT_STATUS); LOG: the kernel logs it (audit) and the call goes ahead;
 * OFF: nothing is loaded. Returns 0 or -errno after one logged line.
 */
int sandbox_seccomp_install(enum sandbox_thread thread, enum godwit_seccomp mode);
/*
 * Compiles the filter of `thread`'s kind once per process, for every later install of it to
 * load as it is: a thread that must start fast (a vCPU, after a restore or a migration's
 * switch-over) then spends microseconds on it, not the build's fraction of a millisecond.
 * 0, or -errno after one warning line (the install then builds the filter itself).
 */
int sandbox_seccomp_prepare(enum sandbox_thread thread, enum godwit_seccomp mode);

/* Whether this kernel takes seccomp filters (for check-host). */
bool sandbox_seccomp_available(void);

/* Parses "on", "log", "off"; -EINVAL for anything else. */
int sandbox_seccomp_parse(const char *text, enum godwit_seccomp *mode);
const char *sandbox_seccomp_name(enum godwit_seccomp mode);

#endif
