/*
 * system.c: the guest as a whole: info (agent version, OS, kernel, addresses), freezing and
 * thawing its filesystems for a consistent backup, and powering it off or rebooting it.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <linux/fs.h>
#include <net/if.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/reboot.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "agent.h"

#define MAX_MOUNTS 256

/* PRETTY_NAME (or NAME) of /etc/os-release, unquoted; "Linux" without one (an initramfs). */
static void os_name(char *buf, size_t len)
{
    FILE *f = fopen("/etc/os-release", "re");
    char line[512], name[256] = "";
    snprintf(buf, len, "Linux");
    if (!f)
        return;
    while (fgets(line, sizeof(line), f)) {
        bool pretty = strncmp(line, "PRETTY_NAME=", 12) == 0;
        if (!pretty && (strncmp(line, "NAME=", 5) != 0 || name[0]))
            continue;
        char *v = strchr(line, '=') + 1;
        v[strcspn(v, "\n")] = 0;
        size_t n = strlen(v);
        if (n >= 2 && (v[0] == '"' || v[0] == '\'') && v[n - 1] == v[0]) {
            v[n - 1] = 0;
            v++;
        }
        snprintf(name, sizeof(name), "%s", v);
        if (pretty)
            break;
    }
    fclose(f);
    if (name[0])
        snprintf(buf, len, "%s", name);
}

static void put_addresses(struct agent_builder *b)
{
    struct ifaddrs *list, *i;
    int n = 0;
    if (getifaddrs(&list) < 0)
        return;
    for (i = list; i && n < 64; i = i->ifa_next) {
        char addr[INET6_ADDRSTRLEN], entry[64];
        if (!i->ifa_addr || (i->ifa_flags & IFF_LOOPBACK))
            continue;
        int fam = i->ifa_addr->sa_family;
        const void *a = fam == AF_INET ? (void *)&((struct sockaddr_in *)i->ifa_addr)->sin_addr
                        : fam == AF_INET6 ? (void *)&((struct sockaddr_in6 *)i->ifa_addr)->sin6_addr
                                          : NULL;
        if (!a || !inet_ntop(fam, a, addr, sizeof(addr)))
            continue;
        snprintf(entry, sizeof(entry), "%.15s %s", i->ifa_name, addr);
        agent_put_str(b, AGENT_T_ADDRESS, entry);
        n++;
    }
    freeifaddrs(list);
}

int handle_info(struct conn *c, const struct agent_msg *m)
{
    struct utsname u;
    char os[256], kernel[256];
    struct agent_builder b;
    uname(&u);
    os_name(os, sizeof(os));
    snprintf(kernel, sizeof(kernel), "%.40s %.100s %.30s", u.sysname, u.release, u.machine);
    agent_build_start(&b, c->out, AGENT_INFO_REPLY, 0, m->h.id);
    agent_put_str(&b, AGENT_T_VERSION, AGENT_VERSION);
    agent_put_str(&b, AGENT_T_OS, os);
    agent_put_str(&b, AGENT_T_KERNEL, kernel);
    agent_put_str(&b, AGENT_T_HOSTNAME, u.nodename);
    put_addresses(&b);
    return send_msg(c, agent_build_end(&b));
}

/* Mount points of /proc/mounts, in its order (parents before children). Returns how many. */
static int read_mounts(char (*points)[512], int max)
{
    FILE *f = fopen("/proc/mounts", "re");
    char line[1024];
    int n = 0;
    if (!f)
        return 0;
    while (n < max && fgets(line, sizeof(line), f)) {
        char dev[256], point[512];
        if (sscanf(line, "%255s %511s", dev, point) != 2)
            continue;
        /* /proc/mounts escapes spaces and such as \ooo octal. */
        char *w = points[n];
        for (const char *r = point; *r; r++) {
            int o;
            if (r[0] == '\\' && sscanf(r + 1, "%3o", &o) == 1 && r[1] && r[2] && r[3]) {
                *w++ = (char)o;
                r += 3;
            } else {
                *w++ = *r;
            }
        }
        *w = 0;
        n++;
    }
    fclose(f);
    return n;
}

/* FIFREEZE or FITHAW on each filesystem that takes it; returns how many did. */
static int freeze_all(bool freeze)
{
    static char points[MAX_MOUNTS][512];
    int n = read_mounts(points, MAX_MOUNTS), done = 0;
    /* Children before parents when freezing (a frozen parent would block the child's path),
     * the other way round when thawing. */
    for (int k = 0; k < n; k++) {
        const char *p = points[freeze ? n - 1 - k : k];
        int fd = open(p, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NONBLOCK);
        if (fd < 0)
            continue;
        if (ioctl(fd, freeze ? FIFREEZE : FITHAW, 0) == 0)
            done++; /* others: no freeze support, or a second mount of one filesystem */
        close(fd);
    }
    return done;
}

static void timer_path(struct conn *c, char *buf, size_t len)
{
    snprintf(buf, len, "%s/freeze-timer.pid", c->cfg->run_dir);
}

/* Ends the pending thaw timer, if any. */
static void cancel_timer(struct conn *c)
{
    char path[600];
    long pid = 0;
    timer_path(c, path, sizeof(path));
    FILE *f = fopen(path, "re");
    if (f) {
        if (fscanf(f, "%ld", &pid) == 1 && pid > 1)
            kill((pid_t)pid, SIGKILL);
        fclose(f);
    }
    unlink(path);
}

/*
 * A process that thaws everything when the timeout passes, unless a thaw kills it first: a
 * grandchild (it outlives the connection; init reaps it), its pid in RUN/freeze-timer.pid.
 */
static int record_timer(struct conn *c, unsigned timeout_s)
{
    char path[600];
    int p[2];
    timer_path(c, path, sizeof(path));
    if (pipe2(p, O_CLOEXEC) < 0)
        return -errno;
    pid_t pid = fork();
    if (pid < 0) {
        close(p[0]);
        close(p[1]);
        return -errno;
    }
    if (pid == 0) {
        pid_t g = fork();
        if (g != 0) {
            if (write(p[1], &g, sizeof(g)) < 0)
                _exit(1);
            _exit(0);
        }
        close(p[1]);
        close(c->fd); /* the host's connection ends with its request, not with the timer */
        struct timespec t = { .tv_sec = timeout_s };
        while (nanosleep(&t, &t) < 0 && errno == EINTR)
            ;
        int n = freeze_all(false);
        agent_log("freeze timeout (%u s) passed: thawed %d filesystem(s)", timeout_s, n);
        unlink(path);
        _exit(0);
    }
    close(p[1]);
    pid_t g = -1;
    int ok = read(p[0], &g, sizeof(g)) == (ssize_t)sizeof(g) && g > 0;
    close(p[0]);
    waitpid(pid, NULL, 0);
    if (!ok)
        return -ECHILD;
    FILE *f = fopen(path, "we");
    if (!f)
        return -errno;
    fprintf(f, "%ld\n", (long)g);
    return fclose(f) == 0 ? 0 : -EIO;
}

int handle_freeze(struct conn *c, const struct agent_msg *m)
{
    uint32_t timeout;
    agent_get_u32(m, AGENT_T_TIMEOUT, &timeout);
    if (timeout == 0 || timeout > 3600)
        return reply_error(c, m->h.id, EINVAL, "freeze: a timeout of 1 to 3600 s, not %u", timeout);
    cancel_timer(c);
    /* The timer first: should this process die while freezing, the guest still thaws. */
    int ret = record_timer(c, timeout);
    if (ret < 0)
        return reply_error(c, m->h.id, ret, "freeze: cannot start the thaw timer: %s", strerror(-ret));
    int n = freeze_all(true);
    struct agent_builder b;
    agent_build_start(&b, c->out, AGENT_OK, 0, m->h.id);
    agent_put_u32(&b, AGENT_T_COUNT, (uint32_t)n);
    return send_msg(c, agent_build_end(&b));
}

int handle_thaw(struct conn *c, const struct agent_msg *m)
{
    cancel_timer(c);
    int n = freeze_all(false);
    struct agent_builder b;
    agent_build_start(&b, c->out, AGENT_OK, 0, m->h.id);
    agent_put_u32(&b, AGENT_T_COUNT, (uint32_t)n);
    return send_msg(c, agent_build_end(&b));
}

int handle_shutdown(struct conn *c, const struct agent_msg *m)
{
    uint32_t mode;
    agent_get_u32(m, AGENT_T_MODE, &mode);
    int ret = reply_ok(c, m->h.id);
    cancel_timer(c);
    freeze_all(false); /* a frozen filesystem would hang the sync */
    /* Under systemd its own orderly shutdown; elsewhere (an initramfs whose init is a
     * script) the kernel's, after a sync. */
    if (access("/run/systemd/system", F_OK) == 0) {
        execl("/bin/systemctl", "systemctl", mode == AGENT_SHUTDOWN_REBOOT ? "reboot" : "poweroff",
              (char *)NULL);
        agent_log("systemctl: %s; powering off directly", strerror(errno));
    }
    sync();
    reboot(mode == AGENT_SHUTDOWN_REBOOT ? RB_AUTOBOOT : RB_POWER_OFF);
    agent_log("reboot: %s", strerror(errno));
    return ret < 0 ? ret : -ECONNRESET;
}

/* The host resumed the guest (after a pause, a restore or a migration): its wall clock stood
 * still meanwhile, and is stepped to the host's. */
int handle_set_time(struct conn *c, const struct agent_msg *m)
{
    uint64_t ns;
    struct timespec before, t;
    agent_get_u64(m, AGENT_T_TIME, &ns);
    if (ns < 946684800ull * 1000000000ull) /* before 2000: not a clock, a mistake */
        return reply_error(c, m->h.id, EINVAL, "set-time: %llu ns is not a plausible time",
                           (unsigned long long)ns);
    t.tv_sec = (time_t)(ns / 1000000000ull);
    t.tv_nsec = (long)(ns % 1000000000ull);
    clock_gettime(CLOCK_REALTIME, &before);
    if (clock_settime(CLOCK_REALTIME, &t) < 0)
        return reply_error(c, m->h.id, errno, "set-time: %s", strerror(errno));
    double step = (double)(t.tv_sec - before.tv_sec) + (t.tv_nsec - before.tv_nsec) / 1e9;
    if (step > 1 || step < -1)
        agent_log("clock stepped by %.3f s to the host's", step);
    return reply_ok(c, m->h.id);
}
