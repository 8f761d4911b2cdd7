/* cli.c: the `godwit run` options: parsing, validation and help text. */
#define _GNU_SOURCE
#include "cli/cli.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "api/runtime.h"
#include "lib/device_options.h"
#include "log.h"
#include "migration/snapshot.h"
#include "sandbox/seccomp.h"

void cli_usage_run(FILE *out)
{
    fprintf(out,
            "Usage: godwit run --kernel FILE [options]\n"
            "       godwit run --restore DIR [options]\n"
            "       godwit run --incoming tcp:ADDR:PORT|unix:PATH [options]\n"
            "Boots a Linux kernel in a new KVM virtual machine, with its serial console on\n"
            "this terminal (or on stdin/stdout when they are not a terminal).\n"
            "\n"
            "      --config FILE     read these settings from a JSON file (docs/config.md);\n"
            "                        options given here override the file\n"
            "      --incoming tcp:ADDR:PORT|unix:PATH\n"
            "                        wait there for a `godwit migrate` and run the guest it\n"
            "                        sends, with its configuration (--disk, --net, --console\n"
            "                        given here replace its devices' paths, taps and MACs;\n"
            "                        a --local source's disks and taps are used as handed\n"
            "                        over unless replaced so)\n"
            "      --restore DIR     resume the VM that `godwit snapshot` wrote to DIR, with\n"
            "                        its configuration; --disk, --net and --console given\n"
            "                        here replace its devices' paths, taps and MACs (clones)\n"
            "  -k, --kernel FILE     kernel: a bzImage or an uncompressed vmlinux ELF\n"
            "      --kernel-decompress on|off\n"
            "                        on (default): godwit decompresses a bzImage's XZ or\n"
            "                        gzip payload once, caches it by the image's SHA-256\n"
            "                        ($GODWIT_CACHE/kernels, /var/cache/godwit/kernels for\n"
            "                        root, else ~/.cache/godwit/kernels) and boots it as a\n"
            "                        vmlinux (docs/config.md)\n"
            "  -i, --initrd FILE     initial ramdisk\n"
            "  -c, --cmdline STR     kernel command line (default: \"" DEFAULT_CMDLINE "\")\n"
            "  -m, --memory MIB      guest RAM in MiB, at least 64 (default: %d)\n"
            "  -p, --cpus N          number of vCPUs, 1 to %d (default: 1)\n"
            "      --hugepages       back guest RAM with 2 MiB huge pages\n"
            "      --thp on|off      on (default): guest RAM in transparent huge pages where\n"
            "                        the host's THP setting allows; off: in a memfd, as on a\n"
            "                        host without THP (docs/memory-map.md)\n"
            "      --no-reboot       exit (status 3) when the guest reboots, instead of\n"
            "                        restarting it\n"
            "      --disk path=FILE[,readonly=on][,serial=ID][,cache=none|writeback][,queues=N]\n"
            "                        a virtio disk (raw image or block device), repeatable:\n"
            "                        vda, vdb, ... in order; locked against other writers\n"
            "      --net tap=NAME[,mac=MAC][,queues=N]\n"
            "                        a virtio network interface on a host tap device\n"
            "                        (created if absent), repeatable\n"
            "      --console serial|virtio[,socket=PATH|,file=PATH]\n"
            "                        virtio: the guest's hvc0 on this terminal (the serial\n"
            "                        port keeps the boot messages), a UNIX socket or a file\n"
            "      --no-rng          no virtio-rng device (entropy from the host)\n"
            "      --vsock cid=N[,socket=PATH]\n"
            "                        a virtio-vsock device, the guest's CID N (3 or more);\n"
            "                        host programs connect to PATH (default: NAME.vsock\n"
            "                        beside the API socket) and write CONNECT <port>\n"
            "                        (docs/vsock.md)\n"
            "      --seccomp on|log|off\n"
            "                        system call filters on every thread (default: on; log:\n"
            "                        the kernel logs what they would refuse; docs/sandbox.md)\n"
            "      --caps drop|keep  drop the capabilities the VM no longer needs once it is\n"
            "                        set up, and set no_new_privs (default: drop)\n"
            "      --io-poll US      poll busy disk and transmit queues before waiting, for\n"
            "                        a window that adapts up to US microseconds (0 to %d):\n"
            "                        fewer guest exits for a CPU while it polls (default: 0)\n"
            "      --jail DIR --uid U --gid G\n"
            "                        run the VM in new mount, PID and IPC namespaces with\n"
            "                        DIR as its root (only what it opens bound in) as U:G,\n"
            "                        without capabilities; its API socket then lies under\n"
            "                        DIR/run/godwit; taps must exist, owned by U\n"
            "                        (docs/jail.md)\n"
            "      --cgroup FILE=VALUE\n"
            "                        with --jail: a limit of the VM's own cgroup v2,\n"
            "                        e.g. memory.max=1G, cpu.max=\"50000 100000\",\n"
            "                        pids.max=64; repeatable\n"
            "      --netns NAME|PATH join a network namespace (ip netns's NAME, or a path)\n"
            "                        first: the taps are that namespace's\n"
            "      --name NAME       the VM's name on this host (default: generated)\n"
            "      --api-socket PATH the API socket (default: /run/godwit/NAME.sock, or\n"
            "                        $XDG_RUNTIME_DIR/godwit/NAME.sock when not root)\n"
            "  -v, --verbose         more messages;  -q, --quiet  errors only\n"
            "  -h, --help            this text\n"
            "\n"
            "On a terminal, Ctrl-A x quits and Ctrl-A Ctrl-A sends Ctrl-A.\n"
            "Exit status: 0 guest powered off, 1 VMM error, 2 bad usage, 3 guest reboot\n"
            "(--no-reboot), 4 guest crash (triple fault, KVM internal error), 5 guest\n"
            "kernel panic, 6 stopped from the host (escape, SIGINT, SIGHUP; SIGTERM asks\n"
            "the guest to power off and stops it after 30 s).\n",
            DEFAULT_MEMORY_MIB, VM_MAX_VCPUS, GODWIT_MAX_IO_POLL_US);
}

void cli_usage_main(FILE *out)
{
    fprintf(out, "Usage: godwit COMMAND [options]\n"
                 "\n"
                 "Commands:\n"
                 "  run          boot a virtual machine (godwit run --help)\n"
                 "  ps           list the VMs running on this host\n"
                 "  info NAME    a VM's state and configuration\n"
                 "  pause NAME, resume NAME\n"
                 "  shutdown NAME  ask the guest to power off (ACPI power button; its agent\n"
                 "               too, when it still runs 5 s later)\n"
                 "  reboot NAME, stop NAME\n"
                 "  counters NAME  exit and device counters\n"
                 "  snapshot NAME DIR [--resume|--stop] [--freeze]\n"
                 "               write the VM to DIR (RAM and state; not its disks); it\n"
                 "               runs on (--resume, the default) or stops (--stop);\n"
                 "               --freeze: the guest agent freezes its filesystems for\n"
                 "               it (an application-consistent copy), thawed after;\n"
                 "               godwit run --restore DIR builds it again (and steps the\n"
                 "               guest's clock and thaws, through its agent)\n"
                 "  migrate NAME tcp:HOST:PORT|unix:PATH [--downtime-ms N] [--timeout S]\n"
                 "          [--timeout-action cancel|switchover] [--bandwidth MIBPS]\n"
                 "          [--connections K] [--local]\n"
                 "               move the running guest to a godwit run --incoming there;\n"
                 "               progress until it has moved (--downtime-ms: the pause\n"
                 "               budget, default 10; --timeout: 600 s, then it is cancelled\n"
                 "               or switched over anyway; --bandwidth: a cap in MiB/s on\n"
                 "               what is sent while the guest runs, all connections\n"
                 "               together; --connections: 1 to 8 TCP connections, each\n"
                 "               pass's pages spread over all, default 1; --local, unix: only:\n"
                 "               hand the guest's memory, disks and taps over instead of\n"
                 "               copying and reopening them, a live upgrade to another\n"
                 "               godwit on this host); migrate\n"
                 "               NAME --cancel stops it\n"
                 "  console NAME attach to a VM's serial console (Ctrl-] detaches)\n"
                 "  exec NAME [-t] [-u USER] -- CMD [ARGS...]\n"
                 "               run CMD in the guest (its agent, over vsock): its output\n"
                 "               here, stdin there, its exit status as godwit's\n"
                 "  cp FILE NAME:PATH, cp NAME:PATH FILE\n"
                 "               copy a file into or out of the guest (mode kept, checked)\n"
                 "  kvp NAME [--pool host|guest] [list|get KEY|set KEY VALUE|delete KEY]\n"
                 "               key/value pools shared with the guest's agent\n"
                 "  freeze NAME [TIMEOUT_S], thaw NAME, agent-info NAME\n"
                 "  agent-shutdown NAME [--reboot]\n"
                 "               power off through the agent (a guest deaf to ACPI)\n"
                 "  sync-time NAME  step the guest's clock to the host's (resume does it)\n"
                 "  check-host   can this host run godwit's VMs? one line per check\n"
                 "  version      print the version\n"
                 "  help         this text\n");
}

/* Parses a decimal number in [min, max]; on failure prints one line naming the option. */
static int parse_number(const char *opt, const char *arg, uint64_t min, uint64_t max,
                        uint64_t *out)
{
    char *end;
    errno = 0;
    if (arg[0] < '0' || arg[0] > '9') {
        log_error("%s: '%s' is not a number", opt, arg);
        return -EINVAL;
    }
    unsigned long long v = strtoull(arg, &end, 10);
    if (errno == ERANGE) {
        log_error("%s: '%s' is out of range", opt, arg);
        return -ERANGE;
    }
    if (errno || *end != '\0') {
        log_error("%s: '%s' is not a number", opt, arg);
        return -EINVAL;
    }
    if (v < min || v > max) {
        log_error("%s: %llu is out of range (%" PRIu64 " to %" PRIu64 ")", opt, v, min, max);
        return -ERANGE;
    }
    *out = v;
    return 0;
}

static uint64_t host_memory_mib(void)
{
    long pages = sysconf(_SC_PHYS_PAGES), page_size = sysconf(_SC_PAGE_SIZE);
    if (pages <= 0 || page_size <= 0)
        return UINT64_MAX >> 20;
    return ((uint64_t)pages * (uint64_t)page_size) >> 20;
}

enum {
    OPT_HUGEPAGES = 256, OPT_NO_REBOOT, OPT_CONFIG, OPT_NAME, OPT_API_SOCKET,
    OPT_DISK, OPT_NET, OPT_CONSOLE, OPT_NO_RNG, OPT_VSOCK, OPT_KERNEL_DECOMPRESS, OPT_THP, OPT_RESTORE,
    OPT_INCOMING, OPT_SECCOMP, OPT_CAPS, OPT_IO_POLL, OPT_JAIL, OPT_UID, OPT_GID, OPT_CGROUP, OPT_NETNS,
};

/* An on|off option: `off` sets *off. */
static int parse_off(const char *option, const char *arg, bool *off)
{
    if (strcmp(arg, "on") != 0 && strcmp(arg, "off") != 0) {
        log_error("%s: '%s' must be on or off", option, arg);
        return -EINVAL;
    }
    *off = strcmp(arg, "off") == 0;
    return 0;
}

/* --disk and --net: the first one given replaces the config file's list, the others add. */
static int add_device_option(struct cli_run_options *opts, int opt, const char *arg,
                             bool *disks_given, bool *nets_given)
{
    struct vm_config *cfg = &opts->cfg;
    if (opt == OPT_DISK) {
        struct godwit_disk disk;
        int ret = devopt_parse_disk("--disk", arg, &disk, &opts->owned);
        if (ret == 0 && !*disks_given)
            cfg->nr_disks = 0;
        *disks_given = true;
        return ret < 0 ? ret : devopt_add_disk(cfg, &opts->owned, &disk);
    }
    struct godwit_net net;
    int ret = devopt_parse_net("--net", arg, &net, &opts->owned);
    if (ret == 0 && !*nets_given)
        cfg->nr_nets = 0;
    *nets_given = true;
    return ret < 0 ? ret : devopt_add_net(cfg, &opts->owned, &net);
}

/* The value of the last `wanted` option (--config, --restore), or NULL: a first pass of the
 * same parser, so that abbreviations (--conf) and --config=FILE mean what they mean in the
 * second. */
static const char *find_option(int argc, char **argv, const struct option *options,
                               const char *shortopts, int wanted)
{
    const char *value = NULL;
    int opt;
    opterr = 0;
    optind = 0; /* 0: glibc starts a fresh scan */
    while ((opt = getopt_long(argc, argv, shortopts, options, NULL)) != -1)
        if (opt == wanted)
            value = optarg;
    return value;
}

/* The snapshot's configuration is the base that options override, as a --config file is. */
static int load_snapshot_config(const char *dir, struct cli_run_options *opts)
{
    struct snapshot snap;
    if (snapshot_open(&snap, dir) < 0)
        return -EINVAL;
    int ret = config_parse_json(snap.config_json, strlen(snap.config_json), &opts->cfg,
                                &opts->extra, &opts->owned, NULL);
    snapshot_close(&snap);
    opts->restore_dir = dir;
    return ret;
}

void cli_run_options_free(struct cli_run_options *opts)
{
    config_strings_free(&opts->owned);
    if (opts->incoming_fd > 0)
        close(opts->incoming_fd);
    if (opts->incoming_memfd > 0)
        close(opts->incoming_memfd);
    opts->incoming_fd = opts->incoming_memfd = -1;
    godwit_handover_close(&opts->handover);
}

/* While no source has connected yet: the filters of the threads this process starts once the
 * guest's configuration has come, compiled now rather than between that and READY, where the
 * source waits for them (40-60 ms in the test host). A configuration or --seccomp that asks for
 * another mode compiles its own, as without this. */
static void prepare_filters(enum godwit_seccomp mode)
{
    static const enum sandbox_thread kinds[] = { SANDBOX_THREAD_MAIN_LOOP, SANDBOX_THREAD_VCPU,
                                                 SANDBOX_THREAD_CLI };
    for (unsigned i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++)
        sandbox_seccomp_prepare(kinds[i], mode);
}

/* The source's configuration is the base that options override, as a --config file is. The
 * connection stays open for the VM to receive the guest through. */
static int accept_migration(const char *uri, struct cli_run_options *opts,
                            enum godwit_seccomp mode)
{
    char *config;
    prepare_filters(mode);
    log_info("waiting for a migration on %s", uri);
    int fd = godwit_incoming_accept(uri, &config, &opts->incoming_memfd, &opts->handover);
    if (fd < 0)
        return fd;
    if (opts->incoming_memfd >= 0)
        log_info("the source hands its guest's memory over (a local live upgrade): no page is "
                 "copied");
    if (opts->handover.nr_streams)
        log_info("migration: the source sends pages over %u connections",
                 opts->handover.nr_streams + 1);
    int ret = config_parse_json(config, strlen(config), &opts->cfg, &opts->extra, &opts->owned,
                                NULL);
    free(config);
    struct godwit_handover *h = &opts->handover;
    unsigned queues = devopt_tap_queues(opts->cfg.nets, opts->cfg.nr_nets);
    unsigned consoles = opts->cfg.virtio_console == GODWIT_VIRTIO_CONSOLE_SOCKET;
    unsigned vsocks = opts->cfg.vsock_cid != 0;
    if (!h->sockets) /* an older source: hands none over, they are bound as configured */
        consoles = vsocks = 0;
    if (ret == 0 && opts->incoming_memfd >= 0 &&
        (h->nr_disks != opts->cfg.nr_disks || h->nr_taps != queues ||
         h->nr_consoles != consoles || h->nr_vsocks != vsocks)) {
        log_error("migration: the source handed over %u disks, %u tap queues, %u console and "
                  "%u vsock sockets for a configuration of %u disks, %u tap queues, %u console "
                  "and %u vsock sockets", h->nr_disks, h->nr_taps, h->nr_consoles, h->nr_vsocks,
                  opts->cfg.nr_disks, queues, consoles, vsocks);
        ret = -EPROTO;
    }
    if (ret < 0) {
        close(fd);
        return ret;
    }
    opts->incoming_fd = fd;
    return 0;
}

/* Closes the `n` descriptors of one kind at `first` in h->fds, and closes the gap. */
static void drop_kind(struct godwit_handover *h, unsigned first, unsigned n)
{
    unsigned total = godwit_handover_count(h);
    for (unsigned i = first; i < first + n; i++)
        close(h->fds[i]);
    memmove(h->fds + first, h->fds + first + n, (total - first - n) * sizeof(int));
}

/*
 * --disk, --net, --console or --vsock given to a local handover's destination replace that
 * kind of device, as for any destination: those are opened (or bound) as told (a disk the
 * source holds is locked once it ends, as after a copying migration), and the source's
 * descriptors of that kind are closed.
 */
static void override_handover(struct godwit_handover *h, const bool given[4])
{
    if (given[0] && h->nr_disks) {
        log_info("migration: --disk given: opening those disks, not the %u the source handed "
                 "over", h->nr_disks);
        drop_kind(h, 0, h->nr_disks);
        h->nr_disks = 0;
    }
    if (given[1] && h->nr_taps) {
        log_info("migration: --net given: opening those taps, not the %u tap queues the source "
                 "handed over", h->nr_taps);
        drop_kind(h, h->nr_disks, h->nr_taps);
        h->nr_taps = 0;
    }
    if (given[2] && h->nr_consoles) {
        log_info("migration: --console given: not serving the console socket the source "
                 "handed over");
        drop_kind(h, h->nr_disks + h->nr_taps, 1);
        h->nr_consoles = 0;
    }
    if (given[3] && h->nr_vsocks) {
        log_info("migration: --vsock given: not serving the vsock socket the source handed over");
        drop_kind(h, h->nr_disks + h->nr_taps + h->nr_consoles, 1);
        h->nr_vsocks = 0;
    }
}

static const struct option run_options[] = {
    { "kernel", required_argument, NULL, 'k' }, { "initrd", required_argument, NULL, 'i' },
    { "cmdline", required_argument, NULL, 'c' }, { "memory", required_argument, NULL, 'm' },
    { "cpus", required_argument, NULL, 'p' },   { "hugepages", no_argument, NULL, OPT_HUGEPAGES },
    { "no-reboot", no_argument, NULL, OPT_NO_REBOOT }, { "verbose", no_argument, NULL, 'v' },
    { "quiet", no_argument, NULL, 'q' },        { "help", no_argument, NULL, 'h' },
    { "config", required_argument, NULL, OPT_CONFIG },
    { "name", required_argument, NULL, OPT_NAME },
    { "api-socket", required_argument, NULL, OPT_API_SOCKET },
    { "disk", required_argument, NULL, OPT_DISK },
    { "net", required_argument, NULL, OPT_NET },
    { "console", required_argument, NULL, OPT_CONSOLE },
    { "no-rng", no_argument, NULL, OPT_NO_RNG },
    { "vsock", required_argument, NULL, OPT_VSOCK },
    { "kernel-decompress", required_argument, NULL, OPT_KERNEL_DECOMPRESS },
    { "thp", required_argument, NULL, OPT_THP },
    { "restore", required_argument, NULL, OPT_RESTORE },
    { "incoming", required_argument, NULL, OPT_INCOMING },
    { "seccomp", required_argument, NULL, OPT_SECCOMP },
    { "caps", required_argument, NULL, OPT_CAPS },
    { "io-poll", required_argument, NULL, OPT_IO_POLL },
    { "jail", required_argument, NULL, OPT_JAIL },
    { "uid", required_argument, NULL, OPT_UID },
    { "gid", required_argument, NULL, OPT_GID },
    { "cgroup", required_argument, NULL, OPT_CGROUP },
    { "netns", required_argument, NULL, OPT_NETNS },
    { 0 },
};
static const char run_shortopts[] = ":k:i:c:m:p:vqh";

/* Which kinds of option were given, for what follows the options (override_handover, the
 * jail's checks). */
struct options_given {
    bool disks, nets, console, vsock;
    unsigned ids; /* 1: --uid, 2: --gid */
};

/* Every option given, over what opts holds (defaults, a --config file, a snapshot's or a
 * migration's configuration). 0, CLI_HELP, or -EINVAL after one line. */
static int apply_options(int argc, char **argv, struct cli_run_options *opts,
                         struct options_given *given)
{
    struct vm_config *cfg = &opts->cfg;
    uint64_t value;
    int opt;
    opterr = 0;
    optind = 0; /* 0: glibc starts a fresh scan */
    while ((opt = getopt_long(argc, argv, run_shortopts, run_options, NULL)) != -1) {
        switch (opt) {
        case 'k': cfg->kernel_path = optarg; break;
        case 'i': cfg->initrd_path = optarg; break;
        case 'c': cfg->cmdline = optarg; break;
        case 'm':
            if (parse_number("--memory", optarg, GM_MIN_SIZE >> 20, host_memory_mib(), &value) < 0)
                return -EINVAL;
            cfg->memory_mib = value;
            break;
        case 'p':
            if (parse_number("--cpus", optarg, 1, VM_MAX_VCPUS, &value) < 0)
                return -EINVAL;
            cfg->nr_cpus = (unsigned)value;
            break;
        case OPT_HUGEPAGES: cfg->hugepages = true; break;
        case OPT_NO_REBOOT: cfg->no_reboot = true; break;
        case OPT_CONFIG: /* read first, above */
        case OPT_RESTORE:
        case OPT_INCOMING: break;
        case OPT_NAME:
            if (!runtime_name_valid(optarg)) {
                log_error("--name: '%s' is not a valid name (1-64 of A-Z a-z 0-9 . _ -)", optarg);
                return -EINVAL;
            }
            opts->extra.name = optarg;
            break;
        case OPT_API_SOCKET: opts->extra.api_socket = optarg; break;
        case OPT_DISK:
        case OPT_NET:
            if (add_device_option(opts, opt, optarg, &given->disks, &given->nets) < 0)
                return -EINVAL;
            break;
        case OPT_CONSOLE:
            if (devopt_parse_console("--console", optarg, &cfg->virtio_console,
                                     &cfg->virtio_console_path, &opts->owned) < 0)
                return -EINVAL;
            given->console = true;
            break;
        case OPT_NO_RNG: cfg->no_rng = true; break;
        case OPT_VSOCK:
            if (devopt_parse_vsock("--vsock", optarg, &cfg->vsock_cid, &cfg->vsock_path,
                                   &opts->owned) < 0)
                return -EINVAL;
            given->vsock = true;
            break;
        case OPT_KERNEL_DECOMPRESS:
            if (parse_off("--kernel-decompress", optarg, &cfg->no_kernel_decompress) < 0)
                return -EINVAL;
            break;
        case OPT_THP:
            if (parse_off("--thp", optarg, &cfg->no_thp) < 0)
                return -EINVAL;
            break;
        case OPT_SECCOMP:
            if (sandbox_seccomp_parse(optarg, &opts->extra.seccomp) < 0) {
                log_error("--seccomp: '%s' must be on, log or off", optarg);
                return -EINVAL;
            }
            break;
        case OPT_CAPS:
            if (strcmp(optarg, "drop") != 0 && strcmp(optarg, "keep") != 0) {
                log_error("--caps: '%s' must be drop or keep", optarg);
                return -EINVAL;
            }
            opts->extra.keep_caps = strcmp(optarg, "keep") == 0;
            break;
        case OPT_IO_POLL:
            if (parse_number("--io-poll", optarg, 0, GODWIT_MAX_IO_POLL_US, &value) < 0)
                return -EINVAL;
            opts->extra.io_poll_us = (unsigned)value;
            break;
        case OPT_JAIL: opts->jail.dir = optarg; break;
        case OPT_UID:
        case OPT_GID:
            if (parse_number(opt == OPT_UID ? "--uid" : "--gid", optarg, 0, UINT32_MAX - 1, &value) < 0)
                return -EINVAL;
            if (opt == OPT_UID)
                opts->jail.uid = (uid_t)value;
            else
                opts->jail.gid = (gid_t)value;
            given->ids |= opt == OPT_UID ? 1 : 2;
            break;
        case OPT_CGROUP:
            if (jail_cgroup_add(&opts->jail.cgroup, optarg) < 0)
                return -EINVAL;
            break;
        case OPT_NETNS: opts->netns = optarg; break;
        case 'v': log_set_level(LOG_LVL_DEBUG); break;
        case 'q': log_set_level(LOG_LVL_ERROR); break;
        case 'h': return CLI_HELP;
        case ':':
            log_error("%s needs a value (see godwit run --help)", argv[optind - 1]);
            return -EINVAL;
        default:
            log_error("unknown option '%s' (see godwit run --help)", argv[optind - 1]);
            return -EINVAL;
        }
    }
    if (optind < argc) {
        log_error("unexpected argument '%s' (see godwit run --help)", argv[optind]);
        return -EINVAL;
    }
    return 0;
}

/* The jail's own options make sense only with --jail. */
static int check_jail_options(const struct cli_run_options *opts, const struct options_given *given)
{
    if (given->ids && !opts->jail.dir) {
        log_error("--uid and --gid are the --jail's user: give --jail DIR too");
        return -EINVAL;
    }
    if (opts->jail.cgroup.nr_settings && !opts->jail.dir) {
        log_error("--cgroup limits a jailed VM: give --jail DIR too (or use systemd's limits)");
        return -EINVAL;
    }
    return 0;
}

/* A destination checks its options before it waits for a source, which may be long: a bad one
 * is refused at once, not once a guest has come. On a copy, since the source's configuration
 * comes first and the options override it. Also gives the filter mode they ask for. */
static int check_options_early(int argc, char **argv, enum godwit_seccomp *mode)
{
    struct cli_run_options scratch;
    struct options_given given = { 0 };
    memset(&scratch, 0, sizeof(scratch));
    config_defaults(&scratch.cfg, &scratch.extra);
    int ret = apply_options(argc, argv, &scratch, &given);
    if (ret == 0)
        ret = check_jail_options(&scratch, &given);
    *mode = scratch.extra.seccomp;
    cli_run_options_free(&scratch);
    return ret;
}

int cli_parse_run(int argc, char **argv, struct cli_run_options *opts)
{
    struct vm_config *cfg = &opts->cfg;
    struct options_given given = { 0 };

    memset(opts, 0, sizeof(*opts));
    config_defaults(cfg, &opts->extra);
    const char *file = find_option(argc, argv, run_options, run_shortopts, OPT_CONFIG);
    const char *restore = find_option(argc, argv, run_options, run_shortopts, OPT_RESTORE);
    const char *incoming = find_option(argc, argv, run_options, run_shortopts, OPT_INCOMING);
    if (!!file + !!restore + !!incoming > 1) {
        log_error("--config, --restore and --incoming exclude each other: a snapshot and a "
                  "migration bring their configuration");
        return -EINVAL;
    }
    if (file && config_load_file(file, cfg, &opts->extra, &opts->owned, NULL) < 0)
        return -EINVAL;
    if (restore && load_snapshot_config(restore, opts) < 0)
        return -EINVAL;
    if (incoming) {
        enum godwit_seccomp mode;
        int ret = check_options_early(argc, argv, &mode);
        if (ret != 0)
            return ret;
        if (accept_migration(incoming, opts, mode) < 0)
            return -EINVAL;
    }
    int ret = apply_options(argc, argv, opts, &given);
    if (ret != 0)
        return ret;
    override_handover(&opts->handover,
                      (const bool[4]){ given.disks, given.nets, given.console, given.vsock });
    if (!cfg->kernel_path) {
        log_error("--kernel is required (see godwit run --help)");
        return -EINVAL;
    }
    if (check_jail_options(opts, &given) < 0)
        return -EINVAL;
    opts->jail.ids_given = given.ids == 3;
    return 0;
}

