/* jail.c: `godwit run --jail`: namespaces, a root of its own, an unprivileged user (jail.h). */
#define _GNU_SOURCE
#include "cli/jail.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

#include "log.h"
#include "vm/vm.h"

/* Open files the jailed VM may hold: disks, taps, io_uring, sockets; far above its needs. */
#define JAIL_NOFILE 4096

int jail_plan_add(struct jail_plan *plan, const char *path, bool parent_dir, bool readonly)
{
    if (!path)
        return 0;
    if (plan->nr_mounts == JAIL_MAX_MOUNTS)
        return -E2BIG;
    plan->mounts[plan->nr_mounts++] =
        (struct jail_mount){ .path = path, .parent_dir = parent_dir, .readonly = readonly };
    return 0;
}

int jail_plan_vm(struct jail_plan *plan, const struct vm_config *cfg, const char *api_socket,
                 const char *restore_dir)
{
    int ret = jail_plan_add(plan, cfg->kernel_path, false, true);
    if (ret == 0)
        ret = jail_plan_add(plan, cfg->initrd_path, false, true);
    for (unsigned i = 0; ret == 0 && i < cfg->nr_disks; i++)
        ret = jail_plan_add(plan, cfg->disks[i].path, false, cfg->disks[i].readonly);
    /* A console socket or file, and the API socket, are made by godwit: their directory. */
    if (ret == 0 && cfg->virtio_console != GODWIT_VIRTIO_CONSOLE_NONE)
        ret = jail_plan_add(plan, cfg->virtio_console_path, true, false);
    /* The vsock socket's directory holds the guest connections' <socket>_<port> too. */
    if (ret == 0 && cfg->vsock_cid)
        ret = jail_plan_add(plan, cfg->vsock_path, true, false);
    if (ret == 0)
        ret = jail_plan_add(plan, api_socket, true, false);
    if (ret == 0)
        ret = jail_plan_add(plan, restore_dir, false, true);
    plan->tun = cfg->nr_nets > 0;
    if (ret < 0)
        log_error("--jail: more than %d files to put in the jail", JAIL_MAX_MOUNTS);
    return ret;
}

static bool climbs_out(const char *path)
{
    for (const char *p = path; (p = strstr(p, "..")); p += 2) {
        bool starts = p == path || p[-1] == '/', ends = p[2] == '\0' || p[2] == '/';
        if (starts && ends)
            return true;
    }
    return false;
}

int jail_outside_path(const char *dir, const char *cwd, const char *path, char *out, size_t len)
{
    if (climbs_out(path) || (path[0] != '/' && climbs_out(cwd)))
        return -EINVAL;
    int n = path[0] == '/' ? snprintf(out, len, "%s%s", dir, path)
                           : snprintf(out, len, "%s%s/%s", dir, cwd, path);
    return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
}

/* ---- building the jail (in the child, in its own mount namespace) ---- */

static int fail(const char *what, const char *path)
{
    int err = errno;
    log_error("--jail: %s %s: %s", what, path, strerror(err));
    return -err;
}

/* a + b into out; -ENAMETOOLONG (after one line) when it does not fit. */
static int join(char *out, size_t len, const char *a, const char *b)
{
    int n = snprintf(out, len, "%s%s", a, b);
    if (n >= 0 && (size_t)n < len)
        return 0;
    log_error("--jail: the path %s%s is too long", a, b);
    return -ENAMETOOLONG;
}

/* mkdir -p, each new directory root's and mode 0755: traversable by the jailed user. */
static int make_dirs(const char *path)
{
    char buf[PATH_MAX];
    if (snprintf(buf, sizeof(buf), "%s", path) >= (int)sizeof(buf))
        return -ENAMETOOLONG;
    for (char *p = buf + 1;; p++) {
        if (*p != '/' && *p != '\0')
            continue;
        char c = *p;
        *p = '\0';
        if (mkdir(buf, 0755) < 0 && errno != EEXIST)
            return fail("cannot make", buf);
        *p = c;
        if (!c)
            return 0;
    }
}

static int parent_of(const char *path, char *out, size_t len)
{
    const char *slash = strrchr(path, '/');
    if (!slash)
        return snprintf(out, len, ".") < (int)len ? 0 : -ENAMETOOLONG;
    size_t n = slash == path ? 1 : (size_t)(slash - path);
    if (n >= len)
        return -ENAMETOOLONG;
    memcpy(out, path, n);
    out[n] = '\0';
    return 0;
}

/* A mount point for `source` at `target`: a directory for a directory, an empty file for a
 * file (the bind mount covers it). */
static int make_mount_point(const char *source, const char *target)
{
    struct stat st;
    if (stat(source, &st) < 0)
        return fail("cannot find", source);
    if (S_ISDIR(st.st_mode))
        return make_dirs(target);
    char dir[PATH_MAX];
    int ret = parent_of(target, dir, sizeof(dir));
    if (ret == 0)
        ret = make_dirs(dir);
    if (ret < 0)
        return ret;
    int fd = open(target, O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0)
        return fail("cannot make a mount point at", target);
    close(fd);
    return 0;
}

static int bind_path(const char *source, const char *target, bool readonly)
{
    int ret = make_mount_point(source, target);
    if (ret < 0)
        return ret;
    if (mount(source, target, NULL, MS_BIND, NULL) < 0)
        return fail("cannot bind-mount", source);
    unsigned long flags = MS_BIND | MS_REMOUNT | MS_NOSUID | MS_NODEV | (readonly ? MS_RDONLY : 0);
    if (mount(NULL, target, NULL, flags, NULL) < 0)
        return fail("cannot restrict the mount of", source);
    return 0;
}

static int bind_plan(const struct jail *jail, const struct jail_plan *plan, const char *cwd)
{
    for (size_t i = 0; i < plan->nr_mounts; i++) {
        const struct jail_mount *m = &plan->mounts[i];
        char source[PATH_MAX], target[PATH_MAX], inside[PATH_MAX];
        int ret = jail_outside_path(jail->dir, cwd, m->path, inside, sizeof(inside));
        if (ret == -EINVAL) {
            log_error("--jail: %s climbs out of the jail with '..'", m->path);
            return ret;
        }
        if (ret == 0 && m->parent_dir) {
            ret = parent_of(m->path, source, sizeof(source));
            if (ret == 0)
                ret = parent_of(inside, target, sizeof(target));
        } else if (ret == 0) {
            ret = snprintf(source, sizeof(source), "%s", m->path) < (int)sizeof(source) &&
                          snprintf(target, sizeof(target), "%s", inside) < (int)sizeof(target)
                      ? 0 : -ENAMETOOLONG;
        }
        if (ret == 0)
            ret = bind_path(source, target, m->readonly);
        if (ret < 0)
            return ret;
    }
    return 0;
}

static int make_node(const char *dev_dir, const char *name, unsigned major, unsigned minor,
                     mode_t mode, uid_t uid, gid_t gid)
{
    char path[PATH_MAX];
    int ret = join(path, sizeof(path), dev_dir, name);
    if (ret < 0)
        return ret;
    if (mknod(path, S_IFCHR | mode, makedev(major, minor)) < 0)
        return fail("cannot make", path);
    /* mknod's mode passes through the umask: set it exactly. */
    if (chown(path, uid, gid) < 0 || chmod(path, mode) < 0)
        return fail("cannot hand over", path);
    return 0;
}

/* A /dev of its own: /dev/kvm (and /dev/net/tun) for the jailed user only, null and urandom. */
static int make_dev(const struct jail *jail, bool tun)
{
    char dev[PATH_MAX], net[PATH_MAX];
    int ret = join(dev, sizeof(dev), jail->dir, "/dev");
    if (ret == 0)
        ret = make_dirs(dev);
    if (ret < 0)
        return ret;
    if (mount("tmpfs", dev, "tmpfs", MS_NOSUID | MS_NOEXEC, "mode=0755,size=64k") < 0)
        return fail("cannot mount a tmpfs on", dev);
    ret = make_node(dev, "/kvm", 10, 232, 0600, jail->uid, jail->gid);
    if (ret == 0)
        ret = make_node(dev, "/null", 1, 3, 0666, 0, 0);
    if (ret == 0)
        ret = make_node(dev, "/urandom", 1, 9, 0666, 0, 0);
    if (ret < 0 || !tun)
        return ret;
    if ((ret = join(net, sizeof(net), dev, "/net")) < 0)
        return ret;
    if (mkdir(net, 0755) < 0)
        return fail("cannot make", net);
    return make_node(net, "/tun", 10, 200, 0600, jail->uid, jail->gid);
}

/* /run/godwit on the jail's own disk, so that its API socket is seen from outside too (at
 * DIR/run/godwit/NAME.sock), the jailed user's and nobody else's. */
static int make_runtime_dir(const struct jail *jail)
{
    char path[PATH_MAX];
    int ret = join(path, sizeof(path), jail->dir, "/run/godwit");
    if (ret == 0)
        ret = make_dirs(path);
    if (ret == 0 && (chown(path, jail->uid, jail->gid) < 0 || chmod(path, 0700) < 0))
        ret = fail("cannot hand over", path);
    return ret;
}

static int mount_at(const struct jail *jail, const char *sub, const char *type, unsigned long flags,
                    const char *data)
{
    char path[PATH_MAX];
    int ret = join(path, sizeof(path), jail->dir, sub);
    if (ret == 0)
        ret = make_dirs(path);
    if (ret == 0 && mount(type, path, type, flags, data) < 0)
        ret = fail("cannot mount on", path);
    return ret;
}

/* The root becomes the jail; the old one is detached, out of reach. */
static int pivot_into(const struct jail *jail, const char *cwd)
{
    if (chdir(jail->dir) < 0)
        return fail("cannot enter", jail->dir);
    if (mkdir(".old-root", 0700) < 0 && errno != EEXIST)
        return fail("cannot make", ".old-root");
    if (syscall(SYS_pivot_root, ".", ".old-root") < 0)
        return fail("cannot pivot into", jail->dir);
    if (umount2("/.old-root", MNT_DETACH) < 0)
        return fail("cannot detach", "the old root");
    rmdir("/.old-root");
    if (chdir(cwd) < 0)
        return fail("cannot enter, in the jail,", cwd);
    return 0;
}

static int build(const struct jail *jail, const struct jail_plan *plan, const char *cwd)
{
    char cwd_inside[PATH_MAX];
    /* Nothing mounted here reaches the host's namespace, and the jail root is a mount point
     * of its own, as pivot_root wants. */
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
        return fail("cannot make private", "/");
    int ret = make_dirs(jail->dir);
    if (ret < 0)
        return ret;
    if (mount(jail->dir, jail->dir, NULL, MS_BIND, NULL) < 0)
        return fail("cannot bind-mount", jail->dir);
    /* The jail's own file systems first: what the plan binds under /tmp goes on top. */
    ret = make_dev(jail, plan->tun);
    if (ret == 0)
        ret = mount_at(jail, "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
    if (ret == 0)
        ret = mount_at(jail, "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777,size=16m");
    if (ret == 0)
        ret = jail_outside_path(jail->dir, "/", cwd, cwd_inside, sizeof(cwd_inside));
    if (ret == 0)
        ret = make_dirs(cwd_inside);
    if (ret == 0)
        ret = bind_plan(jail, plan, cwd);
    if (ret == 0)
        ret = make_runtime_dir(jail);
    if (ret == 0)
        ret = pivot_into(jail, cwd);
    return ret;
}

/*
 * The user's RLIMIT_MEMLOCK raised, while root may, to what registering the guest's RAM with
 * the VM's io_uring ring takes (disk I/O straight from guest memory): without CAP_IPC_LOCK the
 * kernel charges those pinned pages to it, and the usual 8 MiB would leave all but 8 MiB of a
 * guest's RAM unregistered. The kernel counts every process of the uid together, so VMs that
 * share a uid share it (one uid per VM, as the jail's docs say). Never lowered.
 */
static int raise_memlock(const struct jail *jail)
{
    struct rlimit lim;
    if (!jail->memlock_bytes || getrlimit(RLIMIT_MEMLOCK, &lim) < 0)
        return 0;
    rlim_t want = (rlim_t)jail->memlock_bytes;
    if (lim.rlim_max != RLIM_INFINITY && lim.rlim_max < want)
        lim.rlim_max = want;
    if (lim.rlim_cur != RLIM_INFINITY && lim.rlim_cur < want)
        lim.rlim_cur = want;
    return setrlimit(RLIMIT_MEMLOCK, &lim) < 0 ? fail("cannot raise", "RLIMIT_MEMLOCK") : 0;
}

/* The unprivileged user, for good: its groups, ids, no capabilities (a setuid away from 0
 * clears them), no way to gain any, and limits. */
static int become_user(const struct jail *jail)
{
    int ret = raise_memlock(jail);
    if (ret < 0)
        return ret;
    if (setgroups(0, NULL) < 0 || setresgid(jail->gid, jail->gid, jail->gid) < 0 ||
        setresuid(jail->uid, jail->uid, jail->uid) < 0)
        return fail("cannot become", "the jail's user");
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
        return fail("cannot set", "no_new_privs");
    struct rlimit files = { JAIL_NOFILE, JAIL_NOFILE }, core = { 0, 0 };
    /* No core dumps: one would hold the guest's memory. */
    if (setrlimit(RLIMIT_NOFILE, &files) < 0 || setrlimit(RLIMIT_CORE, &core) < 0)
        return fail("cannot set", "resource limits");
    return 0;
}

/* ---- outside: the parent that waits ---- */

static volatile sig_atomic_t child_pid;

static void forward_signal(int sig)
{
    if (child_pid > 0)
        kill((pid_t)child_pid, sig);
}

static void wait_for_jailed(pid_t child, struct jail_cgroup *cgroup)
{
    struct sigaction sa = { .sa_handler = forward_signal, .sa_flags = SA_RESTART };
    sigemptyset(&sa.sa_mask);
    child_pid = child;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    int status;
    while (waitpid(child, &status, 0) < 0) {
        if (errno != EINTR) {
            status = 1 << 8;
            break;
        }
    }
    jail_cgroup_remove(cgroup);
    _exit(WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
}

int jail_join_netns(const char *netns)
{
    char path[PATH_MAX];
    /* A bare name is one of `ip netns`'s; anything with a slash is a path. */
    const char *dir = strchr(netns, '/') ? "" : "/run/netns/";
    if (!netns[0] || snprintf(path, sizeof(path), "%s%s", dir, netns) >= (int)sizeof(path)) {
        log_error("--netns: '%s' is not a namespace name or path", netns);
        return -EINVAL;
    }
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    int ret = fd < 0 ? -errno : 0;
    if (ret == 0 && setns(fd, CLONE_NEWNET) < 0)
        ret = -errno;
    if (fd >= 0)
        close(fd);
    if (ret < 0)
        log_error("--netns: cannot join %s: %s", path, strerror(-ret));
    return ret;
}

/* Outside, as root: the cgroup and its limits, before the jailed process exists. Returns the
 * descriptor it joins through, -1 for none, or -errno after one line. */
static int prepare_cgroup(struct jail *jail)
{
    char generated[32];
    if (!jail->cgroup.nr_settings)
        return -1;
    int ret = jail_cgroup_usable(JAIL_CGROUP_ROOT);
    if (ret < 0)
        return ret;
    const char *name = jail->name;
    if (!name) {
        snprintf(generated, sizeof(generated), "vm-%d", (int)getpid());
        name = generated;
    }
    ret = jail_cgroup_make(&jail->cgroup, JAIL_CGROUP_ROOT, name);
    if (ret < 0)
        return ret;
    int fd = jail_cgroup_open_procs(&jail->cgroup);
    if (fd < 0)
        jail_cgroup_remove(&jail->cgroup);
    return fd;
}

int jail_enter(struct jail *jail, const struct jail_plan *plan)
{
    char cwd[PATH_MAX];
    if (jail->dir[0] != '/' || climbs_out(jail->dir)) {
        log_error("--jail: '%s' must be an absolute path without '..'", jail->dir);
        return -EINVAL;
    }
    if (!jail->ids_given || jail->uid == 0) {
        log_error("--jail needs --uid and --gid, and a uid other than 0");
        return -EINVAL;
    }
    if (!getcwd(cwd, sizeof(cwd)))
        return fail("cannot read", "the working directory");
    int procs_fd = prepare_cgroup(jail);
    if (procs_fd < -1)
        return procs_fd;
    if (unshare(CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWIPC) < 0) {
        int ret = fail("cannot make", "new namespaces (root is needed)");
        jail_cgroup_remove(&jail->cgroup);
        return ret;
    }
    fflush(NULL);
    pid_t child = fork(); /* the first process in the new PID namespace */
    if (child < 0) {
        int ret = fail("cannot fork", "the jailed process");
        jail_cgroup_remove(&jail->cgroup);
        return ret;
    }
    if (child > 0) {
        if (procs_fd >= 0)
            close(procs_fd);
        wait_for_jailed(child, &jail->cgroup); /* does not return */
    }
    /* A directory outside the jail must not stay open in it: openat(fd, "..") walks out. */
    if (jail->cgroup.path[0])
        close(jail->cgroup.parent_fd);
    /* Into its cgroup before it allocates anything, so that all it uses is counted. */
    int ret = procs_fd >= 0 ? jail_cgroup_join(procs_fd) : 0;
    if (ret == 0)
        ret = build(jail, plan, cwd);
    if (ret == 0)
        ret = become_user(jail);
    if (ret == 0 && setenv("XDG_RUNTIME_DIR", "/run", 1) < 0)
        ret = -errno;
    if (ret < 0)
        _exit(1); /* the line is out; the parent exits with this status */
    log_info("jailed in %s as %u:%u; the API socket is under %s/run/godwit%s%s", jail->dir,
             (unsigned)jail->uid, (unsigned)jail->gid, jail->dir,
             jail->cgroup.path[0] ? "; cgroup " : "", jail->cgroup.path);
    return 0;
}
