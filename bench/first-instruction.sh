#!/usr/bin/env bash
# first-instruction.sh: exec of `godwit run` to the guest's first output, with the smallest
# guest (guests/tiny/hello.c prints one line as its first act), and the whole run to exit.
# Usage: bench/first-instruction.sh BUILD_DIR [RUNS]   (where /dev/kvm works, or via the test host)
set -uo pipefail
build=${1:?usage: bench/first-instruction.sh BUILD_DIR [RUNS]}
runs=${2:-20}
godwit=$(readlink -f "$build/godwit")
guest=$(readlink -f "$build/guests/tiny/hello.elf")
work=$(mktemp -d /tmp/godwit-first.XXXXXX)
trap 'rm -rf "$work"' EXIT

median() { sort -n | awk '{a[NR]=$1} END{ if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2 }'; }

for i in $(seq 1 "$runs"); do
  start=$(date +%s%N)
  # The first line the guest prints is timed by the reader as it arrives.
  "$godwit" run --kernel "$guest" --memory 64 </dev/null 2>/dev/null | {
    IFS= read -r line
    echo $(( ($(date +%s%N) - start) / 1000 )) >>"$work/first"
    cat >/dev/null
  }
  echo $(( ($(date +%s%N) - start) / 1000 )) >>"$work/total"
done
echo "| metric (median of $runs) | microseconds |"
echo "|---|---|"
echo "| exec to the guest's first output line | $(median <"$work/first") |"
echo "| exec to exit (boot, print, ACPI power-off, teardown) | $(median <"$work/total") |"
