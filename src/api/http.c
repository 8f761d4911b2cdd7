/* http.c: a small, strict HTTP/1.1 request parser, response writer and router for the API. */
#define _GNU_SOURCE
#include "api/http.h"

#include <errno.h>
#include <json-c/json.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

/* What the headers said, gathered while they are read and judged once all are in. */
struct head_fields {
    bool has_length, has_host, has_content_type, close;
    size_t length;
};

void http_parser_init(struct http_parser *p)
{
    /* The buffer needs no clearing: only its first `len` bytes are ever read. */
    memset(p, 0, offsetof(struct http_parser, buf));
}

size_t http_parser_room(const struct http_parser *p)
{
    return sizeof(p->buf) - p->len;
}

size_t http_parser_feed(struct http_parser *p, const void *data, size_t len)
{
    size_t taken = len < http_parser_room(p) ? len : http_parser_room(p);
    if (taken == 0)
        return 0;
    memcpy(p->buf + p->len, data, taken);
    p->len += taken;
    return taken;
}

bool http_parser_pending(const struct http_parser *p)
{
    return p->len > 0;
}

static int parse_fail(struct http_parser *p, int status, const char *why)
{
    p->error_status = status;
    p->error = why;
    return -1;
}

/* RFC 9110's tchar: what a method or a header name is made of. */
static bool is_token_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c != '\0' && strchr("!#$%&'*+-.^_`|~", c));
}

static bool is_token(const char *s)
{
    if (!*s)
        return false;
    for (; *s; s++)
        if (!is_token_char(*s))
            return false;
    return true;
}

static bool is_control(unsigned char c)
{
    return (c < 0x20 && c != '\t' && c != '\r' && c != '\n') || c == 0x7f;
}

/* Why the byte at i cannot be part of a request head, or NULL. */
static const char *bad_head_byte(const char *buf, size_t i)
{
    unsigned char c = (unsigned char)buf[i];
    bool after_cr = i > 0 && buf[i - 1] == '\r';
    if (is_control(c))
        return "a control character in the request head";
    if (after_cr && c != '\n')
        return "a CR not followed by LF";
    if (c == '\n' && !after_cr)
        return "a line that ends in a bare LF";
    return NULL;
}

/*
 * Looks for the blank line that ends the head, from where the last call stopped. A byte no
 * head may hold fails at once, so that garbage is answered without waiting for 8 KiB of it.
 * Returns the head's length, or 0: not complete yet, or failed (p->error_status set).
 */
static size_t scan_head(struct http_parser *p)
{
    for (size_t i = p->scanned; i < p->len; i++) {
        if (i >= HTTP_MAX_HEAD) {
            parse_fail(p, 431, "the request head is too large");
            return 0;
        }
        const char *why = bad_head_byte(p->buf, i);
        if (why) {
            parse_fail(p, 400, why);
            return 0;
        }
        if (p->buf[i] == '\n' && i >= 3 && memcmp(&p->buf[i - 3], "\r\n\r\n", 4) == 0)
            return i + 1;
    }
    p->scanned = p->len;
    return 0;
}

/* Ends the line at *cursor (its CRLF becomes NUL) and moves *cursor to the next one. */
static char *take_line(char **cursor, const char *end)
{
    char *line = *cursor;
    char *cr = memchr(line, '\r', (size_t)(end - line));
    if (!cr)
        return NULL;
    *cr = '\0';
    *cursor = cr + 2;
    return line;
}

static int parse_target(struct http_parser *p, char *target)
{
    if (target[0] != '/')
        return parse_fail(p, 400, "the request target must be a path starting with '/'");
    for (const char *c = target; *c; c++)
        if ((unsigned char)*c <= 0x20 || (unsigned char)*c >= 0x7f || *c == '#')
            return parse_fail(p, 400, "the request target holds a character a URL may not");
    char *question = strchr(target, '?');
    if (question)
        *question = '\0';
    p->req.path = target;
    p->req.query = question ? question + 1 : NULL;
    return 0;
}

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

static int parse_version(struct http_parser *p, const char *version)
{
    if (strlen(version) != 8 || strncmp(version, "HTTP/", 5) != 0 || !is_digit(version[5]) ||
        version[6] != '.' || !is_digit(version[7]))
        return parse_fail(p, 400, "the request line does not end in HTTP/1.1 or HTTP/1.0");
    if (version[5] != '1')
        return parse_fail(p, 505, "only HTTP/1.1 and HTTP/1.0 are supported");
    /* A later 1.x is read as 1.1, the highest this server implements (RFC 9112, 2.3). */
    p->req.version_minor = version[7] == '0' ? 0 : 1;
    return 0;
}

/* METHOD SP TARGET SP VERSION, single spaces. */
static int parse_request_line(struct http_parser *p, char *line)
{
    char *target = strchr(line, ' ');
    if (!target)
        return parse_fail(p, 400, "the request line has no target");
    *target++ = '\0';
    char *version = strchr(target, ' ');
    if (!version)
        return parse_fail(p, 400, "the request line has no HTTP version");
    *version++ = '\0';
    if (!is_token(line) || strlen(line) > HTTP_MAX_METHOD)
        return parse_fail(p, 400, "the method is not a valid token");
    p->req.method = line;
    if (parse_target(p, target) < 0)
        return -1;
    return parse_version(p, version);
}

static int take_content_length(struct http_parser *p, struct head_fields *f, const char *value)
{
    size_t length = 0, limit = p->large_bodies ? (size_t)HTTP_MAX_STREAMED : HTTP_MAX_BODY;
    if (!*value)
        return parse_fail(p, 400, "Content-Length is empty");
    for (const char *c = value; *c; c++) {
        if (!is_digit(*c))
            return parse_fail(p, 400, "Content-Length is not a decimal number");
        /* Saturates just above the limit: no overflow, however many digits. */
        length = length > limit ? length : length * 10 + (size_t)(*c - '0');
    }
    if (f->has_length && f->length != length)
        return parse_fail(p, 400, "conflicting Content-Length headers");
    if (length > limit)
        return parse_fail(p, 413, "the request body is too large");
    f->has_length = true;
    f->length = length;
    return 0;
}

/* A comma-separated list of options; only "close" matters to us. */
static void take_connection(struct head_fields *f, const char *value)
{
    while (*value) {
        value += strspn(value, " \t,");
        size_t n = strcspn(value, " \t,");
        if (n == 5 && strncasecmp(value, "close", 5) == 0)
            f->close = true;
        value += n;
    }
}

static int take_once(struct http_parser *p, bool *seen, const char *why)
{
    if (*seen)
        return parse_fail(p, 400, why);
    *seen = true;
    return 0;
}

static int apply_header(struct http_parser *p, struct head_fields *f, const char *name,
                        const char *value)
{
    if (strcasecmp(name, "Content-Length") == 0)
        return take_content_length(p, f, value);
    if (strcasecmp(name, "Transfer-Encoding") == 0)
        return parse_fail(p, 501, "Transfer-Encoding is not supported: send Content-Length");
    if (strcasecmp(name, "Connection") == 0) {
        take_connection(f, value);
        return 0;
    }
    if (strcasecmp(name, "Host") == 0)
        return take_once(p, &f->has_host, "more than one Host header");
    if (strcasecmp(name, "Content-Type") == 0) {
        p->req.content_type = value;
        return take_once(p, &f->has_content_type, "more than one Content-Type header");
    }
    if (strcasecmp(name, "Expect") == 0) {
        if (strcasecmp(value, "100-continue") != 0)
            return parse_fail(p, 417, "the only expectation supported is 100-continue");
        p->expect_continue = true;
    }
    return 0;
}

/* Strips optional white space around a header value, in place. */
static char *trim_spaces(char *value)
{
    value += strspn(value, " \t");
    size_t len = strlen(value);
    while (len > 0 && (value[len - 1] == ' ' || value[len - 1] == '\t'))
        value[--len] = '\0';
    return value;
}

/* NAME ":" OWS VALUE OWS; a name with white space (or a folded line) is refused. */
static int parse_header_line(struct http_parser *p, struct head_fields *f, char *line)
{
    char *colon = strchr(line, ':');
    if (!colon)
        return parse_fail(p, 400, "a header line has no ':'");
    *colon = '\0';
    if (!is_token(line))
        return parse_fail(p, 400, "a header name is not a valid token");
    return apply_header(p, f, line, trim_spaces(colon + 1));
}

/* Parses the complete head in place: its lines become NUL-terminated strings. */
static int parse_head(struct http_parser *p, size_t head_len)
{
    struct head_fields fields = { 0 };
    char *cursor = p->buf;
    const char *end = p->buf + head_len;
    char *line = take_line(&cursor, end); /* never NULL: the head ends in CRLF CRLF */

    if (parse_request_line(p, line) < 0)
        return -1;
    while ((line = take_line(&cursor, end)) && *line)
        if (parse_header_line(p, &fields, line) < 0)
            return -1;
    /* HTTP/1.0 keep-alive would need a reply header we never send: one request, then close. */
    p->req.close = fields.close || p->req.version_minor == 0;
    p->content_length = fields.length;
    p->expect_continue = p->expect_continue && fields.length > 0;
    p->head_len = head_len;
    return 0;
}

enum http_parse_result http_parse(struct http_parser *p)
{
    if (p->error_status)
        return HTTP_ERROR;
    if (!p->head_len) {
        size_t head_len = scan_head(p);
        if (p->error_status)
            return HTTP_ERROR;
        if (!head_len)
            return HTTP_NEED_MORE;
        if (parse_head(p, head_len) < 0)
            return HTTP_ERROR;
    }
    p->req.body = p->buf + p->head_len;
    if (p->content_length > HTTP_MAX_BODY) {
        size_t held = p->len - p->head_len; /* may hold more than the body: not its part */
        p->req.body_len = held < p->content_length ? held : p->content_length;
        p->req.body_pending = p->content_length - p->req.body_len;
        return HTTP_HEAD;
    }
    if (p->len - p->head_len < p->content_length)
        return HTTP_NEED_MORE;
    p->req.body_len = p->content_length;
    p->req.body_pending = 0;
    return HTTP_DONE;
}

void http_parser_refuse(struct http_parser *p)
{
    parse_fail(p, 413, "the request body is too large");
}

bool http_parser_take_continue(struct http_parser *p)
{
    bool waiting = p->expect_continue && !p->error_status && p->head_len &&
                   p->len - p->head_len < p->content_length;
    if (waiting)
        p->expect_continue = false;
    return waiting;
}

void http_parser_next(struct http_parser *p)
{
    size_t used = p->head_len + p->content_length;
    if (p->error_status || !p->head_len || p->len < used)
        return; /* no complete request to drop */
    size_t rest = p->len - used;
    bool large_bodies = p->large_bodies;
    memmove(p->buf, p->buf + used, rest);
    http_parser_init(p);
    p->len = rest;
    p->large_bodies = large_bodies;
}

const char *http_reason(int status)
{
    static const struct {
        int status;
        const char *reason;
    } reasons[] = {
        { 100, "Continue" },
        { 200, "OK" },
        { 201, "Created" },
        { 202, "Accepted" },
        { 204, "No Content" },
        { 400, "Bad Request" },
        { 403, "Forbidden" },
        { 404, "Not Found" },
        { 405, "Method Not Allowed" },
        { 408, "Request Timeout" },
        { 409, "Conflict" },
        { 411, "Length Required" },
        { 413, "Content Too Large" },
        { 415, "Unsupported Media Type" },
        { 417, "Expectation Failed" },
        { 422, "Unprocessable Content" },
        { 429, "Too Many Requests" },
        { 431, "Request Header Fields Too Large" },
        { 500, "Internal Server Error" },
        { 501, "Not Implemented" },
        { 503, "Service Unavailable" },
        { 505, "HTTP Version Not Supported" },
    };
    for (size_t i = 0; i < sizeof(reasons) / sizeof(reasons[0]); i++)
        if (reasons[i].status == status)
            return reasons[i].reason;
    return status >= 500 ? "Server Error" : status >= 400 ? "Client Error" : "Other";
}

/* Appends to a fixed buffer, remembering whether anything did not fit. */
struct writer {
    char *buf;
    size_t len, used;
    bool overflow;
};

__attribute__((format(printf, 2, 3)))
static void put(struct writer *w, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(w->buf + w->used, w->len - w->used, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= w->len - w->used)
        w->overflow = true;
    else
        w->used += (size_t)n;
}

static void put_bytes(struct writer *w, const char *data, size_t len)
{
    if (len == 0)
        return;
    if (len > w->len - w->used) {
        w->overflow = true;
        return;
    }
    memcpy(w->buf + w->used, data, len);
    w->used += len;
}

static bool header_value_safe(const char *value)
{
    return !value || !strpbrk(value, "\r\n");
}

int http_format(char *buf, size_t len, const struct http_response *resp)
{
    int status = resp->status;
    bool bodiless = status < 200 || status == 204 || status == 304;
    struct writer w = { buf, len, 0, false };

    if (status < 100 || status > 599 || (bodiless && (resp->body_len || resp->content_type)) ||
        (resp->body_len && !resp->content_type) || !header_value_safe(resp->content_type) ||
        !header_value_safe(resp->allow))
        return -EINVAL;
    put(&w, "HTTP/1.1 %d %s\r\n", status, http_reason(status));
    if (resp->content_type)
        put(&w, "Content-Type: %s\r\n", resp->content_type);
    if (!bodiless)
        put(&w, "Content-Length: %zu\r\n", resp->body_len);
    if (resp->allow)
        put(&w, "Allow: %s\r\n", resp->allow);
    if (resp->close)
        put(&w, "Connection: close\r\n");
    put(&w, "\r\n");
    if (!w.overflow)
        put_bytes(&w, resp->body, resp->body_len);
    if (w.overflow)
        return -ENOSPC;
    return w.used > INT_MAX ? -EOVERFLOW : (int)w.used;
}

int http_format_response(char *buf, size_t len, int status, const char *content_type,
                         const char *body, size_t body_len, bool close)
{
    struct http_response resp = { .status = status, .content_type = content_type,
                                  .body = body, .body_len = body_len, .close = close };
    return http_format(buf, len, &resp);
}

/* {"error":"message"} as a json-c object; its text lives as long as the object. */
static struct json_object *error_object(const char *message)
{
    struct json_object *obj = json_object_new_object();
    struct json_object *text = json_object_new_string(message ? message : "");
    if (!obj || !text || json_object_object_add(obj, "error", text) < 0) {
        json_object_put(text);
        json_object_put(obj);
        return NULL;
    }
    return obj;
}

static const char *error_text(struct json_object *obj, size_t *len)
{
    return json_object_to_json_string_length(
        obj, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE, len);
}

int http_error_body(char *buf, size_t len, const char *message)
{
    struct json_object *obj = error_object(message);
    size_t text_len;
    const char *text = obj ? error_text(obj, &text_len) : NULL;
    int ret = -ENOMEM;
    if (text && text_len < len && text_len <= INT_MAX) {
        memcpy(buf, text, text_len + 1);
        ret = (int)text_len;
    } else if (text) {
        ret = -ENOSPC;
    }
    json_object_put(obj);
    return ret;
}

void http_error_response(struct http_response *resp, char *buf, size_t len, int status,
                         const char *message)
{
    int n = http_error_body(buf, len, message);
    resp->status = status;
    resp->content_type = "application/json";
    resp->body = buf;
    resp->body_len = n > 0 ? (size_t)n : 0;
}

int http_format_error(char *buf, size_t len, int status, const char *message, const char *allow,
                      bool close)
{
    struct json_object *obj = error_object(message);
    struct http_response resp = { .status = status, .content_type = "application/json",
                                  .allow = allow, .close = close };
    resp.body = obj ? error_text(obj, &resp.body_len) : NULL;
    int ret = resp.body ? http_format(buf, len, &resp) : -ENOMEM;
    json_object_put(obj);
    return ret;
}

static bool method_known(const char *method)
{
    static const char *const methods[] = { "GET", "PUT", "PATCH", "POST", "DELETE" };
    for (size_t i = 0; i < sizeof(methods) / sizeof(methods[0]); i++)
        if (strcmp(methods[i], method) == 0)
            return true;
    return false;
}

/* Adds ", METHOD" to the Allow list if it fits whole; the list stays NUL-terminated. */
static void allow_append(char *allow, size_t allow_len, const char *method)
{
    size_t used = strlen(allow);
    int n = snprintf(allow + used, allow_len - used, "%s%s", used ? ", " : "", method);
    if (n < 0 || (size_t)n >= allow_len - used)
        allow[used] = '\0';
}

const struct http_route *http_route_find(const struct http_route *routes, size_t nr_routes,
                                         const char *method, const char *path, int *status,
                                         char *allow, size_t allow_len)
{
    bool path_found = false;

    if (allow_len)
        allow[0] = '\0';
    if (!method_known(method)) {
        *status = 501;
        return NULL;
    }
    for (size_t i = 0; i < nr_routes; i++) {
        if (strcmp(routes[i].path, path) != 0)
            continue;
        if (strcmp(routes[i].method, method) == 0) {
            *status = 200;
            return &routes[i];
        }
        path_found = true;
        if (allow_len)
            allow_append(allow, allow_len, routes[i].method);
    }
    *status = path_found ? 405 : 404;
    return NULL;
}
