/* defaults.h: what a VM gets when its configuration leaves a setting out. libgodwit owns these;
 * the CLI, the config file and the API show them. */
#ifndef GODWIT_DEFAULTS_H
#define GODWIT_DEFAULTS_H

#define DEFAULT_MEMORY_MIB 512
#define DEFAULT_CMDLINE "console=ttyS0 reboot=acpi panic=1"
#define GODWIT_VERSION "0.1.0"

#endif
