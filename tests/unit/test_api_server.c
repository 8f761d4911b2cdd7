/* test_api_server.c: the API server on a real socket and event loop, without starting a VM. */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include "api/server.h"
#include "godwit/godwit.h"
#include "lib/godwit_internal.h"
#include "io/loop.h"

static char socket_path[108];
static struct event_loop loop;
static pthread_t thread;
static struct godwit_vm *vm;

static void *serve(void *arg)
{
    (void)arg;
    loop_run(&loop);
    return NULL;
}

static int setup(void **state)
{
    /* godwit_create reads the kernel and checks its format; nothing boots here. */
    static char kernel[64];
    static struct godwit_config config = { .kernel = kernel, .console_in_fd = -1,
                                           .console_out_fd = -1 };
    struct api_server *server;
    snprintf(kernel, sizeof(kernel), "/tmp/godwit-test-api-%d.elf", getpid());
    FILE *f = fopen(kernel, "wb");
    assert_non_null(f);
    fwrite("\x7f" "ELF\x02\x01\x01", 1, 7, f);
    fclose(f);
    vm = godwit_create(&config);
    snprintf(socket_path, sizeof(socket_path), "/tmp/godwit-test-api-%d.sock", getpid());
    assert_non_null(vm);
    assert_int_equal(loop_init(&loop, 64), 0);
    assert_int_equal(api_server_start(&server, &loop, vm, "unit", socket_path), 0);
    assert_int_equal(pthread_create(&thread, NULL, serve, NULL), 0);
    *state = server;
    return 0;
}

/* Sends raw bytes (in one go or not at all), then reads until the server closes. */
static void exchange(const void *req, size_t len, char *resp, size_t resp_len)
{
    struct sockaddr_un addr = { .sun_family = AF_UNIX };
    struct timeval tv = { .tv_sec = 10 };
    size_t got = 0;
    strcpy(addr.sun_path, socket_path);
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    assert_int_equal(connect(fd, (struct sockaddr *)&addr, sizeof(addr)), 0);
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    if (len && send(fd, req, len, MSG_NOSIGNAL) < 0) {
        /* The server may answer and stop reading before a huge request is sent in full. */
    }
    for (;;) {
        ssize_t n = recv(fd, resp + got, resp_len - 1 - got, 0);
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    resp[got] = '\0';
    close(fd);
}

/* A client that sends part of a request (or nothing) and goes away. */
static void connect_send_close(const char *partial, size_t len)
{
    struct sockaddr_un addr = { .sun_family = AF_UNIX };
    strcpy(addr.sun_path, socket_path);
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    assert_int_equal(connect(fd, (struct sockaddr *)&addr, sizeof(addr)), 0);
    if (len)
        assert_int_equal(send(fd, partial, len, MSG_NOSIGNAL), (ssize_t)len);
    close(fd);
}

static void assert_status(const char *request, size_t len, const char *status_line)
{
    char resp[8192];
    exchange(request, len, resp, sizeof(resp));
    if (strncmp(resp, status_line, strlen(status_line)) != 0)
        fail_msg("expected '%s', got '%.80s'", status_line, resp);
}

#define REQ(s) s, sizeof(s) - 1

static void test_get_vm(void **state)
{
    (void)state;
    char resp[8192];
    exchange(REQ("GET /vm HTTP/1.1\r\nHost: x\r\n\r\n"), resp, sizeof(resp));
    assert_non_null(strstr(resp, "HTTP/1.1 200"));
    assert_non_null(strstr(resp, "\"name\":\"unit\""));
    assert_non_null(strstr(resp, "\"state\":\"created\""));
}

static void test_errors_then_still_serving(void **state)
{
    (void)state;
    static char big_head[12000], big_body_req[200];
    assert_status(REQ("GET /nowhere HTTP/1.1\r\n\r\n"), "HTTP/1.1 404");
    assert_status(REQ("DELETE /vm HTTP/1.1\r\n\r\n"), "HTTP/1.1 405");
    assert_status(REQ("THIS IS NOT HTTP\r\n\r\n"), "HTTP/1.1 400");
    assert_status(REQ("PUT /vm/pause HTTP/1.1\r\n\r\n"), "HTTP/1.1 409"); /* not running */
    int n = snprintf(big_body_req, sizeof(big_body_req),
                     "PUT /vm/pause HTTP/1.1\r\nContent-Length: 70000\r\nExpect: 100-continue\r\n\r\n");
    assert_status(big_body_req, (size_t)n, "HTTP/1.1 413");
    memcpy(big_head, "GET /vm HTTP/1.1\r\nX-Big: ", 25);
    memset(big_head + 25, 'h', sizeof(big_head) - 25 - 4);
    memcpy(big_head + sizeof(big_head) - 4, "\r\n\r\n", 4);
    assert_status(big_head, sizeof(big_head), "HTTP/1.1 431");
    /* Many clients that vanish mid-request leave the server able to serve. */
    for (int i = 0; i < 40; i++)
        connect_send_close(i % 2 ? "PUT /vm/pa" : "", i % 2 ? 10 : 0);
    for (int i = 0; i < 3; i++)
        assert_status(REQ("GET /vm HTTP/1.1\r\n\r\n"), "HTTP/1.1 200");
}

static void connect_send_close(const char *partial, size_t len);

/* Stops the loop: the flag is read after the next completion, which a connection provides. */
static int teardown(void **state)
{
    __atomic_store_n(&loop.stop, true, __ATOMIC_SEQ_CST);
    connect_send_close("", 0);
    pthread_join(thread, NULL);
    api_server_destroy(*state);
    loop_destroy(&loop);
    godwit_destroy(vm);
    unlink(socket_path);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_get_vm),
        cmocka_unit_test(test_errors_then_still_serving),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
