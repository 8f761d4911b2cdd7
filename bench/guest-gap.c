/* guest-gap.c: runs inside the guest for bench/migrate.sh. A tight loop that reads
 * CLOCK_MONOTONIC and CLOCK_REALTIME as fast as it can and keeps the longest gap between two
 * consecutive reads; once a second it prints on stdout (hvc0, or the serial console: bench/
 * migrate.sh sets it up)
 *
 *     gap SEQ max_us M real_max_us R print_us P wrote_mib W at_ms A next_us N next_at_ms B
 *
 * M and R: the longest gap in that second by each clock (R is the absolute value: a clock
 * stepped back counts as a gap too); P: how long the previous line's write() took (the loop
 * does not read the clocks meanwhile, so a pause that falls inside it shows there); W: MiB
 * written to the buffer in that second; A: when the longest gap ended, in ms from the
 * second's start; N and B: the same for the second longest (so that a second with two stalls,
 * a migration's pause and something else, shows both). The first line is "gap-start ...".
 *
 * Usage: guest-gap [MIBPS [BUF_MIB]]. With MIBPS > 0 the same loop also rewrites a BUF_MIB
 * (default 64) buffer, a 4 KiB page at a time, paced to MIBPS MiB/s from the start (a backlog
 * over 1 MiB, after a pause, is dropped rather than written in a burst). Built static
 * (gcc -static -O2) by bench/migrate.sh: the guest's initramfs has no C library. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static int64_t ns(clockid_t c)
{
    struct timespec ts;
    clock_gettime(c, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int main(int argc, char **argv)
{
    double mibps = argc > 1 ? atof(argv[1]) : 0;
    size_t buf_size = (size_t)(argc > 2 ? atoi(argv[2]) : 64) << 20;
    unsigned char *buf = NULL;
    if (mibps > 0) {
        buf = malloc(buf_size);
        if (!buf) {
            perror("guest-gap: malloc");
            return 1;
        }
        memset(buf, 1, buf_size);
    }
    char line[160];
    int n = snprintf(line, sizeof line, "gap-start writer_mibps %.0f buf_mib %zu\n", mibps,
                     buf_size >> 20);
    if (write(1, line, (size_t)n) < 0)
        return 1;

    int64_t start = ns(CLOCK_MONOTONIC), prev = start, window = start;
    int64_t prev_r = ns(CLOCK_REALTIME), max = 0, max_r = 0, print_ns = 0;
    int64_t max_at = 0, next = 0, next_at = 0; /* the longest gap's end, the second longest */
    double written = 0, written_window = 0; /* bytes */
    size_t pos = 0;
    unsigned char fill = 2;
    for (long seq = 1;;) {
        int64_t now = ns(CLOCK_MONOTONIC), now_r = ns(CLOCK_REALTIME);
        int64_t g = now - prev, gr = now_r - prev_r;
        if (gr < 0)
            gr = -gr;
        if (g > max) {
            next = max;
            next_at = max_at;
            max = g;
            max_at = now;
        } else if (g > next) {
            next = g;
            next_at = now;
        }
        if (gr > max_r)
            max_r = gr;
        prev = now;
        prev_r = now_r;
        if (buf) {
            double due = (double)(now - start) * 1e-9 * mibps * 1048576.0;
            if (due - written > 1048576.0)
                written = due - 1048576.0;
            if (written < due) {
                memset(buf + pos, fill, 4096);
                pos += 4096;
                if (pos >= buf_size) {
                    pos = 0;
                    fill++;
                }
                written += 4096;
                written_window += 4096;
            }
        }
        if (now - window >= 1000000000) {
            n = snprintf(line, sizeof line,
                         "gap %ld max_us %lld real_max_us %lld print_us %lld wrote_mib %.1f at_ms "
                         "%lld next_us %lld next_at_ms %lld\n",
                         seq++, (long long)(max / 1000), (long long)(max_r / 1000),
                         (long long)(print_ns / 1000), written_window / 1048576.0,
                         (long long)((max_at - window) / 1000000), (long long)(next / 1000),
                         (long long)(next ? (next_at - window) / 1000000 : 0));
            int64_t t0 = ns(CLOCK_MONOTONIC);
            if (write(1, line, (size_t)n) < 0)
                return 1;
            prev = ns(CLOCK_MONOTONIC);
            prev_r = ns(CLOCK_REALTIME);
            print_ns = prev - t0;
            window = prev;
            max = max_r = next = 0;
            written_window = 0;
        }
    }
}
