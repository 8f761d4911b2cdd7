/* runtime.c: where a VM's API socket lives, and how its name is made unique on the host. */
#define _GNU_SOURCE
#include "api/runtime.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

static uid_t test_euid = (uid_t)-1; /* runtime_test_set_euid() */

static uid_t runtime_euid(void)
{
    return test_euid != (uid_t)-1 ? test_euid : geteuid();
}

void runtime_test_set_euid(uid_t euid)
{
    test_euid = euid;
}

/* any_owner: a client's look, where root accepts a directory that another user owns. */
static int dir_check(const char *path, uid_t euid, bool any_owner)
{
    struct stat st;
    if (lstat(path, &st) < 0) {
        int err = errno;
        log_error("runtime directory %s: %s", path, strerror(err));
        return -err;
    }
    if (!S_ISDIR(st.st_mode) || (!any_owner && st.st_uid != euid) ||
        (st.st_mode & (S_IWGRP | S_IWOTH))) {
        log_error("runtime directory %s: not a directory owned by uid %u that only it can "
                  "write to (%s, uid %u, mode %04o): refusing it", path, (unsigned)euid,
                  S_ISLNK(st.st_mode) ? "a symlink" : S_ISDIR(st.st_mode) ? "a directory"
                                                                         : "not a directory",
                  (unsigned)st.st_uid, (unsigned)(st.st_mode & 07777));
        return -EPERM;
    }
    return 0;
}

int runtime_dir_check(const char *path, uid_t euid)
{
    return dir_check(path, euid, false);
}

static int dir_path(uid_t euid, char *buf, size_t len)
{
    const char *xdg = getenv("XDG_RUNTIME_DIR");
    int n;
    if (euid == 0)
        n = snprintf(buf, len, "/run/godwit");
    else if (xdg && xdg[0] == '/')
        n = snprintf(buf, len, "%s/godwit", xdg);
    else
        n = snprintf(buf, len, "/tmp/godwit-%u", (unsigned)euid);
    return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
}

int runtime_dir(char *buf, size_t len)
{
    uid_t euid = runtime_euid();
    int ret = dir_path(euid, buf, len);
    if (ret < 0)
        return ret;
    /* Private to the user: sockets in it control VMs. In /tmp anyone may have made it first:
     * what is there is checked, never trusted. */
    if (mkdir(buf, 0700) < 0 && errno != EEXIST)
        return -errno;
    return runtime_dir_check(buf, euid);
}

int runtime_client_dir(char *buf, size_t len)
{
    uid_t euid = runtime_euid();
    int ret = dir_path(euid, buf, len);
    /* Root may look into a directory a service user owns (/run/godwit made by systemd for the
     * unit's user): what it finds there is that user's VMs, which root controls anyway. */
    return ret < 0 ? ret : dir_check(buf, euid, euid == 0);
}

bool runtime_name_valid(const char *name)
{
    size_t len = strlen(name);
    if (len == 0 || len > RUNTIME_NAME_MAX || name[0] == '.' || name[0] == '-')
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = name[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '.' || c == '_' || c == '-';
        if (!ok)
            return false;
    }
    return true;
}

void runtime_generate_name(char *buf, size_t len)
{
    uint32_t r = 0;
    if (getrandom(&r, sizeof(r), 0) != sizeof(r))
        r = (uint32_t)getpid() ^ (uint32_t)time(NULL);
    snprintf(buf, len, "vm-%08x", r);
}

static int socket_in(int (*pick_dir)(char *, size_t), const char *name, char *buf, size_t len)
{
    char dir[RUNTIME_PATH_MAX];
    int ret = pick_dir(dir, sizeof(dir));
    if (ret < 0)
        return ret;
    int n = snprintf(buf, len, "%s/%s.sock", dir, name);
    return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
}

int runtime_socket_path(const char *name, char *buf, size_t len)
{
    return socket_in(runtime_dir, name, buf, len);
}

int runtime_client_socket_path(const char *name, char *buf, size_t len)
{
    return socket_in(runtime_client_dir, name, buf, len);
}

int runtime_claim_name(const char *name)
{
    char dir[RUNTIME_PATH_MAX], path[RUNTIME_PATH_MAX + 80];
    int ret = runtime_dir(dir, sizeof(dir));
    if (ret < 0)
        return ret;
    snprintf(path, sizeof(path), "%s/%s.lock", dir, name);
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0)
        return -errno;
    if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
        ret = errno == EWOULDBLOCK ? -EADDRINUSE : -errno;
        close(fd);
        return ret;
    }
    return fd;
}
