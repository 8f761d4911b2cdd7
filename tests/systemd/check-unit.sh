#!/usr/bin/env bash
# check-unit.sh: tools/systemd/godwit@.service is a unit systemd accepts, with the sandboxing
# it promises: `systemd-analyze verify` finds nothing, and `systemd-analyze security` rates its
# exposure at most MAX (tenths; default 20, i.e. 2.0 "OK"). Runs without systemd as PID 1.
# Usage: tests/systemd/check-unit.sh GODWIT_BINARY [MAX]
set -uo pipefail
binary=$(readlink -f "${1:?usage: check-unit.sh GODWIT_BINARY [MAX]}")
max=${2:-20}
root=$(cd "$(dirname "$0")/../.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

command -v systemd-analyze >/dev/null || { echo "check-unit: systemd-analyze is missing (tools/install-deps.sh installs it)"; exit 1; }
# The unit as installed, with ExecStart= at the binary under test.
unit=$work/godwit@check.service
sed "s#/usr/local/bin/godwit#$binary#" "$root/tools/systemd/godwit@.service" >"$unit"

out=$(systemd-analyze verify "$unit" 2>&1); st=$?
if [ $st -ne 0 ] || [ -n "$out" ]; then
  echo "check-unit: systemd-analyze verify (status $st): $out"
  exit 1
fi
report=$(systemd-analyze security --offline=true "$unit" 2>&1)
exposure=$(grep -oE 'Overall exposure level for [^:]*: [0-9.]+' <<<"$report" | grep -oE '[0-9.]+$')
[ -n "$exposure" ] || { echo "check-unit: no exposure level in: $report"; exit 1; }
echo "check-unit: systemd-analyze security: exposure $exposure (at most $((max / 10)).$((max % 10)))"
tenths=$(awk -v e="$exposure" 'BEGIN { printf "%d", e * 10 + 0.5 }')
if [ "$tenths" -gt "$max" ]; then
  grep '✗' <<<"$report"
  exit 1
fi
