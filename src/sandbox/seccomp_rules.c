/* seccomp_rules.c: which system calls each kind of godwit thread may make, and with what. */
#define _GNU_SOURCE
#include "sandbox/seccomp_rules.h"

#include <errno.h>
#include <linux/if_tun.h>
#include <linux/kvm.h>
#include <sched.h>
#include <stddef.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

/*
 * Every thread: memory (malloc, thread stacks), locks, time, logging (a log line is fprintf,
 * plus isatty(2) and fstat(2)), signals' return, and the end of a thread or of the process.
 */
static const int common_calls[] = {
    SCMP_SYS(read),         SCMP_SYS(write),           SCMP_SYS(readv),
    SCMP_SYS(writev),       SCMP_SYS(pread64),         SCMP_SYS(pwrite64),
    SCMP_SYS(close),        SCMP_SYS(lseek),           SCMP_SYS(futex),
    SCMP_SYS(brk),          SCMP_SYS(munmap),          SCMP_SYS(madvise),
    SCMP_SYS(mremap),       SCMP_SYS(rt_sigreturn),    SCMP_SYS(rt_sigprocmask),
    SCMP_SYS(restart_syscall), SCMP_SYS(exit),         SCMP_SYS(exit_group),
    SCMP_SYS(clock_gettime), SCMP_SYS(clock_getres),   SCMP_SYS(gettimeofday),
    SCMP_SYS(time),         SCMP_SYS(clock_nanosleep), SCMP_SYS(nanosleep),
    SCMP_SYS(getpid),       SCMP_SYS(gettid),          SCMP_SYS(getrandom),
    SCMP_SYS(sched_yield),  SCMP_SYS(sched_getaffinity), /* malloc counts CPUs for arenas */
    SCMP_SYS(sysinfo),      /* qsort() asks for the RAM size */
    SCMP_SYS(newfstatat),   SCMP_SYS(fstat),           SCMP_SYS(poll),
    SCMP_SYS(ppoll),
};

/* Sanitizer builds (tests): the runtime's own calls, its reports and LeakSanitizer's check at
 * exit, which stops the threads from a helper it clones and ptraces. Never in a release. */
static const int sanitizer_calls[] = {
    SCMP_SYS(sigaltstack),  SCMP_SYS(prctl),     SCMP_SYS(getrlimit),  SCMP_SYS(prlimit64),
    SCMP_SYS(setrlimit),    SCMP_SYS(readlink),  SCMP_SYS(readlinkat), SCMP_SYS(open),
    SCMP_SYS(openat),       SCMP_SYS(getdents64), SCMP_SYS(uname),     SCMP_SYS(rt_sigaction),
    SCMP_SYS(mincore),      SCMP_SYS(getppid),   SCMP_SYS(clone),      SCMP_SYS(wait4),
    SCMP_SYS(ptrace),       SCMP_SYS(kill),      SCMP_SYS(tgkill),     SCMP_SYS(pipe2),
    SCMP_SYS(dup2),         SCMP_SYS(dup3),      SCMP_SYS(execve),     SCMP_SYS(process_vm_readv),
    SCMP_SYS(mmap),         SCMP_SYS(mprotect),  SCMP_SYS(access),     SCMP_SYS(getuid),
    SCMP_SYS(geteuid),      SCMP_SYS(stat),      SCMP_SYS(lstat),      SCMP_SYS(statx),
    SCMP_SYS(fcntl),        SCMP_SYS(setsid),    SCMP_SYS(close_range),
};

/* The main loop builds the VM again at each guest reboot, so it keeps what building takes:
 * files (kernel, disks, taps, /dev/kvm, snapshots), KVM's ioctls, guest RAM's file, eventfds,
 * io_uring, sockets (API, consoles, migration), and threads (vCPUs, migration). */
static const int main_loop_calls[] = {
    SCMP_SYS(openat),       SCMP_SYS(open),        SCMP_SYS(mkdir),        SCMP_SYS(mkdirat),
    SCMP_SYS(unlink),       SCMP_SYS(unlinkat),    SCMP_SYS(rename),       SCMP_SYS(renameat),
    SCMP_SYS(renameat2),    SCMP_SYS(fsync),       SCMP_SYS(fdatasync),    SCMP_SYS(ftruncate),
    SCMP_SYS(fallocate),    SCMP_SYS(flock),       SCMP_SYS(fcntl),        SCMP_SYS(statx),
    SCMP_SYS(stat),         SCMP_SYS(lstat),       SCMP_SYS(readlink),     SCMP_SYS(readlinkat),
    SCMP_SYS(getdents64),   SCMP_SYS(access),      SCMP_SYS(faccessat),    SCMP_SYS(faccessat2),
    SCMP_SYS(chmod),        SCMP_SYS(fchmod),      SCMP_SYS(fchmodat),     SCMP_SYS(umask),
    SCMP_SYS(fadvise64),    SCMP_SYS(ioctl),       SCMP_SYS(memfd_create), SCMP_SYS(eventfd2),
    SCMP_SYS(timerfd_create), SCMP_SYS(timerfd_settime), SCMP_SYS(signalfd4),
    SCMP_SYS(io_uring_setup), SCMP_SYS(io_uring_enter), SCMP_SYS(io_uring_register),
    SCMP_SYS(bind),         SCMP_SYS(listen),      SCMP_SYS(accept),       SCMP_SYS(accept4),
    SCMP_SYS(connect),      SCMP_SYS(setsockopt),  SCMP_SYS(getsockopt),   SCMP_SYS(getsockname),
    SCMP_SYS(getpeername),  SCMP_SYS(sendto),      SCMP_SYS(sendmsg),      SCMP_SYS(recvfrom),
    SCMP_SYS(recvmsg),      SCMP_SYS(shutdown),    SCMP_SYS(pipe2),        SCMP_SYS(dup),
    SCMP_SYS(dup3),         SCMP_SYS(rt_sigaction), SCMP_SYS(sigaltstack),
    /* name resolution for tcp: migration URIs loads glibc's NSS modules (dlopen) */
    SCMP_SYS(mmap),         SCMP_SYS(mprotect),
    /* a new thread's first calls run under its creator's filter */
    SCMP_SYS(set_robust_list), SCMP_SYS(rseq),     SCMP_SYS(prctl),        SCMP_SYS(seccomp),
    SCMP_SYS(membarrier),   SCMP_SYS(getuid),      SCMP_SYS(geteuid),      SCMP_SYS(getgid),
    SCMP_SYS(getegid),      SCMP_SYS(uname),       SCMP_SYS(getrlimit),    SCMP_SYS(prlimit64),
    /* the vCPUs' own calls pass this filter too: it is their creator's */
    SCMP_SYS(timer_create), SCMP_SYS(timer_settime), SCMP_SYS(timer_delete),
};

/* The migration thread and its senders: the stream (opened by the main loop), KVM's dirty
 * log, RAM's holes, and the connection's round-trip time (getsockopt TCP_INFO). */
static const int migration_calls[] = {
    SCMP_SYS(sendto),  SCMP_SYS(sendmsg), SCMP_SYS(recvfrom), SCMP_SYS(recvmsg),
    SCMP_SYS(shutdown), SCMP_SYS(setsockopt), SCMP_SYS(getsockopt), SCMP_SYS(membarrier),
};

/* The vCPU thread: a device write may answer through a socket (an attached console); a
 * migration's auto-converge ends each of its slices in the guest with a timer of its own. */
static const int vcpu_calls[] = {
    SCMP_SYS(sendto), SCMP_SYS(sendmsg),
    SCMP_SYS(timer_create), SCMP_SYS(timer_settime), SCMP_SYS(timer_delete),
};

/* `godwit run`'s thread once the VM runs: signals, systemd's notify socket, the end. */
static const int cli_calls[] = {
    SCMP_SYS(rt_sigtimedwait), SCMP_SYS(connect), SCMP_SYS(sendto), SCMP_SYS(sendmsg),
    SCMP_SYS(unlink), SCMP_SYS(unlinkat), SCMP_SYS(io_uring_enter), SCMP_SYS(rt_sigaction),
};

/* The ioctls each thread issues; anything else (another KVM call, a TUN call) is refused. */
static const unsigned long vcpu_ioctls[] = {
    KVM_RUN,          KVM_GET_REGS,    KVM_GET_SREGS,   /* the registers, when a guest crashes */
    KVM_IRQ_LINE,     KVM_IRQ_LINE_STATUS, KVM_SIGNAL_MSI, /* legacy devices' interrupts */
    KVM_SET_GSI_ROUTING, KVM_IOEVENTFD, /* the guest programs MSI-X and BARs */
    TUNSETOFFLOAD,    TUNSETQUEUE,     /* a virtio-net driver's DRIVER_OK sets the tap up */
    TCGETS,           TIOCGWINSZ,      /* isatty() of the log and console */
};
static const unsigned long migration_ioctls[] = {
    KVM_GET_DIRTY_LOG, KVM_CLEAR_DIRTY_LOG, KVM_SET_USER_MEMORY_REGION, KVM_ENABLE_CAP,
    KVM_CHECK_EXTENSION, TCGETS,
};
static const unsigned long cli_ioctls[] = { TCGETS, TCSETS, TCSETSW, TCSETSF, TIOCGWINSZ };

static int allow_calls(scmp_filter_ctx ctx, const int *calls, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        int ret = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, calls[i], 0);
        if (ret < 0)
            return ret;
    }
    return 0;
}

/* ioctl(fd, request): the request is checked, the fd cannot be (it is only a number). */
static int allow_ioctls(scmp_filter_ctx ctx, const unsigned long *requests, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        int ret = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(ioctl), 1,
                                   SCMP_A1(SCMP_CMP_EQ, (scmp_datum_t)(uint32_t)requests[i]));
        if (ret < 0)
            return ret;
    }
    return 0;
}

/* Memory that may be written or read, never executed: no code can be mapped in. */
static int allow_data_mappings(scmp_filter_ctx ctx)
{
    int ret = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(mmap), 1,
                               SCMP_A2(SCMP_CMP_MASKED_EQ, PROT_EXEC, 0));
    if (ret == 0)
        ret = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(mprotect), 1,
                               SCMP_A2(SCMP_CMP_MASKED_EQ, PROT_EXEC, 0));
    return ret;
}

/* Signals only to this process's own threads (a vCPU is kicked out of KVM_RUN by one). */
static int allow_own_tgkill(scmp_filter_ctx ctx)
{
    return seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(tgkill), 1,
                            SCMP_A0(SCMP_CMP_EQ, (scmp_datum_t)getpid()));
}

/* Threads only: a clone that would make a new process (fork) is refused. glibc tries clone3
 * first, whose flags sit in memory a filter cannot read: ENOSYS sends it to clone. */
static int allow_threads(scmp_filter_ctx ctx)
{
    const scmp_datum_t thread = CLONE_VM | CLONE_THREAD | CLONE_SIGHAND;
    int ret = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(clone), 1,
                               SCMP_A0(SCMP_CMP_MASKED_EQ, thread, thread));
    if (ret == 0)
        ret = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(ENOSYS), SCMP_SYS(clone3), 0);
    return ret;
}

/* socket() for these families only (and socketpair() for UNIX ones). */
static int allow_sockets(scmp_filter_ctx ctx, const int *families, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        int ret = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(socket), 1,
                                   SCMP_A0(SCMP_CMP_EQ, (scmp_datum_t)families[i]));
        if (ret < 0)
            return ret;
    }
    return seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(socketpair), 1,
                            SCMP_A0(SCMP_CMP_EQ, AF_UNIX));
}

static int add_thread_rules(scmp_filter_ctx ctx, enum sandbox_thread thread)
{
    static const int main_families[] = { AF_UNIX, AF_INET, AF_INET6 };
    static const int cli_families[] = { AF_UNIX };
    int ret;
    switch (thread) {
    case SANDBOX_THREAD_MAIN_LOOP:
        if ((ret = allow_calls(ctx, main_loop_calls, COUNT(main_loop_calls))) < 0 ||
            (ret = allow_threads(ctx)) < 0)
            return ret;
        return allow_sockets(ctx, main_families, COUNT(main_families));
    case SANDBOX_THREAD_VCPU:
        if ((ret = allow_calls(ctx, vcpu_calls, COUNT(vcpu_calls))) < 0)
            return ret;
        return allow_ioctls(ctx, vcpu_ioctls, COUNT(vcpu_ioctls));
    case SANDBOX_THREAD_MIGRATION:
        if ((ret = allow_calls(ctx, migration_calls, COUNT(migration_calls))) < 0)
            return ret;
        return allow_ioctls(ctx, migration_ioctls, COUNT(migration_ioctls));
    case SANDBOX_THREAD_CLI:
        if ((ret = allow_calls(ctx, cli_calls, COUNT(cli_calls))) < 0 ||
            (ret = allow_ioctls(ctx, cli_ioctls, COUNT(cli_ioctls))) < 0)
            return ret;
        return allow_sockets(ctx, cli_families, COUNT(cli_families));
    }
    return -EINVAL;
}

int seccomp_rules_add(scmp_filter_ctx ctx, enum sandbox_thread thread)
{
    int ret = allow_calls(ctx, common_calls, COUNT(common_calls));
    if (ret == 0 && thread != SANDBOX_THREAD_MAIN_LOOP)
        ret = allow_data_mappings(ctx);
    if (ret == 0)
        ret = allow_own_tgkill(ctx);
#ifdef SANITIZER_BUILD
    if (ret == 0)
        ret = allow_calls(ctx, sanitizer_calls, COUNT(sanitizer_calls));
#else
    (void)sanitizer_calls;
#endif
    return ret == 0 ? add_thread_rules(ctx, thread) : ret;
}
