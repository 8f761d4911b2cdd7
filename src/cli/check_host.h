/* check_host.h: `godwit check-host`: can this machine run godwit's guests, and what to fix. */
#ifndef GODWIT_CHECK_HOST_H
#define GODWIT_CHECK_HOST_H

#include <stdio.h>

/* Where the checks look: the real host, or a fake tree in tests. */
struct check_host_env {
    const char *root;       /* prefixed to /proc, /sys and /dev paths; "" or NULL on a real host */
    const char *kvm_device; /* the KVM device to open; NULL means <root>/dev/kvm */
};

/*
 * Runs every check in a fixed order and prints one line per check to `out`:
 *   PASS  <check>: <detail>
 *   WARN  <check>: <detail> -- <what to do>
 *   FAIL  <check>: <detail> -- <what to do>
 * Returns the number of FAIL lines: 0 means godwit can run guests here.
 */
int check_host_run(const struct check_host_env *env, FILE *out);

#endif
