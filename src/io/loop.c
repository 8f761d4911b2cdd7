/* loop.c: an io_uring event loop: polls and timeouts dispatched to callbacks. */
#include "io/loop.h"

#include <errno.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>
#include <stdint.h>
#include <string.h>

#include "log.h"

static bool loop_run_posted(struct event_loop *loop, void *opaque, int res);

int loop_init(struct event_loop *loop, unsigned entries)
{
    memset(loop, 0, sizeof(*loop));
    loop->calls_fd = -1;
    int ret = io_uring_queue_init(entries, &loop->ring, 0);
    if (ret < 0) {
        log_error("io_uring: cannot set up a ring: %s", strerror(-ret));
        return ret;
    }
    pthread_mutex_init(&loop->calls_lock, NULL);
    loop->calls_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (loop->calls_fd < 0 ||
        (ret = loop_watch_readable(loop, &loop->calls_watch, loop->calls_fd, loop_run_posted,
                                   NULL)) < 0) {
        ret = loop->calls_fd < 0 ? -errno : ret;
        loop_destroy(loop);
        return ret;
    }
    return 0;
}

void loop_destroy(struct event_loop *loop)
{
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
    if (write(loop->calls_fd, &one, sizeof(one)) < 0 && errno != EAGAIN)
        log_warn("loop: cannot wake the loop: %s", strerror(errno));
}

/* The calls are taken one at a time, so that one may post another (or free itself). */
static bool loop_run_posted(struct event_loop *loop, void *opaque, int res)
{
    uint64_t count;
    (void)opaque, (void)res;
    if (read(loop->calls_fd, &count, sizeof(count)) < 0 && errno != EAGAIN)
        log_warn("loop: reading the wake-up event failed: %s", strerror(errno));
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
        io_uring_submit(&loop->ring);
        sqe = io_uring_get_sqe(&loop->ring);
    }
    return sqe;
}

static int loop_arm_poll(struct event_loop *loop, struct loop_watch *w)
{
    struct io_uring_sqe *sqe = loop_get_sqe(loop);
    if (!sqe)
        return -EBUSY;
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

void loop_unwatch(struct event_loop *loop, struct loop_watch *w)
{
    w->cancelled = true;
    if (!w->armed)
        return;
    struct io_uring_sqe *sqe = loop_get_sqe(loop);
    if (sqe) {
        io_uring_prep_poll_remove(sqe, (__u64)(uintptr_t)w);
        io_uring_sqe_set_data(sqe, NULL);
    }
}

int loop_after(struct event_loop *loop, struct loop_watch *w, unsigned ms, loop_callback fn,
               void *opaque)
{
    /* The timespec is read at submission time, so a stack copy is fine. */
    struct __kernel_timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (long long)(ms % 1000) * 1000000 };
    struct io_uring_sqe *sqe = loop_get_sqe(loop);
    if (!sqe)
        return -EBUSY;
    *w = (struct loop_watch){ .fn = fn, .opaque = opaque, .fd = -1, .oneshot = true, .armed = true };
    io_uring_prep_timeout(sqe, &ts, 0, 0);
    io_uring_sqe_set_data(sqe, w);
    return io_uring_submit(&loop->ring) < 0 ? -EIO : 0;
}

static void loop_dispatch(struct event_loop *loop, struct io_uring_cqe *cqe)
{
    struct loop_watch *w = io_uring_cqe_get_data(cqe);
    int res = cqe->res;

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

/* One turn. `until`, when not NULL, is a watch whose last completion is awaited: that
 * completion is consumed here, not dispatched, and *seen is set. */
static int loop_turn(struct event_loop *loop, const struct loop_watch *until, bool *seen)
{
    struct io_uring_cqe *cqe;
    int ret = io_uring_submit_and_wait(&loop->ring, 1);
    if (ret < 0 && ret != -EINTR) {
        log_error("io_uring: wait failed: %s", strerror(-ret));
        return ret;
    }
    unsigned head, count = 0;
    io_uring_for_each_cqe(&loop->ring, head, cqe) {
        if (until && io_uring_cqe_get_data(cqe) == until)
            *seen = true;
        else
            loop_dispatch(loop, cqe);
        count++;
    }
    io_uring_cq_advance(&loop->ring, count);
    return 0;
}

int loop_run(struct event_loop *loop)
{
    while (!loop->stop) {
        int ret = loop_turn(loop, NULL, NULL);
        if (ret < 0)
            return ret;
    }
    return 0;
}

int loop_run_once(struct event_loop *loop)
{
    return loop_turn(loop, NULL, NULL);
}

/* A poll produces exactly one completion, cancelled or not: once it is in, the kernel holds
 * no reference to the watch. */
void loop_unwatch_sync(struct event_loop *loop, struct loop_watch *w)
{
    bool was_armed = w->armed;
    loop_unwatch(loop, w);
    bool seen = !was_armed;
    while (!seen && loop_turn(loop, w, &seen) == 0)
        ;
    w->armed = false;
}
