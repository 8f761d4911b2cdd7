#!/usr/bin/env bash
# exec-ab.sh: the godwit command's own cost, builds side by side: one VM with the agent
# (BUILD_DIR's godwit, --name benchab, --vsock cid=3 with its default socket), then N rounds,
# each running every GODWIT given once for each of `version` (a process start and exit),
# `exec benchab -- true` (by name) and `exec API -- true` (by API socket); the median of each.
# Alternating the builds round by round puts them under the same load, which a shared test host
# shifts by tens of percent between runs. Then bench/api_exec.py N: the round trip without the
# CLI.
#
#   tools/testhost/testhost.sh -- bench/exec-ab.sh BUILD_DIR N GODWIT...
#
# The guest is bench/agent.sh's (bench/build-agent-guest.sh, once, outside the test host);
# builds to hold against each other: e.g. `git worktree add /tmp/old main`, built there.
set -uo pipefail
usage="usage: bench/exec-ab.sh BUILD_DIR N GODWIT..."
root=$(cd "$(dirname "$(readlink -f "$0")")/.." && pwd)
build=${1:?$usage}
vmm=$(readlink -f "$build/godwit")
n=${2:?$usage}
shift 2
(($#)) || { echo "$usage" >&2; exit 2; }
[[ $n =~ ^[1-9][0-9]*$ ]] || { echo "exec-ab: N is a whole number above 0" >&2; exit 2; }
eval "$("$root/guests/build-guest.sh" --print)" || exit 1
agent_initrd=$("$root/bench/build-agent-guest.sh") || exit 1
work=$(mktemp -d /tmp/exec-ab.XXXXXX)
vp=
cleanup() {
  [ -n "$vp" ] && kill "$vp" 2>/dev/null && wait "$vp" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
printf 'while :; do sleep 3600; done\n' >"$work/script.img"
head -c $((512 - $(stat -c %s "$work/script.img"))) /dev/zero | tr '\0' '\n' >>"$work/script.img"
"$vmm" run --name benchab --kernel "$kernel_bzimage" --initrd "$agent_initrd" --memory 512 \
  --cpus 1 --no-rng --cmdline "console=ttyS0 reboot=acpi panic=1 quiet godwit.test=script" \
  --disk "path=$work/script.img,readonly=on,serial=godwit-script" --vsock cid=3 \
  </dev/null >"$work/vm.log" 2>&1 &
vp=$!
# Its API socket in the runtime directory (src/api/runtime.c), where `exec benchab` looks too.
if [ "$(id -u)" = 0 ]; then rundir=/run/godwit
elif [[ ${XDG_RUNTIME_DIR:-} == /* ]]; then rundir=$XDG_RUNTIME_DIR/godwit
else rundir=/tmp/godwit-$(id -u); fi
api=$rundir/benchab.sock
for ((s = 0; s < 600; s++)); do
  "$vmm" exec benchab -- true >/dev/null 2>&1 && break
  kill -0 "$vp" 2>/dev/null || { echo "exec-ab: the VM ended:" >&2; tail -n 20 "$work/vm.log" >&2; exit 1; }
  sleep 0.5
done
((s < 600)) || { echo "exec-ab: no agent in 300 s" >&2; exit 1; }

one() { # LABEL CMD...: one run's wall time (ms) appended to the label's file
  local l=$1 t0 t1
  shift
  t0=$EPOCHREALTIME
  "$@" >/dev/null 2>&1 </dev/null || echo "exec-ab: $l failed" >&2
  t1=$EPOCHREALTIME
  awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.3f\n", (b - a) * 1000}' >>"$work/r.$l"
}
for ((i = 0; i < n; i++)); do
  k=0
  for g in "$@"; do
    k=$((k + 1))
    one "$k.version" "$g" version
    one "$k.exec-name" "$g" exec benchab -- true
    one "$k.exec-api" "$g" exec "$api" -- true
  done
done
python3 "$root/bench/api_exec.py" "$api" "$n" | awk '{printf "%.3f\n", $1 * 1000}' >"$work/r.api"
med() { sort -n "$work/r.$1" | awk '{a[NR]=$1} END{printf "%.1f", (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
echo "command: bench/exec-ab.sh $(printf '%q ' "$build" "$n" "$@")${GODWIT_IN_TESTHOST:+(inside tools/testhost/testhost.sh)}"
echo
echo "| godwit | version (ms) | exec NAME -- true (ms) | exec API -- true (ms) |"
echo "|---|---|---|---|"
k=0
for g in "$@"; do
  k=$((k + 1))
  echo "| $g | $(med $k.version) | $(med $k.exec-name) | $(med $k.exec-api) |"
done
echo
echo "medians of $n, alternated; without the CLI (bench/api_exec.py API $n): $(med api) ms"
