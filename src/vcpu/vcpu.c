/* vcpu.c: vCPU creation, initial state, and the thread that runs KVM_RUN. */
#define _GNU_SOURCE
#include "vcpu/vcpu.h"

#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include "log.h"
#include "sandbox/seccomp.h"
#include "vm/vm.h"

/* The signal that kicks a vCPU thread out of KVM_RUN; its handler does nothing. */
#define VCPU_KICK_SIGNAL SIGUSR1

#define APIC_LVT0 0x350
#define APIC_LVT1 0x360
#define APIC_MODE_EXTINT 0x7
#define APIC_MODE_NMI 0x4

static void vcpu_kick_handler(int sig)
{
    (void)sig;
}

static int vcpu_set_cpuid(struct vcpu *vcpu)
{
    struct kvm_cpuid2 *cpuid = cpuid_build(vcpu->vm->supported_cpuid, vcpu->index,
                                           vcpu->vm->nr_vcpus);
    if (!cpuid)
        return -ENOMEM;
    int ret = ioctl(vcpu->fd, KVM_SET_CPUID2, cpuid) < 0 ? -errno : 0;
    free(cpuid);
    return ret;
}

static void lapic_set_lvt_mode(struct kvm_lapic_state *lapic, unsigned reg, uint32_t mode)
{
    uint32_t value;
    memcpy(&value, &lapic->regs[reg], sizeof(value));
    value = (value & ~0x700u) | (mode << 8);
    memcpy(&lapic->regs[reg], &value, sizeof(value));
}

/* LINT0 delivers the PIC's ExtINT and LINT1 NMIs, as firmware leaves them on a PC. */
static int vcpu_set_lapic(struct vcpu *vcpu)
{
    struct kvm_lapic_state lapic;
    if (ioctl(vcpu->fd, KVM_GET_LAPIC, &lapic) < 0)
        return -errno;
    lapic_set_lvt_mode(&lapic, APIC_LVT0, APIC_MODE_EXTINT);
    lapic_set_lvt_mode(&lapic, APIC_LVT1, APIC_MODE_NMI);
    return ioctl(vcpu->fd, KVM_SET_LAPIC, &lapic) < 0 ? -errno : 0;
}

static int vcpu_set_fpu(struct vcpu *vcpu)
{
    struct kvm_fpu fpu = { .fcw = 0x37f, .mxcsr = 0x1f80 };
    return ioctl(vcpu->fd, KVM_SET_FPU, &fpu) < 0 ? -errno : 0;
}

int vcpu_init(struct vcpu *vcpu, struct vm *vm, unsigned index)
{
    int ret;
    const char *step;

    memset(vcpu, 0, sizeof(*vcpu));
    vcpu->vm = vm;
    vcpu->index = index;
    vcpu->fd = ioctl(vm->vm_fd, KVM_CREATE_VCPU, (unsigned long)index);
    if (vcpu->fd < 0) {
        ret = -errno;
        step = "KVM_CREATE_VCPU";
        goto fail;
    }
    vcpu->run = mmap(NULL, (size_t)vm->vcpu_mmap_size, PROT_READ | PROT_WRITE, MAP_SHARED,
                     vcpu->fd, 0);
    if (vcpu->run == MAP_FAILED) {
        vcpu->run = NULL;
        ret = -errno;
        step = "mapping kvm_run";
        goto fail;
    }
    step = "setting CPUID";
    if ((ret = vcpu_set_cpuid(vcpu)) < 0)
        goto fail;
    step = "setting MSRs";
    if ((ret = vcpu_set_boot_msrs(vcpu->fd)) < 0)
        goto fail;
    step = "setting the local APIC";
    if ((ret = vcpu_set_lapic(vcpu)) < 0)
        goto fail;
    step = "setting the FPU";
    if ((ret = vcpu_set_fpu(vcpu)) < 0)
        goto fail;
    return 0;
fail:
    log_error("vcpu %u: %s failed: %s", index, step, strerror(-ret));
    return ret;
}

int vcpu_set_boot_regs(struct vcpu *vcpu, const struct boot_entry *entry)
{
    struct kvm_sregs sregs;
    struct kvm_regs regs;

    if (ioctl(vcpu->fd, KVM_GET_SREGS, &sregs) < 0)
        goto fail;
    boot_fill_sregs(&sregs, entry->mode);
    if (ioctl(vcpu->fd, KVM_SET_SREGS, &sregs) < 0)
        goto fail;
    boot_fill_regs(&regs, entry);
    if (ioctl(vcpu->fd, KVM_SET_REGS, &regs) < 0)
        goto fail;
    return 0;
fail:
    log_error("vcpu %u: setting boot registers failed: %s", vcpu->index, strerror(errno));
    return -errno;
}

static bool vcpu_should_stop(const struct vcpu *vcpu)
{
    return vcpu->vm->exit_reason != VM_EXIT_NONE;
}

/*
 * After a pause the kick's immediate_exit must be cleared, or KVM_RUN would return at once
 * forever. Clear it first and check the flags after: a kick that lands in between sets it
 * again, so no stop or pause request can be lost.
 */
static void vcpu_rearm(struct vcpu *vcpu)
{
    __atomic_store_n(&vcpu->run->immediate_exit, 0, __ATOMIC_SEQ_CST);
}

/*
 * An I/O or MMIO exit is complete only once KVM_RUN is entered again: KVM then moves rip past
 * the instruction, or hands the guest the value read. Entering it with immediate_exit set does
 * that without running a guest instruction, so that a parked vCPU's state (saved by a snapshot
 * or a migration) is never in the middle of one: a restored guest would repeat the OUT.
 */
static void vcpu_complete_exit(struct vcpu *vcpu)
{
    __atomic_store_n(&vcpu->run->immediate_exit, 1, __ATOMIC_SEQ_CST);
    int ret = ioctl(vcpu->fd, KVM_RUN, 0);
    if (ret == 0)
        log_warn("vcpu %u: completing its last exit, KVM_RUN ran the guest", vcpu->index);
    else if (errno != EINTR && errno != EAGAIN)
        log_warn("vcpu %u: completing its last exit: %s", vcpu->index, strerror(errno));
}

/*
 * Auto-converge (vm_set_throttle): a throttled vCPU runs slices of VCPU_SLICE_NS in the guest,
 * each ended by a one-shot timer that sends this thread the kick signal, and sleeps after each
 * long enough that it runs (100 - pct)% of the time. Called after KVM_RUN returned EINTR; a
 * pause or stop ends the sleep (their kick interrupts it) and is served first.
 */
#define VCPU_SLICE_NS 10000000L
#ifndef sigev_notify_thread_id /* older glibc names it only as the union member */
#define sigev_notify_thread_id _sigev_un._tid
#endif

static bool vcpu_arm_slice(struct vcpu *vcpu)
{
    if (!vcpu->throttle_timer_made) {
        struct sigevent sev = { .sigev_notify = SIGEV_THREAD_ID, .sigev_signo = VCPU_KICK_SIGNAL };
        sev.sigev_notify_thread_id = gettid();
        if (timer_create(CLOCK_MONOTONIC, &sev, &vcpu->throttle_timer) < 0) {
            log_warn("vcpu %u: cannot throttle it (timer_create: %s)", vcpu->index,
                     strerror(errno));
            return false;
        }
        vcpu->throttle_timer_made = true;
    }
    struct itimerspec slice = { .it_value = { .tv_sec = 0, .tv_nsec = VCPU_SLICE_NS } };
    return timer_settime(vcpu->throttle_timer, 0, &slice, NULL) == 0;
}

static void vcpu_throttle(struct vcpu *vcpu)
{
    unsigned pct = atomic_load(&vcpu->vm->throttle_pct);
    if (pct == 0 || pct > VM_MAX_THROTTLE_PCT)
        return; /* a slice timer still armed fires once more, and is not armed again */
    long long sleep_ns = (long long)VCPU_SLICE_NS * pct / (100 - pct);
    struct timespec left = { .tv_sec = (time_t)(sleep_ns / 1000000000),
                             .tv_nsec = (long)(sleep_ns % 1000000000) };
    while (!vcpu->vm->pause_requested && !vcpu_should_stop(vcpu) &&
           clock_nanosleep(CLOCK_MONOTONIC, 0, &left, &left) == EINTR)
        ;
    vcpu_arm_slice(vcpu);
}

static void *vcpu_thread(void *arg)
{
    struct vcpu *vcpu = arg;
    sigset_t kick;

    sigemptyset(&kick);
    sigaddset(&kick, VCPU_KICK_SIGNAL);
    pthread_sigmask(SIG_UNBLOCK, &kick, NULL);
    if (sandbox_seccomp_install(SANDBOX_THREAD_VCPU, vcpu->vm->cfg->seccomp) < 0) {
        vm_request_exit(vcpu->vm, VM_EXIT_VMM_ERROR);
        return NULL;
    }
    vm_wait_released(vcpu->vm); /* a migration's destination: until the switch-over */

    while (!vcpu_should_stop(vcpu)) {
        if (vcpu->vm->pause_requested) {
            vcpu_complete_exit(vcpu);
            vm_park_vcpu(vcpu->vm);
            vcpu_rearm(vcpu);
            continue;
        }
        if (ioctl(vcpu->fd, KVM_RUN, 0) < 0) {
            int err = errno;
            if (err == EINTR)
                vcpu_throttle(vcpu);
            if (err == EINTR || err == EAGAIN)
                continue;
            log_error("vcpu %u: KVM_RUN failed: %s", vcpu->index, strerror(err));
            vm_request_exit(vcpu->vm, VM_EXIT_VMM_ERROR);
            break;
        }
        if (!vcpu_handle_exit(vcpu))
            break;
    }
    if (vcpu->throttle_timer_made)
        timer_delete(vcpu->throttle_timer);
    vcpu->throttle_timer_made = false;
    return NULL;
}

int vcpu_start(struct vcpu *vcpu)
{
    struct sigaction sa = { .sa_handler = vcpu_kick_handler };
    char name[16];

    /* No SA_RESTART: KVM_RUN must return EINTR when kicked. */
    sigemptyset(&sa.sa_mask);
    sigaction(VCPU_KICK_SIGNAL, &sa, NULL);
    int ret = pthread_create(&vcpu->thread, NULL, vcpu_thread, vcpu);
    if (ret != 0) {
        log_error("vcpu %u: cannot start its thread: %s", vcpu->index, strerror(ret));
        return -ret;
    }
    snprintf(name, sizeof(name), "vcpu%u", vcpu->index);
    pthread_setname_np(vcpu->thread, name);
    vcpu->thread_started = true;
    return 0;
}

void vcpu_kick(struct vcpu *vcpu)
{
    if (!vcpu->thread_started)
        return;
    /* immediate_exit covers the window between the stop check and entering KVM_RUN, where a
     * signal alone would be lost. */
    __atomic_store_n(&vcpu->run->immediate_exit, 1, __ATOMIC_SEQ_CST);
    pthread_kill(vcpu->thread, VCPU_KICK_SIGNAL);
}

void vcpu_nudge(struct vcpu *vcpu)
{
    /* No immediate_exit: a nudge that lands outside KVM_RUN is simply lost, and the vCPU
     * looks at its throttle at its next exit or nudge. */
    if (vcpu->thread_started)
        pthread_kill(vcpu->thread, VCPU_KICK_SIGNAL);
}

void vcpu_join(struct vcpu *vcpu)
{
    if (vcpu->thread_started)
        pthread_join(vcpu->thread, NULL);
    vcpu->thread_started = false;
}

void vcpu_destroy(struct vcpu *vcpu)
{
    if (vcpu->run)
        munmap(vcpu->run, (size_t)vcpu->vm->vcpu_mmap_size);
    if (vcpu->fd >= 0)
        close(vcpu->fd);
    vcpu->run = NULL;
    vcpu->fd = -1;
}
