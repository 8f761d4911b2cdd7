/* caps.h: what `godwit run` keeps of root's powers once its VM is set up. */
#ifndef GODWIT_SANDBOX_CAPS_H
#define GODWIT_SANDBOX_CAPS_H

#include <stdbool.h>

/*
 * Sets no_new_privs and drops every capability but those later steps still use, for this
 * thread and every thread it creates afterwards (capabilities are per thread: call it before
 * the VM's threads start): CAP_DAC_OVERRIDE (a guest reboot opens the disks, kernel and
 * /dev/kvm again, a snapshot writes to the user's directory) and, when the VM has network
 * interfaces, CAP_NET_ADMIN (a reboot attaches the taps again). The bounding set is cleared
 * too when this thread may (CAP_SETPCAP), and the inheritable and ambient sets emptied, so
 * that nothing run later could get the others back. Without capabilities it only sets
 * no_new_privs. Returns 0 or -errno after one logged line.
 */
int sandbox_caps_drop(bool keep_net_admin);

#endif
