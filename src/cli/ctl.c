/* ctl.c: the CLI commands that control running VMs through their API sockets. */
#define _GNU_SOURCE
#include "cli/ctl.h"

#include <dirent.h>
#include <poll.h>
#include <termios.h>
#include <unistd.h>
#include <errno.h>
#include <json-c/json.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/client.h"
#include "api/runtime.h"
#include "godwit/godwit.h"
#include "log.h"

#define SOCKET_SUFFIX ".sock"

int ctl_socket_for(const char *name, char *path, size_t len)
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
    return runtime_client_socket_path(name, path, len);
}

static const char *json_string_of(struct json_object *obj, const char *key)
{
    struct json_object *v;
    return json_object_object_get_ex(obj, key, &v) ? json_object_get_string(v) : "?";
}

static int64_t json_int_of(struct json_object *obj, const char *key)
{
    return json_object_get_int64(json_object_object_get(obj, key));
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
    if (ctl_socket_for(name, path, sizeof(path)) < 0)
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
    if (runtime_client_dir(dir, sizeof(dir)) < 0) {
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

#define CONSOLE_DETACH_CHAR 0x1d /* Ctrl-], as telnet and virsh console */

/* Reads the API's answer to the console request, up to the end of its head. */
static int console_handshake(int fd, const char *name)
{
    static const char request[] = "GET /vm/console HTTP/1.1\r\nHost: localhost\r\n"
                                  "Connection: Upgrade\r\nUpgrade: godwit-console\r\n\r\n";
    char head[1024];
    size_t len = 0;
    if (write(fd, request, sizeof(request) - 1) != (ssize_t)(sizeof(request) - 1))
        return report_failure(name, -errno, NULL);
    while (len < sizeof(head) - 1) {
        /* Byte by byte: what follows the head is already console output. */
        ssize_t n = read(fd, head + len, 1);
        if (n <= 0)
            return report_failure(name, n < 0 ? -errno : -ECONNRESET, NULL);
        len++;
        head[len] = '\0';
        if (len >= 4 && memcmp(head + len - 4, "\r\n\r\n", 4) == 0)
            break;
    }
    if (strncmp(head, "HTTP/1.1 101", 12) != 0) {
        char *body = strstr(head, "\r\n\r\n");
        char rest[512] = "";
        ssize_t n = read(fd, rest, sizeof(rest) - 1);
        struct api_response resp = { .status = 409, .body = n > 0 ? rest : (body ? body : head) };
        return report_failure(name, 0, &resp);
    }
    return 0;
}

/* Copies the terminal to the console and back until Ctrl-] or the VM closes it. */
static void console_relay(int fd)
{
    struct pollfd fds[2] = { { .fd = STDIN_FILENO, .events = POLLIN }, { .fd = fd, .events = POLLIN } };
    char buf[4096];
    for (;;) {
        if (poll(fds, 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            return;
        }
        if (fds[1].revents) {
            ssize_t n = read(fd, buf, sizeof(buf));
            if (n <= 0 || write(STDOUT_FILENO, buf, (size_t)n) != n)
                return;
        }
        if (fds[0].revents) {
            ssize_t n = read(STDIN_FILENO, buf, sizeof(buf));
            if (n <= 0)
                return;
            char *detach = memchr(buf, CONSOLE_DETACH_CHAR, (size_t)n);
            size_t len = detach ? (size_t)(detach - buf) : (size_t)n;
            if (len && write(fd, buf, len) != (ssize_t)len)
                return;
            if (detach)
                return;
        }
    }
}

static int ctl_console(const char *name)
{
    char path[RUNTIME_PATH_MAX + 80];
    struct termios saved, raw;
    if (ctl_socket_for(name, path, sizeof(path)) < 0)
        return 2;
    int fd = api_connect(path);
    if (fd < 0)
        return report_failure(name, fd, NULL);
    if (console_handshake(fd, name) != 0) {
        close(fd);
        return 1;
    }
    bool tty = isatty(STDIN_FILENO) && tcgetattr(STDIN_FILENO, &saved) == 0;
    fprintf(stderr, "godwit: connected to %s's console; Ctrl-] detaches\r\n", name);
    if (tty) {
        raw = saved;
        cfmakeraw(&raw);
        tcsetattr(STDIN_FILENO, TCSANOW, &raw);
    }
    console_relay(fd);
    if (tty)
        tcsetattr(STDIN_FILENO, TCSANOW, &saved);
    fprintf(stderr, "\ngodwit: detached from %s\n", name);
    close(fd);
    return 0;
}

#define SNAPSHOT_TIMEOUT_MS (10 * 60 * 1000)

/* DIR as an absolute path: the VM process resolves it, from its own working directory. */
static int absolute_dir(const char *dir, char *out, size_t len)
{
    char cwd[PATH_MAX];
    int n = dir[0] == '/' ? snprintf(out, len, "%s", dir)
            : getcwd(cwd, sizeof(cwd)) ? snprintf(out, len, "%s/%s", cwd, dir) : -1;
    return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
}

/* godwit snapshot NAME DIR [--stop|--resume] [--freeze] */
static int ctl_snapshot(int argc, char **argv)
{
    char path[RUNTIME_PATH_MAX + 80], dir[PATH_MAX];
    bool stop = false, freeze = false, ok = argc >= 3;
    for (int i = 3; i < argc && ok; i++) {
        if (strcmp(argv[i], "--freeze") == 0)
            freeze = true;
        else if (strcmp(argv[i], "--stop") == 0 || strcmp(argv[i], "--resume") == 0)
            stop = strcmp(argv[i], "--stop") == 0;
        else
            ok = false;
    }
    if (!ok) {
        log_error("usage: godwit snapshot NAME DIR [--resume|--stop] [--freeze]");
        return 2;
    }
    if (ctl_socket_for(argv[1], path, sizeof(path)) < 0)
        return 2;
    if (absolute_dir(argv[2], dir, sizeof(dir)) < 0) {
        log_error("snapshot: %s: path too long", argv[2]);
        return 2;
    }
    struct json_object *req = json_object_new_object();
    json_object_object_add(req, "dir", json_object_new_string(dir));
    json_object_object_add(req, "stop", json_object_new_boolean(stop));
    json_object_object_add(req, "freeze", json_object_new_boolean(freeze));
    struct api_response resp;
    int ret = api_request_timeout(path, "PUT", "/vm/snapshot", json_object_to_json_string(req),
                                  SNAPSHOT_TIMEOUT_MS, &resp);
    json_object_put(req);
    int status = 0;
    struct json_object *out = ret == 0 && resp.status == 200 ? json_tokener_parse(resp.body) : NULL;
    if (!out) {
        status = report_failure(argv[1], ret, &resp);
    } else {
        double mib = 1048576.0;
        printf("%s: snapshot in %s: %.0f MiB of RAM, %.1f MiB written, guest paused %.1f ms%s\n",
               argv[1], dir, (double)json_int_of(out, "memory_bytes") / mib,
               (double)json_int_of(out, "memory_written") / mib,
               json_object_get_double(json_object_object_get(out, "paused_ms")),
               freeze ? (stop ? ", filesystems frozen, VM stopped" : ", filesystems frozen, thawed")
               : stop ? ", VM stopped" : "");
    }
    json_object_put(out);
    api_response_free(&resp);
    return status;
}

/* One line of progress: on a terminal it is rewritten in place. */
static void print_progress(struct json_object *st, bool tty)
{
    double mib = 1048576.0;
    long long throttle = json_int_of(st, "throttle_pct");
    char held[48] = "";
    if (throttle > 0)
        snprintf(held, sizeof(held), ", vCPUs held back %lld%%", throttle);
    printf("%spass %lld: %.1f MiB sent, %.1f MiB left, %.0f MiB/s, guest dirties %.0f MiB/s, "
           "switch-over now would take %.1f ms (%.1f ms of it fixed)%s%s",
           tty ? "\r\033[K" : "", (long long)json_int_of(st, "pass"),
           (double)json_int_of(st, "bytes_sent") / mib, (double)json_int_of(st, "bytes_left") / mib,
           (double)json_int_of(st, "bandwidth_bps") / mib,
           (double)json_int_of(st, "dirty_bytes_per_s") / mib,
           json_object_get_double(json_object_object_get(st, "expected_downtime_ms")),
           json_object_get_double(json_object_object_get(st, "fixed_cost_ms")), held,
           tty ? "" : "\n");
    fflush(stdout);
}

/* Polls GET /vm/migration until the migration is over; its exit status. */
static int follow_migration(const char *name, const char *path, bool local)
{
    bool tty = isatty(STDOUT_FILENO);
    long long last_pass = -1;
    for (;;) {
        struct api_response resp;
        int ret = api_request(path, "GET", "/vm/migration", NULL, &resp);
        struct json_object *st = ret == 0 && resp.status == 200 ? json_tokener_parse(resp.body) : NULL;
        api_response_free(&resp);
        if (!st) {
            /* A migrated source lingers, paused, long enough to be seen "completed" (LINGER_MS
             * in migrate.c); an API that went away before that is a VM that ended otherwise. */
            if (tty)
                printf("\n");
            log_error("%s: the VM's API went away before the migration's end could be read: "
                      "the VM ended (or crashed) during it; whether the guest runs at the "
                      "destination, the destination says", name);
            return 1;
        }
        const char *state = json_string_of(st, "state");
        if (strcmp(state, "active") == 0) {
            if (tty || json_int_of(st, "pass") != last_pass)
                print_progress(st, tty);
            last_pass = json_int_of(st, "pass");
            json_object_put(st);
            usleep(100 * 1000);
            continue;
        }
        if (tty)
            printf("\n");
        int status = 0;
        char passes[40];
        snprintf(passes, sizeof(passes), "%lld passes", (long long)json_int_of(st, "pass"));
        if (strcmp(state, "completed") == 0)
            printf("%s: migrated: %s, %.1f MiB sent, guest paused %.1f ms, %.1f s in "
                   "all%s\n", name, local ? "memory handed over" : passes,
                   (double)json_int_of(st, "bytes_sent") / 1048576.0,
                   json_object_get_double(json_object_object_get(st, "downtime_ms")),
                   json_object_get_double(json_object_object_get(st, "total_ms")) / 1e3,
                   json_object_get_boolean(json_object_object_get(st, "forced"))
                       ? " (switched over at the timeout, not converged)"
                   : json_int_of(st, "throttle_pct") > 0 ? " (converged with the vCPUs held back)"
                                                         : "");
        else {
            log_error("%s: migration %s: %s; the guest runs on here", name, state,
                      json_string_of(st, "error"));
            status = 1;
        }
        json_object_put(st);
        return status;
    }
}

/* --connections K: 1 to 8 TCP connections, only over tcp: and not with --local (which copies
 * no pages). One line and -EINVAL otherwise. */
static int check_connections(const char *uri, long long k, bool local)
{
    const char *why = k > GODWIT_MAX_MIGRATION_CONNECTIONS ? "is more than 8"
                      : k > 1 && local ? "spreads copied pages: not with --local"
                      : k > 1 && strncmp(uri, "tcp:", 4) != 0 ? "needs a tcp:HOST:PORT URI"
                                                               : NULL;
    if (why)
        log_error("migrate: --connections %lld %s (1 to %d TCP connections)", k, why,
                  GODWIT_MAX_MIGRATION_CONNECTIONS);
    return why ? -EINVAL : 0;
}

/* godwit migrate NAME URI [--downtime-ms N] [--timeout S] [--timeout-action A] [--bandwidth B]
 * [--connections K] [--local] | godwit migrate NAME --cancel */
static int ctl_migrate(int argc, char **argv)
{
    char path[RUNTIME_PATH_MAX + 80];
    if (argc < 3) {
        log_error("usage: godwit migrate NAME tcp:HOST:PORT|unix:PATH [--downtime-ms N] "
                  "[--timeout S] [--timeout-action cancel|switchover] [--bandwidth MIBPS] "
                  "[--connections K] [--local] | godwit migrate NAME --cancel");
        return 2;
    }
    if (ctl_socket_for(argv[1], path, sizeof(path)) < 0)
        return 2;
    if (strcmp(argv[2], "--cancel") == 0)
        return argc == 3 ? ctl_simple(argv[1], "DELETE", "/vm/migration", false) : 2;
    struct json_object *req = json_object_new_object();
    json_object_object_add(req, "uri", json_object_new_string(argv[2]));
    bool local = false;
    long long connections = 1;
    for (int i = 3; i < argc; i += 2) {
        if (strcmp(argv[i], "--local") == 0) {
            local = true;
            json_object_object_add(req, "local", json_object_new_boolean(true));
            i--; /* a flag without a value */
            continue;
        }
        if (strcmp(argv[i], "--timeout-action") == 0 && i + 1 < argc &&
            (strcmp(argv[i + 1], "cancel") == 0 || strcmp(argv[i + 1], "switchover") == 0)) {
            json_object_object_add(req, "timeout_action", json_object_new_string(argv[i + 1]));
            continue;
        }
        const char *key = strcmp(argv[i], "--downtime-ms") == 0 ? "downtime_ms"
                          : strcmp(argv[i], "--timeout") == 0   ? "timeout_s"
                          : strcmp(argv[i], "--bandwidth") == 0 ? "bandwidth_mibps"
                          : strcmp(argv[i], "--connections") == 0 ? "connections" : NULL;
        char *end = NULL;
        long long v = key && i + 1 < argc ? strtoll(argv[i + 1], &end, 10) : 0;
        if (!key || !end || *end || v <= 0) {
            log_error("migrate: '%s%s%s' is not --downtime-ms N, --timeout S, --timeout-action "
                      "cancel|switchover, --bandwidth MIBPS, --connections K or --local", argv[i],
                      i + 1 < argc ? " " : "",
                      i + 1 < argc ? argv[i + 1] : "");
            json_object_put(req);
            return 2;
        }
        if (strcmp(key, "connections") == 0)
            connections = v;
        json_object_object_add(req, key, json_object_new_int64(v));
    }
    if (check_connections(argv[2], connections, local) < 0) {
        json_object_put(req);
        return 2;
    }
    if (local && strncmp(argv[2], "unix:", 5) != 0) {
        log_error("migrate: --local hands the guest's memory file over a UNIX socket on this "
                  "host: use unix:PATH, not %s", argv[2]);
        json_object_put(req);
        return 2;
    }
    struct api_response resp;
    int ret = api_request(path, "PUT", "/vm/migrate", json_object_to_json_string(req), &resp);
    json_object_put(req);
    int status = ret < 0 || resp.status != 202 ? report_failure(argv[1], ret, &resp) : -1;
    api_response_free(&resp);
    return status >= 0 ? status : follow_migration(argv[1], path, local);
}

int ctl_main(const char *cmd, int argc, char **argv)
{
    static const struct { const char *cmd, *method, *target; bool print; } actions[] = {
        { "info", "GET", "/vm", true },        { "pause", "PUT", "/vm/pause", false },
        { "resume", "PUT", "/vm/resume", false }, { "shutdown", "PUT", "/vm/shutdown", false },
        { "reboot", "PUT", "/vm/reboot", false },  { "stop", "PUT", "/vm/stop", false },
        { "counters", "GET", "/vm/counters", true },
    };
    if (strcmp(cmd, "console") == 0) {
        if (argc != 2) {
            log_error("usage: godwit console NAME");
            return 2;
        }
        return ctl_console(argv[1]);
    }
    if (strcmp(cmd, "snapshot") == 0)
        return ctl_snapshot(argc, argv);
    if (strcmp(cmd, "migrate") == 0)
        return ctl_migrate(argc, argv);
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
