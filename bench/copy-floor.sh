#!/bin/bash
# bench/copy-floor.sh [ROUNDS]: what a first pass cannot beat on this host (bench/copy-floor.c):
# 83 MiB over loopback TCP into a hot buffer, into fresh huge-tmpfs pages (as godwit's
# destination receives RAM) and into populated ones, and iperf3's rate, with nothing else
# running and then beside a spinning process that takes one CPU, as a migrated guest's busy
# vCPU does. Run as root in the test host, next to bench/migrate.sh (docs/migration.md):
#   tools/testhost/testhost.sh -- env GODWIT_TESTHOST_ENV= bench/copy-floor.sh
set -u
rounds=${1:-2}
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d /tmp/copy-floor.XXXXXX)
spin=
cleanup() {
  [ -n "$spin" ] && kill "$spin" 2>/dev/null
  umount "$work/ram" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
gcc -static -O2 -o "$work/copy-floor" "$root/bench/copy-floor.c" ||
  { echo "copy-floor: cannot build bench/copy-floor.c" >&2; exit 1; }
mkdir "$work/ram"
# As godwit's own guest-RAM tmpfs (src/vm/memory.c).
mount -t tmpfs -o huge=within_size,size=1g none "$work/ram" ||
  { echo "copy-floor: cannot mount a tmpfs (root is needed)" >&2; exit 1; }
. "$root/bench/loopback-rate.sh"
iperf_rate() {
  local r
  r=$(loopback_rate_on $((20000 + RANDOM % 20000)))
  [ -n "$r" ] && echo "copy-floor: iperf3 over 127.0.0.1: $r MiB/s"
}
echo "copy-floor: nothing else running"
iperf_rate
"$work/copy-floor" "$work/ram" "$rounds"
echo "copy-floor: beside a process that spins on one CPU"
(while :; do :; done) &
spin=$!
iperf_rate
"$work/copy-floor" "$work/ram" "$rounds"
