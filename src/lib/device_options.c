/* device_options.c: the values of --disk, --net and --console, and the device lists they fill. */
#define _GNU_SOURCE
#include "lib/device_options.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

/* One "key=value" item of an option's value, pointing into the argument. */
struct kv {
    const char *key, *value;
    size_t key_len, value_len;
};

static bool kv_is(const struct kv *kv, const char *key)
{
    return kv->key_len == strlen(key) && strncmp(kv->key, key, kv->key_len) == 0;
}

static bool kv_value_is(const struct kv *kv, const char *value)
{
    return kv->value_len == strlen(value) && strncmp(kv->value, value, kv->value_len) == 0;
}

/* Splits the next item off *arg; `main_key` names a first item given without a key. */
static void kv_next(const char **arg, bool first, const char *main_key, struct kv *kv)
{
    const char *item = *arg;
    const char *end = strchrnul(item, ',');
    const char *eq = memchr(item, '=', (size_t)(end - item));
    if (eq) {
        *kv = (struct kv){ .key = item, .key_len = (size_t)(eq - item), .value = eq + 1,
                           .value_len = (size_t)(end - eq - 1) };
    } else if (first && main_key) {
        *kv = (struct kv){ .key = main_key, .key_len = strlen(main_key), .value = item,
                           .value_len = (size_t)(end - item) };
    } else {
        *kv = (struct kv){ .key = item, .key_len = (size_t)(end - item), .value = NULL };
    }
    *arg = *end ? end + 1 : end;
}

static int bad_item(const char *opt, const struct kv *kv, const char *why)
{
    log_error("%s: '%.*s': %s", opt, (int)kv->key_len, kv->key, why);
    return -EINVAL;
}

const char *devopt_keep(struct config_strings *owned, const char *s, size_t len)
{
    char **grown = realloc(owned->strings, (owned->nr_strings + 1) * sizeof(*grown));
    if (!grown)
        return NULL;
    owned->strings = grown;
    char *copy = strndup(s, len);
    if (copy)
        owned->strings[owned->nr_strings++] = copy;
    return copy;
}

static int take_string(const char *opt, const struct kv *kv, size_t max,
                       struct config_strings *owned, const char **out)
{
    if (!kv->value || kv->value_len == 0)
        return bad_item(opt, kv, "needs a value");
    if (max && kv->value_len > max) {
        char why[64];
        snprintf(why, sizeof(why), "longer than %zu bytes", max);
        return bad_item(opt, kv, why);
    }
    *out = devopt_keep(owned, kv->value, kv->value_len);
    return *out ? 0 : -ENOMEM;
}

static int take_switch(const char *opt, const struct kv *kv, bool *out)
{
    if (!kv->value || kv_value_is(kv, "on") || kv_value_is(kv, "true"))
        *out = true;
    else if (kv_value_is(kv, "off") || kv_value_is(kv, "false"))
        *out = false;
    else
        return bad_item(opt, kv, "must be on or off");
    return 0;
}

static int take_queues(const char *opt, const struct kv *kv, unsigned *out)
{
    char buf[8];
    char *end;
    if (!kv->value || kv->value_len == 0 || kv->value_len >= sizeof(buf))
        return bad_item(opt, kv, "must be a number from 1 to 16");
    memcpy(buf, kv->value, kv->value_len);
    buf[kv->value_len] = '\0';
    unsigned long n = strtoul(buf, &end, 10);
    if (*end || buf[0] < '0' || buf[0] > '9' || n < 1 || n > DEVICE_MAX_QUEUES)
        return bad_item(opt, kv, "must be a number from 1 to 16");
    *out = (unsigned)n;
    return 0;
}

static int disk_item(const char *opt, const struct kv *kv, struct godwit_disk *disk,
                     struct config_strings *owned)
{
    if (kv_is(kv, "path"))
        return take_string(opt, kv, 0, owned, &disk->path);
    if (kv_is(kv, "readonly") || kv_is(kv, "ro"))
        return take_switch(opt, kv, &disk->readonly);
    if (kv_is(kv, "serial"))
        return take_string(opt, kv, DEVICE_SERIAL_MAX, owned, &disk->serial);
    if (kv_is(kv, "queues"))
        return take_queues(opt, kv, &disk->queues);
    if (kv_is(kv, "cache")) {
        if (kv->value && (kv_value_is(kv, "none") || kv_value_is(kv, "writeback"))) {
            disk->cache_none = kv_value_is(kv, "none");
            return 0;
        }
        return bad_item(opt, kv, "must be none or writeback");
    }
    return bad_item(opt, kv, "unknown key (path, readonly, serial, cache, queues)");
}

int devopt_parse_disk(const char *opt, const char *arg, struct godwit_disk *disk,
                      struct config_strings *owned)
{
    struct kv kv;
    *disk = (struct godwit_disk){ 0 };
    for (bool first = true; *arg; first = false) {
        kv_next(&arg, first, "path", &kv);
        int ret = disk_item(opt, &kv, disk, owned);
        if (ret < 0)
            return ret;
    }
    if (!disk->path) {
        log_error("%s: a path is required (path=FILE)", opt);
        return -EINVAL;
    }
    return 0;
}

bool devopt_parse_mac(const char *text, uint8_t mac[6])
{
    uint8_t b[6];
    /* Checked by hand: sscanf's %x would also take spaces, signs and "0x". */
    if (strlen(text) != 17)
        return false;
    for (unsigned i = 0; i < 6; i++) {
        const char *pair = text + 3 * i;
        if (!isxdigit((unsigned char)pair[0]) || !isxdigit((unsigned char)pair[1]) ||
            pair[2] != (i < 5 ? ':' : '\0'))
            return false;
        char hex[3] = { pair[0], pair[1], '\0' };
        b[i] = (uint8_t)strtoul(hex, NULL, 16);
    }
    if (b[0] & 1) /* a multicast address cannot be an interface's */
        return false;
    if (mac)
        memcpy(mac, b, sizeof(b));
    return true;
}

static int net_item(const char *opt, const struct kv *kv, struct godwit_net *net,
                    struct config_strings *owned)
{
    if (kv_is(kv, "tap"))
        return take_string(opt, kv, DEVICE_TAP_NAME_MAX, owned, &net->tap);
    if (kv_is(kv, "queues"))
        return take_queues(opt, kv, &net->queues);
    if (kv_is(kv, "mac")) {
        int ret = take_string(opt, kv, 17, owned, &net->mac);
        if (ret == 0 && !devopt_parse_mac(net->mac, NULL))
            return bad_item(opt, kv, "must be a unicast address like 52:54:00:12:34:56");
        return ret;
    }
    return bad_item(opt, kv, "unknown key (tap, mac, queues)");
}

int devopt_parse_net(const char *opt, const char *arg, struct godwit_net *net,
                     struct config_strings *owned)
{
    struct kv kv;
    *net = (struct godwit_net){ 0 };
    for (bool first = true; *arg; first = false) {
        kv_next(&arg, first, "tap", &kv);
        int ret = net_item(opt, &kv, net, owned);
        if (ret < 0)
            return ret;
    }
    if (!net->tap) {
        log_error("%s: a tap device is required (tap=NAME)", opt);
        return -EINVAL;
    }
    return 0;
}

int devopt_parse_console(const char *opt, const char *arg, enum godwit_virtio_console *mode,
                         const char **path, struct config_strings *owned)
{
    struct kv kv;
    kv_next(&arg, false, NULL, &kv);
    if (kv_is(&kv, "serial")) {
        if (kv.value || *arg)
            return bad_item(opt, &kv, "takes no options (socket= and file= are virtio's)");
        *mode = GODWIT_VIRTIO_CONSOLE_NONE;
        *path = NULL;
        return 0;
    }
    if (!kv_is(&kv, "virtio") || kv.value)
        return bad_item(opt, &kv, "must be serial or virtio");
    *mode = GODWIT_VIRTIO_CONSOLE_TERMINAL;
    *path = NULL;
    if (!*arg)
        return 0;
    kv_next(&arg, false, NULL, &kv);
    if (*arg)
        return bad_item(opt, &kv, "give one of socket=PATH or file=PATH");
    if (kv_is(&kv, "socket"))
        *mode = GODWIT_VIRTIO_CONSOLE_SOCKET;
    else if (kv_is(&kv, "file"))
        *mode = GODWIT_VIRTIO_CONSOLE_FILE;
    else
        return bad_item(opt, &kv, "unknown key (socket, file)");
    return take_string(opt, &kv, 0, owned, path);
}

bool devopt_vsock_cid_valid(uint64_t cid)
{
    return cid >= 3 && cid < UINT32_MAX;
}

unsigned devopt_tap_queues(const struct godwit_net *nets, unsigned n)
{
    unsigned queues = 0;
    for (unsigned i = 0; i < n; i++)
        queues += nets[i].queues ? nets[i].queues : 1;
    return queues;
}

unsigned devopt_net_default_queues(unsigned cpus, int multi_queue)
{
    if (multi_queue != 1 && multi_queue != -ENODEV)
        return 1;
    return vm_queues_per_vcpu(cpus);
}

int devopt_parse_vsock(const char *opt, const char *arg, uint64_t *cid, const char **path,
                       struct config_strings *owned)
{
    struct kv kv;
    *cid = 0;
    *path = NULL;
    for (bool first = true; *arg; first = false) {
        kv_next(&arg, first, "cid", &kv);
        if (kv_is(&kv, "socket")) {
            int ret = take_string(opt, &kv, 0, owned, path);
            if (ret < 0)
                return ret;
            continue;
        }
        if (!kv_is(&kv, "cid"))
            return bad_item(opt, &kv, "unknown key (cid, socket)");
        char buf[16], *end;
        if (!kv.value || kv.value_len == 0 || kv.value_len >= sizeof(buf))
            return bad_item(opt, &kv, "must be a number from 3 to 4294967294");
        memcpy(buf, kv.value, kv.value_len);
        buf[kv.value_len] = '\0';
        unsigned long long n = strtoull(buf, &end, 10);
        if (*end || buf[0] < '0' || buf[0] > '9' || !devopt_vsock_cid_valid(n))
            return bad_item(opt, &kv, "must be a number from 3 to 4294967294");
        *cid = n;
    }
    if (!*cid) {
        log_error("%s: a guest CID is required (cid=N, 3 or more)", opt);
        return -EINVAL;
    }
    return 0;
}

int devopt_add_disk(struct vm_config *cfg, struct config_strings *owned,
                    const struct godwit_disk *disk)
{
    if (!owned->disks && !(owned->disks = calloc(CONFIG_MAX_DISKS, sizeof(*owned->disks))))
        return -ENOMEM;
    if (cfg->disks != owned->disks) /* the list came from elsewhere: start ours */
        cfg->nr_disks = 0;
    if (cfg->nr_disks >= CONFIG_MAX_DISKS) {
        log_error("too many disks (at most %d)", CONFIG_MAX_DISKS);
        return -ENOSPC;
    }
    owned->disks[cfg->nr_disks++] = *disk;
    cfg->disks = owned->disks;
    return 0;
}

int devopt_add_net(struct vm_config *cfg, struct config_strings *owned,
                   const struct godwit_net *net)
{
    if (!owned->nets && !(owned->nets = calloc(CONFIG_MAX_NETS, sizeof(*owned->nets))))
        return -ENOMEM;
    if (cfg->nets != owned->nets)
        cfg->nr_nets = 0;
    if (cfg->nr_nets >= CONFIG_MAX_NETS) {
        log_error("too many network interfaces (at most %d)", CONFIG_MAX_NETS);
        return -ENOSPC;
    }
    owned->nets[cfg->nr_nets++] = *net;
    cfg->nets = owned->nets;
    return 0;
}
