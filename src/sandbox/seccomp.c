/* seccomp.c: loads a thread's system call filter; a forbidden call is named, then fatal. */
#define _GNU_SOURCE
#include "sandbox/seccomp.h"

#include <errno.h>
#include <pthread.h>
#include <seccomp.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <ucontext.h>
#include <unistd.h>

#include "log.h"
#include "sandbox/seccomp_rules.h"

/* Numbers above every x86-64 system call; the names table covers them. */
#define SYSCALL_NAMES 512

/*
 * What the SIGSYS handler needs and cannot compute there: libseccomp's name lookup allocates,
 * so the names are looked up once, before the first filter is loaded; and the thread's kind.
 * These statics are the signal handler's, and nothing else reads them.
 */
static const char *syscall_names[SYSCALL_NAMES];
static uint32_t native_arch; /* AUDIT_ARCH_X86_64, as the kernel reports it in si_arch */
static bool stderr_is_tty;
static pthread_once_t names_once = PTHREAD_ONCE_INIT;
static __thread const char *thread_kind = "godwit";

const char *sandbox_thread_name(enum sandbox_thread thread)
{
    switch (thread) {
    case SANDBOX_THREAD_MAIN_LOOP: return "main loop";
    case SANDBOX_THREAD_VCPU: return "vCPU";
    case SANDBOX_THREAD_MIGRATION: return "migration";
    case SANDBOX_THREAD_CLI: return "command line";
    }
    return "godwit";
}

int sandbox_seccomp_parse(const char *text, enum godwit_seccomp *mode)
{
    static const enum godwit_seccomp modes[] = { GODWIT_SECCOMP_ON, GODWIT_SECCOMP_LOG,
                                                 GODWIT_SECCOMP_OFF };
    for (size_t i = 0; i < sizeof(modes) / sizeof(modes[0]); i++)
        if (strcmp(text, sandbox_seccomp_name(modes[i])) == 0) {
            *mode = modes[i];
            return 0;
        }
    return -EINVAL;
}

const char *sandbox_seccomp_name(enum godwit_seccomp mode)
{
    switch (mode) {
    case GODWIT_SECCOMP_ON: return "on";
    case GODWIT_SECCOMP_LOG: return "log";
    case GODWIT_SECCOMP_OFF: return "off";
    }
    return "on";
}

/* Before the first filter: what the handler needs, and what glibc would otherwise open later
 * on a filtered thread (the first gmtime_r() anywhere, the RTC's on a vCPU, loads the time
 * zone file). */
static void lookup_names(void)
{
    tzset();
    native_arch = seccomp_arch_native();
    for (int nr = 0; nr < SYSCALL_NAMES; nr++)
        syscall_names[nr] = seccomp_syscall_resolve_num_arch(native_arch, nr);
    stderr_is_tty = isatty(STDERR_FILENO);
}

/* Async-signal-safe formatting: the handler may not call printf. */
struct line {
    char buf[320];
    size_t len;
};

static void put_str(struct line *l, const char *s)
{
    while (*s && l->len < sizeof(l->buf) - 2)
        l->buf[l->len++] = *s++;
}

static void put_hex(struct line *l, uint64_t v)
{
    char digits[19];
    int n = 0;
    do {
        digits[n++] = "0123456789abcdef"[v & 0xf];
        v >>= 4;
    } while (v && n < 16);
    put_str(l, "0x");
    while (n > 0 && l->len < sizeof(l->buf) - 2)
        l->buf[l->len++] = digits[--n];
}

static void put_dec(struct line *l, unsigned v)
{
    char digits[12];
    int n = 0;
    do {
        digits[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    while (n > 0 && l->len < sizeof(l->buf) - 2)
        l->buf[l->len++] = digits[--n];
}

/*
 * The filter trapped a call: one line that names it and its first arguments (for ioctl, the
 * request), then the process ends, as it would have been killed, but with the reason said.
 */
static void on_forbidden_call(int sig, siginfo_t *info, void *uctx)
{
    const ucontext_t *uc = uctx;
    const greg_t *r = uc->uc_mcontext.gregs;
    struct line l = { .len = 0 };
    int nr = info->si_syscall;
    (void)sig;

    put_str(&l, "godwit: error: seccomp: the ");
    put_str(&l, thread_kind);
    put_str(&l, " thread made a system call its filter forbids: ");
    if (info->si_arch == native_arch && nr >= 0 && nr < SYSCALL_NAMES && syscall_names[nr])
        put_str(&l, syscall_names[nr]);
    else
        put_str(&l, "unknown");
    put_str(&l, " (");
    put_dec(&l, (unsigned)nr);
    put_str(&l, ", args ");
    put_hex(&l, (uint64_t)r[REG_RDI]);
    put_str(&l, ", ");
    put_hex(&l, (uint64_t)r[REG_RSI]);
    put_str(&l, ", ");
    put_hex(&l, (uint64_t)r[REG_RDX]);
    put_str(&l, "); ending the process");
    put_str(&l, stderr_is_tty ? "\r\n" : "\n");
    if (l.buf[l.len - 1] != '\n')
        l.buf[l.len++] = '\n';
    ssize_t ignored = write(STDERR_FILENO, l.buf, l.len);
    (void)ignored;
    _exit(SANDBOX_SECCOMP_EXIT_STATUS);
}

static int install_handler(void)
{
    struct sigaction sa = { .sa_sigaction = on_forbidden_call, .sa_flags = SA_SIGINFO };
    sigemptyset(&sa.sa_mask);
    return sigaction(SIGSYS, &sa, NULL) < 0 ? -errno : 0;
}

static scmp_filter_ctx build_filter(enum sandbox_thread thread, enum godwit_seccomp mode,
                                    int *err)
{
    uint32_t deny = mode == GODWIT_SECCOMP_LOG ? SCMP_ACT_LOG : SCMP_ACT_TRAP;
    scmp_filter_ctx ctx = seccomp_init(deny);
    if (!ctx) {
        *err = -ENOMEM;
        return NULL;
    }
    /* Another architecture's calls (int 0x80, x32) are just as forbidden, and named too. */
    *err = seccomp_attr_set(ctx, SCMP_FLTATR_ACT_BADARCH, deny);
    if (*err == 0)
        *err = seccomp_rules_add(ctx, thread);
    if (*err < 0) {
        seccomp_release(ctx);
        return NULL;
    }
    return ctx;
}

/*
 * Filters compiled ahead (sandbox_seccomp_prepare), by thread kind and mode: libseccomp takes
 * about 0.4 ms of CPU to build one, and a vCPU thread that built its own at its start did so
 * while a restored or migrated guest waited for it. Written once each, under the lock, before
 * any thread that loads it starts.
 */
#define SANDBOX_THREAD_KINDS (SANDBOX_THREAD_CLI + 1)
#define SECCOMP_FILTER_MODES (GODWIT_SECCOMP_LOG + 1)
static pthread_mutex_t compiled_lock = PTHREAD_MUTEX_INITIALIZER;
static struct sock_fprog compiled[SANDBOX_THREAD_KINDS][SECCOMP_FILTER_MODES];

/* The filter as the kernel takes it, out of libseccomp through a memory file (its 2.5 can
 * export only to a descriptor). 0 or -errno. */
static int export_filter(scmp_filter_ctx ctx, struct sock_fprog *out)
{
    int fd = memfd_create("godwit-seccomp", MFD_CLOEXEC);
    if (fd < 0)
        return -errno;
    struct stat st;
    struct sock_filter *insns = NULL;
    int ret = seccomp_export_bpf(ctx, fd);
    if (ret == 0 && fstat(fd, &st) < 0)
        ret = -errno;
    if (ret == 0 && (st.st_size <= 0 || st.st_size % sizeof(*insns) ||
                     st.st_size / sizeof(*insns) > BPF_MAXINSNS))
        ret = -E2BIG;
    if (ret == 0 && !(insns = malloc((size_t)st.st_size)))
        ret = -ENOMEM;
    if (ret == 0 && pread(fd, insns, (size_t)st.st_size, 0) != st.st_size)
        ret = -EIO;
    close(fd);
    if (ret < 0) {
        free(insns);
        return ret;
    }
    *out = (struct sock_fprog){ .len = (unsigned short)(st.st_size / sizeof(*insns)),
                                .filter = insns };
    return 0;
}

/* The cache's slot for a thread kind and a filtering mode; NULL for OFF (no filter). */
static struct sock_fprog *compiled_slot(enum sandbox_thread thread, enum godwit_seccomp mode)
{
    if ((unsigned)thread >= SANDBOX_THREAD_KINDS || (unsigned)mode >= SECCOMP_FILTER_MODES)
        return NULL;
    return &compiled[thread][mode];
}

int sandbox_seccomp_prepare(enum sandbox_thread thread, enum godwit_seccomp mode)
{
    struct sock_fprog *prog = compiled_slot(thread, mode);
    if (!prog)
        return 0;
    int ret = 0;
    pthread_mutex_lock(&compiled_lock);
    if (!prog->filter) {
        scmp_filter_ctx ctx = build_filter(thread, mode, &ret);
        if (ret == 0)
            ret = export_filter(ctx, prog);
        seccomp_release(ctx);
    }
    pthread_mutex_unlock(&compiled_lock);
    if (ret < 0) /* not fatal: the thread builds its own at its start, as without this */
        log_warn("seccomp: cannot compile the %s thread's filter ahead: %s",
                 sandbox_thread_name(thread), strerror(-ret));
    return ret;
}

/* The filter compiled ahead, if it was: no_new_privs (which a filter needs) and the program,
 * as seccomp_load would. 1 when loaded, 0 when none was compiled, -errno when refused. */
static int load_compiled(enum sandbox_thread thread, enum godwit_seccomp mode)
{
    struct sock_fprog *slot = compiled_slot(thread, mode);
    if (!slot)
        return 0;
    pthread_mutex_lock(&compiled_lock);
    struct sock_fprog prog = *slot;
    pthread_mutex_unlock(&compiled_lock);
    if (!prog.filter)
        return 0;
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 ||
        syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog) < 0)
        return -errno;
    return 1;
}

int sandbox_seccomp_install(enum sandbox_thread thread, enum godwit_seccomp mode)
{
    if (mode == GODWIT_SECCOMP_OFF)
        return 0;
#ifdef SANITIZER_BUILD
    /* LeakSanitizer's check at exit runs on this thread, from a helper it clones with all
     * signals blocked and that ptraces it: under a filter it hangs the process. */
    if (thread == SANDBOX_THREAD_CLI)
        return 0;
#endif
    pthread_once(&names_once, lookup_names);
    const char *step = "installing the SIGSYS handler";
    scmp_filter_ctx ctx = NULL;
    int ret = install_handler();
    if (ret == 0) {
        step = "loading it";
        thread_kind = sandbox_thread_name(thread);
        ret = load_compiled(thread, mode);
    }
    if (ret == 0) { /* none compiled ahead */
        step = "building it";
        ctx = build_filter(thread, mode, &ret);
        if (ret == 0) {
            step = "loading it";
            ret = seccomp_load(ctx);
        }
    }
    seccomp_release(ctx);
    if (ret < 0)
        log_error("seccomp: the %s thread's filter: %s failed: %s", sandbox_thread_name(thread),
                  step, strerror(-ret));
    return ret < 0 ? ret : 0;
}

bool sandbox_seccomp_available(void)
{
    /* PR_GET_SECCOMP fails without CONFIG_SECCOMP; API level 1 and up take filters. */
    return prctl(PR_GET_SECCOMP, 0, 0, 0, 0) >= 0 && seccomp_api_get() >= 1;
}
