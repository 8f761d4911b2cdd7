/* client.c: a minimal HTTP/1.1 client for godwit's API on a UNIX socket (the CLI's side). */
#define _GNU_SOURCE
#include "api/client.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include "io/fd_io.h"

int api_connect(const char *socket_path)
{
    struct sockaddr_un addr = { .sun_family = AF_UNIX };
    if (strlen(socket_path) >= sizeof(addr.sun_path))
        return -ENAMETOOLONG;
    strcpy(addr.sun_path, socket_path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    if (connect(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0) {
        int err = -errno;
        close(fd);
        return err;
    }
    return fd;
}

/* Reads until the server closes (we always ask for Connection: close). */
static int read_all(int fd, char **out, size_t *out_len)
{
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    if (!buf)
        return -ENOMEM;
    for (;;) {
        if (len + 1 >= cap) {
            if (cap >= API_CLIENT_MAX_RESPONSE) {
                free(buf);
                return -EFBIG;
            }
            char *bigger = realloc(buf, cap * 2);
            if (!bigger) {
                free(buf);
                return -ENOMEM;
            }
            buf = bigger;
            cap *= 2;
        }
        ssize_t n = read(fd, buf + len, cap - len - 1);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            int err = errno == EAGAIN ? -ETIMEDOUT : -errno;
            free(buf);
            return err;
        }
        if (n == 0)
            break;
        len += (size_t)n;
    }
    buf[len] = '\0';
    *out = buf;
    *out_len = len;
    return 0;
}

static int parse_response(char *raw, struct api_response *resp)
{
    int status;
    if (sscanf(raw, "HTTP/1.%*[01] %3d", &status) != 1)
        return -EPROTO;
    char *body = strstr(raw, "\r\n\r\n");
    if (!body)
        return -EPROTO;
    resp->status = status;
    resp->body = strdup(body + 4);
    return resp->body ? 0 : -ENOMEM;
}

int api_request(const char *socket_path, const char *method, const char *target,
                const char *body, struct api_response *resp)
{
    return api_request_timeout(socket_path, method, target, body, API_CLIENT_TIMEOUT_MS, resp);
}

int api_request_timeout(const char *socket_path, const char *method, const char *target,
                        const char *body, unsigned timeout_ms, struct api_response *resp)
{
    struct timeval tv = { .tv_sec = timeout_ms / 1000, .tv_usec = (timeout_ms % 1000) * 1000 };
    char head[512];
    char *raw = NULL;
    size_t raw_len;
    size_t body_len = body ? strlen(body) : 0;

    resp->status = 0;
    resp->body = NULL;
    int fd = api_connect(socket_path);
    if (fd < 0)
        return fd;
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    int n = snprintf(head, sizeof(head),
                     "%s %s HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
                     "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n",
                     method, target, body_len);
    int ret = n < 0 || (size_t)n >= sizeof(head) ? -EINVAL : fd_write_all(fd, head, (size_t)n);
    if (ret == 0 && body_len)
        ret = fd_write_all(fd, body, body_len);
    if (ret == 0)
        ret = read_all(fd, &raw, &raw_len);
    close(fd);
    if (ret == 0)
        ret = parse_response(raw, resp);
    free(raw);
    return ret;
}

void api_response_free(struct api_response *resp)
{
    free(resp->body);
    resp->body = NULL;
}
