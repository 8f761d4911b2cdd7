/* agent.h: what the parts of godwit-agent share: the connection, its replies, the handlers. */
#ifndef GODWIT_AGENT_AGENT_H
#define GODWIT_AGENT_AGENT_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "agent/proto.h"
#include "agent/wire.h"

#define AGENT_VERSION "0.1.0"

struct agent_config {
    const char *state_dir; /* KVP pools: STATE/host, STATE/guest */
    const char *run_dir;   /* the freeze timer's pid (a tmpfs: never frozen itself) */
    uint64_t max_file_size;
    bool verbose;
};

/* One host connection, handled in its own process. */
struct conn {
    int fd;
    const struct agent_config *cfg;
    uint8_t in[AGENT_BUF_SIZE];
    uint8_t out[AGENT_BUF_SIZE];
};

void agent_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Replies: 0 or -errno from the socket. */
int reply_ok(struct conn *c, uint32_t id);
int reply_error(struct conn *c, uint32_t id, int err, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
int send_msg(struct conn *c, size_t len);
/* Reads and checks the next message; a malformed one is answered and read past. 0, or
 * -errno when the connection must end. */
int next_msg(struct conn *c, struct agent_msg *m);

/* exec.c: notes the signals the agent ignores, which its commands get back as default; once,
 * after the agent set its own. */
void exec_init(void);

/* Handlers: each answers its request; a negative return ends the connection. */
int handle_exec(struct conn *c, const struct agent_msg *m);
int handle_file_write(struct conn *c, const struct agent_msg *m);
int handle_file_read(struct conn *c, const struct agent_msg *m);
int handle_kvp(struct conn *c, const struct agent_msg *m);
int handle_info(struct conn *c, const struct agent_msg *m);
int handle_freeze(struct conn *c, const struct agent_msg *m);
int handle_thaw(struct conn *c, const struct agent_msg *m);
int handle_shutdown(struct conn *c, const struct agent_msg *m);
int handle_set_time(struct conn *c, const struct agent_msg *m);

/* users.c: /etc/passwd and /etc/group read directly (a static binary has no NSS). */
struct agent_user {
    uid_t uid;
    gid_t gid;
    char name[256];
    char home[1024];
    char shell[1024];
    gid_t groups[64];
    int nr_groups;
};
/* Looks `who` up by name or number. 0, -ENOENT, or -errno. */
int user_lookup(const char *passwd, const char *group, const char *who, struct agent_user *u);

/* kvp.c: 0 when `key` may name a file in a pool. */
int kvp_key_valid(const char *key);

#endif
