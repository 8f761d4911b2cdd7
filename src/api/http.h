/* http.h: a small, strict HTTP/1.1 request parser, response writer and router for the API. */
#ifndef GODWIT_HTTP_H
#define GODWIT_HTTP_H

#include <stdbool.h>
#include <stddef.h>

#ifndef HTTP_MAX_HEAD
#define HTTP_MAX_HEAD 8192 /* request line, headers and the blank line; more: 431 */
#endif
#ifndef HTTP_MAX_BODY
#define HTTP_MAX_BODY 65536 /* Content-Length; more: 413 */
#endif
#define HTTP_MAX_METHOD 16
#define HTTP_ALLOW_MAX 64 /* enough for "GET, PUT, PATCH, POST, DELETE" */

#define HTTP_MAX_STREAMED (1ull << 40) /* Content-Length of a body a route reads itself */

/* HTTP_HEAD only where the caller asked for it (http_parser.large_bodies). */
enum http_parse_result { HTTP_NEED_MORE, HTTP_DONE, HTTP_ERROR, HTTP_HEAD };

/* One request. Its strings point into the parser's buffer: valid until http_parser_next(). */
struct http_request {
    const char *method;       /* as sent; the router decides which it takes */
    const char *path;         /* the target up to '?', always starting with '/' */
    const char *query;        /* what follows '?', or NULL */
    unsigned version_minor;   /* 1: HTTP/1.1, 0: HTTP/1.0 */
    bool close;               /* close the connection after the response */
    const char *content_type; /* NULL: none sent */
    const char *body;         /* body_len bytes, not NUL-terminated */
    size_t body_len;
    size_t body_pending;      /* after HTTP_HEAD: the body's bytes still to read from the socket */
};

/*
 * One connection's parser. The caller feeds it the bytes it reads from the socket and calls
 * http_parse() after each feed. Large (it holds a whole request): allocate it, not on a stack.
 */
struct http_parser {
    int error_status;        /* after HTTP_ERROR: the status to answer before closing */
    const char *error;       /* after HTTP_ERROR: what was wrong, for the error body */
    struct http_request req; /* after HTTP_DONE */
    size_t len;              /* bytes held in buf */
    size_t scanned;          /* the search for the end of the head resumes here */
    size_t head_len;         /* 0 until the head is complete and valid */
    size_t content_length;
    bool expect_continue;    /* the client waits for "100 Continue" before its body */
    /* Set by the caller after http_parser_init(): a body over HTTP_MAX_BODY (up to
     * HTTP_MAX_STREAMED) is not refused with 413 but reported as HTTP_HEAD, for the caller
     * to hand to a route that reads it from the socket itself, or to refuse. */
    bool large_bodies;
    char buf[HTTP_MAX_HEAD + HTTP_MAX_BODY];
};

void http_parser_init(struct http_parser *p);
/* How many more bytes the parser takes now (read no more than this from the socket). */
size_t http_parser_room(const struct http_parser *p);
/* Copies up to len bytes in; returns how many it took. Those left over belong to a pipelined
 * request: feed them again after http_parser_next(). */
size_t http_parser_feed(struct http_parser *p, const void *data, size_t len);
/*
 * HTTP_NEED_MORE: feed more. HTTP_DONE: p->req is complete. HTTP_ERROR: answer
 * p->error_status (400, 413, 417, 431, 501 or 505) with p->error, then close the connection;
 * the parser stays in error. HTTP_HEAD (p->large_bodies only): the head is complete and its
 * body larger than HTTP_MAX_BODY; p->req.body holds the part of it read so far (body_len
 * bytes), body_pending bytes more are to come; feed no more: take the connection over, or
 * http_parser_refuse() it.
 */
enum http_parse_result http_parse(struct http_parser *p);
/* After HTTP_HEAD: the body is refused (413); the parser is now in error. */
void http_parser_refuse(struct http_parser *p);
/* After HTTP_DONE: drops that request, keeping the bytes of the next one. */
void http_parser_next(struct http_parser *p);
/* Whether part of a request is held: a timeout now is a 408, not an idle close. */
bool http_parser_pending(const struct http_parser *p);
/* True once, when the head asked "Expect: 100-continue" and the body has not come: the caller
 * then sends "HTTP/1.1 100 Continue\r\n\r\n" (or its final answer). */
bool http_parser_take_continue(struct http_parser *p);

struct http_response {
    int status;
    const char *content_type; /* NULL: no body */
    const char *body;
    size_t body_len;
    const char *allow; /* an Allow header (405), or NULL */
    bool close;        /* adds "Connection: close"; the caller closes after sending */
};

/* resp becomes `status` with {"error": message} as its body, written into buf (len bytes,
 * which must outlive resp). */
void http_error_response(struct http_response *resp, char *buf, size_t len, int status,
                         const char *message);
/* The standard reason phrase, or a generic one for a status it does not know. */
const char *http_reason(int status);
/* Writes the whole response (head and body) into buf. Returns its length, -ENOSPC when buf is
 * too small, or -EINVAL for an impossible response (a status outside 100-599, a body on 204). */
int http_format(char *buf, size_t len, const struct http_response *resp);
int http_format_response(char *buf, size_t len, int status, const char *content_type,
                         const char *body, size_t body_len, bool close);
/* {"error":"message"}, with the message escaped by json-c. Returns its length or -errno. */
int http_error_body(char *buf, size_t len, const char *message);
/* A whole application/json error response; allow: for 405, else NULL. */
int http_format_error(char *buf, size_t len, int status, const char *message, const char *allow,
                      bool close);

/* A handler fills resp; its body must stay valid until the response is formatted. */
typedef void (*http_handler_fn)(void *ctx, const struct http_request *req,
                                struct http_response *resp);

struct http_route {
    const char *method;
    const char *path; /* matched exactly */
    http_handler_fn handler;
    bool large_body;  /* takes a body over HTTP_MAX_BODY, reading it from the socket itself */
};

/*
 * The route for method and path, or NULL with *status: 501 for a method this API never takes
 * (only GET, PUT, PATCH, POST and DELETE), 404 for no such path, 405 when the path takes
 * other methods; allow (HTTP_ALLOW_MAX bytes) then lists them for the Allow header.
 */
const struct http_route *http_route_find(const struct http_route *routes, size_t nr_routes,
                                         const char *method, const char *path, int *status,
                                         char *allow, size_t allow_len);

#endif
