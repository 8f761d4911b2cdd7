/* unix_socket.c: a listening UNIX stream socket at a path nothing else owns. */
#include "io/unix_socket.h"

#include <errno.h>
#include <stddef.h>
#include <fcntl.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

/* Unlinks a socket file nobody listens on any more; refuses a live one or another file. */
static int remove_stale_socket(const char *path, const struct sockaddr_un *sa)
{
    struct stat st;
    if (lstat(path, &st) < 0)
        return errno == ENOENT ? 0 : -errno;
    if (!S_ISSOCK(st.st_mode))
        return -EEXIST;
    /* Non-blocking: a live listener with a full backlog answers EAGAIN instead of making
     * us wait. */
    int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (probe < 0)
        return -errno;
    int live = connect(probe, (const struct sockaddr *)sa, sizeof(*sa)) == 0 ||
               errno == EAGAIN; /* a full backlog: alive, only busy */
    close(probe);
    if (live)
        return -EADDRINUSE;
    return unlink(path) < 0 && errno != ENOENT ? -errno : 0;
}

int unix_socket_listen(const char *path, int backlog, struct stat *bound)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    if (!path || !*path || strlen(path) >= sizeof(sa.sun_path))
        return -ENAMETOOLONG;
    memcpy(sa.sun_path, path, strlen(path));
    int ret = remove_stale_socket(path, &sa);
    if (ret < 0)
        return ret;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return -errno;
    /* Linux gives the socket file the mode of the socket's inode at bind: no moment when
     * others could connect. The chmod after covers systems where it does not. A file that
     * appeared meanwhile makes bind fail (EADDRINUSE): it is never replaced. */
    if (fchmod(fd, 0600) < 0 || bind(fd, (const struct sockaddr *)&sa, sizeof(sa)) < 0) {
        ret = -errno;
        close(fd);
        return ret;
    }
    if (chmod(path, 0600) < 0 || listen(fd, backlog) < 0 || (bound && lstat(path, bound) < 0)) {
        ret = -errno;
        unlink(path); /* ours: bound just now */
        close(fd);
        return ret;
    }
    return fd;
}

int unix_socket_adopt(int fd, const char *path, struct stat *bound)
{
    int dup = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (dup < 0)
        return -errno;
    int flags = fcntl(dup, F_GETFL);
    if (flags < 0 || fcntl(dup, F_SETFL, flags | O_NONBLOCK) < 0) {
        int ret = -errno;
        close(dup);
        return ret;
    }
    if (bound && lstat(path, bound) < 0)
        memset(bound, 0, sizeof(*bound));
    return dup;
}

bool unix_socket_bound_to(int fd, const char *path)
{
    struct sockaddr_un sa = { 0 };
    socklen_t len = sizeof(sa);
    if (!path || getsockname(fd, (struct sockaddr *)&sa, &len) < 0 || sa.sun_family != AF_UNIX ||
        len <= offsetof(struct sockaddr_un, sun_path) || len > sizeof(sa))
        return false;
    size_t name_len = strnlen(sa.sun_path, len - offsetof(struct sockaddr_un, sun_path));
    return name_len == strlen(path) && memcmp(sa.sun_path, path, name_len) == 0;
}

void unix_socket_unlink(const char *path, const struct stat *bound)
{
    struct stat st;
    if (lstat(path, &st) == 0 && st.st_dev == bound->st_dev && st.st_ino == bound->st_ino)
        unlink(path);
}
