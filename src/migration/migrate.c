/* migrate.c: the source of a live migration (see migrate.h; the stream is in channel.h). */
#define _GNU_SOURCE
#include "migration/migrate.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "io/loop.h"
#include "log.h"
#include "sandbox/seccomp.h"
#include "migration/channel.h"
#include "migration/dirty.h"
#include "migration/state.h"
#include "migration/vm_state.h"
#include "virtio/console.h"
#include "vcpu/vcpu.h"
#include "vm/virtio_devices.h"
#include "vm/vm.h"

#define ACK_TIMEOUT_MS 30000u
#define BITS_PER_WORD (8 * sizeof(unsigned long))
/* What the final step costs beyond its pages (state save, transfer, load, resume) before the
 * first pass has measured a bandwidth, and the least it is ever taken to cost: what is
 * measured leaves out the destination's load (fixed_cost()). */
#define FIXED_COST_MS MIGRATION_MIN_FIXED_COST_MS
/* How long a migrated source stays, paused, so that `godwit migrate` (which polls every 100 ms)
 * reads "completed" rather than a vanished API, which it must report as a failure. */
#define LINGER_MS 1500u
/* Auto-converge: once the guest has dirtied more than half of what the link sent in
 * THROTTLE_AFTER passes in a row, its vCPUs are held back THROTTLE_FIRST_PCT of the time, and
 * THROTTLE_STEP_PCT more after each further such pass (vm_set_throttle caps it at 99). */
#define THROTTLE_AFTER 2u
#define THROTTLE_FIRST_PCT 20u
#define THROTTLE_STEP_PCT 10u

/* One extra connection's sender (lane i + 1; lane 0 is the thread that drives the pass). */
struct lane {
    struct migration *m;
    unsigned index;
    int fd;
    pthread_t thread;
    bool started;
};

struct migration {
    struct vm *vm;
    struct migration_params params;
    char *config_json;
    migration_on_loop on_loop;
    void *ctx;
    int fd;
    pthread_t thread;
    _Atomic bool cancelled;
    struct mig_devices devices; /* a local handover's: the VM's own descriptors, not dups */
    struct dirty_log dirty;
    struct loop_watch exit_timer; /* ends this VM once the destination has the guest */
    bool dirty_started;
    unsigned long *bitmap; /* pages to send in this pass, by index in the memory file */
    size_t nr_pages;
    uint64_t started_ns;
    double connected_ms; /* from started_ns: the first connection made (and the lanes') */
    bool final_step; /* the guest is paused: nothing waits for the bandwidth limit */
    bool committed;  /* GO went out: this VM never runs the guest again by itself */
    unsigned fast_dirtying_passes; /* in a row, for auto-converge */
    uint64_t limited_bytes; /* counted against the bandwidth limit since limit_start_ns */
    uint64_t limit_start_ns;
    pthread_mutex_t limit_lock; /* guards limited_bytes: every lane sends under the limit */
    struct migration_cost cost; /* rtt_ms: the kernel's (TCP_INFO), first connection */
    bool cost_measured;
    double fixed_cost_taken_ms; /* the final step beyond its pages, as it went */

    /* Several connections: the first is fd; the lanes send on the others. A pass hands out
     * chunks of page space (next_chunk) to every lane, this thread's too, until none is left. */
    unsigned nr_conns;
    struct lane lanes[MIG_MAX_CONNECTIONS - 1];
    pthread_mutex_t work_lock;
    pthread_cond_t work_cond;  /* a pass for the lanes, or their end */
    pthread_cond_t done_cond;  /* a lane finished its part of a pass */
    unsigned work_gen;         /* one more for each pass the lanes join */
    bool work_first;           /* the pass is the first (populated pages), else dirty pages */
    uint32_t work_pass;        /* its number, for PASS_END */
    unsigned lanes_busy;
    bool lanes_quit;
    _Atomic bool lane_failed;  /* a lane failed: the others stop at their next chunk */
    _Atomic uint64_t next_chunk;
    uint32_t passes_sent;      /* PASS_END numbers used */
    pthread_mutex_t clear_lock; /* dirty_log_clear() shares one buffer */
    uint64_t clear_ns;          /* time in dirty_log_clear(), all lanes (under clear_lock) */
    unsigned clears;            /* how many calls */
    /* Where a pass's time goes (its log line), all lanes together: pages the first pass found
     * populated (the rest of them zero, not sent), and time in the system calls that send
     * pages. */
    _Atomic uint64_t populated_pages;
    _Atomic uint64_t send_ns;
    struct migration_rate rate;

    pthread_mutex_t lock; /* guards progress */
    struct migration_progress progress;
};

const char *migration_state_name(enum migration_state state)
{
    switch (state) {
    case MIGRATION_NONE: return "none";
    case MIGRATION_ACTIVE: return "active";
    case MIGRATION_COMPLETED: return "completed";
    case MIGRATION_FAILED: return "failed";
    case MIGRATION_CANCELLED: return "cancelled";
    }
    return "unknown";
}

static void set_error(struct migration *m, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void set_error(struct migration *m, const char *fmt, ...)
{
    va_list ap;
    pthread_mutex_lock(&m->lock);
    if (!m->progress.error[0]) {
        va_start(ap, fmt);
        vsnprintf(m->progress.error, sizeof(m->progress.error), fmt, ap);
        va_end(ap);
    }
    pthread_mutex_unlock(&m->lock);
}

static void add_sent(struct migration *m, uint64_t bytes)
{
    pthread_mutex_lock(&m->lock);
    m->progress.bytes_sent += bytes;
    pthread_mutex_unlock(&m->lock);
}

/* ---- sending pages ---- */

/* The host address of page `page` of the memory file, and how many pages follow it in the
 * same region (a run never crosses a region). */
static uint8_t *page_host(const struct guest_memory *gm, uint64_t page, uint64_t *left_in_region)
{
    for (unsigned i = 0; i < gm->nr_regions; i++) {
        const struct gm_region *r = &gm->regions[i];
        uint64_t start = r->file_offset / MIG_PAGE_SIZE, pages = r->size / MIG_PAGE_SIZE;
        if (page >= start && page - start < pages) {
            *left_in_region = pages - (page - start);
            return r->host + (page - start) * MIG_PAGE_SIZE;
        }
    }
    return NULL;
}

/* Under --bandwidth, waits until `bytes` more fit the limit. Only the migration thread sends
 * under it: the final step, with the guest paused, never waits. Time spent not sending (the
 * destination building its VM, a harvest) is credit for at most LIMIT_BURST_MS of sending. */
#define LIMIT_BURST_MS 100.0
static int keep_to_limit(struct migration *m, uint64_t bytes)
{
    if (!m->params.bandwidth_mibps || m->final_step)
        return 0;
    /* The limit is the total's: every lane counts its bytes in the one account, and waits
     * until the account is within the limit, so K connections share one rate. */
    double per_ms = (double)m->params.bandwidth_mibps * 1048576 / 1e3;
    pthread_mutex_lock(&m->limit_lock);
    double behind_ms = ms_since_ns(m->limit_start_ns) - (double)m->limited_bytes / per_ms;
    if (behind_ms > LIMIT_BURST_MS) /* the idle time beyond a burst counts as sent */
        m->limited_bytes += (uint64_t)((behind_ms - LIMIT_BURST_MS) * per_ms);
    m->limited_bytes += bytes;
    double due_ms = (double)m->limited_bytes / per_ms;
    pthread_mutex_unlock(&m->limit_lock);
    double ahead_ms;
    while ((ahead_ms = due_ms - ms_since_ns(m->limit_start_ns)) > 0) {
        if (atomic_load(&m->cancelled) || atomic_load(&m->lane_failed))
            return -ECANCELED;
        double nap = ahead_ms < 50 ? ahead_ms : 50; /* a cancel is seen within 50 ms */
        struct timespec ts = { .tv_sec = 0, .tv_nsec = (long)(nap * 1e6) };
        nanosleep(&ts, NULL);
    }
    return 0;
}

/*
 * Page runs on their way to one RUNS message, MIG_MAX_RUN_PAGES pages at most: a dirty pass's
 * pages come one or two at a time, and a message each cost a system call at both ends (three
 * at the destination), 40-100 us a page in the nested test host. Each run's pages are read
 * from guest memory as the message goes.
 */
struct run_batch {
    int fd;
    unsigned nr, pages;
    struct mig_run runs[MIG_MAX_RUN_PAGES];
    void *hosts[MIG_MAX_RUN_PAGES];
};

static int flush_runs(struct migration *m, struct run_batch *b)
{
    if (!b->nr)
        return 0;
    uint64_t t0 = monotonic_ns();
    int ret = mig_send_runs(b->fd, b->runs, b->nr, b->hosts);
    atomic_fetch_add(&m->send_ns, monotonic_ns() - t0);
    uint64_t bytes = (uint64_t)b->pages * MIG_PAGE_SIZE;
    b->nr = b->pages = 0;
    if (ret < 0)
        return ret;
    add_sent(m, bytes);
    return keep_to_limit(m, bytes);
}

/* Adds `count` pages from `first`, at `host` (inside one region, as send_selected() found
 * them; at most MIG_MAX_RUN_PAGES), sending the batch first when they would not fit and once
 * it is full. */
static int add_run(struct migration *m, struct run_batch *b, uint64_t first, uint32_t count,
                   uint8_t *host)
{
    if (count > MIG_MAX_RUN_PAGES)
        return -EINVAL;
    int ret = b->pages + count > MIG_MAX_RUN_PAGES ? flush_runs(m, b) : 0;
    if (ret < 0)
        return ret;
    b->runs[b->nr] = (struct mig_run){ .first = first, .count = count };
    b->hosts[b->nr++] = host;
    b->pages += count;
    return b->pages == MIG_MAX_RUN_PAGES ? flush_runs(m, b) : 0;
}

/* Adds the pages of [first, first + count) that `want(m, page)` selects to `b`, as runs that
 * stop at region ends and at MIG_MAX_RUN_PAGES. */
static int send_selected(struct migration *m, struct run_batch *b, uint64_t first,
                         uint64_t count, bool (*want)(struct migration *m, uint64_t page))
{
    uint64_t page = first, end = first + count;
    while (page < end) {
        if (atomic_load(&m->cancelled) || atomic_load(&m->lane_failed))
            return -ECANCELED;
        if (!want(m, page)) {
            page++;
            continue;
        }
        uint64_t left, run = 1;
        uint8_t *host = page_host(&m->vm->mem, page, &left);
        if (!host)
            return -EINVAL;
        while (page + run < end && run < left && run < MIG_MAX_RUN_PAGES && want(m, page + run))
            run++;
        int ret = add_run(m, b, page, (uint32_t)run, host);
        if (ret < 0)
            return ret;
        page += run;
    }
    return 0;
}

static bool page_not_zero(struct migration *m, uint64_t page)
{
    uint64_t left;
    return !page_is_zero(page_host(&m->vm->mem, page, &left));
}

static bool page_dirty(struct migration *m, uint64_t page)
{
    return m->bitmap[page / BITS_PER_WORD] & (1UL << (page % BITS_PER_WORD));
}

/* memory_populated_ranges()'s callback: a lane's populated pages go into its batch. */
struct populated_ctx {
    struct migration *m;
    struct run_batch *batch;
};

static int send_populated(void *opaque, uint64_t first, uint64_t count)
{
    struct populated_ctx *c = opaque;
    atomic_fetch_add(&c->m->populated_pages, count);
    return send_selected(c->m, c->batch, first, count, page_not_zero);
}

static int clear_chunk(struct migration *m, const unsigned long *pages, uint64_t first,
                       uint64_t count)
{
    pthread_mutex_lock(&m->clear_lock);
    uint64_t t0 = monotonic_ns();
    int ret = dirty_log_clear(&m->dirty, pages, first, count);
    m->clear_ns += monotonic_ns() - t0;
    m->clears++;
    pthread_mutex_unlock(&m->clear_lock);
    return ret;
}

/* A chunk of the first pass: every page that is not zero (the destination's RAM starts zero),
 * skipping the memory file's holes unread. The chunk's dirty bits are cleared before it is
 * scanned, so a write after that is sent again later (dirty.h). Lanes scan at once: lseek's
 * SEEK_DATA answers each call with its own result; nothing reads the shared file offset. */
static int first_pass_chunk(struct migration *m, struct run_batch *b, uint64_t page, uint64_t n)
{
    struct populated_ctx c = { m, b };
    int ret = clear_chunk(m, NULL, page, n);
    return ret < 0 ? ret : memory_populated_ranges(&m->vm->mem, page, n, send_populated, &c);
}

/* A chunk of a later pass: its pages in m->bitmap, KVM's record of them cleared just before.
 * Not in the final step: the guest is paused, no later pass will look, and each clear costs
 * the pause its write-protection and TLB flush (a failed final step ends the dirty log). */
static int dirty_chunk(struct migration *m, struct run_batch *b, uint64_t page, uint64_t n)
{
    bool any = false;
    for (uint64_t p = page; p < page + n && !any; p += BITS_PER_WORD)
        any = m->bitmap[p / BITS_PER_WORD] != 0;
    if (!any)
        return 0;
    int ret = m->final_step ? 0 : clear_chunk(m, m->bitmap, page, n);
    return ret < 0 ? ret : send_selected(m, b, page, n, page_dirty);
}

/* Pages a chunk spans: whole 64-page words, as KVM clears them. The first pass alone on one
 * connection takes large ones (few clears); spread over several, smaller ones, so that each
 * connection gets a share of a small guest's RAM. */
static uint64_t chunk_pages(const struct migration *m, bool first)
{
    return !first ? MIG_MAX_RUN_PAGES : m->nr_conns > 1 ? 4 * MIG_MAX_RUN_PAGES
                                                        : 64 * MIG_MAX_RUN_PAGES;
}

/* Chunk after chunk of the current pass, as handed out, until none is left or a lane failed.
 * A batch may span chunks: it goes once full, and what is left once the pass's part is done. */
static int send_chunks(struct migration *m, int fd, bool first)
{
    const uint64_t chunk = chunk_pages(m, first);
    struct run_batch *b = calloc(1, sizeof(*b));
    int ret = b ? 0 : -ENOMEM;
    if (b)
        b->fd = fd;
    while (ret == 0) {
        if (atomic_load(&m->lane_failed)) {
            ret = -ECANCELED;
            break;
        }
        uint64_t page = atomic_fetch_add(&m->next_chunk, 1) * chunk;
        if (page >= m->nr_pages)
            break;
        uint64_t n = m->nr_pages - page < chunk ? m->nr_pages - page : chunk;
        ret = first ? first_pass_chunk(m, b, page, n) : dirty_chunk(m, b, page, n);
    }
    if (ret == 0)
        ret = flush_runs(m, b);
    free(b);
    return ret;
}

/* A lane's part failed: the others stop at their next chunk, and one blocked on a connection
 * the destination no longer reads ends now. The first connection stays, to say why. */
static void lane_failed(struct migration *m, unsigned index, int err)
{
    if (err != -ECANCELED && !atomic_load(&m->cancelled))
        set_error(m, "connection %u of %u failed: %s", index + 1, m->nr_conns,
                  err == -ETIMEDOUT ? "timed out" : strerror(-err));
    atomic_store(&m->lane_failed, true);
    for (unsigned i = 0; i + 1 < m->nr_conns; i++)
        if (i + 1 != index)
            shutdown(m->lanes[i].fd, SHUT_RDWR);
}

/* A lane's part of a pass: chunks, then PASS_END on its connection. */
static int lane_pass(struct migration *m, unsigned index, int fd, bool first, uint32_t pass)
{
    int ret = send_chunks(m, fd, first);
    uint8_t b[4];
    le_put(b, 4, pass);
    if (ret == 0)
        ret = mig_send(fd, MIG_PASS_END, b, sizeof(b));
    if (ret < 0)
        lane_failed(m, index, ret);
    return ret;
}

static void *lane_thread(void *arg)
{
    struct lane *l = arg;
    struct migration *m = l->m;
    unsigned seen = 0;
    if (sandbox_seccomp_install(SANDBOX_THREAD_MIGRATION, m->vm->cfg->seccomp) < 0) {
        set_error(m, "connection %u's sender cannot install its system call filter", l->index + 1);
        atomic_store(&m->lane_failed, true); /* the pass it would join fails */
    }
    pthread_mutex_lock(&m->work_lock);
    for (;;) {
        while (m->work_gen == seen && !m->lanes_quit)
            pthread_cond_wait(&m->work_cond, &m->work_lock);
        if (m->lanes_quit)
            break;
        seen = m->work_gen;
        bool first = m->work_first;
        uint32_t pass = m->work_pass;
        pthread_mutex_unlock(&m->work_lock);
        lane_pass(m, l->index, l->fd, first, pass);
        pthread_mutex_lock(&m->work_lock);
        m->lanes_busy--;
        pthread_cond_broadcast(&m->done_cond);
    }
    pthread_mutex_unlock(&m->work_lock);
    return NULL;
}

/*
 * One pass over RAM (the first: populated pages; else m->bitmap's), on every connection: the
 * lanes and this thread take chunks until none is left, and each connection ends with
 * PASS_END. Returns once every lane is done: the next harvest must come after every page of
 * this pass was read (and the destination orders passes by PASS_END: channel.h).
 */
static int send_pass(struct migration *m, bool first)
{
    atomic_store(&m->next_chunk, 0);
    if (m->nr_conns == 1)
        return send_chunks(m, m->fd, first);
    uint32_t pass = ++m->passes_sent;
    pthread_mutex_lock(&m->work_lock);
    m->work_first = first;
    m->work_pass = pass;
    m->lanes_busy = m->nr_conns - 1;
    m->work_gen++;
    pthread_cond_broadcast(&m->work_cond);
    pthread_mutex_unlock(&m->work_lock);
    int ret = lane_pass(m, 0, m->fd, first, pass);
    pthread_mutex_lock(&m->work_lock);
    while (m->lanes_busy)
        pthread_cond_wait(&m->done_cond, &m->work_lock);
    pthread_mutex_unlock(&m->work_lock);
    if (ret == 0 && atomic_load(&m->lane_failed))
        ret = -ECONNABORTED; /* a lane said why (set_error) */
    return ret;
}

static int first_pass(struct migration *m)
{
    return send_pass(m, true);
}

static uint64_t count_dirty(const struct migration *m)
{
    uint64_t n = 0;
    for (size_t w = 0; w < (m->nr_pages + BITS_PER_WORD - 1) / BITS_PER_WORD; w++)
        n += (uint64_t)__builtin_popcountl(m->bitmap[w]);
    return n;
}

/* Takes what was dirtied since the last harvest into m->bitmap; returns the page count. */
static int64_t harvest(struct migration *m)
{
    memset(m->bitmap, 0, (m->nr_pages + BITS_PER_WORD - 1) / BITS_PER_WORD * sizeof(long));
    int ret = dirty_log_harvest(&m->dirty, m->bitmap, m->nr_pages);
    return ret < 0 ? ret : (int64_t)count_dirty(m);
}

/* Sends every page in m->bitmap, clearing KVM's record of each chunk just before it goes. */
static int send_dirty(struct migration *m)
{
    return send_pass(m, false);
}

/* After the last pass, each extra connection ends with DONE: the destination loads the state
 * only once every one has (all their pages written). */
static int end_lanes(struct migration *m)
{
    int ret = 0;
    for (unsigned i = 0; i + 1 < m->nr_conns && ret == 0; i++)
        if ((ret = mig_send(m->lanes[i].fd, MIG_DONE, NULL, 0)) < 0)
            lane_failed(m, i + 1, ret);
    return ret;
}

/* ---- the final step, on the main loop's thread ---- */

/* The destination's answer: `want` (0), or ERROR with its reason (-ECONNABORTED), or neither. */
static int wait_for(struct migration *m, enum mig_type want, const char *what)
{
    struct mig_header h;
    char why[1025];
    int ret = mig_recv_header(m->fd, &h);
    if (ret == 0 && h.type == want && h.len == 0)
        return 0;
    if (ret == 0 && h.type == MIG_ERROR && mig_recv_all(m->fd, why, h.len) == 0) {
        why[h.len] = '\0';
        set_error(m, "%s", why);
        return -ECONNABORTED;
    }
    if (ret == 0)
        ret = -EPROTO;
    set_error(m, "no %s from the destination: %s", what,
              ret == -ETIMEDOUT ? "timed out" : strerror(-ret));
    return ret;
}

static int send_state(struct migration *m, struct vm *vm)
{
    struct state_writer w;
    int ret = vm_state_save(vm, m->config_json, &w);
    if (ret == 0)
        ret = mig_send(m->fd, MIG_STATE, w.buf, w.len);
    if (ret == 0)
        add_sent(m, w.len);
    sw_free(&w);
    return ret;
}

/* A local handover's console client goes with the guest (CLIENTS): the destination serves
 * the same connection after GO. A console that was not quiesced (a VM paused without its
 * devices) keeps its client, which then closes with this VM as before. */
static int hand_over_console_client(struct migration *m, struct vm *vm)
{
    struct virtio_console_client c;
    if (vm_virtio_console_client(vm, &c) < 0 || c.fd < 0)
        return 0;
    return mig_send_console_client(m->fd, &c);
}

/*
 * GO, the commit point (channel.h): from here this VM never resumes the guest by itself. A
 * RUNNING that does not come leaves it paused, with an error that says why and what to do.
 */
static int commit(struct migration *m)
{
    m->committed = true;
    int ret = mig_send(m->fd, MIG_GO, NULL, 0);
    if (ret == 0)
        ret = wait_for(m, MIG_RUNNING, "confirmation");
    if (ret < 0) {
        pthread_mutex_lock(&m->lock);
        m->progress.error[0] = '\0';
        pthread_mutex_unlock(&m->lock);
        set_error(m, "the destination took the guest's state but did not confirm that it runs "
                  "it (%s): the guest stays paused here; resume it here only if it does not "
                  "run there", strerror(-ret));
    }
    return ret;
}

static bool end_migrated_vm(struct event_loop *loop, void *opaque, int res)
{
    (void)loop, (void)res;
    vm_request_exit(opaque, VM_EXIT_MIGRATED);
    return false;
}

static int final_step(struct migration *m, struct vm *vm)
{
    double paused_at, pages_at, state_at, ack_at;
    bool was_paused = vm_is_paused(vm);
    uint64_t t0 = monotonic_ns();
    int ret = was_paused ? 0 : vm_pause(vm);
    if (ret < 0) {
        set_error(m, "cannot pause the VM: %s", strerror(-ret));
        return ret;
    }
    paused_at = ms_since_ns(t0);
    m->final_step = true;
    /* A local handover shares the memory file: nothing of RAM is left to send. */
    int64_t dirty = m->params.local ? 0 : harvest(m);
    ret = dirty < 0 ? (int)dirty : dirty > 0 ? send_dirty(m) : 0;
    if (ret == 0)
        ret = end_lanes(m);
    pages_at = ms_since_ns(t0);
    uint64_t sent_before_state = m->progress.bytes_sent; /* only this thread adds to it now */
    if (ret == 0 && m->params.local)
        ret = hand_over_console_client(m, vm);
    if (ret == 0)
        ret = send_state(m, vm);
    state_at = ms_since_ns(t0);
    if (ret == 0)
        ret = mig_send(m->fd, MIG_DONE, NULL, 0);
    if (ret == 0)
        ret = wait_for(m, MIG_ACK, "acknowledgement");
    ack_at = ms_since_ns(t0);
    if (ret < 0) {
        /* No ACK, so no GO: the destination never runs the guest; it runs on here. */
        m->final_step = false;
        set_error(m, "the final step failed: %s", strerror(-ret));
        if (!was_paused)
            vm_resume(vm);
        return ret;
    }
    /* From GO on the destination may run the guest, on the listening sockets handed over:
     * their paths are its to keep, never this VM's to unlink, whatever comes back. */
    if (m->params.local)
        vm_virtio_own_sockets(vm, false);
    ret = commit(m);
    if (ret < 0)
        return ret; /* the guest stays paused here: the destination may run it */
    double downtime = ms_since_ns(t0);
    /* Where the pause went: what to make faster. */
    log_info("migration to %s: the pause: %.1f ms pausing, %.1f ms the last pages, %.1f ms "
             "saving and sending the state (%.0f KiB), %.1f ms until the destination loaded it, "
             "%.1f ms until it runs the guest", m->params.uri, paused_at, pages_at - paused_at,
             state_at - pages_at, (double)(m->progress.bytes_sent - sent_before_state) / 1024,
             ack_at - state_at, downtime - ack_at);
    pthread_mutex_lock(&m->lock);
    m->progress.downtime_ms = downtime;
    m->fixed_cost_taken_ms = downtime - (pages_at - paused_at);
    m->progress.total_ms = ms_since_ns(m->started_ns);
    m->progress.state = MIGRATION_COMPLETED;
    pthread_mutex_unlock(&m->lock);
    /* The guest runs at the destination. This VM stays paused a moment before it ends, so that
     * whoever follows GET /vm/migration sees it completed, with its figures. */
    if (loop_after(vm->cfg->loop, &m->exit_timer, LINGER_MS, end_migrated_vm, vm) < 0)
        vm_request_exit(vm, VM_EXIT_MIGRATED);
    return 0;
}

/* ---- the thread ---- */

/* The MSI routes as they stand, for the destination to give KVM before the pause (ROUTES):
 * the state's load then rewrites KVM's table only if the guest changes a vector meanwhile. */
static int offer_routes(struct migration *m)
{
    struct vm_msi_route *table;
    unsigned nr, n = 0;
    int ret = vm_msi_routes_copy(m->vm, &table, &nr);
    if (ret < 0)
        return ret;
    struct mig_route *routes = calloc(nr ? nr : 1, sizeof(*routes));
    for (unsigned i = 0; routes && i < nr; i++)
        if (table[i].valid)
            routes[n++] = (struct mig_route){ .gsi = VM_MSI_GSI_BASE + i, .data = table[i].data,
                                              .address = table[i].address };
    ret = routes ? mig_send_routes(m->fd, routes, n) : -ENOMEM;
    free(routes);
    free(table);
    return ret;
}

/* The guest's CPU model: the destination answers READY once it has built the VM and found
 * every feature the guest was given, or refuses, before any page is sent. */
static int offer_cpu_model(struct migration *m)
{
    struct kvm_cpuid2 *cpuid = cpuid_build(m->vm->supported_cpuid, 0, m->vm->nr_vcpus);
    int ret = cpuid ? mig_send_cpu(m->fd, cpuid) : -ENOMEM;
    free(cpuid);
    return ret;
}

/* All the destination needs to build its VM, sent at once: nothing here waits for it. */
static int offer(struct migration *m)
{
    int ret = 0;
    /* A local handover gives the destination the memory file first: it builds its VM on it. */
    if (m->params.local)
        ret = mig_send_memfd(m->fd, m->vm->mem.memfd, m->vm->mem.ram_size);
    if (ret == 0)
        ret = mig_send_hello(m->fd, m->config_json);
    /* And its disks, taps and listening sockets: the destination uses them instead of opening
     * paths and taps and binding sockets. This VM goes on using them until GO: they are the
     * same open files (a host program that connects meanwhile is this VM's, and waits in
     * the backlog for the destination once this VM pauses). */
    if (ret == 0 && m->params.local)
        ret = mig_send_devices(m->fd, &m->devices);
    if (ret == 0)
        ret = offer_routes(m);
    return ret == 0 ? offer_cpu_model(m) : ret;
}

/* ---- the final step's cost beyond its pages ---- */

/*
 * Once, before the first pass, on the main loop's thread: pauses the VM as the final step will,
 * saves its state as the final step will (and throws it away), and resumes it. The guest is
 * paused for that long once more than a migration without the measure would pause it; in
 * return the switch-over is decided on this host's figures, not on a constant.
 */
static int measure_state(struct migration *m, struct vm *vm)
{
    struct state_writer w;
    bool was_paused = vm_is_paused(vm);
    uint64_t t0 = monotonic_ns();
    int ret = was_paused ? 0 : vm_pause(vm);
    double paused_at = ms_since_ns(t0);
    if (ret == 0) {
        ret = vm_state_save(vm, m->config_json, &w);
        m->cost = (struct migration_cost){ .pause_ms = paused_at,
                                       .save_ms = ms_since_ns(t0) - paused_at,
                                       .state_bytes = w.len };
        sw_free(&w);
        if (!was_paused)
            vm_resume(vm);
    }
    m->cost_measured = ret == 0;
    if (ret < 0)
        log_warn("migration to %s: cannot measure the state's save (%s): the switch-over "
                 "assumes %.0f ms for it", m->params.uri, strerror(-ret), FIXED_COST_MS);
    else
        log_info("migration to %s: measured for the switch-over: %.1f ms pausing, %.1f ms "
                 "saving the state (%.0f KiB); the guest was paused %.1f ms for it",
                 m->params.uri, m->cost.pause_ms, m->cost.save_ms,
                 (double)m->cost.state_bytes / 1024, ms_since_ns(t0));
    return 0; /* without the figures the constant stands in: nothing to give up for */
}

/* Milliseconds from the migration's start to each step before its first pass (the log line). */
struct start_times {
    double offered, filtered, measured, logging, ready;
};

/*
 * What needs no destination, done while the destination builds its VM (which the source waits
 * for in any case: 130-200 ms in the test host): this thread's own filter (it runs under the
 * main loop's until then, and has read nothing from the destination yet), the final step's
 * measure and the dirty log. A destination that then refuses costs the guest that measure's
 * pause, and the dirty log is stopped again, as after any failure.
 */
static int prepare(struct migration *m, struct start_times *t)
{
    int ret = sandbox_seccomp_install(SANDBOX_THREAD_MIGRATION, m->vm->cfg->seccomp);
    t->filtered = t->measured = t->logging = ms_since_ns(m->started_ns);
    /* Nothing to track or copy when both sides map the same file: straight to the pause. */
    if (ret < 0 || m->params.local)
        return ret;
    ret = m->on_loop(m->ctx, measure_state, m);
    t->measured = ms_since_ns(m->started_ns);
    if (ret == 0 && (ret = dirty_log_start(&m->dirty, m->vm)) == 0)
        m->dirty_started = true;
    t->logging = ms_since_ns(m->started_ns);
    return ret;
}

static void log_start(const struct migration *m, const struct start_times *t)
{
    log_info("migration to %s: the first pass starts %.1f ms in: %.1f ms connecting, %.1f ms "
             "sending what the destination builds its VM from, %.1f ms until it was ready; "
             "meanwhile %.1f ms loading this thread's system call filter, %.1f ms measuring, "
             "%.1f ms starting the dirty log", m->params.uri, ms_since_ns(m->started_ns),
             m->connected_ms, t->offered - m->connected_ms, t->ready - t->offered,
             t->filtered - t->offered, t->measured - t->filtered, t->logging - t->measured);
}

/* The kernel's smoothed round-trip time of a TCP connection (from the acknowledgements of what
 * it sent); 0 for a UNIX socket (no such figure; a local round trip is microseconds). */
static double rtt_ms(int fd)
{
    struct tcp_info ti;
    socklen_t len = sizeof(ti);
    if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) < 0 || len < sizeof(ti))
        return 0;
    return ti.tcpi_rtt / 1e3;
}

/*
 * What the final step costs beyond the pages it sends, for the switch-over decision:
 *   measured: pausing and saving the state (measure_state), the state's size over the
 *             bandwidth the last pass measured, and two round trips (DONE to ACK, GO to
 *             RUNNING) by the kernel's RTT of the first connection;
 *   estimated: the destination's state load, taken to cost what our save did (the same KVM
 *             calls the other way round). It is not measured before the switch-over; the
 *             destination logs what it took (migration: the state here), and the final log
 *             line here puts the estimate beside what the step took. (The 3-5 times longer
 *             once seen under nested virtualization was mostly the destination still writing
 *             earlier passes' pages: SYNC, channel.h.)
 * FIXED_COST_MS before the first pass has measured a bandwidth, and as the least it is taken to
 * be: a floor on the safe side for what the estimate leaves out.
 */
double migration_fixed_cost_ms(const struct migration_cost *c, double bandwidth)
{
    if (!c || bandwidth <= 0)
        return FIXED_COST_MS;
    double ms = c->pause_ms + 2 * c->save_ms + (double)c->state_bytes * 1e3 / bandwidth +
                2 * c->rtt_ms;
    return ms > FIXED_COST_MS ? ms : FIXED_COST_MS;
}

enum migration_switch migration_switch_decision(double budget_ms, double fixed_ms,
                                                double pages_ms)
{
    if (fixed_ms + pages_ms <= budget_ms)
        return MIGRATION_SWITCH;
    /* The step alone is over the budget: more passes cannot help, only shrink the pages to
     * what the budget allowed them when the fixed cost was taken to be FIXED_COST_MS. */
    if (fixed_ms > budget_ms && FIXED_COST_MS + pages_ms <= budget_ms)
        return MIGRATION_SWITCH_OVER_BUDGET;
    return MIGRATION_ANOTHER_PASS;
}

static double fixed_cost(struct migration *m, double bandwidth)
{
    m->cost.rtt_ms = rtt_ms(m->fd);
    return migration_fixed_cost_ms(m->cost_measured ? &m->cost : NULL, bandwidth);
}

static void record_pass(struct migration *m, unsigned pass, uint64_t left, double bandwidth,
                        double dirty_rate, double expected, double fixed)
{
    pthread_mutex_lock(&m->lock);
    m->progress.fixed_cost_ms = fixed;
    m->progress.pass = pass;
    m->progress.bytes_left = left;
    m->progress.bandwidth_bps = (uint64_t)bandwidth;
    m->progress.dirty_bytes_per_s = (uint64_t)dirty_rate;
    m->progress.expected_downtime_ms = expected;
    pthread_mutex_unlock(&m->lock);
}

/* Auto-converge: holds the vCPUs back more while the guest dirties memory faster than half
 * the link's rate, so that what is left shrinks to the budget. */
static void auto_converge(struct migration *m, double dirty_rate, double bandwidth)
{
    if (bandwidth <= 0 || dirty_rate <= bandwidth / 2) {
        m->fast_dirtying_passes = 0;
        return;
    }
    if (++m->fast_dirtying_passes < THROTTLE_AFTER)
        return;
    unsigned pct = m->progress.throttle_pct ? m->progress.throttle_pct + THROTTLE_STEP_PCT
                                            : THROTTLE_FIRST_PCT;
    if (pct > VM_MAX_THROTTLE_PCT)
        pct = VM_MAX_THROTTLE_PCT;
    if (pct == m->progress.throttle_pct)
        return;
    log_info("migration to %s: the guest dirties %.1f MiB/s, the link carries %.1f MiB/s: "
             "vCPUs held back %u%% of the time", m->params.uri, dirty_rate / 1048576,
             bandwidth / 1048576, pct);
    vm_set_throttle(m->vm, pct);
    pthread_mutex_lock(&m->lock);
    m->progress.throttle_pct = pct;
    pthread_mutex_unlock(&m->lock);
}

/* Out of time or passes with `left` bytes still dirty: switch over anyway (0) when asked to,
 * or give up (-ETIMEDOUT) and the guest runs on here. */
static int not_converged(struct migration *m, unsigned pass, double left, double expected,
                         double dirty_rate, double bandwidth)
{
    if (m->params.switchover_on_timeout) {
        log_warn("migration to %s: not converged after %u passes; switching over with %.1f MiB "
                 "left (pause expected %.0f ms, budget %u ms)", m->params.uri, pass,
                 left / 1048576, expected, m->params.downtime_ms);
        pthread_mutex_lock(&m->lock);
        m->progress.forced = true;
        pthread_mutex_unlock(&m->lock);
        return 0;
    }
    set_error(m, "did not converge in %u passes, %.0f s: the guest dirties %.1f MiB/s, the link "
                 "carries %.1f MiB/s", pass, ms_since_ns(m->started_ns) / 1e3, dirty_rate / 1048576,
              bandwidth / 1048576);
    return -ETIMEDOUT;
}

void migration_rate_add(struct migration_rate *r, uint64_t bytes, double pass_ms,
                        double fixed_ms)
{
    if (!bytes || pass_ms <= 0)
        return;
    double send_ms = pass_ms - fixed_ms;
    /* The clock's grain, or fixed work measured in parallel lanes: a pass sent for some time. */
    if (send_ms < pass_ms / 10)
        send_ms = pass_ms / 10;
    r->bytes[r->next] = bytes;
    r->send_ms[r->next] = send_ms;
    r->next = (r->next + 1) % MIGRATION_RATE_PASSES;
    if (r->count < MIGRATION_RATE_PASSES)
        r->count++;
}

double migration_rate_bps(const struct migration_rate *r)
{
    uint64_t bytes = 0;
    double ms = 0;
    for (unsigned i = 0; i < r->count; i++) {
        bytes += r->bytes[i];
        ms += r->send_ms[i];
    }
    return ms > 0 ? (double)bytes * 1e3 / ms : 0;
}

/* One pass's figures, for its log line and the rate. With several connections the times
 * spent in calls are their sums, which may exceed the pass's own. */
struct pass_figures {
    uint64_t bytes, populated_pages;
    double ms, clear_ms, send_ms, sync_ms;
    unsigned clears;
};

static void log_pass(struct migration *m, unsigned pass, const struct pass_figures *f,
                     double rate, double left)
{
    char populated[64] = "";
    if (pass == 1)
        snprintf(populated, sizeof(populated), " (of %.1f MiB populated, the rest zero pages)",
                 (double)f->populated_pages * MIG_PAGE_SIZE / 1048576);
    log_info("migration to %s: pass %u: %.1f MiB%s in %.1f ms: %.1f ms clearing the dirty log "
             "(%u clears), %.1f ms in the calls that send pages, %.1f ms until the destination "
             "had written them (SYNC); sending at %.1f MiB/s (the last passes'), %.1f MiB left",
             m->params.uri, pass, (double)f->bytes / 1048576, populated, f->ms, f->clear_ms,
             f->clears, f->send_ms, f->sync_ms, rate / 1048576, left / 1048576);
}

/* Pass after pass until what is left fits the budget; returns 0 to switch over, or -errno.
 * The timeout and the pass limit are looked at after each pass. */
static int iterate(struct migration *m)
{
    double budget = m->params.downtime_ms, first_rate = 0;
    for (unsigned pass = 1;; pass++) {
        uint64_t sent_before = m->progress.bytes_sent, clear_before = m->clear_ns;
        unsigned clears_before = m->clears;
        uint64_t send_before = atomic_load(&m->send_ns);
        atomic_store(&m->populated_pages, 0);
        uint64_t pass_start = monotonic_ns();
        int ret = pass == 1 ? first_pass(m) : send_dirty(m);
        uint64_t sync_start = monotonic_ns();
        /* The pass ends when the destination has written it (channel.h, SYNC). */
        if (ret == 0 && (ret = mig_send(m->fd, MIG_SYNC, NULL, 0)) == 0)
            ret = wait_for(m, MIG_SYNCED, "SYNCED");
        if (ret < 0)
            return ret;
        struct pass_figures f = { .bytes = m->progress.bytes_sent - sent_before,
                                  .populated_pages = atomic_load(&m->populated_pages),
                                  .ms = ms_since_ns(pass_start),
                                  .clear_ms = ns_to_ms(m->clear_ns - clear_before),
                                  .send_ms = ns_to_ms(atomic_load(&m->send_ns) - send_before),
                                  .sync_ms = ms_since_ns(sync_start),
                                  .clears = m->clears - clears_before };
        /* The first pass reads all of RAM, and starts the rate alone; the later ones, of
         * dirty pages, are what the final step is like. Not sending: clearing the dirty log,
         * and SYNC's round trip, which a small pass would otherwise count as slow sending
         * (the final step's own round trips are in its fixed cost). */
        if (pass == 1 && f.ms > 0)
            first_rate = (double)f.bytes * 1e3 / f.ms;
        else
            migration_rate_add(&m->rate, f.bytes, f.ms, f.clear_ms + rtt_ms(m->fd));
        double rate = m->rate.count ? migration_rate_bps(&m->rate) : first_rate;
        int64_t dirty = harvest(m);
        if (dirty < 0)
            return (int)dirty;
        double left = (double)dirty * MIG_PAGE_SIZE, dirty_rate = f.ms > 0 ? left * 1e3 / f.ms : 0;
        log_pass(m, pass, &f, rate, left);
        double fixed = fixed_cost(m, rate), pages_ms = rate > 0 ? left * 1e3 / rate : 0;
        record_pass(m, pass, (uint64_t)left, rate, dirty_rate, fixed + pages_ms, fixed);
        enum migration_switch decision = migration_switch_decision(budget, fixed, pages_ms);
        if (decision == MIGRATION_SWITCH_OVER_BUDGET)
            log_warn("migration to %s: the final step alone costs about %.1f ms here, more than "
                     "the %.0f ms budget, which no pass can meet: switching over with %.1f MiB "
                     "left, the pause about %.0f ms", m->params.uri, fixed, budget,
                     left / 1048576, fixed + pages_ms);
        if (decision != MIGRATION_ANOTHER_PASS)
            return 0;
        double expected = fixed + pages_ms;
        if (pass >= 2) /* the first pass's rate says little: it sends all of RAM */
            auto_converge(m, dirty_rate, rate);
        if (pass >= MIGRATION_MAX_PASSES || ms_since_ns(m->started_ns) > m->params.timeout_s * 1e3)
            return not_converged(m, pass, left, expected, dirty_rate, rate);
    }
}

static void finish(struct migration *m, int ret)
{
    /* The guest runs on here at full speed; one that moved is this VM's no more. */
    if (ret < 0 && m->progress.throttle_pct) /* written by this thread only */
        vm_set_throttle(m->vm, 0);
    pthread_mutex_lock(&m->lock);
    m->progress.total_ms = ms_since_ns(m->started_ns);
    m->progress.state = ret == 0 ? MIGRATION_COMPLETED
                        : atomic_load(&m->cancelled) ? MIGRATION_CANCELLED : MIGRATION_FAILED;
    if (ret < 0 && !m->progress.error[0])
        snprintf(m->progress.error, sizeof(m->progress.error), "%s",
                 atomic_load(&m->cancelled) ? "cancelled" : strerror(-ret));
    pthread_mutex_unlock(&m->lock);
    if (ret == 0 && m->params.local)
        log_info("migrated to %s (local handover of the memory file): %.1f MiB sent, guest "
                 "paused %.1f ms", m->params.uri, (double)m->progress.bytes_sent / 1048576,
                 m->progress.downtime_ms);
    else if (ret == 0)
        log_info("migrated to %s over %u connection%s: %u passes, %.1f MiB sent, guest paused "
                 "%.1f ms; the final step beyond its pages: %.1f ms estimated (%s), %.1f ms taken",
                 m->params.uri, m->nr_conns, m->nr_conns == 1 ? "" : "s", m->progress.pass,
                 (double)m->progress.bytes_sent / 1048576, m->progress.downtime_ms,
                 m->progress.fixed_cost_ms, m->cost_measured ? "measured" : "assumed",
                 m->fixed_cost_taken_ms);
    else if (m->committed)
        log_error("migration to %s: %s", m->params.uri, m->progress.error);
    else
        log_warn("migration to %s: %s; the guest runs on here", m->params.uri,
                 m->progress.error);
}

static void *migration_thread(void *arg)
{
    struct migration *m = arg;
    struct start_times t = { 0 };
    int ret = offer(m);
    t.offered = ms_since_ns(m->started_ns);
    if (ret == 0)
        ret = prepare(m, &t);
    if (ret == 0)
        ret = wait_for(m, MIG_READY, "READY");
    t.ready = ms_since_ns(m->started_ns);
    if (ret == 0 && !m->params.local)
        log_start(m, &t);
    if (ret == 0 && !m->params.local)
        ret = iterate(m);
    if (ret == 0 && !atomic_load(&m->cancelled))
        ret = m->on_loop(m->ctx, final_step, m);
    /* Freed by migration_free(): a device may still be marking it until the VM stops. */
    if (m->dirty_started)
        dirty_log_stop(&m->dirty, m->vm);
    if (ret < 0 && ret != -ECANCELED && ret != -ETIMEDOUT && !m->progress.error[0])
        set_error(m, "%s", strerror(-ret));
    if (ret < 0 && !m->committed) {
        char why[256];
        snprintf(why, sizeof(why), "the source gave up: %s", m->progress.error);
        mig_send(m->fd, MIG_ERROR, why, strlen(why));
    }
    finish(m, ret);
    return NULL;
}

/* A local handover passes a descriptor, which only a UNIX socket carries, of a file that holds
 * the guest's RAM: not a snapshot's file mapped privately (the guest's writes are not in it). */
static int check_local(const struct vm *vm, const struct migration_params *params)
{
    if (strncmp(params->uri, "unix:", 5) != 0) {
        log_error("migration: --local hands the memory file over a UNIX socket: use unix:PATH, "
                  "not %s", params->uri);
        return -EINVAL;
    }
    if (vm->mem.private_file) {
        log_error("migration: --local: this VM's RAM is a snapshot's file mapped privately, "
                  "which cannot be handed over; migrate without --local");
        return -EINVAL;
    }
    return 0;
}

/* --connections: 1 to MIG_MAX_CONNECTIONS, and more than one only over tcp: (a local handover
 * copies no pages to spread). -EINVAL after one line. */
static int check_connections(const struct migration_params *params)
{
    unsigned k = params->connections ? params->connections : 1;
    const char *why = k > MIG_MAX_CONNECTIONS ? "is more than 8"
                      : k > 1 && params->local ? "is for copying pages, not for --local"
                      : k > 1 && strncmp(params->uri, "tcp:", 4) != 0 ? "needs a tcp: URI"
                                                                       : NULL;
    if (why)
        log_error("migration: --connections %u %s (1 to %u TCP connections)", k, why,
                  MIG_MAX_CONNECTIONS);
    return why ? -EINVAL : 0;
}

/*
 * The extra connections, after the first: CONNECTIONS on the first (before anything else, so
 * the destination, which accepts that one first, knows how many follow and their token), then
 * each extra one, opened in turn, says JOIN with the token and its index.
 */
static int connect_lanes(struct migration *m)
{
    struct mig_connections c = { .count = m->nr_conns };
    if (getrandom(&c.token, sizeof(c.token), 0) != sizeof(c.token))
        return -errno;
    int ret = mig_send_connections(m->fd, &c);
    for (unsigned i = 0; ret == 0 && i + 1 < m->nr_conns; i++) {
        struct lane *l = &m->lanes[i];
        l->fd = mig_connect(m->params.uri, ACK_TIMEOUT_MS);
        if (l->fd < 0)
            return l->fd;
        ret = mig_send_join(l->fd, c.token, i + 1);
    }
    return ret;
}

/* A sender thread per extra connection, idle until a pass. Made here, on the main loop's
 * thread: the migration thread's filter has no clone. */
static int start_lanes(struct migration *m)
{
    for (unsigned i = 0; i + 1 < m->nr_conns; i++) {
        struct lane *l = &m->lanes[i];
        l->m = m;
        l->index = i + 1;
        int ret = -pthread_create(&l->thread, NULL, lane_thread, l);
        if (ret < 0)
            return ret;
        l->started = true;
        pthread_setname_np(l->thread, "godwit-migsend");
    }
    return 0;
}

static void stop_lanes(struct migration *m)
{
    pthread_mutex_lock(&m->work_lock);
    m->lanes_quit = true;
    pthread_cond_broadcast(&m->work_cond);
    pthread_mutex_unlock(&m->work_lock);
    for (unsigned i = 0; i + 1 < m->nr_conns; i++)
        if (m->lanes[i].started) {
            pthread_join(m->lanes[i].thread, NULL);
            m->lanes[i].started = false;
        }
}

static void close_lanes(struct migration *m)
{
    stop_lanes(m);
    for (unsigned i = 0; i + 1 < m->nr_conns; i++)
        if (m->lanes[i].fd >= 0)
            close(m->lanes[i].fd);
}

static void migration_destroy(struct migration *m)
{
    close_lanes(m);
    if (m->fd >= 0)
        close(m->fd);
    pthread_mutex_destroy(&m->lock);
    pthread_mutex_destroy(&m->limit_lock);
    pthread_mutex_destroy(&m->clear_lock);
    pthread_mutex_destroy(&m->work_lock);
    pthread_cond_destroy(&m->work_cond);
    pthread_cond_destroy(&m->done_cond);
    free(m->bitmap);
    free(m->config_json);
    free(m);
}

struct migration *migration_start(struct vm *vm, const struct migration_params *params,
                                  const char *config_json, migration_on_loop on_loop, void *ctx,
                                  int *err)
{
    if ((params->local && (*err = check_local(vm, params)) < 0) ||
        (*err = check_connections(params)) < 0)
        return NULL;
    struct migration *m = calloc(1, sizeof(*m));
    *err = -ENOMEM;
    if (!m)
        return NULL;
    m->vm = vm;
    m->params = *params;
    if (!m->params.downtime_ms)
        m->params.downtime_ms = MIGRATION_DEFAULT_DOWNTIME_MS;
    if (!m->params.timeout_s)
        m->params.timeout_s = MIGRATION_DEFAULT_TIMEOUT_S;
    m->nr_conns = params->connections ? params->connections : 1;
    for (unsigned i = 0; i + 1 < m->nr_conns; i++)
        m->lanes[i].fd = -1;
    m->on_loop = on_loop;
    m->ctx = ctx;
    if (params->local) /* here, on the main loop's thread, where the devices were made */
        vm_virtio_handover_fds(vm, &m->devices);
    m->nr_pages = vm->mem.ram_size / MIG_PAGE_SIZE;
    m->bitmap = calloc((m->nr_pages + BITS_PER_WORD - 1) / BITS_PER_WORD, sizeof(long));
    m->config_json = strdup(config_json);
    pthread_mutex_init(&m->lock, NULL);
    pthread_mutex_init(&m->limit_lock, NULL);
    pthread_mutex_init(&m->clear_lock, NULL);
    pthread_mutex_init(&m->work_lock, NULL);
    pthread_cond_init(&m->work_cond, NULL);
    pthread_cond_init(&m->done_cond, NULL);
    m->progress.state = MIGRATION_ACTIVE;
    m->progress.fixed_cost_ms = FIXED_COST_MS;
    m->started_ns = monotonic_ns();
    m->limit_start_ns = m->started_ns;
    m->fd = -1;
    if (!m->bitmap || !m->config_json)
        goto fail;
    if ((m->fd = mig_connect(params->uri, ACK_TIMEOUT_MS)) < 0) {
        *err = m->fd;
        goto fail;
    }
    if (m->nr_conns > 1 && ((*err = connect_lanes(m)) < 0 || (*err = start_lanes(m)) < 0)) {
        log_error("migration: cannot open %u connections to %s: %s", m->nr_conns, params->uri,
                  strerror(-*err));
        goto fail;
    }
    m->connected_ms = ms_since_ns(m->started_ns);
    if ((*err = -pthread_create(&m->thread, NULL, migration_thread, m)) != 0)
        goto fail;
    pthread_setname_np(m->thread, "godwit-migrate");
    return m;
fail:
    migration_destroy(m);
    return NULL;
}

void migration_get_progress(struct migration *m, struct migration_progress *out)
{
    pthread_mutex_lock(&m->lock);
    *out = m->progress;
    if (out->state == MIGRATION_ACTIVE)
        out->total_ms = ms_since_ns(m->started_ns);
    pthread_mutex_unlock(&m->lock);
}

void migration_cancel(struct migration *m)
{
    atomic_store(&m->cancelled, true);
    /* A send or a wait for the destination ends at once instead of at its timeout. */
    pthread_mutex_lock(&m->lock);
    bool active = m->progress.state == MIGRATION_ACTIVE;
    pthread_mutex_unlock(&m->lock);
    if (active) {
        shutdown(m->fd, SHUT_RDWR);
        for (unsigned i = 0; i + 1 < m->nr_conns; i++)
            if (m->lanes[i].fd >= 0)
                shutdown(m->lanes[i].fd, SHUT_RDWR);
    }
}

void migration_free(struct migration *m)
{
    if (!m)
        return;
    migration_cancel(m);
    pthread_join(m->thread, NULL);
    if (m->exit_timer.armed)
        loop_unwatch_sync(m->vm->cfg->loop, &m->exit_timer);
    dirty_log_free(&m->dirty);
    migration_destroy(m);
}
