/* cli.h: the `godwit run` options: parsing, validation and help text. */
#ifndef GODWIT_CLI_H
#define GODWIT_CLI_H

#include <stdio.h>

#include "cli/jail.h"
#include "lib/config.h"
#include "lib/defaults.h"
#include "vm/vm.h"


#define CLI_HELP 1 /* cli_parse_run: --help was given */

/* Everything `godwit run` was told, from --config FILE and then the command line. */
struct cli_run_options {
    struct vm_config cfg;
    struct config_extra extra;    /* name and API socket (NULL: defaults) */
    struct config_strings owned;  /* strings from the config file */
    const char *restore_dir;      /* --restore DIR, or NULL */
    int incoming_fd;              /* --incoming: the migration stream after its HELLO; 0: none */
    int incoming_memfd;           /* and the guest's memory file, handed over; -1 or 0: none */
    struct godwit_handover handover; /* and its disks and taps, handed over with it */
    struct jail jail;             /* --jail DIR --uid U --gid G; dir NULL: none */
    const char *netns;            /* --netns NAME|PATH, or NULL */
};

/* Fills opts from `run`'s arguments (argv[0] is "run"): the --config file's values first,
 * then each option given, which overrides the file. Returns 0, CLI_HELP, or -EINVAL after
 * logging one line that names the problem. Free with cli_run_options_free(). */
int cli_parse_run(int argc, char **argv, struct cli_run_options *opts);
void cli_run_options_free(struct cli_run_options *opts);
void cli_usage_run(FILE *out);
void cli_usage_main(FILE *out);

#endif
