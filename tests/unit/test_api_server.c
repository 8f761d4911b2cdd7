/* test_api_server.c: the API server on a real socket and event loop, without starting a VM. */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include "api/server.h"
#include "godwit/godwit.h"
#include "lib/godwit_internal.h"
#include "io/loop.h"

static char socket_path[108];
static char kernel[64];
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

/* Sends raw bytes (in one go or not at all) to the server at `path`, then reads until it
 * closes. */
static void exchange_at(const char *path, const void *req, size_t len, char *resp,
                        size_t resp_len)
{
    struct sockaddr_un addr = { .sun_family = AF_UNIX };
    struct timeval tv = { .tv_sec = 10 };
    size_t got = 0;
    strcpy(addr.sun_path, path);
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    assert_int_equal(connect(fd, (struct sockaddr *)&addr, sizeof(addr)), 0);
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    if (len && send(fd, req, len, MSG_NOSIGNAL) < 0) {
        /* The server may answer and stop reading before a huge request is sent in full. */
    }
    for (;;) {
        ssize_t n = recv(fd, resp + got, resp_len - 1 - got, 0);
        /* io_uring's task work for SQEs this thread submitted (api_server_start) interrupts
         * a receive with a timeout. */
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    resp[got] = '\0';
    close(fd);
}

static void exchange(const void *req, size_t len, char *resp, size_t resp_len)
{
    exchange_at(socket_path, req, len, resp, resp_len);
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

/* The agent's routes check their request before anything reaches for the agent: a bad body or
 * query is a 400, a write to the guest's pool a 403, and this VM (no vsock device, not
 * running) a 409; the server serves on. */
/* METHOD PATH with a JSON body, its Content-Length counted; the response's start into resp. */
static void send_json(const char *method, const char *path, const char *body, char *resp,
                      size_t resp_len)
{
    char req[1024];
    int n = snprintf(req, sizeof(req), "%s %s HTTP/1.1\r\nContent-Length: %zu\r\n\r\n%s", method,
                     path, strlen(body), body);
    exchange(req, (size_t)n, resp, resp_len);
}

static void assert_json_status(const char *path, const char *body, const char *status_line)
{
    char resp[8192];
    send_json("PUT", path, body, resp, sizeof(resp));
    if (strncmp(resp, status_line, strlen(status_line)) != 0)
        fail_msg("%s %s: expected '%s', got '%.80s'", path, body, status_line, resp);
}

static void test_agent_routes_refused(void **state)
{
    (void)state;
    char resp[8192];
    assert_json_status("/vm/agent/exec", "{\"argv\": []}", "HTTP/1.1 400");
    assert_json_status("/vm/agent/exec", "{\"argv\": [\"true\"], \"timeout_s\": 301}", "HTTP/1.1 400");
    assert_json_status("/vm/agent/freeze", "{\"timeout_s\": 0}", "HTTP/1.1 400");
    assert_json_status("/vm/agent/kvp", "{\"key\": \"k\"}", "HTTP/1.1 400");
    assert_json_status("/vm/agent/kvp", "{\"pool\": \"guest\", \"key\": \"k\", \"value\": \"v\"}",
                       "HTTP/1.1 403");
    assert_status(REQ("GET /vm/agent/kvp?key=a%00b HTTP/1.1\r\n\r\n"), "HTTP/1.1 400");
    assert_status(REQ("DELETE /vm/agent/kvp?pool=host HTTP/1.1\r\n\r\n"), "HTTP/1.1 400");
    assert_status(REQ("DELETE /vm/agent/kvp?pool=guest&key=k HTTP/1.1\r\n\r\n"), "HTTP/1.1 403");
    send_json("PUT", "/vm/agent/exec", "{\"argv\": [\"true\"]}", resp, sizeof(resp));
    assert_non_null(strstr(resp, "HTTP/1.1 409"));
    assert_non_null(strstr(resp, "no vsock device"));
    assert_json_status("/vm/agent/kvp", "{\"key\": \"k\", \"value\": \"v\"}", "HTTP/1.1 409");
    assert_json_status("/vm/agent/freeze", "", "HTTP/1.1 409");
    assert_status(REQ("PUT /vm/agent/thaw HTTP/1.1\r\n\r\n"), "HTTP/1.1 409");
    assert_status(REQ("PUT /vm/agent/sync-time HTTP/1.1\r\n\r\n"), "HTTP/1.1 409");
    assert_status(REQ("PUT /vm/agent/sync-time?now HTTP/1.1\r\n\r\n"), "HTTP/1.1 400");
    /* After a resume: no step owed (no agent's monitor), nothing to do. */
    assert_status(REQ("PUT /vm/agent/sync-time?after=resume HTTP/1.1\r\n\r\n"), "HTTP/1.1 204");
    assert_status(REQ("GET /vm/agent/kvp HTTP/1.1\r\n\r\n"), "HTTP/1.1 409");
    assert_status(REQ("GET /vm HTTP/1.1\r\n\r\n"), "HTTP/1.1 200");
}

/* The file routes: their query checked first (400), then the VM (409); an upload larger than
 * any other request's body reaches its route (not 413), which answers before the body comes. */
static void test_file_routes_refused(void **state)
{
    (void)state;
    char resp[8192];
    assert_status(REQ("GET /vm/agent/file HTTP/1.1\r\n\r\n"), "HTTP/1.1 400");
    assert_status(REQ("GET /vm/agent/file?path=etc HTTP/1.1\r\n\r\n"), "HTTP/1.1 400");
    assert_status(REQ("GET /vm/agent/file?path=/etc/hosts&mode=0644 HTTP/1.1\r\n\r\n"),
                  "HTTP/1.1 400");
    assert_status(REQ("GET /vm/agent/file?path=/etc/hosts HTTP/1.1\r\n\r\n"), "HTTP/1.1 409");
    assert_status(REQ("PUT /vm/agent/file?path=/x&mode=0648 HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi"),
                  "HTTP/1.1 400");
    assert_status(REQ("PUT /vm/agent/file?path=/x HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi"),
                  "HTTP/1.1 409");
    assert_status(REQ("PUT /vm/agent/file?path=/x&mode=9 HTTP/1.1\r\nContent-Length: 20000000\r\n"
                      "Expect: 100-continue\r\n\r\n"), "HTTP/1.1 400");
    exchange(REQ("PUT /vm/agent/file?path=/x&mode=0600 HTTP/1.1\r\nContent-Length: 20000000\r\n"
                 "Expect: 100-continue\r\n\r\nthe start"), resp, sizeof(resp));
    if (strncmp(resp, "HTTP/1.1 409", 12) != 0 || !strstr(resp, "no vsock device"))
        fail_msg("a large upload to a VM without vsock: got '%.80s'", resp);
    /* Only its route takes a large body. */
    assert_status(REQ("PUT /vm/agent/kvp HTTP/1.1\r\nContent-Length: 20000000\r\n\r\n"),
                  "HTTP/1.1 413");
    assert_status(REQ("GET /vm HTTP/1.1\r\n\r\n"), "HTTP/1.1 200");
}

/* A path with something else at it: a regular file is named and left alone, a live VM's
 * socket is refused and keeps serving, a dead VM's socket is replaced. */
static void test_socket_path_refused(void **state)
{
    (void)state;
    struct event_loop other_loop;
    struct api_server *other = NULL;
    char path[108];
    assert_int_equal(loop_init(&other_loop, 16), 0);

    snprintf(path, sizeof(path), "/tmp/godwit-test-api-%d.file", getpid());
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs("precious", f);
    fclose(f);
    assert_int_equal(api_server_start(&other, &other_loop, vm, "other", path), -EEXIST);
    struct stat st;
    assert_int_equal(lstat(path, &st), 0);
    assert_true(S_ISREG(st.st_mode));
    assert_int_equal(st.st_size, 8);
    unlink(path);

    assert_int_equal(api_server_start(&other, &other_loop, vm, "other", socket_path),
                     -EADDRINUSE);
    assert_status(REQ("GET /vm HTTP/1.1\r\n\r\n"), "HTTP/1.1 200");

    /* A dead VM's socket: bound, never listened on, closed. */
    snprintf(path, sizeof(path), "/tmp/godwit-test-api-%d.dead", getpid());
    struct sockaddr_un addr = { .sun_family = AF_UNIX };
    strcpy(addr.sun_path, path);
    int dead = socket(AF_UNIX, SOCK_STREAM, 0);
    assert_int_equal(bind(dead, (struct sockaddr *)&addr, sizeof(addr)), 0);
    close(dead);
    assert_int_equal(api_server_start(&other, &other_loop, vm, "other", path), 0);
    /* Whatever replaced its socket file meanwhile is not the server's to unlink. */
    unlink(path);
    f = fopen(path, "w");
    assert_non_null(f);
    fclose(f);
    api_server_destroy(other);
    assert_int_equal(lstat(path, &st), 0);
    unlink(path);
    loop_destroy(&other_loop);
}

static void *serve_other(void *arg)
{
    loop_run(arg);
    return NULL;
}

/* A configuration far over the old 16 KiB response buffer is served whole. */
static void test_get_vm_large_config(void **state)
{
    (void)state;
    static char cmdline[60000], resp[128 * 1024];
    memset(cmdline, 'c', sizeof(cmdline) - 1);
    memcpy(cmdline, "console=ttyS0 x=", 16);
    struct godwit_config config = { .kernel = kernel, .cmdline = cmdline, .console_in_fd = -1,
                                    .console_out_fd = -1 };
    struct godwit_vm *big = godwit_create(&config);
    assert_non_null(big);
    static struct event_loop other_loop; /* static: its thread outlives a failed assert */
    struct api_server *other;
    char path[108];
    pthread_t t;
    snprintf(path, sizeof(path), "/tmp/godwit-test-api-%d.big", getpid());
    assert_int_equal(loop_init(&other_loop, 16), 0);
    assert_int_equal(api_server_start(&other, &other_loop, big, "big", path), 0);
    assert_int_equal(pthread_create(&t, NULL, serve_other, &other_loop), 0);

    exchange_at(path, REQ("GET /vm HTTP/1.1\r\n\r\n"), resp, sizeof(resp));
    assert_non_null(strstr(resp, "HTTP/1.1 200"));
    const char *body = strstr(resp, "\r\n\r\n");
    assert_non_null(body);
    assert_true(strlen(body + 4) > sizeof(cmdline));
    assert_non_null(strstr(body, cmdline));
    assert_string_equal(resp + strlen(resp) - 2, "}}"); /* all of it */

    __atomic_store_n(&other_loop.stop, true, __ATOMIC_SEQ_CST);
    char sink[256];
    exchange_at(path, REQ("GET /nowhere HTTP/1.1\r\n\r\n"), sink, sizeof(sink));
    pthread_join(t, NULL);
    api_server_destroy(other);
    loop_destroy(&other_loop);
    godwit_destroy(big);
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
    unlink(kernel);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_get_vm),
        cmocka_unit_test(test_errors_then_still_serving),
        cmocka_unit_test(test_agent_routes_refused),
        cmocka_unit_test(test_file_routes_refused),
        cmocka_unit_test(test_socket_path_refused),
        cmocka_unit_test(test_get_vm_large_config),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
