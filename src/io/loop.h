/* loop.h: the main thread's event loop, on io_uring. */
#ifndef GODWIT_LOOP_H
#define GODWIT_LOOP_H

#include <liburing.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/uio.h>

#include "list.h"

struct event_loop;
struct loop_owner;

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
    bool reads;                           /* an eventfd watch: `value` is read, not polled */
    uint64_t value;                       /* what the read took (loop_watch_eventfd) */
    struct loop_owner *owner;             /* owned I/O (loop_owner_prepare), else NULL */
    struct list_link owner_link;          /* in owner->in_flight */
    struct __kernel_timespec ts;          /* a timer's: read when the SQE is submitted */
};

/*
 * The io_uring work one device has in flight (embed it in the device). Every SQE prepared
 * through loop_owner_prepare() is counted until its completion is taken, so the device can
 * cancel all of it, wait for all of it, and know that the kernel holds none of its buffers
 * (guest memory, its own) once the count is 0. An owned watch's callback runs exactly once
 * per SQE, with whatever the kernel answered, -ECANCELED included: the device frees or
 * resets its operation there.
 */
struct loop_owner {
    struct list in_flight; /* of loop_watch (owner_link); the loop's thread only */
    unsigned count;               /* atomic: loop_owner_wait() reads it from other threads */
    unsigned waiters;             /* atomic: threads in loop_owner_wait() */
    pthread_mutex_t lock;         /* with `idle`: wakes them when the count reaches 0 */
    pthread_cond_t idle;
};

/* One loop_unwatch_sync() waiting (on its stack). */
struct loop_sync {
    const struct loop_watch *watch;
    bool seen;
    struct loop_sync *next;
};

/* A call handed to the loop's thread by another thread (loop_post). */
struct loop_call {
    void (*fn)(void *opaque);
    void *opaque;
    struct loop_call *next;
    bool queued;
};

/* Work for the end of the loop's current turn (loop_at_turn_end), on its thread. */
struct loop_tail {
    void (*fn)(void *opaque);
    void *opaque;
    struct loop_tail *next;
    bool queued;
};

/*
 * Something the loop polls between its waits (loop_set_poll), a virtqueue mostly: poll()
 * looks once and does what it finds; end() is called before the loop waits, to turn the
 * notifications that polling made needless back on, and takes what came meanwhile. Each
 * returns true when it did work (progress, not merely something waiting).
 */
struct loop_poller {
    bool (*poll)(void *opaque);
    bool (*end)(void *opaque);
    void *opaque;
    struct list_link link; /* in loop->pollers */
    bool added;
};

/* Registered files: a sparse table of this many slots, made at loop_init. */
#define LOOP_FIXED_FILES 64
/* Guest RAM is registered in pieces of this size, each the first time I/O uses it. */
#define LOOP_BUF_CHUNK (2ull << 20)
/* The most pieces (the kernel's own limit is 16384): 32 GiB of RAM. */
#define LOOP_MAX_BUFS 16384u
#define LOOP_MAX_BUF_AREAS 4

/* One area of memory whose pieces may become registered buffers (a guest RAM region). */
struct loop_buf_area {
    uint8_t *base;
    uint64_t size;
    int *slots; /* per LOOP_BUF_CHUNK piece: its buffer index, or -1 until registered */
};

struct event_loop {
    struct io_uring ring; /* only the loop's thread touches it */
    /* Registered files: whether the sparse table exists, and which of its slots are used. */
    bool files_registered;
    uint64_t files_used;
    /* Registered buffers (loop_buffers_enable): the areas, the next free buffer index, and
     * whether registering still works (the first refusal, RLIMIT_MEMLOCK mostly, ends it). */
    struct loop_buf_area buf_areas[LOOP_MAX_BUF_AREAS];
    unsigned nr_buf_areas, bufs_used;
    bool bufs_enabled;
    /* IORING_SETUP_* flags the ring was made with (loop_ring_init). With SINGLE_ISSUER the
     * ring starts disabled and the first turn enables it, so that the loop's own thread,
     * not loop_init's, is its one submitter: until then SQEs are only prepared. */
    unsigned setup_flags;
    bool enabled;
    bool stop;
    pthread_t thread;     /* atomic: the thread that runs it (loop_init's until loop_run) */
    /* loop_unwatch_sync() calls under way (nested ones too): the watches whose last
     * completion is awaited, taken by whichever turn sees it. */
    struct loop_sync *syncs;
    /* Calls posted from other threads, run on the loop's thread in order. */
    pthread_mutex_t calls_lock;
    struct loop_call *calls, *calls_tail;
    int calls_fd; /* eventfd: wakes the loop when a call is posted */
    struct loop_watch calls_watch;
    struct loop_tail *tails, *tails_tail; /* the loop's thread only */
    /* Polling (loop_set_poll): how long to look before waiting, and at what. The window
     * (poll_ns) moves between 0 and poll_max_ns; the loop's thread writes it and the counts,
     * others may read them (loop_poll_stats). */
    uint64_t poll_max_ns, poll_ns;
    struct list pollers; /* of loop_poller; the loop's thread only */
    uint64_t polls_hit, polls_missed; /* windows that found work, and that timed out */
};

int loop_init(struct event_loop *loop, unsigned entries);

/*
 * Makes a ring with the best setup the kernel accepts for one thread that both submits and
 * reaps: SINGLE_ISSUER with DEFER_TASKRUN (6.1), else SINGLE_ISSUER with COOP_TASKRUN (6.0),
 * else COOP_TASKRUN (5.19), else none. With SINGLE_ISSUER the ring is made disabled
 * (io_uring_enable_rings() on the submitting thread). *flags gets the flags in use.
 */
int loop_ring_init(struct io_uring *ring, unsigned entries, unsigned *flags);

/* Names the setup flags that matter ("SINGLE_ISSUER, DEFER_TASKRUN"; "none"). */
void loop_describe_setup(unsigned flags, char *buf, size_t size);

/*
 * Registered files, so that an SQE need not look its fd up (and take a reference) each
 * time: returns the slot for `fd`, or -1 when there is no table or no room (the caller keeps
 * using the fd itself). The slot holds its own reference to the file: unregister before the
 * fd is closed, once no I/O uses the slot. On the loop's thread (or before its first turn).
 */
int loop_register_file(struct event_loop *loop, int fd);
void loop_unregister_file(struct event_loop *loop, int slot);

/* After io_uring_prep_*(sqe, fd, ...): names the file by its slot instead, when it has one. */
static inline void loop_sqe_file(struct io_uring_sqe *sqe, int slot)
{
    if (slot >= 0) {
        sqe->fd = slot;
        sqe->flags |= IOSQE_FIXED_FILE;
    }
}

/*
 * Registered buffers over memory the kernel may pin for as long as the loop wants (guest
 * RAM: mapped once, never moved or hole-punched while the VM lives): `areas` are split in
 * LOOP_BUF_CHUNK pieces, each registered the first time loop_fixed_buffer() is asked for it,
 * so only memory that I/O touches gets pinned. Returns 0, or -errno (then none is used).
 * loop_buffers_disable() unregisters them all: before that memory is unmapped.
 */
int loop_buffers_enable(struct event_loop *loop, const struct iovec *areas, unsigned n);
void loop_buffers_disable(struct event_loop *loop);

/* The buffer index for I/O on [p, p + len) with io_uring_prep_{read,write}_fixed(), or -1
 * (not in one registered piece: use readv/writev). On the loop's thread. */
int loop_fixed_buffer(struct event_loop *loop, const void *p, size_t len);

/* Makes the calling thread the ring's one submitter, once (the first turn does it: call it
 * only to submit before any turn, as unit tests do). Returns 0 or -errno. */
int loop_enable(struct event_loop *loop);

/* Hands the prepared SQEs to the kernel now (not before the ring is enabled). On the loop's
 * thread. Returns what io_uring_submit() does, 0 while not enabled. */
int loop_submit(struct event_loop *loop);
void loop_destroy(struct event_loop *loop);

/* Calls fn whenever fd is readable, for as long as fn returns true. */
int loop_watch_readable(struct event_loop *loop, struct loop_watch *w, int fd, loop_callback fn,
                        void *opaque);
/*
 * Calls fn whenever the eventfd `fd` is signalled, with w->value holding the count read and
 * res its size, for as long as fn returns true. The read goes through the ring (no poll, no
 * read() of our own per signal), so `fd` must not be O_NONBLOCK: io_uring would answer
 * -EAGAIN instead of waiting. A signal from another thread still costs that thread a write().
 */
int loop_watch_eventfd(struct event_loop *loop, struct loop_watch *w, int fd, loop_callback fn,
                       void *opaque);
/* Stops calling w's callback from outside it (its poll, read or timer is cancelled; a
 * completion already queued is dropped). Inside its own callback, return false instead. */
void loop_unwatch(struct event_loop *loop, struct loop_watch *w);
/* loop_unwatch(), then waits (running the loop's other work meanwhile) until the kernel has
 * let go of the watch, so that its memory may be freed. On the loop's thread only. */
void loop_unwatch_sync(struct event_loop *loop, struct loop_watch *w);
/* Calls fn once after `ms` milliseconds. `w` must stay valid until then. */
int loop_after(struct event_loop *loop, struct loop_watch *w, unsigned ms, loop_callback fn,
               void *opaque);

/*
 * For I/O: an SQE whose completion calls fn(loop, opaque, cqe->res) once (on the loop's
 * thread), unless it is -ECANCELED; the caller preps it (io_uring_prep_readv, ..._writev,
 * ..._fsync) and must keep `w` valid until then. Submitted with the loop's next turn. NULL if
 * the ring is full. Devices use loop_owner_prepare() instead, which they can drain.
 */
struct io_uring_sqe *loop_prepare_io(struct event_loop *loop, struct loop_watch *w,
                                     loop_callback fn, void *opaque);

/* Whether the caller runs on the loop's thread. */
bool loop_on_thread(const struct event_loop *loop);

void loop_owner_init(struct loop_owner *o);
/* Once nothing is in flight (loop_owner_in_flight() is 0). */
void loop_owner_destroy(struct loop_owner *o);

/* loop_prepare_io(), counted against `o` until fn has been called. NULL if the ring is full. */
struct io_uring_sqe *loop_owner_prepare(struct event_loop *loop, struct loop_owner *o,
                                        struct loop_watch *w, loop_callback fn, void *opaque);

/*
 * A continuation for a handler that spent its budget: fn(loop, opaque, 0) runs on a later
 * turn, after the completions ready now (a no-op through the ring, counted against `o`, so
 * quiesce and destroy wait for it). At most one at a time: *pending is set until fn, which
 * clears it, has run. Returns false when no SQE is free (the caller goes on at once).
 */
bool loop_owner_defer(struct event_loop *loop, struct loop_owner *o, struct loop_watch *w,
                      bool *pending, loop_callback fn, void *opaque);

/* SQEs prepared through `o` whose completion has not been taken yet. Any thread. */
unsigned loop_owner_in_flight(const struct loop_owner *o);

/*
 * Asks the kernel to cancel everything `o` has in flight, prepared SQEs not yet submitted
 * included (they go to the kernel first); the requests go at once. Reads and polls that
 * would wait for ever end with -ECANCELED (or -EINTR); what completed first keeps its result.
 * New I/O prepared after this is not cancelled: stop preparing before. On the loop's thread.
 * Returns 0, or -EBUSY when the ring was full (some may not have been asked).
 */
int loop_owner_cancel(struct event_loop *loop, struct loop_owner *o);

/*
 * Runs the loop (loop_run_once(), so other devices' completions are dispatched too, nested
 * inside the caller) until `o` has nothing in flight. Callbacks that prepare more I/O for
 * `o` prolong it. On the loop's thread. Returns 0, or -errno if io_uring fails.
 */
int loop_owner_drain(struct event_loop *loop, struct loop_owner *o);

/*
 * Waits until `o` has nothing in flight, from any thread. On the loop's thread it is
 * loop_owner_drain(). Elsewhere the loop's thread takes the completions: `held`, a mutex
 * the caller holds once that those callbacks take (a device's lock), is let go meanwhile
 * and taken again before returning. Returns 0, -ETIMEDOUT after timeout_ms, or -errno.
 */
int loop_owner_wait(struct event_loop *loop, struct loop_owner *o, pthread_mutex_t *held,
                    unsigned timeout_ms);

/*
 * From any thread: runs fn(opaque) on the loop's thread soon. For work that must touch the
 * ring (submit I/O, watch an fd) but starts on a vCPU thread, such as a device's activation.
 * `c` must stay valid until the call has run; posting a call already queued does nothing.
 */
void loop_post(struct event_loop *loop, struct loop_call *c, void (*fn)(void *opaque),
               void *opaque);

/* Drops a posted call that has not run yet (its owner is going away). Any thread. */
void loop_cancel_post(struct event_loop *loop, struct loop_call *c);

/*
 * Runs fn(opaque) on the loop's thread once the completions of the current turn have all
 * been dispatched (or before the next wait, when called outside a turn): for work that one
 * turn's completions share, like the interrupt each of a device's queues raises. Queueing
 * it again before it ran does nothing. The loop's thread only.
 */
/*
 * Polling: before each wait, the loop looks at its pollers (and at completions) for up to a
 * window, and waits only if none had work in it. The window starts at max_ns and follows the
 * waits it is meant to cover: it grows (up to max_ns) while work comes a little after it
 * closes, and shrinks (down to none) while work comes later than max_ns, so that an idle
 * loop spins no more. 0 (the default) never polls. Costs a CPU while a window lasts, and
 * saves the guest its kicks (exits) and the loop its wake-ups while I/O keeps coming.
 */
void loop_set_poll(struct event_loop *loop, uint64_t max_ns);
struct loop_poll_stats {
    uint64_t window_ns, max_ns; /* the window now, and its cap */
    uint64_t hits, misses;      /* windows that found work, and that ended in a wait */
};
/* Any thread: a snapshot for counters (each field read atomically, not all at one instant). */
void loop_poll_stats(const struct event_loop *loop, struct loop_poll_stats *stats);
/* Adds or removes a poller; the loop's thread only (or before the loop runs). */
void loop_add_poller(struct event_loop *loop, struct loop_poller *p, bool (*poll)(void *),
                     bool (*end)(void *), void *opaque);
void loop_remove_poller(struct event_loop *loop, struct loop_poller *p);

void loop_at_turn_end(struct event_loop *loop, struct loop_tail *t, void (*fn)(void *opaque),
                      void *opaque);
/* Drops it if queued (its owner is going away). The loop's thread only. */
void loop_cancel_turn_end(struct event_loop *loop, struct loop_tail *t);

/* Runs until loop->stop is set. Returns 0, or -errno if io_uring fails. */
int loop_run(struct event_loop *loop);
/* One turn: submits what was prepared, waits for a completion, dispatches all there are.
 * For owners that must wait for their own I/O to finish before they go. A callback may
 * call it again (each completion is taken before its callback runs). */
int loop_run_once(struct event_loop *loop);

#endif
