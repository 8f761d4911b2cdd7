/* caps.c: drops the capabilities `godwit run` no longer needs, with libcap-ng. */
#define _GNU_SOURCE
#include "sandbox/caps.h"

#include <cap-ng.h>
#include <errno.h>
#include <string.h>
#include <sys/prctl.h>

#include "log.h"

int sandbox_caps_drop(bool keep_net_admin)
{
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0) {
        int err = errno;
        log_error("sandbox: cannot set no_new_privs: %s", strerror(err));
        return -err;
    }
    capng_get_caps_process();
    if (capng_have_capabilities(CAPNG_SELECT_CAPS) == CAPNG_NONE)
        return 0; /* an unprivileged user: nothing to give up */
    /* Only a thread holding CAP_SETPCAP may shrink the bounding set. */
    capng_select_t what = capng_have_capability(CAPNG_EFFECTIVE, CAP_SETPCAP)
                              ? CAPNG_SELECT_BOTH : CAPNG_SELECT_CAPS;
    bool had_dac = capng_have_capability(CAPNG_PERMITTED, CAP_DAC_OVERRIDE);
    bool had_net = capng_have_capability(CAPNG_PERMITTED, CAP_NET_ADMIN);
    capng_clear(CAPNG_SELECT_BOTH);
    int ret = 0;
    if (had_dac)
        ret = capng_update(CAPNG_ADD, CAPNG_EFFECTIVE | CAPNG_PERMITTED | CAPNG_BOUNDING_SET,
                           CAP_DAC_OVERRIDE);
    if (ret == 0 && had_net && keep_net_admin)
        ret = capng_update(CAPNG_ADD, CAPNG_EFFECTIVE | CAPNG_PERMITTED | CAPNG_BOUNDING_SET,
                           CAP_NET_ADMIN);
    if (ret == 0)
        ret = capng_apply(what);
    if (ret != 0) {
        log_error("sandbox: cannot drop capabilities (libcap-ng error %d)", ret);
        return -EPERM;
    }
    return 0;
}
