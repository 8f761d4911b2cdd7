/* console.h: the virtio-console device model: one port (hvc0 in a Linux guest), no multiport. */
#ifndef GODWIT_VIRTIO_CONSOLE_H
#define GODWIT_VIRTIO_CONSOLE_H

#include <stddef.h>
#include <stdint.h>

#include "io/loop.h"
#include "vm/memory.h"
#include "virtio/virtio.h"

/* Queue 0 carries host input to the guest, queue 1 the guest's output to the host. */
#define VIRTIO_CONSOLE_RECEIVEQ 0
#define VIRTIO_CONSOLE_TRANSMITQ 1

/*
 * Where the console's bytes come from and go to. The fds stay the caller's: keep them open
 * until after virtio_console_destroy(). Either may be a pipe, a terminal, a socket or a file,
 * blocking or not: all I/O goes through io_uring, the loop thread never waits on them. A
 * write to a pipe whose reader is gone raises SIGPIPE, which the VMM ignores (main.c); to a
 * socket it does not. Output that cannot be written is dropped, the guest runs on.
 */
struct virtio_console_config {
    int in_fd;  /* guest input source, -1 none */
    int out_fd; /* guest output sink, -1 discard */
    /* When out_fd is a regular file: the most bytes written to it, output past that being
     * dropped and counted (virtio_console_counters); 0: VIRTIO_CONSOLE_FILE_MAX. */
    uint64_t out_max;
};

#define VIRTIO_CONSOLE_FILE_MAX (64ull << 20)

struct virtio_console;

/*
 * Makes `vdev` a console device: sets vdev->ops, vdev->model and vdev->gm (the transport
 * fills the rest). When out_fd is a terminal, VIRTIO_CONSOLE_F_SIZE is offered with its
 * size. Returns 0, -EINVAL or -ENOMEM.
 */
int virtio_console_create(struct virtio_console **out, const struct virtio_console_config *cfg,
                          struct event_loop *loop, const struct guest_memory *gm,
                          struct virtio_device *vdev);

/*
 * Closes what the console owns (a listening socket and its client) but not the config's fds.
 * I/O in flight is cancelled first and its completions taken (running the loop until then),
 * so nothing of the device is left with the kernel or the loop. Call it on the loop's thread.
 */
void virtio_console_destroy(struct virtio_console *con);

/*
 * Pushes host bytes to the guest, for a VMM that reads its terminal itself (as the serial
 * console's sink does). Returns how many were accepted: 0 while the guest offers no receive
 * buffers (or has not set the device up, or the device is quiesced). Bytes read from in_fd and not yet delivered go
 * first. On the loop's thread; takes virtio_lock().
 */
size_t virtio_console_input(struct virtio_console *con, const uint8_t *buf, size_t len);

/* The same, shaped as a console_sink (src/io/console.h); `opaque` is the struct virtio_console. */
size_t virtio_console_sink(void *opaque, const uint8_t *buf, size_t len);

/*
 * The host terminal changed size (SIGWINCH): updates cols/rows and raises the configuration
 * interrupt (at resume, while quiesced). Does nothing unless VIRTIO_CONSOLE_F_SIZE was
 * offered. Takes virtio_lock().
 */
void virtio_console_set_size(struct virtio_console *con, uint16_t cols, uint16_t rows);

/* ---- backends ---- */

/*
 * A listening UNIX stream socket at `path` for virtio_console_listen(), mode 0600; a stale
 * socket file there is replaced, a live one refused (-EADDRINUSE), anything else too
 * (-EEXIST). Returns the fd (close-on-exec, non-blocking) or -errno (unix_socket_listen()).
 */
int virtio_console_open_socket(const char *path);

/*
 * An output file for the config's out_fd: created 0600 if missing, appended to otherwise; a
 * symlink there is refused (-ELOOP). Returns the fd (close-on-exec) or -errno.
 */
int virtio_console_open_file(const char *path);

/*
 * Serves the console on `listen_fd` (from virtio_console_open_socket), which the console then
 * owns and closes at destroy. One client at a time gets it, for input and output both; a
 * client arriving while another is connected is closed at once. Output while no client is
 * connected is dropped; when a client hangs up, the next one to connect takes over. Create
 * the console with in_fd and out_fd -1 for this. Returns 0, or -EINVAL, -EBUSY (already
 * listening; the fd is closed either way) or -ENOMEM.
 */
int virtio_console_listen(struct virtio_console *con, int listen_fd);
/* The listening socket it serves (the console's own), or -1: for a live upgrade's handover. */
int virtio_console_listen_fd(struct virtio_console *con);

/*
 * A connected socket client as a live upgrade (--local) hands it to the next godwit, so that
 * the connection stays open: its descriptor, and what the device holds for it that would be
 * lost or repeated otherwise (input read from it that the guest has not taken yet, and how
 * much of the output chain that quiesce handed back it has already got).
 */
#define VIRTIO_CONSOLE_PENDING_MAX 4096u
struct virtio_console_client {
    int fd;               /* -1: no client */
    uint32_t pending_len; /* at most VIRTIO_CONSOLE_PENDING_MAX */
    uint32_t tx_written;  /* bytes of the chain at tx_idx (head tx_head) written to the client */
    uint16_t tx_head, tx_idx;
    uint8_t pending[VIRTIO_CONSOLE_PENDING_MAX];
};
/* The client of a quiesced console, which keeps it (c->fd -1: none): 0, or -EBUSY when the
 * device is not quiesced (its I/O with the client may be in flight). Takes virtio_lock(). */
int virtio_console_client(struct virtio_console *con, struct virtio_console_client *c);
/*
 * Serves `c` (from another godwit's virtio_console_client(), the guest's state loaded here)
 * as if it had just connected, its pending input first: the descriptor is the console's from
 * here, failure included. Call it only once the other godwit will never serve it again (GO):
 * a read started here would race the other's. 0, -EINVAL (no descriptor, too much input) or
 * -EBUSY (not listening on a socket, or a client attached already). Takes virtio_lock().
 */
int virtio_console_adopt_client(struct virtio_console *con, const struct virtio_console_client *c);

/* Totals since creation: guest output bytes written to out_fd (or a client), and those
 * dropped (past a file's cap, or after a write failed). Takes virtio_lock(). */
void virtio_console_counters(struct virtio_console *con, uint64_t *tx_bytes,
                             uint64_t *tx_dropped);

#endif
