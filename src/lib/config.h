/* config.h: a VM's configuration as a JSON file (`godwit run --config FILE`), read and written. */
#ifndef GODWIT_CONFIG_H
#define GODWIT_CONFIG_H

#include <stddef.h>

#include "vm/vm.h"

struct json_object;

#define CONFIG_FILE_MAX (1 << 20)  /* a larger file is refused before it is read */
#define CONFIG_ERROR_MAX 256

/* Settings that have no field in struct vm_config yet (the lead folds them in). */
struct config_extra {
    const char *name;       /* NULL: not given (a name is generated) */
    const char *api_socket; /* NULL: not given (the runtime directory's NAME.sock) */
    /* The process's sandbox (docs/sandbox.md): the host's policy, not the VM's, so neither
     * is saved in snapshots or sent with a migration. */
    enum godwit_seccomp seccomp; /* default on */
    bool keep_caps;              /* default false: drop what is not needed */
    /* The main loop's polling (godwit_config.io_poll_us): this host's trade of CPU for
     * latency, not the VM's, so not saved or sent either. */
    unsigned io_poll_us;
};

#define CONFIG_MAX_DISKS 16
#define CONFIG_MAX_NETS 8

/* The copies of the file's strings and device lists that cfg and extra point to. */
struct config_strings {
    char *kernel, *initrd, *cmdline, *name, *api_socket;
    struct godwit_disk *disks; /* cfg->disks, on the heap so that copies of this stay valid */
    struct godwit_net *nets;
    char **strings;            /* device option values (paths, serials, ...) */
    unsigned nr_strings;
};

/* One line naming the problem, e.g. `config: "cpus" is 0, must be 1 to 255`. */
struct config_error {
    char message[CONFIG_ERROR_MAX];
};

/* The values `godwit run` uses for what neither the file nor the command line sets. */
void config_defaults(struct vm_config *cfg, struct config_extra *extra);

/*
 * Parses a JSON object (the schema in docs/config.md) into cfg and extra: config_defaults()
 * first, then every key the object holds. "kernel" is required. Strings are copied into
 * *owned, which must be empty (zeroed, or after config_strings_free()) and which the caller
 * frees once cfg and extra are no longer used.
 * Returns 0, or -EINVAL (-ENOMEM) leaving cfg, extra and owned untouched; the reason goes to
 * *err, or to the log when err is NULL.
 */
int config_parse_json(const char *text, size_t len, struct vm_config *cfg,
                      struct config_extra *extra, struct config_strings *owned,
                      struct config_error *err);
/* The same for a file; messages name it (`config: vm.json: line 3: ...`). */
int config_load_file(const char *path, struct vm_config *cfg, struct config_extra *extra,
                     struct config_strings *owned, struct config_error *err);
void config_strings_free(struct config_strings *owned);

/* The configuration in the same schema, as a new object (the caller puts it) or NULL. */
struct json_object *config_to_json_object(const struct vm_config *cfg,
                                          const struct config_extra *extra);
/* The same as text in buf (NUL-terminated). Returns its length, -ENOSPC or -ENOMEM. */
int config_to_json(const struct vm_config *cfg, const struct config_extra *extra, char *buf,
                   size_t len);

#endif
