/* agent.c: libgodwit's guest agent functions (godwit.h), over agent/client.h. */
#define _GNU_SOURCE
#include <errno.h>
#include <time.h>

#include "agent/client.h"
#include "godwit/godwit.h"

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
    int ret = agent_client_exec_start(&agent->c, argv, user, false, 0, 0);
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
