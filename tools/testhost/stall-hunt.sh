#!/usr/bin/env bash
# stall-hunt.sh: boots the default guest N times, each running issue 13's disk script
# (256 MiB of 1 MiB direct reads, 256 MiB of 1 MiB direct writes, 10,240 4 KiB direct reads)
# on 2 vCPUs and 512 MiB with a disk and a tap, under godwit or, for comparison, QEMU; prints
# one line per boot and, for a godwit boot that stops making progress, what waited (counters,
# /vm/vcpus, the stall report and the VMM threads' kernel stacks). A measurement, not a test:
# it says how often a boot fails in this test host, and how.
# Usage (inside the test host, or where /dev/kvm runs Linux):
#   tools/testhost/testhost.sh --results DIR -- tools/testhost/stall-hunt.sh godwit|qemu BUILD N
# Each boot's console log is kept in $GODWIT_TESTHOST_RESULTS (or /tmp) as VMM.N.log.
set -uo pipefail

vmm=${1:?usage: stall-hunt.sh godwit|qemu BUILD N}
build=${2:?usage: stall-hunt.sh godwit|qemu BUILD N}
runs=${3:-10}
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
out=${GODWIT_TESTHOST_RESULTS:-/tmp}
godwit=$(readlink -f "$root/$build/godwit")
limit=${GODWIT_STALL_S:-30}
eval "$("$root/guests/build-guest.sh" --print)" || exit 2
work=$(mktemp -d /tmp/stall-hunt.XXXXXX)
trap 'rm -rf "$work"; ip link del sh-tap0 2>/dev/null' EXIT

cat >"$work/script" <<'EOF'
dd if=/dev/vda of=/dev/null bs=1M count=256 iflag=direct
dd if=/dev/zero of=/dev/vda bs=1M count=256 oflag=direct
dd if=/dev/vda of=/dev/null bs=4k count=10240 iflag=direct
echo stall-hunt: done
EOF
size=$(stat -c %s "$work/script")
head -c $(((512 - size % 512) % 512)) /dev/zero | tr '\0' '\n' >>"$work/script"
truncate -s 512M "$work/disk.img"
ip tuntap add dev sh-tap0 mode tap && ip addr add 192.168.77.1/24 dev sh-tap0 &&
  ip link set sh-tap0 up || exit 2
cmdline="console=ttyS0 reboot=acpi panic=1 quiet godwit.test=script"

boot_qemu() { # LOG
  timeout -k 5 300 qemu-system-x86_64 -accel kvm -cpu host -M q35 -smp 2 -m 512 \
    -nodefaults -no-user-config -display none -serial stdio -no-reboot \
    -kernel "$kernel_bzimage" -initrd "$initrd" -append "$cmdline" \
    -drive "file=$work/disk.img,if=none,id=d0,format=raw" -device virtio-blk-pci,drive=d0 \
    -drive "file=$work/script,if=none,id=s0,format=raw,readonly=on" \
    -device virtio-blk-pci,drive=s0,serial=godwit-script \
    -netdev "tap,id=n0,ifname=sh-tap0,script=no,downscript=no,vhost=off" \
    -device virtio-net-pci,netdev=n0 -device virtio-rng-pci </dev/null >"$1" 2>&1
}

# godwit, with the counters read every 5 s: no exit, kick or interrupt for $limit seconds is
# a stall, reported before the VMM is killed.
boot_godwit() { # LOG
  local log=$1 sock=$work/api.sock last= still=0 sig c
  rm -f "$sock"
  timeout -k 5 300 "$godwit" run --kernel "$kernel_bzimage" --initrd "$initrd" --memory 512 \
    --cpus 2 --cmdline "$cmdline" --disk "path=$work/disk.img" \
    --disk "path=$work/script,readonly=on,serial=godwit-script" --net tap=sh-tap0 \
    --api-socket "$sock" </dev/null >"$log" 2>&1 &
  local pid=$!
  while kill -0 "$pid" 2>/dev/null; do
    sleep 5
    c=$(curl -s -m 10 --unix-socket "$sock" http://localhost/vm/counters 2>/dev/null)
    sig=$(grep -oE '"(pio|mmio|kicks|interrupts)":[0-9]+' <<<"$c" | tr '\n' ' ')
    if [ -z "$sig" ] || [ "$sig" != "$last" ]; then last=$sig still=0; continue; fi
    still=$((still + 5))
    [ "$still" -ge "$limit" ] || continue
    printf '%s\n' "$c" >"$log.counters"
    curl -s -m 30 --unix-socket "$sock" http://localhost/vm/vcpus >"$log.vcpus"
    echo "stall-hunt: no progress for ${still}s"
    python3 "$root/tests/e2e/stall-report.py" "$log.counters" "$log.vcpus"
    local vmm_pid t
    vmm_pid=$(pgrep -P "$pid" -x godwit)
    for t in /proc/"$vmm_pid"/task/*; do
      echo "stall-hunt: thread $(cat "$t/comm"): $(tr '\n' ' ' <"$t/stack" 2>/dev/null | cut -c1-160)"
    done
    kill -KILL "$vmm_pid" "$pid" 2>/dev/null
  done
  wait "$pid"
}

failed=0
for i in $(seq 1 "$runs"); do
  log=$out/$vmm.$i.log start=$SECONDS
  "boot_$vmm" "$log"
  rc=$?
  if grep -q '^stall-hunt: done' "$log"; then
    echo "$vmm boot $i: finished in $((SECONDS - start))s"
  else
    failed=$((failed + 1))
    echo "$vmm boot $i: FAILED after $((SECONDS - start))s (status $rc); its last lines:"
    grep -v '^stall-hunt: done' "$log" | tail -n 8 | sed 's/^/    /'
  fi
done
echo "stall-hunt: $vmm: $failed of $runs boots failed"
