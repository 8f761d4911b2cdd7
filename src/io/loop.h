/* loop.h: the main thread's event loop, on io_uring. */
#ifndef GODWIT_LOOP_H
#define GODWIT_LOOP_H

#include <liburing.h>
#include <stdbool.h>

struct event_loop;

/* Called on the loop's thread with the completion's result (poll mask, or -errno). */
typedef void (*loop_callback)(struct event_loop *loop, void *opaque, int res);

/* One registration; lives as long as it is armed (embed it in the owner's struct). */
struct loop_watch {
    loop_callback fn;
    void *opaque;
    int fd;
    bool armed;
    bool oneshot;
    bool cancelled;
};

struct event_loop {
    struct io_uring ring;
    bool stop;
};

int loop_init(struct event_loop *loop, unsigned entries);
void loop_destroy(struct event_loop *loop);

/* Calls fn whenever fd is readable (level-triggered: re-polled after each callback). */
int loop_watch_readable(struct event_loop *loop, struct loop_watch *w, int fd, loop_callback fn,
                        void *opaque);
/* Stops calling w's callback (its poll is cancelled; a completion already queued is dropped). */
void loop_unwatch(struct event_loop *loop, struct loop_watch *w);
/* Calls fn once after `ms` milliseconds. `w` must stay valid until then. */
int loop_after(struct event_loop *loop, struct loop_watch *w, unsigned ms, loop_callback fn,
               void *opaque);

/* Runs until loop->stop is set. Returns 0, or -errno if io_uring fails. */
int loop_run(struct event_loop *loop);

#endif
