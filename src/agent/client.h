/*
 * client.h: the host's side of the guest agent protocol (agent/proto.h): connecting through a
 * VM's vsock socket (Firecracker's "CONNECT <port>" handshake) or straight to an agent's
 * UNIX socket, and the requests other than exec's stream (which the CLI drives itself).
 */
#ifndef GODWIT_AGENT_CLIENT_H
#define GODWIT_AGENT_CLIENT_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "agent/proto.h"
#include "agent/wire.h"

#define AGENT_CONNECT_TIMEOUT_MS 5000

struct agent_client {
    int fd;
    uint32_t next_id;
    char error[AGENT_MAX_STRING + 64]; /* the agent's message, or ours, after a failure */
    bool stdin_ended; /* the exec request went with the end of the command's stdin */
    uint8_t in[AGENT_BUF_SIZE];
    uint8_t out[AGENT_BUF_SIZE];
};

/*
 * Connects to the agent: through a VM's vsock UNIX socket (`vsock_path`, then "CONNECT port")
 * or, when `direct` is true, to an agent listening on that UNIX socket itself (tests).
 * Returns a client (free with agent_client_close) or NULL with *err set to -errno.
 */
struct agent_client *agent_client_connect(const char *path, bool direct, unsigned port, int *err);
/* The same, the guest's answer to CONNECT awaited for at most timeout_ms. */
struct agent_client *agent_client_connect_within(const char *path, bool direct, unsigned port,
                                                 unsigned timeout_ms, int *err);
/* Only the connection to the UNIX socket: the caller speaks first (agent_vsock_handshake). */
struct agent_client *agent_client_open(const char *path, int *err);
void agent_client_close(struct agent_client *c);

/* Sends the message built in c->out. 0 or -errno. */
int agent_client_send(struct agent_client *c, size_t len);
/* Reads one message and checks it; an ERROR fills c->error and returns -its errno. */
int agent_client_recv(struct agent_client *c, struct agent_msg *m);
/* Sends a request of `type` with no fields (info, thaw, ping) or the builder's, then reads. */
int agent_client_simple(struct agent_client *c, unsigned type, struct agent_msg *reply);

/* File transfer; both check the SHA-256 and the size. `mode` is the guest file's. */
int agent_client_put(struct agent_client *c, int fd, const char *guest_path, uint32_t mode,
                     uint64_t size);
int agent_client_get(struct agent_client *c, const char *guest_path, int fd, uint32_t *mode);

/* Where a put's bytes come from: read() up to len bytes into buf, returning how many, 0 at
 * an early end, or -errno. accepted (or NULL) is called once the agent took the request,
 * before the first read: its -errno ends the transfer. */
struct agent_source {
    ssize_t (*read)(void *opaque, void *buf, size_t len);
    int (*accepted)(void *opaque);
    void *opaque;
};
/* Where a get's bytes go: info (or NULL) with the guest file's mode and size before any
 * data, then data for each chunk; -errno from either ends the transfer. The data is checked
 * only at the end: after a failure, what the sink took is to be thrown away. */
struct agent_sink {
    int (*info)(void *opaque, uint32_t mode, uint64_t size);
    int (*data)(void *opaque, const void *data, size_t len);
    void *opaque;
};
/* agent_client_put and agent_client_get, through a source and a sink. */
int agent_client_put_from(struct agent_client *c, const struct agent_source *src,
                          const char *guest_path, uint32_t mode, uint64_t size);
int agent_client_get_to(struct agent_client *c, const char *guest_path,
                        const struct agent_sink *sink);

/* godwit cp: a local file to the guest (GUEST_DIR/ keeps its name), a guest file to a local
 * path or directory (through a temporary file, renamed once checked); modes kept. */
int agent_client_put_path(struct agent_client *c, const char *local, const char *guest_path);
int agent_client_get_path(struct agent_client *c, const char *guest_path, const char *local);
/* Steps the guest's clock to `ns` (CLOCK_REALTIME, nanoseconds). */
int agent_client_set_time(struct agent_client *c, uint64_t ns);
/* Freezes (the agent thaws by itself after timeout_s, 1-3600) or thaws the guest's
 * filesystems; *count: how many changed. */
int agent_client_freeze(struct agent_client *c, bool freeze, unsigned timeout_s, uint32_t *count);
/* Asks the agent to power the guest off (or reboot it); 0 once it took the request. */
int agent_client_shutdown(struct agent_client *c, bool reboot);

/* KVP. get: the value into buf (len bytes). list: each entry to `fn`. */
int agent_client_kvp_get(struct agent_client *c, uint32_t pool, const char *key, char *buf,
                         size_t len);
int agent_client_kvp_set(struct agent_client *c, const char *key, const char *value);
int agent_client_kvp_delete(struct agent_client *c, const char *key);
int agent_client_kvp_list(struct agent_client *c, uint32_t pool,
                          void (*fn)(const char *key, const char *value, void *opaque),
                          void *opaque);

/* exec: the request (0 once the agent started the command, else -errno: -ENOENT for no
 * such command); with no_stdin, the end of the command's stdin goes in the same write, not a
 * round trip later ... */
int agent_client_exec_start(struct agent_client *c, const char *const *argv, const char *user,
                            bool tty, unsigned rows, unsigned cols, bool no_stdin);
/* ... then the session: `in` to the command's stdin (-1: none), its stdout and stderr to
 * `out` and `err`, signals read from the signalfd `sig` (-1: none) passed on. *status: the
 * exit code, or 128 + the signal that ended it. 0 or -errno (c->error says why):
 * -ETIMEDOUT when the command runs past timeout_ms (0: no limit), -EFBIG when it writes more
 * than max_output bytes (0: no limit) to stdout or to stderr, -ECANCELED on a second signal
 * other than SIGWINCH (*status 128 + its number: the first went to the command, the second
 * ends the wait). After any of them, close the client: the agent kills a command whose
 * connection ends. */
struct agent_exec_io {
    int in, out, err, sig;
    unsigned timeout_ms;
    uint64_t max_output;
};
int agent_client_exec_run(struct agent_client *c, const struct agent_exec_io *io, int *status);

/* All of buf to a socket (a blocking one; EINTR retried), without SIGPIPE. 0 or -errno. */
int agent_send_all(int fd, const void *buf, size_t len);

/* The protocol's "CONNECT <port>\n" / "OK <n>\n" exchange on a connected vsock socket. */
int agent_vsock_handshake(int fd, unsigned port, unsigned timeout_ms);

#endif
