#!/usr/bin/env bash
# boot.sh: boot-time and memory benchmark, godwit against QEMU (-M microvm) on the same guest.
# Run it where /dev/kvm runs unmodified kernels, or through the test host:
#   tools/testhost/testhost.sh -- bench/boot.sh build
# Each VMM boots the default guest (same vmlinux, initrd, memory, CPUs) RUNS times; we time
# exec to the init's first line, sample the VMM's own memory there (RSS minus the guest RAM
# it touched: guest RAM is a shared memfd in both, so it is RssShmem), then stop the VMM.
set -uo pipefail

build=${1:?usage: bench/boot.sh BUILD_DIR [RUNS]}
runs=${2:-5}
root=$(cd "$(dirname "$0")/.." && pwd)
godwit=$(readlink -f "$build/godwit")
eval "$("$root/guests/build-guest.sh" --print)"
work=$(mktemp -d /tmp/godwit-bench.XXXXXX)
trap 'rm -rf "$work"' EXIT

mem=256
cmdline="console=ttyS0 reboot=acpi panic=1 quiet"
marker='godwit-guest: init started'

now_ns() { date +%s%N; }

# measure LABEL CMD...: prints "ms own_kib" for one boot.
measure() {
  local label=$1; shift
  local fifo="$work/in" log="$work/$label.log"
  rm -f "$fifo"; mkfifo "$fifo"
  local start; start=$(now_ns)
  "$@" <"$fifo" >"$log" 2>&1 &
  local pid=$!
  exec 9>"$fifo"
  local ms="" own=""
  # Poll the console log; 1 ms granularity is far below the boot time being measured.
  for _ in $(seq 1 120000); do
    if grep -q "$marker" "$log" 2>/dev/null; then
      ms=$(( ($(now_ns) - start) / 1000000 ))
      own=$(awk '/^VmRSS:/{rss=$2} /^RssShmem:/{shm=$2} END{print rss-shm}' "/proc/$pid/status")
      break
    fi
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.001
  done
  kill -KILL "$pid" 2>/dev/null; wait "$pid" 2>/dev/null
  exec 9>&-
  [ -n "$ms" ] || { echo "bench: $label did not reach init; log:" >&2; tail -n 20 "$log" >&2; return 1; }
  echo "$ms $own"
}

median() { sort -n | awk '{a[NR]=$1} END{ if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2 }'; }

run_vmm() { # LABEL CMD...
  local label=$1; shift
  : >"$work/$label.times"; : >"$work/$label.mem"
  for i in $(seq 1 "$runs"); do
    read -r ms own < <(measure "$label" "$@") || return 1
    echo "$ms" >>"$work/$label.times"; echo "$own" >>"$work/$label.mem"
    echo "bench: $label run $i: ${ms} ms to init, ${own} KiB own memory" >&2
  done
}

run_vmm godwit "$godwit" run --kernel "$kernel_vmlinux" --initrd "$initrd" --memory $mem \
  --cpus 1 --cmdline "$cmdline" || exit 1
run_vmm qemu qemu-system-x86_64 -M microvm,memory-backend=ram -accel kvm -cpu host -smp 1 -m $mem \
  -object memory-backend-memfd,id=ram,size=${mem}M,share=on \
  -nodefaults -no-user-config -display none -serial stdio \
  -kernel "$kernel_vmlinux" -initrd "$initrd" -append "$cmdline" || exit 1

g_ms=$(median <"$work/godwit.times"); q_ms=$(median <"$work/qemu.times")
g_kib=$(median <"$work/godwit.mem"); q_kib=$(median <"$work/qemu.mem")
echo
echo "| metric (median of $runs) | godwit | QEMU microvm | godwit/QEMU |"
echo "|---|---|---|---|"
awk -v g="$g_ms" -v q="$q_ms" 'BEGIN{printf "| exec to init first line (ms) | %d | %d | %.2f |\n", g, q, g/q}'
awk -v g="$g_kib" -v q="$q_kib" 'BEGIN{printf "| VMM own memory (MiB) | %.1f | %.1f | %.2f |\n", g/1024, q/1024, g/q}'
