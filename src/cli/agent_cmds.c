/*
 * agent_cmds.c: godwit exec, cp, kvp, freeze and thaw: the guest agent's services, reached
 * through the VM's vsock socket (guests/agent/README.md). exec's exit status is godwit's own.
 */
#define _GNU_SOURCE
#include "cli/agent_cmds.h"

#include <errno.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "api/client.h"
#include "api/runtime.h"
#include "cli/ctl.h"
#include "log.h"

int agent_exec_main(int argc, char **argv); /* agent_exec.c */

/* The vsock socket the VM's configuration names, asking its API socket `api`. */
static int vsock_from_config(const char *api, char *path, size_t len)
{
    struct api_response resp;
    struct json_object *vm, *cfg, *vsock, *sock;
    int ret = api_request(api, "GET", "/vm", NULL, &resp);
    if (ret < 0)
        return ret;
    ret = -ENOENT;
    vm = resp.status == 200 ? json_tokener_parse(resp.body) : NULL;
    /* {"config": {"vsock": {"cid": N, "socket": PATH}}} */
    if (vm && json_object_object_get_ex(vm, "config", &cfg) &&
        json_object_object_get_ex(cfg, "vsock", &vsock)) {
        if (json_object_object_get_ex(vsock, "socket", &sock))
            ret = snprintf(path, len, "%s", json_object_get_string(sock)) < (int)len ? 0
                                                                                       : -ENAMETOOLONG;
    } else if (vm) {
        ret = -ENODEV; /* the VM runs, with no vsock device */
    }
    json_object_put(vm);
    api_response_free(&resp);
    return ret;
}

struct agent_client *agent_open(const char *name)
{
    return agent_open_quiet(name, false);
}

/* One line, unless the caller wants none. */
#define say(quiet, ...)                                                                      \
    do {                                                                                     \
        if (!(quiet))                                                                        \
            log_error(__VA_ARGS__);                                                          \
    } while (0)

/* The agent's port through the VM's vsock socket at `path`, which answered the connection. */
static struct agent_client *handshake(struct agent_client *c, const char *name, const char *path,
                                      bool quiet)
{
    int ret = agent_vsock_handshake(c->fd, AGENT_VSOCK_PORT, AGENT_CONNECT_TIMEOUT_MS);
    if (ret == 0)
        return c;
    if (ret == -ECONNREFUSED)
        say(quiet, "%s: no agent answers on vsock port %u (is godwit-agent running in the guest?)",
            name, AGENT_VSOCK_PORT);
    else
        say(quiet, "%s: cannot reach the agent through %s: %s", name, path, strerror(-ret));
    agent_client_close(c);
    return NULL;
}

/* The vsock socket the VM's configuration names, asking its API socket `api` (`name` is
 * what the user gave: that path, or the VM's name). */
static struct agent_client *open_configured(const char *api, const char *name, bool quiet)
{
    char path[RUNTIME_PATH_MAX + 80];
    struct agent_client *c;
    int ret = vsock_from_config(api, path, sizeof(path));
    if (ret == -ENODEV)
        say(quiet, "%s has no vsock device (godwit run --vsock cid=N)", name);
    else if (ret < 0 && api == name)
        say(quiet, "no VM answers on %s: %s", api, strerror(-ret));
    else if (ret < 0)
        say(quiet, "no VM named '%s' with a vsock device is running", name);
    else if ((c = agent_client_open(path, &ret)))
        return handshake(c, name, path, quiet);
    else
        say(quiet, "%s: cannot reach the agent through %s: %s", name, path, strerror(-ret));
    return NULL;
}

/*
 * A VM by name: its vsock socket is, unless its configuration names another, NAME.vsock beside
 * its API socket in the runtime directory. That one is tried first, which saves a request to
 * the API (and its configuration's JSON) on every command; only a VM that has no socket there
 * is asked where its socket is.
 */
static struct agent_client *open_by_name(const char *name, bool quiet)
{
    char dir[RUNTIME_PATH_MAX], path[RUNTIME_PATH_MAX + 80], api[RUNTIME_PATH_MAX + 80];
    struct agent_client *c;
    int ret;
    if (!runtime_name_valid(name)) {
        say(quiet, "'%s' is not a valid VM name", name);
        return NULL;
    }
    if (runtime_client_dir(dir, sizeof(dir)) < 0 ||
        snprintf(path, sizeof(path), "%s/%s.vsock", dir, name) >= (int)sizeof(path) ||
        snprintf(api, sizeof(api), "%s/%s.sock", dir, name) >= (int)sizeof(api)) {
        say(quiet, "no VM named '%s' is running", name);
        return NULL;
    }
    if ((c = agent_client_open(path, &ret)))
        return handshake(c, name, path, quiet);
    if (ret != -ENOENT && ret != -ECONNREFUSED) {
        say(quiet, "%s: cannot reach the agent through %s: %s", name, path, strerror(-ret));
        return NULL;
    }
    /* Nobody listens there: a socket of the VM's own choosing, or no such VM. */
    return open_configured(api, name, quiet);
}

struct agent_client *agent_open_quiet(const char *name, bool quiet)
{
    const char *direct = getenv("GODWIT_AGENT_SOCKET");
    struct agent_client *c;
    int ret;
    if (direct && direct[0]) {
        if (!(c = agent_client_connect(direct, true, 0, &ret)))
            say(quiet, "%s: cannot reach the agent at %s: %s", name, direct, strerror(-ret));
        return c;
    }
    /* A VM's API socket, as ctl's commands take, or its name. */
    return strchr(name, '/') ? open_configured(name, name, quiet) : open_by_name(name, quiet);
}

static int fail(struct agent_client *c, const char *what, int ret)
{
    /* The agent's messages name their request already. */
    if (c->error[0])
        log_error("%s", c->error);
    else
        log_error("%s: %s", what, strerror(-ret));
    return 1;
}

/*
 * NAME:PATH, where NAME is a VM name or its API socket (an existing socket file): a local
 * path with a colon is one whose part before it is neither.
 */
static bool split_remote(char *arg, char **name, char **path)
{
    char *colon = strchr(arg, ':');
    struct stat st;
    if (!colon || colon == arg)
        return false;
    *colon = 0;
    if (!runtime_name_valid(arg) && !(strchr(arg, '/') && stat(arg, &st) == 0 && S_ISSOCK(st.st_mode))) {
        *colon = ':';
        return false;
    }
    *name = arg;
    *path = colon + 1;
    return true;
}

int agent_cp_parse(char *src, char *dst, char **name, char **guest_path, char **local)
{
    char *n2, *p2;
    bool to = split_remote(dst, name, guest_path);
    bool from = split_remote(src, &n2, &p2);
    if (to == from)
        return -EINVAL; /* both or neither in a guest */
    if (from) {
        *name = n2;
        *guest_path = p2;
        *local = dst;
        return 2;
    }
    *local = src;
    return 1;
}

static int cmd_cp(int argc, char **argv)
{
    char *name, *gpath, *local;
    int dir = argc == 3 ? agent_cp_parse(argv[1], argv[2], &name, &gpath, &local) : -EINVAL;
    if (dir < 0) {
        log_error("usage: godwit cp FILE NAME:PATH | godwit cp NAME:PATH FILE");
        return 2;
    }
    if (gpath[0] != '/') {
        log_error("cp: the guest's path must be absolute, not '%s'", gpath);
        return 2;
    }
    struct agent_client *c = agent_open(name);
    if (!c)
        return 1;
    int ret = dir == 1 ? agent_client_put_path(c, local, gpath)
                       : agent_client_get_path(c, gpath, local);
    int status = ret < 0 ? fail(c, "cp", ret) : 0;
    agent_client_close(c);
    return status;
}

static void print_entry(const char *key, const char *value, void *opaque)
{
    (void)opaque;
    printf("%s=%s\n", key, value);
}

/* kvp NAME [--pool host|guest] list|get KEY|set KEY VALUE|delete KEY */
static int cmd_kvp(int argc, char **argv)
{
    static char value[AGENT_MAX_VALUE + 1];
    uint32_t pool = AGENT_POOL_GUEST;
    int i = 2, ret = 0;
    if (argc > 3 && strcmp(argv[2], "--pool") == 0) {
        if (strcmp(argv[3], "host") != 0 && strcmp(argv[3], "guest") != 0) {
            log_error("kvp: --pool host or --pool guest, not '%s'", argv[3]);
            return 2;
        }
        pool = strcmp(argv[3], "host") == 0 ? AGENT_POOL_HOST : AGENT_POOL_GUEST;
        i = 4;
    }
    const char *op = argc > i ? argv[i] : "list";
    int operands = argc > i ? argc - i - 1 : 0;
    int want = strcmp(op, "list") == 0 ? 0 : strcmp(op, "set") == 0 ? 2
               : strcmp(op, "get") == 0 || strcmp(op, "delete") == 0 ? 1 : -1;
    if (argc < 2 || want < 0 || operands != want) {
        log_error("usage: godwit kvp NAME [--pool host|guest] [list|get KEY|set KEY VALUE|delete KEY]");
        return 2;
    }
    struct agent_client *c = agent_open(argv[1]);
    if (!c)
        return 1;
    if (strcmp(op, "list") == 0)
        ret = agent_client_kvp_list(c, pool, print_entry, NULL);
    else if (strcmp(op, "get") == 0 && (ret = agent_client_kvp_get(c, pool, argv[i + 1], value,
                                                                   sizeof(value))) == 0)
        puts(value);
    else if (strcmp(op, "set") == 0)
        ret = agent_client_kvp_set(c, argv[i + 1], argv[i + 2]);
    else if (strcmp(op, "delete") == 0)
        ret = agent_client_kvp_delete(c, argv[i + 1]);
    int status = ret < 0 ? fail(c, "kvp", ret) : 0;
    agent_client_close(c);
    return status;
}

/* freeze NAME [TIMEOUT_S] | thaw NAME: prints how many filesystems changed. */
static int cmd_freeze(int argc, char **argv, bool freeze)
{
    unsigned long timeout = 60;
    char *end = NULL;
    if (argc < 2 || argc > (freeze ? 3 : 2) ||
        (argc == 3 && ((timeout = strtoul(argv[2], &end, 10)) == 0 || *end || timeout > 3600))) {
        log_error("usage: godwit freeze NAME [TIMEOUT_S (1-3600, default 60)] | godwit thaw NAME");
        return 2;
    }
    struct agent_client *c = agent_open(argv[1]);
    if (!c)
        return 1;
    uint32_t n;
    int ret = agent_client_freeze(c, freeze, (unsigned)timeout, &n);
    int status = ret < 0 ? fail(c, freeze ? "freeze" : "thaw", ret) : 0;
    if (ret == 0)
        printf("%s %u filesystem(s)%s\n", freeze ? "froze" : "thawed", n,
               freeze ? "; the agent thaws them itself after the timeout" : "");
    agent_client_close(c);
    return status;
}

static int cmd_agent_info(int argc, char **argv)
{
    struct agent_msg m;
    char s[AGENT_MAX_STRING + 1];
    if (argc != 2) {
        log_error("usage: godwit agent-info NAME");
        return 2;
    }
    struct agent_client *c = agent_open(argv[1]);
    if (!c)
        return 1;
    int ret = agent_client_simple(c, AGENT_INFO, &m);
    if (ret == 0 && m.h.type == AGENT_INFO_REPLY) {
        static const struct { uint16_t tag; const char *label; } rows[] = {
            { AGENT_T_VERSION, "agent" }, { AGENT_T_OS, "os" }, { AGENT_T_KERNEL, "kernel" },
            { AGENT_T_HOSTNAME, "hostname" },
        };
        for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
            agent_get_str(&m, rows[i].tag, s, sizeof(s));
            printf("%-9s %s\n", rows[i].label, s);
        }
        struct agent_field f;
        size_t pos = 0;
        while (agent_field_next(&m, &pos, &f))
            if (f.tag == AGENT_T_ADDRESS)
                printf("%-9s %.*s\n", "address", (int)f.len, (const char *)f.value);
    } else if (ret == 0) {
        ret = -EPROTO;
    }
    int status = ret < 0 ? fail(c, "agent-info", ret) : 0;
    agent_client_close(c);
    return status;
}

/* Steps the guest's clock to the host's. */
static int sync_time(const char *name)
{
    struct agent_client *c = agent_open(name);
    struct timespec now;
    if (!c)
        return 1;
    clock_gettime(CLOCK_REALTIME, &now);
    int ret = agent_client_set_time(c, (uint64_t)now.tv_sec * 1000000000ull + (uint64_t)now.tv_nsec);
    int status = ret < 0 ? fail(c, "sync-time", ret) : 0;
    agent_client_close(c);
    return status;
}

/*
 * After godwit resume: the guest's clock, which stood still, stepped before the command returns.
 * The resume left that step to the VMM's agent monitor (godwit_resume), which makes it on its
 * next turn; this request has the VMM make it now instead, once (docs/api.yaml). Quiet: a guest
 * may well have no agent, and the resume itself has succeeded.
 */
static void step_after_resume(const char *name)
{
    char api[RUNTIME_PATH_MAX + 80];
    struct api_response resp;
    if (ctl_socket_for(name, api, sizeof(api)) == 0 &&
        api_request(api, "PUT", "/vm/agent/sync-time?after=resume", NULL, &resp) == 0)
        api_response_free(&resp);
}

/* shutdown through the agent: for a guest that ignores the ACPI power button. */
static int cmd_agent_shutdown(int argc, char **argv)
{
    bool reboot = argc == 3 && strcmp(argv[2], "--reboot") == 0;
    if (argc != 2 && !reboot) {
        log_error("usage: godwit agent-shutdown NAME [--reboot]");
        return 2;
    }
    struct agent_client *c = agent_open(argv[1]);
    if (!c)
        return 1;
    int ret = agent_client_shutdown(c, reboot);
    int status = ret < 0 ? fail(c, "agent-shutdown", ret) : 0;
    agent_client_close(c);
    return status;
}

int agent_cmds_main(const char *cmd, int argc, char **argv)
{
    if (strcmp(cmd, "resume") == 0 && argc == 2) {
        /* The resume itself is ctl's; then the guest's clock, which stood still, is stepped
         * (when it has an agent). */
        int status = ctl_main(cmd, argc, argv);
        if (status == 0)
            step_after_resume(argv[1]);
        return status;
    }
    if (strcmp(cmd, "sync-time") == 0) {
        if (argc != 2) {
            log_error("usage: godwit sync-time NAME");
            return 2;
        }
        return sync_time(argv[1]);
    }
    if (strcmp(cmd, "agent-shutdown") == 0)
        return cmd_agent_shutdown(argc, argv);
    if (strcmp(cmd, "exec") == 0)
        return agent_exec_main(argc, argv);
    if (strcmp(cmd, "cp") == 0)
        return cmd_cp(argc, argv);
    if (strcmp(cmd, "kvp") == 0)
        return cmd_kvp(argc, argv);
    if (strcmp(cmd, "freeze") == 0 || strcmp(cmd, "thaw") == 0)
        return cmd_freeze(argc, argv, strcmp(cmd, "freeze") == 0);
    if (strcmp(cmd, "agent-info") == 0)
        return cmd_agent_info(argc, argv);
    return -1;
}
