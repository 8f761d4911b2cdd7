/*
 * channel.h: the live-migration stream between two godwit processes.
 *
 * A stream is a sequence of messages, each a 16-byte header (u32 magic "GWMG", u32 type,
 * u64 payload length, little-endian) and its payload:
 *
 *   CONNECTIONS source -> destination, first, only when the source migrates over K > 1
 *          connections (tcp:): u32 K (2..MIG_MAX_CONNECTIONS), u64 token. The destination then
 *          accepts K - 1 more connections, each opening with JOIN; everything below but PAGES
 *          and PASS_END goes on this first connection only. A destination that does not know
 *          the message refuses it where HELLO belongs, before it builds anything
 *   JOIN   source -> destination, first on each extra connection: u64 the token CONNECTIONS
 *          gave, u32 the connection's index (1..K-1, each once). Then only PAGES and PASS_END,
 *          and after the last pass DONE
 *   MEMFD  source -> destination, first, only in a same-host live upgrade (--local, UNIX
 *          sockets): u64 size of the guest's memory file, whose descriptor rides on the message
 *          (SCM_RIGHTS). The destination maps that file shared as its guest RAM, and no PAGES
 *          follow: both processes see the same memory, which the destination neither writes
 *          nor runs until GO
 *   HELLO  source -> destination: u32 protocol version, then the configuration's JSON
 *   DEVICES source -> destination, right after HELLO, only after a MEMFD: u32 disks, u32 taps,
 *          and disks + taps descriptors riding on the message (SCM_RIGHTS): each disk's open
 *          image in the order of the configuration's disks, then each network interface's tap
 *          queues (one per queue pair) in the order of its interfaces. That order is how the
 *          destination matches them to its devices, which it builds on them instead of opening
 *          paths and taps (the source keeps using its own copies until GO: both are the same
 *          open files, so the disks' locks, which belong to those, go over with them).
 *          Then, only when the VM has any, u32 console sockets, u32 vsock sockets (each 0 or
 *          1; payload 16 bytes instead of 8), their descriptors after the taps': the virtio
 *          console's listening UNIX socket, then the vsock device's. The destination serves
 *          them instead of binding the paths again, so the paths never go away. A destination
 *          that takes only the 8-byte form refuses the 16-byte one by its length; an 8-byte
 *          DEVICES (an older source) hands no socket over: the destination binds the paths
 *   ROUTES source -> destination, before CPU (version 5): the MSI routes the source gives
 *          KVM as the migration starts, u32 count, then count times u32 GSI, u32 data, u64
 *          address. The destination gives them to KVM now, so that the state's load, in the
 *          pause, finds them set and rewrites KVM's table only for a vector the guest changed
 *          since (each rewrite waits for KVM's readers of the old table: milliseconds under
 *          nested virtualization). Refused (one line) when a GSI is not one of the
 *          destination's MSI GSIs: another device layout
 *   CPU    source -> destination: the guest's CPU model, vCPU 0's CPUID as cpuid_build() made
 *          it: u32 count, then count struct kvm_cpuid_entry2 (40 bytes each)
 *   READY  destination -> source: the VM is built and can run that CPU model; memory may come.
 *          Until then the source sends nothing more, so a refusal costs no copy of RAM
 *   PAGES  source -> destination: u64 first page (index in the memory file), u32 count, then
 *          count * 4096 bytes; a run never crosses a memory region. Sent by sources of
 *          versions 3 to 5, still taken from them
 *   RUNS   source -> destination (version 6, in place of PAGES): several page runs, u32 n
 *          (1..MIG_MAX_RUN_PAGES), then n times u64 first page, u32 count, then every run's
 *          pages in that order; MIG_MAX_RUN_PAGES pages in all at most, no run crossing a
 *          memory region. A dirty pass's pages come one or two at a time: as PAGES each cost a
 *          message, a system call at the source and three at the destination (in the nested
 *          test host 40-100 us a page, inside the pause for the last pages); a RUNS carries up
 *          to 256 of them in one call at each end
 *   SYNC   source -> destination, after each pass before the pause (version 4): nothing
 *   SYNCED destination -> source: every page sent before the SYNC is in guest RAM here (over
 *          several connections: the first one's SYNC follows its PASS_END, which waits for
 *          every connection's). Without it the source would pause the guest while megabytes of
 *          earlier passes still sat in the sockets' buffers, and the pause would wait for the
 *          destination to write them (seen: 100-350 ms in the nested test host); with it each
 *          pass's time, and so the rate the switch-over is decided on, is end to end
 *   PASS_END source -> destination, over K > 1 connections only: u32 pass (1, 2, ...): this
 *          connection carries no more pages of that pass. Each connection sends one for every
 *          pass, the final one (with the guest paused) included, in order (see below)
 *   CLIENTS source -> destination, in a local handover's final step only (version 7), with
 *          the VM paused, before STATE, when the console's socket has a client: u32 input
 *          bytes, u32 written, u16 head, u16 index, then that input (at most
 *          VIRTIO_CONSOLE_PENDING_MAX bytes); the client's connected UNIX socket rides on the
 *          payload's first byte (not on the header, which the destination reads without
 *          descriptors). The input is what the source read from the client and the guest has
 *          not taken; written, head and index say how much of the output chain the source
 *          handed back to the guest's ring the client has already got (virtio/console.h). The
 *          destination serves the client once GO comes, so its connection stays open through
 *          the upgrade; until then the source may still resume the guest and serve it
 *   STATE  source -> destination: the VM's state (vm_state.h), once, with the VM paused
 *   DONE   source -> destination: nothing more comes
 *   ACK    destination -> source: the state is loaded; the guest can run here
 *   GO     source -> destination: the source will never run the guest again: run it
 *   RUNNING destination -> source: the guest runs here (its waiting vCPU threads are let go
 *          right after); the source may end
 *   ERROR  either way: a line saying why the sender gives up
 *
 * GO is the commit point, so that no lost message can leave the guest running on both hosts
 * at once (each with the same disks): the destination never runs the guest before GO, and
 * the source resumes it only when it has not sent GO (no ACK came). Once GO is sent, a source
 * that hears no RUNNING keeps the guest paused and says so: the destination may or may not
 * have it, and only someone who can look there may resume it here.
 *
 * Over K connections a page may go in pass n on one connection and again, newer, in pass n + 1
 * on another, and TCP orders nothing across connections. So the destination writes no page
 * of pass n + 1 before every connection has delivered its PASS_END n: a receiver that reads
 * PASS_END n waits there until all K have read theirs. Pass n + 1's pages then land after
 * every page of pass n, whichever connection each came on. Within a pass a page is sent once
 * (one bit of one bitmap, one chunk to one connection), so no order is needed inside it. The
 * first connection's STATE comes after its last PASS_END, and is loaded only once every extra
 * connection has ended with DONE (all its pages written).
 *
 * The receiver checks every header before it reads a payload (type, length bounds, a page
 * run inside RAM), so a broken or hostile stream is refused with one line, never followed.
 */
#ifndef GODWIT_MIGRATION_CHANNEL_H
#define GODWIT_MIGRATION_CHANNEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* 2: CPU and READY before any page; 3: GO and RUNNING; 4: SYNC and SYNCED; 5: ROUTES; 6: RUNS;
 * 7: CLIENTS (a version 6 destination refuses a version 7 source at HELLO, as a 4 did a 5: an
 * older godwit takes no guest from a newer one, while a live upgrade, older to newer, works).
 * MEMFD and DEVICES change nothing for a copying migration: a destination that knows neither
 * refuses MEMFD as an unknown message. A destination takes a source of MIG_MIN_PROTOCOL_VERSION
 * on (a version 3 source sends no SYNC; a source before 7 hands no console client over, which
 * then closes with it; nothing else differs); a version 3 destination refuses a version 4
 * source at HELLO, with a line that says both versions. */
#define MIG_PROTOCOL_VERSION 7u
#define MIG_MIN_PROTOCOL_VERSION 3u
/* CONNECTIONS, JOIN and PASS_END change nothing for one connection; a destination that knows
 * none of them refuses CONNECTIONS where its HELLO belongs. */
#define MIG_MAX_CONNECTIONS 8u
#define MIG_PAGE_SIZE 4096u
#define MIG_MAX_RUN_PAGES 256u           /* 1 MiB of pages a message */
#define MIG_MAX_CONFIG (1u << 20)
#define MIG_MAX_STATE (256u << 20)
#define MIG_MAX_CPUID_ENTRIES 256u
#define MIG_MAX_ROUTES 2048u /* VM_MAX_MSI_GSIS */
/* The most descriptors DEVICES carries: 16 disks, 8 interfaces of 16 queue pairs (the
 * configuration's limits) and two listening sockets, under the kernel's 253 a message. */
#define MIG_MAX_DEVICE_FDS 146u
/* How long the destination waits for GO after its ACK before it gives the guest up. */
#define MIG_GO_TIMEOUT_MS 30000u

enum mig_type {
    MIG_HELLO = 1,
    MIG_PAGES = 2,
    MIG_STATE = 3,
    MIG_DONE = 4,
    MIG_ACK = 5,
    MIG_ERROR = 6,
    MIG_CPU = 7,
    MIG_READY = 8,
    MIG_GO = 9,
    MIG_RUNNING = 10,
    MIG_MEMFD = 11,
    MIG_DEVICES = 12,
    MIG_CONNECTIONS = 13,
    MIG_JOIN = 14,
    MIG_PASS_END = 15,
    /* 16, 17: REHEARSAL and REHEARSED, on main for an hour and withdrawn (docs/migration.md);
     * a destination refuses them as unknown */
    MIG_SYNC = 18,
    MIG_SYNCED = 19,
    MIG_ROUTES = 20,
    MIG_RUNS = 21,
    MIG_CLIENTS = 22,
};

struct mig_header {
    uint32_t type;
    uint64_t len;
};

/* "tcp:HOST:PORT" or "unix:PATH". Returns a connected socket whose connect, sends and receives
 * each give up after timeout_ms without progress, or -errno after one line. */
int mig_connect(const char *uri, unsigned timeout_ms);
/* Listens on `uri`: the listener, or -errno after one line. */
int mig_listen(const char *uri);
/* Accepts one connection on `listener` (of `uri`), waiting for ever when timeout_ms is 0, and
 * returns it, or -errno after one line (-ETIMEDOUT when none came in time). */
int mig_accept_on(int listener, const char *uri, unsigned timeout_ms);
/* Closes a listener of `uri` (and removes a UNIX one's socket file). */
void mig_unlisten(int listener, const char *uri);

/* One whole message; 0 or -errno. */
int mig_send(int fd, enum mig_type type, const void *payload, size_t len);
/* A header, then the payload written with writev from up to two buffers (a page run's
 * prefix and the pages themselves straight from guest memory). */
int mig_send2(int fd, enum mig_type type, const void *a, size_t alen, const void *b, size_t blen);
/* Reads a header; checks the magic and that the length is at most `max` for its type.
 * Returns 0, -EPROTO (after one line) or -errno. */
int mig_recv_header(int fd, struct mig_header *h);
/* Reads exactly len bytes; 0, -ECONNRESET at EOF, or -errno. */
int mig_recv_all(int fd, void *buf, size_t len);

/* Sends HELLO with `config_json`. Reads one on the other side: *config_json is malloc'ed,
 * NUL-terminated. Both 0 or -errno after one line. */
int mig_send_hello(int fd, const char *config_json);
int mig_recv_hello(int fd, char **config_json);

/* `len` (> 0) bytes with the descriptor `passed` riding on the first (SCM_RIGHTS). */
int mig_send_with_fd(int fd, const void *buf, size_t len, int passed);
/* The same with `n` descriptors (none when n is 0; at most MIG_MAX_DEVICE_FDS). */
int mig_send_with_fds(int fd, const void *buf, size_t len, const int *passed, unsigned n);
/* MEMFD: the guest's memory file `memfd` of `size` bytes, passed with SCM_RIGHTS. */
int mig_send_memfd(int fd, int memfd, uint64_t size);
/* How many connections a migration uses (CONNECTIONS), and the token that ties them. */
struct mig_connections {
    unsigned count; /* 1: no CONNECTIONS came */
    uint64_t token;
};
/* CONNECTIONS: `c` with 2..MIG_MAX_CONNECTIONS connections. */
int mig_send_connections(int fd, const struct mig_connections *c);
/* JOIN on extra connection `index` (1..count-1). */
int mig_send_join(int fd, uint64_t token, unsigned index);
/*
 * Reads an extra connection's JOIN: its index, or -EPROTO after one line for another message,
 * a token that is not c->token, an index outside 1..c->count-1 or one that `joined` (a bit per
 * index) already has. Gives up after timeout_ms without a byte (-ETIMEDOUT).
 */
int mig_recv_join(int fd, const struct mig_connections *c, unsigned joined,
                  unsigned timeout_ms);
/* PASS_END's payload after its header: the pass, or -EPROTO after one line. */
int mig_recv_pass_end(int fd, uint64_t len, uint32_t *pass);

/*
 * The destination's opening: an optional MEMFD or CONNECTIONS, then HELLO (as mig_recv_hello).
 * *memfd is the received memory file (close-on-exec; the caller's to close) when the source
 * hands its memory over, or -1 when pages will come. A MEMFD without a descriptor, or whose
 * descriptor is not a regular file (a memfd) of at least the announced size, is refused with
 * one line (-EPROTO), and so is a CONNECTIONS whose count is not 2..MIG_MAX_CONNECTIONS.
 * *conns: what CONNECTIONS said, or a count of 1. Descriptors on any other message are closed
 * unread.
 */
int mig_recv_opening(int fd, char **config_json, int *memfd, struct mig_connections *conns);

/* The descriptors a local handover passes besides the memory file (DEVICES, above): the
 * disks', the taps', then the console's listening socket and the vsock device's (0 or 1
 * each). `sockets`: the message says how many sockets (its 16-byte form); a source sends that
 * form when it has a socket to hand over, and a receiver knows from it whether the source
 * could (an older source's 8-byte form hands none over, whatever its configuration). */
struct mig_devices {
    unsigned nr_disks, nr_taps, nr_consoles, nr_vsocks;
    bool sockets;
    int fds[MIG_MAX_DEVICE_FDS];
};
/* How many descriptors `devs` holds. */
unsigned mig_devices_count(const struct mig_devices *devs);
/* DEVICES with `devs`' descriptors (the 16-byte form when it holds a socket). 0 or -errno. */
int mig_send_devices(int fd, const struct mig_devices *devs);
/*
 * Reads DEVICES into *devs (descriptors close-on-exec, the caller's to close; none kept on
 * failure). Refused with one line (-EPROTO): another message, a payload of neither 8 nor 16
 * bytes, more than one console or vsock socket, a count of descriptors that is not the
 * announced total, a disk's that is neither a regular file nor a block device, a tap's that
 * is not an attached tap (a character device that answers TUNGETIFF with IFF_TAP), a socket's
 * that is not a listening UNIX stream socket.
 */
int mig_recv_devices(int fd, struct mig_devices *devs);
void mig_devices_close(struct mig_devices *devs);

/* CPU: vCPU 0's CPUID table, as the guest sees it. Reading one: *cpuid is malloc'ed; 0 or
 * -errno (-EPROTO for a payload that is not a table, after one line). */
struct kvm_cpuid2;
int mig_send_cpu(int fd, const struct kvm_cpuid2 *cpuid);
int mig_recv_cpu(int fd, uint64_t len, struct kvm_cpuid2 **cpuid);

/* ROUTES: MSI routes by GSI. Reading one: *routes is malloc'ed (NULL when *count is 0); 0 or
 * -errno (-EPROTO after one line for a payload that is not such a list). */
struct mig_route {
    uint32_t gsi;
    uint32_t data;
    uint64_t address;
};
int mig_send_routes(int fd, const struct mig_route *routes, unsigned count);
int mig_recv_routes(int fd, uint64_t len, struct mig_route **routes, unsigned *count);

/* RUNS: `n` page runs (1..MIG_MAX_RUN_PAGES, MIG_MAX_RUN_PAGES pages in all at most), run i's
 * pages read from hosts[i] (guest memory) as the message goes. 0 or -errno. */
struct mig_run {
    uint64_t first; /* index in the memory file */
    uint32_t count;
};
int mig_send_runs(int fd, const struct mig_run *runs, unsigned n, void *const *hosts);
/* RUNS' table after its header, into runs[] (room for MIG_MAX_RUN_PAGES): *n runs whose pages
 * follow, in that order, for the caller to read. -EPROTO after one line for a count outside
 * 1..MIG_MAX_RUN_PAGES, an empty run, more pages than MIG_MAX_RUN_PAGES, or a length that is
 * not the table's and its pages'. */
int mig_recv_runs_table(int fd, uint64_t len, struct mig_run *runs, unsigned *n);
/* Reads exactly what the n buffers hold, in one system call where the socket has it all;
 * 0, -ECONNRESET at EOF, or -errno. */
struct iovec;
int mig_recv_iov(int fd, struct iovec *iov, unsigned n);

/* CLIENTS: the console's socket client `c` (c->fd >= 0), its descriptor passed. 0 or -errno. */
struct virtio_console_client;
int mig_send_console_client(int fd, const struct virtio_console_client *c);
/* CLIENTS' payload of `len` bytes after its header, into *c (c->fd close-on-exec, the caller's
 * to close). -EPROTO after one line, with no descriptor kept: a length that is not its input's,
 * no descriptor or more than one, one that is not a connected UNIX stream socket. */
int mig_recv_console_client(int fd, uint64_t len, struct virtio_console_client *c);

const char *mig_type_name(uint32_t type);

#endif
