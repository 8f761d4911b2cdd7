/* fuzz_http.c: the API's HTTP/1.1 request parser, fed in pieces, pipelined requests and all. */
#include "api/http.h"
#include "fuzz_common.h"

static const struct http_route routes[] = {
    { "GET", "/vm", NULL },
    { "PUT", "/vm/pause", NULL },
    { "PATCH", "/vm", NULL },
    { "POST", "/vm/snapshot", NULL },
};

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fuzz_quiet();
    return 0;
}

/* A request the parser hands over must be what it promises: strings inside its buffer. */
static void check_request(const struct http_parser *p)
{
    const struct http_request *r = &p->req;
    const char *end = p->buf + sizeof(p->buf);
    char allow[HTTP_ALLOW_MAX];
    char out[512];
    int status = 0;

    FUZZ_CHECK(r->method && r->path && r->path[0] == '/');
    FUZZ_CHECK(r->method >= p->buf && r->method < end);
    FUZZ_CHECK(r->path >= p->buf && r->path < end);
    FUZZ_CHECK(r->body_len <= HTTP_MAX_BODY);
    if (r->body_len)
        FUZZ_CHECK(r->body >= p->buf && r->body + r->body_len <= end);
    if (!http_route_find(routes, sizeof(routes) / sizeof(routes[0]), r->method, r->path,
                         &status, allow, sizeof(allow)))
        FUZZ_CHECK(status == 404 || status == 405 || status == 501);
    (void)http_format_error(out, sizeof(out), 404, r->path, NULL, r->close);
}

/* A body over HTTP_MAX_BODY, handed over after its head (HTTP_HEAD): what was read of it lies
 * in the buffer, and with what is still to come it makes the announced length. */
static void check_large_head(const struct http_parser *p)
{
    const struct http_request *r = &p->req;
    FUZZ_CHECK(r->method && r->path && r->path[0] == '/');
    FUZZ_CHECK(r->method >= p->buf && r->path >= p->buf && r->path < p->buf + p->head_len);
    FUZZ_CHECK(p->content_length > HTTP_MAX_BODY && p->content_length <= HTTP_MAX_STREAMED);
    FUZZ_CHECK(r->body_len + r->body_pending == p->content_length);
    FUZZ_CHECK(r->body >= p->buf && r->body + r->body_len <= p->buf + p->len);
}

/* The first byte picks the size of the pieces the rest arrives in, as reads from a socket.
 * Large bodies are on, as the API server has them (a route may read its body itself). */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct http_parser *p;
    size_t chunk, off = 1;
    char out[512];

    if (size < 1)
        return 0;
    if (!p && !(p = malloc(sizeof(*p))))
        abort();
    http_parser_init(p);
    p->large_bodies = true;
    chunk = data[0] ? data[0] : size;
    while (off < size) {
        size_t want = size - off < chunk ? size - off : chunk;
        size_t room = http_parser_room(p);
        size_t took = http_parser_feed(p, data + off, want < room ? want : room);
        enum http_parse_result res;

        off += took;
        (void)http_parser_take_continue(p);
        while ((res = http_parse(p)) == HTTP_DONE) {
            check_request(p);
            http_parser_next(p);
        }
        if (res == HTTP_HEAD) {
            check_large_head(p);
            http_parser_refuse(p); /* the server's answer when no route takes it */
            res = http_parse(p);
            FUZZ_CHECK(res == HTTP_ERROR && p->error_status == 413);
        }
        if (res == HTTP_ERROR) {
            FUZZ_CHECK(p->error_status >= 400 && p->error_status < 600 && p->error);
            (void)http_format_error(out, sizeof(out), p->error_status, p->error, NULL, true);
            break;
        }
        if (took == 0)
            break; /* full: the parser takes no more and wants more */
    }
    (void)http_parser_pending(p);
    return 0;
}
