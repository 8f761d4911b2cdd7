/* incoming.c: the destination of a live migration: RAM and state from the stream, then ACK. */
#define _GNU_SOURCE
#include "migration/incoming.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "log.h"
#include "migration/channel.h"
#include "migration/state.h"
#include "migration/vm_state.h"
#include "vcpu/vcpu.h"
#include "virtio/console.h"
#include "vm/virtio_devices.h"
#include "vm/vm.h"

/* The host address of a run of pages, by their index in the memory file, when the whole run
 * lies inside one region; NULL after one line otherwise. */
static uint8_t *run_host(const struct guest_memory *gm, uint64_t first, uint32_t count)
{
    for (unsigned i = 0; i < gm->nr_regions; i++) {
        const struct gm_region *r = &gm->regions[i];
        uint64_t start = r->file_offset / MIG_PAGE_SIZE, pages = r->size / MIG_PAGE_SIZE;
        if (first >= start && first - start < pages && count <= pages - (first - start))
            return r->host + (first - start) * MIG_PAGE_SIZE;
    }
    log_error("migration: a run of %u pages at page %llu lies outside this VM's RAM", count,
              (unsigned long long)first);
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
    return host ? mig_recv_all(fd, host, (size_t)count * MIG_PAGE_SIZE) : -EPROTO;
bad:
    log_error("migration: a page run whose length (%llu bytes) does not match its page count",
              (unsigned long long)len);
    return -EPROTO;
}

/* Several page runs (RUNS), read straight into guest RAM in one call where the socket has
 * them: each run is checked to lie inside RAM before any page of the message is read. */
static int receive_runs(struct vm *vm, int fd, uint64_t len)
{
    struct mig_run runs[MIG_MAX_RUN_PAGES];
    struct iovec iov[MIG_MAX_RUN_PAGES];
    unsigned n;
    int ret = mig_recv_runs_table(fd, len, runs, &n);
    if (ret < 0)
        return ret;
    for (unsigned i = 0; i < n; i++) {
        uint8_t *host = run_host(&vm->mem, runs[i].first, runs[i].count);
        if (!host)
            return -EPROTO;
        iov[i] = (struct iovec){ host, (size_t)runs[i].count * MIG_PAGE_SIZE };
    }
    return mig_recv_iov(fd, iov, n);
}

/* Where the destination's part of the pause went, from STATE's header to the ACK: the
 * source sees it only as one wait. */
struct load_times {
    uint64_t state_at;        /* STATE's header came */
    uint64_t len;             /* its payload's size */
    double lanes_ms;          /* waiting for the extra connections' DONE */
    double receive_ms;        /* reading the payload */
    double parse_ms;          /* state_reader_open */
    struct vm_state_load_times load;
    double load_ms;           /* vm_state_load_timed, all of it */
};

static int receive_state(struct vm *vm, int fd, uint64_t len, struct load_times *t)
{
    struct state_reader r;
    uint8_t *buf = malloc(len ? len : 1);
    if (!buf)
        return -ENOMEM;
    uint64_t t0 = monotonic_ns();
    int ret = mig_recv_all(fd, buf, len);
    t->receive_ms = ms_since_ns(t0);
    t0 = monotonic_ns();
    if (ret == 0 && (ret = state_reader_open(&r, buf, len)) == 0) {
        t->parse_ms = ms_since_ns(t0);
        t0 = monotonic_ns();
        ret = vm_state_load_timed(vm, &r, &t->load);
        t->load_ms = ms_since_ns(t0);
        state_reader_close(&r);
    }
    free(buf);
    return ret;
}

static void log_load_times(const struct load_times *t)
{
    const struct vm_state_load_times *l = &t->load;
    log_info("migration: the state here: %.1f ms waiting for the other connections, %.1f ms "
             "receiving it (%.0f KiB), %.1f ms parsing, %.1f ms loading (%.1f ms checks, %.1f ms "
             "vCPUs, %.1f ms PIT, clock and irqchips, %.1f ms devices, the slowest %s %.1f ms; "
             "%u MSI-X routing updates %.1f ms of it), %.1f ms from STATE to ACK",
             t->lanes_ms, t->receive_ms, (double)t->len / 1024, t->parse_ms, t->load_ms,
             l->checks_ms, l->vcpus_ms, l->vm_ms, l->devices_ms,
             l->slowest.id[0] ? l->slowest.id : "(none)", l->slowest.ms, l->routing_sets,
             l->routing_ms, ms_since_ns(t->state_at));
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

/* The source's MSI routes, given to KVM now instead of in the pause (ROUTES, channel.h). A GSI
 * this VM does not have is refused (-EPROTO); KVM's refusal of the table ends the migration
 * as the state's load would, before any page comes. */
static int receive_routes(struct vm *vm, int fd, uint64_t len)
{
    struct mig_route *routes;
    unsigned n;
    int ret = mig_recv_routes(fd, len, &routes, &n);
    if (ret < 0)
        return ret;
    uint64_t t0 = monotonic_ns();
    vm_routing_hold(vm);
    for (unsigned i = 0; i < n && ret == 0; i++) {
        ret = vm_set_msi_route(vm, routes[i].gsi, routes[i].address, routes[i].data, true);
        if (ret < 0)
            log_error("migration: an MSI route for GSI %u, which is none of this VM's MSI "
                      "GSIs (another device layout?)", routes[i].gsi);
    }
    int set = vm_routing_release(vm);
    free(routes);
    if (ret < 0)
        return -EPROTO;
    if (set == 0)
        log_info("migration: %u MSI routes given to KVM ahead of the state (%.1f ms)", n,
                 ms_since_ns(t0));
    return set;
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
    if (ret == 0 && h.type == MIG_GO && h.len == 0)
        return 0; /* RUNNING once the vCPUs run: migration_confirm_running() */
    if (ret == 0 && h.type == MIG_ERROR)
        return receive_error(fd, h.len);
    log_error("migration: no GO from the source after the state (%s): the guest is not started "
              "here, the source runs it on", ret == 0 ? mig_type_name(h.type)
                                                     : ret == -ETIMEDOUT ? "timed out"
                                                                         : strerror(-ret));
    return ret < 0 ? ret : -EPROTO;
}

/* ---- several connections (channel.h: the order of passes) ---- */

struct receiver {
    struct receivers *all;
    int fd;
    pthread_t thread;
    bool started;
    uint32_t next_pass; /* the PASS_END this connection must send next */
    int ret;
};

/* Every connection of one migration: the first (the caller's) and its extra ones. */
struct receivers {
    struct vm *vm;
    int main_fd;
    unsigned count; /* all connections, the first included */
    pthread_mutex_t lock;
    pthread_cond_t cond;
    unsigned arrived;   /* connections at the current pass's end */
    uint32_t pass_done; /* every connection has ended this pass */
    bool failed;        /* one connection failed: the others stop */
    struct receiver extra[MIG_MAX_CONNECTIONS - 1];
    struct receiver first;
    struct load_times times; /* the final state's, for the log line after ACK */
    struct virtio_console_client client; /* a local handover's (CLIENTS); fd -1: none */
};

/* One connection failed: the others stop waiting at a pass's end, and the first connection's
 * reader (blocked on the source, which still sends) ends too. */
static void receivers_fail(struct receivers *r)
{
    pthread_mutex_lock(&r->lock);
    r->failed = true;
    pthread_cond_broadcast(&r->cond);
    pthread_mutex_unlock(&r->lock);
    shutdown(r->main_fd, SHUT_RD);
}

/*
 * PASS_END `pass` on one connection: it must be that connection's next, and it returns once
 * every connection has ended the pass, so that no page of the next pass is written before the
 * last of this one (channel.h). -EPROTO, or -ECANCELED when another connection failed.
 */
static int pass_end(struct receiver *c, int fd, uint64_t len)
{
    struct receivers *r = c->all;
    uint32_t pass;
    int ret = mig_recv_pass_end(fd, len, &pass);
    if (ret < 0)
        return ret;
    if (pass != c->next_pass) {
        log_error("migration: pass %u ended where pass %u was due", pass, c->next_pass);
        return -EPROTO;
    }
    c->next_pass++;
    pthread_mutex_lock(&r->lock);
    if (++r->arrived == r->count) {
        r->arrived = 0;
        r->pass_done = pass;
        pthread_cond_broadcast(&r->cond);
    }
    while (r->pass_done < pass && !r->failed)
        pthread_cond_wait(&r->cond, &r->lock);
    ret = r->pass_done < pass ? -ECANCELED : 0;
    pthread_mutex_unlock(&r->lock);
    return ret;
}

/* An extra connection: pages and pass ends until DONE. */
static void *receive_extra(void *arg)
{
    struct receiver *c = arg;
    struct mig_header h;
    int ret;
    while ((ret = mig_recv_header(c->fd, &h)) == 0) {
        if (h.type == MIG_PAGES)
            ret = receive_pages(c->all->vm, c->fd, h.len);
        else if (h.type == MIG_RUNS)
            ret = receive_runs(c->all->vm, c->fd, h.len);
        else if (h.type == MIG_PASS_END)
            ret = pass_end(c, c->fd, h.len);
        else if (h.type == MIG_DONE)
            break;
        else {
            log_error("migration: a %s message on an extra connection", mig_type_name(h.type));
            ret = -EPROTO;
        }
        if (ret < 0)
            break;
    }
    if (ret == -ECONNRESET)
        log_error("migration: an extra connection closed before the end");
    else if (ret < 0 && ret != -EPROTO && ret != -ECANCELED)
        log_error("migration: receiving on an extra connection failed: %s", strerror(-ret));
    c->ret = ret;
    if (ret < 0)
        receivers_fail(c->all);
    return NULL;
}

static int receivers_start(struct receivers *r, struct vm *vm, int fd, const int *extra,
                           unsigned nr_extra)
{
    *r = (struct receivers){ .vm = vm, .main_fd = fd, .count = nr_extra + 1 };
    r->first = (struct receiver){ .all = r, .fd = fd, .next_pass = 1 };
    r->client.fd = -1;
    pthread_mutex_init(&r->lock, NULL);
    pthread_cond_init(&r->cond, NULL);
    for (unsigned i = 0; i < nr_extra; i++) {
        struct receiver *c = &r->extra[i];
        *c = (struct receiver){ .all = r, .fd = extra[i], .next_pass = 1 };
        int ret = -pthread_create(&c->thread, NULL, receive_extra, c);
        if (ret < 0) {
            log_error("migration: cannot start a receiver: %s", strerror(-ret));
            return ret;
        }
        c->started = true;
    }
    return 0;
}

/* Waits for every extra connection's end: 0 once each has ended with DONE, all its pages
 * written; else the first failure. Stops them first when `stop` (this side gives up). */
static int receivers_join(struct receivers *r, bool stop)
{
    int ret = 0;
    if (stop) {
        pthread_mutex_lock(&r->lock);
        r->failed = true;
        pthread_cond_broadcast(&r->cond);
        pthread_mutex_unlock(&r->lock);
    }
    for (unsigned i = 0; i < r->count - 1; i++) {
        struct receiver *c = &r->extra[i];
        if (stop)
            shutdown(c->fd, SHUT_RDWR);
        if (c->started)
            pthread_join(c->thread, NULL);
        c->started = false;
        if (ret == 0 && c->ret < 0)
            ret = c->ret;
    }
    return ret;
}

static void receivers_free(struct receivers *r)
{
    receivers_join(r, true);
    pthread_mutex_destroy(&r->lock);
    pthread_cond_destroy(&r->cond);
    if (r->client.fd >= 0) /* only our copy: the source still serves the client */
        close(r->client.fd);
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

/* The state, once every page is here: each extra connection has ended (DONE). */
static int receive_final_state(struct receivers *r, int fd, uint64_t len)
{
    r->times = (struct load_times){ .state_at = monotonic_ns(), .len = len };
    int ret = receivers_join(r, false);
    r->times.lanes_ms = ms_since_ns(r->times.state_at);
    if (ret < 0) {
        log_error("migration: the state came, but not every page: an extra connection failed");
        return -EPROTO;
    }
    return receive_state(r->vm, fd, len, &r->times);
}

/* After GO the source never serves the console's client again: this VM serves the same
 * connection from here. */
static void serve_console_client(struct vm *vm, const struct virtio_console_client *c)
{
    int ret = vm_virtio_adopt_console_client(vm, c);
    if (ret < 0)
        log_warn("migration: the console's client that the source handed over cannot be served "
                 "here (%s): its connection closes", strerror(-ret));
}

/* After ACK the connections' readers end (before the wait: GO to RUNNING is in the guest's
 * pause), then GO makes the guest this side's, and the console's client with it. */
static int after_ack(struct receivers *r, struct vm *vm, int fd)
{
    int client_fd = r->client.fd;
    r->client.fd = -1; /* GO decides who keeps it, not receivers_free() */
    receivers_free(r);
    int ret = wait_for_go(fd);
    r->client.fd = client_fd;
    if (ret == 0 && client_fd >= 0)
        serve_console_client(vm, &r->client);
    else if (client_fd >= 0)
        close(client_fd); /* our copy only: the source serves the client on */
    return ret;
}

/* One message on the first connection; *done once the guest is this side's (GO came). */
static int receive_one(struct receivers *r, int fd, const struct mig_header *h, bool handed_over,
                       bool *have_cpu, bool *have_state, char *why, size_t why_len)
{
    if (h->type == MIG_ROUTES && !*have_cpu)
        return receive_routes(r->vm, fd, h->len);
    if (h->type == MIG_CPU && !*have_cpu) {
        int ret = receive_cpu(r->vm, fd, h->len, why, why_len);
        *have_cpu = ret == 0;
        return ret;
    }
    if (!*have_cpu && h->type != MIG_ERROR) {
        log_error("migration: a %s message before the CPU model", mig_type_name(h->type));
        return -EPROTO;
    }
    if ((h->type == MIG_PAGES || h->type == MIG_RUNS) && handed_over) {
        log_error("migration: a page run in a local handover, whose RAM is shared");
        return -EPROTO;
    }
    if (h->type == MIG_SYNC && !*have_state && !handed_over)
        return mig_send(fd, MIG_SYNCED, NULL, 0); /* every page before it is written */
    if (h->type == MIG_PAGES && !*have_state)
        return receive_pages(r->vm, fd, h->len);
    if (h->type == MIG_RUNS && !*have_state)
        return receive_runs(r->vm, fd, h->len);
    if (h->type == MIG_PASS_END && r->count > 1 && !*have_state)
        return pass_end(&r->first, fd, h->len);
    if (h->type == MIG_CLIENTS && handed_over && !*have_state && r->client.fd < 0)
        return mig_recv_console_client(fd, h->len, &r->client);
    if (h->type == MIG_STATE && !*have_state) {
        int ret = receive_final_state(r, fd, h->len);
        *have_state = ret == 0;
        return ret;
    }
    if (h->type == MIG_ERROR)
        return receive_error(fd, h->len);
    log_error("migration: unexpected %s message", mig_type_name(h->type));
    return -EPROTO;
}

void migration_confirm_running(int fd)
{
    if (mig_send(fd, MIG_RUNNING, NULL, 0) < 0)
        log_warn("migration: the source cannot be told that the guest runs here: it keeps "
                 "the guest paused there until someone stops it");
}

int migration_receive(struct vm *vm, int fd, bool handed_over, const int *extra,
                      unsigned nr_extra)
{
    bool have_cpu = false, have_state = false;
    char why[200] = "";
    struct receivers r;
    struct mig_header h;
    int ret = nr_extra > MIG_MAX_CONNECTIONS - 1 ? -EINVAL
                                                : receivers_start(&r, vm, fd, extra, nr_extra);
    if (ret < 0 && nr_extra > MIG_MAX_CONNECTIONS - 1)
        return ret;
    while (ret == 0 && (ret = mig_recv_header(fd, &h)) == 0) {
        if (h.type == MIG_DONE && have_state) {
            ret = mig_send(fd, MIG_ACK, NULL, 0);
            if (ret < 0) {
                log_error("migration: cannot acknowledge: %s", strerror(-ret));
                receivers_free(&r);
                return ret;
            }
            log_load_times(&r.times);
            return after_ack(&r, vm, fd);
        }
        ret = receive_one(&r, fd, &h, handed_over, &have_cpu, &have_state, why, sizeof(why));
        if (ret == -ECONNABORTED) { /* the source gave up, and said why */
            receivers_free(&r);
            return ret;
        }
    }
    pthread_mutex_lock(&r.lock);
    bool extra_failed = r.failed; /* before receivers_free() sets it to stop them */
    pthread_mutex_unlock(&r.lock);
    receivers_free(&r);
    if (extra_failed && (ret == -ECONNRESET || ret == -ECANCELED))
        ret = -EPROTO; /* the extra connection said why */
    else if (ret == -ECONNRESET || ret == -ETIMEDOUT)
        log_error("migration: the source %s before the end",
                  ret == -ECONNRESET ? "closed the stream" : "went silent");
    else if (ret != -EPROTO && ret != -EINVAL)
        log_error("migration: receiving failed: %s", strerror(-ret));
    send_error(fd, ret, why);
    return ret;
}
