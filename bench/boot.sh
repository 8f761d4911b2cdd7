#!/usr/bin/env bash
# boot.sh: boot-time and memory benchmark, godwit against QEMU (-M q35 and -M microvm) on the
# same guest. Run it where /dev/kvm runs unmodified kernels, or through the test host:
#   tools/testhost/testhost.sh -- bench/boot.sh build [RUNS]
# Each row boots the default guest (same kernel, initrd, memory, CPUs) RUNS times; we time
# exec to the init's first line, sample the VMM's own memory there (RSS minus the guest RAM
# it touched: guest RAM is a shared memfd in both, so it is RssShmem), then stop the VMM.
# Rows: godwit with the bzImage as it boots by default (payload decompressed on the host once,
# cached in a fresh $GODWIT_CACHE/kernels: run 1 decompresses, later runs hit the cache), godwit with
# the bzImage decompressed by the guest (--kernel-decompress off: the old path), godwit with
# the extracted vmlinux, and QEMU q35 and microvm given the bzImage, as users give it.
# CPUS (default 2) and MEM (MiB, default 256) set the guest, as in issue 11's run. For a look
# at the boot logs (kept in $GODWIT_TESTHOST_RESULTS): CMDLINE replaces the command line (drop
# "quiet" to see dmesg with its timestamps), ROWS="godwit-bzImage qemu-q35" runs only those.
set -uo pipefail

build=${1:?usage: bench/boot.sh BUILD_DIR [RUNS]}
runs=${2:-5}
root=$(cd "$(dirname "$0")/.." && pwd)
godwit=$(readlink -f "$build/godwit")
eval "$("$root/guests/build-guest.sh" --print)"
work=$(mktemp -d /tmp/godwit-bench.XXXXXX)
trap 'rm -rf "$work"' EXIT

mem=${MEM:-256}
cpus=${CPUS:-2}
export GODWIT_CACHE="$work/cache"
cmdline=${CMDLINE:-"console=ttyS0 reboot=acpi panic=1 quiet"}
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
    # A boot that fails is reported (its log kept with the results) and left out of the row.
    if ! read -r ms own < <(measure "$label" "$@"); then
      [ -z "${GODWIT_TESTHOST_RESULTS:-}" ] ||
        cp "$work/$label.log" "$GODWIT_TESTHOST_RESULTS/failed-$label-$i.log"
      continue
    fi
    echo "$ms" >>"$work/$label.times"; echo "$own" >>"$work/$label.mem"
    echo "bench: $label run $i: ${ms} ms to init, ${own} KiB own memory" >&2
  done
}

rows=()
row() { # LABEL CMD...: one row of the table
  [ -z "${ROWS:-}" ] || [[ " $ROWS " == *" $1 "* ]] || return 0
  run_vmm "$@"
  [ -s "$work/$1.times" ] || { echo "bench: $1: no boot reached init" >&2; exit 1; }
  rows+=("$1")
  # The last run's console log, for comparing boot logs (dmesg) between the rows.
  [ -z "${GODWIT_TESTHOST_RESULTS:-}" ] || cp "$work/$1.log" "$GODWIT_TESTHOST_RESULTS/boot-$1.log"
}
gw=("$godwit" run --initrd "$initrd" --memory "$mem" --cpus "$cpus" --cmdline "$cmdline")
qemu_common=(-accel kvm -cpu host -smp "$cpus" -m "$mem" -nodefaults -no-user-config
  -display none -serial stdio -kernel "$kernel_bzimage" -initrd "$initrd" -append "$cmdline")

row "godwit-bzImage" "${gw[@]}" --kernel "$kernel_bzimage"
if "$godwit" run --help 2>&1 | grep -q -- --kernel-decompress; then
  row "godwit-bzImage-guest-decompress" "${gw[@]}" --kernel "$kernel_bzimage" --kernel-decompress off
fi
row "godwit-vmlinux" "${gw[@]}" --kernel "$kernel_vmlinux"
row "qemu-q35" qemu-system-x86_64 -M q35 "${qemu_common[@]}"
row "qemu-microvm" qemu-system-x86_64 -M microvm,memory-backend=ram \
  -object memory-backend-memfd,id=ram,size=${mem}M,share=on "${qemu_common[@]}"

# godwit's guest RAM is a memfd (shmem), which gets huge pages only when the host's
# shmem_enabled allows MADV_HUGEPAGE ("advise"); QEMU's q35 RAM here is anonymous memory, which
# THP backs by default. SHMEM_THP=1 adds a row with "advise" (root; the setting is restored).
thp=/sys/kernel/mm/transparent_hugepage/shmem_enabled
shmem_before=$(sed -n 's/.*\[\(.*\)\].*/\1/p' "$thp" 2>/dev/null)
if [ "${SHMEM_THP:-}" = 1 ] && [ -n "$shmem_before" ] && echo advise 2>/dev/null >"$thp"; then
  row "godwit-bzImage-shmem-thp" "${gw[@]}" --kernel "$kernel_bzimage"
  echo "$shmem_before" >"$thp"
fi

q35=$(median <"$work/qemu-q35.times" 2>/dev/null); micro=$(median <"$work/qemu-microvm.times" 2>/dev/null)
echo
echo "Boot to init's first line, $cpus vCPUs, $mem MiB, \"$cmdline\", median of $runs runs"
echo "(run 1 of godwit-bzImage decompressed into an empty cache; the others hit it;"
echo " host shmem_enabled: ${shmem_before:-unknown}, THP: $(cat /sys/kernel/mm/transparent_hugepage/enabled 2>/dev/null))."
echo
echo "| row | ms | runs (ms) | /QEMU q35 | /QEMU microvm | VMM own memory (MiB) |"
echo "|---|---|---|---|---|---|"
for r in "${rows[@]}"; do
  ms=$(median <"$work/$r.times"); kib=$(median <"$work/$r.mem")
  all=$(paste -sd' ' "$work/$r.times")
  awk -v r="$r" -v ms="$ms" -v all="$all" -v q="$q35" -v m="$micro" -v k="$kib" \
    'BEGIN{printf "| %s | %d | %s | %.2f | %.2f | %.1f |\n", r, ms, all, q ? ms/q : 0, m ? ms/m : 0, k/1024}'
done
