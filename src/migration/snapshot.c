/* snapshot.c: writes a paused VM to a directory, and loads one into a VM being built. */
#define _GNU_SOURCE
#include "migration/snapshot.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io/fd_io.h"
#include "log.h"
#include "migration/dirty.h"
#include "migration/vm_state.h"
#include "vm/memory.h"
#include "vm/vm.h"

#define PAGE 4096u

/* ---- small file helpers ---- */

static int path_in(char *out, size_t len, const char *dir, const char *name)
{
    if ((size_t)snprintf(out, len, "%s/%s", dir, name) >= len) {
        log_error("snapshot: %s/%s: path too long", dir, name);
        return -ENAMETOOLONG;
    }
    return 0;
}

/* ---- memory ---- */

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
        int ret = fd_pwrite_all(fd, host, run, (off_t)off);
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

static int write_file(const char *path, const uint8_t *buf, size_t len)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    int ret = fd < 0 ? -errno : fd_pwrite_all(fd, buf, len, 0);
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
    ret = vm_state_save(vm, config_json, &w);
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
        ret == 0 ? state_reader_find(&snap->reader, VM_STATE_CONFIG) : NULL;
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

int snapshot_restore(struct vm *vm, struct snapshot *snap)
{
    return vm_state_load(vm, &snap->reader);
}
