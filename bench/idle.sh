#!/usr/bin/env bash
# idle.sh: what a VMM costs the host while its guest does nothing: the VMM process's CPU time
# (utime+stime of all its threads, vCPUs included) over IDLE_S seconds of an idle guest, for
# godwit without polling, with --io-poll at each of POLL_US, and QEMU q35. A measurement, not
# a test. Run it where /dev/kvm runs unmodified kernels, or through the test host:
#   tools/testhost/testhost.sh --timeout 900 -- bench/idle.sh build
# The guest is the default one (bzImage, initrd), 1 vCPU, 256 MiB, with a virtio disk (so
# that godwit has a queue to poll) and its shell waiting on the serial console; sampling
# starts SETTLE_S seconds after its init's banner.
set -uo pipefail

build=${1:?usage: bench/idle.sh BUILD_DIR}
root=$(cd "$(dirname "$0")/.." && pwd)
godwit=$(readlink -f "$build/godwit")
eval "$("$root/guests/build-guest.sh" --print)"
work=$(mktemp -d /tmp/godwit-idle.XXXXXX)
trap 'rm -rf "$work"' EXIT

idle_s=${IDLE_S:-20}
settle_s=${SETTLE_S:-5}
poll_us=${POLL_US:-50 500}
cmdline="console=ttyS0 reboot=acpi panic=1 quiet"
marker='godwit-guest: init started'
hz=$(getconf CLK_TCK)
truncate -s 64M "$work/disk.img"

ticks() { # PID: utime+stime of the whole process, in clock ticks
  local s; s=$(sed 's/.*) //' "/proc/$1/stat") || return 1
  # shellcheck disable=SC2086 # split on purpose: utime and stime are fields 12 and 13 here
  set -- $s
  echo $((${12} + ${13}))
}

# measure LABEL CMD...: prints the CPU percent of one idle window, or fails.
measure() {
  local label=$1; shift
  local fifo=$work/in log=$work/$label.log pct=
  rm -f "$fifo"; mkfifo "$fifo"
  "$@" <"$fifo" >"$log" 2>&1 &
  local pid=$!
  exec 9>"$fifo"
  local _
  for _ in $(seq 1 3000); do
    grep -q "$marker" "$log" 2>/dev/null && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if grep -q "$marker" "$log"; then
    sleep "$settle_s"
    local t0 t1
    t0=$(ticks "$pid") && sleep "$idle_s" && t1=$(ticks "$pid") &&
      pct=$(awk -v d=$((t1 - t0)) -v hz="$hz" -v s="$idle_s" 'BEGIN{printf "%.1f", 100 * d / hz / s}')
  fi
  kill -KILL "$pid" 2>/dev/null; wait "$pid" 2>/dev/null
  exec 9>&-
  [ -n "$pct" ] || { echo "bench: $label did not reach an idle guest; log:" >&2; tail -n 20 "$log" >&2; return 1; }
  echo "$pct"
}

gw=("$godwit" run --kernel "$kernel_bzimage" --initrd "$initrd" --memory 256 --cmdline "$cmdline"
  --disk "path=$work/disk.img")
rows=("godwit" "${gw[*]@Q}")
for us in $poll_us; do
  rows+=("godwit --io-poll $us" "${gw[*]@Q} --io-poll $us")
done
rows+=("QEMU q35" "qemu-system-x86_64 -accel kvm -cpu host -M q35 -smp 1 -m 256 -nodefaults \
-no-user-config -display none -serial stdio -kernel ${kernel_bzimage@Q} -initrd ${initrd@Q} \
-append ${cmdline@Q} -drive file=${work@Q}/disk.img,if=none,id=d0,format=raw \
-device virtio-blk-pci,drive=d0")

echo "VMM CPU while the guest idles: ${idle_s} s sampled ${settle_s} s after init's banner; 1 vCPU, 256 MiB; $(nproc) host CPUs"
echo
echo "| VMM | CPU (% of one host CPU) |"
echo "|---|---|"
for ((i = 0; i < ${#rows[@]}; i += 2)); do
  eval "cmd=(${rows[i + 1]})"
  # shellcheck disable=SC2154 # cmd is set by the eval above
  pct=$(measure "row$i" "${cmd[@]}") || pct="failed"
  echo "| ${rows[i]} | $pct |"
done
