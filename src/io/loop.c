/* loop.c: an io_uring event loop: polls and timeouts dispatched to callbacks. */
#include "io/loop.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "log.h"

static bool loop_run_posted(struct event_loop *loop, void *opaque, int res);

/* Best first. The loop's thread is the only one to submit and to reap (vCPU and migration
 * threads hand work over with loop_post), which is what SINGLE_ISSUER promises; completions
 * are only looked at when that thread waits on the ring, so their task work may wait for it
 * too (DEFER_TASKRUN), or at least need not interrupt it (COOP_TASKRUN). */
static const unsigned loop_setups[] = {
    IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_R_DISABLED,
    IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_COOP_TASKRUN | IORING_SETUP_R_DISABLED,
    IORING_SETUP_COOP_TASKRUN,
    0,
};

int loop_ring_init(struct io_uring *ring, unsigned entries, unsigned *flags)
{
    int ret = -EINVAL;
    for (size_t i = 0; i < sizeof(loop_setups) / sizeof(loop_setups[0]); i++) {
        ret = io_uring_queue_init(entries, ring, loop_setups[i]);
        if (ret == 0) {
            *flags = loop_setups[i];
            return 0;
        }
        if (ret != -EINVAL)
            break; /* not a flag the kernel lacks: no lesser setup will do better */
    }
    return ret;
}

void loop_describe_setup(unsigned flags, char *buf, size_t size)
{
    snprintf(buf, size, "%s%s%s%s",
             flags & IORING_SETUP_SINGLE_ISSUER ? "SINGLE_ISSUER" : "",
             (flags & IORING_SETUP_SINGLE_ISSUER) &&
                     (flags & (IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_COOP_TASKRUN))
                 ? ", " : "",
             flags & IORING_SETUP_DEFER_TASKRUN ? "DEFER_TASKRUN"
             : flags & IORING_SETUP_COOP_TASKRUN ? "COOP_TASKRUN" : "",
             flags & (IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN |
                      IORING_SETUP_COOP_TASKRUN) ? "" : "none");
}

int loop_enable(struct event_loop *loop)
{
    if (loop->enabled)
        return 0;
    if (loop->setup_flags & IORING_SETUP_R_DISABLED) {
        /* The call itself: Debian's liburing 2.3 declares io_uring_enable_rings() but
         * does not export it. */
        if (syscall(__NR_io_uring_register, loop->ring.ring_fd, IORING_REGISTER_ENABLE_RINGS,
                    NULL, 0) < 0) {
            int err = errno;
            log_error("io_uring: cannot enable the ring: %s", strerror(err));
            return -err;
        }
    }
    loop->enabled = true;
    return 0;
}

int loop_submit(struct event_loop *loop)
{
    return loop->enabled ? io_uring_submit(&loop->ring) : 0;
}

int loop_init(struct event_loop *loop, unsigned entries)
{
    memset(loop, 0, sizeof(*loop));
    loop->calls_fd = -1;
    loop->thread = pthread_self();
    int ret = loop_ring_init(&loop->ring, entries, &loop->setup_flags);
    if (ret == 0) {
        char setup[64];
        loop_describe_setup(loop->setup_flags, setup, sizeof(setup));
        /* Before 5.19 there is no sparse table: every fd is then used as it is. */
        loop->files_registered = io_uring_register_files_sparse(&loop->ring,
                                                                 LOOP_FIXED_FILES) == 0;
        log_debug("io_uring: ring set up with %s, %s", setup,
                  loop->files_registered ? "registered files" : "no registered files");
    }
    if (ret < 0) {
        log_error("io_uring: cannot set up a ring: %s", strerror(-ret));
        return ret;
    }
    pthread_mutex_init(&loop->calls_lock, NULL);
    loop->calls_fd = eventfd(0, EFD_CLOEXEC); /* blocking: read through the ring */
    if (loop->calls_fd < 0 ||
        (ret = loop_watch_eventfd(loop, &loop->calls_watch, loop->calls_fd, loop_run_posted,
                                  NULL)) < 0) {
        ret = loop->calls_fd < 0 ? -errno : ret;
        loop_destroy(loop);
        return ret;
    }
    return 0;
}

int loop_register_file(struct event_loop *loop, int fd)
{
    if (!loop->files_registered || loop->files_used == UINT64_MAX)
        return -1;
    _Static_assert(LOOP_FIXED_FILES == 64, "files_used has a bit per slot");
    int slot = __builtin_ctzll(~loop->files_used);
    int ret = io_uring_register_files_update(&loop->ring, (unsigned)slot, &fd, 1);
    if (ret != 1) {
        log_debug("io_uring: cannot register fd %d: %s", fd, strerror(ret < 0 ? -ret : EIO));
        return -1;
    }
    loop->files_used |= 1ULL << slot;
    return slot;
}

void loop_unregister_file(struct event_loop *loop, int slot)
{
    if (slot < 0 || slot >= LOOP_FIXED_FILES || !(loop->files_used & (1ULL << slot)))
        return;
    int none = -1;
    if (io_uring_register_files_update(&loop->ring, (unsigned)slot, &none, 1) != 1)
        log_warn("io_uring: cannot unregister file slot %d", slot); /* kept busy: not reused */
    else
        loop->files_used &= ~(1ULL << slot);
}

int loop_buffers_enable(struct event_loop *loop, const struct iovec *areas, unsigned n)
{
    uint64_t chunks = 0;
    loop_buffers_disable(loop);
    if (n > LOOP_MAX_BUF_AREAS)
        return -E2BIG;
    for (unsigned i = 0; i < n; i++)
        chunks += (areas[i].iov_len + LOOP_BUF_CHUNK - 1) / LOOP_BUF_CHUNK;
    if (chunks == 0 || chunks > LOOP_MAX_BUFS)
        return -E2BIG;
    int ret = io_uring_register_buffers_sparse(&loop->ring, (unsigned)chunks);
    if (ret < 0)
        return ret; /* before 5.19: no sparse buffer table */
    for (unsigned i = 0; i < n; i++) {
        struct loop_buf_area *a = &loop->buf_areas[i];
        size_t nr = (areas[i].iov_len + LOOP_BUF_CHUNK - 1) / LOOP_BUF_CHUNK;
        a->base = areas[i].iov_base;
        a->size = areas[i].iov_len;
        a->slots = malloc(nr * sizeof(int));
        loop->nr_buf_areas = i + 1;
        if (!a->slots) {
            loop_buffers_disable(loop);
            return -ENOMEM;
        }
        memset(a->slots, 0xff, nr * sizeof(int)); /* -1 */
    }
    loop->bufs_used = 0;
    loop->bufs_enabled = true;
    return 0;
}

void loop_buffers_disable(struct event_loop *loop)
{
    if (!loop->nr_buf_areas)
        return;
    /* In-flight I/O keeps the pages it uses pinned until it completes: the kernel's. */
    io_uring_unregister_buffers(&loop->ring);
    for (unsigned i = 0; i < loop->nr_buf_areas; i++) {
        free(loop->buf_areas[i].slots);
        loop->buf_areas[i] = (struct loop_buf_area){ 0 };
    }
    loop->nr_buf_areas = 0;
    loop->bufs_enabled = false;
}

/* Registers piece `chunk` of area `a`; its index, or -1 after saying once why not. */
static int loop_register_chunk(struct event_loop *loop, struct loop_buf_area *a, size_t chunk)
{
    uint64_t off = chunk * LOOP_BUF_CHUNK;
    uint64_t len = a->size - off < LOOP_BUF_CHUNK ? a->size - off : LOOP_BUF_CHUNK;
    struct iovec iov = { .iov_base = a->base + off, .iov_len = len };
    __u64 tag = 0;
    int ret = io_uring_register_buffers_update_tag(&loop->ring, loop->bufs_used, &iov, &tag, 1);
    if (ret != 1) {
        loop->bufs_enabled = false;
        log_info("io_uring: guest RAM not registered for I/O (%s%s): disk I/O maps guest pages "
                 "per request instead", strerror(ret < 0 ? -ret : EIO),
                 ret == -ENOMEM ? ", RLIMIT_MEMLOCK too low?" : "");
        return -1;
    }
    a->slots[chunk] = (int)loop->bufs_used++;
    return a->slots[chunk];
}

int loop_fixed_buffer(struct event_loop *loop, const void *p, size_t len)
{
    const uint8_t *b = p;
    if (!loop->bufs_enabled || len == 0)
        return -1;
    for (unsigned i = 0; i < loop->nr_buf_areas; i++) {
        struct loop_buf_area *a = &loop->buf_areas[i];
        if (b < a->base || (uint64_t)(b - a->base) >= a->size)
            continue;
        uint64_t off = (uint64_t)(b - a->base);
        size_t chunk = off / LOOP_BUF_CHUNK;
        if (off % LOOP_BUF_CHUNK + len > LOOP_BUF_CHUNK || off + len > a->size)
            return -1; /* crosses a piece: not one buffer */
        return a->slots[chunk] >= 0 ? a->slots[chunk] : loop_register_chunk(loop, a, chunk);
    }
    return -1;
}

void loop_destroy(struct event_loop *loop)
{
    loop_buffers_disable(loop);
    io_uring_queue_exit(&loop->ring);
    if (loop->calls_fd >= 0) {
        close(loop->calls_fd);
        pthread_mutex_destroy(&loop->calls_lock);
    }
    loop->calls_fd = -1;
}

void loop_post(struct event_loop *loop, struct loop_call *c, void (*fn)(void *opaque),
               void *opaque)
{
    pthread_mutex_lock(&loop->calls_lock);
    if (!c->queued) {
        *c = (struct loop_call){ .fn = fn, .opaque = opaque, .queued = true };
        if (loop->calls_tail)
            loop->calls_tail->next = c;
        else
            loop->calls = c;
        loop->calls_tail = c;
    }
    pthread_mutex_unlock(&loop->calls_lock);
    uint64_t one = 1;
    /* A blocking eventfd blocks a writer only at a count of 2^64 - 2: never. */
    if (write(loop->calls_fd, &one, sizeof(one)) < 0)
        log_warn("loop: cannot wake the loop: %s", strerror(errno));
}

/* The calls are taken one at a time, so that one may post another (or free itself). The
 * ring's read took the wake-up count already. */
static bool loop_run_posted(struct event_loop *loop, void *opaque, int res)
{
    (void)opaque, (void)res;
    for (;;) {
        pthread_mutex_lock(&loop->calls_lock);
        struct loop_call *c = loop->calls;
        if (c) {
            loop->calls = c->next;
            if (!loop->calls)
                loop->calls_tail = NULL;
            c->queued = false;
        }
        pthread_mutex_unlock(&loop->calls_lock);
        if (!c)
            return true;
        c->fn(c->opaque);
    }
}

/* Drops a posted call that has not run yet (its owner is going away). */
void loop_cancel_post(struct event_loop *loop, struct loop_call *c)
{
    pthread_mutex_lock(&loop->calls_lock);
    struct loop_call **p = &loop->calls, *prev = NULL;
    while (*p && *p != c) {
        prev = *p;
        p = &(*p)->next;
    }
    if (*p) {
        *p = c->next;
        if (loop->calls_tail == c)
            loop->calls_tail = prev;
        c->queued = false;
    }
    pthread_mutex_unlock(&loop->calls_lock);
}

static struct io_uring_sqe *loop_get_sqe(struct event_loop *loop)
{
    struct io_uring_sqe *sqe = io_uring_get_sqe(&loop->ring);
    if (!sqe) {
        /* The submission queue is full: hand it to the kernel and try once more. */
        loop_submit(loop);
        sqe = io_uring_get_sqe(&loop->ring);
    }
    return sqe;
}

static int loop_arm_poll(struct event_loop *loop, struct loop_watch *w)
{
    struct io_uring_sqe *sqe = loop_get_sqe(loop);
    if (!sqe)
        return -EBUSY;
    if (w->reads)
        io_uring_prep_read(sqe, w->fd, &w->value, sizeof(w->value), 0);
    else
        io_uring_prep_poll_add(sqe, w->fd, POLLIN);
    io_uring_sqe_set_data(sqe, w);
    w->armed = true;
    return 0;
}

int loop_watch_readable(struct event_loop *loop, struct loop_watch *w, int fd, loop_callback fn,
                        void *opaque)
{
    *w = (struct loop_watch){ .fn = fn, .opaque = opaque, .fd = fd };
    return loop_arm_poll(loop, w);
}

int loop_watch_eventfd(struct event_loop *loop, struct loop_watch *w, int fd, loop_callback fn,
                       void *opaque)
{
    *w = (struct loop_watch){ .fn = fn, .opaque = opaque, .fd = fd, .reads = true };
    return loop_arm_poll(loop, w);
}

void loop_unwatch(struct event_loop *loop, struct loop_watch *w)
{
    w->cancelled = true;
    if (!w->armed)
        return;
    /* A cancel, not a poll removal: it finds a read or a timer as well as a poll (a timer
     * left pending fired into its watch after the watch had been armed again). */
    struct io_uring_sqe *sqe = loop_get_sqe(loop);
    if (sqe) {
        io_uring_prep_cancel64(sqe, (__u64)(uintptr_t)w, 0);
        io_uring_sqe_set_data(sqe, NULL);
    }
}

int loop_after(struct event_loop *loop, struct loop_watch *w, unsigned ms, loop_callback fn,
               void *opaque)
{
    struct io_uring_sqe *sqe = loop_get_sqe(loop);
    if (!sqe)
        return -EBUSY;
    *w = (struct loop_watch){ .fn = fn, .opaque = opaque, .fd = -1, .oneshot = true, .armed = true };
    /* The timespec is read when the SQE is submitted, with the turn's other SQEs (callbacks
     * run inside a turn, so that is at once): it lives in the watch until then. */
    w->ts = (struct __kernel_timespec){ .tv_sec = ms / 1000,
                                        .tv_nsec = (long long)(ms % 1000) * 1000000 };
    io_uring_prep_timeout(sqe, &w->ts, 0, 0);
    io_uring_sqe_set_data(sqe, w);
    return 0;
}

static void owner_put(struct loop_watch *w);

static void loop_dispatch(struct event_loop *loop, struct loop_watch *w, int res)
{
    if (w && w->owner) {
        /* Owned I/O: counted off first, so a waiter on another thread sees the kernel done
         * with it even while the callback waits for a lock. */
        owner_put(w);
        w->armed = false;
        w->fn(loop, w->opaque, res);
        return; /* the callback may have freed or reused w */
    }
    /* A cancelled poll's completion: its watch may already be armed again, or be gone. */
    if (!w || res == -ECANCELED)
        return;
    w->armed = false;
    if (w->cancelled)
        return;
    if (w->oneshot) {
        w->fn(loop, w->opaque, res == -ETIME ? 0 : res);
        return; /* the callback may have freed or reused w */
    }
    if (w->reads && (res == -EINTR || res == -EAGAIN)) {
        loop_arm_poll(loop, w); /* interrupted before it read anything: read again */
        return;
    }
    if (!w->fn(loop, w->opaque, res))
        return; /* w may be freed */
    if (res >= 0 && !w->cancelled && !w->armed)
        loop_arm_poll(loop, w);
}

struct io_uring_sqe *loop_prepare_io(struct event_loop *loop, struct loop_watch *w,
                                     loop_callback fn, void *opaque)
{
    struct io_uring_sqe *sqe = loop_get_sqe(loop);
    if (!sqe)
        return NULL;
    *w = (struct loop_watch){ .fn = fn, .opaque = opaque, .fd = -1, .oneshot = true, .armed = true };
    io_uring_sqe_set_data(sqe, w);
    return sqe;
}

/* Whether `w`'s completion is one a loop_unwatch_sync() waits for: then it is not
 * dispatched. */
static bool loop_sync_seen(struct event_loop *loop, const struct loop_watch *w)
{
    for (struct loop_sync *s = loop->syncs; w && s; s = s->next) {
        if (s->watch == w) {
            s->seen = true;
            return true;
        }
    }
    return false;
}

void loop_at_turn_end(struct event_loop *loop, struct loop_tail *t, void (*fn)(void *opaque),
                      void *opaque)
{
    if (t->queued)
        return;
    *t = (struct loop_tail){ .fn = fn, .opaque = opaque, .queued = true };
    if (loop->tails_tail)
        loop->tails_tail->next = t;
    else
        loop->tails = t;
    loop->tails_tail = t;
}

void loop_cancel_turn_end(struct event_loop *loop, struct loop_tail *t)
{
    struct loop_tail **p = &loop->tails, *prev = NULL;
    while (*p && *p != t) {
        prev = *p;
        p = &(*p)->next;
    }
    if (*p) {
        *p = t->next;
        if (loop->tails_tail == t)
            loop->tails_tail = prev;
        t->queued = false;
    }
}

/* Taken one at a time: one may queue another, or turn the loop (which runs the rest). */
static void loop_run_tails(struct event_loop *loop)
{
    struct loop_tail *t;
    while ((t = loop->tails)) {
        loop->tails = t->next;
        if (!loop->tails)
            loop->tails_tail = NULL;
        t->queued = false;
        t->fn(t->opaque);
    }
}

void loop_set_poll(struct event_loop *loop, uint64_t max_ns)
{
    __atomic_store_n(&loop->poll_max_ns, max_ns, __ATOMIC_RELAXED);
    __atomic_store_n(&loop->poll_ns, max_ns, __ATOMIC_RELAXED);
}

void loop_poll_stats(const struct event_loop *loop, struct loop_poll_stats *stats)
{
    *stats = (struct loop_poll_stats){
        .window_ns = __atomic_load_n(&loop->poll_ns, __ATOMIC_RELAXED),
        .max_ns = __atomic_load_n(&loop->poll_max_ns, __ATOMIC_RELAXED),
        .hits = __atomic_load_n(&loop->polls_hit, __ATOMIC_RELAXED),
        .misses = __atomic_load_n(&loop->polls_missed, __ATOMIC_RELAXED),
    };
}

/* Single writer (the loop's thread): a plain add, stored so that readers see it whole. */
static void count(uint64_t *counter)
{
    __atomic_store_n(counter, *counter + 1, __ATOMIC_RELAXED);
}

void loop_add_poller(struct event_loop *loop, struct loop_poller *p, bool (*poll)(void *),
                     bool (*end)(void *), void *opaque)
{
    if (p->added)
        return;
    *p = (struct loop_poller){ .poll = poll, .end = end, .opaque = opaque, .added = true };
    list_push(&loop->pollers, &p->link);
}

void loop_remove_poller(struct event_loop *loop, struct loop_poller *p)
{
    if (!p->added)
        return;
    list_unlink(&loop->pollers, &p->link);
    p->added = false;
}

/* Each poller once; true when one did work. A poller may remove itself (its device reset). */
static bool loop_poll_all(struct event_loop *loop, bool end)
{
    bool work = false;
    for (struct list_link *link = loop->pollers.first, *next; link; link = next) {
        next = link->next;
        struct loop_poller *p = list_entry(link, struct loop_poller, link);
        work |= end ? p->end(p->opaque) : p->poll(p->opaque);
    }
    return work;
}

static bool loop_completions_ready(struct event_loop *loop)
{
    io_uring_get_events(&loop->ring);
    return io_uring_cq_ready(&loop->ring) > 0;
}

/*
 * Looks at the pollers and at the ring's completions until one has something (a hit) or the
 * window has passed; then, before the loop waits, turns the pollers' notifications back on.
 * Returns true when the turn should not wait. Completions are brought in with a GETEVENTS
 * enter that does not block: under DEFER_TASKRUN the kernel posts them only then.
 */
static bool loop_poll(struct event_loop *loop, uint64_t start, bool *hit)
{
    if (!loop->poll_ns)
        return false; /* closed after a miss, so the pollers' notifications are on */
    io_uring_submit(&loop->ring); /* what the turn prepared starts now, not after the window */
    uint64_t deadline = start + loop->poll_ns;
    do {
        if (loop_poll_all(loop, false) || loop_completions_ready(loop)) {
            *hit = true;
            count(&loop->polls_hit);
            return true;
        }
    } while (monotonic_ns() < deadline);
    count(&loop->polls_missed);
    return loop_poll_all(loop, true);
}

/* Where a closed window opens again, and below which a shrinking one closes. */
#define LOOP_POLL_MIN_NS 4000u

/*
 * After a miss, fits the window to how long the loop had to wait for work (polling and
 * blocking together), the idea of QEMU's adaptive poll-max-ns: a wait the cap would have
 * covered doubles the window (or opens it), since the next is likely as short; one past the
 * cap halves it, since spinning for work that comes that late only burns a CPU. A hit leaves
 * it, and only a miss may close it: the pollers' notifications are then back on.
 */
static void loop_poll_adapt(struct event_loop *loop, uint64_t waited_ns)
{
    uint64_t ns = loop->poll_ns;
    if (waited_ns <= ns)
        return;
    if (waited_ns > loop->poll_max_ns)
        ns = ns / 2 < LOOP_POLL_MIN_NS ? 0 : ns / 2;
    else
        ns = ns ? ns * 2 : LOOP_POLL_MIN_NS;
    __atomic_store_n(&loop->poll_ns, ns < loop->poll_max_ns ? ns : loop->poll_max_ns,
                     __ATOMIC_RELAXED);
}

/*
 * One turn. Each completion is taken off the ring before its callback runs, since a callback
 * may turn the loop itself (a device draining its I/O) and must not meet it again; only those
 * ready at the start are taken, so a busy fd cannot keep one turn going.
 */
static int loop_turn(struct event_loop *loop)
{
    int ret = loop_enable(loop);
    if (ret < 0)
        return ret;
    loop_run_tails(loop); /* queued outside a turn: not left waiting for a completion */
    /* Only a turn that has to wait for work polls, and measures the wait to fit its window. */
    bool polling =
        loop->poll_max_ns && !list_empty(&loop->pollers) && !io_uring_cq_ready(&loop->ring);
    uint64_t start = polling ? monotonic_ns() : 0;
    bool hit = false;
    bool busy = polling && loop_poll(loop, start, &hit);
    /* Everything prepared since the last turn goes in this one call, with the wait. The
     * kernel may end a wait with nothing posted (seen under DEFER_TASKRUN, once in about 50
     * runs of test_loop): wait again, so that a turn that waits ends with work and the poll
     * window measures work's arrival, not a wake-up. A signal (-EINTR) still ends the turn. */
    do
        ret = io_uring_submit_and_wait(&loop->ring, busy ? 0 : 1);
    while (!busy && ret >= 0 && io_uring_cq_ready(&loop->ring) == 0);
    if (ret < 0 && ret != -EINTR) {
        log_error("io_uring: wait failed: %s", strerror(-ret));
        return ret;
    }
    if (polling && !hit)
        loop_poll_adapt(loop, monotonic_ns() - start);
    for (unsigned n = io_uring_cq_ready(&loop->ring); n > 0; n--) {
        struct io_uring_cqe *cqe;
        if (io_uring_peek_cqe(&loop->ring, &cqe) != 0)
            break; /* a nested turn took the rest */
        struct loop_watch *w = io_uring_cqe_get_data(cqe);
        int res = cqe->res;
        io_uring_cqe_seen(&loop->ring, cqe);
        if (!loop_sync_seen(loop, w))
            loop_dispatch(loop, w, res);
    }
    loop_run_tails(loop);
    return 0;
}

int loop_run(struct event_loop *loop)
{
    __atomic_store_n(&loop->thread, pthread_self(), __ATOMIC_RELAXED);
    while (!loop->stop) {
        int ret = loop_turn(loop);
        if (ret < 0)
            return ret;
    }
    return 0;
}

int loop_run_once(struct event_loop *loop)
{
    return loop_turn(loop);
}

/* A poll produces exactly one completion, cancelled or not: once it is in, the kernel holds
 * no reference to the watch. Nested calls (from a callback run by a turn here) each wait for
 * their own watch, whichever turn takes its completion. */
void loop_unwatch_sync(struct event_loop *loop, struct loop_watch *w)
{
    struct loop_sync sync = { .watch = w, .seen = !w->armed, .next = loop->syncs };
    loop_unwatch(loop, w);
    loop->syncs = &sync;
    while (!sync.seen && loop_turn(loop) == 0)
        ;
    struct loop_sync **p = &loop->syncs;
    while (*p != &sync)
        p = &(*p)->next;
    *p = sync.next;
    w->armed = false;
}

bool loop_on_thread(const struct event_loop *loop)
{
    return pthread_equal(__atomic_load_n(&loop->thread, __ATOMIC_RELAXED), pthread_self());
}

/* ---- owned I/O ---- */

void loop_owner_init(struct loop_owner *o)
{
    *o = (struct loop_owner){ 0 };
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC); /* a timeout the wall clock can't move */
    pthread_mutex_init(&o->lock, NULL);
    pthread_cond_init(&o->idle, &attr);
    pthread_condattr_destroy(&attr);
}

void loop_owner_destroy(struct loop_owner *o)
{
    pthread_cond_destroy(&o->idle);
    pthread_mutex_destroy(&o->lock);
}

unsigned loop_owner_in_flight(const struct loop_owner *o)
{
    return __atomic_load_n(&o->count, __ATOMIC_SEQ_CST);
}

struct io_uring_sqe *loop_owner_prepare(struct event_loop *loop, struct loop_owner *o,
                                        struct loop_watch *w, loop_callback fn, void *opaque)
{
    struct io_uring_sqe *sqe = loop_prepare_io(loop, w, fn, opaque);
    if (!sqe)
        return NULL;
    w->owner = o;
    list_push(&o->in_flight, &w->owner_link);
    __atomic_add_fetch(&o->count, 1, __ATOMIC_SEQ_CST);
    return sqe;
}

bool loop_owner_defer(struct event_loop *loop, struct loop_owner *o, struct loop_watch *w,
                      bool *pending, loop_callback fn, void *opaque)
{
    if (*pending)
        return true;
    struct io_uring_sqe *sqe = loop_owner_prepare(loop, o, w, fn, opaque);
    if (!sqe)
        return false;
    io_uring_prep_nop(sqe);
    *pending = true;
    return true;
}

/* The count drops, then the waiters are looked for: a waiter announces itself, then reads the
 * count, so one of the two sees the other (both sequentially consistent). */
static void owner_put(struct loop_watch *w)
{
    struct loop_owner *o = w->owner;
    list_unlink(&o->in_flight, &w->owner_link);
    w->owner = NULL;
    if (__atomic_sub_fetch(&o->count, 1, __ATOMIC_SEQ_CST) == 0 &&
        __atomic_load_n(&o->waiters, __ATOMIC_SEQ_CST)) {
        pthread_mutex_lock(&o->lock);
        pthread_cond_broadcast(&o->idle);
        pthread_mutex_unlock(&o->lock);
    }
}

/* Cancellations carry no watch: their own completions are dropped by loop_dispatch(). */
int loop_owner_cancel(struct event_loop *loop, struct loop_owner *o)
{
    for (struct list_link *link = o->in_flight.first; link; link = link->next) {
        struct loop_watch *w = list_entry(link, struct loop_watch, owner_link);
        struct io_uring_sqe *sqe = loop_get_sqe(loop);
        if (!sqe) {
            log_warn("io_uring: ring full, cannot cancel a device's I/O");
            return -EBUSY;
        }
        io_uring_prep_cancel64(sqe, (__u64)(uintptr_t)w, 0);
        io_uring_sqe_set_data(sqe, NULL);
    }
    loop_submit(loop);
    return 0;
}

int loop_owner_drain(struct event_loop *loop, struct loop_owner *o)
{
    while (loop_owner_in_flight(o)) {
        int ret = loop_turn(loop);
        if (ret < 0)
            return ret;
    }
    return 0;
}

static int owner_wait_idle(struct loop_owner *o, unsigned timeout_ms)
{
    struct timespec until;
    clock_gettime(CLOCK_MONOTONIC, &until);
    until.tv_sec += timeout_ms / 1000;
    until.tv_nsec += (long)(timeout_ms % 1000) * 1000000;
    if (until.tv_nsec >= 1000000000) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000;
    }
    int ret = 0;
    pthread_mutex_lock(&o->lock);
    __atomic_add_fetch(&o->waiters, 1, __ATOMIC_SEQ_CST);
    while (loop_owner_in_flight(o) && ret == 0)
        ret = pthread_cond_timedwait(&o->idle, &o->lock, &until);
    __atomic_sub_fetch(&o->waiters, 1, __ATOMIC_SEQ_CST);
    pthread_mutex_unlock(&o->lock);
    return loop_owner_in_flight(o) ? -ETIMEDOUT : 0;
}

int loop_owner_wait(struct event_loop *loop, struct loop_owner *o, pthread_mutex_t *held,
                    unsigned timeout_ms)
{
    if (loop_on_thread(loop))
        return loop_owner_drain(loop, o);
    if (!loop_owner_in_flight(o))
        return 0;
    if (held)
        pthread_mutex_unlock(held);
    int ret = owner_wait_idle(o, timeout_ms);
    if (held)
        pthread_mutex_lock(held);
    return ret;
}
