/*
 * test_libagent.c: libgodwit's guest agent functions against a real godwit-agent on this
 * machine (its path the first argument), through a stand-in for the VMM's vsock socket that
 * answers "CONNECT 1024" as the VMM does and then joins the two streams.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "godwit/godwit.h"

static char dir[] = "/tmp/godwit-libagent.XXXXXX";
static char agent_sock[128], vsock[128];
static int failures;

#define CHECK(cond)                                                                          \
    do {                                                                                     \
        if (!(cond)) {                                                                       \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);         \
            failures++;                                                                      \
        }                                                                                    \
    } while (0)

static int unix_socket(const char *path, bool listen_on)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (listen_on ? bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, 8) < 0
                  : connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        perror(path);
        exit(1);
    }
    return fd;
}

/* One connection: the handshake line, then bytes both ways until either side closes. */
static void *proxy_one(void *arg)
{
    int host = (int)(intptr_t)arg, agent, n = 0;
    char line[32], buf[65536];
    while (n < (int)sizeof(line) - 1 && read(host, line + n, 1) == 1 && line[n] != '\n')
        n++;
    line[n] = 0;
    if (strcmp(line, "CONNECT 1024") != 0) {
        close(host);
        return NULL;
    }
    agent = unix_socket(agent_sock, false);
    if (write(host, "OK 1073741824\n", 14) != 14)
        return NULL;
    for (;;) {
        struct pollfd p[2] = { { .fd = host, .events = POLLIN }, { .fd = agent, .events = POLLIN } };
        if (poll(p, 2, -1) < 0)
            break;
        int from = p[0].revents ? host : agent, to = from == host ? agent : host;
        ssize_t got = read(from, buf, sizeof(buf));
        if (got <= 0 || write(to, buf, (size_t)got) != got)
            break;
    }
    close(host);
    close(agent);
    return NULL;
}

static void *proxy(void *arg)
{
    int l = (int)(intptr_t)arg;
    for (;;) {
        int c = accept4(l, NULL, NULL, SOCK_CLOEXEC);
        pthread_t t;
        if (c >= 0 && pthread_create(&t, NULL, proxy_one, (void *)(intptr_t)c) == 0)
            pthread_detach(t);
    }
    return NULL;
}

static struct godwit_agent *connect_agent(void)
{
    int err;
    struct godwit_agent *a = godwit_agent_connect(vsock, &err);
    if (!a) {
        fprintf(stderr, "connect: %s\n", strerror(-err));
        exit(1);
    }
    return a;
}

static void test_exec(void)
{
    char path[256], out[64] = { 0 };
    int status = -1;
    snprintf(path, sizeof(path), "%s/out", dir);
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    struct godwit_agent *a = connect_agent();
    const char *argv[] = { "sh", "-c", "read x; echo \"got $x\"; exit 5", NULL };
    int p[2];
    CHECK(pipe(p) == 0);
    CHECK(write(p[1], "hello\n", 6) == 6);
    close(p[1]);
    CHECK(godwit_agent_exec(a, argv, NULL, p[0], fd, fd, &status) == 0);
    CHECK(status == 5);
    CHECK(pread(fd, out, sizeof(out) - 1, 0) == 10 && strcmp(out, "got hello\n") == 0);
    godwit_agent_close(a);
    close(p[0]);
    close(fd);
    a = connect_agent();
    const char *missing[] = { "/no/such/command", NULL };
    CHECK(godwit_agent_exec(a, missing, NULL, -1, 1, 2, &status) == -ENOENT);
    CHECK(strstr(godwit_agent_error(a), "/no/such/command") != NULL);
    godwit_agent_close(a);
}

/* godwit_agent_run: stdin from memory (a NUL in it too), output kept, bounded in size and time. */
static void test_run(void)
{
    struct godwit_agent_result r;
    struct godwit_agent *a = connect_agent();
    const char *argv[] = { "sh", "-c", "od -An -c; echo oops >&2; exit 3", NULL };
    CHECK(godwit_agent_set_timeout(a, 5000) == 0);
    CHECK(godwit_agent_run(a, argv, NULL, "a\0b", 3, 4096, 5000, &r) == 0);
    CHECK(r.status == 3);
    CHECK(strstr(r.out, "a  \\0   b") != NULL);
    CHECK(r.err_len == 5 && strcmp(r.err, "oops\n") == 0);
    godwit_agent_result_free(&r);
    godwit_agent_close(a);

    a = connect_agent();
    const char *big[] = { "sh", "-c", "head -c 100000 /dev/zero", NULL };
    CHECK(godwit_agent_run(a, big, NULL, NULL, 0, 65536, 5000, &r) == -EFBIG);
    CHECK(strstr(godwit_agent_error(a), "stdout") != NULL);
    godwit_agent_close(a);

    a = connect_agent();
    const char *slow[] = { "sleep", "30", NULL };
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    CHECK(godwit_agent_run(a, slow, NULL, NULL, 0, 4096, 300, &r) == -ETIMEDOUT);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    CHECK(t1.tv_sec - t0.tv_sec < 5);
    godwit_agent_close(a);

    a = connect_agent();
    const char *missing[] = { "/no/such/command", NULL };
    CHECK(godwit_agent_run(a, missing, NULL, NULL, 0, 4096, 5000, &r) == -ENOENT);
    CHECK(strstr(godwit_agent_error(a), "/no/such/command") != NULL);
    /* The end of stdin went with the request; its answer is read past: the connection's next
     * request gets its own, and a command with no stdin sees its end (cat ends). */
    char value[64];
    CHECK(godwit_agent_kvp_get(a, true, "no-such-key", value, sizeof(value)) == -ENOENT);
    const char *cat[] = { "cat", NULL };
    CHECK(godwit_agent_run(a, cat, NULL, NULL, 0, 4096, 5000, &r) == 0);
    CHECK(r.status == 0 && r.out_len == 0);
    godwit_agent_result_free(&r);
    godwit_agent_close(a);
}

static void count_entry(const char *key, const char *value, void *opaque)
{
    *(int *)opaque += strcmp(key, "listed") == 0 && strcmp(value, "yes") == 0;
}

static void test_copy_and_kvp(void)
{
    char src[256], guest[256], back[256], value[64];
    struct stat st;
    snprintf(src, sizeof(src), "%s/src", dir);
    snprintf(guest, sizeof(guest), "%s/guest-copy", dir);
    snprintf(back, sizeof(back), "%s/back", dir);
    FILE *f = fopen(src, "w");
    for (int i = 0; i < 200000; i++)
        fprintf(f, "line %d\n", i);
    fclose(f);
    chmod(src, 0741);
    struct godwit_agent *a = connect_agent();
    CHECK(godwit_agent_copy_in(a, src, guest) == 0);
    CHECK(godwit_agent_copy_out(a, guest, back) == 0);
    CHECK(stat(back, &st) == 0 && (st.st_mode & 07777) == 0741 && st.st_size > 1000000);
    char cmp[600];
    snprintf(cmp, sizeof(cmp), "cmp -s %s %s", src, back);
    CHECK(system(cmp) == 0);
    CHECK(godwit_agent_copy_out(a, "/no/such/file", back) == -ENOENT);
    CHECK(godwit_agent_kvp_set(a, "k", "v1") == 0);
    CHECK(godwit_agent_kvp_get(a, false, "k", value, sizeof(value)) == 0 && strcmp(value, "v1") == 0);
    CHECK(godwit_agent_kvp_get(a, true, "k", value, sizeof(value)) == -ENOENT);
    CHECK(godwit_agent_kvp_delete(a, "k") == 0);
    CHECK(godwit_agent_kvp_get(a, false, "k", value, sizeof(value)) == -ENOENT);
    CHECK(godwit_agent_kvp_set(a, "../k", "v") == -EINVAL);
    int listed = 0;
    CHECK(godwit_agent_kvp_set(a, "listed", "yes") == 0);
    CHECK(godwit_agent_kvp_list(a, false, count_entry, &listed) == 0 && listed == 1);
    godwit_agent_close(a);
}

/* godwit_agent_copy_to / copy_from: through a pipe and a file descriptor; a source that
 * ends early leaves the guest's file as it was. */
static void test_copy_fds(void)
{
    char guest[256], back[256];
    static char data[300000];
    struct stat st;
    int p[2];
    unsigned mode = 0;
    snprintf(guest, sizeof(guest), "%s/fd-copy", dir);
    snprintf(back, sizeof(back), "%s/fd-back", dir);
    for (size_t i = 0; i < sizeof(data); i++)
        data[i] = (char)(i * 7 + i / 251);
    /* A pipe holds less than the file: a writer of its own. */
    CHECK(pipe(p) == 0);
    pid_t writer = fork();
    if (writer == 0) {
        close(p[0]);
        _exit(write(p[1], data, sizeof(data)) == (ssize_t)sizeof(data) ? 0 : 1);
    }
    close(p[1]);
    struct godwit_agent *a = connect_agent();
    CHECK(godwit_agent_copy_to(a, p[0], sizeof(data), guest, 0604) == 0);
    close(p[0]);
    waitpid(writer, NULL, 0);
    CHECK(stat(guest, &st) == 0 && (st.st_mode & 07777) == 0604 && st.st_size == sizeof(data));

    int fd = open(back, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    CHECK(godwit_agent_copy_from(a, guest, fd, &mode) == 0);
    CHECK(mode == 0604);
    static char got[sizeof(data)];
    CHECK(pread(fd, got, sizeof(got), 0) == (ssize_t)sizeof(got) && memcmp(got, data, sizeof(got)) == 0);
    close(fd);
    CHECK(godwit_agent_copy_from(a, "/no/such/file", 1, &mode) == -ENOENT);
    godwit_agent_close(a);

    /* 10 bytes promised, 4 given: an error, and the first copy stays. */
    CHECK(pipe(p) == 0);
    CHECK(write(p[1], "abcd", 4) == 4);
    close(p[1]);
    a = connect_agent();
    CHECK(godwit_agent_copy_to(a, p[0], 10, guest, 0600) < 0);
    godwit_agent_close(a);
    close(p[0]);
    CHECK(stat(guest, &st) == 0 && st.st_size == sizeof(data) && (st.st_mode & 07777) == 0604);
}

int main(int argc, char **argv)
{
    char state[256], run[256];
    pthread_t t;
    if (argc != 2 || !mkdtemp(dir)) {
        fprintf(stderr, "usage: test_libagent GODWIT_AGENT\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    snprintf(agent_sock, sizeof(agent_sock), "%s/agent.sock", dir);
    snprintf(vsock, sizeof(vsock), "%s/vm.vsock", dir);
    snprintf(state, sizeof(state), "%s/state", dir);
    snprintf(run, sizeof(run), "%s/run", dir);
    char listen_arg[160];
    snprintf(listen_arg, sizeof(listen_arg), "unix:%s", agent_sock);
    pid_t agent = fork();
    if (agent == 0) {
        setsid();
        execl(argv[1], argv[1], "--listen", listen_arg, "--state-dir", state, "--run-dir", run,
              (char *)NULL);
        _exit(127);
    }
    for (int i = 0; i < 100 && access(agent_sock, F_OK) < 0; i++)
        usleep(50000);
    pthread_create(&t, NULL, proxy, (void *)(intptr_t)unix_socket(vsock, true));
    test_exec();
    test_run();
    test_copy_and_kvp();
    test_copy_fds();
    kill(agent, SIGTERM);
    waitpid(agent, NULL, 0);
    char cmd[300];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    if (system(cmd) != 0)
        failures++;
    printf("libagent: %s\n", failures ? "FAILED" : "passed");
    return failures ? 1 : 0;
}
