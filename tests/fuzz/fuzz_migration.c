/*
 * fuzz_migration.c: a live migration's destination reading a hostile stream: its opening (a
 * local handover's MEMFD with or without a descriptor, the HELLO and its configuration), then
 * migration_receive() itself (headers, the MSI routes, the CPU model, page runs, a handover's
 * console client (CLIENTS, refused here: no descriptor rides on it), the state with its vCPU
 * section, DONE, ERROR) into a VM of 64 MiB and one vCPU with no KVM behind them (and no MSI
 * GSIs: every route is refused).
 */
#include <linux/kvm.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include "fuzz_common.h"
#include "lib/config.h"
#include "migration/channel.h"
#include "migration/incoming.h"
#include "vcpu/vcpu.h"
#include "vm/vm.h"

static struct vm vm;
static struct vm_config vm_cfg;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    struct kvm_cpuid2 *c;

    (void)argc;
    (void)argv;
    fuzz_quiet();
    /* What this host offers a vCPU: a small CPUID table (max leaf 7; SSE2, AVX2). */
    c = calloc(1, sizeof(*c) + 3 * sizeof(c->entries[0]));
    if (!c)
        abort();
    c->nent = 3;
    c->entries[0] = (struct kvm_cpuid_entry2){ .function = 0, .eax = 7 };
    c->entries[1] = (struct kvm_cpuid_entry2){ .function = 1, .edx = 1u << 26 };
    c->entries[2] = (struct kvm_cpuid_entry2){ .function = 7, .ebx = 1u << 5,
                                               .flags = KVM_CPUID_FLAG_SIGNIFCANT_INDEX };
    vm.cfg = &vm_cfg;
    vm.kvm_fd = vm.vm_fd = -1;
    vm.exit_fd = -1;
    vm.supported_cpuid = c;
    vm.mem = *fuzz_gm();
    /* One vCPU, never started: its state section is read and checked, and applying it fails
     * at the first ioctl. */
    vm.nr_vcpus = 1;
    vm.vcpus = calloc(1, sizeof(*vm.vcpus));
    if (!vm.vcpus)
        abort();
    vm.vcpus[0] = (struct vcpu){ .vm = &vm, .fd = -1 };
    return 0;
}

/* The HELLO's configuration goes where the destination takes it: the config parser. */
static void receive_opening(int fd)
{
    struct vm_config cfg;
    struct config_extra extra;
    struct config_strings owned = { 0 };
    char *json = NULL;
    int memfd;
    struct mig_connections conns;

    int ret = mig_recv_opening(fd, &json, &memfd, &conns);
    FUZZ_CHECK(ret == 0 || memfd < 0); /* a refused opening keeps no memory file */
    /* Only a count this godwit takes, and never with a handed-over memory file. */
    FUZZ_CHECK(ret < 0 || (conns.count >= 1 && conns.count <= MIG_MAX_CONNECTIONS &&
                           (conns.count == 1 || memfd < 0)));
    if (memfd >= 0) {
        struct mig_devices devs;
        /* A handover's disks, taps and sockets follow; refused, none stays open. */
        int got = mig_recv_devices(fd, &devs);
        FUZZ_CHECK(got == 0 || mig_devices_count(&devs) == 0);
        if (got == 0)
            mig_devices_close(&devs);
        close(memfd);
        if (got < 0) {
            free(json);
            return;
        }
    }
    if (ret != 0)
        return;
    FUZZ_CHECK(json != NULL);
    if (config_parse_json(json, strlen(json), &cfg, &extra, &owned, NULL) == 0)
        config_strings_free(&owned);
    free(json);
}

/* Writes the stream; with `with_fd`, a 64 KiB memory file rides on its first byte, as a
 * local handover's MEMFD carries the guest's. */
static void write_stream(int fd, const uint8_t *data, size_t size, bool with_fd)
{
    size_t done = 0;
    if (with_fd && size > 0) {
        int memfd = memfd_create("fuzz-ram", MFD_CLOEXEC);
        if (memfd < 0 || ftruncate(memfd, 65536) != 0)
            abort();
        if (mig_send_with_fd(fd, data, 1, memfd) != 0)
            abort();
        close(memfd);
        done = 1;
    }
    if (size > done && write(fd, data + done, size - done) != (ssize_t)(size - done))
        abort(); /* more than the socket holds: make -max_len smaller */
}

/*
 * The first byte: bit 0 clear, the stream is the destination's opening (MEMFD, HELLO); set,
 * it is what comes after HELLO. Bit 1: with the opening, a memory file rides on the stream's
 * first byte; after it, the VM's RAM was handed over (no page may come). The rest is the
 * stream, followed by its end (the source closed the connection).
 */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int sv[2];
    uint8_t sink[4096];

    if (size < 1)
        return 0;
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0)
        abort();
    int sndbuf = 1 << 20;
    (void)setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf));
    bool opening = !(data[0] & 1), flag = data[0] & 2;
    write_stream(sv[0], data + 1, size - 1, opening && flag);
    shutdown(sv[0], SHUT_WR);
    if (!opening)
        FUZZ_CHECK(migration_receive(&vm, sv[1], flag, NULL, 0) != 0); /* no stream without STATE succeeds */
    else
        receive_opening(sv[1]);
    while (recv(sv[0], sink, sizeof(sink), MSG_DONTWAIT) > 0)
        ;
    close(sv[0]);
    close(sv[1]);
    return 0;
}
