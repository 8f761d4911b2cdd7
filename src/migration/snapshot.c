/* snapshot.c: writes a paused VM to a directory, and loads one into a VM being built. */
#define _GNU_SOURCE
#include "migration/snapshot.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"
#include "vcpu/vcpu.h"
#include "vm/kvm_state.h"
#include "vm/memory.h"
#include "vm/vm.h"

#define PAGE 4096u
#define SECTION_CONFIG "config"
#define SECTION_MEMORY "memory"
#define SECTION_DISKS "disks"

/* ---- small file helpers ---- */

static int path_in(char *out, size_t len, const char *dir, const char *name)
{
    if ((size_t)snprintf(out, len, "%s/%s", dir, name) >= len) {
        log_error("snapshot: %s/%s: path too long", dir, name);
        return -ENAMETOOLONG;
    }
    return 0;
}

static int write_all_at(int fd, const void *buf, size_t len, off_t at)
{
    const uint8_t *p = buf;
    while (len) {
        ssize_t n = pwrite(fd, p, len, at);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return n < 0 ? -errno : -EIO;
        p += n, len -= (size_t)n, at += n;
    }
    return 0;
}

/* The size of a disk image or block device; 0 with errno set when it cannot be told. */
static uint64_t disk_size(const char *path)
{
    struct stat st;
    uint64_t size = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode))
        size = (uint64_t)st.st_size;
    else if (ioctl(fd, BLKGETSIZE64, &size) < 0)
        size = 0;
    close(fd);
    return size;
}

/* ---- memory ---- */

static bool page_is_zero(const uint8_t *p)
{
    const uint64_t *w = (const uint64_t *)p;
    for (unsigned i = 0; i < PAGE / 8; i++)
        if (w[i])
            return false;
    return true;
}

/* The next byte of a shared memfd that may hold data (SEEK_DATA), so holes cost nothing; a
 * privately mapped file says nothing about what the guest wrote, so everything is looked at. */
static uint64_t next_data(const struct guest_memory *gm, uint64_t off, uint64_t end)
{
    if (gm->private_file)
        return off;
    off_t data = lseek(gm->memfd, (off_t)off, SEEK_DATA);
    return data < 0 || (uint64_t)data > end ? end : (uint64_t)data & ~(uint64_t)(PAGE - 1);
}

/* Writes a region's pages that are not zero, as runs, at their offsets in the file. */
static int save_region(const struct guest_memory *gm, const struct gm_region *r, int fd,
                       uint64_t *written)
{
    uint64_t end = r->file_offset + r->size;
    uint64_t off = r->file_offset;
    while ((off = next_data(gm, off, end)) < end) {
        const uint8_t *host = r->host + (off - r->file_offset);
        if (page_is_zero(host)) {
            off += PAGE;
            continue;
        }
        uint64_t run = PAGE;
        while (off + run < end && run < (64u << 20) && !page_is_zero(host + run))
            run += PAGE;
        int ret = write_all_at(fd, host, run, (off_t)off);
        if (ret < 0)
            return ret;
        *written += run;
        off += run;
    }
    return 0;
}

static int save_memory(struct vm *vm, const char *path, uint64_t *written)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    int ret = fd < 0 ? -errno : 0;
    if (ret == 0 && ftruncate(fd, (off_t)vm->mem.ram_size) < 0)
        ret = -errno;
    for (unsigned i = 0; ret == 0 && i < vm->mem.nr_regions; i++)
        ret = save_region(&vm->mem, &vm->mem.regions[i], fd, written);
    if (ret == 0 && fsync(fd) < 0)
        ret = -errno;
    if (fd >= 0)
        close(fd);
    if (ret < 0)
        log_error("snapshot: writing %s failed: %s", path, strerror(-ret));
    return ret;
}

/* ---- state ---- */

static void save_layout(struct vm *vm, struct state_writer *w)
{
    sw_begin(w, SECTION_MEMORY, 1);
    sw_u64(w, vm->mem.ram_size);
    sw_u32(w, vm->mem.nr_regions);
    for (unsigned i = 0; i < vm->mem.nr_regions; i++) {
        sw_u64(w, vm->mem.regions[i].gpa);
        sw_u64(w, vm->mem.regions[i].size);
        sw_u64(w, vm->mem.regions[i].file_offset);
    }
    sw_end(w);
}

/* Each disk's size: a restore onto a disk of another size would show the guest a different
 * disk under the same driver state. */
static void save_disks(struct vm *vm, struct state_writer *w)
{
    sw_begin(w, SECTION_DISKS, 1);
    sw_u32(w, vm->cfg->nr_disks);
    for (unsigned i = 0; i < vm->cfg->nr_disks; i++)
        sw_u64(w, disk_size(vm->cfg->disks[i].path));
    sw_end(w);
}

static int build_state(struct vm *vm, const char *config_json, struct state_writer *w)
{
    sw_init(w);
    sw_begin(w, SECTION_CONFIG, 1);
    sw_bytes(w, config_json, strlen(config_json));
    sw_end(w);
    save_layout(vm, w);
    save_disks(vm, w);
    for (unsigned i = 0; i < vm->nr_vcpus; i++) {
        int ret = vcpu_save_state(&vm->vcpus[i], w);
        if (ret < 0)
            return ret;
    }
    int ret = vm_registry_save(&vm->registry, w);
    /* The clock last, so that it is read as close to the end as the state allows. */
    if (ret == 0)
        ret = vm_kvm_state_save(vm, w);
    return ret ?: sw_finish(w);
}

static int write_file(const char *path, const uint8_t *buf, size_t len)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    int ret = fd < 0 ? -errno : write_all_at(fd, buf, len, 0);
    if (ret == 0 && fsync(fd) < 0)
        ret = -errno;
    if (fd >= 0)
        close(fd);
    if (ret < 0)
        log_error("snapshot: writing %s failed: %s", path, strerror(-ret));
    return ret;
}

static int make_dir(const char *dir)
{
    if (mkdir(dir, 0700) == 0 || errno == EEXIST) {
        struct stat st;
        if (stat(dir, &st) == 0 && S_ISDIR(st.st_mode))
            return 0;
        errno = ENOTDIR;
    }
    log_error("snapshot: cannot create %s: %s", dir, strerror(errno));
    return -errno;
}

int snapshot_save(struct vm *vm, const char *dir, const char *config_json,
                  struct snapshot_stats *stats)
{
    char mem_tmp[PATH_MAX], mem_path[PATH_MAX], state_tmp[PATH_MAX], state_path[PATH_MAX];
    struct state_writer w;
    int ret;

    memset(stats, 0, sizeof(*stats));
    if ((ret = make_dir(dir)) < 0 || (ret = path_in(mem_tmp, PATH_MAX, dir, ".memory.tmp")) < 0 ||
        (ret = path_in(mem_path, PATH_MAX, dir, SNAPSHOT_MEMORY_FILE)) < 0 ||
        (ret = path_in(state_tmp, PATH_MAX, dir, ".state.tmp")) < 0 ||
        (ret = path_in(state_path, PATH_MAX, dir, SNAPSHOT_STATE_FILE)) < 0)
        return ret;
    ret = build_state(vm, config_json, &w);
    if (ret < 0)
        log_error("snapshot: cannot save the VM's state: %s", strerror(-ret));
    if (ret == 0)
        ret = save_memory(vm, mem_tmp, &stats->memory_written);
    if (ret == 0)
        ret = write_file(state_tmp, w.buf, w.len);
    /* The state last: a directory with a state file always has its memory beside it. */
    if (ret == 0 && (rename(mem_tmp, mem_path) < 0 || rename(state_tmp, state_path) < 0)) {
        ret = -errno;
        log_error("snapshot: cannot rename into %s: %s", dir, strerror(errno));
    }
    if (ret < 0) {
        unlink(mem_tmp);
        unlink(state_tmp);
    }
    stats->memory_bytes = vm->mem.ram_size;
    stats->state_bytes = w.len;
    sw_free(&w);
    return ret;
}

/* ---- reading back ---- */

static int read_state_file(struct snapshot *snap, const char *path)
{
    struct stat st;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0 || fstat(fd, &st) < 0) {
        log_error("snapshot: cannot open %s: %s", path, strerror(errno));
        if (fd >= 0)
            close(fd);
        return -errno;
    }
    int ret = 0;
    if (!S_ISREG(st.st_mode) || st.st_size <= 0 || (uint64_t)st.st_size > SNAPSHOT_STATE_MAX) {
        log_error("snapshot: %s is not a state file (%lld bytes)", path, (long long)st.st_size);
        ret = -EINVAL;
    } else if (!(snap->buf = malloc((size_t)st.st_size))) {
        ret = -ENOMEM;
    } else {
        snap->len = (size_t)st.st_size;
        for (size_t done = 0; ret == 0 && done < snap->len;) {
            ssize_t n = pread(fd, snap->buf + done, snap->len - done, (off_t)done);
            if (n <= 0)
                ret = n < 0 ? -errno : -EIO;
            done += n > 0 ? (size_t)n : 0;
        }
        if (ret < 0)
            log_error("snapshot: reading %s failed: %s", path, strerror(-ret));
    }
    close(fd);
    return ret;
}

int snapshot_open(struct snapshot *snap, const char *dir)
{
    char path[PATH_MAX];
    memset(snap, 0, sizeof(*snap));
    if (strlen(dir) >= sizeof(snap->dir)) {
        log_error("snapshot: %s: path too long", dir);
        return -ENAMETOOLONG;
    }
    strcpy(snap->dir, dir);
    int ret = path_in(path, sizeof(path), dir, SNAPSHOT_STATE_FILE);
    if (ret == 0)
        ret = read_state_file(snap, path);
    if (ret == 0)
        ret = state_reader_open(&snap->reader, snap->buf, snap->len);
    const struct state_section *config =
        ret == 0 ? state_reader_find(&snap->reader, SECTION_CONFIG) : NULL;
    if (ret == 0 && !config) {
        log_error("snapshot: %s has no configuration section", path);
        ret = -EPROTO;
    }
    if (ret == 0 && (!(snap->config_json = strndup((const char *)config->data, config->len)) ||
                     strlen(snap->config_json) != config->len)) {
        log_error("snapshot: %s: the configuration is not text", path);
        ret = -EPROTO;
    }
    if (ret < 0)
        snapshot_close(snap);
    return ret;
}

void snapshot_close(struct snapshot *snap)
{
    state_reader_close(&snap->reader);
    free(snap->buf);
    free(snap->config_json);
    memset(snap, 0, sizeof(*snap));
}

int snapshot_map_memory(const struct snapshot *snap, struct guest_memory *gm, uint64_t size)
{
    char path[PATH_MAX];
    struct stat st;
    int ret = path_in(path, sizeof(path), snap->dir, SNAPSHOT_MEMORY_FILE);
    if (ret < 0)
        return ret;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0 || fstat(fd, &st) < 0) {
        ret = -errno;
        log_error("snapshot: cannot open %s: %s", path, strerror(errno));
    } else if (!S_ISREG(st.st_mode) || (uint64_t)st.st_size != size) {
        ret = -EINVAL;
        log_error("snapshot: %s holds %lld bytes, the VM has %llu of RAM", path,
                  (long long)st.st_size, (unsigned long long)size);
    }
    if (ret < 0) {
        if (fd >= 0)
            close(fd);
        return ret;
    }
    return gm_init_private(gm, size, fd); /* it owns fd from here */
}

/* A cursor on section `id`, which every snapshot has; -EPROTO after one line if it is missing. */
static int open_section(struct state_reader *r, const char *id, struct state_cursor *c)
{
    const struct state_section *s = state_reader_find(r, id);
    if (!s) {
        log_error("snapshot: no %s section", id);
        return -EPROTO;
    }
    sc_init(c, s);
    return 0;
}

static int check_layout(struct vm *vm, struct state_reader *r)
{
    struct state_cursor c;
    if (open_section(r, SECTION_MEMORY, &c) < 0)
        return -EPROTO;
    uint64_t ram = sc_u64(&c);
    uint32_t n = sc_u32(&c);
    if (ram != vm->mem.ram_size || n != vm->mem.nr_regions)
        return c.overrun ? sc_finish(&c) : sc_reject(&c, "another RAM size or layout");
    for (unsigned i = 0; i < n; i++) {
        const struct gm_region *g = &vm->mem.regions[i];
        uint64_t gpa = sc_u64(&c), size = sc_u64(&c), off = sc_u64(&c);
        if (gpa != g->gpa || size != g->size || off != g->file_offset)
            return c.overrun ? sc_finish(&c) : sc_reject(&c, "region %u differs", i);
    }
    return sc_finish(&c);
}

static int check_disks(struct vm *vm, struct state_reader *r)
{
    struct state_cursor c;
    if (open_section(r, SECTION_DISKS, &c) < 0)
        return -EPROTO;
    uint32_t n = sc_u32(&c);
    if (n != vm->cfg->nr_disks)
        return c.overrun ? sc_finish(&c)
                         : sc_reject(&c, "%u disks, the VM has %u", n, vm->cfg->nr_disks);
    for (unsigned i = 0; i < n; i++) {
        uint64_t size = sc_u64(&c), now = disk_size(vm->cfg->disks[i].path);
        if (!c.overrun && size != now)
            return sc_reject(&c, "disk %u (%s) holds %llu bytes, it held %llu at the snapshot", i,
                             vm->cfg->disks[i].path, (unsigned long long)now,
                             (unsigned long long)size);
    }
    return sc_finish(&c);
}

int snapshot_restore(struct vm *vm, struct snapshot *snap)
{
    struct state_reader *r = &snap->reader;
    int ret;
    if ((ret = check_layout(vm, r)) < 0 || (ret = check_disks(vm, r)) < 0)
        return ret;
    /* vCPUs first, then the VM-wide PIT, clock and irqchip, the devices last: a device that
     * raises its interrupt line on load must find the irqchip already restored. */
    for (unsigned i = 0; i < vm->nr_vcpus; i++)
        if ((ret = vcpu_load_state(&vm->vcpus[i], r)) < 0)
            return ret;
    if ((ret = vm_kvm_state_load(vm, r)) < 0 || (ret = vm_registry_load(&vm->registry, r)) < 0)
        return ret;
    const struct state_section *unknown = state_reader_unused(r);
    if (unknown) {
        log_error("snapshot: section %s belongs to nothing in this VM (another configuration?)",
                  unknown->id);
        return -EPROTO;
    }
    return 0;
}
