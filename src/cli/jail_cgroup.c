/* jail_cgroup.c: the jailed VM's cgroup v2 and its limits (jail_cgroup.h). */
#define _GNU_SOURCE
#include "cli/jail_cgroup.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/magic.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

#define SETTING_MAX 256
#define CONTROLLER_MAX 32
/* 20 ms apart: 15 s in all */
#define JAIL_CGROUP_REMOVE_TRIES 750

static bool file_name_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '.';
}

int jail_cgroup_check_setting(const char *setting)
{
    const char *eq = strchr(setting, '=');
    size_t name_len = eq ? (size_t)(eq - setting) : 0;
    bool name_ok = name_len > 0 && memchr(setting, '.', name_len) && setting[0] != '.';
    for (size_t i = 0; name_ok && i < name_len; i++)
        name_ok = file_name_char(setting[i]);
    if (!name_ok || strlen(setting) > SETTING_MAX) {
        log_error("--cgroup: '%s' must be FILE=VALUE with FILE a controller's file, e.g. "
                  "memory.max=1G", setting);
        return -EINVAL;
    }
    if (strncmp(setting, "cgroup.", 7) == 0) {
        log_error("--cgroup: '%.*s' is not a limit: cgroup.* files move processes or change "
                  "the tree", (int)name_len, setting);
        return -EINVAL;
    }
    if (!eq[1] || strpbrk(eq + 1, "\n\r")) {
        log_error("--cgroup: the value of '%.*s' must be one non-empty line", (int)name_len, setting);
        return -EINVAL;
    }
    return 0;
}

int jail_cgroup_add(struct jail_cgroup *cg, const char *setting)
{
    int ret = jail_cgroup_check_setting(setting);
    if (ret < 0)
        return ret;
    if (cg->nr_settings == JAIL_CGROUP_MAX_SETTINGS) {
        log_error("--cgroup: at most %d settings", JAIL_CGROUP_MAX_SETTINGS);
        return -E2BIG;
    }
    cg->settings[cg->nr_settings++] = setting;
    return 0;
}

int jail_cgroup_usable(const char *root)
{
    struct statfs fs;
    if (statfs(root, &fs) < 0) {
        int err = errno;
        log_error("--cgroup: cannot read %s: %s", root, strerror(err));
        return -err;
    }
    if (fs.f_type != CGROUP2_SUPER_MAGIC) {
        log_error("--cgroup: %s is not a cgroup v2 hierarchy (mount -t cgroup2 none %s)", root, root);
        return -ENOTSUP;
    }
    return 0;
}

/* Writes `value` into dir/file: 0, or -errno after one line naming both. */
static int write_file(const char *dir, const char *file, const char *value)
{
    char path[4096 + 64];
    if (snprintf(path, sizeof(path), "%s/%s", dir, file) >= (int)sizeof(path))
        return -ENAMETOOLONG;
    int fd = open(path, O_WRONLY | O_CLOEXEC | O_NOFOLLOW);
    int ret = 0;
    if (fd < 0 || write(fd, value, strlen(value)) < 0)
        ret = -errno;
    if (fd >= 0)
        close(fd);
    if (ret < 0)
        log_error("--cgroup: cannot write '%s' to %s: %s", value, path, strerror(-ret));
    return ret;
}

/* "+memory" for "memory.max": the controller a setting needs enabled in the parents. */
static void controller_of(const char *setting, char *out, size_t len)
{
    size_t n = strcspn(setting, ".");
    snprintf(out, len, "+%.*s", (int)(n < CONTROLLER_MAX ? n : CONTROLLER_MAX), setting);
}

/* Enables in `dir` each controller the settings need for its children. */
static int enable_controllers(const struct jail_cgroup *cg, const char *dir)
{
    for (size_t i = 0; i < cg->nr_settings; i++) {
        char controller[CONTROLLER_MAX + 2];
        controller_of(cg->settings[i], controller, sizeof(controller));
        int ret = write_file(dir, "cgroup.subtree_control", controller);
        if (ret < 0)
            return ret;
    }
    return 0;
}

static int write_settings(const struct jail_cgroup *cg)
{
    for (size_t i = 0; i < cg->nr_settings; i++) {
        char file[SETTING_MAX + 1];
        const char *eq = strchr(cg->settings[i], '=');
        snprintf(file, sizeof(file), "%.*s", (int)(eq - cg->settings[i]), cg->settings[i]);
        int ret = write_file(cg->path, file, eq + 1);
        if (ret < 0)
            return ret;
    }
    return 0;
}

int jail_cgroup_make(struct jail_cgroup *cg, const char *root, const char *name)
{
    char parent[4096];
    cg->path[0] = '\0';
    cg->parent_fd = -1;
    if (snprintf(cg->name, sizeof(cg->name), "%s", name) >= (int)sizeof(cg->name) ||
        snprintf(parent, sizeof(parent), "%s/godwit", root) >= (int)sizeof(parent) ||
        snprintf(cg->path, sizeof(cg->path), "%s/%s", parent, name) >= (int)sizeof(cg->path)) {
        log_error("--cgroup: the cgroup path for '%s' is too long", name);
        cg->path[0] = '\0';
        return -ENAMETOOLONG;
    }
    int ret = 0;
    if (mkdir(parent, 0755) < 0 && errno != EEXIST)
        ret = -errno;
    /* An earlier run's, left when its root process was killed: empty, so rmdir takes it. */
    if (ret == 0 && rmdir(cg->path) < 0 && errno != ENOENT)
        ret = -errno;
    if (ret == 0 && mkdir(cg->path, 0755) < 0)
        ret = -errno;
    if (ret == 0 && (cg->parent_fd = open(parent, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0) {
        ret = -errno;
        rmdir(cg->path);
    }
    if (ret < 0) {
        log_error("--cgroup: cannot make %s: %s%s", cg->path, strerror(-ret),
                  ret == -EBUSY ? " (a VM of that name runs in it)" : "");
        cg->path[0] = '\0';
        return ret;
    }
    ret = enable_controllers(cg, root);
    if (ret == 0)
        ret = enable_controllers(cg, parent);
    if (ret == 0)
        ret = write_settings(cg);
    if (ret < 0)
        jail_cgroup_remove(cg);
    return ret;
}

int jail_cgroup_open_procs(const struct jail_cgroup *cg)
{
    char path[sizeof(cg->path) + 16];
    snprintf(path, sizeof(path), "%s/cgroup.procs", cg->path);
    int fd = open(path, O_WRONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) {
        int err = errno;
        log_error("--cgroup: cannot open %s: %s", path, strerror(err));
        return -err;
    }
    return fd;
}

int jail_cgroup_join(int procs_fd)
{
    /* "0" is the writer itself, whatever PID namespace it is in. */
    int ret = write(procs_fd, "0", 1) < 0 ? -errno : 0;
    close(procs_fd);
    if (ret < 0)
        log_error("--cgroup: cannot move into the VM's cgroup: %s", strerror(-ret));
    return ret;
}

void jail_cgroup_remove(struct jail_cgroup *cg)
{
    if (!cg->path[0])
        return;
    /* The jailed PID 1 has been reaped, but its io_uring workers and the rest of its
     * namespace leave the cgroup a little later (seconds, in a slow nested host). */
    int tries = 0;
    while (unlinkat(cg->parent_fd, cg->name, AT_REMOVEDIR) < 0) {
        if (errno != EBUSY || ++tries > JAIL_CGROUP_REMOVE_TRIES) {
            log_warn("--cgroup: cannot remove %s: %s", cg->path, strerror(errno));
            break;
        }
        nanosleep(&(struct timespec){ .tv_nsec = 20 * 1000 * 1000 }, NULL);
    }
    close(cg->parent_fd);
    cg->parent_fd = -1;
    cg->path[0] = '\0';
}
