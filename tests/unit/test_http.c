/* test_http.c: the API's HTTP/1.1 parser (incremental, strict, bounded), responses and router. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <json-c/json.h>
#include <cmocka.h>

#include "api/http.h"

static int setup_parser(void **state)
{
    struct http_parser *p = malloc(sizeof(*p));
    if (!p)
        return -1;
    http_parser_init(p);
    *state = p;
    return 0;
}

static int teardown_parser(void **state)
{
    free(*state);
    return 0;
}

#define parser_test(fn) cmocka_unit_test_setup_teardown(fn, setup_parser, teardown_parser)

static enum http_parse_result feed_all(struct http_parser *p, const char *text, size_t len)
{
    assert_int_equal(http_parser_feed(p, text, len), len);
    return http_parse(p);
}

static enum http_parse_result feed_str(struct http_parser *p, const char *text)
{
    return feed_all(p, text, strlen(text));
}

/* Feeds text to a fresh parser and expects it refused with status. */
static void expect_refused(struct http_parser *p, const char *text, int status)
{
    http_parser_init(p);
    assert_int_equal(feed_str(p, text), HTTP_ERROR);
    assert_int_equal(p->error_status, status);
    assert_non_null(p->error);
    /* An error is final: nothing more is parsed on that connection. */
    assert_int_equal(feed_str(p, "GET / HTTP/1.1\r\n\r\n"), HTTP_ERROR);
}

static void test_simple_get(void **state)
{
    struct http_parser *p = *state;
    assert_int_equal(feed_str(p, "GET /vm HTTP/1.1\r\nHost: localhost\r\n\r\n"), HTTP_DONE);
    assert_string_equal(p->req.method, "GET");
    assert_string_equal(p->req.path, "/vm");
    assert_null(p->req.query);
    assert_int_equal(p->req.version_minor, 1);
    assert_false(p->req.close);
    assert_null(p->req.content_type);
    assert_int_equal(p->req.body_len, 0);
    /* Asking again before next() gives the same request. */
    assert_int_equal(http_parse(p), HTTP_DONE);
    http_parser_next(p);
    assert_false(http_parser_pending(p));
    assert_int_equal(http_parse(p), HTTP_NEED_MORE);
}

static void test_query_is_split_from_path(void **state)
{
    struct http_parser *p = *state;
    assert_int_equal(feed_str(p, "GET /vm/info?verbose=1&x HTTP/1.1\r\n\r\n"), HTTP_DONE);
    assert_string_equal(p->req.path, "/vm/info");
    assert_string_equal(p->req.query, "verbose=1&x");
}

static const char put_request[] = "PUT /vm/state HTTP/1.1\r\n"
                                  "Host: localhost\r\n"
                                  "Content-Type: application/json\r\n"
                                  "Content-Length: 20\r\n"
                                  "\r\n"
                                  "{\"state\": \"paused\"}\n";

static void check_put_request(const struct http_parser *p)
{
    assert_string_equal(p->req.method, "PUT");
    assert_string_equal(p->req.path, "/vm/state");
    assert_string_equal(p->req.content_type, "application/json");
    assert_int_equal(p->req.body_len, 20);
    assert_memory_equal(p->req.body, "{\"state\": \"paused\"}\n", 20);
}

static void test_put_with_body(void **state)
{
    struct http_parser *p = *state;
    assert_int_equal(feed_str(p, put_request), HTTP_DONE);
    check_put_request(p);
}

static void test_byte_by_byte(void **state)
{
    struct http_parser *p = *state;
    size_t len = strlen(put_request);
    for (size_t i = 0; i + 1 < len; i++)
        assert_int_equal(feed_all(p, &put_request[i], 1), HTTP_NEED_MORE);
    assert_true(http_parser_pending(p));
    assert_int_equal(feed_all(p, &put_request[len - 1], 1), HTTP_DONE);
    check_put_request(p);
}

static void test_every_split_point(void **state)
{
    struct http_parser *p = *state;
    size_t len = strlen(put_request);
    for (size_t split = 1; split < len; split++) {
        http_parser_init(p);
        assert_int_equal(feed_all(p, put_request, split), HTTP_NEED_MORE);
        assert_int_equal(feed_all(p, put_request + split, len - split), HTTP_DONE);
        check_put_request(p);
    }
}

static void test_pipelined_requests(void **state)
{
    struct http_parser *p = *state;
    const char two[] = "POST /vm/pause HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}"
                       "GET /vm HTTP/1.1\r\n\r\n"
                       "DELETE /vm HT";
    assert_int_equal(feed_str(p, two), HTTP_DONE);
    assert_string_equal(p->req.method, "POST");
    assert_memory_equal(p->req.body, "{}", 2);
    http_parser_next(p);
    assert_int_equal(http_parse(p), HTTP_DONE);
    assert_string_equal(p->req.method, "GET");
    assert_string_equal(p->req.path, "/vm");
    http_parser_next(p);
    assert_int_equal(http_parse(p), HTTP_NEED_MORE);
    assert_true(http_parser_pending(p));
    assert_int_equal(feed_str(p, "TP/1.1\r\nConnection: close\r\n\r\n"), HTTP_DONE);
    assert_string_equal(p->req.method, "DELETE");
    assert_true(p->req.close);
}

static void test_header_names_case_insensitive(void **state)
{
    struct http_parser *p = *state;
    assert_int_equal(feed_str(p, "PATCH /vm HTTP/1.1\r\ncOnTeNt-LeNgTh:3\r\n"
                                 "CONTENT-TYPE:  text/plain  \r\nconnection: Keep-Alive, CLOSE\r\n"
                                 "X-Other: ignored\r\n\r\nabc"),
                     HTTP_DONE);
    assert_int_equal(p->req.body_len, 3);
    assert_string_equal(p->req.content_type, "text/plain");
    assert_true(p->req.close);
}

static void test_http_1_0(void **state)
{
    struct http_parser *p = *state;
    assert_int_equal(feed_str(p, "GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"), HTTP_DONE);
    assert_int_equal(p->req.version_minor, 0);
    assert_true(p->req.close);
    /* A later 1.x minor version is read as 1.1. */
    http_parser_init(p);
    assert_int_equal(feed_str(p, "GET / HTTP/1.7\r\n\r\n"), HTTP_DONE);
    assert_int_equal(p->req.version_minor, 1);
}

static char *request_with_head_of(size_t head_len)
{
    static const char start[] = "GET / HTTP/1.1\r\nX-Pad: ";
    char *text = malloc(head_len + 1);
    assert_non_null(text);
    size_t pad = head_len - strlen(start) - 4;
    memcpy(text, start, strlen(start));
    memset(text + strlen(start), 'a', pad);
    memcpy(text + strlen(start) + pad, "\r\n\r\n", 5);
    assert_int_equal(strlen(text), head_len);
    return text;
}

static void test_head_size_limit(void **state)
{
    struct http_parser *p = *state;
    char *at_limit = request_with_head_of(HTTP_MAX_HEAD);
    char *over = request_with_head_of(HTTP_MAX_HEAD + 1);
    assert_int_equal(feed_str(p, at_limit), HTTP_DONE);
    expect_refused(p, over, 431);
    /* A head that never ends is refused as soon as it passes the limit. */
    memset(over + HTTP_MAX_HEAD - 4, 'a', 5);
    http_parser_init(p);
    assert_int_equal(feed_all(p, over, HTTP_MAX_HEAD), HTTP_NEED_MORE);
    assert_int_equal(feed_all(p, "a", 1), HTTP_ERROR);
    assert_int_equal(p->error_status, 431);
    free(at_limit);
    free(over);
}

static void test_body_size_limit(void **state)
{
    struct http_parser *p = *state;
    char head[128];
    char *body = calloc(1, HTTP_MAX_BODY);
    assert_non_null(body);

    snprintf(head, sizeof(head), "PUT /vm HTTP/1.1\r\nContent-Length: %d\r\n\r\n", HTTP_MAX_BODY);
    assert_int_equal(feed_str(p, head), HTTP_NEED_MORE);
    assert_int_equal(feed_all(p, body, HTTP_MAX_BODY), HTTP_DONE);
    assert_int_equal(p->req.body_len, HTTP_MAX_BODY);
    /* Refused from the head alone, before the body is sent. */
    snprintf(head, sizeof(head), "PUT /vm HTTP/1.1\r\nContent-Length: %d\r\n\r\n", HTTP_MAX_BODY + 1);
    expect_refused(p, head, 413);
    expect_refused(p, "PUT /vm HTTP/1.1\r\nContent-Length: 99999999999999999999999999\r\n\r\n", 413);
    free(body);
}

/* A parser that takes large bodies reports their head with the part of the body held; one that
 * does not refuses them (above); the limit past which even a streamed body is refused. */
static void test_large_body_head(void **state)
{
    struct http_parser *p = *state;
    char text[256];
    p->large_bodies = true;
    int n = snprintf(text, sizeof(text), "PUT /vm/agent/file?path=/x HTTP/1.1\r\n"
                     "Content-Length: %d\r\nExpect: 100-continue\r\n\r\nabc", HTTP_MAX_BODY + 10);
    assert_int_equal(feed_all(p, text, (size_t)n), HTTP_HEAD);
    assert_string_equal(p->req.path, "/vm/agent/file");
    assert_string_equal(p->req.query, "path=/x");
    assert_int_equal(p->req.body_len, 3);
    assert_memory_equal(p->req.body, "abc", 3);
    assert_int_equal(p->req.body_pending, HTTP_MAX_BODY + 7);
    assert_true(http_parser_take_continue(p));
    http_parser_refuse(p);
    assert_int_equal(http_parse(p), HTTP_ERROR);
    assert_int_equal(p->error_status, 413);

    /* Bytes held past the body's end are not its own. */
    http_parser_init(p);
    p->large_bodies = true;
    char *big = malloc(HTTP_MAX_BODY + 64);
    assert_non_null(big);
    memset(big, 'b', HTTP_MAX_BODY + 64);
    n = snprintf(text, sizeof(text), "PUT /f HTTP/1.1\r\nContent-Length: %d\r\n\r\n", HTTP_MAX_BODY + 1);
    assert_int_equal(feed_all(p, text, (size_t)n), HTTP_HEAD);
    assert_int_equal(p->req.body_len, 0);
    assert_int_equal(feed_all(p, big, HTTP_MAX_BODY + 64), HTTP_HEAD);
    assert_int_equal(p->req.body_len, HTTP_MAX_BODY + 1);
    assert_int_equal(p->req.body_pending, 0);
    free(big);

    /* Small bodies are whole requests as before. */
    http_parser_init(p);
    p->large_bodies = true;
    assert_int_equal(feed_str(p, "PUT /f HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi"), HTTP_DONE);
    assert_int_equal(p->req.body_pending, 0);
    http_parser_next(p);
    assert_true(p->large_bodies);

    snprintf(text, sizeof(text), "PUT /f HTTP/1.1\r\nContent-Length: %llu\r\n\r\n",
             HTTP_MAX_STREAMED + 1);
    http_parser_init(p);
    p->large_bodies = true;
    assert_int_equal(feed_str(p, text), HTTP_ERROR);
    assert_int_equal(p->error_status, 413);
}

static void test_bad_content_length(void **state)
{
    struct http_parser *p = *state;
    static const char *const bad[] = { "-1", "abc", "", "+5", "0x10", "5, 5", "1 2", "3.0" };
    char text[128];
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        snprintf(text, sizeof(text), "PUT / HTTP/1.1\r\nContent-Length: %s\r\n\r\n", bad[i]);
        expect_refused(p, text, 400);
    }
    expect_refused(p, "PUT / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd", 400);
    /* The same value twice is harmless. */
    http_parser_init(p);
    assert_int_equal(feed_str(p, "PUT / HTTP/1.1\r\nContent-Length: 3\r\ncontent-length: 3\r\n\r\nabc"),
                     HTTP_DONE);
    assert_int_equal(p->req.body_len, 3);
}

static void test_transfer_encoding_refused(void **state)
{
    struct http_parser *p = *state;
    expect_refused(p, "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", 501);
    expect_refused(p, "POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: gzip\r\n\r\n", 501);
}

static void test_malformed_requests(void **state)
{
    struct http_parser *p = *state;
    expect_refused(p, "GET /\r\n\r\n", 400);                          /* no version */
    expect_refused(p, "GET\r\n\r\n", 400);                            /* no target */
    expect_refused(p, "GET / HTTP/2.0\r\n\r\n", 505);
    expect_refused(p, "GET / HTTP/1.1 extra\r\n\r\n", 400);
    expect_refused(p, "GET / http/1.1\r\n\r\n", 400);
    expect_refused(p, "GET  / HTTP/1.1\r\n\r\n", 400);                /* two spaces */
    expect_refused(p, "GET http://host/ HTTP/1.1\r\n\r\n", 400);      /* absolute form */
    expect_refused(p, "GET /a#frag HTTP/1.1\r\n\r\n", 400);
    expect_refused(p, "GET /\xc3\xa9 HTTP/1.1\r\n\r\n", 400);
    expect_refused(p, "G(T / HTTP/1.1\r\n\r\n", 400);
    expect_refused(p, "\r\nGET / HTTP/1.1\r\n\r\n", 400);
    expect_refused(p, "GET / HTTP/1.1\r\nNo colon here\r\n\r\n", 400);
    expect_refused(p, "GET / HTTP/1.1\r\nName : v\r\n\r\n", 400);     /* space before ':' */
    expect_refused(p, "GET / HTTP/1.1\r\n: v\r\n\r\n", 400);
    expect_refused(p, "GET / HTTP/1.1\r\nA: b\r\n folded\r\n\r\n", 400);
    expect_refused(p, "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400);
    expect_refused(p, "GET / HTTP/1.1\r\nExpect: 200-ok\r\n\r\n", 417);
}

static void test_garbage_fails_fast(void **state)
{
    struct http_parser *p = *state;
    /* A TLS ClientHello, a bare-LF line, a NUL: refused at once, not after 8 KiB. */
    expect_refused(p, "\x16\x03\x01\x02\x00\x01", 400);
    expect_refused(p, "hello\n", 400);
    expect_refused(p, "GET / HTTP/1.1\rX", 400);
    http_parser_init(p);
    assert_int_equal(feed_all(p, "GET /\0 HTTP/1.1\r\n\r\n", 19), HTTP_ERROR);
    assert_int_equal(p->error_status, 400);
}

static void test_random_bytes_never_crash(void **state)
{
    struct http_parser *p = *state;
    unsigned seed = 12345;
    char chunk[257];
    for (int round = 0; round < 2000; round++) {
        http_parser_init(p);
        /* Mostly printable, with CR/LF and spaces, so that some inputs get deep. */
        for (int feeds = 0; feeds < 8; feeds++) {
            size_t n = (size_t)(rand_r(&seed) % 256);
            for (size_t i = 0; i < n; i++) {
                int r = rand_r(&seed) % 100;
                chunk[i] = r < 5 ? '\r' : r < 10 ? '\n' : r < 20 ? ' ' : r < 22 ? ':' :
                           r < 23 ? (char)(rand_r(&seed) & 0xff) : (char)('A' + r % 26);
            }
            http_parser_feed(p, chunk, n);
            enum http_parse_result res = http_parse(p);
            if (res == HTTP_DONE)
                http_parser_next(p);
            else if (res == HTTP_ERROR)
                break;
        }
    }
}

static void test_expect_continue(void **state)
{
    struct http_parser *p = *state;
    assert_int_equal(feed_str(p, "PUT / HTTP/1.1\r\nExpect: 100-Continue\r\nContent-Length: 2\r\n\r\n"),
                     HTTP_NEED_MORE);
    assert_true(http_parser_take_continue(p));
    assert_false(http_parser_take_continue(p));
    assert_int_equal(feed_str(p, "{}"), HTTP_DONE);
}

static void test_room_bounds_the_buffer(void **state)
{
    struct http_parser *p = *state;
    char *big = calloc(1, sizeof(p->buf) + 10);
    assert_non_null(big);
    size_t room = http_parser_room(p);
    assert_int_equal(room, HTTP_MAX_HEAD + HTTP_MAX_BODY);
    assert_int_equal(http_parser_feed(p, big, room + 10), room);
    assert_int_equal(http_parser_room(p), 0);
    assert_int_equal(http_parser_feed(p, big, 1), 0);
    free(big);
}

static void test_format_response(void **state)
{
    (void)state;
    char buf[256];
    const char *body = "{\"state\":\"running\"}";
    int n = http_format_response(buf, sizeof(buf), 200, "application/json", body, strlen(body), false);
    const char *expected = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                           "Content-Length: 19\r\n\r\n{\"state\":\"running\"}";
    assert_int_equal(n, strlen(expected));
    assert_memory_equal(buf, expected, strlen(expected));

    n = http_format_response(buf, sizeof(buf), 204, NULL, NULL, 0, true);
    expected = "HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n";
    assert_int_equal(n, strlen(expected));
    assert_memory_equal(buf, expected, strlen(expected));

    n = http_format_response(buf, sizeof(buf), 202, NULL, NULL, 0, false);
    expected = "HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n";
    assert_memory_equal(buf, expected, strlen(expected));

    assert_int_equal(http_format_response(buf, 40, 200, "application/json", body, strlen(body), false),
                     -ENOSPC);
    assert_int_equal(http_format_response(buf, sizeof(buf), 204, "text/plain", "x", 1, false), -EINVAL);
    assert_int_equal(http_format_response(buf, sizeof(buf), 99, NULL, NULL, 0, false), -EINVAL);
    assert_int_equal(http_format_response(buf, sizeof(buf), 600, NULL, NULL, 0, false), -EINVAL);
    assert_int_equal(http_format_response(buf, sizeof(buf), 200, "a\r\nX-Evil: 1", "x", 1, false),
                     -EINVAL);
    assert_string_equal(http_reason(413), "Content Too Large");
    assert_string_equal(http_reason(431), "Request Header Fields Too Large");
    assert_string_equal(http_reason(499), "Client Error");
}

static void test_json_error_escaping(void **state)
{
    (void)state;
    char buf[256];
    const char *message = "say \"hi\"\nback\\slash\x01 /path";
    int n = http_error_body(buf, sizeof(buf), message);
    assert_int_equal(n, strlen(buf));
    assert_string_equal(buf, "{\"error\":\"say \\\"hi\\\"\\nback\\\\slash\\u0001 /path\"}");

    /* A JSON parser gets the message back byte for byte. */
    struct json_object *obj = json_tokener_parse(buf), *text;
    assert_non_null(obj);
    assert_true(json_object_object_get_ex(obj, "error", &text));
    assert_string_equal(json_object_get_string(text), message);
    json_object_put(obj);

    assert_int_equal(http_error_body(buf, 10, message), -ENOSPC);
}

static void test_format_error_response(void **state)
{
    (void)state;
    char buf[256];
    int n = http_format_error(buf, sizeof(buf), 405, "PUT is not allowed on /vm", "GET, PATCH", true);
    const char *expected = "HTTP/1.1 405 Method Not Allowed\r\nContent-Type: application/json\r\n"
                           "Content-Length: 37\r\nAllow: GET, PATCH\r\nConnection: close\r\n\r\n"
                           "{\"error\":\"PUT is not allowed on /vm\"}";
    assert_int_equal(n, strlen(expected));
    assert_memory_equal(buf, expected, strlen(expected));
}

static void handler_stub(void *ctx, const struct http_request *req, struct http_response *resp)
{
    (void)ctx, (void)req, (void)resp;
}

static const struct http_route routes[] = {
    { "GET", "/vm", handler_stub },
    { "PATCH", "/vm", handler_stub },
    { "PUT", "/vm/state", handler_stub },
    { "GET", "/vm/state", handler_stub },
    { "DELETE", "/vm/devices", handler_stub },
};

static void test_router(void **state)
{
    (void)state;
    char allow[HTTP_ALLOW_MAX];
    int status;
    size_t n = sizeof(routes) / sizeof(routes[0]);

    assert_ptr_equal(http_route_find(routes, n, "GET", "/vm", &status, allow, sizeof(allow)), &routes[0]);
    assert_int_equal(status, 200);
    assert_ptr_equal(http_route_find(routes, n, "PUT", "/vm/state", &status, allow, sizeof(allow)),
                     &routes[2]);

    assert_null(http_route_find(routes, n, "DELETE", "/vm", &status, allow, sizeof(allow)));
    assert_int_equal(status, 405);
    assert_string_equal(allow, "GET, PATCH");

    assert_null(http_route_find(routes, n, "GET", "/nope", &status, allow, sizeof(allow)));
    assert_int_equal(status, 404);
    assert_string_equal(allow, "");
    assert_null(http_route_find(routes, n, "GET", "/vm/", &status, allow, sizeof(allow)));
    assert_int_equal(status, 404);

    /* Methods the API never takes, on any path. */
    assert_null(http_route_find(routes, n, "BREW", "/vm", &status, allow, sizeof(allow)));
    assert_int_equal(status, 501);
    assert_null(http_route_find(routes, n, "get", "/nope", &status, allow, sizeof(allow)));
    assert_int_equal(status, 501);
    assert_null(http_route_find(routes, n, "HEAD", "/vm", &status, allow, sizeof(allow)));
    assert_int_equal(status, 501);

    /* A short Allow buffer holds whole methods only. */
    assert_null(http_route_find(routes, n, "POST", "/vm", &status, allow, 8));
    assert_int_equal(status, 405);
    assert_string_equal(allow, "GET");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        parser_test(test_simple_get),
        parser_test(test_query_is_split_from_path),
        parser_test(test_put_with_body),
        parser_test(test_byte_by_byte),
        parser_test(test_every_split_point),
        parser_test(test_pipelined_requests),
        parser_test(test_header_names_case_insensitive),
        parser_test(test_http_1_0),
        parser_test(test_head_size_limit),
        parser_test(test_body_size_limit),
        parser_test(test_bad_content_length),
        parser_test(test_transfer_encoding_refused),
        parser_test(test_malformed_requests),
        parser_test(test_garbage_fails_fast),
        parser_test(test_random_bytes_never_crash),
        parser_test(test_expect_continue),
        parser_test(test_room_bounds_the_buffer),
        cmocka_unit_test(test_format_response),
        cmocka_unit_test(test_json_error_escaping),
        cmocka_unit_test(test_format_error_response),
        cmocka_unit_test(test_router),
        parser_test(test_large_body_head),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
