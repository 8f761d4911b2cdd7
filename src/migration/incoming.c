/* incoming.c: the destination of a live migration: RAM and state from the stream, then ACK. */
#define _GNU_SOURCE
#include "migration/incoming.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "migration/channel.h"
#include "migration/state.h"
#include "migration/vm_state.h"
#include "vcpu/vcpu.h"
#include "vm/vm.h"

/* The host address of a run of pages, by their index in the memory file, when the whole run
 * lies inside one region; NULL otherwise. */
static uint8_t *run_host(const struct guest_memory *gm, uint64_t first, uint32_t count)
{
    for (unsigned i = 0; i < gm->nr_regions; i++) {
        const struct gm_region *r = &gm->regions[i];
        uint64_t start = r->file_offset / MIG_PAGE_SIZE, pages = r->size / MIG_PAGE_SIZE;
        if (first >= start && first - start < pages && count <= pages - (first - start))
            return r->host + (first - start) * MIG_PAGE_SIZE;
    }
    return NULL;
}

static int receive_pages(struct vm *vm, int fd, uint64_t len)
{
    uint8_t prefix[12];
    if (len < sizeof(prefix))
        goto bad;
    int ret = mig_recv_all(fd, prefix, sizeof(prefix));
    if (ret < 0)
        return ret;
    uint64_t first = le_get(prefix, 8);
    uint32_t count = (uint32_t)le_get(prefix + 8, 4);
    if (!count || count > MIG_MAX_RUN_PAGES ||
        len != sizeof(prefix) + (uint64_t)count * MIG_PAGE_SIZE)
        goto bad;
    uint8_t *host = run_host(&vm->mem, first, count);
    if (!host) {
        log_error("migration: a run of %u pages at page %llu lies outside this VM's RAM", count,
                  (unsigned long long)first);
        return -EPROTO;
    }
    return mig_recv_all(fd, host, (size_t)count * MIG_PAGE_SIZE);
bad:
    log_error("migration: a page run whose length (%llu bytes) does not match its page count",
              (unsigned long long)len);
    return -EPROTO;
}

static int receive_state(struct vm *vm, int fd, uint64_t len)
{
    struct state_reader r;
    uint8_t *buf = malloc(len ? len : 1);
    if (!buf)
        return -ENOMEM;
    int ret = mig_recv_all(fd, buf, len);
    if (ret == 0 && (ret = state_reader_open(&r, buf, len)) == 0) {
        ret = vm_state_load(vm, &r);
        state_reader_close(&r);
    }
    free(buf);
    return ret;
}

static int receive_error(int fd, uint64_t len)
{
    char why[1025];
    int ret = mig_recv_all(fd, why, len);
    why[ret == 0 ? len : 0] = '\0';
    log_error("migration: the source gave up: %s", why);
    return -ECONNABORTED;
}

/*
 * The guest's CPU model against what this host gives a vCPU: refused (with why) before any
 * memory comes when the guest would miss a feature it was given; READY otherwise.
 */
static int receive_cpu(struct vm *vm, int fd, uint64_t len, char *why, size_t why_len)
{
    struct kvm_cpuid2 *guest = NULL, *here = NULL;
    int ret = mig_recv_cpu(fd, len, &guest);
    if (ret < 0)
        return ret;
    here = cpuid_build(vm->supported_cpuid, 0, vm->nr_vcpus);
    ret = here ? vcpu_cpu_model_check(guest, here, why, why_len) : -ENOMEM;
    free(guest);
    free(here);
    if (ret == -EINVAL)
        log_error("migration: refused: %s", why);
    return ret < 0 ? ret : mig_send(fd, MIG_READY, NULL, 0);
}

/*
 * After ACK, the source's GO: the commit point (channel.h). Until it comes the guest must not
 * run here, since the source resumes it when our ACK does not reach it. 0: run it.
 */
static int wait_for_go(int fd)
{
    struct pollfd p = { .fd = fd, .events = POLLIN };
    struct mig_header h;
    int n = poll(&p, 1, MIG_GO_TIMEOUT_MS);
    int ret = n > 0 ? mig_recv_header(fd, &h) : n == 0 ? -ETIMEDOUT : -errno;
    if (ret == 0 && h.type == MIG_GO && h.len == 0) {
        if (mig_send(fd, MIG_RUNNING, NULL, 0) < 0)
            log_warn("migration: the source cannot be told that the guest runs here: it keeps "
                     "the guest paused there until someone stops it");
        return 0;
    }
    if (ret == 0 && h.type == MIG_ERROR)
        return receive_error(fd, h.len);
    log_error("migration: no GO from the source after the state (%s): the guest is not started "
              "here, the source runs it on", ret == 0 ? mig_type_name(h.type)
                                                     : ret == -ETIMEDOUT ? "timed out"
                                                                         : strerror(-ret));
    return ret < 0 ? ret : -EPROTO;
}

/* Tells the source why this side gives up, if it still listens. */
static void send_error(int fd, int err, const char *why)
{
    char line[256];
    if (why[0])
        snprintf(line, sizeof(line), "the destination refused: %s", why);
    else
        snprintf(line, sizeof(line), "the destination failed: %s", strerror(-err));
    mig_send(fd, MIG_ERROR, line, strlen(line));
}

int migration_receive(struct vm *vm, int fd, bool handed_over)
{
    bool have_cpu = false, have_state = false;
    char why[200] = "";
    struct mig_header h;
    int ret;
    while ((ret = mig_recv_header(fd, &h)) == 0) {
        if (h.type == MIG_CPU && !have_cpu) {
            ret = receive_cpu(vm, fd, h.len, why, sizeof(why));
            have_cpu = ret == 0;
        } else if (!have_cpu && h.type != MIG_ERROR) {
            log_error("migration: a %s message before the CPU model", mig_type_name(h.type));
            ret = -EPROTO;
        } else if (h.type == MIG_PAGES && handed_over) {
            log_error("migration: a page run in a local handover, whose RAM is shared");
            ret = -EPROTO;
        } else if (h.type == MIG_PAGES && !have_state) {
            ret = receive_pages(vm, fd, h.len);
        } else if (h.type == MIG_STATE && !have_state) {
            ret = receive_state(vm, fd, h.len);
            have_state = ret == 0;
        } else if (h.type == MIG_DONE && have_state) {
            ret = mig_send(fd, MIG_ACK, NULL, 0);
            if (ret < 0) {
                log_error("migration: cannot acknowledge: %s", strerror(-ret));
                return ret;
            }
            return wait_for_go(fd);
        } else if (h.type == MIG_ERROR) {
            return receive_error(fd, h.len);
        } else {
            log_error("migration: unexpected %s message", mig_type_name(h.type));
            ret = -EPROTO;
        }
        if (ret < 0)
            break;
    }
    if (ret == -ECONNRESET || ret == -ETIMEDOUT)
        log_error("migration: the source %s before the end",
                  ret == -ECONNRESET ? "closed the stream" : "went silent");
    else if (ret != -EPROTO && ret != -EINVAL)
        log_error("migration: receiving failed: %s", strerror(-ret));
    send_error(fd, ret, why);
    return ret;
}
