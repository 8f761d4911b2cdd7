/* test_channel.c: the live-migration stream refuses what it must, before reading a payload. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <cmocka.h>

#include "migration/channel.h"
#include "migration/incoming.h"
#include "vm/vm.h"

#define MAGIC 0x474d5747u

struct pipe_pair {
    int tx, rx;
};

static struct pipe_pair pair(void)
{
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    return (struct pipe_pair){ sv[0], sv[1] };
}

static void put_header(int fd, uint32_t magic, uint32_t type, uint64_t len)
{
    uint8_t h[16];
    memcpy(h, &magic, 4); /* x86: little-endian, as the stream */
    memcpy(h + 4, &type, 4);
    memcpy(h + 8, &len, 8);
    assert_int_equal(write(fd, h, sizeof(h)), (ssize_t)sizeof(h));
}

static void test_round_trip(void **state)
{
    (void)state;
    struct pipe_pair p = pair();
    char *config = NULL;
    assert_int_equal(mig_send_hello(p.tx, "{\"kernel\":\"k\"}"), 0);
    assert_int_equal(mig_send(p.tx, MIG_DONE, NULL, 0), 0);
    assert_int_equal(mig_recv_hello(p.rx, &config), 0);
    assert_string_equal(config, "{\"kernel\":\"k\"}");
    struct mig_header h;
    assert_int_equal(mig_recv_header(p.rx, &h), 0);
    assert_int_equal(h.type, MIG_DONE);
    assert_int_equal(h.len, 0);
    free(config);
    close(p.tx);
    close(p.rx);
}

static void test_refused_headers(void **state)
{
    (void)state;
    const struct { uint32_t magic, type; uint64_t len; int want; } bad[] = {
        { 0x54544800, MIG_PAGES, 12, -EPROTO },                 /* not the magic */
        { MAGIC, 99, 0, -EPROTO },                              /* unknown type */
        { MAGIC, MIG_ACK, 1, -EPROTO },                         /* ACK carries nothing */
        { MAGIC, MIG_PAGES, 12 + 257ull * 4096, -EPROTO },      /* a run too long */
        { MAGIC, MIG_STATE, (256ull << 20) + 1, -EPROTO },      /* a state too large */
        { MAGIC, MIG_ERROR, 1 << 20, -EPROTO },                 /* an error line too long */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct pipe_pair p = pair();
        struct mig_header h;
        put_header(p.tx, bad[i].magic, bad[i].type, bad[i].len);
        assert_int_equal(mig_recv_header(p.rx, &h), bad[i].want);
        close(p.tx);
        close(p.rx);
    }
    /* Cut short: EOF inside the header. */
    struct pipe_pair p = pair();
    struct mig_header h;
    assert_int_equal(write(p.tx, "GWM", 3), 3);
    close(p.tx);
    assert_int_equal(mig_recv_header(p.rx, &h), -ECONNRESET);
    close(p.rx);
}

static void test_hello_refusals(void **state)
{
    (void)state;
    char *config = NULL;
    /* Another protocol version. */
    struct pipe_pair p = pair();
    uint32_t version = 7;
    put_header(p.tx, MAGIC, MIG_HELLO, 4 + 2);
    assert_int_equal(write(p.tx, &version, 4), 4);
    assert_int_equal(write(p.tx, "{}", 2), 2);
    assert_int_equal(mig_recv_hello(p.rx, &config), -EPROTO);
    close(p.tx);
    close(p.rx);
    /* A configuration with a NUL inside. */
    p = pair();
    version = MIG_PROTOCOL_VERSION;
    put_header(p.tx, MAGIC, MIG_HELLO, 4 + 3);
    assert_int_equal(write(p.tx, &version, 4), 4);
    assert_int_equal(write(p.tx, "{\0}", 3), 3);
    assert_int_equal(mig_recv_hello(p.rx, &config), -EPROTO);
    close(p.tx);
    close(p.rx);
    /* Not starting with HELLO. */
    p = pair();
    put_header(p.tx, MAGIC, MIG_DONE, 0);
    assert_int_equal(mig_recv_hello(p.rx, &config), -EPROTO);
    close(p.tx);
    close(p.rx);
    assert_null(config);
}

/* The destination: a page run outside RAM, a run longer than its payload, a message out of
 * order, and a stream cut inside a run are refused, and the source is told why. */
static void test_receive_refusals(void **state)
{
    (void)state;
    struct vm vm;
    memset(&vm, 0, sizeof(vm));
    assert_int_equal(gm_init(&vm.mem, 64ull << 20, false), 0);
    const uint64_t pages = (64ull << 20) / 4096;
    const struct { uint64_t first; uint32_t count; uint64_t len; } runs[] = {
        { pages, 1, 12 + 4096 },          /* past the end of RAM */
        { pages - 1, 2, 12 + 2 * 4096 },  /* across the end */
        { 0, 0, 12 },                     /* empty */
        { 0, 2, 12 + 4096 },              /* longer than its payload */
    };
    for (size_t i = 0; i < sizeof(runs) / sizeof(runs[0]); i++) {
        struct pipe_pair p = pair();
        put_header(p.tx, MAGIC, MIG_PAGES, runs[i].len);
        assert_int_equal(write(p.tx, &runs[i].first, 8), 8);
        assert_int_equal(write(p.tx, &runs[i].count, 4), 4);
        assert_int_equal(migration_receive(&vm, p.rx), -EPROTO);
        struct mig_header h;
        assert_int_equal(mig_recv_header(p.tx, &h), 0); /* the source hears why */
        assert_int_equal(h.type, MIG_ERROR);
        close(p.tx);
        close(p.rx);
    }
    /* DONE before any state. */
    struct pipe_pair p = pair();
    put_header(p.tx, MAGIC, MIG_DONE, 0);
    assert_int_equal(migration_receive(&vm, p.rx), -EPROTO);
    close(p.tx);
    close(p.rx);
    /* A run cut short: the pages land where they belong until the stream ends. */
    p = pair();
    uint64_t first = 3;
    uint32_t count = 1;
    put_header(p.tx, MAGIC, MIG_PAGES, 12 + 4096);
    assert_int_equal(write(p.tx, &first, 8), 8);
    assert_int_equal(write(p.tx, &count, 4), 4);
    assert_int_equal(write(p.tx, "abc", 3), 3);
    shutdown(p.tx, SHUT_WR);
    assert_int_equal(migration_receive(&vm, p.rx), -ECONNRESET);
    close(p.tx);
    close(p.rx);
    gm_destroy(&vm.mem);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_refused_headers),
        cmocka_unit_test(test_hello_refusals),
        cmocka_unit_test(test_receive_refusals),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
