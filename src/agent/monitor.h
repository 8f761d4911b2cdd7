/*
 * monitor.h: the guest agent's heartbeat, as the VMM sees it. A VM with a vsock device has a
 * thread of its own that reaches the agent through the VM's vsock socket (as any host program
 * does), asks for its INFO once per connection and PINGs it every second. The age of its last
 * answer is the heartbeat's age (GET /vm's "agent", godwit info); an agent silent for
 * AGENT_LOST_MS is lost (one log line, GODWIT_EVENT_AGENT_LOST), and found again when it answers.
 *
 * After a restore or an incoming migration the guest's wall clock is wherever it stood when its
 * state was saved: the monitor, once the agent answers on its new connection (the vsock
 * transport reset dropped the old ones), steps it to the host's (agent_monitor_resumed()).
 */
#ifndef GODWIT_AGENT_MONITOR_H
#define GODWIT_AGENT_MONITOR_H

#include <stdbool.h>

#define AGENT_PING_INTERVAL_MS 1000
#define AGENT_LOST_MS 3000
/* After a restore or migration, how long the monitor keeps trying to reach the agent. */
#define AGENT_RESUMED_WAIT_MS 60000

struct agent_status {
    bool seen;        /* the agent answered at least once */
    bool alive;       /* ... and within AGENT_LOST_MS */
    double age_ms;    /* since its last answer; meaningless unless seen */
    char version[64], os[128], kernel[128], hostname[128];
    char addresses[512]; /* space separated */
};

struct agent_monitor;

/* Called on the monitor's thread when the agent is found (alive) or lost. */
typedef void (*agent_monitor_fn)(void *opaque, bool alive, const struct agent_status *st);

/* Starts watching the agent behind `vsock_path`. 0 or -errno after one line. */
int agent_monitor_start(struct agent_monitor **out, const char *vsock_path, agent_monitor_fn fn,
                        void *opaque);
/* Stops the thread and frees the monitor; NULL is fine. */
void agent_monitor_stop(struct agent_monitor *m);
/*
 * The guest runs again from a saved state (`why`: "restore", "migration"): once the agent answers,
 * within AGENT_RESUMED_WAIT_MS, its clock is stepped to the host's and, with `thaw`, its
 * filesystems thawed (a snapshot taken with them frozen keeps them so). One log line either way:
 * a warning when it did not answer, unless no agent ever answered (a guest without one).
 */
void agent_monitor_resumed(struct agent_monitor *m, const char *why, bool thaw);
/* What agent_monitor_take_resumed() found. */
enum agent_resumed_claim {
    AGENT_RESUMED_NONE,     /* no step owed (made already), or no agent ever answered */
    AGENT_RESUMED_TAKEN,    /* the caller makes the step now, and the monitor will not */
    AGENT_RESUMED_STEPPING, /* the monitor's thread makes it right now: agent_monitor_wait_step() */
};
/*
 * The step owed after `why` (agent_monitor_resumed, without a thaw) taken over by a caller that
 * makes it itself, now. A caller whose step fails gives it back with agent_monitor_resumed().
 * On AGENT_RESUMED_STEPPING the caller must call agent_monitor_wait_step(), which the monitor
 * outlives (agent_monitor_stop waits for it): so a caller that answers "stepped" does so only
 * once the monitor's step reached the guest (or failed, and the monitor tries again).
 */
enum agent_resumed_claim agent_monitor_take_resumed(struct agent_monitor *m, const char *why);
/* Waits, on a thread that is not the VM's loop (the step goes through its vsock device), until
 * the step that agent_monitor_take_resumed() found under way has ended. */
void agent_monitor_wait_step(struct agent_monitor *m);
/* Tests: AGENT_RESUMED_WAIT_MS replaced by `ms`. */
void agent_monitor_test_set_wait(unsigned ms);
/* A snapshot of what is known, from any thread. */
void agent_monitor_status(struct agent_monitor *m, struct agent_status *st);
/* From any thread, without waiting for the guest: when the agent is alive, the monitor's
 * thread asks it (on its connection) to power the guest off, and this returns true; false
 * (nothing asked) when the agent does not answer now. A failed request is logged there. */
bool agent_monitor_request_poweroff(struct agent_monitor *m);

#endif
