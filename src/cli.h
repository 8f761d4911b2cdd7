/* cli.h: the `godwit run` options: parsing, validation and help text. */
#ifndef GODWIT_CLI_H
#define GODWIT_CLI_H

#include <stdio.h>

#include "vm.h"

#define DEFAULT_MEMORY_MIB 512
#define DEFAULT_CMDLINE "console=ttyS0 reboot=acpi panic=1"
#define GODWIT_VERSION "0.1.0"

#define CLI_HELP 1 /* cli_parse_run: --help was given */

/* Fills cfg from `run`'s arguments (argv[0] is "run"). Returns 0, CLI_HELP, or -EINVAL
 * after logging one line that names the problem. */
int cli_parse_run(int argc, char **argv, struct vm_config *cfg);
void cli_usage_run(FILE *out);
void cli_usage_main(FILE *out);

#endif
