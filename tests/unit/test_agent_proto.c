/* test_agent_proto.c: the guest agent protocol's header, schema and value checks, building,
 * SHA-256, the vsock handshake and godwit cp's argument split. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <signal.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cmocka.h>

#include "agent/client.h"
#include "agent/proto.h"
#include "agent/sha256.h"
#include "cli/agent_cmds.h"

static uint8_t buf[AGENT_HEADER_SIZE + AGENT_MAX_PAYLOAD];

/* Decodes and checks what the builder made: the return of the first step that fails. */
static int check(size_t len)
{
    struct agent_msg m;
    assert_true(len >= AGENT_HEADER_SIZE);
    int ret = agent_header_decode(buf, &m.h);
    if (ret < 0)
        return ret;
    assert_int_equal(m.h.length, len - AGENT_HEADER_SIZE);
    m.payload = buf + AGENT_HEADER_SIZE;
    return agent_msg_check(&m);
}

static void put_raw_field(struct agent_builder *b, uint16_t tag, uint32_t claimed, size_t real)
{
    uint8_t *p = b->buf + b->len;
    p[0] = (uint8_t)tag, p[1] = (uint8_t)(tag >> 8);
    memcpy(p + 2, &claimed, 4); /* x86: little-endian */
    memset(p + 6, 'x', real);
    b->len += 6 + real;
}

static void test_exec_round_trip(void **state)
{
    (void)state;
    struct agent_builder b;
    struct agent_msg m;
    char s[64];
    uint32_t v;
    agent_build_start(&b, buf, AGENT_EXEC, AGENT_FLAG_TTY, 42);
    agent_put_str(&b, AGENT_T_ARG, "ls");
    agent_put_str(&b, AGENT_T_ARG, "");
    agent_put_str(&b, AGENT_T_USER, "nobody");
    agent_put_u32(&b, AGENT_T_ROWS, 50);
    size_t len = agent_build_end(&b);
    assert_int_equal(check(len), 0);
    agent_header_decode(buf, &m.h);
    m.payload = buf + AGENT_HEADER_SIZE;
    assert_int_equal(m.h.id, 42);
    assert_int_equal(m.h.flags, AGENT_FLAG_TTY);
    assert_true(agent_get_str(&m, AGENT_T_USER, s, sizeof(s)));
    assert_string_equal(s, "nobody");
    assert_true(agent_get_u32(&m, AGENT_T_ROWS, &v));
    assert_int_equal(v, 50);
    assert_false(agent_get_u32(&m, AGENT_T_COLS, &v));
    assert_false(agent_get_str(&m, AGENT_T_USER, s, 6)); /* does not fit: refused, not cut */
    struct agent_field f;
    size_t pos = 0;
    int args = 0;
    while (agent_field_next(&m, &pos, &f))
        args += f.tag == AGENT_T_ARG;
    assert_int_equal(args, 2);
}

/* One signal as a signalfd reads it, written into a pipe that stands in for the signalfd. */
static void send_signal(int fd, int sig)
{
    struct signalfd_siginfo si = { .ssi_signo = (uint32_t)sig };
    assert_int_equal(write(fd, &si, sizeof(si)), (ssize_t)sizeof(si));
}

/* An agent that never answers: the first SIGTERM goes to it as a SIGNAL message, the second
 * ends the session at once with 143 (128 + SIGTERM): a hung agent must not keep godwit exec
 * alive. */
static void test_exec_second_signal_ends_wait(void **state)
{
    (void)state;
    int sv[2], sig[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    assert_int_equal(pipe(sig), 0);
    struct agent_client *c = calloc(1, sizeof(*c));
    assert_non_null(c);
    c->fd = sv[0];
    c->stdin_ended = true;
    send_signal(sig[1], SIGTERM);
    send_signal(sig[1], SIGTERM);
    struct agent_exec_io io = { .in = -1, .out = -1, .err = -1, .sig = sig[0] };
    int status = -1;
    assert_int_equal(agent_client_exec_run(c, &io, &status), -ECANCELED);
    assert_int_equal(status, 128 + SIGTERM);
    assert_non_null(strstr(c->error, "second signal"));
    /* What the agent got: one SIGNAL message, SIGTERM. */
    ssize_t n = recv(sv[1], buf, sizeof(buf), MSG_DONTWAIT);
    assert_true(n >= (ssize_t)AGENT_HEADER_SIZE);
    struct agent_msg m;
    assert_int_equal(agent_header_decode(buf, &m.h), 0);
    assert_int_equal(m.h.type, AGENT_SIGNAL);
    assert_int_equal((size_t)n, AGENT_HEADER_SIZE + m.h.length);
    m.payload = buf + AGENT_HEADER_SIZE;
    uint32_t v;
    assert_true(agent_get_u32(&m, AGENT_T_SIGNAL, &v));
    assert_int_equal(v, SIGTERM);
    close(sv[0]);
    close(sv[1]);
    close(sig[0]);
    close(sig[1]);
    free(c);
}

static void test_header_refusals(void **state)
{
    (void)state;
    struct agent_builder b;
    struct agent_header h;
    agent_build_start(&b, buf, AGENT_PING, 0, 1);
    agent_build_end(&b);
    assert_int_equal(agent_header_decode(buf, &h), 0);
    buf[0] ^= 1;
    assert_int_equal(agent_header_decode(buf, &h), -EPROTO); /* magic */
    buf[0] ^= 1;
    buf[4] = 2;
    assert_int_equal(agent_header_decode(buf, &h), -EPROTO); /* version */
    buf[4] = AGENT_PROTO_VERSION;
    buf[6] = AGENT_FLAG_TTY;
    assert_int_equal(agent_header_decode(buf, &h), -EPROTO); /* a flag ping does not take */
    buf[6] = 0;
    uint32_t big = AGENT_MAX_PAYLOAD + 1;
    memcpy(buf + 12, &big, 4);
    assert_int_equal(agent_header_decode(buf, &h), -EMSGSIZE);
    /* An unknown type frames soundly (the agent answers it), but no check passes it. */
    agent_build_start(&b, buf, 200, 0, 1);
    agent_build_end(&b);
    assert_int_equal(agent_header_decode(buf, &h), 0);
    assert_int_equal(check(AGENT_HEADER_SIZE), -EPROTO);
}

static void test_schema_refusals(void **state)
{
    (void)state;
    struct agent_builder b;
    /* exec without an argument */
    agent_build_start(&b, buf, AGENT_EXEC, 0, 1);
    assert_int_equal(check(agent_build_end(&b)), -EPROTO);
    /* a field exec does not take */
    agent_build_start(&b, buf, AGENT_EXEC, 0, 1);
    agent_put_str(&b, AGENT_T_ARG, "ls");
    agent_put_str(&b, AGENT_T_PATH, "/x");
    assert_int_equal(check(agent_build_end(&b)), -EPROTO);
    /* two users */
    agent_build_start(&b, buf, AGENT_EXEC, 0, 1);
    agent_put_str(&b, AGENT_T_ARG, "ls");
    agent_put_str(&b, AGENT_T_USER, "a");
    agent_put_str(&b, AGENT_T_USER, "b");
    assert_int_equal(check(agent_build_end(&b)), -EPROTO);
    /* a u32 of 3 bytes */
    agent_build_start(&b, buf, AGENT_SIGNAL, 0, 1);
    agent_put_bytes(&b, AGENT_T_SIGNAL, "abc", 3);
    assert_int_equal(check(agent_build_end(&b)), -EPROTO);
    /* a string with a NUL inside */
    agent_build_start(&b, buf, AGENT_FILE_READ, 0, 1);
    agent_put_bytes(&b, AGENT_T_PATH, "/a\0b", 4);
    assert_int_equal(check(agent_build_end(&b)), -EPROTO);
    /* a string over its bound */
    static char longkey[600];
    memset(longkey, 'k', sizeof(longkey) - 1);
    agent_build_start(&b, buf, AGENT_KVP_GET, 0, 1);
    agent_put_u32(&b, AGENT_T_POOL, 0);
    agent_put_str(&b, AGENT_T_KEY, longkey);
    assert_int_equal(check(agent_build_end(&b)), -EPROTO);
    /* a field whose length runs past the payload */
    agent_build_start(&b, buf, AGENT_FILE_READ, 0, 1);
    put_raw_field(&b, AGENT_T_PATH, 100, 4);
    assert_int_equal(check(agent_build_end(&b)), -EPROTO);
    /* half a field header at the end */
    agent_build_start(&b, buf, AGENT_FILE_READ, 0, 1);
    agent_put_str(&b, AGENT_T_PATH, "/a");
    b.len += 3;
    assert_int_equal(check(agent_build_end(&b)), -EPROTO);
    /* tag 0 and a tag past the last */
    agent_build_start(&b, buf, AGENT_INFO, 0, 1);
    agent_put_u32(&b, 0, 1);
    assert_int_equal(check(agent_build_end(&b)), -EPROTO);
    agent_build_start(&b, buf, AGENT_INFO, 0, 1);
    agent_put_u32(&b, AGENT_T_MAX_, 1);
    assert_int_equal(check(agent_build_end(&b)), -EPROTO);
    /* a digest of the wrong size */
    agent_build_start(&b, buf, AGENT_FILE_END, 0, 1);
    agent_put_u64(&b, AGENT_T_SIZE, 1);
    agent_put_bytes(&b, AGENT_T_DIGEST, "short", 5);
    assert_int_equal(check(agent_build_end(&b)), -EPROTO);
}

static void test_value_refusals(void **state)
{
    (void)state;
    struct agent_builder b;
    static const struct { unsigned type; uint16_t tag; uint32_t bad, good; } cases[] = {
        { AGENT_SIGNAL, AGENT_T_SIGNAL, 0, 15 },     { AGENT_SIGNAL, AGENT_T_SIGNAL, 65, 9 },
        { AGENT_KVP_LIST, AGENT_T_POOL, 2, 1 },      { AGENT_SHUTDOWN, AGENT_T_MODE, 2, 1 },
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        agent_build_start(&b, buf, cases[i].type, 0, 1);
        agent_put_u32(&b, cases[i].tag, cases[i].bad);
        assert_int_equal(check(agent_build_end(&b)), -EINVAL);
        agent_build_start(&b, buf, cases[i].type, 0, 1);
        agent_put_u32(&b, cases[i].tag, cases[i].good);
        assert_int_equal(check(agent_build_end(&b)), 0);
    }
    agent_build_start(&b, buf, AGENT_FILE_WRITE, 0, 1);
    agent_put_str(&b, AGENT_T_PATH, "/x");
    agent_put_u32(&b, AGENT_T_MODE, 010000);
    agent_put_u64(&b, AGENT_T_SIZE, 1);
    assert_int_equal(check(agent_build_end(&b)), -EINVAL);
    /* exit: a code or a signal, not both, not neither */
    agent_build_start(&b, buf, AGENT_EXIT, 0, 1);
    assert_int_equal(check(agent_build_end(&b)), -EINVAL);
    agent_build_start(&b, buf, AGENT_EXIT, 0, 1);
    agent_put_u32(&b, AGENT_T_EXIT_CODE, 1);
    agent_put_u32(&b, AGENT_T_SIGNAL, 9);
    assert_int_equal(check(agent_build_end(&b)), -EINVAL);
    agent_build_start(&b, buf, AGENT_OUTPUT, 0, 1);
    agent_put_u32(&b, AGENT_T_STREAM, 3);
    agent_put_bytes(&b, AGENT_T_DATA, "x", 1);
    assert_int_equal(check(agent_build_end(&b)), -EINVAL);
}

static void test_builder_overflow(void **state)
{
    (void)state;
    static uint8_t chunk[AGENT_CHUNK];
    struct agent_builder b;
    agent_build_start(&b, buf, AGENT_DATA, 0, 1);
    agent_put_bytes(&b, AGENT_T_DATA, chunk, sizeof(chunk));
    assert_int_equal(check(agent_build_end(&b)), 0);
    /* two chunks do not fit one message: the builder says so rather than cut */
    agent_build_start(&b, buf, AGENT_DATA, 0, 1);
    agent_put_bytes(&b, AGENT_T_DATA, chunk, sizeof(chunk));
    agent_put_bytes(&b, AGENT_T_DATA, chunk, sizeof(chunk));
    size_t len = agent_build_end(&b);
    assert_int_equal(len, 0); /* 2 x 64 KiB + 2 field headers: over the payload bound */
    agent_build_start(&b, buf, AGENT_EXEC, 0, 1);
    for (int i = 0; i < 100; i++)
        agent_put_bytes(&b, AGENT_T_ARG, chunk, 2000);
    assert_int_equal(agent_build_end(&b), 0);
}

static void hex(const uint8_t *d, char *out)
{
    for (int i = 0; i < 32; i++)
        sprintf(out + 2 * i, "%02x", d[i]);
}

static void test_sha256_vectors(void **state)
{
    (void)state;
    struct sha256 s;
    uint8_t d[32];
    char h[65];
    sha256_init(&s);
    sha256_final(&s, d);
    hex(d, h);
    assert_string_equal(h, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    sha256_init(&s);
    sha256_update(&s, "abc", 3);
    sha256_final(&s, d);
    hex(d, h);
    assert_string_equal(h, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    /* FIPS 180-4's two-block message, fed in uneven pieces */
    const char *m = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    sha256_init(&s);
    sha256_update(&s, m, 5);
    sha256_update(&s, m + 5, 50);
    sha256_update(&s, m + 55, strlen(m) - 55);
    sha256_final(&s, d);
    hex(d, h);
    assert_string_equal(h, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
    /* a million 'a' */
    static char a[1000];
    memset(a, 'a', sizeof(a));
    sha256_init(&s);
    for (int i = 0; i < 1000; i++)
        sha256_update(&s, a, sizeof(a));
    sha256_final(&s, d);
    hex(d, h);
    assert_string_equal(h, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

static void test_vsock_handshake(void **state)
{
    (void)state;
    int sv[2];
    char line[32] = { 0 };
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    /* The answer and the first agent bytes arrive together: only the line is consumed. */
    assert_int_equal(write(sv[1], "OK 1073741824\nGWAG", 18), 18);
    assert_int_equal(agent_vsock_handshake(sv[0], 1024, 1000), 0);
    assert_int_equal(read(sv[1], line, sizeof(line) - 1), 13);
    assert_string_equal(line, "CONNECT 1024\n");
    assert_int_equal(read(sv[0], line, 4), 4);
    assert_memory_equal(line, "GWAG", 4);
    /* An answer in two pieces: the first has no newline yet. */
    assert_int_equal(write(sv[1], "OK 10", 5), 5);
    pid_t pid = fork();
    if (pid == 0) {
        usleep(50000);
        _exit(write(sv[1], "73741825\nGWAG", 13) == 13 ? 0 : 1);
    }
    assert_int_equal(agent_vsock_handshake(sv[0], 1024, 1000), 0);
    assert_int_equal(waitpid(pid, NULL, 0), pid);
    assert_int_equal(read(sv[1], line, sizeof(line) - 1), 13);
    assert_int_equal(read(sv[0], line, 4), 4);
    assert_memory_equal(line, "GWAG", 4);
    assert_int_equal(write(sv[1], "NO\n", 3), 3);
    assert_int_equal(agent_vsock_handshake(sv[0], 1024, 1000), -ECONNREFUSED);
    assert_int_equal(agent_vsock_handshake(sv[0], 1024, 10), -ETIMEDOUT);
    close(sv[1]);
    signal(SIGPIPE, SIG_IGN);
    int ret = agent_vsock_handshake(sv[0], 1024, 1000); /* no VMM there any more */
    assert_true(ret == -EPIPE || ret == -ECONNREFUSED);
    close(sv[0]);
}

static void test_cp_arguments(void **state)
{
    (void)state;
    char *name, *path, *local;
    char a1[] = "file", b1[] = "vm1:/tmp/x";
    assert_int_equal(agent_cp_parse(a1, b1, &name, &path, &local), 1);
    assert_string_equal(name, "vm1");
    assert_string_equal(path, "/tmp/x");
    assert_string_equal(local, "file");
    char a2[] = "vm1:/etc/hostname", b2[] = "./out";
    assert_int_equal(agent_cp_parse(a2, b2, &name, &path, &local), 2);
    assert_string_equal(path, "/etc/hostname");
    assert_string_equal(local, "./out");
    char a3[] = "a", b3[] = "b";
    assert_int_equal(agent_cp_parse(a3, b3, &name, &path, &local), -EINVAL);
    char a4[] = "vm1:/a", b4[] = "vm2:/b";
    assert_int_equal(agent_cp_parse(a4, b4, &name, &path, &local), -EINVAL);
    /* a local path with a colon after a '/' is local */
    char a5[] = "./a:b", b5[] = "vm1:/b";
    assert_int_equal(agent_cp_parse(a5, b5, &name, &path, &local), 1);
    assert_string_equal(local, "./a:b");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_exec_round_trip),
        cmocka_unit_test(test_exec_second_signal_ends_wait),
        cmocka_unit_test(test_header_refusals),   cmocka_unit_test(test_schema_refusals),
        cmocka_unit_test(test_value_refusals),
        cmocka_unit_test(test_builder_overflow),  cmocka_unit_test(test_sha256_vectors),
        cmocka_unit_test(test_vsock_handshake),   cmocka_unit_test(test_cp_arguments),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
