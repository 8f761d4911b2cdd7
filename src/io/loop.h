/* loop.h: the main thread's event loop, on io_uring. */
#ifndef GODWIT_LOOP_H
#define GODWIT_LOOP_H

#include <liburing.h>
#include <pthread.h>
#include <stdbool.h>

struct event_loop;

/*
 * Called on the loop's thread with the completion's result (poll mask, or -errno). A poll
 * callback returns true to keep watching (level-triggered: the fd is polled again at once)
 * or false to stop, after which it may free the watch; a timer's return value is ignored.
 */
typedef bool (*loop_callback)(struct event_loop *loop, void *opaque, int res);

/* One registration; its memory must stay valid while it is armed (embed it in the owner). */
struct loop_watch {
    loop_callback fn;
    void *opaque;
    int fd;
    bool armed;
    bool oneshot;
    bool cancelled;
};

/* A call handed to the loop's thread by another thread (loop_post). */
struct loop_call {
    void (*fn)(void *opaque);
    void *opaque;
    struct loop_call *next;
    bool queued;
};

struct event_loop {
    struct io_uring ring; /* only the loop's thread touches it */
    bool stop;
    /* Calls posted from other threads, run on the loop's thread in order. */
    pthread_mutex_t calls_lock;
    struct loop_call *calls, *calls_tail;
    int calls_fd; /* eventfd: wakes the loop when a call is posted */
    struct loop_watch calls_watch;
};

int loop_init(struct event_loop *loop, unsigned entries);
void loop_destroy(struct event_loop *loop);

/* Calls fn whenever fd is readable, for as long as fn returns true. */
int loop_watch_readable(struct event_loop *loop, struct loop_watch *w, int fd, loop_callback fn,
                        void *opaque);
/* Stops calling w's callback from outside it (its poll is cancelled; a completion already
 * queued is dropped). Inside its own callback, return false instead. */
void loop_unwatch(struct event_loop *loop, struct loop_watch *w);
/* loop_unwatch(), then waits (running the loop's other work meanwhile) until the kernel has
 * let go of the watch, so that its memory may be freed. On the loop's thread only. */
void loop_unwatch_sync(struct event_loop *loop, struct loop_watch *w);
/* Calls fn once after `ms` milliseconds. `w` must stay valid until then. */
int loop_after(struct event_loop *loop, struct loop_watch *w, unsigned ms, loop_callback fn,
               void *opaque);

/*
 * For device I/O: an SQE whose completion calls fn(loop, opaque, cqe->res) once (on the
 * loop's thread); the caller preps it (io_uring_prep_readv, ..._writev, ..._fsync) and must
 * keep `w` valid until then. Submitted with the loop's next turn. NULL if the ring is full.
 */
struct io_uring_sqe *loop_prepare_io(struct event_loop *loop, struct loop_watch *w,
                                     loop_callback fn, void *opaque);

/*
 * From any thread: runs fn(opaque) on the loop's thread soon. For work that must touch the
 * ring (submit I/O, watch an fd) but starts on a vCPU thread, such as a device's activation.
 * `c` must stay valid until the call has run; posting a call already queued does nothing.
 */
void loop_post(struct event_loop *loop, struct loop_call *c, void (*fn)(void *opaque),
               void *opaque);

/* Drops a posted call that has not run yet (its owner is going away). Any thread. */
void loop_cancel_post(struct event_loop *loop, struct loop_call *c);

/* Runs until loop->stop is set. Returns 0, or -errno if io_uring fails. */
int loop_run(struct event_loop *loop);
/* One turn: submits what was prepared, waits for a completion, dispatches all there are.
 * For owners that must wait for their own I/O to finish before they go. */
int loop_run_once(struct event_loop *loop);

#endif
