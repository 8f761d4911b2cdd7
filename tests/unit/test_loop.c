/* test_loop.c: the io_uring event loop: calls posted from other threads, synchronous unwatch. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <sys/eventfd.h>
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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_post_from_other_thread),
        cmocka_unit_test(test_post_twice_and_cancel),
        cmocka_unit_test(test_unwatch_sync),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
