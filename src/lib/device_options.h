/* device_options.h: the values of --disk, --net and --console, and the device lists they fill. */
#ifndef GODWIT_DEVICE_OPTIONS_H
#define GODWIT_DEVICE_OPTIONS_H

#include <stdbool.h>
#include <stdint.h>

#include "lib/config.h"
#include "godwit/godwit.h"
#include "vm/vm.h"

#define DEVICE_MAX_QUEUES 16
#define DEVICE_SERIAL_MAX 20   /* virtio-blk's GET_ID answer */
#define DEVICE_TAP_NAME_MAX 15 /* IFNAMSIZ - 1 */

/*
 * Each parser reads "key=value,key=value" (a first item without '=' is the main value:
 * `--disk FILE`, `--net TAP`), copies the strings it keeps into `owned`, and on error logs
 * one line that names `opt` and the bad item, and returns -EINVAL (or -ENOMEM).
 *   disk:    path=FILE, readonly=on|off, serial=ID (up to 20 bytes), cache=none|writeback,
 *            queues=1..16
 *   net:     tap=NAME (up to 15 bytes), mac=XX:XX:XX:XX:XX:XX (unicast), queues=1..16
 *   console: serial | virtio[,socket=PATH | ,file=PATH]
 *   vsock:   cid=N (3 to 4294967294, required), socket=PATH
 */
int devopt_parse_disk(const char *opt, const char *arg, struct godwit_disk *disk,
                      struct config_strings *owned);
int devopt_parse_net(const char *opt, const char *arg, struct godwit_net *net,
                     struct config_strings *owned);
int devopt_parse_console(const char *opt, const char *arg, enum godwit_virtio_console *mode,
                         const char **path, struct config_strings *owned);
int devopt_parse_vsock(const char *opt, const char *arg, uint64_t *cid, const char **path,
                       struct config_strings *owned);
/* Whether a vsock guest CID is one a guest may have: 3 to 4294967294 (the 32-bit
 * VMADDR_CID_ANY excluded). */
bool devopt_vsock_cid_valid(uint64_t cid);

/* The queue pairs of the first n interfaces together (an unset count is one): how many tap
 * queues they open, and where interface n's lie among a local handover's taps. */
unsigned devopt_tap_queues(const struct godwit_net *nets, unsigned n);

/*
 * The queue pairs of an interface whose count was not asked for: one per vCPU (at most 16),
 * as for disks, so that the guest's CPUs each send and receive on their own pair, when the
 * tap takes several queues or does not exist yet (godwit makes it multi-queue);
 * `multi_queue` is tap_multi_queue()'s answer. One when the tap exists single-queue (it takes
 * no second queue) or when the host did not say (as before there was a default).
 */
unsigned devopt_net_default_queues(unsigned cpus, int multi_queue);

/* A unicast MAC address in colon notation (exactly 6 pairs of hex digits); fills mac when not
 * NULL and the address is valid. */
bool devopt_parse_mac(const char *text, uint8_t mac[6]);

/* Copies a string into owned (freed with it); NULL when out of memory. */
const char *devopt_keep(struct config_strings *owned, const char *s, size_t len);

/* Append a device to cfg's list (cfg->disks/nets point into owned). -ENOSPC past the maximum. */
int devopt_add_disk(struct vm_config *cfg, struct config_strings *owned,
                    const struct godwit_disk *disk);
int devopt_add_net(struct vm_config *cfg, struct config_strings *owned,
                   const struct godwit_net *net);

#endif
