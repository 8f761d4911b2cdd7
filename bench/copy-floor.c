/* copy-floor.c: the floor of a migration's first pass on this host. One process sends 83 MiB of
 * a memory file over loopback TCP to another, which receives it (0) into a hot 1 MiB buffer, as
 * iperf3 does, (1) into fresh pages of a file on a tmpfs of huge pages, mapped, as godwit's
 * destination receives guest RAM, (2) into the same kind of pages populated beforehand, (3) into
 * fresh ones, each MiB populated (MADV_POPULATE_WRITE) just before it is read.
 * Usage: copy-floor DIR [ROUNDS] (DIR: a tmpfs mounted with huge pages; bench/copy-floor.sh). */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif
#define SZ (83ul << 20)
#define RUN (1ul << 20)
#define RAM (1ul << 30)
static const char *dir;
static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}
static uint8_t *ram(void)
{
    char path[256];
    snprintf(path, sizeof(path), "%s/ramXXXXXX", dir);
    int fd = mkstemp(path);
    unlink(path);
    if (fd < 0 || ftruncate(fd, RAM) < 0) {
        perror("ram");
        exit(1);
    }
    uint8_t *p = mmap(NULL, RAM, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) {
        perror("mmap");
        exit(1);
    }
    close(fd);
    return p;
}
static void receiver(int fd, int mode)
{
    uint8_t *dst = mode == 0 ? malloc(RUN) : ram();
    if (mode == 2) {
        double t = now();
        madvise(dst, SZ, MADV_POPULATE_WRITE);
        printf("  populating 83 MiB beforehand: %.1f ms\n", now() - t);
        fflush(stdout);
    }
    /* At most a message's 1 MiB per call, as godwit's destination reads RUNS. */
    size_t got = 0, populated = 0;
    ssize_t n;
    while (got < SZ) {
        if (mode == 3 && got + (RUN - got % RUN) > populated) { /* each MiB populated just before */
            madvise(dst + populated, RUN, MADV_POPULATE_WRITE);
            populated += RUN;
        }
        if ((n = recv(fd, mode ? dst + got : dst + got % RUN, RUN - got % RUN, 0)) <= 0)
            break;
        got += (size_t)n;
    }
    if (mode)
        munmap(dst, RAM);
}
int main(int argc, char **argv)
{
    dir = argc > 1 ? argv[1] : "/dev/shm";
    int rounds = argc > 2 ? atoi(argv[2]) : 3;
    static const char *names[] = {
        "hot buffer (as iperf3)", "fresh huge-tmpfs pages (as godwit)",
        "populated huge-tmpfs pages",
        "fresh huge-tmpfs pages, each MiB populated just before it is read"};
    uint8_t *src = ram();
    for (size_t i = 0; i < SZ; i += 4096)
        memset(src + i, (int)(i >> 12) | 1, 4096);
    for (int r = 0; r < rounds; r++)
        for (int mode = 0; mode < 4; mode++) {
            int l = socket(AF_INET, SOCK_STREAM, 0);
            struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(0x7f000001)};
            socklen_t al = sizeof(a);
            if (l < 0 || bind(l, (void *)&a, sizeof(a)) < 0 ||
                getsockname(l, (void *)&a, &al) < 0 || listen(l, 1) < 0) {
                perror("copy-floor: listening");
                return 1;
            }
            fflush(stdout); /* or the child prints what the parent had buffered again */
            pid_t pid = fork();
            if (!pid) {
                int c = accept(l, NULL, NULL);
                receiver(c, mode);
                _exit(0);
            }
            int s = socket(AF_INET, SOCK_STREAM, 0);
            if (pid < 0 || s < 0 || connect(s, (void *)&a, sizeof(a)) < 0) {
                perror("copy-floor: connecting");
                return 1;
            }
            if (mode == 2)
                usleep(600000); /* its populating is not in the transfer's time */
            double t = now();
            for (size_t i = 0; i < SZ; i += RUN)
                for (size_t off = 0; off < RUN;) {
                    ssize_t n = send(s, src + i + off, RUN - off, 0);
                    if (n <= 0) {
                        perror("copy-floor: send");
                        return 1;
                    }
                    off += (size_t)n;
                }
            shutdown(s, SHUT_WR);
            waitpid(pid, NULL, 0);
            double ms = now() - t;
            printf("copy-floor: round %d, %s: 83 MiB in %.1f ms, %.0f MiB/s\n", r + 1, names[mode],
                   ms, 83 / (ms / 1e3));
            close(s);
            close(l);
        }
    return 0;
}
