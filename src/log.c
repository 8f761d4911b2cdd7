/* log.c: one-line diagnostics; syslog "<N>" prefixes when stderr is the systemd journal. */
#define _GNU_SOURCE
#include "log.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

static _Atomic int log_threshold = LOG_LVL_INFO;

void log_set_level(enum log_level level)
{
    log_threshold = level;
}

/* systemd sets JOURNAL_STREAM to "dev:ino" of the stream it gave us as stderr. */
static int stderr_is_journal(void)
{
    const char *js = getenv("JOURNAL_STREAM");
    struct stat st;
    unsigned long long dev, ino;
    if (!js || sscanf(js, "%llu:%llu", &dev, &ino) != 2 || fstat(2, &st) < 0)
        return 0;
    return st.st_dev == dev && st.st_ino == ino;
}

void log_msg(enum log_level level, const char *fmt, ...)
{
    static const char *const names[] = { [LOG_LVL_ERROR] = "error", [LOG_LVL_WARN] = "warning",
                                         [LOG_LVL_INFO] = "info", [LOG_LVL_DEBUG] = "debug" };
    char line[1024];
    va_list ap;

    if ((int)level > log_threshold)
        return;
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    /* Raw terminal mode may be on: end lines with \r\n so they start at column 0. */
    if (stderr_is_journal())
        fprintf(stderr, "<%d>%s\n", (int)level, line);
    else
        fprintf(stderr, "godwit: %s: %s%s", names[level], line, isatty(2) ? "\r\n" : "\n");
}
