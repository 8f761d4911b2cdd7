/*
 * kvm_state.c: the VM-wide KVM state (PIT, PICs, IOAPIC, kvmclock) in the VM state stream.
 *
 * Section layouts, version 1. Integers are little-endian; a "blob" is a u32 byte count and then
 * that many bytes of the KVM structure as the x86-64 ABI lays it out:
 *
 *   "kvm-pit":     blob struct kvm_pit_state2                       KVM_GET_PIT2
 *   "kvm-irqchip": three times { u32 chip_id, blob chip state }     KVM_GET_IRQCHIP
 *                  PIC master (struct kvm_pic_state), PIC slave (the same), IOAPIC
 *                  (struct kvm_ioapic_state), in that order
 *   "kvm-clock":   u64 guest clock (kvmclock, ns), u64 host CLOCK_REALTIME (ns) at that clock
 *
 * The host time lets a restore advance the guest's clock by the time the snapshot spent on
 * disk, as the guest's wall clock (boot time + kvmclock) then stays right.
 */
#define _GNU_SOURCE
#include "vm/kvm_state.h"

#include <errno.h>
#include <linux/kvm.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>

#include "boot/layout.h"
#include "log.h"
#include "migration/state.h"
#include "vm/vm.h"

#define SECTION_PIT "kvm-pit"
#define SECTION_IRQCHIP "kvm-irqchip"
#define SECTION_CLOCK "kvm-clock"

#define NS_PER_SEC 1000000000ull
/* Beyond this, the saved host time is more likely wrong (a clock reset, another host's clock)
 * than the snapshot this old. */
#define MAX_TIME_ON_DISK_NS (10ull * 366 * 24 * 3600 * NS_PER_SEC)

#define PIT_MODE_UNPROGRAMMED 0xff /* KVM's value from reset until the guest sets a mode */
#define PIT_MAX_COUNT 0x10000      /* a count of 0 means 65536, which KVM stores as such */
#define PIT_KNOWN_FLAGS (KVM_PIT_FLAGS_HPET_LEGACY | KVM_PIT_FLAGS_SPEAKER_DATA_ON)

/* Everything the sections hold, read and checked before any of it reaches KVM. */
struct vm_kvm_snapshot {
    struct kvm_pit_state2 pit;
    struct kvm_irqchip chips[KVM_NR_IRQCHIPS];
    uint64_t clock, realtime;
};

/* One VM ioctl; a failure is logged with the ioctl's name. */
static int vm_ioctl(const struct vm *vm, unsigned long request, void *arg, const char *name)
{
    if (ioctl(vm->vm_fd, request, arg) >= 0)
        return 0;
    int err = errno;
    log_error("vm: %s failed: %s", name, strerror(err));
    return -err;
}
#define VM_IOCTL(vm, request, arg) vm_ioctl(vm, request, arg, #request)

static uint64_t realtime_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * NS_PER_SEC + (uint64_t)ts.tv_nsec;
}

static size_t chip_size(uint32_t chip_id)
{
    return chip_id == KVM_IRQCHIP_IOAPIC ? sizeof(struct kvm_ioapic_state)
                                         : sizeof(struct kvm_pic_state);
}

/* ---- save ---- */

/*
 * The guest clock with the host time it belongs to. A paused VM's clock stands at the value
 * vm_pause() took (KVM's own ran on, and vm_resume() sets it back), so it goes with the host
 * time now: the guest saw no time pass since the pause. A running one's comes from KVM, with
 * KVM's host time of the same instant when it gives one.
 */
static int read_guest_clock(struct vm *vm, uint64_t *clock, uint64_t *realtime)
{
    if (vm_is_paused(vm)) {
        *clock = vm->clock_at_pause->clock;
        *realtime = realtime_ns();
        return 0;
    }
    struct kvm_clock_data data;
    memset(&data, 0, sizeof(data));
    int ret = VM_IOCTL(vm, KVM_GET_CLOCK, &data);
    if (ret < 0)
        return ret;
    *clock = data.clock;
    *realtime = (data.flags & KVM_CLOCK_REALTIME) ? data.realtime : realtime_ns();
    return 0;
}

static int snapshot_take(struct vm *vm, struct vm_kvm_snapshot *s)
{
    int ret = VM_IOCTL(vm, KVM_GET_PIT2, &s->pit);
    for (uint32_t id = 0; id < KVM_NR_IRQCHIPS && ret == 0; id++) {
        s->chips[id].chip_id = id;
        ret = VM_IOCTL(vm, KVM_GET_IRQCHIP, &s->chips[id]);
    }
    /* The clock last, as close to the end of the save as this state allows. */
    return ret < 0 ? ret : read_guest_clock(vm, &s->clock, &s->realtime);
}

static void snapshot_write(struct state_writer *w, const struct vm_kvm_snapshot *s)
{
    sw_begin(w, SECTION_PIT, VM_KVM_STATE_VERSION);
    sw_blob(w, &s->pit, sizeof(s->pit));
    sw_end(w);
    sw_begin(w, SECTION_IRQCHIP, VM_KVM_STATE_VERSION);
    for (uint32_t id = 0; id < KVM_NR_IRQCHIPS; id++) {
        sw_u32(w, id);
        sw_blob(w, &s->chips[id].chip, chip_size(id));
    }
    sw_end(w);
    sw_begin(w, SECTION_CLOCK, VM_KVM_STATE_VERSION);
    sw_u64(w, s->clock);
    sw_u64(w, s->realtime);
    sw_end(w);
}

int vm_kvm_state_save(struct vm *vm, struct state_writer *w)
{
    struct vm_kvm_snapshot s;
    memset(&s, 0, sizeof(s));
    /* Everything is read before a section opens: a failed ioctl leaves no half section. */
    int ret = snapshot_take(vm, &s);
    if (ret < 0)
        return ret;
    snapshot_write(w, &s);
    return sw_error(w);
}

/* ---- load: the sections alone ---- */

static int open_section(struct state_reader *r, const char *id, struct state_cursor *c)
{
    const struct state_section *s = state_reader_find(r, id);
    if (!s) {
        log_error("state: no section %s", id);
        return -ENOENT;
    }
    sc_init(c, s);
    if (s->version != VM_KVM_STATE_VERSION)
        return sc_reject(c, "version %u unknown", s->version);
    return 0;
}

/* Values a PIT channel can hold; KVM would take others and run its timer on them. */
static int check_pit_channel(const struct state_cursor *c, unsigned i,
                             const struct kvm_pit_channel_state *ch)
{
    if (ch->mode > 5 && ch->mode != PIT_MODE_UNPROGRAMMED)
        return sc_reject(c, "channel %u: mode %u, not 0 to 5", i, ch->mode);
    if (ch->count > PIT_MAX_COUNT)
        return sc_reject(c, "channel %u: count %u, above 65536", i, ch->count);
    /* Access modes: 0 never programmed, 1 LSB, 2 MSB, 3 LSB then MSB (4: its second byte). */
    if (ch->rw_mode > 3 || ch->count_latched > 3 || ch->read_state > 4 || ch->write_state > 4)
        return sc_reject(c, "channel %u: access state out of range", i);
    if (ch->bcd > 1 || ch->gate > 1 || ch->status_latched > 1)
        return sc_reject(c, "channel %u: a flag not 0 or 1", i);
    return 0;
}

static int read_pit(struct state_reader *r, struct kvm_pit_state2 *pit)
{
    struct state_cursor c;
    int ret;
    if ((ret = open_section(r, SECTION_PIT, &c)) < 0 ||
        (ret = sc_blob(&c, "PIT state", pit, sizeof(*pit))) < 0 || (ret = sc_finish(&c)) < 0)
        return ret;
    if (pit->flags & ~PIT_KNOWN_FLAGS)
        return sc_reject(&c, "flags 0x%x: unknown bits", pit->flags);
    for (unsigned i = 0; i < 3 && ret == 0; i++)
        ret = check_pit_channel(&c, i, &pit->channels[i]);
    /* count_load_time is the saving host's monotonic time; KVM_SET_PIT2 restarts the timer
     * from now, so it needs no check. */
    return ret;
}

/*
 * The PICs' registers and the IOAPIC's id and redirection table are guest values KVM takes
 * as they are. The IOAPIC's base address is not: KVM answers MMIO wherever it says.
 */
static int read_irqchips(struct state_reader *r, struct kvm_irqchip chips[KVM_NR_IRQCHIPS])
{
    struct state_cursor c;
    int ret = open_section(r, SECTION_IRQCHIP, &c);
    for (uint32_t id = 0; id < KVM_NR_IRQCHIPS && ret == 0; id++) {
        uint32_t got = sc_u32(&c);
        if (c.overrun)
            return sc_finish(&c);
        if (got != id)
            return sc_reject(&c, "irqchip %u where %u was due", got, id);
        chips[id].chip_id = id;
        ret = sc_blob(&c, id == KVM_IRQCHIP_IOAPIC ? "IOAPIC" : "PIC", &chips[id].chip,
                          chip_size(id));
    }
    if (ret < 0 || (ret = sc_finish(&c)) < 0)
        return ret;
    uint64_t base = chips[KVM_IRQCHIP_IOAPIC].chip.ioapic.base_address;
    if (base != LAYOUT_IOAPIC_ADDR)
        return sc_reject(&c, "IOAPIC at 0x%llx, not 0x%llx", (unsigned long long)base,
                         (unsigned long long)LAYOUT_IOAPIC_ADDR);
    return 0;
}

static int read_clock(struct state_reader *r, uint64_t *clock, uint64_t *realtime)
{
    struct state_cursor c;
    int ret = open_section(r, SECTION_CLOCK, &c);
    if (ret < 0)
        return ret;
    *clock = sc_u64(&c);
    *realtime = sc_u64(&c);
    /* Any clock value is a guest's; the host time is judged in vm_clock_after_restore(). */
    return sc_finish(&c);
}

/* ---- load: apply ---- */

static bool time_on_disk_believable(uint64_t saved_realtime, uint64_t now_realtime)
{
    return saved_realtime != 0 && now_realtime > saved_realtime &&
           now_realtime - saved_realtime < MAX_TIME_ON_DISK_NS;
}

uint64_t vm_clock_after_restore(uint64_t saved_clock, uint64_t saved_realtime,
                                uint64_t now_realtime)
{
    if (!time_on_disk_believable(saved_realtime, now_realtime))
        return saved_clock;
    uint64_t elapsed = now_realtime - saved_realtime;
    return saved_clock > UINT64_MAX - elapsed ? saved_clock : saved_clock + elapsed;
}

/*
 * Where KVM supports it (KVM_CAP_ADJUST_CLOCK reports KVM_CLOCK_REALTIME), the clock goes with
 * the host time it was computed for, and KVM adds the microseconds between that and its own
 * reading. vm_resume() sets the clock from clock_at_pause, so the value is kept there too.
 */
static int restore_clock(struct vm *vm, uint64_t saved_clock, uint64_t saved_realtime)
{
    uint64_t now = realtime_ns();
    if (!time_on_disk_believable(saved_realtime, now))
        log_warn("vm: the snapshot's host time (%llu ns) is not believable now (%llu ns): the "
                 "guest clock goes on from where it stopped", (unsigned long long)saved_realtime,
                 (unsigned long long)now);
    struct kvm_clock_data data;
    memset(&data, 0, sizeof(data));
    data.clock = vm_clock_after_restore(saved_clock, saved_realtime, now);
    int caps = kvm_check_extension(vm, KVM_CAP_ADJUST_CLOCK);
    if (caps > 0 && (caps & KVM_CLOCK_REALTIME)) {
        data.flags = KVM_CLOCK_REALTIME;
        data.realtime = now;
    }
    int ret = VM_IOCTL(vm, KVM_SET_CLOCK, &data);
    if (ret == 0 && vm->clock_at_pause) {
        memset(vm->clock_at_pause, 0, sizeof(*vm->clock_at_pause));
        vm->clock_at_pause->clock = data.clock;
    }
    return ret;
}

static int snapshot_apply(struct vm *vm, struct vm_kvm_snapshot *s)
{
    /* The PIT first (its timer runs on host time, apart from the rest), then the clock, the
     * irqchips last of the three: the IOAPIC delivers its pending lines as soon as it is set,
     * and they should meet vCPUs, LAPICs and clock all restored. */
    int ret = VM_IOCTL(vm, KVM_SET_PIT2, &s->pit);
    if (ret == 0)
        ret = restore_clock(vm, s->clock, s->realtime);
    for (uint32_t id = 0; id < KVM_NR_IRQCHIPS && ret == 0; id++)
        ret = VM_IOCTL(vm, KVM_SET_IRQCHIP, &s->chips[id]);
    return ret;
}

int vm_kvm_state_load(struct vm *vm, struct state_reader *r)
{
    struct vm_kvm_snapshot s;
    int ret;
    memset(&s, 0, sizeof(s));
    if ((ret = read_pit(r, &s.pit)) < 0 || (ret = read_irqchips(r, s.chips)) < 0 ||
        (ret = read_clock(r, &s.clock, &s.realtime)) < 0)
        return ret;
    return snapshot_apply(vm, &s);
}
