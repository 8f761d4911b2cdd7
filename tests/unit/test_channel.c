/* test_channel.c: the live-migration stream refuses what it must, before reading a payload. */
#define _GNU_SOURCE
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
#include <cmocka.h>

#include <linux/kvm.h>

#include "io/unix_socket.h"
#include "migration/channel.h"
#include "migration/incoming.h"
#include "vcpu/vcpu.h"
#include "virtio/console.h"
#include "vm/vm.h"

#define MAGIC 0x474d5747u

struct pipe_pair {
    int tx, rx;
};

static struct pipe_pair pair(void)
{
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    return (struct pipe_pair){ sv[0], sv[1] };
}

static void put_header(int fd, uint32_t magic, uint32_t type, uint64_t len)
{
    uint8_t h[16];
    memcpy(h, &magic, 4); /* x86: little-endian, as the stream */
    memcpy(h + 4, &type, 4);
    memcpy(h + 8, &len, 8);
    assert_int_equal(write(fd, h, sizeof(h)), (ssize_t)sizeof(h));
}

static void test_round_trip(void **state)
{
    (void)state;
    struct pipe_pair p = pair();
    char *config = NULL;
    assert_int_equal(mig_send_hello(p.tx, "{\"kernel\":\"k\"}"), 0);
    assert_int_equal(mig_send(p.tx, MIG_DONE, NULL, 0), 0);
    assert_int_equal(mig_recv_hello(p.rx, &config), 0);
    assert_string_equal(config, "{\"kernel\":\"k\"}");
    struct mig_header h;
    assert_int_equal(mig_recv_header(p.rx, &h), 0);
    assert_int_equal(h.type, MIG_DONE);
    assert_int_equal(h.len, 0);
    free(config);
    close(p.tx);
    close(p.rx);
}

static void test_refused_headers(void **state)
{
    (void)state;
    const struct { uint32_t magic, type; uint64_t len; int want; } bad[] = {
        { 0x54544800, MIG_PAGES, 12, -EPROTO },                 /* not the magic */
        { MAGIC, 99, 0, -EPROTO },                              /* unknown type */
        { MAGIC, MIG_ACK, 1, -EPROTO },                         /* ACK carries nothing */
        { MAGIC, MIG_PAGES, 12 + 257ull * 4096, -EPROTO },      /* a run too long */
        { MAGIC, MIG_STATE, (256ull << 20) + 1, -EPROTO },      /* a state too large */
        { MAGIC, MIG_ERROR, 1 << 20, -EPROTO },                 /* an error line too long */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct pipe_pair p = pair();
        struct mig_header h;
        put_header(p.tx, bad[i].magic, bad[i].type, bad[i].len);
        assert_int_equal(mig_recv_header(p.rx, &h), bad[i].want);
        close(p.tx);
        close(p.rx);
    }
    /* Cut short: EOF inside the header. */
    struct pipe_pair p = pair();
    struct mig_header h;
    assert_int_equal(write(p.tx, "GWM", 3), 3);
    close(p.tx);
    assert_int_equal(mig_recv_header(p.rx, &h), -ECONNRESET);
    close(p.rx);
}

static void test_hello_refusals(void **state)
{
    (void)state;
    char *config = NULL;
    /* Another protocol version. */
    struct pipe_pair p = pair();
    uint32_t version = MIG_PROTOCOL_VERSION + 1;
    put_header(p.tx, MAGIC, MIG_HELLO, 4 + 2);
    assert_int_equal(write(p.tx, &version, 4), 4);
    assert_int_equal(write(p.tx, "{}", 2), 2);
    assert_int_equal(mig_recv_hello(p.rx, &config), -EPROTO);
    close(p.tx);
    close(p.rx);
    /* A configuration with a NUL inside. */
    p = pair();
    version = MIG_PROTOCOL_VERSION;
    put_header(p.tx, MAGIC, MIG_HELLO, 4 + 3);
    assert_int_equal(write(p.tx, &version, 4), 4);
    assert_int_equal(write(p.tx, "{\0}", 3), 3);
    assert_int_equal(mig_recv_hello(p.rx, &config), -EPROTO);
    close(p.tx);
    close(p.rx);
    /* Not starting with HELLO. */
    p = pair();
    put_header(p.tx, MAGIC, MIG_DONE, 0);
    assert_int_equal(mig_recv_hello(p.rx, &config), -EPROTO);
    close(p.tx);
    close(p.rx);
    assert_null(config);
}

/* A host's supported CPUID: leaves 0, 1 and 7.0, with avx2 (7.0 ebx bit 5) or without. */
static struct kvm_cpuid2 *host_cpuid(bool avx2)
{
    struct kvm_cpuid2 *c = calloc(1, sizeof(*c) + 3 * sizeof(c->entries[0]));
    assert_non_null(c);
    c->nent = 3;
    c->entries[0] = (struct kvm_cpuid_entry2){ .function = 0, .eax = 7 };
    c->entries[1] = (struct kvm_cpuid_entry2){ .function = 1, .ecx = 1u << 20, .edx = 1u << 26 };
    c->entries[2] = (struct kvm_cpuid_entry2){ .function = 7, .flags = KVM_CPUID_FLAG_SIGNIFCANT_INDEX,
                                               .ebx = avx2 ? 1u << 5 : 0 };
    return c;
}

/* A destination VM with 64 MiB of RAM and one vCPU on a host with or without avx2. */
static void dest_vm(struct vm *vm, bool avx2)
{
    memset(vm, 0, sizeof(*vm));
    assert_int_equal(gm_init(&vm->mem, 64ull << 20, false), 0);
    vm->supported_cpuid = host_cpuid(avx2);
    vm->nr_vcpus = 1;
}

static void dest_vm_free(struct vm *vm)
{
    gm_destroy(&vm->mem);
    free(vm->supported_cpuid);
}

/* The source's side of the handshake: the CPU model of a guest on a host with or without avx2. */
static void send_cpu_model(int fd, bool avx2)
{
    struct kvm_cpuid2 *host = host_cpuid(avx2), *guest = cpuid_build(host, 0, 1);
    assert_non_null(guest);
    assert_int_equal(mig_send_cpu(fd, guest), 0);
    free(guest);
    free(host);
}

static uint32_t next_type(int fd)
{
    struct mig_header h;
    assert_int_equal(mig_recv_header(fd, &h), 0);
    return h.type;
}

/* The CPU model comes before anything else; a destination that lacks a feature the guest was
 * given refuses it by name before any page, one that has them all answers READY. */
static void test_cpu_model_handshake(void **state)
{
    (void)state;
    struct vm vm;
    dest_vm(&vm, false);
    struct pipe_pair p = pair();
    send_cpu_model(p.tx, true);
    assert_int_equal(migration_receive(&vm, p.rx, false, NULL, 0), -EINVAL);
    struct mig_header h;
    assert_int_equal(mig_recv_header(p.tx, &h), 0);
    assert_int_equal(h.type, MIG_ERROR); /* no READY first */
    char why[1025] = "";
    assert_int_equal(mig_recv_all(p.tx, why, h.len), 0);
    assert_non_null(strstr(why, "lacks avx2 (CPUID 0x7.0 ebx bit 5)"));
    close(p.tx);
    close(p.rx);

    /* Pages before the CPU model: refused. */
    p = pair();
    put_header(p.tx, MAGIC, MIG_PAGES, 12 + 4096);
    assert_int_equal(migration_receive(&vm, p.rx, false, NULL, 0), -EPROTO);
    assert_int_equal(next_type(p.tx), MIG_ERROR);
    close(p.tx);
    close(p.rx);

    /* A CPU message whose length is not its table's: refused. */
    p = pair();
    uint32_t count = 2;
    put_header(p.tx, MAGIC, MIG_CPU, 4 + sizeof(struct kvm_cpuid_entry2));
    assert_int_equal(write(p.tx, &count, 4), 4);
    assert_int_equal(migration_receive(&vm, p.rx, false, NULL, 0), -EPROTO);
    close(p.tx);
    close(p.rx);
    dest_vm_free(&vm);

    /* The same model: READY (then the stream ends, the source's doing). A host with more
     * features is refused too, as the state load would: the guest's CPU model is its source
     * host's, and godwit has no named models to pin it to yet. */
    for (int more = 0; more < 2; more++) {
        dest_vm(&vm, true);
        p = pair();
        send_cpu_model(p.tx, !more);
        shutdown(p.tx, SHUT_WR);
        assert_int_equal(migration_receive(&vm, p.rx, false, NULL, 0), more ? -EINVAL : -ECONNRESET);
        if (!more)
            assert_int_equal(next_type(p.tx), MIG_READY);
        close(p.tx);
        close(p.rx);
        dest_vm_free(&vm);
    }
}

/* ROUTES: the list comes back as sent; a count over the limit or one that is not the payload's
 * is refused before any entry is read. */
static void test_routes_round_trip(void **state)
{
    (void)state;
    const struct mig_route sent[] = {
        { .gsi = 24, .data = 0x4021, .address = 0xfee00000 },
        { .gsi = 30, .data = 0x4022, .address = 0x1fee01000ull },
    };
    struct pipe_pair p = pair();
    assert_int_equal(mig_send_routes(p.tx, sent, 2), 0);
    assert_int_equal(mig_send_routes(p.tx, NULL, 0), 0);
    struct mig_header h;
    struct mig_route *got;
    unsigned n;
    assert_int_equal(mig_recv_header(p.rx, &h), 0);
    assert_int_equal(h.type, MIG_ROUTES);
    assert_int_equal(mig_recv_routes(p.rx, h.len, &got, &n), 0);
    assert_int_equal(n, 2);
    assert_memory_equal(got, sent, sizeof(sent));
    free(got);
    assert_int_equal(mig_recv_header(p.rx, &h), 0);
    assert_int_equal(mig_recv_routes(p.rx, h.len, &got, &n), 0);
    assert_int_equal(n, 0);
    assert_null(got);

    /* Refused: a count the payload does not hold, a count over the limit, a payload too short
     * for its count, an oversized message (by its header alone). */
    const struct { uint32_t count; uint64_t len; } bad[] = {
        { 2, 4 + 16 }, { MIG_MAX_ROUTES + 1, 4 + (MIG_MAX_ROUTES + 1ull) * 16 }, { 0, 3 },
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(write(p.tx, &bad[i].count, 4), 4);
        assert_int_equal(mig_recv_routes(p.rx, bad[i].len, &got, &n), -EPROTO);
        assert_null(got);
        if (bad[i].len >= 4) /* what the refusal left unread */
            continue;
        uint8_t rest[4];
        assert_int_equal(read(p.rx, rest, 4), 4);
    }
    put_header(p.tx, MAGIC, MIG_ROUTES, 4 + (MIG_MAX_ROUTES + 1ull) * 16);
    assert_int_equal(mig_recv_header(p.rx, &h), -EPROTO);
    close(p.tx);
    close(p.rx);
}

/* A destination takes ROUTES before the CPU model: an empty list changes nothing and READY
 * follows; a route for a GSI the VM does not have is refused, and the source hears why. */
static void test_routes_at_destination(void **state)
{
    (void)state;
    struct vm vm;
    dest_vm(&vm, true);
    struct pipe_pair p = pair();
    assert_int_equal(mig_send_routes(p.tx, NULL, 0), 0);
    send_cpu_model(p.tx, true);
    shutdown(p.tx, SHUT_WR);
    assert_int_equal(migration_receive(&vm, p.rx, false, NULL, 0), -ECONNRESET);
    assert_int_equal(next_type(p.tx), MIG_READY);
    assert_int_equal(vm.routing_sets, 0);
    close(p.tx);
    close(p.rx);

    const struct mig_route stray = { .gsi = 24, .data = 1, .address = 0xfee00000 };
    p = pair();
    assert_int_equal(mig_send_routes(p.tx, &stray, 1), 0); /* this VM has no MSI GSI */
    send_cpu_model(p.tx, true);
    assert_int_equal(migration_receive(&vm, p.rx, false, NULL, 0), -EPROTO);
    assert_int_equal(next_type(p.tx), MIG_ERROR);
    assert_int_equal(vm.routing_sets, 0);
    close(p.tx);
    close(p.rx);
    dest_vm_free(&vm);
}

static void send_page(int fd, uint64_t page, char fill)
{
    uint8_t prefix[12], data[4096];
    uint32_t count = 1;
    memcpy(prefix, &page, 8);
    memcpy(prefix + 8, &count, 4);
    memset(data, fill, sizeof(data));
    assert_int_equal(mig_send2(fd, MIG_PAGES, prefix, sizeof(prefix), data, sizeof(data)), 0);
}

/* Version 4: SYNC is answered once every page before it is in RAM, and not in a local handover;
 * a version 3 source (no SYNC) is still taken. */
static void test_sync(void **state)
{
    (void)state;
    struct pipe_pair p = pair();
    char *config = NULL;
    uint32_t version = MIG_MIN_PROTOCOL_VERSION;
    put_header(p.tx, MAGIC, MIG_HELLO, 4 + 2);
    assert_int_equal(write(p.tx, &version, 4), 4);
    assert_int_equal(write(p.tx, "{}", 2), 2);
    assert_int_equal(mig_recv_hello(p.rx, &config), 0);
    assert_string_equal(config, "{}");
    free(config);
    close(p.tx);
    close(p.rx);

    struct vm vm;
    dest_vm(&vm, true);
    for (int handed_over = 0; handed_over < 2; handed_over++) {
        p = pair();
        send_cpu_model(p.tx, true);
        if (!handed_over)
            send_page(p.tx, 5, 0x5a);
        assert_int_equal(mig_send(p.tx, MIG_SYNC, NULL, 0), 0);
        shutdown(p.tx, SHUT_WR);
        int ret = migration_receive(&vm, p.rx, handed_over, NULL, 0);
        assert_int_equal(next_type(p.tx), MIG_READY);
        if (!handed_over) { /* the page is in RAM, then SYNCED */
            assert_int_equal(ret, -ECONNRESET);
            assert_int_equal(next_type(p.tx), MIG_SYNCED);
            assert_int_equal(vm.mem.regions[0].host[5 * 4096 + 17], 0x5a);
        } else { /* nothing to sync: refused, and the source hears it */
            assert_int_equal(ret, -EPROTO);
            assert_int_equal(next_type(p.tx), MIG_ERROR);
        }
        close(p.tx);
        close(p.rx);
    }
    dest_vm_free(&vm);
}

/* The destination: a page run outside RAM, a run longer than its payload, any run after a
 * local handover, a message out of order, and a stream cut inside a run are refused, and the
 * source is told why. */
static void test_receive_refusals(void **state)
{
    (void)state;
    struct vm vm;
    dest_vm(&vm, true);
    const uint64_t pages = (64ull << 20) / 4096;
    const struct { uint64_t first; uint32_t count; uint64_t len; bool handed_over; } runs[] = {
        { pages, 1, 12 + 4096, false },         /* past the end of RAM */
        { pages - 1, 2, 12 + 2 * 4096, false }, /* across the end */
        { 0, 0, 12, false },                    /* empty */
        { 0, 2, 12 + 4096, false },             /* longer than its payload */
        { 0, 1, 12 + 4096, true },              /* any, once RAM is the source's file */
    };
    for (size_t i = 0; i < sizeof(runs) / sizeof(runs[0]); i++) {
        struct pipe_pair p = pair();
        send_cpu_model(p.tx, true);
        put_header(p.tx, MAGIC, MIG_PAGES, runs[i].len);
        assert_int_equal(write(p.tx, &runs[i].first, 8), 8);
        assert_int_equal(write(p.tx, &runs[i].count, 4), 4);
        assert_int_equal(migration_receive(&vm, p.rx, runs[i].handed_over, NULL, 0), -EPROTO);
        assert_int_equal(next_type(p.tx), MIG_READY);
        assert_int_equal(next_type(p.tx), MIG_ERROR); /* the source hears why */
        close(p.tx);
        close(p.rx);
    }
    /* DONE before any state. */
    struct pipe_pair p = pair();
    send_cpu_model(p.tx, true);
    put_header(p.tx, MAGIC, MIG_DONE, 0);
    assert_int_equal(migration_receive(&vm, p.rx, false, NULL, 0), -EPROTO);
    close(p.tx);
    close(p.rx);
    /* A run cut short: the pages land where they belong until the stream ends. */
    p = pair();
    send_cpu_model(p.tx, true);
    uint64_t first = 3;
    uint32_t count = 1;
    put_header(p.tx, MAGIC, MIG_PAGES, 12 + 4096);
    assert_int_equal(write(p.tx, &first, 8), 8);
    assert_int_equal(write(p.tx, &count, 4), 4);
    assert_int_equal(write(p.tx, "abc", 3), 3);
    shutdown(p.tx, SHUT_WR);
    assert_int_equal(migration_receive(&vm, p.rx, false, NULL, 0), -ECONNRESET);
    close(p.tx);
    close(p.rx);
    dest_vm_free(&vm);
}

/* Version 6: several runs in one RUNS message land where each belongs, the last page of RAM
 * included, and SYNC follows them; the table's own refusals come before any page is read. */
static void test_runs(void **state)
{
    (void)state;
    struct vm vm;
    dest_vm(&vm, true);
    const uint64_t last = (64ull << 20) / 4096 - 1;
    static uint8_t data[4][4096];
    for (int i = 0; i < 4; i++)
        memset(data[i], 0x61 + i, sizeof(data[i]));
    /* One page at 5, two at 100 (from one buffer of two pages), the last page of RAM. */
    uint8_t two[2 * 4096];
    memcpy(two, data[1], 4096);
    memcpy(two + 4096, data[2], 4096);
    const struct mig_run runs[] = { { 5, 1 }, { 100, 2 }, { last, 1 } };
    void *hosts[] = { data[0], two, data[3] };
    struct pipe_pair p = pair();
    send_cpu_model(p.tx, true);
    assert_int_equal(mig_send_runs(p.tx, runs, 3, hosts), 0);
    assert_int_equal(mig_send(p.tx, MIG_SYNC, NULL, 0), 0);
    shutdown(p.tx, SHUT_WR);
    assert_int_equal(migration_receive(&vm, p.rx, false, NULL, 0), -ECONNRESET);
    assert_int_equal(next_type(p.tx), MIG_READY);
    assert_int_equal(next_type(p.tx), MIG_SYNCED);
    const uint8_t *ram = vm.mem.regions[0].host;
    assert_int_equal(ram[5 * 4096], 0x61);
    assert_int_equal(ram[100 * 4096 + 4095], 0x62);
    assert_int_equal(ram[101 * 4096], 0x63);
    assert_int_equal(ram[last * 4096 + 4095], 0x64);
    assert_int_equal(ram[6 * 4096], 0); /* nothing between them */
    close(p.tx);
    close(p.rx);

    /* What the sender refuses to send: no runs, or more pages than a message holds. */
    const struct mig_run too_many[] = { { 0, 200 }, { 300, 57 } };
    assert_int_equal(mig_send_runs(p.tx, runs, 0, hosts), -EINVAL);
    assert_int_equal(mig_send_runs(p.tx, too_many, 2, hosts), -EINVAL);

    /* Tables refused before any page: no runs, too many runs, an empty run, more pages than a
     * message holds, a length that is not the table's and its pages', a run outside RAM, and
     * any RUNS once RAM is the source's file. */
    const struct {
        uint32_t n;
        struct mig_run run[2];
        int64_t extra; /* added to the length the table and its pages make */
        bool handed_over;
    } bad[] = {
        { 0, { { 0, 1 } }, 0, false },
        { 257, { { 0, 1 } }, 0, false },
        { 1, { { 0, 0 } }, 0, false },
        { 2, { { 0, 200 }, { 300, 57 } }, -8192, false }, /* under the header's bound */
        { 1, { { 0, 1 } }, 4096, false },
        { 1, { { 0, 1 } }, -1, false },
        { 2, { { 0, 1 }, { last, 2 } }, 0, false },
        { 1, { { 0, 1 } }, 0, true },
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        p = pair();
        send_cpu_model(p.tx, true);
        unsigned entries = bad[i].n <= 2 ? bad[i].n : 2;
        uint64_t pages = 0;
        for (unsigned j = 0; j < entries; j++)
            pages += bad[i].run[j].count;
        uint64_t len = 4 + (uint64_t)bad[i].n * 12 + pages * 4096 + (uint64_t)bad[i].extra;
        put_header(p.tx, MAGIC, MIG_RUNS, len);
        assert_int_equal(write(p.tx, &bad[i].n, 4), 4);
        for (unsigned j = 0; j < entries; j++) {
            assert_int_equal(write(p.tx, &bad[i].run[j].first, 8), 8);
            assert_int_equal(write(p.tx, &bad[i].run[j].count, 4), 4);
        }
        shutdown(p.tx, SHUT_WR);
        assert_int_equal(migration_receive(&vm, p.rx, bad[i].handed_over, NULL, 0), -EPROTO);
        assert_int_equal(next_type(p.tx), MIG_READY);
        assert_int_equal(next_type(p.tx), MIG_ERROR); /* the source hears why */
        close(p.tx);
        close(p.rx);
    }
    dest_vm_free(&vm);
}

/* A memory file of `size` bytes, as a source's guest RAM. */
static int ram_file(off_t size)
{
    int fd = memfd_create("test-ram", MFD_CLOEXEC);
    assert_true(fd >= 0);
    assert_int_equal(ftruncate(fd, size), 0);
    return fd;
}

/* A local handover's opening: MEMFD carries the memory file, HELLO follows; the destination
 * gets a descriptor of the same file (what it writes, the source reads). A plain HELLO gives
 * no file, even with a descriptor riding on it. */
static void test_memfd_round_trip(void **state)
{
    (void)state;
    struct pipe_pair p = pair();
    int ram = ram_file(1 << 20), memfd = 7;
    struct mig_connections conns;
    char *config = NULL;
    assert_int_equal(mig_send_memfd(p.tx, ram, 1 << 20), 0);
    assert_int_equal(mig_send_hello(p.tx, "{}"), 0);
    assert_int_equal(mig_recv_opening(p.rx, &config, &memfd, &conns), 0);
    assert_string_equal(config, "{}");
    assert_true(memfd >= 0 && memfd != ram);
    assert_int_equal(pwrite(memfd, "moved", 5, 4096), 5);
    char back[5];
    assert_int_equal(pread(ram, back, 5, 4096), 5);
    assert_memory_equal(back, "moved", 5);
    assert_true(fcntl(memfd, F_GETFD) & FD_CLOEXEC);
    free(config);
    close(memfd);
    /* No MEMFD: pages will come. */
    assert_int_equal(mig_send_hello(p.tx, "{}"), 0);
    assert_int_equal(mig_recv_opening(p.rx, &config, &memfd, &conns), 0);
    assert_int_equal(memfd, -1);
    free(config);
    close(ram);
    close(p.tx);
    close(p.rx);
}

/* MEMFD refused: without a descriptor, with a pipe instead of a file, with a file smaller than
 * announced, with a payload that is not a size; and nothing stays open here after. */
static void test_memfd_refusals(void **state)
{
    (void)state;
    char *config = NULL;
    int memfd, pipefd[2];
    struct mig_connections conns;
    assert_int_equal(pipe(pipefd), 0);
    int small = ram_file(4096);
    const struct { int fd; uint64_t size; } bad[] = {
        { pipefd[0], 4096 },  /* not a file */
        { small, 8192 },      /* smaller than announced */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct pipe_pair p = pair();
        assert_int_equal(mig_send_memfd(p.tx, bad[i].fd, bad[i].size), 0);
        assert_int_equal(mig_send_hello(p.tx, "{}"), 0);
        int before = dup(0);
        close(before);
        assert_int_equal(mig_recv_opening(p.rx, &config, &memfd, &conns), -EPROTO);
        assert_int_equal(memfd, -1);
        int after = dup(0); /* the received descriptor was closed: the lowest number is free */
        assert_int_equal(after, before);
        close(after);
        close(p.tx);
        close(p.rx);
    }
    /* The header alone, written as bytes: no descriptor came with it. */
    struct pipe_pair p = pair();
    uint64_t size = 4096;
    put_header(p.tx, MAGIC, MIG_MEMFD, 8);
    assert_int_equal(write(p.tx, &size, 8), 8);
    assert_int_equal(mig_recv_opening(p.rx, &config, &memfd, &conns), -EPROTO);
    close(p.tx);
    close(p.rx);
    /* A payload that is not a size. */
    p = pair();
    put_header(p.tx, MAGIC, MIG_MEMFD, 4);
    assert_int_equal(write(p.tx, &size, 4), 4);
    assert_int_equal(mig_recv_opening(p.rx, &config, &memfd, &conns), -EPROTO);
    close(p.tx);
    close(p.rx);
    assert_null(config);
    close(small);
    close(pipefd[0]);
    close(pipefd[1]);
}

/* A DEVICES message (or another `type`) written by hand: `len` bytes of payload (8 or 16 in
 * the two forms, of which the first `len` of the four counts), `n` descriptors riding. */
static void send_devices_len(int fd, uint32_t type, uint64_t len, const uint32_t counts[4],
                             const int *fds, unsigned n)
{
    uint8_t b[32];
    uint32_t magic = MAGIC;
    memcpy(b, &magic, 4);
    memcpy(b + 4, &type, 4);
    memcpy(b + 8, &len, 8);
    memcpy(b + 16, counts, 16);
    assert_int_equal(mig_send_with_fds(fd, b, 16 + len, fds, n), 0);
}

/* The 8-byte form: `disks` and `taps` announced. */
static void send_devices_raw(int fd, uint32_t type, uint32_t disks, uint32_t taps, const int *fds,
                             unsigned n)
{
    send_devices_len(fd, type, 8, (const uint32_t[4]){ disks, taps, 0, 0 }, fds, n);
}

/* The DEVICES waiting on `p` is refused, and every descriptor on it closed; `p` is closed. */
static void expect_devices_refused(struct pipe_pair p)
{
    struct mig_devices in;
    int before = dup(0);
    close(before);
    assert_int_equal(mig_recv_devices(p.rx, &in), -EPROTO);
    assert_int_equal(mig_devices_count(&in), 0);
    int after = dup(0); /* the lowest number is free again */
    assert_int_equal(after, before);
    close(after);
    close(p.tx);
    close(p.rx);
}

/* A local handover's disks go over as the same open files: what the destination writes, the
 * source reads, and the source's lock (an OFD lock) is the destination's too: taking it again
 * through the received descriptor succeeds while a fresh open of the image conflicts, and it
 * outlives the source's descriptor. No device at all is a DEVICES of nothing. */
static void test_devices_round_trip(void **state)
{
    (void)state;
    struct pipe_pair p = pair();
    struct mig_devices out = { .nr_disks = 2 }, in;
    out.fds[0] = ram_file(1 << 20);
    out.fds[1] = ram_file(4096);
    struct flock wr = { .l_type = F_WRLCK, .l_whence = SEEK_SET };
    assert_int_equal(fcntl(out.fds[0], F_OFD_SETLK, &wr), 0);
    assert_int_equal(mig_send_devices(p.tx, &out), 0);
    assert_int_equal(mig_recv_devices(p.rx, &in), 0);
    assert_int_equal(in.nr_disks, 2);
    assert_int_equal(in.nr_taps, 0);
    assert_true(in.fds[0] >= 0 && in.fds[0] != out.fds[0]);
    assert_true(fcntl(in.fds[0], F_GETFD) & FD_CLOEXEC);
    assert_int_equal(pwrite(in.fds[1], "disk", 4, 512), 4);
    char back[4];
    assert_int_equal(pread(out.fds[1], back, 4, 512), 4);
    assert_memory_equal(back, "disk", 4);
    char path[64];
    snprintf(path, sizeof(path), "/proc/self/fd/%d", out.fds[0]);
    int other = open(path, O_RDWR | O_CLOEXEC); /* a new open file description */
    assert_true(other >= 0);
    assert_int_equal(fcntl(in.fds[0], F_OFD_SETLK, &wr), 0);
    assert_int_equal(fcntl(other, F_OFD_SETLK, &wr), -1);
    close(out.fds[0]); /* the source ends: its lock stays, held through the destination's */
    close(out.fds[1]);
    assert_int_equal(fcntl(other, F_OFD_SETLK, &wr), -1);
    mig_devices_close(&in); /* and goes with the last descriptor */
    assert_int_equal(fcntl(other, F_OFD_SETLK, &wr), 0);
    close(other);
    /* Nothing to hand over. */
    out.nr_disks = 0;
    assert_int_equal(mig_send_devices(p.tx, &out), 0);
    assert_int_equal(mig_recv_devices(p.rx, &in), 0);
    assert_int_equal(mig_devices_count(&in), 0);
    assert_false(in.sockets); /* the 8-byte form, which an older destination takes */
    close(p.tx);
    close(p.rx);
}

/* DEVICES refused, each with nothing left open here: fewer or more descriptors than announced,
 * a pipe for a disk, a file or /dev/null (a character device, not /dev/net/tun) for a tap,
 * descriptors on another message, none at all. */
static void test_devices_refusals(void **state)
{
    (void)state;
    int pipefd[2], file = ram_file(4096), null = open("/dev/null", O_RDWR | O_CLOEXEC);
    assert_int_equal(pipe(pipefd), 0);
    assert_true(null >= 0);
    const struct { uint32_t type, disks, taps; int fds[2]; unsigned n; } bad[] = {
        { MIG_DEVICES, 2, 0, { file }, 1 },           /* one short */
        { MIG_DEVICES, 1, 0, { file, file }, 2 },     /* one too many */
        { MIG_DEVICES, 1, 0, { 0 }, 0 },              /* none came */
        { MIG_DEVICES, 1, 0, { pipefd[0] }, 1 },      /* a disk that is a pipe */
        { MIG_DEVICES, 1, 1, { file, file }, 2 },     /* a tap that is a file */
        { MIG_DEVICES, 0, 1, { null }, 1 },           /* a tap that is /dev/null */
        { MIG_CPU, 1, 0, { file }, 1 },               /* not DEVICES */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct pipe_pair p = pair();
        send_devices_raw(p.tx, bad[i].type, bad[i].disks, bad[i].taps, bad[i].fds, bad[i].n);
        expect_devices_refused(p);
    }
    /* More than a message may carry is not sent. */
    struct mig_devices many = { .nr_disks = MIG_MAX_DEVICE_FDS, .nr_taps = 1 };
    assert_int_equal(mig_send_devices(-1, &many), -EINVAL);
    close(file);
    close(null);
    close(pipefd[0]);
    close(pipefd[1]);
}

static int listener_at(char *path, size_t size, const char *what)
{
    snprintf(path, size, "/tmp/godwit-test-%d-%s.sock", getpid(), what);
    int fd = unix_socket_listen(path, 4, NULL);
    assert_true(fd >= 0);
    return fd;
}

/* A local handover's listening sockets go over after the disks' and taps' descriptors (the
 * 16-byte form): the received ones are the same sockets, so a program that connects to the
 * path is accepted through them, and one that connected before waits there too. */
static void test_devices_sockets_round_trip(void **state)
{
    (void)state;
    struct pipe_pair p = pair();
    char con_path[80], vs_path[80];
    struct mig_devices out = { .nr_disks = 1, .nr_consoles = 1, .nr_vsocks = 1 }, in;
    out.fds[0] = ram_file(4096);
    out.fds[1] = listener_at(con_path, sizeof(con_path), "con");
    out.fds[2] = listener_at(vs_path, sizeof(vs_path), "vsock");
    int early = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", vs_path);
    assert_int_equal(connect(early, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(mig_send_devices(p.tx, &out), 0);
    assert_int_equal(mig_recv_devices(p.rx, &in), 0);
    assert_true(in.sockets);
    assert_int_equal(in.nr_disks, 1);
    assert_int_equal(in.nr_taps, 0);
    assert_int_equal(in.nr_consoles, 1);
    assert_int_equal(in.nr_vsocks, 1);
    assert_true(unix_socket_bound_to(in.fds[1], con_path));
    assert_true(unix_socket_bound_to(in.fds[2], vs_path));
    assert_false(unix_socket_bound_to(in.fds[2], con_path));
    for (unsigned i = 0; i < 3; i++)
        close(out.fds[i]); /* the source is gone */
    int late = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_int_equal(connect(late, (struct sockaddr *)&sa, sizeof(sa)), 0);
    for (unsigned i = 0; i < 2; i++) {
        int c = accept4(in.fds[2], NULL, NULL, SOCK_CLOEXEC);
        assert_true(c >= 0);
        close(c);
    }
    close(early);
    close(late);
    mig_devices_close(&in);
    unlink(con_path);
    unlink(vs_path);
    /* Never two of a kind. */
    out = (struct mig_devices){ .nr_vsocks = 2 };
    assert_int_equal(mig_send_devices(p.tx, &out), -EINVAL);
    close(p.tx);
    close(p.rx);
}

/* The 16-byte form refused, with nothing left open: two console sockets, a socket announced
 * that did not come, one that is not listening, a file for a socket; and a length that is
 * neither form. */
static void test_devices_socket_refusals(void **state)
{
    (void)state;
    char path[80];
    int listener = listener_at(path, sizeof(path), "refused"), sv[2], file = ram_file(4096);
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    const struct { uint64_t len; uint32_t counts[4]; int fds[2]; unsigned n; } bad[] = {
        { 16, { 0, 0, 2, 0 }, { listener, listener }, 2 }, /* two consoles */
        { 16, { 0, 0, 1, 1 }, { listener }, 1 },           /* the vsock's did not come */
        { 16, { 0, 0, 0, 1 }, { sv[0] }, 1 },              /* not listening */
        { 16, { 0, 0, 1, 0 }, { file }, 1 },               /* not a socket */
        { 16, { 1, 0, 0, 1 }, { listener, listener }, 2 }, /* a socket for the disk */
        { 12, { 0, 0, 1, 0 }, { listener }, 1 },           /* neither 8 nor 16 bytes */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct pipe_pair p = pair();
        send_devices_len(p.tx, MIG_DEVICES, bad[i].len, bad[i].counts, bad[i].fds, bad[i].n);
        expect_devices_refused(p);
    }
    close(listener);
    unlink(path);
    close(sv[0]);
    close(sv[1]);
    close(file);
}

/* A local handover's console client (CLIENTS): the received descriptor is the same
 * connection (what the client sends reads through it, what is written to it reaches the
 * client), and the input and output position come with it. */
static void test_console_client_round_trip(void **state)
{
    (void)state;
    struct pipe_pair p = pair();
    int conn[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, conn), 0);
    static struct virtio_console_client out, in;
    out = (struct virtio_console_client){ .fd = conn[0], .pending_len = 6, .tx_written = 17,
                                          .tx_head = 3, .tx_idx = 65535 };
    memcpy(out.pending, "typed\n", 6);
    assert_int_equal(mig_send_console_client(p.tx, &out), 0);
    struct mig_header h;
    assert_int_equal(mig_recv_header(p.rx, &h), 0); /* as the destination reads each header */
    assert_int_equal(h.type, MIG_CLIENTS);
    assert_int_equal(mig_recv_console_client(p.rx, h.len, &in), 0);
    assert_true(in.fd >= 0);
    assert_int_equal(in.pending_len, 6);
    assert_memory_equal(in.pending, "typed\n", 6);
    assert_int_equal(in.tx_written, 17);
    assert_int_equal(in.tx_head, 3);
    assert_int_equal(in.tx_idx, 65535);
    close(conn[0]); /* the source is gone: the connection lives on in the copy */
    assert_int_equal(write(conn[1], "more", 4), 4);
    char buf[8] = { 0 };
    assert_int_equal(read(in.fd, buf, sizeof(buf)), 4);
    assert_memory_equal(buf, "more", 4);
    assert_int_equal(write(in.fd, "out", 3), 3);
    assert_int_equal(read(conn[1], buf, sizeof(buf)), 3);
    close(in.fd);
    close(conn[1]);
    /* No input at all is the 12 bytes alone; too much input is not sent. */
    conn[0] = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    out = (struct virtio_console_client){ .fd = conn[0] };
    assert_int_equal(mig_send_console_client(p.tx, &out), 0);
    assert_int_equal(mig_recv_header(p.rx, &h), 0);
    assert_int_equal(h.len, 12);
    assert_int_equal(mig_recv_console_client(p.rx, h.len, &in), 0);
    assert_int_equal(in.pending_len, 0);
    close(in.fd);
    out.pending_len = VIRTIO_CONSOLE_PENDING_MAX + 1;
    assert_int_equal(mig_send_console_client(p.tx, &out), -EINVAL);
    close(conn[0]);
    close(p.tx);
    close(p.rx);
}

/* CLIENTS' payload of `len` bytes saying `pending` bytes of input, with `n` descriptors. */
static void send_client_raw(int fd, uint64_t len, uint32_t pending, const int *fds, unsigned n)
{
    uint8_t b[16 + 12 + 64] = { 0 };
    put_header(fd, MAGIC, MIG_CLIENTS, len);
    memcpy(b, &pending, 4);
    assert_true(len <= sizeof(b));
    assert_int_equal(mig_send_with_fds(fd, b, len, fds, n), 0);
}

/* CLIENTS refused with one line and nothing left open: input that is not its length, no
 * descriptor, two, a listening socket, a file; and a length the header already refuses. */
static void test_console_client_refusals(void **state)
{
    (void)state;
    char path[80];
    int listener = listener_at(path, sizeof(path), "client"), sv[2], file = ram_file(4096);
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    const struct { uint64_t len; uint32_t pending; int fds[2]; unsigned n; } bad[] = {
        { 20, 4, { sv[0] }, 1 },        /* 8 bytes of input said 4 */
        { 14, 4, { sv[0] }, 1 },        /* 2 bytes of input said 4 */
        { 12, 0, { -1 }, 0 },           /* no descriptor */
        { 12, 0, { sv[0], sv[0] }, 2 }, /* two */
        { 12, 0, { listener }, 1 },     /* a listening socket, not a client */
        { 12, 0, { file }, 1 },         /* not a socket */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct pipe_pair p = pair();
        static struct virtio_console_client in;
        struct mig_header h;
        send_client_raw(p.tx, bad[i].len, bad[i].pending, bad[i].fds, bad[i].n);
        assert_int_equal(mig_recv_header(p.rx, &h), 0);
        int before = dup(0);
        close(before);
        assert_int_equal(mig_recv_console_client(p.rx, h.len, &in), -EPROTO);
        assert_int_equal(in.fd, -1);
        int after = dup(0); /* the lowest number is free again */
        assert_int_equal(after, before);
        close(after);
        close(p.tx);
        close(p.rx);
    }
    struct pipe_pair p = pair();
    struct mig_header h;
    put_header(p.tx, MAGIC, MIG_CLIENTS, 12 + VIRTIO_CONSOLE_PENDING_MAX + 1);
    assert_int_equal(mig_recv_header(p.rx, &h), -EPROTO);
    close(p.tx);
    close(p.rx);
    close(listener);
    unlink(path);
    close(sv[0]);
    close(sv[1]);
    close(file);
}

/* Connecting: to a listener (UNIX and TCP), to nothing there (refused at once, not after the
 * timeout), and to a bad URI. */
static void test_connect(void **state)
{
    (void)state;
    char path[64], uri[80];
    snprintf(path, sizeof(path), "/tmp/godwit-test-channel-%d.sock", (int)getpid());
    snprintf(uri, sizeof(uri), "unix:%s", path);
    unlink(path);
    assert_int_equal(mig_connect(uri, 1000), -ENOENT);
    int listener = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
    assert_int_equal(bind(listener, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(listen(listener, 1), 0);
    int fd = mig_connect(uri, 1000);
    assert_true(fd >= 0);
    assert_int_equal(fcntl(fd, F_GETFL) & O_NONBLOCK, 0); /* blocking again, with timeouts */
    close(fd);
    close(listener);
    unlink(path);

    int tcp = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in in = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t len = sizeof(in);
    assert_int_equal(bind(tcp, (struct sockaddr *)&in, sizeof(in)), 0);
    assert_int_equal(getsockname(tcp, (struct sockaddr *)&in, &len), 0);
    snprintf(uri, sizeof(uri), "tcp:127.0.0.1:%u", ntohs(in.sin_port));
    assert_int_equal(mig_connect(uri, 1000), -ECONNREFUSED); /* bound, not listening */
    assert_int_equal(listen(tcp, 1), 0);
    fd = mig_connect(uri, 1000);
    assert_true(fd >= 0);
    close(fd);
    close(tcp);
    assert_int_equal(mig_connect("ftp:somewhere", 1000), -EINVAL);
}

/* CONNECTIONS before HELLO: the destination learns how many connections follow and their
 * token; a count it does not take (1, or more than MIG_MAX_CONNECTIONS) is refused. Each extra
 * connection's JOIN must carry that token and a new index in range. */
static void test_connections_handshake(void **state)
{
    (void)state;
    struct pipe_pair p = pair();
    struct mig_connections c = { .count = 3, .token = 0x1122334455667788ull }, got;
    char *config = NULL;
    int memfd = 7;
    assert_int_equal(mig_send_connections(p.tx, &c), 0);
    assert_int_equal(mig_send_hello(p.tx, "{}"), 0);
    assert_int_equal(mig_recv_opening(p.rx, &config, &memfd, &got), 0);
    assert_int_equal(got.count, 3);
    assert_true(got.token == c.token);
    assert_int_equal(memfd, -1);
    free(config);
    config = NULL;
    /* JOIN: index 2, then index 1; then the same index again, an index out of range, another
     * token, another message, and none at all. */
    assert_int_equal(mig_send_join(p.tx, c.token, 2), 0);
    assert_int_equal(mig_recv_join(p.rx, &c, 0, 1000), 2);
    assert_int_equal(mig_send_join(p.tx, c.token, 1), 0);
    assert_int_equal(mig_recv_join(p.rx, &c, 1u << 2, 1000), 1);
    assert_int_equal(mig_send_join(p.tx, c.token, 1), 0);
    assert_int_equal(mig_recv_join(p.rx, &c, 1u << 1, 1000), -EPROTO);
    assert_int_equal(mig_send_join(p.tx, c.token, 3), 0);
    assert_int_equal(mig_recv_join(p.rx, &c, 0, 1000), -EPROTO);
    assert_int_equal(mig_send_join(p.tx, c.token, 0), 0);
    assert_int_equal(mig_recv_join(p.rx, &c, 0, 1000), -EPROTO);
    assert_int_equal(mig_send_join(p.tx, c.token + 1, 1), 0);
    assert_int_equal(mig_recv_join(p.rx, &c, 0, 1000), -EPROTO);
    assert_int_equal(mig_send_hello(p.tx, "{}"), 0);
    assert_int_equal(mig_recv_join(p.rx, &c, 0, 1000), -EPROTO);
    close(p.tx);
    close(p.rx);
    p = pair();
    assert_int_equal(mig_recv_join(p.rx, &c, 0, 50), -ETIMEDOUT);
    close(p.tx);
    close(p.rx);
    /* Counts this godwit does not take, a short payload, and CONNECTIONS then MEMFD. */
    const uint32_t counts[] = { 0, 1, MIG_MAX_CONNECTIONS + 1, 1000 };
    for (size_t i = 0; i < sizeof(counts) / sizeof(counts[0]); i++) {
        p = pair();
        uint8_t b[12] = { 0 };
        memcpy(b, &counts[i], 4);
        put_header(p.tx, MAGIC, MIG_CONNECTIONS, sizeof(b));
        assert_int_equal(write(p.tx, b, sizeof(b)), (ssize_t)sizeof(b));
        assert_int_equal(mig_send_hello(p.tx, "{}"), 0);
        assert_int_equal(mig_recv_opening(p.rx, &config, &memfd, &got), -EPROTO);
        close(p.tx);
        close(p.rx);
    }
    p = pair();
    put_header(p.tx, MAGIC, MIG_CONNECTIONS, 4);
    assert_int_equal(write(p.tx, "\2\0\0\0", 4), 4);
    assert_int_equal(mig_recv_opening(p.rx, &config, &memfd, &got), -EPROTO);
    close(p.tx);
    close(p.rx);
    p = pair();
    int ram = ram_file(4096);
    assert_int_equal(mig_send_connections(p.tx, &c), 0);
    assert_int_equal(mig_send_memfd(p.tx, ram, 4096), 0);
    assert_int_equal(mig_recv_opening(p.rx, &config, &memfd, &got), -EPROTO);
    assert_int_equal(memfd, -1);
    assert_null(config);
    close(ram);
    close(p.tx);
    close(p.rx);
}

static void send_pass_end(int fd, uint32_t pass)
{
    assert_int_equal(mig_send(fd, MIG_PASS_END, &pass, sizeof(pass)), 0);
}

/*
 * Over several connections a page sent again in a later pass on another connection lands
 * after its earlier copy: page 5 goes in pass 1 on the first connection and in pass 2 on an
 * extra one, all of it already in the sockets before the destination reads a byte; page 5
 * must end with pass 2's bytes. The stream then ends with the source's ERROR.
 */
static void test_passes_over_connections(void **state)
{
    (void)state;
    struct vm vm;
    dest_vm(&vm, true);
    struct pipe_pair p = pair(), x = pair(), y = pair();
    send_cpu_model(p.tx, true);
    send_page(p.tx, 5, 'A');
    send_pass_end(p.tx, 1);
    send_pass_end(p.tx, 2);
    send_page(x.tx, 6, 'x');
    send_pass_end(x.tx, 1);
    send_page(x.tx, 5, 'B');
    send_pass_end(x.tx, 2);
    assert_int_equal(mig_send(x.tx, MIG_DONE, NULL, 0), 0);
    send_pass_end(y.tx, 1);
    send_page(y.tx, 7, 'y');
    send_pass_end(y.tx, 2);
    assert_int_equal(mig_send(y.tx, MIG_DONE, NULL, 0), 0);
    assert_int_equal(mig_send(p.tx, MIG_ERROR, "stop", 4), 0);
    int extra[2] = { x.rx, y.rx };
    assert_int_equal(migration_receive(&vm, p.rx, false, extra, 2), -ECONNABORTED);
    uint8_t *ram = vm.mem.regions[0].host;
    assert_int_equal(ram[5 * 4096], 'B');
    assert_int_equal(ram[5 * 4096 + 4095], 'B');
    assert_int_equal(ram[6 * 4096], 'x');
    assert_int_equal(ram[7 * 4096], 'y');
    int fds[] = { p.tx, p.rx, x.tx, x.rx, y.tx, y.rx };
    for (size_t i = 0; i < sizeof(fds) / sizeof(fds[0]); i++)
        close(fds[i]);
    dest_vm_free(&vm);
}

/* An extra connection that drops (here: ends inside a page run) or says something out of
 * order (a pass ended twice, a STATE) fails the whole migration, though the first connection
 * waits for more, and the source hears why on the first. */
static void test_extra_connection_failures(void **state)
{
    (void)state;
    struct vm vm;
    dest_vm(&vm, true);
    for (int kind = 0; kind < 3; kind++) {
        struct pipe_pair p = pair(), x = pair();
        send_cpu_model(p.tx, true);
        send_page(p.tx, 1, 'a');
        if (kind == 0) {
            uint64_t first = 3;
            uint32_t count = 1;
            put_header(x.tx, MAGIC, MIG_PAGES, 12 + 4096);
            assert_int_equal(write(x.tx, &first, 8), 8);
            assert_int_equal(write(x.tx, &count, 4), 4);
            shutdown(x.tx, SHUT_WR);
        } else if (kind == 1) {
            send_pass_end(x.tx, 1);
            send_pass_end(x.tx, 1);
            send_pass_end(p.tx, 1);
        } else {
            put_header(x.tx, MAGIC, MIG_STATE, 0);
        }
        int extra[1] = { x.rx };
        assert_int_equal(migration_receive(&vm, p.rx, false, extra, 1), -EPROTO);
        assert_int_equal(next_type(p.tx), MIG_READY);
        assert_int_equal(next_type(p.tx), MIG_ERROR);
        int fds[] = { p.tx, p.rx, x.tx, x.rx };
        for (size_t i = 0; i < sizeof(fds) / sizeof(fds[0]); i++)
            close(fds[i]);
    }
    /* PASS_END over one connection: it has no use there. */
    struct pipe_pair p = pair();
    send_cpu_model(p.tx, true);
    send_pass_end(p.tx, 1);
    assert_int_equal(migration_receive(&vm, p.rx, false, NULL, 0), -EPROTO);
    close(p.tx);
    close(p.rx);
    dest_vm_free(&vm);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_refused_headers),
        cmocka_unit_test(test_hello_refusals),
        cmocka_unit_test(test_receive_refusals),
        cmocka_unit_test(test_runs),
        cmocka_unit_test(test_sync),
        cmocka_unit_test(test_cpu_model_handshake),
        cmocka_unit_test(test_routes_round_trip),
        cmocka_unit_test(test_routes_at_destination),
        cmocka_unit_test(test_connect),
        cmocka_unit_test(test_memfd_round_trip),
        cmocka_unit_test(test_memfd_refusals),
        cmocka_unit_test(test_devices_round_trip),
        cmocka_unit_test(test_devices_refusals),
        cmocka_unit_test(test_devices_sockets_round_trip),
        cmocka_unit_test(test_devices_socket_refusals),
        cmocka_unit_test(test_console_client_round_trip),
        cmocka_unit_test(test_console_client_refusals),
        cmocka_unit_test(test_connections_handshake),
        cmocka_unit_test(test_passes_over_connections),
        cmocka_unit_test(test_extra_connection_failures),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
