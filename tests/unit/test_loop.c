/* test_loop.c: the io_uring event loop: calls posted from other threads, synchronous unwatch,
 * owned I/O (counted, cancelled, drained, waited for). */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "io/loop.h"

struct posted {
    struct event_loop *loop;
    struct loop_call call;
    pthread_t poster;
    pthread_t ran_on;
    int runs;
};

static void record_call(void *opaque)
{
    struct posted *p = opaque;
    p->ran_on = pthread_self();
    p->runs++;
    p->loop->stop = true;
}

static void *post_from_thread(void *arg)
{
    struct posted *p = arg;
    loop_post(p->loop, &p->call, record_call, p);
    return NULL;
}

/* A call posted by another thread runs once, on the loop's thread, and wakes the loop. */
static void test_post_from_other_thread(void **state)
{
    (void)state;
    struct event_loop loop;
    struct posted p = { .loop = &loop };
    assert_int_equal(loop_init(&loop, 16), 0);
    assert_int_equal(pthread_create(&p.poster, NULL, post_from_thread, &p), 0);
    assert_int_equal(loop_run(&loop), 0);
    pthread_join(p.poster, NULL);
    assert_int_equal(p.runs, 1);
    assert_true(pthread_equal(p.ran_on, pthread_self()));
    loop_destroy(&loop);
}

/* Posting a call that is still queued does not queue it twice; a cancelled one never runs. */
static void test_post_twice_and_cancel(void **state)
{
    (void)state;
    struct event_loop loop;
    struct posted p = { .loop = &loop }, q = { .loop = &loop };
    assert_int_equal(loop_init(&loop, 16), 0);
    loop_post(&loop, &p.call, record_call, &p);
    loop_post(&loop, &p.call, record_call, &p);
    loop_post(&loop, &q.call, record_call, &q);
    loop_cancel_post(&loop, &q.call);
    assert_int_equal(loop_run(&loop), 0);
    assert_int_equal(p.runs, 1);
    assert_int_equal(q.runs, 0);
    loop_destroy(&loop);
}

static bool never_called(struct event_loop *loop, void *opaque, int res)
{
    (void)loop, (void)res;
    (*(int *)opaque)++;
    return true;
}

/* After loop_unwatch_sync the kernel holds no reference: a later event on the fd, and the
 * loop turns after it, never reach the watch (which could be freed). */
static void test_unwatch_sync(void **state)
{
    (void)state;
    struct event_loop loop;
    struct loop_watch w;
    int calls = 0;
    int fd = eventfd(0, EFD_NONBLOCK);
    assert_true(fd >= 0);
    assert_int_equal(loop_init(&loop, 16), 0);
    assert_int_equal(loop_watch_readable(&loop, &w, fd, never_called, &calls), 0);
    loop_unwatch_sync(&loop, &w);
    assert_false(w.armed);
    uint64_t one = 1;
    assert_int_equal(write(fd, &one, sizeof(one)), sizeof(one));
    struct posted p = { .loop = &loop };
    loop_post(&loop, &p.call, record_call, &p); /* a turn with something to do */
    assert_int_equal(loop_run_once(&loop), 0);
    assert_int_equal(calls, 0);
    loop_destroy(&loop);
    close(fd);
}


static int submit_now(struct event_loop *loop);

/* An eventfd watch reads the count through the ring: the callback sees all the signals
 * since the last one summed, and the fd is left at zero (no read of its own). */
struct counted {
    struct loop_watch w;
    int calls;
    uint64_t total;
};

static bool count_signals(struct event_loop *loop, void *opaque, int res)
{
    (void)loop;
    struct counted *c = opaque;
    assert_int_equal(res, sizeof(uint64_t));
    c->calls++;
    c->total += c->w.value;
    return true;
}

static void test_watch_eventfd(void **state)
{
    (void)state;
    struct event_loop loop;
    struct counted c = { 0 };
    int fd = eventfd(0, EFD_CLOEXEC); /* blocking, as loop_watch_eventfd() wants */
    assert_true(fd >= 0);
    assert_int_equal(loop_init(&loop, 16), 0);
    assert_int_equal(loop_watch_eventfd(&loop, &c.w, fd, count_signals, &c), 0);
    uint64_t three = 3, one = 1;
    assert_int_equal(write(fd, &three, sizeof(three)), sizeof(three));
    while (c.calls == 0)
        assert_int_equal(loop_run_once(&loop), 0);
    assert_int_equal(c.calls, 1);
    assert_int_equal(c.total, 3);
    assert_true(c.w.armed); /* read again at once */
    assert_int_equal(write(fd, &one, sizeof(one)), sizeof(one));
    while (c.calls == 1)
        assert_int_equal(loop_run_once(&loop), 0);
    assert_int_equal(c.total, 4);
    loop_unwatch_sync(&loop, &c.w); /* a read in flight is cancelled, and waited for */
    assert_false(c.w.armed);
    assert_int_equal(write(fd, &one, sizeof(one)), sizeof(one));
    struct posted p = { .loop = &loop };
    loop_post(&loop, &p.call, record_call, &p);
    assert_int_equal(loop_run_once(&loop), 0);
    assert_int_equal(c.calls, 2);
    loop_destroy(&loop);
    close(fd);
}

/* Work queued for the turn's end runs once, after every completion of the turn, however
 * often the turn's callbacks queue it; queued outside a turn, the next turn runs it before
 * it waits. */
struct tail_probe {
    struct loop_tail tail;
    struct loop_watch a, b;
    int completions, runs, completions_at_run;
};

static void tail_ran(void *opaque)
{
    struct tail_probe *t = opaque;
    t->runs++;
    t->completions_at_run = t->completions;
}

static bool queue_tail(struct event_loop *loop, void *opaque, int res)
{
    (void)res;
    struct tail_probe *t = opaque;
    t->completions++;
    loop_at_turn_end(loop, &t->tail, tail_ran, t);
    return false;
}

static void test_turn_end(void **state)
{
    (void)state;
    struct event_loop loop;
    struct loop_owner o;
    struct tail_probe t = { 0 };
    assert_int_equal(loop_init(&loop, 16), 0);
    loop_owner_init(&o);
    io_uring_prep_nop(loop_owner_prepare(&loop, &o, &t.a, queue_tail, &t));
    io_uring_prep_nop(loop_owner_prepare(&loop, &o, &t.b, queue_tail, &t));
    assert_int_equal(submit_now(&loop), 0);
    while (t.completions < 2)
        assert_int_equal(loop_run_once(&loop), 0);
    assert_int_equal(t.runs, 1);
    assert_int_equal(t.completions_at_run, 2);
    loop_at_turn_end(&loop, &t.tail, tail_ran, &t);
    loop_cancel_turn_end(&loop, &t.tail); /* dropped: never runs */
    loop_at_turn_end(&loop, &t.tail, tail_ran, &t);
    struct posted p = { .loop = &loop };
    loop_post(&loop, &p.call, record_call, &p);
    assert_int_equal(loop_run_once(&loop), 0);
    assert_int_equal(t.runs, 2);
    loop_owner_destroy(&o);
    loop_destroy(&loop);
}

/* ---- owned I/O ---- */

/* Hands what was prepared to the kernel without waiting for anything. */
static int submit_now(struct event_loop *loop)
{
    if (loop_enable(loop) < 0)
        return -EIO;
    return io_uring_submit(&loop->ring) < 0 ? -EIO : 0;
}

struct op {
    struct loop_watch w;
    int calls, res;
    char buf[16];
};

static bool op_done(struct event_loop *loop, void *opaque, int res)
{
    (void)loop;
    struct op *op = opaque;
    op->calls++;
    op->res = res;
    return false;
}

/* A read of `fd` counted against `o`. */
static void owned_read(struct event_loop *loop, struct loop_owner *o, struct op *op, int fd)
{
    struct io_uring_sqe *sqe = loop_owner_prepare(loop, o, &op->w, op_done, op);
    assert_non_null(sqe);
    io_uring_prep_read(sqe, fd, op->buf, sizeof(op->buf), 0);
}

static void make_pipe(int fds[2])
{
    assert_int_equal(pipe2(fds, O_CLOEXEC), 0); /* blocking: a read waits in the kernel */
}

/* Counted from prepare to completion; the callback runs once, with the result. */
static void test_owner_in_flight_and_drain(void **state)
{
    (void)state;
    struct event_loop loop;
    struct loop_owner o;
    struct op a = { 0 }, b = { 0 };
    int p[2];
    make_pipe(p);
    assert_int_equal(loop_init(&loop, 16), 0);
    loop_owner_init(&o);
    assert_int_equal(loop_owner_in_flight(&o), 0);
    owned_read(&loop, &o, &a, p[0]);
    owned_read(&loop, &o, &b, p[0]);
    assert_int_equal(loop_owner_in_flight(&o), 2);
    assert_int_equal(write(p[1], "abcdefghijklmnopqrstuvwxyz012345", 32), 32);
    assert_int_equal(loop_owner_drain(&loop, &o), 0);
    assert_int_equal(loop_owner_in_flight(&o), 0);
    assert_int_equal(a.calls, 1);
    assert_int_equal(b.calls, 1);
    assert_int_equal(a.res + b.res, 32);
    assert_int_equal(loop_owner_drain(&loop, &o), 0); /* nothing in flight: returns at once */
    loop_owner_destroy(&o);
    loop_destroy(&loop);
    close(p[0]);
    close(p[1]);
}

/* Reads and polls that would wait for ever end at a cancel; the callback still runs, once,
 * and another owner's I/O is left alone. */
static void test_owner_cancel(void **state)
{
    (void)state;
    struct event_loop loop;
    struct loop_owner o, other;
    struct op rd = { 0 }, poll_op = { 0 }, kept = { 0 };
    int p[2], q[2];
    make_pipe(p);
    make_pipe(q);
    assert_int_equal(loop_init(&loop, 16), 0);
    loop_owner_init(&o);
    loop_owner_init(&other);
    owned_read(&loop, &o, &rd, p[0]);
    struct io_uring_sqe *sqe = loop_owner_prepare(&loop, &o, &poll_op.w, op_done, &poll_op);
    assert_non_null(sqe);
    io_uring_prep_poll_add(sqe, q[0], POLLIN);
    owned_read(&loop, &other, &kept, q[0]);
    assert_int_equal(submit_now(&loop), 0);
    assert_int_equal(loop_owner_cancel(&loop, &o), 0);
    assert_int_equal(loop_owner_drain(&loop, &o), 0);
    assert_int_equal(rd.calls, 1);
    assert_true(rd.res == -ECANCELED || rd.res == -EINTR);
    assert_int_equal(poll_op.calls, 1);
    assert_int_equal(poll_op.res, -ECANCELED);
    assert_int_equal(loop_owner_in_flight(&other), 1);
    assert_int_equal(kept.calls, 0);
    assert_int_equal(write(q[1], "x", 1), 1);
    assert_int_equal(loop_owner_drain(&loop, &other), 0);
    assert_int_equal(kept.res, 1);
    loop_owner_destroy(&o);
    loop_owner_destroy(&other);
    loop_destroy(&loop);
    close(p[0]);
    close(p[1]);
    close(q[0]);
    close(q[1]);
}

/* A callback that drains another owner (a device quiescing from a loop callback): every
 * completion of the outer turn is still dispatched exactly once. */
struct nested {
    struct event_loop *loop;
    struct loop_owner inner;
    struct op trigger, inner_op, bystander;
    int fd;
};

static bool drain_inner(struct event_loop *loop, void *opaque, int res)
{
    struct nested *n = opaque;
    n->trigger.calls++;
    n->trigger.res = res;
    owned_read(loop, &n->inner, &n->inner_op, n->fd);
    assert_int_equal(loop_owner_drain(loop, &n->inner), 0);
    return false;
}

static void test_owner_drain_nested(void **state)
{
    (void)state;
    struct event_loop loop;
    struct loop_owner o;
    struct nested n = { .loop = &loop };
    int p[2];
    make_pipe(p);
    n.fd = p[0];
    assert_int_equal(write(p[1], "z", 1), 1);
    assert_int_equal(loop_init(&loop, 16), 0);
    loop_owner_init(&o);
    loop_owner_init(&n.inner);
    for (int i = 0; i < 2; i++) { /* the trigger and a bystander complete in the same turn */
        struct op *op = i ? &n.bystander : &n.trigger;
        void *opaque = i ? (void *)op : (void *)&n;
        struct io_uring_sqe *sqe =
            loop_owner_prepare(&loop, &o, &op->w, i ? op_done : drain_inner, opaque);
        assert_non_null(sqe);
        io_uring_prep_nop(sqe);
    }
    assert_int_equal(loop_owner_drain(&loop, &o), 0);
    assert_int_equal(n.trigger.calls, 1);
    assert_int_equal(n.bystander.calls, 1);
    assert_int_equal(n.inner_op.calls, 1);
    assert_int_equal(n.inner_op.res, 1);
    assert_int_equal(loop_owner_in_flight(&n.inner), 0);
    loop_owner_destroy(&o);
    loop_owner_destroy(&n.inner);
    loop_destroy(&loop);
    close(p[0]);
    close(p[1]);
}

/* A vCPU thread resetting a device: it waits for the loop's thread, letting go of the
 * device's lock meanwhile, which the completions take. */
struct waiter {
    struct event_loop *loop;
    struct loop_owner *o;
    pthread_mutex_t *lock;
    unsigned timeout_ms;
    int ret;
    bool done;
};

static void *wait_from_thread(void *arg)
{
    struct waiter *w = arg;
    pthread_mutex_lock(w->lock);
    w->ret = loop_owner_wait(w->loop, w->o, w->lock, w->timeout_ms);
    assert_int_equal(pthread_mutex_trylock(w->lock), 0); /* held again (recursive) */
    pthread_mutex_unlock(w->lock);
    pthread_mutex_unlock(w->lock);
    __atomic_store_n(&w->done, true, __ATOMIC_SEQ_CST);
    return NULL;
}

static void sleep_ms(unsigned ms)
{
    struct timespec ts = { .tv_sec = 0, .tv_nsec = (long)ms * 1000000 };
    nanosleep(&ts, NULL);
}

static void test_owner_wait_other_thread(void **state)
{
    (void)state;
    struct event_loop loop;
    struct loop_owner o;
    struct op rd = { 0 };
    pthread_mutex_t lock;
    pthread_mutexattr_t attr;
    pthread_mutexattr_init(&attr);
    pthread_mutexattr_settype(&attr, PTHREAD_MUTEX_RECURSIVE);
    pthread_mutex_init(&lock, &attr);
    int p[2];
    make_pipe(p);
    assert_int_equal(loop_init(&loop, 16), 0);
    loop_owner_init(&o);
    owned_read(&loop, &o, &rd, p[0]);
    struct waiter w = { .loop = &loop, .o = &o, .lock = &lock, .timeout_ms = 5000 };
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, wait_from_thread, &w), 0);
    while (!__atomic_load_n(&o.waiters, __ATOMIC_SEQ_CST))
        sleep_ms(1);
    /* Waiting, with the lock let go: a completion's callback could take it. */
    assert_int_equal(pthread_mutex_lock(&lock), 0);
    pthread_mutex_unlock(&lock);
    sleep_ms(20);
    assert_false(__atomic_load_n(&w.done, __ATOMIC_SEQ_CST)); /* the read is still out */
    assert_int_equal(write(p[1], "q", 1), 1);
    while (loop_owner_in_flight(&o))
        assert_int_equal(loop_run_once(&loop), 0);
    pthread_join(t, NULL);
    assert_int_equal(w.ret, 0);
    assert_int_equal(rd.calls, 1);

    /* Nothing completes: the wait gives up after its timeout. */
    owned_read(&loop, &o, &rd, p[0]);
    assert_int_equal(submit_now(&loop), 0);
    w = (struct waiter){ .loop = &loop, .o = &o, .lock = &lock, .timeout_ms = 30 };
    assert_int_equal(pthread_create(&t, NULL, wait_from_thread, &w), 0);
    pthread_join(t, NULL);
    assert_int_equal(w.ret, -ETIMEDOUT);
    assert_int_equal(loop_owner_cancel(&loop, &o), 0);
    assert_int_equal(loop_owner_drain(&loop, &o), 0);
    loop_owner_destroy(&o);
    loop_destroy(&loop);
    pthread_mutex_destroy(&lock);
    close(p[0]);
    close(p[1]);
}

/* A callback run by loop_unwatch_sync()'s turn unwatches another watch synchronously: each
 * wait ends, whichever turn takes its completion. */
struct two_watches {
    struct loop_watch a, b;
    struct op trigger;
    int calls;
};

static bool unwatch_b(struct event_loop *loop, void *opaque, int res)
{
    (void)res;
    struct two_watches *t = opaque;
    t->trigger.calls++;
    loop_unwatch_sync(loop, &t->b);
    return false;
}

static void test_unwatch_sync_nested(void **state)
{
    (void)state;
    struct event_loop loop;
    struct loop_owner o;
    struct two_watches t = { 0 };
    int fa = eventfd(0, EFD_NONBLOCK), fb = eventfd(0, EFD_NONBLOCK);
    assert_true(fa >= 0 && fb >= 0);
    assert_int_equal(loop_init(&loop, 16), 0);
    loop_owner_init(&o);
    assert_int_equal(loop_watch_readable(&loop, &t.a, fa, never_called, &t.calls), 0);
    assert_int_equal(loop_watch_readable(&loop, &t.b, fb, never_called, &t.calls), 0);
    assert_int_equal(submit_now(&loop), 0);
    struct io_uring_sqe *sqe = loop_owner_prepare(&loop, &o, &t.trigger.w, unwatch_b, &t);
    assert_non_null(sqe);
    io_uring_prep_nop(sqe);
    loop_unwatch_sync(&loop, &t.a);
    assert_int_equal(t.trigger.calls, 1);
    assert_false(t.a.armed);
    assert_false(t.b.armed);
    assert_null(loop.syncs);
    assert_int_equal(t.calls, 0);
    loop_owner_destroy(&o);
    loop_destroy(&loop);
    close(fa);
    close(fb);
}

/* Registered files and buffers: a slot per fd; guest-RAM-like areas registered a piece at a
 * time, a range within one piece gets its index, one across pieces or outside gets -1; I/O
 * through both reads what a plain read would. */
static void test_registered_files_and_buffers(void **state)
{
    (void)state;
    struct event_loop loop;
    struct loop_owner o;
    struct op rd = { 0 };
    int p[2];
    make_pipe(p);
    assert_int_equal(loop_init(&loop, 16), 0);
    loop_owner_init(&o);
    int slot = loop_register_file(&loop, p[0]);
    size_t size = 2 * LOOP_BUF_CHUNK + 4096;
    uint8_t *ram = aligned_alloc(LOOP_BUF_CHUNK, 3 * LOOP_BUF_CHUNK); /* a multiple */
    assert_non_null(ram);
    memset(ram, 0, size);
    struct iovec area = { .iov_base = ram, .iov_len = size };
    int buf = -1;
    if (loop_buffers_enable(&loop, &area, 1) == 0) { /* 5.19 and later, memlock allowing */
        buf = loop_fixed_buffer(&loop, ram + 4096, 4096);
        assert_true(buf >= 0);
        assert_int_equal(loop_fixed_buffer(&loop, ram + 8192, 16), buf); /* same piece */
        int second = loop_fixed_buffer(&loop, ram + LOOP_BUF_CHUNK, 4096);
        assert_true(second >= 0 && second != buf);
        assert_int_equal(loop_fixed_buffer(&loop, ram + LOOP_BUF_CHUNK - 8, 16), -1);
        assert_true(loop_fixed_buffer(&loop, ram + 2 * LOOP_BUF_CHUNK, 4096) >= 0); /* the tail */
        assert_int_equal(loop_fixed_buffer(&loop, ram + 2 * LOOP_BUF_CHUNK, 4097), -1);
        assert_int_equal(loop_fixed_buffer(&loop, ram + size, 1), -1);
        assert_int_equal(loop_fixed_buffer(&loop, &rd, 1), -1);
    }
    assert_int_equal(write(p[1], "fixed", 5), 5);
    struct io_uring_sqe *sqe = loop_owner_prepare(&loop, &o, &rd.w, op_done, &rd);
    assert_non_null(sqe);
    if (buf >= 0)
        io_uring_prep_read_fixed(sqe, p[0], ram + 4096, 4096, 0, buf);
    else
        io_uring_prep_read(sqe, p[0], ram + 4096, 4096, 0);
    loop_sqe_file(sqe, slot);
    assert_int_equal(loop_owner_drain(&loop, &o), 0);
    assert_int_equal(rd.res, 5);
    assert_memory_equal(ram + 4096, "fixed", 5);
    loop_unregister_file(&loop, slot);
    loop_buffers_disable(&loop);
    assert_int_equal(loop_fixed_buffer(&loop, ram + 4096, 16), -1);
    loop_owner_destroy(&o);
    loop_destroy(&loop);
    free(ram);
    close(p[0]);
    close(p[1]);
}

static bool count_and_stop(struct event_loop *loop, void *opaque, int res)
{
    (void)res;
    (*(int *)opaque)++;
    loop->stop = true;
    return true;
}

struct rearm {
    struct loop_watch timer, rearmer, stopper;
    int fired, stops;
};

static bool unwatch_and_rearm(struct event_loop *loop, void *opaque, int res)
{
    struct rearm *r = opaque;
    (void)res;
    loop_unwatch(loop, &r->timer);
    assert_int_equal(loop_after(loop, &r->timer, 5000, count_and_stop, &r->fired), 0);
    return true;
}

/* An unwatched timer is gone from the kernel: re-armed in the same watch for later, it does not
 * fire at the first timer's time (a timer left pending fired the re-armed watch's callback). */
static void test_unwatch_timer_then_rearm(void **state)
{
    (void)state;
    struct event_loop loop;
    struct rearm r = { 0 };
    assert_int_equal(loop_init(&loop, 16), 0);
    assert_int_equal(loop_after(&loop, &r.timer, 100, count_and_stop, &r.fired), 0);
    assert_int_equal(loop_after(&loop, &r.rearmer, 20, unwatch_and_rearm, &r), 0);
    assert_int_equal(loop_after(&loop, &r.stopper, 300, count_and_stop, &r.stops), 0);
    assert_int_equal(loop_run(&loop), 0);
    assert_int_equal(r.fired, 0);
    assert_int_equal(r.stops, 1);
    loop_unwatch(&loop, &r.timer);
    loop_destroy(&loop);
}

struct poll_probe {
    int polls, ends;
    int work_at;     /* the poll() call that finds work; 0: none */
    bool end_finds;  /* end() reports work that came meanwhile */
};

static bool probe_poll(void *opaque)
{
    struct poll_probe *p = opaque;
    return ++p->polls == p->work_at;
}

static bool probe_end(void *opaque)
{
    struct poll_probe *p = opaque;
    p->ends++;
    return p->end_finds;
}

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Polling: a poller that finds work ends the turn without a wait, and stays polled (no end);
 * a window that finds nothing ends every poller's polling before the loop waits. */
static void test_poll_window(void **state)
{
    (void)state;
    struct event_loop loop;
    struct loop_poller poller = { 0 };
    struct poll_probe probe = { .work_at = 3 };
    struct loop_watch guard;
    int fired = 0;
    assert_int_equal(loop_init(&loop, 16), 0);
    assert_int_equal(loop_after(&loop, &guard, 5000, count_and_stop, &fired), 0);
    loop_set_poll(&loop, 2000000000ull); /* long enough that only work ends it */
    loop_add_poller(&loop, &poller, probe_poll, probe_end, &probe);
    loop_add_poller(&loop, &poller, probe_poll, probe_end, &probe); /* twice: still one */

    uint64_t t0 = now_ms();
    assert_int_equal(loop_run_once(&loop), 0);
    assert_true(now_ms() - t0 < 1000);
    assert_int_equal(probe.polls, 3);
    assert_int_equal(probe.ends, 0);
    assert_int_equal(loop.polls_hit, 1);

    /* Nothing found for the whole window: end() once, then the wait (for the timer). */
    probe = (struct poll_probe){ 0 };
    loop_set_poll(&loop, 2000000ull);
    struct loop_watch timer;
    int ticks = 0;
    assert_int_equal(loop_after(&loop, &timer, 30, count_and_stop, &ticks), 0);
    t0 = now_ms();
    assert_int_equal(loop_run_once(&loop), 0);
    assert_int_equal(ticks, 1);
    assert_true(now_ms() - t0 >= 25);
    assert_true(probe.polls > 0);
    assert_int_equal(probe.ends, 1);
    assert_int_equal(loop.polls_missed, 1);

    /* What end() took meanwhile is work: no wait either. */
    probe = (struct poll_probe){ .end_finds = true };
    t0 = now_ms();
    assert_int_equal(loop_run_once(&loop), 0);
    assert_true(now_ms() - t0 < 1000);
    assert_int_equal(probe.ends, 1);

    /* Removed, it is polled no more; without pollers the loop just waits. */
    loop_remove_poller(&loop, &poller);
    loop_remove_poller(&loop, &poller);
    probe = (struct poll_probe){ 0 };
    assert_int_equal(loop_after(&loop, &timer, 10, count_and_stop, &ticks), 0);
    assert_int_equal(loop_run_once(&loop), 0);
    assert_int_equal(ticks, 2);
    assert_int_equal(probe.polls + probe.ends, 0);
    loop_unwatch(&loop, &guard);
    loop_destroy(&loop);
}

/* A completion that comes during the window ends it (brought in without blocking, as
 * DEFER_TASKRUN needs), and the pollers stay polled. */
static void test_poll_sees_completions(void **state)
{
    (void)state;
    struct event_loop loop;
    struct loop_poller poller = { 0 };
    struct poll_probe probe = { 0 };
    struct loop_watch timer;
    int ticks = 0;
    assert_int_equal(loop_init(&loop, 16), 0);
    loop_set_poll(&loop, 3000000000ull);
    loop_add_poller(&loop, &poller, probe_poll, probe_end, &probe);
    assert_int_equal(loop_after(&loop, &timer, 20, count_and_stop, &ticks), 0);
    uint64_t t0 = now_ms();
    while (!ticks)
        assert_int_equal(loop_run_once(&loop), 0);
    assert_true(now_ms() - t0 < 2000);
    assert_int_equal(probe.ends, 0);
    assert_true(loop.polls_hit >= 1);
    loop_remove_poller(&loop, &poller);
    loop_destroy(&loop);
}

static void note_call(void *opaque)
{
    (*(int *)opaque)++;
}

/* One turn that ends with the timer's tick, and the window it leaves. */
static uint64_t turn_until_tick(struct event_loop *loop, unsigned ms)
{
    struct loop_watch timer;
    int ticks = 0;
    struct loop_poll_stats stats;
    assert_int_equal(loop_after(loop, &timer, ms, count_and_stop, &ticks), 0);
    assert_int_equal(loop_run_once(loop), 0);
    assert_int_equal(ticks, 1);
    loop_poll_stats(loop, &stats);
    return stats.window_ns;
}

/* The window follows the waits: each one past the cap halves it, down to closed (then the
 * pollers are neither polled nor ended: their notifications are on); work that comes within
 * the cap opens it again and doubles it; a hit leaves it. */
static void test_poll_window_adapts(void **state)
{
    (void)state;
    struct event_loop loop;
    struct loop_poller poller = { 0 };
    struct poll_probe probe = { 0 };
    struct loop_poll_stats stats;
    assert_int_equal(loop_init(&loop, 16), 0);
    loop_set_poll(&loop, 1000000);
    loop_add_poller(&loop, &poller, probe_poll, probe_end, &probe);
    loop_poll_stats(&loop, &stats);
    assert_int_equal(stats.window_ns, 1000000);
    assert_int_equal(stats.max_ns, 1000000);

    uint64_t expect = 1000000;
    int waits = 0;
    while (expect) {
        expect = expect / 2 < 4000 ? 0 : expect / 2;
        assert_int_equal(turn_until_tick(&loop, 5), expect);
        waits++;
    }
    assert_int_equal(waits, 8); /* 1 ms, halved to 3.9 us: closed */
    assert_int_equal(probe.ends, waits);
    loop_poll_stats(&loop, &stats);
    assert_int_equal(stats.misses, (uint64_t)waits);
    assert_int_equal(stats.hits, 0);

    probe = (struct poll_probe){ 0 };
    assert_int_equal(turn_until_tick(&loop, 5), 0);
    assert_int_equal(probe.polls + probe.ends, 0);

    /* A posted call is work that comes at once: the window opens, unpolled this turn. */
    struct loop_call call;
    int calls = 0;
    loop_post(&loop, &call, note_call, &calls);
    assert_int_equal(loop_run_once(&loop), 0);
    assert_int_equal(calls, 1);
    assert_int_equal(probe.polls + probe.ends, 0);
    loop_poll_stats(&loop, &stats);
    assert_int_equal(stats.window_ns, 4000);

    /* Work found as the window closed came just after it: doubled. */
    probe = (struct poll_probe){ .end_finds = true };
    assert_int_equal(loop_run_once(&loop), 0);
    assert_true(probe.polls > 0);
    assert_int_equal(probe.ends, 1);
    loop_poll_stats(&loop, &stats);
    assert_int_equal(stats.window_ns, 8000);

    /* A hit: kept. */
    probe = (struct poll_probe){ .work_at = 1 };
    assert_int_equal(loop_run_once(&loop), 0);
    loop_poll_stats(&loop, &stats);
    assert_int_equal(stats.window_ns, 8000);
    assert_int_equal(stats.hits, 1);
    loop_remove_poller(&loop, &poller);
    loop_destroy(&loop);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_post_from_other_thread),
        cmocka_unit_test(test_post_twice_and_cancel),
        cmocka_unit_test(test_unwatch_sync),
        cmocka_unit_test(test_owner_in_flight_and_drain),
        cmocka_unit_test(test_owner_cancel),
        cmocka_unit_test(test_owner_drain_nested),
        cmocka_unit_test(test_owner_wait_other_thread),
        cmocka_unit_test(test_unwatch_sync_nested),
        cmocka_unit_test(test_watch_eventfd),
        cmocka_unit_test(test_turn_end),
        cmocka_unit_test(test_registered_files_and_buffers),
        cmocka_unit_test(test_unwatch_timer_then_rearm),
        cmocka_unit_test(test_poll_window),
        cmocka_unit_test(test_poll_sees_completions),
        cmocka_unit_test(test_poll_window_adapts),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
