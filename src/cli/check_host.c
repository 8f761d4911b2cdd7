/* check_host.c: checks KVM, CPU, kernel and device support that godwit needs, one line each. */
#define _GNU_SOURCE
#include "cli/check_host.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <linux/kvm.h>
#include <liburing.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "io/loop.h"
#include "sandbox/seccomp.h"

#define KIB_PER_GIB (1024.0 * 1024.0)
#define TESTHOST_ADVICE "run guests inside the test host (tools/testhost/testhost.sh)"

enum check_status { CHECK_PASS, CHECK_WARN, CHECK_FAIL };

struct check_run {
    const char *root;
    const char *kvm_device;
    FILE *out;
    int failures;
};

/* The vendor KVM module that is loaded, and the names of its parameters. */
struct kvm_vendor {
    const char *module;
    const char *slat_param; /* "ept" or "npt" */
    const char *slat_name; /* "EPT" or "NPT" */
};

static const struct kvm_vendor kvm_vendors[] = {
    { "kvm_intel", "ept", "EPT" },
    { "kvm_amd", "npt", "NPT" },
};

static const char *const status_names[] = {
    [CHECK_PASS] = "PASS", [CHECK_WARN] = "WARN", [CHECK_FAIL] = "FAIL"
};

/* Prints one line; `advice` says what to do about a WARN or FAIL. */
static void report(struct check_run *run, enum check_status status, const char *check,
                   const char *advice, const char *fmt, ...) __attribute__((format(printf, 5, 6)));

static void report(struct check_run *run, enum check_status status, const char *check,
                   const char *advice, const char *fmt, ...)
{
    va_list ap;

    fprintf(run->out, "%s  %s: ", status_names[status], check);
    va_start(ap, fmt);
    vfprintf(run->out, fmt, ap);
    va_end(ap);
    if (advice && status != CHECK_PASS)
        fprintf(run->out, " -- %s", advice);
    fputc('\n', run->out);
    if (status == CHECK_FAIL)
        run->failures++;
}

/* ---- reading the host's /proc and /sys ---- */

static const char *host_path(const struct check_run *run, const char *path, char *buf, size_t size)
{
    snprintf(buf, size, "%s%s", run->root, path);
    return buf;
}

static bool host_path_exists(const struct check_run *run, const char *path)
{
    char buf[PATH_MAX];
    return access(host_path(run, path, buf, sizeof(buf)), F_OK) == 0;
}

/* The first line of a small file, without its newline. Returns 0 or -errno. */
static int read_first_line(const struct check_run *run, const char *path, char *line, size_t size)
{
    char buf[PATH_MAX];
    FILE *f = fopen(host_path(run, path, buf, sizeof(buf)), "re");

    if (!f)
        return -errno;
    bool got = fgets(line, (int)size, f) != NULL;
    fclose(f);
    if (!got)
        return -ENODATA;
    line[strcspn(line, "\n")] = '\0';
    return 0;
}

static bool module_loaded(const struct check_run *run, const char *module)
{
    char path[128];
    snprintf(path, sizeof(path), "/sys/module/%s", module);
    return host_path_exists(run, path);
}

enum module_param { PARAM_ABSENT, PARAM_OFF, PARAM_ON };

/* Boolean module parameters read as Y/N; some (kvm_amd's nested) as 1/0. */
static enum module_param module_param(const struct check_run *run, const char *module,
                                      const char *param)
{
    char path[128], value[32];

    snprintf(path, sizeof(path), "/sys/module/%s/parameters/%s", module, param);
    if (read_first_line(run, path, value, sizeof(value)) < 0)
        return PARAM_ABSENT;
    return strcmp(value, "Y") == 0 || strcmp(value, "1") == 0 ? PARAM_ON : PARAM_OFF;
}

static const struct kvm_vendor *loaded_kvm_vendor(const struct check_run *run)
{
    for (size_t i = 0; i < sizeof(kvm_vendors) / sizeof(kvm_vendors[0]); i++)
        if (module_loaded(run, kvm_vendors[i].module))
            return &kvm_vendors[i];
    return NULL;
}

/* kvm_pvm gives a /dev/kvm without hardware virtualization: ring 0 of the guest is emulated. */
static bool kvm_is_pvm(const struct check_run *run)
{
    return module_loaded(run, "kvm_pvm") && !loaded_kvm_vendor(run);
}

static bool flag_in_list(const char *flags, const char *flag)
{
    size_t len = strlen(flag);
    for (const char *p = strstr(flags, flag); p; p = strstr(p + 1, flag)) {
        bool starts = p == flags || p[-1] == ' ' || p[-1] == '\t';
        bool ends = p[len] == '\0' || p[len] == ' ' || p[len] == '\n';
        if (starts && ends)
            return true;
    }
    return false;
}

/* Whether the first "flags" line of /proc/cpuinfo names `flag`. */
static bool cpu_has_flag(const struct check_run *run, const char *flag)
{
    char buf[PATH_MAX];
    FILE *f = fopen(host_path(run, "/proc/cpuinfo", buf, sizeof(buf)), "re");
    char *line = NULL;
    size_t cap = 0;
    bool found = false;

    if (!f)
        return false;
    while (getline(&line, &cap, f) >= 0) {
        const char *colon = strchr(line, ':');
        if (strncmp(line, "flags", 5) == 0 && colon) {
            found = flag_in_list(colon + 1, flag);
            break;
        }
    }
    free(line);
    fclose(f);
    return found;
}

/* A "Key:   value [kB]" line of /proc/meminfo. */
static bool meminfo_value(const struct check_run *run, const char *key, unsigned long long *value)
{
    char buf[PATH_MAX], line[256];
    FILE *f = fopen(host_path(run, "/proc/meminfo", buf, sizeof(buf)), "re");
    size_t key_len = strlen(key);
    bool found = false;

    if (!f)
        return false;
    while (!found && fgets(line, sizeof(line), f))
        found = strncmp(line, key, key_len) == 0 && line[key_len] == ':' &&
                sscanf(line + key_len + 1, "%llu", value) == 1;
    fclose(f);
    return found;
}

/* ---- /dev/kvm and its API ---- */

static const char *group_name(gid_t gid, char *buf, size_t size)
{
    char grbuf[1024];
    struct group grp, *found = NULL;

    if (getgrgid_r(gid, &grp, grbuf, sizeof(grbuf), &found) == 0 && found)
        snprintf(buf, size, "%s", found->gr_name);
    else
        snprintf(buf, size, "%u", (unsigned)gid);
    return buf;
}

static void report_kvm_open_error(struct check_run *run, int err, const struct stat *st)
{
    char group[64];

    if (err == EACCES || err == EPERM)
        report(run, CHECK_FAIL, "/dev/kvm accessible",
               "add the user to group kvm (usermod -aG kvm $USER, then log in again)",
               "permission denied (group %s, mode %04o)",
               group_name(st->st_gid, group, sizeof(group)), (unsigned)(st->st_mode & 07777));
    else
        report(run, CHECK_FAIL, "/dev/kvm accessible",
               "load kvm_intel or kvm_amd (modprobe), enabling VT-x/AMD-V in the firmware setup",
               "%s", strerror(err));
}

/* Returns an open KVM fd, or -1 after reporting why there is none. */
static int check_kvm_device(struct check_run *run)
{
    struct stat st;

    if (stat(run->kvm_device, &st) < 0) {
        report(run, CHECK_FAIL, "/dev/kvm present",
               "load kvm_intel or kvm_amd (modprobe), enabling VT-x/AMD-V in the firmware setup",
               "%s", strerror(errno));
        return -1;
    }
    if (S_ISCHR(st.st_mode))
        report(run, CHECK_PASS, "/dev/kvm present", NULL, "character device %u:%u",
               major(st.st_rdev), minor(st.st_rdev));
    else
        report(run, CHECK_FAIL, "/dev/kvm present",
               "remove it; udev creates the device when kvm loads", "%s is not a character device",
               run->kvm_device);
    int fd = open(run->kvm_device, O_RDWR | O_CLOEXEC);
    if (fd < 0) {
        report_kvm_open_error(run, errno, &st);
        return -1;
    }
    report(run, CHECK_PASS, "/dev/kvm accessible", NULL, "opened read-write");
    return fd;
}

static bool check_kvm_api_version(struct check_run *run, int kvm_fd)
{
    int version = ioctl(kvm_fd, KVM_GET_API_VERSION, 0);

    if (version < 0) {
        report(run, CHECK_FAIL, "KVM API version", "check that it is the KVM device",
               "KVM_GET_API_VERSION on %s failed: %s", run->kvm_device, strerror(errno));
        return false;
    }
    if (version != KVM_API_VERSION) {
        report(run, CHECK_FAIL, "KVM API version", "use a Linux kernel with the standard KVM API",
               "%d, godwit needs %d", version, KVM_API_VERSION);
        return false;
    }
    report(run, CHECK_PASS, "KVM API version", NULL, "%d", version);
    return true;
}

/* The capabilities vm.c and the devices rely on; keep in step with vm_open_kvm(). */
static void check_kvm_required_caps(struct check_run *run, int kvm_fd)
{
    static const struct {
        unsigned long cap;
        const char *name;
    } required[] = {
        { KVM_CAP_IRQCHIP, "irqchip" },
        { KVM_CAP_USER_MEMORY, "user memory" },
        { KVM_CAP_SET_TSS_ADDR, "TSS address" },
        { KVM_CAP_EXT_CPUID, "CPUID2" },
        { KVM_CAP_PIT2, "PIT2" },
        { KVM_CAP_IMMEDIATE_EXIT, "immediate exit" },
        { KVM_CAP_IOEVENTFD, "ioeventfd" },
        { KVM_CAP_IRQFD, "irqfd" },
    };
    char names[256] = "", missing[sizeof(names)] = "";

    for (size_t i = 0; i < sizeof(required) / sizeof(required[0]); i++) {
        char *list = ioctl(kvm_fd, KVM_CHECK_EXTENSION, required[i].cap) > 0 ? names : missing;
        size_t used = strlen(list);
        snprintf(list + used, sizeof(names) - used, "%s%s", used ? ", " : "", required[i].name);
    }
    if (missing[0])
        report(run, CHECK_FAIL, "KVM capabilities", "use a newer host kernel", "missing %s",
               missing);
    else
        report(run, CHECK_PASS, "KVM capabilities", NULL, "%s", names);
}

static void check_kvm_optional_caps(struct check_run *run, int kvm_fd)
{
    if (ioctl(kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_TSC_DEADLINE_TIMER) > 0)
        report(run, CHECK_PASS, "KVM TSC-deadline timer", NULL, "available");
    else
        report(run, CHECK_WARN, "KVM TSC-deadline timer",
               "guests calibrate the LAPIC timer against the PIT instead: slower, less exact boots",
               "not available");
    /* The KVM API: without MAX_VCPUS the limit is NR_VCPUS, without that it is 4. */
    int recommended = ioctl(kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_NR_VCPUS);
    int max = ioctl(kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_MAX_VCPUS);
    if (recommended <= 0)
        recommended = 4;
    if (max <= 0)
        max = recommended;
    report(run, CHECK_PASS, "KVM vCPUs", NULL, "up to %d per VM (%d recommended)", max,
           recommended);
}

static void check_kvm(struct check_run *run)
{
    int kvm_fd = check_kvm_device(run);

    if (kvm_fd < 0) {
        report(run, CHECK_WARN, "KVM API and capabilities", "fix /dev/kvm first",
               "not checked: %s cannot be opened", run->kvm_device);
        return;
    }
    if (check_kvm_api_version(run, kvm_fd)) {
        check_kvm_required_caps(run, kvm_fd);
        check_kvm_optional_caps(run, kvm_fd);
    }
    close(kvm_fd);
}

/* ---- the CPU and the KVM modules ---- */

static void check_hardware_virtualization(struct check_run *run)
{
    const char *check = "hardware virtualization";

    if (kvm_is_pvm(run) && access(run->kvm_device, F_OK) == 0)
        report(run, CHECK_FAIL, check, TESTHOST_ADVICE,
               "kvm_pvm (software-emulated ring 0): unmodified guest kernels cannot run here");
    else if (cpu_has_flag(run, "vmx"))
        report(run, CHECK_PASS, check, NULL, "Intel VT-x (vmx)");
    else if (cpu_has_flag(run, "svm"))
        report(run, CHECK_PASS, check, NULL, "AMD-V (svm)");
    else if (kvm_is_pvm(run))
        report(run, CHECK_FAIL, check, TESTHOST_ADVICE,
               "no vmx or svm flag in /proc/cpuinfo; kvm_pvm is loaded but gives no %s (and it "
               "emulates ring 0, so unmodified guest kernels could not run on it)",
               run->kvm_device);
    else
        report(run, CHECK_FAIL, check,
               "enable VT-x/AMD-V in the firmware setup; inside a VM, enable nested virtualization "
               "on its host",
               "no vmx or svm flag in /proc/cpuinfo");
}

/* The loaded vendor module, or NULL after a WARN line saying why there is none. */
static const struct kvm_vendor *vendor_or_report(struct check_run *run, const char *check)
{
    const struct kvm_vendor *vendor = loaded_kvm_vendor(run);

    if (vendor)
        return vendor;
    if (kvm_is_pvm(run))
        report(run, CHECK_WARN, check, TESTHOST_ADVICE,
               "not applicable: KVM here is kvm_pvm, not kvm_intel or kvm_amd");
    else
        report(run, CHECK_WARN, check, "load the one for this CPU (modprobe kvm_intel or kvm_amd)",
               "unknown: neither kvm_intel nor kvm_amd is loaded");
    return NULL;
}

static void check_slat(struct check_run *run)
{
    const char *check = "second-level address translation";
    const struct kvm_vendor *vendor = vendor_or_report(run, check);
    char advice[160];

    if (!vendor)
        return;
    enum module_param state = module_param(run, vendor->module, vendor->slat_param);
    snprintf(advice, sizeof(advice),
             "without it KVM uses shadow paging, much slower: options %s %s=1, then reload %s",
             vendor->module, vendor->slat_param, vendor->module);
    if (state == PARAM_ON)
        report(run, CHECK_PASS, check, NULL, "%s (%s %s=Y)", vendor->slat_name, vendor->module,
               vendor->slat_param);
    else
        report(run, CHECK_WARN, check, advice, "%s %s", vendor->slat_name,
               state == PARAM_OFF ? "disabled" : "not reported by the module");
}

static void check_nested(struct check_run *run)
{
    const char *check = "nested virtualization";
    const struct kvm_vendor *vendor = vendor_or_report(run, check);
    char advice[200];

    if (!vendor)
        return;
    enum module_param state = module_param(run, vendor->module, "nested");
    snprintf(advice, sizeof(advice),
             "only for guests that run KVM themselves: options %s nested=1 in "
             "/etc/modprobe.d/kvm.conf, then reload %s",
             vendor->module, vendor->module);
    if (state == PARAM_ON)
        report(run, CHECK_PASS, check, NULL, "enabled in %s", vendor->module);
    else
        report(run, CHECK_WARN, check, advice, "%s",
               state == PARAM_OFF ? "disabled" : "not reported by the module");
}

/* ---- kernel interfaces and devices ---- */

/* The io_uring operations godwit's event loop (src/io/loop.c) submits. */
static const struct {
    int op;
    const char *name;
} io_uring_ops_used[] = {
    { IORING_OP_POLL_ADD, "POLL_ADD" },
    { IORING_OP_ASYNC_CANCEL, "ASYNC_CANCEL" },
    { IORING_OP_TIMEOUT, "TIMEOUT" },
};

/* Names the operations the kernel lacks into `missing`; empty when all are there. */
static void io_uring_missing_ops(struct io_uring *ring, char *missing, size_t size)
{
    struct io_uring_probe *probe = io_uring_get_probe_ring(ring);

    missing[0] = '\0';
    if (!probe)
        return; /* kernels before 5.6 cannot say; the ops above all predate 5.6 */
    for (size_t i = 0; i < sizeof(io_uring_ops_used) / sizeof(io_uring_ops_used[0]); i++) {
        size_t used = strlen(missing);
        if (!io_uring_opcode_supported(probe, io_uring_ops_used[i].op))
            snprintf(missing + used, size - used, "%s%s", used ? ", " : "",
                     io_uring_ops_used[i].name);
    }
    io_uring_free_probe(probe);
}

/* Whether guest RAM can become registered buffers (loop_buffers_enable): a sparse table
 * (5.19) and one page pinned, which RLIMIT_MEMLOCK may refuse to this user. */
static const char *io_uring_buffers_work(struct io_uring *ring)
{
    static uint8_t page[4096] __attribute__((aligned(4096)));
    struct iovec iov = { .iov_base = page, .iov_len = sizeof(page) };
    __u64 tag = 0;
    if (io_uring_register_buffers_sparse(ring, 1) < 0)
        return "no";
    return io_uring_register_buffers_update_tag(ring, 0, &iov, &tag, 1) == 1
               ? "yes" : "no (RLIMIT_MEMLOCK?)";
}

/*
 * kernel.io_uring_disabled: 0 allows everyone, 1 only CAP_SYS_ADMIN and kernel.io_uring_group,
 * 2 nobody. Under 1 a ring that opens now may not open for the user godwit runs as.
 */
static int io_uring_disabled_level(const struct check_run *run)
{
    char value[16];

    if (read_first_line(run, "/proc/sys/kernel/io_uring_disabled", value, sizeof(value)) < 0)
        return 0; /* kernels before 6.6 have no such switch */
    return atoi(value);
}

static void check_io_uring(struct check_run *run)
{
    char missing[128];
    int disabled = io_uring_disabled_level(run);
    struct io_uring ring;

    if (disabled >= 2) {
        report(run, CHECK_FAIL, "io_uring", "sysctl kernel.io_uring_disabled=0 (godwit needs it)",
               "disabled by kernel.io_uring_disabled=%d", disabled);
        return;
    }
    unsigned setup_flags = 0;
    char setup[160];
    /* The same ladder of setups as the event loop, so the line says what godwit will use. */
    int ret = loop_ring_init(&ring, 4, &setup_flags);
    if (ret < 0) {
        report(run, CHECK_FAIL, "io_uring",
               disabled ? "add the user to group kernel.io_uring_group, or sysctl "
                          "kernel.io_uring_disabled=0"
                        : "godwit needs io_uring: Linux 5.6 or later, not blocked by seccomp",
               "io_uring_queue_init failed: %s", strerror(-ret));
        return;
    }
    io_uring_missing_ops(&ring, missing, sizeof(missing));
    loop_describe_setup(setup_flags, setup, sizeof(setup));
    size_t used = strlen(setup);
    snprintf(setup + used, sizeof(setup) - used, "; registered files %s, buffers %s",
             io_uring_register_files_sparse(&ring, 1) == 0 ? "yes" : "no",
             io_uring_buffers_work(&ring));
    io_uring_queue_exit(&ring);
    if (missing[0])
        report(run, CHECK_FAIL, "io_uring", "use a newer host kernel", "lacks %s", missing);
    else if (disabled)
        report(run, CHECK_WARN, "io_uring",
               "run godwit as root or in group kernel.io_uring_group, or sysctl "
               "kernel.io_uring_disabled=0",
               "works for this user (setup: %s), but kernel.io_uring_disabled=1 limits it to "
               "some users", setup);
    else
        report(run, CHECK_PASS, "io_uring", NULL, "works (setup: %s)", setup);
}

static void check_tap(struct check_run *run)
{
    char path[PATH_MAX];
    int fd = open(host_path(run, "/dev/net/tun", path, sizeof(path)), O_RDWR | O_CLOEXEC);

    if (fd < 0) {
        report(run, CHECK_WARN, "tap devices",
               errno == ENOENT ? "modprobe tun (needed only for tap networking)"
                               : "tap networking needs read-write access to /dev/net/tun",
               "/dev/net/tun: %s", strerror(errno));
        return;
    }
    close(fd);
    report(run, CHECK_PASS, "tap devices", NULL, "/dev/net/tun opens");
}

static void check_vhost_net(struct check_run *run)
{
    if (host_path_exists(run, "/dev/vhost-net"))
        report(run, CHECK_PASS, "vhost-net", NULL,
               "/dev/vhost-net present (godwit does not use it yet)");
    else
        report(run, CHECK_WARN, "vhost-net", "modprobe vhost_net, for later godwit versions",
               "/dev/vhost-net absent (godwit does not use it yet)");
}

static void check_huge_pages(struct check_run *run)
{
    unsigned long long total, page_kib;

    if (!meminfo_value(run, "HugePages_Total", &total) ||
        !meminfo_value(run, "Hugepagesize", &page_kib)) {
        report(run, CHECK_WARN, "huge pages", "only needed for --hugepages",
               "/proc/meminfo does not say");
        return;
    }
    if (total > 0)
        report(run, CHECK_PASS, "huge pages", NULL, "%llu pages of %llu kB reserved (%.1f GiB)",
               total, page_kib, (double)(total * page_kib) / KIB_PER_GIB);
    else
        report(run, CHECK_WARN, "huge pages",
               "only needed for --hugepages; echo N > /proc/sys/vm/nr_hugepages",
               "none reserved (%llu kB pages)", page_kib);
}

/* The bracketed choice of a THP setting ("always [madvise] never"), or "" when unreadable. */
static void thp_setting(const struct check_run *run, const char *path, char *out, size_t size)
{
    char line[256];
    const char *open, *close;

    out[0] = '\0';
    if (read_first_line(run, path, line, sizeof(line)) < 0 || !(open = strchr(line, '[')) ||
        !(close = strchr(open, ']')))
        return;
    snprintf(out, size, "%.*s", (int)(close - open - 1), open + 1);
}

/* Guest RAM's page size (docs/memory-map.md): each 4 KiB page costs a guest a nested page
 * fault on its first touch, so THP matters most where guests run nested. */
static void check_transparent_huge_pages(struct check_run *run)
{
    char thp[32], shmem[32];

    thp_setting(run, "/sys/kernel/mm/transparent_hugepage/enabled", thp, sizeof(thp));
    thp_setting(run, "/sys/kernel/mm/transparent_hugepage/shmem_enabled", shmem, sizeof(shmem));
    if (!thp[0] || strcmp(thp, "never") == 0) {
        report(run, CHECK_WARN, "transparent huge pages",
               "echo madvise > /sys/kernel/mm/transparent_hugepage/enabled",
               "%s: guest RAM is in 4 KiB pages", thp[0] ? "off" : "not in this kernel");
        return;
    }
    if (strcmp(shmem, "always") == 0 || strcmp(shmem, "within_size") == 0 ||
        strcmp(shmem, "advise") == 0 || strcmp(shmem, "force") == 0)
        report(run, CHECK_PASS, "transparent huge pages", NULL,
               "%s, for memfds too (%s): guest RAM is in 2 MiB pages", thp, shmem);
    else
        report(run, CHECK_PASS, "transparent huge pages", NULL,
               "%s, memfds %s: guest RAM is in 2 MiB pages when godwit starts as root (a tmpfs "
               "of its own), else 4 KiB", thp, shmem[0] ? shmem : "unknown");
}

static void check_memory(struct check_run *run)
{
    unsigned long long total_kib, available_kib;

    if (!meminfo_value(run, "MemTotal", &total_kib)) {
        report(run, CHECK_WARN, "memory", "check that /proc is mounted",
               "/proc/meminfo does not say");
        return;
    }
    if (meminfo_value(run, "MemAvailable", &available_kib))
        report(run, CHECK_PASS, "memory", NULL, "%.1f GiB, %.1f GiB available",
               (double)total_kib / KIB_PER_GIB, (double)available_kib / KIB_PER_GIB);
    else
        report(run, CHECK_PASS, "memory", NULL, "%.1f GiB", (double)total_kib / KIB_PER_GIB);
}

/* The running kernel's, whatever the root: `godwit run` filters its threads by default. */
static void check_seccomp(struct check_run *run)
{
    if (sandbox_seccomp_available())
        report(run, CHECK_PASS, "seccomp filters", NULL, "available (godwit run --seccomp=on)");
    else
        report(run, CHECK_WARN, "seccomp filters",
               "use a kernel with CONFIG_SECCOMP_FILTER, or run with --seccomp=off",
               "not available");
}

int check_host_run(const struct check_host_env *env, FILE *out)
{
    char kvm_device[PATH_MAX];
    struct check_run run = { .root = env->root ? env->root : "",
                             .kvm_device = env->kvm_device,
                             .out = out };

    if (!run.kvm_device)
        run.kvm_device = host_path(&run, "/dev/kvm", kvm_device, sizeof(kvm_device));
    check_kvm(&run);
    check_hardware_virtualization(&run);
    check_slat(&run);
    check_nested(&run);
    check_io_uring(&run);
    check_tap(&run);
    check_vhost_net(&run);
    check_huge_pages(&run);
    check_transparent_huge_pages(&run);
    check_memory(&run);
    check_seccomp(&run);
    fflush(out);
    return run.failures;
}
