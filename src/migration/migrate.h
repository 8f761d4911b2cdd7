/*
 * migrate.h: the source of a live migration (pre-copy): all of RAM while the guest runs,
 * then what it dirtied since, pass after pass, until what is left fits the downtime budget;
 * then the VM pauses, the rest and its state go, and the destination acknowledges.
 */
#ifndef GODWIT_MIGRATION_MIGRATE_H
#define GODWIT_MIGRATION_MIGRATE_H

#include <stdbool.h>
#include <stdint.h>

struct vm;
struct migration;

#define MIGRATION_DEFAULT_DOWNTIME_MS 10u
#define MIGRATION_DEFAULT_TIMEOUT_S 600u
#define MIGRATION_MAX_PASSES 30u

enum migration_state {
    MIGRATION_NONE,
    MIGRATION_ACTIVE,
    MIGRATION_COMPLETED, /* the guest runs at the destination; this VM ends */
    MIGRATION_FAILED,    /* the guest runs on here */
    MIGRATION_CANCELLED, /* the guest runs on here */
};

struct migration_params {
    char uri[256];        /* tcp:HOST:PORT or unix:PATH */
    unsigned downtime_ms; /* the budget for the final step; 0: the default */
    unsigned timeout_s;   /* then give up (the guest runs on here), or switch over anyway */
    bool switchover_on_timeout;
    unsigned bandwidth_mibps; /* the most the passes before the pause send, MiB/s; 0: no limit */
    bool local; /* same-host live upgrade: hand the memory file over (MEMFD), send no page */
    unsigned connections; /* 1..MIG_MAX_CONNECTIONS (tcp: only); 0: 1. Pages go over all */
};

struct migration_progress {
    enum migration_state state;
    unsigned pass;                /* 1: the first copy of RAM */
    uint64_t bytes_sent;
    uint64_t bytes_left;          /* dirtied and not sent, at the last count */
    uint64_t bandwidth_bps;       /* the sending rate of the last passes (migration_rate) */
    uint64_t dirty_bytes_per_s;   /* how fast the guest dirtied memory in the last pass */
    double expected_downtime_ms;  /* what the final step would take now */
    double fixed_cost_ms;         /* the part of it beyond the pages left: measured where it
                                   * can be (migrate.c, fixed_cost()) */
    double downtime_ms;           /* the guest's actual pause, once completed */
    double total_ms;
    bool forced;                  /* switched over at the timeout, over the downtime budget */
    unsigned throttle_pct;        /* auto-converge: how much the vCPUs are held back now (or
                                   * were at the end) */
    char error[200];
};

/* What the final step costs beyond its pages, as measured before and during the passes. */
struct migration_cost {
    double pause_ms;      /* pausing the VM (measured once, before the first pass) */
    double save_ms;       /* saving its state then */
    uint64_t state_bytes; /* that state's size */
    double rtt_ms;        /* a round trip to the destination; 0 where none is known */
};
/* The fixed cost in ms for the switch-over decision at `bandwidth` (bytes/s): the parts above,
 * the state's transfer at that bandwidth, and the destination's load estimated as long as the
 * save; never below MIGRATION_MIN_FIXED_COST_MS, which stands in while `c` is NULL or the
 * bandwidth unknown (0). */
#define MIGRATION_MIN_FIXED_COST_MS 5.0
double migration_fixed_cost_ms(const struct migration_cost *c, double bandwidth);

/* After a pass, with the final step's fixed cost and the pages left's transfer time (ms): */
enum migration_switch {
    MIGRATION_SWITCH,             /* both fit the budget */
    MIGRATION_SWITCH_OVER_BUDGET, /* the fixed cost alone is over it, which more passes cannot
                                   * change, and the pages are as few as the budget less
                                   * MIGRATION_MIN_FIXED_COST_MS allows them: switch, saying so */
    MIGRATION_ANOTHER_PASS,
};
enum migration_switch migration_switch_decision(double budget_ms, double fixed_ms,
                                                double pages_ms);

/*
 * The sending rate of the passes before the pause, for the switch-over: their bytes over the
 * time they spent sending, without each pass's fixed work (clearing KVM's dirty log chunk by
 * chunk, which re-protects pages and flushes TLBs: under nested virtualization milliseconds a
 * clear, however few pages; the final step, with the guest paused, clears nothing). Taken over
 * the last MIGRATION_RATE_PASSES passes that sent something, weighted by their bytes, so that a
 * pass of a few scattered pages does not stand alone for the link.
 */
#define MIGRATION_RATE_PASSES 3u
struct migration_rate {
    uint64_t bytes[MIGRATION_RATE_PASSES];
    double send_ms[MIGRATION_RATE_PASSES];
    unsigned next, count;
};
/* A pass that sent `bytes` in `pass_ms`, of which `fixed_ms` were not sending. A pass that
 * sent nothing measured nothing: the rate stands. */
void migration_rate_add(struct migration_rate *r, uint64_t bytes, double pass_ms,
                        double fixed_ms);
/* Bytes per second over the passes kept; 0 before any. */
double migration_rate_bps(const struct migration_rate *r);

/*
 * Runs fn(m, vm) on the main loop's thread while the VM exists (the final step must pause the
 * VM, which only that thread may do); returns fn's result or -ESRCH. Given by libgodwit.
 */
typedef int (*migration_on_loop)(void *ctx, int (*fn)(struct migration *m, struct vm *vm),
                                 struct migration *m);

/* Starts migrating `vm` on a thread of its own. NULL (and *err) when it cannot start; a local
 * handover only over unix: and from RAM that is a shared memory file, more than one connection
 * only over tcp: and at most MIG_MAX_CONNECTIONS (-EINVAL, one line). */
struct migration *migration_start(struct vm *vm, const struct migration_params *params,
                                  const char *config_json, migration_on_loop on_loop, void *ctx,
                                  int *err);
void migration_get_progress(struct migration *m, struct migration_progress *out);
/* Asks it to stop; the guest runs on here. Returns at once. */
void migration_cancel(struct migration *m);
/* Cancels it if it still runs, waits for its thread and frees it. Only where no device can be
 * writing guest memory meanwhile (on the main loop's thread, or once the VM stopped), and not
 * while the migration may still need the main loop (its final step runs there). */
void migration_free(struct migration *m);

const char *migration_state_name(enum migration_state state);

#endif
