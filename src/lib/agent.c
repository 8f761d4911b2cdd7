/* agent.c: libgodwit's guest agent functions (godwit.h), over agent/client.h. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "agent/client.h"
#include "godwit/godwit.h"
#include "io/fd_io.h"
#include "lib/godwit_internal.h"

/* The public handle is the client itself. */
struct godwit_agent {
    struct agent_client c;
};

struct godwit_agent *godwit_agent_connect(const char *vsock_socket, int *err)
{
    int ret;
    struct agent_client *c = agent_client_connect(vsock_socket, false, AGENT_VSOCK_PORT, &ret);
    if (err)
        *err = ret;
    return (struct godwit_agent *)c;
}

void godwit_agent_close(struct godwit_agent *agent)
{
    agent_client_close(&agent->c);
}

const char *godwit_agent_error(const struct godwit_agent *agent)
{
    return agent->c.error;
}

int godwit_agent_exec(struct godwit_agent *agent, const char *const *argv, const char *user,
                      int stdin_fd, int stdout_fd, int stderr_fd, int *status)
{
    struct agent_exec_io io = { .in = stdin_fd, .out = stdout_fd, .err = stderr_fd, .sig = -1 };
    int ret = agent_client_exec_start(&agent->c, argv, user, false, 0, 0, stdin_fd < 0);
    return ret < 0 ? ret : agent_client_exec_run(&agent->c, &io, status);
}

int godwit_agent_copy_in(struct godwit_agent *agent, const char *local, const char *guest_path)
{
    return agent_client_put_path(&agent->c, local, guest_path);
}

int godwit_agent_copy_out(struct godwit_agent *agent, const char *guest_path, const char *local)
{
    return agent_client_get_path(&agent->c, guest_path, local);
}

int godwit_agent_copy_to(struct godwit_agent *agent, int fd, uint64_t size,
                         const char *guest_path, unsigned mode)
{
    return agent_client_put(&agent->c, fd, guest_path, mode, size);
}

int godwit_agent_copy_from(struct godwit_agent *agent, const char *guest_path, int fd,
                           unsigned *mode)
{
    uint32_t m = 0;
    int ret = agent_client_get(&agent->c, guest_path, fd, &m);
    *mode = m;
    return ret;
}

struct agent_client *godwit_agent_client(struct godwit_agent *agent)
{
    return &agent->c;
}

int godwit_agent_kvp_set(struct godwit_agent *agent, const char *key, const char *value)
{
    return agent_client_kvp_set(&agent->c, key, value);
}

int godwit_agent_kvp_delete(struct godwit_agent *agent, const char *key)
{
    return agent_client_kvp_delete(&agent->c, key);
}

int godwit_agent_kvp_get(struct godwit_agent *agent, bool guest_pool, const char *key, char *buf,
                         size_t len)
{
    return agent_client_kvp_get(&agent->c, guest_pool ? AGENT_POOL_GUEST : AGENT_POOL_HOST, key,
                                buf, len);
}

int godwit_agent_sync_time(struct godwit_agent *agent)
{
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    return agent_client_set_time(&agent->c,
                                 (uint64_t)now.tv_sec * 1000000000ull + (uint64_t)now.tv_nsec);
}

int godwit_agent_set_timeout(struct godwit_agent *agent, unsigned timeout_ms)
{
    struct timeval tv = { .tv_sec = timeout_ms / 1000, .tv_usec = (timeout_ms % 1000) * 1000 };
    if (setsockopt(agent->c.fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) < 0 ||
        setsockopt(agent->c.fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) < 0)
        return -errno;
    return 0;
}

void godwit_agent_interrupt(struct godwit_agent *agent)
{
    shutdown(agent->c.fd, SHUT_RDWR);
}

/* A memory file holding `len` bytes of `data`, read from its start. -errno on failure. */
static int memfd_with(const char *name, const void *data, size_t len)
{
    int fd = memfd_create(name, MFD_CLOEXEC);
    if (fd < 0)
        return -errno;
    if (len && (fd_write_all(fd, data, len) < 0 || lseek(fd, 0, SEEK_SET) < 0)) {
        close(fd);
        return -EIO;
    }
    return fd;
}

/* A memory file's whole contents, NUL-terminated, into *buf. */
static int memfd_take(int fd, char **buf, size_t *len)
{
    off_t size = lseek(fd, 0, SEEK_END);
    if (size < 0)
        return -errno;
    if (!(*buf = malloc((size_t)size + 1)))
        return -ENOMEM;
    if (pread(fd, *buf, (size_t)size, 0) != (ssize_t)size) {
        free(*buf);
        *buf = NULL;
        return -EIO;
    }
    (*buf)[size] = '\0';
    *len = (size_t)size;
    return 0;
}

int godwit_agent_run(struct godwit_agent *agent, const char *const *argv, const char *user,
                     const void *in, size_t in_len, size_t max_output, unsigned timeout_ms,
                     struct godwit_agent_result *result)
{
    memset(result, 0, sizeof(*result));
    int in_fd = -1;
    int out_fd = memfd_with("godwit-stdout", NULL, 0), err_fd = memfd_with("godwit-stderr", NULL, 0);
    int ret = out_fd < 0 ? out_fd : err_fd < 0 ? err_fd : 0;
    if (ret == 0 && in && (in_fd = memfd_with("godwit-stdin", in, in_len)) < 0)
        ret = in_fd;
    if (ret == 0)
        ret = agent_client_exec_start(&agent->c, argv, user, false, 0, 0, in_fd < 0);
    if (ret == 0) {
        struct agent_exec_io io = { .in = in_fd, .out = out_fd, .err = err_fd, .sig = -1,
                                    .timeout_ms = timeout_ms, .max_output = max_output };
        ret = agent_client_exec_run(&agent->c, &io, &result->status);
    }
    if (ret == 0 && (ret = memfd_take(out_fd, &result->out, &result->out_len)) == 0 &&
        (ret = memfd_take(err_fd, &result->err, &result->err_len)) < 0)
        godwit_agent_result_free(result);
    int fds[] = { in_fd, out_fd, err_fd };
    for (size_t i = 0; i < sizeof(fds) / sizeof(fds[0]); i++)
        if (fds[i] >= 0)
            close(fds[i]);
    return ret;
}

void godwit_agent_result_free(struct godwit_agent_result *result)
{
    free(result->out);
    free(result->err);
    memset(result, 0, sizeof(*result));
}

int godwit_agent_kvp_list(struct godwit_agent *agent, bool guest_pool,
                          void (*fn)(const char *key, const char *value, void *opaque),
                          void *opaque)
{
    return agent_client_kvp_list(&agent->c, guest_pool ? AGENT_POOL_GUEST : AGENT_POOL_HOST, fn,
                                 opaque);
}

int godwit_agent_freeze(struct godwit_agent *agent, unsigned timeout_s, unsigned *count)
{
    return agent_client_freeze(&agent->c, true, timeout_s, count);
}

int godwit_agent_thaw(struct godwit_agent *agent, unsigned *count)
{
    return agent_client_freeze(&agent->c, false, 0, count);
}

int godwit_agent_shutdown(struct godwit_agent *agent, bool reboot)
{
    return agent_client_shutdown(&agent->c, reboot);
}
