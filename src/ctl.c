/* ctl.c: the CLI commands that control running VMs through their API sockets. */
#define _GNU_SOURCE
#include "ctl.h"

#include <dirent.h>
#include <errno.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/client.h"
#include "api/runtime.h"
#include "log.h"

#define SOCKET_SUFFIX ".sock"

/* The socket of VM `name`: a path (containing '/') is used as it is. */
static int socket_for(const char *name, char *path, size_t len)
{
    if (strchr(name, '/')) {
        if (strlen(name) >= len)
            return -ENAMETOOLONG;
        strcpy(path, name);
        return 0;
    }
    if (!runtime_name_valid(name)) {
        log_error("'%s' is not a valid VM name", name);
        return -EINVAL;
    }
    return runtime_socket_path(name, path, len);
}

static const char *json_string_of(struct json_object *obj, const char *key)
{
    struct json_object *v;
    return json_object_object_get_ex(obj, key, &v) ? json_object_get_string(v) : "?";
}

/* Prints the API's error message, or a plain reason when the VM could not be reached. */
static int report_failure(const char *name, int ret, const struct api_response *resp)
{
    if (ret == -ENOENT || ret == -ECONNREFUSED)
        log_error("no VM named '%s' is running", name);
    else if (ret < 0)
        log_error("%s: cannot reach its API: %s", name, strerror(-ret));
    else {
        struct json_object *err = json_tokener_parse(resp->body);
        log_error("%s: %s", name, err ? json_string_of(err, "error") : resp->body);
        json_object_put(err);
    }
    return 1;
}

static int ctl_simple(const char *name, const char *method, const char *target, bool print_body)
{
    char path[RUNTIME_PATH_MAX + 80];
    struct api_response resp;
    if (socket_for(name, path, sizeof(path)) < 0)
        return 2;
    int ret = api_request(path, method, target, NULL, &resp);
    int status = 0;
    if (ret < 0 || resp.status >= 300)
        status = report_failure(name, ret, &resp);
    else if (print_body) {
        struct json_object *obj = json_tokener_parse(resp.body);
        puts(obj ? json_object_to_json_string_ext(obj, JSON_C_TO_STRING_PRETTY) : resp.body);
        json_object_put(obj);
    }
    api_response_free(&resp);
    return status;
}

static void ps_print_row(const char *name, const char *path)
{
    struct api_response resp;
    if (api_request(path, "GET", "/vm", NULL, &resp) < 0 || resp.status != 200) {
        api_response_free(&resp);
        return; /* a stale socket: its VM is gone */
    }
    struct json_object *vm = json_tokener_parse(resp.body);
    if (vm) {
        printf("%-20s %-8s %-8s %5s %8s %10s\n", name, json_string_of(vm, "pid"),
               json_string_of(vm, "state"), json_string_of(vm, "vcpus"),
               json_string_of(vm, "memory_mib"), json_string_of(vm, "uptime_s"));
        json_object_put(vm);
    }
    api_response_free(&resp);
}

static int ctl_ps(void)
{
    char dir[RUNTIME_PATH_MAX];
    if (runtime_dir(dir, sizeof(dir)) < 0) {
        log_error("cannot open the runtime directory");
        return 1;
    }
    DIR *d = opendir(dir);
    if (!d) {
        log_error("cannot list %s: %s", dir, strerror(errno));
        return 1;
    }
    printf("%-20s %-8s %-8s %5s %8s %10s\n", "NAME", "PID", "STATE", "CPUS", "MEM(MiB)", "UPTIME(s)");
    struct dirent *e;
    while ((e = readdir(d))) {
        size_t len = strlen(e->d_name), slen = strlen(SOCKET_SUFFIX);
        if (len <= slen || strcmp(e->d_name + len - slen, SOCKET_SUFFIX) != 0)
            continue;
        char name[RUNTIME_NAME_MAX + 1], path[RUNTIME_PATH_MAX + 300];
        snprintf(name, sizeof(name), "%.*s", (int)(len - slen), e->d_name);
        snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
        ps_print_row(name, path);
    }
    closedir(d);
    return 0;
}

int ctl_main(const char *cmd, int argc, char **argv)
{
    static const struct { const char *cmd, *method, *target; bool print; } actions[] = {
        { "info", "GET", "/vm", true },        { "pause", "PUT", "/vm/pause", false },
        { "resume", "PUT", "/vm/resume", false }, { "shutdown", "PUT", "/vm/shutdown", false },
        { "reboot", "PUT", "/vm/reboot", false },  { "stop", "PUT", "/vm/stop", false },
        { "counters", "GET", "/vm/counters", true },
    };
    if (strcmp(cmd, "ps") == 0) {
        if (argc != 1) {
            log_error("usage: godwit ps");
            return 2;
        }
        return ctl_ps();
    }
    for (size_t i = 0; i < sizeof(actions) / sizeof(actions[0]); i++) {
        if (strcmp(cmd, actions[i].cmd) != 0)
            continue;
        if (argc != 2) {
            log_error("usage: godwit %s NAME", cmd);
            return 2;
        }
        return ctl_simple(argv[1], actions[i].method, actions[i].target, actions[i].print);
    }
    return -1;
}
