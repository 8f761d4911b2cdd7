/* test_list.c: the intrusive list: members leave from the front, the middle and the end,
 * and the list walks what is left in order. */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "list.h"

struct member {
    int value;
    struct list_link link;
};

/* The values from first to last, as a number (1, 2, 3 -> 123); 0 when empty. */
static int walk(const struct list *l)
{
    int digits = 0;
    for (struct list_link *link = l->first; link; link = link->next) {
        assert_true(link->next == NULL || link->next->prev == link);
        digits = digits * 10 + list_entry(link, struct member, link)->value;
    }
    return digits;
}

static void test_push_and_unlink(void **state)
{
    (void)state;
    struct list l = { 0 };
    struct member m[4] = { { .value = 1 }, { .value = 2 }, { .value = 3 }, { .value = 4 } };
    assert_true(list_empty(&l));
    for (int i = 3; i >= 0; i--)
        list_push(&l, &m[i].link);
    assert_int_equal(walk(&l), 1234);
    assert_null(l.first->prev);

    list_unlink(&l, &m[1].link); /* the middle */
    assert_int_equal(walk(&l), 134);
    assert_null(m[1].link.prev);
    assert_null(m[1].link.next);
    list_unlink(&l, &m[0].link); /* the first */
    assert_int_equal(walk(&l), 34);
    assert_null(l.first->prev);
    list_unlink(&l, &m[3].link); /* the last */
    assert_int_equal(walk(&l), 3);
    list_push(&l, &m[1].link); /* an unlinked member comes back */
    assert_int_equal(walk(&l), 23);
    list_unlink(&l, &m[2].link);
    list_unlink(&l, &m[1].link);
    assert_true(list_empty(&l));
    assert_int_equal(walk(&l), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_push_and_unlink),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
