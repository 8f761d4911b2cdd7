/* godwit.h: the public interface of godwit, a KVM virtual machine monitor. */
#ifndef GODWIT_GODWIT_H
#define GODWIT_GODWIT_H

/*
 * Exit status of `godwit run`, one per way a VM can end. Scripts and supervisors rely on
 * these values; they do not change between releases.
 */
enum godwit_exit_status {
    GODWIT_EXIT_POWEROFF = 0,  /* the guest powered off */
    GODWIT_EXIT_VMM_ERROR = 1, /* godwit failed (cannot open /dev/kvm, bad image, ...) */
    GODWIT_EXIT_USAGE = 2,     /* bad command line */
    GODWIT_EXIT_REBOOT = 3,    /* the guest asked to reboot and --no-reboot was given */
    GODWIT_EXIT_CRASH = 4,     /* triple fault or KVM internal error; registers were logged */
    GODWIT_EXIT_PANIC = 5,     /* the guest kernel panicked (reported through pvpanic) */
    GODWIT_EXIT_STOPPED = 6,   /* stopped from the host: escape key, SIGINT, SIGTERM, SIGHUP */
};

#endif
